// A written model of one training step of llamac's GPU design on N nodes: how the step time splits into
// compute and communication, for the LLaMA paper presets (configs/models/llama-*.ini). Prints the table
// bench/PARALLEL.md quotes, so that its numbers can be reproduced and redone for other machines.
//
//   build/bench/bench_parallel_model [--nodes 1,8,64] [--models llama-7b,...] [--gpus-per-node 8]
//       [--peak-tflops 989] [--mfu 0.40] [--nvlink-gbs 450] [--ib-gbs 100] [--gpu-mem-gib 80]
//       [--global-tokens 4194304] [--seq 2048] [--micro 1] [--grad-bytes 4]
//
// The model (every term is per optimizer step of G global tokens; P = parameters this rank holds, from
// the same parameter layout the trainer uses; N = the model's parameters):
//   compute   6 N G / (GPUs x peak x MFU)
//   layout    TP inside a node (tp | 8), DP across: dp = GPUs / tp. Picked: the smallest tp whose memory
//             per GPU fits: train/memory.h's plan, what `llamac train` checks before it allocates (bf16
//             weights 2P + fp32 gradients 4P + under ZeRO-1 fp32 master weights 4P / dp, AdamW moments
//             8P / dp and the gradient shard 4P / dp + activations of one micro-batch, bf16 + the CUDA
//             workspace), without activation recompute if that fits, else with it. Fewer TP ranks =
//             fewer activation all-reduces on the critical path.
//   DP        ring all-reduce of the gradients (grad-bytes each; llamac reduces fp32): each rank sends
//             2 (dp-1)/dp x grad-bytes x P. On one node over NVLink per GPU; across nodes, every node
//             carries one boundary of each of its tp rings: 2 (dp-1)/dp x grad-bytes x tp P (~ the whole
//             model's gradients) through its InfiniBand. ZeRO-1 (reduce-scatter + all-gather) moves the
//             same bytes. Bucketed and overlapped with the backward of the LAST micro-batch only (the
//             others accumulate locally): hidden up to (2/3) compute / micro-batches, the rest exposed.
//   TP        4 all-reduces per layer (2 forward after o_proj and down_proj, 2 backward at the inputs of
//             qkv and gate/up; 6 with recompute, which repeats the forward ones) + 2 (embedding, lm_head
//             input) of micro x T x C bf16 activations per micro-batch; each rank sends 2 (tp-1)/tp of
//             each over NVLink. On the critical path (not overlapped).
//   step      compute + TP + exposed DP; tokens/s per GPU and the MFU that results.
// Latencies, stragglers, the optimizer step and data loading are left out: an estimate of where the
// bytes go, not a promise.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "model/config.h"
#include "model/llama.h"
#include "model/params.h"
#include "train/memory.h"

struct machine {
    int gpus_per_node;
    double peak, mfu, nvlink, ib, gpu_mem;  // FLOP/s, -, B/s, B/s per node, bytes
    double G;                               // global batch tokens
    int T, micro, grad_bytes;
};

struct plan {
    int fits, tp, dp, recompute;
    double mem, n_micro;
    double t_compute, t_tp, t_dp, t_dp_exposed, t_step;
    double dp_bytes, tp_bytes;  // sent per rank per step
};

static double gpu_memory(const struct llama_config *c, const struct machine *mc, int dp, int tp, int recompute) {
    size_t es[BUF_KINDS];
    mem_elem_sizes(es, 1, PRECISION_BF16);
    struct mem_plan mp;
    CHECK(mem_plan_compute(&mp, c, es, 1, mc->micro, mc->T, dp, tp, 1, recompute) == 0);
    return mp.total;
}

static int plan_layout(struct plan *p, const struct llama_config *c, int nodes, const struct machine *mc) {
    const int gpus = nodes * mc->gpus_per_node;
    const double N = (double)llama_param_count(c);
    memset(p, 0, sizeof(*p));
    for (int tp = 1; tp <= mc->gpus_per_node && !p->fits; tp *= 2) {
        struct param_layout pl;
        if (c->n_heads % tp || c->n_kv_heads % tp || c->ffn_hidden % tp) continue;
        if (param_layout_init(&pl, c, tp, 0) != 0) continue;
        const int dp = gpus / tp;
        const double n_micro = mc->G / ((double)dp * mc->micro * mc->T);
        for (int rc = 0; rc <= 1 && !p->fits && n_micro >= 1; rc++) {
            double mem = gpu_memory(c, mc, dp, tp, rc);
            if (mem > mc->gpu_mem) {
                if (rc == 1) p->mem = mem;  // the smallest need seen, for "does not fit"
                continue;
            }
            p->fits = 1, p->tp = tp, p->dp = dp, p->recompute = rc, p->mem = mem, p->n_micro = n_micro;
            const double P = (double)pl.total;
            p->t_compute = 6 * N * mc->G / (gpus * mc->peak * mc->mfu);
            // data parallel: ring all-reduce of the gradients once per step
            p->dp_bytes = dp > 1 ? 2.0 * (dp - 1) / dp * mc->grad_bytes * P : 0;
            p->t_dp = nodes == 1 ? p->dp_bytes / mc->nvlink : p->dp_bytes * tp / mc->ib;
            double hidden = (2.0 / 3.0) * p->t_compute / n_micro;
            p->t_dp_exposed = p->t_dp > hidden ? p->t_dp - hidden : 0;
            // tensor parallel: activation all-reduces of every micro-batch
            int n_ar = (4 + 2 * rc) * c->n_layers + 2;
            double per_ar = 2.0 * (tp - 1) / tp * (double)mc->micro * mc->T * c->dim * 2;
            p->tp_bytes = n_ar * per_ar * n_micro;
            p->t_tp = p->tp_bytes / mc->nvlink;
            p->t_step = p->t_compute + p->t_tp + p->t_dp_exposed;
        }
        param_layout_free(&pl);
    }
    return p->fits;
}

