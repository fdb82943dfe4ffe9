// The training loop. Read train_step() top to bottom: next batch -> forward -> loss -> backward ->
// reduce -> clip -> update; train_main() around it sets up the run and logs, evaluates, checkpoints and
// stops on signals.
//
// Losses and gradients are exact global means whatever the layout: each rank sums the losses of its
// counted targets, backward runs with dloss = 1 / (counted targets in the whole global batch), and the
// data-parallel group sums gradients. So a run at (dp, tp) reproduces a one-rank run up to float
// rounding, and a run resumed at another layout continues the same curve.
//
// Fine-tuning: with [lora] rank > 0 the trained block is the adapters' (model/lora.h): the optimizer state,
// the gradient norm, the data-parallel sum and the checkpoints (train/lora_ckpt.h) cover the adapters
// only, and the frozen base is loaded from model.init at every start; LoRA dropout is keyed per
// micro-batch by (run.seed, step, micro-batch, dp rank), so a resumed run draws the same masks (a resume
// at another data-parallel layout or accumulation draws others). With train.freeze the frozen tensors
// are left out of AdamW and the gradient norm.
#include "train/train.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/blas_core.h"
#include "core/config.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/timer.h"
#include "data/loader.h"
#include "data/sha256.h"
#include "launch/dp.h"
#include "launch/gpu.h"
#include "launch/gpu_comms.h"
#include "launch/grid.h"
#include "launch/mpi_comm.h"
#include "launch/signals.h"
#include "model/hf.h"
#include "model/meta.h"
#include "model/llama.h"
#include "model/ops/backends.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/schedule.h"
#include "train/ckpt.h"
#include "train/memory.h"
#include "train/lora_ckpt.h"
#include "train/metrics.h"
#include "train/run_config.h"
#include "train/sample.h"

struct trainer {
    struct run_config rc;
    struct cfg cfg;
    struct grid g;
    const struct backend *be;
    // GPU ranks (run.backend = cuda): this rank's GPU and the device communicators over the grid's groups,
    // which the model (TP) and the gradient sync / ZeRO-1 (DP) use in place of g.tp and g.dp; the host
    // values (losses, counts, norms) still go through g's MPI communicators.
    int on_gpu;
    struct gpu_comms gc;
    char gpu[256];                // the device's name
    double peak_tflops;           // for MFU: run.peak_tflops, else the device's (or the CPU's) peak
    double gpu_planned;           // train/memory.h's bytes for this rank
    double gpu_used0;             // bytes in use on the GPU before the model was allocated
    struct llama m;
    struct loader *loader;
    int grad_accum;
    int *inputs, *targets;        // (grad_accum, B, T) host batches of this step
    int *docs;                    // (grad_accum, B, T) document starts (packed data or doc_mask), or NULL

    // Optimizer state (fp32 master weights and moments) covers [opt.off, opt.off + opt.n) of the local
    // parameter block: all of it, or this data-parallel rank's shard under ZeRO-1.
    struct adamw_state opt;
    size_t padded;                // ZeRO-1: the blocks padded to a multiple of dp
    dbuf *grad_shard;             // ZeRO-1: reduce-scattered gradients of the shard (BUF_GRAD)
    struct adamw_range *ranges;   // decay ranges of the shard, rebased to opt.off
    int n_ranges;
    struct adamw_range *norm_ranges;  // ranges this rank counts in the global gradient norm
    int n_norm_ranges;
    struct dp_sync *dps;

    long step;                    // optimizer steps completed
    long long tokens_seen;
    struct rng rng;
    struct metrics mt;
    double t_start;
    char tokenizer_sha256[65];    // of run_dir/tokenizer.model when the run already has one
    int lock_fd;                  // rank 0: run_dir/lock, held for the whole job (core/fs.h)
};

// Every rank learns whether any rank failed; the lowest failing rank's message becomes everyone's, so
// that rank 0 can print it and all ranks exit together instead of some waiting in a collective.
static int agree(struct trainer *t, int rc) {
    struct comm *w = t->g.world;
    double first = comm_all_reduce_f64(w, rc != 0 ? -(double)w->rank : -1e9, COMM_MAX);
    if (first <= -1e9) return 0;
    int src = (int)-first;
    char msg[1024] = {0};
    if (w->rank == src) snprintf(msg, sizeof(msg), "%s", err_msg());
    comm_broadcast(w, msg, sizeof(msg), COMM_U8, src);
    return err_set("%s", msg);
}

// Fault injection for the tests of bad runs: LLAMAC_FAULT=nan_grad:K puts a NaN into a gradient of
// step K, as a diverging run would (the checkpoint writer has LLAMAC_FAULT=ckpt_kill:K).
static void fault_nan_grad(struct trainer *t) {
    const char *f = getenv("LLAMAC_FAULT");
    if (!f || strncmp(f, "nan_grad:", 9) != 0 || atol(f + 9) != t->step + 1) return;
    float nan = NAN;
    t->be->from_host(t->be, t->m.lora ? t->m.lora->grads : t->m.grads, &nan, BUF_GRAD, 1);
}

// The communicator of the data-parallel gradient collectives: the device one on GPU ranks.
static struct comm *dp_grads(const struct trainer *t) { return t->on_gpu ? t->gc.dp : t->g.dp; }

