// Fine-tuning data (data/sft.h, data/README.md "Fine-tuning data"): the chat templates against their
// published layouts for a fixed conversation, the tokens and loss mask they render, record parsing and its
// one-line errors, and `llamac prep --sft` + the loader's packing: every example whole in one window,
// document starts at each example, targets only on assistant tokens, long examples cut or dropped and
// counted, a validation split that is never empty.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "data/loader.h"
#include "data/prep.h"
#include "data/sft.h"
#include "data/tokenizer.h"

#define DIR LLAMAC_TEST_TMP "/sft"

// The fixed conversation: a system message and two exchanges.
static const char *conv =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \" What is 2+2? \"},"
    " {\"role\": \"assistant\", \"content\": \"4\"}, {\"role\": \"user\", \"content\": \"And 3+3?\"},"
    " {\"role\": \"assistant\", \"content\": \"6\\n\"}]}";

static void parse(struct sft_record *r, const char *json) {
    cr_assert(sft_parse(r, json, strlen(json), "test:1") == 0, "%s", err_msg());
}

// The layouts, written from the template documentation (Meta's Llama 2 generation.py with BOS once, as
// data/sft.h says; Meta's Llama 3 prompt format); {{ }} marks the segments that are training targets.
Test(sft, templates_render_the_documented_layouts) {
    struct sft_record r;
    parse(&r, conv);
    char *l2 = sft_render_text(SFT_LLAMA2, &r, 1), *l3 = sft_render_text(SFT_LLAMA3, &r, 1),
         *pl = sft_render_text(SFT_PLAIN, &r, 1);
    cr_expect_str_eq(l2, "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhat is 2+2? [/INST]{{ 4 }}{{</s>}}"
                         "[INST] And 3+3? [/INST]{{ 6 }}{{</s>}}");
    cr_expect_str_eq(l3, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                         "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
                         "<|start_header_id|>assistant<|end_header_id|>\n\n{{4}}{{<|eot_id|>}}"
                         "<|start_header_id|>user<|end_header_id|>\n\nAnd 3+3?<|eot_id|>"
                         "<|start_header_id|>assistant<|end_header_id|>\n\n{{6}}{{<|eot_id|>}}<|end_of_text|>");
    cr_expect_str_eq(pl, "<s>Be brief.\n\n### Instruction:\nWhat is 2+2?\n\n### Response:\n{{4}}{{</s>}}"
                         "### Instruction:\nAnd 3+3?\n\n### Response:\n{{6}}{{</s>}}");
    free(l2);
    free(l3);
    free(pl);
    sft_record_free(&r);
}

static struct tokenizer *tok;

static void train_tokenizer(void) {
    mkdir(LLAMAC_TEST_TMP, 0755);
    mkdir(DIR, 0755);
    static const char *words[] = {"what", "is", "the", "answer", "to", "this", "question", "and", "brief", "be",
                                  "instruction", "response", "say", "hello", "world", "two", "three", "four", "six"};
    const int n = 400;
    char **s = malloc(sizeof(char *) * n);
    size_t *len = malloc(sizeof(size_t) * n);
    for (int i = 0; i < n; i++) {
        char buf[256] = "";
        for (int k = 0; k < 8; k++)
            snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s%s", k ? " " : "", words[(i * 7 + k * 3) % 19]);
        snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), " [INST] <<SYS>> ### %d+%d? [/INST]", i % 10, (i / 10) % 10);
        s[i] = strdup(buf);
        len[i] = strlen(buf);
    }
    struct tokenizer_train_opts o = {400, 1.0};
    cr_assert(tokenizer_train(DIR "/tokenizer.model", &o, (const char *const *)s, len, n) == 0, "%s", err_msg());
    for (int i = 0; i < n; i++) free(s[i]);
    free(s);
    free(len);
    cr_assert(tokenizer_load(&tok, DIR "/tokenizer.model") == 0, "%s", err_msg());
}

static void encode(struct token_buf *b, const char *text) {
    cr_assert(tokenizer_encode(tok, text, strlen(text), b) == 0, "%s", err_msg());
}

static void push_mask(struct token_buf *m, size_t from, size_t to, int v) {
    for (size_t i = from; i < to; i++) token_buf_push(m, v);
}

