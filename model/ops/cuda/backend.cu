// The CUDA backend object: storage, host views, conversions and the op table of model/ops/cuda/*.cu.
//
// Storage per buffer kind (core/backend.h): in bf16 precision BUF_PARAM and BUF_ACT are __nv_bfloat16,
// in fp32 precision everything is float; BUF_GRAD, BUF_ACT32 and BUF_STATE are fp32 and BUF_INT int32
// in both. Host views are fp32: to_host/from_host convert on the host (core/half.h, round to nearest
// even) through a staging buffer, ordered with the ops by copying on the backend's stream and then
// waiting for it, so they are synchronous as the interface requires.
//
// One cuda_ctx per process, on the device current at the first backend_cuda() call (the trainer makes the
// rank's own GPU current first: launch/gpu.h), created by that call and shared by
// the fp32 and the bf16 backend objects: both run on the same non-blocking stream, so ops of either are
// ordered with each other, and share the cuBLASLt handle and its 32 MiB workspace (which some ops also
// borrow as scratch: that is safe because everything runs on that one stream).
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

#include "model/ops/cuda/common.cuh"
#include "model/ops/cuda/cuda_ops.h"

extern "C" {
#include "core/half.h"
#include "model/ops/backends.h"
}

// The optimizer's kernels (optim/*.cu), with the struct ops signatures.
extern "C" void adamw_update_cuda(const struct backend *be, dbuf *param, dbuf *master, dbuf *m, dbuf *v,
                                  const dbuf *grad, size_t n, float lr, float beta1, float beta2, float eps, float wd,
                                  float grad_scale, long t);
extern "C" double grad_sumsq_cuda(const struct backend *be, const dbuf *grad, size_t n);

static int kind_is_bf16(const struct backend *be, enum buf_kind k) { return be->elem_size[k] == 2; }

static dbuf *cuda_alloc(const struct backend *be, enum buf_kind kind, size_t n) {
    void *p = NULL;
    size_t bytes = n * be->elem_size[kind];
    if (!bytes) bytes = 16;  // a valid distinct pointer for empty tensors
    CUDA_CHECK(cudaMalloc(&p, bytes));
    // zeroed, per the interface: on the backend's stream (a plain cudaMemset runs on the legacy default
    // stream, which a non-blocking stream does not wait for), and finished before the buffer is returned
    // so that any later reader sees zeros
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, cuda_stream(be)));
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream(be)));
    return (dbuf *)p;
}

static void cuda_free(const struct backend *be, dbuf *p) {
    (void)be;
    CUDA_CHECK(cudaFree(p));
}

static void cuda_zero(const struct backend *be, dbuf *p, enum buf_kind kind, size_t n) {
    CUDA_CHECK(cudaMemsetAsync(p, 0, n * be->elem_size[kind], cuda_stream(be)));
}

