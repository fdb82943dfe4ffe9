// The CUDA backend's storage: where tensors live on the GPU and how host views convert.
//
// Storage per buffer kind (DESIGN.md): bf16 parameters-for-compute and activations; fp32 gradients,
// master weights, optimizer moments, RoPE tables and small statistics; int32 tokens. Host views are
// fp32: copies convert on the host side (round-to-nearest-even into bf16).
//
// The op table (model/ops/cuda/*.cu, each op beside its CPU oracle's name) is the GPU issue's work; until
// it lands backend_cuda() has storage and the optimizer kernels but no ops (ops == NULL), and
// backend_find("cuda") refuses it with that message.
#include <cuda_runtime.h>

#include "core/cuda_check.h"
#include <stdint.h>
#include <string.h>

extern "C" {
#include "core/error.h"
#include "model/ops/backends.h"
#include "model/safetensors.h"  // the bf16 conversions (round to nearest even)
}

static const size_t cuda_elem_size[BUF_KINDS] = {2, 4, 2, 4, 4, 4};  // PARAM, GRAD, ACT, ACT32, STATE, INT

static int is_bf16(enum buf_kind k) { return cuda_elem_size[k] == 2; }

static dbuf *cuda_alloc(enum buf_kind kind, size_t n) {
    void *p = NULL;
    size_t bytes = n * cuda_elem_size[kind];
    CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 16));
    CUDA_CHECK(cudaMemset(p, 0, bytes ? bytes : 16));
    return (dbuf *)p;
}

static void cuda_free(dbuf *p) { CUDA_CHECK(cudaFree(p)); }

static void cuda_zero(dbuf *p, enum buf_kind kind, size_t n) {
    CUDA_CHECK(cudaMemset(p, 0, n * cuda_elem_size[kind]));
}

static void cuda_to_host(float *dst, const dbuf *src, enum buf_kind kind, size_t n) {
    if (!is_bf16(kind)) {
        CUDA_CHECK(cudaMemcpy(dst, src, n * 4, cudaMemcpyDeviceToHost));
        return;
    }
    uint16_t *tmp = (uint16_t *)xmalloc(n * 2);
    CUDA_CHECK(cudaMemcpy(tmp, src, n * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(tmp[i]);
    free(tmp);
}

static void cuda_from_host(dbuf *dst, const float *src, enum buf_kind kind, size_t n) {
    if (!is_bf16(kind)) {
        CUDA_CHECK(cudaMemcpy(dst, src, n * 4, cudaMemcpyHostToDevice));
        return;
    }
    uint16_t *tmp = (uint16_t *)xmalloc(n * 2);
    for (size_t i = 0; i < n; i++) tmp[i] = f32_to_bf16(src[i]);
    CUDA_CHECK(cudaMemcpy(dst, tmp, n * 2, cudaMemcpyHostToDevice));
    free(tmp);
}

static void cuda_ints_from_host(dbuf *dst, const int *src, size_t n) {
    CUDA_CHECK(cudaMemcpy(dst, src, n * sizeof(int), cudaMemcpyHostToDevice));
}

static void cuda_sync(void) { CUDA_CHECK(cudaDeviceSynchronize()); }

extern "C" const struct backend *backend_cuda(void) {
    static struct backend be;
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        err_set("no CUDA device is visible on this machine");
        return NULL;
    }
    be.name = "cuda";
    be.kind = BACKEND_CUDA;
    memcpy(be.elem_size, cuda_elem_size, sizeof(cuda_elem_size));
    be.alloc = cuda_alloc;
    be.free = cuda_free;
    be.zero = cuda_zero;
    be.to_host = cuda_to_host;
    be.from_host = cuda_from_host;
    be.ints_from_host = cuda_ints_from_host;
    be.sync = cuda_sync;
    be.ops = NULL;  // the GPU op table is not part of this version: storage and optimizer only
    return &be;
}
