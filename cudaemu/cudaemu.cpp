// cudaemu's execution model (cudaemu/README.md): every CUDA thread of a block runs on a fiber, the
// blocks of a grid run one after another on the launching OS thread, and one fiber runs at a time.
//
// Why fibers: __syncthreads and the warp intrinsics must be real rendezvous (a thread that reaches one
// stops until its partners arrive), which needs one stack per waiting thread, but a kernel without
// barriers (most of llamac's, elementwise) should cost no switch at all. So a fiber that finishes its
// thread goes straight on to the next unstarted thread in scheduling order, on the same stack; only a
// thread that waits keeps its fiber and gives control back to the scheduler.
//
// Scheduling: the scheduler resumes runnable threads in an order fixed by CUDAEMU_ORDER (forward,
// reverse or shuffle seeded by CUDAEMU_SEED), starting again from the first after every block barrier,
// so a data race on shared memory shows as different results under different orders. When no thread
// can run and the barrier cannot be released, the kernel deadlocked: the emulator aborts, naming the
// kernel, its launch site and where each thread waits. It never hangs and never continues silently.
//
// Context switch: a few instructions of x86-64 assembly (callee-saved registers, stack pointer, the
// SSE/x87 control words) instead of swapcontext, which makes a sigprocmask system call per switch;
// ucontext remains the portable path elsewhere (or with -DCUDAEMU_UCONTEXT).
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <random>
#include <vector>

#include "internal.h"

#if defined(__x86_64__) && !defined(CUDAEMU_UCONTEXT)
#define CUDAEMU_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace cudaemu {

// ---------------------------------------------------------------------------------------------------
// Fibers
// ---------------------------------------------------------------------------------------------------
struct fiber {
#if CUDAEMU_ASM_SWITCH
    void *sp;
#else
    ucontext_t uc;
#endif
    int thread;  // the CUDA thread (index in the block) it runs, -1 when free
};

