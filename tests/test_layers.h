/* What the layer tests share (tests/test_layers.c: gradient checks; tests/test_layers_forward.c:
 * forward values against hand computations; tests/test_layers_nets.c: in place, fillers, split
 * insertion, determinism, shape errors): the CPU backend `be`, nets built from prototxt text
 * (tests/test_nets.h) and their blobs, and the finite-difference gradient checker (Caffe's GradientChecker):
 *
 *    a scalar objective L = sum of the loss tops (times their loss weights) + sum_i w_i * top_i over
 *    the last layer's other tops, with fixed random weights w written into the top diffs; backward
 *    through the net gives every input's and every learnable parameter's gradient, which must
 *    match central differences of L (double precision, step 1e-2) within 1e-2 relative (absolute
 *    floor 1e-3). Piecewise-linear layers skip points whose one-sided differences disagree (a kink
 *    within a step). Each check also verifies Caffe's diff semantics: bottom diffs are
 *    overwritten, parameter diffs accumulate, and bottoms that get no gradient (labels, the
 *    teacher) are left alone. */
#ifndef DD_TEST_LAYERS_H
#define DD_TEST_LAYERS_H

#include <float.h>
#include <math.h>
#include <stdint.h>

#include "base/dd_error.h"
#include "net/filler.h"
#include "net/net.h"
#include "base/rng.h"
#include "test.h"
#include "test_nets.h"

static dd_backend *be;

/* An Input layer whose single top is named like the layer. */
#define INPUT(top, dims) \
  "layer { name: \"" top "\" type: \"Input\" top: \"" top "\" input_param { shape { " dims " } } }\n"

/* ---- nets and blobs -------------------------------------------------------------------------- */

/* Builds `text` for `phase` on backend `b`; NULL (with the error printed) when it fails. */
static inline dd_net *make_net_on(dd_backend *b, const char *text, Caffe__Phase phase, uint64_t seed) {
  Caffe__NetParameter *p = test_parse_net(text);
  if (!p) return NULL;
  dd_net *n = NULL;
  char err[1024];
  if (dd_net_create(&n, p, phase, b, seed, NULL, err, sizeof err)) fprintf(stderr, "net: %s\n", err);
  caffe__net_parameter__free_unpacked(p, NULL);
  return n;
}

static inline dd_net *make_net(const char *text, Caffe__Phase phase) { return make_net_on(be, text, phase, 7); }

/* Builds `text` and returns the error code, with the message in err. */
static inline int net_error(const char *text, Caffe__Phase phase, char *err, size_t errlen) {
  Caffe__NetParameter *p = test_parse_net(text);
  if (!p) return -1000;
  dd_net *n = NULL;
  int r = dd_net_create(&n, p, phase, be, 7, NULL, err, errlen);
  dd_net_destroy(n);
  caffe__net_parameter__free_unpacked(p, NULL);
  return r;
}

static inline dd_tensor *blob(dd_net *n, const char *name) {
  dd_tensor *t = dd_net_blob(n, name);
  if (!t) fprintf(stderr, "no blob \"%s\"\n", name);
  return t;
}

static inline dd_layer *layer(dd_net *n, const char *name) {
  int i = dd_net_layer_index(n, name);
  if (i < 0) fprintf(stderr, "no layer \"%s\"\n", name);
  return i >= 0 ? &n->layers[i] : NULL;
}

