/* The solver: each learning-rate policy at chosen iterations against its formula; the update
 * rules (SGD momentum, Nesterov, Adam, AdaGrad, RMSProp, L2/L1 decay with decay_mult, lr_mult,
 * iter_size, clip_gradients) against a hand computation from the same gradients; a snapshot at N
 * resumed for N more ending bit-identical to 2N straight; determinism; and the seed case both
 * ways (a frozen net with global BatchNorm statistics stays bit-identical; left unset, its
 * BatchNorm blobs move and its test loss drifts, as Caffe does). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <unistd.h>

#include "format/caffe_io.h"
#include "base/dd_error.h"
#include "format/fileio.h"
#include "net/net.h"
#include "train/solver.h"
#include "test.h"
#include "test_nets.h"
#include "format/textformat.h"

static dd_backend *be;
static char tmpdir[128];

#define NETP(t) ((Caffe__NetParameter *)test_parse(&caffe__net_parameter__descriptor, (t)))
#define SOLVERP(t) ((Caffe__SolverParameter *)test_parse(&caffe__solver_parameter__descriptor, (t)))

/* ---- learning-rate policies ---------------------------------------------------------------- */

static void test_lr_policies(void) {
  struct {
    const char *text;
    int iter;
    double want;
  } c[] = {
      {"base_lr: 0.1 lr_policy: 'fixed'", 1234, 0.1},
      {"base_lr: 0.1 lr_policy: 'step' gamma: 0.5 stepsize: 100", 250, 0.1 * 0.25},
      {"base_lr: 0.1 lr_policy: 'step' gamma: 0.5 stepsize: 100", 99, 0.1},
      {"base_lr: 0.1 lr_policy: 'exp' gamma: 0.99", 50, 0.1 * pow(0.99, 50)},
      {"base_lr: 0.1 lr_policy: 'inv' gamma: 0.0001 power: 0.75", 1000, 0.1 * pow(1 + 0.0001 * 1000, -0.75)},
      {"base_lr: 0.1 lr_policy: 'multistep' gamma: 0.1 stepvalue: 100 stepvalue: 300", 99, 0.1},
      {"base_lr: 0.1 lr_policy: 'multistep' gamma: 0.1 stepvalue: 100 stepvalue: 300", 100, 0.01},
      {"base_lr: 0.1 lr_policy: 'multistep' gamma: 0.1 stepvalue: 100 stepvalue: 300", 350, 0.001},
      {"base_lr: 0.1 lr_policy: 'poly' power: 2 max_iter: 1000", 250, 0.1 * pow(0.75, 2)},
      {"base_lr: 0.1 lr_policy: 'sigmoid' gamma: -0.01 stepsize: 500", 300, 0.1 / (1 + exp(0.01 * (300 - 500)))},
      {"base_lr: 0.1 lr_policy: 'cosine' max_iter: 1000", 500, 0.05},
      {"base_lr: 0.1 lr_policy: 'cosine' max_iter: 1000", 0, 0.1},
      {"base_lr: 0.1 lr_policy: 'cosine' max_iter: 1100 warmup_iter: 100", 49, 0.1 * 50 / 100},
      {"base_lr: 0.1 lr_policy: 'cosine' max_iter: 1100 warmup_iter: 100", 600, 0.05},
      {"base_lr: 0.1 lr_policy: 'step' gamma: 0.1 stepsize: 10 warmup_iter: 4", 1, 0.1 * 2 / 4},
  };
  for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
    Caffe__SolverParameter *sp = SOLVERP(c[i].text);
    REQUIRE(sp);
    double got = dd_solver_learning_rate(sp, c[i].iter);
    CHECKF(fabs(got - c[i].want) <= 1e-6 * fabs(c[i].want) + 1e-12, "%s at %d: %.9g, want %.9g", c[i].text,
           c[i].iter, got, c[i].want);
    caffe__solver_parameter__free_unpacked(sp, NULL);
  }
}

/* ---- update rules against a hand computation ---------------------------------------------- */

