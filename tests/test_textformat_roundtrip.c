/* Tests of the protobuf text format (core/format/textformat*.c), part 1: round trips, checked
 * on the binary encoding. Messages built in C with every field kind that caffe.proto and
 * distill.proto use (and their extreme values) go print -> parse -> pack and must give the bytes
 * that packing the original gives; the seed and reference prototxts go parse -> print -> parse;
 * random messages over every descriptor go both ways. Syntax is tested in
 * test_textformat_syntax.c, errors in test_textformat_errors.c; the shared helpers and the
 * hand-written "Node" descriptor are in test_textformat.h. */
#define _POSIX_C_SOURCE 200809L
#include "test_textformat.h"

/* ------------------------------------------------------------------------------------------- */
/* 1. Round trips                                                                                */

static float edge_floats[] = {0.0f, -0.0f, 1.0f, -1.0f, 0.1f, 1e-8f, 1.0f / 3.0f, FLT_MAX,
                              -FLT_MAX, FLT_MIN, FLT_TRUE_MIN, -FLT_TRUE_MIN, 1e-40f,
                              1.17549421e-38f /* largest denormal */, 16777217.0f, 3.4e38f,
                              123456792.0f, 0.017f, 0.999f, 1e-5f};
static double edge_doubles[] = {0.0, -0.0, 0.1, -0.1, 1.0 / 3.0, DBL_MAX, -DBL_MAX, DBL_MIN,
                                4.9406564584124654e-324, 2.2250738585072009e-308, 1e300,
                                9007199254740993.0, 5e-324, 0.30000000000000004, 1e23};

/* The all-kinds net and everything it points into: the fields point at each other, so one struct
 * holds them all for the test's lifetime. */
typedef struct {
  float fdata[NELEM(edge_floats) + 3];
  double ddata[NELEM(edge_doubles) + 3];
  int64_t dims[7];
  Caffe__BlobShape shape, *shapes[2];
  Caffe__BlobProto blob, *blobs[1];
  Caffe__ParamSpec ps0, ps1, *params[2];
  char *stages[3];
  Caffe__NetStateRule rule, *rules[1];
  Caffe__FillerParameter wf, bf;
  uint32_t pads[3];
  Caffe__ConvolutionParameter conv;
  Caffe__BatchNormParameter bn;
  float means[3];
  Caffe__TransformationParameter tp;
  Caffe__DistillLossParameter dl;
  Caffe__EltwiseParameter elt;
  protobuf_c_boolean pd[3];
  float lw[3];
  char *bottoms[8];
  Caffe__PoolingParameter pool;
  Caffe__ReLUParameter relu;
  Caffe__LayerParameter l0, l1, empty, *layers[3];
  Caffe__V1LayerParameter v1, *v1s[1];
  Caffe__NetState st;
  int32_t idims[4];
  char *inputs[2];
  Caffe__NetParameter net;
} all_kinds;

/* A blob with every edge float and double (plus inf, -inf, nan), extreme 64-bit dims, and
 * legacy dims present with extreme and default values. */
static void all_kinds_blob(all_kinds *k) {
  memcpy(k->fdata, edge_floats, sizeof edge_floats);
  k->fdata[NELEM(edge_floats)] = INFINITY;
  k->fdata[NELEM(edge_floats) + 1] = -INFINITY;
  k->fdata[NELEM(edge_floats) + 2] = NAN;
  memcpy(k->ddata, edge_doubles, sizeof edge_doubles);
  k->ddata[NELEM(edge_doubles)] = INFINITY;
  k->ddata[NELEM(edge_doubles) + 1] = -INFINITY;
  k->ddata[NELEM(edge_doubles) + 2] = NAN;

  const int64_t dims[] = {INT64_MIN, INT64_MAX, 0, -1, 1, (int64_t)1 << 53, -((int64_t)1 << 32)};
  memcpy(k->dims, dims, sizeof dims);
  k->shape = (Caffe__BlobShape)CAFFE__BLOB_SHAPE__INIT;
  k->shape.n_dim = NELEM(dims);
  k->shape.dim = k->dims;
  k->shapes[0] = k->shapes[1] = &k->shape;

  k->blob = (Caffe__BlobProto)CAFFE__BLOB_PROTO__INIT;
  k->blob.shape = &k->shape;
  k->blob.n_data = NELEM(k->fdata);
  k->blob.data = k->fdata;
  k->blob.n_diff = 2;
  k->blob.diff = k->fdata + 5;
  k->blob.n_double_data = NELEM(k->ddata);
  k->blob.double_data = k->ddata;
  k->blob.has_num = 1;
  k->blob.num = INT32_MIN;
  k->blob.has_channels = 1;
  k->blob.channels = INT32_MAX;
  k->blob.has_height = 1;
  k->blob.height = 0; /* present with the default value */
  k->blobs[0] = &k->blob;
}

