/* Layer correctness on the CPU backend: every layer's forward and backward.
 *
 * 1. Finite-difference gradient checks (Caffe's GradientChecker): a scalar objective
 *    L = sum of the loss tops (times their loss weights) + sum_i w_i * top_i over the last layer's
 *    other tops, with fixed random weights w written into the top diffs; backward through the net
 *    gives every input's and every learnable parameter's gradient, which must match central
 *    differences of L (double precision, step 1e-2) within 1e-2 relative (absolute floor 1e-3).
 *    Piecewise-linear layers skip points whose one-sided differences disagree (a kink within a
 *    step). Each check also verifies Caffe's diff semantics: bottom diffs are overwritten, parameter
 *    diffs accumulate, and bottoms that get no gradient (labels, the teacher) are left alone.
 * 2. Forward values against plain hand computations (a direct 7-loop convolution, Caffe's pooling
 *    size and padded divisor, BatchNorm's running statistics, Accuracy with ties, the softmax
 *    loss under every normalisation, the distillation loss).
 * 3. In-place layers against the same net out of place (including the WRN pattern
 *    Convolution -> BatchNorm -> Scale -> ReLU, all in place).
 * 4. Fillers: statistics, Caffe's fan_in/fan_out, bilinear values, determinism, errors.
 * 5. Split insertion: Caffe's names and summed gradients.
 * 6. Determinism across nets and thread counts. */
#define _POSIX_C_SOURCE 200809L
#include <float.h>
#include <math.h>
#include <stdint.h>

#include "base/dd_error.h"
#include "net/filler.h"
#include "net/net.h"
#include "base/rng.h"
#include "test.h"
#include "format/textformat.h"

static dd_backend *be;

/* An Input layer whose single top is named like the layer. */
#define INPUT(top, dims) \
  "layer { name: \"" top "\" type: \"Input\" top: \"" top "\" input_param { shape { " dims " } } }\n"

/* ---- nets and blobs -------------------------------------------------------------------------- */

static Caffe__NetParameter *parse_net(const char *text) {
  ProtobufCMessage *m = NULL;
  char err[1024];
  if (dd_text_parse(&m, &caffe__net_parameter__descriptor, text, strlen(text), "test.prototxt", err, sizeof err)) {
    fprintf(stderr, "parse: %s\n", err);
    return NULL;
  }
  return (Caffe__NetParameter *)m;
}

/* Builds `text` for `phase` on backend `b`; NULL (with the error printed) when it fails. */
static dd_net *make_net_on(dd_backend *b, const char *text, Caffe__Phase phase, uint64_t seed) {
  Caffe__NetParameter *p = parse_net(text);
  if (!p) return NULL;
  dd_net *n = NULL;
  char err[1024];
  if (dd_net_create(&n, p, phase, b, seed, NULL, err, sizeof err)) fprintf(stderr, "net: %s\n", err);
  caffe__net_parameter__free_unpacked(p, NULL);
  return n;
}

static dd_net *make_net(const char *text, Caffe__Phase phase) { return make_net_on(be, text, phase, 7); }

/* Builds `text` and returns the error code, with the message in err. */
static int net_error(const char *text, Caffe__Phase phase, char *err, size_t errlen) {
  Caffe__NetParameter *p = parse_net(text);
  if (!p) return -1000;
  dd_net *n = NULL;
  int r = dd_net_create(&n, p, phase, be, 7, NULL, err, errlen);
  dd_net_destroy(n);
  caffe__net_parameter__free_unpacked(p, NULL);
  return r;
}

static dd_tensor *blob(dd_net *n, const char *name) {
  dd_tensor *t = dd_net_blob(n, name);
  if (!t) fprintf(stderr, "no blob \"%s\"\n", name);
  return t;
}

static dd_layer *layer(dd_net *n, const char *name) {
  int i = dd_net_layer_index(n, name);
  if (i < 0) fprintf(stderr, "no layer \"%s\"\n", name);
  return i >= 0 ? &n->layers[i] : NULL;
}

