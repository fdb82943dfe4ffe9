// The streaming loader (see loader.h for the design): manifest, mixture, permutations, the prefetch thread.
#include "data/loader.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/rng.h"
#include "data/prep.h"
#include "data/sha256.h"
#include "data/shard.h"

// ---------------------------------------------------------------------------------------------------
// The manifest
// ---------------------------------------------------------------------------------------------------
struct mshard { char file[256]; int source, split; uint64_t tokens, docs; char sha[65]; };
struct msource { char name[32]; uint64_t tokens[2], docs[2]; };
struct manifest {
    char *path;  // DIR/manifest.json (heap)
    char sha[65];
    int vocab, bos, eos;
    int sft;                 // fine-tuning data: shards carry a loss mask, windows are packed
    int n_sources, n_shards;
    struct msource *sources;
    struct mshard *shards;
};

static void manifest_free(struct manifest *m) {
    free(m->sources);
    free(m->shards);
    free(m->path);
    m->sources = NULL;
    m->shards = NULL;
    m->path = NULL;
}

static int json_u64(const cJSON *o, const char *key, uint64_t *v) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(j) || j->valuedouble < 0 || j->valuedouble != (double)(uint64_t)j->valuedouble) return -1;
    *v = (uint64_t)j->valuedouble;
    return 0;
}

static const char *json_str(const cJSON *o, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(j) ? j->valuestring : NULL;
}

static int read_text(const char *path, char **out) {
    FILE *f = fopen(path, "rb");
    if (!f) return err_set("%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0, r;
    char *buf = xmalloc(cap);
    while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 == cap) {
            if (cap >= ((size_t)1 << 30)) {
                fclose(f);
                free(buf);
                return err_set("%s: larger than 1 GiB, not a manifest", path);
            }
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return err_set("%s: read error", path);
    }
    buf[n] = '\0';
    *out = buf;
    return 0;
}

static int manifest_parse(struct manifest *m, const cJSON *root) {
    const char *p = m->path;
    const char *fmt = json_str(root, "format");
    uint64_t version = 0;
    if (!fmt || strcmp(fmt, MANIFEST_FORMAT) != 0) return err_set("%s: not a llamac data manifest (format is not \"%s\")", p, MANIFEST_FORMAT);
    if (json_u64(root, "version", &version) != 0 || version != MANIFEST_VERSION)
        return err_set("%s: manifest version %" PRIu64 ", this llamac reads version %d", p, version, MANIFEST_VERSION);
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(root, "tokenizer");
    const char *sha = tok ? json_str(tok, "sha256") : NULL;
    uint64_t vocab = 0;
    const cJSON *bos = tok ? cJSON_GetObjectItemCaseSensitive(tok, "bos_id") : NULL;
    const cJSON *eos = tok ? cJSON_GetObjectItemCaseSensitive(tok, "eos_id") : NULL;
    if (!sha || strlen(sha) != 64 || json_u64(tok, "vocab_size", &vocab) != 0 || vocab == 0 || vocab > INT32_MAX ||
        !cJSON_IsNumber(bos) || !cJSON_IsNumber(eos))
        return err_set("%s: missing or malformed \"tokenizer\" (sha256, vocab_size, bos_id, eos_id)", p);
    snprintf(m->sha, sizeof(m->sha), "%s", sha);
    m->vocab = (int)vocab;
    m->bos = bos->valueint;
    m->eos = eos->valueint;
    m->sft = cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "sft"));

    const cJSON *srcs = cJSON_GetObjectItemCaseSensitive(root, "sources");
    if (!cJSON_IsArray(srcs) || cJSON_GetArraySize(srcs) < 1) return err_set("%s: no \"sources\"", p);
    m->n_sources = cJSON_GetArraySize(srcs);
    m->sources = xcalloc(m->n_sources, sizeof(struct msource));
    int i = 0;
    const cJSON *s;
    cJSON_ArrayForEach(s, srcs) {
        struct msource *ms = &m->sources[i++];
        const char *name = json_str(s, "name");
        if (!name || !prep_name_valid(name)) return err_set("%s: source %d has a missing or invalid name", p, i - 1);
        snprintf(ms->name, sizeof(ms->name), "%s", name);
        for (int split = 0; split < 2; split++) {
            const cJSON *o = cJSON_GetObjectItemCaseSensitive(s, split ? "val" : "train");
            if (!o || json_u64(o, "tokens", &ms->tokens[split]) != 0 || json_u64(o, "documents", &ms->docs[split]) != 0)
                return err_set("%s: source %s: missing or malformed \"%s\" counts", p, name, split ? "val" : "train");
        }
        for (int k = 0; k < i - 1; k++)
            if (!strcmp(m->sources[k].name, name)) return err_set("%s: source %s listed twice", p, name);
    }

    const cJSON *shards = cJSON_GetObjectItemCaseSensitive(root, "shards");
    if (!cJSON_IsArray(shards)) return err_set("%s: no \"shards\" list", p);
    m->n_shards = cJSON_GetArraySize(shards);
    m->shards = xcalloc(m->n_shards ? m->n_shards : 1, sizeof(struct mshard));
    uint64_t (*sum)[2] = xcalloc(m->n_sources, sizeof(*sum));
    int rc = 0;
    i = 0;
    cJSON_ArrayForEach(s, shards) {
        struct mshard *ms = &m->shards[i++];
        const char *file = json_str(s, "file"), *src = json_str(s, "source"), *split = json_str(s, "split");
        if (!file || !src || !split || json_u64(s, "tokens", &ms->tokens) != 0 || json_u64(s, "documents", &ms->docs) != 0) {
            rc = err_set("%s: shard %d: missing or malformed file, source, split, tokens or documents", p, i - 1);
            break;
        }
        if (strlen(file) >= sizeof(ms->file) || strstr(file, "..") || !(strncmp(file, "shards/", 7) == 0 || strncmp(file, "val/", 4) == 0)) {
            rc = err_set("%s: shard %d: file \"%s\" is not under shards/ or val/", p, i - 1, file);
            break;
        }
        snprintf(ms->file, sizeof(ms->file), "%s", file);
        const char *sha = json_str(s, "sha256");  // absent in data written before shards were hashed
        if (sha && (strlen(sha) != 64 || strspn(sha, "0123456789abcdef") != 64)) {
            rc = err_set("%s: shard %s: sha256 is not 64 hex digits", p, file);
            break;
        }
        snprintf(ms->sha, sizeof(ms->sha), "%s", sha ? sha : "");
        ms->split = !strcmp(split, "val") ? 1 : !strcmp(split, "train") ? 0 : -1;
        if (ms->split < 0) {
            rc = err_set("%s: shard %s: split \"%s\" is neither train nor val", p, file, split);
            break;
        }
        ms->source = -1;
        for (int k = 0; k < m->n_sources; k++)
            if (!strcmp(m->sources[k].name, src)) ms->source = k;
        if (ms->source < 0) {
            rc = err_set("%s: shard %s: source \"%s\" is not among the sources", p, file, src);
            break;
        }
        sum[ms->source][ms->split] += ms->tokens;
    }
    for (int k = 0; k < m->n_sources && rc == 0; k++)
        for (int split = 0; split < 2 && rc == 0; split++)
            if (sum[k][split] != m->sources[k].tokens[split])
                rc = err_set("%s: source %s: its %s shards add up to %" PRIu64 " tokens, the source says %" PRIu64, p,
                             m->sources[k].name, split ? "val" : "train", sum[k][split], m->sources[k].tokens[split]);
    free(sum);
    return rc;
}

