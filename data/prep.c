// Corpus preparation: document readers, tokenizer sampling/training, the parallel tokenization pipeline,
// shard rotation, the manifest, and moving the output into place (see prep.h for the design).
#include "data/prep.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/timer.h"
#include "data/sha256.h"
#include "data/shard.h"
#include "data/tokenizer.h"

#define MAX_DOC_BYTES ((size_t)1 << 30)
#define CHUNK_BYTES ((size_t)1 << 20)  // text per pipeline chunk

// ---------------------------------------------------------------------------------------------------
// Formats and names
// ---------------------------------------------------------------------------------------------------
static const char *format_names[] = {"auto", "text", "fortune", "blank", "jsonl"};

const char *prep_format_name(enum prep_format f) { return format_names[f]; }

int prep_format_parse(const char *s, enum prep_format *f) {
    for (int i = 0; i < 5; i++)
        if (strcmp(s, format_names[i]) == 0) {
            *f = (enum prep_format)i;
            return 0;
        }
    return err_set("unknown input format '%s' (auto, text, fortune, blank, jsonl)", s);
}

int prep_name_valid(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n >= PREP_NAME_MAX || s[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strchr(" \t\r\n\v\f", s[i])) return 0;
    return 1;
}

// ---------------------------------------------------------------------------------------------------
// Document readers
// ---------------------------------------------------------------------------------------------------
struct doc_reader {
    char *path;                // heap, as every string here
    gzFile gz;
    enum prep_format fmt;
    char *field;
    char *buf;                 // decompressed input
    size_t buf_len, buf_pos;
    int eof;
    char *line;                // the current line, without its newline
    size_t line_len, line_cap;
    uint64_t line_no;
    char *doc;                 // the current document
    size_t doc_len, doc_cap;
    uint64_t n_docs;
    cJSON *json;               // the current JSONL record (owns the returned text)
};

#define READ_BUF (1 << 16)

static int fill_buf(struct doc_reader *r) {
    if (r->eof) return 0;
    int n = gzread(r->gz, r->buf, READ_BUF);
    int errnum = 0;
    const char *msg = gzerror(r->gz, &errnum);
    if (n < 0 || (errnum != Z_OK && errnum != Z_STREAM_END))
        return err_set("%s: read error: %s", r->path, errnum == Z_ERRNO ? strerror(errno) : msg);
    if (n == 0) {
        r->eof = 1;
        return 0;
    }
    r->buf_len = (size_t)n;
    r->buf_pos = 0;
    return 1;
}

static void append(char **p, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 4096;
        while (c < *len + n + 1) c *= 2;
        *p = xrealloc(*p, c);
        *cap = c;
    }
    memcpy(*p + *len, s, n);
    *len += n;
    (*p)[*len] = '\0';
}

// Reads the next line into r->line (1), or 0 at the end of the file, -1 on error.
static int read_line(struct doc_reader *r) {
    r->line_len = 0;
    int got = 0;
    for (;;) {
        if (r->buf_pos == r->buf_len) {
            int f = fill_buf(r);
            if (f < 0) return -1;
            if (f == 0) break;
        }
        char *start = r->buf + r->buf_pos, *nl = memchr(start, '\n', r->buf_len - r->buf_pos);
        size_t take = nl ? (size_t)(nl - start) : r->buf_len - r->buf_pos;
        if (r->line_len + take > MAX_DOC_BYTES) return err_set("%s:%" PRIu64 ": line longer than 1 GiB", r->path, r->line_no + 1);
        append(&r->line, &r->line_len, &r->line_cap, start, take);
        got = 1;
        r->buf_pos += take + (nl != NULL);
        if (nl) break;
    }
    if (!got) return 0;
    if (!r->line) append(&r->line, &r->line_len, &r->line_cap, "", 0);
    r->line_no++;
    return 1;
}

static int doc_add(struct doc_reader *r, const char *s, size_t n) {
    if (r->doc_len + n > MAX_DOC_BYTES)
        return err_set("%s:%" PRIu64 ": document longer than 1 GiB (wrong --format?)", r->path, r->line_no);
    append(&r->doc, &r->doc_len, &r->doc_cap, s, n);
    return 0;
}

int doc_reader_open(struct doc_reader **out, const char *path, enum prep_format format, const char *text_field) {
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) return err_set("%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return err_set("%s: is a directory, not an input file", path);
    if (access(path, R_OK) != 0) return err_set("%s: cannot read: %s", path, strerror(errno));
    if (st.st_size == 0) return err_set("%s: empty input file", path);
    gzFile gz = gzopen(path, "rb");
    if (!gz) return err_set("%s: cannot open: %s", path, strerror(errno));
    gzbuffer(gz, 1 << 17);
    struct doc_reader *r = xcalloc(1, sizeof(*r));
    r->path = strdup(path);
    r->field = strdup(text_field ? text_field : "text");
    CHECK(r->path && r->field);
    r->gz = gz;
    r->buf = xmalloc(READ_BUF);
    if (fill_buf(r) < 0) {
        doc_reader_close(r);
        return -1;
    }
    if (format == PREP_AUTO) {
        const char *jsonl[] = {".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson", ".ndjson.gz"};
        format = PREP_TEXT;
        for (int i = 0; i < 6; i++)
            if (ends_with(path, jsonl[i])) format = PREP_JSONL;
        if (format == PREP_TEXT) {  // a line that is just "%" in the first 64 KiB: fortune's format
            const char *b = r->buf;
            size_t n = r->buf_len;
            for (size_t i = 0; i + 1 < n; i++)
                if (b[i] == '%' && (i == 0 || b[i - 1] == '\n') && (b[i + 1] == '\n' || b[i + 1] == '\r')) {
                    format = PREP_FORTUNE;
                    break;
                }
        }
    }
    r->fmt = format;
    *out = r;
    return 0;
}

