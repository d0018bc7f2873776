/* TanH (Caffe's TanHLayer): y = tanh x. */
#include "layers/neuron.h"

static int params(const Caffe__LayerParameter *lp, dd_neuron_desc *d, char *err, size_t errlen) {
  (void)lp, (void)err, (void)errlen;
  *d = (dd_neuron_desc){.kind = DD_NEURON_TANH};
  return 0;
}

DD_NEURON_LAYER(tanh, "TanH", params, 0, 1);