/* Param specs (a negative zero, an escaped name, an enum) and a rule with odd stage strings. */
static void all_kinds_params_and_rules(all_kinds *k) {
  k->ps0 = (Caffe__ParamSpec)CAFFE__PARAM_SPEC__INIT;
  k->ps1 = (Caffe__ParamSpec)CAFFE__PARAM_SPEC__INIT;
  k->ps0.has_lr_mult = 1;
  k->ps0.lr_mult = 0;
  k->ps0.has_decay_mult = 1;
  k->ps0.decay_mult = -0.0f;
  k->ps1.name = (char *)"shared \"w\"";
  k->ps1.has_share_mode = 1;
  k->ps1.share_mode = CAFFE__PARAM_SPEC__DIM_CHECK_MODE__PERMISSIVE;
  k->params[0] = &k->ps0;
  k->params[1] = &k->ps1;

  k->rule = (Caffe__NetStateRule)CAFFE__NET_STATE_RULE__INIT;
  k->rule.has_phase = 1;
  k->rule.phase = CAFFE__PHASE__TEST;
  k->rule.has_min_level = 1;
  k->rule.min_level = -5;
  k->stages[0] = (char *)"a b";
  k->stages[1] = (char *)"";
  k->stages[2] = (char *)"\xe2\x9c\x93";
  k->rule.n_stage = 3;
  k->rule.stage = k->stages;
  k->rule.n_not_stage = 1;
  k->rule.not_stage = k->stages;
  k->rules[0] = &k->rule;
}

/* A convolution with extreme unsigned values, fillers, an enum, an explicit false, axis -1. */
static void all_kinds_conv(all_kinds *k) {
  k->wf = (Caffe__FillerParameter)CAFFE__FILLER_PARAMETER__INIT;
  k->bf = (Caffe__FillerParameter)CAFFE__FILLER_PARAMETER__INIT;
  k->wf.type = (char *)"msra";
  k->wf.has_sparse = 1;
  k->wf.sparse = INT32_MIN;
  k->wf.has_variance_norm = 1;
  k->wf.variance_norm = CAFFE__FILLER_PARAMETER__VARIANCE_NORM__AVERAGE;
  k->wf.has_std = 1;
  k->wf.std = 1e-8f;
  k->bf.type = (char *)"constant"; /* present, equal to the default, but not the default pointer */
  k->bf.has_value = 1;
  k->bf.value = 0.1f;

  k->pads[0] = 0;
  k->pads[1] = UINT32_MAX;
  k->pads[2] = 1;
  k->conv = (Caffe__ConvolutionParameter)CAFFE__CONVOLUTION_PARAMETER__INIT;
  k->conv.has_num_output = 1;
  k->conv.num_output = UINT32_MAX;
  k->conv.n_pad = 3;
  k->conv.pad = k->pads;
  k->conv.n_kernel_size = 1;
  k->conv.kernel_size = k->pads + 2;
  k->conv.weight_filler = &k->wf;
  k->conv.bias_filler = &k->bf;
  k->conv.has_engine = 1;
  k->conv.engine = CAFFE__CONVOLUTION_PARAMETER__ENGINE__CUDNN;
  k->conv.has_bias_term = 1;
  k->conv.bias_term = 0;
  k->conv.has_axis = 1;
  k->conv.axis = -1;
}

/* BatchNorm (explicit false), transform (a Windows path), distill loss, eltwise (enum 0). */
static void all_kinds_layer_params(all_kinds *k) {
  k->bn = (Caffe__BatchNormParameter)CAFFE__BATCH_NORM_PARAMETER__INIT;
  k->bn.has_use_global_stats = 1;
  k->bn.use_global_stats = 0; /* explicit false: differs from unset */
  k->bn.has_eps = 1;
  k->bn.eps = 1e-5f;

  k->means[0] = 115;
  k->means[1] = 126.5f;
  k->means[2] = -0.0f;
  k->tp = (Caffe__TransformationParameter)CAFFE__TRANSFORMATION_PARAMETER__INIT;
  k->tp.has_scale = 1;
  k->tp.scale = 0.017f;
  k->tp.has_crop_size = 1;
  k->tp.crop_size = 32;
  k->tp.n_mean_value = 3;
  k->tp.mean_value = k->means;
  k->tp.has_color = 1;
  k->tp.color = 1;
  k->tp.mean_file = (char *)"C:\\data\\mean.binaryproto";

  k->dl = (Caffe__DistillLossParameter)CAFFE__DISTILL_LOSS_PARAMETER__INIT;
  k->dl.has_temperature = 1;
  k->dl.temperature = 4;

  k->elt = (Caffe__EltwiseParameter)CAFFE__ELTWISE_PARAMETER__INIT;
  k->elt.has_operation = 1;
  k->elt.operation = CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__PROD; /* enum value 0, present */
  k->elt.n_coeff = 2;
  k->elt.coeff = k->means;
}