enum prep_format doc_reader_format(const struct doc_reader *r) { return r->fmt; }
uint64_t doc_reader_offset(const struct doc_reader *r) { return (uint64_t)gzoffset(r->gz); }
uint64_t doc_reader_line(const struct doc_reader *r) { return r->line_no; }
const char *doc_reader_path(const struct doc_reader *r) { return r->path; }

void doc_reader_close(struct doc_reader *r) {
    if (!r) return;
    gzclose(r->gz);
    cJSON_Delete(r->json);
    free(r->buf);
    free(r->line);
    free(r->doc);
    free(r->path);
    free(r->field);
    free(r);
}

static void strip_trailing_newlines(struct doc_reader *r) {
    while (r->doc_len > 0 && (r->doc[r->doc_len - 1] == '\n' || r->doc[r->doc_len - 1] == '\r')) r->doc_len--;
    if (r->doc) r->doc[r->doc_len] = '\0';
}

static int next_text(struct doc_reader *r) {
    if (r->n_docs > 0) return 0;
    r->doc_len = 0;
    for (;;) {
        if (r->buf_pos == r->buf_len) {
            int f = fill_buf(r);
            if (f < 0) return -1;
            if (f == 0) break;
        }
        if (doc_add(r, r->buf + r->buf_pos, r->buf_len - r->buf_pos) != 0) return -1;
        r->buf_pos = r->buf_len;
    }
    strip_trailing_newlines(r);
    return r->doc_len > 0 && !is_blank(r->doc, r->doc_len);
}

// fortune: documents end at a line "%"; blank: at a blank line.
static int next_separated(struct doc_reader *r) {
    r->doc_len = 0;
    int lines = 0;
    for (;;) {
        int g = read_line(r);
        if (g < 0) return -1;
        int sep;
        if (g == 0) sep = 1;
        else if (r->fmt == PREP_FORTUNE) {
            size_t n = r->line_len;
            if (n > 0 && r->line[n - 1] == '\r') n--;
            sep = n == 1 && r->line[0] == '%';
        } else sep = is_blank(r->line, r->line_len);
        if (sep) {
            strip_trailing_newlines(r);
            if (r->doc_len > 0 && !is_blank(r->doc, r->doc_len)) return 1;
            if (g == 0) return 0;
            r->doc_len = 0;
            lines = 0;
            continue;
        }
        if (lines++ > 0 && doc_add(r, "\n", 1) != 0) return -1;
        if (doc_add(r, r->line, r->line_len) != 0) return -1;
    }
}

static int next_jsonl(struct doc_reader *r, const char **doc, size_t *len) {
    for (;;) {
        int g = read_line(r);
        if (g <= 0) return g;
        if (is_blank(r->line, r->line_len)) continue;
        cJSON_Delete(r->json);
        r->json = cJSON_ParseWithLength(r->line, r->line_len);
        if (!r->json) return err_set("%s:%" PRIu64 ": not valid JSON", r->path, r->line_no);
        if (!r->field[0]) {  // the whole record (fine-tuning data): data/sft.c reads its fields
            if (!cJSON_IsObject(r->json)) return err_set("%s:%" PRIu64 ": not a JSON object", r->path, r->line_no);
            *doc = r->line;
            *len = r->line_len;
            return 1;
        }
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(r->json, r->field);
        if (!cJSON_IsObject(r->json) || !t)
            return err_set("%s:%" PRIu64 ": no field \"%s\" (set another with --text-field)", r->path, r->line_no, r->field);
        if (!cJSON_IsString(t) || !t->valuestring)
            return err_set("%s:%" PRIu64 ": field \"%s\" is not a string", r->path, r->line_no, r->field);
        size_t n = strlen(t->valuestring);
        if (n == 0 || is_blank(t->valuestring, n)) continue;
        *doc = t->valuestring;
        *len = n;
        return 1;
    }
}

int doc_reader_next(struct doc_reader *r, const char **doc, size_t *len) {
    int g;
    if (r->fmt == PREP_JSONL) g = next_jsonl(r, doc, len);
    else {
        g = r->fmt == PREP_TEXT ? next_text(r) : next_separated(r);
        if (g == 1) {
            *doc = r->doc;
            *len = r->doc_len;
        }
    }
    if (g == 1) r->n_docs++;
    if (g == 0 && r->n_docs == 0) return err_set("%s: no documents in the file (empty or blank)", r->path);
    return g;
}

// ---------------------------------------------------------------------------------------------------
// Files and directories
// ---------------------------------------------------------------------------------------------------
// Removes a directory prep made: its *.h5, *.model, *.json and *.tmp files, its subdirectories of the
// same kind, then itself. Anything else is left (and so is the directory).
static void remove_prep_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = fs_join(dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0) {
            if (S_ISDIR(st.st_mode)) remove_prep_dir(p);
            else if (ends_with(p, ".h5") || ends_with(p, ".model") || ends_with(p, ".json") || ends_with(p, ".tmp"))
                remove(p);
        }
        free(p);
    }
    closedir(d);
    rmdir(dir);
}

