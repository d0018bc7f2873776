/* Im2col (Caffe's Im2colLayer): the columns a convolution with convolution_param's kernel, pad,
 * stride and dilation would multiply: bottom (N, C, H, W) -> top (N, C kh kw, H', W'). Backward
 * is col2im (the sum of the columns' gradients that read each pixel). 2-D only (Caffe's N-d
 * force_nd_im2col form is refused with the other N-d convolutions). */
#include "base/dd_error.h"
#include "layers/conv_geom.h"
#include "net/layer.h"

static int im2col_shape(dd_shape_ctx *c) {
  const Caffe__ConvolutionParameter *p = c->lp->convolution_param;
  if (!p) return dd_shape_fail(c, "Im2col needs convolution_param { kernel_size: ... }");
  int64_t k[2], pad[2], st[2], dil[2], o[2];
  int r;
  if ((r = dd__conv_geometry(c, p, k, pad, st, dil))) return r;
  const dd_shape *b = &c->bottoms[0];
  if (!dd_shape_known(b)) {
    c->tops[0] = dd_shape_unknown();
    return 0;
  }
  if (p->axis != 1 || b->ndim != 4 || p->force_nd_im2col)
    return dd_shape_fail(c, "only 2-D Im2col over (N, C, H, W) with axis 1 is supported (bottom has %d axes)", b->ndim);
  if ((r = dd__conv_out(c, b, k, pad, st, dil, o))) return r;
  int64_t ch = dd_count_mul(b->dims[1], dd_count_mul(k[0], k[1]));
  dd_shape t = dd_shape_4(b->dims[0], ch, o[0], o[1]);
  if (ch == DD_COUNT_OVERFLOW || dd_shape_count(&t) > DD_SHAPE_MAX_COUNT)
    return dd_shape_fail(c, "the columns would hold more than %lld elements", (long long)DD_SHAPE_MAX_COUNT);
  c->tops[0] = t;
  return 0;
}

typedef struct {
  dd_conv_desc d;
} im2col_priv;

static int im2col_setup(dd_layer *l, char *err, size_t errlen) {
  im2col_priv *ip = l->priv;
  int r = dd__need_kernel(l, (const void *)l->be->ops->im2col, "Im2col", err, errlen);
  if (!r) r = dd__need_kernel(l, (const void *)l->be->ops->col2im, "Im2col (col2im)", err, errlen);
  if (r) return r;
  int64_t k[2], pad[2], st[2], dil[2];
  dd_shape_ctx c = {.lp = l->lp, .err = err, .errlen = errlen};
  if (dd__conv_geometry(&c, l->lp->convolution_param, k, pad, st, dil)) return DD_EINVAL;
  const dd_shape *b = &l->bottom[0]->shape, *t = &l->top[0]->shape;
  ip->d = (dd_conv_desc){.n = (int)b->dims[0], .c = (int)b->dims[1], .h = (int)b->dims[2], .w = (int)b->dims[3],
                         .out_c = (int)t->dims[1], .out_h = (int)t->dims[2], .out_w = (int)t->dims[3],
                         .kh = (int)k[0], .kw = (int)k[1], .sh = (int)st[0], .sw = (int)st[1],
                         .ph = (int)pad[0], .pw = (int)pad[1], .dh = (int)dil[0], .dw = (int)dil[1], .group = 1};
  return 0;
}

static void im2col_forward(dd_layer *l) {
  im2col_priv *ip = l->priv;
  l->be->ops->im2col(l->be, &ip->d, l->top[0]->data, l->bottom[0]->data);
}

static void im2col_backward(dd_layer *l) {
  im2col_priv *ip = l->priv;
  if (l->propagate_down[0]) l->be->ops->col2im(l->be, &ip->d, l->bottom[0]->diff, l->top[0]->diff);
}

const dd_layer_ops dd_layer_im2col = {
    .type = "Im2col", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1,
    .shape = im2col_shape, .priv_size = sizeof(im2col_priv), .setup = im2col_setup, .forward = im2col_forward,
    .backward = im2col_backward};
