#include "train/run_config.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "core/error.h"
#include "core/fs.h"
#include "model/hf.h"
#include "model/meta.h"

// A path key into its buffer, or an error naming the key and the limit (never silently truncated).
static int copy_path(char *dst, size_t n, const char *value, const char *key, const char *origin) {
    if (strlen(value) >= n)
        return err_set("%s: %s is a path of %zu bytes; llamac takes at most %zu", origin, key, strlen(value), n - 1);
    memcpy(dst, value, strlen(value) + 1);
    return 0;
}

// "3600", "1:30:00" or "90:00" -> seconds
static int parse_duration(const char *s, double *out) {
    int h = 0, m = 0, sec = 0;
    char extra;
    if (sscanf(s, "%d:%d:%d%c", &h, &m, &sec, &extra) == 3) *out = h * 3600.0 + m * 60.0 + sec;
    else if (sscanf(s, "%d:%d%c", &m, &sec, &extra) == 2) *out = m * 60.0 + sec;
    else {
        char *end;
        *out = strtod(s, &end);
        while (isspace((unsigned char)*end)) end++;
        if (end == s || *end) return -1;
    }
    return *out < 0 ? -1 : 0;
}

// "en:0.4, ru:0.3" -> names and weights
static int parse_weights(struct run_config *rc, const char *s, const char *origin) {
    rc->n_sources = 0;
    char *buf = fs_printf("%s", s);
    int err = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok && !err; tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok)) tok++;
        if (!*tok) continue;
        char *colon = strchr(tok, ':');
        char *end;
        double w = colon ? strtod(colon + 1, &end) : -1;
        if (!colon || colon == tok || end == colon + 1 || w < 0 || colon - tok >= 32)
            err = err_set("%s: data.weights: '%s' is not SOURCE:WEIGHT", origin, tok);
        else if (rc->n_sources == RUN_MAX_SOURCES)
            err = err_set("%s: data.weights: at most %d sources", origin, RUN_MAX_SOURCES);
        else {
            snprintf(rc->source_names[rc->n_sources], 32, "%.*s", (int)(colon - tok), tok);
            rc->weights[rc->n_sources++] = w;
        }
    }
    free(buf);
    return err;
}

double run_cpu_peak_tflops(void) {
    // An estimate for a CPU: cores x 2.5 GHz x 32 fp32 FLOP/cycle (two AVX2 FMA units). Set
    // run.peak_tflops for the machine at hand; MFU is only as good as this figure.
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return (double)(n > 0 ? n : 1) * 2.5e9 * 32 / 1e12;
}

