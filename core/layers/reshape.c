/* Reshape (Caffe): replaces bottom axes [axis, axis + num_axes) (num_axes -1: to the end; a
 * negative axis counts from the end, -1 being past the last axis) with reshape_param.shape, where
 * a 0 copies the bottom's dimension at the same position (axis + i) and one -1 is inferred from
 * the count. The data does not change: Caffe shares the memory, distilld copies it (as Flatten
 * does). Not in place, as in Caffe. */
#include <string.h>

#include "base/dd_error.h"
#include "net/layer.h"

/* Fills *t from the bottom b and the parameter; returns 0 or an error naming the field. */
static int reshape_infer(dd_shape_ctx *c, const dd_shape *b, dd_shape *t) {
  const Caffe__ReshapeParameter *p = c->lp->reshape_param;
  const Caffe__BlobShape *s = p ? p->shape : NULL;
  size_t nnew = s ? s->n_dim : 0;
  int axis = p ? p->axis : 0, num_axes = p ? p->num_axes : -1;
  int start = axis >= 0 ? axis : b->ndim + axis + 1;
  if (start < 0 || start > b->ndim)
    return dd_shape_fail(c, "reshape_param.axis %d is out of range for a bottom with %d axes", axis, b->ndim);
  if (num_axes < -1) return dd_shape_fail(c, "reshape_param.num_axes %d must be >= 0, or -1 for all", num_axes);
  int end = num_axes == -1 ? b->ndim : start + num_axes;
  if (end > b->ndim)
    return dd_shape_fail(c, "reshape_param.axis %d + num_axes %d is past the bottom's %d axes", start, num_axes,
                         b->ndim);
  int ndim = b->ndim - (end - start) + (int)nnew;
  if (nnew > DD_SHAPE_MAX_DIMS || ndim > DD_SHAPE_MAX_DIMS)
    return dd_shape_fail(c, "reshape_param.shape gives a top with %d axes; at most %d are supported", ndim,
                         DD_SHAPE_MAX_DIMS);
  t->ndim = 0;
  for (int i = 0; i < start; i++) t->dims[t->ndim++] = b->dims[i];
  int inferred = -1;
  int64_t known = 1;
  for (size_t i = 0; i < nnew; i++) {
    int64_t d = s->dim[i];
    if (d == 0) {
      if (start + (int)i >= b->ndim)
        return dd_shape_fail(c, "reshape_param.shape dim %zu is 0 (copy), but the bottom has no axis %d to copy", i,
                             start + (int)i);
      d = b->dims[start + i];
    } else if (d == -1) {
      if (inferred >= 0)
        return dd_shape_fail(c, "reshape_param.shape has more than one -1 dim: at most one may be inferred");
      inferred = t->ndim;
    } else if (d < -1) {
      return dd_shape_fail(c, "reshape_param.shape dim %zu is %lld: dims must be >= -1", i, (long long)d);
    }
    if (d != -1) known = dd_count_mul(known, d);
    t->dims[t->ndim++] = d;
  }
  for (int i = end; i < b->ndim; i++) t->dims[t->ndim++] = b->dims[i];
  int64_t count = dd_shape_count(b);
  known = dd_count_mul(known, dd_count_mul(dd_shape_count_range(b, 0, start), dd_shape_count_range(b, end, b->ndim)));
  if (inferred >= 0) {
    if (known == 0 || known == DD_COUNT_OVERFLOW || count % known)
      return dd_shape_fail(c, "reshape_param.shape: the bottom count %lld is not divisible by the product of the "
                           "given dims %lld, so the -1 dim cannot be inferred", (long long)count, (long long)known);
    t->dims[inferred] = count / known;
  }
  int64_t tc = dd_shape_count(t);
  if (tc != count) {
    char sb[96], st[96];
    return dd_shape_fail(c, "reshape_param.shape: the top %s would hold %lld elements, the bottom %s holds %lld",
                         dd_shape_str(t, st, sizeof st), (long long)tc, dd_shape_str(b, sb, sizeof sb),
                         (long long)count);
  }
  return 0;
}

static int reshape_shape(dd_shape_ctx *c) {
  const Caffe__LayerParameter *lp = c->lp;
  if (lp->n_top && lp->n_bottom && lp->top[0] && lp->bottom[0] && !strcmp(lp->top[0], lp->bottom[0]))
    return dd_shape_fail(c, "Reshape cannot run in place (top \"%s\" is its bottom), as in Caffe", lp->top[0]);
  const dd_shape *b = &c->bottoms[0];
  if (!dd_shape_known(b)) {
    c->tops[0] = dd_shape_unknown();
    return 0;
  }
  return reshape_infer(c, b, &c->tops[0]);
}

static void reshape_forward(dd_layer *l) {
  if (l->top[0] != l->bottom[0] && l->top[0]->count)
    l->be->ops->copy(l->be, l->top[0]->data, l->bottom[0]->data, (size_t)l->top[0]->count * sizeof(float));
}
static void reshape_backward(dd_layer *l) {
  if (l->propagate_down[0] && l->top[0] != l->bottom[0] && l->top[0]->count)
    l->be->ops->copy(l->be, l->bottom[0]->diff, l->top[0]->diff, (size_t)l->top[0]->count * sizeof(float));
}

const dd_layer_ops dd_layer_reshape = {
    .type = "Reshape", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1,
    .shape = reshape_shape, .forward = reshape_forward, .backward = reshape_backward};
