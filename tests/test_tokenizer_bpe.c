// Llama 3's byte-level BPE (data/tokenizer_bpe.c) through the tokenizer interface, against two oracles
// run by nodejs (tests/ref/llama3_tok.sh): the npm package llama3-tokenizer-js (Meta's vocabulary and
// merges; tests/ref/llama3_tok.mjs) and the npm package tiktoken (OpenAI's Rust tiktoken as WASM;
// tests/ref/tiktoken_tok.mjs) on the genuine tiktoken tokenizer.model written from the former. That file
// and a tokenizer.json written from it must both give both oracles' ids on every document (the nine
// demo-corpus languages from Debian's fortune packages, other scripts, special tokens; BOS and EOS
// included); decode(encode(x)) == x; `llamac prep` takes either file.
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "data/tokenizer.h"

#define DIR LLAMAC_TEST_TMP "/llama3_tok"

static struct tokenizer *load(const char *name) {
    char path[512];
    snprintf(path, sizeof(path), DIR "/%s", name);
    struct tokenizer *t = NULL;
    cr_assert_eq(tokenizer_load(&t, path), 0, "%s", err_msg());
    return t;
}

static void expect_ids(struct tokenizer *t, const char *text, const int *want, size_t n) {
    struct token_buf b = {0};
    cr_assert_eq(tokenizer_encode(t, text, strlen(text), &b), 0, "%s", err_msg());
    cr_expect_eq(b.n, n, "'%s': %zu ids, expected %zu", text, b.n, n);
    for (size_t i = 0; i < n && i < b.n; i++) cr_expect_eq(b.ids[i], want[i], "'%s': id %zu is %d, expected %d", text, i, b.ids[i], want[i]);
    free(b.ids);
}

Test(tokenizer_bpe, both_formats_load_with_llama3_specials) {
    const char *files[] = {"tokenizer.model", "tokenizer.json"};
    for (int f = 0; f < 2; f++) {
        struct tokenizer *t = load(files[f]);
        cr_expect_eq(tokenizer_vocab_size(t), 128256, "%s", files[f]);
        cr_expect_eq(tokenizer_bos_id(t), 128000);
        cr_expect_eq(tokenizer_eos_id(t), 128001);
        cr_expect_str_eq(tokenizer_piece(t, 128006), "<|start_header_id|>");
        cr_expect_str_eq(tokenizer_piece(t, 128007), "<|end_header_id|>");
        cr_expect_str_eq(tokenizer_piece(t, 128009), "<|eot_id|>");
        cr_expect_str_eq(tokenizer_piece(t, 1917), "Ġworld");
        const int hello[] = {9906, 1917, 0};
        expect_ids(t, "Hello world!", hello, 3);
        const int chat[] = {128006, 882, 128007, 271, 13347, 128009};
        expect_ids(t, "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", chat, 6);
        tokenizer_free(t);
    }
    struct tokenizer *t = load("tokenizer.model");
    cr_expect_str_eq(tokenizer_piece(t, 128002), "<|reserved_special_token_0|>", "tiktoken: Meta's Llama 3 names");
    cr_expect_str_eq(tokenizer_piece(t, 128255), "<|reserved_special_token_250|>");
    tokenizer_free(t);
}

// The first position where ids a (na) and the oracle's JSON array differ, or -1 if they are equal.
static int first_difference(const int *a, int na, const cJSON *ids, int *oracle_id) {
    int n = cJSON_GetArraySize(ids), i = 0;
    const cJSON *v = ids->child;
    for (; i < n && i < na; i++, v = v->next)
        if (a[i] != v->valueint) break;
    if (i == n && i == na) return -1;
    *oracle_id = i < n ? v->valueint : -1;
    return i;
}

