// What every CUDA op file shares: the backend's context, the compute type of a precision, conversions and
// warp/block reductions. Included by model/ops/cuda/*.cu only.
//
// Precision: a backend in bf16 precision stores parameters-for-compute and activations (BUF_PARAM,
// BUF_ACT) as __nv_bfloat16, in fp32 precision as float; gradients, BUF_ACT32 statistics and BUF_STATE
// are fp32 in both. Kernels are templates over the compute type `T` (floatX below) and do their
// arithmetic in fp32: load with to_f, store with from_f. Launchers pick T with DISPATCH_PRECISION.
//
// Kernels launch through LAUNCH (core/cuda_launch.h), so the same source runs under nvcc and under the
// CPU emulation (cudaemu/README.md); they never rely on the threads of a warp running in lockstep (every
// exchange between threads goes through __syncthreads or a *_sync warp intrinsic).
#pragma once
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "core/cuda_check.h"
#include "core/cuda_ctx.h"
#include "core/cuda_launch.h"

extern "C" {
#include "core/backend.h"
#include "core/error.h"
}

static inline int is_bf16_backend(const struct backend *be) { return be->precision == PRECISION_BF16; }

#define CUBLAS_CHECK(call)                                                                            \
    do {                                                                                              \
        cublasStatus_t s_ = (call);                                                                   \
        if (s_ != CUBLAS_STATUS_SUCCESS) check_fail(__FILE__, __LINE__, #call, "cuBLAS status %d", (int)s_); \
    } while (0)

// Runs the statement block with `T` the compute type of be (float or __nv_bfloat16).
#define DISPATCH_PRECISION(be, ...)             \
    do {                                        \
        if (is_bf16_backend(be)) {              \
            typedef __nv_bfloat16 T;            \
            __VA_ARGS__                         \
        } else {                                \
            typedef float T;                    \
            __VA_ARGS__                         \
        }                                       \
    } while (0)

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Sum and max over the 32 lanes of a warp (every lane gets the result).
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result. `shared`
// holds 32 floats; the call ends with a barrier, so `shared` can be reused right after.
__device__ __forceinline__ float block_sum(float v, float *shared) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    v = warp_sum(v);
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < nwarps ? shared[lane] : 0.0f;
    v = warp_sum(v);
    __syncthreads();
    return v;
}
__device__ __forceinline__ float block_max(float v, float *shared) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    v = warp_max(v);
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < nwarps ? shared[lane] : -INFINITY;
    v = warp_max(v);
    __syncthreads();
    return v;
}

static inline unsigned ceil_div(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }
