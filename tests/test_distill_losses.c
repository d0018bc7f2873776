/* The distillation loss layers against hand computations in double:
 *
 * 1. KDLoss: the value (also for large logits, where a naive exp overflows), the closed-form
 *    gradient, finite differences of the hand loss and of the layer's own forward; the teacher
 *    bottom gets nothing, also when learnable layers produce it (their parameters get no
 *    gradient while the student's do); and one whole KD step: the student's parameter gradient is
 *    (1 - alpha) * dCE + alpha * dKD by hand.
 * 2. HintLoss (FitNets L2) and AttentionLoss (normalised spatial maps, channel counts differ):
 *    values by hand, gradients by finite differences, the teacher blob untouched; a hint whose
 *    shapes differ (it needs a regressor) and attention maps of different H x W are refused.
 *
 * Each test builds a small net from text on the CPU backend (test_make_net, tests/test_distill.h).
 * The frozen teacher is tests/test_distill_teacher.c; the jobs, tests/test_distill.c and
 * tests/test_distill_cli.c. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>

#include "base/backend.h"
#include "net/net.h"
#include "base/rng.h"
#include "test.h"
#include "test_distill.h"
#include "test_nets.h"

static dd_backend *be;

#define FB "force_backward: true\n"
#define INPUT(top, dims) \
  "layer { name: \"" top "\" type: \"Input\" top: \"" top "\" input_param { shape { " dims " } } }\n"
#define SENTINEL 3.25f

/* ---- small helpers ------------------------------------------------------------------------------ */

static void fill_uniform(dd_tensor *t, uint64_t seed, float lo, float hi) {
  dd_rng r;
  dd_rng_seed(&r, seed);
  float *h = malloc((size_t)t->count * sizeof *h);
  for (int64_t i = 0; i < t->count; i++) h[i] = lo + (hi - lo) * dd_rng_uniform(&r);
  dd_tensor_set_data(t, h);
  free(h);
}

static double *to_double(const float *x, int64_t n) {
  double *d = malloc((size_t)n * sizeof *d);
  for (int64_t i = 0; i < n; i++) d[i] = x[i];
  return d;
}

/* ---- 1. KDLoss ---------------------------------------------------------------------------------- */

static void softmax_t(double *p, const double *x, int n, double T) {
  double m = -INFINITY, z = 0;
  for (int i = 0; i < n; i++) m = fmax(m, x[i] / T);
  for (int i = 0; i < n; i++) z += (p[i] = exp(x[i] / T - m));
  for (int i = 0; i < n; i++) p[i] /= z;
}

/* T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the N rows. */
static double kd_ref(const double *s, const double *t, int N, int C, double T) {
  double total = 0, ps[16], pt[16];
  for (int r = 0; r < N; r++) {
    softmax_t(ps, s + r * C, C, T);
    softmax_t(pt, t + r * C, C, T);
    double kl = 0;
    for (int c = 0; c < C; c++) kl += pt[c] * log(pt[c] / ps[c]);
    total += T * T * kl;
  }
  return total / N;
}

/* Central differences of the net's (weighted) loss with respect to blob `t`, against `ana`.
 * Returns the number of entries off by more than atol + rtol * |ana|. */
static int net_fd(dd_net *n, dd_tensor *t, const float *ana, double h, double rtol, double atol, const char *what) {
  float *x = dd_tensor_data_copy(t);
  int bad = 0;
  double worst = 0;
  for (int64_t k = 0; k < t->count; k++) {
    float v = x[k], vp = (float)(v + h), vm = (float)(v - h);
    double lp, lm;
    be->ops->upload(be, t->data + k, &vp, sizeof vp);
    dd_net_forward(n, &lp);
    be->ops->upload(be, t->data + k, &vm, sizeof vm);
    dd_net_forward(n, &lm);
    be->ops->upload(be, t->data + k, &v, sizeof v);
    double num = (lp - lm) / ((double)vp - vm), e = fabs(num - ana[k]);
    worst = fmax(worst, e);
    if (e > atol + rtol * fabs(ana[k])) {
      if (bad++ < 4)
        fprintf(stderr, "     %s: d/d %s[%lld]: backward %.7g, finite difference %.7g\n", what, t->name,
                (long long)k, ana[k], num);
    }
  }
  dd_net_forward(n, NULL);
  free(x);
  printf("     %-40s %4lld points, worst |error| %.1e\n", what, (long long)t->count, worst);
  return bad;
}

