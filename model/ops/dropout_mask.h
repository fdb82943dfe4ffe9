// The dropout mask of the dropout_forward op (core/backend.h), shared by the CPU op
// (model/ops/cpu/dropout.c) and the CUDA kernel (model/ops/cuda/dropout.cu) so that both backends drop
// exactly the same elements.
//
// A mask is a stream named by a 64-bit key; the element's flat index i is the counter. Element i is
// dropped when the top 32 bits of SplitMix64's hash of (key, i) fall below thr = floor(p * 2^32). That
// hash is the one behind core/rng.h's rng_uniform_at(key, i), so "dropped" is exactly
// rng_uniform_at(key, i) < thr / 2^32 (tests/test_lora.c checks it), with probability within 2^-32 of p.
// Integer arithmetic only: the same bits on every backend, and no fp64 on the GPU. Nothing is stored:
// whoever needs the mask again (the backward of model/lora.c) recomputes it from the same key.
//
// Kept elements are scaled by dropout_scale(p) = 1 / (1 - p) (inverted dropout, as torch.nn.Dropout),
// computed once on the host in fp32 and passed to the kernels.
#pragma once
#include <stdint.h>

#ifdef __CUDACC__
#define DROPOUT_FN static inline __host__ __device__
#else
#define DROPOUT_FN static inline
#endif

// floor(p * 2^32) for 0 <= p < 1 (0: nothing is dropped)
static inline uint32_t dropout_threshold(float p) { return p > 0 ? (uint32_t)((double)p * 4294967296.0) : 0; }

static inline float dropout_scale(float p) { return 1.0f / (1.0f - p); }

// 1 when element i of the stream key is kept (SplitMix64: core/rng.c's rng_mix of key + (i + 1) * gamma).
DROPOUT_FN int dropout_keep(uint64_t key, uint64_t i, uint32_t thr) {
    uint64_t z = key + (i + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (uint32_t)(z >> 32) >= thr;
}
