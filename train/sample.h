// Using a trained checkpoint: open it as a one-rank model, generate text, evaluate validation loss.
#pragma once
#include <stdint.h>
#include <stdio.h>

#include "model/llama.h"
#include "train/ckpt.h"

struct tokenizer;
struct loader_config;

// Resolves `path` (a checkpoint file, or a run directory whose newest checkpoint is used), reads it
// and builds the model on the CPU backend with its parameters. run_dir_out receives the run directory
// (where tokenizer.model lives); meta_out (may be NULL) the checkpoint's metadata (free it).
int ckpt_open_model(struct llama *m, const char *path, char *run_dir_out, size_t n, struct ckpt_meta *meta_out);

struct sample_opts {
    float temperature;   // 0 = greedy
    float top_p;         // nucleus sampling: smallest set of tokens whose probability reaches top_p
    int max_tokens;
    uint64_t seed;
};

// Continues `prompt` (BOS added) and writes the generated text to out as it comes; stops at EOS or
// max_tokens. The context slides when it reaches max_seq_len.
int sample_generate(struct llama *m, const struct tokenizer *tok, const char *prompt, const struct sample_opts *o,
                    FILE *out);
// Loss over the first `batches` batches a loader with config lc yields (the validation split for
// evaluation): sums[0] the summed token losses, sums[1] the counted targets, of this rank only.
// inputs and targets are scratch of B*T ints; m's activations must fit B x T.
int eval_loss_sums(struct llama *m, const struct loader_config *lc, int batches, int *inputs, int *targets,
                   double sums[2]);
// Picks a token from logits (V) with temperature and top-p; u in [0,1) is the random draw.
int sample_pick(const float *logits, int V, float temperature, float top_p, double u);