/* A small net: Input -> InnerProduct (lr_mult 2, decay_mult 0.5 on the weight; bias 1/0) ->
 * SoftmaxWithLoss. */
static const char *small_net =
    "layer { name: 'in' type: 'Input' top: 'data' top: 'label' input_param { shape { dim: 4 dim: 6 } shape { dim: 4 } } }\n"
    "layer { name: 'fc' type: 'InnerProduct' bottom: 'data' top: 'fc' param { lr_mult: 2 decay_mult: 0.5 } param { lr_mult: 1 decay_mult: 0 }\n"
    "  inner_product_param { num_output: 3 weight_filler { type: 'gaussian' std: 0.5 } bias_filler { type: 'gaussian' std: 0.1 } } }\n"
    "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc' bottom: 'label' top: 'loss' }\n";

typedef struct {
  int calls;
} feed_ctx;

static void fill_inputs(dd_net *n, int step) {
  float x[24], lab[4];
  for (int i = 0; i < 24; i++) x[i] = (float)sin(0.7 * i + step);
  for (int i = 0; i < 4; i++) lab[i] = (float)((i + step) % 3);
  dd_tensor_set_data(dd_net_blob(n, "data"), x);
  dd_tensor_set_data(dd_net_blob(n, "label"), lab);
}

static int feed(void *ctx, dd_net *n, Caffe__Phase ph, double *wait) {
  feed_ctx *f = ctx;
  (void)ph;
  *wait = 0;
  fill_inputs(n, f->calls++);
  return 0;
}

/* Expected parameters after `steps` solver iterations, computed in double from the gradients a
 * separate net gives at each step's weights. */
