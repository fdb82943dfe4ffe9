// fp16 and bf16 <-> fp32 conversions on the host (see half.h).
#include "core/half.h"

#include <string.h>

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

float bf16_to_f32(uint16_t b) { return bits_f32((uint32_t)b << 16); }

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13));  // inf, or NaN with its payload
    if (exp != 0) return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
    if (man == 0) return bits_f32(sign);
    int e = 113;  // subnormal: man * 2^-24; shift until the implicit bit appears
    while (!(man & 0x400)) {
        man <<= 1;
        e--;
    }
    return bits_f32(sign | ((uint32_t)e << 23) | ((man & 0x3ff) << 13));
}

uint16_t f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x0040);  // NaN stays (quiet) NaN
    x += 0x7fffu + ((x >> 16) & 1);  // round to nearest, ties to even; overflow carries into inf
    return (uint16_t)(x >> 16);
}

uint16_t f32_to_f16(float f) {
    uint32_t x = f32_bits(f), ax = x & 0x7fffffffu;
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    if (ax > 0x7f800000u) return sign | 0x7e00 | (uint16_t)((ax >> 13) & 0x3ff);  // quiet NaN
    if (ax >= 0x477ff000u) return sign | 0x7c00;  // >= 65520 (and inf) rounds to inf
    if (ax >= 0x38800000u) {                      // normal in f16 (>= 2^-14): rebias, round the low 13 bits
        uint32_t r = ax - 0x38000000u;
        r += 0xfffu + ((r >> 13) & 1);
        return sign | (uint16_t)(r >> 13);
    }
    // Subnormal in f16: the result is round(|f| / 2^-24) = round(m * 2^(e - 126)) for f = m * 2^(e - 150).
    int e = (int)(ax >> 23);
    if (e < 102) return sign;  // below 2^-25 (half the smallest subnormal): rounds to zero
    uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    int s = 126 - e;  // 14 .. 24
    uint32_t q = m >> s, rem = m & ((1u << s) - 1), half = 1u << (s - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return sign | (uint16_t)q;  // q == 0x400 is the smallest normal, correctly encoded
}
