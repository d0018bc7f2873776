/* The recurrent layers of the catalogue on the CPU backend (helpers: tests/test_layers.h):
 * RNN, LSTM (Caffe's RecurrentLayer semantics) and LSTMUnit.
 * 1. Forward against a naive double-precision computation written here from Caffe's equations
 *    (rnn_layer.cpp, lstm_layer.cpp, lstm_unit_layer.cpp): non-binary cont values, x_static, the
 *    state carried from one forward pass to the next, cont = 0 resetting it, expose_hidden.
 * 2. Caffe's LSTMLayerTest.TestForward: a 3-step sequence in one pass equals three 1-step passes
 *    (the state carries over); with cont 0 at every step only the first step agrees.
 * 3. Finite-difference gradients of x, x_static and every parameter (with and without
 *    expose_hidden), and of LSTMUnit's c_prev and gates (Caffe's TestLSTMUnitGradient cont
 *    patterns). The exposed initial states h_0 / c_0 get no gradient in Caffe and the diffs of the
 *    exposed final states are not read (its RecurrentLayer shares only their data with the
 *    unrolled net): checked as zero gradients through them.
 * 4. Errors naming the field: num_output 0, cont of the wrong shape, x_static of the wrong N, h_0
 *    of the wrong shape, bottom counts against expose_hidden, in place, LSTMUnit's gate width.
 * 5. With a CUDA build and a GPU: the same nets on the CUDA backend, forward and backward, against
 *    the CPU (every blob's data and diff, every parameter's diff); SKIP otherwise. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>

#include "devices/devices.h"
#include "test_layers.h"

/* ---- naive references (double) ---------------------------------------------------------------- */

typedef struct {
  int T, N, I, S, H;
  const float *x, *cont, *xs;   /* (T, N, I), (T, N), (N, S) or NULL */
  const float *wx, *b, *ws, *wh; /* (G H, I), (G H), (G H, S), (G H, H) */
  const float *wo, *bo;         /* RNN: (H, H), (H) */
} ref_in;

static double sigm(double v) { return 1.0 / (1.0 + exp(-v)); }

/* Pre-activation row q of stream n at step t, with hc = cont * h_{t-1} (H). */
static double pre_act(const ref_in *r, int t, int n, int q, const double *hc) {
  double a = r->b[q];
  for (int i = 0; i < r->I; i++) a += (double)r->wx[q * r->I + i] * r->x[(t * r->N + n) * r->I + i];
  for (int s = 0; r->xs && s < r->S; s++) a += (double)r->ws[q * r->S + s] * r->xs[n * r->S + s];
  for (int k = 0; k < r->H; k++) a += (double)r->wh[q * r->H + k] * hc[k];
  return a;
}

/* y (T, N, H); h (N, H) in: the initial state, out: h_T. */
static void ref_rnn(const ref_in *r, double *y, double *h) {
  int H = r->H;
  double hc[16], hn[16];
  for (int t = 0; t < r->T; t++)
    for (int n = 0; n < r->N; n++) {
      double k = r->cont[t * r->N + n];
      for (int j = 0; j < H; j++) hc[j] = k * h[n * H + j];
      for (int j = 0; j < H; j++) hn[j] = tanh(pre_act(r, t, n, j, hc));
      for (int j = 0; j < H; j++) {
        double o = r->bo[j];
        for (int q = 0; q < H; q++) o += (double)r->wo[j * H + q] * hn[q];
        y[(t * r->N + n) * H + j] = tanh(o);
        h[n * H + j] = hn[j];
      }
    }
}

