// The restricted unpickler and the tensor table of a torch.save file (torch_pickle.h says what is
// accepted). Why not a general unpickler: pickle is a program, and a .pth downloaded from anywhere may
// call any Python callable; here a value is only ever built from the whitelisted opcodes, and the only
// "calls" are the two constructors a state dict needs, interpreted in C. Every read of data.pkl is
// bounds-checked, every count is limited by the bytes left, and memo indices by the pickle's length.
#include "model/torch_pickle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/half.h"
#include "core/error.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "torch storages are little-endian; so must the host be");

// ---------------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------------

enum pk { PK_MARK, PK_NONE, PK_BOOL, PK_INT, PK_FLOAT, PK_STR, PK_TUPLE, PK_LIST, PK_DICT, PK_GLOBAL, PK_STORAGE, PK_TENSOR };

// The globals a state dict uses. Storage types are listed with their element size; only F32/F16/BF16
// (dtype >= 0) can be read.
enum glob { G_ORDERED_DICT, G_REBUILD_TENSOR, G_STORAGE };
static const struct { const char *name; int dtype; int size; } storages[] = {
    {"FloatStorage", ST_F32, 4}, {"HalfStorage", ST_F16, 2}, {"BFloat16Storage", ST_BF16, 2},
    {"DoubleStorage", -1, 8}, {"LongStorage", -1, 8}, {"IntStorage", -1, 4}, {"ShortStorage", -1, 2},
    {"CharStorage", -1, 1}, {"ByteStorage", -1, 1}, {"BoolStorage", -1, 1}, {"ComplexFloatStorage", -1, 8},
    {"ComplexDoubleStorage", -1, 16},
};

struct pv {
    enum pk k;
    int64_t i;        // INT, BOOL; GLOBAL: enum glob; STORAGE: numel
    double f;
    char *s;          // STR (NUL-terminated; len in i for STR is not needed: NULs refused)
    int n, cap;       // TUPLE/LIST: n items; DICT: n pairs (items[2j], items[2j+1])
    struct pv **items;
    int storage_type; // GLOBAL storage / STORAGE: index into storages
    char key[64];     // STORAGE: the data/KEY entry name
    // TENSOR
    struct pv *storage;
    uint64_t offset;
    int ndim;
    int64_t shape[PTH_MAX_NDIM], stride[PTH_MAX_NDIM];
};

struct up {
    const char *path;
    const unsigned char *p;
    size_t n, pos;
    struct pv **all;  // every value allocated, for freeing
    size_t nall, capall;
    struct pv **stack;
    size_t sp, capstack;
    struct pv **memo;
    size_t nmemo;
    char err[700];
};

static struct pv *newv(struct up *u, enum pk k) {
    struct pv *v = xcalloc(1, sizeof(*v));  // run() stops before nall exceeds PTH_MAX_VALUES
    v->k = k;
    if (u->nall == u->capall) {
        u->capall = u->capall ? 2 * u->capall : 256;
        u->all = xrealloc(u->all, sizeof(*u->all) * u->capall);
    }
    u->all[u->nall++] = v;
    return v;
}

static void additem(struct pv *c, struct pv *x) {
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 4;
        c->items = xrealloc(c->items, sizeof(*c->items) * (size_t)c->cap);
    }
    c->items[c->n++] = x;
}

static int fail(struct up *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct up *u, const char *fmt, ...) {
    if (u->err[0]) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(u->err, sizeof(u->err), fmt, ap);
    va_end(ap);
    return -1;
}

static int push(struct up *u, struct pv *v) {
    if (u->sp >= PTH_MAX_VALUES) return fail(u, "the pickle stack grows past %d values", PTH_MAX_VALUES);
    if (u->sp == u->capstack) {
        u->capstack = u->capstack ? 2 * u->capstack : 64;
        u->stack = xrealloc(u->stack, sizeof(*u->stack) * u->capstack);
    }
    u->stack[u->sp++] = v;
    return 0;
}

