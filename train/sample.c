#include "train/sample.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/comm.h"
#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "data/loader.h"
#include "train/lora_ckpt.h"
#include "data/tokenizer.h"
#include "model/ops/backends.h"

int ckpt_open_model(struct llama *m, const char *path, char *run_dir, size_t n, struct ckpt_meta *meta_out) {
    char file[1200];
    // a run directory: its newest checkpoint
    int found = ckpt_latest(path, file, sizeof(file));
    if (found < 0) return -1;
    if (found) {
        snprintf(run_dir, n, "%s", path);
    } else {
        snprintf(file, sizeof(file), "%s", path);
        // run_dir is the parent of ckpt/: .../RUN/ckpt/step_N.h5
        char tmp[1200];
        snprintf(tmp, sizeof(tmp), "%s", path);
        char *slash = strrchr(tmp, '/');
        if (slash) *slash = '\0';
        else snprintf(tmp, sizeof(tmp), ".");
        slash = strrchr(tmp, '/');
        if (slash && !strcmp(slash + 1, "ckpt")) *slash = '\0';
        else if (!strcmp(tmp, "ckpt")) snprintf(tmp, sizeof(tmp), ".");
        snprintf(run_dir, n, "%s", tmp);
    }
    struct ckpt_ctx x = {MPI_COMM_SELF, 0, 0};
    struct ckpt_meta meta;
    if (ckpt_read_meta(&x, file, &meta) != 0) return -1;
    struct llama_config c = {0};
    struct lora_config lc;
    char init[1100];
    int rc = lora_ckpt_settings(&meta, file, &lc, init, sizeof(init));
    if (rc == 0 && lc.rank > 0) {  // adapters only: the base comes from model.init (train/lora_ckpt.h)
        rc = lora_ckpt_open(m, file, &meta);
    } else if (rc == 0) {
        rc = llama_config_from_ini(&c, meta.model_ini, file);
        if (rc == 0) rc = llama_init(m, &c, backend_cpu(), comm_self());
        if (rc == 0) rc = ckpt_load(&x, file, m, NULL);
    }
    if (rc == 0 && meta_out) *meta_out = meta;
    else ckpt_meta_free(&meta);
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

int sample_pick(const float *logits, int V, float temperature, float top_p, double u) {
    int best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (temperature <= 0) return best;
    struct cand *c = xmalloc(sizeof(*c) * (size_t)V);
    double sum = 0;
    for (int i = 0; i < V; i++) {
        c[i].p = expf((logits[i] - logits[best]) / temperature);
        c[i].id = i;
        sum += c[i].p;
    }
    qsort(c, (size_t)V, sizeof(*c), cand_desc);
    // nucleus: the smallest prefix whose mass reaches top_p, renormalised
    int k = 0;
    double mass = 0;
    while (k < V && (k == 0 || mass < top_p * sum)) mass += c[k++].p;
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

int sample_generate(struct llama *m, const struct tokenizer *tok, const char *prompt, const struct sample_opts *o,
                    FILE *out) {
    const int Tmax = m->cfg.max_seq_len, V = m->cfg.vocab_size;
    struct token_buf buf = {0};
    token_buf_push(&buf, tokenizer_bos_id(tok));
    if (tokenizer_encode(tok, prompt, strlen(prompt), &buf) != 0) return -1;
    // Text is printed as the difference between decodings of the whole sequence, so that the first
    // generated piece keeps its leading space (SentencePiece drops it when a decoding starts there).
    size_t printed = 0;
    char *ptext = tokenizer_decode(tok, buf.ids, buf.n, &printed);
    free(ptext);
    llama_alloc_acts(m, 1, Tmax, 0);
    float *logits = xmalloc(sizeof(float) * (size_t)V);
    struct rng r;
    rng_seed(&r, o->seed);
    fputs(prompt, out);
    for (int step = 0; step < o->max_tokens; step++) {
        size_t start = buf.n > (size_t)Tmax ? buf.n - (size_t)Tmax : 0;
        int T = (int)(buf.n - start);
        llama_forward(m, buf.ids + start, NULL, 1, T, NULL);
        llama_logits_at(m, 0, T - 1, logits);
        for (int i = tokenizer_vocab_size(tok); i < V; i++) logits[i] = -FLT_MAX;  // ids the tokenizer lacks
        int id = sample_pick(logits, V, o->temperature, o->top_p, rng_uniform(&r));
        if (id == tokenizer_eos_id(tok)) break;
        token_buf_push(&buf, id);
        // print what decodes cleanly so far (a character may span several byte tokens)
        size_t len;
        char *text = tokenizer_decode(tok, buf.ids, buf.n, &len);
        if (!text) break;
        size_t safe = len, j = len;
        while (j > printed && ((unsigned char)text[j - 1] & 0xC0) == 0x80) j--;
        if (j > printed) {  // text[j-1] leads the last character: hold it back until it is complete
            unsigned char lead = (unsigned char)text[j - 1];
            size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
            if (j - 1 + need > len) safe = j - 1;
        }
        if (safe > printed) {
            fwrite(text + printed, 1, safe - printed, out);
            fflush(out);
            printed = safe;
        }
        free(text);
    }
    size_t len;
    char *text = tokenizer_decode(tok, buf.ids, buf.n, &len);
    if (text && len > printed) fwrite(text + printed, 1, len - printed, out);
    fputc('\n', out);
    free(text);
    free(logits);
    free(buf.ids);
    return 0;
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
