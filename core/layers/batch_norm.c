/* BatchNorm, exactly Caffe's: no affine part (a Scale layer follows); three blobs: running mean
 * sum (C), running variance sum (C), scale factor (1). */
#include "base/dd_error.h"
#include "net/layer.h"

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

/* All three blobs start at zero (Caffe). */
static const Caffe__FillerParameter *bn_filler(const Caffe__LayerParameter *lp, int i,
                                               Caffe__FillerParameter *dflt) {
  (void)lp;
  (void)i;
  return dflt; /* the caller's default: constant 0 */
}

typedef struct {
  float *mean, *inv_std; /* C each, backend memory */
  float *x_norm; /* batch statistics: the output, kept for backward (Caffe's x_norm_), since a
                    later in-place layer (Scale, ReLU) may overwrite the top */
  size_t cap_m, cap_i, cap_x;
  int n, c, s;
} bn_priv;

/* Caffe: use_global_stats defaults to (phase == TEST); an explicit value wins. */
int dd_bn_uses_global(const dd_layer *l) {
  const Caffe__BatchNormParameter *p = l->lp->batch_norm_param;
  return p && p->has_use_global_stats ? p->use_global_stats : l->phase == CAFFE__PHASE__TEST;
}

static int bn_setup(dd_layer *l, char *err, size_t errlen) {
  bn_priv *bp = l->priv;
  const dd_shape *b = &l->bottom[0]->shape;
  bp->n = (int)b->dims[0];
  bp->c = b->ndim > 1 ? (int)b->dims[1] : 1;
  bp->s = (int)dd_shape_count_range(b, 2, b->ndim);
  size_t bytes = (size_t)bp->c * sizeof(float);
  if (dd__ensure_buffer(l->be, (void **)&bp->mean, &bp->cap_m, bytes) ||
      dd__ensure_buffer(l->be, (void **)&bp->inv_std, &bp->cap_i, bytes))
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  if (!dd_bn_uses_global(l) &&
      dd__ensure_buffer(l->be, (void **)&bp->x_norm, &bp->cap_x, (size_t)l->top[0]->count * sizeof(float)))
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  return 0;
}

static void bn_forward(dd_layer *l) {
  bn_priv *bp = l->priv;
  const Caffe__BatchNormParameter *p = l->lp->batch_norm_param;
  float eps = p ? p->eps : 1e-5f, maf = p ? p->moving_average_fraction : 0.999f;
  if (dd_bn_uses_global(l))
    l->be->ops->bn_forward_global(l->be, bp->n, bp->c, bp->s, l->top[0]->data, l->bottom[0]->data,
                                  bp->mean, bp->inv_std, l->params[0]->data, l->params[1]->data,
                                  l->params[2]->data, eps);
  else {
    l->be->ops->bn_forward_train(l->be, bp->n, bp->c, bp->s, l->top[0]->data, l->bottom[0]->data,
                                 bp->mean, bp->inv_std, l->params[0]->data, l->params[1]->data,
                                 l->params[2]->data, maf, eps);
    l->be->ops->copy(l->be, bp->x_norm, l->top[0]->data, (size_t)l->top[0]->count * sizeof(float));
  }
}

static void bn_backward(dd_layer *l) {
  bn_priv *bp = l->priv;
  if (!l->propagate_down[0]) return;
  int global = dd_bn_uses_global(l); /* global statistics: backward does not read the output */
  l->be->ops->bn_backward(l->be, bp->n, bp->c, bp->s, l->bottom[0]->diff, l->top[0]->diff,
                          global ? l->top[0]->data : bp->x_norm, bp->inv_std, global);
}

static void bn_destroy(dd_layer *l) {
  bn_priv *bp = l->priv;
  if (bp->mean) l->be->ops->free(l->be, bp->mean);
  if (bp->inv_std) l->be->ops->free(l->be, bp->inv_std);
  if (bp->x_norm) l->be->ops->free(l->be, bp->x_norm);
}

const dd_layer_ops dd_layer_batch_norm = {
    .type = "BatchNorm", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1,
    .shape = batch_norm_shape, .filler = bn_filler, .priv_size = sizeof(bn_priv), .setup = bn_setup,
    .forward = bn_forward, .backward = bn_backward, .destroy = bn_destroy};
