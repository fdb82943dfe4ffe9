// Using a trained checkpoint: open it as a one-rank model, generate text, evaluate validation loss.
#pragma once
#include <stdint.h>
#include <stdio.h>

#include "model/llama.h"
#include "train/ckpt.h"

struct tokenizer;
struct loader_config;
struct token_buf;

// Resolves `path` (a checkpoint file, or a run directory whose newest checkpoint is used), reads it
// and builds the model on the CPU backend with its parameters. *run_dir_out (may be NULL) receives the
// run directory (where tokenizer.model lives; heap, free it); meta_out (may be NULL) the checkpoint's
// metadata (free it).
int ckpt_open_model(struct llama *m, const char *path, char **run_dir_out, struct ckpt_meta *meta_out);
int ckpt_open_model_on(struct llama *m, const struct backend *be, const char *path, char **run_dir_out,
                       struct ckpt_meta *meta_out);

// Where a model comes from: exactly one of a llamac checkpoint (file or run directory), a Hugging Face
// directory (model/hf.h) or a Meta one (model/meta.h).
struct model_source {
    const char *ckpt, *hf, *meta;
};
// Builds the model of src on be with its weights; *tok_path receives the tokenizer that goes with it
// (RUN_DIR/tokenizer.model, or the directory's tokenizer.model or tokenizer.json; heap, free it, NULL on
// failure); meta_out (checkpoints only, may be NULL) the checkpoint's metadata.
int model_open(struct llama *m, const struct backend *be, const struct model_source *src, char **tok_path,
               struct ckpt_meta *meta_out);

struct sample_opts {
    float temperature;          // 0 = greedy
    float top_p;                // nucleus sampling: smallest set of tokens whose probability reaches top_p
    int top_k;                  // keep the k most likely tokens (0 = all)
    float repetition_penalty;   // 1 = none; p > 1 divides the positive logits and multiplies the negative
                                // ones of every token already in the context (prompt and output), as CTRL
                                // and Hugging Face's RepetitionPenaltyLogitsProcessor do
    int max_tokens;
    uint64_t seed;
    const char *stop[8];        // stop strings: generation ends where one appears in the output (not printed)
    int n_stop;
    int no_cache;               // 1: a full forward over the context for every token (the oracle of the cache)
};

// What a generation did: tokens and seconds of the prefill (the prompt in one pass) and of the decode
// (one token per step).
struct sample_stats {
    int prompt_tokens, new_tokens, decode_steps;  // decode_steps: forwards after the prefill
    double prefill_s, decode_s;
};

// Generates after the token ids prompt[0..n) and writes the new text to out as it comes (out may be
// NULL); stops at an end token (EOS, and <|eot_id|> when the vocabulary has it), a stop string or
// max_tokens. With the KV cache (model/kvcache.h, the default) memory is sized by n + max_tokens, capped
// at max_seq_len; when the context reaches max_seq_len the cache is refilled with its last half.
// gen (may be NULL) receives the generated ids, st (may be NULL) the counts and times.
int sample_tokens(struct llama *m, const struct tokenizer *tok, const int *prompt, int n, const struct sample_opts *o,
                  FILE *out, struct token_buf *gen, struct sample_stats *st);
// Continues `prompt` (BOS added), echoing the prompt first.
int sample_generate(struct llama *m, const struct tokenizer *tok, const char *prompt, const struct sample_opts *o,
                    FILE *out);

// Chat templates. Llama 3 when the vocabulary has <|start_header_id|>: <|begin_of_text|>, then per
// message <|start_header_id|>ROLE<|end_header_id|>\n\n CONTENT <|eot_id|>, then the assistant's header.
// Otherwise Llama 2: per user turn BOS "[INST] " (the system message as "<<SYS>>\n" SYSTEM "\n<</SYS>>\n\n"
// before the first user message) USER " [/INST]", an assistant reply following as " " REPLY " " EOS.
struct chat_msg {
    const char *role;     // "system", "user", "assistant"
    const char *content;
};
// Appends the template's ids for msgs[0..n) and the generation prompt. -1 with err_set on a message
// order the template cannot express.
int chat_encode(const struct tokenizer *tok, const struct chat_msg *msgs, int n, struct token_buf *out);
// Whether tok is Llama 3's (has <|start_header_id|>); its id in *id when so.
int chat_is_llama3(const struct tokenizer *tok, int *header_id);

// Loss over the first `batches` batches a loader with config lc yields (the validation split for
// evaluation): sums[0] the summed token losses, sums[1] the counted targets, of this rank only.
// inputs and targets are scratch of B*T ints; m's activations must fit B x T.
int eval_loss_sums(struct llama *m, const struct loader_config *lc, int batches, int *inputs, int *targets,
                   double sums[2]);
// Picks a token from logits (V) with temperature, top-k (0 = off) and top-p; u in [0,1) is the random
// draw. Temperature 0 is the argmax (the lowest id among equal maxima).
int sample_pick(const float *logits, int V, float temperature, int top_k, float top_p, double u);
// The repetition penalty on logits (V) for the ids ctx[0..n) (each id once).
void sample_penalize(float *logits, int V, const int *ctx, size_t n, float penalty);
