/* Silence: consumes blobs so they count as used; no output. */
#include "net/layer.h"

static int silence_shape(dd_shape_ctx *c) {
  (void)c;
  return 0;
}

static void silence_forward(dd_layer *l) { (void)l; }

static void silence_backward(dd_layer *l) {
  for (int i = 0; i < l->nb; i++)
    if (l->propagate_down[i]) l->be->ops->fill(l->be, l->bottom[i]->diff, 0.0f, l->bottom[i]->count);
}

const dd_layer_ops dd_layer_silence = {
    .type = "Silence", .min_bottoms = 1, .max_bottoms = -1, .min_tops = 0, .max_tops = 0,
    .shape = silence_shape, .forward = silence_forward, .backward = silence_backward};
