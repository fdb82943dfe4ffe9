// cuBLASLt, opened when the CUDA backend first calls it (real-CUDA builds only: the CPU emulation has its
// own, cudaemu/cublaslt.cpp). Linked as a library, libcublasLt was loaded by every process of a CUDA
// build at start-up, about 0.1 s of CPU and 200 MB of memory (its relocations and constructors), which
// the CPU-only commands (prep, inspect, eval, a run on the CPU backend) never use: the hardening tests,
// which start the binary thousands of times, spent most of their time there. The functions below are
// the ones llamac calls, with cuBLASLt's own signatures (cublasLt.h); each forwards to the library's.
// The library is found as the dynamic loader finds any (LD_LIBRARY_PATH, the binary's RUNPATH, the
// system's paths), else at the path the build found it; a missing one aborts with the loader's reason.
#include <dlfcn.h>
#include <pthread.h>

#include <cublasLt.h>

#include "core/error.h"

#define LT_FUNCS(X)                                                                                    \
    X(cublasLtCreate)                                                                                  \
    X(cublasLtMatmul)                                                                                  \
    X(cublasLtMatmulAlgoGetHeuristic)                                                                  \
    X(cublasLtMatmulDescCreate)                                                                        \
    X(cublasLtMatmulDescDestroy)                                                                       \
    X(cublasLtMatmulDescSetAttribute)                                                                  \
    X(cublasLtMatmulPreferenceCreate)                                                                  \
    X(cublasLtMatmulPreferenceDestroy)                                                                 \
    X(cublasLtMatmulPreferenceSetAttribute)                                                            \
    X(cublasLtMatrixLayoutCreate)                                                                      \
    X(cublasLtMatrixLayoutDestroy)

static struct {
#define X(f) __typeof__(&f) f;
    LT_FUNCS(X)
#undef X
} lt;
static pthread_once_t lt_once = PTHREAD_ONCE_INIT;

static void lt_open(void) {
    void *lib = dlopen(LLAMAC_CUBLASLT_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!lib) lib = dlopen(LLAMAC_CUBLASLT_PATH, RTLD_NOW | RTLD_LOCAL);
    CHECKF(lib, "cannot load %s (cuBLASLt, for the CUDA backend): %s", LLAMAC_CUBLASLT_SONAME, dlerror());
#define X(f)                                                                                           \
    lt.f = (__typeof__(lt.f))dlsym(lib, #f);                                                           \
    CHECKF(lt.f, "%s has no %s", LLAMAC_CUBLASLT_SONAME, #f);
    LT_FUNCS(X)
#undef X
}

#define LT(f) (pthread_once(&lt_once, lt_open), lt.f)

cublasStatus_t CUBLASWINAPI cublasLtCreate(cublasLtHandle_t *handle) { return LT(cublasLtCreate)(handle); }

cublasStatus_t CUBLASWINAPI cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void *alpha,
                                           const void *A, cublasLtMatrixLayout_t Adesc, const void *B,
                                           cublasLtMatrixLayout_t Bdesc, const void *beta, const void *C,
                                           cublasLtMatrixLayout_t Cdesc, void *D, cublasLtMatrixLayout_t Ddesc,
                                           const cublasLtMatmulAlgo_t *algo, void *workspace,
                                           size_t workspace_bytes, cudaStream_t stream) {
    return LT(cublasLtMatmul)(handle, desc, alpha, A, Adesc, B, Bdesc, beta, C, Cdesc, D, Ddesc, algo, workspace,
                              workspace_bytes, stream);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                                           cublasLtMatrixLayout_t Adesc,
                                                           cublasLtMatrixLayout_t Bdesc,
                                                           cublasLtMatrixLayout_t Cdesc,
                                                           cublasLtMatrixLayout_t Ddesc,
                                                           cublasLtMatmulPreference_t preference,
                                                           int requested, cublasLtMatmulHeuristicResult_t results[],
                                                           int *returned) {
    return LT(cublasLtMatmulAlgoGetHeuristic)(handle, desc, Adesc, Bdesc, Cdesc, Ddesc, preference, requested,
                                              results, returned);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *desc, cublasComputeType_t compute,
                                                     cudaDataType_t scale) {
    return LT(cublasLtMatmulDescCreate)(desc, compute, scale);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
    return LT(cublasLtMatmulDescDestroy)(desc);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                                           cublasLtMatmulDescAttributes_t attr, const void *buf,
                                                           size_t bytes) {
    return LT(cublasLtMatmulDescSetAttribute)(desc, attr, buf, bytes);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref) {
    return LT(cublasLtMatmulPreferenceCreate)(pref);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
    return LT(cublasLtMatmulPreferenceDestroy)(pref);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                                 cublasLtMatmulPreferenceAttributes_t attr,
                                                                 const void *buf, size_t bytes) {
    return LT(cublasLtMatmulPreferenceSetAttribute)(pref, attr, buf, bytes);
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *layout, cudaDataType type,
                                                       uint64_t rows, uint64_t cols, int64_t ld) {
    return LT(cublasLtMatrixLayoutCreate)(layout, type, rows, cols, ld);
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
    return LT(cublasLtMatrixLayoutDestroy)(layout);
}