/* Layer 0 with every kind of field and strings that need escapes; layer 1 with empty
 * sub-messages; an empty layer; a V1 layer. */
static void all_kinds_layers(all_kinds *k) {
  const protobuf_c_boolean pd[] = {1, 0, 1};
  const float lw[] = {1, 0.5f, 0};
  char *const bottoms[] = {(char *)"data", (char *)"tab\there", (char *)"nl\nhere",
                           (char *)"ctl\x01\x02\x1f\x7f\x80\xff",
                           (char *)"quote'single\"double\\back",
                           (char *)"h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80",
                           (char *)"#not a comment", (char *)"\\x41\\101"};
  memcpy(k->pd, pd, sizeof pd);
  memcpy(k->lw, lw, sizeof lw);
  memcpy(k->bottoms, bottoms, sizeof bottoms);
  Caffe__LayerParameter *l0 = &k->l0;
  *l0 = (Caffe__LayerParameter)CAFFE__LAYER_PARAMETER__INIT;
  k->l1 = (Caffe__LayerParameter)CAFFE__LAYER_PARAMETER__INIT;
  l0->name = (char *)"conv1";
  l0->type = (char *)"Convolution";
  l0->n_bottom = NELEM(bottoms);
  l0->bottom = k->bottoms;
  l0->n_top = 1;
  l0->top = k->bottoms;
  l0->has_phase = 1;
  l0->phase = CAFFE__PHASE__TRAIN;
  l0->n_loss_weight = 3;
  l0->loss_weight = k->lw;
  l0->n_param = 2;
  l0->param = k->params;
  l0->n_blobs = 1;
  l0->blobs = k->blobs;
  l0->n_propagate_down = 3;
  l0->propagate_down = k->pd;
  l0->n_include = 1;
  l0->include = k->rules;
  l0->n_exclude = 1;
  l0->exclude = k->rules;
  l0->transform_param = &k->tp;
  l0->convolution_param = &k->conv;
  l0->batch_norm_param = &k->bn;
  l0->distill_loss_param = &k->dl;
  l0->eltwise_param = &k->elt;
  /* l1: an empty layer, and empty sub-messages */
  k->pool = (Caffe__PoolingParameter)CAFFE__POOLING_PARAMETER__INIT;
  k->relu = (Caffe__ReLUParameter)CAFFE__RE_LUPARAMETER__INIT;
  k->l1.pooling_param = &k->pool;
  k->l1.relu_param = &k->relu;
  k->empty = (Caffe__LayerParameter)CAFFE__LAYER_PARAMETER__INIT;
  k->layers[0] = &k->l0;
  k->layers[1] = &k->l1;
  k->layers[2] = &k->empty;

  k->v1 = (Caffe__V1LayerParameter)CAFFE__V1_LAYER_PARAMETER__INIT;
  k->v1.has_type = 1;
  k->v1.type = CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__THRESHOLD;
  k->v1.name = (char *)"old";
  k->v1s[0] = &k->v1;
}

/* The net over all of the above, with extreme input dims and an escaped name. */
static void all_kinds_net(all_kinds *k) {
  all_kinds_blob(k);
  all_kinds_params_and_rules(k);
  all_kinds_conv(k);
  all_kinds_layer_params(k);
  all_kinds_layers(k);

  k->st = (Caffe__NetState)CAFFE__NET_STATE__INIT;
  k->st.has_phase = 1;
  k->st.phase = CAFFE__PHASE__TRAIN;
  k->st.has_level = 1;
  k->st.level = INT32_MIN;

  const int32_t idims[] = {INT32_MIN, INT32_MAX, 0, -1};
  memcpy(k->idims, idims, sizeof idims);
  k->inputs[0] = (char *)"data";
  k->inputs[1] = (char *)"";
  Caffe__NetParameter *net = &k->net;
  *net = (Caffe__NetParameter)CAFFE__NET_PARAMETER__INIT;
  net->name = (char *)"all \"kinds\"\n\ttab \\ \x01 \xc3\xa9";
  net->n_input = 2;
  net->input = k->inputs;
  net->n_input_shape = 2;
  net->input_shape = k->shapes;
  net->n_input_dim = NELEM(idims);
  net->input_dim = k->idims;
  net->has_force_backward = 1;
  net->force_backward = 0;
  net->has_debug_info = 1;
  net->debug_info = 1;
  net->state = &k->st;
  net->n_layer = 3;
  net->layer = k->layers;
  net->n_layers = 1;
  net->layers = k->v1s;
}

