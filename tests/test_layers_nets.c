/* Layer correctness on the CPU backend, 3 to 6 (the helpers: tests/test_layers.h):
 * 3. In-place layers against the same net out of place (including the WRN pattern
 *    Convolution -> BatchNorm -> Scale -> ReLU, all in place).
 * 4. Fillers: statistics, Caffe's fan_in/fan_out, bilinear values, determinism, errors.
 * 5. Split insertion: Caffe's names and summed gradients.
 * 6. Determinism across nets and thread counts; shape checks that must be errors, not crashes. */
#define _POSIX_C_SOURCE 200809L
#include <float.h>
#include <math.h>
#include <stdint.h>

#include "test_layers.h"

/* ---- 3. in place against out of place ------------------------------------------------------- */

/* Builds both nets with the same seed, runs them on the same inputs and compares the output
 * blobs, then sets the same top diff and compares every input's diff and every parameter's diff
 * (the nets have the same layers in the same order, so their parameters correspond). */
static void compare_in_place(const char *what, const char *out_text, const char *out_blob, const char *in_text,
                             const char *in_blob, Caffe__Phase phase) {
  dd_net *a = make_net(out_text, phase), *b = make_net(in_text, phase);
  CHECKF(a && b, "%s: the nets did not build", what);
  if (!a || !b) {
    dd_net_destroy(a);
    dd_net_destroy(b);
    return;
  }
  int same_params = a->n_params == b->n_params;
  for (size_t p = 0; same_params && p < a->n_params; p++) {
    float *pa = dd_tensor_data_copy(a->params[p].t), *pb = dd_tensor_data_copy(b->params[p].t);
    same_params = a->params[p].t->count == b->params[p].t->count &&
                  memcmp(pa, pb, (size_t)a->params[p].t->count * sizeof *pa) == 0;
    free(pa);
    free(pb);
  }
  CHECKF(same_params, "%s: the parameters differ before any step", what);
  for (int iter = 0; iter < 2; iter++) {
    fill_inputs(a, 21 + iter, -1, 2); /* in place, the inputs were overwritten */
    fill_inputs(b, 21 + iter, -1, 2);
    dd_net_clear_param_diffs(a);
    dd_net_clear_param_diffs(b);
    dd_net_forward(a, NULL);
    dd_net_forward(b, NULL);
    dd_tensor *ya = blob(a, out_blob), *yb = blob(b, in_blob);
    float *va = dd_tensor_data_copy(ya), *vb = dd_tensor_data_copy(yb);
    CHECKF(ya->count == yb->count && max_rel_diff(vb, va, ya->count) < 1e-6, "%s: outputs differ by %.3g", what,
           max_rel_diff(vb, va, ya->count));
    float *w = malloc((size_t)ya->count * sizeof *w);
    dd_rng r;
    dd_rng_seed(&r, 5 + iter);
    uniform_fill(w, ya->count, &r, -1, 1);
    dd_tensor_set_diff(ya, w);
    dd_tensor_set_diff(yb, w);
    dd_net_backward(a);
    dd_net_backward(b);
    for (size_t i = 0; i < a->n_layers; i++) {
      dd_layer *l = &a->layers[i];
      if (strcmp(l->ops->type, "Input") != 0) continue;
      for (int t = 0; t < l->nt; t++) {
        dd_tensor *ta = l->top[t], *tb = blob(b, ta->name);
        float *ga = dd_tensor_diff_copy(ta), *gb = dd_tensor_diff_copy(tb);
        double e = max_rel_diff(gb, ga, ta->count);
        CHECKF(e < 1e-5, "%s: the gradient of input %s differs by %.3g", what, ta->name, e);
        free(ga);
        free(gb);
      }
    }
    for (size_t p = 0; same_params && p < a->n_params; p++) {
      float *ga = dd_tensor_diff_copy(a->params[p].t), *gb = dd_tensor_diff_copy(b->params[p].t);
      double e = max_rel_diff(gb, ga, a->params[p].t->count);
      CHECKF(e < 1e-5, "%s: the gradient of %s differs by %.3g", what, a->params[p].t->name, e);
      free(ga);
      free(gb);
    }
    free(va);
    free(vb);
    free(w);
  }
  dd_net_destroy(a);
  dd_net_destroy(b);
}

#define SCF "scale_param { bias_term: true filler { type: \"uniform\" min: 0.5 max: 1.5 } " \
            "bias_filler { type: \"uniform\" min: -1 max: 1 } }"

