/* Tests of the protobuf text format parser and printer (core/textformat.c).
 *
 * 1. Round trips, checked on the binary encoding: messages built in C with every field kind that
 *    caffe.proto and distill.proto use (and their extreme values) go print -> parse -> pack and
 *    must give the bytes that packing the original gives; the seed and reference prototxts go
 *    parse -> print -> parse; random messages over every descriptor go both ways.
 * 2. Syntax: every form the header promises (comments, block styles, lists, separators, escapes,
 *    number forms, bool spellings, has_ flags).
 * 3. Errors, one test per kind: the message text and FILE:LINE:COL, *out left NULL (the ASan build
 *    checks that the partial message is freed).
 * 4. File errors: a missing file and a directory.
 * The schema has no required field and no recursive message, so those two checks use a small
 * message descriptor written by hand below ("Node"). */
#define _POSIX_C_SOURCE 200809L
#include <float.h>
#include <limits.h>
#include <stdint.h>

#include "caffe.pb-c.h"
#include "base/dd_error.h"
#include "distill.pb-c.h"
#include "test.h"
#include "format/textformat.h"

#define FNAME "in.prototxt"

/* ------------------------------------------------------------------------------------------- */
/* Helpers                                                                                       */

static uint8_t *pack(const ProtobufCMessage *m, size_t *len) {
  *len = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(*len ? *len : 1);
  if (!buf) abort();
  size_t n = protobuf_c_message_pack(m, buf);
  if (n != *len) abort();
  return buf;
}

/* Whether `a` and `b` pack to the same bytes. */
static int same_binary(const ProtobufCMessage *a, const ProtobufCMessage *b) {
  size_t la, lb;
  uint8_t *pa = pack(a, &la), *pb = pack(b, &lb);
  int same = la == lb && memcmp(pa, pb, la) == 0;
  free(pa);
  free(pb);
  return same;
}

/* Parses NUL-terminated `text`; NULL (and a failed check naming the caller's line) on error. */
static ProtobufCMessage *parse_ok_(const ProtobufCMessageDescriptor *d, const char *text, int line) {
  char err[1024];
  ProtobufCMessage *m = (ProtobufCMessage *)&err; /* any non-NULL value: must be replaced */
  int r = dd_text_parse(&m, d, text, strlen(text), FNAME, err, sizeof err);
  CHECKF(r == 0 && m != NULL, "line %d: parse of <<%s>> failed: %d %s", line, text, r, err);
  if (r != 0) {
    CHECKF(m == NULL, "line %d: *out not NULL after a failure", line);
    return NULL;
  }
  return m;
}
#define PARSE_OK(d, text) parse_ok_((d), (text), __LINE__)

/* Parses `len` bytes of `text` expecting DD_EPARSE at line:col, with each of the NULL-terminated
 * `subs` in the message. Returns 1 when everything matched. */
static int expect_err_(const ProtobufCMessageDescriptor *d, const char *text, size_t len, int eline,
                       int ecol, const char *const *subs, int line) {
  char err[1024];
  ProtobufCMessage *m = (ProtobufCMessage *)&err;
  int r = dd_text_parse(&m, d, text, len, FNAME, err, sizeof err);
  int ok = 1;
  if (r != DD_EPARSE || m != NULL) {
    CHECKF(0, "line %d: <<%.*s>>: expected DD_EPARSE and NULL, got %d, %p (%s)", line, (int)len,
           text, r, (void *)m, r ? err : "parsed");
    if (r == 0) protobuf_c_message_free_unpacked(m, NULL);
    return 0;
  }
  char prefix[64];
  snprintf(prefix, sizeof prefix, FNAME ":%d:%d: ", eline, ecol);
  if (strncmp(err, prefix, strlen(prefix)) != 0) {
    CHECKF(0, "line %d: expected the error at \"%s\", got \"%s\"", line, prefix, err);
    ok = 0;
  }
  for (; *subs; subs++) {
    if (!strstr(err, *subs)) {
      CHECKF(0, "line %d: \"%s\" not found in \"%s\"", line, *subs, err);
      ok = 0;
    }
  }
  return ok;
}
#define EXPECT_ERR(d, text, eline, ecol, ...)                                           \
  expect_err_((d), (text), strlen(text), (eline), (ecol), (const char *const[]){__VA_ARGS__, NULL}, \
              __LINE__)
#define EXPECT_ERR_N(d, text, len, eline, ecol, ...) \
  expect_err_((d), (text), (len), (eline), (ecol), (const char *const[]){__VA_ARGS__, NULL}, __LINE__)

/* print -> parse -> pack must equal pack(m); printing the result again must give the same text.
 * Returns the printed text (caller frees) or NULL after a failed check. */
static char *roundtrip_(const ProtobufCMessage *m, int line) {
  char *text = dd_text_print(m);
  CHECKF(text != NULL, "line %d: print failed", line);
  if (!text) return NULL;
  char err[1024];
  ProtobufCMessage *back = NULL;
  int r = dd_text_parse(&back, m->descriptor, text, strlen(text), "printed", err, sizeof err);
  CHECKF(r == 0, "line %d: re-parse of the printed text failed: %s\n%s", line, err, text);
  if (r) {
    free(text);
    return NULL;
  }
  CHECKF(same_binary(m, back), "line %d: binary differs after print/parse of\n%s", line, text);
  char *again = dd_text_print(back);
  CHECKF(again && strcmp(again, text) == 0, "line %d: printing is not stable:\n%s\n---\n%s", line,
         text, again ? again : "(null)");
  free(again);
  protobuf_c_message_free_unpacked(back, NULL);
  return text;
}
#define ROUNDTRIP(m) roundtrip_((const ProtobufCMessage *)(m), __LINE__)

/* parse -> print -> parse of a file; both parses must pack the same. */
static void file_roundtrip(const ProtobufCMessageDescriptor *d, const char *path) {
  char err[1024];
  ProtobufCMessage *m = NULL;
  int r = dd_text_parse_file(&m, d, path, err, sizeof err);
  CHECKF(r == 0, "%s: %s", path, err);
  if (r) return;
  free(ROUNDTRIP(m));
  protobuf_c_message_free_unpacked(m, NULL);
}

static uint32_t float_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static uint64_t double_bits(double d) {
  uint64_t u;
  memcpy(&u, &d, 8);
  return u;
}

/* ------------------------------------------------------------------------------------------- */
/* A hand-written descriptor: the schema has neither a required field nor a recursive message,
 * and no uint64, sint64 or bytes field; "Node" has all of them.
 *   message Node { required int32 id = 1; optional int32 tag = 2; optional Node child = 3;
 *                  repeated Node kids = 4; optional uint64 big = 5; optional bytes blob = 6;
 *                  repeated sint64 zz = 7 [packed = true]; } */

typedef struct Node {
  ProtobufCMessage base;
  int32_t id;
  protobuf_c_boolean has_tag;
  int32_t tag;
  struct Node *child;
  size_t n_kids;
  struct Node **kids;
  protobuf_c_boolean has_big;
  uint64_t big;
  protobuf_c_boolean has_blob;
  ProtobufCBinaryData blob;
  size_t n_zz;
  int64_t *zz;
} Node;

static const ProtobufCMessageDescriptor node_descriptor;

static void node_init(ProtobufCMessage *m) {
  static const Node init = {PROTOBUF_C_MESSAGE_INIT(&node_descriptor), 0, 0, 0, NULL, 0, NULL,
                            0, 0, 0, {0, NULL}, 0, NULL};
  *(Node *)m = init;
}

#define NODE_FIELD(nm, num, lab, typ, q, off, desc, fl)                               \
  {                                                                                  \
    nm, num, PROTOBUF_C_LABEL_##lab, PROTOBUF_C_TYPE_##typ, q, offsetof(Node, off), desc, NULL, \
        fl, 0, NULL, NULL                                                            \
  }
