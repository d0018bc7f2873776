/* Crop (Caffe): the top has bottom 0's axes before crop_param.axis (default 2) and bottom 1's
 * from it on; the block starts at crop_param.offset in each cropped axis (one value for all of
 * them, one per cropped axis, or none: 0). Bottom 1 only gives the size and gets no gradient.
 * Forward and backward are N-d strided copies (copy_nd); backward zeroes bottom 0's diff first,
 * as Caffe does. */
#include "base/dd_error.h"
#include "net/layer.h"

/* The first cropped axis and the offset of every axis of b0 (0 before the axis). */
static int crop_offsets(dd_shape_ctx *c, const dd_shape *b0, int *start, int64_t off[DD_SHAPE_MAX_DIMS]) {
  const Caffe__CropParameter *p = c->lp->crop_param;
  int want = p ? p->axis : 2;
  size_t n = p ? p->n_offset : 0;
  *start = dd_shape_axis(b0, want);
  if (*start < 0 || *start >= b0->ndim)
    return dd_shape_fail(c, "crop_param.axis %d is out of range for a bottom with %d axes", want, b0->ndim);
  if (n > 1 && (size_t)(*start) + n != (size_t)b0->ndim)
    return dd_shape_fail(c, "crop_param.offset is given %zu times: give it once, or once per cropped axis (%d, from "
                         "axis %d)", n, b0->ndim - *start, *start);
  for (int i = 0; i < b0->ndim; i++)
    off[i] = i < *start || n == 0 ? 0 : p->offset[n == 1 ? 0 : (size_t)(i - *start)];
  return 0;
}

static int crop_shape(dd_shape_ctx *c) {
  const dd_shape *b0 = &c->bottoms[0], *b1 = &c->bottoms[1];
  if (!dd_shape_known(b0) || !dd_shape_known(b1)) {
    c->tops[0] = dd_shape_unknown();
    return 0;
  }
  int start, r;
  int64_t off[DD_SHAPE_MAX_DIMS];
  if ((r = crop_offsets(c, b0, &start, off))) return r;
  if (b1->ndim < b0->ndim)
    return dd_shape_fail(c, "the reference (bottom 1) has %d axes, fewer than the data's (bottom 0) %d",
                         b1->ndim, b0->ndim);
  dd_shape t = *b0;
  for (int i = start; i < b0->ndim; i++) {
    if (off[i] + b1->dims[i] > b0->dims[i])
      return dd_shape_fail(c, "the crop of axis %d is past the bottom: crop_param.offset %lld + size %lld > %lld", i,
                           (long long)off[i], (long long)b1->dims[i], (long long)b0->dims[i]);
    t.dims[i] = b1->dims[i];
  }
  c->tops[0] = t;
  return 0;
}

typedef struct {
  dd_copy_nd_desc d; /* over the top's shape: dst_stride the top's, src_stride the bottom's */
  int64_t base;      /* the block's first element in the bottom */
} crop_priv;

static int crop_setup(dd_layer *l, char *err, size_t errlen) {
  if (dd__need_kernel(l, (const void *)l->be->ops->copy_nd, "Crop (copy_nd)", err, errlen)) return DD_EUNSUPPORTED;
  crop_priv *cp = l->priv;
  const dd_shape *b = &l->bottom[0]->shape, *t = &l->top[0]->shape;
  dd_shape_ctx c = {.lp = l->lp, .err = err, .errlen = errlen};
  int start;
  int64_t off[DD_SHAPE_MAX_DIMS];
  if (crop_offsets(&c, b, &start, off)) return DD_EINVAL;
  cp->d.ndim = t->ndim;
  cp->base = 0;
  int64_t sb = 1, st = 1;
  for (int i = t->ndim - 1; i >= 0; i--) {
    cp->d.shape[i] = t->dims[i];
    cp->d.dst_stride[i] = st;
    cp->d.src_stride[i] = sb;
    cp->base += off[i] * sb;
    sb *= b->dims[i];
    st *= t->dims[i];
  }
  return 0;
}

static void crop_forward(dd_layer *l) {
  crop_priv *cp = l->priv;
  if (l->top[0]->count) l->be->ops->copy_nd(l->be, &cp->d, l->top[0]->data, l->bottom[0]->data + cp->base, 0);
}

static void crop_backward(dd_layer *l) {
  if (!l->propagate_down[0]) return;
  crop_priv *cp = l->priv;
  dd_copy_nd_desc back = cp->d; /* the same block, from the top's diff into the bottom's */
  for (int i = 0; i < back.ndim; i++) {
    back.dst_stride[i] = cp->d.src_stride[i];
    back.src_stride[i] = cp->d.dst_stride[i];
  }
  l->be->ops->fill(l->be, l->bottom[0]->diff, 0.0f, l->bottom[0]->count);
  if (l->top[0]->count) l->be->ops->copy_nd(l->be, &back, l->bottom[0]->diff + cp->base, l->top[0]->diff, 0);
}

const dd_layer_ops dd_layer_crop = {
    .type = "Crop", .min_bottoms = 2, .max_bottoms = 2, .min_tops = 1, .max_tops = 1,
    .shape = crop_shape, .priv_size = sizeof(crop_priv), .setup = crop_setup, .forward = crop_forward,
    .backward = crop_backward};
