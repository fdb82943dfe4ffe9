// Real-CUDA builds (no device needed; ctest label "static"): libcublasLt is not loaded when a process
// starts, and the first cuBLASLt call loads it and resolves every function llamac uses
// (model/ops/cuda/cublaslt_lazy.c aborts naming any it cannot find). Matrix layouts are host objects,
// so creating and destroying one needs no GPU.
#include <stdio.h>
#include <string.h>

#include <cublasLt.h>

static int cublaslt_mapped(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return -1;
    char line[4096];
    int found = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "libcublasLt")) found = 1;
    fclose(f);
    return found;
}

int main(void) {
    int fails = 0;
    if (cublaslt_mapped() != 0) {
        printf("FAIL  libcublasLt is loaded before the first cuBLASLt call\n");
        fails++;
    }
    cublasLtMatrixLayout_t layout;
    cublasStatus_t s = cublasLtMatrixLayoutCreate(&layout, CUDA_R_32F, 4, 4, 4);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatrixLayoutDestroy(layout);
    if (s != CUBLAS_STATUS_SUCCESS) {
        printf("FAIL  creating and destroying a matrix layout: cuBLAS status %d\n", (int)s);
        fails++;
    }
    if (cublaslt_mapped() != 1) {
        printf("FAIL  libcublasLt is not loaded after a cuBLASLt call\n");
        fails++;
    }
    printf("cublaslt_lazy_check: %s\n", fails ? "FAILED" : "libcublasLt loaded at the first call, every function found");
    return fails != 0;
}