static void test_in_place(void) {
  compare_in_place("relu",
                   FB INPUT("x", "dim: 2 dim: 3 dim: 4") "layer { name: \"r\" type: \"ReLU\" bottom: \"x\" top: \"y\" }", "y",
                   FB INPUT("x", "dim: 2 dim: 3 dim: 4") "layer { name: \"r\" type: \"ReLU\" bottom: \"x\" top: \"x\" }", "x",
                   CAFFE__PHASE__TRAIN);
  compare_in_place("relu negative_slope",
                   FB INPUT("x", "dim: 2 dim: 3 dim: 4")
                   "layer { name: \"r\" type: \"ReLU\" bottom: \"x\" top: \"y\" relu_param { negative_slope: 0.2 } }", "y",
                   FB INPUT("x", "dim: 2 dim: 3 dim: 4")
                   "layer { name: \"r\" type: \"ReLU\" bottom: \"x\" top: \"x\" relu_param { negative_slope: 0.2 } }", "x",
                   CAFFE__PHASE__TRAIN);
  compare_in_place("batch norm",
                   FB INPUT("x", "dim: 3 dim: 2 dim: 2 dim: 2") "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"x\" top: \"y\" }", "y",
                   FB INPUT("x", "dim: 3 dim: 2 dim: 2 dim: 2") "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"x\" top: \"x\" }", "x",
                   CAFFE__PHASE__TRAIN);
  compare_in_place("scale",
                   FB INPUT("x", "dim: 3 dim: 2 dim: 2 dim: 2") "layer { name: \"s\" type: \"Scale\" bottom: \"x\" top: \"y\" " SCF " }", "y",
                   FB INPUT("x", "dim: 3 dim: 2 dim: 2 dim: 2") "layer { name: \"s\" type: \"Scale\" bottom: \"x\" top: \"x\" " SCF " }", "x",
                   CAFFE__PHASE__TRAIN);
  compare_in_place("dropout TEST",
                   FB INPUT("x", "dim: 3 dim: 4") "layer { name: \"d\" type: \"Dropout\" bottom: \"x\" top: \"y\" }", "y",
                   FB INPUT("x", "dim: 3 dim: 4") "layer { name: \"d\" type: \"Dropout\" bottom: \"x\" top: \"x\" }", "x",
                   CAFFE__PHASE__TEST);
  compare_in_place("dropout TRAIN",
                   FB INPUT("x", "dim: 3 dim: 40") "layer { name: \"d\" type: \"Dropout\" bottom: \"x\" top: \"y\" }", "y",
                   FB INPUT("x", "dim: 3 dim: 40") "layer { name: \"d\" type: \"Dropout\" bottom: \"x\" top: \"x\" }", "x",
                   CAFFE__PHASE__TRAIN);
  compare_in_place("eltwise SUM in place on bottom 0",
                   FB INPUT("a", "dim: 3 dim: 4") INPUT("b", "dim: 3 dim: 4")
                   "layer { name: \"e\" type: \"Eltwise\" bottom: \"a\" bottom: \"b\" top: \"y\" eltwise_param { coeff: 2 coeff: -1 } }", "y",
                   FB INPUT("a", "dim: 3 dim: 4") INPUT("b", "dim: 3 dim: 4")
                   "layer { name: \"e\" type: \"Eltwise\" bottom: \"a\" bottom: \"b\" top: \"a\" eltwise_param { coeff: 2 coeff: -1 } }", "a",
                   CAFFE__PHASE__TRAIN);
  compare_in_place("eltwise MAX in place on bottom 0",
                   FB INPUT("a", "dim: 3 dim: 4") INPUT("b", "dim: 3 dim: 4") INPUT("c", "dim: 3 dim: 4")
                   "layer { name: \"e\" type: \"Eltwise\" bottom: \"a\" bottom: \"b\" bottom: \"c\" top: \"y\" "
                   "eltwise_param { operation: MAX } }", "y",
                   FB INPUT("a", "dim: 3 dim: 4") INPUT("b", "dim: 3 dim: 4") INPUT("c", "dim: 3 dim: 4")
                   "layer { name: \"e\" type: \"Eltwise\" bottom: \"a\" bottom: \"b\" bottom: \"c\" top: \"a\" "
                   "eltwise_param { operation: MAX } }", "a",
                   CAFFE__PHASE__TRAIN);
  /* Scale in place after BatchNorm in place: Scale overwrites what BatchNorm wrote */
  compare_in_place("batch norm + scale, both in place",
                   FB INPUT("x", "dim: 3 dim: 2 dim: 2 dim: 2")
                   "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"x\" top: \"b\" }\n"
                   "layer { name: \"s\" type: \"Scale\" bottom: \"b\" top: \"s\" " SCF " }", "s",
                   FB INPUT("x", "dim: 3 dim: 2 dim: 2 dim: 2")
                   "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"x\" top: \"x\" }\n"
                   "layer { name: \"s\" type: \"Scale\" bottom: \"x\" top: \"x\" " SCF " }", "x",
                   CAFFE__PHASE__TRAIN);
  /* the WRN block: Convolution, then BatchNorm, Scale and ReLU all in place on its top */
  compare_in_place("WRN: conv, bn + scale + relu in place, conv",
                   FB INPUT("x", "dim: 2 dim: 3 dim: 5 dim: 5")
                   "layer { name: \"c1\" type: \"Convolution\" bottom: \"x\" top: \"c\" convolution_param { num_output: 4 "
                   "kernel_size: 3 pad: 1 " WF " } }\n"
                   "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"c\" top: \"b\" }\n"
                   "layer { name: \"s\" type: \"Scale\" bottom: \"b\" top: \"s\" " SCF " }\n"
                   "layer { name: \"r\" type: \"ReLU\" bottom: \"s\" top: \"r\" }\n"
                   "layer { name: \"c2\" type: \"Convolution\" bottom: \"r\" top: \"out\" convolution_param { num_output: 2 "
                   "kernel_size: 3 pad: 1 " WF " } }", "out",
                   FB INPUT("x", "dim: 2 dim: 3 dim: 5 dim: 5")
                   "layer { name: \"c1\" type: \"Convolution\" bottom: \"x\" top: \"c\" convolution_param { num_output: 4 "
                   "kernel_size: 3 pad: 1 " WF " } }\n"
                   "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"c\" top: \"c\" }\n"
                   "layer { name: \"s\" type: \"Scale\" bottom: \"c\" top: \"c\" " SCF " }\n"
                   "layer { name: \"r\" type: \"ReLU\" bottom: \"c\" top: \"c\" }\n"
                   "layer { name: \"c2\" type: \"Convolution\" bottom: \"c\" top: \"out\" convolution_param { num_output: 2 "
                   "kernel_size: 3 pad: 1 " WF " } }", "out",
                   CAFFE__PHASE__TRAIN);
  /* the same block in TEST-style global statistics (BatchNorm backward uses no output then) */
  compare_in_place("WRN, use_global_stats",
                   FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 4")
                   "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"x\" top: \"b\" batch_norm_param { use_global_stats: true } }\n"
                   "layer { name: \"s\" type: \"Scale\" bottom: \"b\" top: \"s\" " SCF " }\n"
                   "layer { name: \"r\" type: \"ReLU\" bottom: \"s\" top: \"r\" }", "r",
                   FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 4")
                   "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"x\" top: \"x\" batch_norm_param { use_global_stats: true } }\n"
                   "layer { name: \"s\" type: \"Scale\" bottom: \"x\" top: \"x\" " SCF " }\n"
                   "layer { name: \"r\" type: \"ReLU\" bottom: \"x\" top: \"x\" }", "x",
                   CAFFE__PHASE__TRAIN);
}

