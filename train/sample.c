#include "train/sample.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/comm.h"
#include "core/config.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/rng.h"
#include "core/timer.h"
#include "model/hf.h"
#include "model/kvcache.h"
#include "model/meta.h"
#include "data/loader.h"
#include "train/lora_ckpt.h"
#include "data/tokenizer.h"
#include "model/ops/backends.h"

// The run directory of a checkpoint file: the parent of ckpt/ in .../RUN/ckpt/step_N.h5 (heap).
static char *run_dir_of(const char *file) {
    char *d = strdup(file);
    CHECK(d);
    char *slash = strrchr(d, '/');
    if (!slash) {
        free(d);
        return strdup(".");
    }
    *slash = '\0';
    slash = strrchr(d, '/');
    if (slash && !strcmp(slash + 1, "ckpt")) *slash = '\0';
    else if (!strcmp(d, "ckpt")) strcpy(d, ".");
    return d;
}

int ckpt_open_model_on(struct llama *m, const struct backend *be, const char *path, char **run_dir_out,
                       struct ckpt_meta *meta_out) {
    if (run_dir_out) *run_dir_out = NULL;
    // a run directory: its newest checkpoint
    char *file = NULL;
    int found = ckpt_latest(path, &file);
    if (!found) file = strdup(path);
    CHECK(file);
    struct ckpt_ctx x = {MPI_COMM_SELF, 0, 0};
    struct ckpt_meta meta;
    int rc = ckpt_read_meta(&x, file, &meta);
    if (rc == 0) {
        struct llama_config c = {0};
        struct lora_config lc;
        rc = lora_ckpt_settings(&meta, file, &lc, NULL);
        if (rc == 0 && lc.rank > 0) {  // adapters only: the base comes from model.init (train/lora_ckpt.h)
            rc = lora_ckpt_open(m, be, file, &meta);
        } else if (rc == 0) {
            rc = llama_config_from_ini(&c, meta.model_ini, file);
            if (rc == 0) rc = llama_init(m, &c, be, comm_self());
            if (rc == 0) rc = ckpt_load(&x, file, m, NULL);
        }
        if (rc == 0 && meta_out) *meta_out = meta;
        else ckpt_meta_free(&meta);
    }
    if (rc == 0 && run_dir_out) *run_dir_out = found ? strdup(path) : run_dir_of(file);
    free(file);
    return rc;
}

int ckpt_open_model(struct llama *m, const char *path, char **run_dir_out, struct ckpt_meta *meta_out) {
    return ckpt_open_model_on(m, backend_cpu(), path, run_dir_out, meta_out);
}

int model_open(struct llama *m, const struct backend *be, const struct model_source *src, char **tok_path,
               struct ckpt_meta *meta_out) {
    *tok_path = NULL;
    int k = !!src->ckpt + !!src->hf + !!src->meta;
    if (k != 1) return err_set("give exactly one of --ckpt PATH|RUN_DIR, --hf DIR, --meta DIR");
    if (src->ckpt) {
        char *run_dir;
        if (ckpt_open_model_on(m, be, src->ckpt, &run_dir, meta_out) != 0) return -1;
        *tok_path = fs_join(run_dir, "tokenizer.model");
        free(run_dir);
        return 0;
    }
    const char *dir = src->hf ? src->hf : src->meta;
    struct llama_config c = {0};
    int rc = src->hf ? hf_read_config(&c, dir) : meta_read_config(&c, dir);
    if (rc == 0) rc = llama_init(m, &c, be, comm_self());
    if (rc == 0) rc = src->hf ? hf_load_weights(m, dir) : meta_load_weights(m, dir);
    if (rc == 0 && !(*tok_path = hf_tokenizer_file(dir)))
        rc = err_set("%s: no tokenizer.model or tokenizer.json beside the weights", dir);
    return rc;
}

struct cand {
    float p;
    int id;
};

static int cand_desc(const void *a, const void *b) {
    float x = ((const struct cand *)a)->p, y = ((const struct cand *)b)->p;
    return x < y ? 1 : x > y ? -1 : ((const struct cand *)a)->id - ((const struct cand *)b)->id;
}