// Removes what runs that died left behind: OUT/.prep-tmp-PID and OUT/.prep-old-PID of processes gone.
static void remove_stale_dirs(const char *out) {
    DIR *d = opendir(out);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *num = NULL;
        if (strncmp(e->d_name, ".prep-tmp-", 10) == 0 || strncmp(e->d_name, ".prep-old-", 10) == 0) num = e->d_name + 10;
        if (!num || !*num || strspn(num, "0123456789") != strlen(num)) continue;
        long pid = atol(num);
        if (pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH) {
            char *p = fs_join(out, e->d_name);
            remove_prep_dir(p);
            free(p);
        }
    }
    closedir(d);
}

static uint64_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

// ---------------------------------------------------------------------------------------------------
// Tokenizer training sample
// ---------------------------------------------------------------------------------------------------
// Each source gets an equal share of the sample budget; within a source each document is taken with a
// probability set from the input size (gzip counted as 4x), decided by a hash of its index, so the sample
// is spread over the whole source and is the same on every run.
static int train_tokenizer(const struct prep_config *c, const char *model_path) {
    double budget_total = (c->sample_mb > 0 ? c->sample_mb : 64) * 1e6;
    double budget = budget_total / c->n_sources;
    char *text = NULL;
    size_t text_len = 0, text_cap = 0;
    size_t *starts = NULL, *lens = NULL, n = 0, cap = 0;
    int rc = 0;
    for (int s = 0; s < c->n_sources && rc == 0; s++) {
        const struct prep_source *src = &c->sources[s];
        double est = 0;
        for (int p = 0; p < src->n_paths; p++) est += (double)file_size(src->paths[p]) * (ends_with(src->paths[p], ".gz") ? 4 : 1);
        double prob = est > budget ? budget / est : 1.0;
        uint64_t key = rng_hash_str(src->name, c->seed ^ 0x746f6b656e697aULL), idx = 0;
        double taken = 0;
        for (int p = 0; p < src->n_paths && rc == 0 && taken < budget; p++) {
            struct doc_reader *r;
            if (doc_reader_open(&r, src->paths[p], src->format, c->text_field) != 0) { rc = -1; break; }
            const char *doc;
            size_t len;
            int g;
            while (taken < budget && (g = doc_reader_next(r, &doc, &len)) == 1) {
                if (rng_uniform_at(key, idx++) >= prob) continue;
                taken += (double)len;
                for (size_t a = 0; a < len;) {  // one sentence per line
                    const char *nl = memchr(doc + a, '\n', len - a);
                    size_t b = nl ? (size_t)(nl - doc) : len;
                    if (b > a && !is_blank(doc + a, b - a)) {
                        if (n == cap) {
                            cap = cap ? 2 * cap : 4096;
                            starts = xrealloc(starts, cap * sizeof(size_t));
                            lens = xrealloc(lens, cap * sizeof(size_t));
                        }
                        starts[n] = text_len;
                        lens[n++] = b - a;
                        append(&text, &text_len, &text_cap, doc + a, b - a);
                    }
                    a = b + 1;
                }
            }
            if (g < 0) rc = -1;
            doc_reader_close(r);
        }
    }
    if (rc == 0) {
        const char **sent = xmalloc(sizeof(char *) * (n ? n : 1));
        for (size_t i = 0; i < n; i++) sent[i] = text + starts[i];
        if (c->progress) log_info("training a %d-piece BPE tokenizer on %.1f MB of text (%zu lines)", c->vocab_size, text_len / 1e6, n);
        struct tokenizer_train_opts o = {c->vocab_size, c->character_coverage};
        rc = tokenizer_train(model_path, &o, sent, lens, n);
        free(sent);
    }
    free(text);
    free(starts);
    free(lens);
    return rc;
}

// ---------------------------------------------------------------------------------------------------
// The pipeline: read (this thread) → tokenize (workers) → write in order (this thread)
// ---------------------------------------------------------------------------------------------------
enum { SLOT_FREE, SLOT_FILLED, SLOT_BUSY, SLOT_DONE };

struct slot {
    int state;
    uint64_t seq;
    int source;
    char *text;                  // the documents back to back
    size_t text_len, text_cap;
    size_t *doc_start, *doc_bytes, *doc_ntok, n_docs, cap_docs;
    uint8_t *doc_val;            // held out?
    struct token_buf toks;       // the ids of all documents back to back
    struct token_buf mask;       // sft: the loss mask of toks (each document rendered as BOS .. EOS)
    uint64_t consumed;           // input bytes consumed when this chunk was filled (progress)
    int failed;
    char err[1024];
};

struct pipeline {
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    struct slot *slots;
    int n_slots, stop;
    const struct tokenizer *tok;
    const struct prep_config *c;
};

// Fine-tuning data: a record (validated when it was read) rendered with the chat template into ids and mask.
static int render_record(const struct pipeline *p, const char *text, size_t len, struct slot *s) {
    struct sft_record rec;
    if (sft_parse(&rec, text, len, "record") != 0) return -1;
    int rc = sft_render(p->tok, p->c->sft, &rec, p->c->train_on_prompt, &s->toks, &s->mask);
    sft_record_free(&rec);
    return rc;
}