static int manifest_load(const char *dir, struct manifest *m) {
    memset(m, 0, sizeof(*m));
    m->path = fs_join(dir, "manifest.json");
    char *text = NULL;
    if (read_text(m->path, &text) != 0) return manifest_free(m), -1;
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root) return err_set("%s: not valid JSON", m->path), manifest_free(m), -1;
    int rc = manifest_parse(m, root);
    cJSON_Delete(root);
    if (rc) manifest_free(m);
    return rc;
}

// The manifest's tokenizer against the run's, and against DIR/tokenizer.model when it is there.
static int manifest_check_tokenizer(const struct manifest *m, const char *dir, const char *expect_sha, int expect_vocab) {
    if (expect_sha && strcmp(expect_sha, m->sha) != 0)
        return err_set("%s: made with a different tokenizer (sha256 %.12s.., the run's tokenizer is %.12s..)", m->path, m->sha, expect_sha);
    if (expect_vocab > 0 && expect_vocab != m->vocab)
        return err_set("%s: vocab_size %d differs from the run's vocab_size %d", m->path, m->vocab, expect_vocab);
    char *path = fs_join(dir, "tokenizer.model"), hex[65];
    int rc = 0;
    if (access(path, F_OK) == 0) {
        rc = sha256_file_hex(hex, path);
        if (rc == 0 && strcmp(hex, m->sha) != 0)
            rc = err_set("%s: sha256 %.12s.. differs from the %.12s.. that manifest.json records", path, hex, m->sha);
    }
    free(path);
    return rc;
}

// Opens a shard the manifest lists and checks that the two agree.
static int open_listed_shard(struct shard_info *s, const struct manifest *m, const struct mshard *ms, const char *dir) {
    char *path = fs_join(dir, ms->file);
    int rc = 0;
    // an untrusted file reaches libhdf5's parser only once its bytes are the ones prep wrote
    if (ms->sha[0]) {
        char hex[65];
        rc = sha256_file_hex(hex, path);
        if (rc == 0 && strcmp(hex, ms->sha) != 0)
            rc = err_set("%s: sha256 %.12s.. differs from the %.12s.. that manifest.json records (a damaged or "
                         "replaced shard)", path, hex, ms->sha);
    }
    if (rc == 0) rc = shard_open(s, path, path, m->sha, m->vocab);
    free(path);
    if (rc != 0) return -1;
    path = s->path;  // the messages below name the file as opened
    const char *src = m->sources[ms->source].name;
    if (strcmp(s->meta.source, src) != 0)
        rc = err_set("%s: source '%s', but manifest.json lists it under '%s'", path, s->meta.source, src);
    else if (s->meta.split != ms->split)
        rc = err_set("%s: split '%s', but manifest.json lists it as '%s'", path, s->meta.split ? "val" : "train", ms->split ? "val" : "train");
    else if (s->n_tokens != ms->tokens)
        rc = err_set("%s: %" PRIu64 " tokens, but manifest.json says %" PRIu64 " (the manifest disagrees with its shards)", path, s->n_tokens, ms->tokens);
    else if (s->n_docs != ms->docs)
        rc = err_set("%s: %" PRIu64 " documents, but manifest.json says %" PRIu64 " (the manifest disagrees with its shards)", path, s->n_docs, ms->docs);
    else if (s->meta.bos_id != m->bos || s->meta.eos_id != m->eos)
        rc = err_set("%s: bos/eos ids %d/%d, but manifest.json says %d/%d", path, s->meta.bos_id, s->meta.eos_id, m->bos, m->eos);
    else if (s->has_mask != m->sft)
        rc = err_set("%s: %s, but manifest.json %s", path, s->has_mask ? "has a loss mask" : "has no loss mask",
                     m->sft ? "says this is fine-tuning data (\"sft\")" : "describes plain data");
    if (rc) shard_info_free(s);
    return rc;
}

