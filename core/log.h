// Logging: progress and info lines go to stdout from the rank that owns the console (rank 0 by
// default); warnings go to stderr from every rank, prefixed with the rank when there are several.
#pragma once

void log_set_rank(int rank, int world);
int log_is_main(void);
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// Overwrites the current terminal line (progress meters) when stdout is a terminal, else prints a line.
void log_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_progress_end(void);
// "1h02m", "3m05s", "12s": durations for ETAs.
void log_fmt_duration(char *out, int n, double seconds);
