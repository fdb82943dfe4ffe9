// The whole model on the CUDA backend against the CPU backend: the same random weights and tokens, the
// loss and every parameter gradient (fp32 precision within 1e-5 relative, bf16 within 2e-2 with no NaN),
// with and without activation recomputation; and an optimizer step that keeps fp32 master weights while
// the compute parameters are bf16. Packed windows (llama_set_docs): the same against the CPU, and the
// window's loss sum on the CUDA backend against its documents run one by one there. Runs on a GPU, and on
// the CPU emulation of CUDA in CI.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/comm.h"
#include "core/error.h"
#include "core/half.h"
#include "model/llama.h"
#include "model/lora.h"
#include "model/ops/backends.h"
#include "optim/adamw.h"
#include "testutil.h"

// A small model that exercises every op: grouped-query attention (4 query heads on 2 kv heads), head
// size 16, an odd T, a vocabulary that is not a multiple of any block size.
static void small_config(struct llama_config *c) {
    memset(c, 0, sizeof(*c));
    snprintf(c->name, sizeof(c->name), "gpu-test");
    c->dim = 64;
    c->n_layers = 2;
    c->n_heads = 4;
    c->n_kv_heads = 2;
    c->head_dim = 16;
    c->ffn_hidden = 96;
    c->vocab_size = 997;
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->max_seq_len = 64;
    c->tie_embeddings = 0;
}

struct run {
    double loss, sum, alone;  // mean loss, loss sum; with docs: the sum of the documents run one by one
    float *grads;
    size_t n;
};

static void run_model_docs(struct run *out, const struct backend *be, int recompute, const int *tok, const int *tgt,
                           const int *docs, int B, int T) {
    struct llama_config c;
    small_config(&c);
    struct llama m;
    cr_assert(llama_init(&m, &c, be, comm_self()) == 0, "%s", err_msg());
    llama_init_random(&m, 7);
    llama_alloc_acts(&m, B, T, recompute);
    llama_zero_grads(&m);
    long n;
    llama_set_docs(&m, docs, B, T);
    out->sum = llama_forward(&m, tok, tgt, B, T, &n);
    out->loss = out->sum / (double)n;
    llama_backward(&m, 1.0f / (float)n);
    out->n = m.layout.total;
    out->grads = malloc(sizeof(float) * out->n);
    llama_grads_to_host(&m, out->grads);
    out->alone = 0;
    llama_set_docs(&m, NULL, 0, 0);
    for (int b = 0; docs && b < B; b++)
        for (int s = 0; s < T;) {
            int e = s;
            while (e < T && docs[b * T + e] == s) e++;
            long k;
            out->alone += llama_forward(&m, tok + b * T + s, tgt + b * T + s, 1, e - s, &k);
            s = e;
        }
    llama_free(&m);
}