/* The WRN block in place, checked against finite differences (not just against itself). */
static void test_grad_wrn_in_place(void) {
  check_grad("WRN block, all in place",
             FB INPUT("x", "dim: 3 dim: 2 dim: 4 dim: 4")
             "layer { name: \"c1\" type: \"Convolution\" bottom: \"x\" top: \"c\" convolution_param { num_output: 3 "
             "kernel_size: 3 pad: 1 " WF " } }\n"
             "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"c\" top: \"c\" }\n"
             "layer { name: \"s\" type: \"Scale\" bottom: \"c\" top: \"c\" " SCF " }\n"
             "layer { name: \"r\" type: \"ReLU\" bottom: \"c\" top: \"c\" relu_param { negative_slope: 0.3 } }\n"
             "layer { name: \"f\" type: \"InnerProduct\" bottom: \"c\" top: \"y\" inner_product_param { num_output: 3 " WF " } }",
             GC_KINK);
}

/* ---- 4. fillers -------------------------------------------------------------------------------- */

/* A tensor of `shape` filled per `fp` from `seed`; *rc gets dd_fill's result. */
static dd_tensor *filled(dd_shape shape, const Caffe__FillerParameter *fp, uint64_t seed, int *rc, char *err,
                         size_t errlen) {
  dd_tensor *t = dd_tensor_create(be, "conv9.0");
  if (!t || dd_tensor_reshape(t, &shape)) {
    dd_tensor_destroy(t);
    *rc = DD_ENOMEM;
    return NULL;
  }
  dd_rng r;
  dd_rng_seed(&r, seed);
  *rc = dd_fill(t, fp, &r, err, errlen);
  return t;
}

static void moments(const float *x, int64_t n, double *mean, double *var) {
  double s = 0, q = 0;
  for (int64_t i = 0; i < n; i++) s += x[i];
  *mean = s / (double)n;
  for (int64_t i = 0; i < n; i++) q += (x[i] - *mean) * (x[i] - *mean);
  *var = q / (double)n;
}

