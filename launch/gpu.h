// The GPU of a rank: which device it uses, its memory and its peak, for the trainer's set-up
// (launch/README.md, GPU training). Implemented by launch/gpu.cu in CUDA builds (the emulator's device
// in the EMU build) and by launch/gpu_none.c without CUDA, where there are no devices.
#pragma once
#include <stddef.h>

// Visible CUDA devices: 0 without a device or without CUDA in this build.
int gpu_count(void);
// Makes `device` the current one, before the CUDA backend's first use (its context takes the current
// device). -1 with err_set when it is not a device of this machine.
int gpu_use(int device);
// Free and total bytes of the current device (cudaMemGetInfo). -1 with err_set without a device.
int gpu_mem_info(size_t *free_bytes, size_t *total_bytes);
// The current device's name ("" without one).
void gpu_name(char *out, size_t n);
// Dense bf16 peak TFLOP/s of a device by its name: H100 SXM and H200 989.4, H100 PCIe 756, H100/H200
// NVL 835, A100 312; 0 for a device not in this table (then run.peak_tflops must say).
double gpu_peak_bf16_tflops(const char *name);