static const ProtobufCFieldDescriptor node_fields[7] = {
    NODE_FIELD("id", 1, REQUIRED, INT32, 0, id, NULL, 0),
    NODE_FIELD("tag", 2, OPTIONAL, INT32, offsetof(Node, has_tag), tag, NULL, 0),
    NODE_FIELD("child", 3, OPTIONAL, MESSAGE, 0, child, &node_descriptor, 0),
    NODE_FIELD("kids", 4, REPEATED, MESSAGE, offsetof(Node, n_kids), kids, &node_descriptor, 0),
    NODE_FIELD("big", 5, OPTIONAL, UINT64, offsetof(Node, has_big), big, NULL, 0),
    NODE_FIELD("blob", 6, OPTIONAL, BYTES, offsetof(Node, has_blob), blob, NULL, 0),
    NODE_FIELD("zz", 7, REPEATED, SINT64, offsetof(Node, n_zz), zz, NULL,
               PROTOBUF_C_FIELD_FLAG_PACKED),
};
static const unsigned node_by_name[7] = {4, 5, 2, 0, 3, 1, 6}; /* big blob child id kids tag zz */
static const ProtobufCIntRange node_ranges[2] = {{1, 0}, {0, 7}};
static const ProtobufCMessageDescriptor node_descriptor = {
    PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC, "test.Node", "Node", "Node", "test", sizeof(Node), 7,
    node_fields, node_by_name, 1, node_ranges, node_init, NULL, NULL, NULL};

/* ------------------------------------------------------------------------------------------- */
/* 1. Round trips                                                                                */

static float edge_floats[] = {0.0f, -0.0f, 1.0f, -1.0f, 0.1f, 1e-8f, 1.0f / 3.0f, FLT_MAX,
                              -FLT_MAX, FLT_MIN, FLT_TRUE_MIN, -FLT_TRUE_MIN, 1e-40f,
                              1.17549421e-38f /* largest denormal */, 16777217.0f, 3.4e38f,
                              123456792.0f, 0.017f, 0.999f, 1e-5f};
