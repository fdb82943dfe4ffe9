// bench_data: the data pipeline's two throughputs, each against its yardstick.
//
//   1. prep: MB/s of text tokenized into shards by `llamac prep` (all cores), against SentencePiece's own
//      spm_encode on the same text, run as one process per core on equal parts of it.
//   2. loader: tokens/s the streaming loader delivers to a consumer that does nothing else, as a multiple
//      of the tokens/s a CPU training step (forward + backward of a model preset) consumes.
//
// usage: bench_data [--work DIR] [--tokenizer MODEL | --vocab N] [--threads N] [--model PRESET] [--batch B] [--seq T]
// The demo corpus (Debian's fortune packages) is the text; WORK (default /tmp/llamac-bench-data) holds
// everything the benchmark writes.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/comm.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/timer.h"
#include "data/democorpus.h"
#include "data/loader.h"
#include "data/prep.h"
#include "data/tokenizer.h"
#include "model/llama.h"
#include "model/ops/backends.h"

static void die(const char *what) {
    fprintf(stderr, "bench_data: %s: %s\n", what, err_msg());
    exit(1);
}

static int cli_arg(int argc, char **argv, int *i, const char *name, const char **v) {
    if (strcmp(argv[*i], name) != 0 || *i + 1 >= argc) return 0;
    *v = argv[++*i];
    return 1;
}

// Runs prep over the demo corpus; returns MB/s of text (tokenization pipeline time).
static double run_prep(const char *out, const char *model, struct demo_lang *langs, int n, const char *demo, int threads,
                       struct prep_stats *st) {
    struct prep_source src[DEMO_MAX_LANGS];
    char paths[DEMO_MAX_LANGS][1200];
    char *pp[DEMO_MAX_LANGS];
    for (int i = 0; i < n; i++) {
        memset(&src[i], 0, sizeof(src[i]));
        snprintf(src[i].name, sizeof(src[i].name), "%s", langs[i].lang);
        snprintf(src[i].language, sizeof(src[i].language), "%s", langs[i].lang);
        snprintf(paths[i], sizeof(paths[i]), "%s/%s.txt", demo, langs[i].lang);
        pp[i] = paths[i];
        src[i].paths = &pp[i];
        src[i].n_paths = 1;
        src[i].format = PREP_FORTUNE;
    }
    struct prep_config c = {.out_dir = out, .tokenizer = model, .sources = src, .n_sources = n, .shard_tokens = 1 << 22,
                            .val_fraction = 0.01, .seed = 1, .threads = threads};
    if (prep_run(&c, st) != 0) die("prep");
    return st->bytes / 1e6 / st->seconds;
}

// spm_encode on the same text: the corpus split into `threads` parts by lines, one process per part.
static double run_spm_encode(const char *work, const char *model, struct demo_lang *langs, int n, const char *demo, int threads,
                             double *mb) {
    char all[1200], cmd[8000];
    snprintf(all, sizeof(all), "%s/all.txt", work);
    snprintf(cmd, sizeof(cmd), "cat");
    for (int i = 0; i < n; i++) snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), " %s/%s.txt", demo, langs[i].lang);
    snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), " | grep -av '^%%$' > %s && cd %s && rm -f part.* && split -n l/%d all.txt part.",
             all, work, threads);
    if (system(cmd) != 0) die("splitting the corpus for spm_encode");
    struct stat st;
    stat(all, &st);
    *mb = st.st_size / 1e6;
    snprintf(cmd, sizeof(cmd), "cd %s && for p in part.*; do spm_encode --model=%s --output_format=id < $p > /dev/null & done; wait",
             work, model);
    double t0 = time_now();
    if (system(cmd) != 0) die("spm_encode");
    return *mb / (time_now() - t0);
}

