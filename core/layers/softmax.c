/* Softmax over `axis` (default 1). */
#include "base/dd_error.h"
#include "net/layer.h"

static int softmax_shape(dd_shape_ctx *c) {
  const Caffe__SoftmaxParameter *p = c->lp->softmax_param;
  const dd_shape *b = &c->bottoms[0];
  if (dd_shape_known(b) && dd_shape_axis(b, p ? p->axis : 1) < 0)
    return dd_shape_fail(c, "softmax axis %d is out of range for a bottom with %d axes", p ? p->axis : 1, b->ndim);
  c->tops[0] = *b;
  return 0;
}

/* (outer, channels, inner) around the softmax axis. */
void dd__softmax_dims(const dd_layer *l, int64_t *outer, int64_t *ch, int64_t *inner) {
  const Caffe__SoftmaxParameter *p = l->lp->softmax_param;
  const dd_shape *s = &l->bottom[0]->shape;
  int a = dd_shape_axis(s, p ? p->axis : 1);
  *outer = dd_shape_count_range(s, 0, a);
  *ch = s->dims[a];
  *inner = dd_shape_count_range(s, a + 1, s->ndim);
}

static void softmax_forward(dd_layer *l) {
  int64_t o, c, i;
  dd__softmax_dims(l, &o, &c, &i);
  l->be->ops->softmax_forward(l->be, o, c, i, l->top[0]->data, l->bottom[0]->data);
}

static void softmax_backward(dd_layer *l) {
  if (!l->propagate_down[0]) return;
  int64_t o, c, i;
  dd__softmax_dims(l, &o, &c, &i);
  l->be->ops->softmax_backward(l->be, o, c, i, l->bottom[0]->diff, l->top[0]->diff, l->top[0]->data);
}

const dd_layer_ops dd_layer_softmax = {
    .type = "Softmax", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1,
    .shape = softmax_shape, .forward = softmax_forward, .backward = softmax_backward};