static void test_kd_loss_by_hand(void) {
  enum { N = 3, C = 5 };
  const double T = 3, W = 0.7;
  dd_net *n = test_make_net(be, FB INPUT("s", "dim: 3 dim: 5") INPUT("t", "dim: 3 dim: 5")
                            "layer { name: 'kd' type: 'KDLoss' bottom: 's' bottom: 't' top: 'kd' loss_weight: 0.7"
                            " distill_loss_param { temperature: 3 } }",
                            CAFFE__PHASE__TRAIN, 1);
  REQUIRE(n);
  dd_tensor *s = dd_net_blob(n, "s"), *t = dd_net_blob(n, "t"), *kd = dd_net_blob(n, "kd");
  REQUIRE(s && t && kd);
  for (int round = 0; round < 2; round++) {
    /* round 1: large logits (a naive exp overflows) */
    float span = round ? 60.0f : 4.0f;
    fill_uniform(s, 11 + round, -span, span);
    fill_uniform(t, 21 + round, -span, span);
    double loss;
    REQUIRE(dd_net_forward(n, &loss) == 0);
    float *sf = dd_tensor_data_copy(s), *tf = dd_tensor_data_copy(t), top;
    dd_tensor_get_data(kd, &top);
    double *sd = to_double(sf, N * C), *td = to_double(tf, N * C);
    double want = kd_ref(sd, td, N, C, T);
    CHECKF(want > 0.01 && fabs(top - want) <= 1e-6 * fmax(1, want), "round %d: KDLoss %.9g, by hand %.9g", round, top, want);
    CHECKF(fabs(loss - W * want) <= 1e-6 * fmax(1, want), "round %d: net loss %.9g, want 0.7 * %.9g", round, loss, want);
    /* backward: the closed form W * T * (softmax(s/T) - softmax(t/T)) / N; the teacher keeps its sentinel */
    be->ops->fill(be, t->diff, SENTINEL, t->count);
    dd_net_backward(n);
    float *ds = dd_tensor_diff_copy(s), *dt = dd_tensor_diff_copy(t);
    double ps[C], pt[C], g[N * C];
    int off = 0, touched = 0;
    for (int r = 0; r < N; r++) {
      softmax_t(ps, sd + r * C, C, T);
      softmax_t(pt, td + r * C, C, T);
      for (int c = 0; c < C; c++) {
        g[r * C + c] = W * T * (ps[c] - pt[c]) / N;
        off += fabs(ds[r * C + c] - g[r * C + c]) > 1e-7 + 1e-5 * fabs(g[r * C + c]);
        touched += dt[r * C + c] != SENTINEL;
      }
    }
    CHECKF(off == 0, "round %d: %d student gradient entries differ from the closed form (ds[0] %.9g, want %.9g)", round, off,
           ds[0], g[0]);
    CHECKF(touched == 0, "round %d: the teacher bottom got a gradient in %d entries", round, touched);
    /* the closed form is the derivative of the hand computation (finite differences in double) */
    int fd_off = 0;
    for (int k = 0; k < N * C; k++) {
      double v = sd[k], h = 1e-5 * fmax(1, fabs(v));
      sd[k] = v + h;
      double lp = W * kd_ref(sd, td, N, C, T);
      sd[k] = v - h;
      double lm = W * kd_ref(sd, td, N, C, T);
      sd[k] = v;
      fd_off += fabs((lp - lm) / (2 * h) - g[k]) > 1e-7 + 1e-5 * fabs(g[k]);
    }
    CHECKF(fd_off == 0, "round %d: %d closed-form entries differ from finite differences of the hand loss", round, fd_off);
    /* and the layer's backward matches finite differences of its own forward */
    if (round == 0) CHECK(net_fd(n, s, ds, 1e-2, 1e-2, 2e-5, "KDLoss T=3 weight 0.7") == 0);
    free(sf);
    free(tf);
    free(sd);
    free(td);
    free(ds);
    free(dt);
  }
  dd_net_destroy(n);
}