static void test_filler_basic(void) {
  Caffe__FillerParameter fp;
  char err[256];
  int rc;
  /* constant */
  caffe__filler_parameter__init(&fp);
  fp.value = 0.7f;
  dd_tensor *t = filled(dd_shape_4(2, 3, 4, 5), &fp, 1, &rc, err, sizeof err);
  REQUIRE(t && rc == 0);
  float *h = dd_tensor_data_copy(t);
  int64_t off = 0;
  for (int64_t i = 0; i < t->count; i++) off += h[i] != 0.7f;
  CHECKF(off == 0, "constant: %lld values are not 0.7", (long long)off);
  free(h);
  dd_tensor_destroy(t);
  t = filled(dd_shape_4(2, 3, 1, 1), NULL, 1, &rc, err, sizeof err); /* no filler: constant 0 */
  REQUIRE(t && rc == 0);
  h = dd_tensor_data_copy(t);
  CHECK(h[0] == 0 && h[5] == 0);
  free(h);
  dd_tensor_destroy(t);
  /* uniform */
  caffe__filler_parameter__init(&fp);
  fp.type = (char *)"uniform";
  fp.min = -0.3f;
  fp.max = 0.8f;
  int64_t n = 100000;
  t = filled(dd_shape_make(1, &n), &fp, 2, &rc, err, sizeof err);
  REQUIRE(t && rc == 0);
  h = dd_tensor_data_copy(t);
  double mean, var;
  moments(h, n, &mean, &var);
  int64_t outside = 0;
  for (int64_t i = 0; i < n; i++) outside += h[i] < -0.3f || h[i] > 0.8f;
  CHECKF(outside == 0, "uniform: %lld values outside [min, max]", (long long)outside);
  CHECKF(fabs(mean - 0.25) < 0.005, "uniform mean %g, want 0.25", mean);
  CHECKF(fabs(var - 1.1 * 1.1 / 12) < 0.02 * 1.1 * 1.1 / 12, "uniform variance %g, want %g", var, 1.1 * 1.1 / 12);
  free(h);
  dd_tensor_destroy(t);
  /* gaussian */
  caffe__filler_parameter__init(&fp);
  fp.type = (char *)"gaussian";
  fp.mean = 0.5f;
  fp.std = 2.0f;
  t = filled(dd_shape_make(1, &n), &fp, 3, &rc, err, sizeof err);
  REQUIRE(t && rc == 0);
  h = dd_tensor_data_copy(t);
  moments(h, n, &mean, &var);
  CHECKF(fabs(mean - 0.5) < 0.03, "gaussian mean %g, want 0.5", mean);
  CHECKF(fabs(sqrt(var) - 2.0) < 0.02 * 2.0, "gaussian std %g, want 2", sqrt(var));
  free(h);
  dd_tensor_destroy(t);
  /* gaussian with sparse: each weight kept with probability sparse / shape[0] */
  fp.sparse = 3;
  t = filled(dd_shape_make(2, (int64_t[]){10, 10000}), &fp, 4, &rc, err, sizeof err);
  REQUIRE(t && rc == 0);
  h = dd_tensor_data_copy(t);
  int64_t nz = 0;
  for (int64_t i = 0; i < t->count; i++) nz += h[i] != 0;
  CHECKF(fabs((double)nz / (double)t->count - 0.3) < 0.01, "sparse 3 of 10: %.4f kept", (double)nz / (double)t->count);
  free(h);
  dd_tensor_destroy(t);
}

/* Caffe: fan_in = count / shape[0], fan_out = count / shape[1]; xavier U(-a, a) with
 * a = sqrt(3 / n) (variance 1 / n), msra N(0, 2 / n); n per variance_norm. */
static void test_filler_xavier_msra(void) {
  static const struct {
    int64_t dims[4];
    int ndim;
  } shapes[] = {{{50, 40, 7, 9}, 4}, {{30, 4000, 0, 0}, 2}};
  for (int s = 0; s < 2; s++) {
    dd_shape shape = dd_shape_make(shapes[s].ndim, shapes[s].dims);
    int64_t count = dd_shape_count(&shape);
    double fan_in = (double)count / (double)shapes[s].dims[0], fan_out = (double)count / (double)shapes[s].dims[1];
    const double fans[3] = {fan_in, fan_out, (fan_in + fan_out) / 2};
    for (int type = 0; type < 2; type++)
      for (int vn = 0; vn < 3; vn++) {
        Caffe__FillerParameter fp;
        caffe__filler_parameter__init(&fp);
        fp.type = (char *)(type ? "msra" : "xavier");
        fp.variance_norm = (Caffe__FillerParameter__VarianceNorm)vn;
        char err[256];
        int rc;
        dd_tensor *t = filled(shape, &fp, 10 + vn + 3 * type, &rc, err, sizeof err);
        REQUIRE(t && rc == 0);
        float *h = dd_tensor_data_copy(t);
        double mean, var, want = (type ? 2.0 : 1.0) / fans[vn], amax = 0;
        moments(h, count, &mean, &var);
        for (int64_t i = 0; i < count; i++) amax = fmax(amax, fabs(h[i]));
        CHECKF(fabs(var - want) < 0.02 * want, "%s variance_norm %d shape %d: variance %.4g, want %.4g (n = %g)",
               fp.type, vn, s, var, want, fans[vn]);
        CHECKF(fabs(mean) < 5 * sqrt(want / (double)count), "%s: mean %g", fp.type, mean);
        if (!type) {
          double a = sqrt(3.0 / fans[vn]);
          CHECKF(amax <= a * (1 + 1e-6) && amax > 0.99 * a, "xavier: max |w| %g, bound %g", amax, a);
        }
        free(h);
        dd_tensor_destroy(t);
      }
  }
}

