// GPU throughput of llamac's CUDA backend (bf16): the peer of bench/torch_gpu_bench.py, run by
// bench/gpu.sh, which prints both in one table. Built only with the CUDA backend (real or EMU; under the
// emulator the figures mean nothing, but every path runs).
//
//   bench_gpu peak [--n 8192]
//       dense bf16 GEMM rate (cuBLASLt through ops->matmul_forward, n x n x n, fp32 accumulation) and
//       device memory bandwidth (a 1 GiB fp32 copy):  "peak tflops X membw_gbs Y"
//   bench_gpu attn --batch B --seq T --heads NH --kv-heads KVH --head-dim HS [--peak TFLOPS]
//       attention forward and backward alone (causal FLOPs: forward 4 B NH HS T(T+1)/2, backward 2.5x):
//       "attn B T NH KVH HS fwd_ms bwd_ms fwd_tflops bwd_tflops total_tflops of_peak", then unless
//       --no-check "attn-check ... ok|MISMATCH": the same inputs through the fp32-FMA kernels
//       (LLAMAC_ATTN_FMA=1), relative errors of out, lse and dqkv (ok: all <= 1e-2)
//   bench_gpu model --name N --dim C --layers L --heads NH --kv-heads KVH --ffn F --vocab V [--tie]
//                   --batch B --seq T [--steps 5] [--warmup 2] [--recompute] [--peak TFLOPS]
//                   [--kernels] [--membw GBS]
//       training steps (zero grads, forward, backward, grad norm, one AdamW update over the whole block):
//       "llamac N B T tokens_per_s step_ms flops_per_token mfu_percent"
//       FLOPs per token = 6 N + 6 L T NH HS (N: parameters the matmuls use, so the input embedding of an
//       untied model is left out; attention: QK^T and PV, causal, forward + backward). MFU divides by
//       --peak (bench/gpu.sh passes the GEMM rate measured in the same run).
//       --kernels adds, for one more step, each op's time (synchronised before and after each call)
//       beside its floor max(FLOPs / peak, bytes / membw) from the shapes of its arguments.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/comm.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/timer.h"
#include "model/llama.h"
#include "model/ops/backends.h"
#include "optim/adamw.h"

static const struct backend *gpu_be(void) {
    const struct backend *be = backend_cuda(PRECISION_BF16);
    if (!be) {
        fprintf(stderr, "bench_gpu: no CUDA device: %s\n", err_msg());
        exit(77);
    }
    return be;
}

static double arg_d(int argc, char **argv, const char *name, double def) {
    for (int i = 2; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) return atof(argv[i + 1]);
    return def;
}
static const char *arg_s(int argc, char **argv, const char *name, const char *def) {
    for (int i = 2; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) return argv[i + 1];
    return def;
}
static int arg_flag(int argc, char **argv, const char *name) {
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], name)) return 1;
    return 0;
}

static void fill_random(const struct backend *be, dbuf *d, enum buf_kind kind, size_t n, float scale, uint64_t seed) {
    float *h = malloc(n * sizeof(float));
    struct rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) h[i] = scale * (float)((double)(rng_u64(&r) >> 11) / 9007199254740992.0 - 0.5);
    be->from_host(be, d, h, kind, n);
    free(h);
}

