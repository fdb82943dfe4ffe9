// Llama 3's byte-level BPE (tokenizer_bpe.h says what is read and how text is encoded). Why a second
// tokenizer beside SentencePiece: Llama 3 replaced SentencePiece with a tiktoken vocabulary of 128,000
// byte sequences plus 256 special tokens; its pieces are bytes, not characters, so no byte fallback is
// needed. Both file formats become the same tables here:
//   tok bytes  id -> bytes (off/len into one arena), and a hash bytes -> id (ordinary tokens)
//   specials   id -> its text, a hash text -> id, matched in the input before pre-tokenization
//   pairs      (left id, right id) -> (rank, merged id): tiktoken's rank of the merged bytes, or the
//              index of the merge in tokenizer.json (the same order for Llama 3)
// The model file is untrusted: every line, id and string is checked, and a problem is one err_set line
// naming the file.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "data/tokenizer_bpe.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

// Llama 3's pre-tokenizer (Meta's tokenizer.py and Hugging Face's tokenizer.json use the same pattern)
static const char LLAMA3_PATTERN[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
#define BPE_MAX_VOCAB (1 << 22)
#define BPE_MAX_SPECIAL_LEN 128

struct bpe {
    char *path;              // as loaded (heap), for messages
    int n;                   // vocabulary size, specials included
    unsigned char *bytes;    // token bytes, back to back
    size_t *off;             // (n) into bytes
    int *len;                // (n)
    char **piece;            // (n) the spelling: byte-level unicode ("Ġthe"), or a special's text
    unsigned char *special;  // (n) 1 for special tokens
    int *tab;                // bytes -> id for ordinary tokens: open addressing, -1 empty
    size_t tabcap;
    int *stab;               // special text -> id
    size_t stabcap;
    uint64_t *pkey;          // pairs: (left << 32 | right) + 1, 0 empty
    int *prank, *pres;
    size_t pcap;
    int byte_id[256];
    int ignore_merges;       // a piece that is a token is that token, before any merging
    pcre2_code *re;
};

// ---------------------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------------------

static uint64_t hash_bytes(const unsigned char *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static int tab_find(const struct bpe *b, const int *tab, size_t cap, const unsigned char *p, size_t n) {
    size_t m = cap - 1;
    for (size_t i = hash_bytes(p, n) & m;; i = (i + 1) & m) {
        int id = tab[i];
        if (id < 0) return -1;
        if ((size_t)b->len[id] == n && memcmp(b->bytes + b->off[id], p, n) == 0) return id;
    }
}

// Inserts id (its bytes) unless equal bytes are there; returns the id already present or -1.
static int tab_put(struct bpe *b, int *tab, size_t cap, int id) {
    const unsigned char *p = b->bytes + b->off[id];
    size_t n = (size_t)b->len[id], m = cap - 1;
    for (size_t i = hash_bytes(p, n) & m;; i = (i + 1) & m) {
        int o = tab[i];
        if (o < 0) {
            tab[i] = id;
            return -1;
        }
        if ((size_t)b->len[o] == n && memcmp(b->bytes + b->off[o], p, n) == 0) return o;
    }
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static void pair_put(struct bpe *b, int l, int r, int rank, int res) {
    uint64_t k = ((uint64_t)(uint32_t)l << 32 | (uint32_t)r) + 1;
    size_t m = b->pcap - 1;
    for (size_t i = mix64(k) & m;; i = (i + 1) & m) {
        if (b->pkey[i] == k) {
            if (rank < b->prank[i]) b->prank[i] = rank, b->pres[i] = res;
            return;
        }
        if (b->pkey[i] == 0) {
            b->pkey[i] = k;
            b->prank[i] = rank;
            b->pres[i] = res;
            return;
        }
    }
}

static int pair_get(const struct bpe *b, int l, int r, int *res) {
    uint64_t k = ((uint64_t)(uint32_t)l << 32 | (uint32_t)r) + 1;
    size_t m = b->pcap - 1;
    for (size_t i = mix64(k) & m;; i = (i + 1) & m) {
        if (b->pkey[i] == k) {
            *res = b->pres[i];
            return b->prank[i];
        }
        if (b->pkey[i] == 0) return INT_MAX;
    }
}

// GPT-2's byte <-> unicode mapping: printable Latin-1 bytes stand for themselves, the other 68 bytes
// for U+0100.. in byte order.
static void byte_unicode(int *b2u, int *u2b /* 324 */) {
    int n = 0;
    for (int i = 0; i < 324; i++) u2b[i] = -1;
    for (int c = 0; c < 256; c++) {
        int printable = (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255);
        b2u[c] = printable ? c : 256 + n++;
        u2b[b2u[c]] = c;
    }
}

static size_t utf8_put(char *o, int cp) {
    if (cp < 0x80) return o[0] = (char)cp, 1;
    if (cp < 0x800) return o[0] = (char)(0xc0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3f)), 2;
    o[0] = (char)(0xe0 | cp >> 12);
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
}

// Next code point of a NUL-terminated UTF-8 string, or -1 when malformed.
static int utf8_next(const unsigned char **s) {
    const unsigned char *p = *s;
    int c = p[0], n = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : -1;
    if (n < 0) return -1;
    int cp = n == 0 ? c : c & (0x3f >> n);
    for (int i = 1; i <= n; i++) {
        if ((p[i] & 0xc0) != 0x80) return -1;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    *s = p + n + 1;
    return cp;
}

// s for an error message: control bytes as '?', cut at n - 1 bytes.
static const char *printable(char *out, size_t n, const char *s) {
    size_t i = 0;
    for (; s[i] && i + 1 < n; i++) out[i] = (unsigned char)s[i] < 0x20 ? '?' : s[i];
    out[i] = '\0';
    return out;
}

// ---------------------------------------------------------------------------------------------------
// Building
// ---------------------------------------------------------------------------------------------------

static struct bpe *bpe_new(const char *path, int n, size_t nbytes) {
    struct bpe *b = xcalloc(1, sizeof(*b));
    b->path = strdup(path);
    CHECK(b->path);
    b->n = n;
    b->bytes = xmalloc(nbytes ? nbytes : 1);
    b->off = xcalloc((size_t)n, sizeof(size_t));
    b->len = xmalloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) b->len[i] = -1;  // -1: id not yet defined
    b->piece = xcalloc((size_t)n, sizeof(char *));
    b->special = xcalloc((size_t)n, 1);
    return b;
}

void bpe_free(struct bpe *b) {
    if (!b) return;
    for (int i = 0; i < b->n; i++) free(b->piece[i]);
    free(b->piece);
    free(b->bytes);
    free(b->off);
    free(b->len);
    free(b->special);
    free(b->tab);
    free(b->stab);
    free(b->pkey);
    free(b->prank);
    free(b->pres);
    if (b->re) pcre2_code_free(b->re);
    free(b->path);
    free(b);
}

// After every id has its bytes: spellings, hashes, byte tokens, the pattern.
static int finish(struct bpe *b) {
    int b2u[256], u2b[324];
    byte_unicode(b2u, u2b);
    for (int id = 0; id < b->n; id++) {
        if (b->len[id] < 0) return err_set("%s: token id %d is not defined (ids must run from 0 without gaps)", b->path, id);
        const unsigned char *p = b->bytes + b->off[id];
        char *s = xmalloc((size_t)b->len[id] * 3 + 1);
        size_t k = 0;
        if (b->special[id]) {
            memcpy(s, p, (size_t)b->len[id]);
            k = (size_t)b->len[id];
        } else {
            for (int i = 0; i < b->len[id]; i++) k += utf8_put(s + k, b2u[p[i]]);
        }
        s[k] = '\0';
        b->piece[id] = s;
    }
    b->tabcap = pow2_at_least(2 * (size_t)b->n);
    b->tab = xmalloc(sizeof(int) * b->tabcap);
    memset(b->tab, 0xff, sizeof(int) * b->tabcap);
    b->stabcap = b->tabcap;
    b->stab = xmalloc(sizeof(int) * b->stabcap);
    memset(b->stab, 0xff, sizeof(int) * b->stabcap);
    for (int id = 0; id < b->n; id++) {
        if (b->len[id] == 0) return err_set("%s: token id %d is empty", b->path, id);
        int dup = tab_put(b, b->special[id] ? b->stab : b->tab, b->tabcap, id);
        if (dup >= 0) return err_set("%s: tokens %d and %d are the same bytes", b->path, dup, id);
    }
    for (int c = 0; c < 256; c++) {
        unsigned char ch = (unsigned char)c;
        b->byte_id[c] = tab_find(b, b->tab, b->tabcap, &ch, 1);
        if (b->byte_id[c] < 0) return err_set("%s: no token for the single byte 0x%02x (not a byte-level BPE vocabulary)", b->path, c);
    }
    int ec;
    PCRE2_SIZE eo;
    b->re = pcre2_compile((PCRE2_SPTR)LLAMA3_PATTERN, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF,
                          &ec, &eo, NULL);
    CHECKF(b->re, "PCRE2 rejects the Llama 3 pattern (error %d at %zu)", ec, (size_t)eo);
    pcre2_jit_compile(b->re, PCRE2_JIT_COMPLETE);  // optional: without JIT, pcre2_match interprets
    return 0;
}

static int b64val(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

// Strict base64 (padding required to a multiple of 4); bytes appended at out. -1 when malformed.
static long b64dec(unsigned char *out, const char *s, size_t n) {
    if (n == 0 || n % 4) return -1;
    long k = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int j = 0; j < 4; j++) {
            if (s[i + j] == '=' && i + 4 == n && j >= 2) {
                v[j] = 0;
                pad++;
            } else if (pad || (v[j] = b64val((unsigned char)s[i + j])) < 0) {
                return -1;
            }
        }
        uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[k++] = (unsigned char)(x >> 16);
        if (pad < 2) out[k++] = (unsigned char)(x >> 8);
        if (pad < 1) out[k++] = (unsigned char)x;
    }
    return k;
}

static void llama3_special_name(char *out, size_t n, int i) {
    static const char *const first[10] = {"<|begin_of_text|>", "<|end_of_text|>", NULL, NULL, NULL, NULL,
                                          "<|start_header_id|>", "<|end_header_id|>", NULL, "<|eot_id|>"};
    static const int reserved[10] = {-1, -1, 0, 1, 2, 3, -1, -1, 4, -1};
    if (i < 10 && first[i]) snprintf(out, n, "%s", first[i]);
    else snprintf(out, n, "<|reserved_special_token_%d|>", i < 10 ? reserved[i] : i - 5);
}

static int load_tiktoken(struct bpe **out, const char *path, const char *data, size_t n) {
    int lines = 0;
    for (size_t i = 0; i < n; i++) lines += data[i] == '\n';
    if (n && data[n - 1] != '\n') lines++;
    if (lines <= 0 || lines > BPE_MAX_VOCAB) return err_set("%s: %d lines is not a tiktoken vocabulary", path, lines);
    const int NS = 256, total = lines + NS;
    struct bpe *b = bpe_new(path, total, n + (size_t)NS * 40);
    b->ignore_merges = 1;  // tiktoken looks a piece up before merging
    size_t used = 0;
    int line = 0;
    for (size_t i = 0; i < n; line++) {
        const char *s = data + i, *nl = memchr(s, '\n', n - i), *end = nl ? nl : data + n;
        const char *sp = memchr(s, ' ', (size_t)(end - s));
        i = (size_t)(end - data) + (nl != NULL);
        long rank = -1, k = -1;
        if (sp && sp + 1 < end) {
            char *e;
            char num[16];
            size_t dl = (size_t)(end - sp - 1);
            if (dl < sizeof(num)) {
                memcpy(num, sp + 1, dl);
                num[dl] = '\0';
                rank = strtol(num, &e, 10);
                if (*e || num[0] < '0' || num[0] > '9') rank = -1;
            }
            k = b64dec(b->bytes + used, s, (size_t)(sp - s));
        }
        if (!sp || rank < 0 || k <= 0) {
            bpe_free(b);
            return err_set("%s:%d: expected 'BASE64 RANK' (a tiktoken vocabulary line)", path, line + 1);
        }
        if (rank >= lines || b->len[rank] >= 0) {
            bpe_free(b);
            return err_set("%s:%d: rank %ld is out of range or repeated (ranks must be 0..%d)", path, line + 1, rank, lines - 1);
        }
        b->off[rank] = used;
        b->len[rank] = (int)k;
        used += (size_t)k;
    }
    for (int i = 0; i < NS; i++) {
        char name[64];
        llama3_special_name(name, sizeof(name), i);
        size_t k = strlen(name);
        memcpy(b->bytes + used, name, k);
        b->off[lines + i] = used;
        b->len[lines + i] = (int)k;
        b->special[lines + i] = 1;
        used += k;
    }
    if (finish(b) != 0) {
        bpe_free(b);
        return -1;
    }
    // Pairs from the ranks: every split of a token into two tokens merges into it at its rank
    size_t np = 0;
    for (int id = 0; id < lines; id++) np += b->len[id] > 1 ? (size_t)b->len[id] - 1 : 0;
    b->pcap = pow2_at_least(2 * np + 16);
    b->pkey = xcalloc(b->pcap, sizeof(uint64_t));
    b->prank = xmalloc(sizeof(int) * b->pcap);
    b->pres = xmalloc(sizeof(int) * b->pcap);
    for (int id = 0; id < lines; id++) {
        const unsigned char *p = b->bytes + b->off[id];
        for (int s = 1; s < b->len[id]; s++) {
            int l = tab_find(b, b->tab, b->tabcap, p, (size_t)s), r = tab_find(b, b->tab, b->tabcap, p + s, (size_t)(b->len[id] - s));
            if (l >= 0 && r >= 0) pair_put(b, l, r, id, id);
        }
    }
    *out = b;
    return 0;
}

// A byte-level spelling -> bytes appended at out; -1 when a character is not in the mapping.
static long bytelevel_decode(unsigned char *out, const char *s, const int *u2b) {
    long k = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int cp = utf8_next(&p);
        if (cp < 0 || cp >= 324 || u2b[cp] < 0) return -1;
        out[k++] = (unsigned char)u2b[cp];
    }
    return k;
}

