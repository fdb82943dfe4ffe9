// gpu_peak_bf16_tflops (launch/gpu.h): dense (no sparsity) bf16 tensor-core peaks of the devices MFU is
// reported against; shared by the CUDA and the CPU-only builds (llamac inspect prints it too).
#include <string.h>

#include "launch/gpu.h"

double gpu_peak_bf16_tflops(const char *name) {
    if (!name) return 0;
    int nvl = strstr(name, "NVL") != NULL;
    if (strstr(name, "H200")) return nvl ? 835.0 : 989.4;
    if (strstr(name, "H100")) return nvl ? 835.0 : strstr(name, "PCIe") ? 756.0 : 989.4;
    if (strstr(name, "A100")) return 312.0;
    return 0;
}
