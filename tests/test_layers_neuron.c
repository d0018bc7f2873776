/* The catalogue's neuron layers on the CPU backend: each one's forward against its definition
 * computed here in double with the textbook formula (1 / (1 + e^-x) for Sigmoid, log1p(e^x) for
 * BNLL, ...: not the kernels' expressions), finite-difference gradients of every input and of
 * PReLU's slopes, in place equal to out of place (forward and gradient), and the errors that name
 * their field: Exp/Log bases, Clip without clip_param, PReLU on one axis, and a Threshold that
 * would need a gradient. */
#include "test_layers.h"

typedef struct {
  const char *type, *param;
  double (*f)(double x, const double *p);
  double p[3];
  int kink;
} neuron_case;

static double f_sigmoid(double x, const double *p) { (void)p; return 1 / (1 + exp(-x)); }
static double f_tanh(double x, const double *p) { (void)p; return tanh(x); }
static double f_elu(double x, const double *p) { return x > 0 ? x : p[0] * (exp(x) - 1); }
static double f_power(double x, const double *p) { return pow(p[2] + p[1] * x, p[0]); }
static double f_abs(double x, const double *p) { (void)p; return fabs(x); }
static double f_bnll(double x, const double *p) { (void)p; return log1p(exp(x)); }
static double f_exp(double x, const double *p) { return pow(p[0], p[2] + p[1] * x); }
static double f_log(double x, const double *p) { return log(p[2] + p[1] * x) / log(p[0]); }
static double f_clip(double x, const double *p) { return x < p[0] ? p[0] : x > p[1] ? p[1] : x; }
static double f_swish(double x, const double *p) { return x / (1 + exp(-p[0] * x)); }
static double f_threshold(double x, const double *p) { return x > p[0] ? 1 : 0; }

static const neuron_case CASES[] = {
    {"Sigmoid", "", f_sigmoid, {0}, 0},
    {"TanH", "", f_tanh, {0}, 0},
    {"ELU", "elu_param { alpha: 0.7 }", f_elu, {0.7}, 1},
    {"Power", "power_param { power: 3 scale: 0.5 shift: 2 }", f_power, {3, 0.5, 2}, 0},
    {"Power", "power_param { power: 0.5 scale: 2 shift: 3 }", f_power, {0.5, 2, 3}, 0},
    {"Power", "power_param { power: 2 scale: -1.5 shift: 0.25 }", f_power, {2, -1.5, 0.25}, 0},
    {"Power", "power_param { power: 3 scale: 1.5 }", f_power, {3, 1.5, 0}, 0},
    {"AbsVal", "", f_abs, {0}, 1},
    {"BNLL", "", f_bnll, {0}, 0},
    {"Exp", "exp_param { base: 2 scale: 0.5 shift: 1 }", f_exp, {2, 0.5, 1}, 0},
    {"Exp", "exp_param { scale: 1.5 shift: -0.5 }", f_exp, {2.718281828459045, 1.5, -0.5}, 0},
    {"Log", "log_param { base: 10 scale: 2 shift: 3 }", f_log, {10, 2, 3}, 0},
    {"Log", "log_param { scale: 0.5 shift: 1.25 }", f_log, {2.718281828459045, 0.5, 1.25}, 0},
    {"Clip", "clip_param { min: -0.4 max: 0.3 }", f_clip, {-0.4, 0.3}, 1},
    {"Swish", "swish_param { beta: 1.7 }", f_swish, {1.7}, 0},
    {"Threshold", "threshold_param { threshold: 0.2 }", f_threshold, {0.2}, 0},
};
#define N_CASES (int)(sizeof CASES / sizeof CASES[0])

static char *neuron_net(const neuron_case *k, int in_place, int fb) {
  static char buf[1024];
  snprintf(buf, sizeof buf,
           "%slayer { name: 'x' type: 'Input' top: 'x' input_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 } } }\n"
           "layer { name: 'n' type: '%s' bottom: 'x' top: '%s' %s }\n",
           fb ? FB : "", k->type, in_place ? "x" : "y", k->param);
  return buf;
}

static void test_neuron_forward(void) {
  for (int c = 0; c < N_CASES; c++) {
    const neuron_case *k = &CASES[c];
    dd_net *n = make_net(neuron_net(k, 0, 0), CAFFE__PHASE__TRAIN);
    CHECKF(n != NULL, "%s %s: the net did not build", k->type, k->param);
    if (!n) continue;
    set_uniform(n, "x", 5 + (uint64_t)c, -2, 2);
    REQUIRE(dd_net_forward(n, NULL) == 0);
    const float *x = blob(n, "x")->data, *y = blob(n, "y")->data;
    double worst = 0;
    for (int64_t i = 0; i < blob(n, "x")->count; i++) {
      double want = k->f(x[i], k->p), e = fabs(y[i] - want) / (fabs(want) > 1 ? fabs(want) : 1);
      if (e > worst) worst = e;
    }
    CHECKF(worst < 2e-6, "%s %s: forward off by %.2e", k->type, k->param, worst);
    dd_net_destroy(n);
  }
}

