// llamac prep: tokenize corpora into shards (data/prep.h), assemble the demo corpus, verify a prepared
// directory. Options come from the command line or from an INI file (--config), the command line winning.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/config.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "data/democorpus.h"
#include "data/loader.h"
#include "data/prep.h"

static const char *usage_text =
    "usage: llamac prep --out DIR (--tokenizer MODEL | --train-tokenizer [--vocab-size N])\n"
    "                   --input SOURCE[=LANG]:PATH[,PATH...] [--input ...] [options]\n"
    "       llamac prep --config prep.ini [--set section.key=value ...] [options]\n"
    "       llamac prep --demo-corpus DIR [--no-install]\n"
    "       llamac prep --verify DIR\n"
    "\n"
    "Tokenizes text corpora into HDF5 shards for training: DIR/tokenizer.model, DIR/shards/SOURCE_NNNNN.h5,\n"
    "DIR/val/SOURCE_NNNNN.h5 (held-out documents) and DIR/manifest.json. Output replaces an earlier one\n"
    "only when everything succeeded; the same inputs and settings give byte-identical files.\n"
    "\n"
    "inputs:\n"
    "  --input SOURCE[=LANG]:PATHS  a source (a name for the mixture, and its language, default SOURCE)\n"
    "                         read from comma-separated files, plain or .gz; repeat for more sources\n"
    "  --format F             auto|text|fortune|blank|jsonl (default auto: *.jsonl[.gz] is JSONL, a file\n"
    "                         with lines that are just \"%\" is fortune, anything else one document per file)\n"
    "  --text-field NAME      the JSONL field holding the text (default text)\n"
    "fine-tuning data (every input JSONL: messages, instruction/input/output or prompt/response records):\n"
    "  --sft TEMPLATE         render records with a chat template (llama2, llama3, plain) and store a loss\n"
    "                         mask: only assistant turns and their end-of-turn token are trained; the\n"
    "                         trainer packs whole examples per window (data/README.md)\n"
    "  --train-on-prompt      with --sft: train on prompt and template tokens too\n"
    "tokenizer:\n"
    "  --tokenizer MODEL      an existing tokenizer: SentencePiece (LLaMA 1/2's tokenizer.model), or Llama 3's\n"
    "                         byte-level BPE (its tiktoken tokenizer.model, or Hugging Face's tokenizer.json)\n"
    "  --train-tokenizer      train a BPE tokenizer as LLaMA's (byte fallback, digits split) on the inputs\n"
    "  --vocab-size N         its pieces (default 32000)\n"
    "  --sample-mb M          text sampled for training, spread evenly over the sources (default 64)\n"
    "  --character-coverage C (default 0.99995)\n"
    "output:\n"
    "  --out DIR              the output directory\n"
    "  --shard-tokens N       tokens per shard (default 33554432)\n"
    "  --val-fraction F       share of documents held out for validation (default 0.01)\n"
    "  --seed S               chooses the held-out documents and the tokenizer sample (default 1)\n"
    "  --threads N            tokenizer threads (default: all cores)\n"
    "  --quiet                no progress line\n"
    "other:\n"
    "  --demo-corpus DIR      write DIR/{en,de,ru,bg,es,it,pl,cs,pt}.txt from Debian's fortune packages\n"
    "                         (installed with apt-get when missing and running as root; --no-install: not)\n"
    "  --verify DIR           read every shard of a prepared directory and check it against its manifest\n"
    "\n"
    "config file (--config): [prep] out, tokenizer, train_tokenizer, vocab_size, sample_mb,\n"
    "character_coverage, shard_tokens, val_fraction, seed, threads, format, text_field, sft,\n"
    "train_on_prompt; one section per\n"
    "source: [source.NAME] paths (comma-separated), language, format.\n";

struct sources {
    struct prep_source s[PREP_MAX_SOURCES];
    int n;
};

static struct prep_source *source_get(struct sources *ss, const char *name) {
    for (int i = 0; i < ss->n; i++)
        if (!strcmp(ss->s[i].name, name)) return &ss->s[i];
    if (ss->n == PREP_MAX_SOURCES) {
        err_set("more than %d sources", PREP_MAX_SOURCES);
        return NULL;
    }
    if (!prep_name_valid(name)) {
        err_set("source name '%s': use 1..%d of [A-Za-z0-9_.-]", name, PREP_NAME_MAX - 1);
        return NULL;
    }
    struct prep_source *s = &ss->s[ss->n++];
    memset(s, 0, sizeof(*s));
    snprintf(s->name, sizeof(s->name), "%s", name);
    snprintf(s->language, sizeof(s->language), "%s", name);
    s->format = (enum prep_format)-1;  // unset: the global --format
    return s;
}

