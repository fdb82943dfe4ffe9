// The CPU emulation of CUDA (cudaemu/README.md) checked on its own: barriers, warp intrinsics, shared
// memory, atomics, indices, bf16 rounding, NaN-filled memory, launch validation, race exposure by
// scheduling order, the deadlock detector and cuBLASLt against a naive product. Every assertion is one a
// wrong emulator would fail. Compiled as C++ in the EMU build (tests/cudaemu/tests.cmake).
#include <criterion/criterion.h>
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <signal.h>
#include <string.h>

#include <type_traits>
#include <vector>

#include "core/cuda_launch.h"

template <class T> static T *dev_alloc(size_t n) {
    T *p = NULL;
    CUDA_CHECK(cudaMalloc(&p, n * sizeof(T)));
    return p;
}

template <class T> static std::vector<T> to_host(const T *d, size_t n) {
    std::vector<T> h(n);
    CUDA_CHECK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
}

// ---------------------------------------------------------------------------------------------------
// Barriers and shared memory
// ---------------------------------------------------------------------------------------------------
__global__ void neighbour_kernel(int *out) {
    __shared__ int s[256];
    int t = threadIdx.x;
    s[t] = 3 * t + 1;
    __syncthreads();
    out[t] = s[(t + 1) % 256];
}

static void check_neighbours(const char *order) {
    cudaemu_set_order(order, 7);
    int *out = dev_alloc<int>(256);
    LAUNCH(neighbour_kernel, 1, 256, 0, 0, out);
    std::vector<int> h = to_host(out, 256);
    for (int t = 0; t < 256; t++) cr_assert_eq(h[t], 3 * ((t + 1) % 256) + 1, "%s order, thread %d", order, t);
    cudaFree(out);
}

Test(cudaemu, syncthreads_orders_shared_memory_under_every_order) {
    check_neighbours("forward");
    check_neighbours("reverse");
    check_neighbours("shuffle");
}

// Deliberately racy: thread t reads s[t+1], written by thread t+1, with no barrier in between.
__global__ void racy_kernel(float *out) {
    LLAMAC_DYNAMIC_SMEM(float, s);
    int t = threadIdx.x;
    s[t] = (float)t;
    out[t] = t + 1 < (int)blockDim.x ? s[t + 1] : 0.0f;
}

static std::vector<float> run_racy(const char *order) {
    cudaemu_set_order(order, 1);
    float *out = dev_alloc<float>(64);
    LAUNCH(racy_kernel, 1, 64, 64 * sizeof(float), 0, out);
    std::vector<float> h = to_host(out, 64);
    cudaFree(out);
    return h;
}

Test(cudaemu, a_missing_syncthreads_is_exposed_by_the_scheduling_order) {
    std::vector<float> fwd = run_racy("forward"), rev = run_racy("reverse");
    // Forward: thread t runs to its end before t+1 starts, so it reads the NaN the block started with.
    cr_assert(isnan(fwd[0]) && isnan(fwd[62]), "forward order read %g, %g", fwd[0], fwd[62]);
    for (int t = 0; t < 63; t++) cr_assert_eq(rev[t], (float)(t + 1), "reverse order, thread %d", t);
}

__global__ void dynamic_smem_kernel(int *nan_seen, float *out, int n) {
    LLAMAC_DYNAMIC_SMEM(float, s);
    int t = threadIdx.x;
    for (int i = t; i < n; i += blockDim.x)
        if (isnan(s[i])) atomicAdd(nan_seen, 1);
    __syncthreads();
    for (int i = t; i < n; i += blockDim.x) s[i] = (float)(blockIdx.x * n + i);
    __syncthreads();
    out[blockIdx.x * blockDim.x + t] = s[n - 1 - t];
}

Test(cudaemu, dynamic_shared_memory_is_per_block_and_starts_as_nan) {
    const int n = 16384, threads = 128, blocks = 3;  // 64 KiB: needs the attribute
    int *nan_seen = dev_alloc<int>(1);
    float *out = dev_alloc<float>(blocks * threads);
    CUDA_CHECK(cudaMemset(nan_seen, 0, sizeof(int)));
    CUDA_CHECK(cudaFuncSetAttribute(dynamic_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, n * 4));
    LAUNCH(dynamic_smem_kernel, blocks, threads, n * sizeof(float), 0, nan_seen, out, n);
    cr_assert_eq(to_host(nan_seen, 1)[0], blocks * n, "every block starts with NaN in all its dynamic smem");
    std::vector<float> h = to_host(out, blocks * threads);
    for (int b = 0; b < blocks; b++)
        for (int t = 0; t < threads; t++) cr_assert_eq(h[b * threads + t], (float)(b * n + n - 1 - t));
}

// Tree reduction in static shared memory, one atomicAdd per block (grid-stride input).
__global__ void block_sum_kernel(double *total, const float *x, int n) {
    __shared__ double s[256];
    double v = 0;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) v += x[i];
    s[threadIdx.x] = v;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) s[threadIdx.x] += s[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) atomicAdd(total, s[0]);
}