static void compare_with_cpu_docs(enum precision p, int recompute, double tol, int packed) {
    const struct backend *gpu = backend_cuda(p);
    cr_assert(gpu, "%s", err_msg());
    enum { B = 2, T = 13 };
    int tok[B * T], tgt[B * T];
    // packed: row 0 holds documents [0,4), [4,9), [9,13); row 1 [0,1), [1,13)
    int docs[B * T] = {0, 0, 0, 0, 4, 4, 4, 4, 4, 9, 9, 9, 9, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    struct rng r;
    rng_seed(&r, 3);
    for (int i = 0; i < B * T; i++) {
        tok[i] = (int)(rng_u64(&r) % 997);
        tgt[i] = i % 5 == 4 ? -1 : (int)(rng_u64(&r) % 997);  // some targets ignored
    }
    struct run ref, got;
    run_model_docs(&ref, backend_cpu(), 0, tok, tgt, packed ? docs : NULL, B, T);
    run_model_docs(&got, gpu, recompute, tok, tgt, packed ? docs : NULL, B, T);
    if (packed) {
        double e = fabs(got.sum - got.alone) / fabs(got.alone);
        cr_expect(e < tol, "%s: packed loss sum %.9f vs documents one by one %.9f (relative error %.3g)",
                  p == PRECISION_BF16 ? "bf16" : "fp32", got.sum, got.alone, e);
        printf("gpu model packed %s: loss sum %.9f, documents one by one %.9f\n",
               p == PRECISION_BF16 ? "bf16" : "fp32", got.sum, got.alone);
    }

    const char *pname = p == PRECISION_BF16 ? "bf16" : "fp32";
    double lerr = fabs(got.loss - ref.loss) / fabs(ref.loss);
    cr_expect(isfinite(got.loss) && lerr < tol, "%s: loss %.9f vs CPU %.9f (relative error %.3g)", pname, got.loss,
              ref.loss, lerr);
    // every tensor of the layout, by name
    struct llama_config c;
    small_config(&c);
    struct param_layout pl;
    cr_assert(param_layout_init(&pl, &c, 1, 0) == 0);
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < pl.n; i++) {
        const struct param_tensor *t = &pl.t[i];
        int finite = 1;
        for (size_t k = 0; k < t->numel; k++) finite &= isfinite(got.grads[t->offset + k]) != 0;
        double e = rel_err(got.grads + t->offset, ref.grads + t->offset, t->numel);
        cr_expect(finite && e < tol, "%s%s: gradient of %s: relative error %.3g%s", pname,
                  recompute ? " (recompute)" : "", t->name, e, finite ? "" : " (not finite)");
        if (e > worst) worst = e, worst_name = t->name;
    }
    printf("gpu model %s%s: loss %.9f vs CPU %.9f (relative error %.2g); worst gradient %.2g (%s)\n", pname,
           recompute ? " recompute" : "", got.loss, ref.loss, lerr, worst, worst_name);
    param_layout_free(&pl);
    free(ref.grads);
    free(got.grads);
}

static void compare_with_cpu(enum precision p, int recompute, double tol) { compare_with_cpu_docs(p, recompute, tol, 0); }

Test(gpu_model, fp32_loss_and_gradients_match_the_cpu) { compare_with_cpu(PRECISION_FP32, 0, 1e-5); }
Test(gpu_model, fp32_packed_documents_match_the_cpu) { compare_with_cpu_docs(PRECISION_FP32, 0, 1e-5, 1); }
Test(gpu_model, bf16_packed_documents_match_the_cpu) { compare_with_cpu_docs(PRECISION_BF16, 0, 2e-2, 1); }
Test(gpu_model, fp32_with_recomputation) { compare_with_cpu(PRECISION_FP32, 1, 1e-5); }
Test(gpu_model, bf16_loss_and_gradients_match_the_cpu) { compare_with_cpu(PRECISION_BF16, 0, 2e-2); }

// In bf16 precision the optimizer keeps fp32 master weights: loading writes them exactly, the update
// changes them by less than a bf16 step could represent, and the compute parameters are the master
// weights rounded to bf16.
Test(gpu_model, bf16_compute_parameters_follow_fp32_master_weights) {
    const struct backend *be = backend_cuda(PRECISION_BF16);
    cr_assert(be, "%s", err_msg());
    struct llama_config c;
    small_config(&c);
    struct llama m;
    cr_assert(llama_init(&m, &c, be, comm_self()) == 0, "%s", err_msg());
    const size_t n = m.layout.total;
    struct adamw_state st;
    adamw_state_init(&st, be, 0, n);
    m.master = st.master;
    m.master_n = n;
    float *host = malloc(sizeof(float) * n), *back = malloc(sizeof(float) * n), *g = malloc(sizeof(float) * n);
    struct rng r;
    rng_seed(&r, 11);
    fill_normal(host, n, 0.02f, &r);
    llama_params_from_host(&m, host);
    be->to_host(be, back, st.master, BUF_STATE, n);
    cr_expect(memcmp(back, host, sizeof(float) * n) == 0, "loading writes the fp32 master weights exactly");

    fill_normal(g, n, 1e-3f, &r);
    dbuf *dg = be->alloc(be, BUF_GRAD, n);
    be->from_host(be, dg, g, BUF_GRAD, n);
    struct adamw_range all = {0, n, 0};
    struct adamw_config ac;
    adamw_config_default(&ac);
    adamw_step(be, &st, m.params, dg, &all, 1, &ac, 1e-5f, 1.0f, 1);  // moves each weight by ~1e-5
    be->to_host(be, back, st.master, BUF_STATE, n);
    size_t moved = 0, rounded_ok = 0;
    float *pc = malloc(sizeof(float) * n);
    llama_params_to_host(&m, pc);
    for (size_t i = 0; i < n; i++) {
        moved += back[i] != host[i];
        rounded_ok += pc[i] == bf16_to_f32(f32_to_bf16(back[i]));
    }
    cr_expect(moved > n * 9 / 10, "the master weights moved (%zu of %zu)", moved, n);
    cr_expect_eq(rounded_ok, n, "compute parameters are the master weights rounded to bf16 (%zu of %zu)", rounded_ok, n);
    be->free(be, dg);
    adamw_state_free(&st, be);
    llama_free(&m);
    free(host);
    free(back);
    free(g);
    free(pc);
}

