/* Concat along `axis` (or the legacy concat_dim); all other axes must agree. */
#include "dd_error.h"
#include "layer.h"

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
    t.dims[a] += b->dims[a];
  }
  c->tops[0] = t;
  return 0;
}

const dd_layer_ops dd_layer_concat = {"Concat", 1, -1, 1, 1, 0, concat_shape};
