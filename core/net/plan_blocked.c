/* Plans in the blocked layout (plan.h): inference for a frozen net (dd_plan_build_blocked) and
 * training for a learning one (dd_plan_build_blocked_train): which layers run on blocked
 * activations (bf16 or FP32), where activations go back to NCHW FP32, and those steps, forward and
 * backward. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"
#include "net/net.h"
#include "net/plan.h"

static int is_type(const dd_layer *l, const char *type) { return !strcmp(l->ops->type, type); }

/* What the walk knows: which blobs hold blocked activations now (by blob index). */
typedef struct {
  dd_net *n;
  int bf16;       /* the element type of the blocked activations */
  unsigned char *blk;
  dd_plan_step *steps;
  size_t n_steps;
  size_t scratch; /* bytes the exits need */
  int train;      /* a training plan's walk */
} walk;

static int blob_index(const dd_net *n, const dd_tensor *t) {
  for (size_t i = 0; i < n->n_blobs; i++)
    if (n->blobs[i] == t) return (int)i;
  return -1;
}

/* Every blob that shares t's memory (in place, Split tops) holds what t holds. */
static void mark(walk *w, const dd_tensor *t, int on) {
  for (size_t i = 0; i < w->n->n_blobs; i++)
    if (w->n->blobs[i] == t || (t->data && w->n->blobs[i]->data == t->data)) w->blk[i] = (unsigned char)on;
}

static int is_blk(const walk *w, const dd_tensor *t) {
  int i = blob_index(w->n, t);
  return i >= 0 && w->blk[i];
}

static int blockable(const dd_tensor *t) { return t->shape.ndim == 4 && t->shape.dims[1] % 16 == 0; }

/* Whether layer i + 1 is a ReLU in place on t (fused into layer i's step), and its slope. */
static int relu_next(const dd_net *n, size_t i, const dd_tensor *t, float *slope) {
  *slope = 0;
  if (i + 1 >= n->n_layers) return 0;
  const dd_layer *re = &n->layers[i + 1];
  if (!is_type(re, "ReLU") || re->nb != 1 || re->bottom[0] != t || re->top[0] != t) return 0;
  *slope = re->lp->relu_param ? re->lp->relu_param->negative_slope : 0.0f;
  return 1;
}

static void exit_step(walk *w, dd_tensor *t, int at) {
  w->steps[w->n_steps++] = (dd_plan_step){.kind = DD_STEP_BLK_EXIT, .first = at, .n_layers = 0, .blob = t};
  mark(w, t, 0);
  /* (training: the backward converts NCHW FP32 data and gradients back, through the scratch too) */
  size_t bytes = (size_t)t->count * (w->bf16 && !w->train ? 2 : 4);
  if (bytes > w->scratch) w->scratch = bytes;
}

/* Exits for what the net exposes after a forward: its outputs (blobs no layer reads but in place),
 * and the `keep` blobs. */
static void exit_exposed(walk *w, const char *const *keep, int n_keep) {
  dd_net *n = w->n;
  for (size_t b = 0; b < n->n_blobs; b++) {
    if (!w->blk[b]) continue;
    int read = 0, kept = 0; /* read: by a layer that does not write it in place */
    for (size_t i = 0; i < n->n_layers && !read; i++) {
      const dd_layer *l = &n->layers[i];
      int writes = 0;
      for (int t = 0; t < l->nt; t++) writes |= l->top[t] == n->blobs[b];
      for (int k = 0; k < l->nb && !writes; k++) read |= l->bottom[k] == n->blobs[b];
    }
    for (int k = 0; k < n_keep && !kept; k++) kept = keep[k] && !strcmp(keep[k], n->blobs[b]->name);
    if (!read || kept) exit_step(w, n->blobs[b], (int)n->n_layers);
  }
}

