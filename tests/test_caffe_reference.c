/* Caffe's own numbers: BVLC Caffe 1.0's outputs for a small residual net
 * (tests/data/caffe-reference, see its README), matched tensor by tensor on the CPU backend:
 * every blob's data and diff after one TRAIN forward/backward, every parameter gradient, one SGD
 * step with momentum and weight decay, BatchNorm's three blobs over three passes, TEST on stored
 * statistics, and TEST with an explicit use_global_stats: false. Relative L2 error under 1e-5. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>

#include "format/caffe_io.h"
#include "base/dd_error.h"
#include "net/net.h"
#include "test.h"
#include "test_nets.h"
#include "format/textformat.h"

#define REF DD_TEST_DATA "/caffe-reference/"
#define TOL 1e-5

static dd_backend *be;

/* Reads a reference array; returns the number of floats read (or -1). */
static long load_f32(const char *rel, float **out) {
  char path[1024];
  snprintf(path, sizeof path, REF "resblock/%s", rel);
  FILE *f = fopen(path, "rb");
  *out = NULL;
  if (!f) return -1;
  fseek(f, 0, SEEK_END);
  long bytes = ftell(f);
  fseek(f, 0, SEEK_SET);
  float *b = malloc((size_t)bytes + 4);
  long n = b ? (long)fread(b, 1, (size_t)bytes, f) / 4 : -1;
  fclose(f);
  *out = b;
  return n;
}

