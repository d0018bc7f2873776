/* Random numbers (see rng.h). */
#include "base/rng.h"

#include <math.h>

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void dd_rng_seed(dd_rng *r, uint64_t seed) {
  for (int i = 0; i < 4; i++) r->s[i] = dd_hash64(seed, (uint64_t)i);
}

uint64_t dd_rng_next(dd_rng *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

float dd_rng_uniform(dd_rng *r) { return (float)(dd_rng_next(r) >> 40) * (1.0f / 16777216.0f); }

double dd_rng_gaussian(dd_rng *r) {
  double u1 = ((double)(dd_rng_next(r) >> 11) + 1.0) * (1.0 / 9007199254740993.0); /* (0, 1] */
  double u2 = (double)(dd_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint64_t dd_seed_derive(uint64_t seed, const char *purpose) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a of the purpose */
  for (const unsigned char *p = (const unsigned char *)purpose; *p; p++) h = (h ^ *p) * 1099511628211ull;
  return dd_hash64(seed, h);
}
