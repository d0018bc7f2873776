/* The catalogue's loss layers (EuclideanLoss, SigmoidCrossEntropyLoss, MultinomialLogisticLoss,
 * HingeLoss, InfogainLoss, ContrastiveLoss): forward values and gradients against values computed
 * here by hand from the definitions (not from the kernels' formulas), finite-difference
 * gradient checks of every bottom that gets a gradient (labels, targets, H and the similarity
 * bottom must be left alone), Caffe's normalization modes and ignore_label, and the errors
 * (bad shapes and fields, labels out of range, an infogain matrix of the wrong size, a missing
 * source file) naming what is wrong. Where a CUDA device is present, the same nets run on it and
 * must agree with the CPU. BVLC Caffe's own outputs for one net per layer are checked by
 * test_catalogue. */
#define _POSIX_C_SOURCE 200809L
#include <unistd.h>

#include "devices/devices.h"
#include "format/caffe_io.h"
#include "test_layers.h"

static char scratch[256];

/* Forward; the loss top "loss" (NAN when the forward failed). */
static float forward_loss(dd_net *n) {
  if (dd_net_forward(n, NULL)) return NAN;
  float v;
  dd_tensor_get_data(blob(n, "loss"), &v);
  return v;
}

#define NEAR(got, want, tol, ...)                                                               \
  CHECKF(fabs((double)(got) - (want)) <= (tol) * fmax(1.0, fabs(want)), "got %.9g, want %.9g: %s", \
         (double)(got), (double)(want), __VA_ARGS__)

/* Checks blob `name`'s diff against want[] (relative 1e-5 of the largest magnitude). */
static void check_diff(dd_net *n, const char *name, const double *want, const char *what) {
  dd_tensor *t = blob(n, name);
  if (!t) return;
  float *d = dd_tensor_diff_copy(t);
  double s = 1e-30;
  for (int64_t i = 0; i < t->count; i++) s = fmax(s, fabs(want[i]));
  for (int64_t i = 0; i < t->count; i++)
    CHECKF(fabs(d[i] - want[i]) <= 1e-5 * s, "%s: d %s[%lld] = %.9g, want %.9g", what, name, (long long)i, d[i],
           want[i]);
  free(d);
}

/* ---- EuclideanLoss ---------------------------------------------------------------------------- */