// ---------------------------------------------------------------------------------------------------
static int cmd_peak(int argc, char **argv) {
    const struct backend *be = gpu_be();
    const int n = (int)arg_d(argc, argv, "--n", 8192), reps = (int)arg_d(argc, argv, "--reps", 20);
    const size_t nn = (size_t)n * n;
    dbuf *a = be->alloc(be, BUF_ACT, nn), *w = be->alloc(be, BUF_PARAM, nn), *o = be->alloc(be, BUF_ACT, nn);
    fill_random(be, a, BUF_ACT, nn, 1.0f, 1);
    fill_random(be, w, BUF_PARAM, nn, 1.0f, 2);
    for (int i = 0; i < 3; i++) be->ops->matmul_forward(be, o, a, w, n, n, n);
    be->sync(be);
    double t0 = time_now();
    for (int i = 0; i < reps; i++) be->ops->matmul_forward(be, o, a, w, n, n, n);
    be->sync(be);
    const double tflops = 2.0 * n * (double)nn * reps / (time_now() - t0) / 1e12;
    be->free(be, a), be->free(be, w), be->free(be, o);

    const size_t m = (size_t)1 << 28;  // 1 GiB of fp32
    dbuf *x = be->alloc(be, BUF_STATE, m), *y = be->alloc(be, BUF_STATE, m);
    be->convert(be, y, BUF_STATE, x, BUF_STATE, m);
    be->sync(be);
    t0 = time_now();
    for (int i = 0; i < 10; i++) be->convert(be, y, BUF_STATE, x, BUF_STATE, m);
    be->sync(be);
    const double gbs = 2.0 * m * 4 * 10 / (time_now() - t0) / 1e9;
    be->free(be, x), be->free(be, y);
    printf("peak tflops %.1f membw_gbs %.0f\n", tflops, gbs);
    return 0;
}

// ---------------------------------------------------------------------------------------------------
static int cmd_attn(int argc, char **argv) {
    const struct backend *be = gpu_be();
    const int B = (int)arg_d(argc, argv, "--batch", 4), T = (int)arg_d(argc, argv, "--seq", 2048);
    const int NH = (int)arg_d(argc, argv, "--heads", 16), KVH = (int)arg_d(argc, argv, "--kv-heads", 4);
    const int HS = (int)arg_d(argc, argv, "--head-dim", 128), reps = (int)arg_d(argc, argv, "--reps", 10);
    const double peak = arg_d(argc, argv, "--peak", 0);
    const size_t nqkv = (size_t)B * T * (NH + 2 * KVH) * HS, nout = (size_t)B * T * NH * HS;
    dbuf *qkv = be->alloc(be, BUF_ACT, nqkv), *dqkv = be->alloc(be, BUF_ACT, nqkv);
    dbuf *out = be->alloc(be, BUF_ACT, nout), *dout = be->alloc(be, BUF_ACT, nout);
    dbuf *lse = be->alloc(be, BUF_ACT32, (size_t)B * NH * T);
    fill_random(be, qkv, BUF_ACT, nqkv, 2.0f, 3);
    fill_random(be, dout, BUF_ACT, nout, 2.0f, 4);
    be->ops->attention_forward(be, out, lse, qkv, NULL, B, T, NH, KVH, HS);
    be->ops->attention_backward(be, dqkv, dout, qkv, out, lse, NULL, B, T, NH, KVH, HS);
    be->sync(be);
    double t0 = time_now();
    for (int i = 0; i < reps; i++) be->ops->attention_forward(be, out, lse, qkv, NULL, B, T, NH, KVH, HS);
    be->sync(be);
    const double fwd = (time_now() - t0) / reps;
    t0 = time_now();
    for (int i = 0; i < reps; i++) be->ops->attention_backward(be, dqkv, dout, qkv, out, lse, NULL, B, T, NH, KVH, HS);
    be->sync(be);
    const double bwd = (time_now() - t0) / reps;
    const double ff = 4.0 * B * NH * HS * (double)T * (T + 1) / 2, fb = 2.5 * ff;
    const double tot = (ff + fb) / (fwd + bwd) / 1e12;
    printf("attn %d %d %d %d %d %.3f %.3f %.1f %.1f %.1f %.3f\n", B, T, NH, KVH, HS, fwd * 1e3, bwd * 1e3,
           ff / fwd / 1e12, fb / bwd / 1e12, tot, peak > 0 ? tot / peak : 0.0);

    // On the device itself, the kernels just timed against the fp32-FMA ones (LLAMAC_ATTN_FMA=1) on the
    // same inputs: a check for machines where the Criterion tests are not at hand (bf16: about 2e-3).
    if (!arg_flag(argc, argv, "--no-check") && !getenv("LLAMAC_ATTN_FMA")) {
        dbuf *out2 = be->alloc(be, BUF_ACT, nout), *dqkv2 = be->alloc(be, BUF_ACT, nqkv);
        dbuf *lse2 = be->alloc(be, BUF_ACT32, (size_t)B * NH * T);
        setenv("LLAMAC_ATTN_FMA", "1", 1);
        be->ops->attention_forward(be, out2, lse2, qkv, NULL, B, T, NH, KVH, HS);
        be->ops->attention_backward(be, dqkv2, dout, qkv, out2, lse2, NULL, B, T, NH, KVH, HS);
        unsetenv("LLAMAC_ATTN_FMA");
        const dbuf *x[3][2] = {{out, out2}, {lse, lse2}, {dqkv, dqkv2}};
        const enum buf_kind kinds[3] = {BUF_ACT, BUF_ACT32, BUF_ACT};
        const size_t ns[3] = {nout, (size_t)B * NH * T, nqkv};
        double rel[3];
        for (int k = 0; k < 3; k++) {
            float *a = malloc(ns[k] * sizeof(float)), *r = malloc(ns[k] * sizeof(float));
            be->to_host(be, a, x[k][0], kinds[k], ns[k]);
            be->to_host(be, r, x[k][1], kinds[k], ns[k]);
            double d = 0, n2 = 0;
            size_t bad = 0;
            for (size_t i = 0; i < ns[k]; i++) {
                if (!isfinite(a[i])) bad++;
                else d += ((double)a[i] - r[i]) * ((double)a[i] - r[i]), n2 += (double)r[i] * r[i];
            }
            rel[k] = bad ? INFINITY : sqrt(d / (n2 > 0 ? n2 : 1));
            free(a), free(r);
        }
        printf("attn-check %d %d %d %d %d rel_out %.2e rel_lse %.2e rel_dqkv %.2e %s\n", B, T, NH, KVH, HS, rel[0],
               rel[1], rel[2], rel[0] <= 1e-2 && rel[1] <= 1e-2 && rel[2] <= 1e-2 ? "ok" : "MISMATCH");
        be->free(be, out2), be->free(be, dqkv2), be->free(be, lse2);
    }
    dbuf *bufs[] = {qkv, dqkv, out, dout, lse};
    for (int i = 0; i < 5; i++) be->free(be, bufs[i]);
    return 0;
}