static void test_filler_unitball_bilinear(void) {
  Caffe__FillerParameter fp;
  caffe__filler_parameter__init(&fp);
  fp.type = (char *)"positive_unitball";
  char err[256];
  int rc;
  dd_tensor *t = filled(dd_shape_4(20, 3, 4, 4), &fp, 5, &rc, err, sizeof err);
  REQUIRE(t && rc == 0);
  float *h = dd_tensor_data_copy(t);
  for (int r = 0; r < 20; r++) {
    double sum = 0;
    for (int k = 0; k < 48; k++) {
      sum += h[r * 48 + k];
      CHECKF(h[r * 48 + k] >= 0 && h[r * 48 + k] <= 1, "unitball value %g", h[r * 48 + k]);
    }
    CHECKF(fabs(sum - 1) < 1e-5, "unitball row %d sums to %.8g", r, sum);
  }
  free(h);
  dd_tensor_destroy(t);
  /* bilinear, Caffe: f = ceil(k / 2), c = (2f - 1 - f % 2) / (2f),
   * w(x, y) = (1 - |x / f - c|) (1 - |y / f - c|); for k = 4: f = 2, c = 0.75, per axis
   * 0.25 0.75 0.75 0.25 */
  fp.type = (char *)"bilinear";
  t = filled(dd_shape_4(2, 3, 4, 4), &fp, 6, &rc, err, sizeof err);
  REQUIRE(t && rc == 0);
  h = dd_tensor_data_copy(t);
  static const float axis[4] = {0.25f, 0.75f, 0.75f, 0.25f};
  for (int64_t i = 0; i < t->count; i++) {
    int x = (int)(i % 4), y = (int)((i / 4) % 4);
    double f = 2, c = (2 * f - 1 - fmod(f, 2)) / (2 * f);
    double formula = (1 - fabs(x / f - c)) * (1 - fabs(y / f - c));
    CHECKF(h[i] == axis[x] * axis[y] && fabs(h[i] - formula) < 1e-7, "bilinear[%lld] = %g, want %g", (long long)i, h[i],
           axis[x] * axis[y]);
  }
  free(h);
  dd_tensor_destroy(t);
  /* k = 3: Caffe 1.0's formula is lopsided (f = 2, c = 0.75: 0.25 0.75 0.75 per axis); the
   * symmetric fix (BVLC/caffe#5713) came after 1.0, and distilld matches 1.0 */
  t = filled(dd_shape_4(1, 1, 3, 3), &fp, 6, &rc, err, sizeof err);
  REQUIRE(t && rc == 0);
  h = dd_tensor_data_copy(t);
  static const float axis3[3] = {0.25f, 0.75f, 0.75f};
  for (int i = 0; i < 9; i++)
    CHECKF(h[i] == axis3[i % 3] * axis3[i / 3], "bilinear 3x3 [%d] = %g, Caffe 1.0 gives %g", i, h[i],
           axis3[i % 3] * axis3[i / 3]);
  free(h);
  dd_tensor_destroy(t);
  t = filled(dd_shape_4(1, 1, 4, 3), &fp, 6, &rc, err, sizeof err);
  CHECKF(rc == DD_EINVAL, "bilinear on a 4x3 kernel: %d", rc);
  CHECK_CONTAINS(err, "conv9.0");
  dd_tensor_destroy(t);
  t = filled(dd_shape_make(2, (int64_t[]){4, 4}), &fp, 6, &rc, err, sizeof err);
  CHECKF(rc == DD_EINVAL, "bilinear on 2-D: %d", rc);
  dd_tensor_destroy(t);
}

