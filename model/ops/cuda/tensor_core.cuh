// Tensor-core building blocks: the only places llamac issues mma.sync and ldmatrix, each a small device
// function with an nvcc branch (inline PTX) and an emulator branch (cudaemu's warp rendezvous that
// implements the same instruction, cudaemu/README.md "Tensor cores"), so the kernels built on them run and
// are tested in CI without a GPU.
//
// Fragment layouts (m16n8k16, bf16 inputs, fp32 accumulators), lane l = 4g + q (g = l/4, q = l%4):
//   A (16x16, row-major)  a[0] = A[g][2q..2q+1]   a[1] = A[g+8][2q..2q+1]
//                         a[2] = A[g][2q+8..+9]   a[3] = A[g+8][2q+8..+9]
//   B (16x8, k x n)       b[0] = B[2q..2q+1][g]   b[1] = B[2q+8..+9][g]
//   C, D (16x8)           c[0..1] = C[g][2q..2q+1]  c[2..3] = C[g+8][2q..2q+1]
// A register holds two bf16, the lower column (or k) in the low half. The C fragments of two adjacent
// n-tiles (columns 0-7 and 8-15) are exactly the A fragment of a 16x16 tile once packed to bf16
// (pack_a_from_c): that is how softmax probabilities computed in registers feed the next product.
//
// ldmatrix loads four 8x8 bf16 matrices from shared memory, lanes 8i..8i+7 giving the row addresses of
// matrix i (16-byte aligned); register i of lane l holds matrix i's row g, columns 2q, 2q+1 (.trans:
// rows 2q, 2q+1 of column g). Two addressing patterns cover every operand here (rows of `pitch` bf16):
//   ldsm_a    row r0 + l%16, column c0 + 8*(l/16): a 16x16 A tile (non-trans); with .trans, from a
//             row-major [k][n] array, the B fragments of n-tiles c0..c0+7 (r[0..1]) and c0+8.. (r[2..3]).
//   ldsm_bt   row r0 + 8*(l/16) + l%8, column c0 + 8*((l/8)%2): from an [n][k] array (B^T stored by
//             rows, as K for Q K^T), the B fragments of n-tiles r0.. (r[0..1]) and r0+8.. (r[2..3]).
// Pitches of an odd number of 16-byte chunks make both patterns free of shared-memory bank conflicts.
#pragma once
#include <stdint.h>
#include <string.h>

#include "model/ops/cuda/common.cuh"

// d = a b + c (m16n8k16, bf16 x bf16 -> fp32); d may alias c.
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t *b,
                                               const float (&c)[4]) {
#if LLAMAC_CUDA_EMU
    cudaemu::mma_m16n8k16_bf16(d, a, b, c);
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%10,%11,%12,%13};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
                   "f"(c[2]), "f"(c[3]));
#endif
}

// Four 8x8 bf16 matrices from shared memory; `row` is this lane's row address (see above).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const __nv_bfloat16 *row) {
#if LLAMAC_CUDA_EMU
    cudaemu::ldmatrix(r, 4, false, row);
#else
    const unsigned addr = (unsigned)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
#endif
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const __nv_bfloat16 *row) {
#if LLAMAC_CUDA_EMU
    cudaemu::ldmatrix(r, 4, true, row);
#else
    const unsigned addr = (unsigned)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
#endif
}

// The two addressing patterns above, for lane `lane` of a tile at (r0, c0) of an array of `pitch` bf16.
__device__ __forceinline__ const __nv_bfloat16 *ldsm_a(const __nv_bfloat16 *s, int pitch, int r0, int c0,
                                                       int lane) {
    return s + (r0 + lane % 16) * pitch + c0 + 8 * (lane / 16);
}
__device__ __forceinline__ const __nv_bfloat16 *ldsm_bt(const __nv_bfloat16 *s, int pitch, int r0, int c0,
                                                        int lane) {
    return s + (r0 + 8 * (lane / 16) + lane % 8) * pitch + c0 + 8 * ((lane / 8) % 2);
}

// Two floats as a bf16 pair (lo in the low half), rounded to nearest even.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    uint32_t u;
    memcpy(&u, &v, 4);
    return u;
}

// The A fragment (16x16) made of the C fragments of n-tiles c0 (columns 0-7) and c1 (columns 8-15).
__device__ __forceinline__ void pack_a_from_c(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
    a[0] = pack_bf16(c0[0], c0[1]);
    a[1] = pack_bf16(c0[2], c0[3]);
    a[2] = pack_bf16(c1[0], c1[1]);
    a[3] = pack_bf16(c1[2], c1[3]);
}

// Asynchronous copies global -> shared (cp.async, sm_80+): 16 bytes that do not pass through registers,
// grouped by cp_async_commit; cp_async_wait<N> waits until at most N of this thread's groups are still
// in flight. As with any shared memory, other threads see the data only after a __syncthreads that
// follows the wait. The emulator copies at once (cudaemu/README.md: a missing wait goes unnoticed
// there; a missing barrier does not, under the reverse and shuffle orders).
__device__ __forceinline__ void cp_async_16(void *smem, const void *gmem) {
#if LLAMAC_CUDA_EMU
    memcpy(smem, gmem, 16);
#else
    const unsigned addr = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(addr), "l"(gmem));
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if !LLAMAC_CUDA_EMU
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N> __device__ __forceinline__ void cp_async_wait() {
#if !LLAMAC_CUDA_EMU
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}