static int add_paths(struct prep_source *s, const char *list) {
    char *copy = strdup(list), *save = NULL;
    for (char *p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        while (*p == ' ') p++;
        size_t n = strlen(p);
        while (n > 0 && p[n - 1] == ' ') p[--n] = '\0';
        if (!*p) continue;
        s->paths = realloc(s->paths, sizeof(char *) * (s->n_paths + 1));
        s->paths[s->n_paths++] = strdup(p);
    }
    free(copy);
    if (s->n_paths == 0) return err_set("source '%s': no input files", s->name);
    return 0;
}

// "SOURCE[=LANG]:PATH[,PATH...]"
static int parse_input(struct sources *ss, const char *arg) {
    const char *colon = strchr(arg, ':');
    if (!colon || colon == arg) return err_set("--input %s: expected SOURCE[=LANG]:PATH[,PATH...]", arg);
    char head[128];
    snprintf(head, sizeof(head), "%.*s", (int)(colon - arg), arg);
    char *eq = strchr(head, '=');
    if (eq) *eq = '\0';
    struct prep_source *s = source_get(ss, head);
    if (!s) return -1;
    if (eq) {
        if (!prep_name_valid(eq + 1)) return err_set("--input %s: language '%s': use 1..%d of [A-Za-z0-9_.-]", arg, eq + 1, PREP_NAME_MAX - 1);
        snprintf(s->language, sizeof(s->language), "%s", eq + 1);
    }
    return add_paths(s, colon + 1);
}

// [source.NAME] sections of the config.
static int config_sources(struct cfg *cfg, struct sources *ss) {
    int n_cli = ss->n;  // sources given with --input win over the config's of the same name
    for (int i = 0; i < cfg->n; i++) {
        const char *k = cfg->entries[i].key;
        if (strncmp(k, "source.", 7) != 0) continue;
        const char *dot = strrchr(k, '.');
        if (dot <= k + 7) continue;
        char name[128], key[160];
        snprintf(name, sizeof(name), "%.*s", (int)(dot - k - 7), k + 7);
        int known = 0;
        for (int j = 0; j < ss->n; j++) known |= !strcmp(ss->s[j].name, name) ? (j < n_cli ? 1 : 2) : 0;
        if (known == 1) {  // overridden by --input: its keys are not typos
            snprintf(key, sizeof(key), "source.%s", name);
            cfg_mark_section_used(cfg, key);
        }
        if (known) continue;
        struct prep_source *s = source_get(ss, name);
        if (!s) return err_set("%s: %s", cfg->entries[i].origin, err_msg());
        snprintf(key, sizeof(key), "source.%s.paths", name);
        const char *paths = cfg_str(cfg, key, NULL);
        if (!paths) return err_set("%s: [source.%s] has no paths", cfg->entries[i].origin, name);
        if (add_paths(s, paths) != 0) return -1;
        snprintf(key, sizeof(key), "source.%s.language", name);
        const char *lang = cfg_str(cfg, key, name);
        if (!prep_name_valid(lang)) return err_set("[source.%s] language '%s': use 1..%d of [A-Za-z0-9_.-]", name, lang, PREP_NAME_MAX - 1);
        snprintf(s->language, sizeof(s->language), "%s", lang);
        snprintf(key, sizeof(key), "source.%s.format", name);
        const char *fmt = cfg_str(cfg, key, NULL);
        if (fmt && prep_format_parse(fmt, &s->format) != 0) return err_prefix("[source.%s] format", name);
    }
    return 0;
}

