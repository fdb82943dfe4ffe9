// cuBLASLt matmul on the CPU (cudaemu/include/cublasLt.h). Each matrix of a batch is converted to a
// contiguous fp32 copy, multiplied by OpenBLAS's sgemm (fp32 accumulation, as CUBLAS_COMPUTE_32F), and
// written to D in D's type (bf16 rounded to nearest even). When beta is 0, C is never read, so NaN in C
// cannot leak into D, as with cuBLAS. Only the type combinations cuBLASLt accepts with a 32F compute
// type are accepted (A and B alike, C and D alike, fp32 inputs with fp32 output); everything else is
// refused with a status and a message on stderr, never approximated.
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <cblas.h>

#include <vector>

#include <cublasLt.h>
#include <cuda_bf16.h>

struct cublasLtContext {
    int unused;
};

struct cudaemu_matmul_desc {
    cublasComputeType_t compute;
    int32_t transa, transb;
};

struct cudaemu_matrix_layout {
    cudaDataType type;
    uint64_t rows, cols;
    int64_t ld;
    int32_t batch;
    int64_t stride;
};

struct cudaemu_matmul_pref {
    uint64_t max_workspace;
};

static cublasStatus_t refuse(cublasStatus_t s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static cublasStatus_t refuse(cublasStatus_t s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("cudaemu: cuBLASLt: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return s;
}

// Copies an attribute value of exactly `size` bytes, as cuBLASLt checks sizeInBytes.
static bool take(void *dst, size_t size, const void *buf, size_t sizeInBytes) {
    if (!buf || sizeInBytes != size) return false;
    memcpy(dst, buf, size);
    return true;
}

const char *cublasLtGetStatusName(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "unrecognized cuBLAS status";
}

const char *cublasLtGetStatusString(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "an absent device architectural feature is required";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    }
    return "unrecognized cuBLAS status";
}

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
    if (!h) return CUBLAS_STATUS_INVALID_VALUE;
    // Single-threaded sgemm, as the CPU backend's (model/ops/cpu/matmul.c): between the sgemm calls the
    // emulated kernels run for long stretches on one thread, and OpenBLAS's pool would spin (sched_yield)
    // on the other cores all that time.
    openblas_set_num_threads(1);
    *h = new cublasLtContext{0};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

// ---------------------------------------------------------------------------------------------------
// Descriptors
// ---------------------------------------------------------------------------------------------------
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute, cudaDataType_t scale) {
    if (!d) return CUBLAS_STATUS_INVALID_VALUE;
    if (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_FAST_TF32 &&
        compute != CUBLAS_COMPUTE_32F_FAST_16BF)
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "compute type %d is not emulated (32F, 32F_FAST_TF32, 32F_FAST_16BF)",
                      (int)compute);
    if (scale != CUDA_R_32F)
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "scale type %d is not emulated (CUDA_R_32F only)", (int)scale);
    *d = new cudaemu_matmul_desc{compute, CUBLAS_OP_N, CUBLAS_OP_N};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
    delete d;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t size) {
    int32_t v = 0;
    if (!d) return CUBLAS_STATUS_INVALID_VALUE;
    switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB:
        if (!take(&v, 4, buf, size)) return refuse(CUBLAS_STATUS_INVALID_VALUE, "TRANSA/TRANSB takes an int32_t");
        if (v != CUBLAS_OP_N && v != CUBLAS_OP_T)
            return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "operation %d is not emulated (CUBLAS_OP_N, CUBLAS_OP_T)", v);
        (attr == CUBLASLT_MATMUL_DESC_TRANSA ? d->transa : d->transb) = v;
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
        if (!take(&v, 4, buf, size)) return refuse(CUBLAS_STATUS_INVALID_VALUE, "EPILOGUE takes a uint32_t");
        if (v != CUBLASLT_EPILOGUE_DEFAULT)
            return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "epilogue %d is not emulated (CUBLASLT_EPILOGUE_DEFAULT only)", v);
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_POINTER_MODE:
        if (!take(&v, 4, buf, size)) return refuse(CUBLAS_STATUS_INVALID_VALUE, "POINTER_MODE takes an int32_t");
        if (v != 0) return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "pointer mode %d is not emulated (host only)", v);
        return CUBLAS_STATUS_SUCCESS;
    default:
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "matmul descriptor attribute %d is not emulated", (int)attr);
    }
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType type, uint64_t rows, uint64_t cols,
                                          int64_t ld) {
    if (!l) return CUBLAS_STATUS_INVALID_VALUE;
    if (type != CUDA_R_32F && type != CUDA_R_16BF)
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "matrix type %d is not emulated (CUDA_R_32F, CUDA_R_16BF)", (int)type);
    *l = new cudaemu_matrix_layout{type, rows, cols, ld, 1, 0};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
    delete l;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t attr,
                                                const void *buf, size_t size) {
    if (!l) return CUBLAS_STATUS_INVALID_VALUE;
    int32_t order = 0;
    switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT:
        if (!take(&l->batch, 4, buf, size) || l->batch < 1)
            return refuse(CUBLAS_STATUS_INVALID_VALUE, "BATCH_COUNT takes an int32_t >= 1");
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET:
        if (!take(&l->stride, 8, buf, size))
            return refuse(CUBLAS_STATUS_INVALID_VALUE, "STRIDED_BATCH_OFFSET takes an int64_t");
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATRIX_LAYOUT_ORDER:
        if (!take(&order, 4, buf, size)) return refuse(CUBLAS_STATUS_INVALID_VALUE, "ORDER takes an int32_t");
        if (order != 0) return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "order %d is not emulated (column-major only)", order);
        return CUBLAS_STATUS_SUCCESS;
    default:
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "matrix layout attribute %d is not emulated", (int)attr);
    }
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    if (!p) return CUBLAS_STATUS_INVALID_VALUE;
    *p = new cudaemu_matmul_pref{0};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
    delete p;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void *buf,
                                                    size_t size) {
    if (!p) return CUBLAS_STATUS_INVALID_VALUE;
    if (attr >= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES && attr <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES) {
        uint32_t align;  // the emulation multiplies contiguous fp32 copies: any alignment works
        if (!take(&align, 4, buf, size)) return refuse(CUBLAS_STATUS_INVALID_VALUE, "MIN_ALIGNMENT_*_BYTES takes a uint32_t");
        return CUBLAS_STATUS_SUCCESS;
    }
    if (attr != CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES)
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "preference attribute %d is not emulated", (int)attr);
    if (!take(&p->max_workspace, 8, buf, size))
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "MAX_WORKSPACE_BYTES takes a uint64_t");
    return CUBLAS_STATUS_SUCCESS;
}

