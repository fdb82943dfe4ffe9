// llamac: the command line. Each subcommand is a thin layer of argument parsing over the libraries;
// errors from bad input come back as -1 with a message, printed here as one line with exit status 1.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/blas_core.h"
#include "core/error.h"
#include "core/h5err.h"

static const struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"prep", cmd_prep, "tokenize text corpora into HDF5 shards (and build the demo corpus)"},
    {"train", cmd_train, "train (or resume) the run a config describes; launch ranks with mpirun"},
    {"sample", cmd_sample, "generate text from a checkpoint or released weights (KV cache, chat templates)"},
    {"eval", cmd_eval, "validation loss and perplexity of a checkpoint"},
    {"export", cmd_export, "write a checkpoint as a Hugging Face Llama directory (safetensors)"},
    {"inspect", cmd_inspect, "print a model's parameter count and the memory a training step needs; with --hf DIR\n"
                             "            or --meta DIR, also check every weight of a Hugging Face or Meta checkpoint"},
    {"forward", cmd_forward, "run forward and backward of a model (random, --hf DIR or --meta DIR) on random tokens"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: llamac COMMAND [options]   (llamac COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv) {
    // A file size limit (ulimit -f) must fail a write with EFBIG, reported like a full disk, instead of
    // killing llamac with SIGXFSZ mid-checkpoint; and HDF5 must not print its error stacks (core/h5err.h).
    blas_core_select(argv);  // may re-execute llamac with OPENBLAS_CORETYPE set (core/blas_core.h)
    signal(SIGXFSZ, SIG_IGN);
    h5_silence();
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("llamac %s\n", LLAMAC_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(argv[1], commands[i].name)) {
            int rc = commands[i].run(argc - 1, argv + 1);
            if (rc < 0) {
                if (cli_is_rank0()) fprintf(stderr, "llamac %s: %s\n", argv[1], err_msg());
                return 1;
            }
            return rc;
        }
    fprintf(stderr, "llamac: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