// ---------------------------------------------------------------------------------------------------
// One optimizer step
// ---------------------------------------------------------------------------------------------------

struct step_result {
    double loss, grad_norm, lr;
};

static int train_step(struct trainer *t, struct step_result *out) {
    struct llama *m = &t->m;
    const struct run_config *rc = &t->rc;
    const int B = rc->batch_size, T = rc->seq_len, BT = B * T;

    // next batch: every micro-batch of the step, so the global count of targets is known up front
    long counted = 0;
    int err = 0;
    for (int k = 0; k < t->grad_accum && err == 0; k++) {
        err = t->docs ? loader_next_docs(t->loader, t->inputs + (size_t)k * BT, t->targets + (size_t)k * BT,
                                         t->docs + (size_t)k * BT)
                      : loader_next(t->loader, t->inputs + (size_t)k * BT, t->targets + (size_t)k * BT);
        for (int i = 0; i < BT; i++) counted += t->targets[(size_t)k * BT + i] >= 0;
    }
    if (agree(t, err) != 0) return -1;
    double n_global = comm_all_reduce_f64(t->g.dp, (double)counted, COMM_SUM);
    if (n_global <= 0) return err_set("step %ld: the batch has no counted targets", t->step + 1);

    // forward -> loss -> backward, accumulating gradients over micro-batches; on the last one, the data-
    // parallel sum of each bucket starts as soon as backward has finished its gradients
    llama_zero_grads(m);
    double loss_sum = 0.0;
    for (int k = 0; k < t->grad_accum; k++) {
        int last = k == t->grad_accum - 1;
        if (t->dps && last) {
            dp_sync_reset(t->dps);
            m->on_grads_ready = dp_sync_on_ready;
            m->on_grads_ready_ctx = t->dps;
            m->on_grads_ready_ordered = dp_grads(t)->on_device;
        } else {
            m->on_grads_ready = NULL;
        }
        long n;
        llama_set_docs(m, t->docs ? t->docs + (size_t)k * BT : NULL, B, T);
        // LoRA dropout: this micro-batch's masks, from (seed, step, micro-batch, dp rank) alone (model/lora.h)
        if (m->lora) lora_set_dropout(m, 1, lora_dropout_key(rc->seed, t->step, k, t->g.dp_rank));
        loss_sum += llama_forward(m, t->inputs + (size_t)k * BT, t->targets + (size_t)k * BT, B, T, &n);
        llama_backward(m, (float)(1.0 / n_global));
    }
    m->on_grads_ready = NULL;
    if (m->lora) lora_set_dropout(m, 0, 0);  // evaluation and sampling never drop
    fault_nan_grad(t);

    // reduce: gradients summed over the data-parallel group (the whole block, or reduce-scattered into
    // this rank's shard under ZeRO-1; LoRA: the adapters' block); the loss likewise
    dbuf *grads = m->lora ? m->lora->grads : m->grads;
    if (m->lora && t->g.dp_size > 1) {  // a host communicator reads the device buffer from the host
        struct comm *dc = dp_grads(t);
        if (!dc->on_device) t->be->sync(t->be);
        comm_all_reduce(dc, grads, m->lora->layout.total, COMM_F32, COMM_SUM);
    }
    if (t->dps) dp_sync_finish(t->dps);
    if (rc->zero1 && t->g.dp_size > 1) {
        dp_reduce_scatter_grads(dp_grads(t), t->grad_shard, m->grads, t->padded);
        grads = t->grad_shard;
    }
    out->loss = comm_all_reduce_f64(t->g.dp, loss_sum, COMM_SUM) / n_global;

    // clip: the global norm counts every gradient element once (replicated norms on tp rank 0 only)
    double sumsq = 0.0;
    size_t base = (rc->zero1 && t->g.dp_size > 1) ? t->opt.off : 0;
    for (int i = 0; i < t->n_norm_ranges; i++)
        sumsq += grad_sumsq(t->be, be_at(t->be, BUF_GRAD, grads, t->norm_ranges[i].offset - base), t->norm_ranges[i].n);
    sumsq = comm_all_reduce_f64(rc->zero1 ? t->g.world : t->g.tp, sumsq, COMM_SUM);
    out->grad_norm = sqrt(sumsq);
    if (!isfinite(out->loss) || !isfinite(out->grad_norm))
        return err_set("step %ld: the %s is %s; stopping without an update (the last good checkpoint is kept)",
                       t->step + 1, isfinite(out->loss) ? "gradient norm" : "loss",
                       isnan(isfinite(out->loss) ? out->grad_norm : out->loss) ? "NaN" : "infinite");
    float coef = clip_coef(out->grad_norm, t->rc.adamw.clip);

    // update: AdamW on the master weights this rank holds, writing their compute copy; then (ZeRO-1) every
    // rank gathers the new compute parameters
    out->lr = lr_at(&rc->sched, t->step);
    dbuf *mine = be_at(t->be, BUF_PARAM, m->lora ? m->lora->params : m->params, t->opt.off);
    dbuf *g0 = rc->zero1 && t->g.dp_size > 1 ? grads : be_at(t->be, BUF_GRAD, grads, t->opt.off);
    adamw_step(t->be, &t->opt, mine, g0, t->ranges, t->n_ranges, &rc->adamw, (float)out->lr, coef, t->step + 1);
    if (rc->zero1 && t->g.dp_size > 1) {
        if (!dp_grads(t)->on_device) t->be->sync(t->be);
        dp_all_gather_params(dp_grads(t), m->params, mine, t->padded, t->be->elem_size[BUF_PARAM]);
    }

    t->step++;
    t->tokens_seen += (long long)t->grad_accum * BT * t->g.dp_size;
    rng_u64(&t->rng);
    return 0;
}