static int demo_corpus(const char *dir, int install) {
    struct demo_lang langs[DEMO_MAX_LANGS];
    int n;
    if (democorpus_build(dir, install, langs, &n) != 0) return -1;
    uint64_t docs = 0, bytes = 0;
    for (int i = 0; i < n; i++) {
        log_info("%s/%s.txt  %-10s %3d files  %7llu documents  %6.2f MB  (%s)", dir, langs[i].lang, langs[i].name,
                 langs[i].files, (unsigned long long)langs[i].docs, langs[i].bytes / 1e6, langs[i].package);
        docs += langs[i].docs;
        bytes += langs[i].bytes;
    }
    log_info("demo corpus: %d languages, %llu documents, %.1f MB. Prepare it with:", n, (unsigned long long)docs, bytes / 1e6);
    char *cmd = fs_printf("%s", "");
    for (int i = 0; i < n; i++) {
        char *more = fs_printf("%s --input %s:%s/%s.txt", cmd, langs[i].lang, dir, langs[i].lang);
        free(cmd);
        cmd = more;
    }
    log_info("  llamac prep --out demo/data --train-tokenizer --vocab-size 4096%s", cmd);
    free(cmd);
    return 0;
}

static void free_sources(struct sources *ss) {
    for (int i = 0; i < ss->n; i++) {
        for (int j = 0; j < ss->s[i].n_paths; j++) free(ss->s[i].paths[j]);
        free(ss->s[i].paths);
    }
}