static struct pv *pop(struct up *u, size_t at) {
    if (u->sp == 0 || u->stack[u->sp - 1]->k == PK_MARK) {
        fail(u, "pickle stack underflow at offset %zu", at);
        return NULL;
    }
    return u->stack[--u->sp];
}

// Index of the topmost MARK, or -1.
static long find_mark(const struct up *u) {
    for (size_t i = u->sp; i-- > 0;)
        if (u->stack[i]->k == PK_MARK) return (long)i;
    return -1;
}

static int need(struct up *u, size_t k, size_t at) {
    if (u->n - u->pos < k) return fail(u, "data.pkl ends inside the opcode at offset %zu (truncated)", at);
    return 0;
}

static uint64_t le(const unsigned char *p, int k) {
    uint64_t x = 0;
    for (int i = k - 1; i >= 0; i--) x = (x << 8) | p[i];
    return x;
}

static struct pv *mkstr(struct up *u, const unsigned char *s, size_t len, size_t at) {
    if (memchr(s, 0, len)) {
        fail(u, "string with a NUL byte at offset %zu", at);
        return NULL;
    }
    struct pv *v = newv(u, PK_STR);
    v->s = xmalloc(len + 1);
    memcpy(v->s, s, len);
    v->s[len] = '\0';
    return v;
}

static void printable(char *out, size_t n, const char *s) { st_printable(out, (int)n, s); }

// GLOBAL module.name -> a whitelisted value, or an error naming it.
static struct pv *mkglobal(struct up *u, const char *mod, const char *name) {
    struct pv *v = NULL;
    if (!strcmp(mod, "collections") && !strcmp(name, "OrderedDict")) {
        v = newv(u, PK_GLOBAL);
        v->i = G_ORDERED_DICT;
    } else if (!strcmp(mod, "torch._utils") && !strcmp(name, "_rebuild_tensor_v2")) {
        v = newv(u, PK_GLOBAL);
        v->i = G_REBUILD_TENSOR;
    } else if (!strcmp(mod, "torch")) {
        for (size_t k = 0; k < sizeof(storages) / sizeof(storages[0]); k++)
            if (!strcmp(name, storages[k].name)) {
                v = newv(u, PK_GLOBAL);
                v->i = G_STORAGE;
                v->storage_type = (int)k;
            }
    }
    if (!v) {
        char pm[80], pn[80];
        printable(pm, sizeof(pm), mod);
        printable(pn, sizeof(pn), name);
        fail(u, "pickle global '%s.%s' is not allowed in a state dict (only collections.OrderedDict, "
             "torch._utils._rebuild_tensor_v2 and torch.*Storage); refused, nothing was executed", pm, pn);
    }
    return v;
}

static int is_int(const struct pv *v) { return v && (v->k == PK_INT || v->k == PK_BOOL); }

static int int_tuple(const struct pv *t, int64_t *out, int *nd) {
    if (!t || t->k != PK_TUPLE || t->n > PTH_MAX_NDIM) return -1;
    for (int d = 0; d < t->n; d++) {
        if (t->items[d]->k != PK_INT || t->items[d]->i < 0) return -1;
        out[d] = t->items[d]->i;
    }
    *nd = t->n;
    return 0;
}

