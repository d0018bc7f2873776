/* Softmax over `axis` (default 1). */
#include "dd_error.h"
#include "layer.h"

static int softmax_shape(dd_shape_ctx *c) {
  const Caffe__SoftmaxParameter *p = c->lp->softmax_param;
  const dd_shape *b = &c->bottoms[0];
  if (dd_shape_known(b) && dd_shape_axis(b, p ? p->axis : 1) < 0)
    return dd_shape_fail(c, "softmax axis %d is out of range for a bottom with %d axes", p ? p->axis : 1, b->ndim);
  c->tops[0] = *b;
  return 0;
}

const dd_layer_ops dd_layer_softmax = {"Softmax", 1, 1, 1, 1, 0, softmax_shape};
