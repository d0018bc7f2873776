/* Hint losses between a student blob and a teacher blob (the teacher bottom gets no gradient):
 *   HintLoss (FitNets): 1/(2N) * sum (s - t)^2 over the batch (Caffe's EuclideanLoss convention);
 *     the student blob is usually the output of a 1x1 convolution regressor.
 *   AttentionLoss (attention transfer): 1/N * sum over images of ||q_s - q_t||_2^2, q the
 *     L2-normalised spatial attention map sum_c x_c^2; channel counts may differ, H x W must not. */
#include "base/dd_error.h"
#include "net/layer.h"

static int hint_shape(dd_shape_ctx *c) {
  if (dd_shape_bottoms_known(c) && !dd_shape_equal(&c->bottoms[0], &c->bottoms[1])) {
    char a[64], b[64];
    return dd_shape_fail(c, "the student blob %s and the teacher blob %s differ in shape (a FitNets hint needs a 1x1 regressor to the teacher's channels)",
                         dd_shape_str(&c->bottoms[0], a, sizeof a), dd_shape_str(&c->bottoms[1], b, sizeof b));
  }
  c->tops[0] = dd_shape_make(0, NULL);
  return 0;
}

static int attention_shape(dd_shape_ctx *c) {
  if (dd_shape_bottoms_known(c)) {
    const dd_shape *s = &c->bottoms[0], *t = &c->bottoms[1];
    if (s->ndim != 4 || t->ndim != 4 || s->dims[0] != t->dims[0] || s->dims[2] != t->dims[2] || s->dims[3] != t->dims[3]) {
      char a[64], b[64];
      return dd_shape_fail(c, "attention transfer needs (N, C, H, W) blobs with the same N, H and W: student %s, teacher %s",
                           dd_shape_str(s, a, sizeof a), dd_shape_str(t, b, sizeof b));
    }
  }
  c->tops[0] = dd_shape_make(0, NULL);
  return 0;
}

typedef struct {
  float *buf; /* HintLoss: s - t; AttentionLoss: the student gradient for a unit weight */
  size_t cap;
  void *ws; /* AttentionLoss: 2 * H * W doubles */
  size_t ws_cap;
} hint_priv;

static int hint_setup(dd_layer *l, char *err, size_t errlen) {
  hint_priv *hp = l->priv;
  if (dd__ensure_buffer(l->be, (void **)&hp->buf, &hp->cap, (size_t)l->bottom[0]->count * sizeof(float)))
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  if (l->ops->shape == attention_shape &&
      dd__ensure_buffer(l->be, &hp->ws, &hp->ws_cap, (size_t)(2 * dd__count(l->bottom[0], 2, 4)) * sizeof(double)))
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  return 0;
}

static float top_weight(const dd_layer *l) {
  float w;
  l->be->ops->download(l->be, &w, l->top[0]->diff, sizeof w);
  return w;
}

static void hint_forward(dd_layer *l) {
  hint_priv *hp = l->priv;
  int64_t n = l->bottom[0]->count, batch = l->bottom[0]->shape.dims[0];
  l->be->ops->copy(l->be, hp->buf, l->bottom[0]->data, (size_t)n * sizeof(float));
  l->be->ops->axpby(l->be, n, -1.0f, l->bottom[1]->data, 1.0f, hp->buf);
  double ss = l->be->ops->dot(l->be, n, hp->buf, hp->buf);
  dd__set_scalar(l->top[0], (float)(ss / (2.0 * (double)batch)));
}

static void hint_backward(dd_layer *l) {
  hint_priv *hp = l->priv;
  if (!l->propagate_down[0]) return;
  int64_t n = l->bottom[0]->count, batch = l->bottom[0]->shape.dims[0];
  l->be->ops->scale(l->be, n, top_weight(l) / (float)batch, hp->buf, l->bottom[0]->diff);
}

static void attention_forward(dd_layer *l) {
  hint_priv *hp = l->priv;
  const dd_shape *s = &l->bottom[0]->shape, *t = &l->bottom[1]->shape;
  double loss = l->be->ops->attention_forward_backward(l->be, s->dims[0], s->dims[1], t->dims[1], s->dims[2] * s->dims[3],
                                                       l->bottom[0]->data, l->bottom[1]->data, hp->buf,
                                                       1.0f / (float)s->dims[0], hp->ws);
  dd__set_scalar(l->top[0], (float)(loss / (double)s->dims[0]));
}

static void attention_backward(dd_layer *l) {
  hint_priv *hp = l->priv;
  if (l->propagate_down[0])
    l->be->ops->scale(l->be, l->bottom[0]->count, top_weight(l), hp->buf, l->bottom[0]->diff);
}

static void hint_destroy(dd_layer *l) {
  hint_priv *hp = l->priv;
  if (hp->buf) l->be->ops->free(l->be, hp->buf);
  if (hp->ws) l->be->ops->free(l->be, hp->ws);
}

const dd_layer_ops dd_layer_hint_loss = {
    .type = "HintLoss", .min_bottoms = 2, .max_bottoms = 2, .min_tops = 1, .max_tops = 1, .is_loss = 1,
    .shape = hint_shape, .priv_size = sizeof(hint_priv), .setup = hint_setup, .forward = hint_forward,
    .backward = hint_backward, .destroy = hint_destroy};

const dd_layer_ops dd_layer_attention_loss = {
    .type = "AttentionLoss", .min_bottoms = 2, .max_bottoms = 2, .min_tops = 1, .max_tops = 1, .is_loss = 1,
    .shape = attention_shape, .priv_size = sizeof(hint_priv), .setup = hint_setup, .forward = attention_forward,
    .backward = attention_backward, .destroy = hint_destroy};
