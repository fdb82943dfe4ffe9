// Instruction and chat records → segments → tokens and loss mask (the design is in data/sft.h).
//
// The templates are written once, as a list of segments (render_segments); the token path (sft_render)
// and the text path (sft_render_text, which the tests compare with the published layouts) both walk it, so
// they cannot disagree.
#include "data/sft.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

static const char *template_names[] = {"none", "plain", "llama2", "llama3"};

const char *sft_template_name(enum sft_template t) { return template_names[t]; }

int sft_template_parse(const char *s, enum sft_template *t) {
    for (int i = 1; i < 4; i++)
        if (!strcmp(s, template_names[i])) {
            *t = (enum sft_template)i;
            return 0;
        }
    return err_set("chat template '%s': use llama2, llama3 or plain", s);
}

// ---------------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------------
static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static int add_msg(struct sft_record *r, enum sft_role role, const char *s, const char *where) {
    if (r->n == SFT_MAX_MESSAGES) return err_set("%s: more than %d messages", where, SFT_MAX_MESSAGES);
    size_t n = strlen(s);
    while (n && is_space(*s)) s++, n--;
    while (n && is_space(s[n - 1])) n--;
    r->m[r->n++] = (struct sft_message){role, s, n};
    return 0;
}

static const char *str_field(const cJSON *o, const char *key, int *bad) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j) return NULL;
    if (!cJSON_IsString(j) || !j->valuestring) {
        *bad = 1;
        return NULL;
    }
    return j->valuestring;
}

static int parse_messages(struct sft_record *r, const cJSON *msgs, const char *where) {
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0)
        return err_set("%s: \"messages\" is not a non-empty array", where);
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        int bad = 0;
        const char *role = cJSON_IsObject(m) ? str_field(m, "role", &bad) : NULL;
        const char *content = cJSON_IsObject(m) ? str_field(m, "content", &bad) : NULL;
        if (!role || !content || bad)
            return err_set("%s: message %d is not an object with string \"role\" and \"content\"", where, i);
        enum sft_role want = r->n == 0 || r->m[r->n - 1].role != SFT_USER ? SFT_USER : SFT_ASSISTANT;
        enum sft_role got;
        if (!strcmp(role, "system")) got = SFT_SYSTEM;
        else if (!strcmp(role, "user")) got = SFT_USER;
        else if (!strcmp(role, "assistant")) got = SFT_ASSISTANT;
        else return err_set("%s: message %d has role \"%s\" (system, user or assistant)", where, i, role);
        if (got == SFT_SYSTEM && i != 0) return err_set("%s: message %d: a system message may only come first", where, i);
        if (got != SFT_SYSTEM && got != want)
            return err_set("%s: message %d is a%s turn where a%s turn belongs (user and assistant alternate, user first)",
                           where, i, got == SFT_USER ? " user" : "n assistant", want == SFT_USER ? " user" : "n assistant");
        if (add_msg(r, got, content, where) != 0) return -1;
        i++;
    }
    if (r->m[r->n - 1].role != SFT_ASSISTANT)
        return err_set("%s: the conversation does not end with an assistant turn (nothing to train on)", where);
    return 0;
}

