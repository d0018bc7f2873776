/* Clip (Caffe's ClipLayer): y = max(min, min(x, max)); clip_param's min and max are required.
 * The gradient passes where min <= x <= max. Like Caffe, min > max is not an error (y = min). */
#include "base/dd_error.h"
#include "layers/neuron.h"

static int params(const Caffe__LayerParameter *lp, dd_neuron_desc *d, char *err, size_t errlen) {
  if (!lp->clip_param) return dd_errorf(DD_EINVAL, err, errlen, "Clip needs clip_param { min: ... max: ... }");
  *d = (dd_neuron_desc){.kind = DD_NEURON_CLIP, .a = lp->clip_param->min, .b = lp->clip_param->max};
  return 0;
}

DD_NEURON_LAYER(clip, "Clip", params, 1, 1);