int run_config_read(struct run_config *rc, struct cfg *c, const char *origin, int dp) {
    memset(rc, 0, sizeof(*rc));
    // [model] first: run_dir defaults to runs/NAME
    const char *init = cfg_str(c, "model.init", "random");
    if (!strncmp(init, "hf:", 3)) {
        if (copy_path(rc->init_hf, sizeof(rc->init_hf), init + 3, "model.init", origin) != 0) return -1;
        if (hf_read_config(&rc->model, rc->init_hf) != 0) return -1;
    } else if (!strncmp(init, "meta:", 5)) {
        if (copy_path(rc->init_meta, sizeof(rc->init_meta), init + 5, "model.init", origin) != 0) return -1;
        if (meta_read_config(&rc->model, rc->init_meta) != 0) return -1;
    } else if (strcmp(init, "random") != 0) {
        return err_set("%s: model.init = '%s': expected random, hf:DIR or meta:DIR", origin, init);
    }
    if (llama_config_read(&rc->model, c, "model") != 0) return -1;
    if (!rc->model.name[0]) snprintf(rc->model.name, sizeof(rc->model.name), "llama");

    char *def_dir = fs_join("runs", rc->model.name);
    int bad = copy_path(rc->run_dir, sizeof(rc->run_dir), cfg_str(c, "run.run_dir", def_dir), "run.run_dir", origin);
    free(def_dir);
    if (bad) return -1;
    snprintf(rc->backend, sizeof(rc->backend), "%s", cfg_str(c, "run.backend", "cpu"));
    snprintf(rc->precision, sizeof(rc->precision), "%s", cfg_str(c, "run.precision", "auto"));
    rc->seed = (uint64_t)cfg_int_in(c, "run.seed", 1234, 0, LONG_MAX);
    const char *wt = cfg_str(c, "run.wall_time", "0");
    if (parse_duration(wt, &rc->wall_time_s) != 0)
        return err_set("%s: run.wall_time = '%s' is not seconds or H:MM:SS", origin, wt);
    rc->stop_after = cfg_int_in(c, "run.stop_after", 0, 0, LONG_MAX);
    rc->recompute = cfg_bool(c, "run.recompute", 0);
    rc->peak_tflops = cfg_float_in(c, "run.peak_tflops", 0, 0, 1e9);  // 0: resolved with the backend (train.c)
    rc->log_every = (int)cfg_int_in(c, "run.log_every", 1, 1, INT_MAX);

    const char *dd = cfg_str(c, "data.dir", NULL);
    if (!dd) return err_set("%s: data.dir is required (a directory written by llamac prep)", origin);
    if (copy_path(rc->data_dir, sizeof(rc->data_dir), dd, "data.dir", origin) != 0) return -1;
    if (parse_weights(rc, cfg_str(c, "data.weights", ""), origin) != 0) return -1;
    rc->doc_mask = cfg_bool(c, "data.doc_mask", 0);
    rc->drop_long = cfg_bool(c, "data.drop_long", 0);

    rc->batch_size = (int)cfg_int_in(c, "train.batch_size", 8, 1, 1 << 16);
    rc->seq_len = (int)cfg_int_in(c, "train.seq_len", 256, 2, LLAMA_MAX_SEQ);
    rc->steps = cfg_int_in(c, "train.steps", 0, 1, 1L << 40);
    long long per_micro = (long long)rc->batch_size * rc->seq_len * dp;
    rc->global_batch_tokens = cfg_int_in(c, "train.global_batch_tokens", per_micro, 1, 1L << 31);
    rc->eval_every = (int)cfg_int_in(c, "train.eval_every", 100, 0, INT_MAX);
    rc->eval_batches = (int)cfg_int_in(c, "train.eval_batches", 10, 1, 1 << 20);
    rc->ckpt_every = (int)cfg_int_in(c, "train.ckpt_every", 100, 0, INT_MAX);
    rc->keep_ckpts = (int)cfg_int_in(c, "train.keep_ckpts", 3, 1, 1 << 20);

    rc->lora.rank = (int)cfg_int_in(c, "lora.rank", 0, 0, 4096);
    rc->lora.alpha = (float)cfg_float_in(c, "lora.alpha", 16, 1e-6, 1e6);
    // [0, 1): the largest float below 1 is the top, so that no accepted value rounds to 1.0f (all dropped)
    rc->lora.dropout = (float)cfg_float_in(c, "lora.dropout", 0, 0, 1.0 - 0x1p-24);
    const char *targets = cfg_str(c, "lora.targets", "q,v");
    if (lora_parse_targets(targets, &rc->lora.targets) != 0) return err_prefix("%s: lora.targets", origin);
    const char *freeze = cfg_str(c, "train.freeze", "");
    if (strlen(freeze) >= sizeof(rc->freeze))
        return err_set("%s: train.freeze is %zu characters long (at most %zu)", origin, strlen(freeze),
                       sizeof(rc->freeze) - 1);
    snprintf(rc->freeze, sizeof(rc->freeze), "%s", freeze);
    rc->tp = (int)cfg_int_in(c, "parallel.tp", 1, 1, 1 << 16);
    rc->zero1 = cfg_bool(c, "parallel.zero1", 0);
    rc->dp_bucket_mb = cfg_float_in(c, "parallel.bucket_mb", 25, 1e-3, 1 << 20);
    snprintf(rc->gpu_comm, sizeof(rc->gpu_comm), "%s", cfg_str(c, "parallel.gpu_comm", "auto"));

    if (c->error[0]) return err_set("%s", c->error);  // a bad value first, before checks that would use it
    adamw_config_default(&rc->adamw);
    if (adamw_config_from_cfg(&rc->adamw, c) != 0) return -1;
    if (lr_schedule_from_cfg(&rc->sched, c, rc->steps > 0 ? rc->steps : 1) != 0) return -1;
    if (cfg_finish(c) != 0) return -1;

    // checks that need several keys
    if (rc->steps <= 0) return err_set("%s: train.steps must be set to a positive number of optimizer steps", origin);
    if (rc->batch_size < 1 || rc->seq_len < 2) return err_set("%s: train.batch_size must be >= 1 and train.seq_len >= 2", origin);
    if (rc->seq_len > rc->model.max_seq_len)
        return err_set("%s: train.seq_len %d exceeds the model's max_seq_len %d", origin, rc->seq_len, rc->model.max_seq_len);
    if (rc->global_batch_tokens <= 0 || rc->global_batch_tokens % per_micro != 0)
        return err_set("%s: train.global_batch_tokens %lld is not a multiple of batch_size x seq_len x dp = %lld", origin,
                       rc->global_batch_tokens, per_micro);
    rc->grad_accum = (int)(rc->global_batch_tokens / per_micro);
    if (rc->eval_every < 0 || rc->eval_batches < 1 || rc->ckpt_every < 0 || rc->keep_ckpts < 1 || rc->log_every < 1)
        return err_set("%s: train.eval_every/ckpt_every must be >= 0, eval_batches/keep_ckpts/run.log_every >= 1", origin);
    struct stat st;
    if (stat(rc->data_dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return err_set("%s: data.dir '%s' is not a directory (write one with llamac prep)", origin, rc->data_dir);
    if (strcmp(rc->backend, "cpu") && strcmp(rc->backend, "cuda") && strcmp(rc->backend, "auto"))
        return err_set("%s: run.backend = '%s': expected auto, cpu or cuda", origin, rc->backend);
    if (strcmp(rc->gpu_comm, "auto") && strcmp(rc->gpu_comm, "nccl") && strcmp(rc->gpu_comm, "staged"))
        return err_set("%s: parallel.gpu_comm = '%s': expected auto, nccl or staged", origin, rc->gpu_comm);
    if (rc->peak_tflops < 0) return err_set("%s: run.peak_tflops must be >= 0 (0: the device's)", origin);
    if (rc->lora.rank && (rc->tp != 1 || rc->zero1))
        return err_set("%s: LoRA (lora.rank > 0) runs with parallel.tp = 1 and without ZeRO-1", origin);
    if (rc->lora.rank && rc->freeze[0])
        return err_set("%s: train.freeze with LoRA: the base is frozen already (drop one of them)", origin);
    if (strcmp(rc->precision, "auto") && strcmp(rc->precision, "bf16") && strcmp(rc->precision, "fp32"))
        return err_set("%s: run.precision = '%s': expected auto, bf16 or fp32", origin, rc->precision);
    return 0;
}

void run_config_loader(struct loader_config *lc, const struct run_config *rc, int dp_rank, int dp_size, int split) {
    memset(lc, 0, sizeof(*lc));
    lc->data_dir = rc->data_dir;
    lc->B = rc->batch_size;
    lc->T = rc->seq_len;
    lc->seed = rc->seed;
    lc->dp_rank = dp_rank;
    lc->dp_size = dp_size;
    lc->split = split;
    lc->n_sources = rc->n_sources;
    for (int i = 0; i < rc->n_sources; i++) {
        snprintf(lc->source_names[i], sizeof(lc->source_names[i]), "%s", rc->source_names[i]);
        lc->weights[i] = rc->weights[i];
    }
    lc->vocab_size = rc->model.vocab_size;
    lc->doc_mask = rc->doc_mask;
    lc->drop_long = rc->drop_long;
}

double run_flops_per_token(const struct llama_config *c, int T) {
    double N = (double)llama_param_count(c);
    N -= (double)c->n_layers * 2 * c->dim + c->dim;                // norms
    if (!c->tie_embeddings) N -= (double)c->vocab_size * c->dim;   // the embedding is a lookup
    return 6.0 * N + 6.0 * c->n_layers * (double)T * c->dim;
}
