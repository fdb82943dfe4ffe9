// CUDA_CHECK for the CUDA sources of every layer: a failed CUDA runtime call is a broken invariant and
// aborts with the call, file, line and CUDA's message (core/error.h). Include from .cu files only.
#pragma once
#include <cuda_runtime.h>

extern "C" {
#include "core/error.h"
}

#define CUDA_CHECK(call)                                                                              \
    do {                                                                                              \
        cudaError_t e_ = (call);                                                                      \
        if (e_ != cudaSuccess) check_fail(__FILE__, __LINE__, #call, "%s", cudaGetErrorString(e_));   \
    } while (0)
