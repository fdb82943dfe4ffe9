// launch/gpu.h with the CUDA runtime (or the emulator's, whose one device is "cudaemu (CPU emulation)").
#include <cuda_runtime.h>
#include <stdio.h>

extern "C" {
#include "core/error.h"
#include "launch/gpu.h"
}

extern "C" int gpu_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // no driver or no device: not an error here
        return 0;
    }
    return n;
}

extern "C" int gpu_use(int device) {
    int n = gpu_count();
    if (device < 0 || device >= n) return err_set("GPU %d does not exist (%d visible)", device, n);
    if (cudaSetDevice(device) != cudaSuccess) return err_set("cudaSetDevice(%d): %s", device, cudaGetErrorString(cudaGetLastError()));
    return 0;
}

extern "C" int gpu_mem_info(size_t *free_bytes, size_t *total_bytes) {
    *free_bytes = *total_bytes = 0;
    if (gpu_count() == 0) return err_set("no CUDA device is visible on this machine");
    cudaError_t e = cudaMemGetInfo(free_bytes, total_bytes);
    if (e != cudaSuccess) return err_set("cudaMemGetInfo: %s", cudaGetErrorString(e));
    return 0;
}

extern "C" void gpu_name(char *out, size_t n) {
    if (!n) return;
    out[0] = '\0';
    int d = 0;
    cudaDeviceProp p;
    if (gpu_count() == 0 || cudaGetDevice(&d) != cudaSuccess || cudaGetDeviceProperties(&p, d) != cudaSuccess) return;
    snprintf(out, n, "%s", p.name);
}