int loader_split_has_data(const char *dir, int split, int T, int *has) {
    struct manifest m;
    *has = 0;
    if (manifest_load(dir, &m) != 0) return -1;
    for (int s = 0; s < m.n_sources; s++) {  // the rule of select_sources
        uint64_t tokens = m.sources[s].tokens[split];
        *has |= m.sft ? tokens > 0 : tokens > 0 && (tokens - 1) / (uint64_t)T > 0;
    }
    manifest_free(&m);
    return 0;
}

int data_verify(const char *dir, int progress) {
    struct manifest m;
    if (manifest_load(dir, &m) != 0) return -1;
    int rc = manifest_check_tokenizer(&m, dir, NULL, 0);
    uint64_t tokens = 0;
    for (int i = 0; i < m.n_shards && rc == 0; i++) {
        struct shard_info s;
        if ((rc = open_listed_shard(&s, &m, &m.shards[i], dir)) != 0) break;
        rc = shard_verify(&s);
        tokens += s.n_tokens;
        shard_info_free(&s);
        if (progress) log_progress("verify: %d/%d shards, %.1f M tokens", i + 1, m.n_shards, tokens / 1e6);
    }
    if (progress) log_progress_end();
    manifest_free(&m);
    return rc;
}

// ---------------------------------------------------------------------------------------------------
// The loader
// ---------------------------------------------------------------------------------------------------
struct lsource {
    char name[32];
    double weight;           // normalised
    uint64_t n_tokens, n_windows;
    int first_shard, n_shards;
    uint64_t *start;         // n_shards + 1 entries: where each shard begins in the source's stream
    int manifest_index;
    // packed data, in memory: the stream's tokens with targets already masked (-1), and the examples
    int *tok, *tgt;          // n_tokens each; tgt[i] is the target of input tok[i] (tok[i+1] or -1)
    uint64_t *ex_start;      // n_ex: first token of each example kept
    uint32_t *ex_len;        // its input positions (tokens - 1, cut to T)
    uint64_t *win_first;     // n_windows + 1: the examples of window w are [win_first[w], win_first[w+1])
};

// A position: the next global sample, the samples drawn per source before it, and the seed.
struct cursor {
    uint64_t g, seed;
    uint64_t counts[LOADER_MAX_SOURCES];
};

// The hash keys a seed gives: the mixture's dice and each source's permutations.
struct keys {
    uint64_t mix;
    uint64_t source[LOADER_MAX_SOURCES];
};

#define N_SLOTS 2      // batches prepared ahead
#define FD_CACHE 64    // shard files kept open by the reading thread

struct lslot {
    int ready, failed;
    char err[1024];
    struct cursor after;
    int *inputs, *targets, *docs;
    struct loader_row *rows;
};

struct loader {
    struct loader_config c;
    char *dir;  // c.data_dir, owned (heap)
    struct shard_info *shards;
    int n_shards;
    struct lsource src[LOADER_MAX_SOURCES];
    int n_src;
    uint64_t fingerprint, mixture_hash;
    char sha[65];
    int vocab, bos, eos;
    int packed;              // fine-tuning data: packed windows (loader.h)
    uint64_t examples, truncated, dropped, targets;
    struct cursor pos;       // after the last batch returned

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop, started;
    uint64_t gen;            // bumped by set_state: batches being made for an older one are dropped
    struct cursor ahead;     // where the thread continues
    struct lslot slots[N_SLOTS];
    uint64_t produced, consumed;

    // owned by the thread
    int fd[FD_CACHE], fd_shard[FD_CACHE];
    uint64_t fd_used[FD_CACHE], fd_clock;
    uint8_t *scratch;
    size_t scratch_size;
    int *window;
};

// Bijection of [0, n) keyed by key: a 4-round Feistel network on the next even number of bits, walking
// the cycle until the value falls inside the domain (at most 4x on average).
static uint64_t permute(uint64_t x, uint64_t n, uint64_t key) {
    if (n <= 1) return 0;
    int bits = 64 - __builtin_clzll(n - 1);
    if (bits < 2) bits = 2;
    bits += bits & 1;
    int half = bits / 2;
    uint64_t mask = half == 64 ? ~0ULL : (1ULL << half) - 1;
    do {
        uint64_t L = x >> half, R = x & mask;
        for (int r = 0; r < 4; r++) {
            uint64_t f = rng_mix(key ^ rng_mix(R + 0x9E3779B97F4A7C15ULL * (uint64_t)(r + 1))) & mask;
            uint64_t t = L ^ f;
            L = R;
            R = t;
        }
        x = L << half | R;
    } while (x >= n);
    return x;
}

