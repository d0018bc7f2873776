/* LRN (Caffe's LRNLayer, local response normalization): lrn_param local_size (5, odd), alpha (1),
 * beta (0.75), k (1), norm_region ACROSS_CHANNELS (default) or WITHIN_CHANNEL, over a 4-axis
 * bottom. Caffe computes WITHIN_CHANNEL with an inner chain of Split, Power, Pooling (AVE, padded)
 * and Eltwise layers; distilld computes the same numbers directly (backend.h's lrn_forward). The
 * per-element scale is kept for the backward. Not in place: the backward needs the input, the
 * output and the top's gradient at once (Caffe's in-place LRN computes a wrong gradient). */
#include <string.h>

#include "base/dd_error.h"
#include "net/layer.h"

typedef struct {
  float *scale;
  size_t scale_cap;
} lrn_priv;

static int lrn_shape(dd_shape_ctx *c) {
  const Caffe__LRNParameter *p = c->lp->lrn_param;
  uint32_t size = p ? p->local_size : 5;
  if (size % 2 != 1) return dd_shape_fail(c, "lrn_param.local_size %u must be odd (Caffe supports only odd sizes)", size);
  const Caffe__LayerParameter *lp = c->lp;
  if (lp->n_top && lp->n_bottom && !strcmp(lp->top[0], lp->bottom[0]))
    return dd_shape_fail(c, "LRN cannot run in place (top \"%s\" is its bottom): its backward needs the input", lp->top[0]);
  const dd_shape *b = &c->bottoms[0];
  if (dd_shape_known(b) && b->ndim != 4)
    return dd_shape_fail(c, "LRN needs a bottom with 4 axes (N, C, H, W), this one has %d", b->ndim);
  c->tops[0] = *b;
  return 0;
}

static int lrn_setup(dd_layer *l, char *err, size_t errlen) {
  lrn_priv *p = l->priv;
  int r = dd__need_kernel(l, (const void *)l->be->ops->lrn_forward, "LRN", err, errlen);
  if (!r) r = dd__need_kernel(l, (const void *)l->be->ops->lrn_backward, "LRN", err, errlen);
  size_t bytes = (size_t)l->bottom[0]->count * sizeof(float);
  if (!r && dd__ensure_buffer(l->be, (void **)&p->scale, &p->scale_cap, bytes)) r = DD_ENOMEM;
  if (r == DD_ENOMEM) dd_errorf(r, err, errlen, "out of memory");
  return r;
}

#define LRN_ARGS(l)                                                                                           \
  (!(l)->lp->lrn_param || (l)->lp->lrn_param->norm_region == CAFFE__LRNPARAMETER__NORM_REGION__ACROSS_CHANNELS), \
      (int)(l)->bottom[0]->shape.dims[0], (int)(l)->bottom[0]->shape.dims[1], (int)(l)->bottom[0]->shape.dims[2], \
      (int)(l)->bottom[0]->shape.dims[3], (l)->lp->lrn_param ? (int)(l)->lp->lrn_param->local_size : 5,        \
      (l)->lp->lrn_param ? (l)->lp->lrn_param->alpha : 1.0f, (l)->lp->lrn_param ? (l)->lp->lrn_param->beta : 0.75f

static void lrn_forward(dd_layer *l) {
  lrn_priv *p = l->priv;
  l->be->ops->lrn_forward(l->be, LRN_ARGS(l), l->lp->lrn_param ? l->lp->lrn_param->k : 1.0f, l->top[0]->data, p->scale,
                          l->bottom[0]->data);
}

static void lrn_backward(dd_layer *l) {
  if (!l->propagate_down[0]) return;
  lrn_priv *p = l->priv;
  dd_tensor *b = l->bottom[0], *t = l->top[0];
  l->be->ops->lrn_backward(l->be, LRN_ARGS(l), b->diff, t->diff, b->data, t->data, p->scale);
}

static void lrn_destroy(dd_layer *l) {
  lrn_priv *p = l->priv;
  if (p->scale) l->be->ops->free(l->be, p->scale);
}

const dd_layer_ops dd_layer_lrn = {
    .type = "LRN", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1,
    .shape = lrn_shape, .priv_size = sizeof(lrn_priv), .setup = lrn_setup, .forward = lrn_forward,
    .backward = lrn_backward, .destroy = lrn_destroy};