// The Llama 2 tokens: BOS once, each text segment encoded alone (the response without the space that
// SentencePiece's dummy prefix supplies), EOS after each answer; the mask on the answers and their EOS.
Test(sft, llama2_tokens_and_loss_mask) {
    train_tokenizer();
    struct sft_record r;
    parse(&r, conv);
    struct token_buf ids = {0}, mask = {0}, want = {0}, wmask = {0};
    cr_assert(sft_render(tok, SFT_LLAMA2, &r, 0, &ids, &mask) == 0, "%s", err_msg());
    const int bos = tokenizer_bos_id(tok), eos = tokenizer_eos_id(tok);
    token_buf_push(&want, bos);
    encode(&want, "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhat is 2+2? [/INST]");
    push_mask(&wmask, 0, want.n, 0);
    size_t a = want.n;
    encode(&want, "4 ");
    token_buf_push(&want, eos);
    push_mask(&wmask, a, want.n, 1);
    a = want.n;
    encode(&want, "[INST] And 3+3? [/INST]");
    push_mask(&wmask, a, want.n, 0);
    a = want.n;
    encode(&want, "6 ");
    token_buf_push(&want, eos);
    push_mask(&wmask, a, want.n, 1);
    cr_assert_eq(ids.n, want.n, "%zu tokens, expected %zu", ids.n, want.n);
    cr_expect(memcmp(ids.ids, want.ids, sizeof(int) * ids.n) == 0, "the token sequence differs");
    cr_expect(memcmp(mask.ids, wmask.ids, sizeof(int) * ids.n) == 0, "the loss mask differs");
    int nbos = 0;
    for (size_t i = 0; i < ids.n; i++) nbos += ids.ids[i] == bos;
    cr_expect_eq(nbos, 1, "BOS exactly once (%d)", nbos);
    cr_expect_eq(ids.ids[ids.n - 1], eos);
    // the decoded text is the conversation as the template lays it out
    size_t len;
    char *text = tokenizer_decode(tok, ids.ids, ids.n, &len);
    // (each segment's dummy prefix decodes as a space, as in Meta's "[/INST] 4 </s><s>[INST]")
    cr_expect_str_eq(text, "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhat is 2+2? [/INST] 4  [INST] And 3+3? [/INST] 6 ");
    free(text);

    // --train-on-prompt: every token but BOS is a target
    struct token_buf ids2 = {0}, mask2 = {0};
    cr_assert(sft_render(tok, SFT_LLAMA2, &r, 1, &ids2, &mask2) == 0);
    cr_expect(ids2.n == ids.n && memcmp(ids2.ids, ids.ids, sizeof(int) * ids.n) == 0);
    int ones = 0;
    for (size_t i = 0; i < mask2.n; i++) ones += mask2.ids[i];
    cr_expect(mask2.ids[0] == 0 && ones == (int)mask2.n - 1, "train_on_prompt: %d of %zu are targets", ones, mask2.n);
    // llama3 needs Llama 3's special tokens
    cr_expect(sft_check_tokenizer(tok, SFT_LLAMA3) != 0 && strstr(err_msg(), "<|start_header_id|>"), "%s", err_msg());
    cr_expect(sft_check_tokenizer(tok, SFT_PLAIN) == 0);
    free(ids.ids); free(mask.ids); free(want.ids); free(wmask.ids); free(ids2.ids); free(mask2.ids);
    sft_record_free(&r);
    tokenizer_free(tok);
}