static void *tokenize_worker(void *arg) {
    struct pipeline *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        struct slot *s = NULL;
        while (!p->stop) {
            for (int i = 0; i < p->n_slots; i++)
                if (p->slots[i].state == SLOT_FILLED && (!s || p->slots[i].seq < s->seq)) s = &p->slots[i];
            if (s) break;
            pthread_cond_wait(&p->work, &p->mu);
        }
        if (p->stop) break;
        s->state = SLOT_BUSY;
        pthread_mutex_unlock(&p->mu);
        s->toks.n = 0;
        s->mask.n = 0;
        for (size_t d = 0; d < s->n_docs; d++) {
            size_t before = s->toks.n;
            const char *text = s->text + s->doc_start[d];
            if (p->c->sft ? render_record(p, text, s->doc_bytes[d], s) != 0
                          : tokenizer_encode(p->tok, text, s->doc_bytes[d], &s->toks) != 0) {
                s->failed = 1;
                snprintf(s->err, sizeof(s->err), "%s", err_msg());
                break;
            }
            s->doc_ntok[d] = s->toks.n - before;
        }
        pthread_mutex_lock(&p->mu);
        s->state = SLOT_DONE;
        pthread_cond_broadcast(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

struct split_out {               // one source's shards of one split
    struct shard_writer *w;
    int next_index;
    uint64_t docs, tokens, bytes, targets;
    int shards;
};

struct shard_rec { char file[64]; int source, split; uint64_t tokens, docs; };

struct prep_run {
    const struct prep_config *c;
    const struct tokenizer *tok;
    char *tmp;  // OUT/.prep-tmp-PID (heap)
    struct split_out (*out)[2];  // [source][split]
    struct shard_rec *shards;
    int n_shards, cap_shards;
    uint64_t shard_tokens;
};

static int close_split(struct prep_run *r, int source, int split) {
    struct split_out *o = &r->out[source][split];
    if (!o->w) return 0;
    uint64_t nt, nd;
    int rc = shard_writer_close(o->w, &nt, &nd);
    o->w = NULL;
    if (rc) return -1;
    if (r->n_shards == r->cap_shards) {
        r->cap_shards = r->cap_shards ? 2 * r->cap_shards : 64;
        r->shards = xrealloc(r->shards, r->cap_shards * sizeof(*r->shards));
    }
    struct shard_rec *s = &r->shards[r->n_shards++];
    snprintf(s->file, sizeof(s->file), "%s/%s_%05d.h5", split ? "val" : "shards", r->c->sources[source].name, o->next_index - 1);
    s->source = source;
    s->split = split;
    s->tokens = nt;
    s->docs = nd;
    o->shards++;
    return 0;
}

// ids (n) without BOS and EOS, which the shard adds; mask (n + 2, or NULL) covers BOS, ids, EOS (sft).
static int write_doc(struct prep_run *r, int source, int split, const int *ids, size_t n, size_t bytes,
                     const int *mask) {
    struct split_out *o = &r->out[source][split];
    if (!o->w) {
        const struct prep_source *src = &r->c->sources[source];
        struct shard_meta m = {0};
        snprintf(m.source, sizeof(m.source), "%s", src->name);
        snprintf(m.language, sizeof(m.language), "%s", src->language);
        snprintf(m.tokenizer_sha256, sizeof(m.tokenizer_sha256), "%s", tokenizer_sha256(r->tok));
        m.vocab_size = tokenizer_vocab_size(r->tok);
        m.bos_id = tokenizer_bos_id(r->tok);
        m.eos_id = tokenizer_eos_id(r->tok);
        m.split = split;
        char *path = fs_printf("%s/%s/%s_%05d.h5", r->tmp, split ? "val" : "shards", src->name, o->next_index++);
        uint64_t chunk = r->shard_tokens < SHARD_CHUNK_TOKENS ? r->shard_tokens : SHARD_CHUNK_TOKENS;
        int rc = shard_writer_open(&o->w, path, &m, chunk);
        free(path);
        if (rc != 0) return -1;
    }
    if (mask) {
        uint8_t *m8 = xmalloc(n + 2);
        for (size_t i = 0; i < n + 2; i++) o->targets += m8[i] = (uint8_t)(mask[i] != 0);
        o->targets -= m8[0];  // BOS is never a target (the shard stores 0)
        int rc = shard_writer_add_doc_masked(o->w, ids, m8, n);
        free(m8);
        if (rc != 0) return -1;
    } else if (shard_writer_add_doc(o->w, ids, n) != 0) {
        return -1;
    }
    o->docs++;
    o->tokens += n + (tokenizer_bos_id(r->tok) >= 0) + (tokenizer_eos_id(r->tok) >= 0);
    o->bytes += bytes;
    if (shard_writer_tokens(o->w) >= r->shard_tokens) return close_split(r, source, split);
    return 0;
}

static int write_slot(struct prep_run *r, struct slot *s) {
    if (s->failed) return err_set("%s", s->err);
    size_t at = 0;
    for (size_t d = 0; d < s->n_docs; d++) {
        const int *ids = s->toks.ids + at;
        size_t n = s->doc_ntok[d];
        if (r->c->sft) {  // rendered as BOS .. EOS: the shard writes those itself
            CHECK(n >= 2 && ids[0] == tokenizer_bos_id(r->tok) && ids[n - 1] == tokenizer_eos_id(r->tok));
            if (write_doc(r, s->source, s->doc_val[d], ids + 1, n - 2, s->doc_bytes[d], s->mask.ids + at) != 0) return -1;
        } else if (write_doc(r, s->source, s->doc_val[d], ids, n, s->doc_bytes[d], NULL) != 0) {
            return -1;
        }
        at += n;
    }
    return 0;
}

static uint64_t val_key(const struct prep_config *c, int source) {
    return rng_hash_str(c->sources[source].name, c->seed ^ 0x76616cULL);
}

// Fine-tuning sets are small, so their held-out records are evenly spaced instead of hashed: record i of a
// source is held out when floor(i f + 1 - f) steps up at i + 1. The first record always is, and about
// f n of n (at least one), so the validation split is never empty for a set of two records or more.
static int sft_held_out(uint64_t i, double f) {
    if (f <= 0) return 0;
    return floor((double)(i + 1) * f + 1 - f) > floor((double)i * f + 1 - f);
}

// Where the reader stands: source, input file, document index within the source.
struct read_pos {
    int source, path;
    struct doc_reader *r;
    uint64_t doc_index, consumed_done;  // input bytes of the files already finished
    uint64_t val_key;
};

// Fills a slot with documents of one source, up to CHUNK_BYTES of text. 1 filled, 0 nothing left, -1 error.
static int fill_slot(const struct prep_config *c, struct read_pos *rp, struct slot *s) {
    s->text_len = 0;
    s->n_docs = 0;
    s->failed = 0;
    while (rp->source < c->n_sources) {
        const struct prep_source *src = &c->sources[rp->source];
        if (!rp->r) {
            if (rp->path >= src->n_paths) {
                rp->source++;
                rp->path = 0;
                rp->doc_index = 0;
                if (rp->source < c->n_sources) rp->val_key = val_key(c, rp->source);
                if (s->n_docs > 0) return 1;  // a chunk holds one source
                continue;
            }
            if (doc_reader_open(&rp->r, src->paths[rp->path], c->sft ? PREP_JSONL : src->format,
                                c->sft ? "" : c->text_field) != 0)
                return -1;
        }
        const char *doc;
        size_t len;
        int g;
        while (s->text_len < CHUNK_BYTES && (g = doc_reader_next(rp->r, &doc, &len)) == 1) {
            if (c->sft) {  // a record that does not parse is named here, by file and line
                char *where = fs_printf("%s:%" PRIu64, doc_reader_path(rp->r), doc_reader_line(rp->r));
                struct sft_record rec;
                int bad = sft_parse(&rec, doc, len, where);
                free(where);
                if (bad) return -1;
                sft_record_free(&rec);
            }
            if (s->n_docs == s->cap_docs) {
                s->cap_docs = s->cap_docs ? 2 * s->cap_docs : 1024;
                s->doc_start = xrealloc(s->doc_start, s->cap_docs * sizeof(size_t));
                s->doc_bytes = xrealloc(s->doc_bytes, s->cap_docs * sizeof(size_t));
                s->doc_ntok = xrealloc(s->doc_ntok, s->cap_docs * sizeof(size_t));
                s->doc_val = xrealloc(s->doc_val, s->cap_docs);
            }
            s->doc_start[s->n_docs] = s->text_len;
            s->doc_bytes[s->n_docs] = len;
            s->doc_val[s->n_docs] = c->sft ? sft_held_out(rp->doc_index, c->val_fraction)
                                           : c->val_fraction > 0 && rng_uniform_at(rp->val_key, rp->doc_index) < c->val_fraction;
            s->n_docs++;
            rp->doc_index++;
            append(&s->text, &s->text_len, &s->text_cap, doc, len);
            s->source = rp->source;
        }
        s->consumed = rp->consumed_done + doc_reader_offset(rp->r);
        if (s->text_len >= CHUNK_BYTES) return 1;
        if (g < 0) return -1;
        rp->consumed_done += file_size(src->paths[rp->path]);
        doc_reader_close(rp->r);
        rp->r = NULL;
        rp->path++;
    }
    return s->n_docs > 0;
}

static void progress_line(const struct prep_config *c, double t0, uint64_t bytes, uint64_t consumed, uint64_t total, int final) {
    if (!c->progress) return;
    double el = time_now() - t0, frac = total ? (double)consumed / (double)total : 1;
    if (frac > 1) frac = 1;
    char eta[32];
    log_fmt_duration(eta, sizeof(eta), frac > 0 ? el * (1 - frac) / frac : -1);
    log_progress("prep: %.1f MB of text, %.1f MB/s, %3.0f%% of input%s%s", bytes / 1e6, el > 0 ? bytes / 1e6 / el : 0,
                 100 * frac, final ? "" : ", ETA ", final ? "" : eta);
}

static int run_pipeline(struct prep_run *r, struct prep_stats *st) {
    const struct prep_config *c = r->c;
    int threads = c->threads > 0 ? c->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1) threads = 1;
    struct pipeline p = {.tok = r->tok, .c = c};
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.work, NULL);
    pthread_cond_init(&p.done, NULL);
    p.n_slots = 2 * threads + 2;
    p.slots = xcalloc(p.n_slots, sizeof(struct slot));
    pthread_t *tid = xmalloc(sizeof(pthread_t) * threads);
    for (int i = 0; i < threads; i++) CHECK(pthread_create(&tid[i], NULL, tokenize_worker, &p) == 0);

    uint64_t total = 0;
    for (int s = 0; s < c->n_sources; s++)
        for (int i = 0; i < c->sources[s].n_paths; i++) total += file_size(c->sources[s].paths[i]);
    struct read_pos rp = {0};
    if (c->n_sources > 0) rp.val_key = val_key(c, 0);
    uint64_t next_fill = 0, next_write = 0, bytes = 0;
    int reading = 1, rc = 0;
    double t0 = time_now(), last = t0;
    double progress_every = isatty(STDOUT_FILENO) ? 0.5 : 30;  // a terminal line, or a log line now and then
    pthread_mutex_lock(&p.mu);
    while (rc == 0) {
        struct slot *w = &p.slots[next_write % p.n_slots];
        if (next_write < next_fill && w->state == SLOT_DONE) {
            pthread_mutex_unlock(&p.mu);
            rc = write_slot(r, w);
            bytes += w->text_len;
            st->docs += w->n_docs;
            if (time_now() - last > progress_every) {
                progress_line(c, t0, bytes, w->consumed, total, 0);
                last = time_now();
            }
            pthread_mutex_lock(&p.mu);
            w->state = SLOT_FREE;
            next_write++;
            continue;
        }
        if (!reading && next_write == next_fill) break;
        struct slot *f = &p.slots[next_fill % p.n_slots];
        if (reading && f->state == SLOT_FREE) {
            pthread_mutex_unlock(&p.mu);
            int g = fill_slot(c, &rp, f);
            pthread_mutex_lock(&p.mu);
            if (g < 0) rc = -1;
            else if (g == 0) reading = 0;
            else {
                f->seq = next_fill++;
                f->state = SLOT_FILLED;
                pthread_cond_signal(&p.work);
            }
            continue;
        }
        pthread_cond_wait(&p.done, &p.mu);
    }
    p.stop = 1;
    pthread_cond_broadcast(&p.work);
    pthread_mutex_unlock(&p.mu);
    for (int i = 0; i < threads; i++) pthread_join(tid[i], NULL);
    doc_reader_close(rp.r);
    for (int i = 0; i < p.n_slots; i++) {
        struct slot *s = &p.slots[i];
        free(s->text); free(s->doc_start); free(s->doc_bytes); free(s->doc_ntok); free(s->doc_val); free(s->toks.ids);
        free(s->mask.ids);
    }
    free(p.slots);
    free(tid);
    pthread_mutex_destroy(&p.mu);
    pthread_cond_destroy(&p.work);
    pthread_cond_destroy(&p.done);
    st->bytes = bytes;
    st->seconds = time_now() - t0;
    if (rc == 0) progress_line(c, t0, bytes, total, total, 1);
    return rc;
}