/* The blocked step layer i can be (its kind, with s filled), or DD_STEP_LAYER. */
static int blk_step(walk *w, size_t i, dd_plan_step *s) {
  dd_net *n = w->n;
  dd_layer *l = &n->layers[i];
  const dd_backend_ops *ops = n->be->ops;
  *s = (dd_plan_step){.kind = DD_STEP_LAYER, .first = (int)i, .n_layers = 1};
  if (l->nb < 1 || (l->nt != 1 && !is_type(l, "Split"))) return DD_STEP_LAYER;
  dd_tensor *x = l->bottom[0], *y = l->top[0];
  float slope;
  if (is_type(l, "Convolution")) {
    const dd_conv_desc *d = (const dd_conv_desc *)l->priv;
    int xb = is_blk(w, x), relu = relu_next(n, i, y, &slope);
    if ((d->precision == DD_PRECISION_BF16) != w->bf16 || !blockable(y) || (xb && !blockable(x)) ||
        !ops->conv_blk_prepare(n->be, d, w->bf16, xb, relu, slope))
      return DD_STEP_LAYER;
    *s = (dd_plan_step){.kind = DD_STEP_BLK_CONV, .first = (int)i, .n_layers = 1 + relu, .relu = relu,
                        .slope = slope, .x_blocked = xb};
  } else if (!is_blk(w, x)) {
    return DD_STEP_LAYER;
  } else if (is_type(l, "ReLU") && l->nb == 1) {
    *s = (dd_plan_step){.kind = DD_STEP_BLK_RELU, .first = (int)i, .n_layers = 1,
                        .slope = l->lp->relu_param ? l->lp->relu_param->negative_slope : 0.0f};
  } else if (is_type(l, "Scale") && l->nb == 1 && l->n_params >= 1) {
    const Caffe__ScaleParameter *sp = l->lp->scale_param;
    if ((sp ? sp->axis : 1) != 1 || (sp ? sp->num_axes : 1) != 1) return DD_STEP_LAYER;
    int relu = relu_next(n, i, y, &slope);
    *s = (dd_plan_step){.kind = DD_STEP_BLK_SCALE, .first = (int)i, .n_layers = 1 + relu, .relu = relu, .slope = slope};
  } else if (is_type(l, "Eltwise") && l->nb >= 2) {
    const Caffe__EltwiseParameter *ep = l->lp->eltwise_param;
    if (ep && ep->operation != CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__SUM) return DD_STEP_LAYER;
    for (int b = 0; b < l->nb; b++) /* (a top over a third bottom would be overwritten before it is read) */
      if (!is_blk(w, l->bottom[b]) || (b >= 2 && l->bottom[b]->data == y->data)) return DD_STEP_LAYER;
    int relu = relu_next(n, i, y, &slope); /* a post-activation residual block's ReLU */
    *s = (dd_plan_step){.kind = DD_STEP_BLK_SUM, .first = (int)i, .n_layers = 1 + relu, .relu = relu, .slope = slope};
  } else if (is_type(l, "Split")) { /* blocked tops only where they share the bottom's memory */
    for (int t = 0; t < l->nt; t++)
      if (l->top[t]->data != x->data) return DD_STEP_LAYER;
    *s = (dd_plan_step){.kind = DD_STEP_BLK_SPLIT, .first = (int)i, .n_layers = 1};
  } else {
    return DD_STEP_LAYER;
  }
  return s->kind;
}

