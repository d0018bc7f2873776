/* Scale: y = x * scale (+ bias). Scale and Bias share Caffe's axis/num_axes rule: the parameter covers bottom axes
 * [axis, axis + num_axes) (num_axes -1: to the end). With two bottoms, the second bottom is the
 * scale (or bias) and no parameter is learned for it. */
#include "dd_error.h"
#include "layer.h"

/* Shape of the parameter over bottom[0]: fills *out. Returns 0 or an error. */
int dd__axes_param_shape(dd_shape_ctx *c, int axis, int num_axes, dd_shape *out) {
  const dd_shape *b = &c->bottoms[0];
  if (!dd_shape_known(b)) {
    *out = dd_shape_unknown();
    return 0;
  }
  int a = dd_shape_axis(b, axis);
  if (a < 0) return dd_shape_fail(c, "axis %d is out of range for a bottom with %d axes", axis, b->ndim);
  if (num_axes < -1) return dd_shape_fail(c, "num_axes must be >= -1");
  int end = num_axes == -1 ? b->ndim : a + num_axes;
  if (end > b->ndim)
    return dd_shape_fail(c, "axis %d + num_axes %d exceeds the bottom's %d axes", a, num_axes, b->ndim);
  *out = dd_shape_make(end - a, b->dims + a);
  return 0;
}

static int scale_shape(dd_shape_ctx *c) {
  const Caffe__ScaleParameter *p = c->lp->scale_param;
  int axis = p ? p->axis : 1, num_axes = p ? p->num_axes : 1, bias = p && p->bias_term;
  dd_shape ps;
  int r;
  c->tops[0] = c->bottoms[0];
  if (c->nb == 2) {
    ps = c->bottoms[1];
    c->n_params = bias ? 1 : 0;
    c->params[0] = ps;
    return 0;
  }
  if ((r = dd__axes_param_shape(c, axis, num_axes, &ps))) return r;
  c->n_params = bias ? 2 : 1;
  c->params[0] = c->params[1] = ps;
  return 0;
}

const dd_layer_ops dd_layer_scale = {"Scale", 1, 2, 1, 1, 0, scale_shape};
