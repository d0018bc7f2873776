/* Tensor shapes (see shape.h). */
#include "net/shape.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

dd_shape dd_shape_make(int ndim, const int64_t *dims) {
  dd_shape s = {.ndim = ndim};
  for (int i = 0; i < ndim && i < DD_SHAPE_MAX_DIMS; i++) s.dims[i] = dims[i];
  return s;
}

dd_shape dd_shape_4(int64_t n, int64_t c, int64_t h, int64_t w) {
  int64_t d[4] = {n, c, h, w};
  return dd_shape_make(4, d);
}

int64_t dd_shape_count_range(const dd_shape *s, int from, int to) {
  if (s->ndim < 0) return -1;
  int64_t c = 1;
  for (int i = from < 0 ? 0 : from; i < to && i < s->ndim; i++) c = dd_count_mul(c, s->dims[i]);
  return c;
}

int64_t dd_count_mul(int64_t a, int64_t b) {
  if (a < 0 || b < 0) return -1;
  int64_t r;
  return __builtin_mul_overflow(a, b, &r) ? DD_COUNT_OVERFLOW : r;
}

int dd_shape_size_check(const dd_shape *s, int64_t max_count, int64_t *count) {
  if (s->ndim < 0) return -1;
  for (int i = 0; i < s->ndim; i++)
    if (s->dims[i] < 0 || s->dims[i] > INT32_MAX) return -1;
  int64_t c = dd_shape_count(s);
  if (count) *count = c;
  return c < 0 || c == DD_COUNT_OVERFLOW || c > max_count ? -1 : 0;
}

int64_t dd_shape_count(const dd_shape *s) { return dd_shape_count_range(s, 0, s->ndim); }

int dd_shape_equal(const dd_shape *a, const dd_shape *b) {
  if (a->ndim != b->ndim) return 0;
  for (int i = 0; i < a->ndim; i++)
    if (a->dims[i] != b->dims[i]) return 0;
  return 1;
}

char *dd_shape_str(const dd_shape *s, char *buf, size_t len) {
  if (len == 0) return buf;
  buf[0] = '\0';
  if (s->ndim < 0) {
    snprintf(buf, len, "?");
    return buf;
  }
  if (s->ndim == 0) {
    snprintf(buf, len, "scalar");
    return buf;
  }
  size_t used = 0;
  for (int i = 0; i < s->ndim && used < len; i++)
    used += (size_t)snprintf(buf + used, len - used, "%s%" PRId64, i ? "x" : "", s->dims[i]);
  return buf;
}

int dd_shape_axis(const dd_shape *s, int axis) {
  if (s->ndim < 0) return -1;
  if (axis < -s->ndim || axis >= (s->ndim == 0 ? 1 : s->ndim)) return -1;
  return axis < 0 ? axis + s->ndim : axis;
}
