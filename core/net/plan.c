/* The execution plan (plan.h): matching runs of layers to fused steps, and running steps. */
#define _POSIX_C_SOURCE 200809L
#include "net/plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/dd_error.h"
#include "net/net.h"

static int is_type(const dd_layer *l, const char *type) { return !strcmp(l->ops->type, type); }

static int layer_is_loss(const dd_layer *l) {
  for (int t = 0; t < l->nt; t++)
    if (l->loss_weight[t] != 0) return 1;
  return 0;
}

static int needs_bwd(const dd_net *n, int i) { return n->graph->layers[i].need_backward; }

static int is_conv(const dd_layer *l);

int dd_plan_match_bn_scale(const dd_net *n, size_t i, int *relu, float *slope) {
  if (i + 1 >= n->n_layers) return 0;
  const dd_layer *bn = &n->layers[i], *sc = &n->layers[i + 1];
  if (!is_type(bn, "BatchNorm") || !is_type(sc, "Scale")) return 0;
  dd_tensor *y = bn->top[0], *x = bn->bottom[0];
  if (y == x || x->shape.ndim < 2 || !dd_shape_equal(&x->shape, &y->shape)) return 0;
  if (sc->nb != 1 || sc->bottom[0] != y || sc->top[0] != y || sc->n_params < 1) return 0;
  const Caffe__ScaleParameter *sp = sc->lp->scale_param;
  int axis = sp ? sp->axis : 1, num_axes = sp ? sp->num_axes : 1;
  if (dd_shape_axis(&y->shape, axis) != 1 || num_axes != 1) return 0;
  if (layer_is_loss(bn) || layer_is_loss(sc)) return 0;
  *relu = 0;
  *slope = 0;
  if (i + 2 < n->n_layers) {
    const dd_layer *re = &n->layers[i + 2];
    if (is_type(re, "ReLU") && re->bottom[0] == y && re->top[0] == y && !layer_is_loss(re)) {
      *relu = 1;
      *slope = re->lp->relu_param ? re->lp->relu_param->negative_slope : 0.0f;
    }
  }
  /* gradients pass down the run the way the layers would pass them: a ReLU that passes none
   * stays a step of its own, and so does a BatchNorm whose Scale passes none */
  if (*relu && needs_bwd(n, (int)i + 1) && !n->layers[i + 2].propagate_down[0]) *relu = 0;
  if (needs_bwd(n, (int)i) && !sc->propagate_down[0]) return 0;
  return 1;
}

void dd_plan_free(dd_net *n) {
  /* a training plan's convolutions go back to NCHW FP32 activations (their primitives for it were
   * made at setup) */
  for (size_t i = 0; n->plan.blk_train && i < n->n_layers; i++)
    if (is_conv(&n->layers[i])) {
      dd_conv_desc *d = (dd_conv_desc *)n->layers[i].priv;
      d->blk_in = d->blk_out = 0;
    }
  for (size_t k = 0; k < n->plan.n_steps; k++) {
    dd_plan_step *s = &n->plan.steps[k];
    if (s->mean) n->be->ops->free(n->be, s->mean);
    if (s->inv_std) n->be->ops->free(n->be, s->inv_std);
  }
  free(n->plan.steps);
  free(n->plan.fwd_s);
  free(n->plan.bwd_s);
  if (n->plan.blk_scratch) n->be->ops->free(n->be, n->plan.blk_scratch);
  memset(&n->plan, 0, sizeof n->plan);
}

int dd_plan_build(dd_net *n, int fuse) {
  dd_plan_free(n);
  const char *env = getenv("DD_FUSE");
  if (env && !strcmp(env, "0")) fuse = 0;
  const dd_backend_ops *ops = n->be->ops;
  if (!ops->bn_affine_relu_forward || !ops->bn_affine_relu_backward) fuse = 0;
  n->plan.steps = calloc(n->n_layers ? n->n_layers : 1, sizeof *n->plan.steps);
  if (!n->plan.steps) return DD_ENOMEM;
  for (size_t i = 0; i < n->n_layers;) {
    dd_plan_step *s = &n->plan.steps[n->plan.n_steps++];
    int relu;
    float slope;
    if (fuse && dd_plan_match_bn_scale(n, i, &relu, &slope)) {
      int64_t c = n->layers[i].bottom[0]->shape.dims[1];
      *s = (dd_plan_step){.kind = DD_STEP_BN_SCALE_RELU, .first = (int)i, .n_layers = relu ? 3 : 2, .relu = relu,
                          .slope = slope};
      s->mean = ops->alloc(n->be, (size_t)c * sizeof(float));
      s->inv_std = ops->alloc(n->be, (size_t)c * sizeof(float));
      if (!s->mean || !s->inv_std) {
        dd_plan_free(n);
        return DD_ENOMEM;
      }
      n->plan.n_fused++;
    } else {
      *s = (dd_plan_step){.kind = DD_STEP_LAYER, .first = (int)i, .n_layers = 1};
    }
    i += (size_t)s->n_layers;
  }
  return 0;
}

