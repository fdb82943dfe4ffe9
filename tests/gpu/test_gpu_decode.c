// Sampling with a KV cache on the CUDA backend (model/ops/cuda/attention_decode.cu, model/kvcache.c):
// the attention_decode op against the CPU op on random inputs with NaN-poisoned outputs (fp32 and bf16),
// and greedy decoding with the cache on the GPU against the full recomputation on the CPU: the same
// tokens, logits within 1e-4 (fp32). Runs on a GPU, and on the CPU emulation of CUDA in CI.
#include <criterion/criterion.h>

#include "kv_greedy.h"
#include "ops_cases.h"

static const struct backend *gpu(enum precision p) {
    const struct backend *be = backend_cuda(p);
    cr_assert(be, "%s", err_msg());
    return be;
}

// {T new rows, pos, NH, KVH, HS}: a prefill, decode steps at several offsets, GQA and MHA, HS 16..128
static const int shapes[][5] = {{7, 0, 4, 2, 16}, {1, 9, 4, 2, 16}, {1, 70, 8, 8, 64}, {3, 33, 6, 2, 128}, {1, 0, 2, 1, 8}};

static void decode_case(const struct backend *cpu, const struct backend *be, const int *s, struct rng *r) {
    const int T = s[0], pos = s[1], NH = s[2], KVH = s[3], HS = s[4], S = (NH + 2 * KVH) * HS;
    const size_t cache = (size_t)(pos + T) * KVH * HS;
    struct oc_pair qkv = oc_random(cpu, be, BUF_ACT, (size_t)T * S, -2, 2, r);
    // earlier rows of the cache hold random keys and values; the new rows are written by the op
    struct oc_pair kc = oc_random(cpu, be, BUF_ACT, cache, -2, 2, r), vc = oc_random(cpu, be, BUF_ACT, cache, -2, 2, r);
    struct oc_pair out = oc_output(cpu, be, BUF_ACT, (size_t)T * NH * HS);
    cpu->ops->attention_decode(cpu, out.ref, kc.ref, vc.ref, qkv.ref, T, pos, NH, KVH, HS);
    be->ops->attention_decode(be, out.dut, kc.dut, vc.dut, qkv.dut, T, pos, NH, KVH, HS);
    be->sync(be);
    struct oc_pair *ps[3] = {&out, &kc, &vc};
    const char *names[3] = {"out", "kcache", "vcache"};
    for (int i = 0; i < 3; i++) {
        struct oc_err e = oc_check(cpu, be, ps[i]);
        cr_expect(e.nans == 0 && e.rel <= oc_tol(be), "%s attention_decode %s {T %d, pos %d, NH %d, KVH %d, HS %d}: "
                  "relative error %.3g, %zu NaN", oc_prec(be), names[i], T, pos, NH, KVH, HS, e.rel, e.nans);
    }
    oc_free(cpu, be, &qkv), oc_free(cpu, be, &kc), oc_free(cpu, be, &vc), oc_free(cpu, be, &out);
}

Test(gpu_decode, attention_decode_op) {
    const struct backend *cpu = backend_cpu();
    struct rng r;
    rng_seed(&r, 17);
    enum precision ps[2] = {PRECISION_FP32, PRECISION_BF16};
    for (int p = 0; p < 2; p++)
        for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) decode_case(cpu, gpu(ps[p]), shapes[i], &r);
}

Test(gpu_decode, kv_cache_greedy_equals_cpu_recomputation, .timeout = 600) {
    double e = kvg_compare(gpu(PRECISION_FP32), 7, 40, 4, 1e-4);
    cr_log_info("cuda fp32: worst logit difference %.3g", e);
}