// ---------------------------------------------------------------------------------------------------
// Per-op timing: a copy of the backend whose op table wraps every op with a synchronisation before and
// after, accumulating time, FLOPs and bytes per op name.

#define NSLOT 24
static struct slot {
    const char *name;
    int calls;
    double sec, flops, bytes;
} slots[NSLOT];
static const struct backend *inner;
static struct ops timed_ops;
static struct backend timed_be;
static double e_act;  // bytes per activation element

static double tic(void) {
    inner->sync(inner);
    return time_now();
}
static void toc(const char *name, double t0, double flops, double bytes) {
    inner->sync(inner);
    const double dt = time_now() - t0;
    int s = 0;
    while (s < NSLOT - 1 && slots[s].name && strcmp(slots[s].name, name)) s++;
    slots[s].name = name;
    slots[s].calls++;
    slots[s].sec += dt;
    slots[s].flops += flops;
    slots[s].bytes += bytes;
}

#define E e_act
static void t_emb_f(const struct backend *be, dbuf *out, const dbuf *tok, const dbuf *wte, int BT, int C, int vs, int Vl) {
    double t = tic();
    inner->ops->embedding_forward(inner, out, tok, wte, BT, C, vs, Vl);
    toc("embedding_forward", t, 0, 2.0 * BT * C * E + 4.0 * BT);
    (void)be;
}
static void t_emb_b(const struct backend *be, dbuf *dw, const dbuf *dout, const dbuf *tok, int BT, int C, int vs, int Vl) {
    double t = tic();
    inner->ops->embedding_backward(inner, dw, dout, tok, BT, C, vs, Vl);
    toc("embedding_backward", t, 0, (double)BT * C * (E + 8) + 4.0 * BT);
    (void)be;
}
static void t_rms_f(const struct backend *be, dbuf *out, dbuf *rstd, const dbuf *inp, const dbuf *w, int BT, int C, float eps) {
    double t = tic();
    inner->ops->rmsnorm_forward(inner, out, rstd, inp, w, BT, C, eps);
    toc("rmsnorm_forward", t, 0, 2.0 * BT * C * E);
    (void)be;
}
static void t_rms_b(const struct backend *be, dbuf *dinp, dbuf *dw, const dbuf *dout, const dbuf *inp, const dbuf *w,
                    const dbuf *rstd, int BT, int C) {
    double t = tic();
    inner->ops->rmsnorm_backward(inner, dinp, dw, dout, inp, w, rstd, BT, C);
    toc("rmsnorm_backward", t, 0, 4.0 * BT * C * E);
    (void)be;
}
static void t_mm_f(const struct backend *be, dbuf *out, const dbuf *inp, const dbuf *w, int BT, int C, int OC) {
    double t = tic();
    inner->ops->matmul_forward(inner, out, inp, w, BT, C, OC);
    toc("matmul_forward", t, 2.0 * BT * C * OC, E * ((double)BT * C + (double)OC * C + (double)BT * OC));
    (void)be;
}
static void t_mm_b(const struct backend *be, dbuf *dinp, dbuf *dw, const dbuf *dout, const dbuf *inp, const dbuf *w,
                   int BT, int C, int OC) {
    double t = tic();
    inner->ops->matmul_backward(inner, dinp, dw, dout, inp, w, BT, C, OC);
    toc("matmul_backward", t, 4.0 * BT * C * OC,
        E * (2.0 * BT * OC + 2.0 * BT * C + (double)OC * C) + 8.0 * OC * C);
    (void)be;
}
static void t_rope_f(const struct backend *be, dbuf *x, const dbuf *c, const dbuf *s, const dbuf *docs, int B, int T,
                     int NR, int HS, int st) {
    double t = tic();
    inner->ops->rope_forward(inner, x, c, s, docs, B, T, NR, HS, st);
    toc("rope_forward", t, 0, 2.0 * B * T * NR * HS * E);
    (void)be;
}
static void t_rope_b(const struct backend *be, dbuf *x, const dbuf *c, const dbuf *s, const dbuf *docs, int B, int T,
                     int NR, int HS, int st) {
    double t = tic();
    inner->ops->rope_backward(inner, x, c, s, docs, B, T, NR, HS, st);
    toc("rope_backward", t, 0, 2.0 * B * T * NR * HS * E);
    (void)be;
}
static double attn_flops(int B, int T, int NH, int HS) { return 4.0 * B * NH * HS * (double)T * (T + 1) / 2; }
static void t_att_f(const struct backend *be, dbuf *out, dbuf *lse, const dbuf *qkv, const dbuf *docs, int B, int T,
                    int NH, int KVH, int HS) {
    double t = tic();
    inner->ops->attention_forward(inner, out, lse, qkv, docs, B, T, NH, KVH, HS);
    toc("attention_forward", t, attn_flops(B, T, NH, HS), E * B * T * ((double)(NH + 2 * KVH) * HS + NH * HS));
    (void)be;
}
static void t_att_b(const struct backend *be, dbuf *dqkv, const dbuf *dout, const dbuf *qkv, const dbuf *out,
                    const dbuf *lse, const dbuf *docs, int B, int T, int NH, int KVH, int HS) {
    double t = tic();
    inner->ops->attention_backward(inner, dqkv, dout, qkv, out, lse, docs, B, T, NH, KVH, HS);
    toc("attention_backward", t, 2.5 * attn_flops(B, T, NH, HS),
        E * B * T * (2.0 * (NH + 2 * KVH) * HS + 2.0 * NH * HS));
    (void)be;
}
static void t_swi_f(const struct backend *be, dbuf *out, const dbuf *gu, int BT, int F) {
    double t = tic();
    inner->ops->swiglu_forward(inner, out, gu, BT, F);
    toc("swiglu_forward", t, 0, 3.0 * BT * F * E);
    (void)be;
}
static void t_swi_b(const struct backend *be, dbuf *dgu, const dbuf *dout, const dbuf *gu, int BT, int F) {
    double t = tic();
    inner->ops->swiglu_backward(inner, dgu, dout, gu, BT, F);
    toc("swiglu_backward", t, 0, 5.0 * BT * F * E);
    (void)be;
}
static void t_res(const struct backend *be, dbuf *out, const dbuf *a, const dbuf *b, size_t N) {
    double t = tic();
    inner->ops->residual_forward(inner, out, a, b, N);
    toc("residual_forward", t, 0, 3.0 * N * E);
    (void)be;
}
static void t_resrms(const struct backend *be, dbuf *res, dbuf *out, dbuf *rstd, const dbuf *a, const dbuf *b,
                     const dbuf *w, int BT, int C, float eps) {
    double t = tic();
    inner->ops->residual_rmsnorm_forward(inner, res, out, rstd, a, b, w, BT, C, eps);
    toc("residual_rmsnorm_forward", t, 0, 4.0 * BT * C * E);
    (void)be;
}
static void t_ce_max(const struct backend *be, dbuf *rm, const dbuf *lg, int BT, int Vl, int vs, int V) {
    double t = tic();
    inner->ops->crossentropy_max(inner, rm, lg, BT, Vl, vs, V);
    toc("crossentropy_max", t, 0, (double)BT * Vl * E);
    (void)be;
}
static void t_ce_sums(const struct backend *be, dbuf *sums, const dbuf *lg, const dbuf *rm, const dbuf *tg, int BT, int Vl,
                      int vs, int V) {
    double t = tic();
    inner->ops->crossentropy_sums(inner, sums, lg, rm, tg, BT, Vl, vs, V);
    toc("crossentropy_sums", t, 0, (double)BT * Vl * E);
    (void)be;
}
static void t_ce_loss(const struct backend *be, dbuf *l, dbuf *lse, const dbuf *rm, const dbuf *sums, const dbuf *tg, int BT) {
    double t = tic();
    inner->ops->crossentropy_loss(inner, l, lse, rm, sums, tg, BT);
    toc("crossentropy_loss", t, 0, 20.0 * BT);
    (void)be;
}
static void t_ce_b(const struct backend *be, dbuf *dl, const dbuf *lg, const dbuf *lse, const dbuf *tg, float dloss, int BT,
                   int Vl, int vs, int V) {
    double t = tic();
    inner->ops->crossentropy_backward(inner, dl, lg, lse, tg, dloss, BT, Vl, vs, V);
    toc("crossentropy_backward", t, 0, 2.0 * BT * Vl * E);
    (void)be;
}
static void t_adamw(const struct backend *be, dbuf *p, dbuf *ms, dbuf *m, dbuf *v, const dbuf *g, size_t n, float lr,
                    float b1, float b2, float eps, float wd, float gs, long step) {
    double t = tic();
    inner->ops->adamw_update(inner, p, ms, m, v, g, n, lr, b1, b2, eps, wd, gs, step);
    toc("adamw_update", t, 0, (double)n * (16 + 12 + E));
    (void)be;
}
static double t_sumsq(const struct backend *be, const dbuf *g, size_t n) {
    double t = tic();
    double r = inner->ops->grad_sumsq(inner, g, n);
    toc("grad_sumsq", t, 0, 4.0 * n);
    (void)be;
    return r;
}
#undef E

