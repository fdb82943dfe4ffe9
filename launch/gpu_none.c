// launch/gpu.h in a build without CUDA: no devices.
#ifndef LLAMAC_WITH_CUDA
#include "launch/gpu.h"

#include "core/error.h"

int gpu_count(void) { return 0; }
int gpu_use(int device) { return err_set("this llamac was built without CUDA: no GPU %d", device); }
int gpu_mem_info(size_t *free_bytes, size_t *total_bytes) {
    *free_bytes = *total_bytes = 0;
    return err_set("this llamac was built without CUDA");
}
void gpu_name(char *out, size_t n) {
    if (n) out[0] = '\0';
}
#endif
