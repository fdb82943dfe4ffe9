// The streaming loader: windows are the documented cut of each source's stream, batches are deterministic,
// data-parallel ranks split the global batch without overlap and together cover every window once per
// epoch, the mixture holds its weights, a saved state resumes with the same batches (also on another
// number of ranks), validation reads the held-out split, and bad data gives one-line errors.
#define FIX_NAME "test_loader"
#include "datautil.h"

#include <cjson/cJSON.h>
#include <fcntl.h>

#include "data/loader.h"
#include "data/shard.h"

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
    (void)set;
    fix_setup();
}

static const char *data_dir(void) {
    static char p[1200];
    snprintf(p, sizeof(p), "%s/tokprep", fix_root);
    return p;
}

static struct loader_config config(int B, int T, int dp_rank, int dp_size) {
    struct loader_config c = {.data_dir = data_dir(), .B = B, .T = T, .seed = 42, .dp_rank = dp_rank, .dp_size = dp_size,
                              .vocab_size = FIX_VOCAB};
    return c;
}

static void add_source(struct loader_config *c, const char *name, double w) {
    snprintf(c->source_names[c->n_sources], 32, "%s", name);
    c->weights[c->n_sources++] = w;
}

static struct loader *open_or_die(const struct loader_config *c) {
    struct loader *l = NULL;
    cr_assert(loader_open(&l, c) == 0, "%s", err_msg());
    return l;
}

struct batch { int *in, *tgt; struct loader_row *rows; int B, T; };

static struct batch batch_new(int B, int T) {
    struct batch b = {malloc(sizeof(int) * B * T), malloc(sizeof(int) * B * T), malloc(sizeof(struct loader_row) * B), B, T};
    return b;
}
static void batch_free(struct batch *b) { free(b->in); free(b->tgt); free(b->rows); }
static void next_or_die(struct loader *l, struct batch *b) {
    cr_assert(loader_next_rows(l, b->in, b->tgt, b->rows) == 0, "%s", err_msg());
}

// The concatenated tokens of a source's shards in one split, in manifest order.
static int *read_stream(const char *dir, const char *source, int split, uint64_t *n) {
    char p[1300];
    snprintf(p, sizeof(p), "%s/manifest.json", dir);
    char *text = fix_read(p, NULL);
    cJSON *m = cJSON_Parse(text);
    free(text);
    int *all = NULL;
    *n = 0;
    const cJSON *sh;
    cJSON_ArrayForEach(sh, cJSON_GetObjectItem(m, "shards")) {
        if (strcmp(cJSON_GetObjectItem(sh, "source")->valuestring, source)) continue;
        if (strcmp(cJSON_GetObjectItem(sh, "split")->valuestring, split ? "val" : "train")) continue;
        snprintf(p, sizeof(p), "%s/%s", dir, cJSON_GetObjectItem(sh, "file")->valuestring);
        struct shard_info s;
        cr_assert(shard_open(&s, p, p, NULL, 0) == 0, "%s", err_msg());
        all = realloc(all, sizeof(int) * (*n + s.n_tokens));
        cr_assert(shard_read_tokens(&s, 0, s.n_tokens, all + *n) == 0);
        *n += s.n_tokens;
        shard_info_free(&s);
    }
    cJSON_Delete(m);
    return all;
}