// ---------------------------------------------------------------------------------------------------
// Checking a problem
// ---------------------------------------------------------------------------------------------------
static uint64_t op_rows(const cudaemu_matrix_layout *l, int32_t op) { return op == CUBLAS_OP_T ? l->cols : l->rows; }
static uint64_t op_cols(const cudaemu_matrix_layout *l, int32_t op) { return op == CUBLAS_OP_T ? l->rows : l->cols; }

static cublasStatus_t check_layout(const cudaemu_matrix_layout *l, char name) {
    if (!l) return refuse(CUBLAS_STATUS_INVALID_VALUE, "matrix %c has no layout", name);
    if (l->ld < 1 || (uint64_t)l->ld < l->rows)
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "matrix %c: ld %lld < rows %llu", name, (long long)l->ld,
                      (unsigned long long)l->rows);
    return CUBLAS_STATUS_SUCCESS;
}

static cublasStatus_t check_problem(const cudaemu_matmul_desc *d, const cudaemu_matrix_layout *A,
                                    const cudaemu_matrix_layout *B, const cudaemu_matrix_layout *C,
                                    const cudaemu_matrix_layout *D) {
    if (!d) return refuse(CUBLAS_STATUS_INVALID_VALUE, "no matmul descriptor");
    const cudaemu_matrix_layout *all[4] = {A, B, C, D};
    for (int i = 0; i < 4; i++) {
        cublasStatus_t s = check_layout(all[i], "ABCD"[i]);
        if (s != CUBLAS_STATUS_SUCCESS) return s;
    }
    if (A->type != B->type || C->type != D->type || (A->type == CUDA_R_32F && D->type != CUDA_R_32F))
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                      "types A %d, B %d, C %d, D %d: cuBLASLt's 32F compute takes A=B and C=D, and fp32 A/B give fp32 D",
                      (int)A->type, (int)B->type, (int)C->type, (int)D->type);
    uint64_t m = D->rows, n = D->cols, k = op_cols(A, d->transa);
    if (op_rows(A, d->transa) != m || op_rows(B, d->transb) != k || op_cols(B, d->transb) != n || C->rows != m ||
        C->cols != n)
        return refuse(CUBLAS_STATUS_INVALID_VALUE,
                      "shapes disagree: op(A) %llux%llu, op(B) %llux%llu, C %llux%llu, D %llux%llu",
                      (unsigned long long)op_rows(A, d->transa), (unsigned long long)k,
                      (unsigned long long)op_rows(B, d->transb), (unsigned long long)op_cols(B, d->transb),
                      (unsigned long long)C->rows, (unsigned long long)C->cols, (unsigned long long)m,
                      (unsigned long long)n);
    if (A->batch != D->batch || B->batch != D->batch || C->batch != D->batch)
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "batch counts differ: A %d, B %d, C %d, D %d", A->batch, B->batch,
                      C->batch, D->batch);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t A,
                                              cublasLtMatrixLayout_t B, cublasLtMatrixLayout_t C,
                                              cublasLtMatrixLayout_t D, cublasLtMatmulPreference_t pref,
                                              int requested, cublasLtMatmulHeuristicResult_t results[], int *returned) {
    if (!h || !pref || requested < 1 || !results || !returned) return CUBLAS_STATUS_INVALID_VALUE;
    cublasStatus_t s = check_problem(d, A, B, C, D);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    memset(&results[0], 0, sizeof results[0]);
    results[0].state = CUBLAS_STATUS_SUCCESS;
    results[0].wavesCount = 1.0f;
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}