/* The descriptor of a BatchNorm -> Scale [-> ReLU] step, from the tensors' current shapes. */
static dd_bn_affine_desc bn_desc(const dd_net *n, const dd_plan_step *s) {
  const dd_layer *bn = &n->layers[s->first];
  const dd_shape *x = &bn->bottom[0]->shape;
  const Caffe__BatchNormParameter *p = bn->lp->batch_norm_param;
  return (dd_bn_affine_desc){.n = (int)x->dims[0], .c = (int)x->dims[1], .s = (int)dd_shape_count_range(x, 2, x->ndim),
                             .global = dd_bn_uses_global(bn), .eps = p ? p->eps : 1e-5f,
                             .maf = p ? p->moving_average_fraction : 0.999f, .relu = s->relu, .slope = s->slope,
                             .blocked = s->x_blocked, .bf16 = s->x_blocked && n->plan.blk_bf16};
}

static const float *scale_beta(const dd_layer *sc) {
  return sc->n_params > 1 ? sc->params[1]->data : NULL;
}

static void step_forward(dd_net *n, const dd_plan_step *s) {
  if (s->kind == DD_STEP_LAYER) {
    dd_layer *l = &n->layers[s->first];
    l->ops->forward(l);
    return;
  }
  dd_layer *bn = &n->layers[s->first], *sc = bn + 1;
  dd_bn_affine_desc d = bn_desc(n, s);
  n->be->ops->bn_affine_relu_forward(n->be, &d, bn->top[0]->data, bn->bottom[0]->data, s->mean, s->inv_std,
                                     bn->params[0]->data, bn->params[1]->data, bn->params[2]->data,
                                     sc->params[0]->data, scale_beta(sc));
}

int dd_plan_step_needs_backward(const dd_net *n, const dd_plan_step *s) {
  for (int i = s->first; i < s->first + s->n_layers; i++)
    if (needs_bwd(n, i)) return 1;
  return 0;
}

static void step_backward(dd_net *n, const dd_plan_step *s) {
  if (s->kind == DD_STEP_LAYER) {
    dd_layer *l = &n->layers[s->first];
    if (!needs_bwd(n, s->first)) return;
    if (l->ops->backward) {
      l->ops->backward(l);
    } else if (n->graph->force_backward) {
      /* forced through a layer without a backward (Threshold, ArgMax): its gradient is 0, and the
       * layers below read these diffs (Caffe would abort) */
      for (int b = 0; b < l->nb; b++) l->be->ops->fill(l->be, l->bottom[b]->diff, 0.0f, l->bottom[b]->count);
    }
    return;
  }
  if (s->kind != DD_STEP_BN_SCALE_RELU || !dd_plan_step_needs_backward(n, s)) return;
  dd_layer *bn = &n->layers[s->first], *sc = bn + 1;
  int sc_bwd = needs_bwd(n, s->first + 1);
  float *dx = needs_bwd(n, s->first) && bn->propagate_down[0] ? bn->bottom[0]->diff : NULL;
  float *dgamma = sc_bwd && sc->param_propagate_down[0] ? sc->params[0]->diff : NULL;
  float *dbeta = sc_bwd && sc->n_params > 1 && sc->param_propagate_down[1] ? sc->params[1]->diff : NULL;
  if (!dx && !dgamma && !dbeta) return;
  dd_bn_affine_desc d = bn_desc(n, s);
  dd_tensor *y = bn->top[0];
  n->be->ops->bn_affine_relu_backward(n->be, &d, dx, dgamma, dbeta, y->diff, y->data, bn->bottom[0]->data, s->mean,
                                      s->inv_std, sc->params[0]->data);
}