Test(loader, windows_are_the_source_stream_cut_every_T_tokens) {
    struct loader_config c = config(4, 64, 0, 1);
    struct loader *l = open_or_die(&c);
    struct loader_info info;
    loader_get_info(l, &info);
    cr_assert_eq(info.n_sources, FIX_N_LANGS);
    int *stream[FIX_N_LANGS];
    uint64_t len[FIX_N_LANGS];
    for (int s = 0; s < info.n_sources; s++) {
        stream[s] = read_stream(data_dir(), info.names[s], 0, &len[s]);
        cr_assert_eq(len[s], info.tokens[s]);
        cr_assert_eq(info.windows[s], (len[s] - 1) / 64);
        cr_assert_eq(stream[s][0], 1, "a stream starts with BOS");
    }
    struct batch b = batch_new(4, 64);
    int boundary = 0;
    for (int step = 0; step < 60; step++) {
        next_or_die(l, &b);
        for (int r = 0; r < 4; r++) {
            const struct loader_row *row = &b.rows[r];
            cr_assert_eq(row->global_sample, (uint64_t)step * 4 + r);
            const int *want = stream[row->source] + row->window * 64;
            cr_assert(memcmp(b.in + r * 64, want, sizeof(int) * 64) == 0, "inputs of row %d, step %d", r, step);
            cr_assert(memcmp(b.tgt + r * 64, want + 1, sizeof(int) * 64) == 0, "targets of row %d, step %d", r, step);
            for (int t = 0; t < 64; t++) {
                cr_assert(b.in[r * 64 + t] >= 0 && b.in[r * 64 + t] < FIX_VOCAB);
                boundary += b.in[r * 64 + t] == 2 && t + 1 < 64 && b.in[r * 64 + t + 1] == 1;  // EOS then BOS
            }
        }
    }
    cr_expect(boundary > 20, "documents are not joined with EOS/BOS inside windows (%d joins)", boundary);
    batch_free(&b);
    for (int s = 0; s < info.n_sources; s++) free(stream[s]);
    loader_close(l);
}

static void expect_same_batches(struct loader *a, struct loader *b, int steps, int B, int T, int want_same) {
    struct batch x = batch_new(B, T), y = batch_new(B, T);
    int same = 1;
    for (int s = 0; s < steps; s++) {
        next_or_die(a, &x);
        next_or_die(b, &y);
        same &= !memcmp(x.in, y.in, sizeof(int) * B * T) && !memcmp(x.tgt, y.tgt, sizeof(int) * B * T);
    }
    cr_expect(same == want_same, "%s", want_same ? "batches differ" : "batches are the same");
    batch_free(&x);
    batch_free(&y);
}

Test(loader, batches_are_deterministic_from_the_seed) {
    struct loader_config c = config(8, 32, 0, 1);
    struct loader *a = open_or_die(&c), *b = open_or_die(&c);
    expect_same_batches(a, b, 30, 8, 32, 1);
    loader_close(b);
    c.seed = 43;
    b = open_or_die(&c);
    expect_same_batches(a, b, 5, 8, 32, 0);
    loader_close(a);
    loader_close(b);
}

// 4 ranks of B each read, side by side, exactly the batch one rank of 4B reads; no window twice.
Test(loader, four_dp_ranks_split_the_global_batch_without_overlap) {
    const int B = 4, T = 48, steps = 40;
    struct loader_config c1 = config(4 * B, T, 0, 1);
    struct loader *one = open_or_die(&c1), *rank[4];
    for (int r = 0; r < 4; r++) {
        struct loader_config c = config(B, T, r, 4);
        rank[r] = open_or_die(&c);
    }
    struct batch big = batch_new(4 * B, T), part = batch_new(B, T);
    int n_seen = 0;
    uint64_t *seen = malloc(sizeof(uint64_t) * steps * 4 * B);
    for (int s = 0; s < steps; s++) {
        next_or_die(one, &big);
        for (int r = 0; r < 4; r++) {
            next_or_die(rank[r], &part);
            cr_assert(memcmp(part.in, big.in + r * B * T, sizeof(int) * B * T) == 0, "rank %d, step %d", r, s);
            cr_assert(memcmp(part.tgt, big.tgt + r * B * T, sizeof(int) * B * T) == 0);
            for (int i = 0; i < B; i++) {
                const struct loader_row *row = &part.rows[i];
                cr_assert_eq(row->global_sample, (uint64_t)s * 4 * B + r * B + i);
                cr_assert_eq(row->epoch, 0);
                uint64_t key = (uint64_t)row->source << 48 | row->window;
                for (int k = 0; k < n_seen; k++) cr_assert_neq(seen[k], key, "window read twice (rank %d, step %d)", r, s);
                seen[n_seen++] = key;
            }
        }
    }
    free(seen);
    batch_free(&big);
    batch_free(&part);
    loader_close(one);
    for (int r = 0; r < 4; r++) loader_close(rank[r]);
}

