// One training step (forward, backward, AdamW) of full fine-tuning or of LoRA on the same model, on the
// CPU backend: tokens/s and this process's peak RSS. Run once per mode (bench/lora.sh), so that each
// peak is its own.
//
// usage: bench_lora --mode full|lora [--model small-15m] [--batch 8] [--seq 256] [--steps 5] [--rank 16]
//                   [--targets all]
// Prints one line: "MODE MODEL B T tokens_per_s peak_rss_mib trainable_parameters".
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "core/comm.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/timer.h"
#include "model/llama.h"
#include "model/lora.h"
#include "model/ops/backends.h"
#include "optim/adamw.h"

int main(int argc, char **argv) {
    const char *model = "small-15m", *mode = "full", *targets = "all";
    int B = 8, T = 256, steps = 5, rank = 16;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "--mode") && i + 1 < argc) mode = argv[++i];
        else if (!strcmp(argv[i], "--targets") && i + 1 < argc) targets = argv[++i];
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) B = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seq") && i + 1 < argc) T = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rank") && i + 1 < argc) rank = atoi(argv[++i]);
        else { fprintf(stderr, "bench_lora: unknown option %s\n", argv[i]); return 2; }
    }
    const int lora = !strcmp(mode, "lora");
    const struct backend *be = backend_cpu();
    struct llama_config c = {0};
    struct llama m;
    if (llama_config_preset(&c, model) != 0 || llama_init(&m, &c, be, comm_self()) != 0) {
        fprintf(stderr, "bench_lora: %s\n", err_msg());
        return 1;
    }
    llama_init_random(&m, 1);
    llama_alloc_acts(&m, B, T, 0);
    struct lora_config lc = {rank, 2.0f * rank, 0, 0};
    if (lora && (lora_parse_targets(targets, &lc.targets) != 0 || lora_attach(&m, &lc, 1) != 0)) {
        fprintf(stderr, "bench_lora: %s\n", err_msg());
        return 1;
    }
    const size_t n = lora ? m.lora->layout.total : m.layout.total;
    struct adamw_state st;
    adamw_state_init(&st, be, 0, n);
    dbuf *params = lora ? m.lora->params : m.params, *grads = lora ? m.lora->grads : m.grads;
    be->convert(be, st.master, BUF_STATE, params, BUF_PARAM, n);
    struct adamw_range all = {0, n, 1};
    struct adamw_config ac;
    adamw_config_default(&ac);
    int *tok = malloc(sizeof(int) * (size_t)B * T), *tgt = malloc(sizeof(int) * (size_t)B * T);
    struct rng r;
    rng_seed(&r, 7);
    for (int i = 0; i < B * T; i++) tok[i] = (int)(rng_u64(&r) % (uint64_t)c.vocab_size);
    for (int i = 0; i < B * T; i++) tgt[i] = (int)(rng_u64(&r) % (uint64_t)c.vocab_size);
    double total = 0;
    for (int s = 0; s <= steps; s++) {  // step 0 is warm-up
        double t0 = time_now();
        long cnt;
        llama_zero_grads(&m);
        llama_forward(&m, tok, tgt, B, T, &cnt);
        llama_backward(&m, 1.0f / (float)cnt);
        adamw_step(be, &st, params, grads, &all, 1, &ac, 1e-4f, 1.0f, s + 1);
        if (s > 0) total += time_now() - t0;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("%s %s %d %d %.0f %.0f %zu\n", mode, model, B, T, (double)B * T * steps / total, ru.ru_maxrss / 1024.0, n);
    adamw_state_free(&st, be);
    llama_free(&m);
    free(tok);
    free(tgt);
    return 0;
}
