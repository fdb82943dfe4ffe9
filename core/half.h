// 16-bit floats on the host: IEEE fp16 (safetensors F16) and bf16 (safetensors BF16, and the CUDA
// backend's compute type). fp32 -> 16 bits rounds to nearest, ties to even; NaN stays a quiet NaN and
// overflow becomes infinity, as torch's conversions do.
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

float f16_to_f32(uint16_t h);
float bf16_to_f32(uint16_t b);
uint16_t f32_to_f16(float f);
uint16_t f32_to_bf16(float f);

#ifdef __cplusplus
}
#endif