int main(int argc, char **argv) {
    const char *work = "/tmp/llamac-bench-data", *model = NULL, *preset = "small-15m", *v;
    int vocab = 8000, threads = (int)sysconf(_SC_NPROCESSORS_ONLN), B = 8, T = 256;
    for (int i = 1; i < argc; i++) {
        if (cli_arg(argc, argv, &i, "--work", &v)) work = v;
        else if (cli_arg(argc, argv, &i, "--tokenizer", &v)) model = v;
        else if (cli_arg(argc, argv, &i, "--vocab", &v)) vocab = atoi(v);
        else if (cli_arg(argc, argv, &i, "--threads", &v)) threads = atoi(v);
        else if (cli_arg(argc, argv, &i, "--model", &v)) preset = v;
        else if (cli_arg(argc, argv, &i, "--batch", &v)) B = atoi(v);
        else if (cli_arg(argc, argv, &i, "--seq", &v)) T = atoi(v);
        else {
            fprintf(stderr, "usage: bench_data [--work DIR] [--tokenizer MODEL | --vocab N] [--threads N] [--model PRESET] "
                            "[--batch B] [--seq T]\n");
            return 2;
        }
    }
    mkdir(work, 0755);
    char demo[1200], out[1200], trained[1200];
    snprintf(demo, sizeof(demo), "%s/demo", work);
    struct demo_lang langs[DEMO_MAX_LANGS];
    int n;
    if (democorpus_build(demo, 0, langs, &n) != 0) die("demo corpus");
    if (!model) {  // a tokenizer as the demo uses, trained once (on a 4 MB sample, to keep the bench short)
        snprintf(trained, sizeof(trained), "%s/tok%d/tokenizer.model", work, vocab);
        if (access(trained, F_OK) != 0) {
            char dir[1200];
            snprintf(dir, sizeof(dir), "%s/tok%d", work, vocab);
            struct prep_source src = {.format = PREP_FORTUNE, .n_paths = 1};
            char path[1300], *pp = path;
            snprintf(src.name, sizeof(src.name), "all");
            snprintf(src.language, sizeof(src.language), "mul");
            snprintf(path, sizeof(path), "%s/all-train.txt", work);
            char cmd[4000] = "cat";
            for (int i = 0; i < n; i++) snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), " %s/%s.txt", demo, langs[i].lang);
            snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), " > %s", path);
            if (system(cmd) != 0) die("concatenating the corpus");
            src.paths = &pp;
            struct prep_config c = {.out_dir = dir, .vocab_size = vocab, .sample_mb = 4, .sources = &src, .n_sources = 1,
                                    .shard_tokens = 1 << 22, .seed = 1, .threads = threads};
            printf("training a %d-piece tokenizer on a 4 MB sample of the demo corpus...\n", vocab);
            if (prep_run(&c, NULL) != 0) die("tokenizer training");
        }
        model = trained;
    }
    printf("corpus: demo (%d languages), tokenizer %s, %d cores\n\n", n, model, threads);

    // 1. prep against spm_encode
    snprintf(out, sizeof(out), "%s/prep", work);
    struct prep_stats st1, stn;
    double prep1 = run_prep(out, model, langs, n, demo, 1, &st1);
    double prepn = run_prep(out, model, langs, n, demo, threads, &stn);
    double spm_mb, spm1 = 0, spmn;
    spmn = run_spm_encode(work, model, langs, n, demo, threads, &spm_mb);
    if (threads > 1) spm1 = run_spm_encode(work, model, langs, n, demo, 1, &spm_mb);
    printf("prep:       %.1f MB of text, %llu documents -> %llu tokens, %d shards\n", stn.bytes / 1e6,
           (unsigned long long)stn.docs, (unsigned long long)stn.tokens, stn.shards);
    printf("  llamac prep  1 thread : %6.2f MB/s\n", prep1);
    printf("  llamac prep %2d threads: %6.2f MB/s\n", threads, prepn);
    if (threads > 1) printf("  spm_encode   1 process: %6.2f MB/s\n", spm1);
    printf("  spm_encode  %2d procs  : %6.2f MB/s  (%.1f MB, lines without %% separators)\n", threads, spmn, spm_mb);
    printf("  prep / spm_encode on %d cores: %.2fx\n\n", threads, prepn / spmn);

    // 2. loader against a training step
    struct loader_config lc = {.data_dir = out, .B = B, .T = T, .seed = 1, .dp_size = 1};
    struct loader *l;
    if (loader_open(&l, &lc) != 0) die("loader");
    int *in = malloc(sizeof(int) * B * T), *tgt = malloc(sizeof(int) * B * T);
    int batches = 0;
    double t0 = time_now();
    while (time_now() - t0 < 3.0) {
        if (loader_next(l, in, tgt) != 0) die("loader_next");
        batches++;
    }
    double loader_tps = (double)batches * B * T / (time_now() - t0);
    struct loader_info info;
    loader_get_info(l, &info);

    struct llama_config mc = {0};
    if (llama_config_preset(&mc, preset) != 0) die("model preset");
    mc.vocab_size = info.vocab_size;  // the model eats the loader's tokens
    if (T > mc.max_seq_len) mc.max_seq_len = T;
    struct llama m;
    if (llama_init(&m, &mc, backend_cpu(), comm_self()) != 0) die("model");
    llama_init_random(&m, 1);
    llama_alloc_acts(&m, B, T, 0);
    double train_time = 0;
    int steps = 0;
    while (steps < 2 || (train_time < 5.0 && steps < 20)) {
        if (loader_next(l, in, tgt) != 0) die("loader_next");
        double s0 = time_now();
        long counted;
        llama_zero_grads(&m);
        llama_forward(&m, in, tgt, B, T, &counted);
        llama_backward(&m, 1.0f / (float)counted);
        if (steps > 0) train_time += time_now() - s0;  // the first step warms up
        steps++;
    }
    double train_tps = (double)(steps - 1) * B * T / train_time;
    printf("loader:     batch %d x %d tokens, %d sources, %d shards\n", B, T, info.n_sources, info.n_shards);
    printf("  loader delivers       : %10.0f tokens/s (%d batches in 3 s, nothing else running)\n", loader_tps, batches);
    printf("  training consumes     : %10.0f tokens/s (%s, vocab %d, forward+backward, %d threads)\n", train_tps, preset,
           mc.vocab_size, threads);
    printf("  loader / training     : %10.0fx\n", loader_tps / train_tps);
    llama_free(&m);
    loader_close(l);
    free(in);
    free(tgt);
    return 0;
}
