// Helpers for llamac's MPI tests: plain programs run under mpirun that print what they compared and
// exit non-zero when any rank saw a failure (ctest counts them).
#pragma once
#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>

static int mpitest_failures;

// Records a failure (printed with the world rank) when cond is false; returns cond.
static int mpitest_expect(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int mpitest_expect(int cond, const char *fmt, ...) {
    if (cond) return 1;
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL [rank %d] ", rank);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    mpitest_failures++;
    return 0;
}

// Sum of the failures of all ranks; rank 0 prints the verdict. Returns the exit status.
static int mpitest_finish(const char *name) {
    int total = 0;
    MPI_Allreduce(&mpitest_failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) {
        if (total) printf("%s: %d failure(s)\n", name, total);
        else printf("%s: all checks passed\n", name);
        fflush(stdout);
    }
    return total ? 1 : 0;
}
