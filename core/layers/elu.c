/* ELU (Caffe's ELULayer): y = x for x > 0, alpha (e^x - 1) otherwise; elu_param.alpha (1). */
#include "layers/neuron.h"

static int params(const Caffe__LayerParameter *lp, dd_neuron_desc *d, char *err, size_t errlen) {
  (void)err, (void)errlen;
  *d = (dd_neuron_desc){.kind = DD_NEURON_ELU, .a = lp->elu_param ? lp->elu_param->alpha : 1.0f};
  return 0;
}

DD_NEURON_LAYER(elu, "ELU", params, 1, 1);
