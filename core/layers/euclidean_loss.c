/* EuclideanLoss (Caffe): (a, b) -> sum((a - b)^2) / (2 N), N the first dimension. Both bottoms
 * may get a gradient (Caffe allows forced backward into either): da = w (a - b) / N, db = -da,
 * w the loss top's diff. */
#include "base/dd_error.h"
#include "layers/loss_util.h"

static int euclidean_shape(dd_shape_ctx *c) {
  int r;
  if ((r = dd__loss_reshape(c, "first input", "second input"))) return r;
  const dd_shape *a = &c->bottoms[0], *b = &c->bottoms[1];
  if (!dd_shape_known(a) || !dd_shape_known(b)) return 0;
  if (dd_shape_count_range(a, 1, a->ndim) != dd_shape_count_range(b, 1, b->ndim)) {
    char s1[64], s2[64];
    return dd_shape_fail(c, "the bottoms must have the same dimension per item: %s and %s",
                         dd_shape_str(a, s1, sizeof s1), dd_shape_str(b, s2, sizeof s2));
  }
  return 0;
}

typedef struct {
  float *diff; /* a - b, as the bottoms */
  size_t cap;
} euclidean_priv;

static int euclidean_setup(dd_layer *l, char *err, size_t errlen) {
  euclidean_priv *p = l->priv;
  if (dd__ensure_buffer(l->be, (void **)&p->diff, &p->cap, (size_t)l->bottom[0]->count * sizeof(float)))
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  return 0;
}

static void euclidean_forward(dd_layer *l) {
  euclidean_priv *p = l->priv;
  const dd_backend_ops *o = l->be->ops;
  int64_t n = l->bottom[0]->count;
  o->copy(l->be, p->diff, l->bottom[0]->data, (size_t)n * sizeof(float));
  o->axpby(l->be, n, -1.0f, l->bottom[1]->data, 1.0f, p->diff);
  double num = (double)l->bottom[0]->shape.dims[0];
  dd__set_scalar(l->top[0], (float)(o->dot(l->be, n, p->diff, p->diff) / num / 2.0));
}

static void euclidean_backward(dd_layer *l) {
  euclidean_priv *p = l->priv;
  float w = dd__loss_top_diff(l);
  for (int i = 0; i < 2; i++) {
    if (!l->propagate_down[i]) continue;
    float alpha = (i == 0 ? w : -w) / (float)l->bottom[i]->shape.dims[0];
    l->be->ops->scale(l->be, l->bottom[i]->count, alpha, p->diff, l->bottom[i]->diff);
  }
}

static void euclidean_destroy(dd_layer *l) {
  euclidean_priv *p = l->priv;
  if (p->diff) l->be->ops->free(l->be, p->diff);
}

const dd_layer_ops dd_layer_euclidean_loss = {
    .type = "EuclideanLoss", .min_bottoms = 2, .max_bottoms = 2, .min_tops = 1, .max_tops = 1,
    .is_loss = 1, .shape = euclidean_shape, .priv_size = sizeof(euclidean_priv), .setup = euclidean_setup,
    .forward = euclidean_forward, .backward = euclidean_backward, .destroy = euclidean_destroy};
