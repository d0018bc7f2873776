/* Random numbers. Everything random in distilld derives from a 64-bit seed, so a run with a seed
 * is reproducible: sequential streams (xoshiro256**) for fillers, and counter-based values
 * (a SplitMix64 hash of seed and index) where each element must be computable on its own, on any
 * backend and in any thread order (dropout masks, data augmentation). */
#ifndef DD_RNG_H
#define DD_RNG_H

#include <stdint.h>

typedef struct {
  uint64_t s[4];
} dd_rng;

void dd_rng_seed(dd_rng *r, uint64_t seed);
uint64_t dd_rng_next(dd_rng *r);
/* Uniform in [0, 1) with 24 random bits (exact in float). */
float dd_rng_uniform(dd_rng *r);
/* Standard normal (Box-Muller, double precision). */
double dd_rng_gaussian(dd_rng *r);

/* SplitMix64 finaliser of (seed, index): a stateless hash, the same on every backend. */
static inline uint64_t dd_hash64(uint64_t seed, uint64_t index) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Derives a sub-seed for a named purpose ("dropout/layer3", ...) from a seed. */
uint64_t dd_seed_derive(uint64_t seed, const char *purpose);

#endif