// ---------------------------------------------------------------------------------------------------
// Manifest
// ---------------------------------------------------------------------------------------------------
static cJSON *split_json(const struct split_out *o, int sft) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "documents", (double)o->docs);
    cJSON_AddNumberToObject(j, "tokens", (double)o->tokens);
    cJSON_AddNumberToObject(j, "bytes", (double)o->bytes);
    cJSON_AddNumberToObject(j, "shards", o->shards);
    if (sft) cJSON_AddNumberToObject(j, "targets", (double)o->targets);
    return j;
}

static int write_manifest(const struct prep_run *r, const char *path) {
    const struct prep_config *c = r->c;
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "format", MANIFEST_FORMAT);
    cJSON_AddNumberToObject(m, "version", MANIFEST_VERSION);
    cJSON *t = cJSON_AddObjectToObject(m, "tokenizer");
    cJSON_AddStringToObject(t, "file", "tokenizer.model");
    cJSON_AddStringToObject(t, "sha256", tokenizer_sha256(r->tok));
    cJSON_AddNumberToObject(t, "vocab_size", tokenizer_vocab_size(r->tok));
    cJSON_AddNumberToObject(t, "bos_id", tokenizer_bos_id(r->tok));
    cJSON_AddNumberToObject(t, "eos_id", tokenizer_eos_id(r->tok));
    cJSON_AddBoolToObject(t, "trained", c->tokenizer == NULL);
    cJSON_AddStringToObject(m, "token_dtype", tokenizer_vocab_size(r->tok) <= 65536 ? "uint16" : "uint32");
    cJSON_AddStringToObject(m, "framing", "bos-doc-eos");
    if (c->sft) {  // fine-tuning data: shards carry a loss mask; the loader packs whole examples
        cJSON *s = cJSON_AddObjectToObject(m, "sft");
        cJSON_AddStringToObject(s, "template", sft_template_name(c->sft));
        cJSON_AddBoolToObject(s, "train_on_prompt", c->train_on_prompt != 0);
    }
    cJSON_AddNumberToObject(m, "seed", (double)c->seed);
    cJSON_AddNumberToObject(m, "val_fraction", c->val_fraction);
    cJSON_AddNumberToObject(m, "shard_tokens", (double)r->shard_tokens);
    cJSON *srcs = cJSON_AddArrayToObject(m, "sources");
    for (int s = 0; s < c->n_sources; s++) {
        const struct prep_source *src = &c->sources[s];
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "name", src->name);
        cJSON_AddStringToObject(j, "language", src->language);
        cJSON_AddStringToObject(j, "format", prep_format_name(src->format));
        cJSON *in = cJSON_AddArrayToObject(j, "inputs");
        for (int i = 0; i < src->n_paths; i++) cJSON_AddItemToArray(in, cJSON_CreateString(src->paths[i]));
        cJSON_AddItemToObject(j, "train", split_json(&r->out[s][0], c->sft != SFT_NONE));
        cJSON_AddItemToObject(j, "val", split_json(&r->out[s][1], c->sft != SFT_NONE));
        cJSON_AddItemToArray(srcs, j);
    }
    cJSON *sh = cJSON_AddArrayToObject(m, "shards");
    for (int i = 0; i < r->n_shards; i++) {
        const struct shard_rec *s = &r->shards[i];
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "file", s->file);
        // the loader checks each shard's bytes against this before HDF5 parses it (data/README.md)
        char hex[65], *file = fs_printf("%s/%s", r->tmp, s->file);
        int hashed = sha256_file_hex(hex, file);
        free(file);
        if (hashed != 0) {
            cJSON_Delete(j);
            cJSON_Delete(m);
            return -1;
        }
        cJSON_AddStringToObject(j, "sha256", hex);
        cJSON_AddStringToObject(j, "source", c->sources[s->source].name);
        cJSON_AddStringToObject(j, "split", s->split ? "val" : "train");
        cJSON_AddNumberToObject(j, "tokens", (double)s->tokens);
        cJSON_AddNumberToObject(j, "documents", (double)s->docs);
        cJSON_AddItemToArray(sh, j);
    }
    char *text = cJSON_Print(m), *line = fs_printf("%s\n", text);
    cJSON_Delete(m);
    int rc = fs_write_atomic(path, line, strlen(line));
    free(line);
    free(text);
    return rc;
}