/* y (T, N, H); h, c (N, H) in: the initial states, out: h_T, c_T. */
static void ref_lstm(const ref_in *r, double *y, double *h, double *c) {
  int H = r->H;
  double hc[16], g[64];
  for (int t = 0; t < r->T; t++)
    for (int n = 0; n < r->N; n++) {
      double k = r->cont[t * r->N + n];
      for (int j = 0; j < H; j++) hc[j] = k * h[n * H + j];
      for (int q = 0; q < 4 * H; q++) g[q] = pre_act(r, t, n, q, hc);
      for (int j = 0; j < H; j++) {
        double i = sigm(g[j]), f = k == 0 ? 0 : k * sigm(g[H + j]), o = sigm(g[2 * H + j]), gg = tanh(g[3 * H + j]);
        c[n * H + j] = f * c[n * H + j] + i * gg;
        h[n * H + j] = o * tanh(c[n * H + j]);
        y[(t * r->N + n) * H + j] = h[n * H + j];
      }
    }
}

/* ---- helpers ---------------------------------------------------------------------------------- */

static float *pdata(dd_net *n, const char *lname, int p) {
  dd_layer *l = layer(n, lname);
  return l && p < l->n_params ? dd_tensor_data_copy(l->params[p]) : NULL;
}

/* Largest |a - b| relative to max(1, |b|). */
static double max_err(const float *a, const double *b, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]) / fmax(1.0, fabs(b[i])));
  return m;
}

static void check_top(dd_net *n, const char *name, const double *want, int64_t count, const char *what) {
  dd_tensor *t = blob(n, name);
  if (!t) return;
  CHECKF(t->count == count, "%s: %s has %lld values, want %lld", what, name, (long long)t->count, (long long)count);
  float *y = dd_tensor_data_copy(t);
  double e = max_err(y, want, count);
  CHECKF(e < 1e-5, "%s: %s is off the naive computation by %.3g", what, name, e);
  free(y);
}

/* The parameters of layer "y" into r (RNN: 5 or 6 blobs, LSTM 3 or 4), malloc'd into p[]. */
static void load_params(dd_net *n, ref_in *r, int rnn, float *p[6]) {
  int k = 0;
  memset(p, 0, 6 * sizeof *p);
  p[k] = pdata(n, "y", k), r->wx = p[k++];
  p[k] = pdata(n, "y", k), r->b = p[k++];
  if (r->xs) p[k] = pdata(n, "y", k), r->ws = p[k++];
  p[k] = pdata(n, "y", k), r->wh = p[k++];
  if (rnn) {
    p[k] = pdata(n, "y", k), r->wo = p[k++];
    p[k] = pdata(n, "y", k), r->bo = p[k++];
  }
}

static void free_params(float *p[6]) {
  for (int k = 0; k < 6; k++) free(p[k]);
}

/* ---- 1. forward against the naive computation --------------------------------------------------- */

#define X_3x2x2 INPUT("x", "dim: 3 dim: 2 dim: 2") INPUT("cont", "dim: 3 dim: 2")
#define RP(h, extra) "recurrent_param { num_output: " #h " " WF " " extra " }"

/* x (3, 2, 2), H = 3, with or without x_static (2, 3): two passes (the state carries over), then a
 * pass starting every stream afresh. */
static void forward_case(int rnn, int with_static) {
  char text[2048];
  snprintf(text, sizeof text,
           X_3x2x2 "%s"
           "layer { name: \"y\" type: \"%s\" bottom: \"x\" bottom: \"cont\" %s top: \"y\" " RP(3, "") " }\n",
           with_static ? INPUT("xs", "dim: 2 dim: 3") : "", rnn ? "RNN" : "LSTM",
           with_static ? "bottom: \"xs\"" : "");
  dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
  REQUIRE(n != NULL);
  fill_inputs(n, 5, -1, 1);
  /* non-binary markers too: Caffe multiplies h_{t-1} (and the forget gate) by them */
  const float passes[3][6] = {{0, 1, 1, 0, 0.5f, 1}, {1, 1, 1, 1, 1, 1}, {0, 0, 1, 1, 1, 1}};
  ref_in r = {.T = 3, .N = 2, .I = 2, .S = 3, .H = 3};
  float *x = dd_tensor_data_copy(blob(n, "x")), *xs = with_static ? dd_tensor_data_copy(blob(n, "xs")) : NULL;
  r.x = x;
  r.xs = xs;
  float *p[6];
  load_params(n, &r, rnn, p);
  double h[6] = {0}, c[6] = {0}, y[18];
  for (int pass = 0; pass < 3; pass++) {
    set_values(n, "cont", passes[pass]);
    forward_all(n);
    r.cont = passes[pass];
    if (rnn)
      ref_rnn(&r, y, h);
    else
      ref_lstm(&r, y, h, c);
    char what[64];
    snprintf(what, sizeof what, "%s%s pass %d", rnn ? "RNN" : "LSTM", with_static ? " x_static" : "", pass);
    check_top(n, "y", y, 18, what);
  }
  free_params(p);
  free(x);
  free(xs);
  dd_net_destroy(n);
}

