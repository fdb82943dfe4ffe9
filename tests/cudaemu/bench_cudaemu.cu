// The figures in cudaemu/README.md: launches per second of an empty kernel, and elements per second of
// an elementwise kernel (no barrier: no fiber switch) and of a 256-thread shared-memory reduction (eight
// __syncthreads per block). Times are the process's CPU time, so that other work on a shared machine
// does not count. Run by hand: build-emu/tests/bench_cudaemu
#include <cuda_runtime.h>
#include <stdio.h>
#include <time.h>

#include "core/cuda_launch.h"

__global__ void empty_kernel() {}

__global__ void axpy_kernel(float *y, const float *x, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i];
}

__global__ void block_sum_kernel(float *out, const float *x) {
    __shared__ float s[256];
    s[threadIdx.x] = x[blockIdx.x * 256 + threadIdx.x];
    __syncthreads();
    for (int k = 128; k > 0; k >>= 1) {
        if (threadIdx.x < k) s[threadIdx.x] += s[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = s[0];
}

static double now() {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int main(void) {
    const int launches = 100000, n = 1 << 24;
    double t = now();
    for (int i = 0; i < launches; i++) LAUNCH(empty_kernel, 1, 1, 0, 0);
    printf("empty kernel, 1 block x 1:       %.3g launches/s\n", launches / (now() - t));
    t = now();
    for (int i = 0; i < launches / 10; i++) LAUNCH(empty_kernel, 1, 256, 0, 0);
    printf("empty kernel, 1 block x 256:     %.3g launches/s\n", launches / 10 / (now() - t));

    float *x, *y;
    CUDA_CHECK(cudaMalloc(&x, n * sizeof(float)));
    CUDA_CHECK(cudaMalloc(&y, n * sizeof(float)));
    CUDA_CHECK(cudaMemset(x, 0, n * sizeof(float)));
    CUDA_CHECK(cudaMemset(y, 0, n * sizeof(float)));
    t = now();
    LAUNCH(axpy_kernel, n / 256, 256, 0, 0, y, x, 2.0f, n);
    printf("elementwise (axpy, 256/block):  %.3g elements/s\n", n / (now() - t));
    t = now();
    LAUNCH(block_sum_kernel, n / 256 / 4, 256, 0, 0, y, x);
    printf("block reduction (256 threads):  %.3g elements/s\n", n / 4 / (now() - t));
    return 0;
}
