// LAUNCH: the one way llamac launches a kernel, so that the same .cu source runs on a GPU (nvcc) and in
// the CPU emulation (-DLLAMAC_CUDA=EMU, cudaemu/README.md). Include from .cu files only.
//
//   LAUNCH(kernel, grid, block, smem_bytes, stream, args...);
//
// is kernel<<<grid, block, smem_bytes, stream>>>(args...) under nvcc and a cudaemu launch with the
// arguments converted to the kernel's parameter types and captured by value under the emulator; both
// are followed by CUDA_CHECK(cudaGetLastError()), so a configuration the device refuses aborts with the
// launch site. A template kernel whose arguments contain commas is named through a function pointer
// first: `auto k = my_kernel<T, 64>; LAUNCH(k, ...);`.
//
// LLAMAC_DYNAMIC_SMEM(type, name) declares the launch's dynamic shared memory as `type *name` (an
// `extern __shared__ type name[]` under nvcc; the emulator's header defines its own).
#pragma once
#include <cuda_runtime.h>

#include "core/cuda_check.h"

#ifdef LLAMAC_CUDA_EMU
#define LAUNCH(kernel, grid, block, smem_bytes, stream, ...)                                          \
    do {                                                                                              \
        cudaemu::launch(kernel, grid, block, smem_bytes, stream, #kernel, __FILE__, __LINE__)(__VA_ARGS__); \
        CUDA_CHECK(cudaGetLastError());                                                               \
    } while (0)
#else
#define LAUNCH(kernel, grid, block, smem_bytes, stream, ...)                                          \
    do {                                                                                              \
        kernel<<<grid, block, smem_bytes, stream>>>(__VA_ARGS__);                                     \
        CUDA_CHECK(cudaGetLastError());                                                               \
    } while (0)
#endif

#ifndef LLAMAC_DYNAMIC_SMEM
#define LLAMAC_DYNAMIC_SMEM(type, name) extern __shared__ type name[]
#endif