int dd_plan_build_blocked(dd_net *n, const char *const *keep, int n_keep) {
  const dd_backend_ops *ops = n->be->ops;
  const char *env = getenv("DD_FUSE");
  if ((env && !strcmp(env, "0")) || !ops->conv_blk_prepare || !ops->conv_blk_forward || !ops->blk_relu ||
      !ops->blk_affine || !ops->blk_sum || !ops->blk_to_nchw)
    return 0;
  /* the element type: bf16 where the convolutions run in bf16 (all of them alike, as
   * dd_net_set_precision sets them), FP32 where they run in FP32 */
  int bf16 = -1;
  for (size_t i = 0; i < n->n_layers; i++) {
    if (n->graph->layers[i].need_backward) return 0;
    if (is_type(&n->layers[i], "Convolution") && bf16 < 0)
      bf16 = ((const dd_conv_desc *)n->layers[i].priv)->precision == DD_PRECISION_BF16;
  }
  if (bf16 < 0) return 0;
  walk w = {.n = n, .bf16 = bf16, .blk = calloc(n->n_blobs ? n->n_blobs : 1, 1),
            .steps = calloc(2 * n->n_layers + n->n_blobs + 1, sizeof(dd_plan_step))};
  if (!w.blk || !w.steps) {
    free(w.blk), free(w.steps);
    return DD_ENOMEM;
  }
  size_t on_blk = 0;
  for (size_t i = 0; i < n->n_layers;) {
    dd_layer *l = &n->layers[i];
    dd_plan_step s;
    int kind = blk_step(&w, i, &s);
    if (kind == DD_STEP_LAYER) {
      /* this layer reads FP32: its blocked bottoms go back first, and what it writes is FP32 */
      for (int b = 0; b < l->nb; b++)
        if (is_blk(&w, l->bottom[b])) exit_step(&w, l->bottom[b], (int)i);
      for (int t = 0; t < l->nt; t++) mark(&w, l->top[t], 0);
    } else {
      if (kind != DD_STEP_BLK_SPLIT) mark(&w, l->top[0], 1); /* (a Split's tops are its bottom) */
      on_blk += (size_t)s.n_layers;
    }
    w.steps[w.n_steps++] = s;
    i += (size_t)s.n_layers;
  }
  exit_exposed(&w, keep, n_keep);
  free(w.blk);
  void *scratch = NULL;
  if (!on_blk || (w.scratch && !(scratch = ops->alloc(n->be, w.scratch)))) {
    free(w.steps);
    return on_blk ? DD_ENOMEM : 0;
  }
  dd_plan_free(n);
  n->plan.steps = w.steps;
  n->plan.n_steps = w.n_steps;
  n->plan.n_blocked = on_blk;
  n->plan.blk_bf16 = bf16;
  n->plan.blk_scratch = scratch;
  return 0;
}

static void blk_forward(dd_net *n, const dd_plan_step *s);

void dd_plan_blk_forward(dd_net *n, const dd_plan_step *s) { dd_plan_timed(n, s, n->plan.fwd_s, blk_forward); }

static void blk_forward(dd_net *n, const dd_plan_step *s) {
  dd_backend *be = n->be;
  const dd_backend_ops *ops = be->ops;
  int bf16 = n->plan.blk_bf16;
  if (s->kind == DD_STEP_BLK_EXIT) {
    dd_tensor *t = s->blob;
    const dd_shape *sh = &t->shape;
    ops->copy(be, n->plan.blk_scratch, t->data, (size_t)t->count * (bf16 ? 2 : 4));
    ops->blk_to_nchw(be, bf16, (int)sh->dims[0], (int)sh->dims[1], (int)(sh->dims[2] * sh->dims[3]), t->data,
                     n->plan.blk_scratch);
    return;
  }
  dd_layer *l = &n->layers[s->first];
  dd_tensor *x = l->bottom[0], *y = l->top[0];
  const dd_shape *sh = &x->shape;
  switch (s->kind) {
    case DD_STEP_BLK_CONV:
      if (ops->conv_blk_forward(be, (const dd_conv_desc *)l->priv, bf16, s->x_blocked, s->relu, s->slope, y->data,
                                x->data, l->params[0]->data, l->n_params > 1 ? l->params[1]->data : NULL)) {
        n->status = DD_EINVAL;
        snprintf(n->status_msg, sizeof n->status_msg,
                 "layer %s: its blocked convolution cannot run for shape %lldx%lldx%lldx%lld (the plan was built for "
                 "another)", l->name, (long long)sh->dims[0], (long long)sh->dims[1], (long long)sh->dims[2],
                 (long long)sh->dims[3]);
      }
      break;
    case DD_STEP_BLK_RELU:
      ops->blk_relu(be, bf16, y->count, y->data, x->data, s->slope);
      break;
    case DD_STEP_BLK_SCALE:
      ops->blk_affine(be, bf16, (int)sh->dims[0], (int)sh->dims[1], (int)(sh->dims[2] * sh->dims[3]), y->data, x->data,
                          l->params[0]->data, l->n_params > 1 ? l->params[1]->data : NULL, s->relu, s->slope);
      break;
    case DD_STEP_BLK_SUM: {
      const Caffe__EltwiseParameter *ep = l->lp->eltwise_param;
      float c0 = ep && ep->n_coeff ? ep->coeff[0] : 1.0f, c1 = ep && ep->n_coeff ? ep->coeff[1] : 1.0f;
      int last = l->nb == 2; /* the ReLU goes with the last sum */
      ops->blk_sum(be, bf16, y->count, y->data, l->bottom[0]->data, c0, l->bottom[1]->data, c1, s->relu && last,
                   s->slope);
      for (int b = 2; b < l->nb; b++)
        ops->blk_sum(be, bf16, y->count, y->data, y->data, 1.0f, l->bottom[b]->data,
                     ep && ep->n_coeff ? ep->coeff[b] : 1.0f, s->relu && b == l->nb - 1, s->slope);
      break;
    }
    default: /* DD_STEP_BLK_SPLIT: the tops are the bottom's memory */
      break;
  }
}

