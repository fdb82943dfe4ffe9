// Forward+backward throughput of llamac's CPU backend on one preset, for side-by-side comparison with
// PyTorch (bench/torch_bench.py; bench/model.sh runs both and prints the ratio).
//
// usage: bench_model [--model small-15m] [--batch 8] [--seq 256] [--steps 5] [--warmup 1] [--recompute]
// Prints one line: "llamac MODEL B T tokens_per_s peak_rss_mib".
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "core/comm.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/timer.h"
#include "model/llama.h"
#include "model/ops/backends.h"

int main(int argc, char **argv) {
    const char *model = "small-15m";
    int B = 8, T = 256, steps = 5, warmup = 1, recompute = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) B = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seq") && i + 1 < argc) T = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warmup = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--recompute")) recompute = 1;
        else { fprintf(stderr, "bench_model: unknown option %s\n", argv[i]); return 2; }
    }
    struct llama_config c = {0};
    struct llama m;
    if (llama_config_preset(&c, model) != 0 || llama_init(&m, &c, backend_cpu(), comm_self()) != 0) {
        fprintf(stderr, "bench_model: %s\n", err_msg());
        return 1;
    }
    llama_init_random(&m, 1);
    llama_alloc_acts(&m, B, T, recompute);
    int *tok = malloc(sizeof(int) * (size_t)B * T), *tgt = malloc(sizeof(int) * (size_t)B * T);
    struct rng r;
    rng_seed(&r, 7);
    for (int i = 0; i < B * T; i++) tok[i] = (int)(rng_u64(&r) % (uint64_t)c.vocab_size);
    for (int i = 0; i < B * T; i++) tgt[i] = (int)(rng_u64(&r) % (uint64_t)c.vocab_size);
    double best = 1e30, total = 0;
    for (int s = 0; s < warmup + steps; s++) {
        double t0 = time_now();
        long n;
        llama_zero_grads(&m);
        double loss = llama_forward(&m, tok, tgt, B, T, &n);
        llama_backward(&m, 1.0f / (float)n);
        double dt = time_now() - t0;
        if (s >= warmup) {
            total += dt;
            if (dt < best) best = dt;
        }
        fprintf(stderr, "step %d: %.3f s (loss %.4f)\n", s, dt, loss / n);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("llamac %s %d %d %.1f %.1f\n", model, B, T, (double)B * T * steps / total, ru.ru_maxrss / 1024.0);
    llama_free(&m);
    return 0;
}
