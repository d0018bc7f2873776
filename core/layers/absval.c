/* AbsVal (Caffe's AbsValLayer): y = |x|; the gradient is sign(x) (0 at 0). Caffe refuses to run it
 * in place; distilld keeps a copy of the input instead. */
#include "layers/neuron.h"

static int params(const Caffe__LayerParameter *lp, dd_neuron_desc *d, char *err, size_t errlen) {
  (void)lp, (void)err, (void)errlen;
  *d = (dd_neuron_desc){.kind = DD_NEURON_ABSVAL};
  return 0;
}

DD_NEURON_LAYER(absval, "AbsVal", params, 1, 1);
