/* deterministic host random numbers: xoshiro256** seeded through splitmix64
 * from (seed, stream), so independent streams (per rank, per purpose) come
 * from one user seed. the state is plain data and can be saved for resume. */
#ifndef TC_RNG_H
#define TC_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
    int has_spare;
    float spare;
} tc_prng;

void tc_prng_seed(tc_prng *r, uint64_t seed, uint64_t stream);
uint64_t tc_prng_next(tc_prng *r);
/* uniform in [0, 1) with 24 random bits */
float tc_prng_uniform(tc_prng *r);
/* uniform in [0, 1) with 53 random bits */
double tc_prng_uniform_double(tc_prng *r);
/* standard normal (Box-Muller) */
float tc_prng_normal(tc_prng *r);
/* uniform integer in [0, n) without modulo bias */
uint64_t tc_prng_below(tc_prng *r, uint64_t n);

#endif