/* In a combined net the teacher's logits come from learnable layers: KDLoss still sends them
 * nothing, so the teacher's parameters get no gradient while the student's do. */
static void test_kd_teacher_side_frozen(void) {
  dd_net *n = test_make_net(be, INPUT("x", "dim: 3 dim: 4")
                            "layer { name: 'sfc' type: 'InnerProduct' bottom: 'x' top: 's' inner_product_param { num_output: 5"
                            " weight_filler { type: 'gaussian' std: 1 } } }\n"
                            "layer { name: 'tfc' type: 'InnerProduct' bottom: 'x' top: 't' inner_product_param { num_output: 5"
                            " weight_filler { type: 'gaussian' std: 1 } } }\n"
                            "layer { name: 'kd' type: 'KDLoss' bottom: 's' bottom: 't' top: 'kd' distill_loss_param { temperature: 2 } }",
                            CAFFE__PHASE__TRAIN, 3);
  REQUIRE(n);
  fill_uniform(dd_net_blob(n, "x"), 61, -1, 1);
  int si = dd_net_layer_index(n, "sfc"), ti = dd_net_layer_index(n, "tfc");
  REQUIRE(si >= 0 && ti >= 0);
  for (int it = 0; it < 2; it++) {
    dd_net_clear_param_diffs(n);
    double loss;
    REQUIRE(dd_net_forward(n, &loss) == 0);
    dd_net_backward(n);
    CHECK(loss > 0);
    for (int q = 0; q < 2; q++) {
      float *ds = dd_tensor_diff_copy(n->layers[si].params[q]), *dt = dd_tensor_diff_copy(n->layers[ti].params[q]);
      double as = 0, at = 0;
      for (int64_t k = 0; k < n->layers[ti].params[q]->count; k++) {
        as += fabs(ds[k]);
        at += fabs(dt[k]);
      }
      CHECKF(as > 0 && at == 0, "param %d: student |grad| %g, teacher |grad| %g", q, as, at);
      free(ds);
      free(dt);
    }
  }
  dd_net_destroy(n);
}

/* One forward/backward of a student Input -> InnerProduct -> SoftmaxWithLoss (1 - alpha) + KDLoss
 * (alpha): the InnerProduct's gradient is (1 - alpha) * dCE + alpha * dKD, by hand. */
