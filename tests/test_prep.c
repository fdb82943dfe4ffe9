// llamac prep: the shards hold exactly the tokenized documents, rebuilds are byte-identical whatever the
// thread count, every input format reads as documented, bad inputs give one-line errors naming the file
// and leave earlier output alone, and the manifest is checked against its shards.
#define FIX_NAME "test_prep"
#include "datautil.h"

#include <cjson/cJSON.h>
#include <sys/wait.h>
#include <zlib.h>

#include "data/loader.h"
#include "data/shard.h"

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
    (void)set;
    fix_setup();
}

// A one-source config over the given files.
struct one { struct prep_source src; char *paths[8]; struct prep_config c; };

static void one_source(struct one *o, const char *out, const char *name, enum prep_format fmt, int n, const char **files) {
    memset(o, 0, sizeof(*o));
    snprintf(o->src.name, sizeof(o->src.name), "%s", name);
    snprintf(o->src.language, sizeof(o->src.language), "%s", name);
    o->src.format = fmt;
    for (int i = 0; i < n; i++) o->paths[i] = (char *)files[i];
    o->src.paths = o->paths;
    o->src.n_paths = n;
    o->c = (struct prep_config){.out_dir = out, .tokenizer = fix_model(), .sources = &o->src, .n_sources = 1,
                                .shard_tokens = 5000, .val_fraction = 0, .seed = 1, .threads = 2};
}

// Every document of the inputs, read back from the train and val shards, in order.
static void expect_shards_hold_documents(const char *out, const struct prep_config *c) {
    struct tokenizer *t;
    cr_assert(tokenizer_load(&t, fix_model()) == 0);
    char mpath[1200];
    snprintf(mpath, sizeof(mpath), "%s/manifest.json", out);
    char *text = fix_read(mpath, NULL);
    cr_assert(text, "no manifest");
    cJSON *m = cJSON_Parse(text);
    free(text);
    cr_assert(m);
    for (int s = 0; s < c->n_sources; s++) {
        // the source's shards per split, concatenated
        int *tok[2] = {NULL, NULL};
        uint64_t n[2] = {0, 0}, at[2] = {0, 0}, docs[2] = {0, 0};
        const cJSON *sh;
        cJSON_ArrayForEach(sh, cJSON_GetObjectItem(m, "shards")) {
            if (strcmp(cJSON_GetObjectItem(sh, "source")->valuestring, c->sources[s].name)) continue;
            int split = !strcmp(cJSON_GetObjectItem(sh, "split")->valuestring, "val");
            char p[1400];
            snprintf(p, sizeof(p), "%s/%s", out, cJSON_GetObjectItem(sh, "file")->valuestring);
            struct shard_info si;
            cr_assert(shard_open(&si, p, p, tokenizer_sha256(t), tokenizer_vocab_size(t)) == 0, "%s", err_msg());
            cr_expect_str_eq(si.meta.source, c->sources[s].name);
            cr_expect_str_eq(si.meta.language, c->sources[s].language);
            cr_expect_eq(si.meta.split, split);
            cr_expect_eq(si.n_tokens, (uint64_t)cJSON_GetObjectItem(sh, "tokens")->valuedouble);
            tok[split] = realloc(tok[split], sizeof(int) * (n[split] + si.n_tokens));
            cr_assert(shard_read_tokens(&si, 0, si.n_tokens, tok[split] + n[split]) == 0);
            n[split] += si.n_tokens;
            shard_info_free(&si);
        }
        struct token_buf b = {0};
        for (int f = 0; f < c->sources[s].n_paths; f++) {
            struct doc_reader *r;
            cr_assert(doc_reader_open(&r, c->sources[s].paths[f], c->sources[s].format, c->text_field) == 0, "%s", err_msg());
            const char *doc;
            size_t len;
            int g;
            while ((g = doc_reader_next(r, &doc, &len)) == 1) {
                b.n = 0;
                token_buf_push(&b, 1);
                cr_assert(tokenizer_encode(t, doc, len, &b) == 0);
                token_buf_push(&b, 2);
                int split = -1;
                for (int k = 0; k < 2 && split < 0; k++)
                    if (at[k] + b.n <= n[k] && memcmp(tok[k] + at[k], b.ids, sizeof(int) * b.n) == 0) split = k;
                cr_assert(split >= 0, "source %s: document %llu is in neither split, in order", c->sources[s].name,
                          (unsigned long long)(docs[0] + docs[1]));
                at[split] += b.n;
                docs[split]++;
            }
            cr_assert(g == 0, "%s", err_msg());
            doc_reader_close(r);
        }
        cr_expect(at[0] == n[0] && at[1] == n[1], "source %s: the shards hold more than the documents", c->sources[s].name);
        const cJSON *src = cJSON_GetArrayItem(cJSON_GetObjectItem(m, "sources"), s);
        cr_expect_eq((uint64_t)cJSON_GetObjectItem(cJSON_GetObjectItem(src, "train"), "documents")->valuedouble, docs[0]);
        cr_expect_eq((uint64_t)cJSON_GetObjectItem(cJSON_GetObjectItem(src, "val"), "documents")->valuedouble, docs[1]);
        cr_expect_eq((uint64_t)cJSON_GetObjectItem(cJSON_GetObjectItem(src, "train"), "tokens")->valuedouble, n[0]);
        free(b.ids);
        free(tok[0]);
        free(tok[1]);
    }
    cJSON_Delete(m);
    tokenizer_free(t);
}