/* ---- training in the blocked layout ------------------------------------------------------------ */

/* The blocked training step layer i can be (s filled; its kind), or DD_STEP_LAYER (a convolution
 * that stays on NCHW FP32 gets its layouts back). A convolution's step is a DD_STEP_LAYER whose
 * descriptor says its layouts (blk_in, blk_out): the layer's own forward and backward run it. */
static int train_step(walk *w, size_t i, dd_plan_step *s, int *blocked_out) {
  dd_net *n = w->n;
  dd_layer *l = &n->layers[i];
  const dd_backend_ops *ops = n->be->ops;
  *s = (dd_plan_step){.kind = DD_STEP_LAYER, .first = (int)i, .n_layers = 1};
  *blocked_out = 0;
  if (l->nb < 1 || (l->nt != 1 && !is_type(l, "Split"))) return DD_STEP_LAYER;
  dd_tensor *x = l->bottom[0], *y = l->top[0];
  int relu;
  float slope;
  if (is_type(l, "Convolution")) {
    dd_conv_desc *d = (dd_conv_desc *)l->priv;
    int xb = is_blk(w, x);
    if ((d->precision == DD_PRECISION_BF16) != w->bf16 || d->group != 1 || !blockable(y) || (xb && !blockable(x)) ||
        x == y)
      return DD_STEP_LAYER;
    d->blk_in = xb, d->blk_out = 1;
    if (!ops->conv_blk_train(n->be, d)) {
      d->blk_in = d->blk_out = 0;
      return DD_STEP_LAYER;
    }
    *blocked_out = 1;
    return DD_STEP_LAYER;
  }
  if (!is_blk(w, x) || !blockable(x)) return DD_STEP_LAYER;
  if (dd_plan_match_bn_scale(n, i, &relu, &slope)) {
    int64_t c = x->shape.dims[1];
    *s = (dd_plan_step){.kind = DD_STEP_BN_SCALE_RELU, .first = (int)i, .n_layers = relu ? 3 : 2, .relu = relu,
                        .slope = slope, .x_blocked = 1};
    s->mean = ops->alloc(n->be, (size_t)c * sizeof(float));
    s->inv_std = ops->alloc(n->be, (size_t)c * sizeof(float));
    *blocked_out = 1;
    return s->kind;
  }
  if (is_type(l, "Eltwise") && l->nb >= 2) {
    const Caffe__EltwiseParameter *ep = l->lp->eltwise_param;
    if (ep && ep->operation != CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__SUM) return DD_STEP_LAYER;
    for (int b = 0; b < l->nb; b++)
      if (!is_blk(w, l->bottom[b]) || l->bottom[b]->data == y->data) return DD_STEP_LAYER;
    *s = (dd_plan_step){.kind = DD_STEP_BLK_SUM, .first = (int)i, .n_layers = 1};
    *blocked_out = 1;
    return s->kind;
  }
  if (is_type(l, "Split")) {
    for (int t = 0; t < l->nt; t++)
      if (l->top[t]->data != x->data || l->top[t]->diff == x->diff) return DD_STEP_LAYER;
    *s = (dd_plan_step){.kind = DD_STEP_BLK_SPLIT, .first = (int)i, .n_layers = 1};
    return s->kind;
  }
  return DD_STEP_LAYER;
}