static void test_filler_determinism_and_errors(void) {
  static const char *const types[] = {"uniform", "gaussian", "xavier", "msra", "positive_unitball"};
  for (int k = 0; k < 5; k++) {
    Caffe__FillerParameter fp;
    caffe__filler_parameter__init(&fp);
    fp.type = (char *)types[k];
    char err[256];
    int r1, r2, r3;
    dd_tensor *a = filled(dd_shape_4(8, 4, 3, 3), &fp, 42, &r1, err, sizeof err),
              *b = filled(dd_shape_4(8, 4, 3, 3), &fp, 42, &r2, err, sizeof err),
              *c = filled(dd_shape_4(8, 4, 3, 3), &fp, 43, &r3, err, sizeof err);
    REQUIRE(a && b && c && !r1 && !r2 && !r3);
    float *ha = dd_tensor_data_copy(a), *hb = dd_tensor_data_copy(b), *hc = dd_tensor_data_copy(c);
    CHECKF(memcmp(ha, hb, (size_t)a->count * sizeof *ha) == 0, "%s: the same seed gave different weights", types[k]);
    int64_t same = 0;
    for (int64_t i = 0; i < a->count; i++) same += ha[i] == hc[i];
    CHECKF(same < a->count / 10, "%s: another seed gave %lld equal weights of %lld", types[k], (long long)same,
           (long long)a->count);
    free(ha);
    free(hb);
    free(hc);
    dd_tensor_destroy(a);
    dd_tensor_destroy(b);
    dd_tensor_destroy(c);
  }
  /* an unknown type is an error naming it and the blob */
  Caffe__FillerParameter fp;
  caffe__filler_parameter__init(&fp);
  fp.type = (char *)"gausian";
  char err[256] = "";
  int rc;
  dd_tensor *t = filled(dd_shape_4(2, 2, 1, 1), &fp, 1, &rc, err, sizeof err);
  CHECKF(rc == DD_EINVAL, "unknown filler: %d", rc);
  CHECK_CONTAINS(err, "gausian");
  CHECK_CONTAINS(err, "conv9.0");
  dd_tensor_destroy(t);
  rc = net_error(INPUT("x", "dim: 1 dim: 2 dim: 3 dim: 3")
                 "layer { name: \"conv\" type: \"Convolution\" bottom: \"x\" top: \"y\" convolution_param { "
                 "num_output: 2 kernel_size: 3 weight_filler { type: \"gausian\" } } }", CAFFE__PHASE__TRAIN, err, sizeof err);
  CHECKF(rc == DD_EINVAL, "net with an unknown filler: %d", rc);
  CHECK_CONTAINS(err, "gausian");
  CHECK_CONTAINS(err, "conv");
  /* nets: the same seed, the same weights; another seed, others */
  static const char *text = INPUT("x", "dim: 1 dim: 2 dim: 3 dim: 3")
      "layer { name: \"conv\" type: \"Convolution\" bottom: \"x\" top: \"y\" convolution_param { "
      "num_output: 4 kernel_size: 3 weight_filler { type: \"xavier\" } bias_filler { type: \"gaussian\" } } }\n"
      "layer { name: \"ip\" type: \"InnerProduct\" bottom: \"y\" top: \"z\" inner_product_param { "
      "num_output: 3 weight_filler { type: \"msra\" } } }";
  dd_net *a = make_net_on(be, text, CAFFE__PHASE__TRAIN, 5), *b = make_net_on(be, text, CAFFE__PHASE__TRAIN, 5),
         *c = make_net_on(be, text, CAFFE__PHASE__TRAIN, 6);
  REQUIRE(a && b && c);
  for (size_t p = 0; p < a->n_params; p++) {
    float *ha = dd_tensor_data_copy(a->params[p].t), *hb = dd_tensor_data_copy(b->params[p].t), *hc = dd_tensor_data_copy(c->params[p].t);
    size_t bytes = (size_t)a->params[p].t->count * sizeof *ha;
    CHECKF(memcmp(ha, hb, bytes) == 0, "param %zu differs between nets with the same seed", p);
    if (p != 3) /* the InnerProduct bias: constant 0 */
      CHECKF(memcmp(ha, hc, bytes) != 0, "param %zu is the same with another seed", p);
    free(ha);
    free(hb);
    free(hc);
  }
  dd_net_destroy(a);
  dd_net_destroy(b);
  dd_net_destroy(c);
}

/* ---- 5. split insertion ------------------------------------------------------------------------ */

