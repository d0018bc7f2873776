/* ReLU with Caffe's negative_slope (leaky ReLU when > 0). Shape-preserving, no parameters. */
#include "net/layer.h"

static int relu_shape(dd_shape_ctx *c) {
  c->tops[0] = c->bottoms[0];
  return 0;
}

static float slope(const dd_layer *l) {
  return l->lp->relu_param ? l->lp->relu_param->negative_slope : 0.0f;
}

static void relu_forward(dd_layer *l) {
  l->be->ops->relu_forward(l->be, l->top[0]->count, l->top[0]->data, l->bottom[0]->data, slope(l));
}

/* In place, bottom data holds the output, which has the input's sign: Caffe's rule holds. */
static void relu_backward(dd_layer *l) {
  if (!l->propagate_down[0]) return;
  l->be->ops->relu_backward(l->be, l->top[0]->count, l->bottom[0]->diff, l->top[0]->diff,
                            l->bottom[0]->data, slope(l));
}

const dd_layer_ops dd_layer_relu = {
    .type = "ReLU", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1,
    .shape = relu_shape, .forward = relu_forward, .backward = relu_backward};