static void cuda_to_host(const struct backend *be, float *dst, const dbuf *src, enum buf_kind kind, size_t n) {
    cudaStream_t s = cuda_stream(be);
    if (!kind_is_bf16(be, kind)) {
        CUDA_CHECK(cudaMemcpyAsync(dst, src, n * 4, cudaMemcpyDeviceToHost, s));
        CUDA_CHECK(cudaStreamSynchronize(s));
        return;
    }
    uint16_t *tmp = (uint16_t *)xmalloc(n * 2 + 2);
    CUDA_CHECK(cudaMemcpyAsync(tmp, src, n * 2, cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(tmp[i]);
    free(tmp);
}

static void cuda_from_host(const struct backend *be, dbuf *dst, const float *src, enum buf_kind kind, size_t n) {
    cudaStream_t s = cuda_stream(be);
    if (!kind_is_bf16(be, kind)) {
        CUDA_CHECK(cudaMemcpyAsync(dst, src, n * 4, cudaMemcpyHostToDevice, s));
        CUDA_CHECK(cudaStreamSynchronize(s));
        return;
    }
    uint16_t *tmp = (uint16_t *)xmalloc(n * 2 + 2);
    for (size_t i = 0; i < n; i++) tmp[i] = f32_to_bf16(src[i]);
    CUDA_CHECK(cudaMemcpyAsync(dst, tmp, n * 2, cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaStreamSynchronize(s));  // before tmp is freed
    free(tmp);
}

static void cuda_ints_from_host(const struct backend *be, dbuf *dst, const int *src, size_t n) {
    cudaStream_t s = cuda_stream(be);
    CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(int), cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
}

// dst (n) = src (n) converted; D, S float or __nv_bfloat16. Grid-stride, so any n fits a capped grid.
template <typename D, typename S> __global__ void convert_kernel(D *dst, const S *src, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = from_f<D>(to_f(src[i]));
}

template <typename D, typename S> static void convert_launch(const struct backend *be, dbuf *dst, const dbuf *src,
                                                             size_t n) {
    // 256 threads per block, at most 8192 blocks: enough to fill the device, the loop covers the rest
    unsigned grid = ceil_div(n, 256) < 8192 ? ceil_div(n, 256) : 8192;
    auto k = convert_kernel<D, S>;
    LAUNCH(k, grid, 256, 0, cuda_stream(be), (D *)dst, (const S *)src, n);
}

static void cuda_convert(const struct backend *be, dbuf *dst, enum buf_kind dk, const dbuf *src, enum buf_kind sk,
                         size_t n) {
    CHECKF(dk != BUF_INT && sk != BUF_INT, "convert: int32 buffers do not convert (kinds %d <- %d)", dk, sk);
    if (!n) return;
    int db = kind_is_bf16(be, dk), sb = kind_is_bf16(be, sk);
    if (db == sb) {
        CUDA_CHECK(cudaMemcpyAsync(dst, src, n * be->elem_size[dk], cudaMemcpyDeviceToDevice, cuda_stream(be)));
        return;
    }
    if (db) convert_launch<__nv_bfloat16, float>(be, dst, src, n);
    else convert_launch<float, __nv_bfloat16>(be, dst, src, n);
}

static void cuda_sync(const struct backend *be) { CUDA_CHECK(cudaStreamSynchronize(cuda_stream(be))); }

// CUDA graphs (core/backend.h, run_region): per slot, the key last seen, how many times in a row, and
// the instantiated graph of that key. The first call with a key runs directly (lazy allocations, the
// cuBLASLt heuristic cache and kernel attributes happen outside any capture), the second is captured in
// relaxed mode on the backend's stream and launched, later ones launch the graph. Opt-in with
// LLAMAC_CUDA_GRAPH=1; under the CPU emulation regions always run directly (cudaemu/README.md).
#define GRAPH_SLOTS 4
#if !LLAMAC_CUDA_EMU
static struct {
    unsigned long long key;
    int seen;
    cudaGraphExec_t exec;
} graph_slots[GRAPH_SLOTS];
#endif

static void cuda_run_region(const struct backend *be, int slot, unsigned long long key, void (*fn)(void *),
                            void *arg) {
#if LLAMAC_CUDA_EMU
    (void)be, (void)slot, (void)key;
    fn(arg);
#else
    const char *e = getenv("LLAMAC_CUDA_GRAPH");  // read at every call: a process may compare both ways
    const int enabled = e && *e == '1';
    CHECKF(slot >= 0 && slot < GRAPH_SLOTS, "run_region: slot %d out of range", slot);
    if (!enabled) {
        fn(arg);
        return;
    }
    cudaStream_t st = cuda_stream(be);
    auto *g = &graph_slots[slot];
    if (g->seen == 0 || g->key != key) {
        if (g->exec) CUDA_CHECK(cudaGraphExecDestroy(g->exec));
        g->exec = NULL, g->key = key, g->seen = 1;
        fn(arg);
        return;
    }
    if (!g->exec) {
        cudaGraph_t graph;
        CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeRelaxed));
        fn(arg);
        CUDA_CHECK(cudaStreamEndCapture(st, &graph));
        CUDA_CHECK(cudaGraphInstantiate(&g->exec, graph, 0));
        CUDA_CHECK(cudaGraphDestroy(graph));
    }
    CUDA_CHECK(cudaGraphLaunch(g->exec, st));
#endif
}

static struct cuda_ctx cuda_ctx_shared;
static struct ops cuda_ops_table;
static struct backend cuda_backends[2];  // indexed by enum precision

static void cuda_ops_init(struct ops *o) {
    o->embedding_forward = embedding_forward_cuda;
    o->embedding_backward = embedding_backward_cuda;
    o->rmsnorm_forward = rmsnorm_forward_cuda;
    o->rmsnorm_backward = rmsnorm_backward_cuda;
    o->matmul_forward = matmul_forward_cuda;
    o->matmul_backward = matmul_backward_cuda;
    o->rope_forward = rope_forward_cuda;
    o->rope_backward = rope_backward_cuda;
    o->attention_forward = attention_forward_cuda;
    o->attention_backward = attention_backward_cuda;
    o->attention_decode = attention_decode_cuda;
    o->swiglu_forward = swiglu_forward_cuda;
    o->swiglu_backward = swiglu_backward_cuda;
    o->residual_forward = residual_forward_cuda;
    o->residual_rmsnorm_forward = residual_rmsnorm_forward_cuda;
    o->lora_scale_forward = lora_scale_forward_cuda;
    o->lora_scale_backward = lora_scale_backward_cuda;
    o->dropout_forward = dropout_forward_cuda;
    o->crossentropy_max = crossentropy_max_cuda;
    o->crossentropy_sums = crossentropy_sums_cuda;
    o->crossentropy_loss = crossentropy_loss_cuda;
    o->crossentropy_backward = crossentropy_backward_cuda;
    o->adamw_update = adamw_update_cuda;
    o->grad_sumsq = grad_sumsq_cuda;
}

static void cuda_ctx_init(struct cuda_ctx *c) {
    int optin = 0;
    CUDA_CHECK(cudaGetDevice(&c->device));
    CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasLtCreate(&c->lt));
    c->workspace_size = (size_t)32 << 20;
    CUDA_CHECK(cudaMalloc(&c->workspace, c->workspace_size));
    CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, c->device));
    c->smem_optin = (size_t)optin;
}

