// Checkpoints: one HDF5 file per step, written collectively by all ranks with parallel HDF5.
//
// File format "llamac-checkpoint", version 1:
//   /params/NAME  float32, the canonical (unsharded) Hugging Face tensor: [rows, cols], norms [C]
//   /adam_m/NAME, /adam_v/NAME  float32, AdamW first and second moments, same shapes
//   root attributes: format, version, step, tokens_seen, rng_state, loader_state (opaque bytes),
//   model_config (INI text), run_config (INI text), saved_dp, saved_tp, saved_zero1
// Version 2 adds integrity: meta_sha256 (root, SHA-256 over every attribute above) and on each tensor a
// uint64 attribute `checksum` (ckpt.c: a sum over elements of a hash of (index, bits), which ranks holding
// disjoint slices add up at any layout). Loading verifies both; a damaged file is an error naming the
// tensor, and a resuming run falls back to the newest checkpoint that verifies (train.c). Version 1 files
// (no checksums) are still read.
// Each rank writes only its own slice (hyperslabs) of each tensor: replicated tensors (norms) from one
// rank, parameters (the fp32 master weights) and moments from whichever rank holds them (data-parallel
// rank 0's tensor-parallel group, or all data-parallel ranks under ZeRO-1). Loading reads each rank's slice, so a run saved at one
// (dp, tp) layout resumes at any other.
//
// Safety: the file is written as ckpt/step_NNNNNNN.h5.tmp, closed, fsynced and renamed; then
// ckpt/latest (a one-line text file naming it) is replaced the same way; then all but the newest
// `keep` checkpoints are deleted (never the one latest names). A crash, a full disk, a quota or a file
// size limit at any point leaves the previous checkpoint and latest intact and no .tmp behind; a failed
// write is one error naming the file and the cause.
//
// Checklist when changing the format: bump CKPT_VERSION, update ckpt_save and ckpt_load together.
#pragma once
#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "core/backend.h"
#include "model/llama.h"

#define CKPT_FORMAT "llamac-checkpoint"
#define CKPT_VERSION 2
#define CKPT_LOADER_STATE_MAX 256

struct ckpt_meta {
    int64_t step;          // optimizer steps completed
    int64_t tokens_seen;
    uint64_t rng_state;
    uint8_t loader_state[CKPT_LOADER_STATE_MAX];
    int loader_state_size;
    char *model_ini;       // llama_config_to_ini text (owned; ckpt_meta_free)
    char *run_ini;         // the run config as INI text (owned)
    int saved_dp, saved_tp, saved_zero1;
};

// This rank's optimizer state (optim/adamw.h) and where it lies in the local parameter layout: the flat
// range [offset, offset + n) (the whole layout without ZeRO-1, this data-parallel rank's shard with it).
// /params are written from the fp32 master weights, so a checkpoint holds them exactly whatever the
// backend's compute precision, and CPU and GPU runs resume each other's checkpoints.
struct ckpt_state {
    dbuf *master, *m, *v;  // BUF_STATE, n elements each
    size_t offset, n;
    int writer;            // this rank writes its state (dp rank 0 without ZeRO-1, every rank with it)
};

struct ckpt_ctx {
    MPI_Comm comm;         // every rank of the run
    int dp_rank, tp_rank;
};

// Collective. Writes run_dir/ckpt/step_NNNNNNN.h5 and updates latest; keeps the newest `keep` (>= 1).
int ckpt_save(const struct ckpt_ctx *x, const char *run_dir, const struct ckpt_meta *meta, const struct llama *m,
              const struct ckpt_state *st, int keep);
// Collective. Reads meta (model/run INI, counters, states) without touching tensors.
int ckpt_read_meta(const struct ckpt_ctx *x, const char *path, struct ckpt_meta *meta);
// Collective. Loads this rank's slices of parameters (and the master weights the model has attached,
// llama.h) and, when st is not NULL, of the moments.
int ckpt_load(const struct ckpt_ctx *x, const char *path, struct llama *m, const struct ckpt_state *st);
// Checkpoints of run_dir to try, best first: the one ckpt/latest names, then every other step_*.h5 newest
// first. note is set (else "") when latest is missing or names no existing step file. Returns the count;
// free with ckpt_candidates_free.
int ckpt_candidates(const char *run_dir, char ***paths, char *note, size_t nnote);
void ckpt_candidates_free(char **paths, int n);
// The first candidate: 1 with its path in *out (heap; free it), 0 when run_dir has none.
int ckpt_latest(const char *run_dir, char **out);
void ckpt_meta_free(struct ckpt_meta *meta);