/* Frees what a walk's steps hold (their statistics buffers) and gives the convolutions their NCHW
 * layouts back. */
static void train_walk_undo(walk *w) {
  dd_net *n = w->n;
  for (size_t k = 0; k < w->n_steps; k++) {
    if (w->steps[k].mean) n->be->ops->free(n->be, w->steps[k].mean);
    if (w->steps[k].inv_std) n->be->ops->free(n->be, w->steps[k].inv_std);
  }
  for (size_t i = 0; i < n->n_layers; i++)
    if (is_type(&n->layers[i], "Convolution")) {
      dd_conv_desc *d = (dd_conv_desc *)n->layers[i].priv;
      d->blk_in = d->blk_out = 0;
    }
  free(w->steps);
  free(w->blk);
}

int dd_plan_build_blocked_train(dd_net *n, const char *const *keep, int n_keep) {
  const dd_backend_ops *ops = n->be->ops;
  const char *env = getenv("DD_FUSE"), *off = getenv("DD_BLOCKED_TRAIN");
  if ((env && !strcmp(env, "0")) || (off && !strcmp(off, "0")) || !ops->conv_blk_train || !ops->blk_from_nchw || !ops->blk_to_nchw ||
      !ops->blk_sum || !ops->bn_affine_relu_forward || !ops->bn_affine_relu_backward)
    return 0;
  int learns = 0; /* a frozen net (a teacher) keeps its inference plan */
  for (size_t i = 0; i < n->n_layers && !learns; i++) learns = n->graph->layers[i].need_backward;
  if (!learns) return 0;
  if (n->plan.blk_train || n->plan.n_blocked) { /* from the plain plan */
    int r = dd_plan_build(n, 1);
    if (r) return r;
  }
  int bf16 = -1;
  for (size_t i = 0; i < n->n_layers && bf16 < 0; i++)
    if (is_type(&n->layers[i], "Convolution")) bf16 = ((const dd_conv_desc *)n->layers[i].priv)->precision == DD_PRECISION_BF16;
  if (bf16 < 0) return 0;
  walk w = {.n = n, .bf16 = bf16, .train = 1, .blk = calloc(n->n_blobs ? n->n_blobs : 1, 1),
            .steps = calloc(2 * n->n_layers + n->n_blobs + 1, sizeof(dd_plan_step))};
  if (!w.blk || !w.steps) {
    free(w.blk), free(w.steps);
    return DD_ENOMEM;
  }
  size_t on_blk = 0;
  int oom = 0;
  for (size_t i = 0; i < n->n_layers;) {
    dd_layer *l = &n->layers[i];
    dd_plan_step s;
    int out_blk, kind = train_step(&w, i, &s, &out_blk);
    if (kind == DD_STEP_BN_SCALE_RELU && (!s.mean || !s.inv_std)) oom = 1;
    int blocked = out_blk || kind == DD_STEP_BLK_SPLIT;
    if (!blocked) {
      /* this layer reads NCHW FP32: its blocked bottoms go back first, and what it writes is NCHW */
      for (int b = 0; b < l->nb; b++)
        if (is_blk(&w, l->bottom[b])) exit_step(&w, l->bottom[b], (int)i);
      for (int t = 0; t < l->nt; t++) mark(&w, l->top[t], 0);
    } else {
      if (out_blk) mark(&w, l->top[0], 1); /* (a Split's tops are its bottom) */
      on_blk += (size_t)s.n_layers;
    }
    w.steps[w.n_steps++] = s;
    i += (size_t)s.n_layers;
  }
  exit_exposed(&w, keep, n_keep);
  void *scratch = NULL;
  if (oom || !on_blk || (w.scratch && !(scratch = ops->alloc(n->be, w.scratch)))) {
    train_walk_undo(&w);
    return on_blk ? DD_ENOMEM : 0;
  }
  free(w.blk);
  /* the plain plan's steps go (their own statistics buffers with them); the convolutions keep the
   * layouts the walk gave them */
  for (size_t k = 0; k < n->plan.n_steps; k++) {
    if (n->plan.steps[k].mean) ops->free(n->be, n->plan.steps[k].mean);
    if (n->plan.steps[k].inv_std) ops->free(n->be, n->plan.steps[k].inv_std);
  }
  free(n->plan.steps);
  free(n->plan.fwd_s);
  free(n->plan.bwd_s);
  if (n->plan.blk_scratch) ops->free(n->be, n->plan.blk_scratch);
  size_t fused = 0;
  for (size_t k = 0; k < w.n_steps; k++) fused += w.steps[k].kind != DD_STEP_LAYER;
  n->plan = (dd_plan){.steps = w.steps, .n_steps = w.n_steps, .n_fused = fused, .n_blocked = on_blk,
                      .blk_bf16 = bf16, .blk_scratch = scratch, .blk_train = 1};
  return 0;
}