int sample_pick(const float *logits, int V, float temperature, int top_k, float top_p, double u) {
    int best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (temperature <= 0) return best;
    struct cand *c = xmalloc(sizeof(*c) * (size_t)V);
    double sum = 0;
    for (int i = 0; i < V; i++) {
        c[i].p = expf((logits[i] - logits[best]) / temperature);
        c[i].id = i;
    }
    qsort(c, (size_t)V, sizeof(*c), cand_desc);
    int K = top_k > 0 && top_k < V ? top_k : V;
    for (int i = 0; i < K; i++) sum += c[i].p;
    // nucleus: the smallest prefix (of the top K) whose mass reaches top_p, renormalised
    int k = 0;
    double mass = 0;
    while (k < K && (k == 0 || mass < top_p * sum)) mass += c[k++].p;
    double r = u * mass, acc = 0;
    int id = c[k - 1].id;
    for (int i = 0; i < k; i++) {
        acc += c[i].p;
        if (r < acc) {
            id = c[i].id;
            break;
        }
    }
    free(c);
    return id;
}

void sample_penalize(float *logits, int V, const int *ctx, size_t n, float penalty) {
    if (penalty == 1.0f) return;
    unsigned char *seen = xcalloc((size_t)V, 1);
    for (size_t i = 0; i < n; i++) {
        int id = ctx[i];
        if (id < 0 || id >= V || seen[id]) continue;
        seen[id] = 1;
        logits[id] = logits[id] > 0 ? logits[id] / penalty : logits[id] * penalty;
    }
    free(seen);
}

// ---------------------------------------------------------------------------------------------------
// Chat templates
// ---------------------------------------------------------------------------------------------------

// The id of a special token's text when the tokenizer encodes it as that one token, else -1 (a
// SentencePiece vocabulary spells "<|eot_id|>" in several pieces).
static int special_id(const struct tokenizer *tok, const char *text) {
    struct token_buf b = {0};
    int id = -1;
    if (tokenizer_encode(tok, text, strlen(text), &b) == 0 && b.n == 1 && !strcmp(tokenizer_piece(tok, b.ids[0]), text))
        id = b.ids[0];
    free(b.ids);
    err_clear();
    return id;
}

int chat_is_llama3(const struct tokenizer *tok, int *header_id) {
    int id = special_id(tok, "<|start_header_id|>");
    if (header_id) *header_id = id;
    return id >= 0;
}

static int encode_str(const struct tokenizer *tok, const char *s, struct token_buf *out) {
    return tokenizer_encode(tok, s, strlen(s), out);
}