/* ---- profiling ------------------------------------------------------------------------------- */

static double seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Runs step s forward or backward, timed into `acc` when profiling. */
void dd_plan_timed(dd_net *n, const dd_plan_step *s, double *acc, void (*run)(dd_net *, const dd_plan_step *)) {
  if (!acc) {
    run(n, s);
    return;
  }
  n->be->ops->synchronize(n->be);
  double t0 = seconds();
  run(n, s);
  n->be->ops->synchronize(n->be);
  acc[s - n->plan.steps] += seconds() - t0;
}

void dd_plan_step_forward(dd_net *n, const dd_plan_step *s) { dd_plan_timed(n, s, n->plan.fwd_s, step_forward); }
void dd_plan_step_backward(dd_net *n, const dd_plan_step *s) {
  if (dd_plan_step_needs_backward(n, s)) dd_plan_timed(n, s, n->plan.bwd_s, step_backward); /* else nothing to run */
}

int dd_plan_profile(dd_net *n, int on) {
  dd_plan *p = &n->plan;
  if (!on) {
    free(p->fwd_s), free(p->bwd_s);
    p->fwd_s = p->bwd_s = NULL;
    return 0;
  }
  size_t k = p->n_steps ? p->n_steps : 1;
  if (!p->fwd_s) p->fwd_s = malloc(k * sizeof *p->fwd_s);
  if (!p->bwd_s) p->bwd_s = malloc(k * sizeof *p->bwd_s);
  if (!p->fwd_s || !p->bwd_s) {
    dd_plan_profile(n, 0);
    return DD_ENOMEM;
  }
  memset(p->fwd_s, 0, k * sizeof *p->fwd_s);
  memset(p->bwd_s, 0, k * sizeof *p->bwd_s);
  return 0;
}

static const dd_conv_desc *conv_desc_of(const dd_layer *l);
static int is_conv(const dd_layer *l);

/* The kind of step s, for the profile: its layer's type (a convolution's with its precision), or
 * the fused run's name. */
static void step_label(const dd_net *n, const dd_plan_step *s, char *buf, size_t len) {
  static const char *blk[] = {[DD_STEP_BLK_CONV] = "Convolution", [DD_STEP_BLK_RELU] = "ReLU",
                               [DD_STEP_BLK_SCALE] = "Scale", [DD_STEP_BLK_SUM] = "Eltwise", [DD_STEP_BLK_SPLIT] = "Split",
                               [DD_STEP_BLK_EXIT] = ""};
  if (s->kind == DD_STEP_BLK_EXIT) {
    snprintf(buf, len, "%s blocked -> NCHW FP32", n->plan.blk_bf16 ? "bf16" : "fp32");
    return;
  }
  if (s->kind >= DD_STEP_BLK_CONV) {
    snprintf(buf, len, "%s%s %s blocked", blk[s->kind], s->relu ? "+ReLU" : "", n->plan.blk_bf16 ? "bf16" : "fp32");
    return;
  }
  const dd_layer *l = &n->layers[s->first];
  if (s->kind == DD_STEP_BN_SCALE_RELU) snprintf(buf, len, "%s", s->relu ? "BatchNorm+Scale+ReLU" : "BatchNorm+Scale");
  else if (is_conv(l) && n->be->ops->conv_impl)
    snprintf(buf, len, "%s %s", l->ops->type, strstr(n->be->ops->conv_impl(n->be, conv_desc_of(l)), "bf16") ? "bf16" : "fp32");
  else snprintf(buf, len, "%s", l->ops->type);
}

double dd_plan_profile_total(const dd_net *n) {
  double total = 0;
  for (size_t k = 0; n->plan.fwd_s && k < n->plan.n_steps; k++) total += n->plan.fwd_s[k] + n->plan.bwd_s[k];
  return total;
}