static void expect_steps(const char *solver_text, int steps, int iter_size) {
  Caffe__NetParameter *np = NETP(small_net);
  Caffe__SolverParameter *sp = SOLVERP(solver_text);
  REQUIRE(np && sp);
  char err[1024];
  feed_ctx fc = {0};
  dd_solver_hooks hooks = {.ctx = &fc, .before_forward = feed};
  dd_solver *s = NULL;
  REQUIRE(dd_solver_create(&s, sp, np, be, 5, &hooks, err, sizeof err) == 0);
  dd_net *ref = NULL;
  REQUIRE(dd_net_create(&ref, np, CAFFE__PHASE__TRAIN, be, 5, NULL, err, sizeof err) == 0);
  /* hand computation state */
  double w[2][18], h[2][18] = {{0}}, v[2][18] = {{0}};
  int count[2] = {18, 3};
  float lr_mult[2] = {2, 1}, decay_mult[2] = {0.5f, 0};
  for (int p = 0; p < 2; p++) {
    float tmp[18];
    dd_tensor_get_data(ref->params[p].t, tmp);
    for (int i = 0; i < count[p]; i++) w[p][i] = tmp[i];
  }
  int calls = 0;
  const char *type = sp->type ? sp->type : "SGD";
  for (int it = 0; it < steps; it++) {
    double g[2][18] = {{0}};
    for (int k = 0; k < iter_size; k++) {
      for (int p = 0; p < 2; p++) {
        float tmp[18];
        for (int i = 0; i < count[p]; i++) tmp[i] = (float)w[p][i];
        dd_tensor_set_data(ref->params[p].t, tmp);
      }
      dd_net_clear_param_diffs(ref);
      fill_inputs(ref, calls++);
      dd_net_forward(ref, NULL);
      dd_net_backward(ref);
      for (int p = 0; p < 2; p++) {
        float tmp[18];
        dd_tensor_get_diff(ref->params[p].t, tmp);
        for (int i = 0; i < count[p]; i++) g[p][i] += tmp[i];
      }
    }
    double rate = dd_solver_learning_rate(sp, it);
    if (sp->clip_gradients >= 0) {
      double ss = 0;
      for (int p = 0; p < 2; p++)
        for (int i = 0; i < count[p]; i++) ss += g[p][i] * g[p][i];
      if (sqrt(ss) > sp->clip_gradients)
        for (int p = 0; p < 2; p++)
          for (int i = 0; i < count[p]; i++) g[p][i] *= sp->clip_gradients / sqrt(ss);
    }
    int l1 = sp->regularization_type && !strcmp(sp->regularization_type, "L1");
    for (int p = 0; p < 2; p++)
      for (int i = 0; i < count[p]; i++) {
        double gi = g[p][i] / iter_size;
        double decay = sp->weight_decay * decay_mult[p];
        gi += l1 ? decay * ((w[p][i] > 0) - (w[p][i] < 0)) : decay * w[p][i];
        double lr = rate * lr_mult[p], upd;
        if (!strcmp(type, "SGD")) {
          h[p][i] = sp->momentum * h[p][i] + lr * gi;
          upd = h[p][i];
        } else if (!strcmp(type, "Nesterov")) {
          double prev = h[p][i];
          h[p][i] = sp->momentum * h[p][i] + lr * gi;
          upd = (1 + sp->momentum) * h[p][i] - sp->momentum * prev;
        } else if (!strcmp(type, "Adam")) {
          double b1 = sp->momentum, b2 = sp->momentum2;
          h[p][i] = b1 * h[p][i] + (1 - b1) * gi;
          v[p][i] = b2 * v[p][i] + (1 - b2) * gi * gi;
          double corr = sqrt(1 - pow(b2, it + 1)) / (1 - pow(b1, it + 1));
          upd = lr * corr * h[p][i] / (sqrt(v[p][i]) + sp->delta);
        } else if (!strcmp(type, "AdaGrad")) {
          h[p][i] += gi * gi;
          upd = lr * gi / (sqrt(h[p][i]) + sp->delta);
        } else { /* RMSProp */
          h[p][i] = sp->rms_decay * h[p][i] + (1 - sp->rms_decay) * gi * gi;
          upd = lr * gi / (sqrt(h[p][i]) + sp->delta);
        }
        w[p][i] -= upd;
      }
  }
  REQUIRE(dd_solver_step(s, steps, err, sizeof err) == 0);
  CHECK(dd_solver_iter(s) == steps);
  dd_net *n = dd_solver_net(s);
  for (int p = 0; p < 2; p++) {
    float got[18];
    dd_tensor_get_data(n->params[p].t, got);
    double num = 0, den = 0;
    for (int i = 0; i < count[p]; i++) {
      num += (got[i] - w[p][i]) * (got[i] - w[p][i]);
      den += w[p][i] * w[p][i];
    }
    CHECKF(sqrt(num / den) < 2e-6, "%s: param %d off by %.3g (relative)", solver_text, p, sqrt(num / den));
  }
  dd_net_destroy(ref);
  dd_solver_destroy(s);
  caffe__net_parameter__free_unpacked(np, NULL);
  caffe__solver_parameter__free_unpacked(sp, NULL);
}

static void test_update_rules(void) {
  expect_steps("type: 'SGD' base_lr: 0.1 momentum: 0.9 weight_decay: 0.01 lr_policy: 'fixed' max_iter: 4", 4, 1);
  expect_steps("type: 'Nesterov' base_lr: 0.05 momentum: 0.9 weight_decay: 0.001 lr_policy: 'step' gamma: 0.5 stepsize: 2 max_iter: 4", 4, 1);
  expect_steps("type: 'Adam' base_lr: 0.01 momentum: 0.9 momentum2: 0.999 delta: 1e-8 weight_decay: 0.0001 lr_policy: 'fixed' max_iter: 4", 4, 1);
  expect_steps("type: 'AdaGrad' base_lr: 0.1 delta: 1e-6 weight_decay: 0.001 lr_policy: 'fixed' max_iter: 3", 3, 1);
  expect_steps("type: 'RMSProp' base_lr: 0.01 rms_decay: 0.9 delta: 1e-6 lr_policy: 'fixed' max_iter: 3", 3, 1);
  expect_steps("type: 'SGD' base_lr: 0.1 momentum: 0.9 weight_decay: 0.01 regularization_type: 'L1' lr_policy: 'fixed' max_iter: 3", 3, 1);
  expect_steps("type: 'SGD' base_lr: 0.1 momentum: 0.5 lr_policy: 'fixed' iter_size: 3 max_iter: 2", 2, 3);
  expect_steps("type: 'SGD' base_lr: 0.5 momentum: 0.9 clip_gradients: 0.05 lr_policy: 'fixed' max_iter: 3", 3, 1);
}

