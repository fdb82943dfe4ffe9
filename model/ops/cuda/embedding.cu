// Token embedding on the GPU, vocabulary-parallel: this rank holds rows [vstart, vstart+Vl) of the table;
// ids outside the slice give zero rows (the tensor-parallel group then sums the partial outputs).
//
// Precision: wte is BUF_PARAM and out/dout BUF_ACT, both the compute type T (a copy, so exact); dwte is
// the fp32 BUF_GRAD and accumulates (+=) in fp32.
//
// Forward: one thread per output element in a grid-stride loop over BT*C (256 threads, at most 8192
// blocks): a gather, memory-bound; consecutive threads copy consecutive columns of a row.
//
// Backward is deterministic and atomic-free. Ids repeat, so rows of dout must be summed per id; instead
// of float atomics (whose order, and so whose rounding, changes from run to run) the host groups the
// token positions by id: it copies tok (BT int32) once, counting-sorts the positions of the in-slice ids
// (ascending position within each id), and uploads [ids (nd) | starts (nd+1) | positions] into the
// context's workspace (safe: every op runs on the one stream). Then one block per (distinct id, 256
// columns) and one thread per column adds that id's dout rows in ascending position order, starting
// from the current dwte value -- exactly the CPU oracle's order, so fp32 results match it bitwise and
// every run gives the same bits. Grid (nd, ceil(C/256)), block 256.
#include <string.h>

#include "model/ops/cuda/common.cuh"
#include "model/ops/cuda/cuda_ops.h"

// out (BT,C), tok (BT), wte (Vl,C); n = BT*C
template <typename T>
__global__ void embedding_forward_kernel(T *out, const int *tok, const T *wte, size_t n, int C, int vstart, int Vl) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t row = i / C, c = i % C;
        int id = tok[row] - vstart;
        out[i] = (id >= 0 && id < Vl) ? wte[(size_t)id * C + c] : from_f<T>(0.0f);
    }
}

// dwte (Vl,C) += dout rows; group g sums rows pos[start[g] .. start[g+1]) into dwte row ids[g]
template <typename T>
__global__ void embedding_backward_kernel(float *dwte, const T *dout, const int *ids, const int *start,
                                          const int *pos, int C) {
    int g = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float *w = dwte + (size_t)ids[g] * C + c;
    float s = *w;
    for (int j = start[g]; j < start[g + 1]; j++) s += to_f(dout[(size_t)pos[j] * C + c]);
    *w = s;
}

extern "C" void embedding_forward_cuda(const struct backend *be, dbuf *out, const dbuf *tok, const dbuf *wte, int BT,
                                       int C, int vstart, int Vl) {
    CHECKF(BT >= 0 && C > 0, "embedding_forward: needs C > 0 and BT >= 0 (got BT=%d C=%d)", BT, C);
    size_t n = (size_t)BT * C;
    if (!n) return;
    unsigned grid = ceil_div(n, 256) < 8192 ? ceil_div(n, 256) : 8192;  // capped; the loop covers the rest
    DISPATCH_PRECISION(be, {
        auto k = embedding_forward_kernel<T>;
        LAUNCH(k, grid, 256, 0, cuda_stream(be), (T *)out, (const int *)tok, (const T *)wte, n, C, vstart, Vl);
    });
}

// Groups the positions of in-slice tokens by id into buf = [ids (nd) | start (nd+1) | pos (count)];
// returns nd. Counting sort over the slice: stable, so positions ascend within each id.
static int embedding_group(int *buf, const int *tok, int BT, int vstart, int Vl) {
    int *count = (int *)xcalloc((size_t)Vl + 1, sizeof(int));
    int nd = 0, total = 0;
    for (int i = 0; i < BT; i++) {
        int id = tok[i] - vstart;
        if (id >= 0 && id < Vl && count[id]++ == 0) nd++;
    }
    int *ids = buf, *start = buf + nd, *pos = buf + 2 * nd + 1;
    int *next = (int *)xmalloc(((size_t)Vl + 1) * sizeof(int));  // next free slot of each id in pos
    for (int id = 0, g = 0; id < Vl; id++) {
        if (!count[id]) continue;
        ids[g] = id;
        start[g++] = total;
        next[id] = total;
        total += count[id];
    }
    start[nd] = total;
    for (int i = 0; i < BT; i++) {
        int id = tok[i] - vstart;
        if (id >= 0 && id < Vl) pos[next[id]++] = i;
    }
    free(count);
    free(next);
    return nd;
}

extern "C" void embedding_backward_cuda(const struct backend *be, dbuf *dwte, const dbuf *dout, const dbuf *tok,
                                        int BT, int C, int vstart, int Vl) {
    struct cuda_ctx *cx = cuda_ctx_of(be);
    CHECKF(BT >= 0 && C > 0, "embedding_backward: needs C > 0 and BT >= 0 (got BT=%d C=%d)", BT, C);
    CHECKF((3 * (size_t)BT + 1) * sizeof(int) <= cx->workspace_size,
           "embedding_backward: the token grouping of BT=%d needs %zu bytes, more than the %zu-byte workspace", BT,
           (3 * (size_t)BT + 1) * sizeof(int), cx->workspace_size);
    if (!BT || Vl <= 0) return;
    int *htok = (int *)xmalloc((size_t)BT * sizeof(int));
    int *hbuf = (int *)xmalloc((3 * (size_t)BT + 1) * sizeof(int));
    CUDA_CHECK(cudaMemcpyAsync(htok, tok, (size_t)BT * sizeof(int), cudaMemcpyDeviceToHost, cx->stream));
    CUDA_CHECK(cudaStreamSynchronize(cx->stream));
    int nd = embedding_group(hbuf, htok, BT, vstart, Vl);
    size_t nints = 2 * (size_t)nd + 1 + (size_t)hbuf[2 * nd];  // ids, starts, and start[nd] positions
    int *d = (int *)cx->workspace;
    if (nd) {
        CUDA_CHECK(cudaMemcpyAsync(d, hbuf, nints * sizeof(int), cudaMemcpyHostToDevice, cx->stream));
        dim3 grid(nd, ceil_div(C, 256));  // one block per (distinct id, 256 columns)
        DISPATCH_PRECISION(be, {
            auto k = embedding_backward_kernel<T>;
            LAUNCH(k, grid, 256, 0, cx->stream, (float *)dwte, (const T *)dout, d, d + nd, d + 2 * nd + 1, C);
        });
        CUDA_CHECK(cudaStreamSynchronize(cx->stream));  // the pageable upload has been consumed before hbuf is freed
    }
    free(htok);
    free(hbuf);
}