int sft_parse(struct sft_record *r, const char *line, size_t len, const char *where) {
    memset(r, 0, sizeof(*r));
    cJSON *root = cJSON_ParseWithLength(line, len);
    if (!root) return err_set("%s: not valid JSON", where);
    r->json = root;
    int rc = 0, bad = 0;
    if (!cJSON_IsObject(root)) {
        rc = err_set("%s: not a JSON object", where);
    } else if (cJSON_GetObjectItemCaseSensitive(root, "messages")) {
        rc = parse_messages(r, cJSON_GetObjectItemCaseSensitive(root, "messages"), where);
    } else if (cJSON_GetObjectItemCaseSensitive(root, "instruction")) {
        const char *ins = str_field(root, "instruction", &bad), *in = str_field(root, "input", &bad);
        const char *out = str_field(root, "output", &bad);
        if (bad || !ins || !out) {
            rc = err_set("%s: an alpaca record needs string \"instruction\" and \"output\" (and \"input\", if any, a string)", where);
        } else {
            size_t a = strlen(ins), b = in ? strlen(in) : 0;
            r->owned = xmalloc(a + b + 3);
            memcpy(r->owned, ins, a);
            size_t n = a;
            int has_input = 0;
            for (size_t k = 0; k < b; k++) has_input |= !is_space(in[k]);
            if (has_input) {
                memcpy(r->owned + n, "\n\n", 2);
                memcpy(r->owned + n + 2, in, b);
                n += b + 2;
            }
            r->owned[n] = '\0';
            rc = add_msg(r, SFT_USER, r->owned, where);
            if (rc == 0) rc = add_msg(r, SFT_ASSISTANT, out, where);
        }
    } else if (cJSON_GetObjectItemCaseSensitive(root, "prompt")) {
        const char *sys = str_field(root, "system", &bad), *p = str_field(root, "prompt", &bad);
        const char *resp = str_field(root, "response", &bad);
        if (!resp) resp = str_field(root, "completion", &bad);
        if (bad || !p || !resp) {
            rc = err_set("%s: a prompt record needs string \"prompt\" and \"response\" (or \"completion\")", where);
        } else {
            if (sys) rc = add_msg(r, SFT_SYSTEM, sys, where);
            if (rc == 0) rc = add_msg(r, SFT_USER, p, where);
            if (rc == 0) rc = add_msg(r, SFT_ASSISTANT, resp, where);
        }
    } else {
        rc = err_set("%s: no \"messages\", \"instruction\"/\"output\" or \"prompt\"/\"response\" field", where);
    }
    for (int i = 0; rc == 0 && i < r->n; i++)
        if (r->m[i].role == SFT_ASSISTANT && r->m[i].len == 0) rc = err_set("%s: an empty assistant turn", where);
    if (rc) sft_record_free(r);
    return rc;
}

void sft_record_free(struct sft_record *r) {
    cJSON_Delete(r->json);
    free(r->owned);
    memset(r, 0, sizeof(*r));
}

// ---------------------------------------------------------------------------------------------------
// Templates as segments
// ---------------------------------------------------------------------------------------------------
enum seg_kind { SEG_TEXT, SEG_BOS, SEG_EOS };

// A segment: text (s, n), or BOS/EOS; target says whether its tokens are training targets. space: the
// text begins with a separating space that a tokenizer with a dummy prefix (SentencePiece) supplies itself.
typedef int (*seg_fn)(void *ctx, enum seg_kind k, const char *s, size_t n, int target, int space);