// The source of global sample g, given the samples drawn per source before it (see loader.h).
static int mix_pick(const struct loader *l, const struct keys *k, uint64_t g, const uint64_t *counts) {
    if (l->n_src == 1) return 0;
    double behind[LOADER_MAX_SOURCES], total = 0;
    int best = 0;
    for (int s = 0; s < l->n_src; s++) {
        double d = l->src[s].weight * (double)(g + 1) - (double)counts[s];
        behind[s] = d > 0 ? d : 0;
        total += behind[s];
        if (d > l->src[best].weight * (double)(g + 1) - (double)counts[best]) best = s;
    }
    if (total <= 0) return best;
    double u = rng_uniform_at(k->mix, g) * total;
    for (int s = 0; s < l->n_src; s++) {
        if (behind[s] > 0 && u < behind[s]) return s;
        u -= behind[s];
    }
    return best;
}

static void make_keys(const struct loader *l, uint64_t seed, struct keys *k) {
    // Validation windows do not depend on the run's seed, so that every run evaluates on the same data.
    uint64_t base = l->c.split ? 0x76616c6964ULL : seed;
    k->mix = rng_mix(base ^ 0x6D6978ULL);
    for (int s = 0; s < l->n_src; s++) k->source[s] = rng_hash_str(l->src[s].name, base);
}

// Advances the cursor by one sample and says which window it is.
static void cursor_step(const struct loader *l, const struct keys *k, struct cursor *c, struct loader_row *row) {
    int s = mix_pick(l, k, c->g, c->counts);
    uint64_t n = c->counts[s]++, W = l->src[s].n_windows;
    row->global_sample = c->g++;
    row->source = s;
    row->epoch = n / W;
    row->window = permute(n % W, W, rng_mix(k->source[s] ^ rng_mix(row->epoch + 0x5851F42D4C957F2DULL)));
}

// ---- reading (the thread) ----
static int shard_fd(struct loader *l, int shard) {
    int victim = 0;  // an unused entry, else the least recently used
    for (int i = 0; i < FD_CACHE; i++) {
        if (l->fd[i] >= 0 && l->fd_shard[i] == shard) {
            l->fd_used[i] = ++l->fd_clock;
            return l->fd[i];
        }
        if (l->fd[victim] >= 0 && (l->fd[i] < 0 || l->fd_used[i] < l->fd_used[victim])) victim = i;
    }
    const struct shard_info *s = &l->shards[shard];
    int fd = open(s->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return err_set("%s: cannot open: %s", s->name, strerror(errno));
    if (l->fd[victim] >= 0) close(l->fd[victim]);
    l->fd[victim] = fd;
    l->fd_shard[victim] = shard;
    l->fd_used[victim] = ++l->fd_clock;
    return fd;
}

// Reads stream[w*T, w*T + T + 1) of a source into out.
static int read_window(struct loader *l, int s, uint64_t w, int *out) {
    const struct lsource *src = &l->src[s];
    uint64_t p = w * (uint64_t)l->c.T, end = p + (uint64_t)l->c.T + 1;
    int lo = 0, hi = src->n_shards - 1;  // the last shard starting at or before p
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (src->start[mid] <= p) lo = mid;
        else hi = mid - 1;
    }
    for (int i = lo; p < end; i++) {
        CHECK(i < src->n_shards);
        uint64_t stop = end < src->start[i + 1] ? end : src->start[i + 1];
        int shard = src->first_shard + i;
        int fd = shard_fd(l, shard);
        if (fd < 0) return -1;
        if (shard_read_raw(&l->shards[shard], fd, p - src->start[i], stop - p, out, l->scratch) != 0) return -1;
        out += stop - p;
        p = stop;
    }
    return 0;
}

// Window w of a packed source: inputs, targets and document starts (T each).
static void packed_window(const struct loader *l, int s, uint64_t w, int *in, int *tg, int *docs) {
    const struct lsource *src = &l->src[s];
    const int T = l->c.T;
    int t = 0;
    for (uint64_t e = src->win_first[w]; e < src->win_first[w + 1]; e++) {
        const uint64_t a = src->ex_start[e];
        const int n = (int)src->ex_len[e];
        CHECK(t + n <= T);
        memcpy(in + t, src->tok + a, sizeof(int) * (size_t)n);
        memcpy(tg + t, src->tgt + a, sizeof(int) * (size_t)n);
        for (int k = 0; k < n; k++) docs[t + k] = t;
        t += n;
    }
    for (int k = t; k < T; k++) {  // padding: one more document that nothing attends into, no targets
        in[k] = l->eos >= 0 ? l->eos : 0;
        tg[k] = -1;
        docs[k] = t;
    }
}

// Document starts of a plain window from its BOS tokens (doc_mask).
static void bos_docs(const struct loader *l, const int *in, int *docs) {
    int d = 0;
    for (int t = 0; t < l->c.T; t++) {
        if (in[t] == l->bos) d = t;
        docs[t] = d;
    }
}