static void cuda_backend_init(struct backend *be, enum precision p) {
    static const size_t sizes[2][BUF_KINDS] = {
        {4, 4, 4, 4, 4, 4},  // fp32: PARAM, GRAD, ACT, ACT32, STATE, INT
        {2, 4, 2, 4, 4, 4},  // bf16: parameters-for-compute and activations in bf16
    };
    be->name = "cuda";
    be->precision = p;
    memcpy(be->elem_size, sizes[p], sizeof(sizes[p]));
    be->ctx = &cuda_ctx_shared;
    be->alloc = cuda_alloc;
    be->free = cuda_free;
    be->zero = cuda_zero;
    be->to_host = cuda_to_host;
    be->from_host = cuda_from_host;
    be->ints_from_host = cuda_ints_from_host;
    be->convert = cuda_convert;
    be->sync = cuda_sync;
    be->run_region = cuda_run_region;
    be->ops = &cuda_ops_table;
}

extern "C" const struct backend *backend_cuda(enum precision p) {
    static int ready = 0;
    int n = 0;
    if (!ready) {
        if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
            err_set("no CUDA device is visible on this machine");
            return NULL;
        }
        cuda_ctx_init(&cuda_ctx_shared);
        cuda_ops_init(&cuda_ops_table);
        cuda_backend_init(&cuda_backends[PRECISION_FP32], PRECISION_FP32);
        cuda_backend_init(&cuda_backends[PRECISION_BF16], PRECISION_BF16);
        ready = 1;
    }
    CHECKF(p == PRECISION_FP32 || p == PRECISION_BF16, "backend_cuda: unknown precision %d", (int)p);
    return &cuda_backends[p];
}
