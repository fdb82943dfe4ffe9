// Per-rank memory of a training step (train/memory.h). The sizes follow the allocations: parameters and
// gradients are the local tensor-parallel block (padded to a multiple of dp under ZeRO-1, as
// llama_pad_blocks does), the optimizer's fp32 master weights and two moments cover the block or this
// rank's ZeRO-1 shard, the activations are llama_act_sizes', and the inputs and RoPE tables are added to
// them. Keep this file next to those allocations when they change.
#include "train/memory.h"

#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "launch/dp.h"
#include "model/llama.h"
#include "model/params.h"

void mem_elem_sizes(size_t es[BUF_KINDS], int cuda, enum precision p) {
    // PARAM, GRAD, ACT, ACT32, STATE, INT (model/ops/cuda/backend.cu; the CPU backend is fp32 throughout)
    static const size_t fp32[BUF_KINDS] = {4, 4, 4, 4, 4, 4}, bf16[BUF_KINDS] = {2, 4, 2, 4, 4, 4};
    memcpy(es, cuda && p == PRECISION_BF16 ? bf16 : fp32, sizeof(fp32));
}

int mem_plan_compute(struct mem_plan *p, const struct llama_config *c, const size_t es[BUF_KINDS], int cuda, int B,
                     int T, int dp, int tp, int zero1, int recompute) {
    memset(p, 0, sizeof(*p));
    if (T <= 0) T = c->max_seq_len;
    struct param_layout pl;
    if (param_layout_init(&pl, c, tp, 0) != 0) return -1;
    size_t local = pl.total, shard = local, blocks = local;
    if (zero1 && dp > 1) {
        shard = dp_shard_size(local, dp);
        blocks = shard * (size_t)dp;
        p->grad_shard = (double)shard * es[BUF_GRAD];
    }
    size_t act, act32;
    llama_act_sizes(c, &pl, B, T, recompute, &act, &act32);
    p->params = (double)blocks * es[BUF_PARAM];
    p->grads = (double)blocks * es[BUF_GRAD];
    p->master = (double)shard * es[BUF_STATE];
    p->moments = 2.0 * (double)shard * es[BUF_STATE];
    p->acts = (double)act * es[BUF_ACT] + (double)act32 * es[BUF_ACT32] + 2.0 * B * T * es[BUF_INT] +
              2.0 * c->max_seq_len * (c->head_dim / 2) * es[BUF_STATE];
    if (cuda) p->workspace = (double)(32 << 20) + (double)B * T * pl.NH * 4;
    p->total = p->params + p->grads + p->master + p->moments + p->grad_shard + p->acts + p->workspace;
    param_layout_free(&pl);
    return 0;
}

// "12.3 GiB" or "45.6 MiB"
static const char *human(char *out, double b) {
    if (b >= 1024.0 * 1024 * 1024) sprintf(out, "%.1f GiB", b / (1024.0 * 1024 * 1024));
    else sprintf(out, "%.1f MiB", b / (1024.0 * 1024));
    return out;
}

int mem_plan_check(const struct llama_config *c, const size_t es[BUF_KINDS], int B, int T, int world, int tp,
                   int zero1, int recompute, double free_bytes, const char *device) {
    struct mem_plan p;
    if (mem_plan_compute(&p, c, es, 1, B, T, world / tp, tp, zero1, recompute) != 0) return -1;
    if (p.total <= free_bytes) return 0;
    // the layouts of the same ranks that fit: tp dividing the world and the model, zero1, recompute
    char fits[512] = "";
    size_t len = 0;
    for (int k = 1; k <= world; k++) {
        if (world % k) continue;
        for (int z = 0; z <= 1; z++)
            for (int r = 0; r <= 1; r++) {
                struct mem_plan q;
                if (z && world / k == 1) continue;  // ZeRO-1 shards nothing at dp 1
                err_clear();
                if (mem_plan_compute(&q, c, es, 1, B, T, world / k, k, z, r) != 0 || q.total > free_bytes) continue;
                char b[32];
                if (len < sizeof(fits) - 80)
                    len += (size_t)snprintf(fits + len, sizeof(fits) - len, "%s tp %d%s%s (%s)", len ? ";" : "", k,
                                            z ? " zero1" : "", r ? " recompute" : "", human(b, q.total));
            }
    }
    err_clear();
    char b[10][32];
    return err_set("GPU memory: dp %d x tp %d%s%s needs %s per GPU (parameters %s, gradients %s, master weights %s, "
                   "moments %s, gradient shard %s, activations %s, workspace %s) but %s has %s free for this rank: "
                   "%s short; %s%s",
                   world / tp, tp, zero1 ? ", zero1" : "", recompute ? ", recompute" : "", human(b[0], p.total),
                   human(b[1], p.params), human(b[2], p.grads), human(b[3], p.master), human(b[4], p.moments),
                   human(b[5], p.grad_shard), human(b[6], p.acts), human(b[7], p.workspace), device,
                   human(b[8], free_bytes), human(b[9], p.total - free_bytes),
                   len ? "layouts of these ranks that fit (parallel.tp, parallel.zero1, run.recompute):" :
                         "no layout of these ranks fits: start more GPUs or lower train.batch_size",
                   fits);
}