// The fixture's prep run (9 languages, tokenizer trained by prep, 5% held out, shards of 8000 tokens).
static struct prep_config fixture_config(struct prep_source *sources, char paths[][1200], char **pp) {
    for (int l = 0; l < FIX_N_LANGS; l++) {
        memset(&sources[l], 0, sizeof(sources[l]));
        snprintf(sources[l].name, sizeof(sources[l].name), "%s", fix_langs[l]);
        snprintf(sources[l].language, sizeof(sources[l].language), "%s", fix_langs[l]);
        snprintf(paths[l], 1200, "%s/sample/%s.txt", fix_root, fix_langs[l]);
        pp[l] = paths[l];
        sources[l].paths = &pp[l];
        sources[l].n_paths = 1;
        sources[l].format = PREP_FORTUNE;
    }
    return (struct prep_config){.vocab_size = FIX_VOCAB, .sources = sources, .n_sources = FIX_N_LANGS,
                                .shard_tokens = 8000, .val_fraction = 0.05, .seed = 1, .threads = 2};
}

Test(prep, shards_hold_exactly_the_tokenized_documents_of_every_language) {
    struct prep_source sources[FIX_N_LANGS];
    char paths[FIX_N_LANGS][1200], *pp[FIX_N_LANGS], out[1200];
    struct prep_config c = fixture_config(sources, paths, pp);
    fix_path(out, sizeof(out), "tokprep");
    expect_shards_hold_documents(out, &c);
    cr_expect(data_verify(out, 0) == 0, "%s", err_msg());
    // rotation: several train shards per large source, and every source has held-out documents
    char p[1300];
    snprintf(p, sizeof(p), "%s/shards/ru_00001.h5", out);
    cr_expect(access(p, F_OK) == 0, "no second Russian shard");
    snprintf(p, sizeof(p), "%s/val/bg_00000.h5", out);
    cr_expect(access(p, F_OK) == 0, "no Bulgarian validation shard");
}

static int dirs_identical(const char *a, const char *b) {
    char cmd[3000];
    snprintf(cmd, sizeof(cmd), "diff -r '%s' '%s' > /dev/null", a, b);
    return system(cmd) == 0;
}

Test(prep, rebuilding_gives_identical_files_whatever_the_thread_count) {
    struct prep_source sources[FIX_N_LANGS];
    char paths[FIX_N_LANGS][1200], *pp[FIX_N_LANGS], a[1200], b[1200];
    struct prep_config c = fixture_config(sources, paths, pp);
    fix_path(a, sizeof(a), "rebuild1");
    fix_path(b, sizeof(b), "rebuild2");
    c.out_dir = a;
    c.threads = 1;
    cr_assert(prep_run(&c, NULL) == 0, "%s", err_msg());
    c.out_dir = b;
    c.threads = 3;
    cr_assert(prep_run(&c, NULL) == 0, "%s", err_msg());
    cr_expect(dirs_identical(a, b), "two builds differ");
    char ref[1200];
    fix_path(ref, sizeof(ref), "tokprep");
    cr_expect(dirs_identical(a, ref), "a rebuild differs from the first build (2 threads)");
}

