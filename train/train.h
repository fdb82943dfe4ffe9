// `llamac train RUN.ini`: the training loop, from config to the last checkpoint.
#pragma once

// Runs the training described by the INI file at `ini` with `--set` overrides sets[0..n_sets).
// Collective over every rank of the mpirun job. Returns 0 when the run finished or stopped cleanly
// (scheduler signal or wall-time limit, after a checkpoint), -1 with err_set on bad input or a
// non-finite loss.
int train_main(const char *ini, char **sets, int n_sets, int *argc, char ***argv);
