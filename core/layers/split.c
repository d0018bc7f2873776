/* Split: copies one bottom to several tops (gradients summed in backward). Nets insert it
 * automatically where a blob feeds several layers. */
#include "net/layer.h"

static int split_shape(dd_shape_ctx *c) {
  for (int t = 0; t < c->nt; t++) c->tops[t] = c->bottoms[0];
  return 0;
}

/* The tops usually share the bottom's memory (the net arranges it): then there is nothing to do. */
static void split_forward(dd_layer *l) {
  for (int t = 0; t < l->nt; t++)
    if (l->top[t]->data != l->bottom[0]->data)
      l->be->ops->copy(l->be, l->top[t]->data, l->bottom[0]->data, (size_t)l->bottom[0]->count * sizeof(float));
}

/* The bottom's gradient is the sum of the tops' gradients. */
static void split_backward(dd_layer *l) {
  if (!l->propagate_down[0]) return;
  int64_t n = l->bottom[0]->count;
  l->be->ops->copy(l->be, l->bottom[0]->diff, l->top[0]->diff, (size_t)n * sizeof(float));
  for (int t = 1; t < l->nt; t++) l->be->ops->axpby(l->be, n, 1.0f, l->top[t]->diff, 1.0f, l->bottom[0]->diff);
}

const dd_layer_ops dd_layer_split = {
    .type = "Split", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = -1,
    .shape = split_shape, .forward = split_forward, .backward = split_backward};