// ---------------------------------------------------------------------------------------------------
// prep_run
// ---------------------------------------------------------------------------------------------------
static int check_config(const struct prep_config *c) {
    if (!c->out_dir || !*c->out_dir) return err_set("no output directory (--out DIR)");
    struct stat ts;
    if (c->tokenizer && stat(c->tokenizer, &ts) == 0 && S_ISDIR(ts.st_mode))
        return err_set("--tokenizer %s: is a directory; give the file in it (tokenizer.model, or tokenizer.json)", c->tokenizer);
    if (c->sft && !c->tokenizer) return err_set("--sft: fine-tuning data needs the model's tokenizer (--tokenizer)");
    if (c->n_sources < 1) return err_set("no inputs (--input SOURCE:PATH[,PATH...])");
    if (c->n_sources > PREP_MAX_SOURCES) return err_set("%d sources, at most %d", c->n_sources, PREP_MAX_SOURCES);
    if (!c->tokenizer && (c->vocab_size < 260 || c->vocab_size > (1 << 24)))
        return err_set("--vocab-size %d: a trained tokenizer needs 260..16777216 pieces (256 bytes + unk, bos, eos)", c->vocab_size);
    if (c->val_fraction < 0 || c->val_fraction > 0.5) return err_set("--val-fraction %g: must be in [0, 0.5]", c->val_fraction);
    if ((double)c->seed >= 9007199254740992.0) return err_set("--seed must be below 2^53");
    for (int s = 0; s < c->n_sources; s++) {
        const struct prep_source *src = &c->sources[s];
        if (!prep_name_valid(src->name))
            return err_set("source name '%s': use 1..%d of [A-Za-z0-9_.-]", src->name, PREP_NAME_MAX - 1);
        if (!prep_name_valid(src->language))
            return err_set("language '%s' of source %s: use 1..%d of [A-Za-z0-9_.-]", src->language, src->name, PREP_NAME_MAX - 1);
        for (int t = 0; t < s; t++)
            if (!strcmp(c->sources[t].name, src->name)) return err_set("source '%s' given twice", src->name);
        if (src->n_paths < 1) return err_set("source '%s' has no input files", src->name);
        if (c->sft && src->format != PREP_AUTO && src->format != PREP_JSONL)
            return err_set("source '%s': fine-tuning data (--sft) is JSONL records, not format %s", src->name,
                           prep_format_name(src->format));
        for (int i = 0; i < src->n_paths; i++) {  // fail before any work on a missing or empty input
            struct stat st;
            const char *p = src->paths[i];
            if (stat(p, &st) != 0) return err_set("%s: cannot open: %s", p, strerror(errno));
            if (S_ISDIR(st.st_mode)) return err_set("%s: is a directory, not an input file", p);
            if (access(p, R_OK) != 0) return err_set("%s: cannot read: %s", p, strerror(errno));
            if (st.st_size == 0) return err_set("%s: empty input file", p);
        }
    }
    return 0;
}