Test(cudaemu, block_reduction_and_grid_stride_atomic_sum) {
    const int n = 100003;
    std::vector<float> h(n);
    double want = 0;
    for (int i = 0; i < n; i++) want += h[i] = (float)(i % 97) - 40.0f;
    float *x = dev_alloc<float>(n);
    double *total = dev_alloc<double>(1);
    CUDA_CHECK(cudaMemcpy(x, h.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemset(total, 0, sizeof(double)));
    LAUNCH(block_sum_kernel, 37, 256, 0, 0, total, x, n);
    cr_assert_eq(to_host(total, 1)[0], want);
}

__global__ void count_kernel(int *count) {
    int sync = __syncthreads_count(threadIdx.x % 3 == 0);
    int all = __syncthreads_and(threadIdx.x < 1000);
    int any = __syncthreads_or(threadIdx.x == 77);
    if (threadIdx.x == 5) count[0] = sync, count[1] = all, count[2] = any;
}

Test(cudaemu, syncthreads_count_and_or) {
    int *c = dev_alloc<int>(3);
    LAUNCH(count_kernel, 1, 100, 0, 0, c);
    std::vector<int> h = to_host(c, 3);
    cr_assert_eq(h[0], 34);
    cr_assert_eq(h[1], 1);
    cr_assert_eq(h[2], 1);
}

// Threads that return early count as arrived at later barriers (as on current GPUs).
__global__ void early_exit_kernel(int *out) {
    __shared__ int s[64];
    if (threadIdx.x >= 32) return;
    s[threadIdx.x] = (int)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = s[31 - threadIdx.x];
}

Test(cudaemu, exited_threads_count_as_arrived_at_a_barrier) {
    int *out = dev_alloc<int>(32);
    LAUNCH(early_exit_kernel, 1, 64, 0, 0, out);
    std::vector<int> h = to_host(out, 32);
    for (int t = 0; t < 32; t++) cr_assert_eq(h[t], 31 - t);
}

// ---------------------------------------------------------------------------------------------------
// Indices
// ---------------------------------------------------------------------------------------------------
__global__ void index_kernel(int *hits, int *coords) {
    int bx = blockIdx.x, by = blockIdx.y;
    int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    int block = bx + gridDim.x * by;
    int g = block * (blockDim.x * blockDim.y * blockDim.z) + t;
    atomicAdd(&hits[g], 1);
    coords[g] = ((bx * 8 + by) * 8 + threadIdx.x) * 64 + threadIdx.y * 8 + threadIdx.z;
}

Test(cudaemu, two_d_grid_of_three_d_blocks_covers_every_index_once) {
    dim3 grid(3, 4), block(4, 2, 3);
    int n = 3 * 4 * 4 * 2 * 3;
    int *hits = dev_alloc<int>(n), *coords = dev_alloc<int>(n);
    CUDA_CHECK(cudaMemset(hits, 0, n * sizeof(int)));
    LAUNCH(index_kernel, grid, block, 0, 0, hits, coords);
    std::vector<int> h = to_host(hits, n), c = to_host(coords, n);
    int g = 0;
    for (int by = 0; by < 4; by++)
        for (int bx = 0; bx < 3; bx++)
            for (int z = 0; z < 3; z++)
                for (int y = 0; y < 2; y++)
                    for (int x = 0; x < 4; x++, g++) {
                        cr_assert_eq(h[g], 1, "index %d ran %d times", g, h[g]);
                        cr_assert_eq(c[g], ((bx * 8 + by) * 8 + x) * 64 + y * 8 + z, "index %d", g);
                    }
}

template <class T, int K> __global__ void scale_kernel(T *x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = x[i] * (T)K;
}

Test(cudaemu, a_template_kernel_launches_through_a_function_pointer) {
    float *x = dev_alloc<float>(100);
    std::vector<float> h(100, 2.0f);
    CUDA_CHECK(cudaMemcpy(x, h.data(), 400, cudaMemcpyHostToDevice));
    auto k = scale_kernel<float, 3>;
    LAUNCH(k, 4, 32, 0, 0, x, 100);
    for (float v : to_host(x, 100)) cr_assert_eq(v, 6.0f);
}

// ---------------------------------------------------------------------------------------------------
// Warp intrinsics
// ---------------------------------------------------------------------------------------------------
__global__ void shuffle_kernel(float *sum, int *down, int *up, int *idx8, double *dbl, float *bf) {
    int lane = threadIdx.x % 32, t = threadIdx.x;
    float v = (float)(t + 1);
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    sum[t] = v;
    down[t] = __shfl_down_sync(0xffffffffu, t, 3);
    up[t] = __shfl_up_sync(0xffffffffu, t, 5);
    idx8[t] = __shfl_sync(0xffffffffu, t * 10, 2, 8);  // lane 2 of each group of 8
    dbl[t] = __shfl_sync(0xffffffffu, 0.5 + t, 31 - lane);
    bf[t] = __bfloat162float(__shfl_xor_sync(0xffffffffu, __float2bfloat16((float)t), 1));
}

Test(cudaemu, shuffles_xor_down_up_idx_for_float_int_double_bf16) {
    const int n = 64;
    float *sum = dev_alloc<float>(n), *bf = dev_alloc<float>(n);
    int *down = dev_alloc<int>(n), *up = dev_alloc<int>(n), *idx8 = dev_alloc<int>(n);
    double *dbl = dev_alloc<double>(n);
    LAUNCH(shuffle_kernel, 1, n, 0, 0, sum, down, up, idx8, dbl, bf);
    std::vector<float> s = to_host(sum, n), b = to_host(bf, n);
    std::vector<int> d = to_host(down, n), u = to_host(up, n), i8 = to_host(idx8, n);
    std::vector<double> db = to_host(dbl, n);
    for (int t = 0; t < n; t++) {
        int lane = t % 32, w = t / 32 * 32;
        cr_assert_eq(s[t], w == 0 ? 528.0f : 1552.0f, "xor sum, thread %d", t);  // sum of 1..32, 33..64
        cr_assert_eq(d[t], lane + 3 < 32 ? t + 3 : t, "down, thread %d", t);
        cr_assert_eq(u[t], lane >= 5 ? t - 5 : t, "up, thread %d", t);
        cr_assert_eq(i8[t], (t / 8 * 8 + 2) * 10, "idx width 8, thread %d", t);
        cr_assert_eq(db[t], 0.5 + w + 31 - lane, "double, thread %d", t);
        cr_assert_eq(b[t], (float)(t ^ 1), "bf16, thread %d", t);
    }
}

// Lanes 0..15 reduce among themselves with mask 0xffff while lanes 16..31 do something else.
__global__ void partial_mask_kernel(int *out) {
    int lane = threadIdx.x;
    if (lane < 16) {
        int v = lane;
        for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0x0000ffffu, v, o);
        out[lane] = v;
        out[32 + lane] = __shfl_xor_sync(0x0000ffffu, lane, 16);  // partner outside the mask: own value
    } else {
        out[lane] = __ballot_sync(0xffff0000u, lane % 2);
    }
}