Test(sft, alpaca_and_prompt_records_and_their_errors) {
    struct sft_record r;
    parse(&r, "{\"instruction\": \"Translate\", \"input\": \"hello\", \"output\": \"hallo\"}");
    char *t = sft_render_text(SFT_PLAIN, &r, 0);
    cr_expect_str_eq(t, "<s>### Instruction:\nTranslate\n\nhello\n\n### Response:\nhallo</s>");
    free(t);
    sft_record_free(&r);
    parse(&r, "{\"instruction\": \"Say hi\", \"input\": \"\", \"output\": \"hi\"}");
    t = sft_render_text(SFT_LLAMA2, &r, 0);
    cr_expect_str_eq(t, "<s>[INST] Say hi [/INST] hi </s>");
    free(t);
    sft_record_free(&r);
    parse(&r, "{\"system\": \"S\", \"prompt\": \"P\", \"completion\": \"C\"}");
    t = sft_render_text(SFT_LLAMA2, &r, 0);
    cr_expect_str_eq(t, "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nP [/INST] C </s>");
    free(t);
    sft_record_free(&r);

    struct { const char *json, *needle; } bad[] = {
        {"[1, 2]", "not a JSON object"},
        {"{\"text\": \"x\"}", "no \"messages\""},
        {"{\"messages\": []}", "non-empty array"},
        {"{\"messages\": [{\"role\": \"assistant\", \"content\": \"a\"}]}", "message 0 is an assistant turn"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"u\"}, {\"role\": \"bot\", \"content\": \"a\"}]}", "role \"bot\""},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"u\"}]}", "does not end with an assistant turn"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"u\"}, {\"role\": \"system\", \"content\": \"s\"}]}", "may only come first"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": 3}]}", "string \"role\" and \"content\""},
        {"{\"instruction\": \"i\"}", "alpaca record"},
        {"{\"prompt\": \"p\", \"response\": \"  \"}", "empty assistant turn"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_expect(sft_parse(&r, bad[i].json, strlen(bad[i].json), "data.jsonl:7") != 0, "%s accepted", bad[i].json);
        cr_expect(strstr(err_msg(), "data.jsonl:7: ") == err_msg() && strstr(err_msg(), bad[i].needle),
                  "%s: message '%s' lacks '%s'", bad[i].json, err_msg(), bad[i].needle);
    }
}

// Records of varied length: record i has i+1 words in its answer.
static void write_records(const char *path, int n, const char *bad_line) {
    FILE *f = fopen(path, "w");
    cr_assert(f);
    for (int i = 0; i < n; i++) {
        if (bad_line && i == 2) fprintf(f, "%s\n", bad_line);
        fprintf(f, "{\"messages\": [{\"role\": \"user\", \"content\": \"what is %d\"}, "
                   "{\"role\": \"assistant\", \"content\": \"", i);
        for (int k = 0; k <= i; k++) fprintf(f, "%sfour", k ? " " : "");
        fprintf(f, "\"}]}\n");
    }
    fclose(f);
}

static int run_prep(const char *out, const char *input, double val_fraction) {
    struct prep_source src = {.name = "task", .language = "en", .format = PREP_AUTO, .n_paths = 1};
    char *paths[1] = {(char *)input};
    src.paths = paths;
    struct prep_config c = {.out_dir = out, .tokenizer = DIR "/tokenizer.model", .sources = &src, .n_sources = 1,
                            .val_fraction = val_fraction, .seed = 1, .threads = 2, .sft = SFT_LLAMA2};
    struct prep_stats st;
    return prep_run(&c, &st);
}

// Checks every window of one epoch of a loader: documents start with BOS at docs[t] == t, targets only on
// answer tokens (never the prompt), and returns the examples seen and the targets counted.
static void scan_epoch(struct loader *l, int B, int T, uint64_t windows, uint64_t *examples, uint64_t *targets) {
    int *in = malloc(sizeof(int) * B * T), *tg = malloc(sizeof(int) * B * T), *docs = malloc(sizeof(int) * B * T);
    const int bos = tokenizer_bos_id(tok);
    struct token_buf prompt = {0};
    encode(&prompt, "[INST] what is");
    *examples = *targets = 0;
    for (uint64_t w = 0; w < windows; w += B) {
        cr_assert(loader_next_docs(l, in, tg, docs) == 0, "%s", err_msg());
        for (int b = 0; b < B && w + b < windows; b++)
            for (int t = 0; t < T; t++) {
                int i = b * T + t, d = docs[i];
                cr_assert(d <= t && (t == 0 || d == t || d == docs[i - 1]), "docs[%d,%d] = %d", b, t, d);
                if (d == t && in[i] == bos) {
                    (*examples)++;
                    // the prompt is never a target: the first tokens after BOS have targets -1
                    for (size_t k = 0; k + 1 < prompt.n && t + (int)k < T; k++)
                        cr_expect(tg[i + k] == -1, "a prompt token is a target");
                }
                if (d == t && in[i] != bos) cr_expect(tg[i] == -1, "padding has no targets");
                *targets += tg[i] >= 0;
            }
    }
    free(prompt.ids);
    free(in);
    free(tg);
    free(docs);
}