// ---------------------------------------------------------------------------------------------------
// Evaluation, checkpoints
// ---------------------------------------------------------------------------------------------------

// Mean loss over the first rc.eval_batches global batches of the validation split.
static int evaluate(struct trainer *t, double *val_loss) {
    struct loader_config lc;
    run_config_loader(&lc, &t->rc, t->g.dp_rank, t->g.dp_size, 1);
    if (t->tokenizer_sha256[0]) lc.tokenizer_sha256 = t->tokenizer_sha256;
    double s[2];
    int err = eval_loss_sums(&t->m, &lc, t->rc.eval_batches, t->inputs, t->targets, s);
    if (agree(t, err) != 0) return -1;
    comm_all_reduce(t->g.dp, s, 2, COMM_F64, COMM_SUM);
    *val_loss = s[0] / s[1];
    return 0;
}

static struct ckpt_ctx ckpt_context(const struct trainer *t) {
    struct ckpt_ctx x = {comm_mpi_handle(t->g.world), t->g.dp_rank, t->g.tp_rank};
    return x;
}

static struct ckpt_state ckpt_state_of(const struct trainer *t) {
    struct ckpt_state st = {t->opt.master, t->opt.m, t->opt.v, t->opt.off, t->opt.n,
                            t->rc.zero1 ? 1 : t->g.dp_rank == 0};
    return st;
}

static int save_checkpoint(struct trainer *t) {
    struct ckpt_meta meta = {0};
    meta.step = t->step;
    meta.tokens_seen = t->tokens_seen;
    meta.rng_state = t->rng.state;
    struct loader_state ls;
    loader_get_state(t->loader, &ls);
    CHECK(sizeof(ls) <= CKPT_LOADER_STATE_MAX);
    memcpy(meta.loader_state, &ls, sizeof(ls));
    meta.loader_state_size = (int)sizeof(ls);
    char model_ini[4096];
    llama_config_to_ini(&t->m.cfg, model_ini, sizeof(model_ini));
    meta.model_ini = model_ini;
    meta.run_ini = cfg_to_string(&t->cfg);
    meta.saved_dp = t->g.dp_size;
    meta.saved_tp = t->g.tp_size;
    meta.saved_zero1 = t->rc.zero1;
    struct ckpt_ctx x = ckpt_context(t);
    struct ckpt_state st = ckpt_state_of(t);
    double t0 = time_now();
    struct llama view = t->m.lora ? lora_ckpt_view(&t->m) : t->m;  // LoRA: the adapters only
    int rc = ckpt_save(&x, t->rc.run_dir, &meta, &view, &st, t->rc.keep_ckpts);
    free(meta.run_ini);
    if (rc == 0) log_info("checkpoint: %s/ckpt/step_%07ld.h5 (%.1f s)", t->rc.run_dir, t->step, time_now() - t0);
    return rc;
}

// Restores everything a checkpoint holds; the model config must match the run's. -2: the file itself is
// unreadable or damaged (another checkpoint may do); -1: it is fine but does not fit this run.
static int resume(struct trainer *t, const char *path) {
    struct ckpt_ctx x = ckpt_context(t);
    struct ckpt_meta meta;
    if (ckpt_read_meta(&x, path, &meta) != 0) return -2;
    struct llama_config saved = {0};
    int rc = llama_config_from_ini(&saved, meta.model_ini, path);
    char why[128];
    if (rc == 0 && !llama_config_same_shape(&saved, &t->m.cfg, why, sizeof(why)))
        rc = err_set("%s: the checkpoint's model differs from the run's config (%s; checkpoint vs run)", path, why);
    if (rc == 0) {  // the seed orders the data: a resumed run with another seed would not continue the same run
        struct cfg saved_run;
        cfg_init(&saved_run);
        long seed = cfg_load_string(&saved_run, meta.run_ini, path) == 0 ? cfg_int(&saved_run, "run.seed", 1234) : -1;
        cfg_free(&saved_run);
        if (seed >= 0 && (uint64_t)seed != t->rc.seed)
            rc = err_set("%s: run.seed = %llu differs from the checkpoint's %ld; a run resumes with its own seed (use "
                         "a new run_dir for another one)", path, (unsigned long long)t->rc.seed, seed);
    }
    if (rc == 0 && meta.loader_state_size != (int)sizeof(struct loader_state))
        rc = err_set("%s: loader state of %d bytes, this llamac stores %zu", path, meta.loader_state_size,
                     sizeof(struct loader_state));
    struct ckpt_state st = ckpt_state_of(t);
    struct lora_config lc;
    if (rc == 0) rc = lora_ckpt_settings(&meta, path, &lc, NULL);
    if (rc == 0 && (lc.rank > 0) != (t->m.lora != NULL))
        rc = err_set("%s: a %s checkpoint, but the run has %s", path, lc.rank ? "LoRA" : "full fine-tuning",
                     t->m.lora ? "lora.rank > 0" : "no [lora] adapters");
    if (rc == 0 && t->m.lora && (lc.rank != t->rc.lora.rank || lc.targets != t->rc.lora.targets))
        rc = err_set("%s: adapters of rank %d, the run asks for rank %d (or other lora.targets)", path, lc.rank,
                     t->rc.lora.rank);
    struct llama view = t->m.lora ? lora_ckpt_view(&t->m) : t->m;
    if (rc == 0 && ckpt_load(&x, path, &view, &st) != 0) rc = -2;
    if (rc == 0) {
        struct loader_state ls;
        memcpy(&ls, meta.loader_state, sizeof(ls));
        rc = loader_set_state(t->loader, &ls);
    }
    if (rc == 0) {
        t->step = (long)meta.step;
        t->tokens_seen = meta.tokens_seen;
        t->rng.state = meta.rng_state;
        log_info("resumed from %s: step %ld, %lld tokens seen (saved at dp %d, tp %d; now dp %d, tp %d)", path, t->step,
                 t->tokens_seen, meta.saved_dp, meta.saved_tp, t->g.dp_size, t->g.tp_size);
    }
    ckpt_meta_free(&meta);
    return rc;
}