// Removes one item prep publishes: a file, or a directory of shards.
static void remove_item(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) remove_prep_dir(path);
    else remove(path);
}

// Moves tmp/{shards,val,tokenizer.model,manifest.json} into out, the manifest last; what they replace
// goes to out/.prep-old-PID first and is deleted at the end. Each item is published with fs_publish
// (core/fs.h): synced (a directory's sync makes its entries durable; the shards inside were synced when
// written), renamed, then out synced, so after a crash out holds a manifest only with everything it lists.
// A failure on the way (EIO, a quota) takes back what was published and puts the old items back: out is
// then as it was.
static int move_into_place(const char *tmp, const char *out) {
    char *old = fs_printf("%s/.prep-old-%d", out, (int)getpid());
    const char *items[] = {"manifest.json", "shards", "val", "tokenizer.model"};
    int made_old = 0, rc = 0, published[4] = {0};
    for (int i = 0; i < 4 && rc == 0; i++) {
        char *a = fs_join(out, items[i]), *b = fs_join(old, items[i]);
        struct stat st;
        if (lstat(a, &st) == 0) {
            if (!made_old && mkdir(old, 0755) != 0) rc = err_set("%s: cannot create: %s", old, strerror(errno));
            made_old = 1;
            if (rc == 0 && rename(a, b) != 0) rc = err_set("%s: cannot move aside: %s", a, strerror(errno));
        }
        free(a);
        free(b);
    }
    for (int i = 3; i >= 0 && rc == 0; i--) {
        char *a = fs_join(tmp, items[i]), *b = fs_join(out, items[i]);
        struct stat st;
        if (lstat(a, &st) == 0) rc = fs_publish(a, b);
        published[i] = rc == 0;
        free(a);
        free(b);
    }
    int kept = 0;  // old items that could not be put back: they stay in old, named in the error
    if (rc != 0) {  // back to the old output: the new items out, the old ones in
        for (int i = 0; i < 4; i++) {
            char *a = fs_join(out, items[i]), *b = fs_join(old, items[i]);
            struct stat st;
            if (published[i]) remove_item(a);
            if (made_old && lstat(b, &st) == 0 && rename(b, a) != 0) kept = 1;
            free(a);
            free(b);
        }
        fs_fsync_path(out);
        if (kept) err_set("%s; the previous output is in %s", err_msg(), old);
    }
    if (made_old && !kept) {
        remove_prep_dir(old);
        struct stat st;
        if (stat(old, &st) == 0) log_warn("%s: left in place (it holds files prep did not write)", old);
    }
    free(old);
    return rc;
}

