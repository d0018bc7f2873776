/* Concat along `axis` (or the legacy concat_dim); all other axes must agree. */
#include "base/dd_error.h"
#include "net/layer.h"

static int concat_shape(dd_shape_ctx *c) {
  const Caffe__ConcatParameter *p = c->lp->concat_param;
  int axis = p ? (p->has_concat_dim ? (int)p->concat_dim : p->axis) : 1;
  if (!dd_shape_bottoms_known(c)) {
    c->tops[0] = dd_shape_unknown();
    return 0;
  }
  const dd_shape *b0 = &c->bottoms[0];
  int a = dd_shape_axis(b0, axis);
  if (a < 0) return dd_shape_fail(c, "axis %d is out of range for bottoms with %d axes", axis, b0->ndim);
  dd_shape t = *b0;
  for (int i = 1; i < c->nb; i++) {
    const dd_shape *b = &c->bottoms[i];
    if (b->ndim != b0->ndim) return dd_shape_fail(c, "bottom %d has %d axes, bottom 0 has %d", i, b->ndim, b0->ndim);
    for (int d = 0; d < b->ndim; d++)
      if (d != a && b->dims[d] != b0->dims[d])
        return dd_shape_fail(c, "bottom %d differs from bottom 0 on axis %d (%lld vs %lld), which is not the concat axis",
                             i, d, (long long)b->dims[d], (long long)b0->dims[d]);
    if (__builtin_add_overflow(t.dims[a], b->dims[a], &t.dims[a]) || t.dims[a] > DD_SHAPE_MAX_COUNT)
      return dd_shape_fail(c, "the concatenated axis would hold more than %lld elements", (long long)DD_SHAPE_MAX_COUNT);
  }
  c->tops[0] = t;
  return 0;
}

static int concat_axis(const dd_layer *l) {
  const Caffe__ConcatParameter *p = l->lp->concat_param;
  int axis = p ? (p->has_concat_dim ? (int)p->concat_dim : p->axis) : 1;
  return dd_shape_axis(&l->top[0]->shape, axis);
}

static void concat_run(dd_layer *l, int backward) {
  int a = concat_axis(l);
  int64_t rows = dd__count(l->top[0], 0, a), tcols = dd__count(l->top[0], a, l->top[0]->shape.ndim), off = 0;
  for (int i = 0; i < l->nb; i++) {
    int64_t cols = dd__count(l->bottom[i], a, l->bottom[i]->shape.ndim);
    if (!backward)
      l->be->ops->copy_rows(l->be, rows, cols, l->top[0]->data + off, tcols, l->bottom[i]->data, cols, 0);
    else if (l->propagate_down[i])
      l->be->ops->copy_rows(l->be, rows, cols, l->bottom[i]->diff, cols, l->top[0]->diff + off, tcols, 0);
    off += cols;
  }
}

static void concat_forward(dd_layer *l) { concat_run(l, 0); }
static void concat_backward(dd_layer *l) { concat_run(l, 1); }

const dd_layer_ops dd_layer_concat = {
    .type = "Concat", .min_bottoms = 1, .max_bottoms = -1, .min_tops = 1, .max_tops = 1,
    .shape = concat_shape, .forward = concat_forward, .backward = concat_backward};
