/* ArgMax (Caffe's ArgMaxLayer): the indices of the top_k (1) largest values, with
 * argmax_param.axis over that axis (the top has top_k there; with out_max_val the values instead
 * of the indices), or else over all of each item's values (the top is (N, 1, top_k, 1...), or
 * (N, 2, top_k, 1...) with the indices then the values when out_max_val). Ties rank the higher
 * index first, as Caffe's sort does. Forward only, as in Caffe. */
#include "base/dd_error.h"
#include "net/layer.h"

static int argmax_shape(dd_shape_ctx *c) {
  const Caffe__ArgMaxParameter *p = c->lp->argmax_param;
  const dd_shape *b = &c->bottoms[0];
  int64_t k = p ? p->top_k : 1;
  if (k < 1) return dd_shape_fail(c, "argmax_param.top_k must be at least 1");
  if (!dd_shape_known(b)) {
    c->tops[0] = dd_shape_unknown();
    return 0;
  }
  dd_shape t;
  if (p && p->has_axis) {
    int axis = dd_shape_axis(b, p->axis);
    if (axis < 0) return dd_shape_fail(c, "argmax_param.axis %d is out of range for a bottom with %d axes", p->axis, b->ndim);
    if (k > b->dims[axis])
      return dd_shape_fail(c, "argmax_param.top_k %lld is more than axis %d's size %lld", (long long)k, axis,
                           (long long)b->dims[axis]);
    t = *b;
    t.dims[axis] = k;
  } else {
    if (b->ndim < 1) return dd_shape_fail(c, "ArgMax needs a bottom with at least 1 axis");
    int64_t per = dd_shape_count_range(b, 1, b->ndim);
    if (k > per)
      return dd_shape_fail(c, "argmax_param.top_k %lld is more than the %lld values of each item", (long long)k,
                           (long long)per);
    t.ndim = b->ndim < 3 ? 3 : b->ndim;
    for (int i = 0; i < t.ndim; i++) t.dims[i] = 1;
    t.dims[0] = b->dims[0];
    t.dims[1] = p && p->out_max_val ? 2 : 1;
    t.dims[2] = k;
  }
  c->tops[0] = t;
  return 0;
}

static int argmax_setup(dd_layer *l, char *err, size_t errlen) {
  return dd__need_kernel(l, (const void *)l->be->ops->argmax_topk, "ArgMax", err, errlen);
}

static void argmax_forward(dd_layer *l) {
  const Caffe__ArgMaxParameter *p = l->lp->argmax_param;
  const dd_tensor *b = l->bottom[0];
  float *y = l->top[0]->data;
  int k = p ? (int)p->top_k : 1, out_val = p && p->out_max_val;
  if (p && p->has_axis) {
    int axis = dd_shape_axis(&b->shape, p->axis);
    int64_t dim = b->shape.dims[axis], inner = dd__count(b, axis + 1, b->shape.ndim), outer = dd__count(b, 0, axis);
    l->be->ops->argmax_topk(l->be, outer, dim, inner, k, b->data, out_val ? NULL : y, out_val ? y : NULL, k * inner);
  } else {
    int64_t outer = b->shape.dims[0], dim = dd__count(b, 1, b->shape.ndim);
    l->be->ops->argmax_topk(l->be, outer, dim, 1, k, b->data, y, out_val ? y + k : NULL, out_val ? 2 * k : k);
  }
}

const dd_layer_ops dd_layer_argmax = {
    .type = "ArgMax", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1,
    .shape = argmax_shape, .setup = argmax_setup, .forward = argmax_forward};
