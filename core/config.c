#include "core/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <string.h>

#include "core/error.h"
#include "core/fs.h"

void cfg_init(struct cfg *c) { memset(c, 0, sizeof(*c)); }

void cfg_free(struct cfg *c) {
    for (int i = 0; i < c->n; i++) {
        free(c->entries[i].key);
        free(c->entries[i].value);
        free(c->entries[i].origin);
    }
    for (int i = 0; i < c->n_asked; i++) free(c->asked[i]);
    free(c->entries);
    free(c->asked);
    memset(c, 0, sizeof(*c));
}

static struct cfg_entry *cfg_find(struct cfg *c, const char *key) {
    for (int i = c->n - 1; i >= 0; i--)
        if (strcmp(c->entries[i].key, key) == 0) return &c->entries[i];
    return NULL;
}

void cfg_put(struct cfg *c, const char *key, const char *value, const char *origin) {
    struct cfg_entry *e = cfg_find(c, key);
    if (e) {
        free(e->value);
        free(e->origin);
    } else {
        if (c->n == c->cap) {
            c->cap = c->cap ? 2 * c->cap : 32;
            c->entries = xrealloc(c->entries, (size_t)c->cap * sizeof(*c->entries));
        }
        e = &c->entries[c->n++];
        e->key = strdup(key);
        e->used = 0;
    }
    e->value = strdup(value);
    e->origin = strdup(origin);
}

// The INI reader. It was inih, whose Debian build stops at lines of 200 bytes ("cannot parse this line"
// for a long run_dir, also inside the run config a checkpoint stores), so lines are read here without a
// length limit, with inih's rules: [section], key = value or key: value, whole-line comments starting
// with ; or #, inline comments after whitespace + ;, surrounding whitespace dropped, a UTF-8 BOM skipped.
static char *strip(char *s) {
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\f' || *s == '\v') s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\f' || e[-1] == '\v')) *--e = '\0';
    return s;
}

static void printable(char *dst, size_t n, const char *src) {  // for messages: control bytes shown as '?'
    snprintf(dst, n, "%s", src);
    for (char *p = dst; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
}

int cfg_load_string(struct cfg *c, const char *text, const char *origin) {
    char *buf = strdup(text), *section = strdup("");
    CHECK(buf && section);
    char *p = buf;
    if (!strncmp(p, "\xEF\xBB\xBF", 3)) p += 3;
    int rc = 0;
    for (int line = 1; p && rc == 0; line++) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = '\0';
        char *s = strip(p);
        p = nl ? nl + 1 : NULL;
        if (!*s || *s == ';' || *s == '#') continue;
        if (*s == '[') {
            char *close = strchr(s, ']');
            if (!close) {
                rc = err_set("%s:%d: cannot parse this line (a [section] without ']')", origin, line);
                break;
            }
            *close = '\0';
            free(section);
            section = strdup(strip(s + 1));
            continue;
        }
        char *eq = s + strcspn(s, "=:");
        if (!*eq) {
            char shown[80];
            printable(shown, sizeof(shown), s);
            rc = err_set("%s:%d: cannot parse this line (expected key = value): '%s'", origin, line, shown);
            break;
        }
        *eq = '\0';
        char *name = strip(s), *value = eq + 1;
        for (char *q = value; *q; q++)
            if (*q == ';' && q > value && (q[-1] == ' ' || q[-1] == '\t')) {
                *q = '\0';
                break;
            }
        value = strip(value);
        if (!*name) {
            rc = err_set("%s:%d: cannot parse this line (a value without a key)", origin, line);
        } else if (!section[0]) {
            char shown[80];
            printable(shown, sizeof(shown), name);
            rc = err_set("%s:%d: key '%s' is outside any [section]", origin, line, shown);
        } else {
            char *key = fs_printf("%s.%s", section, name), *where = fs_printf("%s:%d", origin, line);
            cfg_put(c, key, value, where);
            free(key);
            free(where);
        }
    }
    free(buf);
    free(section);
    return rc;
}

