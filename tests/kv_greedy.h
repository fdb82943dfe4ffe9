// Greedy decoding with the KV cache (model/kvcache.h) on a backend against the full recomputation
// (llama_forward over the whole context for every token) on the CPU backend: the same random model,
// the same prompt. Shared by tests/test_sample.c (CPU) and tests/gpu/test_gpu_decode.c (CUDA).
#pragma once
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/comm.h"
#include "core/error.h"
#include "core/rng.h"
#include "model/kvcache.h"
#include "model/llama.h"
#include "model/ops/backends.h"

// GQA (4 query heads on 2 kv heads), head size 16, a vocabulary that is no multiple of a block size.
static inline void kvg_config(struct llama_config *c, int max_seq_len) {
    memset(c, 0, sizeof(*c));
    snprintf(c->name, sizeof(c->name), "kv-test");
    c->dim = 64;
    c->n_layers = 2;
    c->n_heads = 4;
    c->n_kv_heads = 2;
    c->head_dim = 16;
    c->ffn_hidden = 96;
    c->vocab_size = 997;
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->max_seq_len = max_seq_len;
}

static inline int kvg_argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

// Generates `steps` tokens after a P-token prompt both ways; prefill in chunks of `chunk`. Expects the
// same tokens and logits within tol (relative to the largest logit); returns the worst logit error.
static inline double kvg_compare(const struct backend *be, int P, int steps, int chunk, double tol) {
    struct llama_config c;
    kvg_config(&c, P + steps);
    struct llama ref, m;
    cr_assert(llama_init(&ref, &c, backend_cpu(), comm_self()) == 0, "%s", err_msg());
    cr_assert(llama_init(&m, &c, be, comm_self()) == 0, "%s", err_msg());
    // larger weights than the default init, so that the logits spread and the argmax is not a near tie
    size_t n = ref.layout.total;
    float *w = malloc(sizeof(float) * n);
    struct rng r;
    rng_seed(&r, 11);
    for (size_t i = 0; i < n; i++) w[i] = (float)(rng_uniform(&r) * 0.2 - 0.1);
    llama_params_from_host(&ref, w);
    llama_params_from_host(&m, w);
    free(w);
    int *seq = malloc(sizeof(int) * (size_t)(P + steps));
    for (int i = 0; i < P; i++) seq[i] = (int)(rng_u64(&r) % (uint64_t)c.vocab_size);
    llama_alloc_acts(&ref, 1, P + steps, 0);
    struct llama_kv kv;
    cr_assert(llama_kv_init(&kv, &m, P + steps, chunk) == 0, "%s", err_msg());
    float *a = malloc(sizeof(float) * (size_t)c.vocab_size), *b = malloc(sizeof(float) * (size_t)c.vocab_size);
    double worst = 0;
    int len = P, same = 1;
    for (int s = 0; s < steps && same; s++) {
        llama_forward(&ref, seq, NULL, 1, len, NULL);
        llama_logits_at(&ref, 0, len - 1, a);
        if (s == 0) llama_kv_forward(&kv, seq, P, b);
        else llama_kv_forward(&kv, seq + len - 1, 1, b);
        double amax = 0, e = 0;
        for (int i = 0; i < c.vocab_size; i++) {
            if (fabs(a[i]) > amax) amax = fabs(a[i]);
            double d = isfinite(b[i]) ? fabs((double)b[i] - a[i]) : INFINITY;
            if (d > e) e = d;
        }
        e /= amax;
        if (e > worst) worst = e;
        int ta = kvg_argmax(a, c.vocab_size), tb = kvg_argmax(b, c.vocab_size);
        cr_expect(ta == tb, "%s: step %d (context %d): recomputation picks %d, the KV cache %d", be->name, s, len, ta, tb);
        same = ta == tb;
        seq[len++] = ta;
    }
    cr_expect(worst <= tol, "%s: logits with the KV cache differ from the recomputation by %.3g (tolerance %.3g)",
              be->name, worst, tol);
    cr_expect(kv.pos == P + steps - 1, "%s: the cache holds %d positions, expected %d", be->name, kv.pos, P + steps - 1);
    free(a);
    free(b);
    free(seq);
    llama_kv_free(&kv);
    llama_free(&m);
    llama_free(&ref);
    return worst;
}
