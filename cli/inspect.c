// llamac inspect --model PRESET | --hf DIR | --meta DIR  [--batch B] [--seq T] [--dp N] [--tp K] [--zero1] [--recompute]
//                [--backend cpu|cuda] [--precision auto|bf16|fp32]
// Prints the model's shapes, its exact parameter count, and the memory one rank needs for a training step
// in a layout of dp x tp ranks: parameters and gradients are this rank's tensor-parallel slice (1/tp of
// the matrices, vocabulary padded to a multiple of tp, norms whole); AdamW's two moments cover that slice,
// or with --zero1 one data-parallel shard of it (1/dp, padded as the trainer pads: launch/dp.h), plus
// the buffer the gradients of the shard are reduce-scattered into. The figures are train/memory.h's,
// which `llamac train` checks against the GPU's free memory; --backend cuda gives the bytes per GPU
// (bf16 parameters-for-compute and activations in bf16 precision, plus the CUDA workspace).
// With --hf the config comes from DIR/config.json and every weight is then read and checked exactly as
// loading it into a model would (hf_check_weights), so that a bad checkpoint fails here with the same
// one-line error a training run would give, without the memory of a model. --meta does the same for
// Meta's original checkpoints (params.json + consolidated.NN.pth, model/meta.h).
// --lora R [--lora-targets q,v] adds the same step with LoRA adapters of rank R beside full fine-tuning
// (model/lora.h, as train/train.c allocates it: the base parameters without gradients, master weights or
// moments; the adapters with all four; the adapters' activations).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/config.h"
#include "core/error.h"
#include "launch/gpu.h"
#include "model/config.h"
#include "model/hf.h"
#include "model/llama.h"
#include "model/lora.h"
#include "model/meta.h"
#include "train/memory.h"

static void fmt_count(char *out, size_t n, long long v) {
    char digits[32], *o = out;
    int len = snprintf(digits, sizeof(digits), "%lld", v);
    for (int i = 0; i < len && (size_t)(o - out) < n - 2; i++) {
        if (i && (len - i) % 3 == 0) *o++ = ',';
        *o++ = digits[i];
    }
    *o = '\0';
}

static void fmt_bytes(char *out, size_t n, double b) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int k = 0;
    while (b >= 1024 && k < 4) { b /= 1024; k++; }
    snprintf(out, n, "%.2f %s", b, u[k]);
}

// Parameter counts as papers print them: truncated to one decimal (6.738B -> 6.7B).
static void fmt_short(char *out, size_t n, long long v) {
    if (v >= 1000000000LL) snprintf(out, n, "%.1fB", (double)(v / 100000000LL) / 10.0);
    else if (v >= 1000000LL) snprintf(out, n, "%.1fM", (double)(v / 100000LL) / 10.0);
    else snprintf(out, n, "%.1fK", (double)(v / 100LL) / 10.0);
}