// REDUCE: callable(args) for the two callables a state dict uses.
static struct pv *reduce(struct up *u, struct pv *fn, struct pv *args, size_t at) {
    if (!args || args->k != PK_TUPLE) {
        fail(u, "REDUCE at offset %zu without an argument tuple", at);
        return NULL;
    }
    if (fn->k == PK_GLOBAL && fn->i == G_ORDERED_DICT) {
        if (args->n != 0) {
            fail(u, "REDUCE at offset %zu: collections.OrderedDict with arguments is not supported", at);
            return NULL;
        }
        return newv(u, PK_DICT);
    }
    if (fn->k == PK_GLOBAL && fn->i == G_REBUILD_TENSOR) {
        // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
        if (args->n != 6 && args->n != 7) {
            fail(u, "REDUCE at offset %zu: _rebuild_tensor_v2 with %d arguments (expected 6 or 7)", at, args->n);
            return NULL;
        }
        struct pv **a = args->items;
        struct pv *t = newv(u, PK_TENSOR);
        int nds = 0;
        if (a[0]->k != PK_STORAGE || a[1]->k != PK_INT || a[1]->i < 0 || int_tuple(a[2], t->shape, &t->ndim) != 0 ||
            int_tuple(a[3], t->stride, &nds) != 0 || nds != t->ndim || !is_int(a[4]) ||
            (a[5]->k != PK_DICT && a[5]->k != PK_NONE)) {
            fail(u, "REDUCE at offset %zu: _rebuild_tensor_v2 arguments are not (storage, offset, size, stride, "
                 "requires_grad, hooks) with at most %d dimensions", at, PTH_MAX_NDIM);
            return NULL;
        }
        t->storage = a[0];
        t->offset = (uint64_t)a[1]->i;
        return t;
    }
    char what[40] = "a value";
    if (fn->k == PK_GLOBAL && fn->i == G_STORAGE) snprintf(what, sizeof(what), "torch.%s", storages[fn->storage_type].name);
    fail(u, "REDUCE at offset %zu applies %s, which a state dict never calls; refused", at, what);
    return NULL;
}