static int load_json(struct bpe **out, const char *path, const char *data, size_t n) {
    cJSON *root = cJSON_ParseWithLength(data, n);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return err_set("%s: not valid JSON (a tokenizer.json was expected)", path);
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    int rc = 0;
    if (!cJSON_IsObject(model) || !cJSON_IsString(type) || strcmp(type->valuestring, "BPE") != 0)
        rc = err_set("%s: model.type is not \"BPE\" (only byte-level BPE tokenizer.json files are read)", path);
    else if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges))
        rc = err_set("%s: model.vocab (an object) or model.merges (a list) is missing", path);
    else if (added && !cJSON_IsArray(added))
        rc = err_set("%s: added_tokens must be a list", path);
    // The vocabulary size: the largest id + 1
    int maxid = -1;
    size_t nbytes = 0;
    for (const cJSON *v = rc ? NULL : vocab->child; v && !rc; v = v->next) {
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= BPE_MAX_VOCAB || v->valuedouble != (int)v->valuedouble)
            rc = err_set("%s: model.vocab entry has an id that is not an integer in 0..%d", path, BPE_MAX_VOCAB - 1);
        else if (v->valueint > maxid) maxid = v->valueint;
        nbytes += rc ? 0 : strlen(v->string);
    }
    for (const cJSON *a = rc || !added ? NULL : added->child; a && !rc; a = a->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id"), *ct = cJSON_GetObjectItemCaseSensitive(a, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= BPE_MAX_VOCAB || id->valuedouble != (int)id->valuedouble ||
            !cJSON_IsString(ct) || !ct->valuestring[0] || strlen(ct->valuestring) > BPE_MAX_SPECIAL_LEN)
            rc = err_set("%s: an added_tokens entry lacks an integer id or a content string (1..%d bytes)", path, BPE_MAX_SPECIAL_LEN);
        else if (id->valueint > maxid) maxid = id->valueint;
        nbytes += rc ? 0 : strlen(ct->valuestring);
    }
    if (!rc && maxid < 255) rc = err_set("%s: the vocabulary has %d tokens (a byte-level BPE has at least 256)", path, maxid + 1);
    if (rc) {
        cJSON_Delete(root);
        return -1;
    }
    struct bpe *b = bpe_new(path, maxid + 1, nbytes);
    const cJSON *im = cJSON_GetObjectItemCaseSensitive(model, "ignore_merges");
    b->ignore_merges = cJSON_IsTrue(im);
    int b2u[256], u2b[324];
    byte_unicode(b2u, u2b);
    size_t used = 0;
    for (const cJSON *v = vocab->child; v && !rc; v = v->next) {
        int id = v->valueint;
        long k = bytelevel_decode(b->bytes + used, v->string, u2b);
        char pn[80];
        if (k <= 0) rc = err_set("%s: token '%s' (id %d) is not spelt in byte-level form", path, printable(pn, sizeof(pn), v->string), id);
        else if (b->len[id] >= 0) rc = err_set("%s: id %d is given to two tokens", path, id);
        else {
            b->off[id] = used;
            b->len[id] = (int)k;
            used += (size_t)k;
        }
    }
    for (const cJSON *a = rc || !added ? NULL : added->child; a && !rc; a = a->next) {
        int id = cJSON_GetObjectItemCaseSensitive(a, "id")->valueint;
        const char *ct = cJSON_GetObjectItemCaseSensitive(a, "content")->valuestring;
        size_t k = strlen(ct);
        if (b->len[id] >= 0) {  // also in model.vocab: must be the same token
            rc = err_set("%s: added token id %d is also an ordinary token", path, id);
            break;
        }
        memcpy(b->bytes + used, ct, k);
        b->off[id] = used;
        b->len[id] = (int)k;
        b->special[id] = 1;
        used += k;
    }
    if (!rc) rc = finish(b);
    if (!rc) {
        int nm = cJSON_GetArraySize(merges);
        b->pcap = pow2_at_least(2 * (size_t)nm + 16);
        b->pkey = xcalloc(b->pcap, sizeof(uint64_t));
        b->prank = xmalloc(sizeof(int) * b->pcap);
        b->pres = xmalloc(sizeof(int) * b->pcap);
        unsigned char *tmp = xmalloc(nbytes + 8);
        int rank = 0;
        for (const cJSON *m = merges->child; m && !rc; m = m->next, rank++) {
            char left[1024], right[1024];
            if (cJSON_IsString(m)) {
                const char *sp = strchr(m->valuestring, ' ');
                if (!sp || strchr(sp + 1, ' ') || (size_t)(sp - m->valuestring) >= sizeof(left) || strlen(sp + 1) >= sizeof(right)) {
                    rc = err_set("%s: merge %d is not \"A B\"", path, rank);
                    break;
                }
                snprintf(left, sizeof(left), "%.*s", (int)(sp - m->valuestring), m->valuestring);
                snprintf(right, sizeof(right), "%s", sp + 1);
            } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                       cJSON_IsString(m->child->next) && strlen(m->child->valuestring) < sizeof(left) &&
                       strlen(m->child->next->valuestring) < sizeof(right)) {
                snprintf(left, sizeof(left), "%s", m->child->valuestring);
                snprintf(right, sizeof(right), "%s", m->child->next->valuestring);
            } else {
                rc = err_set("%s: merge %d is not \"A B\" or [\"A\", \"B\"]", path, rank);
                break;
            }
            long kl = bytelevel_decode(tmp, left, u2b), kr = kl > 0 ? bytelevel_decode(tmp + kl, right, u2b) : -1;
            int l = kl > 0 ? tab_find(b, b->tab, b->tabcap, tmp, (size_t)kl) : -1;
            int r = kr > 0 ? tab_find(b, b->tab, b->tabcap, tmp + kl, (size_t)kr) : -1;
            int res = l >= 0 && r >= 0 ? tab_find(b, b->tab, b->tabcap, tmp, (size_t)(kl + kr)) : -1;
            if (res < 0) rc = err_set("%s: merge %d ('%s' + '%s') does not join two tokens into a token", path, rank, left, right);
            else pair_put(b, l, r, rank, res);
        }
        free(tmp);
    }
    cJSON_Delete(root);
    if (rc) {
        bpe_free(b);
        return -1;
    }
    *out = b;
    return 0;
}