#if CUDAEMU_ASM_SWITCH
// cudaemu_switch(save, load): pushes the callee-saved registers and control words, stores the stack
// pointer in *save, loads load as the stack pointer and pops the registers saved there.
extern "C" void cudaemu_switch(void **save, void *load);
asm(R"(
    .text
    .globl cudaemu_switch
    .type cudaemu_switch, @function
cudaemu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $16, %rsp
    stmxcsr 8(%rsp)
    fnstcw (%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    fldcw (%rsp)
    ldmxcsr 8(%rsp)
    addq $16, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size cudaemu_switch, .-cudaemu_switch
)");
static void *sched_sp;
#else
static ucontext_t sched_uc;
#endif

static fiber *starting;  // the fiber being entered for the first time (read by fiber_main)
static std::vector<fiber *> free_fibers;
static size_t stack_bytes;
static unsigned fibers_made;

// Saves the running context into `from` and resumes `to`; NULL stands for the launcher's own stack.
static void switch_fiber(fiber *from, fiber *to) {
#if CUDAEMU_ASM_SWITCH
    cudaemu_switch(from ? &from->sp : &sched_sp, to ? to->sp : sched_sp);
#else
    swapcontext(from ? &from->uc : &sched_uc, to ? &to->uc : &sched_uc);
#endif
}

[[noreturn]] static void fiber_main();

static size_t stack_size() {
    if (!stack_bytes) {
        const char *kb = getenv("CUDAEMU_STACK_KB");
        stack_bytes = (kb && atol(kb) > 0 ? (size_t)atol(kb) : 256) * 1024;
    }
    return stack_bytes;
}

// A new fiber whose first resumption enters fiber_main on its own mmap'd stack (guard page below).
static fiber *new_fiber() {
    size_t page = (size_t)sysconf(_SC_PAGESIZE), size = stack_size();
    char *mem = (char *)mmap(NULL, size + page, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (mem == MAP_FAILED) fatal("cannot map a %zu KiB fiber stack", size / 1024);
    if (mprotect(mem, page, PROT_NONE) != 0) fatal("cannot protect a fiber stack's guard page");
    fiber *f = new fiber();
    f->thread = -1;
#if CUDAEMU_ASM_SWITCH
    // Stack tops staggered by cache lines: page-aligned tops would all fall in the same cache sets.
    uint64_t *top = (uint64_t *)(mem + page + size - (fibers_made++ % 64) * 64);  // 16-byte aligned
    uint64_t *sp = top - 10;
    memset(sp, 0, 10 * sizeof(uint64_t));
    sp[0] = 0x037f;  // x87 control word: the default
    sp[1] = 0x1f80;  // MXCSR: the default
    // sp[2..6]: r15, r14, r13, r12, rbx; sp[7]: rbp. cudaemu_switch's ret pops sp[8] and enters
    // fiber_main with rsp at top - 8 (8 mod 16, as after a call); top[-1] is its unused return address.
    sp[8] = (uint64_t)(void *)fiber_main;
    f->sp = sp;
#else
    getcontext(&f->uc);
    f->uc.uc_stack.ss_sp = mem + page;
    f->uc.uc_stack.ss_size = size;
    f->uc.uc_link = NULL;
    makecontext(&f->uc, (void (*)())fiber_main, 0);
#endif
    return f;
}

static fiber *take_fiber() {
    if (free_fibers.empty()) {
        fiber *f = new_fiber();
        starting = f;
        return f;
    }
    fiber *f = free_fibers.back();
    free_fibers.pop_back();
    return f;
}

// ---------------------------------------------------------------------------------------------------
// The block being run
// ---------------------------------------------------------------------------------------------------
enum thread_state : uint8_t { FRESH, RUNNING, READY, WAIT_SYNC, WAIT_WARP, EXITED };

struct thread_rec {
    thread_state state;
    fiber *fib;
    const char *file;  // where it waits
    int line;
};

struct lane_rec {
    uint64_t value, result;
    int arg, width;
};

struct warp_pending {  // a warp operation some lanes of its mask have reached
    unsigned mask, arrived;
    warp_kind kind;
};

struct warp_rec {
    warp_pending ops[32];
    int nops;
    unsigned exited;  // its lanes that have exited (thread_exited): the checks below without a scan
};

enum order_kind { ORDER_FORWARD, ORDER_REVERSE, ORDER_SHUFFLE };

static struct {
    int n;          // threads per block
    int cur;        // the running thread
    int cursor;     // position in order of the thread last chosen
    int live;       // threads not exited
    int at_sync;    // threads waiting at the block barrier
    int sync_pred, sync_result;  // __syncthreads_count: the sum being collected, the last released
    std::vector<thread_rec> th;
    std::vector<lane_rec> lanes;
    std::vector<warp_rec> warps;
    std::vector<int> order;
    void (*thunk)(void *);
    void *ctx;
    launch_site site;
    std::vector<char> smem;
} S;

static thread_local bool in_kernel;
static order_kind order_mode;
static std::mt19937_64 order_rng;

static void set_order(const char *o, unsigned long long seed) {
    if (!o || !*o || !strcmp(o, "forward")) order_mode = ORDER_FORWARD;
    else if (!strcmp(o, "reverse")) order_mode = ORDER_REVERSE;
    else if (!strcmp(o, "shuffle")) order_mode = ORDER_SHUFFLE;
    else fatal("scheduling order '%s': expected forward, reverse or shuffle (CUDAEMU_ORDER)", o);
    order_rng.seed(seed);
}

static bool order_set;

static void read_order_env() {
    if (order_set) return;
    const char *seed = getenv("CUDAEMU_SEED");
    set_order(getenv("CUDAEMU_ORDER"), seed ? strtoull(seed, NULL, 0) : 1);
    order_set = true;
}

static void set_thread_idx(int t) {
    if (blockDim.y == 1 && blockDim.z == 1) {  // the common 1-D block, without divisions
        threadIdx = uint3{(unsigned)t, 0, 0};
        return;
    }
    threadIdx.x = (unsigned)t % blockDim.x;
    threadIdx.y = (unsigned)t / blockDim.x % blockDim.y;
    threadIdx.z = (unsigned)t / (blockDim.x * blockDim.y);
}

static void thread_site(int t, char *buf, size_t size) {
    snprintf(buf, size, "thread (%u,%u,%u)", (unsigned)t % blockDim.x, (unsigned)t / blockDim.x % blockDim.y,
             (unsigned)t / (blockDim.x * blockDim.y));
}

// Aborts with the kernel, its launch site, the block and what the first waiting threads wait for.
[[noreturn]] static void deadlock(const char *why) {
    fprintf(stderr, "cudaemu: deadlock in kernel %s launched at %s:%d, block (%u,%u,%u): %s\n", S.site.kernel,
            S.site.file, S.site.line, blockIdx.x, blockIdx.y, blockIdx.z, why);
    int shown = 0;
    for (int t = 0; t < S.n && shown < 8; t++) {
        const thread_rec &r = S.th[t];
        if (r.state != WAIT_SYNC && r.state != WAIT_WARP) continue;
        char who[64];
        thread_site(t, who, sizeof who);
        fprintf(stderr, "cudaemu:   %s waits at %s %s:%d\n", who,
                r.state == WAIT_SYNC ? "__syncthreads" : "a warp operation", r.file, r.line);
        shown++;
    }
    fatal("kernel %s cannot complete", S.site.kernel);
}

static void reshuffle() {
    if (order_mode == ORDER_SHUFFLE) std::shuffle(S.order.begin(), S.order.end(), order_rng);
}

// All live threads reached the barrier: they become runnable, resumed from the first in order.
static void release_barrier() {
    for (thread_rec &r : S.th)
        if (r.state == WAIT_SYNC) r.state = READY;
    S.sync_result = S.sync_pred;
    S.sync_pred = 0;
    S.at_sync = 0;
    S.cursor = -1;
    reshuffle();
}

// The next thread to run, in order after the last one chosen.
static int pick_next() {
    for (;;) {
        for (int i = 1; i <= S.n; i++) {
            int p = S.cursor + i;
            if (p >= S.n) p -= S.n;
            thread_state st = S.th[S.order[p]].state;
            if (st == FRESH || st == READY) {
                S.cursor = p;
                return S.order[p];
            }
        }
        if (S.at_sync == 0 || S.at_sync != S.live) deadlock("no thread can proceed");
        release_barrier();
    }
}

// Leaves fiber `from` (whose thread waits, or which has none) for the next thread in order: a waiting
// thread's own fiber, or a free fiber for an unstarted one. Returns when `from` is resumed.
static void switch_to_next(fiber *from) {
    int t = pick_next();
    thread_rec &r = S.th[t];
    if (r.state == READY) {
        if (r.fib != from) switch_fiber(from, r.fib);
        return;
    }
    fiber *f = take_fiber();
    f->thread = t;
    switch_fiber(from, f);
}

// The running thread stops in state s until its turn comes again.
static void wait_as(thread_state s, const char *file, int line) {
    int me = S.cur;
    thread_rec &r = S.th[me];
    r.state = s;
    r.file = file;
    r.line = line;
    switch_to_next(r.fib);
    S.cur = me;
    r.state = RUNNING;
    set_thread_idx(me);
}

static void complete(int w, const warp_pending &op);

// A lane that exits leaves a pending __activemask; any other warp operation naming it can never complete.
static void thread_exited(int t) {
    S.th[t].state = EXITED;
    S.live--;
    warp_rec &w = S.warps[t / 32];
    unsigned bit = 1u << (t % 32);
    w.exited |= bit;
    for (int i = 0; i < w.nops; i++) {
        warp_pending &op = w.ops[i];
        if (!(op.mask & bit)) continue;
        if (op.kind != WARP_ACTIVE) {
            char why[160];
            thread_site(t, why, sizeof why);
            strcat(why, " exited while other lanes of its warp wait for it in a warp operation");
            deadlock(why);
        }
        op.mask &= ~bit;
        if (op.arrived == op.mask) {
            complete(t / 32, op);
            w.ops[i--] = w.ops[--w.nops];
        }
    }
}

// A fiber runs its thread to the end, then the next one in order on the same stack if it is unstarted
// (the common case: no switch at all), else hands over to it; after the block's last thread it returns
// to the launcher. A free fiber is resumed with a new thread in f->thread.
[[noreturn]] static void fiber_main() {
    fiber *f = starting;
    for (;;) {
        int t = f->thread;
        S.cur = t;
        S.th[t].state = RUNNING;
        S.th[t].fib = f;
        set_thread_idx(t);
        S.thunk(S.ctx);
        thread_exited(t);
        if (S.live > 0) {
            int next = pick_next();
            if (S.th[next].state == FRESH) {
                f->thread = next;
                continue;
            }
            f->thread = -1;
            free_fibers.push_back(f);
            switch_fiber(f, S.th[next].fib);
        } else {
            f->thread = -1;
            free_fibers.push_back(f);
            switch_fiber(f, NULL);
        }
    }
}

// Runs one block: its first thread starts on a fiber, and control comes back when all have exited.
static void run_block() {
    for (int t = 0; t < S.n; t++) S.th[t] = thread_rec{FRESH, NULL, NULL, 0};
    for (warp_rec &w : S.warps) w.nops = 0, w.exited = 0;
    S.live = S.n;
    S.at_sync = S.sync_pred = 0;
    S.cursor = -1;
    reshuffle();
    fiber *f = take_fiber();
    f->thread = pick_next();
    switch_fiber(NULL, f);
}

// ---------------------------------------------------------------------------------------------------
// Barriers and warp operations (called from kernels)
// ---------------------------------------------------------------------------------------------------
static void require_kernel(const char *what, const char *file, int line) {
    if (!in_kernel) fatal("%s called outside a kernel at %s:%d", what, file, line);
}

int syncthreads(int pred, const char *file, int line) {
    require_kernel("__syncthreads", file, line);
    S.at_sync++;
    S.sync_pred += pred;
    wait_as(WAIT_SYNC, file, line);
    return S.sync_result;
}

static unsigned warp_lanes_present(int w) {
    int n = std::min(32, S.n - w * 32);
    return n == 32 ? 0xffffffffu : (1u << n) - 1;
}

static unsigned live_lanes(int w) { return warp_lanes_present(w) & ~S.warps[w].exited; }

static int shuffle_source(warp_kind kind, int l, const lane_rec &r) {
    int seg = l & ~(r.width - 1);  // the first lane of this lane's width-sized group
    switch (kind) {
    case WARP_SHFL: return seg + (r.arg & (r.width - 1));
    case WARP_SHFL_XOR: {
        int src = l ^ r.arg;  // later groups are out of reach: the lane keeps its own value
        return src >= seg + r.width || src < 0 ? l : src;
    }
    case WARP_SHFL_UP: return l - seg >= r.arg ? l - r.arg : l;
    case WARP_SHFL_DOWN: return l - seg + r.arg < r.width ? l + r.arg : l;
    default: return l;
    }
}

static float bf16_lo(uint32_t r) { float x; uint32_t u = r << 16; memcpy(&x, &u, 4); return x; }
static float bf16_hi(uint32_t r) { float x; uint32_t u = r & 0xffff0000u; memcpy(&x, &u, 4); return x; }

// mma.sync m16n8k16 bf16: gather A (16x16), B (16x8), C (16x8) from the 32 lanes' fragments (PTX ISA,
// "Matrix Fragments for mma.m16n8k16 with floating point type": lane l = 4g + q holds A rows g and g+8,
// columns 2q, 2q+1 and 2q+8, 2q+9; B columns g, rows 2q, 2q+1, 2q+8, 2q+9; C rows g and g+8, columns
// 2q, 2q+1), compute D = A B + C in fp32 and scatter D.
static void complete_mma(lane_rec *lane) {
    float A[16][16], B[16][8], C[16][8];
    for (int l = 0; l < 32; l++) {
        const mma_frag *f = (const mma_frag *)(uintptr_t)lane[l].value;
        const int g = l / 4, q = l % 4;
        for (int h = 0; h < 2; h++) {  // h: the row half (a0/a2 rows g, a1/a3 rows g+8)
            A[g + 8 * h][2 * q] = bf16_lo(f->a[h]), A[g + 8 * h][2 * q + 1] = bf16_hi(f->a[h]);
            A[g + 8 * h][2 * q + 8] = bf16_lo(f->a[h + 2]), A[g + 8 * h][2 * q + 9] = bf16_hi(f->a[h + 2]);
            B[2 * q + 8 * h][g] = bf16_lo(f->b[h]), B[2 * q + 1 + 8 * h][g] = bf16_hi(f->b[h]);
            C[g + 8 * h][2 * q] = f->c[2 * h], C[g + 8 * h][2 * q + 1] = f->c[2 * h + 1];
        }
    }
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 8; j++) {
            float acc = 0.0f;
            for (int k = 0; k < 16; k++) acc = fmaf(A[i][k], B[k][j], acc);
            C[i][j] += acc;
        }
    for (int l = 0; l < 32; l++) {
        const mma_frag *f = (const mma_frag *)(uintptr_t)lane[l].value;
        const int g = l / 4, q = l % 4;
        for (int h = 0; h < 2; h++) f->d[2 * h] = C[g + 8 * h][2 * q], f->d[2 * h + 1] = C[g + 8 * h][2 * q + 1];
    }
}

// ldmatrix m8n8 b16: lanes 8i..8i+7 address the 8 rows of matrix i; register i of lane l = 4g + q holds
// matrix i's row g, columns 2q and 2q+1 (with .trans: rows 2q and 2q+1 of column g).
static void complete_ldmatrix(lane_rec *lane, const char *kernel) {
    const ldm_frag *f0 = (const ldm_frag *)(uintptr_t)lane[0].value;
    const int n = f0->n;
    if (n != 1 && n != 2 && n != 4) fatal("ldmatrix in %s: %d matrices (1, 2 or 4)", kernel, n);
    uint16_t row[32][8];
    for (int l = 0; l < 32; l++) {
        const ldm_frag *f = (const ldm_frag *)(uintptr_t)lane[l].value;
        if (f->n != n || f->trans != f0->trans) fatal("ldmatrix in %s: lanes disagree on the shape", kernel);
        if (l < 8 * n) {
            if ((uintptr_t)f->row % 16) fatal("ldmatrix in %s: lane %d's row address is not 16-byte aligned", kernel, l);
            memcpy(row[l], f->row, 16);
        }
    }
    for (int l = 0; l < 32; l++) {
        const ldm_frag *f = (const ldm_frag *)(uintptr_t)lane[l].value;
        const int g = l / 4, q = l % 4;
        for (int i = 0; i < n; i++) {
            uint32_t lo, hi;
            if (f0->trans) lo = row[8 * i + 2 * q][g], hi = row[8 * i + 2 * q + 1][g];
            else lo = row[8 * i + g][2 * q], hi = row[8 * i + g][2 * q + 1];
            f->r[i] = lo | hi << 16;
        }
    }
}

// Every lane of op has arrived: compute each lane's result and make the waiting ones runnable.
static void complete(int w, const warp_pending &op) {
    lane_rec *lane = &S.lanes[w * 32];
    if (op.kind == WARP_MMA || op.kind == WARP_LDMATRIX) {
        if (op.mask != 0xffffffffu)
            fatal("%s in %s: needs all 32 lanes of the warp (mask 0x%08x)", op.kind == WARP_MMA ? "mma" : "ldmatrix",
                  S.site.kernel, op.mask);
        if (op.kind == WARP_MMA) complete_mma(lane);
        else complete_ldmatrix(lane, S.site.kernel);
    }
    unsigned ballot = 0;
    if (op.kind == WARP_BALLOT)
        for (int l = 0; l < 32; l++)
            if ((op.mask >> l & 1) && lane[l].value) ballot |= 1u << l;
    for (unsigned rest = op.mask; rest; rest &= rest - 1) {  // the lanes of the mask, in lane order
        int l = __builtin_ctz(rest);
        if (op.kind == WARP_BALLOT) lane[l].result = ballot;
        else if (op.kind == WARP_ACTIVE) lane[l].result = op.mask;
        else if (op.kind != WARP_SYNC && op.kind != WARP_MMA && op.kind != WARP_LDMATRIX) {
            int src = shuffle_source(op.kind, l, lane[l]);
            lane[l].result = (op.mask >> src & 1) ? lane[src].value : lane[l].value;  // outside mask: undefined
        }
        thread_rec &r = S.th[w * 32 + l];
        if (r.state == WAIT_WARP) r.state = READY;
    }
}

static void check_mask(unsigned mask, int w, int l, const char *file, int line) {
    if (!(mask >> l & 1)) fatal("warp operation at %s:%d: lane %d calls it with mask 0x%08x, which does not name it",
                                file, line, l, mask);
    unsigned present = warp_lanes_present(w);
    if (mask & ~present)
        fatal("warp operation at %s:%d: mask 0x%08x names lanes this warp lacks (the block has %d threads)", file,
              line, mask, S.n);
    if (unsigned gone = mask & S.warps[w].exited) {
        char why[160];
        snprintf(why, sizeof why, "warp operation at %s:%d: mask 0x%08x names lane %d, which has exited", file,
                 line, mask, __builtin_ctz(gone));
        deadlock(why);
    }
}

uint64_t warp_op(warp_kind kind, unsigned mask, uint64_t value, int arg, int width, const char *file, int line) {
    require_kernel("a warp intrinsic", file, line);
    if (width < 1 || width > 32 || (width & (width - 1)))
        fatal("warp operation at %s:%d: width %d is not a power of two up to 32", file, line, width);
    int t = S.cur, w = t / 32, l = t % 32;
    if (kind == WARP_ACTIVE) mask = live_lanes(w);
    check_mask(mask, w, l, file, line);
    warp_rec &wr = S.warps[w];
    int i = 0;
    while (i < wr.nops && (kind == WARP_ACTIVE ? wr.ops[i].kind != WARP_ACTIVE
                                               : wr.ops[i].mask != mask || wr.ops[i].kind == WARP_ACTIVE))
        i++;
    if (i == wr.nops) wr.ops[wr.nops++] = warp_pending{mask, 0, kind};
    else if (wr.ops[i].kind != kind)
        fatal("warp operation at %s:%d: lanes of mask 0x%08x reached different warp intrinsics", file, line, mask);
    S.lanes[t] = lane_rec{value, value, arg, width};
    wr.ops[i].arrived |= 1u << l;
    if (wr.ops[i].arrived == mask) {
        complete(w, wr.ops[i]);
        wr.ops[i] = wr.ops[--wr.nops];
    } else {
        wait_as(WAIT_WARP, file, line);
    }
    return S.lanes[t].result;
}

// ---------------------------------------------------------------------------------------------------
// Launch
// ---------------------------------------------------------------------------------------------------
static bool valid_config(dim3 g, dim3 b) {
    unsigned long long threads = (unsigned long long)b.x * b.y * b.z;
    return b.x >= 1 && b.y >= 1 && b.z >= 1 && b.x <= 1024 && b.y <= 1024 && b.z <= 64 && threads <= 1024 &&
           g.x >= 1 && g.y >= 1 && g.z >= 1 && g.x <= 0x7fffffffu && g.y <= 65535 && g.z <= 65535;
}

static void prepare(dim3 block, size_t dyn_smem, void (*thunk)(void *), void *ctx, launch_site site) {
    S.n = (int)(block.x * block.y * block.z);
    S.th.resize(S.n);
    S.lanes.resize(S.n);
    S.warps.resize((S.n + 31) / 32);
    S.order.resize(S.n);
    for (int t = 0; t < S.n; t++) S.order[t] = order_mode == ORDER_REVERSE ? S.n - 1 - t : t;
    S.thunk = thunk;
    S.ctx = ctx;
    S.site = site;
    S.smem.resize((dyn_smem + 15) / 16 * 16 + 16);
}

// Dynamic shared memory starts every block as NaN, so reading what no thread wrote shows.
static void fill_smem_nan() {
    static const uint32_t nan = 0x7fc00000u;
    char *p = (char *)cudaemu_dynamic_smem();
    size_t n = S.smem.size() - (size_t)(p - S.smem.data());
    for (size_t i = 0; i + 4 <= n; i += 4) memcpy(p + i, &nan, 4);
}

void run(dim3 grid, dim3 block, size_t dyn_smem, cudaStream_t, const void *kernel, void (*thunk)(void *), void *ctx,
         launch_site site) {
    if (in_kernel) fatal("kernel %s launched from inside a kernel at %s:%d (dynamic parallelism is not emulated)",
                         site.kernel, site.file, site.line);
    if (!valid_config(grid, block)) {
        record(cudaErrorInvalidConfiguration);
        return;
    }
    if (dyn_smem > max_dynamic_smem(kernel)) {
        record(cudaErrorInvalidValue);
        return;
    }
    static std::mutex one_launch_at_a_time;  // the block state, shared memory and thread indices are global
    std::lock_guard<std::mutex> lock(one_launch_at_a_time);
    read_order_env();
    prepare(block, dyn_smem, thunk, ctx, site);
    in_kernel = true;
    gridDim = grid;
    blockDim = block;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                blockIdx = uint3{x, y, z};
                fill_smem_nan();
                run_block();
            }
    in_kernel = false;
}

}  // namespace cudaemu

void *cudaemu_dynamic_smem(void) {
    uintptr_t p = (uintptr_t)cudaemu::S.smem.data();
    return (void *)((p + 15) & ~(uintptr_t)15);
}

void cudaemu_set_order(const char *order, unsigned long long seed) {
    cudaemu::set_order(order, seed);
    cudaemu::order_set = true;
}

void cudaemu_unsupported(const char *what) {
    cudaemu::fatal("unsupported in the CPU emulation: %s", what);
}