static void test_neuron_gradients(void) {
  for (int c = 0; c < N_CASES; c++) {
    const neuron_case *k = &CASES[c];
    if (!strcmp(k->type, "Threshold")) continue; /* forward only */
    char what[160];
    snprintf(what, sizeof what, "%s %s", k->type, k->param);
    dd_net *n = make_net(neuron_net(k, 0, 1), CAFFE__PHASE__TRAIN);
    REQUIRE(n);
    set_uniform(n, "x", 40 + (uint64_t)c, -1.2f, 1.2f);
    grad_check(n, k->kink ? GC_KINK : GC, what);
    dd_net_destroy(n);
  }
}

/* In place: the same top values and the same input gradient as out of place (the layer keeps the
 * input where its backward needs it). */
static void test_neuron_in_place(void) {
  for (int c = 0; c < N_CASES; c++) {
    const neuron_case *k = &CASES[c];
    if (!strcmp(k->type, "Threshold")) continue;
    dd_net *a = make_net(neuron_net(k, 0, 1), CAFFE__PHASE__TRAIN);
    dd_net *b = make_net(neuron_net(k, 1, 1), CAFFE__PHASE__TRAIN);
    REQUIRE(a && b);
    set_uniform(a, "x", 9, -1.5f, 1.5f);
    set_uniform(b, "x", 9, -1.5f, 1.5f);
    REQUIRE(dd_net_forward(a, NULL) == 0 && dd_net_forward(b, NULL) == 0);
    dd_tensor *ya = blob(a, "y"), *yb = blob(b, "x");
    CHECKF(memcmp(ya->data, yb->data, (size_t)ya->count * sizeof(float)) == 0, "%s: in-place forward differs", k->type);
    for (int64_t i = 0; i < ya->count; i++) ya->diff[i] = yb->diff[i] = (float)sin(0.3 * (double)i);
    dd_layer *la = layer(a, "n"), *lb = layer(b, "n");
    la->ops->backward(la);
    lb->ops->backward(lb);
    CHECKF(memcmp(blob(a, "x")->diff, blob(b, "x")->diff, (size_t)ya->count * sizeof(float)) == 0,
           "%s %s: in-place gradient differs", k->type, k->param);
    dd_net_destroy(a);
    dd_net_destroy(b);
  }
}

static const char *PRELU_NET = FB
    "layer { name: 'x' type: 'Input' top: 'x' input_param { shape { dim: 2 dim: 3 dim: 2 dim: 2 } } }\n"
    "layer { name: 'n' type: 'PReLU' bottom: 'x' top: '%s' %s }\n";