// The report for config c (label: what the user named), for one rank of a dp x tp layout.
static int print_report(const struct llama_config *c, const char *label, int B, int T, int dp, int tp, int zero1,
                        int recompute, int cuda, enum precision precision) {
    char gpu_name_buf[256] = "";
    if (cuda) gpu_name(gpu_name_buf, sizeof(gpu_name_buf));
    if (T <= 0) T = c->max_seq_len;
    struct param_layout pl;
    if (param_layout_init(&pl, c, tp, 0) != 0) return -1;

    long long n = llama_param_count(c);
    char count[64], shortc[16];
    fmt_count(count, sizeof(count), n);
    fmt_short(shortc, sizeof(shortc), n);
    printf("model       %s\n", c->name[0] ? c->name : label);
    printf("shape       dim %d, layers %d, heads %d, kv heads %d, head dim %d, ffn hidden %d, vocab %d%s\n",
           c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->ffn_hidden, c->vocab_size,
           c->tie_embeddings ? ", tied embeddings" : "");
    printf("rope        theta %g, max_seq_len %d; rmsnorm eps %g", c->rope_theta, c->max_seq_len, c->norm_eps);
    if (c->rope_scaling == ROPE_SCALING_LINEAR) printf("; rope scaling linear x%g", c->rope_factor);
    if (c->rope_scaling == ROPE_SCALING_LLAMA3)
        printf("; rope scaling llama3 x%g (low %g, high %g, original %d)", c->rope_factor, c->rope_low_freq_factor,
               c->rope_high_freq_factor, c->rope_original_max_seq_len);
    printf("\n");
    printf("parameters  %s (%s)\n", count, shortc);

    // bytes per rank, as train/train.c allocates them (train/memory.h)
    size_t es[BUF_KINDS];
    mem_elem_sizes(es, cuda, precision);
    struct mem_plan mp;
    if (mem_plan_compute(&mp, c, es, cuda, B, T, dp, tp, zero1, recompute) != 0) {
        param_layout_free(&pl);
        return -1;
    }
    char bp[32], bg[32], bm[32], bo[32], bs[32], ba[32], bw[32], bt[32], bfull[32];
    fmt_bytes(bp, sizeof(bp), mp.params);
    fmt_bytes(bg, sizeof(bg), mp.grads);
    fmt_bytes(bm, sizeof(bm), mp.master);
    fmt_bytes(bo, sizeof(bo), mp.moments);
    fmt_bytes(bs, sizeof(bs), mp.grad_shard);
    fmt_bytes(ba, sizeof(ba), mp.acts);
    fmt_bytes(bw, sizeof(bw), mp.workspace);
    fmt_bytes(bt, sizeof(bt), mp.total);
    fmt_bytes(bfull, sizeof(bfull), 2.0 * (double)pl.total * 4);
    size_t local = pl.total;
    printf("memory per %s for one training step (%s backend, %s; dp %d x tp %d%s, batch %d x %d tokens%s):\n",
           cuda ? "GPU" : "rank", cuda ? "cuda" : "cpu", precision == PRECISION_BF16 ? "bf16" : "fp32", dp, tp,
           zero1 ? ", ZeRO-1" : "", B, T, recompute ? ", recompute" : "");
    char elems[64];
    fmt_count(elems, sizeof(elems), (long long)local);
    printf("  parameters     %12s  (%s elements%s%s)\n", bp, elems, tp > 1 ? ": 1/tp of the matrices, norms whole" : "",
           es[BUF_PARAM] == 2 ? "; bf16 for compute" : "");
    printf("  gradients      %12s\n", bg);
    printf("  master weights %12s  (the optimizer's fp32 copy%s)\n", bm, zero1 && dp > 1 ? "; ZeRO-1: 1/dp" : "");
    if (zero1 && dp > 1) {
        printf("  AdamW moments  %12s  (ZeRO-1: 1/dp of %s)\n", bo, bfull);
        printf("  gradient shard %12s  (ZeRO-1: the reduce-scattered gradients of this rank's shard)\n", bs);
    } else {
        printf("  AdamW moments  %12s%s\n", bo, zero1 ? "  (ZeRO-1 shards nothing with dp 1)" : "");
    }
    printf("  activations    %12s%s\n", ba, recompute ? "  (recompute: block inputs and one block's scratch)" : "");
    if (cuda) printf("  workspace      %12s  (cuBLASLt workspace, attention backward scratch)\n", bw);
    printf("  total          %12s\n", bt);
    if (cuda) {
        double peak = gpu_peak_bf16_tflops(gpu_name_buf);
        size_t fr = 0, tot = 0;
        if (gpu_count() > 0 && gpu_mem_info(&fr, &tot) == 0) {
            char bf[32], btot[32];
            fmt_bytes(bf, sizeof(bf), (double)fr);
            fmt_bytes(btot, sizeof(btot), (double)tot);
            printf("device      %s: %s free of %s (cudaMemGetInfo)%s; dense bf16 peak %s\n", gpu_name_buf, bf, btot,
                   mp.total <= (double)fr ? ", fits" : ", does NOT fit", peak > 0 ? "known" : "unknown (run.peak_tflops)");
        }
    }
    param_layout_free(&pl);
    return 0;
}

