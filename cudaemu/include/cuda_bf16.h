// cudaemu's cuda_bf16.h: __nv_bfloat16 and __nv_bfloat162 with the toolkit's names, layout (2 and 4
// bytes, trivially copyable) and conversions. float -> bf16 rounds to nearest even and turns NaN into the
// canonical NaN 0x7fff, as the GPU's cvt.rn.bf16.f32 does; arithmetic converts through float and rounds
// the result (cudaemu/README.md).
#pragma once

#include <string.h>

#include "cuda_runtime.h"

struct __nv_bfloat16_raw {
    unsigned short x;
};

struct alignas(2) __nv_bfloat16;
inline __nv_bfloat16 __float2bfloat16_rn(float f);
inline float __bfloat162float(__nv_bfloat16 h);

struct alignas(2) __nv_bfloat16 {
  protected:
    unsigned short __x;

  public:
    __nv_bfloat16() = default;
    constexpr __nv_bfloat16(const __nv_bfloat16_raw &r) : __x(r.x) {}
    __nv_bfloat16(float f) : __x(((__nv_bfloat16_raw)__float2bfloat16_rn(f)).x) {}
    __nv_bfloat16(double f) : __nv_bfloat16((float)f) {}
    __nv_bfloat16(int v) : __nv_bfloat16((float)v) {}
    __nv_bfloat16(unsigned int v) : __nv_bfloat16((float)v) {}
    operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
    operator float() const { return __bfloat162float(*this); }
    __nv_bfloat16 &operator=(float f) { return *this = __nv_bfloat16(f); }
};

struct alignas(4) __nv_bfloat162 {
    __nv_bfloat16 x, y;
    __nv_bfloat162() = default;
    constexpr __nv_bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) : x(a), y(b) {}
};

typedef __nv_bfloat16 nv_bfloat16;
typedef __nv_bfloat162 nv_bfloat162;

// ---------------------------------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------------------------------
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return ((__nv_bfloat16_raw)h).x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16(__nv_bfloat16_raw{u}); }

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return __ushort_as_bfloat16(0x7fff);  // NaN: the canonical NaN
    u += 0x7fffu + ((u >> 16) & 1u);                                           // round to nearest even
    return __ushort_as_bfloat16((unsigned short)(u >> 16));
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline __nv_bfloat16 __double2bfloat16(double d) { return __float2bfloat16_rn((float)d); }

inline float __bfloat162float(__nv_bfloat16 h) {
    uint32_t u = (uint32_t)__bfloat16_as_ushort(h) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
    return __nv_bfloat162(__float2bfloat16_rn(a), __float2bfloat16_rn(b));
}
inline __nv_bfloat162 __float2bfloat162_rn(float a) { return __floats2bfloat162_rn(a, a); }
inline __nv_bfloat162 __float22bfloat162_rn(float2 v) { return __floats2bfloat162_rn(v.x, v.y); }
inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) { return __nv_bfloat162(a, b); }
inline __nv_bfloat162 __bfloat162bfloat162(__nv_bfloat16 a) { return __nv_bfloat162(a, a); }
inline float __low2float(__nv_bfloat162 v) { return __bfloat162float(v.x); }
inline float __high2float(__nv_bfloat162 v) { return __bfloat162float(v.y); }
inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 v) { return v.x; }
inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 v) { return v.y; }
inline float2 __bfloat1622float2(__nv_bfloat162 v) { return float2{__bfloat162float(v.x), __bfloat162float(v.y)}; }

// ---------------------------------------------------------------------------------------------------
// Arithmetic and comparison, through float
// ---------------------------------------------------------------------------------------------------
#define CUDAEMU_BF16_BINARY(name, op)                                                                 \
    inline __nv_bfloat16 name(__nv_bfloat16 a, __nv_bfloat16 b) {                                     \
        return __float2bfloat16_rn(__bfloat162float(a) op __bfloat162float(b));                       \
    }                                                                                                 \
    inline __nv_bfloat162 name##2(__nv_bfloat162 a, __nv_bfloat162 b) {                               \
        return __nv_bfloat162(name(a.x, b.x), name(a.y, b.y));                                        \
    }                                                                                                 \
    inline __nv_bfloat16 operator op(__nv_bfloat16 a, __nv_bfloat16 b) { return name(a, b); }         \
    inline __nv_bfloat162 operator op(__nv_bfloat162 a, __nv_bfloat162 b) { return name##2(a, b); }   \
    inline __nv_bfloat16 &operator op##=(__nv_bfloat16 & a, __nv_bfloat16 b) { return a = name(a, b); }
CUDAEMU_BF16_BINARY(__hadd, +)
CUDAEMU_BF16_BINARY(__hsub, -)
CUDAEMU_BF16_BINARY(__hmul, *)
CUDAEMU_BF16_BINARY(__hdiv, /)
#undef CUDAEMU_BF16_BINARY

inline __nv_bfloat16 __hneg(__nv_bfloat16 a) { return __ushort_as_bfloat16(__bfloat16_as_ushort(a) ^ 0x8000); }
inline __nv_bfloat16 operator-(__nv_bfloat16 a) { return __hneg(a); }
inline __nv_bfloat16 __hfma(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
    return __float2bfloat16_rn(fmaf(__bfloat162float(a), __bfloat162float(b), __bfloat162float(c)));
}
inline __nv_bfloat16 __hmax(__nv_bfloat16 a, __nv_bfloat16 b) {
    return __float2bfloat16_rn(fmaxf(__bfloat162float(a), __bfloat162float(b)));
}
inline __nv_bfloat16 __hmin(__nv_bfloat16 a, __nv_bfloat16 b) {
    return __float2bfloat16_rn(fminf(__bfloat162float(a), __bfloat162float(b)));
}
inline bool __hisnan(__nv_bfloat16 a) { return (__bfloat16_as_ushort(a) & 0x7fff) > 0x7f80; }

#define CUDAEMU_BF16_COMPARE(name, op)                                                                \
    inline bool name(__nv_bfloat16 a, __nv_bfloat16 b) { return __bfloat162float(a) op __bfloat162float(b); } \
    inline bool operator op(__nv_bfloat16 a, __nv_bfloat16 b) { return name(a, b); }
CUDAEMU_BF16_COMPARE(__heq, ==)
CUDAEMU_BF16_COMPARE(__hne, !=)
CUDAEMU_BF16_COMPARE(__hlt, <)
CUDAEMU_BF16_COMPARE(__hle, <=)
CUDAEMU_BF16_COMPARE(__hgt, >)
CUDAEMU_BF16_COMPARE(__hge, >=)
#undef CUDAEMU_BF16_COMPARE