// Resumes from the best checkpoint of run_dir that verifies: the one latest names, else (saying why) the
// newest other one. 1 resumed, 0 none there, -1 error (a checkpoint that does not fit the run, or every
// checkpoint damaged: never a silent restart from step 0 while step files exist).
static int resume_best(struct trainer *t) {
    char **paths, note[2048];
    int n = ckpt_candidates(t->rc.run_dir, &paths, note, sizeof(note)), rc = -1;
    char first_err[1024] = "";
    if (n > 0 && note[0] && log_is_main()) log_warn("%s; trying the newest checkpoint, %s", note, paths[0]);
    for (int i = 0; i < n; i++) {
        int r = resume(t, paths[i]);
        int worst = (int)comm_all_reduce_f64(t->g.world, r == -1 ? 2 : r == -2 ? 1 : 0, COMM_MAX);
        if (agree(t, r) == 0) {
            rc = 1;
            if (i > 0 && log_is_main()) log_warn("resumed from %s, an older checkpoint than %s", paths[i], paths[0]);
            break;
        }
        if (worst == 2) break;  // fits no run this config describes: the error stands
        if (!first_err[0]) snprintf(first_err, sizeof(first_err), "%s", err_msg());
        if (log_is_main()) log_warn("%s%s", err_msg(), i + 1 < n ? "; falling back to the previous checkpoint" : "");
        if (i + 1 == n) rc = err_set("%s/ckpt: none of its %d checkpoint%s is usable (newest: %s); move them away to "
                                     "start again from step 0", t->rc.run_dir, n, n > 1 ? "s" : "", first_err);
    }
    if (n == 0) rc = 0;
    ckpt_candidates_free(paths, n);
    return rc;
}

// ---------------------------------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------------------------------

// Ranges of the local block: decay flags for AdamW (cut to the shard) and what counts in the norm.
static void build_ranges(struct trainer *t) {
    const struct param_layout *pl = t->m.lora ? &t->m.lora->layout : &t->m.layout;
    struct adamw_range *all = xmalloc(sizeof(*all) * (size_t)pl->n);
    t->norm_ranges = xmalloc(sizeof(*all) * (size_t)pl->n);
    t->n_norm_ranges = 0;
    int n_all = 0;
    for (int i = 0; i < pl->n; i++) {
        if (!t->m.lora && t->m.frozen && t->m.frozen[i]) continue;  // frozen: no update, not in the norm
        all[n_all++] = (struct adamw_range){pl->t[i].offset, pl->t[i].numel, pl->t[i].decay};
        if (pl->t[i].split_dim == -1 && t->g.tp_rank != 0) continue;  // replicated: counted on tp rank 0
        t->norm_ranges[t->n_norm_ranges++] = all[n_all - 1];
    }
    t->ranges = xmalloc(sizeof(*all) * (size_t)pl->n);
    t->n_ranges = adamw_ranges_clip(t->ranges, all, n_all, t->opt.off, t->opt.off + t->opt.n);
    if (t->rc.zero1 && t->g.dp_size > 1) {  // norm: only what falls in this rank's shard
        int k = adamw_ranges_clip(all, t->norm_ranges, t->n_norm_ranges, t->opt.off, t->opt.off + t->opt.n);
        for (int i = 0; i < k; i++) all[i].offset += t->opt.off;  // back to block offsets
        memcpy(t->norm_ranges, all, sizeof(*all) * (size_t)k);
        t->n_norm_ranges = k;
    }
    free(all);
}

// RUN_DIR/DONE and RUN_DIR/STOPPED tell the batch scripts how the job ended (launch/README.md), so one
// that cannot be written fails the job (the checkpoint is already safe); written through fs_publish like
// every file llamac writes.
static int touch_marker(const char *run_dir, const char *name, const char *text) {
    char *p = fs_join(run_dir, name);
    int rc = fs_write_atomic(p, text, strlen(text));
    free(p);
    return rc;
}