static double rel_err(const float *a, const float *b, long n) {
  double num = 0, den = 0;
  for (long i = 0; i < n; i++) {
    double d = (double)a[i] - b[i];
    num += d * d;
    den += (double)b[i] * b[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

static int n_compared;

/* Compares a tensor's data (diff when `diff`) with the reference file. */
static void compare(const dd_tensor *t, int diff, const char *rel) {
  float *ref;
  long n = load_f32(rel, &ref);
  CHECKF(n == t->count, "%s: reference has %ld values, tensor %s has %lld", rel, n, t->name, (long long)t->count);
  if (n != t->count) {
    free(ref);
    return;
  }
  float *mine = malloc((size_t)n * sizeof *mine + 4);
  if (diff)
    dd_tensor_get_diff(t, mine);
  else
    dd_tensor_get_data(t, mine);
  double e = rel_err(mine, ref, n);
  CHECKF(e < TOL, "%s: relative error %.3g (tensor %s)", rel, e, t->name);
  n_compared++;
  free(mine);
  free(ref);
}

static dd_net *build(const Caffe__NetParameter *p, Caffe__Phase phase, const char *weights) {
  dd_net *n = NULL;
  char err[1024];
  if (dd_net_create(&n, p, phase, be, 1, NULL, err, sizeof err)) {
    fprintf(stderr, "net: %s\n", err);
    return NULL;
  }
  Caffe__NetParameter *w = NULL;
  if (dd_caffemodel_read(&w, weights, err, sizeof err) || dd_net_copy_from(n, w, weights, NULL, err, sizeof err)) {
    fprintf(stderr, "weights: %s\n", err);
    if (w) caffe__net_parameter__free_unpacked(w, NULL);
    dd_net_destroy(n);
    return NULL;
  }
  caffe__net_parameter__free_unpacked(w, NULL);
  return n;
}

/* data[i] = (1 + p) * sin(i) + 0.25 p; label = [1, 3] */
static void set_inputs(dd_net *n, int p) {
  dd_tensor *d = dd_net_blob(n, "data"), *l = dd_net_blob(n, "label");
  float x[486], lab[2] = {1, 3};
  for (int i = 0; i < 486; i++) x[i] = (float)((1 + p) * sin((double)i) + 0.25 * p);
  dd_tensor_set_data(d, x);
  dd_tensor_set_data(l, lab);
}

static const char *const blobs[] = {"data", "data_data_0_split_0", "data_data_0_split_1", "label", "conv1",
                                    "bn1", "scale1", "relu1", "conv2", "proj", "sum", "pool1", "gpool", "fc", "loss"};
static const char *const params[] = {"conv1.0", "bn1.0", "bn1.1", "bn1.2", "scale1.0", "scale1.1",
                                     "conv2.0", "proj.0", "proj.1", "fc.0", "fc.1"};

static dd_tensor *param(dd_net *n, const char *name) {
  char lname[64];
  snprintf(lname, sizeof lname, "%s", name);
  char *dot = strrchr(lname, '.');
  int idx = atoi(dot + 1);
  *dot = '\0';
  int li = dd_net_layer_index(n, lname);
  return li >= 0 && idx < n->layers[li].n_params ? n->layers[li].params[idx] : NULL;
}

static void compare_stage(dd_net *n, const char *stage, int with_diff, int with_params) {
  char rel[256];
  for (size_t i = 0; i < sizeof blobs / sizeof blobs[0]; i++) {
    dd_tensor *t = dd_net_blob(n, blobs[i]);
    CHECKF(t != NULL, "no blob %s", blobs[i]);
    if (!t) continue;
    snprintf(rel, sizeof rel, "%s/blob_data__%s.f32", stage, blobs[i]);
    compare(t, 0, rel);
    if (with_diff && strcmp(blobs[i], "label") != 0 && strcmp(blobs[i], "loss") != 0) {
      snprintf(rel, sizeof rel, "%s/blob_diff__%s.f32", stage, blobs[i]);
      compare(t, 1, rel);
    }
  }
  for (size_t i = 0; with_params && i < sizeof params / sizeof params[0]; i++) {
    dd_tensor *t = param(n, params[i]);
    REQUIRE(t);
    snprintf(rel, sizeof rel, "%s/param_data__%s.f32", stage, params[i]);
    compare(t, 0, rel);
    if (with_diff) {
      snprintf(rel, sizeof rel, "%s/param_diff__%s.f32", stage, params[i]);
      compare(t, 1, rel);
    }
  }
}

static void test_fwd_bwd_and_sgd_step(void) {
  Caffe__NetParameter *p = test_read_net(REF "net_resblock.prototxt");
  REQUIRE(p);
  dd_net *n = build(p, CAFFE__PHASE__TRAIN, REF "resblock/init.caffemodel");
  REQUIRE(n);
  n_compared = 0;
  for (size_t i = 0; i < sizeof params / sizeof params[0]; i++) {
    char rel[128];
    snprintf(rel, sizeof rel, "init/param_data__%s.f32", params[i]);
    compare(param(n, params[i]), 0, rel);
  }
  set_inputs(n, 0);
  dd_net_clear_param_diffs(n);
  double loss;
  dd_net_forward(n, &loss);
  CHECKF(fabs(loss - 1.69543815) < 1e-5, "loss %.9f", loss);
  dd_net_backward(n);
  compare_stage(n, "fwd_bwd", 1, 1);
  /* One SGD step as Caffe's solver takes it: diff += decay * decay_mult * w;
   * h = momentum * h + lr * lr_mult * diff; w -= h (BatchNorm: lr_mult 0). */
  float *hist[64];
  for (size_t i = 0; i < n->n_params; i++) {
    dd_net_param *np = &n->params[i];
    hist[i] = be->ops->alloc(be, (size_t)np->t->count * sizeof(float));
    be->ops->regularize(be, np->t->count, np->t->diff, np->t->data, 0.0005f * np->decay_mult, 0);
    be->ops->sgd_update(be, np->t->count, np->t->data, np->t->diff, hist[i], 0.1f * np->lr_mult, 0.9f, 0);
  }
  for (size_t i = 0; i < sizeof params / sizeof params[0]; i++) {
    char rel[128];
    dd_tensor *t = param(n, params[i]);
    snprintf(rel, sizeof rel, "sgd_step/param_data__%s.f32", params[i]);
    compare(t, 0, rel);
    snprintf(rel, sizeof rel, "sgd_step/param_diff__%s.f32", params[i]);
    compare(t, 1, rel);
    /* history: find this tensor's slot */
    for (size_t k = 0; k < n->n_params; k++)
      if (n->params[k].t == t) {
        dd_tensor h = *t;
        h.data = hist[k];
        snprintf(rel, sizeof rel, "sgd_step/history__%s.f32", params[i]);
        compare(&h, 0, rel);
      }
  }
  for (size_t i = 0; i < n->n_params; i++) be->ops->free(be, hist[i]);
  printf("     %d tensors compared\n", n_compared);
  dd_net_destroy(n);
  caffe__net_parameter__free_unpacked(p, NULL);
}

static void test_bn_three_passes(void) {
  Caffe__NetParameter *p = test_read_net(REF "net_resblock.prototxt");
  REQUIRE(p);
  dd_net *n = build(p, CAFFE__PHASE__TRAIN, REF "resblock/init.caffemodel");
  REQUIRE(n);
  const double losses[3] = {1.69543815, 1.66834092, 1.64568114};
  for (int pass = 0; pass < 3; pass++) {
    set_inputs(n, pass);
    double loss;
    dd_net_forward(n, &loss);
    CHECKF(fabs(loss - losses[pass]) < 1e-5 * 2, "pass %d loss %.9f", pass + 1, loss);
    char rel[128];
    snprintf(rel, sizeof rel, "bn_3pass/blob_data__data_pass%d.f32", pass + 1);
    compare(dd_net_blob(n, "data"), 0, rel);
    snprintf(rel, sizeof rel, "bn_3pass/blob_data__conv1_pass%d.f32", pass + 1);
    compare(dd_net_blob(n, "conv1"), 0, rel);
    snprintf(rel, sizeof rel, "bn_3pass/blob_data__bn1_pass%d.f32", pass + 1);
    compare(dd_net_blob(n, "bn1"), 0, rel);
    for (int b = 0; b < 3; b++) {
      snprintf(rel, sizeof rel, "bn_3pass/param_data__bn1.%d_pass%d.f32", b, pass + 1);
      char pn[16];
      snprintf(pn, sizeof pn, "bn1.%d", b);
      compare(param(n, pn), 0, rel);
    }
  }
  dd_net_destroy(n);
  caffe__net_parameter__free_unpacked(p, NULL);
}

/* TEST on stored statistics: the prototxt without its explicit `use_global_stats: false`, so the
 * TEST default (global statistics) applies. */
static void test_test_phase_global(void) {
  Caffe__NetParameter *p = test_read_net(REF "net_resblock.prototxt");
  REQUIRE(p);
  for (size_t i = 0; i < p->n_layer; i++)
    if (p->layer[i]->batch_norm_param) p->layer[i]->batch_norm_param->has_use_global_stats = 0;
  dd_net *n = build(p, CAFFE__PHASE__TEST, REF "resblock/after_bn_3pass.caffemodel");
  REQUIRE(n);
  set_inputs(n, 0);
  double loss;
  dd_net_forward(n, &loss);
  CHECKF(fabs(loss - 1.75508511) < 2e-5, "loss %.9f", loss);
  compare_stage(n, "test_fwd_global", 0, 1);
  /* Running it again changes nothing: stored statistics do not move in TEST. */
  dd_net_forward(n, &loss);
  compare_stage(n, "test_fwd_global", 0, 1);
  dd_net_destroy(n);
  caffe__net_parameter__free_unpacked(p, NULL);
}

/* TEST with the prototxt as written, from the weights after the three passes: the explicit
 * `use_global_stats: false` wins over the TEST default, so BatchNorm uses batch statistics and
 * updates its blobs even in TEST (the scale factor goes from 2.997 to 3.994). */
static void test_test_phase_explicit_false(void) {
  Caffe__NetParameter *p = test_read_net(REF "net_resblock.prototxt");
  REQUIRE(p);
  dd_net *n = build(p, CAFFE__PHASE__TEST, REF "resblock/after_bn_3pass.caffemodel");
  REQUIRE(n);
  set_inputs(n, 0);
  double loss;
  dd_net_forward(n, &loss);
  CHECKF(fabs(loss - 1.69543815) < 2e-5, "loss %.9f", loss);
  compare_stage(n, "test_fwd_explicit_false", 0, 0);
  for (int b = 0; b < 3; b++) {
    char rel[128], pn[16];
    snprintf(rel, sizeof rel, "test_fwd_explicit_false/param_data__bn1.%d.f32", b);
    snprintf(pn, sizeof pn, "bn1.%d", b);
    compare(param(n, pn), 0, rel);
  }
  dd_net_destroy(n);
  caffe__net_parameter__free_unpacked(p, NULL);
}

int main(void) {
  if (dd_cpu_backend_create(&be, 2)) return 1;
  printf("     %s\n", dd_cpu_backend_describe(be));
  RUN(test_fwd_bwd_and_sgd_step);
  RUN(test_bn_three_passes);
  RUN(test_test_phase_global);
  RUN(test_test_phase_explicit_false);
  dd_cpu_backend_destroy(be);
  return test_summary();
}