static void test_roundtrip_net_all_kinds(void) {
  all_kinds k;
  all_kinds_net(&k);
  char *text = ROUNDTRIP(&k.net);
  REQUIRE(text != NULL);
  /* spot checks of the printed form */
  CHECK_CONTAINS(text, "input_dim: -2147483648\n");
  CHECK_CONTAINS(text, "num_output: 4294967295\n");
  CHECK_CONTAINS(text, "dim: -9223372036854775808\n");
  CHECK_CONTAINS(text, "dim: 9223372036854775807\n");
  CHECK_CONTAINS(text, "data: 3.4028235e+38\n"); /* shortest form that reads back as FLT_MAX */
  CHECK_CONTAINS(text, "data: -0\n");
  CHECK_CONTAINS(text, "data: nan\n");
  CHECK_CONTAINS(text, "data: -inf\n");
  CHECK_CONTAINS(text, "data: 0.1\n");
  CHECK_CONTAINS(text, "double_data: 0.1\n");
  CHECK_CONTAINS(text, "double_data: 1.7976931348623157e+308\n");
  CHECK_CONTAINS(text, "use_global_stats: false\n");
  CHECK_CONTAINS(text, "type: \"constant\"\n");
  CHECK_CONTAINS(text, "operation: PROD\n");
  CHECK_CONTAINS(text, "type: THRESHOLD\n");
  CHECK_CONTAINS(text, "bottom: \"quote\\'single\\\"double\\\\back\"\n");
  CHECK_CONTAINS(text, "bottom: \"nl\\nhere\"\n");
  CHECK_CONTAINS(text, "bottom: \"\\\\x41\\\\101\"\n");
  CHECK_CONTAINS(text, "name: \"all \\\"kinds\\\"\\n\\ttab \\\\ \\001 \\303\\251\"\n");
  CHECK_CONTAINS(text, "layer {\n  name: \"conv1\"\n");
  CHECK_CONTAINS(text, "  pooling_param {\n  }\n");
  CHECK_CONTAINS(text, "layer {\n}\n");
  free(text);
}

/* Absent vs present-with-the-default-value: both survive, and they are not the same message. */
static void test_roundtrip_absent_vs_default(void) {
  Caffe__BatchNormParameter unset = CAFFE__BATCH_NORM_PARAMETER__INIT;
  Caffe__BatchNormParameter expl = CAFFE__BATCH_NORM_PARAMETER__INIT;
  expl.has_use_global_stats = 1;
  expl.use_global_stats = 0;
  expl.has_moving_average_fraction = 1;
  expl.moving_average_fraction = 0.999f; /* the default */
  size_t lu = protobuf_c_message_get_packed_size(&unset.base);
  size_t le = protobuf_c_message_get_packed_size(&expl.base);
  CHECK(lu == 0);
  CHECK(le > lu);
  char *tu = ROUNDTRIP(&unset), *te = ROUNDTRIP(&expl);
  CHECK(tu && strcmp(tu, "") == 0);
  CHECK(te && strcmp(te, "use_global_stats: false\nmoving_average_fraction: 0.999\n") == 0);
  free(tu);
  free(te);

  Caffe__FillerParameter fd = CAFFE__FILLER_PARAMETER__INIT, fe = CAFFE__FILLER_PARAMETER__INIT;
  fe.type = (char *)"constant";
  CHECK(protobuf_c_message_get_packed_size(&fd.base) == 0);
  CHECK(protobuf_c_message_get_packed_size(&fe.base) > 0);
  tu = ROUNDTRIP(&fd);
  te = ROUNDTRIP(&fe);
  CHECK(tu && strcmp(tu, "") == 0);
  CHECK(te && strcmp(te, "type: \"constant\"\n") == 0);
  free(tu);
  free(te);

  /* root_folder defaults to "": an explicit "" is still present */
  Caffe__ImageDataParameter id = CAFFE__IMAGE_DATA_PARAMETER__INIT;
  id.root_folder = (char *)"";
  te = ROUNDTRIP(&id);
  CHECK(te && strcmp(te, "root_folder: \"\"\n") == 0);
  free(te);

  /* parsed: present-with-default sets has_, absent does not */
  Caffe__SolverParameter *s = (Caffe__SolverParameter *)PARSE_OK(
      &caffe__solver_parameter__descriptor,
      "solver_mode: GPU test_interval: 0 base_lr: 0 snapshot_format: HDF5 type: \"SGD\"");
  REQUIRE(s != NULL);
  CHECK(s->has_solver_mode && s->solver_mode == CAFFE__SOLVER_PARAMETER__SOLVER_MODE__GPU);
  CHECK(s->has_test_interval && s->test_interval == 0);
  CHECK(s->has_base_lr && s->base_lr == 0);
  CHECK(s->has_snapshot_format && s->snapshot_format == 0);
  CHECK(!s->has_max_iter && !s->has_random_seed && s->random_seed == -1);
  CHECK(s->type && strcmp(s->type, "SGD") == 0);
  Caffe__SolverParameter d = CAFFE__SOLVER_PARAMETER__INIT;
  CHECK(!same_binary(&s->base, &d.base));
  CHECK(d.type == caffe__solver_parameter__type__default_value);
  CHECK(s->type != caffe__solver_parameter__type__default_value);
  protobuf_c_message_free_unpacked(&s->base, NULL);
}