static void test_euclidean(void) {
  const float a[6] = {0.5f, -1, 2, 0, 0.25f, -0.75f}, b[6] = {1, -1, 0.5f, -2, 0.25f, 0.5f};
  dd_net *n = make_net(FB INPUT("a", "dim: 2 dim: 3") INPUT("b", "dim: 2 dim: 3 dim: 1")
                       "layer { name: \"l\" type: \"EuclideanLoss\" bottom: \"a\" bottom: \"b\" top: \"loss\" "
                       "loss_weight: 3 }", CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  set_values(n, "a", a);
  set_values(n, "b", b);
  double ss = 0, da[6], db[6];
  for (int i = 0; i < 6; i++) ss += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
  NEAR(forward_loss(n), ss / 2 / 2, 1e-6, "sum of squares / (2 N)");
  dd_net_backward(n);
  for (int i = 0; i < 6; i++) da[i] = 3.0 * ((double)a[i] - b[i]) / 2, db[i] = -da[i];
  check_diff(n, "a", da, "euclidean");
  check_diff(n, "b", db, "euclidean (the second bottom gets -da)");
  dd_net_destroy(n);
  check_grad("euclidean", FB INPUT("a", "dim: 3 dim: 4") INPUT("b", "dim: 3 dim: 2 dim: 2")
             "layer { name: \"l\" type: \"EuclideanLoss\" bottom: \"a\" bottom: \"b\" top: \"loss\" }", GC);
  check_grad("euclidean, loss_weight 0.5", FB INPUT("a", "dim: 2 dim: 5") INPUT("b", "dim: 2 dim: 5")
             "layer { name: \"l\" type: \"EuclideanLoss\" bottom: \"a\" bottom: \"b\" top: \"loss\" loss_weight: 0.5 }",
             GC);
}

/* ---- SigmoidCrossEntropyLoss ------------------------------------------------------------------ */

/* -(t log s + (1 - t) log(1 - s)), s = 1 / (1 + e^-x); its asymptote where 1 - s underflows */
static double sce_ref(double x, double t) {
  if (x > 30) return (1 - t) * x;
  if (x < -30) return -t * x;
  double s = 1 / (1 + exp(-x));
  return -(t * log(s) + (1 - t) * log(1 - s));
}

static void test_sigmoid_ce_values(void) {
  const float x[8] = {-50, -3, -0.5f, 0, 0.25f, 2, 7, 50};
  const float t_ign[8] = {0, 0.2f, 1, 0.5f, -1, 0.8f, 1, 0.3f}, t_all[8] = {0, 0.2f, 1, 0.5f, 0.6f, 0.8f, 1, 0.3f};
  static const struct {
    const char *param;
    int ignore;
    double norm;
  } cases[] = {
      {"", 1, 2}, /* Caffe's default for this layer: BATCH_SIZE */
      {"normalization: BATCH_SIZE", 1, 2}, {"normalization: VALID", 1, 7}, {"normalization: FULL", 1, 8},
      {"normalization: NONE", 1, 1},       {"normalize: true", 1, 7},      {"normalize: false", 1, 2},
      {"normalize: true normalization: FULL", 1, 8}, {"", 0, 2},           {"normalization: VALID", 0, 8},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    char text[1024];
    snprintf(text, sizeof text,
             FB INPUT("x", "dim: 2 dim: 4") INPUT("t", "dim: 2 dim: 2 dim: 2")
             "layer { name: \"l\" type: \"SigmoidCrossEntropyLoss\" bottom: \"x\" bottom: \"t\" top: \"loss\" "
             "loss_weight: 2 loss_param { %s %s } }", cases[k].param, cases[k].ignore ? "ignore_label: -1" : "");
    dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
    CHECKF(n != NULL, "case %zu", k);
    if (!n) continue;
    const float *t = cases[k].ignore ? t_ign : t_all;
    set_values(n, "x", x);
    set_values(n, "t", t);
    double sum = 0, dx[8];
    for (int i = 0; i < 8; i++) {
      int ign = cases[k].ignore && t[i] == -1;
      if (!ign) sum += sce_ref(x[i], t[i]);
      dx[i] = ign ? 0 : 2.0 * (1 / (1 + exp(-(double)x[i])) - t[i]) / cases[k].norm;
    }
    char what[128];
    snprintf(what, sizeof what, "sigmoid ce {%s%s}", cases[k].param, cases[k].ignore ? " ignore_label" : "");
    NEAR(forward_loss(n), sum / cases[k].norm, 1e-6, what);
    dd_net_backward(n);
    check_diff(n, "x", dx, what);
    dd_net_destroy(n);
  }
  /* Caffe compares the target truncated to an integer with ignore_label: with ignore_label 0,
   * every target in [0, 1) is ignored and only t = 1 counts */
  dd_net *n = make_net(INPUT("x", "dim: 1 dim: 4") INPUT("t", "dim: 1 dim: 4")
                       "layer { name: \"l\" type: \"SigmoidCrossEntropyLoss\" bottom: \"x\" bottom: \"t\" top: \"loss\" "
                       "loss_param { ignore_label: 0 normalization: VALID } }", CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  const float x4[4] = {0.5f, -1.5f, 2, 1}, t4[4] = {0.3f, 1, 0, 0.99f};
  set_values(n, "x", x4);
  set_values(n, "t", t4);
  NEAR(forward_loss(n), sce_ref(-1.5, 1), 1e-6, "ignore_label 0 truncates the targets");
  dd_net_destroy(n);
}

static void test_sigmoid_ce_grad(void) {
  static const char *const modes[] = {"", "normalization: VALID", "normalization: FULL", "normalization: NONE",
                                      "normalize: true"};
  for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++)
    for (int ign = 0; ign < 2; ign++) {
      char text[1024], what[128];
      snprintf(text, sizeof text,
               FB INPUT("x", "dim: 3 dim: 2 dim: 2") INPUT("t", "dim: 3 dim: 4")
               "layer { name: \"l\" type: \"SigmoidCrossEntropyLoss\" bottom: \"x\" bottom: \"t\" top: \"loss\" "
               "loss_param { %s %s } }", modes[m], ign ? "ignore_label: -1" : "");
      snprintf(what, sizeof what, "sigmoid ce {%s%s}", modes[m], ign ? " ignore_label" : "");
      dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
      CHECKF(n != NULL, "%s", what);
      if (!n) continue;
      set_uniform(n, "x", 5 + m, -3, 3);
      set_uniform(n, "t", 7 + m, 0, 1);
      if (ign) {
        float t[12];
        dd_tensor_get_data(blob(n, "t"), t);
        t[1] = t[6] = t[11] = -1;
        set_values(n, "t", t);
      }
      grad_check(n, GC, what);
      dd_net_destroy(n);
    }
}

/* ---- MultinomialLogisticLoss ------------------------------------------------------------------ */

static void test_multinomial(void) {
  const float p[12] = {0.1f, 0.2f, 0.3f, 0.4f, 0.25f, 0.25f, 0.5f, 0, 0.7f, 0.1f, 0.1f, 0.1f}, lab[3] = {2, 3, 0};
  dd_net *n = make_net(FB INPUT("p", "dim: 3 dim: 4") INPUT("label", "dim: 3 dim: 1 dim: 1 dim: 1")
                       "layer { name: \"l\" type: \"MultinomialLogisticLoss\" bottom: \"p\" bottom: \"label\" "
                       "top: \"loss\" }", CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  set_values(n, "p", p);
  set_values(n, "label", lab);
  double floor = (double)1e-20f; /* Caffe's kLOG_THRESHOLD, as a float */
  NEAR(forward_loss(n), (-log((double)0.3f) - log(floor) - log((double)0.7f)) / 3, 1e-6, "a zero probability is floored");
  dd_net_backward(n);
  double dx[12] = {0};
  dx[2] = -1.0 / (3 * (double)0.3f), dx[7] = -1.0 / (3 * floor), dx[8] = -1.0 / (3 * (double)0.7f);
  check_diff(n, "p", dx, "multinomial logistic");
  dd_net_destroy(n);
  /* gradients, on probabilities away from the floor; spatial inputs are flattened per item */
  n = make_net(FB INPUT("p", "dim: 4 dim: 3 dim: 2") INPUT("label", "dim: 4")
               "layer { name: \"l\" type: \"MultinomialLogisticLoss\" bottom: \"p\" bottom: \"label\" top: \"loss\" "
               "loss_weight: 2 }", CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  set_uniform(n, "p", 3, 0.2f, 1);
  set_labels(n, "label", 6, 4, 0, 0);
  grad_check(n, GC, "multinomial logistic, loss_weight 2");
  dd_net_destroy(n);
}

/* ---- HingeLoss -------------------------------------------------------------------------------- */

static void test_hinge(void) {
  const float x[6] = {0.5f, -2, 0.2f, 1.5f, 0.3f, -0.9f}, lab[2] = {0, 2};
  for (int l2 = 0; l2 < 2; l2++) {
    char text[1024];
    snprintf(text, sizeof text,
             FB INPUT("x", "dim: 2 dim: 3") INPUT("label", "dim: 2")
             "layer { name: \"l\" type: \"HingeLoss\" bottom: \"x\" bottom: \"label\" top: \"loss\" loss_weight: 1.5 %s }",
             l2 ? "hinge_loss_param { norm: L2 }" : "");
    dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
    REQUIRE(n);
    set_values(n, "x", x);
    set_values(n, "label", lab);
    /* by hand: t = max(0, 1 - x) at the label, max(0, 1 + x) elsewhere */
    const double t[6] = {0.5, 0, 1.2, 2.5, 1.3, 1.9}, s[6] = {-1, 1, 1, 1, 1, -1};
    double sum = 0, dx[6];
    for (int i = 0; i < 6; i++) {
      sum += l2 ? t[i] * t[i] : t[i];
      dx[i] = 1.5 * s[i] * (l2 ? 2 * t[i] : (t[i] > 0)) / 2;
    }
    NEAR(forward_loss(n), sum / 2, 1e-6, l2 ? "hinge L2" : "hinge L1");
    dd_net_backward(n);
    check_diff(n, "x", dx, l2 ? "hinge L2" : "hinge L1");
    dd_net_destroy(n);
    snprintf(text, sizeof text,
             FB INPUT("x", "dim: 4 dim: 5") INPUT("label", "dim: 4")
             "layer { name: \"l\" type: \"HingeLoss\" bottom: \"x\" bottom: \"label\" top: \"loss\" %s }",
             l2 ? "hinge_loss_param { norm: L2 }" : "");
    n = make_net(text, CAFFE__PHASE__TRAIN);
    REQUIRE(n);
    set_uniform(n, "x", 6 + l2, -2, 2);
    set_labels(n, "label", 5, 8, 0, 0);
    grad_check(n, l2 ? GC : GC_KINK, l2 ? "hinge L2" : "hinge L1"); /* L2 is smooth */
    dd_net_destroy(n);
  }
}

/* ---- InfogainLoss ----------------------------------------------------------------------------- */

static const float ig_h[9] = {1, 0.2f, 0, 0.1f, 0.8f, 0.3f, 0, 0.5f, 1.5f};

/* The infogain loss sum of x (outer, 3, inner) by hand (softmax over the 3 classes) and its
 * gradient w (p sum_k H[y, k] - H[y, :]) / norm into dx; labels -1 are ignored. */
static double ig_ref(const float *x, const float *lab, int outer, int inner, double w_over_norm, double *dx) {
  double sum = 0;
  for (int o = 0; o < outer; o++)
    for (int i = 0; i < inner; i++) {
      double z = 0, p[3];
      for (int c = 0; c < 3; c++) z += exp(x[(o * 3 + c) * inner + i]);
      for (int c = 0; c < 3; c++) p[c] = exp(x[(o * 3 + c) * inner + i]) / z;
      int y = (int)lab[o * inner + i];
      for (int c = 0; c < 3; c++) {
        double g = 0;
        if (y >= 0) {
          double rs = ig_h[y * 3] + ig_h[y * 3 + 1] + ig_h[y * 3 + 2];
          sum -= ig_h[y * 3 + c] * log(p[c]);
          g = w_over_norm * (p[c] * rs - ig_h[y * 3 + c]);
        }
        if (dx) dx[(o * 3 + c) * inner + i] = g;
      }
    }
  return sum;
}

static void test_infogain_values(void) {
  float x[12];
  for (int i = 0; i < 12; i++) x[i] = (float)sin(0.9 * i + 0.3) * 2;
  const float lab_ign[4] = {0, 2, 1, -1}, lab_all[4] = {0, 2, 1, 1};
  static const struct {
    const char *param;
    int ignore;
    double norm;
  } cases[] = {
      {"", 1, 3}, /* VALID, the proto's default */
      {"normalization: VALID", 1, 3}, {"normalization: FULL", 1, 4}, {"normalization: BATCH_SIZE", 1, 2},
      {"normalization: NONE", 1, 1},  {"", 0, 4},                    {"normalization: BATCH_SIZE", 0, 2},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    char text[1024];
    snprintf(text, sizeof text,
             FB INPUT("x", "dim: 2 dim: 3 dim: 2") INPUT("label", "dim: 2 dim: 2") INPUT("H", "dim: 3 dim: 3")
             "layer { name: \"l\" type: \"InfogainLoss\" bottom: \"x\" bottom: \"label\" bottom: \"H\" top: \"loss\" "
             "top: \"prob\" loss_weight: 2 loss_weight: 0 loss_param { %s %s } }",
             cases[k].param, cases[k].ignore ? "ignore_label: -1" : "");
    dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
    CHECKF(n != NULL, "case %zu", k);
    if (!n) continue;
    const float *lab = cases[k].ignore ? lab_ign : lab_all;
    set_values(n, "x", x);
    set_values(n, "label", lab);
    set_values(n, "H", ig_h);
    double dx[12];
    double want = ig_ref(x, lab, 2, 2, 2.0 / cases[k].norm, dx) / cases[k].norm;
    char what[128];
    snprintf(what, sizeof what, "infogain {%s%s}", cases[k].param, cases[k].ignore ? " ignore_label" : "");
    NEAR(forward_loss(n), want, 1e-6, what);
    float pr[12];
    dd_tensor_get_data(blob(n, "prob"), pr);
    for (int o = 0; o < 2; o++)
      for (int i = 0; i < 2; i++) {
        double z = 0;
        for (int c = 0; c < 3; c++) z += exp(x[(o * 3 + c) * 2 + i]);
        for (int c = 0; c < 3; c++)
          NEAR(pr[(o * 3 + c) * 2 + i], exp(x[(o * 3 + c) * 2 + i]) / z, 1e-6, "the second top is the softmax");
      }
    dd_net_backward(n);
    check_diff(n, "x", dx, what);
    dd_net_destroy(n);
  }
  /* axis 2 (as -1): 3 classes on the last axis, outer 4, inner 1 */
  dd_net *n = make_net(INPUT("x", "dim: 2 dim: 2 dim: 3") INPUT("label", "dim: 2 dim: 2") INPUT("H", "dim: 9")
                       "layer { name: \"l\" type: \"InfogainLoss\" bottom: \"x\" bottom: \"label\" bottom: \"H\" "
                       "top: \"loss\" infogain_loss_param { axis: -1 } }", CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  set_values(n, "x", x);
  set_values(n, "label", lab_all);
  set_values(n, "H", ig_h);
  NEAR(forward_loss(n), ig_ref(x, lab_all, 4, 1, 0, NULL) / 4, 1e-6, "infogain axis -1");
  dd_net_destroy(n);
}

/* Writes H into the scratch folder as NAME: legacy 1x1x3x3 float data, or a 3x3 shape with
 * double_data. */
static const char *write_h(const char *name, int as_double, int count) {
  static char path[512];
  snprintf(path, sizeof path, "%s/%s", scratch, name);
  Caffe__BlobProto b = CAFFE__BLOB_PROTO__INIT;
  Caffe__BlobShape sh = CAFFE__BLOB_SHAPE__INIT;
  int64_t dims[2] = {count == 9 ? 3 : 2, count == 9 ? 3 : 2};
  double dv[9];
  for (int i = 0; i < 9; i++) dv[i] = ig_h[i];
  if (as_double) {
    sh.n_dim = 2;
    sh.dim = dims;
    b.shape = &sh;
    b.n_double_data = (size_t)count;
    b.double_data = dv;
  } else {
    b.has_num = b.has_channels = b.has_height = b.has_width = 1;
    b.num = b.channels = 1;
    b.height = b.width = count == 9 ? 3 : 2;
    b.n_data = (size_t)count;
    b.data = (float *)ig_h;
  }
  char err[512];
  if (dd_binaryproto_write(&b, path, err, sizeof err)) fprintf(stderr, "%s\n", err);
  return path;
}

static void test_infogain_source(void) {
  float x[12];
  for (int i = 0; i < 12; i++) x[i] = (float)cos(0.7 * i) * 1.5f;
  const float lab[4] = {2, 0, 1, 2};
  for (int dbl = 0; dbl < 2; dbl++) {
    char text[2048];
    snprintf(text, sizeof text,
             INPUT("x", "dim: 2 dim: 3 dim: 2") INPUT("label", "dim: 2 dim: 2")
             "layer { name: \"l\" type: \"InfogainLoss\" bottom: \"x\" bottom: \"label\" top: \"loss\" "
             "infogain_loss_param { source: \"%s\" } }", write_h(dbl ? "h_double.binaryproto" : "h.binaryproto", dbl, 9));
    dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
    CHECKF(n != NULL, "infogain from a %s .binaryproto", dbl ? "double_data" : "legacy 4-D");
    if (!n) continue;
    set_values(n, "x", x);
    set_values(n, "label", lab);
    NEAR(forward_loss(n), ig_ref(x, lab, 2, 2, 0, NULL) / 4, 1e-6, "H from infogain_loss_param.source");
    dd_net_destroy(n);
  }
}

static void test_infogain_grad(void) {
  static const char *const forms[] = {"", "loss_param { ignore_label: 1 }", "loss_param { normalization: NONE }",
                                      "infogain_loss_param { axis: -1 }"};
  for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++) {
    char text[1024];
    snprintf(text, sizeof text,
             FB INPUT("x", "dim: 2 dim: 3 dim: 3") INPUT("label", "dim: 2 dim: 3") INPUT("H", "dim: 3 dim: 3")
             "layer { name: \"l\" type: \"InfogainLoss\" bottom: \"x\" bottom: \"label\" bottom: \"H\" top: \"loss\" "
             "%s }", forms[f]);
    dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
    CHECKF(n != NULL, "infogain {%s}", forms[f]);
    if (!n) continue;
    set_uniform(n, "x", 2 + f, -2, 2);
    set_labels(n, "label", 3, 3 + f, 0, 0);
    set_uniform(n, "H", 4 + f, 0, 1.5f);
    char what[128];
    snprintf(what, sizeof what, "infogain {%s}", forms[f]);
    grad_check(n, GC, what);
    dd_net_destroy(n);
  }
  char text[1024];
  snprintf(text, sizeof text,
           FB INPUT("x", "dim: 3 dim: 3") INPUT("label", "dim: 3")
           "layer { name: \"l\" type: \"InfogainLoss\" bottom: \"x\" bottom: \"label\" top: \"loss\" loss_weight: 3 "
           "infogain_loss_param { source: \"%s\" } }", write_h("h_grad.binaryproto", 0, 9));
  dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  set_uniform(n, "x", 9, -2, 2);
  set_labels(n, "label", 3, 10, 0, 0);
  grad_check(n, GC, "infogain, H from source, loss_weight 3");
  dd_net_destroy(n);
}

/* ---- ContrastiveLoss -------------------------------------------------------------------------- */

static void test_contrastive_values(void) {
  const float a[6] = {0, 0, 1, 1, 0.2f, 0.1f}, b[6] = {0.3f, 0.4f, 1.2f, 1.1f, 2, 2}, sim[3] = {1, 0, 0};
  for (int legacy = 0; legacy < 2; legacy++) {
    char text[1024];
    snprintf(text, sizeof text,
             FB INPUT("a", "dim: 3 dim: 2") INPUT("b", "dim: 3 dim: 2 dim: 1 dim: 1") INPUT("sim", "dim: 3")
             "layer { name: \"l\" type: \"ContrastiveLoss\" bottom: \"a\" bottom: \"b\" bottom: \"sim\" top: \"loss\" "
             "loss_weight: 2 %s }", legacy ? "contrastive_loss_param { legacy_version: true }" : "");
    dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
    REQUIRE(n);
    set_values(n, "a", a);
    set_values(n, "b", b);
    set_values(n, "sim", sim);
    /* by hand, margin 1: pair 0 similar (d^2 0.25); pair 1 dissimilar inside the margin (d^2
     * 0.05); pair 2 dissimilar beyond it (d^2 6.85) */
    double d1 = sqrt(0.05), want = legacy ? 0.25 + 0.95 : 0.25 + (1 - d1) * (1 - d1);
    NEAR(forward_loss(n), want / 6, 1e-6, legacy ? "contrastive, legacy" : "contrastive");
    dd_net_backward(n);
    double da[6], db[6], w = 2.0 / 3;
    double beta1 = legacy ? -w : -w * (1 - d1) / (d1 + 1e-4);
    for (int c = 0; c < 2; c++) {
      da[c] = w * ((double)a[c] - b[c]);
      da[2 + c] = beta1 * ((double)a[2 + c] - b[2 + c]);
      da[4 + c] = 0;
    }
    for (int i = 0; i < 6; i++) db[i] = -da[i];
    check_diff(n, "a", da, legacy ? "contrastive, legacy" : "contrastive");
    check_diff(n, "b", db, legacy ? "contrastive, legacy" : "contrastive");
    dd_net_destroy(n);
  }
}

static void test_contrastive_grad(void) {
  const float sim[5] = {1, 0, 0, 1, 0};
  for (int legacy = 0; legacy < 2; legacy++) {
    char text[1024];
    snprintf(text, sizeof text,
             FB INPUT("a", "dim: 5 dim: 3") INPUT("b", "dim: 5 dim: 3") INPUT("sim", "dim: 5 dim: 1 dim: 1 dim: 1")
             "layer { name: \"l\" type: \"ContrastiveLoss\" bottom: \"a\" bottom: \"b\" bottom: \"sim\" top: \"loss\" "
             "contrastive_loss_param { margin: %s legacy_version: %s } }", legacy ? "3" : "2", legacy ? "true" : "false");
    dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
    REQUIRE(n);
    set_uniform(n, "a", 1 + legacy, -1, 1);
    set_uniform(n, "b", 3 + legacy, -1, 1);
    set_values(n, "sim", sim);
    grad_check(n, GC, legacy ? "contrastive, legacy" : "contrastive");
    dd_net_destroy(n);
  }
}

/* ---- errors ----------------------------------------------------------------------------------- */

static void expect_build_error(const char *text, const char *const *needles, int k) {
  char err[2048] = "";
  int r = net_error(text, CAFFE__PHASE__TRAIN, err, sizeof err);
  CHECKF(r != 0, "the net built: %s", text);
  for (int i = 0; i < k; i++) CHECK_CONTAINS(err, needles[i]);
}

#define BUILD_ERROR(text, ...)                                     \
  do {                                                             \
    const char *const n_[] = {__VA_ARGS__};                        \
    expect_build_error((text), n_, (int)(sizeof n_ / sizeof n_[0])); \
  } while (0)

static void test_shape_errors(void) {
  BUILD_ERROR(INPUT("a", "dim: 2 dim: 3") INPUT("b", "dim: 3 dim: 2")
              "layer { name: \"l\" type: \"EuclideanLoss\" bottom: \"a\" bottom: \"b\" top: \"loss\" }",
              "l: ", "same first dimension");
  BUILD_ERROR(INPUT("a", "dim: 2 dim: 3") INPUT("b", "dim: 2 dim: 4")
              "layer { name: \"l\" type: \"EuclideanLoss\" bottom: \"a\" bottom: \"b\" top: \"loss\" }",
              "same dimension per item");
  BUILD_ERROR(INPUT("x", "dim: 2 dim: 3") INPUT("t", "dim: 2 dim: 2")
              "layer { name: \"l\" type: \"SigmoidCrossEntropyLoss\" bottom: \"x\" bottom: \"t\" top: \"loss\" }",
              "same count");
  BUILD_ERROR(INPUT("p", "dim: 2 dim: 3") INPUT("label", "dim: 2 dim: 2")
              "layer { name: \"l\" type: \"MultinomialLogisticLoss\" bottom: \"p\" bottom: \"label\" top: \"loss\" }",
              "one label per item");
  BUILD_ERROR(INPUT("x", "dim: 2 dim: 3") INPUT("label", "dim: 2 dim: 3")
              "layer { name: \"l\" type: \"HingeLoss\" bottom: \"x\" bottom: \"label\" top: \"loss\" }",
              "one label per item");
  BUILD_ERROR(INPUT("x", "dim: 2 dim: 3") INPUT("label", "dim: 2") INPUT("H", "dim: 2 dim: 2")
              "layer { name: \"l\" type: \"InfogainLoss\" bottom: \"x\" bottom: \"label\" bottom: \"H\" top: \"loss\" }",
              "infogain matrix H", "must be 3 x 3");
  BUILD_ERROR(INPUT("x", "dim: 2 dim: 3") INPUT("label", "dim: 2")
              "layer { name: \"l\" type: \"InfogainLoss\" bottom: \"x\" bottom: \"label\" top: \"loss\" }",
              "infogain_loss_param.source", "third bottom");
  BUILD_ERROR(INPUT("x", "dim: 2 dim: 3") INPUT("label", "dim: 2") INPUT("H", "dim: 3 dim: 3")
              "layer { name: \"l\" type: \"InfogainLoss\" bottom: \"x\" bottom: \"label\" bottom: \"H\" top: \"loss\" "
              "loss_param { normalize: true } }",
              "loss_param.normalize", "loss_param.normalization");
  BUILD_ERROR(INPUT("x", "dim: 2 dim: 3") INPUT("label", "dim: 2") INPUT("H", "dim: 3 dim: 3")
              "layer { name: \"l\" type: \"InfogainLoss\" bottom: \"x\" bottom: \"label\" bottom: \"H\" top: \"loss\" "
              "infogain_loss_param { axis: 2 } }",
              "infogain_loss_param.axis 2");
  BUILD_ERROR(INPUT("x", "dim: 2 dim: 3 dim: 2") INPUT("label", "dim: 2 dim: 3") INPUT("H", "dim: 3 dim: 3")
              "layer { name: \"l\" type: \"InfogainLoss\" bottom: \"x\" bottom: \"label\" bottom: \"H\" top: \"loss\" }",
              "the label blob has 6 entries");
  BUILD_ERROR(INPUT("a", "dim: 2 dim: 3") INPUT("b", "dim: 2 dim: 4") INPUT("sim", "dim: 2")
              "layer { name: \"l\" type: \"ContrastiveLoss\" bottom: \"a\" bottom: \"b\" bottom: \"sim\" top: \"loss\" }",
              "same number of channels");
  BUILD_ERROR(INPUT("a", "dim: 2 dim: 3 dim: 2") INPUT("b", "dim: 2 dim: 3 dim: 2") INPUT("sim", "dim: 2")
              "layer { name: \"l\" type: \"ContrastiveLoss\" bottom: \"a\" bottom: \"b\" bottom: \"sim\" top: \"loss\" }",
              "bottom 0 is 2x3x2", "(N, C, 1, 1)");
  BUILD_ERROR(INPUT("a", "dim: 2 dim: 3") INPUT("b", "dim: 2 dim: 3") INPUT("sim", "dim: 2 dim: 2")
              "layer { name: \"l\" type: \"ContrastiveLoss\" bottom: \"a\" bottom: \"b\" bottom: \"sim\" top: \"loss\" }",
              "similarity bottom", "one value per pair");
  BUILD_ERROR(INPUT("a", "dim: 2 dim: 3") INPUT("b", "dim: 2 dim: 3")
              "layer { name: \"l\" type: \"ContrastiveLoss\" bottom: \"a\" bottom: \"b\" top: \"loss\" }",
              "ContrastiveLoss takes 3 bottom");
}

static void test_source_errors(void) {
  char text[2048], missing[512];
  snprintf(missing, sizeof missing, "%s/no_such_H.binaryproto", scratch);
  snprintf(text, sizeof text,
           INPUT("x", "dim: 2 dim: 3") INPUT("label", "dim: 2")
           "layer { name: \"l\" type: \"InfogainLoss\" bottom: \"x\" bottom: \"label\" top: \"loss\" "
           "infogain_loss_param { source: \"%s\" } }", missing);
  BUILD_ERROR(text, "layer \"l\"", "infogain_loss_param.source", missing);
  const char *small = write_h("h_small.binaryproto", 0, 4);
  snprintf(text, sizeof text,
           INPUT("x", "dim: 2 dim: 3") INPUT("label", "dim: 2")
           "layer { name: \"l\" type: \"InfogainLoss\" bottom: \"x\" bottom: \"label\" top: \"loss\" "
           "infogain_loss_param { source: \"%s\" } }", small);
  BUILD_ERROR(text, "infogain_loss_param.source", "h_small.binaryproto", "holds 4 values", "H must be 3 x 3");
}

/* A label out of range stops the forward with a message naming the layer and the label. */
static void expect_label_error(const char *text, const char *label_name, const float *labels, const char *needle) {
  dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  fill_inputs(n, 3, 0.1f, 0.9f);
  set_values(n, label_name, labels);
  CHECK(dd_net_forward(n, NULL) == DD_EINVAL);
  CHECK_CONTAINS(n->status_msg, "layer \"l\"");
  CHECK_CONTAINS(n->status_msg, needle);
  dd_net_destroy(n);
}

static void test_label_errors(void) {
  const float bad3[2] = {1, 3}, neg[2] = {-1, 0}, frac[2] = {0.5f, 1};
  expect_label_error(INPUT("p", "dim: 2 dim: 3") INPUT("label", "dim: 2")
                     "layer { name: \"l\" type: \"MultinomialLogisticLoss\" bottom: \"p\" bottom: \"label\" top: \"loss\" }",
                     "label", bad3, "label 3");
  expect_label_error(INPUT("x", "dim: 2 dim: 3") INPUT("label", "dim: 2")
                     "layer { name: \"l\" type: \"HingeLoss\" bottom: \"x\" bottom: \"label\" top: \"loss\" }",
                     "label", neg, "label -1");
  expect_label_error(INPUT("x", "dim: 2 dim: 3") INPUT("label", "dim: 2") INPUT("H", "dim: 3 dim: 3")
                     "layer { name: \"l\" type: \"InfogainLoss\" bottom: \"x\" bottom: \"label\" bottom: \"H\" top: \"loss\" }",
                     "label", bad3, "label 3");
  expect_label_error(INPUT("x", "dim: 2 dim: 3") INPUT("label", "dim: 2") INPUT("H", "dim: 3 dim: 3")
                     "layer { name: \"l\" type: \"InfogainLoss\" bottom: \"x\" bottom: \"label\" bottom: \"H\" top: \"loss\" "
                     "loss_param { ignore_label: 5 } }",
                     "label", frac, "label 0.5");
  /* the ignore label itself is no error */
  dd_net *n = make_net(INPUT("x", "dim: 2 dim: 3") INPUT("label", "dim: 2") INPUT("H", "dim: 3 dim: 3")
                       "layer { name: \"l\" type: \"InfogainLoss\" bottom: \"x\" bottom: \"label\" bottom: \"H\" "
                       "top: \"loss\" loss_param { ignore_label: 7 } }", CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  const float ign[2] = {7, 2};
  fill_inputs(n, 3, 0.1f, 0.9f);
  set_values(n, "label", ign);
  CHECK(dd_net_forward(n, NULL) == 0);
  dd_net_destroy(n);
}

/* ---- CUDA against the CPU --------------------------------------------------------------------- */

static const char *const gpu_nets[] = {
    FB INPUT("a", "dim: 64 dim: 37") INPUT("b", "dim: 64 dim: 37")
    "layer { name: \"l\" type: \"EuclideanLoss\" bottom: \"a\" bottom: \"b\" top: \"loss\" }",
    FB INPUT("a", "dim: 64 dim: 37") INPUT("b", "dim: 64 dim: 37")
    "layer { name: \"l\" type: \"SigmoidCrossEntropyLoss\" bottom: \"a\" bottom: \"b\" top: \"loss\" "
    "loss_param { ignore_label: -1 normalization: VALID } }",
    FB INPUT("a", "dim: 64 dim: 37") INPUT("label", "dim: 64")
    "layer { name: \"l\" type: \"MultinomialLogisticLoss\" bottom: \"a\" bottom: \"label\" top: \"loss\" }",
    FB INPUT("a", "dim: 64 dim: 37") INPUT("label", "dim: 64")
    "layer { name: \"l\" type: \"HingeLoss\" bottom: \"a\" bottom: \"label\" top: \"loss\" hinge_loss_param { norm: L2 } }",
    FB INPUT("a", "dim: 64 dim: 37") INPUT("label", "dim: 64")
    "layer { name: \"l\" type: \"HingeLoss\" bottom: \"a\" bottom: \"label\" top: \"loss\" }",
    FB INPUT("a", "dim: 8 dim: 37 dim: 5") INPUT("label", "dim: 8 dim: 5") INPUT("H", "dim: 37 dim: 37")
    "layer { name: \"l\" type: \"InfogainLoss\" bottom: \"a\" bottom: \"label\" bottom: \"H\" top: \"loss\" "
    "loss_param { ignore_label: 2 } }",
    FB INPUT("a", "dim: 64 dim: 37") INPUT("b", "dim: 64 dim: 37") INPUT("label", "dim: 64")
    "layer { name: \"l\" type: \"ContrastiveLoss\" bottom: \"a\" bottom: \"b\" bottom: \"label\" top: \"loss\" "
    "contrastive_loss_param { margin: 4 } }",
    FB INPUT("a", "dim: 64 dim: 37") INPUT("b", "dim: 64 dim: 37") INPUT("label", "dim: 64")
    "layer { name: \"l\" type: \"ContrastiveLoss\" bottom: \"a\" bottom: \"b\" bottom: \"label\" top: \"loss\" "
    "contrastive_loss_param { margin: 20 legacy_version: true } }",
};

/* Inputs for both nets: labels classes in [0, 2) (sim 0/1, valid classes, ignore 2 sometimes),
 * H and the probabilities positive. */
static void gpu_inputs(dd_net *n, uint64_t seed) {
  fill_inputs(n, seed, 0.05f, 1);
  if (dd_net_blob(n, "label")) set_labels(n, "label", 2, seed, 0, 0);
}

static void test_cuda_matches_cpu(void) {
  dd_backend *gpu = NULL;
  char err[600];
  if (!dd_backend_have_cuda() || dd_backend_create(&gpu, "cuda:0", 0, err, sizeof err)) {
    printf("SKIP %s: %s\n", test__name, dd_backend_have_cuda() ? err : "this build has no CUDA backend");
    return;
  }
  for (size_t k = 0; k < sizeof gpu_nets / sizeof gpu_nets[0]; k++) {
    dd_net *c = make_net_on(be, gpu_nets[k], CAFFE__PHASE__TRAIN, 3), *g = make_net_on(gpu, gpu_nets[k], CAFFE__PHASE__TRAIN, 3);
    CHECKF(c && g, "net %zu", k);
    if (c && g) {
      gpu_inputs(c, 40 + k);
      gpu_inputs(g, 40 + k);
      double lc = 0, lg = 0;
      CHECK(dd_net_forward(c, &lc) == 0 && dd_net_forward(g, &lg) == 0);
      NEAR(lg, lc, 1e-5, "the loss on CUDA");
      dd_net_backward(c);
      dd_net_backward(g);
      dd_tensor *tc = dd_net_blob(c, "a"), *tg = dd_net_blob(g, "a");
      float *dc = dd_tensor_diff_copy(tc), *dg = dd_tensor_diff_copy(tg);
      CHECKF(max_rel_diff(dg, dc, tc->count) < 1e-5, "net %zu: the gradient on CUDA differs by %.3g", k,
             max_rel_diff(dg, dc, tc->count));
      free(dc);
      free(dg);
    }
    dd_net_destroy(c);
    dd_net_destroy(g);
  }
  dd_backend_destroy(gpu);
}

int main(void) {
  if (layers_begin()) return 1;
  if (test_scratch_dir(scratch, sizeof scratch, "layers_losses")) return 1;
  RUN(test_euclidean);
  RUN(test_sigmoid_ce_values);
  RUN(test_sigmoid_ce_grad);
  RUN(test_multinomial);
  RUN(test_hinge);
  RUN(test_infogain_values);
  RUN(test_infogain_source);
  RUN(test_infogain_grad);
  RUN(test_contrastive_values);
  RUN(test_contrastive_grad);
  RUN(test_shape_errors);
  RUN(test_source_errors);
  RUN(test_label_errors);
  RUN(test_cuda_matches_cpu);
  test_scratch_remove(scratch);
  return layers_end();
}
