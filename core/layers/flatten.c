/* Flatten axes [axis, end_axis] into one. */
#include "base/dd_error.h"
#include "net/layer.h"

static int flatten_shape(dd_shape_ctx *c) {
  const Caffe__FlattenParameter *p = c->lp->flatten_param;
  const dd_shape *b = &c->bottoms[0];
  if (!dd_shape_known(b)) {
    c->tops[0] = dd_shape_unknown();
    return 0;
  }
  int a = dd_shape_axis(b, p ? p->axis : 1), e = dd_shape_axis(b, p ? p->end_axis : -1);
  if (a < 0 || e < 0 || e < a) return dd_shape_fail(c, "flatten axes out of range for a bottom with %d axes", b->ndim);
  dd_shape t = dd_shape_make(a, b->dims);
  t.dims[t.ndim++] = dd_shape_count_range(b, a, e + 1);
  if (t.dims[t.ndim - 1] > DD_SHAPE_MAX_COUNT)
    return dd_shape_fail(c, "the flattened axis would hold more than %lld elements", (long long)DD_SHAPE_MAX_COUNT);
  for (int d = e + 1; d < b->ndim; d++) t.dims[t.ndim++] = b->dims[d];
  c->tops[0] = t;
  return 0;
}

/* The data does not move; Caffe shares the memory, distilld copies it (a flatten sits before an
 * InnerProduct, where the copy is small). */
static void flatten_forward(dd_layer *l) {
  if (l->top[0] != l->bottom[0])
    l->be->ops->copy(l->be, l->top[0]->data, l->bottom[0]->data, (size_t)l->top[0]->count * sizeof(float));
}
static void flatten_backward(dd_layer *l) {
  if (l->propagate_down[0] && l->top[0] != l->bottom[0])
    l->be->ops->copy(l->be, l->bottom[0]->diff, l->top[0]->diff, (size_t)l->top[0]->count * sizeof(float));
}

const dd_layer_ops dd_layer_flatten = {
    .type = "Flatten", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1,
    .shape = flatten_shape, .forward = flatten_forward, .backward = flatten_backward};
