/* HingeLoss (Caffe): (x, label) -> the one-vs-all hinge loss of x viewed as (N, dim), dim =
 * count / N: t = max(0, 1 + s x) with s = -1 at the item's label and +1 elsewhere; the loss is
 * sum(t) / N (hinge_loss_param.norm L1, the default) or sum(t^2) / N (L2). Gradient:
 * w s [t > 0] / N (L1) or 2 w s t / N (L2); the labels get none. One label per item, a class in
 * [0, dim). */
#include "base/dd_error.h"
#include "layers/loss_util.h"

static int hinge_norm(const Caffe__LayerParameter *lp) { return lp->hinge_loss_param ? (int)lp->hinge_loss_param->norm : 1; }

static int hinge_shape(dd_shape_ctx *c) {
  int r, norm = hinge_norm(c->lp);
  if (norm != 1 && norm != 2) return dd_shape_fail(c, "hinge_loss_param.norm %d is not L1 or L2", norm);
  if ((r = dd__loss_reshape(c, "prediction", "label"))) return r;
  const dd_shape *x = &c->bottoms[0], *lb = &c->bottoms[1];
  if (dd_shape_known(x) && dd_shape_known(lb) && dd_shape_count(lb) != x->dims[0]) {
    char s1[64], s2[64];
    return dd_shape_fail(c, "the label blob (%s) must hold one label per item of the prediction (%s)",
                         dd_shape_str(lb, s2, sizeof s2), dd_shape_str(x, s1, sizeof s1));
  }
  return 0;
}

static void dims(const dd_layer *l, int64_t *num, int64_t *dim) {
  *num = l->bottom[0]->shape.dims[0];
  *dim = *num ? l->bottom[0]->count / *num : 0;
}

static int hinge_setup(dd_layer *l, char *err, size_t errlen) {
  if (dd__need_kernel(l, (const void *)l->be->ops->hinge_forward, "HingeLoss", err, errlen)) return DD_EUNSUPPORTED;
  return dd__need_kernel(l, (const void *)l->be->ops->hinge_backward, "HingeLoss backward", err, errlen);
}

static void hinge_forward(dd_layer *l) {
  int64_t num, dim;
  dims(l, &num, &dim);
  if (dd__check_label_range(l, l->bottom[1], dim, 0, 0)) return;
  double loss = l->be->ops->hinge_forward(l->be, num, dim, l->bottom[0]->data, l->bottom[1]->data, hinge_norm(l->lp));
  dd__set_scalar(l->top[0], (float)(num ? loss / (double)num : 0.0));
}

static void hinge_backward(dd_layer *l) {
  if (!l->propagate_down[0]) return; /* the labels never get a gradient */
  int64_t num, dim;
  dims(l, &num, &dim);
  if (!num) return;
  l->be->ops->hinge_backward(l->be, num, dim, l->bottom[0]->diff, l->bottom[0]->data, l->bottom[1]->data,
                             hinge_norm(l->lp), dd__loss_top_diff(l) / (float)num);
}

const dd_layer_ops dd_layer_hinge_loss = {
    .type = "HingeLoss", .min_bottoms = 2, .max_bottoms = 2, .min_tops = 1, .max_tops = 1, .is_loss = 1,
    .shape = hinge_shape, .setup = hinge_setup, .forward = hinge_forward, .backward = hinge_backward};
