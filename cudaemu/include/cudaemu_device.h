// cudaemu's device side: what a kernel body sees (qualifiers, thread indices, barriers, warp
// intrinsics, atomics, device math) and the launch template behind llamac's LAUNCH macro
// (core/cuda_launch.h). Included by cuda_runtime.h; see cudaemu/README.md for the execution model.
//
// Every CUDA thread of a block is a fiber; one fiber runs at a time, on one OS thread, so shared memory
// is a function-static variable (blocks run one after another), atomics are plain read-modify-writes,
// and __syncthreads / warp intrinsics are real rendezvous implemented by the scheduler.
#pragma once

#include <stdint.h>
#include <string.h>

#include <tuple>
#include <type_traits>
#include <utility>

// ---------------------------------------------------------------------------------------------------
// Qualifiers: device code is host code
// ---------------------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static  // one block runs at a time: a function-static array is the block's shared memory

// Dynamic shared memory (extern __shared__ under nvcc; see core/cuda_launch.h): the launch's buffer,
// filled with NaN (0x7fc00000) at the start of every block.
#define LLAMAC_DYNAMIC_SMEM(type, name) type *name = (type *)cudaemu_dynamic_smem()
void *cudaemu_dynamic_smem(void);

// Code the emulator cannot run (inline PTX, tensor-core instructions) calls this in its
// `#if LLAMAC_CUDA_EMU` branch: it aborts with the message.
[[noreturn]] void cudaemu_unsupported(const char *what);

// The scheduling order of the following launches, as CUDAEMU_ORDER would set it ("forward", "reverse",
// "shuffle"; seed as CUDAEMU_SEED): for tests that compare orders within one process.
void cudaemu_set_order(const char *order, unsigned long long seed);

// ---------------------------------------------------------------------------------------------------
// Thread indices: set by the scheduler before it switches into a thread's fiber
// ---------------------------------------------------------------------------------------------------
extern uint3 threadIdx;
extern uint3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;
static constexpr int warpSize = 32;

namespace cudaemu {

enum warp_kind {
    WARP_SYNC, WARP_SHFL, WARP_SHFL_XOR, WARP_SHFL_UP, WARP_SHFL_DOWN, WARP_BALLOT, WARP_ACTIVE,
    WARP_MMA,       // mma.sync m16n8k16 bf16 x bf16 + fp32: value points at the lane's mma_frag
    WARP_LDMATRIX,  // ldmatrix m8n8 b16 (.x1/.x2/.x4, optionally .trans): value points at the lane's ldm_frag
};

// The registers one lane hands to a tensor-core rendezvous (cudaemu/README.md, "Tensor cores").
struct mma_frag {
    const uint32_t *a;  // 4 registers of A (16x16 bf16, row), two bf16 each, the lower column in the low half
    const uint32_t *b;  // 2 registers of B (16x8 bf16, col)
    const float *c;     // 4 fp32 accumulators of C (16x8)
    float *d;           // 4 fp32 results of D = A B + C (may alias c)
};
struct ldm_frag {
    const void *row;  // this lane's row address (8 consecutive bf16); lanes 8i..8i+7 give matrix i's rows
    uint32_t *r;      // n result registers
    int n;            // matrices: 1, 2 or 4
    int trans;        // .trans: each register holds a column pair instead of a row pair
};

// Block barrier; returns how many live threads arrived with pred != 0 (for __syncthreads_count/and/or).
int syncthreads(int pred, const char *file, int line);
// Warp rendezvous of the lanes in mask: each lane deposits value (and its own arg, width); when all have
// arrived every lane gets its result (see cudaemu.cpp). Aborts if a lane of mask has exited.
// WARP_ACTIVE ignores mask: it waits for every lane not exited and returns their mask (__activemask).
uint64_t warp_op(warp_kind kind, unsigned mask, uint64_t value, int arg, int width, const char *file, int line);

template <class T> inline T shuffle(warp_kind kind, unsigned mask, T var, int arg, int width, const char *file,
                                    int line) {
    static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "shuffle of a type over 8 bytes");
    uint64_t v = 0;
    memcpy(&v, &var, sizeof(T));
    v = warp_op(kind, mask, v, arg, width, file, line);
    memcpy((void *)&var, &v, sizeof(T));
    return var;
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 as a warp rendezvous of all 32 lanes: the last lane
// to arrive gathers every lane's fragments in the PTX layout, computes D = A B + C in fp32 (bf16 inputs
// are exact in fp32) and scatters D back. d may alias c.
inline void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4],
                              const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    mma_frag f{a, b, c, d};
    warp_op(WARP_MMA, 0xffffffffu, (uint64_t)(uintptr_t)&f, 0, 32, file, line);
}
// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}[.trans].shared.b16 as a warp rendezvous of all 32 lanes.
inline void ldmatrix(uint32_t *r, int n, bool trans, const void *row, const char *file = __builtin_FILE(),
                     int line = __builtin_LINE()) {
    ldm_frag f{row, r, n, trans ? 1 : 0};
    warp_op(WARP_LDMATRIX, 0xffffffffu, (uint64_t)(uintptr_t)&f, 0, 32, file, line);
}

}  // namespace cudaemu

