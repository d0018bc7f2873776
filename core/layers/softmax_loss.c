/* SoftmaxWithLoss: (predictions, labels) -> scalar loss (and optionally the probabilities), with
 * Caffe's ignore_label and normalization modes. */
#include "base/dd_error.h"
#include "net/layer.h"

/* Checks that the label count matches outer * inner of the prediction over `axis`. Shared with
 * Accuracy. */
int dd__check_labels(dd_shape_ctx *c, int axis_param, int *axis_out) {
  const dd_shape *pr = &c->bottoms[0], *lb = &c->bottoms[1];
  *axis_out = -1;
  if (!dd_shape_known(pr)) return 0;
  int a = dd_shape_axis(pr, axis_param);
  if (a < 0) return dd_shape_fail(c, "axis %d is out of range for a prediction with %d axes", axis_param, pr->ndim);
  *axis_out = a;
  if (!dd_shape_known(lb)) return 0;
  int64_t n = dd_count_mul(dd_shape_count_range(pr, 0, a), dd_shape_count_range(pr, a + 1, pr->ndim));
  if (n != dd_shape_count(lb)) {
    char s1[64], s2[64];
    return dd_shape_fail(c, "the label blob has %lld entries (%s) but the prediction (%s) needs %lld (one per position outside axis %d)",
                         (long long)dd_shape_count(lb), dd_shape_str(lb, s2, sizeof s2),
                         dd_shape_str(pr, s1, sizeof s1), (long long)n, a);
  }
  return 0;
}

static int softmax_loss_shape(dd_shape_ctx *c) {
  const Caffe__SoftmaxParameter *p = c->lp->softmax_param;
  int a, r;
  if ((r = dd__check_labels(c, p ? p->axis : 1, &a))) return r;
  c->tops[0] = dd_shape_make(0, NULL);
  if (c->nt > 1) c->tops[1] = c->bottoms[0];
  return 0;
}

typedef struct {
  float *prob;
  size_t cap;
  float normalizer;
} sml_priv;

static int sml_setup(dd_layer *l, char *err, size_t errlen) {
  sml_priv *sp = l->priv;
  if (dd__ensure_buffer(l->be, (void **)&sp->prob, &sp->cap, (size_t)l->bottom[0]->count * sizeof(float)))
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  return 0;
}

/* Caffe's normalisation modes; `normalize: false` without `normalization` means BATCH_SIZE. */
static float normalizer(const dd_layer *l, int64_t outer, int64_t inner, int64_t valid) {
  const Caffe__LossParameter *lp = l->lp->loss_param;
  int mode = CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__VALID;
  if (lp && lp->has_normalization)
    mode = lp->normalization;
  else if (lp && lp->has_normalize)
    mode = lp->normalize ? CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__VALID
                         : CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__BATCH_SIZE;
  double n;
  switch (mode) {
    case CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__FULL: n = (double)(outer * inner); break;
    case CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__VALID:
      n = lp && lp->has_ignore_label ? (double)valid : (double)(outer * inner);
      break;
    case CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__BATCH_SIZE: n = (double)outer; break;
    default: n = 1.0;
  }
  return n < 1.0 ? 1.0f : (float)n;
}

static void sml_forward(dd_layer *l) {
  sml_priv *sp = l->priv;
  const Caffe__LossParameter *lp = l->lp->loss_param;
  int64_t o, c, i, valid;
  dd__softmax_dims(l, &o, &c, &i);
  int has_ignore = lp && lp->has_ignore_label;
  if (dd__check_label_range(l, l->bottom[1], c, has_ignore, has_ignore ? lp->ignore_label : 0)) return;
  l->be->ops->softmax_forward(l->be, o, c, i, sp->prob, l->bottom[0]->data);
  double loss = l->be->ops->xent_forward(l->be, o, c, i, sp->prob, l->bottom[1]->data, has_ignore,
                                         has_ignore ? lp->ignore_label : 0, &valid);
  sp->normalizer = normalizer(l, o, i, valid);
  dd__set_scalar(l->top[0], (float)(loss / sp->normalizer));
  if (l->nt > 1)
    l->be->ops->copy(l->be, l->top[1]->data, sp->prob, (size_t)l->bottom[0]->count * sizeof(float));
}

/* The weight backward scales by: the loss top's diff, as Caffe reads it (the net sets it to the
 * loss weight; when the top also feeds other layers, the gradient arrives there through a split). */
static float top_weight(const dd_layer *l) {
  float w;
  l->be->ops->download(l->be, &w, l->top[0]->diff, sizeof w);
  return w;
}

static void sml_backward(dd_layer *l) {
  sml_priv *sp = l->priv;
  if (!l->propagate_down[0]) return; /* labels never get a gradient */
  const Caffe__LossParameter *lp = l->lp->loss_param;
  int64_t o, c, i;
  dd__softmax_dims(l, &o, &c, &i);
  int has_ignore = lp && lp->has_ignore_label;
  l->be->ops->xent_backward(l->be, o, c, i, l->bottom[0]->diff, sp->prob, l->bottom[1]->data, has_ignore,
                            has_ignore ? lp->ignore_label : 0, top_weight(l) / sp->normalizer);
}

static void sml_destroy(dd_layer *l) {
  sml_priv *sp = l->priv;
  if (sp->prob) l->be->ops->free(l->be, sp->prob);
}

const dd_layer_ops dd_layer_softmax_loss = {
    .type = "SoftmaxWithLoss", .min_bottoms = 2, .max_bottoms = 2, .min_tops = 1, .max_tops = 2,
    .is_loss = 1, .shape = softmax_loss_shape, .priv_size = sizeof(sml_priv), .setup = sml_setup,
    .forward = sml_forward, .backward = sml_backward, .destroy = sml_destroy};
