// See blas_core.h.
#include "core/blas_core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

// OpenBLAS only (a weak reference: another BLAS simply has no core to report)
extern char *openblas_get_corename(void) __attribute__((weak));

static const char *chosen(void) {
    const char *fake = getenv("LLAMAC_BLAS_TEST_CORENAME");  // tests: pretend OpenBLAS chose this core
    if (fake && *fake && !getenv("LLAMAC_BLAS_REEXEC") && !getenv("OPENBLAS_CORETYPE")) return fake;
    return openblas_get_corename ? openblas_get_corename() : NULL;
}

// The kernels OpenBLAS falls back to when it does not recognise a CPU (pre-AVX cores).
static int is_generic(const char *core) {
    static const char *generic[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "Katmai",
                                    "Coppermine", "Northwood", "Banias", "Unknown"};
    for (size_t i = 0; i < sizeof(generic) / sizeof(generic[0]); i++)
        if (!strcasecmp(core, generic[i])) return 1;
    return 0;
}

void blas_core_select(char **argv) {
    const char *core = chosen();
    if (!core || getenv("OPENBLAS_CORETYPE") || !is_generic(core)) return;
    __builtin_cpu_init();
    const char *want = NULL;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        want = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        want = "Haswell";
    if (!want) return;  // a CPU without AVX2: the generic kernels are what it can run
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv("LLAMAC_BLAS_REEXEC", core, 1);
    execv("/proc/self/exe", argv);
    // exec failed (no /proc): carry on with the generic kernels; the run header says so
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv("LLAMAC_BLAS_REEXEC");
}

void blas_core_describe(char *out, size_t n) {
    const char *core = chosen(), *was = getenv("LLAMAC_BLAS_REEXEC");
    if (!core) snprintf(out, n, "BLAS is not OpenBLAS");
    else if (was) snprintf(out, n, "OpenBLAS core %s (selected by llamac: OpenBLAS chose %s on this CPU)", core, was);
    else if (is_generic(core))
        snprintf(out, n, "OpenBLAS core %s: generic kernels, slow (set OPENBLAS_CORETYPE if this CPU has AVX2)", core);
    else snprintf(out, n, "OpenBLAS core %s", core);
}