Test(sft, prep_stores_the_mask_and_the_loader_packs_whole_examples) {
    train_tokenizer();
    char in[512], bad[512];
    snprintf(in, sizeof(in), "%s/records.jsonl", DIR);
    snprintf(bad, sizeof(bad), "%s/bad.jsonl", DIR);
    write_records(bad, 6, "{\"prompt\": \"no response\"}");
    cr_expect(run_prep(DIR "/bad", bad, 0.1) != 0);
    char want[600];
    snprintf(want, sizeof(want), "%s:3: a prompt record needs", bad);
    cr_expect(strstr(err_msg(), want) == err_msg(), "the bad record is named by file and line: %s", err_msg());

    write_records(in, 20, NULL);
    cr_assert(run_prep(DIR "/data", in, 0.1) == 0, "%s", err_msg());
    cr_assert(data_verify(DIR "/data", 0) == 0, "%s", err_msg());

    // T = 64 holds every example whole: each appears once per epoch, with all its targets
    struct loader_config c = {.data_dir = DIR "/data", .B = 2, .T = 64, .seed = 3, .dp_rank = 0, .dp_size = 1};
    struct loader *l;
    cr_assert(loader_open(&l, &c) == 0, "%s", err_msg());
    struct loader_info info;
    loader_get_info(l, &info);
    cr_expect(info.packed && info.truncated == 0 && info.dropped == 0);
    cr_expect_eq(info.examples, 18, "20 records, 2 held out: %llu examples", (unsigned long long)info.examples);
    uint64_t ex, tg;
    scan_epoch(l, 2, 64, info.windows[0], &ex, &tg);
    cr_expect_eq(ex, info.examples, "every example once per epoch (%llu of %llu)", (unsigned long long)ex,
                 (unsigned long long)info.examples);
    cr_expect_eq(tg, info.targets);
    cr_expect(info.windows[0] < info.examples, "several examples share a window (%llu windows)",
              (unsigned long long)info.windows[0]);
    loader_close(l);

    // validation: held-out records are there (the first record and every tenth)
    c.split = 1;
    cr_assert(loader_open(&l, &c) == 0, "%s", err_msg());
    loader_get_info(l, &info);
    cr_expect_eq(info.examples, 2);
    loader_close(l);

    // T = 24 is shorter than the long examples: they are cut (or dropped with drop_long), and counted
    c.split = 0;
    c.T = 24;
    cr_assert(loader_open(&l, &c) == 0, "%s", err_msg());
    loader_get_info(l, &info);
    uint64_t cut = info.truncated;
    cr_expect(cut > 0 && info.examples == 18, "%llu cut of %llu", (unsigned long long)cut, (unsigned long long)info.examples);
    scan_epoch(l, 2, 24, info.windows[0], &ex, &tg);
    cr_expect_eq(ex, info.examples);
    loader_close(l);
    c.drop_long = 1;
    cr_assert(loader_open(&l, &c) == 0, "%s", err_msg());
    loader_get_info(l, &info);
    cr_expect(info.dropped == cut && info.examples == 18 - cut && info.truncated == 0);
    loader_close(l);

    // two records: one held out, one to train on
    write_records(in, 2, NULL);
    cr_assert(run_prep(DIR "/two", in, 0.01) == 0, "%s", err_msg());
    int has = 0;
    cr_assert(loader_split_has_data(DIR "/two", 1, 64, &has) == 0);
    cr_expect(has, "a two-record set keeps a validation record");
    tokenizer_free(tok);
}