static void test_rnn_forward(void) {
  forward_case(1, 0);
  forward_case(1, 1);
}

static void test_lstm_forward(void) {
  forward_case(0, 0);
  forward_case(0, 1);
}

/* expose_hidden: h_0 (and c_0) are bottoms, h_T (and c_T) tops; no state carries over. */
static void expose_case(int rnn) {
  char text[2048];
  snprintf(text, sizeof text,
           X_3x2x2 INPUT("h0", "dim: 1 dim: 2 dim: 3") "%s"
           "layer { name: \"y\" type: \"%s\" bottom: \"x\" bottom: \"cont\" bottom: \"h0\" %s top: \"y\" "
           "top: \"hT\" %s " RP(3, "expose_hidden: true") " }\n",
           rnn ? "" : INPUT("c0", "dim: 1 dim: 2 dim: 3"), rnn ? "RNN" : "LSTM", rnn ? "" : "bottom: \"c0\"",
           rnn ? "" : "top: \"cT\"");
  dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
  REQUIRE(n != NULL);
  fill_inputs(n, 9, -1, 1);
  const float cont[6] = {1, 1, 0, 1, 1, 1};
  set_values(n, "cont", cont);
  ref_in r = {.T = 3, .N = 2, .I = 2, .H = 3, .cont = cont};
  float *x = dd_tensor_data_copy(blob(n, "x")), *h0 = dd_tensor_data_copy(blob(n, "h0"));
  float *c0 = rnn ? NULL : dd_tensor_data_copy(blob(n, "c0"));
  r.x = x;
  float *p[6];
  load_params(n, &r, rnn, p);
  for (int pass = 0; pass < 2; pass++) { /* the same twice: nothing carries over */
    double h[6], c[6], y[18];
    for (int k = 0; k < 6; k++) h[k] = h0[k], c[k] = c0 ? c0[k] : 0;
    forward_all(n);
    if (rnn)
      ref_rnn(&r, y, h);
    else
      ref_lstm(&r, y, h, c);
    const char *what = rnn ? "RNN expose_hidden" : "LSTM expose_hidden";
    check_top(n, "y", y, 18, what);
    check_top(n, "hT", h, 6, what);
    if (!rnn) check_top(n, "cT", c, 6, what);
  }
  free_params(p);
  free(x);
  free(h0);
  free(c0);
  dd_net_destroy(n);
}

static void test_expose_hidden_forward(void) {
  expose_case(1);
  expose_case(0);
}

/* ---- 2. Caffe's LSTMLayerTest.TestForward ---------------------------------------------------- */

static const char *const step_net_fmt =
    INPUT("x", "dim: %d dim: 3 dim: 3 dim: 2") INPUT("cont", "dim: %d dim: 3")
    "layer { name: \"y\" type: \"%s\" bottom: \"x\" bottom: \"cont\" top: \"y\" recurrent_param { num_output: 7 "
    "weight_filler { type: \"gaussian\" std: 0.2 } bias_filler { type: \"gaussian\" std: 0.1 } } }\n";