int prep_run(const struct prep_config *c, struct prep_stats *stats) {
    struct prep_stats dummy;
    struct prep_stats *st = stats ? stats : &dummy;
    memset(st, 0, sizeof(*st));
    if (check_config(c) != 0) return -1;
    if (fs_mkdir_p(c->out_dir) != 0) return -1;
    struct prep_run r = {.c = c};
    r.shard_tokens = c->shard_tokens ? c->shard_tokens : (uint64_t)1 << 25;
    r.tmp = fs_printf("%s/.prep-tmp-%d", c->out_dir, (int)getpid());
    remove_stale_dirs(c->out_dir);
    remove_prep_dir(r.tmp);
    char *p1 = fs_join(r.tmp, "shards"), *p2 = fs_join(r.tmp, "val"), *model = fs_join(r.tmp, "tokenizer.model");
    char *manifest = fs_join(r.tmp, "manifest.json");
    if (fs_mkdir_p(p1) != 0 || fs_mkdir_p(p2) != 0) {
        remove_prep_dir(r.tmp);
        free(p1), free(p2), free(model), free(manifest), free(r.tmp);
        return -1;
    }

    struct tokenizer *tok = NULL;
    int rc;
    if (c->tokenizer) {  // load the user's file first, so that errors name it, then work from a copy
        rc = tokenizer_load(&tok, c->tokenizer);
        tokenizer_free(tok);
        tok = NULL;
        if (rc == 0) rc = fs_copy_file(c->tokenizer, model);
    } else rc = train_tokenizer(c, model);
    if (rc == 0) rc = tokenizer_load(&tok, model);
    if (rc == 0 && c->sft) rc = sft_check_tokenizer(tok, c->sft);
    if (rc == 0) {
        r.tok = tok;
        r.out = xcalloc(c->n_sources, sizeof(*r.out));
        rc = run_pipeline(&r, st);
        for (int s = 0; s < c->n_sources && rc == 0; s++)
            for (int split = 0; split < 2 && rc == 0; split++) rc = close_split(&r, s, split);
        for (int s = 0; s < c->n_sources && rc == 0; s++)
            if (r.out[s][0].docs == 0)
                rc = err_set("source '%s': every document went to the validation split (lower --val-fraction)", c->sources[s].name);
        if (rc == 0) rc = write_manifest(&r, manifest);
        if (rc == 0) rc = move_into_place(r.tmp, c->out_dir);
        if (rc == 0) {
            st->shards = r.n_shards;
            for (int s = 0; s < c->n_sources; s++) st->tokens += r.out[s][0].tokens + r.out[s][1].tokens;
            for (int s = 0; s < c->n_sources; s++) st->targets += r.out[s][0].targets + r.out[s][1].targets;
        }
        for (int s = 0; s < c->n_sources; s++)
            for (int split = 0; split < 2; split++) shard_writer_abort(r.out[s][split].w);
        free(r.out);
        free(r.shards);
    }
    tokenizer_free(tok);
    remove_prep_dir(r.tmp);
    free(p1), free(p2), free(model), free(manifest), free(r.tmp);
    return rc;
}