int cmd_prep(int argc, char **argv) {
    const char *v, *config = NULL, *demo = NULL, *verify = NULL;
    const char *out = NULL, *tokenizer = NULL, *format = NULL, *text_field = NULL, *sft = NULL;
    int train_on_prompt = -1;
    long vocab = -1, threads = -1;
    double sample_mb = -1, coverage = -1, val_fraction = -1, shard_tokens = -1, seed = -1;
    int train = -1, quiet = 0, install = 1, rc = 0;
    struct sources ss = {.n = 0};
    struct cfg cfg;
    cfg_init(&cfg);
    for (int i = 1; i < argc && rc == 0; i++) {
        if (cli_opt(argc, argv, &i, "--out", &v)) out = v;
        else if (cli_opt(argc, argv, &i, "--input", &v)) rc = parse_input(&ss, v);
        else if (cli_opt(argc, argv, &i, "--format", &v)) format = v;
        else if (cli_opt(argc, argv, &i, "--text-field", &v)) text_field = v;
        else if (cli_opt(argc, argv, &i, "--sft", &v)) sft = v;
        else if (!strcmp(argv[i], "--train-on-prompt")) train_on_prompt = 1;
        else if (cli_opt(argc, argv, &i, "--tokenizer", &v)) tokenizer = v;
        else if (!strcmp(argv[i], "--train-tokenizer")) train = 1;
        else if (cli_opt(argc, argv, &i, "--vocab-size", &v)) vocab = atol(v);
        else if (cli_opt(argc, argv, &i, "--sample-mb", &v)) sample_mb = atof(v);
        else if (cli_opt(argc, argv, &i, "--character-coverage", &v)) coverage = atof(v);
        else if (cli_opt(argc, argv, &i, "--shard-tokens", &v)) shard_tokens = atof(v);
        else if (cli_opt(argc, argv, &i, "--val-fraction", &v)) val_fraction = atof(v);
        else if (cli_opt(argc, argv, &i, "--seed", &v)) seed = atof(v);
        else if (cli_opt(argc, argv, &i, "--threads", &v)) threads = atol(v);
        else if (cli_opt(argc, argv, &i, "--config", &v)) config = v;
        else if (cli_opt(argc, argv, &i, "--set", &v)) rc = cfg_set(&cfg, v);
        else if (cli_opt(argc, argv, &i, "--demo-corpus", &v)) demo = v;
        else if (cli_opt(argc, argv, &i, "--verify", &v)) verify = v;
        else if (!strcmp(argv[i], "--no-install")) install = 0;
        else if (!strcmp(argv[i], "--quiet")) quiet = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(usage_text, stdout);
            cfg_free(&cfg);
            free_sources(&ss);
            return 0;
        } else rc = err_set("unknown option '%s' (see llamac prep --help)", argv[i]);
    }
    if (rc == 0 && demo) rc = demo_corpus(demo, install);
    else if (rc == 0 && verify) {
        rc = data_verify(verify, !quiet);
        if (rc == 0) log_info("%s: every shard agrees with manifest.json and reads back intact", verify);
    } else if (rc == 0) {
        if (config && cfg_load_file(&cfg, config) != 0) rc = -1;
        // the command line wins over the config file
        const char *co = cfg_str(&cfg, "prep.out", NULL);
        if (!out) out = co;
        const char *ct = cfg_str(&cfg, "prep.tokenizer", NULL);
        if (!tokenizer && train < 0) tokenizer = ct;
        int ctrain = cfg_bool(&cfg, "prep.train_tokenizer", 0);
        if (train < 0) train = tokenizer ? 0 : ctrain;
        long cv = cfg_int(&cfg, "prep.vocab_size", 32000);
        if (vocab < 0) vocab = cv;
        double d = cfg_float(&cfg, "prep.sample_mb", 64);
        if (sample_mb < 0) sample_mb = d;
        d = cfg_float(&cfg, "prep.character_coverage", 0.99995);
        if (coverage < 0) coverage = d;
        d = cfg_float(&cfg, "prep.shard_tokens", 33554432);
        if (shard_tokens < 0) shard_tokens = d;
        d = cfg_float(&cfg, "prep.val_fraction", 0.01);
        if (val_fraction < 0) val_fraction = d;
        d = cfg_float(&cfg, "prep.seed", 1);
        if (seed < 0) seed = d;
        long ci = cfg_int(&cfg, "prep.threads", 0);
        if (threads < 0) threads = ci;
        const char *cf = cfg_str(&cfg, "prep.format", "auto");
        if (!format) format = cf;
        const char *ctf = cfg_str(&cfg, "prep.text_field", "text");
        if (!text_field) text_field = ctf;
        const char *csft = cfg_str(&cfg, "prep.sft", NULL);
        if (!sft) sft = csft;
        int ctp = cfg_bool(&cfg, "prep.train_on_prompt", 0);
        if (train_on_prompt < 0) train_on_prompt = ctp;
        enum sft_template tmpl = SFT_NONE;
        if (rc == 0 && sft) rc = sft_template_parse(sft, &tmpl);
        if (rc == 0 && train_on_prompt && !sft) rc = err_set("--train-on-prompt needs --sft TEMPLATE");
        if (rc == 0 && sft && train == 1)
            rc = err_set("--sft: fine-tuning data uses the model's tokenizer; give --tokenizer (e.g. RUN_DIR/tokenizer.model)");
        if (rc == 0) rc = config_sources(&cfg, &ss);
        if (rc == 0) rc = cfg_finish(&cfg);
        enum prep_format fmt = PREP_AUTO;
        if (rc == 0) rc = prep_format_parse(format, &fmt);
        if (rc == 0 && tokenizer && train == 1) rc = err_set("--tokenizer and --train-tokenizer exclude each other");
        if (rc == 0 && !tokenizer && train != 1) rc = err_set("give --tokenizer MODEL or --train-tokenizer (see llamac prep --help)");
        if (rc == 0 && (shard_tokens < 1 || shard_tokens > 1e15)) rc = err_set("--shard-tokens must be positive");
        if (rc == 0 && (seed < 0 || seed != (double)(uint64_t)seed)) rc = err_set("--seed must be a non-negative integer");
        if (rc == 0 && threads < 0) rc = err_set("--threads must be >= 0");
        if (rc == 0) {
            for (int i = 0; i < ss.n; i++)
                if ((int)ss.s[i].format == -1) ss.s[i].format = fmt;
            struct prep_config c = {
                .out_dir = out, .tokenizer = tokenizer, .vocab_size = (int)vocab, .sample_mb = sample_mb,
                .character_coverage = coverage, .sources = ss.s, .n_sources = ss.n,
                .shard_tokens = (uint64_t)shard_tokens, .val_fraction = val_fraction, .seed = (uint64_t)seed,
                .threads = (int)threads, .text_field = text_field, .progress = !quiet,
                .sft = tmpl, .train_on_prompt = train_on_prompt,
            };
            struct prep_stats st;
            rc = prep_run(&c, &st);
            if (rc == 0 && !quiet)
                log_info("prep: %llu documents, %.1f MB of text -> %llu tokens in %d shards (%.1f MB/s); see %s/manifest.json",
                         (unsigned long long)st.docs, st.bytes / 1e6, (unsigned long long)st.tokens, st.shards,
                         st.seconds > 0 ? st.bytes / 1e6 / st.seconds : 0, out);
            if (rc == 0 && !quiet && tmpl)
                log_info("prep: %s template: %llu of %llu tokens (%.1f%%) are training targets", sft_template_name(tmpl),
                         (unsigned long long)st.targets, (unsigned long long)st.tokens,
                         st.tokens ? 100.0 * st.targets / st.tokens : 0);
        }
    }
    cfg_free(&cfg);
    free_sources(&ss);
    return rc;
}
