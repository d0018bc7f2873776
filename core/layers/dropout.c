/* Dropout (inverted, as Caffe: scale 1 / (1 - ratio) in TRAIN, identity in TEST). */
#include "dd_error.h"
#include "layer.h"

static int dropout_shape(dd_shape_ctx *c) {
  const Caffe__DropoutParameter *p = c->lp->dropout_param;
  if (p && (p->dropout_ratio < 0 || p->dropout_ratio >= 1))
    return dd_shape_fail(c, "dropout_ratio must be in [0, 1), got %g", p->dropout_ratio);
  c->tops[0] = c->bottoms[0];
  return 0;
}

const dd_layer_ops dd_layer_dropout = {"Dropout", 1, 1, 1, 1, 0, dropout_shape};