// Makes the batch of this rank that starts at cursor c (advancing it over the whole global batch).
static int make_batch(struct loader *l, struct cursor *c, struct lslot *slot) {
    int B = l->c.B, T = l->c.T;
    uint64_t GB = (uint64_t)B * l->c.dp_size, mine = (uint64_t)l->c.dp_rank * B;
    struct keys k;
    make_keys(l, c->seed, &k);
    for (uint64_t i = 0; i < GB; i++) {
        struct loader_row row;
        cursor_step(l, &k, c, &row);
        if (i < mine || i >= mine + B) continue;
        int b = (int)(i - mine);
        int *in = slot->inputs + (size_t)b * T, *tg = slot->targets + (size_t)b * T, *docs = slot->docs + (size_t)b * T;
        if (l->packed) {
            packed_window(l, row.source, row.window, in, tg, docs);
        } else {
            if (read_window(l, row.source, row.window, l->window) != 0) return -1;
            memcpy(in, l->window, sizeof(int) * T);
            memcpy(tg, l->window + 1, sizeof(int) * T);
            if (l->c.doc_mask) bos_docs(l, in, docs);
            else memset(docs, 0, sizeof(int) * T);
        }
        slot->rows[b] = row;
    }
    return 0;
}

static void *prefetch_thread(void *arg) {
    struct loader *l = arg;
    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        struct lslot *slot = &l->slots[l->produced % N_SLOTS];
        if (l->produced - l->consumed >= N_SLOTS || slot->ready) {
            pthread_cond_wait(&l->cv, &l->mu);
            continue;
        }
        uint64_t gen = l->gen;
        struct cursor c = l->ahead;
        pthread_mutex_unlock(&l->mu);
        int rc = make_batch(l, &c, slot);
        pthread_mutex_lock(&l->mu);
        if (gen != l->gen) continue;  // the position was reset meanwhile
        slot->failed = rc != 0;
        if (rc) snprintf(slot->err, sizeof(slot->err), "%s", err_msg());
        slot->after = c;
        slot->ready = 1;
        l->ahead = c;
        l->produced++;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

// ---- opening ----
static uint64_t hash_u64(uint64_t h, uint64_t v) { return rng_mix(h ^ rng_mix(v + 0x9E3779B97F4A7C15ULL)); }

static int select_sources(struct loader *l, const struct manifest *m) {
    const struct loader_config *c = &l->c;
    int pick[LOADER_MAX_SOURCES * 4], n = 0;
    double w[LOADER_MAX_SOURCES * 4];
    if (c->n_sources == 0) {
        if (m->n_sources > LOADER_MAX_SOURCES)
            return err_set("%s: %d sources; name at most %d in the config", m->path, m->n_sources, LOADER_MAX_SOURCES);
        for (int s = 0; s < m->n_sources; s++) { pick[n] = s; w[n++] = 0; }
    } else {
        if (c->n_sources < 0 || c->n_sources > LOADER_MAX_SOURCES) return err_set("%d sources: at most %d", c->n_sources, LOADER_MAX_SOURCES);
        for (int i = 0; i < c->n_sources; i++) {
            int found = -1;
            for (int s = 0; s < m->n_sources; s++)
                if (!strcmp(m->sources[s].name, c->source_names[i])) found = s;
            if (found < 0) {
                char list[512] = "";
                for (int s = 0; s < m->n_sources && strlen(list) < 400; s++)
                    snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", s ? ", " : "", m->sources[s].name);
                return err_set("%s: no source '%s' (it has: %s)", m->path, c->source_names[i], list);
            }
            for (int k = 0; k < n; k++)
                if (pick[k] == found) return err_set("source '%s' named twice", c->source_names[i]);
            if (!(c->weights[i] >= 0) || c->weights[i] > 1e12) return err_set("source '%s': weight %g must be >= 0", c->source_names[i], c->weights[i]);
            pick[n] = found;
            w[n++] = c->weights[i];
        }
    }
    int any_weight = 0;
    for (int k = 0; k < n; k++) any_weight |= w[k] > 0;
    double total = 0;
    for (int k = 0; k < n; k++) {
        const struct msource *ms = &m->sources[pick[k]];
        uint64_t tokens = ms->tokens[c->split];
        uint64_t windows = tokens > 0 ? (tokens - 1) / (uint64_t)c->T : 0;
        if (m->sft) windows = tokens > 0;  // packed: counted by pack_examples once the examples are read
        if (windows == 0) {
            if (c->split == SHARD_VAL) {  // small sources may have no held-out data: evaluate on the others
                log_warn("%s: source %s has %" PRIu64 " validation tokens, fewer than T+1 = %d; left out of validation",
                         m->path, ms->name, tokens, c->T + 1);
                continue;
            }
            return err_set("%s: source %s has %" PRIu64 " training tokens, fewer than T+1 = %d", m->path, ms->name, tokens, c->T + 1);
        }
        if (any_weight && w[k] == 0) continue;  // weight 0: not read
        struct lsource *s = &l->src[l->n_src++];
        snprintf(s->name, sizeof(s->name), "%s", ms->name);
        s->n_tokens = tokens;
        s->n_windows = windows;
        s->weight = any_weight ? w[k] : (double)tokens;
        total += s->weight;
        s->first_shard = -1;
        s->manifest_index = pick[k];
    }
    if (l->n_src == 0) return err_set("%s: no %s data to read for the selected sources", m->path, c->split ? "validation" : "training");
    for (int s = 0; s < l->n_src; s++) l->src[s].weight /= total;
    return 0;
}

static int open_shards(struct loader *l, const struct manifest *m) {
    l->shards = xcalloc(m->n_shards ? m->n_shards : 1, sizeof(struct shard_info));
    for (int s = 0; s < l->n_src; s++) {
        struct lsource *src = &l->src[s];
        int msrc = src->manifest_index, count = 0;
        for (int i = 0; i < m->n_shards; i++) count += m->shards[i].source == msrc && m->shards[i].split == l->c.split;
        src->start = xcalloc(count + 1, sizeof(uint64_t));
        src->first_shard = l->n_shards;
        for (int i = 0; i < m->n_shards; i++) {
            const struct mshard *ms = &m->shards[i];
            if (ms->source != msrc || ms->split != l->c.split) continue;
            struct shard_info *si = &l->shards[l->n_shards];
            if (open_listed_shard(si, m, ms, l->dir) != 0) return -1;
            l->n_shards++;
            src->start[src->n_shards + 1] = src->start[src->n_shards] + si->n_tokens;
            src->n_shards++;
            size_t need = shard_chunk_bytes(si);
            if (need > l->scratch_size) l->scratch_size = need;
        }
        CHECK(src->start[src->n_shards] == src->n_tokens);  // the manifest's sums were checked
    }
    return 0;
}

// Packed data: reads each source's examples (tokens, loss mask, document offsets) into memory through
// HDF5 and packs them into windows, in order (loader.h).
static int pack_examples(struct loader *l) {
    const int T = l->c.T;
    for (int s = 0; s < l->n_src; s++) {
        struct lsource *src = &l->src[s];
        src->tok = xmalloc(sizeof(int) * src->n_tokens);
        src->tgt = xmalloc(sizeof(int) * src->n_tokens);
        uint8_t *mask = xmalloc(src->n_tokens ? src->n_tokens : 1);
        uint64_t n_docs = 0;
        for (int i = 0; i < src->n_shards; i++) n_docs += l->shards[src->first_shard + i].n_docs;
        uint64_t *dstart = xmalloc(sizeof(uint64_t) * (n_docs + 1)), nd = 0;
        for (int i = 0; i < src->n_shards; i++) {
            const struct shard_info *si = &l->shards[src->first_shard + i];
            uint64_t *off, base = src->start[i];
            if (shard_read_tokens(si, 0, si->n_tokens, src->tok + base) != 0 ||
                shard_read_mask(si, 0, si->n_tokens, mask + base) != 0 || shard_read_doc_offsets(si, &off) != 0) {
                free(mask);
                free(dstart);
                return -1;
            }
            for (uint64_t k = 0; k < si->n_docs; k++) dstart[nd++] = base + off[k];
            free(off);
        }
        dstart[nd] = src->n_tokens;
        for (uint64_t i = 0; i < src->n_tokens; i++)  // target of input i: token i+1 when it is a target
            src->tgt[i] = i + 1 < src->n_tokens && mask[i + 1] ? src->tok[i + 1] : -1;
        src->ex_start = xmalloc(sizeof(uint64_t) * (nd ? nd : 1));
        src->ex_len = xmalloc(sizeof(uint32_t) * (nd ? nd : 1));
        src->win_first = xmalloc(sizeof(uint64_t) * (nd + 1));
        uint64_t ne = 0, nw = 0;
        int fill = T;  // positions used in the current window (T: none open)
        for (uint64_t d = 0; d < nd; d++) {
            uint64_t n = dstart[d + 1] - dstart[d];  // BOS .. EOS
            if (n < 2) continue;
            uint64_t pos = n - 1;
            if (pos > (uint64_t)T) {
                if (l->c.drop_long) {
                    l->dropped++;
                    continue;
                }
                pos = (uint64_t)T;
            }
            uint64_t targets = 0;
            for (uint64_t k = 0; k < pos; k++) targets += src->tgt[dstart[d] + k] >= 0;
            if (targets == 0) {  // cut before its response: nothing to learn
                l->dropped++;
                continue;
            }
            l->truncated += pos < n - 1;
            l->targets += targets;
            if (fill + (int)pos > T) {  // a new window
                src->win_first[nw++] = ne;
                fill = 0;
            }
            src->ex_start[ne] = dstart[d];
            src->ex_len[ne++] = (uint32_t)pos;
            fill += (int)pos;
        }
        src->win_first[nw] = ne;
        src->n_windows = nw;
        l->examples += ne;
        free(mask);
        free(dstart);
        if (nw == 0)
            return err_set("%s: source %s: no example with a target within seq_len %d (%" PRIu64 " dropped)", l->dir,
                           src->name, T, l->dropped);
    }
    return 0;
}

int loader_parse_mixture(struct loader_config *c, const char *spec) {
    c->n_sources = 0;
    char *copy = strdup(spec ? spec : ""), *save = NULL;
    int rc = 0, weighted = -1;
    for (char *item = strtok_r(copy, ",", &save); item && rc == 0; item = strtok_r(NULL, ",", &save)) {
        while (*item == ' ' || *item == '\t') item++;
        char *end = item + strlen(item);
        while (end > item && (end[-1] == ' ' || end[-1] == '\t')) *--end = '\0';
        if (!*item) continue;
        char *colon = strchr(item, ':');
        double w = 0;
        if (colon) {
            *colon = '\0';
            char *e;
            w = strtod(colon + 1, &e);
            if (e == colon + 1 || *e || !(w > 0)) rc = err_set("mixture \"%s\": weight of %s must be a positive number", spec, item);
        }
        if (rc == 0 && weighted >= 0 && weighted != (colon != NULL))
            rc = err_set("mixture \"%s\": give a weight to every source or to none", spec);
        weighted = colon != NULL;
        if (rc == 0 && !prep_name_valid(item)) rc = err_set("mixture \"%s\": '%s' is not a source name", spec, item);
        if (rc == 0 && c->n_sources == LOADER_MAX_SOURCES) rc = err_set("mixture \"%s\": more than %d sources", spec, LOADER_MAX_SOURCES);
        if (rc == 0) {
            snprintf(c->source_names[c->n_sources], sizeof(c->source_names[0]), "%s", item);
            c->weights[c->n_sources++] = w;
        }
    }
    free(copy);
    if (rc) c->n_sources = 0;
    return rc;
}

int loader_open(struct loader **out, const struct loader_config *c) {
    *out = NULL;
    if (!c->data_dir) return err_set("no data directory");
    if (c->B < 1 || c->T < 1) return err_set("loader: B = %d and T = %d must be positive", c->B, c->T);
    if (c->dp_size < 1 || c->dp_rank < 0 || c->dp_rank >= c->dp_size)
        return err_set("loader: dp_rank %d of dp_size %d", c->dp_rank, c->dp_size);
    if (c->split != SHARD_TRAIN && c->split != SHARD_VAL) return err_set("loader: split %d is neither 0 (train) nor 1 (val)", c->split);
    struct loader *l = xcalloc(1, sizeof(*l));
    l->c = *c;
    l->dir = strdup(c->data_dir);
    CHECK(l->dir);
    l->c.data_dir = l->dir;
    l->c.tokenizer_sha256 = NULL;
    for (int i = 0; i < FD_CACHE; i++) l->fd[i] = -1;
    struct manifest m;
    int rc = manifest_load(l->dir, &m);
    if (rc == 0) {
        rc = manifest_check_tokenizer(&m, l->dir, c->tokenizer_sha256, c->vocab_size);
        l->packed = m.sft;
        if (rc == 0) rc = select_sources(l, &m);
        if (rc == 0) rc = open_shards(l, &m);
        snprintf(l->sha, sizeof(l->sha), "%s", m.sha);
        l->vocab = m.vocab;
        l->bos = m.bos;
        l->eos = m.eos;
        manifest_free(&m);
        if (rc == 0 && l->packed) rc = pack_examples(l);
    }
    if (rc) {
        loader_close(l);
        return -1;
    }
    uint64_t fp = hash_u64(rng_hash_str(l->sha, 0), (uint64_t)c->split);
    fp = hash_u64(fp, (uint64_t)c->T);
    if (l->packed) fp = hash_u64(fp, 0x7061636bULL + (uint64_t)c->drop_long);  // other windows
    uint64_t wh = 0;
    for (int s = 0; s < l->n_src; s++) {
        fp = hash_u64(hash_u64(fp, rng_hash_str(l->src[s].name, 1)), l->src[s].n_tokens);
        uint64_t bits;
        memcpy(&bits, &l->src[s].weight, sizeof(bits));
        wh = hash_u64(wh, bits);
    }
    l->fingerprint = fp;
    l->mixture_hash = wh;
    l->pos.seed = l->ahead.seed = c->seed;

    int B = c->B, T = c->T;
    for (int i = 0; i < N_SLOTS; i++) {
        l->slots[i].inputs = xmalloc(sizeof(int) * (size_t)B * T);
        l->slots[i].targets = xmalloc(sizeof(int) * (size_t)B * T);
        l->slots[i].docs = xmalloc(sizeof(int) * (size_t)B * T);
        l->slots[i].rows = xmalloc(sizeof(struct loader_row) * (size_t)B);
    }
    l->scratch = xmalloc(l->scratch_size ? l->scratch_size : 1);
    l->window = xmalloc(sizeof(int) * ((size_t)T + 1));
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    CHECK(pthread_create(&l->thread, NULL, prefetch_thread, l) == 0);
    l->started = 1;
    *out = l;
    return 0;
}

void loader_close(struct loader *l) {
    if (!l) return;
    if (l->started) {
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv);
    }
    for (int i = 0; i < FD_CACHE; i++)
        if (l->fd[i] >= 0) close(l->fd[i]);
    for (int i = 0; i < l->n_shards; i++) shard_info_free(&l->shards[i]);
    free(l->shards);
    for (int s = 0; s < l->n_src; s++) {
        free(l->src[s].start);
        free(l->src[s].tok);
        free(l->src[s].tgt);
        free(l->src[s].ex_start);
        free(l->src[s].ex_len);
        free(l->src[s].win_first);
    }
    for (int i = 0; i < N_SLOTS; i++) {
        free(l->slots[i].inputs);
        free(l->slots[i].targets);
        free(l->slots[i].docs);
        free(l->slots[i].rows);
    }
    free(l->scratch);
    free(l->window);
    free(l->dir);
    free(l);
}