static void write_gz(const char *path, const char *text) {
    gzFile g = gzopen(path, "wb");
    gzwrite(g, text, (unsigned)strlen(text));
    gzclose(g);
}

Test(prep, text_blank_jsonl_and_gzip_inputs) {
    char d[1200], a[1300], b[1300], j[1300], jz[1300], fz[1300], out[1300];
    fix_path(d, sizeof(d), "formats");
    mkdir(d, 0755);
    snprintf(a, sizeof(a), "%s/one.txt", d);
    snprintf(b, sizeof(b), "%s/paras.txt", d);
    snprintf(j, sizeof(j), "%s/docs.jsonl", d);
    snprintf(jz, sizeof(jz), "%s/docs2.jsonl.gz", d);
    snprintf(fz, sizeof(fz), "%s/fortunes.gz", d);
    const char *one = "A whole file is one document.\n\nEven with blank lines.\n";
    fix_write(a, one, strlen(one));
    const char *paras = "First paragraph,\ntwo lines.\n\n\n  \nSecond paragraph.\n\nThird.\n";
    fix_write(b, paras, strlen(paras));
    const char *jl = "{\"text\": \"Привет, JSON\\nс переводом строки\", \"id\": 1}\n\n{\"id\": 2, \"text\": \"second \\u00fcber\"}\n";
    fix_write(j, jl, strlen(jl));
    write_gz(jz, "{\"text\": \"gzip'd JSONL\"}\n");
    write_gz(fz, "fortune one\n%\nfortune two\nline 2\n%\n");

    struct { const char *file; enum prep_format fmt; int docs; const char *first; } cases[] = {
        {a, PREP_AUTO, 1, "A whole file is one document.\n\nEven with blank lines."},
        {b, PREP_BLANK, 3, "First paragraph,\ntwo lines."},
        {j, PREP_AUTO, 2, "Привет, JSON\nс переводом строки"},
        {jz, PREP_AUTO, 1, "gzip'd JSONL"},
        {fz, PREP_AUTO, 2, "fortune one"},
    };
    for (int i = 0; i < 5; i++) {
        struct doc_reader *r;
        cr_assert(doc_reader_open(&r, cases[i].file, cases[i].fmt, NULL) == 0, "%s", err_msg());
        const char *doc;
        size_t len;
        int n = 0;
        while (doc_reader_next(r, &doc, &len) == 1) {
            if (n == 0) cr_expect(len == strlen(cases[i].first) && !memcmp(doc, cases[i].first, len), "%s: first document '%.*s'",
                                  cases[i].file, (int)len, doc);
            n++;
        }
        cr_expect_eq(n, cases[i].docs, "%s: %d documents", cases[i].file, n);
        doc_reader_close(r);
    }
    // and through prep: a source mixing the formats (auto-detected per file)
    const char *files[] = {a, j, jz, fz};
    struct one o;
    snprintf(out, sizeof(out), "%s/out", d);
    one_source(&o, out, "mixed", PREP_AUTO, 4, files);
    cr_assert(prep_run(&o.c, NULL) == 0, "%s", err_msg());
    expect_shards_hold_documents(out, &o.c);
}

// Runs prep expecting failure; checks the message and that an earlier good output is untouched.
static void expect_prep_error(struct prep_config *c, const char *needle1, const char *needle2) {
    char ref[1200];
    fix_path(ref, sizeof(ref), "tokprep");
    char out[1200], cmd[3000];
    fix_path(out, sizeof(out), "keep");
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && cp -r '%s' '%s'", out, ref, out);
    cr_assert(system(cmd) == 0);
    c->out_dir = out;
    cr_expect(prep_run(c, NULL) == -1, "prep accepted bad input (%s)", needle1);
    cr_expect(strstr(err_msg(), needle1) && (!needle2 || strstr(err_msg(), needle2)), "expected '%s' / '%s' in: %s", needle1,
              needle2 ? needle2 : "", err_msg());
    cr_expect(!strchr(err_msg(), '\n'), "not one line: %s", err_msg());
    cr_expect(dirs_identical(out, ref), "a failed prep changed the earlier output");
}

