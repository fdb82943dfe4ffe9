// Run configuration: INI files (read by core/config.c, no line-length limit) plus `--set section.key=value` overrides.
//
// Keys are "section.key". Readers ask for typed values with a default; a value that does not parse
// records an error that names the file, the line and the key. Every key a reader asks for is marked
// used, and cfg_finish() rejects whatever no reader asked for (a misspelt key), suggesting the nearest
// known one. A key given twice keeps the last value (so --set overrides the file).
#pragma once
#include <stdint.h>

struct cfg_entry {
    char *key;      // "section.key"
    char *value;
    char *origin;   // "run.ini:12" or "--set"
    int used;
};

struct cfg {
    struct cfg_entry *entries;
    int n, cap;
    char **asked;   // every key a reader asked for (for "did you mean")
    int n_asked, cap_asked;
    char error[512];  // first value error, reported by cfg_finish()
};

void cfg_init(struct cfg *c);
void cfg_free(struct cfg *c);
// Reads an INI file; keys outside a section are rejected. Returns -1 with err_set on failure.
int cfg_load_file(struct cfg *c, const char *path);
// Parses INI text (for configs stored inside checkpoints); origin names it in messages.
int cfg_load_string(struct cfg *c, const char *text, const char *origin);
// "section.key=value"; returns -1 when malformed.
int cfg_set(struct cfg *c, const char *assignment);
void cfg_put(struct cfg *c, const char *key, const char *value, const char *origin);

int cfg_has(struct cfg *c, const char *key);
const char *cfg_str(struct cfg *c, const char *key, const char *def);
long cfg_int(struct cfg *c, const char *key, long def);
double cfg_float(struct cfg *c, const char *key, double def);
// As cfg_int/cfg_float, and a value outside [lo, hi] is an error naming the key, the value and the range
// (so no size wraps when a caller narrows it to int).
long cfg_int_in(struct cfg *c, const char *key, long def, long lo, long hi);
double cfg_float_in(struct cfg *c, const char *key, double def, double lo, double hi);
int cfg_bool(struct cfg *c, const char *key, int def);
// Marks every key of a section used (for sections handed whole to another reader).
void cfg_mark_section_used(struct cfg *c, const char *section);
// Returns -1 (err_set) on the first bad value or on a key no reader asked for.
int cfg_finish(struct cfg *c);
// Writes every entry back as INI text (sections in first-seen order); caller frees.
char *cfg_to_string(const struct cfg *c);
