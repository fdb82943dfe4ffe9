// SHA-256 (FIPS 180-4), for fingerprinting tokenizer models: a shard records the SHA-256 of the
// tokenizer.model that produced it, and a run refuses shards whose fingerprint differs from its own.
#pragma once
#include <stddef.h>
#include <stdint.h>

struct sha256 {
    uint32_t h[8];
    uint64_t n_bytes;
    uint8_t block[64];
    size_t fill;
};

void sha256_init(struct sha256 *s);
void sha256_update(struct sha256 *s, const void *data, size_t n);
void sha256_final(struct sha256 *s, uint8_t digest[32]);
// digest of data[0..n) as 64 lowercase hex digits (out holds 65 bytes)
void sha256_hex(char out[65], const void *data, size_t n);
// digest of a whole file as hex; -1 with err_set when it cannot be read
int sha256_file_hex(char out[65], const char *path);
