/* KDLoss: (student logits, teacher logits) -> T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean,
 * T = distill_loss_param.temperature. The teacher bottom never receives a gradient. */
#include "base/dd_error.h"
#include "net/layer.h"

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

typedef struct {
  float *ds; /* the student gradient for a unit loss weight, computed with the loss */
  size_t cap;
  int64_t outer, ch;
} kd_priv;

static float temperature(const dd_layer *l) {
  return l->lp->distill_loss_param ? l->lp->distill_loss_param->temperature : 4.0f;
}

static int kd_setup(dd_layer *l, char *err, size_t errlen) {
  kd_priv *kp = l->priv;
  kp->outer = dd__count(l->bottom[0], 0, 1);
  kp->ch = dd__count(l->bottom[0], 1, l->bottom[0]->shape.ndim);
  if (dd__ensure_buffer(l->be, (void **)&kp->ds, &kp->cap, (size_t)l->bottom[0]->count * sizeof(float)))
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  return 0;
}

static void kd_forward(dd_layer *l) {
  kd_priv *kp = l->priv;
  double loss = l->be->ops->kd_forward_backward(l->be, kp->outer, kp->ch, l->bottom[0]->data, l->bottom[1]->data,
                                                temperature(l), kp->ds, 1.0f / (float)kp->outer);
  dd__set_scalar(l->top[0], (float)(loss / (double)kp->outer));
}

/* Scaled by the loss top's diff, as Caffe's loss layers are (the net sets it to the loss weight;
 * when the top also feeds other layers, the gradient arrives there through a split). */
static void kd_backward(dd_layer *l) {
  kd_priv *kp = l->priv;
  if (l->propagate_down[0]) {
    float w;
    l->be->ops->download(l->be, &w, l->top[0]->diff, sizeof w);
    l->be->ops->scale(l->be, l->bottom[0]->count, w, kp->ds, l->bottom[0]->diff);
  }
  /* the teacher's logits (bottom 1) never get a gradient */
}

static void kd_destroy(dd_layer *l) {
  kd_priv *kp = l->priv;
  if (kp->ds) l->be->ops->free(l->be, kp->ds);
}

const dd_layer_ops dd_layer_kd_loss = {
    .type = "KDLoss", .min_bottoms = 2, .max_bottoms = 2, .min_tops = 1, .max_tops = 1, .is_loss = 1,
    .shape = kd_loss_shape, .priv_size = sizeof(kd_priv), .setup = kd_setup, .forward = kd_forward,
    .backward = kd_backward, .destroy = kd_destroy};