struct strbuf {
    char *p;
    size_t n, cap;
};
static void sb_add(struct strbuf *b, const char *s, size_t n) {
    CHECK(n < ((size_t)1 << 40));
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}
static void sb_str(struct strbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static int render_segments(enum sft_template t, const struct sft_record *r, int train_prompt, seg_fn emit, void *ctx) {
    struct strbuf b = {0};
    int rc = emit(ctx, SEG_BOS, NULL, 0, 0, 0);
    int i = 0;
    const struct sft_message *sys = r->n > 0 && r->m[0].role == SFT_SYSTEM ? &r->m[i++] : NULL;
    if (t == SFT_LLAMA3) {
        static const char *roles[] = {"system", "user", "assistant"};
        for (int k = 0; k < r->n && rc == 0; k++) {
            const struct sft_message *m = &r->m[k];
            int target = m->role == SFT_ASSISTANT || train_prompt;
            b.n = 0;
            sb_str(&b, "<|start_header_id|>");
            sb_str(&b, roles[m->role]);
            sb_str(&b, "<|end_header_id|>\n\n");
            rc = emit(ctx, SEG_TEXT, b.p, b.n, train_prompt, 0);
            if (rc == 0 && m->len) rc = emit(ctx, SEG_TEXT, m->content, m->len, target, 0);
            if (rc == 0) rc = emit(ctx, SEG_TEXT, "<|eot_id|>", 10, target, 0);
        }
        if (rc == 0) rc = emit(ctx, SEG_EOS, NULL, 0, 0, 0);  // <|end_of_text|> frames the record only
        free(b.p);
        return rc;
    }
    if (t == SFT_PLAIN && sys && sys->len) {
        sb_add(&b, sys->content, sys->len);
        sb_str(&b, "\n\n");
        rc = emit(ctx, SEG_TEXT, b.p, b.n, train_prompt, 0);
    }
    for (int first = 1; i + 1 < r->n && rc == 0; i += 2, first = 0) {
        const struct sft_message *u = &r->m[i], *a = &r->m[i + 1];
        b.n = 0;
        if (t == SFT_LLAMA2) {
            sb_str(&b, "[INST] ");
            if (first && sys) {
                sb_str(&b, "<<SYS>>\n");
                sb_add(&b, sys->content, sys->len);
                sb_str(&b, "\n<</SYS>>\n\n");
            }
            sb_add(&b, u->content, u->len);
            sb_str(&b, " [/INST]");
            rc = emit(ctx, SEG_TEXT, b.p, b.n, train_prompt, 0);
            b.n = 0;
            sb_str(&b, " ");
            sb_add(&b, a->content, a->len);
            sb_str(&b, " ");
            if (rc == 0) rc = emit(ctx, SEG_TEXT, b.p, b.n, 1, 1);
        } else {
            sb_str(&b, "### Instruction:\n");
            sb_add(&b, u->content, u->len);
            sb_str(&b, "\n\n### Response:\n");
            rc = emit(ctx, SEG_TEXT, b.p, b.n, train_prompt, 0);
            if (rc == 0) rc = emit(ctx, SEG_TEXT, a->content, a->len, 1, 0);
        }
        if (rc == 0) rc = emit(ctx, SEG_EOS, NULL, 0, 1, 0);
    }
    free(b.p);
    return rc;
}

// ---- tokens ----
struct tok_ctx {
    const struct tokenizer *tok;
    struct token_buf *ids, *mask;
    int dummy_prefix;  // the tokenizer puts a space (U+2581) before the text it encodes
};

static int tok_emit(void *p, enum seg_kind k, const char *s, size_t n, int target, int space) {
    struct tok_ctx *c = p;
    size_t before = c->ids->n;
    if (k == SEG_BOS) token_buf_push(c->ids, tokenizer_bos_id(c->tok));
    else if (k == SEG_EOS) token_buf_push(c->ids, tokenizer_eos_id(c->tok));
    else {
        if (space && c->dummy_prefix && n > 0 && s[0] == ' ') s++, n--;
        if (tokenizer_encode(c->tok, s, n, c->ids) != 0) return -1;
    }
    for (size_t i = before; i < c->ids->n; i++) token_buf_push(c->mask, target);
    return 0;
}

static int has_dummy_prefix(const struct tokenizer *tok) {
    struct token_buf b = {0};
    int yes = tokenizer_encode(tok, "a", 1, &b) == 0 && b.n > 0 &&
              !strncmp(tokenizer_piece(tok, b.ids[0]), "\xe2\x96\x81", 3);
    free(b.ids);
    return yes;
}

// The id of a special token spelled s: encoding it alone gives exactly one id.
static int special_id(const struct tokenizer *tok, const char *s) {
    struct token_buf b = {0};
    int id = tokenizer_encode(tok, s, strlen(s), &b) == 0 && b.n == 1 ? b.ids[0] : -1;
    free(b.ids);
    return id;
}

int sft_check_tokenizer(const struct tokenizer *tok, enum sft_template t) {
    if (tokenizer_bos_id(tok) < 0 || tokenizer_eos_id(tok) < 0)
        return err_set("%s: the tokenizer has no BOS or EOS id, which chat templates need", tokenizer_path(tok));
    if (t == SFT_LLAMA3) {
        const char *need[] = {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};
        for (int i = 0; i < 3; i++)
            if (special_id(tok, need[i]) < 0)
                return err_set("%s: no %s token: the llama3 template needs Llama 3's tokenizer (or use --sft llama2 or plain)",
                               tokenizer_path(tok), need[i]);
    }
    return 0;
}

int sft_render(const struct tokenizer *tok, enum sft_template t, const struct sft_record *r, int train_on_prompt,
               struct token_buf *ids, struct token_buf *mask) {
    struct tok_ctx c = {tok, ids, mask, has_dummy_prefix(tok)};
    return render_segments(t, r, train_on_prompt, tok_emit, &c);
}

// ---- text ----
struct text_ctx {
    struct strbuf b;
    enum sft_template t;
    int mark;
};

static int text_emit(void *p, enum seg_kind k, const char *s, size_t n, int target, int space) {
    struct text_ctx *c = p;
    (void)space;
    if (c->mark && target) sb_str(&c->b, "{{");
    if (k == SEG_BOS) sb_str(&c->b, c->t == SFT_LLAMA3 ? "<|begin_of_text|>" : "<s>");
    else if (k == SEG_EOS) sb_str(&c->b, c->t == SFT_LLAMA3 ? "<|end_of_text|>" : "</s>");
    else sb_add(&c->b, s, n);
    if (c->mark && target) sb_str(&c->b, "}}");
    return 0;
}

char *sft_render_text(enum sft_template t, const struct sft_record *r, int mark_targets) {
    struct text_ctx c = {{0}, t, mark_targets};
    sb_add(&c.b, "", 0);
    render_segments(t, r, 0, text_emit, &c);
    return c.b.p;
}
