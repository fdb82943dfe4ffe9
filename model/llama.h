// The LLaMA model: parameters, gradients and activations in one block each, and the whole-model forward
// (loss = cross-entropy over counted targets) and hand-written backward.
//
// The same code runs one rank or a tensor-parallel group: every size below is this rank's (heads, kv
// heads, ffn hidden and vocabulary divided by tp), and the model calls the tp communicator at the points
// Megatron-LM does (after o_proj and down_proj in forward, at the inputs of q/k/v, gate/up and lm_head
// in backward, around the embedding and the cross-entropy). With comm_self() those calls are no-ops.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "core/backend.h"
#include "core/comm.h"
#include "model/config.h"
#include "model/params.h"

// Views into the activation block for one transformer block. Shapes use this rank's sizes;
// QKV = (NH + 2 KVH) * HS.
struct llama_layer_acts {
    dbuf *x;      // (B,T,C)   residual stream entering the block (kept for every layer)
    dbuf *rstd1;  // (B,T)     input_layernorm statistics
    dbuf *xn1;    // (B,T,C)   normed input of attention
    dbuf *qkv;    // (B,T,QKV) q, k after RoPE, and v
    dbuf *att;    // (B,T,NH*HS) attention output before o_proj
    dbuf *lse;    // (B,NH,T)  softmax log-sum-exp per query row
    dbuf *xmid;   // (B,T,C)   residual stream after attention
    dbuf *rstd2;  // (B,T)     post_attention_layernorm statistics
    dbuf *xn2;    // (B,T,C)   normed input of the MLP
    dbuf *gu;     // (B,T,2F)  [gate | up]
    dbuf *h;      // (B,T,F)   silu(gate) * up
};

struct llama {
    struct llama_config cfg;
    struct param_layout layout;
    const struct backend *be;
    struct comm *tp;          // tensor-parallel group: host buffers, or device ones when tp->on_device
    dbuf *params;             // BUF_PARAM, layout.total elements
    dbuf *grads;              // BUF_GRAD, same layout; NULL with LoRA adapters (model/lora.h)
    struct lora *lora;        // LoRA adapters, or NULL
    unsigned char *frozen;    // per layout tensor: 1 = frozen (no weight gradient), or NULL (llama_freeze)
    // Optional fp32 master weights (BUF_STATE) of the range [master_off, master_off + master_n) of the
    // block: the optimizer's (optim/adamw.h), attached by the trainer. Every loader of weights (random
    // init, Hugging Face, checkpoints) writes them beside the compute parameters, so they are exact even
    // when the compute parameters are bf16.
    dbuf *master;
    size_t master_off, master_n;
    dbuf *rope_cos, *rope_sin;  // BUF_STATE (max_seq_len, HS/2)

    // Activations, sized for up to cap_B x cap_T by llama_alloc_acts; B, T of the last forward
    int cap_B, cap_T, B, T, recompute;
    dbuf *acts;               // the activation block (BUF_ACT) ...
    dbuf *acts32;             // ... and its fp32 part (BUF_ACT32)
    struct llama_layer_acts *layers;  // n_layers + 1: layers[L].x is the final residual stream
    struct llama_layer_acts scratch;  // recompute: every layer but x points here
    dbuf *tokens, *targets;   // BUF_INT (B,T)
    dbuf *docs;               // BUF_INT (B,T): document starts of packed windows (llama_set_docs)
    int docs_on;              // whether the next forwards use docs
    dbuf *rstdf, *xnf;        // final norm: (B,T), (B,T,C)
    dbuf *logits;             // (B,T,Vl), overwritten by its gradient in backward
    dbuf *rowmax, *sums, *losses, *lse_ce;  // (B,T), (2,B,T), (B,T), (B,T)
    dbuf *y;                  // (B,T,C) output of o_proj / down_proj before the residual add
    // Backward scratch
    dbuf *dres;               // (B,T,C) gradient of the residual stream
    dbuf *dxn, *dqkv, *datt, *dgu, *dh;
    float *host_losses;       // (B,T)

    // Called during backward whenever a contiguous range of gradients is final (data-parallel overlap):
    // the tail (norm, lm_head), each layer from last to first, then embed_tokens. The backend is
    // synchronized before each call unless on_grads_ready_ordered says the callback orders itself with
    // the backend's stream (a device communicator, core/comm.h).
    void (*on_grads_ready)(void *ctx, size_t offset, size_t n);
    void *on_grads_ready_ctx;
    int on_grads_ready_ordered;
};

// Builds the model for rank tp->rank of the tensor-parallel group: parameters and gradients allocated
// (zero) on the backend, RoPE tables computed. -1 with err_set on a config that does not fit.
int llama_init(struct llama *m, const struct llama_config *cfg, const struct backend *be, struct comm *tp);
void llama_free(struct llama *m);
// (Re)allocates activations for batches of B x T; recompute keeps only each block's input and
// recomputes the rest in backward.
void llama_alloc_acts(struct llama *m, int B, int T, int recompute);
// Activation elements (act, act32) a B x T step needs, per the same table llama_alloc_acts uses.
void llama_act_sizes(const struct llama_config *c, const struct param_layout *pl, int B, int T, int recompute,
                     size_t *act, size_t *act32);

// Deterministic initialisation that does not depend on the tp layout: element (r, c) of each canonical
// tensor is N(0, 0.02) drawn from a stream keyed by (seed, name), output projections (o_proj, down_proj)
// scaled by 1/sqrt(2 L) as in GPT-2, norms 1.
void llama_init_random(struct llama *m, uint64_t seed);

// Forward over tokens (B,T) with targets (B,T) (-1 = ignored; NULL = no loss, logits only).
// Returns the sum of the per-token losses of this rank's batch; *n_counted gets the number of counted
// targets. The same on every rank of a tp group.
double llama_forward(struct llama *m, const int *tokens, const int *targets, int B, int T, long *n_counted);
// Packed windows: docs (B,T) host int32, the index in its row of the first token of each token's document
// (core/backend.h), for the forwards that follow (and their backward); NULL: plain causal rows again.
// Attention stays within documents and RoPE positions restart at each. B, T as the next forward's.
void llama_set_docs(struct llama *m, const int *docs, int B, int T);
// Backward of the last forward with d(loss)/d(each counted token's loss) = dloss (1 / number of counted
// targets for a mean). Gradients accumulate into m->grads; call llama_zero_grads first.
void llama_backward(struct llama *m, float dloss);
void llama_zero_grads(struct llama *m);
// Reallocates the parameter and gradient blocks (zeroed) with room for n >= layout.total elements, so
// that a data-parallel group can shard them evenly (ZeRO-1). Call before the parameters are set.
void llama_pad_blocks(struct llama *m, size_t n);

// Host copies (fp32) of this rank's parameters or gradients, in layout order.
void llama_params_to_host(const struct llama *m, float *host);
void llama_params_from_host(struct llama *m, const float *host);
// Sets parameters [off, off + n) of the block from fp32 host values, and the part of the master weights
// that falls in that range.
void llama_set_params(struct llama *m, size_t off, const float *host, size_t n);
void llama_grads_to_host(const struct llama *m, float *host);
// Logits of position t of sequence b after a forward with targets NULL: out (V) on every rank.
void llama_logits_at(struct llama *m, int b, int t, float *out);
