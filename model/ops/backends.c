// backend_find: the [run] backend and precision keys to a backend object.
#include <string.h>

#include "core/error.h"
#include "model/ops/backends.h"

int backend_find(const char *name, const char *precision, const struct backend **out) {
    enum precision p;
    int is_cuda = !strcmp(name, "cuda");
    if (!strcmp(precision, "auto")) p = is_cuda ? PRECISION_BF16 : PRECISION_FP32;
    else if (!strcmp(precision, "bf16")) p = PRECISION_BF16;
    else if (!strcmp(precision, "fp32")) p = PRECISION_FP32;
    else return err_set("unknown precision '%s' (expected auto, bf16 or fp32)", precision);

    if (!strcmp(name, "cpu")) {
        if (p != PRECISION_FP32) return err_set("backend 'cpu' computes in fp32 only (precision = fp32 or auto)");
        *out = backend_cpu();
        return 0;
    }
    if (is_cuda) {
#ifdef LLAMAC_WITH_CUDA
        *out = backend_cuda(p);
        if (!*out) return err_prefix("backend 'cuda'");
        return 0;
#else
        return err_set("backend 'cuda': this llamac was built without CUDA (nvcc was not found at configure time)");
#endif
    }
    return err_set("unknown backend '%s' (expected cpu or cuda)", name);
}