static void stepwise_case(const char *type) {
  char t3[1024], t1[1024];
  snprintf(t3, sizeof t3, step_net_fmt, 3, 3, type);
  snprintf(t1, sizeof t1, step_net_fmt, 1, 1, type);
  dd_net *full = make_net(t3, CAFFE__PHASE__TEST), *step = make_net(t1, CAFFE__PHASE__TEST);
  REQUIRE(full && step);
  dd_layer *lf = layer(full, "y"), *ls = layer(step, "y");
  for (int p = 0; p < lf->n_params; p++) {
    float *v = dd_tensor_data_copy(lf->params[p]);
    dd_tensor_set_data(ls->params[p], v);
    free(v);
  }
  fill_inputs(full, 1, -1, 1);
  const float cont3[9] = {0, 0, 0, 1, 1, 1, 1, 1, 1}; /* <0, 1, 1> per stream */
  set_values(full, "cont", cont3);
  forward_all(full);
  float *x = dd_tensor_data_copy(blob(full, "x")), *y = dd_tensor_data_copy(blob(full, "y"));
  for (int reset = 0; reset < 2; reset++) {
    if (reset) { /* a fresh layer: its state starts at zero */
      dd_net_destroy(step);
      step = make_net(t1, CAFFE__PHASE__TEST);
      REQUIRE(step != NULL);
      ls = layer(step, "y");
      for (int p = 0; p < lf->n_params; p++) {
        float *v = dd_tensor_data_copy(lf->params[p]);
        dd_tensor_set_data(ls->params[p], v);
        free(v);
      }
    }
    int64_t differ = 0;
    for (int t = 0; t < 3; t++) {
      float cont1[3];
      for (int k = 0; k < 3; k++) cont1[k] = reset ? 0 : t > 0;
      set_values(step, "x", x + t * 18);
      set_values(step, "cont", cont1);
      forward_all(step);
      float *ys = dd_tensor_data_copy(blob(step, "y"));
      for (int i = 0; i < 21; i++) {
        float d = fabsf(ys[i] - y[t * 21 + i]);
        if (!reset || t == 0)
          CHECKF(d < 1e-5f, "%s: step %d value %d: %g stepwise, %g in one pass", type, t, i, ys[i], y[t * 21 + i]);
        else
          differ += ys[i] != y[t * 21 + i];
      }
      free(ys);
    }
    if (reset) CHECKF(differ == 42, "%s: with cont 0 everywhere only %lld of 42 later values changed", type, (long long)differ);
  }
  free(x);
  free(y);
  dd_net_destroy(full);
  dd_net_destroy(step);
}

static void test_stepwise_equals_one_pass(void) {
  stepwise_case("LSTM");
  stepwise_case("RNN");
}

/* ---- 3. gradients ----------------------------------------------------------------------------- */

/* Builds `text`, fills the inputs in [-1, 1), sets "cont" and checks every gradient. */
static void grad_with_cont(const char *what, const char *text, const float *cont) {
  dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
  CHECKF(n != NULL, "%s: the net did not build", what);
  if (!n) return;
  fill_inputs(n, 11, -1, 1);
  set_values(n, "cont", cont);
  grad_check(n, GC, what);
  dd_net_destroy(n);
}

/* cont 0 at t = 0 (the carried state then has no effect across the checker's passes), mixed after */
static const float grad_cont[6] = {0, 0, 1, 0, 1, 1};

static void grad_case(const char *type, int with_static) {
  char text[2048], what[64];
  snprintf(text, sizeof text,
           FB X_3x2x2 "%s"
           "layer { name: \"y\" type: \"%s\" bottom: \"x\" bottom: \"cont\" %s top: \"y\" " RP(3, "") " }\n",
           with_static ? INPUT("xs", "dim: 2 dim: 3") : "", type, with_static ? "bottom: \"xs\"" : "");
  snprintf(what, sizeof what, "%s%s", type, with_static ? " with x_static" : "");
  grad_with_cont(what, text, grad_cont);
}

static void test_rnn_gradient(void) {
  grad_case("RNN", 0);
  grad_case("RNN", 1);
}

static void test_lstm_gradient(void) {
  grad_case("LSTM", 0);
  grad_case("LSTM", 1);
}

