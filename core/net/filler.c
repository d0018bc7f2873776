/* Caffe's fillers (see filler.h). The formulas are Caffe's (filler.hpp); the random streams are
 * distilld's own (xoshiro256** from the net's seed), so a seed always gives the same weights here,
 * though not the weights Caffe would draw. */
#define _POSIX_C_SOURCE 200809L
#include "net/filler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"

int dd_fill_host(float *h, const dd_shape *s, const char *name, const Caffe__FillerParameter *fp, dd_rng *rng,
                 char *err, size_t errlen) {
  int64_t n = dd_shape_count(s);
  const char *type = fp && fp->type ? fp->type : "constant";
  int64_t fan_in = s->ndim >= 1 && s->dims[0] ? n / s->dims[0] : n;
  int64_t fan_out = s->ndim > 1 && s->dims[1] ? n / s->dims[1] : n;
  int vn = fp ? fp->variance_norm : CAFFE__FILLER_PARAMETER__VARIANCE_NORM__FAN_IN;
  double fan = vn == CAFFE__FILLER_PARAMETER__VARIANCE_NORM__FAN_OUT   ? (double)fan_out
               : vn == CAFFE__FILLER_PARAMETER__VARIANCE_NORM__AVERAGE ? (fan_in + fan_out) / 2.0
                                                                       : (double)fan_in;
  if (fan <= 0) fan = 1;
  int r = 0;
  if (!strcmp(type, "constant")) {
    float v = fp ? fp->value : 0.0f;
    for (int64_t i = 0; i < n; i++) h[i] = v;
  } else if (!strcmp(type, "uniform")) {
    float lo = fp->min, hi = fp->max;
    for (int64_t i = 0; i < n; i++) h[i] = lo + (hi - lo) * dd_rng_uniform(rng);
  } else if (!strcmp(type, "gaussian")) {
    for (int64_t i = 0; i < n; i++) h[i] = (float)(fp->mean + fp->std * dd_rng_gaussian(rng));
    if (fp->sparse >= 0) {
      /* Caffe: keep each weight with probability sparse / num_outputs (shape(0)) */
      double p = s->ndim >= 1 && s->dims[0] ? (double)fp->sparse / (double)s->dims[0] : 1.0;
      for (int64_t i = 0; i < n; i++)
        if (dd_rng_uniform(rng) >= p) h[i] = 0.0f;
    }
  } else if (!strcmp(type, "xavier")) {
    float scale = (float)sqrt(3.0 / fan);
    for (int64_t i = 0; i < n; i++) h[i] = -scale + 2.0f * scale * dd_rng_uniform(rng);
  } else if (!strcmp(type, "msra")) {
    double std = sqrt(2.0 / fan);
    for (int64_t i = 0; i < n; i++) h[i] = (float)(std * dd_rng_gaussian(rng));
  } else if (!strcmp(type, "positive_unitball")) {
    int64_t rows = s->ndim >= 1 && s->dims[0] ? s->dims[0] : 1, dim = n / rows;
    for (int64_t i = 0; i < n; i++) h[i] = dd_rng_uniform(rng);
    for (int64_t row = 0; row < rows; row++) {
      double sum = 0;
      for (int64_t k = 0; k < dim; k++) sum += h[row * dim + k];
      for (int64_t k = 0; k < dim; k++) h[row * dim + k] = (float)(h[row * dim + k] / (sum > 0 ? sum : 1));
    }
  } else if (!strcmp(type, "bilinear")) {
    if (s->ndim != 4 || s->dims[2] != s->dims[3]) {
      r = dd_errorf(DD_EINVAL, err, errlen, "%s: the bilinear filler needs a 4-D blob with square kernels",
                    name);
    } else {
      int64_t k = s->dims[3];
      double f = ceil(k / 2.0), c = (2 * f - 1 - fmod(f, 2.0)) / (2 * f);
      for (int64_t i = 0; i < n; i++) {
        double x = (double)(i % k), y = (double)((i / k) % k);
        h[i] = (float)((1 - fabs(x / f - c)) * (1 - fabs(y / f - c)));
      }
    }
  } else {
    r = dd_errorf(DD_EINVAL, err, errlen,
                  "%s: unknown filler type \"%s\" (constant, uniform, gaussian, xavier, msra, "
                  "positive_unitball, bilinear)",
                  name, type);
  }
  return r;
}

int dd_fill(dd_tensor *t, const Caffe__FillerParameter *fp, dd_rng *rng, char *err, size_t errlen) {
  float *h = malloc((size_t)(t->count ? t->count : 1) * sizeof *h);
  if (!h) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory filling %s", t->name);
  int r = dd_fill_host(h, &t->shape, t->name, fp, rng, err, errlen);
  if (r == 0) dd_tensor_set_data(t, h);
  free(h);
  return r;
}