static void test_roundtrip_solver(void) {
  Caffe__LayerParameter l = CAFFE__LAYER_PARAMETER__INIT;
  l.name = (char *)"fc";
  Caffe__LayerParameter *layers[] = {&l};
  Caffe__NetParameter net = CAFFE__NET_PARAMETER__INIT;
  net.name = (char *)"inline";
  net.n_layer = 1;
  net.layer = layers;
  Caffe__NetState ts = CAFFE__NET_STATE__INIT;
  char *stage[] = {(char *)"s1"};
  ts.n_stage = 1;
  ts.stage = stage;
  Caffe__NetState *tss[] = {&ts, &ts};
  int32_t iters[] = {100, 0, INT32_MAX};

  Caffe__SolverParameter s = CAFFE__SOLVER_PARAMETER__INIT;
  s.net_param = &net;
  s.n_test_net_param = 1;
  Caffe__NetParameter *nets[] = {&net};
  s.test_net_param = nets;
  s.n_test_state = 2;
  s.test_state = tss;
  s.n_test_iter = 3;
  s.test_iter = iters;
  s.has_random_seed = 1;
  s.random_seed = INT64_MIN;
  s.has_delta = 1;
  s.delta = 1e-8f;
  s.has_base_lr = 1;
  s.base_lr = 0.1f;
  s.has_solver_mode = 1;
  s.solver_mode = CAFFE__SOLVER_PARAMETER__SOLVER_MODE__CPU;
  s.has_snapshot_format = 1;
  s.snapshot_format = CAFFE__SOLVER_PARAMETER__SNAPSHOT_FORMAT__HDF5;
  s.has_solver_type = 1;
  s.solver_type = CAFFE__SOLVER_PARAMETER__SOLVER_TYPE__ADAM;
  s.lr_policy = (char *)"cosine";
  s.has_warmup_iter = 1;
  s.warmup_iter = 500;
  s.has_clip_gradients = 1;
  s.clip_gradients = -1;
  s.has_momentum2 = 1;
  s.momentum2 = 0.999f;
  char *text = ROUNDTRIP(&s);
  CHECK_CONTAINS(text, "random_seed: -9223372036854775808\n");
  CHECK_CONTAINS(text, "solver_mode: CPU\n");
  CHECK_CONTAINS(text, "delta: 1e-08\n");
  free(text);
  s.random_seed = INT64_MAX;
  text = ROUNDTRIP(&s);
  CHECK_CONTAINS(text, "random_seed: 9223372036854775807\n");
  free(text);
}