/* expose_hidden with cont 1 at t = 0 (h_0 and c_0 matter), x_static too; the final states are
 * silenced and y feeds a loss. */
static void grad_expose_case(int rnn) {
  char text[2048];
  snprintf(text, sizeof text,
           FB X_3x2x2 INPUT("xs", "dim: 2 dim: 3") INPUT("h0", "dim: 1 dim: 2 dim: 3") "%s"
           "layer { name: \"y\" type: \"%s\" bottom: \"x\" bottom: \"cont\" bottom: \"xs\" bottom: \"h0\" %s "
           "top: \"y\" top: \"hT\" %s " RP(3, "expose_hidden: true") " }\n"
           "layer { name: \"s\" type: \"Silence\" bottom: \"hT\" %s }\n"
           "layer { name: \"loss\" type: \"Reduction\" bottom: \"y\" top: \"loss\" reduction_param { operation: SUMSQ } "
           "loss_weight: 1 }\n",
           rnn ? "" : INPUT("c0", "dim: 1 dim: 2 dim: 3"), rnn ? "RNN" : "LSTM", rnn ? "" : "bottom: \"c0\"",
           rnn ? "" : "top: \"cT\"", rnn ? "" : "bottom: \"cT\"");
  const float cont[6] = {1, 1, 1, 0, 1, 1};
  grad_with_cont(rnn ? "RNN expose_hidden, x_static" : "LSTM expose_hidden, x_static", text, cont);
}

static void test_expose_hidden_gradient(void) {
  grad_expose_case(1);
  grad_expose_case(0);
}

/* Caffe's TestLSTMUnitGradient and TestLSTMUnitGradientNonZeroCont. */
static void test_lstm_unit_gradient(void) {
  const char *text = FB INPUT("cp", "dim: 1 dim: 3 dim: 4") INPUT("gates", "dim: 1 dim: 3 dim: 16")
      INPUT("cont", "dim: 1 dim: 3")
      "layer { name: \"u\" type: \"LSTMUnit\" bottom: \"cp\" bottom: \"gates\" bottom: \"cont\" top: \"c\" top: \"h\" }\n";
  const float zero[3] = {0, 0, 0}, mixed[3] = {1, 0, 1};
  grad_with_cont("LSTMUnit, cont 0", text, zero);
  grad_with_cont("LSTMUnit, cont 1 0 1", text, mixed);
}

/* LSTMUnit's forward: one step of the naive LSTM (W = 0, so gates = the bottom). */
static void test_lstm_unit_forward(void) {
  const char *text = INPUT("cp", "dim: 1 dim: 2 dim: 2") INPUT("gates", "dim: 1 dim: 2 dim: 8")
      INPUT("cont", "dim: 1 dim: 2")
      "layer { name: \"u\" type: \"LSTMUnit\" bottom: \"cp\" bottom: \"gates\" bottom: \"cont\" top: \"c\" top: \"h\" }\n";
  dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
  REQUIRE(n != NULL);
  fill_inputs(n, 3, -2, 2);
  const float cont[2] = {0.5f, 0};
  set_values(n, "cont", cont);
  forward_all(n);
  float *cp = dd_tensor_data_copy(blob(n, "cp")), *g = dd_tensor_data_copy(blob(n, "gates"));
  double c[4], h[4];
  for (int r = 0; r < 2; r++)
    for (int j = 0; j < 2; j++) {
      const float *x = g + r * 8;
      double f = cont[r] == 0 ? 0 : cont[r] * sigm(x[2 + j]);
      c[r * 2 + j] = f * cp[r * 2 + j] + sigm(x[j]) * tanh(x[6 + j]);
      h[r * 2 + j] = sigm(x[4 + j]) * tanh(c[r * 2 + j]);
    }
  check_top(n, "c", c, 4, "LSTMUnit");
  check_top(n, "h", h, 4, "LSTMUnit");
  free(cp);
  free(g);
  dd_net_destroy(n);
}

