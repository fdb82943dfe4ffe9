// The one way llamac launches a kernel, so that the same .cu source builds under nvcc and under the CPU
// emulation of CUDA (cudaemu/README.md):
//
//   LAUNCH(kernel, grid, block, smem_bytes, stream, args...);
//
// Under nvcc it is kernel<<<grid, block, smem_bytes, stream>>>(args...); under the emulation, a launch of
// the same function on fibers. Either way the launch is checked (an impossible configuration aborts
// with the file and line). A template kernel is launched through a pointer: auto k = kern<T, 64>; LAUNCH(k, ...).
// Dynamic shared memory is declared with LLAMAC_DYNAMIC_SMEM(type, name) inside the kernel.
#pragma once
#include "core/cuda_check.h"

#ifdef LLAMAC_CUDA_EMU
#define LAUNCH(kernel, grid, block, smem, stream, ...)                                                 \
    do {                                                                                              \
        cudaemu_launch(dim3(grid), dim3(block), (smem), (stream), [=]() { kernel(__VA_ARGS__); });     \
        CUDA_CHECK(cudaGetLastError());                                                               \
    } while (0)
#else
#define LAUNCH(kernel, grid, block, smem, stream, ...)                                                 \
    do {                                                                                              \
        kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__);                                   \
        CUDA_CHECK(cudaGetLastError());                                                               \
    } while (0)
#endif

#ifndef LLAMAC_DYNAMIC_SMEM
#define LLAMAC_DYNAMIC_SMEM(type, name) extern __shared__ type name[]
#endif
