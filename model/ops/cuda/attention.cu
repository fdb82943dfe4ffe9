// Causal self-attention with grouped-query heads on the GPU, FlashAttention-2 style, in two families of
// kernels with the same three passes: tensor-core kernels (bf16 precision) and fp32-FMA kernels (fp32
// precision, and bf16 when LLAMAC_ATTN_FMA=1 or a pointer is not 16-byte aligned). The CPU oracle is
// model/ops/cpu/attention.c; the math here is the same, reordered into tiles.
//
// Layout. qkv (B,T,(NH+2KVH)*HS) holds per row the NH query heads, then KVH key heads, then KVH value
// heads; query head h reads kv head h / (NH/KVH) (GQA: k and v are never copied per query head). out
// and dout (B,T,NH*HS). The (T,T) score matrix is never stored: forward keeps each row's log-sum-exp
// (lse (B,NH,T), fp32), backward recomputes the probabilities from it. Tiles above the diagonal are
// skipped (tile_any_visible), and tiles wholly below it need no per-element mask (tile_all_visible).
//
// Tensor-core kernels (mma.sync m16n8k16 bf16 -> fp32, ldmatrix; tensor_core.cuh, emulated warp by warp
// in the EMU build). 128 threads = 4 warps; a warp owns 16 rows of every tile product and holds its
// scores in C fragments, whose row statistics are two __shfl_xor_sync over the 4 lanes of a row; the
// probabilities are packed from the C fragments straight into the A fragments of the next product
// (pack_a_from_c), never going through shared memory. Shared memory holds bf16 tiles of (rows, HSP + 8)
// (HSP: the head size rounded up to 32, 64 or 128; the 8-element pad makes the row pitch an odd number
// of 16-byte chunks, so ldmatrix is free of bank conflicts), loaded with 16-byte vector loads.
//   forward   grid (ceil(T/64), NH, B): 64 query rows per block, Q fragments in registers, 64-key tiles
//             up to the diagonal; S = Q K^T, online softmax in fp32 (log2 domain), O += P V with P in
//             bf16; O (fp32, registers) / l written as bf16 once, and lse. smem: Q and two K/V buffers,
//             5 x 64 x (HSP+8) bf16 (85 KiB at HS 128, opt-in above 48 KiB).
//   D         a warp per (b,t,h) row: D = rowsum(dO * O) (fp32 scratch, kept per context).
//   dK,dV     grid (ceil(T/64), KVH, B): 64 keys per block, summing over the query heads of the GQA group
//             and 32-row query tiles from the diagonal down: S^T = K Q^T, dP^T = V dO^T, P^T and
//             dS^T = P^T (dP^T - D) in registers, dV += P^T dO, dK += dS^T Q (fp32 accumulators in
//             registers: the group shares them, so no atomics). smem (2x64 + 2x2x32) x (HSP+8) bf16.
//   dQ        grid (ceil(T/64), NH, B): 64 query rows per block, 32-key tiles up to the diagonal:
//             S, dP, dS = P (dP - D), dQ += dS K (a separate pass instead of atomics: deterministic).
// The tile being computed is in shared memory while the next one arrives by cp.async (double buffering:
// a barrier after the wait, so every thread's copies are visible, and one after the compute, so nobody
// still reads a buffer when it is refilled). Registers and spills of each kernel (nvcc -Xptxas -v,
// sm_90) are in bench/ptxas.txt; none spills.
//
// fp32-FMA kernels (256 threads each; a tile row is handled by TPR = 4 consecutive lanes of one warp,
// so that the row reductions of the softmax are two __shfl_xor_sync and no shared memory). Tiles are
// converted to fp32 as they are loaded into shared memory and every product, exponential and
// accumulator is fp32; results are rounded to the compute type once, when stored.
//   forward   grid (ceil(T/64), NH, B): a block per 64-row query tile of one head, looping over 64-key
//             tiles up to the diagonal, with running max m, sum l and accumulator O in registers.
//   dK,dV     grid (ceil(T/64), KVH, B): a block per 64-key tile of one kv head, looping over the query
//             heads of its group and the 32-row query tiles from the diagonal down.
//   dQ        grid (ceil(T/64), NH, B): a block per 64-row query tile, looping over 32-key tiles.
// With TPR = 4 a thread holds HSP/4 output accumulators (at most 32 floats) plus a few score fragments;
// shared memory holds fp32 tiles padded by one column (conflict-free column reads), up to ~115 KiB per
// block for HS 128. The two inner tile products (mm_abt: a fragment of A B^T; mm_ab: accumulate A B)
// are the only places of the O(T^2 HS) arithmetic there.
//
// Block indices run from the last tile down so the longest causal rows start first.
//
// Memory traffic (HS elements of size e per row): forward reads Q once and K, V once per query tile of
// 64 rows that sees them, about (T/64)/2 times per kv head and query head on average, and writes out
// and lse once. Backward reads Q and dO once per kv tile (about (T/64)/2 times), K and V once per query
// tile in the dQ pass, writes dqkv once, and reads/writes D (4 B per row and head). Nothing of size T^2.
//
// Masking is in one function, visible(i, j, ds): ds is the document start of query row i (docs[b,i] for
// packed windows, core/backend.h; 0 without docs), so a row sees keys j in [ds, i] only. The tile tests
// tile_any_visible / tile_all_visible must agree with it.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "model/ops/cuda/common.cuh"
#include "model/ops/cuda/cuda_ops.h"
#include "model/ops/cuda/tensor_core.cuh"

#define ATTN_THREADS 256
#define ATTN_TPR 4  // threads per tile row: consecutive lanes of one warp
#define ATTN_LOG2E 1.4426950408889634f
#define ATTN_LN2 0.6931471805599453f

// Loop unrolling for nvcc; g++ (the CPU emulation) does not know the pragma and would warn.
#ifdef __CUDACC__
#define ATTN_UNROLL _Pragma("unroll")
#define ATTN_UNROLL4 _Pragma("unroll 4")
#else
#define ATTN_UNROLL
#define ATTN_UNROLL4
#endif

struct attn_shape {
    int B, T, NH, KVH, HS;
    const int *docs;  // (B,T) document start of each position, or NULL (one document per row)
};

// The document starts of batch row b (T entries), or NULL without docs.
__device__ __forceinline__ const int *doc_row(const struct attn_shape &sh, int b) {
    return sh.docs ? sh.docs + (size_t)b * sh.T : nullptr;
}

// The document start of query position i of a row (0 without docs, or past the end of the row).
__device__ __forceinline__ int doc_start(const int *starts, int T, int i) { return starts && i < T ? starts[i] : 0; }

// Whether query position i, whose document starts at ds, may attend to key position j (both in [0,T)).
__device__ __forceinline__ bool visible(int i, int j, int ds) { return j <= i && j >= ds; }

__device__ __forceinline__ bool allowed(int i, int j, int T, int ds) { return i < T && j < T && visible(i, j, ds); }

// Whether some / every pair of query rows [i_lo, i_hi] of batch row b and keys [j_lo, j_hi] is visible:
// the tiles that can be skipped, and those that need no per-element mask. They must agree with
// visible() ("some" may say yes, "every" may say no). Document starts never decrease along a row (each
// is t or the one before it; llama_set_docs checks), so the earliest start among the rows is that of
// i_lo and the latest that of i_hi: a tile wholly before the rows' documents is skipped too.
__device__ __forceinline__ bool tile_any_visible(const int *starts, int T, int i_lo, int i_hi, int j_lo, int j_hi) {
    return j_lo <= i_hi && doc_start(starts, T, i_lo) <= j_hi;
}
__device__ __forceinline__ bool tile_all_visible(const int *starts, int T, int i_lo, int i_hi, int j_lo, int j_hi) {
    return j_hi <= i_lo && doc_start(starts, T, min(i_hi, T - 1)) <= j_lo;
}