/* ---- snapshots ------------------------------------------------------------------------------ */

static const char *bn_net =
    "layer { name: 'in' type: 'Input' top: 'data' top: 'label' input_param { shape { dim: 4 dim: 3 dim: 6 dim: 6 } shape { dim: 4 } } }\n"
    "layer { name: 'conv' type: 'Convolution' bottom: 'data' top: 'conv' convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: 'msra' } } }\n"
    "layer { name: 'bn' type: 'BatchNorm' bottom: 'conv' top: 'conv' }\n"
    "layer { name: 'sc' type: 'Scale' bottom: 'conv' top: 'conv' scale_param { bias_term: true } }\n"
    "layer { name: 'relu' type: 'ReLU' bottom: 'conv' top: 'conv' }\n"
    "layer { name: 'drop' type: 'Dropout' bottom: 'conv' top: 'conv' dropout_param { dropout_ratio: 0.2 } }\n"
    "layer { name: 'pool' type: 'Pooling' bottom: 'conv' top: 'pool' pooling_param { pool: AVE global_pooling: true } }\n"
    "layer { name: 'fc' type: 'InnerProduct' bottom: 'pool' top: 'fc' inner_product_param { num_output: 3 weight_filler { type: 'xavier' } } }\n"
    "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc' bottom: 'label' top: 'loss' }\n";

static int feed_bn(void *ctx, dd_net *n, Caffe__Phase ph, double *wait) {
  feed_ctx *f = ctx;
  (void)ph;
  *wait = 0;
  float x[4 * 3 * 36], lab[4];
  int step = f->calls++;
  for (int i = 0; i < 4 * 3 * 36; i++) x[i] = (float)(sin(0.37 * i + step) + 0.1 * step);
  for (int i = 0; i < 4; i++) lab[i] = (float)((i + step) % 3);
  dd_tensor_set_data(dd_net_blob(n, "data"), x);
  dd_tensor_set_data(dd_net_blob(n, "label"), lab);
  return 0;
}

