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
} tc_rng;

void tc_rng_seed(tc_rng *r, uint64_t seed, uint64_t stream);
uint64_t tc_rng_next(tc_rng *r);
/* uniform in [0, 1) with 24 random bits */
float tc_rng_uniform(tc_rng *r);
/* uniform in [0, 1) with 53 random bits */
double tc_rng_uniform_double(tc_rng *r);
/* standard normal (Box-Muller) */
float tc_rng_normal(tc_rng *r);
/* uniform integer in [0, n) without modulo bias */
uint64_t tc_rng_below(tc_rng *r, uint64_t n);

#endif
