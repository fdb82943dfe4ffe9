// GPU ranks: binding each rank to a GPU and choosing the transport of its device communicators.
//
// Binding: each rank takes the GPU of its node-local rank (local_rank % GPUs on the node); with more
// ranks than GPUs on a node, ranks share them round-robin, with a warning on rank 0.
//
// Transport (parallel.gpu_comm; launch/README.md, GPU training):
//   auto    NCCL when this build has it and no GPU is shared by two ranks on any node (every rank its own
//           GPU, as NCCL requires), else staged;
//   nccl    NCCL, or a one-line error saying why it cannot be used;
//   staged  host-staged MPI (launch/dev_comm.h), always available.
// Every rank computes the same answer (the inputs are reduced over the world first), so all ranks use
// one transport.
#pragma once
#include "core/backend.h"
#include "launch/dev_comm.h"
#include "launch/grid.h"

struct gpu_comms {
    struct comm *tp, *dp;       // device communicators over the grid's TP and DP groups
    struct comm *tp_host, *dp_host;  // their own duplicates of the groups' MPI communicators: a staged
                                // all-reduce starts its MPI operation when its copy has finished, so no
                                // other collective may share its MPI communicator
    enum dev_transport transport;
    int device;                 // this rank's GPU
    int gpus_on_node;           // GPUs visible on this rank's node
    int shared;                 // some node runs more ranks than it has GPUs
};

// Makes this rank's GPU current (before the CUDA backend is created). -1 with err_set without GPUs.
int gpu_bind(struct gpu_comms *gc, const struct grid *g);
// The device communicators for backend be (a CUDA backend) over g's groups; want is parallel.gpu_comm.
// -1 with err_set (the same on every rank) when want cannot be had.
int gpu_comms_create(struct gpu_comms *gc, struct grid *g, const struct backend *be, const char *want);
void gpu_comms_free(struct gpu_comms *gc);