Test(cudaemu, a_partial_mask_rendezvous_only_its_lanes) {
    int *out = dev_alloc<int>(48);
    LAUNCH(partial_mask_kernel, 1, 32, 0, 0, out);
    std::vector<int> h = to_host(out, 48);
    for (int l = 0; l < 16; l++) cr_assert_eq(h[l], 120, "lane %d", l);
    for (int l = 16; l < 32; l++) cr_assert_eq((unsigned)h[l], 0xaaaa0000u, "lane %d", l);
    for (int l = 0; l < 16; l++) cr_assert_eq(h[32 + l], l, "lane %d", l);
}

__global__ void vote_kernel(unsigned *ballot, int *any, int *all, int *all_false, unsigned *active) {
    int lane = threadIdx.x % 32;
    ballot[threadIdx.x] = __ballot_sync(0xffffffffu, lane % 3 == 0);
    any[threadIdx.x] = __any_sync(0xffffffffu, lane == 31);
    all[threadIdx.x] = __all_sync(0xffffffffu, lane < 32);
    all_false[threadIdx.x] = __all_sync(0xffffffffu, lane < 31);
    __syncwarp();
    active[threadIdx.x] = __activemask();
}

Test(cudaemu, ballot_any_all) {
    unsigned *ballot = dev_alloc<unsigned>(32), *active = dev_alloc<unsigned>(32);
    int *any = dev_alloc<int>(32), *all = dev_alloc<int>(32), *all_false = dev_alloc<int>(32);
    LAUNCH(vote_kernel, 1, 32, 0, 0, ballot, any, all, all_false, active);
    std::vector<unsigned> b = to_host(ballot, 32), a = to_host(active, 32);
    std::vector<int> an = to_host(any, 32), al = to_host(all, 32), af = to_host(all_false, 32);
    for (int l = 0; l < 32; l++) {
        cr_assert_eq(b[l], 0x49249249u);
        cr_assert_eq(an[l], 1);
        cr_assert_eq(al[l], 1);
        cr_assert_eq(af[l], 0);
        cr_assert_eq(a[l], 0xffffffffu);
    }
}

__global__ void active_after_exit_kernel(unsigned *out) {
    if (threadIdx.x % 32 >= 20) return;
    out[threadIdx.x] = __activemask();
}