// The pickle machine. Returns the value STOP returns, or NULL with u->err set.
static struct pv *run(struct up *u) {
    while (!u->err[0]) {
        size_t at = u->pos;
        if (u->nall > PTH_MAX_VALUES) {
            fail(u, "data.pkl builds more than %d values; a state dict needs far fewer", PTH_MAX_VALUES);
            break;
        }
        if (need(u, 1, at)) break;
        unsigned op = u->p[u->pos++];
        const unsigned char *q = u->p + u->pos;
        struct pv *v = NULL, *a, *b;
        long m;
        switch (op) {
        case 0x80:  // PROTO
            if (need(u, 1, at)) break;
            if (q[0] < 2 || q[0] > 5) fail(u, "pickle protocol %u is not supported", q[0]);
            u->pos++;
            break;
        case 0x95:  // FRAME: a length hint; the opcodes follow inline
            if (need(u, 8, at)) break;
            u->pos += 8;
            break;
        case '}': push(u, newv(u, PK_DICT)); break;
        case ')': push(u, newv(u, PK_TUPLE)); break;
        case ']': push(u, newv(u, PK_LIST)); break;
        case '(': push(u, newv(u, PK_MARK)); break;
        case 'N': push(u, newv(u, PK_NONE)); break;
        case 0x88: case 0x89:
            v = newv(u, PK_BOOL);
            v->i = op == 0x88;
            push(u, v);
            break;
        case 'K': case 'M': case 'J': {  // BININT1, BININT2, BININT
            int k = op == 'K' ? 1 : op == 'M' ? 2 : 4;
            if (need(u, (size_t)k, at)) break;
            v = newv(u, PK_INT);
            v->i = op == 'J' ? (int64_t)(int32_t)le(q, 4) : (int64_t)le(q, k);
            u->pos += (size_t)k;
            push(u, v);
            break;
        }
        case 0x8a: {  // LONG1: n bytes, little-endian two's complement
            if (need(u, 1, at)) break;
            int k = q[0];
            if (k > 8) {
                fail(u, "integer of %d bytes at offset %zu is out of range", k, at);
                break;
            }
            if (need(u, 1 + (size_t)k, at)) break;
            uint64_t x = le(q + 1, k);
            if (k > 0 && k < 8 && (q[k] & 0x80)) x |= ~0ull << (8 * k);  // sign-extend
            v = newv(u, PK_INT);
            v->i = (int64_t)x;
            u->pos += 1 + (size_t)k;
            push(u, v);
            break;
        }
        case 'G': {  // BINFLOAT, big-endian
            if (need(u, 8, at)) break;
            uint64_t x = 0;
            for (int i = 0; i < 8; i++) x = (x << 8) | q[i];
            v = newv(u, PK_FLOAT);
            memcpy(&v->f, &x, 8);
            u->pos += 8;
            push(u, v);
            break;
        }
        case 'X': case 0x8c: case 0x8d: case 'U': case 'T': {  // BINUNICODE(8), SHORT_BINUNICODE, (SHORT_)BINSTRING
            int k = op == 0x8c || op == 'U' ? 1 : op == 0x8d ? 8 : 4;
            if (need(u, (size_t)k, at)) break;
            uint64_t len = le(q, k);
            u->pos += (size_t)k;
            if (len > u->n - u->pos) {
                fail(u, "string of %llu bytes at offset %zu runs past the end of data.pkl", (unsigned long long)len, at);
                break;
            }
            v = mkstr(u, u->p + u->pos, (size_t)len, at);
            u->pos += (size_t)len;
            if (v) push(u, v);
            break;
        }
        case 't':  // TUPLE from the mark
            if ((m = find_mark(u)) < 0) {
                fail(u, "TUPLE without MARK at offset %zu", at);
                break;
            }
            v = newv(u, PK_TUPLE);
            for (size_t i = (size_t)m + 1; i < u->sp; i++) additem(v, u->stack[i]);
            u->sp = (size_t)m;
            push(u, v);
            break;
        case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
            int k = (int)op - 0x84;
            struct pv *it[3];
            for (int i = k - 1; i >= 0; i--)
                if (!(it[i] = pop(u, at))) break;
            if (u->err[0]) break;
            v = newv(u, PK_TUPLE);
            for (int i = 0; i < k; i++) additem(v, it[i]);
            push(u, v);
            break;
        }
        case 'c': {  // GLOBAL "module\nname\n"
            const unsigned char *e1 = memchr(q, '\n', u->n - u->pos);
            const unsigned char *e2 = e1 ? memchr(e1 + 1, '\n', (size_t)(u->p + u->n - e1 - 1)) : NULL;
            if (!e2 || e1 - q > 200 || e2 - e1 > 200) {
                fail(u, "malformed GLOBAL at offset %zu", at);
                break;
            }
            char mod[256], name[256];
            snprintf(mod, sizeof(mod), "%.*s", (int)(e1 - q), (const char *)q);
            snprintf(name, sizeof(name), "%.*s", (int)(e2 - e1 - 1), (const char *)e1 + 1);
            u->pos = (size_t)(e2 + 1 - u->p);
            if ((v = mkglobal(u, mod, name))) push(u, v);
            break;
        }
        case 0x93:  // STACK_GLOBAL
            if (!(b = pop(u, at)) || !(a = pop(u, at))) break;
            if (a->k != PK_STR || b->k != PK_STR) {
                fail(u, "STACK_GLOBAL at offset %zu without two strings", at);
                break;
            }
            if ((v = mkglobal(u, a->s, b->s))) push(u, v);
            break;
        case 'q': case 'r': case 0x94: {  // BINPUT, LONG_BINPUT, MEMOIZE
            size_t idx = u->nmemo;
            if (op != 0x94) {
                int k = op == 'q' ? 1 : 4;
                if (need(u, (size_t)k, at)) break;
                idx = (size_t)le(q, k);
                u->pos += (size_t)k;
            }
            if (u->sp == 0) {
                fail(u, "memo store with an empty stack at offset %zu", at);
                break;
            }
            if (idx >= u->n) {  // a real memo index is below the number of opcodes
                fail(u, "memo index %zu at offset %zu is out of range", idx, at);
                break;
            }
            if (idx >= u->nmemo) {
                u->memo = xrealloc(u->memo, sizeof(*u->memo) * (idx + 1));
                for (size_t i = u->nmemo; i <= idx; i++) u->memo[i] = NULL;
                u->nmemo = idx + 1;
            }
            u->memo[idx] = u->stack[u->sp - 1];
            break;
        }
        case 'h': case 'j': {  // BINGET, LONG_BINGET
            int k = op == 'h' ? 1 : 4;
            if (need(u, (size_t)k, at)) break;
            size_t idx = (size_t)le(q, k);
            u->pos += (size_t)k;
            if (idx >= u->nmemo || !u->memo[idx]) {
                fail(u, "memo index %zu at offset %zu was never stored", idx, at);
                break;
            }
            push(u, u->memo[idx]);
            break;
        }
        case 'R':  // REDUCE
            if (!(b = pop(u, at)) || !(a = pop(u, at))) break;
            if ((v = reduce(u, a, b, at))) push(u, v);
            break;
        case 'Q': {  // BINPERSID: ('storage', torch.<T>Storage, KEY, LOCATION, NUMEL)
            if (!(a = pop(u, at))) break;
            struct pv **it = a->items;
            if (a->k != PK_TUPLE || a->n != 5 || it[0]->k != PK_STR || strcmp(it[0]->s, "storage") != 0 ||
                it[1]->k != PK_GLOBAL || it[1]->i != G_STORAGE || it[2]->k != PK_STR || it[3]->k != PK_STR ||
                it[4]->k != PK_INT || it[4]->i < 0) {
                fail(u, "persistent id at offset %zu is not ('storage', torch.<T>Storage, key, location, numel)", at);
                break;
            }
            if (strlen(it[2]->s) >= sizeof(v->key) || !it[2]->s[0] || strchr(it[2]->s, '/')) {
                char pk[40];
                printable(pk, sizeof(pk), it[2]->s);
                fail(u, "storage key '%s' at offset %zu is not a plain name", pk, at);
                break;
            }
            v = newv(u, PK_STORAGE);
            v->storage_type = it[1]->storage_type;
            v->i = it[4]->i;
            snprintf(v->key, sizeof(v->key), "%s", it[2]->s);
            push(u, v);
            break;
        }
        case 's': case 'u': {  // SETITEM, SETITEMS
            size_t first;
            if (op == 's') {
                if (u->sp < 3) {
                    fail(u, "SETITEM with a short stack at offset %zu", at);
                    break;
                }
                first = u->sp - 2;
            } else {
                if ((m = find_mark(u)) < 1 || (u->sp - (size_t)m - 1) % 2) {
                    fail(u, "SETITEMS without MARK or with an odd number of items at offset %zu", at);
                    break;
                }
                first = (size_t)m + 1;
            }
            struct pv *d = u->stack[first - 1 - (op == 'u')];
            if (d->k != PK_DICT) {
                fail(u, "SETITEM(S) at offset %zu on something that is not a dict", at);
                break;
            }
            for (size_t i = first; i < u->sp; i++) {
                if (u->stack[i]->k == PK_MARK) {
                    fail(u, "stray MARK in SETITEM(S) at offset %zu", at);
                    break;
                }
                additem(d, u->stack[i]);
            }
            u->sp = first - (op == 'u');
            break;
        }
        case 'a': case 'e': {  // APPEND, APPENDS
            size_t first;
            if (op == 'a') {
                if (u->sp < 2) {
                    fail(u, "APPEND with a short stack at offset %zu", at);
                    break;
                }
                first = u->sp - 1;
            } else {
                if ((m = find_mark(u)) < 1) {
                    fail(u, "APPENDS without MARK at offset %zu", at);
                    break;
                }
                first = (size_t)m + 1;
            }
            struct pv *l = u->stack[first - 1 - (op == 'e')];
            if (l->k != PK_LIST) {
                fail(u, "APPEND(S) at offset %zu on something that is not a list", at);
                break;
            }
            for (size_t i = first; i < u->sp; i++) additem(l, u->stack[i]);
            u->sp = first - (op == 'e');
            break;
        }
        case 'b':  // BUILD: only a dict's state (torch's _metadata), ignored
            if (!(a = pop(u, at))) break;
            if (u->sp == 0 || u->stack[u->sp - 1]->k != PK_DICT || (a->k != PK_DICT && a->k != PK_NONE && a->k != PK_TUPLE))
                fail(u, "BUILD at offset %zu on something other than a dict; refused", at);
            break;
        case '.':  // STOP
            if (!(v = pop(u, at))) break;
            return v;
        default:
            fail(u, "pickle opcode 0x%02x at offset %zu is not used by a state dict; refused", op, at);
            break;
        }
    }
    return NULL;
}