static int parse_list(const char *s, char out[][64], int max) {
    int n = 0;
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s", s);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t && n < max; t = strtok_r(NULL, ",", &save))
        snprintf(out[n++], 64, "%s", t);
    return n;
}

int main(int argc, char **argv) {
    struct machine mc = {8, 989e12, 0.40, 450e9, 100e9, 80.0 * 1024 * 1024 * 1024, 4194304, 2048, 1, 4};
    char models[16][64], nodes_s[16][64];
    int n_models = parse_list("llama-7b,llama-13b,llama-33b,llama-65b", models, 16);
    int n_nodes = parse_list("1,8,64", nodes_s, 16);
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--nodes")) n_nodes = parse_list(v, nodes_s, 16);
        else if (!strcmp(k, "--models")) n_models = parse_list(v, models, 16);
        else if (!strcmp(k, "--gpus-per-node")) mc.gpus_per_node = atoi(v);
        else if (!strcmp(k, "--peak-tflops")) mc.peak = atof(v) * 1e12;
        else if (!strcmp(k, "--mfu")) mc.mfu = atof(v);
        else if (!strcmp(k, "--nvlink-gbs")) mc.nvlink = atof(v) * 1e9;
        else if (!strcmp(k, "--ib-gbs")) mc.ib = atof(v) * 1e9;
        else if (!strcmp(k, "--gpu-mem-gib")) mc.gpu_mem = atof(v) * 1024 * 1024 * 1024;
        else if (!strcmp(k, "--global-tokens")) mc.G = atof(v);
        else if (!strcmp(k, "--seq")) mc.T = atoi(v);
        else if (!strcmp(k, "--micro")) mc.micro = atoi(v);
        else if (!strcmp(k, "--grad-bytes")) mc.grad_bytes = atoi(v);
        else {
            fprintf(stderr, "bench_parallel_model: unknown option '%s' (see the comment at the top of the source)\n", k);
            return 2;
        }
    }
    if (argc % 2 == 0) {
        fprintf(stderr, "bench_parallel_model: option '%s' needs a value\n", argv[argc - 1]);
        return 2;
    }
    printf("per optimizer step of %.0f tokens (sequences of %d, micro-batch %d per rank); %d GPUs per node, "
           "%.0f TFLOP/s at MFU %.2f, NVLink %.0f GB/s per GPU, InfiniBand %.0f GB/s per node, %.0f GiB per GPU; "
           "gradients all-reduced in %d bytes\n\n",
           mc.G, mc.T, mc.micro, mc.gpus_per_node, mc.peak / 1e12, mc.mfu, mc.nvlink / 1e9, mc.ib / 1e9,
           mc.gpu_mem / (1024.0 * 1024 * 1024), mc.grad_bytes);
    printf("%-10s %5s %5s %-10s %4s %8s %6s | %9s %9s %9s %9s %9s | %8s %8s | %8s %5s\n", "model", "nodes", "GPUs",
           "dp x tp", "rcmp", "mem/GPU", "micro", "compute", "TP comm", "DP comm", "DP expos", "step", "DP GB", "TP GB",
           "tok/s/GPU", "MFU");
    for (int i = 0; i < n_models; i++) {
        struct llama_config c = {0};
        if (llama_config_preset(&c, models[i]) != 0 || llama_config_validate(&c, models[i]) != 0) {
            fprintf(stderr, "bench_parallel_model: %s\n", err_msg());
            return 1;
        }
        for (int j = 0; j < n_nodes; j++) {
            int nodes = atoi(nodes_s[j]);
            if (nodes < 1) {
                fprintf(stderr, "bench_parallel_model: --nodes wants positive counts, not '%s'\n", nodes_s[j]);
                return 2;
            }
            struct plan p;
            if (!plan_layout(&p, &c, nodes, &mc)) {
                printf("%-10s %5d %5d does not fit: needs %.0f GiB per GPU at tp %d with recompute (pipeline "
                       "parallelism or more GPUs)\n",
                       models[i], nodes, nodes * mc.gpus_per_node, p.mem / (1024.0 * 1024 * 1024), mc.gpus_per_node);
                continue;
            }
            int gpus = nodes * mc.gpus_per_node;
            char layout[32];
            snprintf(layout, sizeof(layout), "%d x %d", p.dp, p.tp);
            printf("%-10s %5d %5d %-10s %4s %7.1fG %6.0f | %8.2fs %8.2fs %8.2fs %8.2fs %8.2fs | %8.2f %8.2f | %8.0f %4.0f%%\n",
                   models[i], nodes, gpus, layout, p.recompute ? "yes" : "no", p.mem / (1024.0 * 1024 * 1024), p.n_micro,
                   p.t_compute, p.t_tp, p.t_dp, p.t_dp_exposed, p.t_step, p.dp_bytes / 1e9, p.tp_bytes / 1e9,
                   mc.G / p.t_step / gpus, 100 * mc.mfu * p.t_compute / p.t_step);
        }
    }
    printf("\nmicro = micro-batches per rank per step (gradient accumulation); DP/TP GB = bytes each rank sends "
           "per step; DP comm is hidden behind the last micro-batch's backward up to (2/3) compute / micro, "
           "DP expos is what is left.\n");
    return 0;
}
