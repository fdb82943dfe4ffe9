// A training run's configuration: every section of RUN.ini read and checked in one place, for
// `llamac train`, `eval` and `sample`. Keys (defaults in parentheses):
//
//   [run]      run_dir (runs/NAME), seed (1234), backend (cpu; auto: cuda when a device is visible, else
//              cpu; cuda), precision (auto: bf16 on cuda, fp32 on cpu;
//              bf16 or fp32), wall_time (0 = none; seconds or H:MM:SS),
//              stop_after (0 = none: steps this job runs before it checkpoints and stops, as on a signal),
//              recompute (false), peak_tflops (0 = the GPU's dense bf16 peak when known, else estimated from
//              the CPU), log_every (1)
//   [model]    preset or fields (model/config.h), init (random | hf:DIR | meta:DIR)
//   [data]     dir (required), weights ("en:0.4, ru:0.3, de:0.3"; empty = proportional to tokens),
//              doc_mask (false: plain data attends across documents in a window; true: within each, as
//              packed fine-tuning data always does), drop_long (false: fine-tuning examples longer than
//              seq_len + 1 tokens are cut; true: dropped)
//   [train]    batch_size (8, per rank), seq_len (256), steps (required), global_batch_tokens
//              (batch_size * seq_len * dp: no accumulation), eval_every (100), eval_batches (10),
//              ckpt_every (100), keep_ckpts (3)
//   [optim]    schedule, lr, min_lr, warmup, decay_frac, decay_shape (optim/schedule.h),
//              betas, eps, weight_decay, clip (optim/adamw.h)
//   [parallel] tp (1), zero1 (false), bucket_mb (25), gpu_comm (auto | nccl | staged: launch/gpu_comms.h)
//   [lora]     rank (0: no adapters, full fine-tuning), alpha (16), dropout (0: p in [0, 1) on each
//              adapter's input in training, PEFT's lora_dropout; masks keyed by seed, step, micro-batch
//              and dp rank, so resumes are exact), targets ("q,v"; any of q,k,v,o,gate,up,down or all):
//              adapters with the base frozen (model/lora.h)
//   [train]    freeze ("": e.g. "embeddings, layers 0-11, norm, lm_head"; without LoRA)
#pragma once
#include <stdint.h>

#include "data/loader.h"
#include "model/config.h"
#include "model/lora.h"
#include "optim/adamw.h"
#include "optim/schedule.h"

struct cfg;

#define RUN_MAX_SOURCES 16

struct run_config {
    char run_dir[1024], backend[16], precision[16], data_dir[1024], init_hf[1024];
    char init_meta[1024];  // model.init = meta:DIR (Meta's params.json + consolidated.NN.pth)
    uint64_t seed;
    double wall_time_s, peak_tflops;
    int recompute, log_every;
    long stop_after;
    struct llama_config model;
    int n_sources;
    char source_names[RUN_MAX_SOURCES][32];
    double weights[RUN_MAX_SOURCES];
    int doc_mask, drop_long;
    int batch_size, seq_len, grad_accum, eval_every, eval_batches, ckpt_every, keep_ckpts;
    long steps;
    long long global_batch_tokens;
    struct lr_schedule sched;
    struct adamw_config adamw;
    int tp, zero1;
    double dp_bucket_mb;
    char gpu_comm[16];
    struct lora_config lora;  // rank 0: none
    char freeze[256];         // train.freeze, or ""
};

// Reads and checks every key (unknown keys are errors); dp is the data-parallel size the run has.
int run_config_read(struct run_config *rc, struct cfg *c, const char *origin, int dp);
// The peak used for MFU on the CPU backend: cores x 2.5 GHz x 32 fp32 FLOP/cycle.
double run_cpu_peak_tflops(void);
// The loader settings of this run for one data-parallel rank (split 0 train, 1 validation).
void run_config_loader(struct loader_config *lc, const struct run_config *rc, int dp_rank, int dp_size, int split);
// Model FLOPs per token of one training step (forward + backward): 6 N (matmul parameters) + 6 L T C.
double run_flops_per_token(const struct llama_config *c, int T);