static inline void uniform_fill(float *x, int64_t n, dd_rng *r, float lo, float hi) {
  for (int64_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * dd_rng_uniform(r);
}

/* Sets a blob to uniform values in [lo, hi) drawn from `seed`. */
static inline void set_uniform(dd_net *n, const char *name, uint64_t seed, float lo, float hi) {
  dd_tensor *t = blob(n, name);
  if (!t) return;
  dd_rng r;
  dd_rng_seed(&r, seed);
  float *h = malloc((size_t)t->count * sizeof *h);
  uniform_fill(h, t->count, &r, lo, hi);
  dd_tensor_set_data(t, h);
  free(h);
}

static inline void set_values(dd_net *n, const char *name, const float *v) {
  dd_tensor *t = blob(n, name);
  if (t) dd_tensor_set_data(t, v);
}

/* Fills every Input top with uniform values in [lo, hi). */
static inline void fill_inputs(dd_net *n, uint64_t seed, float lo, float hi) {
  for (size_t i = 0; i < n->n_layers; i++) {
    dd_layer *l = &n->layers[i];
    if (strcmp(l->ops->type, "Input") != 0) continue;
    for (int t = 0; t < l->nt; t++) set_uniform(n, l->top[t]->name, seed + 31 * i + t, lo, hi);
  }
}

/* Gives the `k` named blobs pairwise distinct values, at least `gap` apart (a shuffled grid
 * centred on 0), so MAX operations have no ties within a finite-difference step. */
static inline void set_distinct(dd_net *n, const char *const *names, int k, uint64_t seed, float gap) {
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
static inline void set_labels(dd_net *n, const char *name, int classes, uint64_t seed, int ignore_every, int ignore) {
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
static inline double max_rel_diff(const float *a, const float *b, int64_t n) {
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

/* Runs the net's forward, step by step as its plan says (fused steps included, so its backward
 * reads what they saved), without counting an iteration (the dropout mask stays put). */
static inline void forward_all(dd_net *n) {
  for (size_t k = 0; k < n->plan.n_steps; k++) dd_plan_step_forward(n, &n->plan.steps[k]);
}

typedef struct {
  dd_net *n;
  dd_layer *last;
  float *w[8]; /* weights of the last layer's non-loss tops (NULL for loss tops) */
} gc_ctx;

static inline double gc_objective(gc_ctx *g) {
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
static inline int input_wants_grad(dd_net *n, const dd_tensor *t) {
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
static inline void grad_check(dd_net *n, gc_opts o, const char *what) {
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
static inline void check_grad(const char *what, const char *text, gc_opts o) {
  dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
  CHECKF(n != NULL, "%s: the net did not build", what);
  if (!n) return;
  fill_inputs(n, 11, -1, 1);
  grad_check(n, o, what);
  dd_net_destroy(n);
}

#define FB "force_backward: true\n"
#define WF "weight_filler { type: \"gaussian\" std: 0.5 } bias_filler { type: \"uniform\" min: -1 max: 1 }"

/* main()'s start: the CPU backend (2 threads), described; 0 on success. */
static inline int layers_begin(void) {
  if (dd_cpu_backend_create(&be, 2)) return -1;
  printf("     %s\n", dd_cpu_backend_describe(be));
  return 0;
}

/* main()'s end. */
static inline int layers_end(void) {
  dd_cpu_backend_destroy(be);
  return test_summary();
}

/* Largest difference of a tensor's data (or diff) in two nets, relative to the reference's scale. */
static inline double tensor_rel(const dd_tensor *a, const dd_tensor *ref, int diff) {
  float *x = diff ? dd_tensor_diff_copy(a) : dd_tensor_data_copy(a);
  float *y = diff ? dd_tensor_diff_copy(ref) : dd_tensor_data_copy(ref);
  double d = max_rel_diff(x, y, ref->count);
  free(x);
  free(y);
  return d;
}

/* One plain SGD step (no momentum, no decay) of the learning parameters: clear, forward (its loss
 * into *loss), backward, w -= lr * dw. */
static inline void sgd_step(dd_net *n, float lr, double *loss) {
  dd_net_clear_param_diffs(n);
  REQUIRE(dd_net_forward(n, loss) == 0);
  dd_net_backward(n);
  for (size_t p = 0; p < n->n_params; p++) {
    dd_tensor *t = n->params[p].t;
    if (n->params[p].lr_mult == 0) continue;
    float *w = dd_tensor_data_copy(t), *g = dd_tensor_diff_copy(t);
    for (int64_t i = 0; i < t->count; i++) w[i] -= lr * g[i];
    dd_tensor_set_data(t, w);
    free(w);
    free(g);
  }
}

#endif