static void test_split_insertion(void) {
  dd_net *n = make_net(FB INPUT("data", "dim: 2 dim: 4")
                       "layer { name: \"ip\" type: \"InnerProduct\" bottom: \"data\" top: \"h\" inner_product_param { "
                       "num_output: 3 " WF " } }\n"
                       "layer { name: \"a\" type: \"ReLU\" bottom: \"h\" top: \"a\" relu_param { negative_slope: 0.5 } }\n"
                       "layer { name: \"b\" type: \"Scale\" bottom: \"h\" top: \"b\" scale_param { "
                       "filler { type: \"uniform\" min: 0.5 max: 1.5 } } }\n"
                       "layer { name: \"sum\" type: \"Eltwise\" bottom: \"a\" bottom: \"b\" bottom: \"h\" top: \"out\" "
                       "eltwise_param { coeff: 1 coeff: 2 coeff: -1 } }", CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  static const char *const names[] = {"data", "ip", "h_ip_0_split", "a", "b", "sum"};
  CHECKF(n->n_layers == 6, "%zu layers", n->n_layers);
  for (size_t i = 0; i < n->n_layers && i < 6; i++)
    CHECKF(!strcmp(n->layers[i].name, names[i]), "layer %zu is \"%s\", want \"%s\"", i, n->layers[i].name, names[i]);
  dd_layer *sp = layer(n, "h_ip_0_split");
  REQUIRE(sp);
  CHECK(!strcmp(sp->ops->type, "Split") && sp->nb == 1 && sp->nt == 3 && !strcmp(sp->bottom[0]->name, "h"));
  for (int t = 0; t < sp->nt && t < 3; t++) {
    char want[64];
    snprintf(want, sizeof want, "h_ip_0_split_%d", t);
    CHECKF(!strcmp(sp->top[t]->name, want), "split top %d is \"%s\", want \"%s\"", t, sp->top[t]->name, want);
  }
  CHECK(!strcmp(layer(n, "a")->bottom[0]->name, "h_ip_0_split_0"));
  CHECK(!strcmp(layer(n, "b")->bottom[0]->name, "h_ip_0_split_1"));
  CHECK(!strcmp(layer(n, "sum")->bottom[2]->name, "h_ip_0_split_2"));
  fill_inputs(n, 3, -1, 1);
  grad_check(n, GC_KINK, "split: a blob read by three layers");
  /* the producer's top diff is the sum of the three copies' diffs */
  dd_net_forward(n, NULL);
  float w[6] = {1, -2, 0.5f, 3, -1, 2};
  dd_tensor_set_diff(blob(n, "out"), w);
  dd_net_backward(n);
  float *h = dd_tensor_diff_copy(blob(n, "h")), *s0 = dd_tensor_diff_copy(sp->top[0]), *s1 = dd_tensor_diff_copy(sp->top[1]), *s2 = dd_tensor_diff_copy(sp->top[2]);
  for (int i = 0; i < 6; i++)
    CHECKF(fabsf(h[i] - (s0[i] + s1[i] + s2[i])) < 1e-6f, "h diff[%d] %g, split diffs sum %g", i, h[i], s0[i] + s1[i] + s2[i]);
  CHECKF(s2[0] == -w[0], "the Eltwise coeff -1 copy gets %g", s2[0]);
  free(h);
  free(s0);
  free(s1);
  free(s2);
  dd_net_destroy(n);

  /* an Input top read twice; and a loss_weight on a top also read by another layer: the split's
   * first top carries the loss, the reader gets _1 */
  n = make_net(FB INPUT("x", "dim: 2 dim: 3")
               "layer { name: \"r\" type: \"ReLU\" bottom: \"x\" top: \"h\" relu_param { negative_slope: 0.25 } loss_weight: 1.5 }\n"
               "layer { name: \"s\" type: \"Scale\" bottom: \"h\" bottom: \"x\" top: \"y\" scale_param { axis: 0 } }",
               CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  CHECK(dd_net_layer_index(n, "x_x_0_split") == 1);
  CHECK(dd_net_layer_index(n, "h_r_0_split") == 3);
  dd_layer *s = layer(n, "s");
  REQUIRE(s);
  CHECKF(!strcmp(s->bottom[0]->name, "h_r_0_split_1"), "scale reads \"%s\"", s->bottom[0]->name);
  CHECKF(!strcmp(s->bottom[1]->name, "x_x_0_split_1"), "scale reads \"%s\"", s->bottom[1]->name);
  CHECK(!strcmp(layer(n, "r")->bottom[0]->name, "x_x_0_split_0"));
  dd_layer *hs = layer(n, "h_r_0_split");
  CHECK(hs && hs->nt == 2 && hs->loss_weight[0] == 1.5f && hs->loss_weight[1] == 0 && layer(n, "r")->loss_weight[0] == 0);
  fill_inputs(n, 4, -1, 1);
  grad_check(n, GC_KINK, "split: loss weight on a top read elsewhere");
  dd_net_destroy(n);
}

/* ---- 6. determinism ---------------------------------------------------------------------------- */

static const char *det_net =
    FB INPUT("data", "dim: 4 dim: 3 dim: 8 dim: 8") INPUT("label", "dim: 4")
    "layer { name: \"conv1\" type: \"Convolution\" bottom: \"data\" top: \"c1\" convolution_param { num_output: 8 "
    "kernel_size: 3 pad: 1 weight_filler { type: \"xavier\" } bias_filler { type: \"gaussian\" std: 0.1 } } }\n"
    "layer { name: \"bn1\" type: \"BatchNorm\" bottom: \"c1\" top: \"c1\" }\n"
    "layer { name: \"sc1\" type: \"Scale\" bottom: \"c1\" top: \"c1\" scale_param { bias_term: true } }\n"
    "layer { name: \"relu1\" type: \"ReLU\" bottom: \"c1\" top: \"c1\" }\n"
    "layer { name: \"pool1\" type: \"Pooling\" bottom: \"c1\" top: \"p1\" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }\n"
    "layer { name: \"conv2\" type: \"Convolution\" bottom: \"p1\" top: \"c2\" convolution_param { num_output: 8 "
    "kernel_size: 3 pad: 1 group: 2 weight_filler { type: \"msra\" } } }\n"
    "layer { name: \"drop\" type: \"Dropout\" bottom: \"c2\" top: \"c2\" dropout_param { dropout_ratio: 0.3 } }\n"
    "layer { name: \"pool2\" type: \"Pooling\" bottom: \"c2\" top: \"p2\" pooling_param { pool: AVE global_pooling: true } }\n"
    "layer { name: \"fc\" type: \"InnerProduct\" bottom: \"p2\" top: \"fc\" inner_product_param { num_output: 5 "
    "weight_filler { type: \"gaussian\" std: 0.5 } } }\n"
    "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"fc\" bottom: \"label\" top: \"loss\" }";

/* Two iterations of forward and backward; returns the fc outputs, the data gradient and every
 * parameter gradient concatenated (malloc'd), and their count in *n. */
static float *det_run(dd_net *net, int64_t *count) {
  int64_t total = 0;
  total += blob(net, "fc")->count + blob(net, "data")->count + 2;
  for (size_t p = 0; p < net->n_params; p++) total += net->params[p].t->count;
  float *out = malloc((size_t)total * sizeof *out), lab[4] = {0, 3, 4, 1};
  int64_t k = 0;
  for (int iter = 0; iter < 2; iter++) {
    set_uniform(net, "data", 60 + iter, -1, 1);
    set_values(net, "label", lab);
    dd_net_clear_param_diffs(net);
    double loss;
    dd_net_forward(net, &loss);
    dd_net_backward(net);
    if (iter == 1) {
      out[k++] = (float)loss;
      dd_tensor_get_data(blob(net, "fc"), out + k);
      k += blob(net, "fc")->count;
      dd_tensor_get_diff(blob(net, "data"), out + k);
      k += blob(net, "data")->count;
      for (size_t p = 0; p < net->n_params; p++) {
        dd_tensor_get_diff(net->params[p].t, out + k);
        k += net->params[p].t->count;
      }
    }
  }
  *count = k;
  return out;
}

static void test_determinism(void) {
  dd_net *a = make_net_on(be, det_net, CAFFE__PHASE__TRAIN, 11), *b = make_net_on(be, det_net, CAFFE__PHASE__TRAIN, 11);
  REQUIRE(a && b);
  int64_t na, nb;
  float *ra = det_run(a, &na), *rb = det_run(b, &nb);
  CHECK(na == nb && memcmp(ra, rb, (size_t)na * sizeof *ra) == 0);
  free(rb);
  dd_net_destroy(b);
  /* one thread against two */
  dd_backend *be1;
  REQUIRE(dd_cpu_backend_create(&be1, 1) == 0);
  dd_net *c = make_net_on(be1, det_net, CAFFE__PHASE__TRAIN, 11);
  REQUIRE(c);
  int64_t nc;
  float *rc = det_run(c, &nc);
  REQUIRE(nc == na);
  int64_t nfc = 1 + blob(a, "fc")->count;
  double ef = 0;
  for (int64_t i = 0; i < nfc; i++) ef = fmax(ef, fabs((double)ra[i] - rc[i]) / fmax(1e-30, fabs((double)rc[i])));
  double eg = max_rel_diff(ra + nfc, rc + nfc, na - nfc);
  CHECKF(ef < 1e-6, "1 vs 2 threads: the loss and outputs differ by %.3g relative", ef);
  CHECKF(eg < 1e-5, "1 vs 2 threads: the gradients differ by %.3g", eg);
  printf("     1 vs 2 threads: outputs within %.1e, gradients within %.1e\n", ef, eg);
  free(rc);
  dd_net_destroy(c);
  dd_cpu_backend_destroy(be1);
  free(ra);
  dd_net_destroy(a);
}

/* ---- shape checks that must be errors, not crashes ---------------------------------------------- */

static void test_shape_errors(void) {
  char err[512];
  int r = net_error(INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5") INPUT("s", "dim: 4")
                    "layer { name: \"sc\" type: \"Scale\" bottom: \"x\" bottom: \"s\" top: \"y\" }", CAFFE__PHASE__TRAIN,
                    err, sizeof err);
  CHECKF(r != 0, "Scale with a (4) scale over axis 1 of 2x3x4x5 built");
  CHECK_CONTAINS(err, "sc");
  r = net_error(INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5") INPUT("b", "dim: 3 dim: 5")
                "layer { name: \"bi\" type: \"Bias\" bottom: \"x\" bottom: \"b\" top: \"y\" }", CAFFE__PHASE__TRAIN, err,
                sizeof err);
  CHECKF(r != 0, "Bias with a (3, 5) bias over axes 1-2 of 2x3x4x5 built");
  CHECK_CONTAINS(err, "bi");
  r = net_error(INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5") INPUT("s", "dim: 4 dim: 5 dim: 6")
                "layer { name: \"sc\" type: \"Scale\" bottom: \"x\" bottom: \"s\" top: \"y\" scale_param { axis: 2 } }",
                CAFFE__PHASE__TRAIN, err, sizeof err);
  CHECKF(r != 0, "Scale with a 3-axis scale from axis 2 of a 4-axis bottom built");
  /* the valid forms still build */
  r = net_error(INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5") INPUT("s", "dim: 4 dim: 5")
                "layer { name: \"sc\" type: \"Scale\" bottom: \"x\" bottom: \"s\" top: \"y\" scale_param { axis: 2 } }",
                CAFFE__PHASE__TRAIN, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  r = net_error(INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5") INPUT("s", "dim: 1")
                "layer { name: \"sc\" type: \"Scale\" bottom: \"x\" bottom: \"s\" top: \"y\" scale_param { axis: 0 } }",
                CAFFE__PHASE__TRAIN, err, sizeof err);
  CHECKF(r != 0, "Scale with a (1) scale over axis 0 (2) built");
}

int main(void) {
  if (layers_begin()) return 1;
  RUN(test_in_place);
  RUN(test_grad_wrn_in_place);
  RUN(test_filler_basic);
  RUN(test_filler_xavier_msra);
  RUN(test_filler_unitball_bilinear);
  RUN(test_filler_determinism_and_errors);
  RUN(test_split_insertion);
  RUN(test_determinism);
  RUN(test_shape_errors);
  return layers_end();
}