static void remove_marker(const char *run_dir, const char *name) {
    char *p = fs_join(run_dir, name);
    unlink(p);
    free(p);
}

static void progress_line(const struct trainer *t, const struct step_result *r, double tok_s, double mfu,
                          double gpu_mem, double comm_s, double step_s) {
    char el[32], eta[32];
    double elapsed = time_now() - t->t_start;
    log_fmt_duration(el, sizeof(el), elapsed);
    log_fmt_duration(eta, sizeof(eta), tok_s > 0 ? (double)(t->rc.steps - t->step) * t->grad_accum *
                                                       t->rc.batch_size * t->rc.seq_len * t->g.dp_size / tok_s
                                                 : -1);
    char gpu[96] = "";
    if (t->on_gpu)
        snprintf(gpu, sizeof(gpu), " | GPU mem %.2f GiB | comm %.3f s (%.0f%%)", gpu_mem / (1024.0 * 1024 * 1024), comm_s,
                 step_s > 0 ? 100 * comm_s / step_s : 0);
    log_info("step %*ld/%ld | loss %.4f | lr %.2e | grad norm %.3f | %.0f tok/s | MFU %.1f%%%s | %s | ETA %s",
             (int)snprintf(NULL, 0, "%ld", t->rc.steps), t->step, t->rc.steps, r->loss, r->lr, r->grad_norm, tok_s,
             100 * mfu, gpu, el, eta);
}

static void trainer_free(struct trainer *t) {
    if (t->loader) loader_close(t->loader);
    if (t->dps) dp_sync_destroy(t->dps);
    if (t->lock_fd > 0) close(t->lock_fd);
    if (t->be) {
        adamw_state_free(&t->opt, t->be);
        if (t->grad_shard) t->be->free(t->be, t->grad_shard);
    }
    llama_free(&t->m);
    if (t->on_gpu) gpu_comms_free(&t->gc);
    free(t->inputs);
    free(t->targets);
    free(t->docs);
    free(t->ranges);
    free(t->norm_ranges);
    if (log_is_main()) metrics_close(&t->mt);
    cfg_free(&t->cfg);
}

// run.backend to a backend: auto is cuda when every rank sees a GPU; a GPU rank takes the GPU of its node-
// local rank (launch/gpu_comms.h) and checks that the layout fits its free memory before allocating.
static int setup_backend(struct trainer *t) {
    struct run_config *c = &t->rc;
    if (!strcmp(c->backend, "auto")) {
        double all = -comm_all_reduce_f64(t->g.world, -(double)(gpu_count() > 0), COMM_MAX);  // min over ranks
        snprintf(c->backend, sizeof(c->backend), "%s", all > 0 ? "cuda" : "cpu");
    }
    t->on_gpu = !strcmp(c->backend, "cuda");
    t->peak_tflops = c->peak_tflops > 0 ? c->peak_tflops : run_cpu_peak_tflops();
    if (!t->on_gpu) return backend_find(c->backend, c->precision, &t->be);

    if (gpu_bind(&t->gc, &t->g) != 0) return -1;
    gpu_name(t->gpu, sizeof(t->gpu));
    if (c->peak_tflops <= 0) {
        double peak = gpu_peak_bf16_tflops(t->gpu);
        if (peak > 0) t->peak_tflops = peak;
        else if (t->g.world_rank == 0)
            log_warn("MFU: the dense bf16 peak of '%s' is not known; set run.peak_tflops (using %.1f)", t->gpu,
                     t->peak_tflops);
    }
    // Before anything is allocated: the memory this rank may use is the GPU's free memory, split between
    // the ranks that share the GPU; the layout must fit it (train/memory.h).
    size_t fr = 0, tot = 0;
    if (gpu_mem_info(&fr, &tot) != 0) return -1;
    t->gpu_used0 = (double)(tot - fr);  // the CUDA context, other processes
    int n = t->gc.gpus_on_node, sharing = t->g.ranks_per_node / n + (t->gc.device < t->g.ranks_per_node % n);
    size_t es[BUF_KINDS];
    mem_elem_sizes(es, 1, strcmp(c->precision, "fp32") ? PRECISION_BF16 : PRECISION_FP32);
    struct mem_plan mp;
    if (mem_plan_compute(&mp, &c->model, es, 1, c->batch_size, c->seq_len, t->g.dp_size, t->g.tp_size, c->zero1,
                         c->recompute) != 0)
        return -1;
    t->gpu_planned = mp.total;
    char dev[320];
    snprintf(dev, sizeof(dev), "GPU %d (%s%s)", t->gc.device, t->gpu, sharing > 1 ? ", shared" : "");
    if (mem_plan_check(&c->model, es, c->batch_size, c->seq_len, t->g.world_size, t->g.tp_size, c->zero1,
                       c->recompute, (double)fr / sharing, dev) != 0)
        return -1;
    if (backend_find(c->backend, c->precision, &t->be) != 0) return -1;
    CHECKF(!memcmp(es, t->be->elem_size, sizeof(es)), "train/memory.c's element sizes differ from the CUDA backend's");
    return 0;
}