void dd_plan_profile_report(const dd_net *n, int runs, char *buf, size_t len) {
  enum { MAX_KINDS = 32 };
  struct { char name[48]; double f, b; int steps; } kind[MAX_KINDS];
  int nk = 0;
  double total = dd_plan_profile_total(n);
  if (len) buf[0] = 0;
  if (!n->plan.fwd_s || runs < 1) return;
  for (size_t k = 0; k < n->plan.n_steps; k++) {
    char name[48];
    step_label(n, &n->plan.steps[k], name, sizeof name);
    int j = 0;
    while (j < nk && strcmp(kind[j].name, name)) j++;
    if (j == nk) {
      if (nk == MAX_KINDS) j = nk - 1; /* more kinds than lines: the rest share the last line */
      else snprintf(kind[nk++].name, sizeof kind[0].name, "%s", name), kind[j].f = kind[j].b = 0, kind[j].steps = 0;
    }
    kind[j].f += n->plan.fwd_s[k], kind[j].b += n->plan.bwd_s[k], kind[j].steps++;
  }
  for (int i = 1; i < nk; i++) /* most expensive first */
    for (int j = i; j > 0 && kind[j].f + kind[j].b > kind[j - 1].f + kind[j - 1].b; j--) {
      __typeof__(kind[0]) t = kind[j];
      kind[j] = kind[j - 1], kind[j - 1] = t;
    }
  size_t w = 0;
  for (int i = 0; i < nk && w < len; i++)
    w += (size_t)snprintf(buf + w, len - w, "    %-24s fwd %8.2f ms  bwd %8.2f ms  %3d steps  %4.1f%%\n", kind[i].name,
                          1e3 * kind[i].f / runs, 1e3 * kind[i].b / runs, kind[i].steps,
                          total > 0 ? 100 * (kind[i].f + kind[i].b) / total : 0.0);
  if (w < len) snprintf(buf + w, len - w, "    %-24s %8.2f ms a run\n", "total", 1e3 * total / runs);
}

static int is_conv(const dd_layer *l) { return is_type(l, "Convolution") || is_type(l, "Deconvolution"); }

/* The convolution descriptor a Convolution or Deconvolution layer keeps first in its priv. */
static const dd_conv_desc *conv_desc_of(const dd_layer *l) { return (const dd_conv_desc *)l->priv; }

void dd_plan_describe(const dd_net *n, char *buf, size_t len) {
  int w = n->plan.n_blocked
              ? snprintf(buf, len, "plan: %zu steps for %zu layers (%zu on blocked %s activations, %s)", n->plan.n_steps,
                         n->n_layers, n->plan.n_blocked, n->plan.blk_bf16 ? "bf16" : "FP32",
                         n->plan.blk_train ? "gradients too; BatchNorm+Scale+ReLU fused" : "ReLUs fused")
              : snprintf(buf, len, "plan: %zu steps for %zu layers (%zu fused: BatchNorm+Scale[+ReLU])", n->plan.n_steps,
                         n->n_layers, n->plan.n_fused);
  if (!n->be->ops->conv_impl || w < 0 || (size_t)w >= len) return;
  /* the convolutions by implementation, in order of first appearance */
  const char *impl[16];
  int count[16], k = 0;
  for (size_t i = 0; i < n->n_layers; i++) {
    if (!is_conv(&n->layers[i])) continue;
    const char *s = n->be->ops->conv_impl(n->be, conv_desc_of(&n->layers[i]));
    int j = 0;
    while (j < k && strcmp(impl[j], s)) j++;
    if (j == k && k < 16) impl[k] = s, count[k++] = 0;
    if (j < k) count[j]++;
  }
  for (int j = 0; j < k && (size_t)w < len; j++)
    w += snprintf(buf + w, len - (size_t)w, "%s%d %s", j ? ", " : "; convolutions: ", count[j], impl[j]);
}

int dd_net_set_precision(dd_net *n, int precision, int *n_bf16, int *n_convs, char *err, size_t errlen) {
  int bf16 = 0, convs = 0;
  /* a blocked plan was made for the convolutions as they were: back to the plain one (the
   * caller builds the blocked one again for the new precision) */
  if (n->plan.n_blocked && dd_plan_build(n, 1)) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory for the plan");
  for (size_t i = 0; i < n->n_layers; i++) {
    dd_layer *l = &n->layers[i];
    if (!is_conv(l)) continue;
    convs++;
    l->precision = precision;
    int r = l->ops->setup ? l->ops->setup(l, err, errlen) : 0;
    if (r) return r;
    const char *s = n->be->ops->conv_impl ? n->be->ops->conv_impl(n->be, conv_desc_of(l)) : NULL;
    bf16 += s && strstr(s, "bf16") != NULL;
  }
  if (n_bf16) *n_bf16 = bf16;
  if (n_convs) *n_convs = convs;
  return 0;
}
