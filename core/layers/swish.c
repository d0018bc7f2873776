/* Swish (Caffe's SwishLayer): y = x sigmoid(beta x); swish_param.beta (1). */
#include "layers/neuron.h"

static int params(const Caffe__LayerParameter *lp, dd_neuron_desc *d, char *err, size_t errlen) {
  (void)err, (void)errlen;
  *d = (dd_neuron_desc){.kind = DD_NEURON_SWISH, .a = lp->swish_param ? lp->swish_param->beta : 1.0f};
  return 0;
}

DD_NEURON_LAYER(swish, "Swish", params, 1, 1);