// Every oracle document, through both files and against both oracles: ids equal (BOS + text + EOS), and
// decode gives the text back (documents without special-token strings).
Test(tokenizer_bpe, ids_equal_both_oracles_on_every_document, .timeout = 900) {
    FILE *fp = fopen(DIR "/docs.jsonl", "r");
    cr_assert(fp, "missing " DIR "/docs.jsonl (ref_llama3_tok fixture)");
    FILE *fq = fopen(DIR "/tiktoken_ids.jsonl", "r");
    cr_assert(fq, "missing " DIR "/tiktoken_ids.jsonl (ref_llama3_tok fixture)");
    struct tokenizer *tk[2] = {load("tokenizer.model"), load("tokenizer.json")};
    const char *file[2] = {"tokenizer.model", "tokenizer.json"};
    const char *oracle[2] = {"llama3-tokenizer-js", "tiktoken"};
    char *line = NULL, *tline = NULL;
    size_t cap = 0, tcap = 0;
    long docs = 0, tokens = 0, bytes = 0, bad[2][2] = {{0, 0}, {0, 0}}, bad_decode = 0, with_special = 0;
    long oracles_differ = 0;
    double secs[2] = {0, 0};
    while (getline(&line, &cap, fp) > 0) {
        cr_assert(getline(&tline, &tcap, fq) > 0, "tiktoken_ids.jsonl ends before document %ld of docs.jsonl", docs);
        cJSON *o = cJSON_Parse(line), *q = cJSON_Parse(tline);
        cr_assert(o, "docs.jsonl line %ld is not JSON", docs + 1);
        cr_assert(q, "tiktoken_ids.jsonl line %ld is not JSON", docs + 1);
        const char *text = cJSON_GetObjectItem(o, "text")->valuestring;
        const char *lang = cJSON_GetObjectItem(o, "lang")->valuestring;
        const cJSON *want[2] = {cJSON_GetObjectItem(o, "ids"), cJSON_GetObjectItem(q, "ids")};
        cr_assert(cJSON_IsArray(want[0]) && cJSON_IsArray(want[1]), "document %ld: no ids", docs);
        size_t len = strlen(text);
        for (int k = 0; k < 2; k++) {
            struct token_buf b = {0};
            token_buf_push(&b, tokenizer_bos_id(tk[k]));
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            cr_assert_eq(tokenizer_encode(tk[k], text, len, &b), 0, "%s", err_msg());
            clock_gettime(CLOCK_MONOTONIC, &t1);
            secs[k] += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
            token_buf_push(&b, tokenizer_eos_id(tk[k]));
            for (int r = 0; r < 2; r++) {
                int oid = -1, at = first_difference(b.ids, (int)b.n, want[r], &oid);
                if (at >= 0 && bad[k][r]++ < 5)
                    cr_expect(0, "%s vs %s: document %ld (docs.jsonl line %ld, %s, %zu bytes) differs at id %d (llamac %d, %s %d; %zu ids, "
                              "%s %d): %.80s", file[k], oracle[r], docs, docs + 1, lang, len, at, at < (int)b.n ? b.ids[at] : -1,
                              oracle[r], oid, b.n, oracle[r], cJSON_GetArraySize(want[r]), text);
            }
            if (k == 0) {
                if (strstr(text, "<|")) with_special++;
                else {
                    size_t dl;
                    char *back = tokenizer_decode(tk[k], b.ids, b.n, &dl);
                    if (!back || dl != len || memcmp(back, text, len) != 0) bad_decode++;
                    free(back);
                }
            }
            free(b.ids);
        }
        if (!cJSON_Compare(want[0], want[1], 1)) oracles_differ++;
        docs++;
        tokens += cJSON_GetArraySize(want[0]);
        bytes += (long)len;
        cJSON_Delete(o);
        cJSON_Delete(q);
    }
    cr_expect(getline(&tline, &tcap, fq) <= 0, "tiktoken_ids.jsonl has more lines than docs.jsonl (%ld)", docs);
    free(line);
    free(tline);
    fclose(fp);
    fclose(fq);
    printf("llama3 bpe: %ld documents (%ld with special tokens), %ld bytes, %ld oracle ids; oracles differ on %ld; "
           "mismatches vs llama3-tokenizer-js / tiktoken: tokenizer.model %ld / %ld, tokenizer.json %ld / %ld; "
           "decode mismatches %ld; encode %.2f / %.2f MB/s\n",
           docs, with_special, bytes, tokens, oracles_differ, bad[0][0], bad[0][1], bad[1][0], bad[1][1], bad_decode,
           bytes / 1e6 / secs[0], bytes / 1e6 / secs[1]);
    cr_expect_geq(docs, 10000);
    cr_expect_geq(with_special, 500);
    cr_expect_eq(oracles_differ, 0, "llama3-tokenizer-js and tiktoken differ on %ld documents", oracles_differ);
    for (int k = 0; k < 2; k++)
        for (int r = 0; r < 2; r++) cr_expect_eq(bad[k][r], 0, "%s vs %s: %ld documents differ", file[k], oracle[r], bad[k][r]);
    cr_expect_eq(bad_decode, 0);
    tokenizer_free(tk[0]);
    tokenizer_free(tk[1]);
}