Test(prep, bad_inputs_give_one_line_errors_and_keep_earlier_output) {
    char d[1200], empty[1300], blank[1300], badjson[1300], nofield[1300], missing[1300], truncgz[1300], good[1300];
    fix_path(d, sizeof(d), "bad");
    mkdir(d, 0755);
    snprintf(empty, sizeof(empty), "%s/empty.txt", d);
    snprintf(blank, sizeof(blank), "%s/blank.txt", d);
    snprintf(badjson, sizeof(badjson), "%s/bad.jsonl", d);
    snprintf(nofield, sizeof(nofield), "%s/nofield.jsonl", d);
    snprintf(missing, sizeof(missing), "%s/missing.txt", d);
    snprintf(truncgz, sizeof(truncgz), "%s/trunc.txt.gz", d);
    snprintf(good, sizeof(good), "%s/sample/en.txt", fix_root);
    fix_write(empty, "", 0);
    fix_write(blank, "\n  \n%\n\n%\n", 10);
    fix_write(badjson, "{\"text\": \"ok\"}\n{\"text\": broken}\n", 33);
    fix_write(nofield, "{\"body\": \"no text field\"}\n", 26);
    {  // a gzip file cut in half
        char full[1300];
        snprintf(full, sizeof(full), "%s/full.txt.gz", d);
        char *big = malloc(200001);
        for (int i = 0; i < 200000; i++) big[i] = "abcdefgh \n"[(i * 7919) % 10];
        big[200000] = '\0';
        write_gz(full, big);
        free(big);
        size_t n = 0;
        char *z = fix_read(full, &n);
        fix_write(truncgz, z, n / 2);
        free(z);
    }
    struct { const char *file; enum prep_format fmt; const char *what; } cases[] = {
        {empty, PREP_AUTO, "empty input file"},
        {blank, PREP_FORTUNE, "no documents"},
        {badjson, PREP_AUTO, ":2: not valid JSON"},
        {nofield, PREP_AUTO, ":1: no field \"text\""},
        {missing, PREP_AUTO, "cannot open: No such file or directory"},
        {truncgz, PREP_TEXT, "read error"},
        {d, PREP_AUTO, "is a directory"},
    };
    for (int i = 0; i < 7; i++) {
        const char *files[] = {good, cases[i].file};  // the bad file after a good one: fails midway
        struct one o;
        one_source(&o, NULL, "en", cases[i].fmt, 2, files);
        expect_prep_error(&o.c, cases[i].file, cases[i].what);
    }
    // an unreadable file (when not running as root, who can read anything)
    if (geteuid() != 0) {
        char locked[1300];
        snprintf(locked, sizeof(locked), "%s/locked.txt", d);
        fix_write(locked, "text\n", 5);
        chmod(locked, 0);
        const char *files[] = {locked};
        struct one o;
        one_source(&o, NULL, "en", PREP_AUTO, 1, files);
        expect_prep_error(&o.c, locked, "cannot read");
    }
    // a tokenizer file that is not a model
    const char *files[] = {good};
    struct one o;
    one_source(&o, NULL, "en", PREP_AUTO, 1, files);
    o.c.tokenizer = empty;
    expect_prep_error(&o.c, empty, "empty tokenizer model");
}

// Rewrites a manifest after applying edit to its parsed JSON.
static void edit_manifest(const char *dir, void (*edit)(cJSON *)) {
    char p[1300];
    snprintf(p, sizeof(p), "%s/manifest.json", dir);
    char *text = fix_read(p, NULL);
    cJSON *m = cJSON_Parse(text);
    free(text);
    edit(m);
    char *out = cJSON_Print(m);
    fix_write(p, out, strlen(out));
    free(out);
    cJSON_Delete(m);
}

static void copy_dir(const char *from, const char *to) {
    char cmd[3000];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && cp -r '%s' '%s'", to, from, to);
    cr_assert(system(cmd) == 0);
}