// One source: in each epoch the 4 ranks together read every window exactly once; epochs are reshuffled.
Test(loader, ranks_cover_every_window_once_per_epoch_and_epochs_reshuffle) {
    const int B = 3, T = 40;
    struct loader *rank[4];
    for (int r = 0; r < 4; r++) {
        struct loader_config c = config(B, T, r, 4);
        add_source(&c, "bg", 0);
        rank[r] = open_or_die(&c);
    }
    struct loader_info info;
    loader_get_info(rank[0], &info);
    uint64_t W = info.windows[0];
    cr_assert(W > 50 && W < 5000, "%llu windows", (unsigned long long)W);
    uint64_t total = 2 * W + 4 * B, got = 0;
    uint64_t *order = malloc(sizeof(uint64_t) * (total + 4 * B));
    int *hits = calloc(2 * W, sizeof(int));
    struct batch b = batch_new(B, T);
    while (got < total) {
        for (int r = 0; r < 4; r++) {
            next_or_die(rank[r], &b);
            for (int i = 0; i < B; i++) {
                const struct loader_row *row = &b.rows[i];
                cr_assert_eq(row->epoch, row->global_sample / W);
                if (row->epoch < 2) hits[row->epoch * W + row->window]++;
                order[row->global_sample] = row->window;
            }
        }
        got += 4 * B;
    }
    for (uint64_t w = 0; w < 2 * W; w++) cr_assert_eq(hits[w], 1, "window %llu of epoch %llu read %d times", (unsigned long long)(w % W), (unsigned long long)(w / W), hits[w]);
    uint64_t same_place = 0;
    for (uint64_t k = 0; k < W; k++) same_place += order[k] == order[W + k];
    cr_expect(same_place < W / 10, "epoch 2 is not reshuffled (%llu of %llu in the same place)", (unsigned long long)same_place, (unsigned long long)W);
    free(order);
    free(hits);
    batch_free(&b);
    for (int r = 0; r < 4; r++) loader_close(rank[r]);
}

static void expect_mixture(struct loader *l, int B, int T, int steps, const double *want, int n, double tol) {
    struct batch b = batch_new(B, T);
    uint64_t count[LOADER_MAX_SOURCES] = {0}, seen = 0;
    double worst = 0;
    for (int s = 0; s < steps; s++) {
        next_or_die(l, &b);
        for (int i = 0; i < B; i++) count[b.rows[i].source]++;
        seen += B;
        if (seen >= 200)  // the weights hold over the run, not just at its end
            for (int k = 0; k < n; k++) {
                double e = (double)count[k] / seen - want[k];
                if (e < 0) e = -e;
                if (e > worst) worst = e;
            }
    }
    for (int k = 0; k < n; k++)
        cr_expect((double)count[k] / seen > want[k] - tol && (double)count[k] / seen < want[k] + tol,
                  "source %d: %.4f of the samples, weight %.4f", k, (double)count[k] / seen, want[k]);
    cr_expect(worst < tol, "the mixture strays %.4f from its weights during the run", worst);
    batch_free(&b);
}

