/* KDLoss: (student logits, teacher logits) -> T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean,
 * T = distill_loss_param.temperature. The teacher bottom never receives a gradient. */
#include "dd_error.h"
#include "layer.h"

static int kd_loss_shape(dd_shape_ctx *c) {
  const Caffe__DistillLossParameter *p = c->lp->distill_loss_param;
  if (p && !(p->temperature > 0))
    return dd_shape_fail(c, "distill_loss_param.temperature must be > 0, got %g", p->temperature);
  if (dd_shape_bottoms_known(c) && !dd_shape_equal(&c->bottoms[0], &c->bottoms[1])) {
    char a[64], b[64];
    return dd_shape_fail(c, "student logits %s and teacher logits %s differ in shape (do the nets have the same classes?)",
                         dd_shape_str(&c->bottoms[0], a, sizeof a), dd_shape_str(&c->bottoms[1], b, sizeof b));
  }
  c->tops[0] = dd_shape_make(0, NULL);
  return 0;
}

const dd_layer_ops dd_layer_kd_loss = {"KDLoss", 2, 2, 1, 1, 1, kd_loss_shape};