// ---------------------------------------------------------------------------------------------------
// Barriers and warp intrinsics (the file:line default arguments name the call site in deadlock reports)
// ---------------------------------------------------------------------------------------------------
inline void __syncthreads(const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    cudaemu::syncthreads(0, file, line);
}
inline int __syncthreads_count(int pred, const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    return cudaemu::syncthreads(pred != 0, file, line);
}
inline int __syncthreads_and(int pred, const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    return cudaemu::syncthreads(pred == 0, file, line) == 0;  // count the threads whose pred is false
}
inline int __syncthreads_or(int pred, const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    return cudaemu::syncthreads(pred != 0, file, line) != 0;
}
inline void __syncwarp(unsigned mask = 0xffffffffu, const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    cudaemu::warp_op(cudaemu::WARP_SYNC, mask, 0, 0, warpSize, file, line);
}
// The lanes of the warp that have not exited, after waiting for all of them: exact in converged code
// (cudaemu/README.md says what it means in a divergent branch).
inline unsigned __activemask(const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    return (unsigned)cudaemu::warp_op(cudaemu::WARP_ACTIVE, 0, 0, 0, warpSize, file, line);
}

template <class T>
inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize, const char *file = __builtin_FILE(),
                     int line = __builtin_LINE()) {
    return cudaemu::shuffle(cudaemu::WARP_SHFL, mask, var, srcLane, width, file, line);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize,
                         const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    return cudaemu::shuffle(cudaemu::WARP_SHFL_XOR, mask, var, laneMask, width, file, line);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                        const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    return cudaemu::shuffle(cudaemu::WARP_SHFL_UP, mask, var, (int)delta, width, file, line);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                          const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    return cudaemu::shuffle(cudaemu::WARP_SHFL_DOWN, mask, var, (int)delta, width, file, line);
}
inline unsigned __ballot_sync(unsigned mask, int pred, const char *file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
    return (unsigned)cudaemu::warp_op(cudaemu::WARP_BALLOT, mask, pred != 0, 0, warpSize, file, line);
}
inline int __any_sync(unsigned mask, int pred, const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    return __ballot_sync(mask, pred, file, line) != 0;
}
inline int __all_sync(unsigned mask, int pred, const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    return __ballot_sync(mask, pred, file, line) == mask;
}

inline void __threadfence() {}
inline void __threadfence_block() {}
template <class T> inline T __ldg(const T *p) { return *p; }

// ---------------------------------------------------------------------------------------------------
// Atomics: one fiber runs at a time and a fiber only switches at a barrier, so a read-modify-write is atomic
// ---------------------------------------------------------------------------------------------------
#define CUDAEMU_ATOMIC(name, T, expr)                                                                 \
    inline T name(T *address, T val) {                                                                \
        T old = *address;                                                                             \
        *address = (expr);                                                                            \
        return old;                                                                                   \
    }
