#include <string.h>

#include "core/error.h"
#include "model/ops/backends.h"

int backend_find(const char *name, const struct backend **out) {
    if (!strcmp(name, "cpu")) { *out = backend_cpu(); return 0; }
    if (!strcmp(name, "cuda")) {
#ifdef LLAMAC_WITH_CUDA
        *out = backend_cuda();
        if (!*out) return err_set("backend 'cuda': %s", err_msg());
        if (!(*out)->ops)
            return err_set("backend 'cuda': the CUDA op table is not part of this llamac version yet (use backend = cpu)");
        return 0;
#else
        return err_set("backend 'cuda': this llamac was built without CUDA (nvcc was not found at configure time)");
#endif
    }
    return err_set("unknown backend '%s' (expected cpu or cuda)", name);
}