Test(cudaemu, activemask_leaves_out_exited_lanes) {
    unsigned *out = dev_alloc<unsigned>(40);
    LAUNCH(active_after_exit_kernel, 1, 40, 0, 0, out);  // the second warp has 8 lanes
    std::vector<unsigned> h = to_host(out, 40);
    for (int t = 0; t < 20; t++) cr_assert_eq(h[t], 0x000fffffu, "thread %d", t);
    for (int t = 32; t < 40; t++) cr_assert_eq(h[t], 0x000000ffu, "thread %d", t);
}

// ---------------------------------------------------------------------------------------------------
// Deadlocks abort, naming the site
// ---------------------------------------------------------------------------------------------------
__global__ void divergent_barrier_kernel(int *out) {
    if (threadIdx.x == 0) __syncthreads();
    else out[threadIdx.x] = __shfl_sync(0xffffffffu, (int)threadIdx.x, 0);  // waits for lane 0, forever
}

Test(cudaemu, a_barrier_that_cannot_complete_aborts, .signal = SIGABRT) {
    int *out = dev_alloc<int>(32);
    LAUNCH(divergent_barrier_kernel, 1, 32, 0, 0, out);
}

__global__ void exited_lane_kernel(int *out) {
    if (threadIdx.x == 3) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
}

Test(cudaemu, a_shuffle_naming_an_exited_lane_aborts, .signal = SIGABRT) {
    int *out = dev_alloc<int>(32);
    LAUNCH(exited_lane_kernel, 1, 32, 0, 0, out);
}

// ---------------------------------------------------------------------------------------------------
// Memory, launch validation, events
// ---------------------------------------------------------------------------------------------------
Test(cudaemu, cudamalloc_memory_starts_as_nan) {
    float *f = dev_alloc<float>(1000);
    for (float v : to_host(f, 1000)) cr_assert(isnan(v));
    std::vector<__nv_bfloat16> b = to_host((const __nv_bfloat16 *)f, 2000);
    for (__nv_bfloat16 v : b) cr_assert(__hisnan(v));
}

__global__ void flag_kernel(int *flag) { *flag = 1; }

static cudaError_t try_launch(dim3 grid, dim3 block, size_t smem, int *flag) {
    cudaemu::launch(flag_kernel, grid, block, smem, 0, "flag_kernel", __FILE__, __LINE__)(flag);
    return cudaGetLastError();
}

Test(cudaemu, launches_the_device_would_refuse_set_the_error_and_run_nothing) {
    int *flag = dev_alloc<int>(1);
    CUDA_CHECK(cudaMemset(flag, 0, sizeof(int)));
    cr_assert_eq(try_launch(1, 1025, 0, flag), cudaErrorInvalidConfiguration);
    cr_assert_eq(try_launch(1, dim3(2, 2, 65), 0, flag), cudaErrorInvalidConfiguration);
    cr_assert_eq(try_launch(dim3(1, 65536), 32, 0, flag), cudaErrorInvalidConfiguration);
    cr_assert_eq(try_launch(1, 32, 48 * 1024 + 1, flag), cudaErrorInvalidValue);
    cr_assert_eq(cudaGetLastError(), cudaSuccess, "cudaGetLastError resets the error");
    cr_assert_eq(to_host(flag, 1)[0], 0, "a refused launch runs nothing");
    cr_assert_eq(cudaFuncSetAttribute(flag_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 228 * 1024),
                 cudaErrorInvalidValue);
    cr_assert_eq(cudaGetLastError(), cudaErrorInvalidValue);
    CUDA_CHECK(cudaFuncSetAttribute(flag_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 100 * 1024));
    cr_assert_eq(try_launch(1, 32, 100 * 1024 + 1, flag), cudaErrorInvalidValue);
    cr_assert_eq(try_launch(1, 1024, 100 * 1024, flag), cudaSuccess);
    cr_assert_eq(to_host(flag, 1)[0], 1);
}

Test(cudaemu, launch_macro_aborts_on_a_refused_configuration, .signal = SIGABRT) {
    int *flag = dev_alloc<int>(1);
    LAUNCH(flag_kernel, 1, 2048, 0, 0, flag);
}

Test(cudaemu, device_properties_and_events) {
    int n = 0;
    CUDA_CHECK(cudaGetDeviceCount(&n));
    cr_assert_eq(n, 1);
    cudaDeviceProp p;
    CUDA_CHECK(cudaGetDeviceProperties(&p, 0));
    cr_assert_str_eq(p.name, "cudaemu (CPU emulation)");
    cr_assert_eq(p.sharedMemPerBlockOptin, 227u * 1024);
    int v = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMajor, 0));
    cr_assert_eq(v, 9);
    cudaEvent_t a, b;
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreate(&s));
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
    CUDA_CHECK(cudaEventRecord(a, s));
    float *x = dev_alloc<float>(1 << 20);
    auto k = scale_kernel<float, 2>;
    LAUNCH(k, 4096, 256, 0, s, x, 1 << 20);
    CUDA_CHECK(cudaEventRecord(b, s));
    CUDA_CHECK(cudaStreamWaitEvent(s, b));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = -1;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    cr_assert(ms > 0.0f, "elapsed %g ms", ms);
    CUDA_CHECK(cudaStreamDestroy(s));
    cr_assert_eq(cudaFree((void *)0x1234), cudaErrorInvalidValue, "freeing what cudaMalloc did not give");
}

