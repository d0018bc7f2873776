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

/* Counts saturate instead of overflowing: a product that does not fit in int64_t is
 * DD_COUNT_OVERFLOW (INT64_MAX), which every size check refuses. */
#define DD_COUNT_OVERFLOW INT64_MAX

/* The largest blob, in elements: Caffe's Blob::Reshape limit (count <= INT_MAX), which the
 * kernels' int indices rely on. */
#define DD_SHAPE_MAX_COUNT ((int64_t)INT32_MAX)

/* Number of elements (1 for a scalar); -1 when unknown (or a dim is negative); DD_COUNT_OVERFLOW
 * when the product overflows. */
int64_t dd_shape_count(const dd_shape *s);

/* Product of dims [from, to); -1 when unknown; DD_COUNT_OVERFLOW when it overflows. */
int64_t dd_shape_count_range(const dd_shape *s, int from, int to);

/* a * b for counts: -1 when either is negative (unknown), DD_COUNT_OVERFLOW when it overflows
 * (an operand already DD_COUNT_OVERFLOW stays so, unless the other is 0). */
int64_t dd_count_mul(int64_t a, int64_t b);

/* 0 when `s` is known, every dim is in [0, INT32_MAX] and the element count is at most
 * `max_count`; -1 otherwise. *count (may be NULL) gets the count (DD_COUNT_OVERFLOW when it
 * overflows) when every dim is in range. */
int dd_shape_size_check(const dd_shape *s, int64_t max_count, int64_t *count);

int dd_shape_equal(const dd_shape *a, const dd_shape *b);

/* Writes "64x3x32x32" ("scalar", "?" when unknown) into buf; returns buf. */
char *dd_shape_str(const dd_shape *s, char *buf, size_t len);

/* Caffe's CanonicalAxisIndex: maps a possibly negative axis into [0, ndim). Returns -1 when out of
 * range. */
int dd_shape_axis(const dd_shape *s, int axis);

#endif
