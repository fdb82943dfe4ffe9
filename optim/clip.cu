// Sum of squares of fp32 gradients on the GPU, accumulated in double, deterministically: a fixed grid
// of blocks writes one partial sum each, then one block adds the partials in a fixed order.
#include <cuda_runtime.h>

#include "core/cuda_ctx.h"
#include "core/cuda_launch.h"

extern "C" {
#include "core/error.h"
}
#include "optim/clip.h"


enum { SUMSQ_THREADS = 256, SUMSQ_BLOCKS = 1024 };

// Tree sum of the block's values in shared memory; thread 0 gets the total.
__device__ double block_sum_f64(double x, double *shared) {
    shared[threadIdx.x] = x;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
        __syncthreads();
    }
    return shared[0];
}

__global__ void sumsq_partial_kernel(double *partial, const float *g, size_t n) {
    __shared__ double shared[SUMSQ_THREADS];
    double s = 0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        s += (double)g[i] * (double)g[i];
    double total = block_sum_f64(s, shared);
    if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

__global__ void sumsq_final_kernel(double *out, const double *partial, int n) {
    __shared__ double shared[SUMSQ_THREADS];
    double s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
    double total = block_sum_f64(s, shared);
    if (threadIdx.x == 0) *out = total;
}

extern "C" double grad_sumsq_cuda(const struct backend *be, const dbuf *grads, size_t n) {
    // Scratch for the partial sums and the result, kept for the life of the process (one per process,
    // like the backend's context; the trainer calls this from one thread).
    static double *scratch = NULL;
    if (!scratch) CUDA_CHECK(cudaMalloc((void **)&scratch, (SUMSQ_BLOCKS + 1) * sizeof(double)));
    if (n == 0) return 0.0;
    cudaStream_t st = cuda_stream(be);
    // a grid-stride pass of at most SUMSQ_BLOCKS blocks, then one block over their partial sums
    size_t want = (n + SUMSQ_THREADS - 1) / SUMSQ_THREADS;
    int blocks = want < SUMSQ_BLOCKS ? (int)want : SUMSQ_BLOCKS;
    LAUNCH(sumsq_partial_kernel, blocks, SUMSQ_THREADS, 0, st, scratch + 1, (const float *)grads, n);
    LAUNCH(sumsq_final_kernel, 1, SUMSQ_THREADS, 0, st, scratch, (const double *)(scratch + 1), blocks);
    double out;
    CUDA_CHECK(cudaMemcpyAsync(&out, scratch, sizeof(double), cudaMemcpyDeviceToHost, st));
    CUDA_CHECK(cudaStreamSynchronize(st));
    return out;
}