int cfg_load_file(struct cfg *c, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return err_set("%s: cannot open config: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *text = xmalloc(cap);
    for (size_t k; (k = fread(text + n, 1, cap - n - 1, f)) > 0;) {
        n += k;
        if (n + 1 == cap) text = xrealloc(text, cap *= 2);
    }
    fclose(f);
    text[n] = '\0';
    int rc = cfg_load_string(c, text, path);
    free(text);
    return rc;
}

int cfg_set(struct cfg *c, const char *a) {
    const char *eq = strchr(a, '=');
    const char *dot = strchr(a, '.');
    if (!eq || !dot || dot > eq || dot == a || eq == dot + 1)
        return err_set("--set %s: expected section.key=value", a);
    char key[256];
    size_t n = (size_t)(eq - a);
    if (n >= sizeof(key)) return err_set("--set %s: key too long", a);
    memcpy(key, a, n);
    key[n] = '\0';
    cfg_put(c, key, eq + 1, "--set");
    return 0;
}

static void cfg_note_asked(struct cfg *c, const char *key) {
    for (int i = 0; i < c->n_asked; i++)
        if (strcmp(c->asked[i], key) == 0) return;
    if (c->n_asked == c->cap_asked) {
        c->cap_asked = c->cap_asked ? 2 * c->cap_asked : 64;
        c->asked = xrealloc(c->asked, (size_t)c->cap_asked * sizeof(char *));
    }
    c->asked[c->n_asked++] = strdup(key);
}

static struct cfg_entry *cfg_lookup(struct cfg *c, const char *key) {
    cfg_note_asked(c, key);
    struct cfg_entry *e = cfg_find(c, key);
    if (e) e->used = 1;
    return e;
}

static void cfg_bad(struct cfg *c, struct cfg_entry *e, const char *want) {
    if (c->error[0]) return;
    char shown[96];  // a broken config's bytes are shown printable and short
    snprintf(shown, sizeof(shown), "%s", e->value);
    for (char *p = shown; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    snprintf(c->error, sizeof(c->error), "%s: %s = '%s' is not %s", e->origin, e->key, shown, want);
}

int cfg_has(struct cfg *c, const char *key) { return cfg_find(c, key) != NULL; }

const char *cfg_str(struct cfg *c, const char *key, const char *def) {
    struct cfg_entry *e = cfg_lookup(c, key);
    return e ? e->value : def;
}

long cfg_int(struct cfg *c, const char *key, long def) {
    struct cfg_entry *e = cfg_lookup(c, key);
    if (!e) return def;
    char *end;
    errno = 0;
    double d = strtod(e->value, &end);  // accepts 1e6 and 1_000 is rejected
    while (*end && isspace((unsigned char)*end)) end++;
    if (end == e->value || *end || errno || d != floor(d) || fabs(d) > 9e18) {
        cfg_bad(c, e, "an integer");
        return def;
    }
    return (long)d;
}

long cfg_int_in(struct cfg *c, const char *key, long def, long lo, long hi) {
    int had = c->error[0] != 0;
    long v = cfg_int(c, key, def);
    if (!had && c->error[0]) return def;
    struct cfg_entry *e = cfg_find(c, key);
    if (e && (v < lo || v > hi) && !c->error[0]) {
        char shown[64];
        snprintf(shown, sizeof(shown), "%s", e->value);
        snprintf(c->error, sizeof(c->error), "%s: %s = %s is out of range (%ld to %ld)", e->origin, e->key, shown, lo, hi);
        return def;
    }
    return v;
}

double cfg_float_in(struct cfg *c, const char *key, double def, double lo, double hi) {
    double v = cfg_float(c, key, def);
    struct cfg_entry *e = cfg_find(c, key);
    if (e && !(v >= lo && v <= hi) && !c->error[0]) {
        snprintf(c->error, sizeof(c->error), "%s: %s = %.40s is out of range (%g to %g)", e->origin, e->key, e->value, lo, hi);
        return def;
    }
    return v;
}

double cfg_float(struct cfg *c, const char *key, double def) {
    struct cfg_entry *e = cfg_lookup(c, key);
    if (!e) return def;
    char *end;
    errno = 0;
    double d = strtod(e->value, &end);
    while (*end && isspace((unsigned char)*end)) end++;
    if (end == e->value || *end || errno || !isfinite(d)) {
        cfg_bad(c, e, "a number");
        return def;
    }
    return d;
}

int cfg_bool(struct cfg *c, const char *key, int def) {
    struct cfg_entry *e = cfg_lookup(c, key);
    if (!e) return def;
    const char *v = e->value;
    if (!strcasecmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on")) return 1;
    if (!strcasecmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcasecmp(v, "off")) return 0;
    cfg_bad(c, e, "a boolean (true/false)");
    return def;
}

void cfg_mark_section_used(struct cfg *c, const char *section) {
    size_t n = strlen(section);
    for (int i = 0; i < c->n; i++)
        if (strncmp(c->entries[i].key, section, n) == 0 && c->entries[i].key[n] == '.') c->entries[i].used = 1;
}

static int edit_distance(const char *a, const char *b) {
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (la > 63 || lb > 63) return 99;
    int d[64][64];
    for (int i = 0; i <= la; i++) d[i][0] = i;
    for (int j = 0; j <= lb; j++) d[0][j] = j;
    for (int i = 1; i <= la; i++)
        for (int j = 1; j <= lb; j++) {
            int best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            d[i][j] = best;
        }
    return d[la][lb];
}

int cfg_finish(struct cfg *c) {
    if (c->error[0]) return err_set("%s", c->error);
    for (int i = 0; i < c->n; i++) {
        struct cfg_entry *e = &c->entries[i];
        if (e->used) continue;
        const char *best = NULL;
        int best_d = 4;
        for (int j = 0; j < c->n_asked; j++) {
            int d = edit_distance(e->key, c->asked[j]);
            if (d < best_d) { best_d = d; best = c->asked[j]; }
        }
        char shown[128];
        printable(shown, sizeof(shown), e->key);
        if (best) return err_set("%s: unknown config key '%s' (did you mean '%s'?)", e->origin, shown, best);
        return err_set("%s: unknown config key '%s'", e->origin, shown);
    }
    return 0;
}

char *cfg_to_string(const struct cfg *c) {
    size_t cap = 256, len = 0;
    char *out = xmalloc(cap);
    out[0] = '\0';
    char *done = xcalloc((size_t)c->n + 1, 1);
    for (int i = 0; i < c->n; i++) {
        if (done[i]) continue;
        const char *dot = strchr(c->entries[i].key, '.');
        size_t sl = (size_t)(dot - c->entries[i].key);
        for (int j = i; j < c->n; j++) {
            const char *k = c->entries[j].key;
            if (done[j] || strncmp(k, c->entries[i].key, sl) != 0 || k[sl] != '.') continue;
            size_t need = len + strlen(k) + strlen(c->entries[j].value) + sl + 16;
            if (need > cap) { cap = 2 * need; out = xrealloc(out, cap); }
            if (j == i) len += (size_t)sprintf(out + len, "[%.*s]\n", (int)sl, k);
            len += (size_t)sprintf(out + len, "%s = %s\n", k + sl + 1, c->entries[j].value);
            done[j] = 1;
        }
    }
    free(done);
    return out;
}