// CUDA graphs (LLAMAC_CUDA_GRAPH=1, core/backend.h run_region): four forward+backward passes of one model,
// the first run directly, the second captured, the third and fourth replayed, with the loss scale of the
// fourth changed (a new key: run directly again). Every pass must give the same loss and gradients, bit
// for bit, as the same passes without graphs. On a GPU this checks capture and replay; under the CPU
// emulation regions always run directly, so there it checks only that the regions hold the whole step.
static void graph_passes(int use_graph, double *loss, float **grads, size_t *n) {
    if (use_graph) setenv("LLAMAC_CUDA_GRAPH", "1", 1);
    else unsetenv("LLAMAC_CUDA_GRAPH");
    const struct backend *be = backend_cuda(PRECISION_BF16);
    cr_assert(be, "%s", err_msg());
    enum { B = 2, T = 13 };
    int tok[B * T], tgt[B * T];
    for (int i = 0; i < B * T; i++) tok[i] = (7 * i + 3) % 997, tgt[i] = i % 5 == 4 ? -1 : (11 * i + 1) % 997;
    struct llama_config c;
    small_config(&c);
    struct llama m;
    cr_assert(llama_init(&m, &c, be, comm_self()) == 0, "%s", err_msg());
    llama_init_random(&m, 7);
    llama_alloc_acts(&m, B, T, 0);
    *n = m.layout.total;
    for (int pass = 0; pass < 4; pass++) {
        long cnt;
        llama_zero_grads(&m);
        loss[pass] = llama_forward(&m, tok, tgt, B, T, &cnt);
        llama_backward(&m, (pass == 3 ? 0.5f : 1.0f) / (float)cnt);
        grads[pass] = malloc(sizeof(float) * *n);
        llama_grads_to_host(&m, grads[pass]);
    }
    llama_free(&m);
}

Test(gpu_model, cuda_graph_replay_matches_direct_execution) {
    double l0[4], l1[4];
    float *g0[4], *g1[4];
    size_t n0, n1;
    graph_passes(0, l0, g0, &n0);
    graph_passes(1, l1, g1, &n1);
    unsetenv("LLAMAC_CUDA_GRAPH");
    cr_assert_eq(n1, n0);
    for (int p = 0; p < 4; p++) {
        cr_expect(l1[p] == l0[p], "pass %d: loss %.9g with graphs, %.9g without", p, l1[p], l0[p]);
        cr_expect(memcmp(g1[p], g0[p], n0 * sizeof(float)) == 0, "pass %d: gradients differ with graphs", p);
        free(g1[p]);
    }
    for (int p = 0; p < 4; p++) free(g0[p]);
}

