// Exit 0 when a CUDA device is visible, 77 (ctest's "skipped") when not: GPU tests run behind it so that
// a machine without a GPU reports them as skipped, never as passed.
#include <cuda_runtime.h>
#include <stdio.h>

int main(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        printf("no CUDA device (%s): GPU tests skipped\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return 77;
    }
    cudaDeviceProp p;
    cudaGetDeviceProperties(&p, 0);
    printf("CUDA device 0: %s, %.0f GiB\n", p.name, p.totalGlobalMem / 1073741824.0);
    return 0;
}
