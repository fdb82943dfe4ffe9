// The tokenizer: exact round trips on any bytes, LLaMA's piece layout, agreement with SentencePiece's own
// spm_encode on the demo corpus, deterministic training, SHA-256, and errors on bad model files.
#define FIX_NAME "test_tokenizer"
#include "datautil.h"

#include "data/sha256.h"

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
    (void)set;
    fix_setup();
}

static struct tokenizer *load(void) {
    struct tokenizer *t = NULL;
    cr_assert(tokenizer_load(&t, fix_model()) == 0, "%s", err_msg());
    return t;
}

static void expect_round_trip(const struct tokenizer *t, const char *what, const char *s, size_t n) {
    struct token_buf b = {0};
    cr_assert(tokenizer_encode(t, s, n, &b) == 0, "%s: %s", what, err_msg());
    for (size_t i = 0; i < b.n; i++)
        cr_assert(b.ids[i] >= 0 && b.ids[i] < tokenizer_vocab_size(t), "%s: id %d out of range", what, b.ids[i]);
    size_t len;
    char *d = tokenizer_decode(t, b.ids, b.n, &len);
    cr_assert(d, "%s: %s", what, err_msg());
    cr_expect(len == n && memcmp(d, s, n) == 0, "%s: decode(encode(x)) != x (%zu bytes back, %zu in)", what, len, n);
    free(d);
    free(b.ids);
}

