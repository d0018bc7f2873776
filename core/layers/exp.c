/* Exp (Caffe's ExpLayer): y = base^(shift + scale x), base e when exp_param.base is -1 (the
 * default); scale 1, shift 0. Computed as Caffe does: outer e^(inner x) with inner = ln(base)
 * scale and outer = base^shift. */
#include <math.h>

#include "base/dd_error.h"
#include "layers/neuron.h"

static int params(const Caffe__LayerParameter *lp, dd_neuron_desc *d, char *err, size_t errlen) {
  const Caffe__ExpParameter *p = lp->exp_param;
  float base = p ? p->base_ : -1.0f, scale = p ? p->scale : 1.0f, shift = p ? p->shift : 0.0f;
  if (base != -1.0f && !(base > 0))
    return dd_errorf(DD_EINVAL, err, errlen, "exp_param.base %g must be strictly positive (or -1 for e)", base);
  float log_base = base == -1.0f ? 1.0f : logf(base);
  if (isinf(log_base)) return dd_errorf(DD_EINVAL, err, errlen, "exp_param.base %g: log(base) is infinite", base);
  *d = (dd_neuron_desc){.kind = DD_NEURON_EXP, .a = log_base * scale,
                        .b = shift == 0.0f ? 1.0f : base != -1.0f ? powf(base, shift) : expf(shift)};
  return 0;
}

DD_NEURON_LAYER(exp, "Exp", params, 0, 1);