/* Caffe passes no gradient into the exposed h_0 (a learnable layer computing it learns nothing
 * from this layer) and none out of the exposed h_T (a loss on h_T alone gives zero gradients). */
static void exposed_zero_case(const char *loss_on) {
  char text[2048];
  snprintf(text, sizeof text,
           X_3x2x2 INPUT("img", "dim: 1 dim: 2 dim: 4")
           "layer { name: \"h0\" type: \"InnerProduct\" bottom: \"img\" top: \"h0\" inner_product_param { "
           "num_output: 3 axis: 2 " WF " } }\n"
           "layer { name: \"y\" type: \"RNN\" bottom: \"x\" bottom: \"cont\" bottom: \"h0\" top: \"y\" top: \"hT\" "
           RP(3, "expose_hidden: true") " param { lr_mult: 1 } }\n"
           "layer { name: \"s\" type: \"Silence\" bottom: \"%s\" }\n"
           "layer { name: \"loss\" type: \"Reduction\" bottom: \"%s\" top: \"loss\" reduction_param { operation: SUMSQ } "
           "loss_weight: 1 }\n",
           strcmp(loss_on, "y") ? "y" : "hT", loss_on);
  dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
  REQUIRE(n != NULL);
  fill_inputs(n, 4, -1, 1);
  const float cont[6] = {1, 1, 1, 1, 1, 1};
  set_values(n, "cont", cont);
  double loss = 0;
  dd_net_clear_param_diffs(n);
  dd_net_forward(n, &loss);
  CHECKF(loss > 1e-3, "loss on %s: %g, the states should matter", loss_on, loss);
  dd_net_backward(n);
  for (int lay = 0; lay < 2; lay++) {
    dd_layer *l = layer(n, lay ? "y" : "h0");
    double s = 0;
    for (int p = 0; p < l->n_params; p++) {
      float *d = dd_tensor_diff_copy(l->params[p]);
      for (int64_t k = 0; k < l->params[p]->count; k++) s += fabs(d[k]);
      free(d);
    }
    int want_zero = lay == 0 || strcmp(loss_on, "y") != 0;
    if (want_zero)
      CHECKF(s == 0, "loss on %s: layer %s's parameters got gradient %g through an exposed state", loss_on, l->name, s);
    else
      CHECKF(s > 0, "loss on %s: layer %s's parameters got no gradient", loss_on, l->name);
  }
  float *dh0 = dd_tensor_diff_copy(blob(n, "h0"));
  for (int k = 0; k < 6; k++) CHECKF(dh0[k] == 0, "loss on %s: h0's diff[%d] = %g", loss_on, k, dh0[k]);
  free(dh0);
  dd_net_destroy(n);
}

static void test_exposed_states_pass_no_gradient(void) {
  exposed_zero_case("y");
  exposed_zero_case("hT");
}

/* ---- 4. errors ---------------------------------------------------------------------------------- */

static void expect_error(const char *text, const char *needle) {
  char err[1024] = "";
  int r = net_error(text, CAFFE__PHASE__TRAIN, err, sizeof err);
  CHECKF(r != 0, "no error; wanted one mentioning \"%s\"", needle);
  CHECK_CONTAINS(err, needle);
}

#define LAYER_Y(type, bottoms, tops, rp) \
  "layer { name: \"y\" type: \"" type "\" " bottoms " " tops " " rp " }\n"
#define BXC "bottom: \"x\" bottom: \"cont\""

