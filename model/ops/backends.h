// The backends this build has, and how a run picks one. The CPU backend is always there; the CUDA one
// when llamac was built with nvcc or with the CPU emulation of CUDA (-DLLAMAC_CUDA=EMU).
#pragma once
#include "core/backend.h"

const struct backend *backend_cpu(void);
#ifdef LLAMAC_WITH_CUDA
// The CUDA backend in precision p; NULL with err_set when no device is visible.
extern const struct backend *backend_cuda(enum precision p);
#endif
// Looks a backend up by name ("cpu", "cuda") and precision ("auto": bf16 on cuda, fp32 on cpu; "bf16",
// "fp32"); -1 with err_set when this build or machine lacks it or the CPU is asked for bf16.
int backend_find(const char *name, const char *precision, const struct backend **out);