Test(cudaemu, no_device_when_cudaemu_devices_is_0) {
    setenv("CUDAEMU_DEVICES", "0", 1);
    int n = -1;
    cr_assert_eq(cudaGetDeviceCount(&n), cudaErrorNoDevice);
    cr_assert_eq(n, 0);
}

// ---------------------------------------------------------------------------------------------------
// bf16
// ---------------------------------------------------------------------------------------------------
static unsigned short bf16_bits(uint32_t f32_bits) {
    float f;
    memcpy(&f, &f32_bits, 4);
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

Test(cudaemu, bf16_rounds_to_nearest_even) {
    static_assert(sizeof(__nv_bfloat16) == 2 && std::is_trivially_copyable<__nv_bfloat16>::value, "bf16 layout");
    static_assert(sizeof(__nv_bfloat162) == 4 && alignof(float4) == 16 && alignof(float2) == 8, "vector layout");
    cr_assert_eq(bf16_bits(0x3f800000u), 0x3f80);  // 1.0
    cr_assert_eq(bf16_bits(0x3f808000u), 0x3f80);  // tie, even below: down
    cr_assert_eq(bf16_bits(0x3f818000u), 0x3f82);  // tie, odd below: up
    cr_assert_eq(bf16_bits(0x3f808001u), 0x3f81);  // above the tie: up
    cr_assert_eq(bf16_bits(0x3f807fffu), 0x3f80);  // below the tie: down
    cr_assert_eq(bf16_bits(0xbf818000u), 0xbf82);  // negative tie
    cr_assert_eq(bf16_bits(0x7f800000u), 0x7f80);  // +inf
    cr_assert_eq(bf16_bits(0xff800000u), 0xff80);  // -inf
    cr_assert_eq(bf16_bits(0x7f7fffffu), 0x7f80);  // FLT_MAX rounds to inf
    cr_assert_eq(bf16_bits(0x00008000u), 0x0000);  // subnormal tie, even below
    cr_assert_eq(bf16_bits(0x00018000u), 0x0002);  // subnormal tie, odd below
    cr_assert_eq(bf16_bits(0x00010001u), 0x0001);
    cr_assert_eq(bf16_bits(0x807fffffu), 0x8080);  // largest negative subnormal -> smallest normal
    unsigned short nan = bf16_bits(0x7f800001u);   // a NaN whose payload would round away
    cr_assert((nan & 0x7f80) == 0x7f80 && (nan & 0x7f), "NaN stays NaN: 0x%04x", nan);
    cr_assert(__hisnan(__float2bfloat16(-NAN)));
    __nv_bfloat162 v = __floats2bfloat162_rn(1.00390625f, -2.5f);  // 1 + 2^-8: a tie, rounds to 1
    cr_assert_eq(__low2float(v), 1.0f);
    cr_assert_eq(__high2float(v), -2.5f);
    float2 f = __bfloat1622float2(v);
    cr_assert(f.x == 1.0f && f.y == -2.5f);
    __nv_bfloat16 a = 3.0f, b = 0.5f;
    cr_assert_eq((float)__hadd(a, b), 3.5f);
    cr_assert_eq((float)(a * b), 1.5f);
    cr_assert(a > b && !(a == b));
}

// ---------------------------------------------------------------------------------------------------
// cuBLASLt against a naive product
// ---------------------------------------------------------------------------------------------------
struct gemm_case {
    cublasOperation_t ta, tb;
    cudaDataType ab, cd;
    float alpha, beta;
    int batch;
    cublasComputeType_t compute;
};

static float round_to(cudaDataType t, float x) { return t == CUDA_R_16BF ? (float)__float2bfloat16_rn(x) : x; }

static void put(void *base, cudaDataType t, size_t i, float x) {
    if (t == CUDA_R_16BF) ((__nv_bfloat16 *)base)[i] = __float2bfloat16_rn(x);
    else ((float *)base)[i] = x;
}

static float get(const void *base, cudaDataType t, size_t i) {
    return t == CUDA_R_16BF ? __bfloat162float(((const __nv_bfloat16 *)base)[i]) : ((const float *)base)[i];
}

static cublasLtMatrixLayout_t layout(cudaDataType t, int rows, int cols, int ld, int batch, long long stride) {
    cublasLtMatrixLayout_t l;
    cr_assert_eq(cublasLtMatrixLayoutCreate(&l, t, rows, cols, ld), CUBLAS_STATUS_SUCCESS);
    int64_t s = stride;
    cr_assert_eq(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, 4), 0);
    cr_assert_eq(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &s, 8), 0);
    return l;
}

