/* Deconvolution (Caffe's DeconvolutionLayer): the adjoint of a convolution. convolution_param as
 * for Convolution (num_output, kernel, pad, stride, dilation, group, bias_term); bottom
 * (N, C, H, W) -> top (N, num_output, H', W') with H' = stride (H - 1) + dilation (k - 1) + 1
 * - 2 pad. Weight (C, num_output / group, kh, kw), Caffe's layout, bias (num_output). The forward
 * is the backend's convolution backward-data over the swapped geometry, its input gradient the
 * convolution forward, its weight gradient the convolution backward-filter. */
#include "base/dd_error.h"
#include "layers/conv_geom.h"
#include "net/layer.h"

static int deconv_shape(dd_shape_ctx *c) {
  const Caffe__ConvolutionParameter *p;
  const dd_shape *b;
  int64_t k[2], pad[2], st[2], dil[2];
  int r = dd__conv_shape_begin(c, "deconvolution", &p, &b, k, pad, st, dil);
  if (r || !b) return r;
  c->params[0] = dd_shape_4(b->dims[1], p->num_output / p->group, k[0], k[1]);
  int64_t o[2];
  for (int i = 0; i < 2; i++) {
    o[i] = st[i] * (b->dims[2 + i] - 1) + dil[i] * (k[i] - 1) + 1 - 2 * pad[i];
    if (o[i] <= 0)
      return dd_shape_fail(c, "the %s output size %lld is not positive (pad %lld is too large)",
                           i ? "horizontal" : "vertical", (long long)o[i], (long long)pad[i]);
    if (o[i] > DD_SHAPE_MAX_COUNT) return dd_shape_fail(c, "the output is too large");
  }
  c->tops[0] = dd_shape_4(b->dims[0], p->num_output, o[0], o[1]);
  if (dd_shape_count(&c->tops[0]) > DD_SHAPE_MAX_COUNT) return dd_shape_fail(c, "the output is too large");
  return 0;
}

static const Caffe__FillerParameter *deconv_filler(const Caffe__LayerParameter *lp, int i, Caffe__FillerParameter *dflt) {
  (void)dflt;
  return i == 0 ? lp->convolution_param->weight_filler : lp->convolution_param->bias_filler;
}

typedef struct {
  dd_conv_desc d; /* the convolution whose input is this layer's top and whose output is its bottom
                     (first: core/net/plan.c reads it) */
  void *ws;
  size_t ws_cap;
} deconv_priv;

static int deconv_setup(dd_layer *l, char *err, size_t errlen) {
  deconv_priv *dp = l->priv;
  const Caffe__ConvolutionParameter *p = l->lp->convolution_param;
  int64_t k[2], pad[2], st[2], dil[2];
  dd_shape_ctx c = {.lp = l->lp, .err = err, .errlen = errlen};
  if (dd__conv_geometry(&c, p, k, pad, st, dil)) return DD_EINVAL;
  const dd_shape *b = &l->bottom[0]->shape, *t = &l->top[0]->shape;
  dp->d = (dd_conv_desc){.n = (int)t->dims[0], .c = (int)t->dims[1], .h = (int)t->dims[2], .w = (int)t->dims[3],
                         .out_c = (int)b->dims[1], .out_h = (int)b->dims[2], .out_w = (int)b->dims[3],
                         .kh = (int)k[0], .kw = (int)k[1], .sh = (int)st[0], .sw = (int)st[1],
                         .ph = (int)pad[0], .pw = (int)pad[1], .dh = (int)dil[0], .dw = (int)dil[1],
                         .group = (int)p->group, .precision = l->precision};
  size_t bytes = l->be->ops->conv_workspace(l->be, &dp->d);
  if (dd__ensure_buffer(l->be, &dp->ws, &dp->ws_cap, bytes))
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory for a %zu-byte convolution workspace", bytes);
  return 0;
}

static void deconv_forward(dd_layer *l) {
  deconv_priv *dp = l->priv;
  dd_tensor *t = l->top[0];
  l->be->ops->conv_backward_data(l->be, &dp->d, t->data, l->bottom[0]->data, l->params[0]->data, dp->ws);
  if (l->n_params > 1)
    l->be->ops->channel_affine(l->be, t->shape.dims[0], t->shape.dims[1], dd__count(t, 2, 4), t->data, t->data, NULL,
                               l->params[1]->data);
}

static void deconv_backward(dd_layer *l) {
  deconv_priv *dp = l->priv;
  dd_tensor *t = l->top[0], *b = l->bottom[0];
  if (l->n_params > 1 && l->param_propagate_down[1])
    l->be->ops->channel_affine_backward(l->be, t->shape.dims[0], t->shape.dims[1], dd__count(t, 2, 4), NULL, NULL,
                                        l->params[1]->diff, t->diff, t->data, NULL);
  if (l->param_propagate_down[0])
    l->be->ops->conv_backward_filter(l->be, &dp->d, l->params[0]->diff, NULL, b->data, t->diff, dp->ws);
  if (l->propagate_down[0]) l->be->ops->conv_forward(l->be, &dp->d, b->diff, t->diff, l->params[0]->data, NULL, dp->ws);
}

static void deconv_destroy(dd_layer *l) {
  deconv_priv *dp = l->priv;
  if (dp->ws) l->be->ops->free(l->be, dp->ws);
}

const dd_layer_ops dd_layer_deconv = {
    .type = "Deconvolution", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1,
    .shape = deconv_shape, .filler = deconv_filler, .priv_size = sizeof(deconv_priv), .setup = deconv_setup,
    .forward = deconv_forward, .backward = deconv_backward, .destroy = deconv_destroy};
