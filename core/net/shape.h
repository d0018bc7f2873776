/* Tensor shapes: up to DD_SHAPE_MAX_DIMS dimensions, or "unknown" (ndim < 0) where a shape cannot
 * be known before data arrives (an ImageData layer without crop or resize, say). Shape logic
 * propagates unknown shapes instead of failing, so `distilld check` can still lint such nets. */
#ifndef DD_SHAPE_H
#define DD_SHAPE_H

#include <stddef.h>
#include <stdint.h>

#define DD_SHAPE_MAX_DIMS 8

typedef struct {
  int ndim; /* < 0: unknown; 0: a scalar */
  int64_t dims[DD_SHAPE_MAX_DIMS];
} dd_shape;

static inline dd_shape dd_shape_unknown(void) {
  dd_shape s = {.ndim = -1};
  return s;
}
static inline int dd_shape_known(const dd_shape *s) { return s->ndim >= 0; }

/* Builds a shape from `ndim` dims. */
dd_shape dd_shape_make(int ndim, const int64_t *dims);
dd_shape dd_shape_4(int64_t n, int64_t c, int64_t h, int64_t w);

/* Number of elements (1 for a scalar); -1 when unknown. */
int64_t dd_shape_count(const dd_shape *s);

/* Product of dims [from, to); -1 when unknown. */
int64_t dd_shape_count_range(const dd_shape *s, int from, int to);

int dd_shape_equal(const dd_shape *a, const dd_shape *b);

/* Writes "64x3x32x32" ("scalar", "?" when unknown) into buf; returns buf. */
char *dd_shape_str(const dd_shape *s, char *buf, size_t len);

/* Caffe's CanonicalAxisIndex: maps a possibly negative axis into [0, ndim). Returns -1 when out of
 * range. */
int dd_shape_axis(const dd_shape *s, int axis);

#endif