static int next_batch(struct loader *l, int *inputs, int *targets, int *docs, struct loader_row *rows) {
    size_t n = (size_t)l->c.B * l->c.T;
    pthread_mutex_lock(&l->mu);
    struct lslot *slot = &l->slots[l->consumed % N_SLOTS];
    while (!slot->ready) pthread_cond_wait(&l->cv, &l->mu);
    if (slot->failed) {  // stays failed: the position does not move past a bad read
        err_set("%s", slot->err);
        pthread_mutex_unlock(&l->mu);
        return -1;
    }
    memcpy(inputs, slot->inputs, sizeof(int) * n);
    memcpy(targets, slot->targets, sizeof(int) * n);
    if (docs) memcpy(docs, slot->docs, sizeof(int) * n);
    if (rows) memcpy(rows, slot->rows, sizeof(struct loader_row) * (size_t)l->c.B);
    l->pos = slot->after;
    slot->ready = 0;
    l->consumed++;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return 0;
}

int loader_next_rows(struct loader *l, int *inputs, int *targets, struct loader_row *rows) {
    return next_batch(l, inputs, targets, NULL, rows);
}
int loader_next_docs(struct loader *l, int *inputs, int *targets, int *docs) {
    return next_batch(l, inputs, targets, docs, NULL);
}
int loader_next(struct loader *l, int *inputs, int *targets) { return next_batch(l, inputs, targets, NULL, NULL); }
int loader_has_docs(const struct loader *l) { return l->packed || l->c.doc_mask; }

