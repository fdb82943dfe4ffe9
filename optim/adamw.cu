// AdamW on the GPU: the arithmetic of adamw_update_cpu (see adamw.h), one thread per element, with an
// optional bf16 copy of the updated weights for compute written in the same pass.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>

#include "core/cuda_launch.h"
#include "optim/adamw.h"

__global__ void adamw_kernel(float *param, __nv_bfloat16 *param_bf16, float *m, float *v, const float *grad,
                             size_t n, float keep, float step_size, float bc2_sqrt, float beta1, float beta2,
                             float eps, float grad_scale) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float g = grad[i] * grad_scale;
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float p = param[i] * keep - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
        param[i] = p;
        if (param_bf16) param_bf16[i] = __float2bfloat16_rn(p);
    }
}

extern "C" void adamw_update_cuda(float *param, uint16_t *param_bf16, float *m, float *v, const float *grad,
                                  size_t n, float lr, float beta1, float beta2, float eps, float wd,
                                  float grad_scale, long t) {
    CHECKF(t >= 1, "AdamW step %ld: steps count from 1", t);
    if (n == 0) return;
    const float keep = (float)(1.0 - (double)lr * wd);
    const float step_size = (float)((double)lr / (1.0 - pow((double)beta1, (double)t)));
    const float bc2_sqrt = (float)sqrt(1.0 - pow((double)beta2, (double)t));
    const int threads = 256;
    size_t want = (n + threads - 1) / threads;
    int blocks = want > 65535 * 16 ? 65535 * 16 : (int)want;  // grid-stride beyond ~268M elements
    LAUNCH(adamw_kernel, blocks, threads, 0, 0, param, (__nv_bfloat16 *)param_bf16, m, v, grad, n, keep, step_size,
           bc2_sqrt, beta1, beta2, eps, grad_scale);
}