// ---------------------------------------------------------------------------------------------------
// The file
// ---------------------------------------------------------------------------------------------------

int64_t pth_numel(const struct pth_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

static const struct pth_file *sort_ctx;
static int cmp_by_name(const void *a, const void *b) {
    return strcmp(sort_ctx->t[*(const int *)a].name, sort_ctx->t[*(const int *)b].name);
}

// Checks one tensor value and fills t; -1 with the message in msg.
static int make_tensor(struct pth_tensor *t, const struct pv *key, const struct pv *val, const struct zip_file *z,
                       const char *prefix, char *msg, size_t nmsg) {
    char pn[100];
    if (key->k != PK_STR) return snprintf(msg, nmsg, "the state dict has a key that is not a string"), -1;
    printable(pn, sizeof(pn), key->s);
    if (strlen(key->s) >= sizeof(t->name)) return snprintf(msg, nmsg, "tensor name '%s' is too long", pn), -1;
    if (val->k != PK_TENSOR) return snprintf(msg, nmsg, "state dict entry '%s' is not a tensor", pn), -1;
    snprintf(t->name, sizeof(t->name), "%s", key->s);
    const struct pv *s = val->storage;
    int dt = storages[s->storage_type].dtype;
    if (dt < 0)
        return snprintf(msg, nmsg, "tensor '%s' is stored as torch.%s, which llamac does not read (float32, float16 "
                        "and bfloat16 only)", pn, storages[s->storage_type].name), -1;
    t->dtype = (enum st_dtype)dt;
    t->ndim = val->ndim;
    memcpy(t->shape, val->shape, sizeof(t->shape));
    t->offset = val->offset;
    t->storage_numel = (uint64_t)s->i;
    // contiguous row-major: stride[d] = product of the later sizes (free where size is 1)
    uint64_t numel = 1, expect = 1;
    int overflow = 0;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && (uint64_t)val->stride[d] != expect && t->shape[d] != 0)
            return snprintf(msg, nmsg, "tensor '%s' is not contiguous (stride %lld in dimension %d, expected %llu); "
                            "save it with .contiguous()", pn, (long long)val->stride[d], d, (unsigned long long)expect), -1;
        if (__builtin_mul_overflow(expect, (uint64_t)t->shape[d], &expect)) overflow = 1;
        if (__builtin_mul_overflow(numel, (uint64_t)t->shape[d], &numel)) overflow = 1;
    }
    uint64_t end, bytes;
    size_t es = st_dtype_size(t->dtype);
    if (overflow || numel > INT64_MAX || __builtin_add_overflow(t->offset, numel, &end) || end > t->storage_numel)
        return snprintf(msg, nmsg, "tensor '%s' (offset %llu, %llu elements) does not lie inside its storage of %llu "
                        "elements", pn, (unsigned long long)t->offset, (unsigned long long)numel,
                        (unsigned long long)t->storage_numel), -1;
    char ename[200];
    snprintf(ename, sizeof(ename), "%s/data/%s", prefix, s->key);
    t->storage = zip_find(z, ename);
    if (!t->storage) return snprintf(msg, nmsg, "tensor '%s': storage entry '%s' is missing", pn, ename), -1;
    if (__builtin_mul_overflow(t->storage_numel, (uint64_t)es, &bytes) || bytes != t->storage->usize)
        return snprintf(msg, nmsg, "tensor '%s': storage entry '%s' has %llu bytes, but the pickle says %llu elements "
                        "of %zu bytes", pn, ename, (unsigned long long)t->storage->usize,
                        (unsigned long long)t->storage_numel, es), -1;
    return 0;
}

