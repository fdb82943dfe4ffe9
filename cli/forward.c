// llamac forward [--model PRESET | --hf DIR | --meta DIR] [--batch B] [--seq T] [--steps N] [--seed S] [--recompute]
//                [--backend cpu|cuda] [--precision auto|bf16|fp32]
// Forward and backward of a model on random tokens: prints loss and throughput. The model is randomly
// initialised from a preset, or loaded from a Hugging Face checkpoint directory with --hf (or Meta's,
// params.json + consolidated.NN.pth, with --meta).
// (A smoke run of the model on any machine; `llamac train` is the real job.)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/comm.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/timer.h"
#include "model/hf.h"
#include "model/llama.h"
#include "model/meta.h"
#include "model/ops/backends.h"

int cmd_forward(int argc, char **argv) {
    const char *model = "tiny-1m", *hf = NULL, *meta = NULL, *backend = "cpu", *precision = "auto", *v;
    int B = 4, T = 64, steps = 3, recompute = 0;
    long seed = 1;
    for (int i = 1; i < argc; i++) {
        if (cli_opt(argc, argv, &i, "--model", &v)) model = v;
        else if (cli_opt(argc, argv, &i, "--hf", &v)) hf = v;
        else if (cli_opt(argc, argv, &i, "--meta", &v)) meta = v;
        else if (cli_opt(argc, argv, &i, "--batch", &v)) B = atoi(v);
        else if (cli_opt(argc, argv, &i, "--seq", &v)) T = atoi(v);
        else if (cli_opt(argc, argv, &i, "--steps", &v)) steps = atoi(v);
        else if (cli_opt(argc, argv, &i, "--seed", &v)) seed = atol(v);
        else if (cli_opt(argc, argv, &i, "--backend", &v)) backend = v;
        else if (cli_opt(argc, argv, &i, "--precision", &v)) precision = v;
        else if (!strcmp(argv[i], "--recompute")) recompute = 1;
        else if (!strcmp(argv[i], "--help")) {
            printf("usage: llamac forward [--model PRESET | --hf DIR | --meta DIR] [--batch B] [--seq T] [--steps N] [--seed S]\n"
                   "                      [--recompute] [--backend cpu|cuda] [--precision auto|bf16|fp32]\n");
            return 0;
        } else return err_set("unknown option '%s' (see llamac forward --help)", argv[i]);
    }
    struct llama_config c = {0};
    if (hf && meta) return err_set("give --hf DIR or --meta DIR, not both");
    if (hf) {
        if (hf_read_config(&c, hf) != 0) return -1;
        model = hf;
    } else if (meta) {
        if (meta_read_config(&c, meta) != 0) return -1;
        model = meta;
    } else if (llama_config_preset(&c, model) != 0) {
        return -1;
    }
    if (B < 1 || T < 2 || T > c.max_seq_len) return err_set("--batch must be >= 1 and --seq in 2..%d", c.max_seq_len);
    const struct backend *be;
    if (backend_find(backend, precision, &be) != 0) return -1;
    struct llama m;
    if (llama_init(&m, &c, be, comm_self()) != 0) return -1;
    if (!hf && !meta) {
        llama_init_random(&m, (uint64_t)seed);
    } else if ((hf ? hf_load_weights(&m, hf) : meta_load_weights(&m, meta)) != 0) {
        llama_free(&m);
        return -1;
    }
    llama_alloc_acts(&m, B, T, recompute);
    int *tok = malloc(sizeof(int) * (size_t)B * T), *tgt = malloc(sizeof(int) * (size_t)B * T);
    struct rng r;
    rng_seed(&r, (uint64_t)seed);
    for (int i = 0; i < B * T; i++) tok[i] = (int)(rng_u64(&r) % (uint64_t)c.vocab_size);
    for (int i = 0; i < B * T; i++) tgt[i] = (i + 1) % T ? tok[i + 1] : -1;
    printf("llamac forward: %s, %lld parameters, batch %d x %d, backend %s (%s), %s ln(V) = %.3f\n", model,
           (long long)llama_param_count(&c), B, T, be->name, be->precision == PRECISION_BF16 ? "bf16" : "fp32",
           hf || meta ? "loaded weights on random tokens; for scale," : "expected loss at init ~", log((double)c.vocab_size));
    for (int s = 0; s < steps; s++) {
        double t0 = time_now();
        long n;
        llama_zero_grads(&m);
        double loss = llama_forward(&m, tok, tgt, B, T, &n) / (double)n;
        llama_backward(&m, 1.0f / (float)n);
        be->sync(be);
        double dt = time_now() - t0;
        printf("step %d: loss %.6f, forward+backward %.3f s, %.0f tokens/s\n", s + 1, loss, dt, B * T / dt);
    }
    free(tok);
    free(tgt);
    llama_free(&m);
    return 0;
}
