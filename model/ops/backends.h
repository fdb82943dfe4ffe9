// The backends this build has. The CPU backend is always there; the CUDA one when built with nvcc.
#pragma once
#include "core/backend.h"

const struct backend *backend_cpu(void);
#ifdef LLAMAC_WITH_CUDA
// the CUDA backend in precision p; NULL with err_set when no device is visible
extern const struct backend *backend_cuda(enum precision p);
#endif
// Looks a backend up by name ("cpu", "cuda"); -1 with err_set when this build or machine lacks it.
int backend_find(const char *name, const struct backend **out);