int pth_open(struct pth_file *f, const char *path) {
    memset(f, 0, sizeof(*f));
    if (zip_open(&f->z, path) != 0) return -1;
    // PREFIX/data.pkl: the one pickle; every entry lives under PREFIX/
    const struct zip_entry *pkl = NULL;
    for (int i = 0; i < f->z.n; i++) {
        const char *nm = f->z.e[i].name, *sl = strchr(nm, '/');
        if (sl && !strcmp(sl, "/data.pkl")) {
            if (pkl) return pth_close(f), err_set("%s: more than one data.pkl in the archive", path);
            pkl = &f->z.e[i];
        }
    }
    if (!pkl) return pth_close(f), err_set("%s: no PREFIX/data.pkl entry (not a torch.save file, or saved with the "
                                           "legacy format: re-save with a current torch.save)", path);
    char prefix[ZIP_MAX_NAME];
    snprintf(prefix, sizeof(prefix), "%.*s", (int)(strchr(pkl->name, '/') - pkl->name), pkl->name);
    if (strlen(prefix) > 100) return pth_close(f), err_set("%s: archive prefix is too long", path);
    if (pkl->usize > PTH_MAX_PICKLE)
        return pth_close(f), err_set("%s: data.pkl has %llu bytes (limit %u)", path, (unsigned long long)pkl->usize, PTH_MAX_PICKLE);
    unsigned char *buf = xmalloc(pkl->usize ? pkl->usize : 1);
    if (zip_read(&f->z, pkl, buf) != 0) {
        free(buf);
        pth_close(f);
        return -1;
    }
    struct up u = {.path = path, .p = buf, .n = (size_t)pkl->usize};
    struct pv *root = run(&u);
    char msg[800] = "";
    if (!root) snprintf(msg, sizeof(msg), "%s", u.err);
    else if (root->k != PK_DICT) snprintf(msg, sizeof(msg), "data.pkl does not hold a dict (a state dict of tensors)");
    else if (u.pos != u.n) snprintf(msg, sizeof(msg), "data.pkl has %zu bytes after STOP", u.n - u.pos);
    if (!msg[0]) {
        int np = root->n / 2;
        f->t = xcalloc((size_t)(np ? np : 1), sizeof(*f->t));
        for (int j = 0; j < np && !msg[0]; j++) {
            if (make_tensor(&f->t[j], root->items[2 * j], root->items[2 * j + 1], &f->z, prefix, msg, sizeof(msg)) == 0)
                f->n++;
        }
        if (!msg[0] && np == 0) snprintf(msg, sizeof(msg), "the state dict is empty");
    }
    for (size_t i = 0; i < u.nall; i++) {
        free(u.all[i]->s);
        free(u.all[i]->items);
        free(u.all[i]);
    }
    free(u.all);
    free(u.stack);
    free(u.memo);
    free(buf);
    if (!msg[0]) {
        f->by_name = xmalloc(sizeof(int) * (size_t)f->n);
        for (int i = 0; i < f->n; i++) f->by_name[i] = i;
        sort_ctx = f;
        qsort(f->by_name, (size_t)f->n, sizeof(int), cmp_by_name);
        for (int i = 1; i < f->n && !msg[0]; i++)
            if (!strcmp(f->t[f->by_name[i]].name, f->t[f->by_name[i - 1]].name)) {
                char pn[100];
                snprintf(msg, sizeof(msg), "tensor '%s' appears twice in the state dict",
                         st_printable(pn, sizeof(pn), f->t[f->by_name[i]].name));
            }
    }
    if (msg[0]) {
        pth_close(f);
        return err_set("%s: %s", path, msg);
    }
    return 0;
}

void pth_close(struct pth_file *f) {
    zip_close(&f->z);
    free(f->t);
    free(f->by_name);
    memset(f, 0, sizeof(*f));
    f->z.fd = -1;
}

const struct pth_tensor *pth_find(const struct pth_file *f, const char *name) {
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(f->t[f->by_name[mid]].name, name);
        if (c == 0) return &f->t[f->by_name[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

int pth_read_f32(const struct pth_file *f, const struct pth_tensor *t, float *out) {
    unsigned char *raw = xmalloc(t->storage->usize ? t->storage->usize : 1);
    if (zip_read(&f->z, t->storage, raw) != 0) {
        free(raw);
        return -1;
    }
    size_t n = (size_t)pth_numel(t);
    if (t->dtype == ST_F32) {
        memcpy(out, raw + 4 * t->offset, 4 * n);
    } else {
        const unsigned char *p = raw + 2 * t->offset;
        for (size_t i = 0; i < n; i++) {
            uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
            out[i] = t->dtype == ST_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
        }
    }
    free(raw);
    return 0;
}