static void test_roundtrip_distill(void) {
  char *tw[] = {(char *)"a.caffemodel", (char *)"b.caffemodel"};
  Distilld__TeacherSpec teacher = DISTILLD__TEACHER_SPEC__INIT;
  teacher.net = (char *)"teacher.prototxt";
  teacher.n_weights = 2;
  teacher.weights = tw;
  Distilld__StudentSpec student = DISTILLD__STUDENT_SPEC__INIT;
  student.net = (char *)"student.prototxt";
  Caffe__ConvolutionParameter conv = CAFFE__CONVOLUTION_PARAMETER__INIT;
  Caffe__FillerParameter wf = CAFFE__FILLER_PARAMETER__INIT;
  wf.type = (char *)"xavier";
  conv.weight_filler = &wf;
  Caffe__LayerParameter l = CAFFE__LAYER_PARAMETER__INIT;
  l.convolution_param = &conv;
  Caffe__LayerParameter *layers[] = {&l};
  Caffe__NetParameter net = CAFFE__NET_PARAMETER__INIT;
  net.n_layer = 1;
  net.layer = layers;
  Caffe__SolverParameter solver = CAFFE__SOLVER_PARAMETER__INIT;
  solver.net_param = &net;
  solver.has_max_iter = 1;
  solver.max_iter = 80000;
  Distilld__HintSpec h0 = DISTILLD__HINT_SPEC__INIT, h1 = DISTILLD__HINT_SPEC__INIT;
  h0.has_kind = 1;
  h0.kind = DISTILLD__HINT_SPEC__KIND__ATTENTION;
  h0.teacher_blob = (char *)"t";
  h0.student_blob = (char *)"s";
  h1.has_weight = 1;
  h1.weight = 0.25f;
  Distilld__HintSpec *hints[] = {&h0, &h1};
  Distilld__DistillSettings ds = DISTILLD__DISTILL_SETTINGS__INIT;
  ds.has_temperature = 1;
  ds.temperature = 4;
  ds.has_alpha = 1;
  ds.alpha = 0.9f;
  ds.n_hint = 2;
  ds.hint = hints;
  ds.has_freeze_frozen_batchnorm = 1;
  ds.freeze_frozen_batchnorm = 0;
  ds.teacher_logits = (char *)"fc";
  char *dev[] = {(char *)"cpu", (char *)"cuda:0"};
  Distilld__DistillJob job = DISTILLD__DISTILL_JOB__INIT;
  job.name = (char *)"job \"1\"";
  job.teacher = &teacher;
  job.student = &student;
  job.solver = &solver;
  job.distill = &ds;
  job.output_dir = (char *)"/out/\xe6\x97\xa5";
  job.n_device = 2;
  job.device = dev;
  job.has_seed = 1;
  job.seed = INT64_MIN;
  char *text = ROUNDTRIP(&job);
  CHECK_CONTAINS(text, "solver {\n  max_iter: 80000\n  net_param {\n    layer {\n"
                       "      convolution_param {\n        weight_filler {\n"
                       "          type: \"xavier\"\n");
  CHECK_CONTAINS(text, "kind: ATTENTION\n");
  free(text);

  Distilld__DaemonConfig c = DISTILLD__DAEMON_CONFIG__INIT;
  c.redis_host = (char *)"::1";
  c.has_redis_port = 1;
  c.redis_port = 65535;
  c.redis_user = (char *)"";
  c.redis_password_env = (char *)"DD_PW";
  c.redis_password_file = (char *)"/run/secrets/pw";
  c.key_prefix = (char *)"distilld";
  c.worker_name = (char *)"w1";
  c.n_device = 2;
  c.device = dev;
  c.has_max_jobs = 1;
  c.max_jobs = INT32_MAX;
  c.n_data_root = 1;
  c.data_root = dev;
  c.output_root = (char *)"/out";
  c.has_lease_s = 1;
  c.lease_s = 0;
  c.has_heartbeat_s = 1;
  c.heartbeat_s = -1;
  c.has_log_level = 1;
  c.log_level = DISTILLD__DAEMON_CONFIG__LOG_LEVEL__ERROR;
  c.has_retention_s = 1;
  c.retention_s = INT32_MIN;
  text = ROUNDTRIP(&c);
  CHECK_CONTAINS(text, "log_level: ERROR\n");
  free(text);
}

/* Node: required field, bytes with NUL bytes, uint64, sint64, recursion. */
static void test_roundtrip_node(void) {
  int64_t zz[] = {INT64_MIN, -1, 0, INT64_MAX};
  uint8_t bytes[] = {0, 1, '"', '\\', 0xff, '\n', 0, '7'};
  Node leaf;
  node_init(&leaf.base);
  leaf.id = -7;
  Node *kids[] = {&leaf, &leaf};
  Node n;
  node_init(&n.base);
  n.id = INT32_MIN;
  n.has_big = 1;
  n.big = UINT64_MAX;
  n.has_blob = 1;
  n.blob.len = sizeof bytes;
  n.blob.data = bytes;
  n.n_zz = 4;
  n.zz = zz;
  n.child = &leaf;
  n.n_kids = 2;
  n.kids = kids;
  char *text = ROUNDTRIP(&n);
  CHECK_CONTAINS(text, "big: 18446744073709551615\n");
  CHECK_CONTAINS(text, "blob: \"\\000\\001\\\"\\\\\\377\\n\\0007\"\n");
  free(text);
  /* an empty bytes value is present */
  n.blob.len = 0;
  text = ROUNDTRIP(&n);
  CHECK_CONTAINS(text, "blob: \"\"\n");
  free(text);
  Node *p = (Node *)PARSE_OK(&node_descriptor, "id: 1 blob: \"a\\0b\" big: 0xffffffffffffffff");
  REQUIRE(p != NULL);
  CHECK(p->has_blob && p->blob.len == 3 && memcmp(p->blob.data, "a\0b", 3) == 0);
  CHECK(p->has_big && p->big == UINT64_MAX);
  protobuf_c_message_free_unpacked(&p->base, NULL);
}