// ---------------------------------------------------------------------------------------------------
// The product
// ---------------------------------------------------------------------------------------------------
static size_t elem_size(cudaDataType t) { return t == CUDA_R_16BF ? 2 : 4; }

// fp32 -> tf32 (10 explicit mantissa bits), round to nearest even; what FAST_TF32 lets cuBLAS do.
static float round_tf32(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu;
    memcpy(&x, &u, 4);
    return x;
}

static float round_operand(float x, cublasComputeType_t compute) {
    if (compute == CUBLAS_COMPUTE_32F_FAST_TF32) return round_tf32(x);
    if (compute == CUBLAS_COMPUTE_32F_FAST_16BF) return __bfloat162float(__float2bfloat16_rn(x));
    return x;
}

// Matrix l (batch member at base) as contiguous column-major fp32, leading dimension rows.
static void load(std::vector<float> &out, const cudaemu_matrix_layout *l, const char *base, cublasComputeType_t compute) {
    out.resize(l->rows * l->cols);
    for (uint64_t j = 0; j < l->cols; j++)
        for (uint64_t i = 0; i < l->rows; i++) {
            size_t at = (size_t)(j * (uint64_t)l->ld + i);
            float x = l->type == CUDA_R_16BF ? __bfloat162float(((const __nv_bfloat16 *)base)[at])
                                              : ((const float *)base)[at];
            out[j * l->rows + i] = round_operand(x, compute);
        }
}

static void store(char *base, const cudaemu_matrix_layout *l, const std::vector<float> &in) {
    for (uint64_t j = 0; j < l->cols; j++)
        for (uint64_t i = 0; i < l->rows; i++) {
            size_t at = (size_t)(j * (uint64_t)l->ld + i);
            float x = in[j * l->rows + i];
            if (l->type == CUDA_R_16BF) ((__nv_bfloat16 *)base)[at] = __float2bfloat16_rn(x);
            else ((float *)base)[at] = x;
        }
}

static const char *member(const void *p, const cudaemu_matrix_layout *l, int b) {
    return (const char *)p + (ptrdiff_t)b * l->stride * (ptrdiff_t)elem_size(l->type);
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void *alpha, const void *A,
                              cublasLtMatrixLayout_t Al, const void *B, cublasLtMatrixLayout_t Bl, const void *beta,
                              const void *C, cublasLtMatrixLayout_t Cl, void *D, cublasLtMatrixLayout_t Dl,
                              const cublasLtMatmulAlgo_t *, void *, size_t, cudaStream_t) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    cublasStatus_t s = check_problem(d, Al, Bl, Cl, Dl);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (!alpha || !beta) return refuse(CUBLAS_STATUS_INVALID_VALUE, "alpha and beta must be host pointers to float");
    float a = *(const float *)alpha, bt = *(const float *)beta;
    if (!A || !B || !D || (bt != 0.0f && !C))
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "a matrix pointer is NULL");
    int m = (int)Dl->rows, n = (int)Dl->cols, k = (int)op_cols(Al, d->transa);
    std::vector<float> a32, b32, d32;
    for (int b = 0; b < Dl->batch; b++) {
        load(a32, Al, member(A, Al, b), d->compute);
        load(b32, Bl, member(B, Bl, b), d->compute);
        if (bt != 0.0f) load(d32, Cl, member(C, Cl, b), CUBLAS_COMPUTE_32F);
        else d32.assign((size_t)m * n, 0.0f);  // C is not read: NaN in C must not reach D
        if (m > 0 && n > 0)
            cblas_sgemm(CblasColMajor, d->transa == CUBLAS_OP_T ? CblasTrans : CblasNoTrans,
                        d->transb == CUBLAS_OP_T ? CblasTrans : CblasNoTrans, m, n, k, a, a32.data(),
                        Al->rows ? (int)Al->rows : 1, b32.data(), Bl->rows ? (int)Bl->rows : 1, bt, d32.data(), m);
        store((char *)member(D, Dl, b), Dl, d32);
    }
    return CUBLAS_STATUS_SUCCESS;
}