Test(tokenizer, round_trip_multilingual_emoji_digits_and_invalid_utf8) {
    struct tokenizer *t = load();
    static const struct { const char *what, *s; size_t n; } cases[] = {
        {"english", "The quick brown fox jumps over the lazy dog.", 0},
        {"german", "Größenwahn ist keine Lösung, sagte der Bäcker.", 0},
        {"russian", "Съешь же ещё этих мягких французских булок, да выпей чаю.", 0},
        {"bulgarian", "Ах, чудна българска земьо, полюшвай цъфтящи жита!", 0},
        {"polish/czech", "Zażółć gęślą jaźń. Příliš žluťoučký kůň úpěl ďábelské ódy.", 0},
        {"digits", "In 1984, 2+2=5 and 3.14159 26535 89793.", 0},
        {"emoji", "Emoji: 😀🚀👩‍👩‍👧 and ✓", 0},
        {"unseen script", "中文字符 and 日本語 and 한국어", 0},
        {"whitespace", "  two leading spaces,\ttabs\t\tand\nnew\n\nlines  \r\n", 0},
        {"leading space", " x", 0},
        {"only spaces", "   ", 0},
        {"empty", "", 0},
        {"sentencepiece space mark", "a\xe2\x96\x81" "b \xe2\x96\x81 c\xe2\x96\x81", 0},
        {"invalid utf-8: lone bytes", "bad \xff\xfe bytes \x80 here", 0},
        {"invalid utf-8: truncated sequence at end", "truncated \xd0", 0},
        {"invalid utf-8: truncated in the middle", "mid \xe2\x82 dle", 0},
        {"invalid utf-8: overlong", "overlong \xc0\xaf slash", 0},
        {"invalid utf-8: surrogate", "surrogate \xed\xa0\x80 half", 0},
        {"invalid utf-8: first byte", "\xc3", 0},
        {"invalid utf-8: leading then space", "\xff leading", 0},
        {"nul byte", "a\0b", 3},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_round_trip(t, cases[i].what, cases[i].s, cases[i].n ? cases[i].n : strlen(cases[i].s));
    // and every byte value, in every position
    char all[256 * 3];
    for (int i = 0; i < 256; i++) { all[3 * i] = (char)i; all[3 * i + 1] = 'a'; all[3 * i + 2] = (char)(255 - i); }
    expect_round_trip(t, "all bytes", all, sizeof(all));
    tokenizer_free(t);
}

Test(tokenizer, llama_layout_special_ids_and_byte_pieces) {
    struct tokenizer *t = load();
    cr_expect_eq(tokenizer_vocab_size(t), FIX_VOCAB);
    cr_expect_eq(tokenizer_unk_id(t), 0);
    cr_expect_eq(tokenizer_bos_id(t), 1);
    cr_expect_eq(tokenizer_eos_id(t), 2);
    cr_expect_str_eq(tokenizer_piece(t, 0), "<unk>");
    cr_expect_str_eq(tokenizer_piece(t, 1), "<s>");
    cr_expect_str_eq(tokenizer_piece(t, 2), "</s>");
    for (int b = 0; b < 256; b++) {
        char want[8];
        snprintf(want, sizeof(want), "<0x%02X>", b);
        cr_expect_str_eq(tokenizer_piece(t, 3 + b), want);
    }
    tokenizer_free(t);
}

Test(tokenizer, digits_are_split_and_unseen_characters_fall_back_to_bytes) {
    struct tokenizer *t = load();
    struct token_buf b = {0};
    cr_assert(tokenizer_encode(t, "year 20240101", 13, &b) == 0);
    int digits = 0;
    for (size_t i = 0; i < b.n; i++) {
        const char *p = tokenizer_piece(t, b.ids[i]);
        int d = 0;
        for (; *p; p++) d += *p >= '0' && *p <= '9';
        cr_expect(d <= 1, "piece '%s' holds more than one digit", tokenizer_piece(t, b.ids[i]));
        digits += d;
    }
    cr_expect_eq(digits, 8);
    b.n = 0;
    cr_assert(tokenizer_encode(t, "\xe4\xb8\xad", 3, &b) == 0);  // 中, not in the training text: "▁" + 3 bytes
    cr_assert_eq(b.n, 4, "中 gave %zu ids", b.n);
    cr_expect_str_eq(tokenizer_piece(t, b.ids[0]), "\xe2\x96\x81");
    cr_expect_eq(b.ids[1], 3 + 0xe4);
    cr_expect_eq(b.ids[2], 3 + 0xb8);
    cr_expect_eq(b.ids[3], 3 + 0xad);
    free(b.ids);
    tokenizer_free(t);
}

// The same ids as SentencePiece's command-line encoder, line by line, on ~3000 lines of the demo corpus.
Test(tokenizer, ids_agree_with_spm_encode_on_the_demo_corpus) {
    struct tokenizer *t = load();
    char in[1200], lines_path[1200], cmd[4000];
    fix_path(lines_path, sizeof(lines_path), "spm_lines.txt");
    FILE *f = fopen(lines_path, "wb");
    int n_lines = 0;
    for (int l = 0; l < FIX_N_LANGS; l++) {  // every 5th line of each language, up to 350
        snprintf(in, sizeof(in), "%s/demo/%s.txt", fix_root, fix_langs[l]);
        FILE *g = fopen(in, "rb");
        cr_assert(g);
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        int k = 0, taken = 0;
        while ((n = getline(&line, &cap, g)) > 0 && taken < 350) {
            if (n <= 1 || line[0] == '%' || k++ % 5) continue;
            if (memchr(line, '\r', (size_t)n)) continue;  // spm_encode reads lines; keep them plain
            fwrite(line, 1, (size_t)n, f);
            taken++;
        }
        free(line);
        fclose(g);
        n_lines += taken;
    }
    fclose(f);
    cr_assert(n_lines > 2500, "only %d lines", n_lines);
    snprintf(cmd, sizeof(cmd), "spm_encode --model='%s' --output_format=id < '%s'", fix_model(), lines_path);
    FILE *p = popen(cmd, "r");
    cr_assert(p, "cannot run spm_encode (apt-get install sentencepiece)");
    FILE *src = fopen(lines_path, "rb");
    char *line = NULL, *ref = NULL;
    size_t cap = 0, rcap = 0;
    ssize_t n;
    int compared = 0, mismatches = 0;
    struct token_buf b = {0};
    while ((n = getline(&line, &cap, src)) > 0) {
        cr_assert(getline(&ref, &rcap, p) > 0, "spm_encode gave fewer lines (%d)", compared);
        if (line[n - 1] == '\n') line[--n] = '\0';
        b.n = 0;
        cr_assert(tokenizer_encode(t, line, (size_t)n, &b) == 0);
        char *q = ref;
        size_t i = 0;
        int same = 1;
        for (;;) {
            while (*q == ' ') q++;
            if (*q == '\n' || *q == '\0') break;
            char *end;
            long id = strtol(q, &end, 10);
            if (end == q) { same = 0; break; }
            if (i >= b.n || b.ids[i] != id) same = 0;
            i++;
            q = end;
        }
        if (i != b.n) same = 0;
        if (!same && mismatches++ < 3) cr_log_error("line %d differs from spm_encode: %s", compared + 1, line);
        compared++;
    }
    int status = pclose(p);
    cr_expect_eq(status, 0, "spm_encode failed");
    cr_expect_eq(mismatches, 0, "%d of %d lines differ from spm_encode", mismatches, compared);
    cr_expect_eq(compared, n_lines);
    free(line);
    free(ref);
    free(b.ids);
    fclose(src);
    tokenizer_free(t);
}

Test(tokenizer, training_twice_gives_the_same_model_bytes) {
    const char *s[] = {"alpha beta gamma delta 12345", "Привет мир, как дела?", "über die Brücke gehen",
                       "the cat sat on the mat", "a b c d e f g h i j k"};
    const char *sent[500];
    size_t lens[500];
    for (int i = 0; i < 500; i++) { sent[i] = s[i % 5]; lens[i] = strlen(s[i % 5]); }
    char a[1200], b[1200];
    fix_path(a, sizeof(a), "det_a.model");
    fix_path(b, sizeof(b), "det_b.model");
    struct tokenizer_train_opts o = {300, 0};
    cr_assert(tokenizer_train(a, &o, sent, lens, 500) == 0, "%s", err_msg());
    cr_assert(tokenizer_train(b, &o, sent, lens, 500) == 0, "%s", err_msg());
    cr_expect(fix_files_equal(a, b), "two trainings gave different model files");
}

Test(tokenizer, sha256_known_vectors_and_model_fingerprint) {
    char hex[65];
    sha256_hex(hex, "abc", 3);
    cr_expect_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sha256_hex(hex, "", 0);
    cr_expect_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *long_msg = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256_hex(hex, long_msg, strlen(long_msg));
    cr_expect_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    struct tokenizer *t = load();
    cr_assert(sha256_file_hex(hex, fix_model()) == 0);
    cr_expect_str_eq(tokenizer_sha256(t), hex);
    tokenizer_free(t);
}

Test(tokenizer, bad_model_files_give_one_line_errors_naming_the_file) {
    struct tokenizer *t;
    char p[1200];
    fix_path(p, sizeof(p), "missing.model");
    cr_expect(tokenizer_load(&t, p) == -1);
    cr_expect(strstr(err_msg(), p) && strstr(err_msg(), "cannot open"), "%s", err_msg());
    fix_path(p, sizeof(p), "garbage.model");
    fix_write(p, "this is not a protobuf\n", 23);
    cr_expect(tokenizer_load(&t, p) == -1);
    cr_expect(strstr(err_msg(), p) && !strchr(err_msg(), '\n'), "%s", err_msg());
    fix_path(p, sizeof(p), "empty.model");
    fix_write(p, "", 0);
    cr_expect(tokenizer_load(&t, p) == -1);
    cr_expect(strstr(err_msg(), p) && strstr(err_msg(), "empty"), "%s", err_msg());
}

Test(tokenizer, decode_rejects_ids_outside_the_vocabulary) {
    struct tokenizer *t = load();
    int ids[] = {5, FIX_VOCAB};
    size_t len;
    cr_expect_null(tokenizer_decode(t, ids, 2, &len));
    cr_expect(strstr(err_msg(), "outside the vocabulary"), "%s", err_msg());
    tokenizer_free(t);
}