static void test_kd_training_step(void) {
  enum { N = 4, D = 6, K = 3 };
  const double alpha = 0.75, T = 2.5;
  dd_net *n = test_make_net(be, INPUT("data", "dim: 4 dim: 6") INPUT("label", "dim: 4") INPUT("tl", "dim: 4 dim: 3")
                            "layer { name: 'fc' type: 'InnerProduct' bottom: 'data' top: 'fc' inner_product_param { num_output: 3"
                            " weight_filler { type: 'gaussian' std: 0.7 } bias_filler { type: 'uniform' min: -0.5 max: 0.5 } } }\n"
                            "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc' bottom: 'label' top: 'loss' loss_weight: 0.25 }\n"
                            "layer { name: 'kd' type: 'KDLoss' bottom: 'fc' bottom: 'tl' top: 'kd' loss_weight: 0.75"
                            " distill_loss_param { temperature: 2.5 } }",
                            CAFFE__PHASE__TRAIN, 5);
  REQUIRE(n);
  fill_uniform(dd_net_blob(n, "data"), 31, -1.5f, 1.5f);
  fill_uniform(dd_net_blob(n, "tl"), 32, -3, 3);
  const float labels[N] = {0, 2, 1, 2};
  dd_tensor_set_data(dd_net_blob(n, "label"), labels);
  int fi = dd_net_layer_index(n, "fc");
  REQUIRE(fi >= 0 && n->layers[fi].n_params == 2);
  dd_net_clear_param_diffs(n);
  double loss;
  REQUIRE(dd_net_forward(n, &loss) == 0);
  dd_net_backward(n);
  float *x = dd_tensor_data_copy(dd_net_blob(n, "data")), *tl = dd_tensor_data_copy(dd_net_blob(n, "tl"));
  float *w = dd_tensor_data_copy(n->layers[fi].params[0]), *b = dd_tensor_data_copy(n->layers[fi].params[1]);
  float *dw = dd_tensor_diff_copy(n->layers[fi].params[0]), *db = dd_tensor_diff_copy(n->layers[fi].params[1]);
  /* by hand, in double */
  double z[N][K], dz[N][K], ce = 0, kd = 0;
  for (int i = 0; i < N; i++) {
    for (int k = 0; k < K; k++) {
      z[i][k] = b[k];
      for (int j = 0; j < D; j++) z[i][k] += (double)w[k * D + j] * x[i * D + j];
    }
    double p[K], ps[K], pt[K], tr[K];
    for (int k = 0; k < K; k++) tr[k] = tl[i * K + k];
    softmax_t(p, z[i], K, 1);
    softmax_t(ps, z[i], K, T);
    softmax_t(pt, tr, K, T);
    ce -= log(p[(int)labels[i]]) / N;
    for (int k = 0; k < K; k++) {
      kd += T * T * pt[k] * log(pt[k] / ps[k]) / N;
      double dce = (p[k] - (k == (int)labels[i])) / N, dkd = T * (ps[k] - pt[k]) / N;
      dz[i][k] = (1 - alpha) * dce + alpha * dkd;
    }
  }
  CHECKF(fabs(loss - ((1 - alpha) * ce + alpha * kd)) < 1e-5, "loss %.8g, by hand %.8g", loss, (1 - alpha) * ce + alpha * kd);
  int off = 0;
  double worst = 0;
  for (int k = 0; k < K; k++) {
    double gb = 0;
    for (int i = 0; i < N; i++) gb += dz[i][k];
    worst = fmax(worst, fabs(db[k] - gb));
    off += fabs(db[k] - gb) > 1e-6 + 1e-5 * fabs(gb);
    for (int j = 0; j < D; j++) {
      double gw = 0;
      for (int i = 0; i < N; i++) gw += dz[i][k] * x[i * D + j];
      worst = fmax(worst, fabs(dw[k * D + j] - gw));
      off += fabs(dw[k * D + j] - gw) > 1e-6 + 1e-5 * fabs(gw);
    }
  }
  CHECKF(off == 0, "%d of %d parameter gradient entries differ from (1 - alpha) dCE + alpha dKD (worst %.3g)", off, K * D + K,
         worst);
  free(x);
  free(tl);
  free(w);
  free(b);
  free(dw);
  free(db);
  dd_net_destroy(n);
}

/* ---- 2. HintLoss and AttentionLoss -------------------------------------------------------------- */

