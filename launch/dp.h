// Data-parallel gradient sync, overlapped with backward, and the ZeRO-1 collectives.
//
// Buckets (as PyTorch DDP): the gradient buffer is cut into buckets of bucket_mb MB (25 by default),
// counted from the END of the buffer, because backward finishes gradients from the tail (final norm,
// lm_head) towards the front (embed_tokens):
//
//     grads  [ embed | layer 0 | layer 1 | ... | layer L-1 | norm, lm_head ]
//     buckets  ... |   b3   |   b2   |   b1   |   b0   |      (b0 first, the front one the remainder)
//
// Plug dp_sync_on_ready into llama's on_grads_ready. Each reported range adds to the ready count of
// the buckets it overlaps; a bucket whose elements are all ready starts a non-blocking SUM all-reduce
// at once, while backward computes the layers before it. A bucket may span several ranges and a range
// several buckets; ranges may come in any order but must not overlap. Every call also tests the
// requests in flight, which is what makes Open MPI progress them during backward (MPI moves data only
// inside MPI calls unless it has a progress thread). dp_sync_finish waits for the buckets in flight and
// then reduces whatever was never reported with blocking all-reduces.
//
// Collectives on one communicator must be started in the same order on every rank: the order here
// follows the order of the reported ranges, which is the same on every rank of a DP group because its
// ranks hold the same tensor-parallel slice (same layout, same backward).
//
// The result is the SUM over the DP group, not the mean: the trainer scales the loss by 1 / (global
// number of counted tokens), so the sum is the exact global mean gradient whatever each rank counted.
// With gradient accumulation, attach the callback on the last micro-batch only (DDP's no_sync).
//
// Elements are fp32 (the gradient block on every backend). The buffer is a host pointer with a host
// communicator (the CPU backend) and the backend's device buffer with a device communicator
// (launch/dev_comm.h): the same buckets, order and calls either way; there the all-reduces run on the
// communicator's own stream, ordered after backward's kernels by an event and before the optimizer's
// by another, and comm_test is what progresses the host-staged transport.
#pragma once
#include <stddef.h>

#include "core/comm.h"

#define DP_BUCKET_MB_DEFAULT 25.0

struct dp_bucket {
    size_t offset, n;     // elements [offset, offset + n) of the buffer
    size_t ready;         // elements reported ready this step
    int started, done;    // all-reduce issued; known complete (tested or waited)
    struct comm_req req;
};

struct dp_sync {
    struct comm *dp;
    float *grads;             // (n_total) reduced in place
    size_t n_total, bucket_elems;
    int n_buckets;
    struct dp_bucket *buckets;  // buckets[0] holds the end of the buffer
    int finished;             // dp_sync_finish ran for this step
    // Statistics of the last step
    int n_overlapped;         // buckets started during backward (the rest by dp_sync_finish)
    int n_done_early;         // buckets found complete before dp_sync_finish
    size_t n_reported;        // elements reported ready
};

// bucket_mb <= 0 takes DP_BUCKET_MB_DEFAULT. dp is the data-parallel group (comm_self: a no-op sync).
struct dp_sync *dp_sync_create(struct comm *dp, void *grads, size_t n_total, double bucket_mb);
void dp_sync_destroy(struct dp_sync *s);
// The on_grads_ready callback: ctx is the struct dp_sync; elements [off, off + n) are final.
void dp_sync_on_ready(void *ctx, size_t off, size_t n);
// Waits for the buckets in flight and reduces the others: the buffer then holds the sum over the group.
void dp_sync_finish(struct dp_sync *s);
// Readies the sync for the next step (after dp_sync_finish).
void dp_sync_reset(struct dp_sync *s);

// ZeRO-1: each DP rank updates one shard of the (padded) parameters and keeps AdamW moments for it.
// Elements per rank of a buffer of n padded to a multiple of dp: ceil(n / dp).
size_t dp_shard_size(size_t n, int dp);
// shard (n_padded / dp) = sum over the group of grads[dp_rank * s .. + s); n_padded a multiple of dp.
void dp_reduce_scatter_grads(struct comm *dp, void *shard, const void *grads, size_t n_padded);
// params (n_padded elements of elem_size bytes: fp32 or bf16) = every rank's shard in rank order; shard
// may be params + dp_rank * s (in place).
void dp_all_gather_params(struct comm *dp, void *params, const void *shard, size_t n_padded, size_t elem_size);