// Sets up model, optimizer state, data and the starting point (resume, released weights or random).
static int trainer_setup(struct trainer *t, const char *ini) {
    int rc = run_config_read(&t->rc, &t->cfg, ini, t->g.dp_size);
    if ((rc = agree(t, rc)) != 0) return -1;
    if ((rc = agree(t, setup_backend(t))) != 0) return -1;
    if (t->on_gpu) rc = gpu_comms_create(&t->gc, &t->g, t->be, t->rc.gpu_comm);
    if ((rc = agree(t, rc)) != 0) return -1;
    // the data first, before the model and optimizer state are allocated (many GB for a large model): a
    // bad data directory costs nothing. A run that already started keeps its tokenizer: the data must have
    // been made with the same one.
    struct loader_config lc;
    run_config_loader(&lc, &t->rc, t->g.dp_rank, t->g.dp_size, 0);
    char *run_tok = fs_join(t->rc.run_dir, "tokenizer.model");
    rc = 0;
    if (access(run_tok, R_OK) == 0) {
        rc = sha256_file_hex(t->tokenizer_sha256, run_tok);
        lc.tokenizer_sha256 = t->tokenizer_sha256;
    }
    free(run_tok);
    if (agree(t, rc) != 0) return -1;
    const char *init_dir = t->rc.init_hf[0] ? t->rc.init_hf : t->rc.init_meta[0] ? t->rc.init_meta : NULL;
    if (init_dir && agree(t, hf_check_data_tokenizer(init_dir, t->rc.data_dir)) != 0)
        return -1;  // released weights need data made with their own tokenizer
    if (agree(t, loader_open(&t->loader, &lc)) != 0) return -1;
    rc = llama_init(&t->m, &t->rc.model, t->be, t->on_gpu ? t->gc.tp : t->g.tp);
    if ((rc = agree(t, rc)) != 0) return -1;
    const struct run_config *c = &t->rc;
    // one job per run_dir: a second one (a requeue racing a late job) would resume the same checkpoint and
    // truncate the first's metrics; the kernel drops the lock of a dead job
    if (log_is_main() && (rc = fs_mkdir_p(c->run_dir)) == 0) {
        t->lock_fd = fs_lock_dir(c->run_dir);
        rc = t->lock_fd < 0 ? -1 : 0;
    }
    if ((rc = agree(t, rc)) != 0) return -1;
    t->grad_accum = c->grad_accum;
    llama_alloc_acts(&t->m, c->batch_size, c->seq_len, c->recompute);
    size_t micro = (size_t)c->batch_size * c->seq_len;
    t->inputs = xmalloc(sizeof(int) * (size_t)t->grad_accum * micro);
    t->targets = xmalloc(sizeof(int) * (size_t)t->grad_accum * micro);

    // LoRA: adapters on the frozen base (model/lora.h); the optimizer state is theirs
    if (c->lora.rank > 0 && agree(t, lora_attach(&t->m, &c->lora, c->seed)) != 0) return -1;
    if (c->freeze[0] && agree(t, llama_freeze(&t->m, c->freeze)) != 0) return -1;

    // optimizer state: the whole local block, or this rank's shard of it under ZeRO-1; the model writes
    // its master weights whenever weights are loaded
    size_t total = t->m.lora ? t->m.lora->layout.total : t->m.layout.total, off = 0, n = total;
    if (c->zero1 && t->g.dp_size > 1) {
        size_t per = dp_shard_size(total, t->g.dp_size);
        t->padded = per * (size_t)t->g.dp_size;
        llama_pad_blocks(&t->m, t->padded);
        off = per * (size_t)t->g.dp_rank;  // the last shards may hold padding only
        n = per;
        t->grad_shard = t->be->alloc(t->be, BUF_GRAD, per);
    }
    adamw_state_init(&t->opt, t->be, off, n);
    if (t->m.lora) {  // the base keeps no fp32 master weights: it never changes
        t->m.lora->master = t->opt.master;
        lora_init_values(&t->m, c->seed);
    } else {
        t->m.master = t->opt.master;
        t->m.master_off = off;
        t->m.master_n = n;
    }
    build_ranges(t);
    if (t->g.dp_size > 1 && !c->zero1 && !t->m.lora)
        t->dps = dp_sync_create(dp_grads(t), t->m.grads, total, c->dp_bucket_mb);

    // the data were opened before the model (above); what fine-tuning data need besides
    if (loader_has_docs(t->loader)) t->docs = xmalloc(sizeof(int) * (size_t)t->grad_accum * micro);
    struct loader_info li;
    loader_get_info(t->loader, &li);
    if (li.packed)
        log_info("fine-tuning data: %llu examples packed whole into %llu windows of %d (%.1f%% of positions are "
                 "targets); %llu cut to seq_len + 1 tokens, %llu dropped; attention and positions restart per example",
                 (unsigned long long)li.examples, (unsigned long long)(li.positions / (uint64_t)c->seq_len), c->seq_len,
                 li.positions ? 100.0 * li.targets / li.positions : 0, (unsigned long long)li.truncated,
                 (unsigned long long)li.dropped);
    if (c->eval_every) {  // a small task set may hold out nothing: evaluation off, said once
        int has = 0;
        if (agree(t, loader_split_has_data(c->data_dir, 1, c->seq_len, &has)) != 0) return -1;
        if (!has) {
            log_warn("evaluation off: %s has no validation data for seq_len %d (prep holds out --val-fraction of the "
                     "documents; fine-tuning sets hold out at least one record of two or more)", c->data_dir, c->seq_len);
            t->rc.eval_every = 0;
        }
    }

    // start: resume from the newest checkpoint in run_dir, else released weights, else random
    rng_seed(&t->rng, c->seed);
    rc = 0;
    if (t->m.lora) {  // the frozen base always comes from model.init; a checkpoint holds the adapters
        if (c->init_hf[0]) rc = hf_load_weights(&t->m, c->init_hf);
        else if (c->init_meta[0]) rc = meta_load_weights(&t->m, c->init_meta);
        else llama_init_random(&t->m, c->seed);
        if (agree(t, rc) != 0) return -1;
    }
    int found = resume_best(t);
    if (found < 0) return -1;
    if (!found && !t->m.lora && c->init_hf[0]) rc = hf_load_weights(&t->m, c->init_hf);
    else if (!found && !t->m.lora && c->init_meta[0]) rc = meta_load_weights(&t->m, c->init_meta);
    else if (!found && !t->m.lora) llama_init_random(&t->m, c->seed);
    if (agree(t, rc) != 0) return -1;
    if (t->m.lora) {
        char tg[64];
        lora_targets_str(c->lora.targets, tg, sizeof(tg));
        long long np = llama_param_count(&c->model);
        log_info("LoRA: rank %d, alpha %g, dropout %g on %s: %zu trainable parameters (%.3f%% of %lld), the base "
                 "frozen", c->lora.rank, c->lora.alpha, c->lora.dropout, tg, t->m.lora->layout.total,
                 100.0 * t->m.lora->layout.total / np, np);
    }
    if (!found && c->init_hf[0]) log_info("initialised from Hugging Face weights in %s", c->init_hf);
    if (!found && c->init_meta[0]) log_info("initialised from Meta weights in %s", c->init_meta);
    return 0;
}

