/* SoftmaxWithLoss: (predictions, labels) -> scalar loss (and optionally the probabilities), with
 * Caffe's ignore_label and normalization modes. */
#include "dd_error.h"
#include "layer.h"

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
  int64_t n = dd_shape_count_range(pr, 0, a) * dd_shape_count_range(pr, a + 1, pr->ndim);
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

const dd_layer_ops dd_layer_softmax_loss = {"SoftmaxWithLoss", 2, 2, 1, 2, 1, softmax_loss_shape};