// D (m x n) = alpha op(A) op(B) + beta C, with padded leading dimensions; C holds NaN when beta is 0.
static void check_gemm(gemm_case g) {
    const int m = 7, n = 5, k = 9, pad = 3;
    int ar = g.ta == CUBLAS_OP_N ? m : k, ac = g.ta == CUBLAS_OP_N ? k : m;
    int br = g.tb == CUBLAS_OP_N ? k : n, bc = g.tb == CUBLAS_OP_N ? n : k;
    int lda = ar + pad, ldb = br + pad, ldc = m + pad;
    long long sa = (long long)lda * ac, sb = (long long)ldb * bc, sc = (long long)ldc * n;
    size_t es_ab = g.ab == CUDA_R_16BF ? 2 : 4, es_cd = g.cd == CUDA_R_16BF ? 2 : 4;
    std::vector<char> A(sa * g.batch * es_ab), B(sb * g.batch * es_ab), C(sc * g.batch * es_cd), D(C.size());
    for (size_t i = 0; i < (size_t)sa * g.batch; i++) put(A.data(), g.ab, i, (float)((i * 7) % 13) / 4 - 1.5f);
    for (size_t i = 0; i < (size_t)sb * g.batch; i++) put(B.data(), g.ab, i, (float)((i * 5) % 11) / 8 - 0.6f);
    for (size_t i = 0; i < (size_t)sc * g.batch; i++) put(C.data(), g.cd, i, g.beta == 0 ? NAN : (float)(i % 7) - 3);
    memset(D.data(), 0xff, D.size());

    cublasLtHandle_t h;
    cublasLtMatmulDesc_t desc;
    cr_assert_eq(cublasLtCreate(&h), 0);
    cr_assert_eq(cublasLtMatmulDescCreate(&desc, g.compute, CUDA_R_32F), 0);
    int32_t ta = g.ta, tb = g.tb;
    cr_assert_eq(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, 4), 0);
    cr_assert_eq(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, 4), 0);
    cublasLtMatrixLayout_t la = layout(g.ab, ar, ac, lda, g.batch, sa), lb = layout(g.ab, br, bc, ldb, g.batch, sb);
    cublasLtMatrixLayout_t lc = layout(g.cd, m, n, ldc, g.batch, sc);
    cublasLtMatmulPreference_t pref;
    cr_assert_eq(cublasLtMatmulPreferenceCreate(&pref), 0);
    uint64_t ws = 1 << 20;
    cr_assert_eq(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, 8), 0);
    cublasLtMatmulHeuristicResult_t res;
    int got = 0;
    cr_assert_eq(cublasLtMatmulAlgoGetHeuristic(h, desc, la, lb, lc, lc, pref, 1, &res, &got), 0);
    cr_assert_eq(got, 1);
    cr_assert_eq(cublasLtMatmul(h, desc, &g.alpha, A.data(), la, B.data(), lb, &g.beta, C.data(), lc, D.data(), lc,
                                &res.algo, NULL, 0, 0),
                 CUBLAS_STATUS_SUCCESS);
    for (int b = 0; b < g.batch; b++)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                double want = 0;
                for (int p = 0; p < k; p++) {
                    size_t ai = g.ta == CUBLAS_OP_N ? (size_t)p * lda + i : (size_t)i * lda + p;
                    size_t bi = g.tb == CUBLAS_OP_N ? (size_t)j * ldb + p : (size_t)p * ldb + j;
                    want += (double)get(A.data(), g.ab, b * sa + ai) * get(B.data(), g.ab, b * sb + bi);
                }
                size_t ci = b * sc + (size_t)j * ldc + i;
                want = g.alpha * want + (g.beta == 0 ? 0.0 : g.beta * (double)get(C.data(), g.cd, ci));
                float d = get(D.data(), g.cd, ci);
                double tol = g.cd == CUDA_R_16BF ? 0.01 * fabs(want) + 1e-3
                             : g.compute == CUBLAS_COMPUTE_32F_FAST_TF32 ? 2e-3 * (fabs(want) + 1) : 1e-5 * (fabs(want) + 1);
                cr_assert(fabs(d - want) <= tol, "batch %d D[%d,%d] = %g, want %g (ta %d tb %d)", b, i, j, d, want,
                          ta, tb);
                cr_assert(g.cd != CUDA_R_16BF || d == round_to(g.cd, d));
            }
    for (int b = 0; b < g.batch; b++)  // the padding of D is untouched
        for (int j = 0; j < n; j++)
            for (int i = m; i < ldc; i++) cr_assert(isnan(get(D.data(), g.cd, b * sc + (size_t)j * ldc + i)));
    cublasLtMatrixLayoutDestroy(la), cublasLtMatrixLayoutDestroy(lb), cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatmulDescDestroy(desc);
    cublasLtDestroy(h);
}

