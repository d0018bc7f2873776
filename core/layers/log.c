/* Log (Caffe's LogLayer): y = log_base(shift + scale x), the natural log when log_param.base is
 * -1 (the default); scale 1, shift 0. */
#include <math.h>

#include "base/dd_error.h"
#include "layers/neuron.h"

static int params(const Caffe__LayerParameter *lp, dd_neuron_desc *d, char *err, size_t errlen) {
  const Caffe__LogParameter *p = lp->log_param;
  float base = p ? p->base_ : -1.0f, scale = p ? p->scale : 1.0f, shift = p ? p->shift : 0.0f;
  if (base != -1.0f && !(base > 0))
    return dd_errorf(DD_EINVAL, err, errlen, "log_param.base %g must be strictly positive (or -1 for e)", base);
  float log_base = base == -1.0f ? 1.0f : logf(base);
  if (isinf(log_base)) return dd_errorf(DD_EINVAL, err, errlen, "log_param.base %g: log(base) is infinite", base);
  float base_scale = 1.0f / log_base;
  if (isinf(base_scale))
    return dd_errorf(DD_EINVAL, err, errlen, "log_param.base %g: 1 / log(base) is infinite (base 1 has no logarithm)", base);
  *d = (dd_neuron_desc){.kind = DD_NEURON_LOG, .a = scale, .b = shift, .c = base_scale};
  return 0;
}

DD_NEURON_LAYER(log, "Log", params, 1, 1);