CUDAEMU_ATOMIC(atomicAdd, float, old + val)
CUDAEMU_ATOMIC(atomicAdd, double, old + val)
CUDAEMU_ATOMIC(atomicAdd, int, old + val)
CUDAEMU_ATOMIC(atomicAdd, unsigned int, old + val)
CUDAEMU_ATOMIC(atomicAdd, unsigned long long, old + val)
CUDAEMU_ATOMIC(atomicSub, int, old - val)
CUDAEMU_ATOMIC(atomicSub, unsigned int, old - val)
CUDAEMU_ATOMIC(atomicMax, int, old > val ? old : val)
CUDAEMU_ATOMIC(atomicMax, unsigned int, old > val ? old : val)
CUDAEMU_ATOMIC(atomicMin, int, old < val ? old : val)
CUDAEMU_ATOMIC(atomicMin, unsigned int, old < val ? old : val)
CUDAEMU_ATOMIC(atomicExch, int, val)
CUDAEMU_ATOMIC(atomicExch, unsigned int, val)
CUDAEMU_ATOMIC(atomicExch, unsigned long long, val)
CUDAEMU_ATOMIC(atomicExch, float, val)
CUDAEMU_ATOMIC(atomicAnd, int, old & val)
CUDAEMU_ATOMIC(atomicAnd, unsigned int, old & val)
CUDAEMU_ATOMIC(atomicOr, int, old | val)
CUDAEMU_ATOMIC(atomicOr, unsigned int, old | val)
#undef CUDAEMU_ATOMIC

#define CUDAEMU_ATOMIC_CAS(T)                                                                         \
    inline T atomicCAS(T *address, T compare, T val) {                                                \
        T old = *address;                                                                             \
        if (old == compare) *address = val;                                                           \
        return old;                                                                                   \
    }
CUDAEMU_ATOMIC_CAS(int)
CUDAEMU_ATOMIC_CAS(unsigned int)
CUDAEMU_ATOMIC_CAS(unsigned long long)
#undef CUDAEMU_ATOMIC_CAS

// ---------------------------------------------------------------------------------------------------
// Device math: the host's libm (expf, logf, sqrtf, tanhf, erff, fmaf... come from <math.h>)
// ---------------------------------------------------------------------------------------------------
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __saturatef(float x) { return x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f; }  // NaN -> 0

inline int __float_as_int(float x) { int i; memcpy(&i, &x, 4); return i; }
inline unsigned __float_as_uint(float x) { unsigned u; memcpy(&u, &x, 4); return u; }
inline float __int_as_float(int i) { float x; memcpy(&x, &i, 4); return x; }
inline float __uint_as_float(unsigned u) { float x; memcpy(&x, &u, 4); return x; }

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
inline int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; i++) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}

// CUDA's global min/max overloads; non-templates, so they never compete with std::min / std::max.
#define CUDAEMU_MINMAX(T)                                                                             \
    inline T min(T a, T b) { return a < b ? a : b; }                                                  \
    inline T max(T a, T b) { return a > b ? a : b; }
CUDAEMU_MINMAX(int)
CUDAEMU_MINMAX(unsigned int)
CUDAEMU_MINMAX(long)
CUDAEMU_MINMAX(unsigned long)
CUDAEMU_MINMAX(long long)
CUDAEMU_MINMAX(unsigned long long)
#undef CUDAEMU_MINMAX
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

// ---------------------------------------------------------------------------------------------------
// Launch: LAUNCH (core/cuda_launch.h) expands to cudaemu::launch(kernel, grid, ...)(args...). The
// arguments are converted to the kernel's parameter types once, stored, and every CUDA thread calls
// the kernel with them through one type-erased thunk (no std::function per thread).
// ---------------------------------------------------------------------------------------------------
namespace cudaemu {

struct launch_site {
    const char *kernel, *file;
    int line;
};

// Validates the configuration (setting the last error and running nothing when the GPU would refuse
// it), then runs every block of the grid before returning.
void run(dim3 grid, dim3 block, size_t dyn_smem, cudaStream_t stream, const void *kernel, void (*thunk)(void *),
         void *ctx, launch_site site);

template <class... P> struct launcher {
    void (*kernel)(P...);
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
    launch_site site;

    template <class... A> void operator()(A &&...args) const {
        static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
        struct ctx_t {
            void (*kernel)(P...);
            std::tuple<std::decay_t<P>...> args;
        } ctx{kernel, std::tuple<std::decay_t<P>...>(std::forward<A>(args)...)};
        void (*thunk)(void *) = [](void *c) {
            ctx_t *x = (ctx_t *)c;
            std::apply(x->kernel, x->args);
        };
        run(grid, block, smem, stream, (const void *)kernel, thunk, &ctx, site);
    }
};

template <class... P>
inline launcher<P...> launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                             const char *name, const char *file, int line) {
    return launcher<P...>{kernel, grid, block, smem, stream, launch_site{name, file, line}};
}

}  // namespace cudaemu