Test(cudaemu, cublaslt_fp32_every_transpose_beta_0_ignores_nan_c) {
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            check_gemm({(cublasOperation_t)ta, (cublasOperation_t)tb, CUDA_R_32F, CUDA_R_32F, 1.5f, 0.0f, 1,
                        CUBLAS_COMPUTE_32F});
}

Test(cudaemu, cublaslt_beta_1_accumulates_and_strided_batches) {
    check_gemm({CUBLAS_OP_T, CUBLAS_OP_N, CUDA_R_32F, CUDA_R_32F, 1.0f, 1.0f, 3, CUBLAS_COMPUTE_32F});
    check_gemm({CUBLAS_OP_N, CUBLAS_OP_T, CUDA_R_16BF, CUDA_R_32F, 0.5f, 1.0f, 4, CUBLAS_COMPUTE_32F});
}

Test(cudaemu, cublaslt_bf16_operands_with_fp32_and_bf16_outputs) {
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            check_gemm({(cublasOperation_t)ta, (cublasOperation_t)tb, CUDA_R_16BF, CUDA_R_32F, 1.0f, 0.0f, 2,
                        CUBLAS_COMPUTE_32F});
            check_gemm({(cublasOperation_t)ta, (cublasOperation_t)tb, CUDA_R_16BF, CUDA_R_16BF, 1.0f, 1.0f, 2,
                        CUBLAS_COMPUTE_32F});
        }
    check_gemm({CUBLAS_OP_T, CUBLAS_OP_N, CUDA_R_32F, CUDA_R_32F, 1.0f, 0.0f, 1, CUBLAS_COMPUTE_32F_FAST_TF32});
}

Test(cudaemu, cublaslt_refuses_what_it_does_not_emulate) {
    cublasLtHandle_t h;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t l;
    cr_assert_eq(cublasLtCreate(&h), 0);
    cr_assert_eq(cublasLtMatrixLayoutCreate(&l, CUDA_R_16F, 4, 4, 4), CUBLAS_STATUS_NOT_SUPPORTED);
    cr_assert_eq(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), 0);
    uint32_t epi = 2;  // CUBLASLT_EPILOGUE_RELU
    cr_assert_eq(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, 4),
                 CUBLAS_STATUS_NOT_SUPPORTED);
    cublasLtMatrixLayout_t a, b, c, bf;
    cublasLtMatrixLayoutCreate(&a, CUDA_R_32F, 4, 3, 4);
    cublasLtMatrixLayoutCreate(&b, CUDA_R_32F, 2, 5, 2);  // inner dimension 2 != 3
    cublasLtMatrixLayoutCreate(&c, CUDA_R_32F, 4, 5, 4);
    cublasLtMatrixLayoutCreate(&bf, CUDA_R_16BF, 3, 5, 3);
    std::vector<float> buf(64);
    float one = 1, zero = 0;
    cr_assert_eq(cublasLtMatmul(h, desc, &one, buf.data(), a, buf.data(), b, &zero, buf.data(), c, buf.data(), c,
                                NULL, NULL, 0, 0),
                 CUBLAS_STATUS_INVALID_VALUE);
    cr_assert_eq(cublasLtMatmul(h, desc, &one, buf.data(), a, buf.data(), bf, &zero, buf.data(), c, buf.data(), c,
                                NULL, NULL, 0, 0),
                 CUBLAS_STATUS_NOT_SUPPORTED, "fp32 A with bf16 B is not a cuBLASLt combination");
    cr_assert_eq(cublasLtMatrixLayoutCreate(&l, CUDA_R_32F, 4, 4, 3), 0);
    cr_assert_eq(cublasLtMatmul(h, desc, &one, buf.data(), l, buf.data(), l, &zero, buf.data(), l, buf.data(), l,
                                NULL, NULL, 0, 0),
                 CUBLAS_STATUS_INVALID_VALUE, "ld < rows");
    cublasLtDestroy(h);
}

// ---------------------------------------------------------------------------------------------------
// Tensor cores: mma.sync m16n8k16 bf16 and ldmatrix as warp rendezvous (cudaemu/README.md)
// ---------------------------------------------------------------------------------------------------
static uint32_t bf16_pair(__nv_bfloat16 lo, __nv_bfloat16 hi) {
    uint16_t l, h;
    memcpy(&l, &lo, 2);
    memcpy(&h, &hi, 2);
    return (uint32_t)l | (uint32_t)h << 16;
}

