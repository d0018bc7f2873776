/* Convolution (2-D): Caffe's kernel/pad/stride/dilation fields (repeated or _h/_w), groups and
 * an optional bias. Bottom (N, C, H, W) -> top (N, num_output, H', W') with
 * H' = (H + 2 pad - (dilation (k - 1) + 1)) / stride + 1. Params: weight
 * (num_output, C / group, kh, kw), bias (num_output). */
#include "base/dd_error.h"
#include "layers/conv_geom.h"
#include "net/layer.h"

static int conv_shape(dd_shape_ctx *c) {
  const Caffe__ConvolutionParameter *p;
  const dd_shape *b;
  int64_t k[2], pad[2], st[2], dil[2];
  int r = dd__conv_shape_begin(c, "convolution", &p, &b, k, pad, st, dil);
  if (r || !b) return r;
  int64_t ch = b->dims[1];
  c->params[0] = dd_shape_4(p->num_output, ch / p->group, k[0], k[1]);
  int64_t o[2];
  if ((r = dd__conv_out(c, b, k, pad, st, dil, o))) return r;
  for (int t = 0; t < c->nt; t++) c->tops[t] = dd_shape_4(b->dims[0], p->num_output, o[0], o[1]);
  return 0;
}

static const Caffe__FillerParameter *conv_filler(const Caffe__LayerParameter *lp, int i,
                                                 Caffe__FillerParameter *dflt) {
  (void)dflt;
  return i == 0 ? lp->convolution_param->weight_filler : lp->convolution_param->bias_filler;
}

typedef struct {
  dd_conv_desc d; /* first: core/net/plan.c reads it */
  void *ws;
  size_t ws_cap;
} conv_priv;

static int conv_setup(dd_layer *l, char *err, size_t errlen) {
  conv_priv *cp = l->priv;
  const Caffe__ConvolutionParameter *p = l->lp->convolution_param;
  int64_t k[2], pad[2], st[2], dil[2];
  dd_shape_ctx c = {.lp = l->lp, .err = err, .errlen = errlen};
  if (dd__conv_geometry(&c, p, k, pad, st, dil)) return DD_EINVAL;
  const dd_shape *b = &l->bottom[0]->shape, *t = &l->top[0]->shape;
  cp->d = (dd_conv_desc){.n = (int)b->dims[0], .c = (int)b->dims[1], .h = (int)b->dims[2], .w = (int)b->dims[3],
                         .out_c = (int)t->dims[1], .out_h = (int)t->dims[2], .out_w = (int)t->dims[3],
                         .kh = (int)k[0], .kw = (int)k[1], .sh = (int)st[0], .sw = (int)st[1],
                         .ph = (int)pad[0], .pw = (int)pad[1], .dh = (int)dil[0], .dw = (int)dil[1],
                         .group = (int)p->group, .bias = l->n_params > 1, .precision = l->precision,
                         .keep_input = l->param_propagate_down[0]};
  size_t bytes = l->be->ops->conv_workspace(l->be, &cp->d);
  if (dd__ensure_buffer(l->be, &cp->ws, &cp->ws_cap, bytes))
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory for a %zu-byte convolution workspace", bytes);
  return 0;
}

static void conv_forward(dd_layer *l) {
  conv_priv *cp = l->priv;
  l->be->ops->conv_forward(l->be, &cp->d, l->top[0]->data, l->bottom[0]->data, l->params[0]->data,
                           l->n_params > 1 ? l->params[1]->data : NULL, cp->ws);
}

static void conv_backward(dd_layer *l) {
  conv_priv *cp = l->priv;
  float *dw = l->param_propagate_down[0] ? l->params[0]->diff : NULL;
  float *db = l->n_params > 1 && l->param_propagate_down[1] ? l->params[1]->diff : NULL;
  if (dw || db)
    l->be->ops->conv_backward_filter(l->be, &cp->d, dw, db, l->top[0]->diff, l->bottom[0]->data, cp->ws);
  if (l->propagate_down[0])
    l->be->ops->conv_backward_data(l->be, &cp->d, l->bottom[0]->diff, l->top[0]->diff,
                                   l->params[0]->data, cp->ws);
}

static void conv_destroy(dd_layer *l) {
  conv_priv *cp = l->priv;
  if (cp->ws) l->be->ops->free(l->be, cp->ws);
}

/* One bottom/top pair (Caffe allows several sharing the weights; no net here needs it). */
const dd_layer_ops dd_layer_conv = {
    .type = "Convolution", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1,
    .shape = conv_shape, .filler = conv_filler, .priv_size = sizeof(conv_priv), .setup = conv_setup,
    .forward = conv_forward, .backward = conv_backward, .destroy = conv_destroy};
