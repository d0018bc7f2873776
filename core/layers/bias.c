/* Bias: y = x + bias, with Scale's axis/num_axes rule (see scale.c). */
#include "dd_error.h"
#include "layer.h"

static int bias_shape(dd_shape_ctx *c) {
  const Caffe__BiasParameter *p = c->lp->bias_param;
  int axis = p ? p->axis : 1, num_axes = p ? p->num_axes : 1;
  c->tops[0] = c->bottoms[0];
  if (c->nb == 2) {
    c->n_params = 0;
    return 0;
  }
  c->n_params = 1;
  return dd__axes_param_shape(c, axis, num_axes, &c->params[0]);
}

const dd_layer_ops dd_layer_bias = {"Bias", 1, 2, 1, 1, 0, bias_shape};