static void test_roundtrip_seed_files(void) {
  static const struct {
    const char *path;
    const ProtobufCMessageDescriptor *desc;
  } files[] = {
      {DD_TEST_DATA "/seed/seed_net.prototxt", &caffe__net_parameter__descriptor},
      {DD_TEST_DATA "/seed/seed_fixed_layers.prototxt", &caffe__net_parameter__descriptor},
      {DD_TEST_DATA "/seed/seed_solver.prototxt", &caffe__solver_parameter__descriptor},
      {DD_TEST_DATA "/caffe-reference/net_resblock.prototxt", &caffe__net_parameter__descriptor},
      {DD_TEST_DATA "/caffe-reference/resblock/solver_used.prototxt",
       &caffe__solver_parameter__descriptor},
  };
  for (size_t i = 0; i < NELEM(files); i++) file_roundtrip(files[i].desc, files[i].path);

  /* what the seed net says, field by field */
  char err[1024];
  ProtobufCMessage *m = NULL;
  int r = dd_text_parse_file(&m, &caffe__net_parameter__descriptor,
                             DD_TEST_DATA "/seed/seed_net.prototxt", err, sizeof err);
  REQUIRE(r == 0);
  Caffe__NetParameter *net = (Caffe__NetParameter *)m;
  CHECK(strcmp(net->name, "WRN_22_12_to_WRN_18_4_v5_net") == 0);
  REQUIRE(net->n_layer > 2);
  Caffe__LayerParameter *l0 = net->layer[0];
  CHECK(l0->n_top == 2 && strcmp(l0->top[1], "label") == 0);
  CHECK(l0->transform_param && l0->transform_param->has_color && l0->transform_param->color);
  CHECK(l0->transform_param->n_mean_value == 3 && l0->transform_param->mean_value[2] == 130.0f);
  CHECK(l0->transform_param->scale == 0.017f);
  CHECK(l0->image_data_param && l0->image_data_param->batch_size == 64);
  CHECK(l0->n_include == 1 && l0->include[0]->phase == CAFFE__PHASE__TRAIN);
  CHECK(net->layer[1]->transform_param->has_mirror && !net->layer[1]->transform_param->mirror);
  protobuf_c_message_free_unpacked(m, NULL);

  r = dd_text_parse_file(&m, &caffe__solver_parameter__descriptor,
                         DD_TEST_DATA "/seed/seed_solver.prototxt", err, sizeof err);
  REQUIRE(r == 0);
  Caffe__SolverParameter *s = (Caffe__SolverParameter *)m;
  CHECK(s->n_test_iter == 1 && s->test_iter[0] == 100);
  CHECK(s->has_base_lr && s->base_lr == 0);
  CHECK(s->has_random_seed && s->random_seed == 10086);
  CHECK(s->has_solver_mode && s->solver_mode == CAFFE__SOLVER_PARAMETER__SOLVER_MODE__GPU);
  CHECK(strcmp(s->lr_policy, "poly") == 0);
  protobuf_c_message_free_unpacked(m, NULL);
}

/* Binary Caffe models (real float data) -> text -> binary. */
static void test_roundtrip_caffemodel(void) {
  static const char *files[] = {DD_TEST_DATA "/caffe-reference/resblock/init.caffemodel",
                                DD_TEST_DATA "/caffe-reference/resblock/after_sgd_step.caffemodel"};
  for (size_t i = 0; i < NELEM(files); i++) {
    FILE *f = fopen(files[i], "rb");
    CHECKF(f != NULL, "%s: cannot open (the test's data is missing)", files[i]);
    if (!f) continue;
    static uint8_t buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    REQUIRE(n < sizeof buf);
    ProtobufCMessage *m = protobuf_c_message_unpack(&caffe__net_parameter__descriptor, NULL, n, buf);
    CHECKF(m != NULL, "%s does not unpack", files[i]);
    if (!m) continue;
    CHECK(((Caffe__NetParameter *)m)->n_layer > 0);
    free(ROUNDTRIP(m));
    protobuf_c_message_free_unpacked(m, NULL);
  }
}

/* Random messages over every descriptor reachable from the roots, generic over the schema. */
static uint64_t rng = 0x9e3779b97f4a7c15u;
static uint64_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static size_t elem_size(const ProtobufCFieldDescriptor *f) {
  switch (f->type) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return 8;
    case PROTOBUF_C_TYPE_DOUBLE: return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE: return sizeof(void *);
    default: return 4;
  }
}

static char *rand_bytes(size_t *len) {
  static const char pool[] = "aZ09 _-.#{}<>:[],;\"'\\\n\t\r\x01\x1f\x7f\x80\xc3\xa9\xff?";
  size_t n = rnd() % 12;
  char *s = malloc(n + 1);
  if (!s) abort();
  for (size_t i = 0; i < n; i++)
    s[i] = rnd() % 4 ? pool[rnd() % (sizeof pool - 1)] : (char)(1 + rnd() % 255);
  s[n] = '\0';
  *len = n;
  return s;
}

static ProtobufCMessage *rand_message(const ProtobufCMessageDescriptor *d, int depth);

