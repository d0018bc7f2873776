/* Threshold (Caffe's ThresholdLayer): y = 1 where x > threshold_param.threshold (0), else 0.
 * Forward only, as in Caffe: a net that needs a gradient through it is refused at build. */
#include "layers/neuron.h"

static int params(const Caffe__LayerParameter *lp, dd_neuron_desc *d, char *err, size_t errlen) {
  (void)err, (void)errlen;
  *d = (dd_neuron_desc){.kind = DD_NEURON_THRESHOLD, .a = lp->threshold_param ? lp->threshold_param->threshold : 0.0f};
  return 0;
}

DD_NEURON_LAYER(threshold, "Threshold", params, 0, 0);
