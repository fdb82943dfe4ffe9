// AdamW on the GPU: the arithmetic of adamw_update_cpu (see adamw.h), one thread per element, writing the
// updated fp32 master weights and, in the same pass, the compute copy (bf16 or fp32, the backend's
// precision).
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>

#include "core/cuda_ctx.h"
#include "core/cuda_launch.h"
#include "optim/adamw.h"

template <typename T> __device__ __forceinline__ T adamw_store(float x);
template <> __device__ __forceinline__ float adamw_store<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 adamw_store<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

template <typename T>
__global__ void adamw_kernel(T *param, float *master, float *m, float *v, const float *grad, size_t n, float keep,
                             float step_size, float bc2_sqrt, float beta1, float beta2, float eps, float grad_scale) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float g = grad[i] * grad_scale;
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float p = master[i] * keep - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
        master[i] = p;
        if (param) param[i] = adamw_store<T>(p);
    }
}

extern "C" void adamw_update_cuda(const struct backend *be, dbuf *param, dbuf *master, dbuf *m, dbuf *v,
                                  const dbuf *grad, size_t n, float lr, float beta1, float beta2, float eps, float wd,
                                  float grad_scale, long t) {
    CHECKF(t >= 1, "AdamW step %ld: steps count from 1", t);
    if (n == 0) return;
    const float keep = (float)(1.0 - (double)lr * wd);
    const float step_size = (float)((double)lr / (1.0 - pow((double)beta1, (double)t)));
    const float bc2_sqrt = (float)sqrt(1.0 - pow((double)beta2, (double)t));
    // one element per thread, 256 a block; grid-stride beyond ~268M elements
    const int threads = 256;
    size_t want = (n + threads - 1) / threads;
    int blocks = want > 65535 * 16 ? 65535 * 16 : (int)want;
    if (be->elem_size[BUF_PARAM] == 2) {
        auto k = adamw_kernel<__nv_bfloat16>;
        LAUNCH(k, blocks, threads, 0, cuda_stream(be), (__nv_bfloat16 *)param, (float *)master, (float *)m,
               (float *)v, (const float *)grad, n, keep, step_size, bc2_sqrt, beta1, beta2, eps, grad_scale);
    } else {
        auto k = adamw_kernel<float>;
        LAUNCH(k, blocks, threads, 0, cuda_stream(be), (float *)param, (float *)master, (float *)m, (float *)v,
               (const float *)grad, n, keep, step_size, bc2_sqrt, beta1, beta2, eps, grad_scale);
    }
}