static void test_hint_loss_by_hand(void) {
  enum { N = 2, CNT = 2 * 3 * 2 * 2 };
  dd_net *n = test_make_net(be, FB INPUT("s", "dim: 2 dim: 3 dim: 2 dim: 2") INPUT("t", "dim: 2 dim: 3 dim: 2 dim: 2")
                            "layer { name: 'h' type: 'HintLoss' bottom: 's' bottom: 't' top: 'h' loss_weight: 0.5 }",
                            CAFFE__PHASE__TRAIN, 1);
  REQUIRE(n);
  dd_tensor *s = dd_net_blob(n, "s"), *t = dd_net_blob(n, "t");
  fill_uniform(s, 41, -2, 2);
  fill_uniform(t, 42, -2, 2);
  double loss;
  REQUIRE(dd_net_forward(n, &loss) == 0);
  float *sf = dd_tensor_data_copy(s), *tf = dd_tensor_data_copy(t), top;
  dd_tensor_get_data(dd_net_blob(n, "h"), &top);
  double want = 0;
  for (int k = 0; k < CNT; k++) want += ((double)sf[k] - tf[k]) * ((double)sf[k] - tf[k]);
  want /= 2.0 * N;
  CHECKF(fabs(top - want) <= 1e-6 * fmax(1, want), "HintLoss %.9g, by hand 1/(2N) sum (s-t)^2 = %.9g", top, want);
  CHECKF(fabs(loss - 0.5 * want) <= 1e-6 * fmax(1, want), "net loss %.9g", loss);
  be->ops->fill(be, t->diff, SENTINEL, t->count);
  dd_net_backward(n);
  float *ds = dd_tensor_diff_copy(s), *dt = dd_tensor_diff_copy(t);
  int off = 0, touched = 0;
  for (int k = 0; k < CNT; k++) {
    double g = 0.5 * ((double)sf[k] - tf[k]) / N;
    off += fabs(ds[k] - g) > 1e-6 * (1 + fabs(g));
    touched += dt[k] != SENTINEL;
  }
  CHECKF(off == 0, "%d gradient entries differ from weight * (s - t) / N", off);
  CHECKF(touched == 0, "the teacher blob got a gradient in %d entries", touched);
  CHECK(net_fd(n, s, ds, 1e-2, 1e-2, 2e-5, "HintLoss weight 0.5") == 0);
  free(sf);
  free(tf);
  free(ds);
  free(dt);
  dd_net_destroy(n);
  /* a FitNets hint needs the regressor: shapes that differ are refused, naming it */
  Caffe__NetParameter *p = test_parse_net(INPUT("s", "dim: 2 dim: 3 dim: 2 dim: 2") INPUT("t", "dim: 2 dim: 4 dim: 2 dim: 2")
                                          "layer { name: 'h' type: 'HintLoss' bottom: 's' bottom: 't' top: 'h' }");
  REQUIRE(p);
  char err[1024] = "";
  dd_net *bad = NULL;
  CHECK(dd_net_create(&bad, p, CAFFE__PHASE__TRAIN, be, 1, NULL, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "regressor");
  dd_net_destroy(bad);
  caffe__net_parameter__free_unpacked(p, NULL);
}

typedef struct {
  int n, cs, ct, hw;
  const double *t;
} att_ctx;

/* 1/N sum over images of ||q_s - q_t||^2, q = Q / ||Q||, Q[j] = sum_c x[c][j]^2. */
static double att_ref(const double *s, const att_ctx *a) {
  double total = 0;
  double *qs = malloc((size_t)a->hw * sizeof *qs), *qt = malloc((size_t)a->hw * sizeof *qt);
  for (int i = 0; i < a->n; i++) {
    double ns = 0, nt = 0;
    for (int j = 0; j < a->hw; j++) {
      qs[j] = qt[j] = 0;
      for (int c = 0; c < a->cs; c++) qs[j] += s[(i * a->cs + c) * a->hw + j] * s[(i * a->cs + c) * a->hw + j];
      for (int c = 0; c < a->ct; c++) qt[j] += a->t[(i * a->ct + c) * a->hw + j] * a->t[(i * a->ct + c) * a->hw + j];
      ns += qs[j] * qs[j];
      nt += qt[j] * qt[j];
    }
    for (int j = 0; j < a->hw; j++) {
      double d = qs[j] / sqrt(ns) - qt[j] / sqrt(nt);
      total += d * d;
    }
  }
  free(qs);
  free(qt);
  return total / a->n;
}

static void test_attention_loss_by_hand(void) {
  enum { N = 2, CS = 3, CT = 5, HW = 12 };
  const double W = 1.5;
  dd_net *n = test_make_net(be, FB INPUT("s", "dim: 2 dim: 3 dim: 3 dim: 4") INPUT("t", "dim: 2 dim: 5 dim: 3 dim: 4")
                            "layer { name: 'at' type: 'AttentionLoss' bottom: 's' bottom: 't' top: 'at' loss_weight: 1.5 }",
                            CAFFE__PHASE__TRAIN, 1);
  REQUIRE(n);
  dd_tensor *s = dd_net_blob(n, "s"), *t = dd_net_blob(n, "t");
  fill_uniform(s, 51, -1, 1);
  fill_uniform(t, 52, -1, 1);
  double loss;
  REQUIRE(dd_net_forward(n, &loss) == 0);
  float *sf = dd_tensor_data_copy(s), *tf = dd_tensor_data_copy(t), top;
  dd_tensor_get_data(dd_net_blob(n, "at"), &top);
  double *sd = to_double(sf, N * CS * HW), *td = to_double(tf, N * CT * HW);
  att_ctx a = {N, CS, CT, HW, td};
  double want = att_ref(sd, &a);
  CHECKF(want > 1e-3 && fabs(top - want) <= 1e-5 * want, "AttentionLoss %.9g, by hand %.9g", top, want);
  CHECKF(fabs(loss - W * want) <= 1e-5 * W * want, "net loss %.9g", loss);
  be->ops->fill(be, t->diff, SENTINEL, t->count);
  dd_net_backward(n);
  float *ds = dd_tensor_diff_copy(s), *dt = dd_tensor_diff_copy(t);
  int touched = 0;
  for (int k = 0; k < N * CT * HW; k++) touched += dt[k] != SENTINEL;
  CHECKF(touched == 0, "the teacher blob got a gradient in %d entries", touched);
  /* finite differences of the hand computation, in double */
  double gmax = 0, worst = 0;
  for (int k = 0; k < N * CS * HW; k++) gmax = fmax(gmax, fabs(ds[k]));
  int off = 0;
  for (int k = 0; k < N * CS * HW; k++) {
    double v = sd[k], h = 1e-6;
    sd[k] = v + h;
    double lp = W * att_ref(sd, &a);
    sd[k] = v - h;
    double lm = W * att_ref(sd, &a);
    sd[k] = v;
    double num = (lp - lm) / (2 * h), e = fabs(num - ds[k]);
    worst = fmax(worst, e);
    if (e > 1e-4 * gmax + 1e-4 * fabs(num)) {
      if (off++ < 4) fprintf(stderr, "     attention d/ds[%d]: backward %.7g, finite difference %.7g\n", k, ds[k], num);
    }
  }
  CHECKF(gmax > 1e-3 && off == 0, "%d of %d gradient entries off (worst %.3g, largest gradient %.3g)", off, N * CS * HW, worst,
         gmax);
  CHECK(net_fd(n, s, ds, 3e-3, 2e-2, 2e-4, "AttentionLoss 3 vs 5 channels") == 0);
  free(sf);
  free(tf);
  free(sd);
  free(td);
  free(ds);
  free(dt);
  dd_net_destroy(n);
  /* H x W must agree */
  Caffe__NetParameter *p = test_parse_net(INPUT("s", "dim: 2 dim: 3 dim: 3 dim: 4") INPUT("t", "dim: 2 dim: 5 dim: 2 dim: 6")
                                          "layer { name: 'at' type: 'AttentionLoss' bottom: 's' bottom: 't' top: 'at' }");
  REQUIRE(p);
  char err[1024] = "";
  dd_net *bad = NULL;
  CHECK(dd_net_create(&bad, p, CAFFE__PHASE__TRAIN, be, 1, NULL, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "same N, H and W");
  dd_net_destroy(bad);
  caffe__net_parameter__free_unpacked(p, NULL);
}

int main(void) {
  if (dd_cpu_backend_create(&be, 2)) {
    fprintf(stderr, "no CPU backend\n");
    return 1;
  }
  RUN(test_kd_loss_by_hand);
  RUN(test_kd_teacher_side_frozen);
  RUN(test_kd_training_step);
  RUN(test_hint_loss_by_hand);
  RUN(test_attention_loss_by_hand);
  dd_cpu_backend_destroy(be);
  return test_summary();
}