// D (16x8) = A (16x16, row-major) B (16x8, row-major k x n) + C, one warp. mode 0: fragments built from
// the PTX layout by hand; 1: A by ldmatrix.x4, B by ldmatrix.x2.trans from B; 2: A by ldmatrix.x4, B by
// ldmatrix.x2 from Bt (8x16, n x k). D is written from the C layout.
__global__ void mma_kernel(float *D, const __nv_bfloat16 *A, const __nv_bfloat16 *B, const float *C, int mode) {
    __shared__ __nv_bfloat16 sA[16 * 24] __attribute__((aligned(16))), sB[16 * 8] __attribute__((aligned(16))),
        sBt[8 * 24] __attribute__((aligned(16)));
    const int l = threadIdx.x, g = l / 4, q = l % 4;
    for (int i = l; i < 256; i += 32) sA[i / 16 * 24 + i % 16] = A[i];
    for (int i = l; i < 128; i += 32) {
        sB[i] = B[i];
        sBt[i % 8 * 24 + i / 8] = B[i];  // Bt[n][k] = B[k][n]
    }
    __syncthreads();
    uint32_t a[4], b[4];
    if (mode == 0) {
        a[0] = bf16_pair(A[g * 16 + 2 * q], A[g * 16 + 2 * q + 1]);
        a[1] = bf16_pair(A[(g + 8) * 16 + 2 * q], A[(g + 8) * 16 + 2 * q + 1]);
        a[2] = bf16_pair(A[g * 16 + 2 * q + 8], A[g * 16 + 2 * q + 9]);
        a[3] = bf16_pair(A[(g + 8) * 16 + 2 * q + 8], A[(g + 8) * 16 + 2 * q + 9]);
        b[0] = bf16_pair(B[(2 * q) * 8 + g], B[(2 * q + 1) * 8 + g]);
        b[1] = bf16_pair(B[(2 * q + 8) * 8 + g], B[(2 * q + 9) * 8 + g]);
    } else {
        cudaemu::ldmatrix(a, 4, false, sA + (l % 16) * 24 + 8 * (l / 16));
        if (mode == 1) cudaemu::ldmatrix(b, 2, true, sB + (l % 16) * 8);
        else cudaemu::ldmatrix(b, 2, false, sBt + (l % 8) * 24 + 8 * (l / 8 % 2));
    }
    float c[4] = {C[g * 8 + 2 * q], C[g * 8 + 2 * q + 1], C[(g + 8) * 8 + 2 * q], C[(g + 8) * 8 + 2 * q + 1]};
    cudaemu::mma_m16n8k16_bf16(c, a, b, c);  // d aliases c
    D[g * 8 + 2 * q] = c[0], D[g * 8 + 2 * q + 1] = c[1];
    D[(g + 8) * 8 + 2 * q] = c[2], D[(g + 8) * 8 + 2 * q + 1] = c[3];
}

Test(cudaemu, mma_m16n8k16_bf16_and_ldmatrix_follow_the_ptx_fragment_layouts) {
    std::vector<__nv_bfloat16> hA(256), hB(128);
    std::vector<float> fA(256), fB(128), hC(128);
    unsigned s = 12345;
    auto rnd = [&s]() { s = s * 1103515245u + 12345u; return ((s >> 8) % 2001) / 1000.0f - 1.0f; };
    for (int i = 0; i < 256; i++) hA[i] = __float2bfloat16_rn(rnd()), fA[i] = __bfloat162float(hA[i]);
    for (int i = 0; i < 128; i++) hB[i] = __float2bfloat16_rn(rnd()), fB[i] = __bfloat162float(hB[i]);
    for (int i = 0; i < 128; i++) hC[i] = rnd();
    __nv_bfloat16 *A = dev_alloc<__nv_bfloat16>(256), *B = dev_alloc<__nv_bfloat16>(128);
    float *C = dev_alloc<float>(128), *D = dev_alloc<float>(128);
    CUDA_CHECK(cudaMemcpy(A, hA.data(), 512, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(B, hB.data(), 256, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(C, hC.data(), 512, cudaMemcpyHostToDevice));
    for (int mode = 0; mode < 3; mode++) {
        CUDA_CHECK(cudaMemset(D, 0xff, 512));
        LAUNCH(mma_kernel, 1, 32, 0, 0, D, A, B, C, mode);
        std::vector<float> d = to_host(D, 128);
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 8; j++) {
                double ref = hC[i * 8 + j];
                for (int k = 0; k < 16; k++) ref += (double)fA[i * 16 + k] * fB[k * 8 + j];
                cr_assert(fabs(d[i * 8 + j] - ref) <= 1e-5 * (1 + fabs(ref)), "mode %d D[%d][%d] = %g, expected %g (C %g)",
                          mode, i, j, d[i * 8 + j], ref, hC[i * 8 + j]);
            }
    }
}

__global__ void mma_partial_warp_kernel(float *D) {
    uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
    float c[4] = {0, 0, 0, 0};
    cudaemu::mma_m16n8k16_bf16(c, a, b, c);
    D[threadIdx.x] = c[0];
}

Test(cudaemu, an_mma_in_a_partial_warp_aborts, .signal = SIGABRT) {
    float *D = dev_alloc<float>(16);
    LAUNCH(mma_partial_warp_kernel, 1, 16, 0, 0, D);
}
