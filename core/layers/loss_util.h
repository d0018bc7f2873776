/* What the catalogue's loss layers share (EuclideanLoss, SigmoidCrossEntropyLoss,
 * MultinomialLogisticLoss, HingeLoss, InfogainLoss, ContrastiveLoss): Caffe's LossLayer rules.
 * LossLayer::Reshape requires the first two bottoms to agree on their first dimension and makes
 * top 0 a scalar; the loss weight (default 1 on top 0, ops->is_loss) sits in the loss top's
 * diff, where backward reads it; labels never get a gradient. Normalization modes are
 * LossParameter's (FULL, VALID, BATCH_SIZE, NONE), never below 1. */
#ifndef DD_LOSS_UTIL_H
#define DD_LOSS_UTIL_H

#include "net/layer.h"

/* LossLayer::Reshape: bottoms 0 and 1 (named what0 and what1 in the message) share their first
 * dimension; top 0 becomes a scalar. */
static inline int dd__loss_reshape(dd_shape_ctx *c, const char *what0, const char *what1) {
  const dd_shape *a = &c->bottoms[0], *b = &c->bottoms[1];
  c->tops[0] = dd_shape_make(0, NULL);
  if (!dd_shape_known(a) || !dd_shape_known(b)) return 0;
  if (a->ndim < 1 || b->ndim < 1)
    return dd_shape_fail(c, "the bottoms must have at least one axis (the batch); bottom %d is a scalar",
                         a->ndim < 1 ? 0 : 1);
  if (a->dims[0] != b->dims[0]) {
    char s1[64], s2[64];
    return dd_shape_fail(c, "the %s (bottom 0, %s) and the %s (bottom 1, %s) must have the same first dimension",
                         what0, dd_shape_str(a, s1, sizeof s1), what1, dd_shape_str(b, s2, sizeof s2));
  }
  return 0;
}

/* Caffe's legacy accessors (num, channels, height, width): dimension i, 1 past the last axis;
 * -1 when the shape has more than 4 axes (the accessors refuse those). */
static inline int64_t dd__legacy_dim(const dd_shape *s, int i) {
  if (s->ndim > 4) return -1;
  return i < s->ndim ? s->dims[i] : 1;
}

/* The normalization mode: loss_param.normalization when given, else the deprecated
 * `normalize` (true VALID, false BATCH_SIZE), else `dflt`. */
static inline int dd__loss_norm_mode(const Caffe__LayerParameter *lp, int dflt) {
  const Caffe__LossParameter *p = lp->loss_param;
  if (p && p->has_normalization) return (int)p->normalization;
  if (p && p->has_normalize)
    return p->normalize ? CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__VALID
                        : CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__BATCH_SIZE;
  return dflt;
}

/* Caffe's get_normalizer: FULL outer * inner, VALID the count of positions not ignored,
 * BATCH_SIZE outer, NONE 1; at least 1 (a batch with every label ignored gives 0, not NaN). */
static inline float dd__loss_normalizer(int mode, int64_t outer, int64_t inner, int64_t valid) {
  double n;
  switch (mode) {
    case CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__FULL: n = (double)outer * (double)inner; break;
    case CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__VALID: n = (double)valid; break;
    case CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__BATCH_SIZE: n = (double)outer; break;
    default: n = 1.0;
  }
  return n < 1.0 ? 1.0f : (float)n;
}

/* Refuses a normalization value outside the enum (a .caffemodel or binary net could hold one). */
static inline int dd__loss_check_mode(dd_shape_ctx *c) {
  const Caffe__LossParameter *p = c->lp->loss_param;
  if (p && p->has_normalization && (p->normalization < 0 || p->normalization > 3))
    return dd_shape_fail(c, "loss_param.normalization %d is not FULL, VALID, BATCH_SIZE or NONE", (int)p->normalization);
  return 0;
}

/* loss_param's ignore label: whether there is one, and its value in *ignore. */
static inline int dd__loss_ignore(const Caffe__LayerParameter *lp, int *ignore) {
  const Caffe__LossParameter *p = lp->loss_param;
  *ignore = p && p->has_ignore_label ? p->ignore_label : 0;
  return p && p->has_ignore_label;
}

/* The loss top's diff, as Caffe's backward reads it (the net set it to the loss weight). */
static inline float dd__loss_top_diff(const dd_layer *l) {
  float w;
  l->be->ops->download(l->be, &w, l->top[0]->diff, sizeof w);
  return w;
}

#endif