// LoRA adapters (model/lora.h) on every projection: the loss and every adapter gradient on the CUDA
// backend against the CPU backend, from the same random adapters (B nonzero so that A gets gradients).
// With dropout p > 0 both backends train with the same key, so they must draw the same masks (one
// element dropped on one side only would show far above fp32's tolerance); recompute on the CUDA side
// redraws them in backward.
static void lora_run(const struct backend *be, const int *tok, const int *tgt, int B, int T, float dropout,
                     int recompute, double *loss, float **g, size_t *n) {
    struct llama_config c;
    small_config(&c);
    struct llama m;
    cr_assert(llama_init(&m, &c, be, comm_self()) == 0, "%s", err_msg());
    llama_init_random(&m, 7);
    llama_alloc_acts(&m, B, T, recompute);
    struct lora_config lc = {4, 8.0f, dropout, (1u << LORA_NT) - 1};
    cr_assert(lora_attach(&m, &lc, 1) == 0, "%s", err_msg());
    if (dropout > 0) lora_set_dropout(&m, 1, 0x5eedULL);
    *n = m.lora->layout.total;
    float *h = malloc(sizeof(float) * *n);
    struct rng r;
    rng_seed(&r, 5);
    fill_normal(h, *n, 0.1f, &r);
    lora_params_from_host(&m, h);
    free(h);
    llama_zero_grads(&m);
    long k;
    *loss = llama_forward(&m, tok, tgt, B, T, &k) / (double)k;
    llama_backward(&m, 1.0f / (float)k);
    *g = malloc(sizeof(float) * *n);
    lora_grads_to_host(&m, *g);
    llama_free(&m);
}

static void lora_compare_dropout(enum precision p, double tol, float dropout, int recompute) {
    const struct backend *gpu = backend_cuda(p);
    cr_assert(gpu, "%s", err_msg());
    enum { B = 2, T = 13 };
    int tok[B * T], tgt[B * T];
    struct rng r;
    rng_seed(&r, 9);
    for (int i = 0; i < B * T; i++) {
        tok[i] = (int)(rng_u64(&r) % 997);
        tgt[i] = i % 3 == 0 ? -1 : (int)(rng_u64(&r) % 997);
    }
    double l1, l2;
    float *g1, *g2;
    size_t n1, n2;
    lora_run(backend_cpu(), tok, tgt, B, T, dropout, 0, &l1, &g1, &n1);
    lora_run(gpu, tok, tgt, B, T, dropout, recompute, &l2, &g2, &n2);
    cr_assert_eq(n1, n2);
    double lerr = fabs(l2 - l1) / fabs(l1), gerr = rel_err(g2, g1, n1);
    cr_expect(lerr < tol && gerr < tol,
              "LoRA (dropout %g%s): loss %.9f vs CPU %.9f (%.3g), adapter gradients relative error %.3g", dropout,
              recompute ? ", recompute" : "", l2, l1, lerr, gerr);
    printf("gpu model LoRA %s dropout %g%s: loss %.9f, relative error %.2g, adapter gradients %.2g\n",
           p == PRECISION_BF16 ? "bf16" : "fp32", dropout, recompute ? " recompute" : "", l2, lerr, gerr);
    free(g1);
    free(g2);
}

static void lora_compare(enum precision p, double tol) { lora_compare_dropout(p, tol, 0, 0); }

Test(gpu_model, fp32_lora_adapters_match_the_cpu) { lora_compare(PRECISION_FP32, 1e-5); }
// bf16: an adapter's gradient is a product of two bf16 activations (x A^T and the output gradient) at
// every layer, so it carries more rounding than a base weight's (measured: 1.8e-2 with the fp32-FMA
// attention, 2.1e-2 with the tensor-core one, against 1e-2 for the worst base gradient).
Test(gpu_model, bf16_lora_adapters_match_the_cpu) { lora_compare(PRECISION_BF16, 3e-2); }
// Dropout 0.3 with the same key on both backends: the same masks (model/ops/dropout_mask.h), so the same
// tolerances as without dropout.
Test(gpu_model, fp32_lora_dropout_matches_the_cpu) { lora_compare_dropout(PRECISION_FP32, 1e-5, 0.3f, 0); }
Test(gpu_model, fp32_lora_dropout_with_recomputation) { lora_compare_dropout(PRECISION_FP32, 1e-5, 0.3f, 1); }
Test(gpu_model, bf16_lora_dropout_matches_the_cpu) { lora_compare_dropout(PRECISION_BF16, 3e-2, 0.3f, 0); }
