/* MultinomialLogisticLoss (Caffe): (prob, label) -> -sum_n log(max(prob[n, label_n], 1e-20)) / N,
 * prob viewed as (N, dim) with dim = count / N, one label per item (a label blob (N) or
 * (N, 1, 1, 1)). Gradient: -w / (N max(prob[n, label_n], 1e-20)) at each item's label, 0
 * elsewhere; the labels get none. Every label must be a class in [0, dim). */
#include "base/dd_error.h"
#include "layers/loss_util.h"

static int mlogistic_shape(dd_shape_ctx *c) {
  int r;
  if ((r = dd__loss_reshape(c, "prediction", "label"))) return r;
  const dd_shape *lb = &c->bottoms[1];
  if (!dd_shape_known(lb)) return 0;
  if (dd__legacy_dim(lb, 1) != 1 || dd__legacy_dim(lb, 2) != 1 || dd__legacy_dim(lb, 3) != 1) {
    char s[64];
    return dd_shape_fail(c, "the label blob is %s: it must be (N) or (N, 1, 1, 1), one label per item",
                         dd_shape_str(lb, s, sizeof s));
  }
  return 0;
}

static void dims(const dd_layer *l, int64_t *num, int64_t *dim) {
  *num = l->bottom[0]->shape.dims[0];
  *dim = *num ? l->bottom[0]->count / *num : 0;
}

static int mlogistic_setup(dd_layer *l, char *err, size_t errlen) {
  if (dd__need_kernel(l, (const void *)l->be->ops->infogain_forward, "MultinomialLogisticLoss", err, errlen))
    return DD_EUNSUPPORTED;
  return dd__need_kernel(l, (const void *)l->be->ops->multinomial_backward, "MultinomialLogisticLoss backward", err,
                         errlen);
}

static void mlogistic_forward(dd_layer *l) {
  int64_t num, dim, valid;
  dims(l, &num, &dim);
  if (dd__check_label_range(l, l->bottom[1], dim, 0, 0)) return;
  double loss = l->be->ops->infogain_forward(l->be, num, dim, 1, l->bottom[0]->data, l->bottom[1]->data, NULL, 0, 0,
                                             &valid);
  dd__set_scalar(l->top[0], (float)(num ? loss / (double)num : 0.0));
}

static void mlogistic_backward(dd_layer *l) {
  if (!l->propagate_down[0]) return; /* the labels never get a gradient */
  int64_t num, dim;
  dims(l, &num, &dim);
  if (!num) return;
  l->be->ops->multinomial_backward(l->be, num, dim, 1, l->bottom[0]->diff, l->bottom[0]->data, l->bottom[1]->data,
                                   dd__loss_top_diff(l) / (float)num);
}

const dd_layer_ops dd_layer_multinomial_logistic_loss = {
    .type = "MultinomialLogisticLoss", .min_bottoms = 2, .max_bottoms = 2, .min_tops = 1, .max_tops = 1,
    .is_loss = 1, .shape = mlogistic_shape, .setup = mlogistic_setup, .forward = mlogistic_forward,
    .backward = mlogistic_backward};