static void edit_tokens(cJSON *m) {  // a shard's count off by one, and its source's total to match
    cJSON *sh = cJSON_GetArrayItem(cJSON_GetObjectItem(m, "shards"), 0);
    cJSON_SetNumberValue(cJSON_GetObjectItem(sh, "tokens"), cJSON_GetObjectItem(sh, "tokens")->valuedouble + 1);
    cJSON *tr = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(m, "sources"), 0), "train");
    cJSON_SetNumberValue(cJSON_GetObjectItem(tr, "tokens"), cJSON_GetObjectItem(tr, "tokens")->valuedouble + 1);
}
static void edit_total(cJSON *m) {  // the source's total disagrees with its shards
    cJSON *tr = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(m, "sources"), 0), "train");
    cJSON_SetNumberValue(cJSON_GetObjectItem(tr, "tokens"), 7);
}
static void edit_docs(cJSON *m) {
    cJSON *sh = cJSON_GetArrayItem(cJSON_GetObjectItem(m, "shards"), 0);
    cJSON_SetNumberValue(cJSON_GetObjectItem(sh, "documents"), 3);
}
static void edit_missing(cJSON *m) {
    cJSON *sh = cJSON_GetArrayItem(cJSON_GetObjectItem(m, "shards"), 0);
    cJSON_ReplaceItemInObject(sh, "file", cJSON_CreateString("shards/en_00099.h5"));
}
static void edit_sha(cJSON *m) {
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(m, "tokenizer"), "sha256",
                              cJSON_CreateString("abababababababababababababababababababababababababababababababab"));
}

Test(prep, a_manifest_that_disagrees_with_its_shards_is_refused) {
    char ref[1200], d[1200];
    fix_path(ref, sizeof(ref), "tokprep");
    fix_path(d, sizeof(d), "badmanifest");
    struct { void (*edit)(cJSON *); const char *file, *what; } cases[] = {
        {edit_tokens, "shards/en_00000.h5", "the manifest disagrees with its shards"},
        {edit_total, "manifest.json", "add up to"},
        {edit_docs, "shards/en_00000.h5", "documents, but manifest.json says 3"},
        {edit_missing, "shards/en_00099.h5", "cannot open"},
        {edit_sha, "shards/en_00000.h5", "different tokenizer"},  // (without tokenizer.model, which would disagree first)
    };
    for (int i = 0; i < 5; i++) {
        copy_dir(ref, d);
        edit_manifest(d, cases[i].edit);
        if (cases[i].edit == edit_sha) {
            char tm[1300];
            snprintf(tm, sizeof(tm), "%s/tokenizer.model", d);
            remove(tm);
        }
        for (int how = 0; how < 2; how++) {  // the loader and --verify both refuse it
            int rc;
            if (how == 0) {
                struct loader_config lc = {.data_dir = d, .B = 2, .T = 16, .dp_size = 1};
                struct loader *l;
                rc = loader_open(&l, &lc);
            } else rc = data_verify(d, 0);
            cr_expect(rc == -1, "case %d (%s) accepted", i, cases[i].what);
            cr_expect(strstr(err_msg(), cases[i].file) && strstr(err_msg(), cases[i].what), "case %d: %s", i, err_msg());
        }
    }
    // the tokenizer.model next to the manifest must be the one it names
    copy_dir(ref, d);
    char p[1300];
    snprintf(p, sizeof(p), "%s/tokenizer.model", d);
    fix_write(p, "x", 1);
    cr_expect(data_verify(d, 0) == -1);
    cr_expect(strstr(err_msg(), "tokenizer.model: sha256"), "%s", err_msg());
}