Test(loader, mixture_weights_hold_within_two_percent_over_a_run) {
    struct loader_config c = config(8, 32, 0, 1);
    add_source(&c, "en", 0.4);
    add_source(&c, "ru", 0.3);
    add_source(&c, "de", 0.3);
    struct loader *l = open_or_die(&c);
    double want[] = {0.4, 0.3, 0.3};
    expect_mixture(l, 8, 32, 500, want, 3, 0.02);  // 4000 samples: more than one epoch of each source
    struct loader_info info;
    loader_get_info(l, &info);
    cr_expect(4000 * 0.4 > info.windows[0], "the run should pass an epoch of en (%llu windows)", (unsigned long long)info.windows[0]);
    loader_close(l);
    // weights of any scale; and a weight that is small
    c = config(8, 32, 0, 1);
    add_source(&c, "pl", 5);
    add_source(&c, "it", 90);
    add_source(&c, "cs", 5);
    l = open_or_die(&c);
    double want2[] = {0.05, 0.9, 0.05};
    expect_mixture(l, 8, 32, 300, want2, 3, 0.02);
    loader_close(l);
    // no weights: proportional to the sources' tokens
    c = config(8, 32, 0, 1);
    l = open_or_die(&c);
    loader_get_info(l, &info);
    double want3[LOADER_MAX_SOURCES], total = 0;
    for (int s = 0; s < info.n_sources; s++) total += (double)info.tokens[s];
    for (int s = 0; s < info.n_sources; s++) want3[s] = info.tokens[s] / total;
    expect_mixture(l, 8, 32, 300, want3, info.n_sources, 0.02);
    loader_close(l);
}

Test(loader, a_saved_state_resumes_with_the_same_batches_on_any_number_of_ranks) {
    const int T = 32;
    struct loader_config c = config(8, T, 0, 1);
    add_source(&c, "en", 0.5);
    add_source(&c, "ru", 0.25);
    add_source(&c, "bg", 0.25);  // small: passes epochs within the run
    struct loader *l = open_or_die(&c);
    struct batch b = batch_new(8, T);
    for (int s = 0; s < 60; s++) next_or_die(l, &b);
    struct loader_state st;
    loader_get_state(l, &st);
    cr_assert_eq(st.global_sample, 480);
    cr_assert_eq(st.seed, 42);
    cr_assert_eq(st.source_samples[0] + st.source_samples[1] + st.source_samples[2], 480);
    const int steps = 12;
    int *want_in = malloc(sizeof(int) * steps * 8 * T), *want_tgt = malloc(sizeof(int) * steps * 8 * T);
    for (int s = 0; s < steps; s++) {
        next_or_die(l, &b);
        memcpy(want_in + s * 8 * T, b.in, sizeof(int) * 8 * T);
        memcpy(want_tgt + s * 8 * T, b.tgt, sizeof(int) * 8 * T);
    }
    // the same loader, rewound
    cr_assert(loader_set_state(l, &st) == 0, "%s", err_msg());
    for (int s = 0; s < steps; s++) {
        next_or_die(l, &b);
        cr_assert(memcmp(b.in, want_in + s * 8 * T, sizeof(int) * 8 * T) == 0, "rewound: step %d differs", s);
    }
    loader_close(l);
    // a new run of 2 ranks of 4 (same global batch), seeded differently: the state's seed wins
    struct loader *r[2];
    for (int k = 0; k < 2; k++) {
        struct loader_config ck = c;
        ck.B = 4;
        ck.dp_rank = k;
        ck.dp_size = 2;
        ck.seed = 7;
        r[k] = open_or_die(&ck);
        for (int s = 0; s < 3; s++) {  // a few batches first: set_state must drop what was prefetched
            struct batch tmp = batch_new(4, T);
            next_or_die(r[k], &tmp);
            batch_free(&tmp);
        }
        cr_assert(loader_set_state(r[k], &st) == 0, "%s", err_msg());
    }
    struct batch half = batch_new(4, T);
    for (int s = 0; s < steps; s++)
        for (int k = 0; k < 2; k++) {
            next_or_die(r[k], &half);
            cr_assert(memcmp(half.in, want_in + s * 8 * T + k * 4 * T, sizeof(int) * 4 * T) == 0, "rank %d, step %d differs", k, s);
            cr_assert(memcmp(half.tgt, want_tgt + s * 8 * T + k * 4 * T, sizeof(int) * 4 * T) == 0);
        }
    struct loader_state st2;
    loader_get_state(r[1], &st2);
    cr_expect_eq(st2.global_sample, 480 + steps * 8);
    for (int k = 0; k < 2; k++) loader_close(r[k]);
    // a state from other data (another seq_len) is refused
    struct loader_config c64 = c;
    c64.T = 64;
    l = open_or_die(&c64);
    cr_expect(loader_set_state(l, &st) == -1);
    cr_expect(strstr(err_msg(), "other data"), "%s", err_msg());
    loader_close(l);
    free(want_in);
    free(want_tgt);
    batch_free(&b);
    batch_free(&half);
}

