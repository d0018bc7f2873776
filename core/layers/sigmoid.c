/* Sigmoid (Caffe's SigmoidLayer): y = 1 / (1 + e^-x), computed as Caffe does, 0.5 tanh(0.5 x) + 0.5. */
#include "layers/neuron.h"

static int params(const Caffe__LayerParameter *lp, dd_neuron_desc *d, char *err, size_t errlen) {
  (void)lp, (void)err, (void)errlen;
  *d = (dd_neuron_desc){.kind = DD_NEURON_SIGMOID};
  return 0;
}

DD_NEURON_LAYER(sigmoid, "Sigmoid", params, 0, 1);
