/* Pooling: MAX, AVE (and global), with Caffe's output size: ceil((H + 2 pad - k) / stride) + 1
 * (floor with round_mode FLOOR, or the forks' ceil_mode: false), less one when the input has padding (on either axis) and the last
 * window would start in the padding. MAX may have a second top (the argmax mask). */
#include "base/dd_error.h"
#include "net/layer.h"

static int pooling_shape(dd_shape_ctx *c) {
  const Caffe__PoolingParameter *p = c->lp->pooling_param;
  if (!p) return dd_shape_fail(c, "pooling_param is required");
  if (p->pool == CAFFE__POOLING_PARAMETER__POOL_METHOD__STOCHASTIC)
    return dd_shape_fail(c, "STOCHASTIC pooling is not supported (use MAX or AVE)");
  if (c->nt == 2 && p->pool != CAFFE__POOLING_PARAMETER__POOL_METHOD__MAX)
    return dd_shape_fail(c, "only MAX pooling has a second (mask) top");
  int has_k = p->has_kernel_size, has_khw = p->has_kernel_h || p->has_kernel_w;
  if (p->global_pooling) {
    if (has_k || has_khw) return dd_shape_fail(c, "global_pooling takes no kernel size");
  } else {
    if (has_k == has_khw) return dd_shape_fail(c, "give kernel_size, or kernel_h and kernel_w (not both)");
    if (has_khw && !(p->has_kernel_h && p->has_kernel_w))
      return dd_shape_fail(c, "kernel_h and kernel_w must be given together");
  }
  if ((p->has_pad_h || p->has_pad_w) && p->has_pad)
    return dd_shape_fail(c, "give pad, or pad_h and pad_w (not both)");
  if ((p->has_stride_h || p->has_stride_w) && p->has_stride)
    return dd_shape_fail(c, "give stride, or stride_h and stride_w (not both)");
  if (p->has_ceil_mode && p->has_round_mode)
    return dd_shape_fail(c, "give pooling_param.round_mode or the forks' ceil_mode, not both");
  int floor_mode = p->has_ceil_mode ? !p->ceil_mode : p->round_mode == CAFFE__POOLING_PARAMETER__ROUND_MODE__FLOOR;
  int64_t pad[2] = {p->has_pad_h ? p->pad_h : p->pad, p->has_pad_w ? p->pad_w : p->pad};
  int64_t st[2] = {p->has_stride_h ? p->stride_h : p->stride, p->has_stride_w ? p->stride_w : p->stride};
  const dd_shape *b = &c->bottoms[0];
  if (!dd_shape_known(b)) {
    for (int t = 0; t < c->nt; t++) c->tops[t] = dd_shape_unknown();
    return 0;
  }
  if (b->ndim != 4) return dd_shape_fail(c, "pooling needs a (N, C, H, W) bottom, got %d axes", b->ndim);
  int64_t k[2];
  if (p->global_pooling) {
    k[0] = b->dims[2];
    k[1] = b->dims[3];
    if (pad[0] || pad[1] || st[0] != 1 || st[1] != 1)
      return dd_shape_fail(c, "global_pooling needs pad 0 and stride 1");
  } else {
    k[0] = has_k ? p->kernel_size : p->kernel_h;
    k[1] = has_k ? p->kernel_size : p->kernel_w;
  }
  if (k[0] <= 0 || k[1] <= 0) return dd_shape_fail(c, "the kernel size must be > 0");
  if (st[0] <= 0 || st[1] <= 0) return dd_shape_fail(c, "stride must be > 0");
  if (pad[0] >= k[0] || pad[1] >= k[1]) return dd_shape_fail(c, "pad must be smaller than the kernel");
  int64_t o[2];
  for (int i = 0; i < 2; i++) {
    int64_t span = b->dims[2 + i] + 2 * pad[i] - k[i];
    if (span < 0) return dd_shape_fail(c, "the kernel is larger than the padded input");
    o[i] = floor_mode ? span / st[i] + 1 : (span + st[i] - 1) / st[i] + 1;
    /* Caffe trims both axes when either has padding */
    if ((pad[0] || pad[1]) && (o[i] - 1) * st[i] >= b->dims[2 + i] + pad[i]) o[i]--;
    if (o[i] > DD_SHAPE_MAX_COUNT)
      return dd_shape_fail(c, "the %s output size %lld (pad %lld) is more than %lld", i ? "horizontal" : "vertical",
                           (long long)o[i], (long long)pad[i], (long long)DD_SHAPE_MAX_COUNT);
  }
  for (int t = 0; t < c->nt; t++) c->tops[t] = dd_shape_4(b->dims[0], b->dims[1], o[0], o[1]);
  return 0;
}

typedef struct {
  dd_pool_desc d;
  int32_t *mask;
  size_t mask_cap;
} pool_priv;

static int pooling_setup(dd_layer *l, char *err, size_t errlen) {
  pool_priv *pp = l->priv;
  const Caffe__PoolingParameter *p = l->lp->pooling_param;
  const dd_shape *b = &l->bottom[0]->shape, *t = &l->top[0]->shape;
  int g = p->global_pooling;
  pp->d = (dd_pool_desc){.n = (int)b->dims[0], .c = (int)b->dims[1], .h = (int)b->dims[2], .w = (int)b->dims[3],
                         .out_h = (int)t->dims[2], .out_w = (int)t->dims[3],
                         .kh = g ? (int)b->dims[2] : (int)(p->has_kernel_size ? p->kernel_size : p->kernel_h),
                         .kw = g ? (int)b->dims[3] : (int)(p->has_kernel_size ? p->kernel_size : p->kernel_w),
                         .sh = (int)(p->has_stride_h ? p->stride_h : p->stride),
                         .sw = (int)(p->has_stride_w ? p->stride_w : p->stride),
                         .ph = (int)(p->has_pad_h ? p->pad_h : p->pad), .pw = (int)(p->has_pad_w ? p->pad_w : p->pad),
                         .method = p->pool == CAFFE__POOLING_PARAMETER__POOL_METHOD__MAX ? 0 : 1};
  if (pp->d.method == 0 &&
      dd__ensure_buffer(l->be, (void **)&pp->mask, &pp->mask_cap, (size_t)l->top[0]->count * sizeof(int32_t)))
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  return 0;
}

static void pooling_forward(dd_layer *l) {
  pool_priv *pp = l->priv;
  l->be->ops->pool_forward(l->be, &pp->d, l->top[0]->data, pp->mask, l->bottom[0]->data);
}

static void pooling_backward(dd_layer *l) {
  pool_priv *pp = l->priv;
  if (l->propagate_down[0])
    l->be->ops->pool_backward(l->be, &pp->d, l->bottom[0]->diff, l->top[0]->diff, pp->mask);
}

static void pooling_destroy(dd_layer *l) {
  pool_priv *pp = l->priv;
  if (pp->mask) l->be->ops->free(l->be, pp->mask);
}

/* Caffe's optional second (mask) top of MAX pooling is not offered: no net here reads it. */
const dd_layer_ops dd_layer_pooling = {
    .type = "Pooling", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1,
    .shape = pooling_shape, .priv_size = sizeof(pool_priv), .setup = pooling_setup,
    .forward = pooling_forward, .backward = pooling_backward, .destroy = pooling_destroy};
