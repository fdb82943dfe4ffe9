// The CUDA backend's context (be->ctx), shared by the .cu files of every layer: the stream every op and
// optimizer pass runs on, the cuBLASLt handle and its workspace. model/ops/cuda/backend.cu creates it.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

extern "C" {
#include "core/backend.h"
}

struct cuda_ctx {
    int device;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *workspace;
    size_t workspace_size;
    size_t smem_optin;  // the largest dynamic shared memory a block may ask for (bytes)
};

static inline struct cuda_ctx *cuda_ctx_of(const struct backend *be) { return (struct cuda_ctx *)be->ctx; }
static inline cudaStream_t cuda_stream(const struct backend *be) { return cuda_ctx_of(be)->stream; }
