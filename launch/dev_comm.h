// Communicators for device buffers (core/comm.h with on_device set): the model's tensor-parallel
// all-reduces, the data-parallel gradient sync (launch/dp.h) and the ZeRO-1 collectives on GPU ranks.
//
// One layer, two transports. The layer is everything a caller sees and it is shared: ordering with the
// backend's stream, the non-blocking all-reduce on the communicator's own stream (an event recorded on
// the compute stream, the side stream waiting for it, the transport, a done event the compute stream
// waits for in comm_wait), the request queue, and the time spent communicating. A transport only moves
// bytes, either
//   - NCCL (DEV_NCCL; real CUDA builds that found NCCL): the NCCL collective on the stream given; the
//     NCCL communicator is bootstrapped by broadcasting its ncclUniqueId over the host communicator; or
//   - staged (DEV_STAGED): copy to pinned host memory, the host (MPI) communicator's collective, copy
//     back. It works whatever the ranks share (several ranks on one GPU, the CPU emulation of CUDA) and
//     without NCCL. Blocking operations go through a 64 MiB staging buffer piece by piece, so a 7B
//     model's gradients need no host copy of their own.
// Which transport a run gets is decided in launch/gpu_comms.c (the rule is in launch/README.md).
//
// Semantics are stream-ordered: a blocking call returns once its result is ordered before every op
// called afterwards on the backend (the host is not synchronized with NCCL); comm_wait orders the
// result of a non-blocking all-reduce the same way. Staged non-blocking all-reduces start their MPI
// operation only after the copy to the host has finished, in the order they were started, so the MPI
// collectives are issued in the same order on every rank.
#pragma once
#include <stddef.h>

#include "core/backend.h"
#include "core/comm.h"

enum dev_transport { DEV_STAGED, DEV_NCCL };

// 1 when this build has NCCL (a real CUDA build that found nccl.h and libnccl; never the emulator).
int dev_comm_have_nccl(void);
const char *dev_transport_name(enum dev_transport t);  // "staged", "nccl"
// A device communicator over the ranks of `host`, for buffers of backend be (a CUDA backend), moving
// data with transport t. host must stay alive while it is used: the staged transport runs its
// collectives on it, and both use it for barriers and the NCCL bootstrap. NULL with err_set when t is
// not available in this build.
struct comm *dev_comm_create(struct comm *host, const struct backend *be, enum dev_transport t);
void dev_comm_destroy(struct comm *c);
// Seconds this communicator's operations took since the previous call, each from its start to its end
// on its stream (blocking ones in line with compute, non-blocking ones overlapped with it), summed;
// waits for them to finish. 0 for a communicator that is not a device communicator.
double dev_comm_take_seconds(struct comm *c);