int bpe_sniff(const char *data, size_t n) {
    size_t i = 0;
    while (i < n && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n')) i++;
    if (i < n && data[i] == '{') return 2;
    // tiktoken: the first line is BASE64 SPACE DIGITS
    size_t j = 0;
    while (j < n && b64val((unsigned char)data[j]) >= 0) j++;
    while (j < n && data[j] == '=') j++;
    if (j == 0 || j >= n || data[j] != ' ') return 0;
    size_t k = j + 1;
    while (k < n && data[k] >= '0' && data[k] <= '9') k++;
    return k > j + 1 && (k == n || data[k] == '\n') ? 1 : 0;
}

int bpe_load(struct bpe **out, const char *path, const char *data, size_t n) {
    *out = NULL;
    int kind = bpe_sniff(data, n);
    if (kind == 1) return load_tiktoken(out, path, data, n);
    if (kind == 2) return load_json(out, path, data, n);
    return err_set("%s: neither a tiktoken vocabulary nor a tokenizer.json", path);
}

int bpe_vocab_size(const struct bpe *b) { return b->n; }

int bpe_token_id(const struct bpe *b, const char *special) {
    return tab_find(b, b->stab, b->stabcap, (const unsigned char *)special, strlen(special));
}

const char *bpe_piece(const struct bpe *b, int id) { return id >= 0 && id < b->n ? b->piece[id] : ""; }

// ---------------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------------

// One pre-tokenized piece -> ids.
static void encode_piece(const struct bpe *b, const unsigned char *p, size_t n, struct token_buf *out) {
    if (n == 0) return;
    if (b->ignore_merges || n == 1) {
        int id = tab_find(b, b->tab, b->tabcap, p, n);
        if (id >= 0) {
            token_buf_push(out, id);
            return;
        }
    }
    int stack_ids[64], stack_rank[64], stack_res[64];
    int *ids = n <= 64 ? stack_ids : xmalloc(sizeof(int) * n);
    int *rank = n <= 64 ? stack_rank : xmalloc(sizeof(int) * n);  // rank[i]: merging ids[i] and ids[i+1]
    int *res = n <= 64 ? stack_res : xmalloc(sizeof(int) * n);     // res[i]: the token they merge into
    size_t m = n;
    for (size_t i = 0; i < n; i++) ids[i] = b->byte_id[p[i]];
    for (size_t i = 0; i + 1 < m; i++) rank[i] = pair_get(b, ids[i], ids[i + 1], &res[i]);
    while (m > 1) {
        size_t best = 0;
        for (size_t i = 1; i + 1 < m; i++)
            if (rank[i] < rank[best]) best = i;
        if (rank[best] == INT_MAX) break;
        ids[best] = res[best];
        memmove(ids + best + 1, ids + best + 2, sizeof(int) * (m - best - 2));
        memmove(rank + best + 1, rank + best + 2, sizeof(int) * (m > best + 2 ? m - best - 2 : 0));
        memmove(res + best + 1, res + best + 2, sizeof(int) * (m > best + 2 ? m - best - 2 : 0));
        m--;
        if (best > 0) rank[best - 1] = pair_get(b, ids[best - 1], ids[best], &res[best - 1]);
        if (best + 1 < m) rank[best] = pair_get(b, ids[best], ids[best + 1], &res[best]);
    }
    for (size_t i = 0; i < m; i++) token_buf_push(out, ids[i]);
    if (ids != stack_ids) free(ids);
    if (rank != stack_rank) free(rank);
    if (res != stack_res) free(res);
}

// Text without special tokens: pre-tokenized by the pattern, each piece encoded.
static int encode_plain(const struct bpe *b, const unsigned char *s, size_t n, pcre2_match_data *md, struct token_buf *out) {
    size_t at = 0;
    while (at < n) {
        int rc = pcre2_match(b->re, s, n, at, 0, md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT) rc = pcre2_match(b->re, s, n, at, PCRE2_NO_JIT, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) {
            encode_piece(b, s + at, n - at, out);
            break;
        }
        if (rc < 0) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(rc, msg, sizeof(msg));
            return err_set("tokenizer %s: pre-tokenizer failed: %s", b->path, (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t st = ov[0], en = ov[1] > ov[0] ? ov[1] : ov[0] + 1;
        if (st > at) encode_piece(b, s + at, st - at, out);  // bytes no alternative matched (invalid UTF-8)
        encode_piece(b, s + st, en - st, out);
        at = en;
    }
    return 0;
}

int bpe_encode(const struct bpe *b, const char *text, size_t len, struct token_buf *out) {
    const unsigned char *s = (const unsigned char *)text;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(b->re, NULL);
    CHECK(md);
    size_t plain = 0;
    int rc = 0;
    for (size_t i = 0; i + 1 < len && rc == 0; i++) {
        if (s[i] != '<' || s[i + 1] != '|') continue;
        size_t lim = len - i < BPE_MAX_SPECIAL_LEN ? len - i : BPE_MAX_SPECIAL_LEN;
        for (size_t k = 3; k < lim; k++)
            if (s[i + k] == '>' && s[i + k - 1] == '|') {
                int id = tab_find(b, b->stab, b->stabcap, s + i, k + 1);
                if (id >= 0) {
                    if (i > plain) rc = encode_plain(b, s + plain, i - plain, md, out);
                    token_buf_push(out, id);
                    plain = i + k + 1;
                    i = plain - 1;
                }
                break;
            }
    }
    if (rc == 0 && plain < len) rc = encode_plain(b, s + plain, len - plain, md, out);
    pcre2_match_data_free(md);
    return rc;
}

char *bpe_decode(const struct bpe *b, const int *ids, size_t n, size_t *len) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= b->n) {
            err_set("token id %d is outside the vocabulary (size %d)", ids[i], b->n);
            return NULL;
        }
        if (!b->special[ids[i]]) total += (size_t)b->len[ids[i]];
    }
    char *r = xmalloc(total + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!b->special[ids[i]]) {
            memcpy(r + k, b->bytes + b->off[ids[i]], (size_t)b->len[ids[i]]);
            k += (size_t)b->len[ids[i]];
        }
    r[k] = '\0';
    if (len) *len = k;
    return r;
}
