/* CPU kernels of the catalogue's structure layers (Reduction, ...): semantics in base/backend.h. */
#include <math.h>

#include "cpu/cpu_kernels.h"

void dd_cpu_reduce_forward(dd_backend *be, int op, int64_t outer, int64_t dim, float *y, const float *x, float coeff) {
  (void)be;
  for (int64_t i = 0; i < outer; i++) {
    const float *r = x + i * dim;
    double s = 0;
    for (int64_t j = 0; j < dim; j++) s += op == 2 ? fabs((double)r[j]) : op == 3 ? (double)r[j] * r[j] : r[j];
    if (op == 4 && dim > 0) s /= (double)dim;
    y[i] = (float)(coeff * s);
  }
}

void dd_cpu_reduce_backward(dd_backend *be, int op, int64_t outer, int64_t dim, float *dx, const float *dy,
                            const float *x, float coeff) {
  (void)be;
  for (int64_t i = 0; i < outer; i++) {
    float g = coeff * dy[i];
    if (op == 4 && dim > 0) g /= (float)dim;
    const float *r = x + i * dim;
    float *o = dx + i * dim;
    for (int64_t j = 0; j < dim; j++)
      o[j] = op == 2 ? (r[j] > 0 ? g : r[j] < 0 ? -g : 0.0f) : op == 3 ? 2.0f * r[j] * g : g;
  }
}