static void test_errors(void) {
  expect_error(X_3x2x2 LAYER_Y("LSTM", BXC, "top: \"y\"", ""), "recurrent_param.num_output");
  expect_error(X_3x2x2 LAYER_Y("RNN", BXC, "top: \"y\"", "recurrent_param { num_output: 0 }"),
               "recurrent_param.num_output");
  expect_error(INPUT("x", "dim: 3 dim: 2 dim: 2") INPUT("cont", "dim: 2 dim: 3")
               LAYER_Y("LSTM", BXC, "top: \"y\"", "recurrent_param { num_output: 2 }"), "bottom 1 (cont");
  expect_error(INPUT("x", "dim: 3 dim: 2 dim: 2") INPUT("cont", "dim: 6")
               LAYER_Y("RNN", BXC, "top: \"y\"", "recurrent_param { num_output: 2 }"), "(T, N) = (3, 2)");
  expect_error(INPUT("x", "dim: 6") INPUT("cont", "dim: 6 dim: 1")
               LAYER_Y("RNN", BXC, "top: \"y\"", "recurrent_param { num_output: 2 }"), "bottom 0 (x)");
  expect_error(X_3x2x2 INPUT("xs", "dim: 3 dim: 2")
               LAYER_Y("LSTM", BXC " bottom: \"xs\"", "top: \"y\"", "recurrent_param { num_output: 2 }"),
               "x_static");
  expect_error(X_3x2x2 INPUT("h0", "dim: 1 dim: 2 dim: 3")
               LAYER_Y("RNN", BXC " bottom: \"h0\"", "top: \"y\" top: \"hT\"",
                       "recurrent_param { num_output: 2 expose_hidden: true }"), "h_0");
  expect_error(X_3x2x2 LAYER_Y("LSTM", BXC, "top: \"y\"", "recurrent_param { num_output: 2 expose_hidden: true }"),
               "recurrent_param.expose_hidden");
  expect_error(X_3x2x2 LAYER_Y("RNN", BXC, "top: \"y\" top: \"hT\"", "recurrent_param { num_output: 2 }"),
               "recurrent_param.expose_hidden");
  expect_error(INPUT("x", "dim: 3 dim: 2 dim: 2") INPUT("cont", "dim: 3 dim: 2")
               LAYER_Y("RNN", BXC, "top: \"x\"", "recurrent_param { num_output: 2 }"), "in place");
  expect_error(INPUT("cp", "dim: 1 dim: 2 dim: 3") INPUT("gates", "dim: 1 dim: 2 dim: 8") INPUT("cont", "dim: 1 dim: 2")
               "layer { name: \"u\" type: \"LSTMUnit\" bottom: \"cp\" bottom: \"gates\" bottom: \"cont\" top: \"c\" "
               "top: \"h\" }\n", "bottom 1 (gates)");
  expect_error(INPUT("cp", "dim: 1 dim: 2 dim: 3") INPUT("gates", "dim: 1 dim: 2 dim: 12") INPUT("cont", "dim: 2 dim: 2")
               "layer { name: \"u\" type: \"LSTMUnit\" bottom: \"cp\" bottom: \"gates\" bottom: \"cont\" top: \"c\" "
               "top: \"h\" }\n", "bottom 2 (cont)");
}


/* ---- 5. CUDA against the CPU ----------------------------------------------------------------- */

static dd_backend *gpu;

