/* Dropout (inverted, as Caffe: scale 1 / (1 - ratio) in TRAIN, identity in TEST). */
#include "base/dd_error.h"
#include "net/layer.h"

static int dropout_shape(dd_shape_ctx *c) {
  const Caffe__DropoutParameter *p = c->lp->dropout_param;
  if (p && (p->dropout_ratio < 0 || p->dropout_ratio >= 1))
    return dd_shape_fail(c, "dropout_ratio must be in [0, 1), got %g", p->dropout_ratio);
  c->tops[0] = c->bottoms[0];
  return 0;
}

typedef struct {
  float *mask;
  size_t cap;
} dropout_priv;

static float ratio(const dd_layer *l) { return l->lp->dropout_param ? l->lp->dropout_param->dropout_ratio : 0.5f; }

static int dropout_setup(dd_layer *l, char *err, size_t errlen) {
  dropout_priv *dp = l->priv;
  if (l->phase == CAFFE__PHASE__TRAIN &&
      dd__ensure_buffer(l->be, (void **)&dp->mask, &dp->cap, (size_t)l->top[0]->count * sizeof(float)))
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  return 0;
}

/* TRAIN: keep each element with probability 1 - ratio and scale by 1 / (1 - ratio); the mask
 * of element i in forward number k derives from (layer seed, k, i), so runs are reproducible.
 * TEST: identity. */
static void dropout_forward(dd_layer *l) {
  dropout_priv *dp = l->priv;
  int64_t n = l->top[0]->count;
  if (l->phase == CAFFE__PHASE__TRAIN) {
    float r = ratio(l);
    l->be->ops->dropout_forward(l->be, n, l->top[0]->data, dp->mask, l->bottom[0]->data,
                                dd_hash64(l->seed, (uint64_t)*l->iter), r, 1.0f / (1.0f - r));
  } else if (l->top[0] != l->bottom[0]) {
    l->be->ops->copy(l->be, l->top[0]->data, l->bottom[0]->data, (size_t)n * sizeof(float));
  }
}

static void dropout_backward(dd_layer *l) {
  dropout_priv *dp = l->priv;
  if (!l->propagate_down[0]) return;
  int64_t n = l->top[0]->count;
  if (l->phase == CAFFE__PHASE__TRAIN) {
    l->be->ops->mul(l->be, n, l->bottom[0]->diff, l->top[0]->diff, dp->mask);
    l->be->ops->scale(l->be, n, 1.0f / (1.0f - ratio(l)), l->bottom[0]->diff, l->bottom[0]->diff);
  } else if (l->top[0] != l->bottom[0]) {
    l->be->ops->copy(l->be, l->bottom[0]->diff, l->top[0]->diff, (size_t)n * sizeof(float));
  }
}

static void dropout_destroy(dd_layer *l) {
  dropout_priv *dp = l->priv;
  if (dp->mask) l->be->ops->free(l->be, dp->mask);
}

const dd_layer_ops dd_layer_dropout = {
    .type = "Dropout", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1,
    .shape = dropout_shape, .priv_size = sizeof(dropout_priv), .setup = dropout_setup,
    .forward = dropout_forward, .backward = dropout_backward, .destroy = dropout_destroy};