static void log_banner(const struct trainer *t, const char *ini) {
    const struct run_config *c = &t->rc;
    char layout[128];
    grid_describe(&t->g, layout, sizeof(layout));
    char blas[160];
    blas_core_describe(blas, sizeof(blas));
    log_info("llamac train %s: %s, %lld parameters, %s; %s", ini, c->model.name, (long long)llama_param_count(&c->model),
             layout, blas);
    if (t->on_gpu)
        log_info("  backend cuda (%s), rank 0 on GPU %d of %d: %s; GPU communicators: %s; MFU against %.1f TFLOP/s",
                 t->be->precision == PRECISION_BF16 ? "bf16" : "fp32", t->gc.device, t->gc.gpus_on_node, t->gpu,
                 dev_transport_name(t->gc.transport), t->peak_tflops);
    log_info("  batch %d x %d tokens per rank, %d micro-batch%s per step: %lld tokens per step; %ld steps",
             c->batch_size, c->seq_len, t->grad_accum, t->grad_accum > 1 ? "es" : "", c->global_batch_tokens, c->steps);
    log_info("  AdamW lr %.3g (%s, warmup %ld, min %.3g), betas %.3g/%.3g, wd %.3g, clip %.3g%s; run_dir %s", c->sched.lr,
             lr_schedule_name(c->sched.kind), c->sched.warmup, c->sched.min_lr, c->adamw.beta1, c->adamw.beta2,
             c->adamw.weight_decay, c->adamw.clip, c->zero1 ? ", ZeRO-1" : "", c->run_dir);
}

