// llamac train RUN.ini [--set section.key=value ...]
// Starts (or resumes, when run_dir holds a checkpoint) the training a run config describes. Launch
// several ranks with mpirun: mpirun -np 4 llamac train RUN.ini (with [parallel] tp = 2: dp 2 x tp 2).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/error.h"
#include "train/train.h"

int cmd_train(int argc, char **argv) {
    const char *ini = NULL, *v;
    char **sets = calloc((size_t)argc + 1, sizeof(char *));
    int n_sets = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_opt(argc, argv, &i, "--set", &v)) sets[n_sets++] = (char *)v;
        else if (!strcmp(argv[i], "--help")) {
            printf("usage: llamac train RUN.ini [--set section.key=value ...]\n"
                   "  Trains the model RUN.ini describes (see configs/runs/ and README.md). When run_dir already\n"
                   "  holds a checkpoint, training resumes from it. On SIGUSR1, SIGTERM or run.wall_time every\n"
                   "  rank stops at the same step, writes a checkpoint and exits 0.\n");
            free(sets);
            return 0;
        } else if (argv[i][0] == '-' || ini) {
            free(sets);
            return err_set("unexpected argument '%s' (see llamac train --help)", argv[i]);
        } else ini = argv[i];
    }
    if (!ini) {
        free(sets);
        return err_set("a run config is required: llamac train RUN.ini (examples in configs/runs/)");
    }
    int rc = train_main(ini, sets, n_sets, &argc, &argv);
    free(sets);
    return rc;
}
