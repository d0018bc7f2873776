/* Split: copies one bottom to several tops (gradients summed in backward). Nets insert it
 * automatically where a blob feeds several layers. */
#include "layer.h"

static int split_shape(dd_shape_ctx *c) {
  for (int t = 0; t < c->nt; t++) c->tops[t] = c->bottoms[0];
  return 0;
}

const dd_layer_ops dd_layer_split = {"Split", 1, 1, 1, -1, 0, split_shape};