// Plain (pretraining) data with doc_mask: each position's document start is the last BOS at or before it.
Test(sft, doc_mask_takes_document_starts_from_bos_in_plain_windows) {
    train_tokenizer();
    const char *txt = DIR "/plain.txt";
    FILE *f = fopen(txt, "w");
    cr_assert(f);
    for (int i = 0; i < 60; i++) fprintf(f, "what is the answer to question %d\n\n", i);
    fclose(f);
    struct prep_source src = {.name = "en", .language = "en", .format = PREP_BLANK, .n_paths = 1};
    char *paths[1] = {(char *)txt};
    src.paths = paths;
    struct prep_config pc = {.out_dir = DIR "/plain", .tokenizer = DIR "/tokenizer.model", .sources = &src,
                             .n_sources = 1, .val_fraction = 0, .seed = 1, .threads = 1};
    cr_assert(prep_run(&pc, NULL) == 0, "%s", err_msg());
    struct loader_config c = {.data_dir = DIR "/plain", .B = 2, .T = 40, .seed = 1, .dp_size = 1, .doc_mask = 1};
    struct loader *l;
    cr_assert(loader_open(&l, &c) == 0, "%s", err_msg());
    cr_expect(loader_has_docs(l));
    int in[80], tg[80], docs[80], starts = 0;
    cr_assert(loader_next_docs(l, in, tg, docs) == 0, "%s", err_msg());
    for (int b = 0; b < 2; b++) {
        int last = 0;
        for (int t = 0; t < 40; t++) {
            if (in[b * 40 + t] == tokenizer_bos_id(tok)) last = t, starts++;
            cr_expect_eq(docs[b * 40 + t], last, "row %d position %d", b, t);
        }
    }
    cr_expect(starts >= 2, "the windows cross documents (%d BOS)", starts);
    loader_close(l);
    tokenizer_free(tok);
}

// Llama 3 with Meta's tokenizer (the ref_llama3_tok fixture writes it; without it the test is skipped): the
// record's tokens equal the whole documented prompt format encoded at once (special-token strings become
// their ids), followed by <|end_of_text|>; targets are the assistant contents and their <|eot_id|>.
Test(sft, llama3_tokens_are_the_documented_format) {
    const char *model = LLAMAC_TEST_TMP "/llama3_tok/tokenizer.model";
    FILE *probe = fopen(model, "rb");
    if (!probe) cr_skip_test("no %s (the ref_llama3_tok fixture needs nodejs and npm)", model);
    fclose(probe);
    cr_assert(tokenizer_load(&tok, model) == 0, "%s", err_msg());
    cr_assert(sft_check_tokenizer(tok, SFT_LLAMA3) == 0, "%s", err_msg());
    struct sft_record r;
    parse(&r, conv);
    struct token_buf ids = {0}, mask = {0}, want = {0};
    cr_assert(sft_render(tok, SFT_LLAMA3, &r, 0, &ids, &mask) == 0, "%s", err_msg());
    const char *doc = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                      "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
                      "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>"
                      "<|start_header_id|>user<|end_header_id|>\n\nAnd 3+3?<|eot_id|>"
                      "<|start_header_id|>assistant<|end_header_id|>\n\n6<|eot_id|><|end_of_text|>";
    encode(&want, doc);
    cr_assert_eq(ids.n, want.n, "%zu tokens, the documented format %zu", ids.n, want.n);
    cr_expect(memcmp(ids.ids, want.ids, sizeof(int) * ids.n) == 0, "the tokens differ from the documented format");
    cr_expect(ids.ids[0] == 128000 && ids.ids[ids.n - 1] == 128001, "<|begin_of_text|> .. <|end_of_text|>");
    // targets: "4", <|eot_id|>, "6", <|eot_id|> (single tokens each)
    struct token_buf four = {0}, six = {0};
    encode(&four, "4");
    encode(&six, "6");
    cr_assert(four.n == 1 && six.n == 1);
    const int want_targets[4] = {four.ids[0], 128009, six.ids[0], 128009};
    int targets = 0;
    for (size_t i = 0; i < ids.n; i++)
        if (mask.ids[i]) {
            cr_expect(targets < 4 && ids.ids[i] == want_targets[targets], "target %d is id %d", targets, ids.ids[i]);
            targets++;
        }
    cr_expect_eq(targets, 4, "assistant contents and their <|eot_id|> (%d targets)", targets);
    free(four.ids);
    free(six.ids);
    free(ids.ids);
    free(mask.ids);
    free(want.ids);
    sft_record_free(&r);
    tokenizer_free(tok);
}