static void rand_value(const ProtobufCFieldDescriptor *f, void *dst, int depth) {
  switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: {
      static const int32_t e[] = {0, 1, -1, INT32_MIN, INT32_MAX, 8, -8};
      int32_t v = rnd() % 2 ? e[rnd() % NELEM(e)] : (int32_t)(uint32_t)rnd();
      memcpy(dst, &v, 4);
      break;
    }
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: {
      uint32_t v = rnd() % 2 ? (uint32_t[]){0, 1, UINT32_MAX, 0x80000000u}[rnd() % 4] : (uint32_t)rnd();
      memcpy(dst, &v, 4);
      break;
    }
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: {
      uint64_t v = rnd() % 2 ? (uint64_t[]){0, 1, UINT64_MAX, (uint64_t)1 << 63,
                                            ((uint64_t)1 << 63) - 1}[rnd() % 5]
                             : rnd();
      memcpy(dst, &v, 8);
      break;
    }
    case PROTOBUF_C_TYPE_FLOAT: {
      float v;
      if (rnd() % 2) {
        v = edge_floats[rnd() % NELEM(edge_floats)];
      } else {
        uint32_t u = (uint32_t)rnd();
        memcpy(&v, &u, 4);
      }
      if (isnan(v)) v = NAN; /* the parser only ever produces the canonical NaN */
      memcpy(dst, &v, sizeof v);
      break;
    }
    case PROTOBUF_C_TYPE_DOUBLE: {
      double v;
      if (rnd() % 2) {
        v = edge_doubles[rnd() % NELEM(edge_doubles)];
      } else {
        uint64_t u = rnd();
        memcpy(&v, &u, 8);
      }
      if (isnan(v)) v = NAN;
      memcpy(dst, &v, sizeof v);
      break;
    }
    case PROTOBUF_C_TYPE_BOOL: {
      protobuf_c_boolean b = rnd() % 2;
      memcpy(dst, &b, sizeof b);
      break;
    }
    case PROTOBUF_C_TYPE_ENUM: {
      const ProtobufCEnumDescriptor *ed = f->descriptor;
      int32_t v = ed->values[rnd() % ed->n_values].value;
      memcpy(dst, &v, 4);
      break;
    }
    case PROTOBUF_C_TYPE_STRING: {
      size_t n;
      char *s = rand_bytes(&n);
      memcpy(dst, &s, sizeof s);
      break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
      ProtobufCBinaryData bd;
      bd.data = (uint8_t *)rand_bytes(&bd.len);
      if (bd.len) bd.data[0] = 0;
      memcpy(dst, &bd, sizeof bd);
      break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
      ProtobufCMessage *m = rand_message(f->descriptor, depth + 1);
      memcpy(dst, &m, sizeof m);
      break;
    }
  }
}

static ProtobufCMessage *rand_message(const ProtobufCMessageDescriptor *d, int depth) {
  ProtobufCMessage *m = malloc(d->sizeof_message);
  if (!m) abort();
  protobuf_c_message_init(d, m);
  char *base = (char *)m;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    if (f->type == PROTOBUF_C_TYPE_MESSAGE && (depth >= 5 || rnd() % 3 == 0)) {
      if (f->label == PROTOBUF_C_LABEL_REQUIRED) abort(); /* not in these schemas */
      continue;
    }
    if (f->label != PROTOBUF_C_LABEL_REQUIRED && rnd() % 3 == 0) continue; /* absent */
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t n = 1 + rnd() % (f->type == PROTOBUF_C_TYPE_MESSAGE ? 2 : 4);
      char *arr = malloc(n * elem_size(f));
      if (!arr) abort();
      for (size_t k = 0; k < n; k++) rand_value(f, arr + k * elem_size(f), depth);
      *(size_t *)(base + f->quantifier_offset) = n;
      *(void **)(base + f->offset) = arr;
    } else {
      rand_value(f, base + f->offset, depth);
      if (f->quantifier_offset) *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
    }
  }
  return m;
}

static void test_roundtrip_random(void) {
  const ProtobufCMessageDescriptor *roots[] = {
      &caffe__net_parameter__descriptor,   &caffe__solver_parameter__descriptor,
      &caffe__blob_proto__descriptor,      &caffe__v1_layer_parameter__descriptor,
      &caffe__solver_state__descriptor,    &distilld__distill_job__descriptor,
      &distilld__daemon_config__descriptor, &node_descriptor};
  for (size_t r = 0; r < NELEM(roots); r++) {
    int before = test__failed_checks;
    for (int i = 0; i < 150 && test__failed_checks == before; i++) {
      ProtobufCMessage *m = rand_message(roots[r], 0);
      free(ROUNDTRIP(m));
      protobuf_c_message_free_unpacked(m, NULL);
    }
  }
}

int main(void) {
  RUN(test_roundtrip_net_all_kinds);
  RUN(test_roundtrip_absent_vs_default);
  RUN(test_roundtrip_solver);
  RUN(test_roundtrip_distill);
  RUN(test_roundtrip_node);
  RUN(test_roundtrip_seed_files);
  RUN(test_roundtrip_caffemodel);
  RUN(test_roundtrip_random);
  return test_summary();
}
