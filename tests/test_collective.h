/* What the collective tests share (tests/test_collective.c: the CPU collectives;
 * tests/test_collective_tcp.c and tests/test_collective_rdzv.c: the TCP transport across nodes):
 * the bound on a whole scenario (HANG_MS) and the input values. Clocks and sleeps come from
 * tests/test_net.h. */
#ifndef DD_TEST_COLLECTIVE_H
#define DD_TEST_COLLECTIVE_H

#include <math.h>
#include <pthread.h>
#include <stdint.h>

#include "base/dd_error.h"
#include "comm/collective.h"
#include "devices/devices.h"
#include "test.h"
#include "test_net.h"

/* How long a whole multi-rank scenario may take before the test calls it a hang. */
#define HANG_MS 20000

/* xorshift, one stream per (rank, case): values of mixed sign and magnitude, so the order of a
 * float sum changes its bits. */
static inline uint64_t rng_next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}
static inline float rng_float(uint64_t *s) {
  uint64_t x = rng_next(s);
  float u = (float)(x >> 40) / (float)(1u << 24) - 0.5f; /* [-0.5, 0.5) */
  static const float scale[] = {1e-3f, 1.0f, 1e3f, 1e6f};
  return u * scale[(x >> 8) & 3];
}

#endif
