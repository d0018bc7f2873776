/* Reduction (Caffe): SUM, ASUM, SUMSQ or MEAN over every axis from `axis` on, times `coeff`; the
 * top keeps the axes before `axis` (a scalar for axis 0). */
#include "base/dd_error.h"
#include "net/layer.h"

static int reduction_axis(const dd_shape_ctx *c, const dd_shape *b) {
  return dd_shape_axis(b, c->lp->reduction_param ? c->lp->reduction_param->axis : 0);
}

static int reduction_shape(dd_shape_ctx *c) {
  const dd_shape *b = &c->bottoms[0];
  const Caffe__ReductionParameter *p = c->lp->reduction_param;
  if (p && (p->operation < 1 || p->operation > 4))
    return dd_shape_fail(c, "reduction_param.operation %d is not SUM, ASUM, SUMSQ or MEAN", (int)p->operation);
  if (!dd_shape_known(b)) {
    c->tops[0] = dd_shape_unknown();
    return 0;
  }
  int a = reduction_axis(c, b);
  if (a < 0) return dd_shape_fail(c, "reduction_param.axis %d is out of range for a bottom with %d axes", p ? p->axis : 0, b->ndim);
  c->tops[0] = dd_shape_make(a, b->dims);
  return 0;
}

static void dims(const dd_layer *l, int *op, int64_t *outer, int64_t *dim, float *coeff) {
  const Caffe__ReductionParameter *p = l->lp->reduction_param;
  *op = p ? (int)p->operation : 1;
  *coeff = p ? p->coeff : 1.0f;
  int a = dd_shape_axis(&l->bottom[0]->shape, p ? p->axis : 0);
  *outer = dd__count(l->bottom[0], 0, a);
  *dim = dd__count(l->bottom[0], a, l->bottom[0]->shape.ndim);
}

static int reduction_setup(dd_layer *l, char *err, size_t errlen) {
  if (dd__need_kernel(l, (const void *)l->be->ops->reduce_forward, "Reduction", err, errlen)) return DD_EUNSUPPORTED;
  return dd__need_kernel(l, (const void *)l->be->ops->reduce_backward, "Reduction backward", err, errlen);
}

static void reduction_forward(dd_layer *l) {
  int op;
  int64_t outer, dim;
  float coeff;
  dims(l, &op, &outer, &dim, &coeff);
  l->be->ops->reduce_forward(l->be, op, outer, dim, l->top[0]->data, l->bottom[0]->data, coeff);
}

static void reduction_backward(dd_layer *l) {
  if (!l->propagate_down[0]) return;
  int op;
  int64_t outer, dim;
  float coeff;
  dims(l, &op, &outer, &dim, &coeff);
  l->be->ops->reduce_backward(l->be, op, outer, dim, l->bottom[0]->diff, l->top[0]->diff, l->bottom[0]->data, coeff);
}

const dd_layer_ops dd_layer_reduction = {
    .type = "Reduction", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1,
    .shape = reduction_shape, .setup = reduction_setup, .forward = reduction_forward,
    .backward = reduction_backward};
