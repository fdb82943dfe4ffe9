// Subcommands of the llamac binary. Each returns 0 on success, -1 with err_set on bad input, or a
// positive exit status of its own (2 for usage errors).
#pragma once

int cmd_inspect(int argc, char **argv);
int cmd_forward(int argc, char **argv);
int cmd_prep(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_export(int argc, char **argv);

// Small helpers for the subcommands' option parsing.
int cli_opt(int argc, char **argv, int *i, const char *name, const char **value);
// 1 unless this process is a rank other than 0 of an mpirun job (errors print once, from rank 0).
int cli_is_rank0(void);