static void test_prelu(void) {
  char net[600];
  snprintf(net, sizeof net, PRELU_NET, "y", "");
  dd_net *n = make_net(net, CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  dd_tensor *s = layer(n, "n")->params[0];
  CHECK(s->shape.ndim == 1 && s->shape.dims[0] == 3);
  for (int c = 0; c < 3; c++) CHECK(s->data[c] == 0.25f); /* Caffe's default filler */
  const float sl[3] = {0.1f, -0.5f, 2.0f};
  memcpy(s->data, sl, sizeof sl);
  set_uniform(n, "x", 3, -1, 1);
  REQUIRE(dd_net_forward(n, NULL) == 0);
  const float *x = blob(n, "x")->data, *y = blob(n, "y")->data;
  for (int i = 0; i < 24; i++) {
    float want = x[i] > 0 ? x[i] : sl[(i / 4) % 3] * x[i];
    CHECKF(y[i] == want, "y[%d] = %g, want %g", i, y[i], want);
  }
  grad_check(n, GC_KINK, "PReLU per channel (input and slopes)");
  dd_net_destroy(n);
  /* in place on an inner blob (the checker perturbs the net's inputs, which must stay inputs) */
  n = make_net(FB "layer { name: 'x' type: 'Input' top: 'x' input_param { shape { dim: 2 dim: 3 dim: 2 dim: 2 } } }\n"
               "layer { name: 'id' type: 'Power' bottom: 'x' top: 'h' }\n"
               "layer { name: 'n' type: 'PReLU' bottom: 'h' top: 'h' "
               "prelu_param { channel_shared: true filler { type: 'constant' value: -0.3 } } }\n"
               "layer { name: 'out' type: 'Power' bottom: 'h' top: 'y' }\n",
               CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  s = layer(n, "n")->params[0];
  CHECK(s->shape.ndim == 0 && s->count == 1 && s->data[0] == -0.3f);
  set_uniform(n, "x", 4, -1, 1);
  grad_check(n, GC_KINK, "PReLU shared, in place");
  dd_net_destroy(n);
}

static void test_neuron_errors(void) {
  static const struct {
    const char *layer, *want;
  } E[] = {
      {"type: 'Exp' exp_param { base: -2 }", "exp_param.base -2 must be strictly positive (or -1 for e)"},
      {"type: 'Exp' exp_param { base: 0 }", "exp_param.base 0 must be strictly positive"},
      {"type: 'Log' log_param { base: -3 }", "log_param.base -3 must be strictly positive"},
      {"type: 'Log' log_param { base: 1 }", "log_param.base 1: 1 / log(base) is infinite"},
      {"type: 'Clip'", "Clip needs clip_param { min: ... max: ... }"},
  };
  char net[600], err[600];
  for (size_t i = 0; i < sizeof E / sizeof E[0]; i++) {
    snprintf(net, sizeof net,
             "layer { name: 'x' type: 'Input' top: 'x' input_param { shape { dim: 2 dim: 3 } } }\n"
             "layer { name: 'bad' %s bottom: 'x' top: 'y' }\n", E[i].layer);
    CHECK(net_error(net, CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
    CHECK_CONTAINS(err, "bad");
    CHECK_CONTAINS(err, E[i].want);
  }
  CHECK(net_error("layer { name: 'x' type: 'Input' top: 'x' input_param { shape { dim: 6 } } }\n"
                  "layer { name: 'p' type: 'PReLU' bottom: 'x' top: 'y' }\n",
                  CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "PReLU needs a bottom with at least 2 axes (N, C, ...), this one has 1");
  /* a gradient that would have to pass through Threshold */
  CHECK(net_error("layer { name: 'x' type: 'Input' top: 'x' input_param { shape { dim: 2 dim: 3 } } }\n"
                  "layer { name: 'ip' type: 'InnerProduct' bottom: 'x' top: 'h' inner_product_param { num_output: 3 } }\n"
                  "layer { name: 't' type: 'Threshold' bottom: 'h' top: 'z' }\n"
                  "layer { name: 'l' type: 'Reduction' bottom: 'z' top: 'loss' loss_weight: 1 }\n",
                  CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "Threshold has no backward pass (neither has Caffe's), but bottom \"h\" needs a gradient");
  /* with force_backward and nothing learnable below it, Threshold is fine */
  dd_net *n = make_net(FB "layer { name: 'x' type: 'Input' top: 'x' input_param { shape { dim: 2 dim: 3 } } }\n"
                       "layer { name: 't' type: 'Threshold' bottom: 'x' top: 'z' }\n"
                       "layer { name: 'l' type: 'Reduction' bottom: 'z' top: 'loss' loss_weight: 1 }\n",
                       CAFFE__PHASE__TRAIN);
  CHECK(n != NULL);
  if (n) dd_net_destroy(n);
  /* forced through Threshold (nothing below learns), the layers below get its gradient, 0, not a
   * stale diff */
  n = make_net(FB "layer { name: 'x' type: 'Input' top: 'x' input_param { shape { dim: 2 dim: 3 } } }\n"
               "layer { name: 'ip' type: 'InnerProduct' bottom: 'x' top: 'h' param { lr_mult: 0 } param { lr_mult: 0 } "
               "inner_product_param { num_output: 3 weight_filler { type: 'gaussian' std: 1 } } }\n"
               "layer { name: 't' type: 'Threshold' bottom: 'h' top: 'h' }\n"
               "layer { name: 'l' type: 'Reduction' bottom: 'h' top: 'loss' loss_weight: 1 }\n",
               CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  set_uniform(n, "x", 3, -1, 1);
  REQUIRE(dd_net_forward(n, NULL) == 0);
  dd_tensor *x = blob(n, "x");
  for (int64_t i = 0; i < x->count; i++) x->diff[i] = 7;
  dd_net_backward(n);
  for (int64_t i = 0; i < x->count; i++) CHECKF(x->diff[i] == 0.0f, "dx[%lld] = %g", (long long)i, x->diff[i]);
  dd_net_destroy(n);
}

int main(void) {
  if (layers_begin()) return 1;
  RUN(test_neuron_forward);
  RUN(test_neuron_gradients);
  RUN(test_neuron_in_place);
  RUN(test_prelu);
  RUN(test_neuron_errors);
  return layers_end();
}
