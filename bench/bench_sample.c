// Decoding speed with and without the KV cache (model/kvcache.h) at a long context: one preset with
// max_seq_len raised to fit, random weights, a random context of --ctx tokens.
//   KV cache:       prefill of ctx tokens (tokens/s), then --decode single-token steps (ms per token)
//   recomputation:  a forward over the whole ctx-token context per new token, as sampling without a
//                   cache does (--recompute steps; ms per token)
// Both greedy paths give the same tokens (tests/test_sample.c, tests/gpu/test_gpu_decode.c); this only
// times them.
//
// usage: bench_sample [--model small-15m] [--ctx 2048] [--decode 32] [--recompute 3] [--backend cpu|cuda]
// Prints the figures and the speed-up per token.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/comm.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/timer.h"
#include "model/kvcache.h"
#include "model/llama.h"
#include "model/ops/backends.h"

int main(int argc, char **argv) {
    const char *model = "small-15m", *backend = "cpu";
    int ctx = 2048, decode = 32, recompute = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "--ctx") && i + 1 < argc) ctx = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--decode") && i + 1 < argc) decode = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--recompute") && i + 1 < argc) recompute = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--backend") && i + 1 < argc) backend = argv[++i];
        else { fprintf(stderr, "bench_sample: unknown option %s\n", argv[i]); return 2; }
    }
    if (ctx < 2 || decode < 1 || recompute < 1) {
        fprintf(stderr, "bench_sample: --ctx >= 2, --decode >= 1, --recompute >= 1\n");
        return 2;
    }
    struct llama_config c = {0};
    struct llama m;
    const struct backend *be;
    if (backend_find(backend, "auto", &be) != 0 || llama_config_preset(&c, model) != 0) {
        fprintf(stderr, "bench_sample: %s\n", err_msg());
        return 1;
    }
    c.max_seq_len = ctx + decode;  // the override: presets stop at 256..2048
    if (llama_init(&m, &c, be, comm_self()) != 0) {
        fprintf(stderr, "bench_sample: %s\n", err_msg());
        return 1;
    }
    llama_init_random(&m, 1);
    int *seq = malloc(sizeof(int) * (size_t)(ctx + decode));
    struct rng r;
    rng_seed(&r, 7);
    for (int i = 0; i < ctx + decode; i++) seq[i] = (int)(rng_u64(&r) % (uint64_t)c.vocab_size);
    float *logits = malloc(sizeof(float) * (size_t)c.vocab_size);

    struct llama_kv kv;
    if (llama_kv_init(&kv, &m, ctx + decode, 512) != 0) {
        fprintf(stderr, "bench_sample: %s\n", err_msg());
        return 1;
    }
    double t0 = time_now();
    llama_kv_forward(&kv, seq, ctx, logits);
    double prefill = time_now() - t0;
    t0 = time_now();
    for (int i = 0; i < decode; i++) llama_kv_forward(&kv, seq + ctx + i, 1, logits);
    double per_cached = (time_now() - t0) / decode;
    llama_kv_free(&kv);

    llama_alloc_acts(&m, 1, ctx, 0);
    t0 = time_now();
    for (int i = 0; i < recompute; i++) {
        llama_forward(&m, seq + i, NULL, 1, ctx, NULL);  // the last ctx tokens, as a sliding context
        llama_logits_at(&m, 0, ctx - 1, logits);
    }
    double per_full = (time_now() - t0) / recompute;

    printf("bench_sample %s (%s, vocab %d) at a %d-token context, backend %s:\n", model, c.name, c.vocab_size, ctx,
           be->name);
    printf("  KV cache      prefill %d tokens in %.2f s (%.0f tokens/s); decode %.2f ms/token (%.1f tokens/s, %d steps)\n",
           ctx, prefill, ctx / prefill, per_cached * 1e3, 1.0 / per_cached, decode);
    printf("  recomputation %.1f ms/token (%.2f tokens/s, %d steps)\n", per_full * 1e3, 1.0 / per_full, recompute);
    printf("  speed-up per token: %.1fx\n", per_full / per_cached);
    free(seq);
    free(logits);
    llama_free(&m);
    return 0;
}
