// The demo corpus from Debian's fortune packages (see democorpus.h).
#include "data/democorpus.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"

#define FORTUNE_DIR "/usr/share/games/fortunes/"

static const struct {
    const char *lang, *name, *packages[2];
    int top_level_only;  // English: only the files directly in FORTUNE_DIR
} langs_table[DEMO_MAX_LANGS] = {
    {"en", "English", {"fortunes", "fortunes-min"}, 1},
    {"de", "German", {"fortunes-de", NULL}, 0},
    {"ru", "Russian", {"fortunes-ru", NULL}, 0},
    {"bg", "Bulgarian", {"fortunes-bg", NULL}, 0},
    {"es", "Spanish", {"fortunes-es", NULL}, 0},
    {"it", "Italian", {"fortunes-it", NULL}, 0},
    {"pl", "Polish", {"fortunes-pl", NULL}, 0},
    {"cs", "Czech", {"fortunes-cs", NULL}, 0},
    {"pt", "Portuguese", {"fortunes-br", NULL}, 0},
};

static FILE *open_list(const char *package) {
    char *p = fs_printf("/var/lib/dpkg/info/%s.list", package);
    FILE *f = fopen(p, "r");
    free(p);
    if (!f) {
        p = fs_printf("/var/lib/dpkg/info/%s:all.list", package);
        f = fopen(p, "r");
        free(p);
    }
    return f;
}

static int installed(const char *package) {
    FILE *f = open_list(package);
    if (f) fclose(f);
    return f != NULL;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// The text files of a package, sorted.
static int package_files(const char *package, int top_level_only, char ***out, int *n) {
    FILE *f = open_list(package);
    if (!f) return 0;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, FORTUNE_DIR, strlen(FORTUNE_DIR)) != 0) continue;
        const char *rel = line + strlen(FORTUNE_DIR);
        if (!*rel || ends_with(rel, ".dat") || ends_with(rel, ".u8") || strstr(rel, "off/") == rel ||
            strstr(rel, "/off/") || strstr(rel, "-sk") || strncmp(rel, "sk/", 3) == 0)
            continue;
        if (top_level_only && strchr(rel, '/')) continue;
        struct stat st;
        if (lstat(line, &st) != 0 || !S_ISREG(st.st_mode)) continue;  // links duplicate other files
        int dup = 0;
        for (int i = 0; i < *n; i++) dup |= strcmp((*out)[i], line) == 0;
        if (dup) continue;
        *out = xrealloc(*out, sizeof(char *) * (*n + 1));
        (*out)[(*n)++] = strdup(line);
    }
    free(line);
    fclose(f);
    return 0;
}

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strchr(" \t\r\n\v\f", s[i])) return 0;
    return 1;
}

// Appends the documents of a fortune file to out, each followed by a "%" line ("%\r" counts as one too);
// blank documents are dropped, so the counts here are those prep will find.
static int append_file(FILE *out, const char *path, uint64_t *docs, uint64_t *bytes) {
    FILE *in = fopen(path, "rb");
    if (!in) return err_set("%s: cannot open: %s", path, strerror(errno));
    char *line = NULL, *doc = NULL;
    size_t cap = 0, doc_len = 0, doc_cap = 0;
    ssize_t n;
    for (;;) {
        n = getline(&line, &cap, in);
        size_t k = n > 0 ? (size_t)n : 0;
        while (k > 0 && (line[k - 1] == '\n' || line[k - 1] == '\r')) k--;
        if (n <= 0 || (k == 1 && line[0] == '%')) {
            if (doc_len > 0 && !is_blank(doc, doc_len)) {
                fwrite(doc, 1, doc_len, out);
                fputs("%\n", out);
                (*docs)++;
                *bytes += doc_len;
            }
            doc_len = 0;
            if (n <= 0) break;
            continue;
        }
        if (doc_len + (size_t)n + 2 > doc_cap) {
            doc_cap = 2 * (doc_len + (size_t)n + 2);
            doc = xrealloc(doc, doc_cap);
        }
        memcpy(doc + doc_len, line, (size_t)n);
        doc_len += (size_t)n;
        if (line[n - 1] != '\n') doc[doc_len++] = '\n';
    }
    free(line);
    free(doc);
    int bad = ferror(in);
    fclose(in);
    if (bad) return err_set("%s: read error", path);
    return 0;
}

int democorpus_build(const char *dir, int allow_install, struct demo_lang *langs, int *n) {
    *n = 0;
    char missing[512] = "";
    for (int l = 0; l < DEMO_MAX_LANGS; l++)
        for (int k = 0; k < 2 && langs_table[l].packages[k]; k++)
            if (!installed(langs_table[l].packages[k])) {
                strcat(missing, " ");
                strcat(missing, langs_table[l].packages[k]);
            }
    if (missing[0] && allow_install && geteuid() == 0) {
        log_info("installing%s", missing);
        char cmd[700];
        snprintf(cmd, sizeof(cmd), "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends%s >&2", missing);
        if (system(cmd) != 0) log_warn("apt-get install failed; building the corpus from the packages present");
    } else if (missing[0]) {
        log_warn("missing fortune packages:%s (%s); their languages are left out", missing,
                 geteuid() == 0 ? "installation not allowed" : "run as root to install them");
    }
    if (fs_mkdir_p(dir) != 0) return -1;
    for (int l = 0; l < DEMO_MAX_LANGS; l++) {
        char **files = NULL;
        int nf = 0;
        for (int k = 0; k < 2 && langs_table[l].packages[k]; k++)
            package_files(langs_table[l].packages[k], langs_table[l].top_level_only, &files, &nf);
        if (nf == 0) continue;
        qsort(files, nf, sizeof(char *), cmp_str);
        struct demo_lang *d = &langs[*n];
        memset(d, 0, sizeof(*d));
        snprintf(d->lang, sizeof(d->lang), "%s", langs_table[l].lang);
        snprintf(d->name, sizeof(d->name), "%s", langs_table[l].name);
        snprintf(d->package, sizeof(d->package), "%s", langs_table[l].packages[0]);
        d->files = nf;
        char *path = fs_printf("%s/%s.txt", dir, d->lang), *tmp = fs_printf("%s.tmp", path);
        FILE *out = fopen(tmp, "wb");
        int rc = out ? 0 : err_set("%s: cannot create: %s", tmp, strerror(errno));
        for (int i = 0; i < nf && rc == 0; i++) rc = append_file(out, files[i], &d->docs, &d->bytes);
        if (out && fclose(out) != 0 && rc == 0) rc = err_set("%s: write error", tmp);
        if (rc != 0) remove(tmp);
        else rc = fs_publish(tmp, path);
        free(path);
        free(tmp);
        for (int i = 0; i < nf; i++) free(files[i]);
        free(files);
        if (rc != 0) return -1;
        (*n)++;
    }
    if (*n == 0) return err_set("no fortune packages installed (apt-get install fortunes fortunes-de fortunes-ru ...)");
    return 0;
}