// Max and sum over the TPR lanes of one tile row (the whole warp calls it).
__device__ __forceinline__ float row_max(float v) {
    for (int o = ATTN_TPR / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ float row_sum(float v) {
    for (int o = ATTN_TPR / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Loads rows [row0, row0+n) of a (T, stride) array, HS columns from src, into dst (n, pitch) as fp32;
// rows at or past T and columns HS..HSP-1 are zero, so the products over padding add nothing.
template <typename floatX, int HSP>
__device__ void load_tile(float *dst, int pitch, const floatX *src, size_t stride, int row0, int n, int T, int HS) {
    for (int idx = threadIdx.x; idx < n * HSP; idx += blockDim.x) {
        const int r = idx / HSP, d = idx % HSP, row = row0 + r;
        dst[r * pitch + d] = (row < T && d < HS) ? to_f(src[(size_t)row * stride + d]) : 0.0f;
    }
}

// s[t] = sum_d a_row[d] * b[(c + TPR t) * pitch + d] for t < N: this thread's N entries of one row of
// A B^T (A, B in shared, rows of HS floats). Used for S = Q K^T, S^T = K Q^T, dP = dO V^T, dP^T = V dO^T.
template <int N>
__device__ __forceinline__ void mm_abt(float (&s)[N], const float *a_row, const float *b, int pitch, int c, int HS) {
    ATTN_UNROLL
    for (int t = 0; t < N; t++) s[t] = 0.0f;
    ATTN_UNROLL4
    for (int d = 0; d < HS; d++) {
        const float a = a_row[d];
        ATTN_UNROLL
        for (int t = 0; t < N; t++) s[t] = fmaf(a, b[(c + ATTN_TPR * t) * pitch + d], s[t]);
    }
}

// acc[u] += sum_{k < nk} p_row[k] * b[k * pitch + c + TPR u] for u < N: this thread's N columns of one row
// of P B. Used for O += P V, dV += P^T dO, dK += dS^T Q, dQ += dS K.
template <int N>
__device__ __forceinline__ void mm_ab(float (&acc)[N], const float *p_row, const float *b, int pitch, int nk, int c) {
    ATTN_UNROLL4
    for (int k = 0; k < nk; k++) {
        const float p = p_row[k];
        ATTN_UNROLL
        for (int u = 0; u < N; u++) acc[u] = fmaf(p, b[k * pitch + c + ATTN_TPR * u], acc[u]);
    }
}

// ---------------------------------------------------------------------------------------------------
// Forward

#define FWD_BR 64  // query rows per block (= ATTN_THREADS / ATTN_TPR)
#define FWD_BC 64  // keys per tile

template <int HSP>
constexpr size_t fwd_smem() {  // sQ, sK (padded), sV, sP (padded)
    return sizeof(float) * ((size_t)(FWD_BR + FWD_BC) * (HSP + 1) + (size_t)FWD_BC * HSP + FWD_BR * (FWD_BC + 1));
}

// out (B,T,NH*HS), lse (B,NH,T); qkv (B,T,(NH+2KVH)*HS). Grid (ceil(T/FWD_BR), NH, B).
template <typename floatX, int HSP>
__global__ void __launch_bounds__(ATTN_THREADS)
    attn_fwd_kernel(floatX *out, float *lse, const floatX *qkv, struct attn_shape sh) {
    LLAMAC_DYNAMIC_SMEM(float, smem);
    constexpr int QP = HSP + 1, PP = FWD_BC + 1, NS = FWD_BC / ATTN_TPR, NO = HSP / ATTN_TPR;
    float *sQ = smem, *sK = sQ + FWD_BR * QP, *sV = sK + FWD_BC * QP, *sP = sV + FWD_BC * HSP;
    const int T = sh.T, HS = sh.HS, NH = sh.NH, KVH = sh.KVH;
    const int qt = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int kvh = h / (NH / KVH), q0 = qt * FWD_BR;
    const size_t S = (size_t)(NH + 2 * KVH) * HS;
    const floatX *base = qkv + (size_t)b * T * S;
    const int r = threadIdx.x / ATTN_TPR, c = threadIdx.x % ATTN_TPR, i = q0 + r;
    const float sc = ATTN_LOG2E / sqrtf((float)HS);  // scores in the log2 domain: exp2f is cheaper
    const int ds = doc_start(doc_row(sh, b), T, i);

    load_tile<floatX, HSP>(sQ, QP, base + (size_t)h * HS, S, q0, FWD_BR, T, HS);
    float o[NO], m = -INFINITY, l = 0.0f;
    ATTN_UNROLL
    for (int u = 0; u < NO; u++) o[u] = 0.0f;

    const int nk = min(q0 + FWD_BR - 1, T - 1) / FWD_BC + 1;  // key tiles up to the diagonal
    for (int kt = 0; kt < nk; kt++) {
        const int j0 = kt * FWD_BC;
        __syncthreads();  // the previous tile's sK, sV, sP are read
        load_tile<floatX, HSP>(sK, QP, base + (size_t)(NH + kvh) * HS, S, j0, FWD_BC, T, HS);
        load_tile<floatX, HSP>(sV, HSP, base + (size_t)(NH + KVH + kvh) * HS, S, j0, FWD_BC, T, HS);
        __syncthreads();

        float s[NS];
        mm_abt(s, sQ + r * QP, sK, QP, c, HS);  // S = Q K^T
        float mx = -INFINITY;
        ATTN_UNROLL
        for (int t = 0; t < NS; t++) {
            s[t] = allowed(i, j0 + c + ATTN_TPR * t, T, ds) ? s[t] * sc : -INFINITY;
            mx = fmaxf(mx, s[t]);
        }
        const float m_new = fmaxf(m, row_max(mx));
        const float m_ref = m_new == -INFINITY ? 0.0f : m_new;  // a row with nothing visible yet stays 0
        const float alpha = exp2f(m - m_ref);
        float sum = 0.0f;
        ATTN_UNROLL
        for (int t = 0; t < NS; t++) {
            const float p = exp2f(s[t] - m_ref);
            sP[r * PP + c + ATTN_TPR * t] = p;
            sum += p;
        }
        l = l * alpha + row_sum(sum);
        m = m_new;
        ATTN_UNROLL
        for (int u = 0; u < NO; u++) o[u] *= alpha;
        __syncwarp();  // the row's P is written by its TPR lanes, all in this warp
        mm_ab(o, sP + r * PP, sV, HSP, FWD_BC, c);  // O += P V
    }

    if (i >= T) return;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    floatX *orow = out + ((size_t)b * T + i) * NH * HS + (size_t)h * HS;
    ATTN_UNROLL
    for (int u = 0; u < NO; u++) {
        const int d = c + ATTN_TPR * u;
        if (d < HS) orow[d] = from_f<floatX>(o[u] * inv);
    }
    if (c == 0) lse[((size_t)b * NH + h) * T + i] = l > 0.0f ? (m + log2f(l)) * ATTN_LN2 : -INFINITY;
}

// ---------------------------------------------------------------------------------------------------
// Backward

// D (B,NH,T) = rowsum(dO * O) per (b, t, h); a warp per row. Grid ceil(B*T*NH / 8) blocks of 256.
template <typename floatX>
__global__ void attn_bwd_d_kernel(float *D, const floatX *dout, const floatX *out, struct attn_shape sh) {
    const size_t row = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;  // (b*T + t)*NH + h
    const int lane = threadIdx.x % 32;
    if (row >= (size_t)sh.B * sh.T * sh.NH) return;  // the whole warp leaves together
    const floatX *a = dout + row * sh.HS, *o = out + row * sh.HS;
    float v = 0.0f;
    for (int d = lane; d < sh.HS; d += 32) v += to_f(a[d]) * to_f(o[d]);
    v = warp_sum(v);
    const size_t bt = row / sh.NH, h = row % sh.NH, b = bt / sh.T, t = bt % sh.T;
    if (lane == 0) D[(b * sh.NH + h) * sh.T + t] = v;
}

#define BKV_BC 64  // keys per block (= ATTN_THREADS / ATTN_TPR)
#define BKV_BR 32  // query rows per tile

template <int HSP>
constexpr size_t bkv_smem() {  // sK, sV, sQ, sdO (padded), sP, sdS (padded, key-major), sL, sD, sStart
    return sizeof(float) * (2 * (size_t)(BKV_BC + BKV_BR) * (HSP + 1) + 2 * BKV_BC * (BKV_BR + 1) + 3 * BKV_BR);
}

// dK, dV of one key tile and kv head into dqkv (B,T,(NH+2KVH)*HS). Grid (ceil(T/BKV_BC), KVH, B).
// A thread owns key row j = j0 + r and columns c + TPR u of dK and dV, summed over the query heads of
// the group and every query row i >= j0.
template <typename floatX, int HSP>
__global__ void __launch_bounds__(ATTN_THREADS) attn_bwd_dkdv_kernel(floatX *dqkv, const floatX *dout,
                                                                     const floatX *qkv, const float *lse,
                                                                     const float *D, struct attn_shape sh) {
    LLAMAC_DYNAMIC_SMEM(float, smem);
    constexpr int KP = HSP + 1, PP = BKV_BR + 1, NS = BKV_BR / ATTN_TPR, NO = HSP / ATTN_TPR;
    float *sK = smem, *sV = sK + BKV_BC * KP, *sQ = sV + BKV_BC * KP, *sdO = sQ + BKV_BR * KP;
    float *sP = sdO + BKV_BR * KP, *sdS = sP + BKV_BC * PP, *sL = sdS + BKV_BC * PP, *sD = sL + BKV_BR;
    int *sStart = (int *)(sD + BKV_BR);  // the query rows' document starts
    const int T = sh.T, HS = sh.HS, NH = sh.NH, KVH = sh.KVH, group = NH / KVH;
    const int kt = gridDim.x - 1 - blockIdx.x, kvh = blockIdx.y, b = blockIdx.z, j0 = kt * BKV_BC;
    const size_t S = (size_t)(NH + 2 * KVH) * HS;
    const floatX *base = qkv + (size_t)b * T * S, *dbase = dout + (size_t)b * T * NH * HS;
    const int r = threadIdx.x / ATTN_TPR, c = threadIdx.x % ATTN_TPR, j = j0 + r;
    const float scale = 1.0f / sqrtf((float)HS), sc = ATTN_LOG2E * scale;
    const int *starts = doc_row(sh, b);

    load_tile<floatX, HSP>(sK, KP, base + (size_t)(NH + kvh) * HS, S, j0, BKV_BC, T, HS);
    load_tile<floatX, HSP>(sV, KP, base + (size_t)(NH + KVH + kvh) * HS, S, j0, BKV_BC, T, HS);
    float dk[NO], dv[NO];
    ATTN_UNROLL
    for (int u = 0; u < NO; u++) dk[u] = dv[u] = 0.0f;

    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        const float *lrow = lse + ((size_t)b * NH + h) * T, *drow = D + ((size_t)b * NH + h) * T;
        for (int i0 = j0 / BKV_BR * BKV_BR; i0 < T; i0 += BKV_BR) {  // query tiles from the diagonal down
            __syncthreads();  // the previous tile's sQ, sdO, sP, sdS are read
            load_tile<floatX, HSP>(sQ, KP, base + (size_t)h * HS, S, i0, BKV_BR, T, HS);
            load_tile<floatX, HSP>(sdO, KP, dbase + (size_t)h * HS, (size_t)NH * HS, i0, BKV_BR, T, HS);
            for (int k = threadIdx.x; k < BKV_BR; k += blockDim.x) {
                sL[k] = i0 + k < T ? lrow[i0 + k] * ATTN_LOG2E : 0.0f;
                sD[k] = i0 + k < T ? drow[i0 + k] : 0.0f;
                sStart[k] = doc_start(starts, T, i0 + k);
            }
            __syncthreads();

            float s[NS], dp[NS];
            mm_abt(s, sK + r * KP, sQ, KP, c, HS);    // S^T = K Q^T
            mm_abt(dp, sV + r * KP, sdO, KP, c, HS);  // dP^T = V dO^T
            ATTN_UNROLL
            for (int t = 0; t < NS; t++) {
                const int k = c + ATTN_TPR * t;
                const float p = allowed(i0 + k, j, T, sStart[k]) ? exp2f(s[t] * sc - sL[k]) : 0.0f;
                sP[r * PP + k] = p;
                sdS[r * PP + k] = p * (dp[t] - sD[k]);
            }
            __syncwarp();  // the row's P^T and dS^T are written by its TPR lanes, all in this warp
            mm_ab(dv, sP + r * PP, sdO, KP, BKV_BR, c);  // dV += P^T dO
            mm_ab(dk, sdS + r * PP, sQ, KP, BKV_BR, c);  // dK += dS^T Q
        }
    }

    if (j >= T) return;
    floatX *drow = dqkv + ((size_t)b * T + j) * S;
    ATTN_UNROLL
    for (int u = 0; u < NO; u++) {
        const int d = c + ATTN_TPR * u;
        if (d < HS) {
            drow[(size_t)(NH + kvh) * HS + d] = from_f<floatX>(dk[u] * scale);
            drow[(size_t)(NH + KVH + kvh) * HS + d] = from_f<floatX>(dv[u]);
        }
    }
}

#define BQ_BR 64  // query rows per block (= ATTN_THREADS / ATTN_TPR)
#define BQ_BC 32  // keys per tile

template <int HSP>
constexpr size_t bq_smem() {  // sQ, sdO, sK, sV (padded), sdS (padded)
    return sizeof(float) * (2 * (size_t)(BQ_BR + BQ_BC) * (HSP + 1) + BQ_BR * (BQ_BC + 1));
}

// dQ of one query tile and head into dqkv. Grid (ceil(T/BQ_BR), NH, B). A thread owns query row
// i = q0 + r and columns c + TPR u of dQ.
template <typename floatX, int HSP>
__global__ void __launch_bounds__(ATTN_THREADS) attn_bwd_dq_kernel(floatX *dqkv, const floatX *dout,
                                                                   const floatX *qkv, const float *lse,
                                                                   const float *D, struct attn_shape sh) {
    LLAMAC_DYNAMIC_SMEM(float, smem);
    constexpr int KP = HSP + 1, SP = BQ_BC + 1, NS = BQ_BC / ATTN_TPR, NO = HSP / ATTN_TPR;
    float *sQ = smem, *sdO = sQ + BQ_BR * KP, *sK = sdO + BQ_BR * KP, *sV = sK + BQ_BC * KP;
    float *sdS = sV + BQ_BC * KP;
    const int T = sh.T, HS = sh.HS, NH = sh.NH, KVH = sh.KVH;
    const int qt = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int kvh = h / (NH / KVH), q0 = qt * BQ_BR;
    const size_t S = (size_t)(NH + 2 * KVH) * HS;
    const floatX *base = qkv + (size_t)b * T * S;
    const int r = threadIdx.x / ATTN_TPR, c = threadIdx.x % ATTN_TPR, i = q0 + r;
    const float scale = 1.0f / sqrtf((float)HS), sc = ATTN_LOG2E * scale;
    const float L = i < T ? lse[((size_t)b * NH + h) * T + i] * ATTN_LOG2E : 0.0f;
    const float Di = i < T ? D[((size_t)b * NH + h) * T + i] : 0.0f;
    const int ds = doc_start(doc_row(sh, b), T, i);

    load_tile<floatX, HSP>(sQ, KP, base + (size_t)h * HS, S, q0, BQ_BR, T, HS);
    load_tile<floatX, HSP>(sdO, KP, dout + (size_t)b * T * NH * HS + (size_t)h * HS, (size_t)NH * HS, q0, BQ_BR,
                           T, HS);
    float dq[NO];
    ATTN_UNROLL
    for (int u = 0; u < NO; u++) dq[u] = 0.0f;

    const int nk = min(q0 + BQ_BR - 1, T - 1) / BQ_BC + 1;  // key tiles up to the diagonal
    for (int kt = 0; kt < nk; kt++) {
        const int j0 = kt * BQ_BC;
        __syncthreads();  // the previous tile's sK, sV, sdS are read
        load_tile<floatX, HSP>(sK, KP, base + (size_t)(NH + kvh) * HS, S, j0, BQ_BC, T, HS);
        load_tile<floatX, HSP>(sV, KP, base + (size_t)(NH + KVH + kvh) * HS, S, j0, BQ_BC, T, HS);
        __syncthreads();

        float s[NS], dp[NS];
        mm_abt(s, sQ + r * KP, sK, KP, c, HS);    // S = Q K^T
        mm_abt(dp, sdO + r * KP, sV, KP, c, HS);  // dP = dO V^T
        ATTN_UNROLL
        for (int t = 0; t < NS; t++) {
            const int k = c + ATTN_TPR * t;
            const float p = allowed(i, j0 + k, T, ds) ? exp2f(s[t] * sc - L) : 0.0f;
            sdS[r * SP + k] = p * (dp[t] - Di);
        }
        __syncwarp();  // the row's dS is written by its TPR lanes, all in this warp
        mm_ab(dq, sdS + r * SP, sK, KP, BQ_BC, c);  // dQ += dS K
    }

    if (i >= T) return;
    floatX *drow = dqkv + ((size_t)b * T + i) * S + (size_t)h * HS;
    ATTN_UNROLL
    for (int u = 0; u < NO; u++) {
        const int d = c + ATTN_TPR * u;
        if (d < HS) drow[d] = from_f<floatX>(dq[u] * scale);
    }
}

// ---------------------------------------------------------------------------------------------------
// Tensor-core kernels (bf16 precision): the same three passes on mma.sync m16n8k16 (tensor_core.cuh)

#define TC_THREADS 128  // four warps; a warp owns 16 rows of every tile product
#define TC_FWD_BR 64    // query rows per block (forward, dQ)
#define TC_FWD_BC 64    // keys per tile (forward)
#define TC_BKV_BC 64    // keys per block (dK dV)
#define TC_BKV_BR 32    // query rows per tile (dK dV)
#define TC_BQ_BC 32     // keys per tile (dQ)

typedef __nv_bfloat16 bf16;

// Starts loading rows [row0, row0+n) of a (T, stride) bf16 array, HS columns, into dst (n, pitch) with
// 16-byte cp.async copies (completed by cp_async_wait); rows at or past T and columns HS..HSP-1 are
// zeroed by plain stores. src and stride are 16-byte aligned (checked by the launcher), HS is a
// multiple of 16.
template <int HSP>
__device__ void tc_load_tile(bf16 *dst, int pitch, const bf16 *src, size_t stride, int row0, int n, int T, int HS) {
    constexpr int CH = HSP / 8;  // chunks of 8 bf16 per row
    for (int idx = threadIdx.x; idx < n * CH; idx += blockDim.x) {
        const int r = idx / CH, d = idx % CH * 8, row = row0 + r;
        if (row < T && d < HS) cp_async_16(dst + r * pitch + d, src + (size_t)row * stride + d);
        else *(uint4 *)(dst + r * pitch + d) = make_uint4(0, 0, 0, 0);
    }
}

template <int HSP>
constexpr size_t tc_fwd_smem() {  // sQ, then sK, sV twice (double-buffered): (64, HSP + 8) bf16 each
    return sizeof(bf16) * 5 * (size_t)TC_FWD_BR * (HSP + 8);
}

// out (B,T,NH*HS), lse (B,NH,T) from qkv (B,T,(NH+2KVH)*HS). Grid (ceil(T/64), NH, B), 128 threads.
// Warp w owns query rows q0 + 16w .. +15; lane 4g+q holds rows g and g+8 of them (C fragment layout).
// Key/value tiles are double-buffered: tile kt+1 is in flight (cp.async) while tile kt is computed.
template <int HSP>
__global__ void __launch_bounds__(TC_THREADS)
    attn_fwd_tc_kernel(bf16 *out, float *lse, const bf16 *qkv, struct attn_shape sh) {
    LLAMAC_DYNAMIC_SMEM(uint4, tc_smem);  // 16-byte aligned for cp.async and ldmatrix
    bf16 *smem = (bf16 *)tc_smem;
    constexpr int P = HSP + 8, KS = HSP / 16, NT = TC_FWD_BC / 8, DT = HSP / 8, TILE = TC_FWD_BC * P;
    bf16 *sQ = smem, *sKV = sQ + TC_FWD_BR * P;  // buffer u: sK = sKV + 2u TILE, sV = sK + TILE
    const int T = sh.T, HS = sh.HS, NH = sh.NH, KVH = sh.KVH;
    const int qt = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int kvh = h / (NH / KVH), q0 = qt * TC_FWD_BR;
    const size_t S = (size_t)(NH + 2 * KVH) * HS;
    const bf16 *base = qkv + (size_t)b * T * S, *kbase = base + (size_t)(NH + kvh) * HS,
               *vbase = base + (size_t)(NH + KVH + kvh) * HS;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
    const int w0 = q0 + 16 * warp, i0 = w0 + g, i1 = i0 + 8;  // this warp's first row, this lane's rows
    const int *starts = doc_row(sh, b), ds0 = doc_start(starts, T, i0), ds1 = doc_start(starts, T, i1);
    const float sc = ATTN_LOG2E / sqrtf((float)HS);

    tc_load_tile<HSP>(sQ, P, base + (size_t)h * HS, S, q0, TC_FWD_BR, T, HS);
    tc_load_tile<HSP>(sKV, P, kbase, S, 0, TC_FWD_BC, T, HS);
    tc_load_tile<HSP>(sKV + TILE, P, vbase, S, 0, TC_FWD_BC, T, HS);
    cp_async_commit();
    uint32_t qf[KS][4];
    float o[DT][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    ATTN_UNROLL
    for (int dt = 0; dt < DT; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;

    const int nk = min(q0 + TC_FWD_BR - 1, T - 1) / TC_FWD_BC + 1;  // key tiles up to the diagonal
    for (int kt = 0; kt < nk; kt++) {
        const int j0 = kt * TC_FWD_BC;
        const bf16 *sK = sKV + 2 * (kt & 1) * TILE, *sV = sK + TILE;
        if (kt + 1 < nk) {  // the other buffer was last read in iteration kt-1, before its closing barrier
            bf16 *nK = sKV + 2 * ((kt + 1) & 1) * TILE;
            tc_load_tile<HSP>(nK, P, kbase, S, j0 + TC_FWD_BC, TC_FWD_BC, T, HS);
            tc_load_tile<HSP>(nK + TILE, P, vbase, S, j0 + TC_FWD_BC, TC_FWD_BC, T, HS);
        }
        cp_async_commit();
        cp_async_wait<1>();  // everything but the tile just issued has landed
        __syncthreads();
        if (kt == 0) {
            ATTN_UNROLL
            for (int kk = 0; kk < KS; kk++) ldmatrix_x4(qf[kk], ldsm_a(sQ, P, 16 * warp, 16 * kk, lane));
        }
        if (tile_any_visible(starts, T, w0, w0 + 15, j0, j0 + TC_FWD_BC - 1)) {  // warp-uniform
            float s[NT][4];
            ATTN_UNROLL
            for (int nt = 0; nt < NT; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
            ATTN_UNROLL
            for (int kk = 0; kk < KS; kk++) {
                ATTN_UNROLL
                for (int nt = 0; nt < NT; nt += 2) {  // S = Q K^T, two n-tiles of keys per ldmatrix
                    uint32_t kf[4];
                    ldmatrix_x4(kf, ldsm_bt(sK, P, 8 * nt, 16 * kk, lane));
                    mma_bf16_16816(s[nt], qf[kk], kf, s[nt]);
                    mma_bf16_16816(s[nt + 1], qf[kk], kf + 2, s[nt + 1]);
                }
            }
            // scores in the log2 domain, masked unless the whole tile is visible to this warp's rows
            const bool full =
                tile_all_visible(starts, T, w0, w0 + 15, j0, j0 + TC_FWD_BC - 1) && w0 + 15 < T && j0 + TC_FWD_BC <= T;
            float mx[2] = {-INFINITY, -INFINITY};
            ATTN_UNROLL
            for (int nt = 0; nt < NT; nt++) {
                ATTN_UNROLL
                for (int e = 0; e < 4; e++) {
                    const int i = e < 2 ? i0 : i1, j = j0 + 8 * nt + 2 * q + (e & 1);
                    s[nt][e] = (full || allowed(i, j, T, e < 2 ? ds0 : ds1)) ? s[nt][e] * sc : -INFINITY;
                    mx[e / 2] = fmaxf(mx[e / 2], s[nt][e]);
                }
            }
            float alpha[2], m_ref[2], sum[2] = {0.0f, 0.0f};
            ATTN_UNROLL
            for (int r = 0; r < 2; r++) {
                const float m_new = fmaxf(m[r], row_max(mx[r]));
                m_ref[r] = m_new == -INFINITY ? 0.0f : m_new;  // a row with nothing visible yet stays 0
                alpha[r] = exp2f(m[r] - m_ref[r]);
                m[r] = m_new;
            }
            ATTN_UNROLL
            for (int nt = 0; nt < NT; nt++) {
                ATTN_UNROLL
                for (int e = 0; e < 4; e++) {
                    s[nt][e] = exp2f(s[nt][e] - m_ref[e / 2]);
                    sum[e / 2] += s[nt][e];
                }
            }
            ATTN_UNROLL
            for (int r = 0; r < 2; r++) l[r] = l[r] * alpha[r] + row_sum(sum[r]);
            ATTN_UNROLL
            for (int dt = 0; dt < DT; dt++) {
                o[dt][0] *= alpha[0], o[dt][1] *= alpha[0];
                o[dt][2] *= alpha[1], o[dt][3] *= alpha[1];
            }
            ATTN_UNROLL
            for (int kk = 0; kk < TC_FWD_BC / 16; kk++) {  // O += P V, P packed to bf16 from the S fragments
                uint32_t pa[4];
                pack_a_from_c(pa, s[2 * kk], s[2 * kk + 1]);
                ATTN_UNROLL
                for (int dt = 0; dt < DT; dt += 2) {
                    uint32_t vf[4];
                    ldmatrix_x4_trans(vf, ldsm_a(sV, P, 16 * kk, 8 * dt, lane));
                    mma_bf16_16816(o[dt], pa, vf, o[dt]);
                    mma_bf16_16816(o[dt + 1], pa, vf + 2, o[dt + 1]);
                }
            }
        }
        __syncthreads();  // this buffer is read: the next iteration but one refills it
    }

    ATTN_UNROLL
    for (int r = 0; r < 2; r++) {
        const int i = r ? i1 : i0;
        if (i >= T) continue;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        bf16 *orow = out + ((size_t)b * T + i) * NH * HS + (size_t)h * HS;
        ATTN_UNROLL
        for (int dt = 0; dt < DT; dt++) {
            const int d = 8 * dt + 2 * q;
            if (d < HS) *(uint32_t *)(orow + d) = pack_bf16(o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
        }
        if (q == 0) lse[((size_t)b * NH + h) * T + i] = l[r] > 0.0f ? (m[r] + log2f(l[r])) * ATTN_LN2 : -INFINITY;
    }
}

template <int HSP>
constexpr size_t tc_bkv_smem() {  // sK, sV (64 rows), then sQ, sdO (32 rows) twice, (HSP + 8) bf16 per row;
                                  // sL, sD twice
    return sizeof(bf16) * (2 * (size_t)TC_BKV_BC + 4 * TC_BKV_BR) * (HSP + 8) + sizeof(float) * 4 * TC_BKV_BR;
}

// dK, dV of one 64-key tile and kv head. Grid (ceil(T/64), KVH, B), 128 threads. Warp w owns key rows
// j0 + 16w .. +15 of S^T = K Q^T, dP^T = V dO^T, and of the accumulators dK, dV (fp32, registers),
// summed over the query heads of the group and the 32-row query tiles from the diagonal down: one
// sequence of (head, query tile) steps whose Q, dO, lse and D tiles are double-buffered.
template <int HSP>
__global__ void __launch_bounds__(TC_THREADS) attn_bwd_dkdv_tc_kernel(bf16 *dqkv, const bf16 *dout, const bf16 *qkv,
                                                                       const float *lse, const float *D,
                                                                       struct attn_shape sh) {
    LLAMAC_DYNAMIC_SMEM(uint4, tc_smem);  // 16-byte aligned for cp.async and ldmatrix
    bf16 *smem = (bf16 *)tc_smem;
    constexpr int P = HSP + 8, KS = HSP / 16, NT = TC_BKV_BR / 8, DT = HSP / 8, QT = TC_BKV_BR * P;
    bf16 *sK = smem, *sV = sK + TC_BKV_BC * P, *sQO = sV + TC_BKV_BC * P;  // buffer u: sQ = sQO + 2u QT, sdO = sQ + QT
    float *sLD = (float *)(sQO + 4 * QT);                                 // buffer u: sL = sLD + 2u BR, sD = sL + BR
    const int T = sh.T, HS = sh.HS, NH = sh.NH, KVH = sh.KVH, group = NH / KVH;
    const int kt = gridDim.x - 1 - blockIdx.x, kvh = blockIdx.y, b = blockIdx.z, j0 = kt * TC_BKV_BC;
    const size_t S = (size_t)(NH + 2 * KVH) * HS;
    const bf16 *base = qkv + (size_t)b * T * S, *dbase = dout + (size_t)b * T * NH * HS;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
    const int w0 = j0 + 16 * warp, ja = w0 + g, jb = ja + 8;  // this warp's first key, this lane's keys
    const int *starts = doc_row(sh, b);
    const float scale = 1.0f / sqrtf((float)HS), sc = ATTN_LOG2E * scale;
    const int istart = j0 / TC_BKV_BR * TC_BKV_BR, ni = (T - istart + TC_BKV_BR - 1) / TC_BKV_BR, nsteps = group * ni;

    // Starts loading step `it` (query head kvh*group + it/ni, query tile istart + (it%ni)*BR) into buffer u.
    auto load_step = [&](int it, int u) {
        const int h = kvh * group + it / ni, i0 = istart + it % ni * TC_BKV_BR;
        bf16 *dQ = sQO + 2 * u * QT;
        tc_load_tile<HSP>(dQ, P, base + (size_t)h * HS, S, i0, TC_BKV_BR, T, HS);
        tc_load_tile<HSP>(dQ + QT, P, dbase + (size_t)h * HS, (size_t)NH * HS, i0, TC_BKV_BR, T, HS);
        const float *lrow = lse + ((size_t)b * NH + h) * T, *drow = D + ((size_t)b * NH + h) * T;
        float *dL = sLD + 2 * u * TC_BKV_BR;
        for (int k = threadIdx.x; k < TC_BKV_BR; k += blockDim.x) {
            dL[k] = i0 + k < T ? lrow[i0 + k] * ATTN_LOG2E : 0.0f;
            dL[TC_BKV_BR + k] = i0 + k < T ? drow[i0 + k] : 0.0f;
        }
    };
    tc_load_tile<HSP>(sK, P, base + (size_t)(NH + kvh) * HS, S, j0, TC_BKV_BC, T, HS);
    tc_load_tile<HSP>(sV, P, base + (size_t)(NH + KVH + kvh) * HS, S, j0, TC_BKV_BC, T, HS);
    load_step(0, 0);
    cp_async_commit();
    float dk[DT][4], dv[DT][4];
    ATTN_UNROLL
    for (int dt = 0; dt < DT; dt++)
        ATTN_UNROLL
        for (int e = 0; e < 4; e++) dk[dt][e] = dv[dt][e] = 0.0f;

    for (int it = 0; it < nsteps; it++) {
        const int u = it & 1, i0 = istart + it % ni * TC_BKV_BR;
        const bf16 *sQ = sQO + 2 * u * QT, *sdO = sQ + QT;
        const float *sL = sLD + 2 * u * TC_BKV_BR, *sD = sL + TC_BKV_BR;
        if (it + 1 < nsteps) load_step(it + 1, u ^ 1);  // that buffer was read in step it-1, before its barrier
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        if (tile_any_visible(starts, T, i0, i0 + TC_BKV_BR - 1, w0, w0 + 15)) {  // warp-uniform
            float st[NT][4], dpt[NT][4];
            ATTN_UNROLL
            for (int nt = 0; nt < NT; nt++)
                ATTN_UNROLL
                for (int e = 0; e < 4; e++) st[nt][e] = dpt[nt][e] = 0.0f;
            ATTN_UNROLL
            for (int kk = 0; kk < KS; kk++) {
                uint32_t ka[4], va[4];
                ldmatrix_x4(ka, ldsm_a(sK, P, 16 * warp, 16 * kk, lane));
                ldmatrix_x4(va, ldsm_a(sV, P, 16 * warp, 16 * kk, lane));
                ATTN_UNROLL
                for (int nt = 0; nt < NT; nt += 2) {
                    uint32_t bq[4], bo[4];
                    ldmatrix_x4(bq, ldsm_bt(sQ, P, 8 * nt, 16 * kk, lane));
                    ldmatrix_x4(bo, ldsm_bt(sdO, P, 8 * nt, 16 * kk, lane));
                    mma_bf16_16816(st[nt], ka, bq, st[nt]);  // S^T = K Q^T
                    mma_bf16_16816(st[nt + 1], ka, bq + 2, st[nt + 1]);
                    mma_bf16_16816(dpt[nt], va, bo, dpt[nt]);  // dP^T = V dO^T
                    mma_bf16_16816(dpt[nt + 1], va, bo + 2, dpt[nt + 1]);
                }
            }
            // P^T and dS^T = P^T (dP^T - D) in place of st and dpt; element (key j, query i0 + k), masked
            // unless the whole tile is visible to this warp's keys
            const bool full = tile_all_visible(starts, T, i0, i0 + TC_BKV_BR - 1, w0, w0 + 15) &&
                              i0 + TC_BKV_BR <= T && w0 + 16 <= T;
            ATTN_UNROLL
            for (int nt = 0; nt < NT; nt++) {
                ATTN_UNROLL
                for (int e = 0; e < 4; e++) {
                    const int k = 8 * nt + 2 * q + (e & 1), j = e < 2 ? ja : jb;
                    const bool vis = full || allowed(i0 + k, j, T, doc_start(starts, T, i0 + k));
                    const float p = vis ? exp2f(st[nt][e] * sc - sL[k]) : 0.0f;
                    st[nt][e] = p;
                    dpt[nt][e] = p * (dpt[nt][e] - sD[k]);
                }
            }
            ATTN_UNROLL
            for (int kk = 0; kk < TC_BKV_BR / 16; kk++) {  // dV += P^T dO, dK += dS^T Q
                uint32_t pa[4], sa[4];
                pack_a_from_c(pa, st[2 * kk], st[2 * kk + 1]);
                pack_a_from_c(sa, dpt[2 * kk], dpt[2 * kk + 1]);
                ATTN_UNROLL
                for (int dt = 0; dt < DT; dt += 2) {
                    uint32_t bo[4], bq[4];
                    ldmatrix_x4_trans(bo, ldsm_a(sdO, P, 16 * kk, 8 * dt, lane));
                    ldmatrix_x4_trans(bq, ldsm_a(sQ, P, 16 * kk, 8 * dt, lane));
                    mma_bf16_16816(dv[dt], pa, bo, dv[dt]);
                    mma_bf16_16816(dv[dt + 1], pa, bo + 2, dv[dt + 1]);
                    mma_bf16_16816(dk[dt], sa, bq, dk[dt]);
                    mma_bf16_16816(dk[dt + 1], sa, bq + 2, dk[dt + 1]);
                }
            }
        }
        __syncthreads();  // this buffer is read: step it+2 refills it
    }

    ATTN_UNROLL
    for (int r = 0; r < 2; r++) {
        const int j = r ? jb : ja;
        if (j >= T) continue;
        bf16 *row = dqkv + ((size_t)b * T + j) * S;
        ATTN_UNROLL
        for (int dt = 0; dt < DT; dt++) {
            const int d = 8 * dt + 2 * q;
            if (d >= HS) continue;
            *(uint32_t *)(row + (size_t)(NH + kvh) * HS + d) = pack_bf16(dk[dt][2 * r] * scale, dk[dt][2 * r + 1] * scale);
            *(uint32_t *)(row + (size_t)(NH + KVH + kvh) * HS + d) = pack_bf16(dv[dt][2 * r], dv[dt][2 * r + 1]);
        }
    }
}

template <int HSP>
constexpr size_t tc_bq_smem() {  // sQ, sdO (64 rows), then sK, sV (32 rows) twice, (HSP + 8) bf16 per row
    return sizeof(bf16) * (2 * (size_t)TC_FWD_BR + 4 * TC_BQ_BC) * (HSP + 8);
}

// dQ of one 64-row query tile and head. Grid (ceil(T/64), NH, B), 128 threads. Warp w owns query rows
// q0 + 16w .. +15 of S, dP and the accumulator dQ, over 32-key tiles up to the diagonal (double-buffered).
template <int HSP>
__global__ void __launch_bounds__(TC_THREADS) attn_bwd_dq_tc_kernel(bf16 *dqkv, const bf16 *dout, const bf16 *qkv,
                                                                     const float *lse, const float *D,
                                                                     struct attn_shape sh) {
    LLAMAC_DYNAMIC_SMEM(uint4, tc_smem);  // 16-byte aligned for cp.async and ldmatrix
    bf16 *smem = (bf16 *)tc_smem;
    constexpr int P = HSP + 8, KS = HSP / 16, NT = TC_BQ_BC / 8, DT = HSP / 8, KT = TC_BQ_BC * P;
    bf16 *sQ = smem, *sdO = sQ + TC_FWD_BR * P, *sKV = sdO + TC_FWD_BR * P;  // buffer u: sK = sKV + 2u KT, sV = sK + KT
    const int T = sh.T, HS = sh.HS, NH = sh.NH, KVH = sh.KVH;
    const int qt = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int kvh = h / (NH / KVH), q0 = qt * TC_FWD_BR;
    const size_t S = (size_t)(NH + 2 * KVH) * HS;
    const bf16 *base = qkv + (size_t)b * T * S, *kbase = base + (size_t)(NH + kvh) * HS,
               *vbase = base + (size_t)(NH + KVH + kvh) * HS;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
    const int w0 = q0 + 16 * warp, i0 = w0 + g, i1 = i0 + 8;
    const int *starts = doc_row(sh, b), ds0 = doc_start(starts, T, i0), ds1 = doc_start(starts, T, i1);
    const float scale = 1.0f / sqrtf((float)HS), sc = ATTN_LOG2E * scale;
    const float *lrow = lse + ((size_t)b * NH + h) * T, *drow = D + ((size_t)b * NH + h) * T;
    const float L[2] = {i0 < T ? lrow[i0] * ATTN_LOG2E : 0.0f, i1 < T ? lrow[i1] * ATTN_LOG2E : 0.0f};
    const float Dr[2] = {i0 < T ? drow[i0] : 0.0f, i1 < T ? drow[i1] : 0.0f};

    tc_load_tile<HSP>(sQ, P, base + (size_t)h * HS, S, q0, TC_FWD_BR, T, HS);
    tc_load_tile<HSP>(sdO, P, dout + (size_t)b * T * NH * HS + (size_t)h * HS, (size_t)NH * HS, q0, TC_FWD_BR, T, HS);
    tc_load_tile<HSP>(sKV, P, kbase, S, 0, TC_BQ_BC, T, HS);
    tc_load_tile<HSP>(sKV + KT, P, vbase, S, 0, TC_BQ_BC, T, HS);
    cp_async_commit();
    float dq[DT][4];
    ATTN_UNROLL
    for (int dt = 0; dt < DT; dt++) dq[dt][0] = dq[dt][1] = dq[dt][2] = dq[dt][3] = 0.0f;

    const int nk = min(q0 + TC_FWD_BR - 1, T - 1) / TC_BQ_BC + 1;  // key tiles up to the diagonal
    for (int kt = 0; kt < nk; kt++) {
        const int j0 = kt * TC_BQ_BC;
        const bf16 *sK = sKV + 2 * (kt & 1) * KT, *sV = sK + KT;
        if (kt + 1 < nk) {  // the other buffer was last read in iteration kt-1, before its closing barrier
            bf16 *nK = sKV + 2 * ((kt + 1) & 1) * KT;
            tc_load_tile<HSP>(nK, P, kbase, S, j0 + TC_BQ_BC, TC_BQ_BC, T, HS);
            tc_load_tile<HSP>(nK + KT, P, vbase, S, j0 + TC_BQ_BC, TC_BQ_BC, T, HS);
        }
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        if (tile_any_visible(starts, T, w0, w0 + 15, j0, j0 + TC_BQ_BC - 1)) {  // warp-uniform
            float s[NT][4], dp[NT][4];
            ATTN_UNROLL
            for (int nt = 0; nt < NT; nt++)
                ATTN_UNROLL
                for (int e = 0; e < 4; e++) s[nt][e] = dp[nt][e] = 0.0f;
            ATTN_UNROLL
            for (int kk = 0; kk < KS; kk++) {
                uint32_t qa[4], oa[4];
                ldmatrix_x4(qa, ldsm_a(sQ, P, 16 * warp, 16 * kk, lane));
                ldmatrix_x4(oa, ldsm_a(sdO, P, 16 * warp, 16 * kk, lane));
                ATTN_UNROLL
                for (int nt = 0; nt < NT; nt += 2) {
                    uint32_t bk[4], bv[4];
                    ldmatrix_x4(bk, ldsm_bt(sK, P, 8 * nt, 16 * kk, lane));
                    ldmatrix_x4(bv, ldsm_bt(sV, P, 8 * nt, 16 * kk, lane));
                    mma_bf16_16816(s[nt], qa, bk, s[nt]);  // S = Q K^T
                    mma_bf16_16816(s[nt + 1], qa, bk + 2, s[nt + 1]);
                    mma_bf16_16816(dp[nt], oa, bv, dp[nt]);  // dP = dO V^T
                    mma_bf16_16816(dp[nt + 1], oa, bv + 2, dp[nt + 1]);
                }
            }
            ATTN_UNROLL
            for (int nt = 0; nt < NT; nt++) {  // dS = P (dP - D) in place of dp
                ATTN_UNROLL
                for (int e = 0; e < 4; e++) {
                    const int r = e / 2, i = r ? i1 : i0, j = j0 + 8 * nt + 2 * q + (e & 1);
                    const float p = allowed(i, j, T, r ? ds1 : ds0) ? exp2f(s[nt][e] * sc - L[r]) : 0.0f;
                    dp[nt][e] = p * (dp[nt][e] - Dr[r]);
                }
            }
            ATTN_UNROLL
            for (int kk = 0; kk < TC_BQ_BC / 16; kk++) {  // dQ += dS K
                uint32_t sa[4];
                pack_a_from_c(sa, dp[2 * kk], dp[2 * kk + 1]);
                ATTN_UNROLL
                for (int dt = 0; dt < DT; dt += 2) {
                    uint32_t bk[4];
                    ldmatrix_x4_trans(bk, ldsm_a(sK, P, 16 * kk, 8 * dt, lane));
                    mma_bf16_16816(dq[dt], sa, bk, dq[dt]);
                    mma_bf16_16816(dq[dt + 1], sa, bk + 2, dq[dt + 1]);
                }
            }
        }
        __syncthreads();  // this buffer is read: the next iteration but one refills it
    }

    ATTN_UNROLL
    for (int r = 0; r < 2; r++) {
        const int i = r ? i1 : i0;
        if (i >= T) continue;
        bf16 *row = dqkv + ((size_t)b * T + i) * S + (size_t)h * HS;
        ATTN_UNROLL
        for (int dt = 0; dt < DT; dt++) {
            const int d = 8 * dt + 2 * q;
            if (d < HS) *(uint32_t *)(row + d) = pack_bf16(dq[dt][2 * r] * scale, dq[dt][2 * r + 1] * scale);
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Launchers

static void check_shape(const char *op, struct attn_shape sh) {
    CHECKF(sh.HS >= 16 && sh.HS <= 128 && sh.HS % 16 == 0,
           "%s: head size %d is not supported (a multiple of 16, at most 128)", op, sh.HS);
    CHECKF(sh.KVH >= 1 && sh.NH % sh.KVH == 0, "%s: %d query heads do not split into groups of %d kv heads", op,
           sh.NH, sh.KVH);
    CHECKF(sh.B >= 1 && sh.T >= 1, "%s: empty batch (B %d, T %d)", op, sh.B, sh.T);
    CHECKF(sh.NH <= 65535 && sh.B <= 65535, "%s: NH %d or B %d above the grid limit 65535", op, sh.NH, sh.B);
}

// Allows `kernel` its dynamic shared memory: above the default 48 KiB only after opting in, and never
// above what the device allows.
template <typename K>
static void allow_smem(const struct backend *be, K kernel, size_t bytes, const char *op) {
    const size_t optin = cuda_ctx_of(be)->smem_optin;
    CHECKF(bytes <= optin, "%s: needs %zu bytes of shared memory per block, the device allows %zu", op, bytes, optin);
    if (bytes > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

// The head size rounded up to the accumulator width of the kernels: 32, 64 or 128.
static int padded_head_size(int HS) { return HS <= 32 ? 32 : HS <= 64 ? 64 : 128; }

template <typename floatX, int HSP>
static void fwd_launch(const struct backend *be, dbuf *out, dbuf *lse, const dbuf *qkv, struct attn_shape sh) {
    auto k = attn_fwd_kernel<floatX, HSP>;
    const size_t smem = fwd_smem<HSP>();
    allow_smem(be, k, smem, "attention_forward");
    dim3 grid(ceil_div(sh.T, FWD_BR), sh.NH, sh.B);
    LAUNCH(k, grid, ATTN_THREADS, smem, cuda_stream(be), (floatX *)out, (float *)lse, (const floatX *)qkv, sh);
}

// Whether the tensor-core kernels take this call: bf16 precision, and every pointer 16-byte aligned for
// the tiles' vector loads (rows are: HS is a multiple of 16). LLAMAC_ATTN_FMA=1 in the environment
// forces the fp32-FMA kernels (bench/gpu.sh compares the two).
static bool use_tensor_cores(const struct backend *be, const void *a, const void *b, const void *c, const void *d) {
    const char *e = getenv("LLAMAC_ATTN_FMA");
    const bool forced = e && *e == '1';
    const uintptr_t mis = ((uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)d) % 16;
    return is_bf16_backend(be) && !forced && mis == 0;
}

template <int HSP>
static void fwd_tc_launch(const struct backend *be, dbuf *out, dbuf *lse, const dbuf *qkv, struct attn_shape sh) {
    auto k = attn_fwd_tc_kernel<HSP>;
    const size_t smem = tc_fwd_smem<HSP>();
    allow_smem(be, k, smem, "attention_forward");
    dim3 grid(ceil_div(sh.T, TC_FWD_BR), sh.NH, sh.B);
    LAUNCH(k, grid, TC_THREADS, smem, cuda_stream(be), (bf16 *)out, (float *)lse, (const bf16 *)qkv, sh);
}

extern "C" void attention_forward_cuda(const struct backend *be, dbuf *out, dbuf *lse, const dbuf *qkv,
                                       const dbuf *docs, int B, int T, int NH, int KVH, int HS) {
    const struct attn_shape sh = {B, T, NH, KVH, HS, (const int *)docs};
    check_shape("attention_forward", sh);
    const int hsp = padded_head_size(HS);
    if (use_tensor_cores(be, out, qkv, qkv, qkv)) {
        if (hsp == 32) fwd_tc_launch<32>(be, out, lse, qkv, sh);
        else if (hsp == 64) fwd_tc_launch<64>(be, out, lse, qkv, sh);
        else fwd_tc_launch<128>(be, out, lse, qkv, sh);
        return;
    }
    DISPATCH_PRECISION(be, {
        if (hsp == 32) fwd_launch<T, 32>(be, out, lse, qkv, sh);
        else if (hsp == 64) fwd_launch<T, 64>(be, out, lse, qkv, sh);
        else fwd_launch<T, 128>(be, out, lse, qkv, sh);
    });
}

// fp32 scratch of at least n floats for D, one buffer per backend context, grown (never shrunk) on
// demand. Every op of a context runs on its one stream, so reusing the buffer across calls is ordered.
static float *attn_scratch(const struct backend *be, size_t n) {
    static struct {
        const void *ctx;
        float *p;
        size_t cap;
    } cache[4];
    int s = 0;
    while (s < 4 && cache[s].ctx && cache[s].ctx != be->ctx) s++;
    CHECKF(s < 4, "attention_backward: more than 4 CUDA contexts");
    cache[s].ctx = be->ctx;
    if (cache[s].cap < n) {
        if (cache[s].p) {
            CUDA_CHECK(cudaStreamSynchronize(cuda_stream(be)));  // an earlier backward may still read it
            CUDA_CHECK(cudaFree(cache[s].p));
        }
        CUDA_CHECK(cudaMalloc((void **)&cache[s].p, n * sizeof(float)));
        cache[s].cap = n;
    }
    return cache[s].p;
}

template <typename floatX, int HSP>
static void bwd_launch(const struct backend *be, dbuf *dqkv, const dbuf *dout, const dbuf *qkv, const dbuf *out,
                       const dbuf *lse, float *D, struct attn_shape sh) {
    cudaStream_t st = cuda_stream(be);
    const size_t rows = (size_t)sh.B * sh.T * sh.NH;
    auto kd = attn_bwd_d_kernel<floatX>;
    LAUNCH(kd, ceil_div(rows, ATTN_THREADS / 32), ATTN_THREADS, 0, st, D, (const floatX *)dout, (const floatX *)out,
           sh);

    auto kkv = attn_bwd_dkdv_kernel<floatX, HSP>;
    const size_t smem_kv = bkv_smem<HSP>();
    allow_smem(be, kkv, smem_kv, "attention_backward");
    dim3 grid_kv(ceil_div(sh.T, BKV_BC), sh.KVH, sh.B);
    LAUNCH(kkv, grid_kv, ATTN_THREADS, smem_kv, st, (floatX *)dqkv, (const floatX *)dout, (const floatX *)qkv,
           (const float *)lse, (const float *)D, sh);

    auto kq = attn_bwd_dq_kernel<floatX, HSP>;
    const size_t smem_q = bq_smem<HSP>();
    allow_smem(be, kq, smem_q, "attention_backward");
    dim3 grid_q(ceil_div(sh.T, BQ_BR), sh.NH, sh.B);
    LAUNCH(kq, grid_q, ATTN_THREADS, smem_q, st, (floatX *)dqkv, (const floatX *)dout, (const floatX *)qkv,
           (const float *)lse, (const float *)D, sh);
}

template <int HSP>
static void bwd_tc_launch(const struct backend *be, dbuf *dqkv, const dbuf *dout, const dbuf *qkv, const dbuf *out,
                          const dbuf *lse, float *D, struct attn_shape sh) {
    cudaStream_t st = cuda_stream(be);
    const size_t rows = (size_t)sh.B * sh.T * sh.NH;
    auto kd = attn_bwd_d_kernel<bf16>;
    LAUNCH(kd, ceil_div(rows, ATTN_THREADS / 32), ATTN_THREADS, 0, st, D, (const bf16 *)dout, (const bf16 *)out, sh);

    auto kkv = attn_bwd_dkdv_tc_kernel<HSP>;
    const size_t smem_kv = tc_bkv_smem<HSP>();
    allow_smem(be, kkv, smem_kv, "attention_backward");
    dim3 grid_kv(ceil_div(sh.T, TC_BKV_BC), sh.KVH, sh.B);
    LAUNCH(kkv, grid_kv, TC_THREADS, smem_kv, st, (bf16 *)dqkv, (const bf16 *)dout, (const bf16 *)qkv,
           (const float *)lse, (const float *)D, sh);

    auto kq = attn_bwd_dq_tc_kernel<HSP>;
    const size_t smem_q = tc_bq_smem<HSP>();
    allow_smem(be, kq, smem_q, "attention_backward");
    dim3 grid_q(ceil_div(sh.T, TC_FWD_BR), sh.NH, sh.B);
    LAUNCH(kq, grid_q, TC_THREADS, smem_q, st, (bf16 *)dqkv, (const bf16 *)dout, (const bf16 *)qkv,
           (const float *)lse, (const float *)D, sh);
}

extern "C" void attention_backward_cuda(const struct backend *be, dbuf *dqkv, const dbuf *dout, const dbuf *qkv,
                                        const dbuf *out, const dbuf *lse, const dbuf *docs, int B, int T, int NH,
                                        int KVH, int HS) {
    const struct attn_shape sh = {B, T, NH, KVH, HS, (const int *)docs};
    check_shape("attention_backward", sh);
    float *D = attn_scratch(be, (size_t)B * NH * T);
    const int hsp = padded_head_size(HS);
    if (use_tensor_cores(be, dqkv, dout, qkv, out)) {
        if (hsp == 32) bwd_tc_launch<32>(be, dqkv, dout, qkv, out, lse, D, sh);
        else if (hsp == 64) bwd_tc_launch<64>(be, dqkv, dout, qkv, out, lse, D, sh);
        else bwd_tc_launch<128>(be, dqkv, dout, qkv, out, lse, D, sh);
        return;
    }
    DISPATCH_PRECISION(be, {
        if (hsp == 32) bwd_launch<T, 32>(be, dqkv, dout, qkv, out, lse, D, sh);
        else if (hsp == 64) bwd_launch<T, 64>(be, dqkv, dout, qkv, out, lse, D, sh);
        else bwd_launch<T, 128>(be, dqkv, dout, qkv, out, lse, D, sh);
    });
}