static void uniform_fill(float *x, int64_t n, dd_rng *r, float lo, float hi) {
  for (int64_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * dd_rng_uniform(r);
}

/* Sets a blob to uniform values in [lo, hi) drawn from `seed`. */
static void set_uniform(dd_net *n, const char *name, uint64_t seed, float lo, float hi) {
  dd_tensor *t = blob(n, name);
  if (!t) return;
  dd_rng r;
  dd_rng_seed(&r, seed);
  float *h = malloc((size_t)t->count * sizeof *h);
  uniform_fill(h, t->count, &r, lo, hi);
  dd_tensor_set_data(t, h);
  free(h);
}

static void set_values(dd_net *n, const char *name, const float *v) {
  dd_tensor *t = blob(n, name);
  if (t) dd_tensor_set_data(t, v);
}

/* Fills every Input top with uniform values in [lo, hi). */
static void fill_inputs(dd_net *n, uint64_t seed, float lo, float hi) {
  for (size_t i = 0; i < n->n_layers; i++) {
    dd_layer *l = &n->layers[i];
    if (strcmp(l->ops->type, "Input") != 0) continue;
    for (int t = 0; t < l->nt; t++) set_uniform(n, l->top[t]->name, seed + 31 * i + t, lo, hi);
  }
}

/* Gives the `k` named blobs pairwise distinct values, at least `gap` apart (a shuffled grid
 * centred on 0), so MAX operations have no ties within a finite-difference step. */
static void set_distinct(dd_net *n, const char *const *names, int k, uint64_t seed, float gap) {
  int64_t total = 0;
  for (int i = 0; i < k; i++) total += blob(n, names[i])->count;
  float *v = malloc((size_t)total * sizeof *v);
  for (int64_t i = 0; i < total; i++) v[i] = ((float)i - (float)total / 2) * gap;
  dd_rng r;
  dd_rng_seed(&r, seed);
  for (int64_t i = total - 1; i > 0; i--) {
    int64_t j = (int64_t)(dd_rng_next(&r) % (uint64_t)(i + 1));
    float t = v[i];
    v[i] = v[j];
    v[j] = t;
  }
  int64_t off = 0;
  for (int i = 0; i < k; i++) {
    dd_tensor *t = blob(n, names[i]);
    dd_tensor_set_data(t, v + off);
    off += t->count;
  }
  free(v);
}

/* Labels: integers in [0, classes) drawn from `seed`; every `ignore_every`-th one (when > 0) is
 * `ignore`. */
static void set_labels(dd_net *n, const char *name, int classes, uint64_t seed, int ignore_every, int ignore) {
  dd_tensor *t = blob(n, name);
  if (!t) return;
  dd_rng r;
  dd_rng_seed(&r, seed);
  float *h = malloc((size_t)t->count * sizeof *h);
  for (int64_t i = 0; i < t->count; i++)
    h[i] = (ignore_every > 0 && i % ignore_every == ignore_every - 1) ? (float)ignore
                                                                     : (float)(dd_rng_next(&r) % (uint64_t)classes);
  dd_tensor_set_data(t, h);
  free(h);
}

/* Largest |a - b| relative to max(|b|) over the arrays (1 as the floor of the scale). */
static double max_rel_diff(const float *a, const float *b, int64_t n) {
  double m = 0, s = 1;
  for (int64_t i = 0; i < n; i++) s = fmax(s, fabs((double)b[i]));
  for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
  return m / s;
}

/* ---- the gradient checker --------------------------------------------------------------------- */

typedef struct {
  double step;  /* finite-difference step */
  double thr;   /* relative threshold */
  double floor; /* the scale never drops below this (an absolute floor of thr * floor) */
  int kink;     /* piecewise linear: skip points whose one-sided differences disagree */
} gc_opts;

static const gc_opts GC = {1e-2, 1e-2, 1e-1, 0};
static const gc_opts GC_KINK = {1e-2, 1e-2, 1e-1, 1};

/* Runs every layer's forward without counting an iteration (the dropout mask stays put). */
static void forward_all(dd_net *n) {
  for (size_t i = 0; i < n->n_layers; i++) n->layers[i].ops->forward(&n->layers[i]);
}

typedef struct {
  dd_net *n;
  dd_layer *last;
  float *w[8]; /* weights of the last layer's non-loss tops (NULL for loss tops) */
} gc_ctx;

static double gc_objective(gc_ctx *g) {
  forward_all(g->n);
  double L = 0;
  for (size_t i = 0; i < g->n->n_layers; i++) {
    dd_layer *l = &g->n->layers[i];
    for (int t = 0; t < l->nt; t++) {
      const float *w = l == g->last && t < 8 ? g->w[t] : NULL;
      if (l->loss_weight[t] == 0 && !w) continue;
      float *y = dd_tensor_data_copy(l->top[t]);
      for (int64_t k = 0; k < l->top[t]->count; k++) L += (double)y[k] * (w ? w[k] : l->loss_weight[t]);
      free(y);
    }
  }
  return L;
}

/* Whether blob `t` (a net input) receives a gradient: some layer reading it propagates down. */
static int input_wants_grad(dd_net *n, const dd_tensor *t) {
  for (size_t i = 0; i < n->n_layers; i++) {
    dd_layer *l = &n->layers[i];
    if (!n->graph->layers[i].need_backward || !l->ops->backward) continue;
    for (int b = 0; b < l->nb; b++)
      if (l->bottom[b] == t && l->propagate_down[b]) return 1;
  }
  return 0;
}

#define GC_MAX_CHECKED 32
#define GC_SENTINEL 3.25f

/* Checks the gradient of the objective above with respect to every net input that receives one
 * and every parameter that learns. `what` names the check in messages. */
static void grad_check(dd_net *n, gc_opts o, const char *what) {
  gc_ctx g = {.n = n, .last = &n->layers[n->n_layers - 1]};
  dd_rng r;
  dd_rng_seed(&r, 1234);
  for (int t = 0; t < g.last->nt && t < 8; t++)
    if (g.last->loss_weight[t] == 0) {
      g.w[t] = malloc((size_t)g.last->top[t]->count * sizeof(float));
      uniform_fill(g.w[t], g.last->top[t]->count, &r, -1, 1);
    }
  /* what is checked: inputs with a gradient, learning parameters */
  dd_tensor *chk[GC_MAX_CHECKED], *quiet[GC_MAX_CHECKED];
  int is_param[GC_MAX_CHECKED], nchk = 0, nquiet = 0;
  for (size_t i = 0; i < n->n_layers; i++) {
    dd_layer *l = &n->layers[i];
    if (!strcmp(l->ops->type, "Input"))
      for (int t = 0; t < l->nt; t++) {
        if (input_wants_grad(n, l->top[t])) {
          if (nchk < GC_MAX_CHECKED) is_param[nchk] = 0, chk[nchk++] = l->top[t];
        } else if (nquiet < GC_MAX_CHECKED) {
          quiet[nquiet++] = l->top[t];
        }
      }
    for (int p = 0; p < l->n_params; p++)
      if (l->param_propagate_down[p] && n->graph->layers[i].need_backward && nchk < GC_MAX_CHECKED)
        is_param[nchk] = 1, chk[nchk++] = l->params[p];
  }
  CHECKF(nchk > 0, "%s: nothing to check", what);
  /* analytic gradients; bottom diffs start as a sentinel (they must be overwritten) */
  forward_all(n);
  for (int t = 0; t < g.last->nt && t < 8; t++)
    if (g.w[t]) dd_tensor_set_diff(g.last->top[t], g.w[t]);
  for (int c = 0; c < nchk; c++)
    if (!is_param[c]) be->ops->fill(be, chk[c]->diff, GC_SENTINEL, chk[c]->count);
  for (int q = 0; q < nquiet; q++) be->ops->fill(be, quiet[q]->diff, GC_SENTINEL, quiet[q]->count);
  dd_net_clear_param_diffs(n);
  dd_net_backward(n);
  float *ana[GC_MAX_CHECKED];
  for (int c = 0; c < nchk; c++) ana[c] = dd_tensor_diff_copy(chk[c]);
  for (int q = 0; q < nquiet; q++) {
    float *d = dd_tensor_diff_copy(quiet[q]);
    int64_t changed = 0;
    for (int64_t k = 0; k < quiet[q]->count; k++) changed += d[k] != GC_SENTINEL;
    CHECKF(changed == 0, "%s: %s gets no gradient, yet %lld of its diffs changed", what, quiet[q]->name,
           (long long)changed);
    free(d);
  }
  /* a second backward: bottom diffs the same (overwritten), parameter diffs doubled (accumulated) */
  dd_net_backward(n);
  for (int c = 0; c < nchk; c++) {
    float *d = dd_tensor_diff_copy(chk[c]);
    int64_t bad = 0;
    for (int64_t k = 0; k < chk[c]->count; k++) {
      float want = is_param[c] ? 2.0f * ana[c][k] : ana[c][k];
      bad += fabsf(d[k] - want) > 1e-6f * (1.0f + fabsf(want));
    }
    CHECKF(bad == 0, "%s: a second backward left %lld of %s's diffs %s", what, (long long)bad, chk[c]->name,
           is_param[c] ? "not doubled (parameter diffs must accumulate)" : "changed (bottom diffs are overwritten)");
    free(d);
  }
  /* numeric gradients */
  double L0 = gc_objective(&g);
  int64_t points = 0, skipped = 0, bad = 0;
  double worst = 0;
  for (int c = 0; c < nchk; c++) {
    dd_tensor *t = chk[c];
    float *x = dd_tensor_data_copy(t);
    for (int64_t k = 0; k < t->count; k++) {
      float v = x[k], vp = (float)(v + o.step), vm = (float)(v - o.step);
      be->ops->upload(be, t->data + k, &vp, sizeof vp);
      double Lp = gc_objective(&g);
      be->ops->upload(be, t->data + k, &vm, sizeof vm);
      double Lm = gc_objective(&g);
      be->ops->upload(be, t->data + k, &v, sizeof v);
      double hp = (double)vp - v, hm = (double)v - vm;
      double num = (Lp - Lm) / (hp + hm), a = ana[c][k];
      if (o.kink) {
        double fwd = (Lp - L0) / hp, bwd = (L0 - Lm) / hm;
        if (fabs(fwd - bwd) > o.thr * fmax(fmax(fabs(fwd), fabs(bwd)), o.floor)) {
          skipped++;
          continue;
        }
      }
      points++;
      double scale = fmax(fmax(fabs(a), fabs(num)), o.floor), err = fabs(a - num) / scale;
      if (err > worst) worst = err;
      if (err > o.thr) {
        if (bad < 5)
          fprintf(stderr, "     %s: d/d %s[%lld]: backward %.6g, finite difference %.6g\n", what, t->name,
                  (long long)k, a, num);
        bad++;
      }
    }
    free(x);
  }
  forward_all(n);
  CHECKF(bad == 0, "%s: %lld of %lld gradient entries off (worst relative error %.3g)", what, (long long)bad,
         (long long)points, worst);
  CHECKF(skipped * 5 <= points, "%s: %lld points skipped as kinks, %lld checked", what, (long long)skipped,
         (long long)points);
  printf("     %-44s %5lld points, worst %.1e%s\n", what, (long long)points, worst, skipped ? " (kinks skipped)" : "");
  for (int c = 0; c < nchk; c++) free(ana[c]);
  for (int t = 0; t < 8; t++) free(g.w[t]);
}

/* Builds `text` in TRAIN, fills its inputs with uniform values in [-1, 1) and checks gradients. */
static void check_grad(const char *what, const char *text, gc_opts o) {
  dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
  CHECKF(n != NULL, "%s: the net did not build", what);
  if (!n) return;
  fill_inputs(n, 11, -1, 1);
  grad_check(n, o, what);
  dd_net_destroy(n);
}

/* ---- 1. gradient checks, layer by layer ------------------------------------------------------- */

#define FB "force_backward: true\n"
#define WF "weight_filler { type: \"gaussian\" std: 0.5 } bias_filler { type: \"uniform\" min: -1 max: 1 }"

static void test_grad_convolution(void) {
  check_grad("conv 3x3 pad 1 bias",
             FB INPUT("x", "dim: 3 dim: 3 dim: 5 dim: 6")
             "layer { name: \"c\" type: \"Convolution\" bottom: \"x\" top: \"y\" convolution_param { "
             "num_output: 4 kernel_size: 3 pad: 1 " WF " } }", GC);
  check_grad("conv 3x3 stride 2 pad 1 no bias",
             FB INPUT("x", "dim: 2 dim: 3 dim: 7 dim: 6")
             "layer { name: \"c\" type: \"Convolution\" bottom: \"x\" top: \"y\" convolution_param { "
             "num_output: 3 kernel_size: 3 stride: 2 pad: 1 bias_term: false " WF " } }", GC);
  check_grad("conv 3x3 dilation 2 pad 2",
             FB INPUT("x", "dim: 2 dim: 2 dim: 7 dim: 7")
             "layer { name: \"c\" type: \"Convolution\" bottom: \"x\" top: \"y\" convolution_param { "
             "num_output: 3 kernel_size: 3 dilation: 2 pad: 2 " WF " } }", GC);
  check_grad("conv group 2",
             FB INPUT("x", "dim: 3 dim: 4 dim: 5 dim: 5")
             "layer { name: \"c\" type: \"Convolution\" bottom: \"x\" top: \"y\" convolution_param { "
             "num_output: 6 kernel_size: 3 pad: 1 group: 2 " WF " } }", GC);
  check_grad("conv kernel 3x2 pad 1x0 stride 2x1",
             FB INPUT("x", "dim: 2 dim: 3 dim: 6 dim: 5")
             "layer { name: \"c\" type: \"Convolution\" bottom: \"x\" top: \"y\" convolution_param { "
             "num_output: 4 kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 0 stride_h: 2 stride_w: 1 " WF " } }", GC);
  check_grad("conv 1x1 (fast path)",
             FB INPUT("x", "dim: 3 dim: 3 dim: 4 dim: 5")
             "layer { name: \"c\" type: \"Convolution\" bottom: \"x\" top: \"y\" convolution_param { "
             "num_output: 4 kernel_size: 1 " WF " } }", GC);
  check_grad("conv 1x1 group 2 (fast path)",
             FB INPUT("x", "dim: 2 dim: 4 dim: 3 dim: 3")
             "layer { name: \"c\" type: \"Convolution\" bottom: \"x\" top: \"y\" convolution_param { "
             "num_output: 6 kernel_size: 1 group: 2 " WF " } }", GC);
  check_grad("conv 1x1 stride 2 (im2col path)",
             FB INPUT("x", "dim: 2 dim: 3 dim: 5 dim: 5")
             "layer { name: \"c\" type: \"Convolution\" bottom: \"x\" top: \"y\" convolution_param { "
             "num_output: 2 kernel_size: 1 stride: 2 " WF " } }", GC);
}

static void check_grad_distinct(const char *what, const char *text, const char *const *inputs, int k) {
  dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
  CHECKF(n != NULL, "%s: the net did not build", what);
  if (!n) return;
  set_distinct(n, inputs, k, 5, 0.05f);
  grad_check(n, GC_KINK, what);
  dd_net_destroy(n);
}

static void test_grad_pooling(void) {
  static const char *const x[] = {"x"};
  check_grad_distinct("pool MAX 3x3 stride 2 pad 1",
                      FB INPUT("x", "dim: 2 dim: 2 dim: 5 dim: 5")
                      "layer { name: \"p\" type: \"Pooling\" bottom: \"x\" top: \"y\" pooling_param { "
                      "pool: MAX kernel_size: 3 stride: 2 pad: 1 } }", x, 1);
  check_grad_distinct("pool MAX 2x2 stride 2 (ceil: partial windows)",
                      FB INPUT("x", "dim: 2 dim: 2 dim: 5 dim: 5")
                      "layer { name: \"p\" type: \"Pooling\" bottom: \"x\" top: \"y\" pooling_param { "
                      "pool: MAX kernel_size: 2 stride: 2 } }", x, 1);
  check_grad("pool AVE 3x3 stride 2 pad 1",
             FB INPUT("x", "dim: 2 dim: 2 dim: 6 dim: 6")
             "layer { name: \"p\" type: \"Pooling\" bottom: \"x\" top: \"y\" pooling_param { "
             "pool: AVE kernel_size: 3 stride: 2 pad: 1 } }", GC);
  check_grad("pool AVE 2x2 stride 2 (ceil: partial windows)",
             FB INPUT("x", "dim: 2 dim: 2 dim: 5 dim: 5")
             "layer { name: \"p\" type: \"Pooling\" bottom: \"x\" top: \"y\" pooling_param { "
             "pool: AVE kernel_size: 2 stride: 2 } }", GC);
  check_grad("pool AVE kernel 3x2 stride 2x1 pad 1x0",
             FB INPUT("x", "dim: 2 dim: 2 dim: 5 dim: 4")
             "layer { name: \"p\" type: \"Pooling\" bottom: \"x\" top: \"y\" pooling_param { "
             "pool: AVE kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0 } }", GC);
  check_grad("pool global AVE",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"p\" type: \"Pooling\" bottom: \"x\" top: \"y\" pooling_param { "
             "pool: AVE global_pooling: true } }", GC);
  check_grad_distinct("pool global MAX",
                      FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
                      "layer { name: \"p\" type: \"Pooling\" bottom: \"x\" top: \"y\" pooling_param { "
                      "pool: MAX global_pooling: true } }", x, 1);
}

static void test_grad_inner_product(void) {
  check_grad("ip bias",
             FB INPUT("x", "dim: 3 dim: 2 dim: 3 dim: 2")
             "layer { name: \"f\" type: \"InnerProduct\" bottom: \"x\" top: \"y\" inner_product_param { "
             "num_output: 5 " WF " } }", GC);
  check_grad("ip no bias",
             FB INPUT("x", "dim: 4 dim: 7")
             "layer { name: \"f\" type: \"InnerProduct\" bottom: \"x\" top: \"y\" inner_product_param { "
             "num_output: 3 bias_term: false " WF " } }", GC);
  check_grad("ip transpose",
             FB INPUT("x", "dim: 3 dim: 2 dim: 3 dim: 2")
             "layer { name: \"f\" type: \"InnerProduct\" bottom: \"x\" top: \"y\" inner_product_param { "
             "num_output: 5 transpose: true " WF " } }", GC);
  check_grad("ip axis 2 on 4-D",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 2")
             "layer { name: \"f\" type: \"InnerProduct\" bottom: \"x\" top: \"y\" inner_product_param { "
             "num_output: 5 axis: 2 " WF " } }", GC);
  /* the top shape: (2, 3, 5) */
  dd_net *n = make_net(FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 2")
                       "layer { name: \"f\" type: \"InnerProduct\" bottom: \"x\" top: \"y\" inner_product_param { "
                       "num_output: 5 axis: 2 } }", CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  dd_tensor *y = blob(n, "y");
  CHECK(y->shape.ndim == 3 && y->shape.dims[0] == 2 && y->shape.dims[1] == 3 && y->shape.dims[2] == 5);
  CHECK(n->layers[1].params[0]->shape.dims[0] == 5 && n->layers[1].params[0]->shape.dims[1] == 8);
  dd_net_destroy(n);
}

/* An InnerProduct big enough for the backend to split its GEMMs across threads, against direct
 * sums: forward, dx, dW (both weight layouts) and the bias gradient. */
static void test_inner_product_large(void) {
  enum { M = 64, K = 256, N = 192 };
  for (int tr = 0; tr < 2; tr++) {
    char text[1024];
    snprintf(text, sizeof text,
             FB INPUT("x", "dim: 64 dim: 4 dim: 8 dim: 8")
             "layer { name: \"f\" type: \"InnerProduct\" bottom: \"x\" top: \"y\" inner_product_param { "
             "num_output: 192 transpose: %s " WF " } }", tr ? "true" : "false");
    dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
    REQUIRE(n);
    set_uniform(n, "x", 70 + tr, -1, 1);
    dd_net_forward(n, NULL);
    dd_layer *l = layer(n, "f");
    float *x = dd_tensor_data_copy(blob(n, "x")), *w = dd_tensor_data_copy(l->params[0]), *b = dd_tensor_data_copy(l->params[1]);
    float *y = dd_tensor_data_copy(blob(n, "y")), *dy = malloc(M * N * sizeof *dy);
    float *want = malloc(M * N * sizeof *want);
    for (int m = 0; m < M; m++)
      for (int j = 0; j < N; j++) {
        double acc = b[j];
        for (int k = 0; k < K; k++) acc += (double)x[m * K + k] * (tr ? w[k * N + j] : w[j * K + k]);
        want[m * N + j] = (float)acc;
      }
    CHECKF(max_rel_diff(y, want, M * N) < 1e-5, "transpose %d: forward differs by %.3g", tr, max_rel_diff(y, want, M * N));
    dd_rng r;
    dd_rng_seed(&r, 3);
    uniform_fill(dy, M * N, &r, -1, 1);
    dd_tensor_set_diff(blob(n, "y"), dy);
    dd_net_clear_param_diffs(n);
    dd_net_backward(n);
    float *dx = dd_tensor_diff_copy(blob(n, "x")), *dw = dd_tensor_diff_copy(l->params[0]), *db = dd_tensor_diff_copy(l->params[1]);
    float *rdx = malloc(M * K * sizeof *rdx), *rdw = malloc(N * K * sizeof *rdw), rdb[N];
    for (int m = 0; m < M; m++)
      for (int k = 0; k < K; k++) {
        double acc = 0;
        for (int j = 0; j < N; j++) acc += (double)dy[m * N + j] * (tr ? w[k * N + j] : w[j * K + k]);
        rdx[m * K + k] = (float)acc;
      }
    for (int j = 0; j < N; j++) {
      double sb = 0;
      for (int m = 0; m < M; m++) sb += dy[m * N + j];
      rdb[j] = (float)sb;
      for (int k = 0; k < K; k++) {
        double acc = 0;
        for (int m = 0; m < M; m++) acc += (double)dy[m * N + j] * x[m * K + k];
        rdw[tr ? k * N + j : j * K + k] = (float)acc;
      }
    }
    CHECKF(max_rel_diff(dx, rdx, M * K) < 1e-5, "transpose %d: dx differs by %.3g", tr, max_rel_diff(dx, rdx, M * K));
    CHECKF(max_rel_diff(dw, rdw, N * K) < 1e-5, "transpose %d: dW differs by %.3g", tr, max_rel_diff(dw, rdw, N * K));
    CHECKF(max_rel_diff(db, rdb, N) < 1e-5, "transpose %d: db differs by %.3g", tr, max_rel_diff(db, rdb, N));
    free(x);
    free(w);
    free(b);
    free(y);
    free(dy);
    free(want);
    free(dx);
    free(dw);
    free(db);
    free(rdx);
    free(rdw);
    dd_net_destroy(n);
  }
}

static void test_grad_batch_norm(void) {
  check_grad("bn batch statistics",
             FB INPUT("x", "dim: 3 dim: 4 dim: 2 dim: 3")
             "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"x\" top: \"y\" }", GC);
  check_grad("bn batch statistics, 2-D (N, C)",
             FB INPUT("x", "dim: 6 dim: 3")
             "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"x\" top: \"y\" batch_norm_param { eps: 1e-3 } }", GC);
  /* stored statistics, non-zero */
  dd_net *n = make_net(FB INPUT("x", "dim: 3 dim: 4 dim: 2 dim: 3")
                       "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"x\" top: \"y\" "
                       "batch_norm_param { use_global_stats: true } }", CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  dd_layer *l = layer(n, "bn");
  REQUIRE(l);
  float ms[4] = {0.5f, -1.0f, 2.0f, 0.25f}, vs[4] = {1.0f, 3.0f, 0.5f, 2.0f}, s = 2.5f;
  dd_tensor_set_data(l->params[0], ms);
  dd_tensor_set_data(l->params[1], vs);
  dd_tensor_set_data(l->params[2], &s);
  fill_inputs(n, 3, -2, 2);
  grad_check(n, GC, "bn use_global_stats: true");
  dd_net_destroy(n);
}

static void test_grad_scale(void) {
#define SF "filler { type: \"uniform\" min: 0.5 max: 1.5 } bias_filler { type: \"uniform\" min: -1 max: 1 }"
  check_grad("scale 1 bottom, bias_term",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"s\" type: \"Scale\" bottom: \"x\" top: \"y\" scale_param { bias_term: true " SF " } }", GC);
  check_grad("scale 1 bottom, no bias",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"s\" type: \"Scale\" bottom: \"x\" top: \"y\" scale_param { " SF " } }", GC);
  check_grad("scale axis 0 num_axes 2",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"s\" type: \"Scale\" bottom: \"x\" top: \"y\" scale_param { axis: 0 num_axes: 2 "
             "bias_term: true " SF " } }", GC);
  check_grad("scale axis 2 num_axes -1",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"s\" type: \"Scale\" bottom: \"x\" top: \"y\" scale_param { axis: 2 num_axes: -1 "
             "bias_term: true " SF " } }", GC);
  check_grad("scale num_axes 0 (a scalar)",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"s\" type: \"Scale\" bottom: \"x\" top: \"y\" scale_param { num_axes: 0 "
             "bias_term: true " SF " } }", GC);
  check_grad("scale axis -3 (canonical 1)",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"s\" type: \"Scale\" bottom: \"x\" top: \"y\" scale_param { axis: -3 " SF " } }", GC);
  check_grad("scale 2 bottoms",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5") INPUT("s", "dim: 3 dim: 4")
             "layer { name: \"sc\" type: \"Scale\" bottom: \"x\" bottom: \"s\" top: \"y\" }", GC);
  check_grad("scale 2 bottoms, bias_term",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5") INPUT("s", "dim: 3")
             "layer { name: \"sc\" type: \"Scale\" bottom: \"x\" bottom: \"s\" top: \"y\" scale_param { "
             "bias_term: true " SF " } }", GC);
  check_grad("scale 2 bottoms, axis 0",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5") INPUT("s", "dim: 2 dim: 3")
             "layer { name: \"sc\" type: \"Scale\" bottom: \"x\" bottom: \"s\" top: \"y\" scale_param { axis: 0 } }", GC);
  /* the parameter shapes */
  dd_net *n = make_net(INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
                       "layer { name: \"s\" type: \"Scale\" bottom: \"x\" top: \"y\" scale_param { axis: 2 num_axes: -1 "
                       "bias_term: true } }", CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  dd_layer *l = layer(n, "s");
  CHECK(l->n_params == 2 && l->params[0]->shape.ndim == 2 && l->params[0]->shape.dims[0] == 4 &&
        l->params[0]->shape.dims[1] == 5 && dd_shape_equal(&l->params[0]->shape, &l->params[1]->shape));
  float *s = dd_tensor_data_copy(l->params[0]), *b = dd_tensor_data_copy(l->params[1]);
  CHECK(s[0] == 1.0f && s[19] == 1.0f && b[0] == 0.0f && b[19] == 0.0f); /* Caffe's defaults: 1 and 0 */
  free(s);
  free(b);
  dd_net_destroy(n);
#undef SF
}

static void test_grad_bias(void) {
  check_grad("bias 1 bottom",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"b\" type: \"Bias\" bottom: \"x\" top: \"y\" bias_param { "
             "filler { type: \"uniform\" min: -1 max: 1 } } }", GC);
  check_grad("bias 1 bottom, axis 1 num_axes 2",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"b\" type: \"Bias\" bottom: \"x\" top: \"y\" bias_param { axis: 1 num_axes: 2 "
             "filler { type: \"uniform\" min: -1 max: 1 } } }", GC);
  check_grad("bias 2 bottoms",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5") INPUT("b", "dim: 3 dim: 4")
             "layer { name: \"bi\" type: \"Bias\" bottom: \"x\" bottom: \"b\" top: \"y\" }", GC);
}

static void test_grad_relu(void) {
  check_grad("relu", FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"r\" type: \"ReLU\" bottom: \"x\" top: \"y\" }", GC_KINK);
  check_grad("relu negative_slope 0.1", FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"r\" type: \"ReLU\" bottom: \"x\" top: \"y\" relu_param { negative_slope: 0.1 } }",
             GC_KINK);
}

static void test_grad_eltwise(void) {
  check_grad("eltwise SUM coeff 0.5 -2 1.5",
             FB INPUT("a", "dim: 2 dim: 3 dim: 2 dim: 2") INPUT("b", "dim: 2 dim: 3 dim: 2 dim: 2")
             INPUT("c", "dim: 2 dim: 3 dim: 2 dim: 2")
             "layer { name: \"e\" type: \"Eltwise\" bottom: \"a\" bottom: \"b\" bottom: \"c\" top: \"y\" "
             "eltwise_param { operation: SUM coeff: 0.5 coeff: -2 coeff: 1.5 } }", GC);
  check_grad("eltwise SUM (default)",
             FB INPUT("a", "dim: 2 dim: 3") INPUT("b", "dim: 2 dim: 3")
             "layer { name: \"e\" type: \"Eltwise\" bottom: \"a\" bottom: \"b\" top: \"y\" }", GC);
  check_grad("eltwise PROD 3 bottoms",
             FB INPUT("a", "dim: 2 dim: 3 dim: 2 dim: 2") INPUT("b", "dim: 2 dim: 3 dim: 2 dim: 2")
             INPUT("c", "dim: 2 dim: 3 dim: 2 dim: 2")
             "layer { name: \"e\" type: \"Eltwise\" bottom: \"a\" bottom: \"b\" bottom: \"c\" top: \"y\" "
             "eltwise_param { operation: PROD } }", GC);
  static const char *const abc[] = {"a", "b", "c"};
  check_grad_distinct("eltwise MAX 3 bottoms",
                      FB INPUT("a", "dim: 2 dim: 3 dim: 2 dim: 2") INPUT("b", "dim: 2 dim: 3 dim: 2 dim: 2")
                      INPUT("c", "dim: 2 dim: 3 dim: 2 dim: 2")
                      "layer { name: \"e\" type: \"Eltwise\" bottom: \"a\" bottom: \"b\" bottom: \"c\" top: \"y\" "
                      "eltwise_param { operation: MAX } }", abc, 3);
}

/* MAX ties go where Caffe sends them: between bottoms 0 and 1 to bottom 1 (Caffe tests a > b,
 * else takes b), from bottom 2 on to the earlier bottom (strictly greater wins). */
static void test_eltwise_max_ties(void) {
  for (int in_place = 0; in_place < 2; in_place++) {
    char text[1024];
    snprintf(text, sizeof text, FB INPUT("a", "dim: 4") INPUT("b", "dim: 4") INPUT("c", "dim: 4")
             "layer { name: \"e\" type: \"Eltwise\" bottom: \"a\" bottom: \"b\" bottom: \"c\" top: \"%s\" "
             "eltwise_param { operation: MAX } }", in_place ? "a" : "y");
    const char *top = in_place ? "a" : "y";
    dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
    REQUIRE(n);
    /* position 0: a == b; 1: a == b == c; 2: b == c > a; 3: a == c > b */
    float a[4] = {1, 2, 0, 5}, b[4] = {1, 2, 3, 1}, c[4] = {0, 2, 3, 5}, dy[4] = {10, 20, 30, 40};
    set_values(n, "a", a);
    set_values(n, "b", b);
    set_values(n, "c", c);
    dd_net_forward(n, NULL);
    float *y = dd_tensor_data_copy(blob(n, top));
    dd_tensor_set_diff(blob(n, top), dy);
    dd_net_backward(n);
    float *da = dd_tensor_diff_copy(blob(n, "a")), *db = dd_tensor_diff_copy(blob(n, "b")), *dc = dd_tensor_diff_copy(blob(n, "c"));
    const float wa[4] = {0, 0, 0, 40}, wb[4] = {10, 20, 30, 0}, wc[4] = {0, 0, 0, 0}, wy[4] = {1, 2, 3, 5};
    for (int i = 0; i < 4; i++) {
      CHECKF(y[i] == wy[i], "y[%d] = %g, want %g", i, y[i], wy[i]);
      CHECKF(da[i] == wa[i] && db[i] == wb[i] && dc[i] == wc[i], "%s position %d: gradients %g %g %g, Caffe gives %g %g %g",
             in_place ? "in place" : "", i, da[i], db[i], dc[i], wa[i], wb[i], wc[i]);
    }
    free(da);
    free(db);
    free(dc);
    free(y);
    dd_net_destroy(n);
  }
}

static void test_grad_softmax(void) {
  check_grad("softmax axis 1 on 4-D",
             FB INPUT("x", "dim: 2 dim: 4 dim: 3 dim: 2")
             "layer { name: \"s\" type: \"Softmax\" bottom: \"x\" top: \"y\" }", GC);
  check_grad("softmax axis -1 on 3-D",
             FB INPUT("x", "dim: 2 dim: 3 dim: 5")
             "layer { name: \"s\" type: \"Softmax\" bottom: \"x\" top: \"y\" softmax_param { axis: -1 } }", GC);
}

static const char *const sml_modes[] = {"normalization: FULL", "normalization: VALID",
                                        "normalization: BATCH_SIZE", "normalization: NONE",
                                        "normalize: false", "normalize: true", ""};

static void test_grad_softmax_loss(void) {
  for (size_t m = 0; m < sizeof sml_modes / sizeof sml_modes[0]; m++)
    for (int ign = 0; ign < 2; ign++) {
      char text[2048], what[128];
      snprintf(text, sizeof text,
               FB INPUT("x", "dim: 3 dim: 5 dim: 2 dim: 2") INPUT("label", "dim: 3 dim: 2 dim: 2")
               "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"x\" bottom: \"label\" top: \"loss\" "
               "loss_param { %s %s } }", sml_modes[m], ign ? "ignore_label: 2" : "");
      snprintf(what, sizeof what, "softmax loss {%s%s}", sml_modes[m], ign ? " ignore_label" : "");
      dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
      CHECKF(n != NULL, "%s", what);
      if (!n) continue;
      set_uniform(n, "x", 3 + m, -2, 2);
      set_labels(n, "label", 5, 9 + m, 0, 0);
      grad_check(n, GC, what);
      dd_net_destroy(n);
    }
  /* loss_weight 2, and a spatial softmax axis */
  dd_net *n = make_net(FB INPUT("x", "dim: 2 dim: 4 dim: 3") INPUT("label", "dim: 2 dim: 3")
                       "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"x\" bottom: \"label\" top: \"loss\" "
                       "loss_weight: 2 }", CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  set_uniform(n, "x", 4, -2, 2);
  set_labels(n, "label", 4, 5, 0, 0);
  grad_check(n, GC, "softmax loss, loss_weight 2");
  dd_net_destroy(n);
}

static void test_grad_concat(void) {
  check_grad("concat axis 0",
             FB INPUT("a", "dim: 2 dim: 3 dim: 2 dim: 2") INPUT("b", "dim: 1 dim: 3 dim: 2 dim: 2")
             "layer { name: \"c\" type: \"Concat\" bottom: \"a\" bottom: \"b\" top: \"y\" concat_param { axis: 0 } }", GC);
  check_grad("concat axis 1, 3 bottoms",
             FB INPUT("a", "dim: 2 dim: 3 dim: 2 dim: 2") INPUT("b", "dim: 2 dim: 1 dim: 2 dim: 2")
             INPUT("c", "dim: 2 dim: 2 dim: 2 dim: 2")
             "layer { name: \"c\" type: \"Concat\" bottom: \"a\" bottom: \"b\" bottom: \"c\" top: \"y\" }", GC);
  /* the values: rows of a, then of b, within each outer index */
  dd_net *n = make_net(FB INPUT("a", "dim: 2 dim: 2") INPUT("b", "dim: 2 dim: 1")
                       "layer { name: \"c\" type: \"Concat\" bottom: \"a\" bottom: \"b\" top: \"y\" }", CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  float a[4] = {1, 2, 3, 4}, b[2] = {5, 6}, want[6] = {1, 2, 5, 3, 4, 6};
  set_values(n, "a", a);
  set_values(n, "b", b);
  dd_net_forward(n, NULL);
  float *y = dd_tensor_data_copy(blob(n, "y"));
  CHECK(memcmp(y, want, sizeof want) == 0);
  free(y);
  dd_net_destroy(n);
}

static void test_grad_flatten_split(void) {
  check_grad("flatten", FB INPUT("x", "dim: 2 dim: 3 dim: 2 dim: 2")
             "layer { name: \"f\" type: \"Flatten\" bottom: \"x\" top: \"y\" }", GC);
  check_grad("split (explicit, 3 tops)", FB INPUT("x", "dim: 2 dim: 3 dim: 2")
             "layer { name: \"s\" type: \"Split\" bottom: \"x\" top: \"y0\" top: \"y1\" top: \"y2\" }", GC);
  dd_net *n = make_net(INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
                       "layer { name: \"f\" type: \"Flatten\" bottom: \"x\" top: \"y\" flatten_param { axis: 1 end_axis: 2 } }",
                       CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  dd_tensor *y = blob(n, "y");
  CHECK(y->shape.ndim == 3 && y->shape.dims[0] == 2 && y->shape.dims[1] == 12 && y->shape.dims[2] == 5);
  dd_net_destroy(n);
}

static void test_grad_dropout_fixed_mask(void) {
  /* with the mask held (no new iteration), dropout is linear: the checker applies */
  check_grad("dropout TRAIN (mask held)", FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"d\" type: \"Dropout\" bottom: \"x\" top: \"y\" dropout_param { dropout_ratio: 0.3 } }", GC);
}

/* ---- KDLoss ------------------------------------------------------------------------------------ */

/* T^2 * KL(softmax(t/T) || softmax(s/T)) averaged over the rows, in double. */
static double kd_reference(const float *s, const float *t, int rows, int ch, double T) {
  double total = 0;
  for (int r = 0; r < rows; r++) {
    double zs = 0, zt = 0, ms = -INFINITY, mt = -INFINITY;
    for (int c = 0; c < ch; c++) {
      ms = fmax(ms, s[r * ch + c] / T);
      mt = fmax(mt, t[r * ch + c] / T);
    }
    for (int c = 0; c < ch; c++) {
      zs += exp(s[r * ch + c] / T - ms);
      zt += exp(t[r * ch + c] / T - mt);
    }
    double kl = 0;
    for (int c = 0; c < ch; c++) {
      double p = exp(t[r * ch + c] / T - mt) / zt, q = exp(s[r * ch + c] / T - ms) / zs;
      kl += p * log(p / q);
    }
    total += T * T * kl;
  }
  return total / rows;
}

static void test_kd_loss(void) {
  const double temps[] = {1.0, 2.0, 4.0};
  for (int k = 0; k < 3; k++) {
    char text[1024], what[64];
    snprintf(text, sizeof text,
             FB INPUT("s", "dim: 4 dim: 6") INPUT("t", "dim: 4 dim: 6")
             "layer { name: \"kd\" type: \"KDLoss\" bottom: \"s\" bottom: \"t\" top: \"kd\" "
             "distill_loss_param { temperature: %g } }", temps[k]);
    dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
    REQUIRE(n);
    set_uniform(n, "s", 20 + k, -3, 3);
    set_uniform(n, "t", 40 + k, -3, 3);
    double loss;
    dd_net_forward(n, &loss);
    float *s = dd_tensor_data_copy(blob(n, "s")), *t = dd_tensor_data_copy(blob(n, "t")), *top = dd_tensor_data_copy(blob(n, "kd"));
    double want = kd_reference(s, t, 4, 6, temps[k]);
    CHECKF(fabs(top[0] - want) <= 1e-5 * fmax(1, fabs(want)), "T=%g: loss %.8g, hand computation %.8g", temps[k],
           top[0], want);
    CHECKF(fabs(loss - want) <= 1e-5 * fmax(1, fabs(want)), "T=%g: net loss %.8g", temps[k], loss);
    free(s);
    free(t);
    free(top);
    snprintf(what, sizeof what, "kd loss T=%g (teacher gets none)", temps[k]);
    grad_check(n, GC, what);
    dd_net_destroy(n);
  }
  /* identical logits: zero loss and zero gradient */
  dd_net *n = make_net(FB INPUT("s", "dim: 2 dim: 3") INPUT("t", "dim: 2 dim: 3")
                       "layer { name: \"kd\" type: \"KDLoss\" bottom: \"s\" bottom: \"t\" top: \"kd\" loss_weight: 0.5 }",
                       CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  float v[6] = {1, 2, 3, -1, 0, 1};
  set_values(n, "s", v);
  set_values(n, "t", v);
  double loss;
  dd_net_forward(n, &loss);
  dd_net_backward(n);
  float *ds = dd_tensor_diff_copy(blob(n, "s"));
  CHECKF(fabs(loss) < 1e-6, "loss %g", loss);
  for (int i = 0; i < 6; i++) CHECKF(fabsf(ds[i]) < 1e-6f, "ds[%d] = %g", i, ds[i]);
  free(ds);
  /* loss_weight 0.5 scales the gradient */
  set_uniform(n, "s", 3, -2, 2);
  grad_check(n, GC, "kd loss, loss_weight 0.5");
  dd_net_destroy(n);
}

/* ---- 2. forward values against hand computations --------------------------------------------- */

/* A direct convolution: y (N, O, OH, OW) from x (N, C, H, W), w (O, C / G, KH, KW), bias (O). */
static void conv_reference(float *y, const float *x, const float *w, const float *bias, int N, int C, int H, int W,
                           int O, int OH, int OW, int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW,
                           int G) {
  int cg = C / G, og = O / G;
  for (int n = 0; n < N; n++)
    for (int o = 0; o < O; o++)
      for (int oh = 0; oh < OH; oh++)
        for (int ow = 0; ow < OW; ow++) {
          double acc = bias ? bias[o] : 0;
          int g = o / og;
          for (int c = 0; c < cg; c++)
            for (int ki = 0; ki < KH; ki++)
              for (int kj = 0; kj < KW; kj++) {
                int ih = oh * SH - PH + ki * DH, iw = ow * SW - PW + kj * DW;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                acc += (double)x[((n * C + g * cg + c) * H + ih) * W + iw] * w[((o * cg + c) * KH + ki) * KW + kj];
              }
          y[((n * O + o) * OH + oh) * OW + ow] = (float)acc;
        }
}

static void test_conv_forward_reference(void) {
  static const struct {
    const char *param;
    int N, C, H, W, O, KH, KW, SH, SW, PH, PW, DH, DW, G, bias;
  } cases[] = {
      {"num_output: 6 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 2 dilation: 2 group: 2",
       2, 4, 7, 8, 6, 3, 2, 2, 1, 1, 2, 2, 2, 2, 1},
      {"num_output: 4 kernel_size: 3 pad: 1", 3, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
      {"num_output: 3 kernel_size: 3 stride: 2 dilation: 1 dilation: 2 bias_term: false",
       2, 2, 9, 9, 3, 3, 3, 2, 2, 0, 0, 1, 2, 1, 0},
      {"num_output: 4 kernel_size: 1 group: 2", 2, 6, 3, 4, 4, 1, 1, 1, 1, 0, 0, 1, 1, 2, 1},
      {"num_output: 2 kernel_size: 1 stride: 2 pad: 1", 1, 3, 5, 5, 2, 1, 1, 2, 2, 1, 1, 1, 1, 1, 1},
      {"num_output: 8 kernel_size: 3 pad: 1 group: 4", 2, 8, 4, 4, 8, 3, 3, 1, 1, 1, 1, 1, 1, 4, 1},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    char text[1024], dims[128];
    snprintf(dims, sizeof dims, "dim: %d dim: %d dim: %d dim: %d", cases[k].N, cases[k].C, cases[k].H, cases[k].W);
    snprintf(text, sizeof text,
             FB "layer { name: \"x\" type: \"Input\" top: \"x\" input_param { shape { %s } } }\n"
             "layer { name: \"c\" type: \"Convolution\" bottom: \"x\" top: \"y\" convolution_param { %s " WF " } }",
             dims, cases[k].param);
    dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
    CHECKF(n != NULL, "case %zu", k);
    if (!n) continue;
    set_uniform(n, "x", 100 + k, -1, 1);
    dd_net_forward(n, NULL);
    dd_layer *l = layer(n, "c");
    dd_tensor *y = blob(n, "y");
    int OH = (cases[k].H + 2 * cases[k].PH - (cases[k].DH * (cases[k].KH - 1) + 1)) / cases[k].SH + 1;
    int OW = (cases[k].W + 2 * cases[k].PW - (cases[k].DW * (cases[k].KW - 1) + 1)) / cases[k].SW + 1;
    CHECKF(y->shape.dims[2] == OH && y->shape.dims[3] == OW, "case %zu: top %lldx%lld, want %dx%d", k,
           (long long)y->shape.dims[2], (long long)y->shape.dims[3], OH, OW);
    CHECKF(l->n_params == (cases[k].bias ? 2 : 1), "case %zu: %d params", k, l->n_params);
    if (y->shape.dims[2] != OH || y->shape.dims[3] != OW) {
      dd_net_destroy(n);
      continue;
    }
    float *x = dd_tensor_data_copy(blob(n, "x")), *w = dd_tensor_data_copy(l->params[0]), *b = cases[k].bias ? dd_tensor_data_copy(l->params[1]) : NULL;
    float *got = dd_tensor_data_copy(y), *want = malloc((size_t)y->count * sizeof *want);
    conv_reference(want, x, w, b, cases[k].N, cases[k].C, cases[k].H, cases[k].W, cases[k].O, OH, OW, cases[k].KH,
                   cases[k].KW, cases[k].SH, cases[k].SW, cases[k].PH, cases[k].PW, cases[k].DH, cases[k].DW, cases[k].G);
    double e = max_rel_diff(got, want, y->count);
    CHECKF(e < 1e-5, "case %zu (%s): forward differs from the direct convolution by %.3g", k, cases[k].param, e);
    /* backward against direct sums: dx, dw, db for dy = w' */
    float *dy = malloc((size_t)y->count * sizeof *dy);
    dd_rng r;
    dd_rng_seed(&r, 77 + k);
    uniform_fill(dy, y->count, &r, -1, 1);
    dd_tensor_set_diff(y, dy);
    dd_net_clear_param_diffs(n);
    dd_net_backward(n);
    dd_tensor *xt = blob(n, "x");
    int64_t wc = l->params[0]->count;
    double *rdx = calloc((size_t)xt->count, sizeof *rdx), *rdw = calloc((size_t)wc, sizeof *rdw),
           *rdb = calloc((size_t)cases[k].O, sizeof *rdb);
    int C = cases[k].C, H = cases[k].H, W = cases[k].W, O = cases[k].O, G = cases[k].G, cg = C / G, og = O / G;
    for (int nn = 0; nn < cases[k].N; nn++)
      for (int o = 0; o < O; o++)
        for (int oh = 0; oh < OH; oh++)
          for (int ow = 0; ow < OW; ow++) {
            double g = dy[((nn * O + o) * OH + oh) * OW + ow];
            rdb[o] += g;
            for (int c = 0; c < cg; c++)
              for (int ki = 0; ki < cases[k].KH; ki++)
                for (int kj = 0; kj < cases[k].KW; kj++) {
                  int ih = oh * cases[k].SH - cases[k].PH + ki * cases[k].DH;
                  int iw = ow * cases[k].SW - cases[k].PW + kj * cases[k].DW;
                  if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                  int64_t xi = ((int64_t)(nn * C + (o / og) * cg + c) * H + ih) * W + iw;
                  int64_t wi = ((int64_t)(o * cg + c) * cases[k].KH + ki) * cases[k].KW + kj;
                  rdx[xi] += g * w[wi];
                  rdw[wi] += g * x[xi];
                }
          }
    float *gdx = dd_tensor_diff_copy(xt), *gdw = dd_tensor_diff_copy(l->params[0]), *gdb = b ? dd_tensor_diff_copy(l->params[1]) : NULL;
    float *fdx = malloc((size_t)xt->count * sizeof *fdx), *fdw = malloc((size_t)wc * sizeof *fdw), fdb[16];
    for (int64_t i = 0; i < xt->count; i++) fdx[i] = (float)rdx[i];
    for (int64_t i = 0; i < wc; i++) fdw[i] = (float)rdw[i];
    for (int i = 0; i < O; i++) fdb[i] = (float)rdb[i];
    CHECKF(max_rel_diff(gdx, fdx, xt->count) < 1e-5, "case %zu: dx differs from direct sums by %.3g", k,
           max_rel_diff(gdx, fdx, xt->count));
    CHECKF(max_rel_diff(gdw, fdw, wc) < 1e-5, "case %zu: dw differs from direct sums by %.3g", k,
           max_rel_diff(gdw, fdw, wc));
    if (gdb) CHECKF(max_rel_diff(gdb, fdb, O) < 1e-5, "case %zu: db differs by %.3g", k, max_rel_diff(gdb, fdb, O));
    free(gdx);
    free(gdw);
    free(gdb);
    free(fdx);
    free(fdw);
    free(rdx);
    free(rdw);
    free(rdb);
    free(dy);
    free(x);
    free(w);
    free(b);
    free(got);
    free(want);
    dd_net_destroy(n);
  }
}

/* Caffe's pooling, written out: output size ceil((H + 2p - k) / s) + 1, one less when the last
 * window would start in the padding (checked on both axes whenever either pad is non-zero); AVE
 * divides by the window clipped to the padded input (padding counted), MAX ignores padding. */
static int pool_out(int in, int k, int s, int p, int any_pad) {
  int o = (int)ceil((double)(in + 2 * p - k) / s) + 1;
  if (any_pad && (o - 1) * s >= in + p) o--;
  return o;
}

static void pool_reference(float *y, const float *x, int planes, int H, int W, int KH, int KW, int SH, int SW, int PH,
                           int PW, int ave) {
  int any = PH || PW, OH = pool_out(H, KH, SH, PH, any), OW = pool_out(W, KW, SW, PW, any);
  for (int p = 0; p < planes; p++)
    for (int oh = 0; oh < OH; oh++)
      for (int ow = 0; ow < OW; ow++) {
        int hs = oh * SH - PH, ws = ow * SW - PW;
        int he = hs + KH < H + PH ? hs + KH : H + PH, we = ws + KW < W + PW ? ws + KW : W + PW;
        int divisor = (he - hs) * (we - ws);
        double acc = 0, best = -INFINITY;
        for (int h = hs; h < hs + KH; h++)
          for (int w = ws; w < ws + KW; w++) {
            if (h < 0 || h >= H || w < 0 || w >= W) continue;
            double v = x[(p * H + h) * W + w];
            acc += v;
            if (v > best) best = v;
          }
        y[(p * OH + oh) * OW + ow] = (float)(ave ? acc / divisor : best);
      }
}

static void test_pool_forward_reference(void) {
  static const struct {
    int H, W, KH, KW, SH, SW, PH, PW, OH, OW;
  } cases[] = {
      {5, 5, 3, 3, 2, 2, 1, 1, 3, 3}, /* the classic: every window 9 with padding counted */
      {6, 6, 3, 3, 2, 2, 1, 1, 4, 4}, /* last window: 2 rows of the padded input */
      {5, 5, 2, 2, 2, 2, 1, 1, 3, 3}, /* ceil gives 4; the 4th window would start in the padding */
      {5, 5, 2, 2, 2, 2, 0, 0, 3, 3}, /* ceil, no pad: partial last windows */
      {7, 5, 3, 2, 2, 3, 1, 0, 4, 2},
      {5, 5, 1, 3, 3, 3, 0, 1, 2, 2}, /* pad_w alone trims the height too (Caffe tests pad_h || pad_w) */
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
    for (int ave = 0; ave < 2; ave++) {
      char text[1024];
      snprintf(text, sizeof text,
               FB "layer { name: \"x\" type: \"Input\" top: \"x\" input_param { shape { dim: 2 dim: 3 dim: %d dim: %d } } }\n"
               "layer { name: \"p\" type: \"Pooling\" bottom: \"x\" top: \"y\" pooling_param { pool: %s "
               "kernel_h: %d kernel_w: %d stride_h: %d stride_w: %d pad_h: %d pad_w: %d } }",
               cases[k].H, cases[k].W, ave ? "AVE" : "MAX", cases[k].KH, cases[k].KW, cases[k].SH, cases[k].SW,
               cases[k].PH, cases[k].PW);
      dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
      CHECKF(n != NULL, "case %zu", k);
      if (!n) continue;
      dd_tensor *y = blob(n, "y");
      CHECKF(y->shape.dims[2] == cases[k].OH && y->shape.dims[3] == cases[k].OW,
             "case %zu (%dx%d, kernel %dx%d, stride %dx%d, pad %dx%d): top %lldx%lld, Caffe gives %dx%d", k,
             cases[k].H, cases[k].W, cases[k].KH, cases[k].KW, cases[k].SH, cases[k].SW, cases[k].PH, cases[k].PW,
             (long long)y->shape.dims[2], (long long)y->shape.dims[3], cases[k].OH, cases[k].OW);
      if (y->shape.dims[2] == cases[k].OH && y->shape.dims[3] == cases[k].OW) {
        set_uniform(n, "x", 200 + k, -1, 1);
        dd_net_forward(n, NULL);
        float *x = dd_tensor_data_copy(blob(n, "x")), *got = dd_tensor_data_copy(y), *want = malloc((size_t)y->count * sizeof *want);
        pool_reference(want, x, 6, cases[k].H, cases[k].W, cases[k].KH, cases[k].KW, cases[k].SH, cases[k].SW,
                       cases[k].PH, cases[k].PW, ave);
        double e = max_rel_diff(got, want, y->count);
        CHECKF(e < 1e-6, "case %zu %s: differs from the hand computation by %.3g", k, ave ? "AVE" : "MAX", e);
        free(x);
        free(got);
        free(want);
      }
      dd_net_destroy(n);
    }
  /* literal numbers: x = 1..25 on a 5x5 plane, kernel 3, stride 2, pad 1 */
  for (int ave = 0; ave < 2; ave++) {
    char text[1024];
    snprintf(text, sizeof text,
             INPUT("x", "dim: 1 dim: 1 dim: 5 dim: 5")
             "layer { name: \"p\" type: \"Pooling\" bottom: \"x\" top: \"y\" pooling_param { pool: %s "
             "kernel_size: 3 stride: 2 pad: 1 } }", ave ? "AVE" : "MAX");
    dd_net *n = make_net(text, CAFFE__PHASE__TEST);
    REQUIRE(n);
    float x[25];
    for (int i = 0; i < 25; i++) x[i] = (float)(i + 1);
    set_values(n, "x", x);
    dd_net_forward(n, NULL);
    float *y = dd_tensor_data_copy(blob(n, "y"));
    /* AVE: every window counts 9 cells; the corner one holds 1 2 6 7 and 5 padding cells (16 / 9) */
    const float want_ave[9] = {16.f / 9, 33.f / 9, 28.f / 9, 69.f / 9, 117.f / 9, 87.f / 9, 76.f / 9, 123.f / 9, 88.f / 9};
    const float want_max[9] = {7, 9, 10, 17, 19, 20, 22, 24, 25};
    for (int i = 0; i < 9; i++)
      CHECKF(fabsf(y[i] - (ave ? want_ave[i] : want_max[i])) < 1e-5f, "%s y[%d] = %g, want %g", ave ? "AVE" : "MAX", i,
             y[i], ave ? want_ave[i] : want_max[i]);
    free(y);
    dd_net_destroy(n);
  }
}

/* BatchNorm over several TRAIN forwards: the three blobs follow Caffe's formulas
 * (s = maf s + 1; mean_sum = mean + maf mean_sum; var_sum = m / (m - 1) var + maf var_sum,
 * m = N H W, var biased), each output uses the batch statistics; then a TEST net on the same
 * blobs normalises with mean_sum / s and var_sum / s and moves nothing. */
static void test_bn_running_stats(void) {
  static const struct {
    const char *param;
    double maf, eps;
  } v[] = {{"moving_average_fraction: 0.9 eps: 1e-4", 0.9, 1e-4}, {"", 0.999, 1e-5}};
  for (int k = 0; k < 2; k++) {
    char text[1024];
    snprintf(text, sizeof text,
             INPUT("x", "dim: 3 dim: 2 dim: 2 dim: 3")
             "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"x\" top: \"y\" batch_norm_param { %s } }", v[k].param);
    dd_net *tr = make_net(text, CAFFE__PHASE__TRAIN), *te = make_net(text, CAFFE__PHASE__TEST);
    REQUIRE(tr && te);
    char err[256];
    REQUIRE(dd_net_share_params(te, tr, err, sizeof err) == 0);
    dd_layer *l = layer(tr, "bn");
    const int N = 3, C = 2, S = 6, m = N * S;
    double s = 0, ms[2] = {0, 0}, vs[2] = {0, 0};
    for (int pass = 0; pass < 4; pass++) {
      set_uniform(tr, "x", 300 + pass, -1.0f + pass, 2.0f + 2 * pass);
      dd_net_forward(tr, NULL);
      float *x = dd_tensor_data_copy(blob(tr, "x")), *y = dd_tensor_data_copy(blob(tr, "y"));
      s = v[k].maf * s + 1;
      for (int c = 0; c < C; c++) {
        double mean = 0, var = 0;
        for (int i = 0; i < N; i++)
          for (int j = 0; j < S; j++) mean += x[(i * C + c) * S + j];
        mean /= m;
        for (int i = 0; i < N; i++)
          for (int j = 0; j < S; j++) var += (x[(i * C + c) * S + j] - mean) * (x[(i * C + c) * S + j] - mean);
        var /= m;
        ms[c] = mean + v[k].maf * ms[c];
        vs[c] = (double)m / (m - 1) * var + v[k].maf * vs[c];
        for (int i = 0; i < N; i++)
          for (int j = 0; j < S; j++) {
            int idx = (i * C + c) * S + j;
            double want = (x[idx] - mean) / sqrt(var + v[k].eps);
            CHECKF(fabs(y[idx] - want) < 1e-5 * (1 + fabs(want)), "pass %d: y[%d] = %.7g, want %.7g", pass, idx, y[idx], want);
          }
      }
      float *b0 = dd_tensor_data_copy(l->params[0]), *b1 = dd_tensor_data_copy(l->params[1]), *b2 = dd_tensor_data_copy(l->params[2]);
      CHECKF(fabs(b2[0] - s) < 1e-6 * s, "pass %d: scale factor %.8g, want %.8g", pass, b2[0], s);
      for (int c = 0; c < C; c++) {
        CHECKF(fabs(b0[c] - ms[c]) < 1e-5 * (1 + fabs(ms[c])), "pass %d: mean_sum[%d] %.8g, want %.8g", pass, c, b0[c], ms[c]);
        CHECKF(fabs(b1[c] - vs[c]) < 1e-5 * (1 + fabs(vs[c])), "pass %d: var_sum[%d] %.8g, want %.8g", pass, c, b1[c], vs[c]);
      }
      free(b0);
      free(b1);
      free(b2);
      free(x);
      free(y);
    }
    /* TEST: the stored statistics, scaled by 1 / s */
    set_uniform(te, "x", 400, -3, 5);
    dd_net_forward(te, NULL);
    float *x = dd_tensor_data_copy(blob(te, "x")), *y = dd_tensor_data_copy(blob(te, "y"));
    for (int c = 0; c < C; c++) {
      double mean = ms[c] / s, var = vs[c] / s;
      for (int i = 0; i < N; i++)
        for (int j = 0; j < S; j++) {
          int idx = (i * C + c) * S + j;
          double want = (x[idx] - mean) / sqrt(var + v[k].eps);
          CHECKF(fabs(y[idx] - want) < 1e-5 * (1 + fabs(want)), "TEST: y[%d] = %.7g, want %.7g", idx, y[idx], want);
        }
    }
    float *b2 = dd_tensor_data_copy(l->params[2]);
    CHECKF(fabs(b2[0] - s) < 1e-6 * s, "TEST moved the scale factor to %g", b2[0]);
    free(b2);
    free(x);
    free(y);
    dd_net_destroy(te);
    dd_net_destroy(tr);
  }
}

/* Global statistics with scale factor 0: mean and variance are taken as 0 (Caffe: 1 / s becomes
 * 0), so y = x / sqrt(eps), whatever the sums hold. */
static void test_bn_zero_factor(void) {
  static const char *text = INPUT("x", "dim: 2 dim: 2 dim: 3")
      "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"x\" top: \"y\" batch_norm_param { eps: 0.01 } }";
  for (int phase = 0; phase < 2; phase++) {
    char text2[512];
    snprintf(text2, sizeof text2, "%s", text);
    if (phase) /* TRAIN with use_global_stats: true */
      snprintf(text2, sizeof text2, INPUT("x", "dim: 2 dim: 2 dim: 3")
               "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"x\" top: \"y\" batch_norm_param { eps: 0.01 "
               "use_global_stats: true } }");
    dd_net *n = make_net(text2, phase ? CAFFE__PHASE__TRAIN : CAFFE__PHASE__TEST);
    REQUIRE(n);
    dd_layer *l = layer(n, "bn");
    for (int sums = 0; sums < 2; sums++) {
      if (sums) {
        float ms[2] = {1, 2}, vs[2] = {3, 4}, s = 0;
        dd_tensor_set_data(l->params[0], ms);
        dd_tensor_set_data(l->params[1], vs);
        dd_tensor_set_data(l->params[2], &s);
      }
      set_uniform(n, "x", 500 + sums, -1, 1);
      dd_net_forward(n, NULL);
      float *x = dd_tensor_data_copy(blob(n, "x")), *y = dd_tensor_data_copy(blob(n, "y"));
      for (int i = 0; i < 12; i++)
        CHECKF(fabs(y[i] - x[i] / sqrt(0.01)) < 1e-5 * (1 + fabs(x[i] / sqrt(0.01))),
               "%s, %s: y[%d] = %g, want %g", phase ? "TRAIN global" : "TEST", sums ? "non-zero sums" : "zero blobs",
               i, y[i], x[i] / sqrt(0.01));
      free(x);
      free(y);
    }
    dd_net_destroy(n);
  }
}

/* ---- Accuracy ---------------------------------------------------------------------------------- */

/* Runs Accuracy on p (rows x classes) and labels; returns the accuracy and fills per_class
 * (classes entries) when it is not NULL. */
static float run_accuracy(const float *p, const float *label, int rows, int classes, const char *param,
                          float *per_class) {
  char text[1024];
  snprintf(text, sizeof text,
           "layer { name: \"p\" type: \"Input\" top: \"p\" input_param { shape { dim: %d dim: %d } } }\n"
           "layer { name: \"label\" type: \"Input\" top: \"label\" input_param { shape { dim: %d } } }\n"
           "layer { name: \"acc\" type: \"Accuracy\" bottom: \"p\" bottom: \"label\" top: \"acc\" %s "
           "accuracy_param { %s } }",
           rows, classes, rows, per_class ? "top: \"per_class\"" : "", param);
  dd_net *n = make_net(text, CAFFE__PHASE__TEST);
  if (!n) return -1;
  set_values(n, "p", p);
  set_values(n, "label", label);
  /* stale values in the tops must not survive a forward */
  be->ops->fill(be, blob(n, "acc")->data, -7.0f, 1);
  if (per_class) be->ops->fill(be, blob(n, "per_class")->data, -7.0f, classes);
  dd_net_forward(n, NULL);
  float acc;
  dd_tensor_get_data(blob(n, "acc"), &acc);
  if (per_class) dd_tensor_get_data(blob(n, "per_class"), per_class);
  dd_net_destroy(n);
  return acc;
}

/* Caffe 1.0 ranks the classes with std::partial_sort over (value, index) pairs and
 * std::greater: among equal values the higher class index ranks first. So a tie with a higher
 * class pushes the true class down; a tie with a lower one does not. */
static void test_accuracy(void) {
  static const float p[6 * 5] = {
      0.1f, 0.9f, 0.3f, 0.2f, -1, /* label 1: correct */
      0.5f, 0.2f, 0.5f, 0.1f, -1, /* label 0: tied with class 2, which ranks first: wrong at top 1 */
      0.5f, 0.2f, 0.5f, 0.1f, -1, /* label 2: tied with class 0, ranks first: correct */
      0.3f, 0.3f, 0.3f, 0.3f, -1, /* label 3: four-way tie, the highest index: correct */
      0.3f, 0.3f, 0.3f, 0.3f, -1, /* label 0: four-way tie, the lowest index: 4th, wrong even at top 3 */
      0.0f, 0.1f, 0.2f, 0.7f, -1, /* label 0: the lowest value: wrong at top 3 */
  };
  static const float label[6] = {1, 0, 2, 3, 0, 0};
  float pc[5];
  float a1 = run_accuracy(p, label, 6, 5, "", pc);
  CHECKF(fabsf(a1 - 3.0f / 6) < 1e-6f, "top 1: %g, Caffe gives 0.5", a1);
  const float want_pc[5] = {0, 1, 1, 1, 0}; /* class 4 has no samples: 0 */
  for (int c = 0; c < 5; c++) CHECKF(fabsf(pc[c] - want_pc[c]) < 1e-6f, "per-class[%d] = %g, want %g", c, pc[c], want_pc[c]);
  float a3 = run_accuracy(p, label, 6, 5, "top_k: 3", pc);
  CHECKF(fabsf(a3 - 4.0f / 6) < 1e-6f, "top 3: %g, Caffe gives 4/6", a3);
  const float want_pc3[5] = {1.0f / 3, 1, 1, 1, 0};
  for (int c = 0; c < 5; c++) CHECKF(fabsf(pc[c] - want_pc3[c]) < 1e-6f, "top 3 per-class[%d] = %g, want %g", c, pc[c], want_pc3[c]);
  /* ignore_label: ignored rows count neither way */
  static const float label_ign[6] = {1, -1, 2, 3, 0, -1};
  float ai = run_accuracy(p, label_ign, 6, 5, "ignore_label: -1", pc);
  CHECKF(fabsf(ai - 3.0f / 4) < 1e-6f, "top 1 with ignore_label: %g, want 3/4", ai);
  const float want_pci[5] = {0, 1, 1, 1, 0};
  for (int c = 0; c < 5; c++) CHECKF(fabsf(pc[c] - want_pci[c]) < 1e-6f, "ignore per-class[%d] = %g", c, pc[c]);
  /* every label ignored: 0 (Caffe 1.0 divides 0 by 0 here) */
  static const float all_ign[6] = {-1, -1, -1, -1, -1, -1};
  float az = run_accuracy(p, all_ign, 6, 5, "ignore_label: -1", NULL);
  CHECKF(az == 0.0f, "all ignored: %g", az);
  /* top_k 5 of 5 classes: always right */
  float a5 = run_accuracy(p, label, 6, 5, "top_k: 5", NULL);
  CHECKF(a5 == 1.0f, "top 5: %g", a5);
}

/* Spatial accuracy (axis 1 of (N, C, H, W), labels (N, H, W)) and per-class accuracy with more
 * classes than fit one host buffer. */
static void test_accuracy_spatial_and_many_classes(void) {
  dd_net *n = make_net(INPUT("p", "dim: 2 dim: 3 dim: 1 dim: 2") INPUT("label", "dim: 2 dim: 1 dim: 2")
                       "layer { name: \"acc\" type: \"Accuracy\" bottom: \"p\" bottom: \"label\" top: \"acc\" }",
                       CAFFE__PHASE__TEST);
  REQUIRE(n);
  /* (n, c, w): image 0 position 0 -> class 2, position 1 -> class 0; image 1: 1, 1 */
  float p[12] = {0, 5, 1, 0, 9, 1, /* image 0: c0 = {0, 5}, c1 = {1, 0}, c2 = {9, 1} */
                 0, 0, 3, 4, 1, 1};
  float lab[4] = {2, 0, 1, 1};
  set_values(n, "p", p);
  set_values(n, "label", lab);
  dd_net_forward(n, NULL);
  float acc;
  dd_tensor_get_data(blob(n, "acc"), &acc);
  CHECKF(fabsf(acc - 1.0f) < 1e-6f, "spatial accuracy %g, want 1", acc);
  dd_net_destroy(n);

  enum { ROWS = 4, CLASSES = 1100 };
  float *pp = calloc(ROWS * CLASSES, sizeof *pp), pc[CLASSES];
  const float lab2[ROWS] = {0, 1050, 1099, 5};
  for (int r = 0; r < ROWS; r++) pp[r * CLASSES + (r == 3 ? 6 : (int)lab2[r])] = 1; /* row 3 predicts 6, not 5 */
  float a = run_accuracy(pp, lab2, ROWS, CLASSES, "", pc);
  CHECKF(fabsf(a - 0.75f) < 1e-6f, "1100 classes: accuracy %g", a);
  CHECKF(pc[0] == 1 && pc[1050] == 1 && pc[1099] == 1 && pc[5] == 0 && pc[6] == 0 && pc[1024] == 0,
         "1100 classes: per-class %g %g %g %g %g %g", pc[0], pc[1050], pc[1099], pc[5], pc[6], pc[1024]);
  free(pp);
}

/* ---- SoftmaxWithLoss values ------------------------------------------------------------------- */

static void test_softmax_loss_values(void) {
  /* x (2, 3, 4): outer 2, 3 classes, inner 4; label (2, 4) with one ignored (-1) */
  float x[24], lab[8] = {0, 2, 1, 1, 2, -1, 0, 2}, lab_all[8] = {0, 2, 1, 1, 2, 1, 0, 2};
  for (int i = 0; i < 24; i++) x[i] = (float)sin(1.3 * i) * 2.0f;
  static const struct {
    const char *param;
    int ignore;
    double norm;
  } cases[] = {
      {"normalization: FULL", 1, 8}, {"normalization: VALID", 1, 7}, {"normalization: BATCH_SIZE", 1, 2},
      {"normalization: NONE", 1, 1}, {"", 1, 7},                    {"normalize: false", 1, 2},
      {"normalize: true", 1, 7},     {"normalize: false normalization: FULL", 1, 8},
      {"normalization: VALID", 0, 8}, {"", 0, 8},                   {"normalization: FULL", 0, 8},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    char text[1024];
    snprintf(text, sizeof text,
             INPUT("x", "dim: 2 dim: 3 dim: 4") INPUT("label", "dim: 2 dim: 4")
             "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"x\" bottom: \"label\" top: \"loss\" "
             "top: \"prob\" loss_param { %s %s } }", cases[k].param, cases[k].ignore ? "ignore_label: -1" : "");
    dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
    CHECKF(n != NULL, "case %zu", k);
    if (!n) continue;
    const float *labels = cases[k].ignore ? lab : lab_all;
    set_values(n, "x", x);
    set_values(n, "label", labels);
    double netloss;
    dd_net_forward(n, &netloss);
    double sum = 0, prob[24];
    for (int o = 0; o < 2; o++)
      for (int i = 0; i < 4; i++) {
        double z = 0;
        for (int c = 0; c < 3; c++) z += exp(x[(o * 3 + c) * 4 + i]);
        for (int c = 0; c < 3; c++) prob[(o * 3 + c) * 4 + i] = exp(x[(o * 3 + c) * 4 + i]) / z;
        int l = (int)labels[o * 4 + i];
        if (l >= 0) sum -= log(prob[(o * 3 + l) * 4 + i]);
      }
    double want = sum / cases[k].norm;
    float loss, *pr = dd_tensor_data_copy(blob(n, "prob"));
    dd_tensor_get_data(blob(n, "loss"), &loss);
    CHECKF(fabs(loss - want) < 1e-5 * fmax(1, want), "{%s%s}: loss %.7g, want %.7g", cases[k].param,
           cases[k].ignore ? " ignore_label" : "", loss, want);
    CHECKF(fabs(netloss - want) < 1e-5 * fmax(1, want), "{%s}: net loss %.7g", cases[k].param, netloss);
    for (int i = 0; i < 24; i++) CHECKF(fabs(pr[i] - prob[i]) < 1e-6, "prob[%d] = %g, want %g", i, pr[i], prob[i]);
    free(pr);
    dd_net_destroy(n);
  }
}

/* Caffe's loss layers scale their gradient by their top's diff (which the net sets to the loss
 * weight). When the loss top also feeds another layer, Caffe's InsertSplits moves the loss weight
 * onto the split's first top and the loss layer's gradient arrives through the split. */
static void test_loss_top_consumed(void) {
  dd_net *n = make_net(FB INPUT("x", "dim: 3 dim: 4") INPUT("label", "dim: 3")
                       "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"x\" bottom: \"label\" top: \"loss\" "
                       "loss_weight: 2 }\n"
                       "layer { name: \"silence\" type: \"Silence\" bottom: \"loss\" }", CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  CHECK(dd_net_layer_index(n, "loss_loss_0_split") >= 0);
  set_uniform(n, "x", 8, -2, 2);
  set_labels(n, "label", 4, 9, 0, 0);
  grad_check(n, GC, "softmax loss, weight 2, top consumed");
  dd_net_destroy(n);
  n = make_net(FB INPUT("s", "dim: 3 dim: 4") INPUT("t", "dim: 3 dim: 4")
               "layer { name: \"kd\" type: \"KDLoss\" bottom: \"s\" bottom: \"t\" top: \"kd\" loss_weight: 0.5 "
               "distill_loss_param { temperature: 2 } }\n"
               "layer { name: \"silence\" type: \"Silence\" bottom: \"kd\" }", CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  fill_inputs(n, 3, -2, 2);
  grad_check(n, GC, "kd loss, weight 0.5, top consumed");
  dd_net_destroy(n);
}

/* ---- Dropout ----------------------------------------------------------------------------------- */

static void test_dropout(void) {
  static const float ratios[] = {0.3f, 0.5f};
  for (int k = 0; k < 2; k++) {
    char text[1024];
    snprintf(text, sizeof text,
             FB INPUT("x", "dim: 4 dim: 50 dim: 10 dim: 10")
             "layer { name: \"d\" type: \"Dropout\" bottom: \"x\" top: \"y\" %s }",
             k == 0 ? "dropout_param { dropout_ratio: 0.3 }" : "");
    dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
    REQUIRE(n);
    float ratio = ratios[k], scale = 1.0f / (1.0f - ratio);
    set_uniform(n, "x", 9, 0.5f, 1.5f); /* no zeros: a zero output means dropped */
    dd_tensor *xt = blob(n, "x"), *yt = blob(n, "y");
    int64_t cnt = xt->count;
    float *w = malloc((size_t)cnt * sizeof *w);
    dd_rng r;
    dd_rng_seed(&r, 4);
    uniform_fill(w, cnt, &r, -1, 1);
    unsigned char *mask0 = malloc((size_t)cnt);
    for (int iter = 0; iter < 2; iter++) {
      dd_net_forward(n, NULL);
      dd_tensor_set_diff(yt, w);
      dd_net_backward(n);
      float *x = dd_tensor_data_copy(xt), *y = dd_tensor_data_copy(yt), *dx = dd_tensor_diff_copy(xt);
      int64_t kept = 0, bad_y = 0, bad_dx = 0, moved = 0;
      for (int64_t i = 0; i < cnt; i++) {
        int keep = y[i] != 0.0f;
        kept += keep;
        bad_y += keep && y[i] != x[i] * scale;
        bad_dx += keep ? dx[i] != w[i] * scale : dx[i] != 0.0f;
        if (iter == 0) mask0[i] = (unsigned char)keep;
        else moved += mask0[i] != keep;
      }
      double frac = (double)kept / (double)cnt;
      CHECKF(fabs(frac - (1 - ratio)) < 0.02, "ratio %g: kept %.4f", ratio, frac);
      CHECKF(bad_y == 0, "ratio %g: %lld kept outputs are not x / (1 - ratio)", ratio, (long long)bad_y);
      CHECKF(bad_dx == 0, "ratio %g: %lld gradients are not dy * mask / (1 - ratio)", ratio, (long long)bad_dx);
      if (iter == 1) CHECKF(moved > cnt / 10, "ratio %g: the mask did not change between iterations (%lld moved)", ratio,
                            (long long)moved);
      free(x);
      free(y);
      free(dx);
    }
    free(mask0);
    dd_net_destroy(n);
    /* TEST: the identity, forward and backward */
    n = make_net(text, CAFFE__PHASE__TEST);
    REQUIRE(n);
    set_uniform(n, "x", 10, -1, 1);
    dd_net_forward(n, NULL);
    dd_tensor_set_diff(blob(n, "y"), w);
    dd_net_backward(n);
    float *x = dd_tensor_data_copy(blob(n, "x")), *y = dd_tensor_data_copy(blob(n, "y")), *dx = dd_tensor_diff_copy(blob(n, "x"));
    CHECK(memcmp(x, y, (size_t)cnt * sizeof *x) == 0);
    CHECK(memcmp(dx, w, (size_t)cnt * sizeof *x) == 0);
    free(x);
    free(y);
    free(dx);
    free(w);
    dd_net_destroy(n);
  }
}

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
  if (dd_cpu_backend_create(&be, 2)) return 1;
  printf("     %s\n", dd_cpu_backend_describe(be));
  RUN(test_grad_convolution);
  RUN(test_grad_pooling);
  RUN(test_grad_inner_product);
  RUN(test_inner_product_large);
  RUN(test_grad_batch_norm);
  RUN(test_grad_scale);
  RUN(test_grad_bias);
  RUN(test_grad_relu);
  RUN(test_grad_eltwise);
  RUN(test_eltwise_max_ties);
  RUN(test_grad_softmax);
  RUN(test_grad_softmax_loss);
  RUN(test_grad_concat);
  RUN(test_grad_flatten_split);
  RUN(test_grad_dropout_fixed_mask);
  RUN(test_kd_loss);
  RUN(test_loss_top_consumed);
  RUN(test_conv_forward_reference);
  RUN(test_pool_forward_reference);
  RUN(test_bn_running_stats);
  RUN(test_bn_zero_factor);
  RUN(test_accuracy);
  RUN(test_accuracy_spatial_and_many_classes);
  RUN(test_softmax_loss_values);
  RUN(test_dropout);
  RUN(test_in_place);
  RUN(test_grad_wrn_in_place);
  RUN(test_filler_basic);
  RUN(test_filler_xavier_msra);
  RUN(test_filler_unitball_bilinear);
  RUN(test_filler_determinism_and_errors);
  RUN(test_split_insertion);
  RUN(test_determinism);
  RUN(test_shape_errors);
  dd_cpu_backend_destroy(be);
  return test_summary();
}
