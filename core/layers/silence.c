/* Silence: consumes blobs so they count as used; no output. */
#include "layer.h"

static int silence_shape(dd_shape_ctx *c) {
  (void)c;
  return 0;
}

const dd_layer_ops dd_layer_silence = {"Silence", 1, -1, 0, 0, 0, silence_shape};
