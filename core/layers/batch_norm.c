/* BatchNorm, exactly Caffe's: no affine part (a Scale layer follows); three blobs: running mean
 * sum (C), running variance sum (C), scale factor (1). */
#include "dd_error.h"
#include "layer.h"

static int batch_norm_shape(dd_shape_ctx *c) {
  const dd_shape *b = &c->bottoms[0];
  c->n_params = 3;
  c->params[2] = dd_shape_make(1, (int64_t[]){1});
  c->tops[0] = *b;
  if (!dd_shape_known(b)) {
    c->params[0] = c->params[1] = dd_shape_unknown();
    return 0;
  }
  if (b->ndim < 1) return dd_shape_fail(c, "BatchNorm needs a bottom with at least one axis");
  int64_t ch = b->ndim == 1 ? 1 : b->dims[1];
  c->params[0] = c->params[1] = dd_shape_make(1, &ch);
  const Caffe__BatchNormParameter *p = c->lp->batch_norm_param;
  if (p && p->eps < 0) return dd_shape_fail(c, "batch_norm_param.eps must be >= 0");
  return 0;
}

const dd_layer_ops dd_layer_batch_norm = {"BatchNorm", 1, 1, 1, 1, 0, batch_norm_shape};