void loader_get_state(const struct loader *l, struct loader_state *s) {
    memset(s, 0, sizeof(*s));
    s->global_sample = l->pos.g;
    s->seed = l->pos.seed;
    s->fingerprint = l->fingerprint;
    s->mixture = l->mixture_hash;
    s->n_sources = (uint64_t)l->n_src;
    uint64_t epoch = UINT64_MAX;
    for (int i = 0; i < l->n_src; i++) {
        s->source_samples[i] = l->pos.counts[i];
        uint64_t e = l->pos.counts[i] / l->src[i].n_windows;
        if (e < epoch) epoch = e;
    }
    s->epoch = epoch;
}

static void restart_at(struct loader *l, const struct cursor *c) {
    pthread_mutex_lock(&l->mu);
    l->gen++;
    l->pos = *c;
    l->ahead = *c;
    for (int i = 0; i < N_SLOTS; i++) l->slots[i].ready = 0;
    l->produced = l->consumed = 0;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

int loader_set_state(struct loader *l, const struct loader_state *s) {
    if (s->n_sources != (uint64_t)l->n_src || s->fingerprint != l->fingerprint)
        return err_set("%s: the loader state is for other data (fingerprint %016" PRIx64 ", %" PRIu64 " sources; this data: %016" PRIx64
                       ", %d sources): same data, split, sources and seq_len are needed to resume",
                       l->dir, s->fingerprint, s->n_sources, l->fingerprint, l->n_src);
    uint64_t sum = 0;
    for (int i = 0; i < l->n_src; i++) sum += s->source_samples[i];
    if (sum != s->global_sample)
        return err_set("loader state is inconsistent: %" PRIu64 " samples per source add up to %" PRIu64, s->global_sample, sum);
    if (s->mixture != l->mixture_hash)
        log_warn("%s: the mixture weights differ from those of the saved loader state; the mixture moves to the new weights",
                 l->dir);
    struct cursor c = {.g = s->global_sample, .seed = s->seed};
    for (int i = 0; i < l->n_src; i++) c.counts[i] = s->source_samples[i];
    restart_at(l, &c);
    return 0;
}

int loader_reset(struct loader *l) {
    pthread_mutex_lock(&l->mu);
    struct cursor c = {.seed = l->pos.seed};
    pthread_mutex_unlock(&l->mu);
    restart_at(l, &c);
    return 0;
}

void loader_get_info(const struct loader *l, struct loader_info *info) {
    memset(info, 0, sizeof(*info));
    info->n_sources = l->n_src;
    for (int s = 0; s < l->n_src; s++) {
        snprintf(info->names[s], sizeof(info->names[s]), "%s", l->src[s].name);
        info->weights[s] = l->src[s].weight;
        info->tokens[s] = l->src[s].n_tokens;
        info->windows[s] = l->src[s].n_windows;
    }
    info->n_shards = l->n_shards;
    snprintf(info->tokenizer_sha256, sizeof(info->tokenizer_sha256), "%s", l->sha);
    info->vocab_size = l->vocab;
    info->bos_id = l->bos;
    info->eos_id = l->eos;
    info->packed = l->packed;
    info->examples = l->examples;
    info->truncated = l->truncated;
    info->dropped = l->dropped;
    info->targets = l->targets;
    for (int s = 0; s < l->n_src; s++) info->positions += l->src[s].n_windows * (uint64_t)l->c.T;
}