// The LoRA step beside full fine-tuning (one rank, tp 1).
static int print_lora(const struct llama_config *c, int B, int T, int recompute, const struct lora_config *lc, int cuda,
                      enum precision precision) {
    if (T <= 0) T = c->max_seq_len;
    struct param_layout pl;
    if (param_layout_init(&pl, c, 1, 0) != 0) return -1;
    size_t es[BUF_KINDS];
    mem_elem_sizes(es, cuda, precision);
    size_t act, act32;
    llama_act_sizes(c, &pl, B, T, recompute, &act, &act32);
    const double BT = (double)B * T, r = lc->rank;
    const long long na = lora_param_count(c, lc);
    int nt = 0, max_in = c->dim, max_out = c->dim;
    for (int t = 0; t < LORA_NT; t++) nt += (lc->targets >> t) & 1;
    if (c->ffn_hidden > max_in) max_in = max_out = c->ffn_hidden;
    if (c->n_heads * c->head_dim > max_in) max_in = max_out = c->n_heads * c->head_dim;
    // the optimizer's block is fp32 (master weights, m, v) in every precision (optim/adamw.h)
    const double N = (double)pl.total, A = (double)act * es[BUF_ACT] + (double)act32 * es[BUF_ACT32];
    const double full[5] = {N * es[BUF_PARAM], N * es[BUF_GRAD], 4 * N, 8 * N, A};
    const double lora_act = es[BUF_ACT] * (BT * r * nt * c->n_layers + BT * (max_in + max_out + r));
    const double ad[5] = {N * es[BUF_PARAM] + (double)na * es[BUF_PARAM], (double)na * es[BUF_GRAD], 4.0 * na,
                          8.0 * na, A + lora_act};
    const char *rows[5] = {"parameters", "gradients", "master weights", "AdamW moments", "activations"};
    const char *notes[5] = {"(the base, and the adapters)", "(adapters only: none for the frozen base)",
                            "(adapters only)", "(adapters only)", "(plus x A^T of every adapter)"};
    char tg[64], cnt[64];
    lora_targets_str(lc->targets, tg, sizeof(tg));
    fmt_count(cnt, sizeof(cnt), na);
    printf("LoRA rank %d on %s: %s trainable parameters (%.3f%% of the model); per rank (tp 1, %s %s):\n", lc->rank,
           tg, cnt, 100.0 * (double)na / (double)llama_param_count(c), cuda ? "cuda" : "cpu",
           precision == PRECISION_BF16 ? "bf16" : "fp32");
    printf("                 %14s  %14s\n", "full", "LoRA");
    double tf = 0, tl = 0;
    for (int i = 0; i < 5; i++) {
        char a[32], b[32];
        fmt_bytes(a, sizeof(a), full[i]);
        fmt_bytes(b, sizeof(b), ad[i]);
        printf("  %-14s %14s  %14s  %s\n", rows[i], a, b, notes[i]);
        tf += full[i];
        tl += ad[i];
    }
    char a[32], b[32];
    fmt_bytes(a, sizeof(a), tf);
    fmt_bytes(b, sizeof(b), tl);
    printf("  %-14s %14s  %14s\n", "total", a, b);
    param_layout_free(&pl);
    return 0;
}

// Reads and checks every weight of DIR as loading it into a model would (names, shapes, dtypes, data).
static int check_weights(const struct llama_config *c, const char *dir, int meta) {
    struct hf_weights_info info;
    if ((meta ? meta_check_weights(c, dir, &info) : hf_check_weights(c, dir, &info)) != 0) return -1;
    printf("weights OK (%d tensors, dtype %s; %d file%s)\n", info.n_tensors, info.dtype, info.n_files,
           info.n_files == 1 ? "" : "s");
    return 0;
}

