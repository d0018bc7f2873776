/* Parameter initialisation with Caffe's fillers: constant, uniform, gaussian (with sparse),
 * xavier and msra (with variance_norm FAN_IN / FAN_OUT / AVERAGE), positive_unitball, bilinear. */
#ifndef DD_FILLER_H
#define DD_FILLER_H

#include <stddef.h>

#include "caffe.pb-c.h"
#include "base/rng.h"
#include "net/tensor.h"

/* Fills t's data per `fp` (NULL: constant 0) from `rng`. Returns 0, DD_EINVAL (an unknown type,
 * a bilinear filler on a shape it cannot fill) or DD_ENOMEM, with a message naming the tensor. */
int dd_fill(dd_tensor *t, const Caffe__FillerParameter *fp, dd_rng *rng, char *err, size_t errlen);

/* The same into a host buffer `h` of dd_shape_count(s) floats, for a tensor of shape `s` named
 * `name` (in messages); allocates nothing, so a layer may refill from forward (DummyData). */
int dd_fill_host(float *h, const dd_shape *s, const char *name, const Caffe__FillerParameter *fp, dd_rng *rng,
                 char *err, size_t errlen);

#endif
