// Linear layer without bias on the GPU: out = inp @ weight^T, weight stored (OC,C) as in HF, through
// cuBLASLt on the backend's stream.
//
// Precision: the operands (inp, weight, dout) are the compute type T (bf16 or fp32) and accumulate in
// fp32 (CUBLAS_COMPUTE_32F: plain fp32, never TF32, so fp32 precision really is fp32). out and dinp are
// written in T (beta = 0); dweight is the fp32 BUF_GRAD and accumulates (beta = 1) -- with bf16 operands
// that is cuBLASLt's mixed case A/B bf16, C/D fp32, compute 32F.
//
// cuBLAS is column-major: a row-major (R,K) matrix with leading dimension K is the column-major (K,R)
// matrix, i.e. its transpose. So each row-major product X = Y @ Z is computed as X^T = Z^T @ Y^T:
//
//   product (row-major)              column-major D (m,n)      A (op, stored dims, ld)  B (op, stored, ld)   k
//   out (BT,OC) = inp @ weight^T     out^T (OC,BT), ld OC       weight: T, (C,OC), C      inp:  N, (C,BT), C    C
//   dinp (BT,C) = dout @ weight      dinp^T (C,BT), ld C        weight: N, (C,OC), C      dout: N, (OC,BT), OC  OC
//   dweight (OC,C) += dout^T @ inp   dweight^T (C,OC), ld C     inp:    N, (C,BT), C      dout: T, (OC,BT), OC  BT
//
// The algorithm comes from cuBLASLt's heuristic, asked once per (shape, transposes, types, beta,
// pointer alignment) and kept in a small cache: the answer depends only on those and the handle.
#include <stdint.h>

#include "model/ops/cuda/common.cuh"
#include "model/ops/cuda/cuda_ops.h"

struct gemm_key {
    cublasLtHandle_t lt;
    int m, n, k, transa, transb, ab_type, d_type, beta_one, align;
};

struct gemm_entry {
    struct gemm_key key;
    cublasLtMatmulAlgo_t algo;
};

// A cache of heuristic answers; 64 entries hold every GEMM of a model (a handful per layer kind), and
// when full the oldest is replaced (a wrong guess only costs a heuristic call, never a wrong result).
#define GEMM_CACHE 64
static struct gemm_entry gemm_cache[GEMM_CACHE];
static int gemm_cache_n, gemm_cache_next;

static int gemm_key_eq(const struct gemm_key *a, const struct gemm_key *b) {
    return a->lt == b->lt && a->m == b->m && a->n == b->n && a->k == b->k && a->transa == b->transa &&
           a->transb == b->transb && a->ab_type == b->ab_type && a->d_type == b->d_type &&
           a->beta_one == b->beta_one && a->align == b->align;
}

// The largest power of two up to 16 dividing the address: cuBLASLt kernels need aligned operands, so the
// heuristic is told the alignment (views from be_at may be 2- or 4-byte aligned).
static int ptr_align(const void *p) {
    uintptr_t a = (uintptr_t)p;
    int al = 16;
    while (al > 1 && a % al) al /= 2;
    return al;
}

static cublasLtMatmulAlgo_t gemm_algo(cublasLtHandle_t lt, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t la,
                                      cublasLtMatrixLayout_t lb, cublasLtMatrixLayout_t ld,
                                      const struct gemm_key *key, size_t workspace, const char *op) {
    for (int i = 0; i < gemm_cache_n; i++)
        if (gemm_key_eq(&gemm_cache[i].key, key)) return gemm_cache[i].algo;
    cublasLtMatmulPreference_t pref;
    uint32_t al = (uint32_t)key->align;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                                      sizeof(workspace)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al, sizeof(al)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al, sizeof(al)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al, sizeof(al)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al, sizeof(al)));
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, ld, ld, pref, 1, &res, &found);
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    CHECKF(st == CUBLAS_STATUS_SUCCESS && found > 0,
           "%s: cuBLASLt has no algorithm for m=%d n=%d k=%d (types %d/%d, alignment %d bytes)", op, key->m, key->n,
           key->k, key->ab_type, key->d_type, key->align);
    struct gemm_entry *e = &gemm_cache[gemm_cache_n < GEMM_CACHE ? gemm_cache_n++ : gemm_cache_next];
    if (gemm_cache_n == GEMM_CACHE) gemm_cache_next = (gemm_cache_next + 1) % GEMM_CACHE;
    e->key = *key;
    e->algo = res.algo;
    return res.algo;
}

// D (m,n) col-major, ld m = op(A) (m,k) @ op(B) (k,n) + beta D. A stored (k,m) when transposed else
// (m,k), with leading dimension lda; likewise B. A, B of type ab, D of type dt.
static void gemm(const struct backend *be, const char *op, void *D, cudaDataType_t dt, const void *A, int transa,
                 int lda, const void *B, int transb, int ldb, cudaDataType_t ab, int m, int n, int k, float beta) {
    struct cuda_ctx *c = cuda_ctx_of(be);
    CHECKF(m > 0 && n > 0 && k > 0, "%s: empty GEMM m=%d n=%d k=%d", op, m, n, k);
    cublasOperation_t ta = transa ? CUBLAS_OP_T : CUBLAS_OP_N, tb = transb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, ld;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, ab, transa ? k : m, transa ? m : k, lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, ab, transb ? n : k, transb ? k : n, ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ld, dt, m, n, m));
    int al = ptr_align(A);
    if (ptr_align(B) < al) al = ptr_align(B);
    if (ptr_align(D) < al) al = ptr_align(D);
    struct gemm_key key = {c->lt, m, n, k, transa, transb, (int)ab, (int)dt, beta != 0.0f, al};
    cublasLtMatmulAlgo_t algo = gemm_algo(c->lt, desc, la, lb, ld, &key, c->workspace_size, op);
    const float alpha = 1.0f;
    CUBLAS_CHECK(cublasLtMatmul(c->lt, desc, &alpha, A, la, B, lb, &beta, D, ld, D, ld, &algo, c->workspace,
                                c->workspace_size, c->stream));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(la));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(lb));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(ld));
    CUBLAS_CHECK(cublasLtMatmulDescDestroy(desc));
}

static cudaDataType_t compute_type(const struct backend *be) { return is_bf16_backend(be) ? CUDA_R_16BF : CUDA_R_32F; }

// out (BT,OC) = inp (BT,C) @ weight (OC,C)^T
extern "C" void matmul_forward_cuda(const struct backend *be, dbuf *out, const dbuf *inp, const dbuf *weight, int BT,
                                    int C, int OC) {
    cudaDataType_t t = compute_type(be);
    if (BT == 0) return;
    gemm(be, "matmul_forward", out, t, weight, 1, C, inp, 0, C, t, OC, BT, C, 0.0f);
}

// dinp (BT,C) = dout (BT,OC) @ weight (OC,C) (skipped when dinp is NULL); dweight (OC,C) += dout^T @ inp
// (skipped when dweight is NULL: a frozen weight)
extern "C" void matmul_backward_cuda(const struct backend *be, dbuf *dinp, dbuf *dweight, const dbuf *dout,
                                     const dbuf *inp, const dbuf *weight, int BT, int C, int OC) {
    cudaDataType_t t = compute_type(be);
    if (BT == 0) return;
    if (dinp) gemm(be, "matmul_backward (dinp)", dinp, t, weight, 0, C, dout, 0, OC, t, C, BT, OC, 0.0f);
    if (dweight)  // NULL: a frozen weight
        gemm(be, "matmul_backward (dweight)", dweight, CUDA_R_32F, inp, 0, C, dout, 1, OC, t, C, OC, BT, 1.0f);
}
