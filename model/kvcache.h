// Inference with a key/value cache: prefill a prompt, then one token at a time, each new token's keys
// and values appended to a per-layer cache so that a step costs one row of every matmul plus attention
// over the cached rows, instead of a forward over the whole context.
//
// The cache holds cap positions (the caller sizes it by prompt + new tokens, at most max_seq_len), and
// its scratch activations hold `chunk` rows (prefill runs in chunks of at most that many tokens): the
// memory is L x cap x 2 x KVH x HS plus chunk rows of one block's activations, not max_seq_len's.
// Same ops as llama_forward (model/llama.c), in the same order, on any backend; attention is the
// attention_decode op (core/backend.h). One sequence, one rank (tp = 1).
#pragma once
#include "model/llama.h"

struct llama_kv {
    struct llama *m;
    int cap, chunk, pos;  // positions held, rows per call, positions filled so far
    dbuf *k, *v;          // BUF_ACT (L, cap, KVH*HS)
    dbuf *act, *act32;    // scratch: x, xmid, xn, y (chunk,C), qkv (chunk,QKV), att (chunk,NH*HS),
                          // gu (chunk,2F), h (chunk,F), logits (Vl); rstd (chunk) fp32
    dbuf *tok;            // BUF_INT (chunk)
    float *host_logits;   // (Vl)
};

// Allocates a cache of cap positions with chunk rows of scratch (chunk <= cap <= max_seq_len).
// -1 with err_set when the sizes do not fit the model.
int llama_kv_init(struct llama_kv *kv, struct llama *m, int cap, int chunk);
void llama_kv_free(struct llama_kv *kv);
// Forgets the cached positions (the next call starts at position 0).
static inline void llama_kv_reset(struct llama_kv *kv) { kv->pos = 0; }
// Runs tokens[0..n) at positions pos..pos+n-1 (in chunks), appending their keys and values, and writes
// the logits (V) of the last of them to logits. pos + n must be <= cap.
void llama_kv_forward(struct llama_kv *kv, const int *tokens, int n, float *logits);
// Memory the cache and its scratch take, in elements (act: BUF_ACT, act32: BUF_ACT32).
void llama_kv_sizes(const struct llama *m, int cap, int chunk, size_t *act, size_t *act32);
