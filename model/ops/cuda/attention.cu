// Causal self-attention with grouped-query heads on the GPU, FlashAttention-2 style with plain fp32 FMA
// (the CPU oracle is model/ops/cpu/attention.c; the math here is the same, reordered into tiles).
//
// Precision. qkv, out, dout and dqkv are the compute type T of the backend (__nv_bfloat16 or float);
// lse (B,NH,T) is fp32 on both. Tiles are converted to fp32 as they are loaded into shared memory and
// every product, exponential and accumulator is fp32; results are rounded to T once, when stored.
//
// Layout. qkv (B,T,(NH+2KVH)*HS) holds per row the NH query heads, then KVH key heads, then KVH value
// heads; query head h reads kv head h / (NH/KVH). out and dout (B,T,NH*HS). The (T,T) score matrix is
// never stored: forward keeps each row's log-sum-exp, backward recomputes the probabilities from it.
//
// Kernels (256 threads each; a tile row is handled by TPR = 4 consecutive lanes of one warp, so that the
// row reductions of the softmax are two __shfl_xor_sync and no shared memory):
//   forward   grid (ceil(T/64), NH, B): a block per 64-row query tile of one head. It loops over 64-key
//             tiles up to the diagonal (tiles above it are skipped), keeping the running max m, sum l
//             and output accumulator O of its rows in registers (online softmax, log2 domain), and
//             writes out and lse at the end.
//   D         a warp per (b,t,h) row: D = rowsum(dO * O) (fp32 scratch, B*NH*T floats, kept per context).
//   dK,dV     grid (ceil(T/64), KVH, B): a block per 64-key tile of one kv head. It loops over the query
//             heads of its GQA group and over the 32-row query tiles from the diagonal down, recomputing
//             P^T and dS^T, and accumulates dK and dV in registers: the group shares one accumulator,
//             so GQA needs no atomics and no copies of k/v per query head.
//   dQ        grid (ceil(T/64), NH, B): a block per 64-row query tile, looping over 32-key tiles up to
//             the diagonal and recomputing P and dS (a separate pass instead of atomics: deterministic).
// Block indices run from the last tile down so the longest causal rows start first.
//
// Why these tiles: with TPR = 4 a thread holds HSP/4 output accumulators (HSP, the head size rounded up
// to 32, 64 or 128: at most 32 floats) plus a few score fragments, which keeps register use well under
// the 255 limit without spilling; shared memory holds fp32 tiles padded by one column (conflict-free
// column reads), up to ~115 KiB per block for HS 128, which needs the opt-in above 48 KiB.
//
// Memory traffic (HS elements of size e per row): forward reads Q once and K, V once per query tile of
// 64 rows that sees them, about (T/64)/2 times per kv head and query head on average, and writes out
// and lse once. Backward reads Q and dO once per kv tile (about (T/64)/2 times), K and V once per query
// tile in the dQ pass, writes dqkv once, and reads/writes D (4 B per row and head). Nothing of size T^2.
//
// The two inner tile products (mm_abt: a fragment of A B^T; mm_ab: accumulate A B) are the only places
// that do the O(T^2 HS) arithmetic: a later version replaces them with mma.sync tensor-core fragments.
// Masking is in one function, visible(i, j, ds): ds is the document start of query row i (docs[b,i] for
// packed windows, core/backend.h; 0 without docs), so a row sees keys j in [ds, i] only.
#include <math.h>

#include "model/ops/cuda/common.cuh"
#include "model/ops/cuda/cuda_ops.h"

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

// The document start of query position i of row b (0 without docs, or past the end of the row).
__device__ __forceinline__ int doc_start(const struct attn_shape &sh, int b, int i) {
    return sh.docs && i < sh.T ? sh.docs[(size_t)b * sh.T + i] : 0;
}

// Whether query position i, whose document starts at ds, may attend to key position j (both in [0,T)).
__device__ __forceinline__ bool visible(int i, int j, int ds) { return j <= i && j >= ds; }

__device__ __forceinline__ bool allowed(int i, int j, int T, int ds) { return i < T && j < T && visible(i, j, ds); }

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
    const int ds = doc_start(sh, b, i);

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
constexpr size_t bkv_smem() {  // sK, sV, sQ, sdO (padded), sP, sdS (padded, key-major), sL, sD
    return sizeof(float) * (2 * (size_t)(BKV_BC + BKV_BR) * (HSP + 1) + 2 * BKV_BC * (BKV_BR + 1) + 2 * BKV_BR);
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
    const int T = sh.T, HS = sh.HS, NH = sh.NH, KVH = sh.KVH, group = NH / KVH;
    const int kt = gridDim.x - 1 - blockIdx.x, kvh = blockIdx.y, b = blockIdx.z, j0 = kt * BKV_BC;
    const size_t S = (size_t)(NH + 2 * KVH) * HS;
    const floatX *base = qkv + (size_t)b * T * S, *dbase = dout + (size_t)b * T * NH * HS;
    const int r = threadIdx.x / ATTN_TPR, c = threadIdx.x % ATTN_TPR, j = j0 + r;
    const float scale = 1.0f / sqrtf((float)HS), sc = ATTN_LOG2E * scale;

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
            }
            __syncthreads();

            float s[NS], dp[NS];
            mm_abt(s, sK + r * KP, sQ, KP, c, HS);    // S^T = K Q^T
            mm_abt(dp, sV + r * KP, sdO, KP, c, HS);  // dP^T = V dO^T
            ATTN_UNROLL
            for (int t = 0; t < NS; t++) {
                const int k = c + ATTN_TPR * t;
                const float p = allowed(i0 + k, j, T, doc_start(sh, b, i0 + k)) ? exp2f(s[t] * sc - sL[k]) : 0.0f;
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
    const int ds = doc_start(sh, b, i);

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

extern "C" void attention_forward_cuda(const struct backend *be, dbuf *out, dbuf *lse, const dbuf *qkv,
                                       const dbuf *docs, int B, int T, int NH, int KVH, int HS) {
    const struct attn_shape sh = {B, T, NH, KVH, HS, (const int *)docs};
    check_shape("attention_forward", sh);
    const int hsp = padded_head_size(HS);
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

extern "C" void attention_backward_cuda(const struct backend *be, dbuf *dqkv, const dbuf *dout, const dbuf *qkv,
                                        const dbuf *out, const dbuf *lse, const dbuf *docs, int B, int T, int NH,
                                        int KVH, int HS) {
    const struct attn_shape sh = {B, T, NH, KVH, HS, (const int *)docs};
    check_shape("attention_backward", sh);
    float *D = attn_scratch(be, (size_t)B * NH * T);
    const int hsp = padded_head_size(HS);
    DISPATCH_PRECISION(be, {
        if (hsp == 32) bwd_launch<T, 32>(be, dqkv, dout, qkv, out, lse, D, sh);
        else if (hsp == 64) bwd_launch<T, 64>(be, dqkv, dout, qkv, out, lse, D, sh);
        else bwd_launch<T, 128>(be, dqkv, dout, qkv, out, lse, D, sh);
    });
}