int chat_encode(const struct tokenizer *tok, const struct chat_msg *msgs, int n, struct token_buf *out) {
    if (chat_is_llama3(tok, NULL)) {
        // the specials are written as text: the byte-level BPE turns their strings into their ids
        if (encode_str(tok, "<|begin_of_text|>", out) != 0) return -1;
        for (int i = 0; i < n; i++) {
            size_t len = strlen(msgs[i].role) + strlen(msgs[i].content) + 64;
            char *t = xmalloc(len);
            snprintf(t, len, "<|start_header_id|>%s<|end_header_id|>\n\n%s<|eot_id|>", msgs[i].role, msgs[i].content);
            int rc = encode_str(tok, t, out);
            free(t);
            if (rc) return -1;
        }
        return encode_str(tok, "<|start_header_id|>assistant<|end_header_id|>\n\n", out);
    }
    // Llama 2: [system] user (assistant user)* ; every user turn opens with BOS
    const char *sys = NULL;
    int i = 0;
    if (n > 0 && !strcmp(msgs[0].role, "system")) sys = msgs[i++].content;
    for (int turn = 0; i < n; turn++) {
        if (strcmp(msgs[i].role, "user") != 0)
            return err_set("chat: the Llama 2 template needs user and assistant messages in turn (message %d is '%s')",
                           i + 1, msgs[i].role);
        const char *user = msgs[i++].content;
        size_t len = strlen(user) + (sys && turn == 0 ? strlen(sys) : 0) + 64;
        char *t = xmalloc(len);
        if (sys && turn == 0) snprintf(t, len, "[INST] <<SYS>>\n%s\n<</SYS>>\n\n%s [/INST]", sys, user);
        else snprintf(t, len, "[INST] %s [/INST]", user);
        token_buf_push(out, tokenizer_bos_id(tok));
        int rc = encode_str(tok, t, out);
        free(t);
        if (rc) return -1;
        if (i < n) {
            if (strcmp(msgs[i].role, "assistant") != 0)
                return err_set("chat: the Llama 2 template needs user and assistant messages in turn (message %d is "
                               "'%s')", i + 1, msgs[i].role);
            size_t la = strlen(msgs[i].content) + 4;
            char *a = xmalloc(la);
            snprintf(a, la, " %s ", msgs[i++].content);
            rc = encode_str(tok, a, out);
            free(a);
            if (rc) return -1;
            token_buf_push(out, tokenizer_eos_id(tok));
        }
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------------------

// Bytes of text[printed..len) that can be printed now: not past the start of an incomplete UTF-8
// character at the end, nor into a tail that could still become a stop string.
static size_t printable(const char *text, size_t len, size_t printed, const struct sample_opts *o) {
    size_t safe = len, j = len;
    while (j > printed && ((unsigned char)text[j - 1] & 0xC0) == 0x80) j--;
    if (j > printed) {  // text[j-1] leads the last character: hold it back until it is complete
        unsigned char lead = (unsigned char)text[j - 1];
        size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
        if (j - 1 + need > len) safe = j - 1;
    }
    for (int s = 0; s < o->n_stop; s++) {
        size_t sl = strlen(o->stop[s]);
        for (size_t k = sl > 1 ? sl - 1 : 0; k > 0; k--)  // a proper prefix of the stop string ends the text
            if (k <= len - printed && !memcmp(text + len - k, o->stop[s], k)) {
                if (len - k < safe) safe = len - k;
                break;
            }
    }
    return safe > printed ? safe : printed;
}

// The earliest position at or after `from` where a stop string starts, or (size_t)-1.
static size_t find_stop(const char *text, size_t len, size_t from, const struct sample_opts *o) {
    size_t best = (size_t)-1;
    for (int s = 0; s < o->n_stop; s++) {
        size_t sl = strlen(o->stop[s]);
        for (size_t i = from; sl && i + sl <= len && i < best; i++)
            if (!memcmp(text + i, o->stop[s], sl)) {
                best = i;
                break;
            }
    }
    return best;
}

int sample_tokens(struct llama *m, const struct tokenizer *tok, const int *prompt, int n, const struct sample_opts *o,
                  FILE *out, struct token_buf *gen, struct sample_stats *st) {
    const int Tmax = m->cfg.max_seq_len, V = m->cfg.vocab_size;
    if (n < 1) return err_set("sample: the prompt has no tokens");
    struct token_buf buf = {0};
    for (int i = 0; i < n; i++) token_buf_push(&buf, prompt[i]);
    const int eos = tokenizer_eos_id(tok), eot = special_id(tok, "<|eot_id|>");
    // Text is printed as the difference between decodings of the whole sequence, so that the first
    // generated piece keeps its leading space (SentencePiece drops it when a decoding starts there) and a
    // character split over byte tokens appears once complete.
    size_t base = 0;
    char *ptext = tokenizer_decode(tok, buf.ids, buf.n, &base);
    if (!ptext) {
        free(buf.ids);
        return -1;
    }
    free(ptext);
    size_t printed = base, scanned = base;
    long long want = (long long)n + o->max_tokens;
    int cap = want < Tmax ? (int)want : Tmax;
    struct llama_kv kv = {0};
    if (o->no_cache) llama_alloc_acts(m, 1, cap, 0);
    else if (llama_kv_init(&kv, m, cap, cap < 512 ? cap : 512) != 0) return -1;
    float *logits = xmalloc(sizeof(float) * (size_t)V);
    struct rng r;
    rng_seed(&r, o->seed);
    struct sample_stats s = {n, 0, 0, 0, 0};
    int rc = 0;
    for (int step = 0; step < o->max_tokens; step++) {
        double t0 = time_now();
        if (o->no_cache) {  // the whole context (its last max_seq_len tokens) every step
            size_t start = buf.n > (size_t)Tmax ? buf.n - (size_t)Tmax : 0;
            int T = (int)(buf.n - start);
            llama_forward(m, buf.ids + start, NULL, 1, T, NULL);
            llama_logits_at(m, 0, T - 1, logits);
        } else if (step == 0 || kv.pos == kv.cap) {  // prefill; or refill with the last half when full
            llama_kv_reset(&kv);
            int room = step == 0 ? cap : cap / 2, keep = (int)buf.n < room ? (int)buf.n : room;
            llama_kv_forward(&kv, buf.ids + buf.n - keep, keep, logits);
        } else {
            llama_kv_forward(&kv, buf.ids + buf.n - 1, 1, logits);
        }
        double dt = time_now() - t0;
        if (step == 0) s.prefill_s += dt;
        else {
            s.decode_s += dt;
            s.decode_steps++;
        }
        for (int i = tokenizer_vocab_size(tok); i < V; i++) logits[i] = -FLT_MAX;  // ids the tokenizer lacks
        sample_penalize(logits, V, buf.ids, buf.n, o->repetition_penalty);
        int id = sample_pick(logits, V, o->temperature, o->top_k, o->top_p, rng_uniform(&r));
        if (id == eos || id == eot) break;
        token_buf_push(&buf, id);
        if (gen) token_buf_push(gen, id);
        s.new_tokens++;
        size_t len;
        char *text = tokenizer_decode(tok, buf.ids, buf.n, &len);
        if (!text) {
            rc = -1;
            break;
        }
        size_t at = find_stop(text, len, scanned, o);
        size_t upto = at != (size_t)-1 ? at : printable(text, len, printed, o);
        if (out && upto > printed) {
            fwrite(text + printed, 1, upto - printed, out);
            fflush(out);
        }
        if (upto > printed) printed = upto;
        scanned = printed;  // a stop string cannot start in text already printed
        free(text);
        if (at != (size_t)-1) goto done;
    }
    if (rc == 0 && out) {  // what was held back (an unfinished character, a partial stop string)
        size_t len;
        char *text = tokenizer_decode(tok, buf.ids, buf.n, &len);
        if (text && len > printed) fwrite(text + printed, 1, len - printed, out);
        free(text);
    }
done:
    if (out) fputc('\n', out);
    if (st) *st = s;
    if (!o->no_cache) llama_kv_free(&kv);
    free(logits);
    free(buf.ids);
    return rc;
}

int sample_generate(struct llama *m, const struct tokenizer *tok, const char *prompt, const struct sample_opts *o,
                    FILE *out) {
    struct token_buf buf = {0};
    token_buf_push(&buf, tokenizer_bos_id(tok));
    int rc = tokenizer_encode(tok, prompt, strlen(prompt), &buf);
    if (rc == 0) {
        fputs(prompt, out);
        rc = sample_tokens(m, tok, buf.ids, (int)buf.n, o, out, NULL, NULL);
    }
    free(buf.ids);
    return rc;
}

int eval_loss_sums(struct llama *m, const struct loader_config *lc, int batches, int *inputs, int *targets,
                   double sums[2]) {
    struct loader *l = NULL;
    sums[0] = sums[1] = 0;
    int rc = loader_open(&l, lc);
    int *docs = rc == 0 && loader_has_docs(l) ? xmalloc(sizeof(int) * (size_t)lc->B * lc->T) : NULL;
    for (int b = 0; rc == 0 && b < batches; b++) {
        rc = docs ? loader_next_docs(l, inputs, targets, docs) : loader_next(l, inputs, targets);
        if (rc) break;
        long n;
        llama_set_docs(m, docs, lc->B, lc->T);  // packed examples: attention within each (NULL: plain rows)
        sums[0] += llama_forward(m, inputs, targets, lc->B, lc->T, &n);
        sums[1] += n;
    }
    llama_set_docs(m, NULL, 0, 0);
    free(docs);
    if (l) loader_close(l);
    return rc;
}