Test(prep, cli_prep_config_verify_and_errors) {
    char out[1200], ini[1200], cmd[4000], log[1200];
    fix_path(out, sizeof(out), "cli");
    fix_path(ini, sizeof(ini), "prep.ini");
    fix_path(log, sizeof(log), "cli.log");
    char text[3000];
    snprintf(text, sizeof(text),
             "[prep]\nout = %s\ntokenizer = %s\nshard_tokens = 8000\nval_fraction = 0.05\nthreads = 2\n\n"
             "[source.en]\npaths = %s/sample/en.txt\nformat = fortune\n\n[source.cyr]\nlanguage = ru\npaths = %s/sample/ru.txt, %s/sample/bg.txt\n",
             out, fix_model(), fix_root, fix_root, fix_root);
    fix_write(ini, text, strlen(text));
    snprintf(cmd, sizeof(cmd), "%s prep --config %s --quiet > %s 2>&1", LLAMAC_BINARY, ini, log);
    cr_assert(system(cmd) == 0, "llamac prep --config failed: %s", fix_read(log, NULL));
    snprintf(cmd, sizeof(cmd), "%s prep --verify %s --quiet > %s 2>&1", LLAMAC_BINARY, out, log);
    cr_expect(system(cmd) == 0, "llamac prep --verify failed: %s", fix_read(log, NULL));
    // the same through options, with the language given inline
    char out2[1200];
    fix_path(out2, sizeof(out2), "cli2");
    snprintf(cmd, sizeof(cmd),
             "%s prep --out %s --tokenizer %s --shard-tokens 8000 --val-fraction 0.05 --quiet --input en:%s/sample/en.txt "
             "--input cyr=ru:%s/sample/ru.txt,%s/sample/bg.txt > %s 2>&1",
             LLAMAC_BINARY, out2, fix_model(), fix_root, fix_root, fix_root, log);
    cr_assert(system(cmd) == 0, "llamac prep failed: %s", fix_read(log, NULL));
    char a[1300], b[1300];
    snprintf(a, sizeof(a), "%s/shards", out);
    snprintf(b, sizeof(b), "%s/shards", out2);
    cr_expect(dirs_identical(a, b), "config and options gave different shards");
    // errors: exit status 1 and one line on stderr naming the file
    snprintf(cmd, sizeof(cmd), "%s prep --out %s --tokenizer %s --quiet --input en:%s/nope.txt 2> %s", LLAMAC_BINARY, out2,
             fix_model(), fix_root, log);
    int st = system(cmd);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 1, "exit status %d", st);
    char *msg = fix_read(log, NULL);
    cr_expect(strstr(msg, "llamac prep: ") == msg && strstr(msg, "nope.txt: cannot open") && strchr(msg, '\n') == msg + strlen(msg) - 1,
              "stderr: %s", msg);
    free(msg);
    snprintf(cmd, sizeof(cmd), "%s prep --config %s --set prep.shard_tokns=5 --quiet 2> %s", LLAMAC_BINARY, ini, log);
    st = system(cmd);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 1, "a misspelt key was accepted");
}

Test(prep, demo_corpus_has_nine_languages_in_two_scripts) {
    char d[1200], p[1300];
    fix_path(d, sizeof(d), "demo2");
    struct demo_lang langs[DEMO_MAX_LANGS];
    int n;
    cr_assert(democorpus_build(d, 0, langs, &n) == 0, "%s", err_msg());
    cr_assert_eq(n, 9);
    for (int i = 0; i < n; i++) {
        cr_expect_str_eq(langs[i].lang, fix_langs[i]);
        cr_expect(langs[i].docs > 500 && langs[i].bytes > 100000, "%s: %llu documents", langs[i].lang,
                  (unsigned long long)langs[i].docs);
        snprintf(p, sizeof(p), "%s/%s.txt", d, langs[i].lang);
        struct doc_reader *r;
        cr_assert(doc_reader_open(&r, p, PREP_AUTO, NULL) == 0, "%s", err_msg());
        cr_expect_eq(doc_reader_format(r), PREP_FORTUNE);
        const char *doc;
        size_t len;
        uint64_t docs = 0, cyr = 0;
        while (doc_reader_next(r, &doc, &len) == 1) {
            docs++;
            for (size_t k = 0; k + 1 < len; k++) cyr += (unsigned char)doc[k] == 0xd0 || (unsigned char)doc[k] == 0xd1;
        }
        doc_reader_close(r);
        cr_expect_eq(docs, langs[i].docs, "%s: prep reads %llu documents, the corpus says %llu", langs[i].lang,
                     (unsigned long long)docs, (unsigned long long)langs[i].docs);
        int cyrillic = !strcmp(langs[i].lang, "ru") || !strcmp(langs[i].lang, "bg");
        if (cyrillic) cr_expect(cyr > langs[i].bytes / 10, "%s: too little Cyrillic", langs[i].lang);
        else cr_expect(cyr < langs[i].bytes / 100, "%s: Cyrillic in a Latin-script language", langs[i].lang);
    }
}