Test(loader, validation_reads_the_held_out_split_the_same_for_every_seed) {
    struct loader_config c = config(4, 32, 0, 1);
    c.split = SHARD_VAL;
    struct loader *a = open_or_die(&c);
    c.seed = 999;
    struct loader *b = open_or_die(&c);
    struct loader_info info;
    loader_get_info(a, &info);
    cr_assert(info.n_sources >= 3, "%d sources with validation data", info.n_sources);
    int *stream[LOADER_MAX_SOURCES];
    uint64_t len;
    for (int s = 0; s < info.n_sources; s++) {
        stream[s] = read_stream(data_dir(), info.names[s], SHARD_VAL, &len);
        cr_assert_eq(len, info.tokens[s]);
    }
    struct batch x = batch_new(4, 32), y = batch_new(4, 32);
    int *first = malloc(sizeof(int) * 10 * 4 * 32);
    for (int s = 0; s < 10; s++) {
        next_or_die(a, &x);
        next_or_die(b, &y);
        cr_assert(memcmp(x.in, y.in, sizeof(int) * 4 * 32) == 0, "validation batches depend on the seed");
        memcpy(first + s * 4 * 32, x.in, sizeof(int) * 4 * 32);
        for (int i = 0; i < 4; i++)
            cr_assert(memcmp(x.in + i * 32, stream[x.rows[i].source] + x.rows[i].window * 32, sizeof(int) * 32) == 0);
    }
    cr_assert(loader_reset(a) == 0);
    for (int s = 0; s < 10; s++) {
        next_or_die(a, &x);
        cr_assert(memcmp(x.in, first + s * 4 * 32, sizeof(int) * 4 * 32) == 0, "after a reset, batch %d differs", s);
    }
    free(first);
    for (int s = 0; s < info.n_sources; s++) free(stream[s]);
    batch_free(&x);
    batch_free(&y);
    loader_close(a);
    loader_close(b);
}

static void copy_data(const char *to) {
    char cmd[3000];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && cp -r '%s' '%s'", to, data_dir(), to);
    cr_assert(system(cmd) == 0);
}

static void expect_open_error(const struct loader_config *c, const char *file, const char *what) {
    struct loader *l;
    cr_expect(loader_open(&l, c) == -1, "opened (%s)", what);
    cr_expect(strstr(err_msg(), file) && strstr(err_msg(), what), "expected '%s' and '%s' in: %s", file, what, err_msg());
    cr_expect(!strchr(err_msg(), '\n'), "not one line: %s", err_msg());
}