int cmd_inspect(int argc, char **argv) {
    const char *model = NULL, *hf = NULL, *meta = NULL, *v, *targets = "q,v";
    const char *backend = "cpu", *prec = "auto";
    int B = 1, T = 0, dp = 1, tp = 1, zero1 = 0, recompute = 0, lora_rank = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_opt(argc, argv, &i, "--model", &v)) model = v;
        else if (cli_opt(argc, argv, &i, "--hf", &v)) hf = v;
        else if (cli_opt(argc, argv, &i, "--meta", &v)) meta = v;
        else if (cli_opt(argc, argv, &i, "--batch", &v)) B = atoi(v);
        else if (cli_opt(argc, argv, &i, "--seq", &v)) T = atoi(v);
        else if (cli_opt(argc, argv, &i, "--dp", &v)) dp = atoi(v);
        else if (cli_opt(argc, argv, &i, "--tp", &v)) tp = atoi(v);
        else if (cli_opt(argc, argv, &i, "--backend", &v)) backend = v;
        else if (cli_opt(argc, argv, &i, "--precision", &v)) prec = v;
        else if (!strcmp(argv[i], "--zero1")) zero1 = 1;
        else if (!strcmp(argv[i], "--recompute")) recompute = 1;
        else if (cli_opt(argc, argv, &i, "--lora", &v)) lora_rank = atoi(v);
        else if (cli_opt(argc, argv, &i, "--lora-targets", &v)) targets = v;
        else if (!strcmp(argv[i], "--help")) {
            printf("usage: llamac inspect (--model PRESET|FILE.ini | --hf DIR | --meta DIR) [--batch B] [--seq T] [--dp N]\n"
                   "                      [--tp K] [--zero1] [--recompute] [--backend cpu|cuda] [--precision auto|bf16|fp32]\n"
                   "  --hf DIR   a Hugging Face Llama checkpoint (config.json + model.safetensors or its index);\n"
                   "             every weight is read and checked as a load would\n"
                   "  --meta DIR Meta's original checkpoint (params.json + consolidated.NN.pth), checked the same way\n"
                   "  --dp N --tp K --zero1   memory per rank of a run on N x K ranks (parallel.tp = K), with\n"
                   "             AdamW's moments sharded over the N data-parallel ranks (parallel.zero1)\n"
                   "  --backend cuda  bytes per GPU as the CUDA backend stores them (bf16 parameters and activations\n"
                   "             unless --precision fp32), with its workspace; no GPU is needed\n"
                   "  --lora R [--lora-targets q,v]   the same step with LoRA adapters of rank R beside full\n"
                   "             fine-tuning (targets: q,k,v,o,gate,up,down or all)\n");
            return 0;
        } else return err_set("unknown option '%s' (see llamac inspect --help)", argv[i]);
    }
    if ((model != NULL) + (hf != NULL) + (meta != NULL) != 1)
        return err_set("give one of --model PRESET (presets: %s/models/*.ini), --hf DIR or --meta DIR", llama_configs_dir());
    if (B < 1 || dp < 1 || tp < 1) return err_set("--batch, --dp and --tp must be positive integers");
    if (strcmp(backend, "cpu") && strcmp(backend, "cuda"))
        return err_set("--backend '%s': expected cpu or cuda", backend);
    int cuda = !strcmp(backend, "cuda");
    enum precision precision = PRECISION_FP32;
    if (!strcmp(prec, "bf16") || (!strcmp(prec, "auto") && cuda)) precision = PRECISION_BF16;
    else if (strcmp(prec, "fp32") && strcmp(prec, "auto")) return err_set("--precision '%s': expected auto, bf16 or fp32", prec);
    if (!cuda && precision == PRECISION_BF16) return err_set("--backend cpu computes in fp32 only (--precision fp32 or auto)");
    struct llama_config c = {0};
    if (hf) {
        if (hf_read_config(&c, hf) != 0) return -1;
    } else if (meta) {
        if (meta_read_config(&c, meta) != 0) return -1;
    } else {
        if (llama_config_preset(&c, model) != 0) return -1;
        if (llama_config_validate(&c, model) != 0) return -1;
    }
    const char *dir = hf ? hf : meta;
    if (print_report(&c, dir ? dir : model, B, T, dp, tp, zero1, recompute, cuda, precision) != 0) return -1;
    if (lora_rank) {
        struct lora_config lc = {lora_rank, 16, 0, 0};
        if (lora_rank < 1 || lora_parse_targets(targets, &lc.targets) != 0)
            return lora_rank < 1 ? err_set("--lora %d: a rank >= 1", lora_rank) : -1;
        if (print_lora(&c, B, T, recompute, &lc, cuda, precision) != 0) return -1;
    }
    fflush(stdout);
    return dir ? check_weights(&c, dir, meta != NULL) : 0;
}
