/* ReLU with Caffe's negative_slope (leaky ReLU when > 0). Shape-preserving, no parameters. */
#include "layer.h"

static int relu_shape(dd_shape_ctx *c) {
  c->tops[0] = c->bottoms[0];
  return 0;
}

const dd_layer_ops dd_layer_relu = {"ReLU", 1, 1, 1, 1, 0, relu_shape};