int train_main(const char *ini, char **sets, int n_sets, int *argc, char ***argv) {
    struct trainer tr, *t = &tr;
    memset(t, 0, sizeof(*t));
    int teardown = 0;  // stopped on SIGTERM/SIGINT: the launcher is ending the job (grid_exit_now)
    cfg_init(&t->cfg);
    int rc = cfg_load_file(&t->cfg, ini);
    for (int i = 0; rc == 0 && i < n_sets; i++) rc = cfg_set(&t->cfg, sets[i]);
    if (rc != 0) {
        cfg_free(&t->cfg);
        return -1;
    }
    // the layout is needed to start MPI; every other key is read (and checked) once it has started
    long tp = cfg_int(&t->cfg, "parallel.tp", 1);
    if (tp < 1) return err_set("%s: parallel.tp must be >= 1", ini);
    if (grid_init(&t->g, argc, argv, (int)tp) != 0) {
        cfg_free(&t->cfg);
        grid_finalize(&t->g);
        return -1;
    }
    signals_install();
    rc = trainer_setup(t, ini);
    if (rc != 0) goto out;
    const struct run_config *c = &t->rc;

    if (log_is_main()) {
        char *tok_from = fs_join(c->data_dir, "tokenizer.model"), *tok_to = fs_join(c->run_dir, "tokenizer.model");
        rc = fs_mkdir_p(c->run_dir);
        if (rc == 0) rc = fs_copy_file(tok_from, tok_to);
        free(tok_from);
        free(tok_to);
        if (rc == 0) rc = metrics_open(&t->mt, c->run_dir, t->step);
        remove_marker(c->run_dir, "DONE");
        remove_marker(c->run_dir, "STOPPED");
    }
    if ((rc = agree(t, rc)) != 0) goto out;
    log_banner(t, ini);
    if (t->step >= c->steps) {
        log_info("the run in %s is complete (step %ld of %ld)", c->run_dir, t->step, c->steps);
        rc = agree(t, log_is_main() ? touch_marker(c->run_dir, "DONE", "complete\n") : 0);
        goto out;
    }

    if (t->step == 0 && c->eval_every) {  // the starting point of the validation curve
        double vl = 0;
        if ((rc = agree(t, evaluate(t, &vl))) != 0) goto out;
        log_info("eval step 0: val loss %.4f, perplexity %.2f", vl, exp(vl));
        if (log_is_main()) metrics_eval(&t->mt, 0, vl);
    }
    t->t_start = time_now();
    const double tokens_per_step = (double)c->global_batch_tokens;
    const double flops_per_token = run_flops_per_token(&c->model, c->seq_len);
    double tok_s = 0;
    int stopped = 0;
    long first_step = t->step;
    while (t->step < c->steps) {
        double t0 = time_now();
        struct step_result r = {0};
        if ((rc = agree(t, train_step(t, &r))) != 0) break;
        double dt = time_now() - t0;
        tok_s = tok_s > 0 ? 0.7 * tok_s + 0.3 * tokens_per_step / dt : tokens_per_step / dt;
        double mfu = flops_per_token * tok_s / (t->peak_tflops * 1e12 * t->g.world_size);
        // GPU: memory in use on this rank's device, and the time its communicators' operations took
        double gpu_mem = -1, comm_s = 0;
        if (t->on_gpu) {
            size_t fr = 0, tot = 0;
            gpu_mem = gpu_mem_info(&fr, &tot) == 0 ? (double)(tot - fr) : 0;
            comm_s = dev_comm_take_seconds(t->gc.tp) + dev_comm_take_seconds(t->gc.dp);
            if (t->step == first_step + 1 && log_is_main())
                log_info("GPU memory: %.1f MiB in use after step %ld less %.1f MiB before the backend (cudaMemGetInfo): "
                         "%.1f MiB; planned %.1f MiB (llamac inspect --backend cuda)",
                         gpu_mem / 1048576.0, t->step, t->gpu_used0 / 1048576.0, (gpu_mem - t->gpu_used0) / 1048576.0,
                         t->gpu_planned / 1048576.0);
        }
        if (log_is_main()) {
            metrics_train(&t->mt, t->step, r.loss, r.lr, r.grad_norm, t->tokens_seen, tokens_per_step / dt, mfu,
                          time_now() - t->t_start, gpu_mem, comm_s);
            if (t->step % c->log_every == 0 || t->step == 1 || t->step == c->steps)
                progress_line(t, &r, tok_s, mfu, gpu_mem, comm_s, dt);
        }
        if (c->eval_every && (t->step % c->eval_every == 0 || t->step == c->steps)) {
            double vl = 0;
            if ((rc = agree(t, evaluate(t, &vl))) != 0) break;
            log_info("eval step %ld: val loss %.4f, perplexity %.2f", t->step, vl, exp(vl));
            if (log_is_main()) {
                metrics_eval(&t->mt, t->step, vl);
                if (metrics_plot(&t->mt, c->model.name) != 0) log_warn("%s", err_msg());
            }
        }
        stopped = stop_agreed(t->g.world, c->wall_time_s, t->t_start);
        if (!stopped && c->stop_after > 0 && t->step - first_step >= c->stop_after) stopped = 2;
        if ((c->ckpt_every && t->step % c->ckpt_every == 0) || t->step == c->steps || stopped) {
            if ((rc = agree(t, save_checkpoint(t))) != 0) break;
        }
        if (stopped) break;
    }
    if (stopped == 1) {
        struct stop_info si;
        stop_last(&si);
        teardown = si.reason == STOP_SIGNAL && (si.signal == SIGTERM || si.signal == SIGINT);
    }
    int marker = 0;
    if (rc == 0 && log_is_main()) {
        if (metrics_plot(&t->mt, c->model.name) != 0) log_warn("%s", err_msg());  // a picture: not worth a failure
        if (stopped) {
            char why[128];
            if (stopped == 2) {
                snprintf(why, sizeof(why), "run.stop_after = %ld steps in this job", c->stop_after);
            } else {
                struct stop_info si;
                stop_last(&si);
                stop_describe(why, sizeof(why), &si);
            }
            log_info("stopped at step %ld (%s) after a checkpoint; run the same command to resume", t->step, why);
            marker = touch_marker(c->run_dir, "STOPPED", why);
        } else {
            log_info("done: %ld steps, %lld tokens; loss curve %s/loss.png", t->step, t->tokens_seen, c->run_dir);
            marker = touch_marker(c->run_dir, "DONE", "complete\n");
        }
    }
    if (rc == 0) rc = agree(t, marker);  // every rank leaves the same way (grid_exit_now or grid_finalize)
out:
    trainer_free(t);
    // After a SIGTERM/SIGINT stop, MPI_Finalize would outlast mpirun's grace period (grid.h): the
    // checkpoint and STOPPED are on disk, so every rank exits 0 at once.
    if (rc == 0 && teardown) grid_exit_now(&t->g, 0);
    grid_finalize(&t->g);
    return rc;
}
