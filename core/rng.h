// Random numbers that a checkpoint can store and that do not depend on the parallel layout.
//
// The generator is SplitMix64: its whole state is one uint64 (saved in checkpoints), and it is also a
// counter-based hash, so rng_at(seed, stream, i) gives the i-th number of a stream without generating
// the ones before it. Parameter init uses that: element (r, c) of a canonical tensor gets the same value
// whether one rank holds the tensor or four ranks hold a quarter each.
#pragma once
#include <stdint.h>

struct rng { uint64_t state; };

void rng_seed(struct rng *r, uint64_t seed);
uint64_t rng_u64(struct rng *r);
double rng_uniform(struct rng *r);         // [0, 1)
float rng_normal(struct rng *r);           // N(0, 1)

uint64_t rng_mix(uint64_t x);              // SplitMix64 finaliser: a good 64-bit hash
uint64_t rng_hash_str(const char *s, uint64_t seed);
double rng_uniform_at(uint64_t key, uint64_t i);  // i-th uniform of the stream named by key
float rng_normal_at(uint64_t key, uint64_t i);    // i-th normal of the stream named by key