Test(loader, bad_data_gives_one_line_errors_naming_the_file) {
    struct loader_config c = config(4, 32, 0, 1);
    c.tokenizer_sha256 = "abababababababababababababababababababababababababababababababab";
    expect_open_error(&c, "manifest.json", "different tokenizer");
    c = config(4, 32, 0, 1);
    c.vocab_size = 32000;
    expect_open_error(&c, "manifest.json", "vocab_size 1000 differs from the run's vocab_size 32000");
    c = config(4, 100000, 0, 1);
    expect_open_error(&c, "manifest.json", "fewer than T+1");
    c = config(4, 32, 0, 1);
    add_source(&c, "xx", 1);
    expect_open_error(&c, "manifest.json", "no source 'xx'");
    char d[1200], p[1300];
    fix_path(d, sizeof(d), "nodata");
    c = config(4, 32, 0, 1);
    c.data_dir = d;
    expect_open_error(&c, "nodata/manifest.json", "cannot open");

    // a truncated shard: refused on open
    fix_path(d, sizeof(d), "truncated");
    copy_data(d);
    snprintf(p, sizeof(p), "%s/shards/de_00000.h5", d);
    size_t n = 0;
    char *bytes = fix_read(p, &n);
    fix_write(p, bytes, n - 5000);
    free(bytes);
    c = config(4, 32, 0, 1);
    c.data_dir = d;
    expect_open_error(&c, "shards/de_00000.h5", "differs from the");  // its sha256 in manifest.json
    // the same without the manifest's hashes (data written before they were recorded): libhdf5's open
    snprintf(p, sizeof(p), "sed -i '/\"shards\":/,$ {/\"sha256\"/d}' %s/manifest.json", d);
    cr_assert(system(p) == 0);
    expect_open_error(&c, "shards/de_00000.h5", "truncated or corrupted");

    // a corrupted shard without hashes in the manifest: found when a batch reads it
    fix_path(d, sizeof(d), "corrupted");
    copy_data(d);
    snprintf(p, sizeof(p), "sed -i '/\"shards\":/,$ {/\"sha256\"/d}' %s/manifest.json", d);
    cr_assert(system(p) == 0);
    snprintf(p, sizeof(p), "%s/shards/bg_00000.h5", d);
    struct shard_info s;
    cr_assert(shard_open(&s, p, p, NULL, 0) == 0);
    int fd = open(p, O_RDWR);
    for (uint64_t k = 0; k < s.n_chunks; k++) {  // one flipped byte in every chunk
        uint64_t addr = s.chunk_addr ? s.chunk_addr[k] : s.chunk_addr0 + k * s.chunk_stride;
        uint8_t byte;
        cr_assert(pread(fd, &byte, 1, (off_t)addr + 3) == 1);
        byte ^= 0x40;
        cr_assert(pwrite(fd, &byte, 1, (off_t)addr + 3) == 1);
    }
    close(fd);
    shard_info_free(&s);
    c = config(4, 32, 0, 1);
    c.data_dir = d;
    add_source(&c, "bg", 1);
    struct loader *l = open_or_die(&c);
    struct batch b = batch_new(4, 32);
    cr_expect(loader_next(l, b.in, b.tgt) == -1, "read a corrupted shard");
    cr_expect(strstr(err_msg(), "shards/bg_00000.h5: checksum mismatch"), "%s", err_msg());
    struct loader_state st;
    loader_get_state(l, &st);
    cr_expect_eq(st.global_sample, 0, "the position moved past a failed batch");
    cr_expect(loader_next(l, b.in, b.tgt) == -1, "a failed loader recovered by itself");
    batch_free(&b);
    loader_close(l);
}

Test(loader, mixture_specs_parse_as_documented) {
    struct loader_config c = config(4, 32, 0, 1);
    cr_assert(loader_parse_mixture(&c, "en:0.4, ru:0.3 ,de:0.3") == 0, "%s", err_msg());
    cr_expect_eq(c.n_sources, 3);
    cr_expect_str_eq(c.source_names[1], "ru");
    cr_expect(c.weights[0] == 0.4 && c.weights[2] == 0.3);
    cr_assert(loader_parse_mixture(&c, "en, ru") == 0);
    cr_expect(c.n_sources == 2 && c.weights[0] == 0 && c.weights[1] == 0);
    cr_assert(loader_parse_mixture(&c, "") == 0);
    cr_expect_eq(c.n_sources, 0);
    cr_expect(loader_parse_mixture(&c, "en:0.5, ru") == -1);
    cr_expect(strstr(err_msg(), "every source or to none"), "%s", err_msg());
    cr_expect(loader_parse_mixture(&c, "en:abc") == -1);
    cr_expect(loader_parse_mixture(&c, "en:-1") == -1);
    cr_expect(loader_parse_mixture(&c, "e n:1") == -1);
}
