// Fixtures shared by the data tests: the demo corpus, a small multilingual sample of it, a small tokenizer
// trained on the sample, and a prepared data directory. Each test binary builds its own copy under
// LLAMAC_TEST_TMP/FIX_NAME/ once, in a Criterion PRE_ALL hook (the tests run in their own processes and
// find it by name). Define FIX_NAME before including this file.
#pragma once
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "data/democorpus.h"
#include "data/prep.h"
#include "data/tokenizer.h"

#define FIX_VOCAB 1000
static const char *fix_langs[] = {"en", "de", "ru", "bg", "es", "it", "pl", "cs", "pt"};
#define FIX_N_LANGS 9

static const char fix_root[] = LLAMAC_TEST_TMP "/" FIX_NAME;

static void fix_path(char *out, size_t n, const char *rel) { snprintf(out, n, "%s/%s", fix_root, rel); }

static void fix_die(const char *what) {
    fprintf(stderr, "fixture: %s: %s\n", what, err_msg());
    exit(1);
}

static void fix_rm_rf(const char *path) {
    char cmd[2200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    if (system(cmd) != 0) fix_die("rm -rf");
}

// Writes path with the given bytes.
static void fix_write(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "fixture: cannot write %s\n", path);
        exit(1);
    }
}

static char *fix_read(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    size_t got = fread(buf, 1, (size_t)len, f);
    fclose(f);
    buf[got] = '\0';
    if (n) *n = got;
    return buf;
}

__attribute__((unused)) static int fix_files_equal(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    char *x = fix_read(a, &na), *y = fix_read(b, &nb);
    int eq = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return eq;
}

// sample/LANG.txt: every 7th document of the demo corpus until about bytes_per_lang, fortune format.
static void fix_sample(size_t bytes_per_lang) {
    char demo[1100], sample[1100], in[1200], out[1200];
    fix_path(demo, sizeof(demo), "demo");
    fix_path(sample, sizeof(sample), "sample");
    struct demo_lang langs[DEMO_MAX_LANGS];
    int n;
    if (democorpus_build(demo, 0, langs, &n) != 0) fix_die("demo corpus");
    if (n != DEMO_MAX_LANGS) {
        fprintf(stderr, "fixture: only %d of the %d fortune languages are installed\n", n, DEMO_MAX_LANGS);
        exit(1);
    }
    mkdir(sample, 0755);
    for (int l = 0; l < FIX_N_LANGS; l++) {
        snprintf(in, sizeof(in), "%s/%s.txt", demo, fix_langs[l]);
        snprintf(out, sizeof(out), "%s/%s.txt", sample, fix_langs[l]);
        struct doc_reader *r;
        if (doc_reader_open(&r, in, PREP_FORTUNE, NULL) != 0) fix_die("read demo");
        FILE *f = fopen(out, "wb");
        const char *doc;
        size_t len, got = 0, i = 0;
        while (got < bytes_per_lang && doc_reader_next(r, &doc, &len) == 1)
            if (i++ % 7 == 0) {
                fwrite(doc, 1, len, f);
                fputs("\n%\n", f);
                got += len;
            }
        fclose(f);
        doc_reader_close(r);
    }
}

// sample/tok.model: a FIX_VOCAB-piece tokenizer trained (through prep's sampling) on the sample.
static void fix_tokenizer(void) {
    char out[1100], model[1200], src[1100];
    fix_path(out, sizeof(out), "tokprep");
    fix_path(src, sizeof(src), "sample");
    struct prep_source sources[FIX_N_LANGS];
    char paths[FIX_N_LANGS][1200];
    char *pp[FIX_N_LANGS];
    for (int l = 0; l < FIX_N_LANGS; l++) {
        memset(&sources[l], 0, sizeof(sources[l]));
        snprintf(sources[l].name, sizeof(sources[l].name), "%s", fix_langs[l]);
        snprintf(sources[l].language, sizeof(sources[l].language), "%s", fix_langs[l]);
        snprintf(paths[l], sizeof(paths[l]), "%s/%s.txt", src, fix_langs[l]);
        pp[l] = paths[l];
        sources[l].paths = &pp[l];
        sources[l].n_paths = 1;
        sources[l].format = PREP_FORTUNE;
    }
    struct prep_config c = {.out_dir = out, .vocab_size = FIX_VOCAB, .sources = sources, .n_sources = FIX_N_LANGS,
                            .shard_tokens = 8000, .val_fraction = 0.05, .seed = 1, .threads = 2};
    if (prep_run(&c, NULL) != 0) fix_die("prep with tokenizer training");
    snprintf(model, sizeof(model), "%s/tokenizer.model", out);
    char dst[1200];
    snprintf(dst, sizeof(dst), "%s/tok.model", src);
    size_t n = 0;
    char *bytes = fix_read(model, &n);
    fix_write(dst, bytes, n);
    free(bytes);
}

// Sets up LLAMAC_TEST_TMP/<name>/ with the demo corpus, the sample, tok.model, and tokprep/ (the sample
// prepared with shard_tokens 8000, val_fraction 0.05, seed 1).
static void fix_setup(void) {
    fix_rm_rf(fix_root);
    mkdir(fix_root, 0755);
    fix_sample(30000);
    fix_tokenizer();
}

__attribute__((unused)) static const char *fix_model(void) {
    static char p[1200];
    snprintf(p, sizeof(p), "%s/sample/tok.model", fix_root);
    return p;
}