/* Runs a solver over bn_net; returns the final .caffemodel's bytes. */
static uint8_t *train_bytes(const char *solver_text, int iters, const char *restore, size_t *len) {
  Caffe__NetParameter *np = NETP(bn_net);
  Caffe__SolverParameter *sp = SOLVERP(solver_text);
  char err[1024];
  *len = 0;
  if (!np || !sp) return NULL;
  dd_solver *s = NULL;
  feed_ctx fc = {0};
  dd_solver_hooks hooks = {.ctx = &fc, .before_forward = feed_bn};
  uint8_t *bytes = NULL;
  if (dd_solver_create(&s, sp, np, be, 11, &hooks, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    goto out;
  }
  if (restore) {
    if (dd_solver_restore(s, restore, err, sizeof err)) {
      fprintf(stderr, "%s\n", err);
      goto out;
    }
    fc.calls = dd_solver_iter(s); /* the data source resumes where it was */
  }
  if (dd_solver_step(s, iters, err, sizeof err) || dd_solver_snapshot(s, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    goto out;
  }
  char path[512];
  snprintf(path, sizeof path, "%s_iter_%d.caffemodel", sp->snapshot_prefix, dd_solver_iter(s));
  char *buf;
  if (dd_read_file(&buf, len, path, err, sizeof err) == 0) bytes = (uint8_t *)buf;
out:
  dd_solver_destroy(s);
  caffe__net_parameter__free_unpacked(np, NULL);
  caffe__solver_parameter__free_unpacked(sp, NULL);
  return bytes;
}

static void check_resume(const char *type_line) {
  char a[1024], b[1024], state[512];
  snprintf(a, sizeof a, "%s base_lr: 0.05 momentum: 0.9 momentum2: 0.999 weight_decay: 0.001 lr_policy: 'step' gamma: 0.5 stepsize: 3 max_iter: 100 snapshot_prefix: '%s/straight'", type_line, tmpdir);
  snprintf(b, sizeof b, "%s base_lr: 0.05 momentum: 0.9 momentum2: 0.999 weight_decay: 0.001 lr_policy: 'step' gamma: 0.5 stepsize: 3 max_iter: 100 snapshot_prefix: '%s/split'", type_line, tmpdir);
  size_t l1, l2, l3;
  uint8_t *straight = train_bytes(a, 8, NULL, &l1);
  uint8_t *half = train_bytes(b, 4, NULL, &l2);
  snprintf(state, sizeof state, "%s/split_iter_4.solverstate", tmpdir);
  uint8_t *resumed = train_bytes(b, 4, state, &l3);
  REQUIRE(straight && half && resumed);
  CHECKF(l1 == l3 && memcmp(straight, resumed, l1) == 0, "%s: 4 + 4 resumed differs from 8 straight", type_line);
  CHECK(l1 != l2 || memcmp(straight, half, l1) != 0); /* training did move the weights */
  free(straight);
  free(half);
  free(resumed);
}

static void test_snapshot_resume_bit_identical(void) {
  check_resume("type: 'SGD'");
  check_resume("type: 'Adam'");
  check_resume("type: 'Nesterov'");
}

static void test_determinism(void) {
  char a[512];
  snprintf(a, sizeof a, "type: 'SGD' base_lr: 0.05 momentum: 0.9 lr_policy: 'fixed' max_iter: 100 snapshot_prefix: '%s/det'", tmpdir);
  size_t l1, l2;
  uint8_t *x = train_bytes(a, 5, NULL, &l1), *y = train_bytes(a, 5, NULL, &l2);
  REQUIRE(x && y);
  CHECK(l1 == l2 && memcmp(x, y, l1) == 0);
  free(x);
  free(y);
}

/* ---- the seed, both ways --------------------------------------------------------------------- */

/* A pretrained "teacher": train bn_net a little (its BatchNorm blobs get real statistics), then
 * freeze it: every lr_mult 0, and BatchNorm either on global statistics or left as is. */
static void seed_case(int use_global, int *blobs_identical, double *loss_drift) {
  char err[1024], text[4096], model[512];
  size_t len;
  char pre[512];
  snprintf(pre, sizeof pre, "type: 'SGD' base_lr: 0.01 momentum: 0.9 lr_policy: 'fixed' max_iter: 100 snapshot_prefix: '%s/teacher'", tmpdir);
  uint8_t *t = train_bytes(pre, 6, NULL, &len);
  free(t);
  snprintf(model, sizeof model, "%s/teacher_iter_6.caffemodel", tmpdir);
  /* The frozen net: lr_mult 0 everywhere, loss kept (so gradients flow, as in the seed's net). */
  snprintf(text, sizeof text, "%s", bn_net);
  Caffe__NetParameter *np = NETP(text);
  REQUIRE(np);
  for (size_t i = 0; i < np->n_layer; i++) {
    Caffe__LayerParameter *lp = np->layer[i];
    if (!strcmp(lp->type, "Convolution") || !strcmp(lp->type, "InnerProduct") || !strcmp(lp->type, "Scale")) {
      lp->param = calloc(2, sizeof *lp->param);
      lp->n_param = 2;
      for (int k = 0; k < 2; k++) {
        lp->param[k] = malloc(sizeof(Caffe__ParamSpec));
        caffe__param_spec__init(lp->param[k]);
        lp->param[k]->has_lr_mult = lp->param[k]->has_decay_mult = 1;
        lp->param[k]->lr_mult = lp->param[k]->decay_mult = 0;
      }
    }
    if (!strcmp(lp->type, "BatchNorm") && use_global) {
      lp->batch_norm_param = malloc(sizeof *lp->batch_norm_param);
      caffe__batch_norm_parameter__init(lp->batch_norm_param);
      lp->batch_norm_param->has_use_global_stats = 1;
      lp->batch_norm_param->use_global_stats = 1;
    }
  }
  Caffe__SolverParameter *sp = SOLVERP("type: 'SGD' base_lr: 0.1 momentum: 0.9 weight_decay: 0.0005 lr_policy: 'fixed' max_iter: 100 test_iter: 1 test_interval: 1000");
  REQUIRE(sp);
  feed_ctx fc = {0};
  dd_solver_hooks hooks = {.ctx = &fc, .before_forward = feed_bn};
  dd_solver *s = NULL;
  REQUIRE(dd_solver_create(&s, sp, np, be, 3, &hooks, err, sizeof err) == 0);
  Caffe__NetParameter *w = NULL;
  REQUIRE_OK(dd_caffemodel_read(&w, model, err, sizeof err), err);
  REQUIRE(dd_net_copy_from(dd_solver_net(s), w, model, NULL, err, sizeof err) == 0);
  caffe__net_parameter__free_unpacked(w, NULL);
  Caffe__NetParameter *before = dd_net_to_proto(dd_solver_net(s), 0);
  dd_solver_stats st;
  fc.calls = 0; /* a fixed test batch */
  REQUIRE(dd_solver_test(s, &st, err, sizeof err) == 0);
  double loss0 = st.outputs[0];
  fc.calls = 0;
  REQUIRE(dd_solver_step(s, 20, err, sizeof err) == 0);
  fc.calls = 0;
  REQUIRE(dd_solver_test(s, &st, err, sizeof err) == 0);
  *loss_drift = fabs(st.outputs[0] - loss0);
  if (getenv("DD_DEBUG")) {
    dd_net *tn = dd_solver_test_net(s);
    int bi = dd_net_layer_index(tn, "bn");
    float f;
    dd_tensor_get_data(tn->layers[bi].params[2], &f);
    fprintf(stderr, "global %d: loss0 %.9g loss1 %.9g factor %g outputs %d %s\n", use_global, loss0, st.outputs[0], f, st.n_outputs, st.output_names[0]);
  }
  Caffe__NetParameter *after = dd_net_to_proto(dd_solver_net(s), 0);
  size_t la = protobuf_c_message_get_packed_size(&before->base), lb = protobuf_c_message_get_packed_size(&after->base);
  uint8_t *pa = malloc(la), *pb = malloc(lb);
  protobuf_c_message_pack(&before->base, pa);
  protobuf_c_message_pack(&after->base, pb);
  *blobs_identical = la == lb && memcmp(pa, pb, la) == 0;
  free(pa);
  free(pb);
  caffe__net_parameter__free_unpacked(before, NULL);
  caffe__net_parameter__free_unpacked(after, NULL);
  dd_solver_destroy(s);
  caffe__net_parameter__free_unpacked(np, NULL);
  caffe__solver_parameter__free_unpacked(sp, NULL);
}

static void test_seed_both_ways(void) {
  int same;
  double drift;
  seed_case(1, &same, &drift);
  CHECKF(same, "frozen with use_global_stats: the blobs changed");
  CHECKF(drift == 0.0, "frozen with use_global_stats: test loss drifted by %g", drift);
  seed_case(0, &same, &drift);
  CHECKF(!same, "use_global_stats unset: the BatchNorm blobs should have moved");
  CHECKF(drift > 1e-4, "use_global_stats unset: test loss should drift (drift %g)", drift);
}

int main(void) {
  if (test_scratch_dir(tmpdir, sizeof tmpdir, "solver") || dd_cpu_backend_create(&be, 2)) return 1;
  RUN(test_lr_policies);
  RUN(test_update_rules);
  RUN(test_snapshot_resume_bit_identical);
  RUN(test_determinism);
  RUN(test_seed_both_ways);
  dd_cpu_backend_destroy(be);
  test_scratch_remove(tmpdir);
  return test_summary();
}
