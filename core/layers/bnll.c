/* BNLL (Caffe's BNLLLayer, "binomial normal log likelihood"): y = log(1 + e^x), computed stably;
 * the gradient e^x / (e^x + 1) with x capped at 50, as Caffe caps it. */
#include "layers/neuron.h"

static int params(const Caffe__LayerParameter *lp, dd_neuron_desc *d, char *err, size_t errlen) {
  (void)lp, (void)err, (void)errlen;
  *d = (dd_neuron_desc){.kind = DD_NEURON_BNLL};
  return 0;
}

DD_NEURON_LAYER(bnll, "BNLL", params, 1, 1);
