// What the emulator's source files share and kernels never see: fatal errors, the last-error slot and
// the dynamic shared memory limit per kernel (runtime.cpp), used by the launcher (cudaemu.cpp).
#pragma once

#include <cuda_runtime.h>

namespace cudaemu {

// Prints "cudaemu: <message>" on stderr and aborts: for programs the emulator cannot run correctly.
[[noreturn]] void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// Records an error for cudaGetLastError / cudaPeekAtLastError and returns it (cudaSuccess is not recorded).
cudaError_t record(cudaError_t e);

// The dynamic shared memory a launch of kernel may use: 48 KiB, or what cudaFuncSetAttribute allowed.
size_t max_dynamic_smem(const void *kernel);

enum : size_t {
    SMEM_DEFAULT = 48 * 1024,   // without cudaFuncAttributeMaxDynamicSharedMemorySize
    SMEM_OPTIN = 227 * 1024,    // the most a block may opt in to (sharedMemPerBlockOptin)
};

}  // namespace cudaemu
