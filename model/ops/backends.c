#include <string.h>

#include "core/error.h"
#include "model/ops/ops.h"

int backend_find(const char *name, const struct backend **out) {
    if (!strcmp(name, "cpu")) { *out = backend_cpu(); return 0; }
    if (!strcmp(name, "cuda")) {
#ifdef LLAMAC_WITH_CUDA
        *out = backend_cuda();
        if (*out) return 0;
        return err_set("backend 'cuda': %s", err_msg());
#else
        return err_set("backend 'cuda': this llamac was built without CUDA (nvcc was not found at configure time)");
#endif
    }
    return err_set("unknown backend '%s' (expected cpu or cuda)", name);
}
