/* Power (Caffe's PowerLayer): y = (shift + scale x)^power; power_param power (1), scale (1),
 * shift (0). With power or scale 0 the output is the constant 1 (power 0) or shift^power. */
#include "layers/neuron.h"

static int params(const Caffe__LayerParameter *lp, dd_neuron_desc *d, char *err, size_t errlen) {
  (void)err, (void)errlen;
  const Caffe__PowerParameter *p = lp->power_param;
  *d = (dd_neuron_desc){.kind = DD_NEURON_POWER, .a = p ? p->power : 1.0f, .b = p ? p->scale : 1.0f,
                        .c = p ? p->shift : 0.0f};
  return 0;
}

DD_NEURON_LAYER(power, "Power", params, 1, 1);
