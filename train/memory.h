// The memory one rank needs for a training step, from the same sizes the trainer allocates (train.c,
// model/llama.c, optim/adamw.c): what `llamac inspect` prints and what `llamac train` checks against
// the GPU's free memory before allocating anything.
#pragma once
#include <stddef.h>

#include "core/backend.h"
#include "model/config.h"

struct mem_plan {
    double params, grads, master, moments, grad_shard, acts, workspace;  // bytes
    double total;
};

// Bytes per rank for config c with batch B x T at dp x tp (zero1, recompute as the run keys), on a
// backend whose elements take es[kind] bytes; cuda adds the CUDA backend's workspace (cuBLASLt's 32 MiB,
// attention backward's scratch). -1 with err_set when tp does not fit the model.
int mem_plan_compute(struct mem_plan *p, const struct llama_config *c, const size_t es[BUF_KINDS], int cuda, int B,
                     int T, int dp, int tp, int zero1, int recompute);
// The element sizes of backend `name` ("cpu", "cuda") in precision p, without creating it (no device
// needed): the same table as the backends' own.
void mem_elem_sizes(size_t es[BUF_KINDS], int cuda, enum precision p);
// Checks that the run's layout fits `free_bytes` (the memory this rank may use): 0 when it does, else -1
// with err_set naming the shortfall and the layouts of `world` ranks that fit (other tp, zero1,
// recompute).
int mem_plan_check(const struct llama_config *c, const size_t es[BUF_KINDS], int B, int T, int world, int tp,
                   int zero1, int recompute, double free_bytes, const char *device);
