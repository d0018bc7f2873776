/* SigmoidCrossEntropyLoss (Caffe): (x, t) -> the cross entropy of sigmoid(x) against targets t in
 * [0, 1], in Caffe's overflow-free form, summed over the positions whose target is not
 * loss_param.ignore_label (compared as Caffe does, after truncating the target to an integer)
 * and divided by the normalizer: Caffe's default for this layer is BATCH_SIZE (the first
 * dimension), not VALID. Gradient: (sigmoid(x) - t) * w / normalizer, 0 at ignored positions;
 * the targets get none. */
#include "base/dd_error.h"
#include "layers/loss_util.h"

static int sigmoid_ce_shape(dd_shape_ctx *c) {
  int r;
  if ((r = dd__loss_check_mode(c)) || (r = dd__loss_reshape(c, "prediction", "target"))) return r;
  const dd_shape *x = &c->bottoms[0], *t = &c->bottoms[1];
  if (dd_shape_known(x) && dd_shape_known(t) && dd_shape_count(x) != dd_shape_count(t)) {
    char s1[64], s2[64];
    return dd_shape_fail(c, "the prediction (%s) and the target (%s) must have the same count",
                         dd_shape_str(x, s1, sizeof s1), dd_shape_str(t, s2, sizeof s2));
  }
  return 0;
}

typedef struct {
  float normalizer; /* from the last forward */
} sigmoid_ce_priv;

static int sigmoid_ce_setup(dd_layer *l, char *err, size_t errlen) {
  if (dd__need_kernel(l, (const void *)l->be->ops->sigmoid_xent_forward, "SigmoidCrossEntropyLoss", err, errlen))
    return DD_EUNSUPPORTED;
  return dd__need_kernel(l, (const void *)l->be->ops->sigmoid_xent_backward, "SigmoidCrossEntropyLoss backward", err,
                         errlen);
}

static void sigmoid_ce_forward(dd_layer *l) {
  sigmoid_ce_priv *p = l->priv;
  int ignore, has_ignore = dd__loss_ignore(l->lp, &ignore);
  int64_t valid, outer = l->bottom[0]->shape.dims[0], n = l->bottom[0]->count;
  double loss = l->be->ops->sigmoid_xent_forward(l->be, n, l->bottom[0]->data, l->bottom[1]->data, has_ignore,
                                                 ignore, &valid);
  int mode = dd__loss_norm_mode(l->lp, CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__BATCH_SIZE);
  p->normalizer = dd__loss_normalizer(mode, outer, outer ? n / outer : 0, valid);
  dd__set_scalar(l->top[0], (float)(loss / p->normalizer));
}

static void sigmoid_ce_backward(dd_layer *l) {
  sigmoid_ce_priv *p = l->priv;
  if (!l->propagate_down[0]) return; /* the targets never get a gradient */
  int ignore, has_ignore = dd__loss_ignore(l->lp, &ignore);
  l->be->ops->sigmoid_xent_backward(l->be, l->bottom[0]->count, l->bottom[0]->diff, l->bottom[0]->data,
                                    l->bottom[1]->data, has_ignore, ignore, dd__loss_top_diff(l) / p->normalizer);
}

const dd_layer_ops dd_layer_sigmoid_ce_loss = {
    .type = "SigmoidCrossEntropyLoss", .min_bottoms = 2, .max_bottoms = 2, .min_tops = 1, .max_tops = 1,
    .is_loss = 1, .shape = sigmoid_ce_shape, .priv_size = sizeof(sigmoid_ce_priv), .setup = sigmoid_ce_setup,
    .forward = sigmoid_ce_forward, .backward = sigmoid_ce_backward};