Test(tokenizer_bpe, any_bytes_round_trip) {
    struct tokenizer *t = load("tokenizer.model");
    const char cases[][24] = {"\xff\xfe bad \xc3", "a\x80\x80z", "\xe2\x82", "caf\xc3\xa9 \xf0\x9f\x98", "\x00\x01 ok"};
    const size_t lens[] = {12, 4, 2, 9, 5};
    for (size_t c = 0; c < sizeof(lens) / sizeof(lens[0]); c++) {
        struct token_buf b = {0};
        cr_assert_eq(tokenizer_encode(t, cases[c], lens[c], &b), 0, "%s", err_msg());
        size_t dl;
        char *back = tokenizer_decode(t, b.ids, b.n, &dl);
        cr_assert(back);
        cr_expect(dl == lens[c] && memcmp(back, cases[c], dl) == 0, "case %zu does not round-trip", c);
        free(back);
        free(b.ids);
    }
    int out_of_range = 128256;
    cr_expect_null(tokenizer_decode(t, &out_of_range, 1, NULL));
    tokenizer_free(t);
}

Test(tokenizer_bpe, bad_files_give_one_line) {
    const char *p = LLAMAC_TEST_TMP "/bpe_bad.model";
    const struct { const char *text, *expect; } cases[] = {
        {"IQ== 0\nIg== 0\n", "rank 0 is out of range or repeated"},
        {"IQ== 0\n!!!! 1\n", ":2: expected 'BASE64 RANK'"},
        {"IQ== 0\nIg== 1\n", "no token for the single byte"},
        {"{\"model\": {\"type\": \"Unigram\"}}", "model.type is not \"BPE\""},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}", "at least 256"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        FILE *fp = fopen(p, "wb");
        fputs(cases[i].text, fp);
        fclose(fp);
        struct tokenizer *t = NULL;
        cr_expect_eq(tokenizer_load(&t, p), -1, "case %zu must fail", i);
        cr_expect(strstr(err_msg(), p) && strstr(err_msg(), cases[i].expect) && !strchr(err_msg(), '\n'),
                  "case %zu: '%s' should name the file and say '%s'", i, err_msg(), cases[i].expect);
    }
}

// llamac prep with tokenizer.json (Hugging Face's file, copied as OUT/tokenizer.model): 32-bit shards,
// BOS 128000, EOS 128001 in the manifest, and --verify reads it back.
Test(tokenizer_bpe, prep_accepts_tokenizer_json, .timeout = 300) {
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "rm -rf " LLAMAC_TEST_TMP "/bpe_prep && %s prep --quiet --threads 1 --out " LLAMAC_TEST_TMP "/bpe_prep "
             "--tokenizer " DIR "/tokenizer.json --input bg:" DIR "/corpus/bg.txt > " LLAMAC_TEST_TMP "/bpe_prep.log 2>&1 && "
             "%s prep --verify " LLAMAC_TEST_TMP "/bpe_prep >> " LLAMAC_TEST_TMP "/bpe_prep.log 2>&1",
             LLAMAC_BINARY, LLAMAC_BINARY);
    cr_assert_eq(system(cmd), 0, "prep failed; see " LLAMAC_TEST_TMP "/bpe_prep.log");
    FILE *fp = fopen(LLAMAC_TEST_TMP "/bpe_prep/manifest.json", "r");
    cr_assert(fp);
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    cJSON *m = cJSON_Parse(buf);
    cr_assert(m);
    const cJSON *t = cJSON_GetObjectItem(m, "tokenizer");
    cr_expect_eq(cJSON_GetObjectItem(t, "vocab_size")->valueint, 128256);
    cr_expect_eq(cJSON_GetObjectItem(t, "bos_id")->valueint, 128000);
    cr_expect_eq(cJSON_GetObjectItem(t, "eos_id")->valueint, 128001);
    cr_expect_str_eq(cJSON_GetObjectItem(m, "token_dtype")->valuestring, "uint32");
    cJSON_Delete(m);
}