/* Relative L2 error of a against b (the CPU). */
static double rel_l2(const float *a, const float *b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), den += (double)b[i] * b[i];
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void cuda_case(const char *what, const char *text, const float *cont, const char *top) {
  dd_net *c = make_net(text, CAFFE__PHASE__TRAIN), *g = make_net_on(gpu, text, CAFFE__PHASE__TRAIN, 7);
  CHECKF(c && g, "%s: the nets did not build", what);
  if (!c || !g) goto done;
  fill_inputs(c, 13, -1, 1);
  if (cont) set_values(c, "cont", cont);
  for (size_t b = 0; b < c->n_blobs; b++) { /* the inputs (and everything else) as on the CPU */
    float *v = dd_tensor_data_copy(c->blobs[b]);
    dd_tensor_set_data(g->blobs[b], v);
    free(v);
  }
  for (size_t p = 0; p < c->n_params; p++) {
    float *v = dd_tensor_data_copy(c->params[p].t);
    dd_tensor_set_data(g->params[p].t, v);
    free(v);
  }
  for (int pass = 0; pass < 2; pass++) { /* twice: the carried state too */
    forward_all(c);
    forward_all(g);
  }
  dd_tensor *yc = blob(c, top);
  float *w = malloc((size_t)yc->count * sizeof *w);
  dd_rng r;
  dd_rng_seed(&r, 77);
  uniform_fill(w, yc->count, &r, -1, 1);
  dd_tensor_set_diff(yc, w);
  dd_tensor_set_diff(blob(g, top), w);
  free(w);
  dd_net_clear_param_diffs(c);
  dd_net_clear_param_diffs(g);
  dd_net_backward(c);
  dd_net_backward(g);
  for (size_t b = 0; b < c->n_blobs + c->n_params; b++)
    for (int diff = 0; diff < 2; diff++) {
      int is_p = b >= c->n_blobs;
      dd_tensor *tc = is_p ? c->params[b - c->n_blobs].t : c->blobs[b], *tg = is_p ? g->params[b - c->n_blobs].t : g->blobs[b];
      if (is_p && !diff) continue;
      float *vc = diff ? dd_tensor_diff_copy(tc) : dd_tensor_data_copy(tc);
      float *vg = diff ? dd_tensor_diff_copy(tg) : dd_tensor_data_copy(tg);
      double e = rel_l2(vg, vc, tc->count);
      CHECKF(e < 1e-5, "%s: %s's %s differs from the CPU's by %.3g (relative L2)", what, tc->name, diff ? "diff" : "data", e);
      free(vc);
      free(vg);
    }
done:
  dd_net_destroy(c);
  dd_net_destroy(g);
}

static void test_cuda_matches_cpu(void) {
  if (!gpu) {
    printf("SKIP %s: %s\n", test__name, dd_backend_have_cuda() ? "no GPU" : "this build has no CUDA backend");
    return;
  }
  const char *rnn = FB X_3x2x2 INPUT("xs", "dim: 2 dim: 3")
      "layer { name: \"y\" type: \"RNN\" bottom: \"x\" bottom: \"cont\" bottom: \"xs\" top: \"y\" " RP(3, "") " }\n";
  const char *lstm = FB X_3x2x2 INPUT("xs", "dim: 2 dim: 3")
      "layer { name: \"y\" type: \"LSTM\" bottom: \"x\" bottom: \"cont\" bottom: \"xs\" top: \"y\" " RP(3, "") " }\n";
  const char *unit = FB INPUT("cp", "dim: 1 dim: 3 dim: 4") INPUT("gates", "dim: 1 dim: 3 dim: 16")
      INPUT("cont", "dim: 1 dim: 3")
      "layer { name: \"u\" type: \"LSTMUnit\" bottom: \"cp\" bottom: \"gates\" bottom: \"cont\" top: \"c\" top: \"h\" }\n";
  const float cont[6] = {1, 0, 1, 0.5f, 1, 1}, ucont[3] = {1, 0, 0.5f};
  cuda_case("RNN on CUDA", rnn, cont, "y");
  cuda_case("LSTM on CUDA", lstm, cont, "y");
  cuda_case("LSTMUnit on CUDA", unit, ucont, "h");
}

int main(void) {
  if (layers_begin()) return 1;
  char err[600];
  if (dd_backend_have_cuda() && dd_backend_create(&gpu, "cuda:0", 0, err, sizeof err)) {
    printf("     no GPU: %s\n", err);
    gpu = NULL;
  }
  RUN(test_rnn_forward);
  RUN(test_lstm_forward);
  RUN(test_expose_hidden_forward);
  RUN(test_stepwise_equals_one_pass);
  RUN(test_lstm_unit_forward);
  RUN(test_rnn_gradient);
  RUN(test_lstm_gradient);
  RUN(test_expose_hidden_gradient);
  RUN(test_lstm_unit_gradient);
  RUN(test_exposed_states_pass_no_gradient);
  RUN(test_errors);
  RUN(test_cuda_matches_cpu);
  if (gpu) dd_backend_destroy(gpu);
  return layers_end();
}