static const struct backend *timed_backend(const struct backend *be) {
    inner = be;
    e_act = (double)be->elem_size[BUF_ACT];
    timed_ops = *be->ops;  // ops added later run untimed
    timed_ops.embedding_forward = t_emb_f, timed_ops.embedding_backward = t_emb_b;
    timed_ops.rmsnorm_forward = t_rms_f, timed_ops.rmsnorm_backward = t_rms_b;
    timed_ops.matmul_forward = t_mm_f, timed_ops.matmul_backward = t_mm_b;
    timed_ops.rope_forward = t_rope_f, timed_ops.rope_backward = t_rope_b;
    timed_ops.attention_forward = t_att_f, timed_ops.attention_backward = t_att_b;
    timed_ops.swiglu_forward = t_swi_f, timed_ops.swiglu_backward = t_swi_b;
    timed_ops.residual_forward = t_res, timed_ops.residual_rmsnorm_forward = t_resrms;
    timed_ops.crossentropy_max = t_ce_max, timed_ops.crossentropy_sums = t_ce_sums;
    timed_ops.crossentropy_loss = t_ce_loss, timed_ops.crossentropy_backward = t_ce_b;
    timed_ops.adamw_update = t_adamw, timed_ops.grad_sumsq = t_sumsq;
    timed_be = *be;
    timed_be.ops = &timed_ops;
    timed_be.run_region = NULL;  // the wrappers synchronise: nothing of this step may be captured
    return &timed_be;
}

