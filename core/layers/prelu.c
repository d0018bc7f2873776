/* PReLU (Caffe's PReLULayer, He et al. 2015): y = x for x > 0, slope_c x otherwise, with one
 * learnable slope per channel (axis 1), or one for all with prelu_param.channel_shared. The slope
 * blob is Caffe's: shape [channels], or no axes (one value) when shared; its filler defaults to
 * constant 0.25. In place, the input is kept for the backward. */
#include "base/dd_error.h"
#include "net/layer.h"

typedef struct {
  float *saved;
  size_t saved_cap;
} prelu_priv;

static int shared(const Caffe__LayerParameter *lp) { return lp->prelu_param && lp->prelu_param->channel_shared; }

static int prelu_shape(dd_shape_ctx *c) {
  const dd_shape *b = &c->bottoms[0];
  c->n_params = 1;
  if (dd_shape_known(b) && b->ndim < 2)
    return dd_shape_fail(c, "PReLU needs a bottom with at least 2 axes (N, C, ...), this one has %d", b->ndim);
  c->tops[0] = *b;
  if (shared(c->lp))
    c->params[0] = dd_shape_make(0, NULL);
  else if (dd_shape_known(b))
    c->params[0] = dd_shape_make(1, &b->dims[1]);
  else
    c->params[0] = dd_shape_unknown();
  return 0;
}

static const Caffe__FillerParameter *prelu_filler(const Caffe__LayerParameter *lp, int i, Caffe__FillerParameter *dflt) {
  (void)i;
  if (lp->prelu_param && lp->prelu_param->filler) return lp->prelu_param->filler;
  dflt->has_value = 1;
  dflt->value = 0.25f;
  return dflt;
}

static int prelu_setup(dd_layer *l, char *err, size_t errlen) {
  prelu_priv *p = l->priv;
  int r = dd__need_kernel(l, (const void *)l->be->ops->prelu_forward, "PReLU", err, errlen);
  if (!r) r = dd__need_kernel(l, (const void *)l->be->ops->prelu_backward, "PReLU", err, errlen);
  if (!r && l->top[0] == l->bottom[0] &&
      dd__ensure_buffer(l->be, (void **)&p->saved, &p->saved_cap, (size_t)l->bottom[0]->count * sizeof(float)))
    r = dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  return r;
}

static void dims(const dd_layer *l, int64_t *ch, int64_t *inner) {
  const dd_tensor *b = l->bottom[0];
  if (shared(l->lp)) {
    *ch = 1;
    *inner = b->count;
  } else {
    *ch = b->shape.dims[1];
    *inner = dd__count(b, 2, b->shape.ndim);
  }
}

static void prelu_forward(dd_layer *l) {
  prelu_priv *p = l->priv;
  dd_tensor *b = l->bottom[0], *t = l->top[0];
  int64_t ch, inner;
  dims(l, &ch, &inner);
  if (t == b) l->be->ops->copy(l->be, p->saved, b->data, (size_t)b->count * sizeof(float));
  l->be->ops->prelu_forward(l->be, b->count, ch, inner, t->data, b->data, l->params[0]->data);
}

static void prelu_backward(dd_layer *l) {
  prelu_priv *p = l->priv;
  dd_tensor *b = l->bottom[0], *t = l->top[0];
  int64_t ch, inner;
  dims(l, &ch, &inner);
  const float *x = t == b ? p->saved : b->data;
  l->be->ops->prelu_backward(l->be, b->count, ch, inner, l->propagate_down[0] ? b->diff : NULL,
                             l->param_propagate_down[0] ? l->params[0]->diff : NULL, t->diff, x, l->params[0]->data);
}

static void prelu_destroy(dd_layer *l) {
  prelu_priv *p = l->priv;
  if (p->saved) l->be->ops->free(l->be, p->saved);
  p->saved = NULL;
}

const dd_layer_ops dd_layer_prelu = {
    .type = "PReLU", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1,
    .shape = prelu_shape, .filler = prelu_filler, .priv_size = sizeof(prelu_priv), .setup = prelu_setup,
    .forward = prelu_forward, .backward = prelu_backward, .destroy = prelu_destroy};