static void blk_backward(dd_net *n, const dd_plan_step *s);

void dd_plan_blk_backward(dd_net *n, const dd_plan_step *s) {
  if (!n->plan.blk_train) return; /* an inference plan: no backward */
  if (s->kind != DD_STEP_BLK_EXIT && !dd_plan_step_needs_backward(n, s)) return;
  dd_plan_timed(n, s, n->plan.bwd_s, blk_backward);
}

/* t (count elements, NCHW FP32 in its buffer `buf`) back into the blocked layout, in place. */
static void to_blocked(dd_net *n, const dd_tensor *t, float *buf) {
  const dd_shape *sh = &t->shape;
  n->be->ops->copy(n->be, n->plan.blk_scratch, buf, (size_t)t->count * sizeof(float));
  n->be->ops->blk_from_nchw(n->be, n->plan.blk_bf16, (int)sh->dims[0], (int)sh->dims[1], (int)(sh->dims[2] * sh->dims[3]),
                            buf, n->plan.blk_scratch);
}

static void blk_backward(dd_net *n, const dd_plan_step *s) {
  dd_backend *be = n->be;
  int bf16 = n->plan.blk_bf16;
  if (s->kind == DD_STEP_BLK_EXIT) {
    /* the producer's backward reads the blob blocked: its data back (exact), and the gradients
     * in, of every blob that shares its memory (a Split's tops: the exit made them all NCHW, so
     * the layers after it that read any of them wrote NCHW gradients; a gradient not written yet
     * is written, blocked, by a reader before the exit, whose backward comes later) */
    to_blocked(n, s->blob, s->blob->data);
    for (size_t b = 0; b < n->n_blobs; b++) {
      dd_tensor *t = n->blobs[b];
      if (t->data != s->blob->data || !t->diff) continue;
      int seen = 0; /* each gradient buffer once */
      for (size_t a = 0; a < b && !seen; a++) seen = n->blobs[a]->data == s->blob->data && n->blobs[a]->diff == t->diff;
      if (!seen) to_blocked(n, t, t->diff);
    }
    return;
  }
  dd_layer *l = &n->layers[s->first];
  dd_tensor *y = l->top[0];
  if (s->kind == DD_STEP_BLK_SUM) { /* dx_b = coeff_b dy */
    const Caffe__EltwiseParameter *ep = l->lp->eltwise_param;
    for (int b = 0; b < l->nb; b++)
      if (l->propagate_down[b])
        be->ops->blk_sum(be, bf16, y->count, l->bottom[b]->diff, y->diff, ep && ep->n_coeff ? ep->coeff[b] : 1.0f,
                         y->diff, 0.0f, 0, 0.0f);
  } else if (s->kind == DD_STEP_BLK_SPLIT && l->propagate_down[0]) { /* dx = the sum of the tops' gradients */
    dd_tensor *x = l->bottom[0];
    if (l->nt == 1) be->ops->blk_sum(be, bf16, x->count, x->diff, l->top[0]->diff, 1.0f, l->top[0]->diff, 0.0f, 0, 0.0f);
    for (int t = 1; t < l->nt; t++)
      be->ops->blk_sum(be, bf16, x->count, x->diff, t == 1 ? l->top[0]->diff : x->diff, 1.0f, l->top[t]->diff, 1.0f, 0,
                       0.0f);
  }
}
