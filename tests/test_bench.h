/* What the benchmarks share (tests/bench_*.c): a monotonic clock in seconds (now) and the median
 * of a set of timings (median, which sorts them in place). Benchmarks print; they assert nothing. */
#ifndef DD_TEST_BENCH_H
#define DD_TEST_BENCH_H

#include <stdlib.h>
#include <time.h>

static inline double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static inline int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The median of v[0..n) (the upper one for an even n), v sorted in place. */
static inline double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return v[n / 2];
}

#endif