// ---------------------------------------------------------------------------------------------------
struct run {
    struct llama m;
    struct adamw_state st;
    int *tok, *tgt;
    int B, T;
    long t;
};

static double train_step(struct run *r) {
    struct llama *m = &r->m;
    const struct backend *be = m->be;
    long n;
    llama_zero_grads(m);
    const double loss = llama_forward(m, r->tok, r->tgt, r->B, r->T, &n);
    llama_backward(m, 1.0f / (float)n);
    const double norm = sqrt(be->ops->grad_sumsq(be, m->grads, m->layout.total));
    const float scale = norm > 1.0 ? (float)(1.0 / norm) : 1.0f;
    be->ops->adamw_update(be, m->params, r->st.master, r->st.m, r->st.v, m->grads, m->layout.total, 3e-4f, 0.9f,
                          0.95f, 1e-8f, 0.1f, scale, ++r->t);
    be->sync(be);
    return loss / (double)n;
}

static int cmd_model(int argc, char **argv) {
    const struct backend *be = gpu_be();
    const char *name = arg_s(argc, argv, "--name", "model");
    char ini[512];
    snprintf(ini, sizeof ini,
             "[model]\nname = %s\ndim = %d\nn_layers = %d\nn_heads = %d\nn_kv_heads = %d\nffn_hidden = %d\n"
             "vocab_size = %d\nmax_seq_len = %d\ntie_embeddings = %s\n",
             name, (int)arg_d(argc, argv, "--dim", 768), (int)arg_d(argc, argv, "--layers", 12),
             (int)arg_d(argc, argv, "--heads", 12), (int)arg_d(argc, argv, "--kv-heads", 12),
             (int)arg_d(argc, argv, "--ffn", 2048), (int)arg_d(argc, argv, "--vocab", 32000),
             (int)arg_d(argc, argv, "--seq", 2048), arg_flag(argc, argv, "--tie") ? "true" : "false");
    struct llama_config c = {0};
    if (llama_config_from_ini(&c, ini, "bench_gpu") != 0) {
        fprintf(stderr, "bench_gpu: %s\n", err_msg());
        return 2;
    }
    struct run r = {.B = (int)arg_d(argc, argv, "--batch", 4), .T = c.max_seq_len};
    const int steps = (int)arg_d(argc, argv, "--steps", 5), warmup = (int)arg_d(argc, argv, "--warmup", 2);
    const int kernels = arg_flag(argc, argv, "--kernels");
    const double peak = arg_d(argc, argv, "--peak", 0), membw = arg_d(argc, argv, "--membw", 0);
    const struct backend *mbe = kernels ? timed_backend(be) : be;
    if (llama_init(&r.m, &c, mbe, comm_self()) != 0) {
        fprintf(stderr, "bench_gpu: %s\n", err_msg());
        return 1;
    }
    llama_init_random(&r.m, 1);
    llama_alloc_acts(&r.m, r.B, r.T, arg_flag(argc, argv, "--recompute"));
    adamw_state_init(&r.st, be, 0, r.m.layout.total);
    be->convert(be, r.st.master, BUF_STATE, r.m.params, BUF_PARAM, r.m.layout.total);
    const size_t BT = (size_t)r.B * r.T;
    r.tok = malloc(sizeof(int) * BT), r.tgt = malloc(sizeof(int) * BT);
    struct rng g;
    rng_seed(&g, 7);
    for (size_t i = 0; i < BT; i++) r.tok[i] = (int)(rng_u64(&g) % (uint64_t)c.vocab_size);
    for (size_t i = 0; i < BT; i++) r.tgt[i] = (int)(rng_u64(&g) % (uint64_t)c.vocab_size);

    // FLOPs per token: 6 N over the parameters the matmuls use, plus causal attention.
    const int HS = c.head_dim > 0 ? c.head_dim : c.dim / c.n_heads;
    double N = (double)r.m.layout.total;
    if (!c.tie_embeddings) N -= (double)c.vocab_size * c.dim;
    const double fpt = 6.0 * N + 6.0 * c.n_layers * (double)r.T * c.n_heads * HS;

    if (kernels) inner = NULL, timed_be.ops = be->ops;  // timing wrappers off for the measured steps
    double total = 0;
    for (int s = 0; s < warmup + steps; s++) {
        const double t0 = time_now(), loss = train_step(&r), dt = time_now() - t0;
        if (s >= warmup) total += dt;
        fprintf(stderr, "%s step %d: %.1f ms (loss %.4f)\n", name, s, dt * 1e3, loss);
    }
    const double tps = (double)BT * steps / total;
    printf("llamac %s %d %d %.1f %.2f %.4g %.1f\n", name, r.B, r.T, tps, total / steps * 1e3, fpt,
           peak > 0 ? 100.0 * tps * fpt / (peak * 1e12) : 0.0);

    if (kernels) {
        inner = be, timed_be.ops = &timed_ops;
        const double t0 = time_now();
        train_step(&r);
        const double step = time_now() - t0;
        double sum = 0, floor_sum = 0;
        printf("kernels %s: one step, each op synchronised (%.1f ms in all)\n", name, step * 1e3);
        printf("  %-22s %6s %10s %10s %8s %10s %9s\n", "op", "calls", "ms", "floor ms", "floor%", "TFLOP/s", "GB/s");
        for (int s = 0; s < NSLOT && slots[s].name; s++) {
            const struct slot *k = &slots[s];
            const double fl = fmax(peak > 0 ? k->flops / (peak * 1e12) : 0, membw > 0 ? k->bytes / (membw * 1e9) : 0);
            sum += k->sec, floor_sum += fl;
            printf("  %-22s %6d %10.3f %10.3f %7.1f%% %10.1f %9.0f\n", k->name, k->calls, k->sec * 1e3, fl * 1e3,
                   100 * fl / k->sec, k->flops / k->sec / 1e12, k->bytes / k->sec / 1e9);
        }
        printf("  %-22s %6s %10.3f %10.3f %7.1f%%\n", "all ops", "", sum * 1e3, floor_sum * 1e3, 100 * floor_sum / sum);
    }
    adamw_state_free(&r.st, be);
    llama_free(&r.m);
    free(r.tok), free(r.tgt);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "peak")) return cmd_peak(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "attn")) return cmd_attn(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "model")) return cmd_model(argc, argv);
    fprintf(stderr, "usage: bench_gpu peak | attn ... | model ... (see bench/bench_gpu.c)\n");
    return 2;
}
