// OpenBLAS core selection at start-up.
//
// Debian's OpenBLAS (0.3.21) picks its kernels by CPU model; on a CPU newer than it knows (e.g. Intel
// family 6 model 207) it falls back to generic "Prescott" kernels, 5x slower at sgemm, and says nothing.
// blas_core_select() runs first thing in main(): if OpenBLAS chose a generic core on a CPU with AVX2+FMA
// (or AVX-512), it re-executes llamac with OPENBLAS_CORETYPE set to the matching core (Haswell,
// SkylakeX), which OpenBLAS reads when it loads; a user's own OPENBLAS_CORETYPE is left alone.
// blas_core_describe() gives the line the run header prints.
#pragma once
#include <stddef.h>

void blas_core_select(char **argv);
// "OpenBLAS core Haswell" plus, after a re-exec, "(selected by llamac: OpenBLAS chose Prescott on this CPU)".
void blas_core_describe(char *out, size_t n);
