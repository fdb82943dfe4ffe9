#include "core/rng.h"

#include <math.h>

#define RNG_GAMMA 0x9E3779B97F4A7C15ULL

uint64_t rng_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void rng_seed(struct rng *r, uint64_t seed) { r->state = rng_mix(seed ^ 0x6C6C616D6163ULL); }

uint64_t rng_u64(struct rng *r) {
    r->state += RNG_GAMMA;
    return rng_mix(r->state);
}

static double u64_to_unit(uint64_t x) { return (double)(x >> 11) * (1.0 / 9007199254740992.0); }

double rng_uniform(struct rng *r) { return u64_to_unit(rng_u64(r)); }

static float box_muller(double u1, double u2) {
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

float rng_normal(struct rng *r) {
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    return box_muller(u1, u2);
}

uint64_t rng_hash_str(const char *s, uint64_t seed) {
    uint64_t h = 1469598103934665603ULL ^ rng_mix(seed);
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return rng_mix(h);
}

double rng_uniform_at(uint64_t key, uint64_t i) { return u64_to_unit(rng_mix(key + (i + 1) * RNG_GAMMA)); }

float rng_normal_at(uint64_t key, uint64_t i) {
    return box_muller(rng_uniform_at(key, 2 * i), rng_uniform_at(key, 2 * i + 1));
}