static double edge_doubles[] = {0.0, -0.0, 0.1, -0.1, 1.0 / 3.0, DBL_MAX, -DBL_MAX, DBL_MIN,
                                4.9406564584124654e-324, 2.2250738585072009e-308, 1e300,
                                9007199254740993.0, 5e-324, 0.30000000000000004, 1e23};
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static void test_roundtrip_net_all_kinds(void) {
  /* float data: every edge value plus inf, -inf, nan */
  float fdata[NELEM(edge_floats) + 3];
  memcpy(fdata, edge_floats, sizeof edge_floats);
  fdata[NELEM(edge_floats)] = INFINITY;
  fdata[NELEM(edge_floats) + 1] = -INFINITY;
  fdata[NELEM(edge_floats) + 2] = NAN;
  double ddata[NELEM(edge_doubles) + 3];
  memcpy(ddata, edge_doubles, sizeof edge_doubles);
  ddata[NELEM(edge_doubles)] = INFINITY;
  ddata[NELEM(edge_doubles) + 1] = -INFINITY;
  ddata[NELEM(edge_doubles) + 2] = NAN;

  int64_t dims[] = {INT64_MIN, INT64_MAX, 0, -1, 1, (int64_t)1 << 53, -((int64_t)1 << 32)};
  Caffe__BlobShape shape = CAFFE__BLOB_SHAPE__INIT;
  shape.n_dim = NELEM(dims);
  shape.dim = dims;
  Caffe__BlobShape *shapes[] = {&shape, &shape};

  Caffe__BlobProto blob = CAFFE__BLOB_PROTO__INIT;
  blob.shape = &shape;
  blob.n_data = NELEM(fdata);
  blob.data = fdata;
  blob.n_diff = 2;
  blob.diff = fdata + 5;
  blob.n_double_data = NELEM(ddata);
  blob.double_data = ddata;
  blob.has_num = 1;
  blob.num = INT32_MIN;
  blob.has_channels = 1;
  blob.channels = INT32_MAX;
  blob.has_height = 1;
  blob.height = 0; /* present with the default value */
  Caffe__BlobProto *blobs[] = {&blob};

  Caffe__ParamSpec ps0 = CAFFE__PARAM_SPEC__INIT, ps1 = CAFFE__PARAM_SPEC__INIT;
  ps0.has_lr_mult = 1;
  ps0.lr_mult = 0;
  ps0.has_decay_mult = 1;
  ps0.decay_mult = -0.0f;
  ps1.name = (char *)"shared \"w\"";
  ps1.has_share_mode = 1;
  ps1.share_mode = CAFFE__PARAM_SPEC__DIM_CHECK_MODE__PERMISSIVE;
  Caffe__ParamSpec *params[] = {&ps0, &ps1};

  Caffe__NetStateRule rule = CAFFE__NET_STATE_RULE__INIT;
  rule.has_phase = 1;
  rule.phase = CAFFE__PHASE__TEST;
  rule.has_min_level = 1;
  rule.min_level = -5;
  char *stages[] = {(char *)"a b", (char *)"", (char *)"\xe2\x9c\x93"};
  rule.n_stage = 3;
  rule.stage = stages;
  rule.n_not_stage = 1;
  rule.not_stage = stages;
  Caffe__NetStateRule *rules[] = {&rule};

  Caffe__FillerParameter wf = CAFFE__FILLER_PARAMETER__INIT, bf = CAFFE__FILLER_PARAMETER__INIT;
  wf.type = (char *)"msra";
  wf.has_sparse = 1;
  wf.sparse = INT32_MIN;
  wf.has_variance_norm = 1;
  wf.variance_norm = CAFFE__FILLER_PARAMETER__VARIANCE_NORM__AVERAGE;
  wf.has_std = 1;
  wf.std = 1e-8f;
  bf.type = (char *)"constant"; /* present, equal to the default, but not the default pointer */
  bf.has_value = 1;
  bf.value = 0.1f;

  uint32_t pads[] = {0, UINT32_MAX, 1};
  Caffe__ConvolutionParameter conv = CAFFE__CONVOLUTION_PARAMETER__INIT;
  conv.has_num_output = 1;
  conv.num_output = UINT32_MAX;
  conv.n_pad = 3;
  conv.pad = pads;
  conv.n_kernel_size = 1;
  conv.kernel_size = pads + 2;
  conv.weight_filler = &wf;
  conv.bias_filler = &bf;
  conv.has_engine = 1;
  conv.engine = CAFFE__CONVOLUTION_PARAMETER__ENGINE__CUDNN;
  conv.has_bias_term = 1;
  conv.bias_term = 0;
  conv.has_axis = 1;
  conv.axis = -1;

  Caffe__BatchNormParameter bn = CAFFE__BATCH_NORM_PARAMETER__INIT;
  bn.has_use_global_stats = 1;
  bn.use_global_stats = 0; /* explicit false: differs from unset */
  bn.has_eps = 1;
  bn.eps = 1e-5f;

  float means[] = {115, 126.5f, -0.0f};
  Caffe__TransformationParameter tp = CAFFE__TRANSFORMATION_PARAMETER__INIT;
  tp.has_scale = 1;
  tp.scale = 0.017f;
  tp.has_crop_size = 1;
  tp.crop_size = 32;
  tp.n_mean_value = 3;
  tp.mean_value = means;
  tp.has_color = 1;
  tp.color = 1;
  tp.mean_file = (char *)"C:\\data\\mean.binaryproto";

  Caffe__DistillLossParameter dl = CAFFE__DISTILL_LOSS_PARAMETER__INIT;
  dl.has_temperature = 1;
  dl.temperature = 4;

  Caffe__EltwiseParameter elt = CAFFE__ELTWISE_PARAMETER__INIT;
  elt.has_operation = 1;
  elt.operation = CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__PROD; /* enum value 0, present */
  elt.n_coeff = 2;
  elt.coeff = means;

  protobuf_c_boolean pd[] = {1, 0, 1};
  float lw[] = {1, 0.5f, 0};
  char *bottoms[] = {(char *)"data", (char *)"tab\there", (char *)"nl\nhere",
                     (char *)"ctl\x01\x02\x1f\x7f\x80\xff", (char *)"quote'single\"double\\back",
                     (char *)"h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80", (char *)"#not a comment",
                     (char *)"\\x41\\101"};
  Caffe__LayerParameter l0 = CAFFE__LAYER_PARAMETER__INIT, l1 = CAFFE__LAYER_PARAMETER__INIT;
  l0.name = (char *)"conv1";
  l0.type = (char *)"Convolution";
  l0.n_bottom = NELEM(bottoms);
  l0.bottom = bottoms;
  l0.n_top = 1;
  l0.top = bottoms;
  l0.has_phase = 1;
  l0.phase = CAFFE__PHASE__TRAIN;
  l0.n_loss_weight = 3;
  l0.loss_weight = lw;
  l0.n_param = 2;
  l0.param = params;
  l0.n_blobs = 1;
  l0.blobs = blobs;
  l0.n_propagate_down = 3;
  l0.propagate_down = pd;
  l0.n_include = 1;
  l0.include = rules;
  l0.n_exclude = 1;
  l0.exclude = rules;
  l0.transform_param = &tp;
  l0.convolution_param = &conv;
  l0.batch_norm_param = &bn;
  l0.distill_loss_param = &dl;
  l0.eltwise_param = &elt;
  /* l1: an empty layer, and empty sub-messages */
  Caffe__PoolingParameter pool = CAFFE__POOLING_PARAMETER__INIT;
  Caffe__ReLUParameter relu = CAFFE__RE_LUPARAMETER__INIT;
  l1.pooling_param = &pool;
  l1.relu_param = &relu;
  Caffe__LayerParameter empty = CAFFE__LAYER_PARAMETER__INIT;
  Caffe__LayerParameter *layers[] = {&l0, &l1, &empty};

  Caffe__V1LayerParameter v1 = CAFFE__V1_LAYER_PARAMETER__INIT;
  v1.has_type = 1;
  v1.type = CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__THRESHOLD;
  v1.name = (char *)"old";
  Caffe__V1LayerParameter *v1s[] = {&v1};

  Caffe__NetState st = CAFFE__NET_STATE__INIT;
  st.has_phase = 1;
  st.phase = CAFFE__PHASE__TRAIN;
  st.has_level = 1;
  st.level = INT32_MIN;

  int32_t idims[] = {INT32_MIN, INT32_MAX, 0, -1};
  char *inputs[] = {(char *)"data", (char *)""};
  Caffe__NetParameter net = CAFFE__NET_PARAMETER__INIT;
  net.name = (char *)"all \"kinds\"\n\ttab \\ \x01 \xc3\xa9";
  net.n_input = 2;
  net.input = inputs;
  net.n_input_shape = 2;
  net.input_shape = shapes;
  net.n_input_dim = NELEM(idims);
  net.input_dim = idims;
  net.has_force_backward = 1;
  net.force_backward = 0;
  net.has_debug_info = 1;
  net.debug_info = 1;
  net.state = &st;
  net.n_layer = 3;
  net.layer = layers;
  net.n_layers = 1;
  net.layers = v1s;

  char *text = ROUNDTRIP(&net);
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

/* ------------------------------------------------------------------------------------------- */
/* 2. Syntax                                                                                     */

#define NET(text) ((Caffe__NetParameter *)PARSE_OK(&caffe__net_parameter__descriptor, (text)))
#define FREE(m) protobuf_c_message_free_unpacked(&(m)->base, NULL)

static void test_syntax_empty_and_comments(void) {
  const char *empties[] = {"", "   \n\t\r\n", "# only a comment", "# a\n#b\n\n# c { } <"};
  for (size_t i = 0; i < NELEM(empties); i++) {
    Caffe__NetParameter *n = NET(empties[i]);
    REQUIRE(n != NULL);
    CHECK(n->name == NULL && n->n_layer == 0);
    FREE(n);
  }
  Caffe__NetParameter *n = NET("# header\nname: \"n\" # trailing } >\n# line\r\ninput: \"a#b\"#x\n"
                               "input: 'c # d'   # end");
  REQUIRE(n != NULL);
  CHECK(strcmp(n->name, "n") == 0);
  CHECK(n->n_input == 2 && strcmp(n->input[0], "a#b") == 0 && strcmp(n->input[1], "c # d") == 0);
  FREE(n);
}

static void test_syntax_blocks(void) {
  const char *forms[] = {"state { phase: TRAIN level: 2 }", "state < phase: TRAIN level: 2 >",
                         "state: { phase: TRAIN level: 2 }", "state: < phase: TRAIN level: 2 >",
                         "state{phase:TRAIN level:2}", "state\n{\nphase\n:\nTRAIN\nlevel:2\n}"};
  for (size_t i = 0; i < NELEM(forms); i++) {
    Caffe__NetParameter *n = NET(forms[i]);
    REQUIRE(n != NULL);
    CHECK(n->state && n->state->has_phase && n->state->phase == CAFFE__PHASE__TRAIN);
    CHECK(n->state->has_level && n->state->level == 2);
    FREE(n);
  }
  /* mixed nesting */
  Caffe__NetParameter *n =
      NET("layer < name: 'a' convolution_param { weight_filler: < type: \"msra\" > } >");
  REQUIRE(n != NULL);
  CHECK(n->n_layer == 1 && strcmp(n->layer[0]->convolution_param->weight_filler->type, "msra") == 0);
  FREE(n);
  n = NET("state { }");
  REQUIRE(n != NULL);
  CHECK(n->state != NULL && !n->state->has_phase && n->state->phase == CAFFE__PHASE__TEST);
  FREE(n);
}

static void test_syntax_lists(void) {
  Caffe__NetParameter *n = NET("input_dim: [1, 2, 3] input_dim: 4 input_dim: [] input_dim: [ ]"
                               " input_dim: [5]");
  REQUIRE(n != NULL);
  CHECK(n->n_input_dim == 5);
  for (int i = 0; i < 5 && (size_t)i < n->n_input_dim; i++) CHECK(n->input_dim[i] == i + 1);
  FREE(n);
  n = NET("layer [ { name: \"a\" }, < name: \"b\" > ] layer: [ {name: \"c\"} ] layer [] layer: []"
          " layer { name: 'd' }");
  REQUIRE(n != NULL);
  REQUIRE(n->n_layer == 4);
  CHECK(strcmp(n->layer[0]->name, "a") == 0 && strcmp(n->layer[1]->name, "b") == 0);
  CHECK(strcmp(n->layer[2]->name, "c") == 0 && strcmp(n->layer[3]->name, "d") == 0);
  FREE(n);
  n = NET("layer { propagate_down: [true, f, 1] loss_weight: [1, .5, -inf] "
          "bottom: [\"a\" \"b\", 'c'] include [ { phase: TEST }, { phase: 0 } ] }");
  REQUIRE(n != NULL && n->n_layer == 1);
  Caffe__LayerParameter *l = n->layer[0];
  CHECK(l->n_propagate_down == 3 && l->propagate_down[0] == 1 && l->propagate_down[1] == 0 &&
        l->propagate_down[2] == 1);
  CHECK(l->n_loss_weight == 3 && l->loss_weight[1] == 0.5f && l->loss_weight[2] == -INFINITY);
  CHECK(l->n_bottom == 2 && strcmp(l->bottom[0], "ab") == 0 && strcmp(l->bottom[1], "c") == 0);
  CHECK(l->n_include == 2 && l->include[0]->phase == CAFFE__PHASE__TEST &&
        l->include[1]->phase == CAFFE__PHASE__TRAIN);
  FREE(n);
  /* many elements: the array grows past several powers of two */
  char text[8192] = "input_dim: [0";
  for (int i = 1; i < 1000; i++) snprintf(text + strlen(text), sizeof text - strlen(text), ",%d", i);
  strcat(text, "]");
  n = NET(text);
  REQUIRE(n != NULL);
  CHECK(n->n_input_dim == 1000);
  for (size_t i = 0; i < n->n_input_dim; i++) CHECK(n->input_dim[i] == (int32_t)i);
  FREE(n);
}

static void test_syntax_separators(void) {
  Caffe__NetParameter *n = NET("name: \"a\"; input: \"b\", input: \"c\";\n"
                               "layer { name: \"x\", type: \"y\"; }, layer < name: 'z'; >;"
                               "state { phase: TRAIN; level: 1, };");
  REQUIRE(n != NULL);
  CHECK(strcmp(n->name, "a") == 0 && n->n_input == 2);
  CHECK(n->n_layer == 2 && strcmp(n->layer[0]->type, "y") == 0);
  CHECK(n->state && n->state->level == 1);
  FREE(n);
}

static void test_syntax_enums(void) {
  const char *forms[] = {"state { phase: TEST }", "state { phase: 1 }", "state { phase: 0x1 }",
                         "state { phase: 01 }"};
  for (size_t i = 0; i < NELEM(forms); i++) {
    Caffe__NetParameter *n = NET(forms[i]);
    REQUIRE(n != NULL);
    CHECK(n->state->has_phase && n->state->phase == CAFFE__PHASE__TEST);
    FREE(n);
  }
  Caffe__NetParameter *n = NET("layers { type: CONTRASTIVE_LOSS } layers { type: 37 }");
  REQUIRE(n != NULL && n->n_layers == 2);
  CHECK(n->layers[0]->type == CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__CONTRASTIVE_LOSS);
  CHECK(n->layers[1]->type == 37);
  FREE(n);
}

static void test_syntax_strings(void) {
  Caffe__NetParameter *n = NET("name: \"a\" 'b' \"c\"\n  'd'\ninput: \"\" input: '' \"\"\n"
                               "input: '\"' input: \"'\"");
  REQUIRE(n != NULL);
  CHECK(strcmp(n->name, "abcd") == 0);
  CHECK(n->n_input == 4 && strcmp(n->input[0], "") == 0 && strcmp(n->input[1], "") == 0);
  CHECK(strcmp(n->input[2], "\"") == 0 && strcmp(n->input[3], "'") == 0);
  FREE(n);
  n = NET("name: \"\\n\\t\\\\\\'\\\"\\x41\\101\\a\\b\\f\\r\\v\\?\\X4a\\0101\\x4g\\7\"");
  REQUIRE(n != NULL);
  CHECK(strcmp(n->name, "\n\t\\'\"AA\a\b\f\r\v?J\b1\x04g\a") == 0);
  FREE(n);
  /* raw UTF-8, tabs and control bytes inside quotes are kept as they are */
  n = NET("name: \"h\xc3\xa9llo\t\x01\xe2\x9c\x93\"");
  REQUIRE(n != NULL);
  CHECK(strcmp(n->name, "h\xc3\xa9llo\t\x01\xe2\x9c\x93") == 0);
  FREE(n);
}

static void test_syntax_integers(void) {
  Caffe__NetParameter *n = NET("input_dim: [0x1F, 0X1f, 017, -5, -0x10, -010, - 3, 2147483647,"
                               " -2147483648, 0x7fffffff, -0x80000000, 0, -0, 00]");
  REQUIRE(n != NULL);
  int32_t want[] = {31, 31, 15, -5, -16, -8, -3, INT32_MAX, INT32_MIN, INT32_MAX, INT32_MIN, 0, 0, 0};
  REQUIRE(n->n_input_dim == NELEM(want));
  for (size_t i = 0; i < NELEM(want); i++) CHECKF(n->input_dim[i] == want[i], "element %zu", i);
  FREE(n);
  n = NET("input_shape { dim: [-9223372036854775808, 9223372036854775807, 0x7FFFFFFFFFFFFFFF,"
          " -0x8000000000000000, 0777777777777777777777] }"
          "layer { convolution_param { num_output: 0xFFFFFFFF pad: 4294967295 pad: 037777777777 "
          "pad: -0 } }");
  REQUIRE(n != NULL);
  int64_t w64[] = {INT64_MIN, INT64_MAX, INT64_MAX, INT64_MIN, INT64_MAX};
  REQUIRE(n->n_input_shape == 1 && n->input_shape[0]->n_dim == NELEM(w64));
  for (size_t i = 0; i < NELEM(w64); i++) CHECKF(n->input_shape[0]->dim[i] == w64[i], "dim %zu", i);
  Caffe__ConvolutionParameter *c = n->layer[0]->convolution_param;
  CHECK(c->num_output == UINT32_MAX && c->n_pad == 3 && c->pad[0] == UINT32_MAX &&
        c->pad[1] == UINT32_MAX && c->pad[2] == 0);
  FREE(n);
}

static void test_syntax_floats(void) {
  Caffe__NetParameter *n =
      NET("layer { loss_weight: [1e5, .5, 1., 2.5f, 2.5F, 1E-3, inf, -inf, nan, Infinity, "
          "-Infinity, INF, NaN, 3, 0x10, -0, 1e-50, 1.5e+2, 1f, 0.017, 3.40282347e+38, "
          "-3.4028235e38, 1.4e-45, 010, -nan, 1e-45f, 0f, 1.e2] }");
  REQUIRE(n != NULL && n->n_layer == 1);
  float *v = n->layer[0]->loss_weight;
  REQUIRE(n->layer[0]->n_loss_weight == 28);
  CHECK(v[0] == 1e5f && v[1] == 0.5f && v[2] == 1.0f && v[3] == 2.5f && v[4] == 2.5f);
  CHECK(v[5] == 1e-3f && v[6] == INFINITY && v[7] == -INFINITY && isnan(v[8]));
  CHECK(v[9] == INFINITY && v[10] == -INFINITY && v[11] == INFINITY && isnan(v[12]));
  CHECK(v[13] == 3.0f && v[14] == 16.0f);
  CHECK(v[15] == 0 && signbit(v[15]));
  CHECK(v[16] == 0 && !signbit(v[16]));
  CHECK(v[17] == 150.0f && v[18] == 1.0f && v[19] == 0.017f);
  CHECK(v[20] == FLT_MAX);
  CHECK(v[21] == -FLT_MAX); /* above FLT_MAX as a double, but rounds to it as a float */
  CHECK(v[22] == FLT_TRUE_MIN);
  CHECKF(v[23] == 8.0f, "010 is octal for a float as for an integer: got %g", v[23]);
  CHECKF(float_bits(v[24]) == float_bits(NAN) && float_bits(v[8]) == float_bits(NAN),
         "NaN not canonical: %08x", float_bits(v[24]));
  CHECK(v[25] == FLT_TRUE_MIN && v[26] == 0 && v[27] == 100.0f);
  FREE(n);
  n = NET("layer { blobs { double_data: [0.1, 1.7976931348623157e+308, 4.9406564584124654e-324,"
          " -0, nan, -nan, inf, 1e-400, 0x20, 9007199254740993] } }");
  REQUIRE(n != NULL);
  double *d = n->layer[0]->blobs[0]->double_data;
  REQUIRE(n->layer[0]->blobs[0]->n_double_data == 10);
  CHECK(d[0] == 0.1 && d[1] == DBL_MAX && d[2] == 4.9406564584124654e-324);
  CHECK(d[3] == 0 && signbit(d[3]));
  CHECK(double_bits(d[4]) == double_bits(NAN) && double_bits(d[5]) == double_bits(NAN));
  CHECK(d[6] == INFINITY && d[7] == 0 && d[8] == 32.0 && d[9] == 9007199254740992.0);
  FREE(n);
}

/* "-nan" reads as the canonical NaN: a negative NaN would print as "nan" and come back positive. */
static void test_syntax_nan_is_canonical(void) {
  Caffe__NetParameter *n = NET("layer { loss_weight: [-nan, -NaN, nan] blobs { double_data: [-nan, nan] } }");
  REQUIRE(n != NULL);
  for (int i = 0; i < 3; i++)
    CHECKF(float_bits(n->layer[0]->loss_weight[i]) == float_bits(NAN), "float %d: %08x", i,
           float_bits(n->layer[0]->loss_weight[i]));
  for (int i = 0; i < 2; i++)
    CHECK(double_bits(n->layer[0]->blobs[0]->double_data[i]) == double_bits((double)NAN));
  free(ROUNDTRIP(n));
  FREE(n);
}

static void test_syntax_bools_and_has_flags(void) {
  Caffe__NetParameter *n = NET("layer { propagate_down: [true, false, True, False, t, f, 1, 0] }");
  REQUIRE(n != NULL);
  REQUIRE(n->layer[0]->n_propagate_down == 8);
  for (int i = 0; i < 8; i++) CHECK(n->layer[0]->propagate_down[i] == (i % 2 == 0));
  FREE(n);
  n = NET("layer { batch_norm_param { use_global_stats: false } }"
          "layer { batch_norm_param { use_global_stats: true } }"
          "layer { batch_norm_param { } }"
          "layer { }"
          "force_backward: False");
  REQUIRE(n != NULL && n->n_layer == 4);
  Caffe__BatchNormParameter *b0 = n->layer[0]->batch_norm_param;
  Caffe__BatchNormParameter *b1 = n->layer[1]->batch_norm_param;
  Caffe__BatchNormParameter *b2 = n->layer[2]->batch_norm_param;
  CHECK(b0 && b0->has_use_global_stats == 1 && b0->use_global_stats == 0);
  CHECK(b1 && b1->has_use_global_stats == 1 && b1->use_global_stats == 1);
  CHECK(b2 && b2->has_use_global_stats == 0 && !b2->has_eps && b2->eps == 1e-5f);
  CHECK(n->layer[3]->batch_norm_param == NULL);
  CHECK(n->has_force_backward && !n->force_backward && !n->has_debug_info);
  FREE(n);
}

static void test_syntax_line_endings_and_positions(void) {
  /* CRLF and tabs: the error position is still line:column in bytes */
  EXPECT_ERR(&caffe__net_parameter__descriptor, "name: \"a\"\r\n\r\n\tbogus: 1\r\n", 3, 2,
             "unknown field \"bogus\" in NetParameter");
  EXPECT_ERR(&caffe__net_parameter__descriptor, "# c { \n  # }\n\n   \n      x: 1", 5, 7,
             "unknown field \"x\"");
}

/* ------------------------------------------------------------------------------------------- */
/* 3. Errors                                                                                     */

#define NETD (&caffe__net_parameter__descriptor)
#define SOLVERD (&caffe__solver_parameter__descriptor)

static void test_err_unknown_field(void) {
  EXPECT_ERR(NETD,
             "layer {\n  name: \"data\"\n  image_data_param {\n    source: \"x\"\n    pair_size: 3\n"
             "  }\n}\n",
             5, 5, "unknown field \"pair_size\" in ImageDataParameter",
             "(at layer[0].image_data_param)");
  char err[512];
  ProtobufCMessage *m;
  const char *t = "image_data_param { pair_size: 3 }";
  dd_text_parse(&m, &caffe__layer_parameter__descriptor, t, strlen(t), FNAME, err, sizeof err);
  CHECKF(strstr(err, "did you mean") == NULL, "no field is close to pair_size: %s", err);
  EXPECT_ERR(NETD, "layer { convolution_param { num_outptu: 3 } }", 1, 29,
             "unknown field \"num_outptu\" in ConvolutionParameter (did you mean \"num_output\"?)",
             "(at layer[0].convolution_param)");
  EXPECT_ERR(NETD, "nmae: \"x\"", 1, 1, "unknown field \"nmae\" in NetParameter (did you mean \"name\"?)");
  EXPECT_ERR(SOLVERD, "test_iter: 1\nbase_lr 0.1\nlr_polcy: \"x\"", 2, 9, "expected ':'");
  EXPECT_ERR(SOLVERD, "lr_polcy: \"x\"", 1, 1, "did you mean \"lr_policy\"?");
  /* a name of 200 characters */
  char longname[256];
  memset(longname, 'a', 200);
  strcpy(longname + 200, ": 1");
  EXPECT_ERR(NETD, longname, 1, 1, "field name too long");
}

static void test_err_wrong_type(void) {
  EXPECT_ERR(NETD, "name: 5", 1, 7, "field \"name\" takes a quoted string, found number 5");
  EXPECT_ERR(NETD, "input_dim: \"3\"", 1, 12,
             "field \"input_dim\" takes a 32-bit integer, found string \"3\"");
  EXPECT_ERR(NETD, "input_dim: 1.5", 1, 12, "takes a 32-bit integer, found number 1.5");
  EXPECT_ERR(NETD, "input_dim: 1e3", 1, 12, "found number 1e3");
  EXPECT_ERR(NETD, "input_dim: inf", 1, 12, "found \"inf\"");
  EXPECT_ERR(NETD, "state: 5", 1, 8, "field \"state\" takes a message: expected '{', found number 5");
  EXPECT_ERR(NETD, "state 5", 1, 7, "field \"state\" takes a message");
  EXPECT_ERR(NETD, "state: \"x\"", 1, 8, "takes a message", "found string \"x\"");
  EXPECT_ERR(NETD, "layer: [1]", 1, 9, "takes a message");
  EXPECT_ERR(NETD, "state { phase: true }", 1, 16,
             "\"true\" is not a value of enum Phase for field \"phase\" (one of: TRAIN, TEST)",
             "(at state)");
  EXPECT_ERR(NETD, "state { phase: 1.0 }", 1, 16, "takes a value of enum Phase, found number 1.0");
  EXPECT_ERR(NETD, "state { phase: \"TRAIN\" }", 1, 16, "takes a value of enum Phase");
  EXPECT_ERR(NETD, "force_backward: -1", 1, 17, "field \"force_backward\" takes a bool, found '-'");
  EXPECT_ERR(NETD, "force_backward: -true", 1, 17, "takes a bool, found '-'");
  EXPECT_ERR(NETD, "force_backward: 2", 1, 17, "takes a bool (true or false), found number 2");
  EXPECT_ERR(NETD, "force_backward: \"true\"", 1, 17, "takes a bool", "found string \"true\"");
  EXPECT_ERR(NETD, "force_backward: yes", 1, 17, "takes a bool", "found \"yes\"");
  EXPECT_ERR(NETD, "force_backward: TRUE", 1, 17, "takes a bool");
  EXPECT_ERR(NETD, "layer { loss_weight: \"1\" }", 1, 22, "takes a float, found string \"1\"");
  EXPECT_ERR(NETD, "layer { loss_weight: infinite }", 1, 22, "takes a float, found \"infinite\"");
  EXPECT_ERR(NETD, "name: -\"x\"", 1, 7, "takes a quoted string, found '-'");
  EXPECT_ERR(NETD, "name { }", 1, 6, "expected ':' after field name \"name\", found '{'");
  EXPECT_ERR(NETD, "name: { }", 1, 7, "takes a quoted string, found '{'");
  EXPECT_ERR(NETD, "name", 1, 5, "expected ':' after field name \"name\", found end of file");
  EXPECT_ERR(NETD, "name:", 1, 6, "takes a quoted string, found end of file");
  EXPECT_ERR(NETD, "input_dim: -", 1, 13, "found end of file");
  EXPECT_ERR(NETD, "input_dim: --1", 1, 13, "found '-'");
  EXPECT_ERR(NETD, "5: 3", 1, 1, "expected a field name of NetParameter, found number 5");
  EXPECT_ERR(NETD, "\"name\": 3", 1, 1, "expected a field name of NetParameter, found string");
  EXPECT_ERR(NETD, "name: \"a\" 3", 1, 11, "expected a field name of NetParameter, found number 3");
  EXPECT_ERR(NETD, "name: \"a\",, input: \"b\"", 1, 11, "found ','");
  EXPECT_ERR(NETD, "input_dim: 09", 1, 12, "invalid digits in number 09");
  EXPECT_ERR(NETD, "layer { loss_weight: 09 }", 1, 22, "invalid digits");
  EXPECT_ERR(NETD, "input_dim: 0x", 1, 12, "expected hex digits after \"0x\"");
  EXPECT_ERR(NETD, "input_dim: 0xg", 1, 12, "expected hex digits");
  EXPECT_ERR(NETD, "input_dim: 0x1.5", 1, 12, "glued");
  /* the path names the element of a repeated message */
  EXPECT_ERR(NETD, "layer { } layer { param { } param { lr_mult: x } }", 1, 46,
             "field \"lr_mult\" takes a float, found \"x\"", "(at layer[1].param[1])");
  EXPECT_ERR(NETD, "layer [ { }, { bottom: 1 } ]", 1, 24, "(at layer[1])");
}

static void test_err_out_of_range(void) {
  EXPECT_ERR(NETD, "input_dim: 2147483648", 1, 12,
             "2147483648 is out of range for field \"input_dim\" (a 32-bit integer)");
  EXPECT_ERR(NETD, "input_dim: -2147483649", 1, 12, "-2147483649 is out of range");
  EXPECT_ERR(NETD, "input_dim: 0x80000000", 1, 12, "0x80000000 is out of range");
  EXPECT_ERR(NETD, "input_dim: 99999999999999999999999", 1, 12, "is out of range");
  EXPECT_ERR(NETD, "layer { convolution_param { num_output: 4294967296 } }", 1, 41,
             "4294967296 is out of range for field \"num_output\" (an unsigned 32-bit integer)");
  EXPECT_ERR(NETD, "layer { convolution_param { num_output: -1 } }", 1, 41,
             "field \"num_output\" takes an unsigned 32-bit integer and cannot be negative: -1");
  EXPECT_ERR(NETD, "input_shape { dim: 9223372036854775808 }", 1, 20,
             "9223372036854775808 is out of range for field \"dim\" (a 64-bit integer)");
  EXPECT_ERR(NETD, "input_shape { dim: -9223372036854775809 }", 1, 20,
             "-9223372036854775809 is out of range");
  EXPECT_ERR(NETD, "input_shape { dim: 18446744073709551616 }", 1, 20, "is out of range");
  EXPECT_ERR(NETD, "input_shape { dim: 0x10000000000000000 }", 1, 20, "is out of range");
  EXPECT_ERR(SOLVERD, "random_seed: -9223372036854775809", 1, 14, "out of range", "random_seed");
  EXPECT_ERR(&node_descriptor, "id: 1 big: 18446744073709551616", 1, 12,
             "18446744073709551616 is out of range for field \"big\" (an unsigned 64-bit integer)");
  EXPECT_ERR(&node_descriptor, "id: 1 big: -1", 1, 12, "cannot be negative");
  EXPECT_ERR(NETD, "layer { loss_weight: 1e39 }", 1, 22,
             "1e39 is out of range for field \"loss_weight\" (a float)");
  EXPECT_ERR(NETD, "layer { loss_weight: -1e39 }", 1, 22, "-1e39 is out of range");
  EXPECT_ERR(NETD, "layer { loss_weight: 3.4028236e38 }", 1, 22, "out of range");
  EXPECT_ERR(NETD, "layer { loss_weight: 340282366920938463463374607431768211456 }", 1, 22,
             "out of range");
  EXPECT_ERR(NETD, "layer { blobs { double_data: 1e309 } }", 1, 30,
             "1e309 is out of range for field \"double_data\" (a double)");
  EXPECT_ERR(NETD, "layer { blobs { double_data: -1e309 } }", 1, 30, "-1e309 is out of range");
  EXPECT_ERR(NETD, "state { phase: 4294967296 }", 1, 16, "out of range");
}

static void test_err_unknown_enum(void) {
  EXPECT_ERR(NETD, "state { phase: TRIAN }", 1, 16,
             "\"TRIAN\" is not a value of enum Phase for field \"phase\" (one of: TRAIN, TEST)",
             "(at state)");
  EXPECT_ERR(NETD, "state { phase: train }", 1, 16, "\"train\" is not a value of enum Phase");
  EXPECT_ERR(NETD, "state { phase: 7 }", 1, 16, "7 is not a value of enum Phase for field \"phase\"");
  EXPECT_ERR(NETD, "state { phase: -1 }", 1, 16, "-1 is not a value of enum Phase");
  EXPECT_ERR(NETD, "state { phase: -TRAIN }", 1, 16, "takes a value of enum Phase");
  EXPECT_ERR(SOLVERD, "solver_mode: CUDA", 1, 14, "is not a value of enum SolverMode", "CPU, GPU");
}

static void test_err_missing_colon(void) {
  EXPECT_ERR(NETD, "name \"x\"", 1, 6, "expected ':' after field name \"name\", found string \"x\"");
  EXPECT_ERR(NETD, "input_dim [1, 2]", 1, 11, "expected ':' after field name \"input_dim\"");
  EXPECT_ERR(NETD, "layer {\n  name \"x\" }", 2, 8, "expected ':' after field name \"name\"",
             "(at layer[0])");
  EXPECT_ERR(NETD, "force_backward true", 1, 16, "expected ':'", "found \"true\"");
}

static void test_err_unclosed_block(void) {
  EXPECT_ERR(NETD,
             "name: \"n\"\nlayer {\n  name: \"a\"\n  convolution_param {\n    num_output: 3\n  }\n",
             2, 7, "'{' opened here for field \"layer\" is never closed: the file ends at line 6",
             "(at layer[0])");
  char err[1024];
  ProtobufCMessage *m;
  const char *t = "name: \"n\"\nlayer {\n  name: \"a\"\n";
  dd_text_parse(&m, NETD, t, strlen(t), FNAME, err, sizeof err);
  CHECKF(strstr(err, "note") == NULL, "no comment hid anything: %s", err);
  EXPECT_ERR(NETD, "state < phase: TRAIN", 1, 7,
             "'<' opened here for field \"state\" is never closed: the file ends at line 1");
  EXPECT_ERR(NETD, "layer { convolution_param { weight_filler {", 1, 43,
             "'{' opened here for field \"weight_filler\"",
             "(at layer[0].convolution_param.weight_filler)");
  EXPECT_ERR(NETD, "state { phase: TRAIN # }\n", 1, 7, "never closed",
             "note: the '#' comment at line 1 column 22 runs to the end of its line and hides 1 '}'");
  EXPECT_ERR(NETD, "input_dim: [1, 2", 1, 12,
             "the list '[' for field \"input_dim\" is never closed with ']'");
  EXPECT_ERR(NETD, "layer [ { }", 1, 7, "the list '[' for field \"layer\" is never closed");
}

/* The seed as pasted on one line: '#pair_size: 3 } } layer { ...' comments out the rest. */
static void test_err_seed_oneline(void) {
  const char *path = DD_TEST_DATA "/seed/seed_net_oneline.prototxt";
  char err[1024];
  ProtobufCMessage *m = (ProtobufCMessage *)err;
  int r = dd_text_parse_file(&m, NETD, path, err, sizeof err);
  CHECK(r == DD_EPARSE);
  CHECK(m == NULL);
  /* Work out the expected positions from the file itself: the '{' after image_data_param on line 2
   * and the first '#' on that line. */
  FILE *f = fopen(path, "rb");
  REQUIRE(f != NULL);
  static char buf[8192];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *line2 = strchr(buf, '\n');
  REQUIRE(line2 != NULL);
  line2++;
  char *brace = strstr(line2, "image_data_param {");
  char *hash = strchr(line2, '#');
  REQUIRE(brace && hash);
  int brace_col = (int)(brace - line2) + (int)strlen("image_data_param {");
  int hash_col = (int)(hash - line2) + 1;
  CHECK(brace_col == 259 && hash_col == 357);
  char want[256];
  snprintf(want, sizeof want, "%s:2:%d: '{' opened here for field \"image_data_param\" is never closed",
           path, brace_col);
  CHECKF(strncmp(err, want, strlen(want)) == 0, "expected \"%s\", got \"%s\"", want, err);
  snprintf(want, sizeof want, "note: the '#' comment at line 2 column %d runs to the end of its line",
           hash_col);
  CHECK_CONTAINS(err, want);
  CHECK_CONTAINS(err, "the file ends at line 2;"); /* two lines, the last one ending in '\n' */
  CHECK_CONTAINS(err, "(at layer[0].image_data_param)");
}

static void test_err_stray_and_mismatched_close(void) {
  EXPECT_ERR(NETD, "name: \"a\" }", 1, 11, "unexpected '}': no block is open here");
  EXPECT_ERR(NETD, "layer { } }", 1, 11, "unexpected '}': no block is open here");
  EXPECT_ERR(NETD, "layer { }\n>", 2, 1, "unexpected '>': no block is open here");
  EXPECT_ERR(NETD, "}", 1, 1, "unexpected '}'");
  EXPECT_ERR(NETD, "state { phase: TRAIN >", 1, 22,
             "expected '}' to close \"state\" (opened at 1:7), found '>'", "(at state)");
  EXPECT_ERR(NETD, "state < phase: TRAIN }", 1, 22,
             "expected '>' to close \"state\" (opened at 1:7), found '}'");
  EXPECT_ERR(NETD, "input_dim: [1, 2}", 1, 17, "expected ',' or ']' in the list for field \"input_dim\"");
  EXPECT_ERR(NETD, "input_dim: [1 2]", 1, 15,
             "expected ',' or ']' in the list for field \"input_dim\", found number 2");
  EXPECT_ERR(NETD, "input_dim: [1, ]", 1, 16, "takes a 32-bit integer, found ']'");
  EXPECT_ERR(NETD, "input_dim: [1; 2]", 1, 14, "expected ',' or ']'", "found ';'");
  EXPECT_ERR(NETD, "]", 1, 1, "expected a field name of NetParameter, found ']'");
}

static void test_err_glued_number(void) {
  const char *path = DD_TEST_DATA "/seed/seed_solver_as_pasted.prototxt";
  char err[1024];
  ProtobufCMessage *m = (ProtobufCMessage *)err;
  int r = dd_text_parse_file(&m, SOLVERD, path, err, sizeof err);
  CHECK(r == DD_EPARSE && m == NULL);
  char want[512];
  snprintf(want, sizeof want, "%s:1:12: ", path);
  CHECKF(strncmp(err, want, strlen(want)) == 0, "%s", err);
  CHECK_CONTAINS(err, "100");
  CHECK_CONTAINS(err, "\"test_interval\"");
  CHECK_CONTAINS(err, "glued");
  EXPECT_ERR(SOLVERD, "base_lr: 0.5x", 1, 10, "the number 0.5 is glued to \"x\"");
  EXPECT_ERR(SOLVERD, "base_lr: 1e5e", 1, 10, "the number 1e5 is glued to \"e\"");
  EXPECT_ERR(SOLVERD, "base_lr: 1.5.3", 1, 10, "the number 1.5 is glued to \".3\"");
  EXPECT_ERR(SOLVERD, "base_lr: 1ff", 1, 10, "glued");
  EXPECT_ERR(SOLVERD, "max_iter: 0x1fz", 1, 11, "the number 0x1f is glued to \"z\"");
}

static void test_err_field_twice(void) {
  EXPECT_ERR(NETD, "name: \"a\"\nname: \"b\"", 2, 1,
             "field \"name\" of NetParameter is given more than once, but it is not repeated");
  EXPECT_ERR(NETD, "state { } state { }", 1, 11, "field \"state\" of NetParameter is given more than once");
  EXPECT_ERR(NETD, "layer { name: \"a\" name: \"b\" }", 1, 19, "given more than once", "(at layer[0])");
  EXPECT_ERR(NETD, "layer { batch_norm_param { use_global_stats: false use_global_stats: true } }",
             1, 52, "\"use_global_stats\" of BatchNormParameter is given more than once");
  /* repeated fields may come back: not an error */
  Caffe__NetParameter *n = NET("input: \"a\" name: \"n\" input: \"b\"");
  REQUIRE(n != NULL);
  CHECK(n->n_input == 2);
  FREE(n);
}

static void test_err_list_for_singular(void) {
  EXPECT_ERR(NETD, "name: [\"a\"]", 1, 7, "field \"name\" is not repeated, so it cannot take a [list]");
  EXPECT_ERR(NETD, "state [ { } ]", 1, 7, "field \"state\" is not repeated");
  EXPECT_ERR(NETD, "state: []", 1, 8, "is not repeated");
  EXPECT_ERR(NETD, "force_backward: []", 1, 17, "is not repeated");
}

static void test_err_strings(void) {
  EXPECT_ERR(NETD, "name: \"abc", 1, 7, "string not closed");
  EXPECT_ERR(NETD, "name: \"abc\ndef\"", 1, 7, "string not closed");
  EXPECT_ERR(NETD, "name: 'abc\"", 1, 7, "string not closed");
  EXPECT_ERR(NETD, "name: \"abc\\", 1, 7, "string not closed");
  EXPECT_ERR(NETD, "name: \"abc\\\"", 1, 7, "string not closed");
  EXPECT_ERR(NETD, "name: \"a\\\nb\"", 1, 7, "string not closed");
  EXPECT_ERR(NETD, "layer {\n  name: \"ok\" \"a\\qb\" }", 2, 16, "unknown escape sequence \\q",
             "(at layer[0])");
  EXPECT_ERR(NETD, "name: \"a\\qb\"", 1, 9, "unknown escape sequence \\q");
  EXPECT_ERR(NETD, "name: \"\\u0041\"", 1, 8, "unknown escape sequence \\u");
  EXPECT_ERR(NETD, "name: \"\\xg\"", 1, 8, "\\x must be followed by hex digits");
  EXPECT_ERR(NETD, "name: \"\\x\"", 1, 8, "\\x must be followed by hex digits");
  EXPECT_ERR(NETD, "name: \"\\777\"", 1, 8, "octal escape \\777 is over 255");
  EXPECT_ERR(NETD, "name: \"\\400\"", 1, 8, "is over 255");
  /* NUL bytes in a string field, escaped or raw */
  EXPECT_ERR(NETD, "name: \"a\\0b\"", 1, 7, "field \"name\": a string may not contain a NUL byte");
  EXPECT_ERR(NETD, "name: \"a\\x00\"", 1, 7, "may not contain a NUL byte");
  EXPECT_ERR(NETD, "name: \"a\" \"\\000\"", 1, 7, "may not contain a NUL byte");
  EXPECT_ERR(NETD, "layer { bottom: [\"a\", \"b\\0\"] }", 1, 23, "may not contain a NUL byte",
             "(at layer[0])");
  EXPECT_ERR(NETD, "name: \"\\n\\t\\\\\\'\\\"\\x41\\101\\a\\b\\f\\r\\v\\?\\X4a\\0101\\x4g\\7\\08\"", 1,
             7, "NUL byte");
  EXPECT_ERR_N(NETD, "name: \"a\0b\"", 11, 1, 7, "may not contain a NUL byte");
}

static void test_err_unexpected_characters(void) {
  EXPECT_ERR(NETD, "name: \"a\" @", 1, 11, "unexpected character '@'");
  EXPECT_ERR(NETD, "name: \"a\"\n  /x", 2, 3, "unexpected character '/'");
  EXPECT_ERR(NETD, "input_dim: .", 1, 12, "unexpected character '.'");
  EXPECT_ERR(NETD, "name: \"a\" \x80", 1, 11, "unexpected byte 0x80");
  EXPECT_ERR(NETD, "\xef\xbb\xbfname: \"a\"", 1, 1, "unexpected byte 0xef");
  EXPECT_ERR(NETD, "name: \"a\" \x01", 1, 11, "unexpected byte 0x01");
  EXPECT_ERR(NETD, "name: \xc3\xa9", 1, 7, "unexpected byte 0xc3");
  EXPECT_ERR(NETD, "name: \"a\" \x7f", 1, 11, "unexpected byte 0x7f");
  EXPECT_ERR_N(NETD, "name: \"a\"\0", 10, 1, 10, "unexpected byte 0x00");
  EXPECT_ERR_N(NETD, "\0name: \"a\"", 10, 1, 1, "unexpected byte 0x00");
  EXPECT_ERR(NETD, "name: \"a\" =", 1, 11, "unexpected character '='");
  EXPECT_ERR(NETD, "input_dim = 1", 1, 11, "unexpected character '='");
}

/* caffe.proto and distill.proto have no required field and no recursive message: check that, then
 * use Node for both checks. */
static int schema_scan(const ProtobufCMessageDescriptor *d, const ProtobufCMessageDescriptor **stack,
                       int depth, int *required, int *recursive) {
  int deepest = depth;
  for (int i = 0; i < depth; i++)
    if (stack[i] == d) {
      *recursive = 1;
      return depth;
    }
  stack[depth] = d;
  for (unsigned i = 0; i < d->n_fields; i++) {
    if (d->fields[i].label == PROTOBUF_C_LABEL_REQUIRED) *required = 1;
    if (d->fields[i].type == PROTOBUF_C_TYPE_MESSAGE) {
      int k = schema_scan(d->fields[i].descriptor, stack, depth + 1, required, recursive);
      if (k > deepest) deepest = k;
    }
  }
  return deepest;
}

static void test_err_required_field(void) {
  const ProtobufCMessageDescriptor *roots[] = {
      &distilld__distill_job__descriptor, &distilld__daemon_config__descriptor,
      &caffe__solver_state__descriptor, &caffe__blob_proto_vector__descriptor,
      &caffe__net_parameter__descriptor};
  const ProtobufCMessageDescriptor *stack[64];
  int required = 0, recursive = 0, deepest = 0;
  for (size_t i = 0; i < NELEM(roots); i++) {
    int k = schema_scan(roots[i], stack, 0, &required, &recursive);
    if (k > deepest) deepest = k;
  }
  CHECKF(!required, "the schema now has a required field: test it on the real schema too");
  CHECKF(!recursive, "the schema now has a recursive message: test the depth limit on it too");
  CHECK(deepest == 5); /* DistillJob.solver.net_param.layer.convolution_param.weight_filler */

  const ProtobufCMessageDescriptor *nd = &node_descriptor;
  EXPECT_ERR(nd, "tag: 1", 1, 7, "required field \"id\" of Node is missing");
  EXPECT_ERR(nd, "", 1, 1, "required field \"id\" of Node is missing");
  EXPECT_ERR(nd, "id: 1 child { tag: 2 }", 1, 22, "required field \"id\" of Node is missing",
             "(at child)");
  EXPECT_ERR(nd, "id: 1 kids { id: 2 } kids { }", 1, 29, "required field \"id\"", "(at kids[1])");
  EXPECT_ERR(nd, "id: 1 child { id: 2 child < > }", 1, 29, "required field", "(at child.child)");
  EXPECT_ERR(nd, "id: 1 id: 2", 1, 7, "field \"id\" of Node is given more than once");
  Node *n = (Node *)PARSE_OK(nd, "id: 0 kids { id: 1 } kids { id: 2 child { id: 3 } } zz: [-1, 1]");
  REQUIRE(n != NULL);
  CHECK(n->id == 0 && n->n_kids == 2 && n->kids[1]->child->id == 3);
  CHECK(n->n_zz == 2 && n->zz[0] == -1);
  free(ROUNDTRIP(n));
  FREE(n);
}

static char *nested_node_text(int levels, int closed) {
  size_t cap = (size_t)levels * 16 + 16;
  char *t = malloc(cap), *o = t;
  if (!t) abort();
  for (int i = 0; i < levels; i++) o += sprintf(o, "id: 1 child { ");
  o += sprintf(o, "id: 1");
  for (int i = 0; closed && i < levels; i++) o += sprintf(o, " }");
  return t;
}

static void test_err_nesting_depth(void) {
  /* 64 nested messages parse (and round trip); the 65th '{' is refused */
  char *t = nested_node_text(64, 1);
  Node *n = (Node *)PARSE_OK(&node_descriptor, t);
  free(t);
  REQUIRE(n != NULL);
  int depth = 0;
  for (Node *c = n; c->child; c = c->child) depth++;
  CHECK(depth == 64);
  free(ROUNDTRIP(n));
  FREE(n);
  t = nested_node_text(65, 1);
  EXPECT_ERR(&node_descriptor, t, 1, 14 * 64 + 13, "messages nested more than 64 deep");
  free(t);
  /* far deeper, closed and unclosed: an error, no crash */
  t = nested_node_text(200000, 1);
  EXPECT_ERR(&node_descriptor, t, 1, 14 * 64 + 13, "nested more than 64 deep");
  free(t);
  t = nested_node_text(200000, 0);
  EXPECT_ERR(&node_descriptor, t, 1, 14 * 64 + 13, "nested more than 64 deep");
  free(t);
  /* the deepest path in the real schema, and a long flat input */
  Distilld__DistillJob *j = (Distilld__DistillJob *)PARSE_OK(
      &distilld__distill_job__descriptor,
      "solver { net_param { layer { convolution_param { weight_filler < std: 2 > } } } }");
  REQUIRE(j != NULL);
  CHECK(j->solver->net_param->layer[0]->convolution_param->weight_filler->std == 2.0f);
  FREE(j);
  size_t cap = 50000 * 30 + 1;
  char *big = malloc(cap), *o = big;
  REQUIRE(big != NULL);
  for (int i = 0; i < 50000; i++) o += sprintf(o, "layer { name: \"l%d\" }\n", i);
  Caffe__NetParameter *net = NET(big);
  CHECK(net && net->n_layer == 50000 && strcmp(net->layer[49999]->name, "l49999") == 0);
  if (net) FREE(net);
  /* and one unclosed at the very end: the error names the last line */
  strcpy(o - 2, "\n");
  EXPECT_ERR(NETD, big, 50000, 7, "'{' opened here for field \"layer\" is never closed",
             "(at layer[49999])");
  free(big);
}

/* Small or missing error buffers never overflow. */
static void test_err_buffer_sizes(void) {
  const char *t = "layer { convolution_param { num_outptu: 3 } }";
  char small[16];
  memset(small, 'x', sizeof small);
  ProtobufCMessage *m = (ProtobufCMessage *)small;
  CHECK(dd_text_parse(&m, NETD, t, strlen(t), FNAME, small, sizeof small) == DD_EPARSE);
  CHECK(m == NULL && strlen(small) == sizeof small - 1 && strncmp(small, FNAME ":1:29", 15) == 0);
  m = (ProtobufCMessage *)small;
  CHECK(dd_text_parse(&m, NETD, t, strlen(t), FNAME, NULL, 0) == DD_EPARSE && m == NULL);
  small[0] = 'x';
  CHECK(dd_text_parse(&m, NETD, t, strlen(t), FNAME, small, 0) == DD_EPARSE && small[0] == 'x');
  CHECK(dd_text_parse(&m, NETD, t, strlen(t), FNAME, small, 1) == DD_EPARSE && small[0] == '\0');
  /* without a file name */
  char err[256];
  CHECK(dd_text_parse(&m, NETD, t, strlen(t), NULL, err, sizeof err) == DD_EPARSE);
  CHECK_CONTAINS(err, ":1:29: ");
  /* `len` bounds the text: what follows is not read */
  const char *tt = "name: \"a\" garbage";
  CHECK(dd_text_parse(&m, NETD, tt, 9, FNAME, err, sizeof err) == 0);
  CHECK(m && strcmp(((Caffe__NetParameter *)m)->name, "a") == 0);
  if (m) protobuf_c_message_free_unpacked(m, NULL);
  CHECK(dd_text_parse(&m, NETD, tt, 8, FNAME, err, sizeof err) == DD_EPARSE && m == NULL);
  CHECK_CONTAINS(err, "string not closed");
}

/* ------------------------------------------------------------------------------------------- */
/* 4. Files and printing to a FILE                                                               */

static void test_file_errors(void) {
  char err[1024];
  ProtobufCMessage *m = (ProtobufCMessage *)err;
  const char *missing = DD_TEST_DATA "/seed/no_such_file.prototxt";
  CHECK(dd_text_parse_file(&m, NETD, missing, err, sizeof err) == DD_EIO);
  CHECK(m == NULL);
  CHECK_CONTAINS(err, missing);
  CHECK_CONTAINS(err, "No such file");
  m = (ProtobufCMessage *)err;
  const char *dir = DD_TEST_DATA "/seed";
  CHECK(dd_text_parse_file(&m, NETD, dir, err, sizeof err) == DD_EIO);
  CHECK(m == NULL);
  CHECK_CONTAINS(err, dir);
  CHECK_CONTAINS(err, "directory");
  /* a parse error in a file names the file, and counts lines from the top of the file */
  const char *solver = DD_TEST_DATA "/seed/seed_solver.prototxt";
  m = (ProtobufCMessage *)err;
  CHECK(dd_text_parse_file(&m, NETD, solver, err, sizeof err) == DD_EPARSE);
  CHECK(m == NULL);
  char want[512];
  snprintf(want, sizeof want, "%s:4:1: unknown field \"test_iter\" in NetParameter", solver);
  CHECKF(strncmp(err, want, strlen(want)) == 0, "expected \"%s\", got \"%s\"", want, err);
}

static void test_print_file(void) {
  Caffe__NetParameter *n = NET("name: \"n\" state { phase: TRAIN } input_dim: 1");
  REQUIRE(n != NULL);
  FILE *f = tmpfile();
  REQUIRE(f != NULL);
  CHECK(dd_text_print_file(f, &n->base, 4) == 0);
  rewind(f);
  char buf[256] = "";
  size_t len = fread(buf, 1, sizeof buf - 1, f);
  buf[len] = '\0';
  fclose(f);
  CHECK(strcmp(buf, "    name: \"n\"\n    input_dim: 1\n    state {\n      phase: TRAIN\n    }\n") == 0);
  char *s = dd_text_print(&n->base);
  CHECK(s && strcmp(s, "name: \"n\"\ninput_dim: 1\nstate {\n  phase: TRAIN\n}\n") == 0);
  free(s);
  FREE(n);
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
  RUN(test_syntax_empty_and_comments);
  RUN(test_syntax_blocks);
  RUN(test_syntax_lists);
  RUN(test_syntax_separators);
  RUN(test_syntax_enums);
  RUN(test_syntax_strings);
  RUN(test_syntax_integers);
  RUN(test_syntax_floats);
  RUN(test_syntax_nan_is_canonical);
  RUN(test_syntax_bools_and_has_flags);
  RUN(test_syntax_line_endings_and_positions);
  RUN(test_err_unknown_field);
  RUN(test_err_wrong_type);
  RUN(test_err_out_of_range);
  RUN(test_err_unknown_enum);
  RUN(test_err_missing_colon);
  RUN(test_err_unclosed_block);
  RUN(test_err_seed_oneline);
  RUN(test_err_stray_and_mismatched_close);
  RUN(test_err_glued_number);
  RUN(test_err_field_twice);
  RUN(test_err_list_for_singular);
  RUN(test_err_strings);
  RUN(test_err_unexpected_characters);
  RUN(test_err_required_field);
  RUN(test_err_nesting_depth);
  RUN(test_err_buffer_sizes);
  RUN(test_file_errors);
  RUN(test_print_file);
  return test_summary();
}
