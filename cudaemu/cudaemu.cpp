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
#include <string>
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
    char *stack;  // the mapping, guard page first
    int thread;   // the CUDA thread (index in the block) it runs, -1 when free
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

static void to_fiber(fiber *f) {
#if CUDAEMU_ASM_SWITCH
    cudaemu_switch(&sched_sp, f->sp);
#else
    swapcontext(&sched_uc, &f->uc);
#endif
}

static void to_scheduler(fiber *f) {
#if CUDAEMU_ASM_SWITCH
    cudaemu_switch(&f->sp, sched_sp);
#else
    swapcontext(&f->uc, &sched_uc);
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
    f->stack = mem;
    f->thread = -1;
#if CUDAEMU_ASM_SWITCH
    uint64_t *top = (uint64_t *)(mem + page + size);  // 16-byte aligned
    uint64_t *sp = top - 10;
    memset(sp, 0, 10 * sizeof(uint64_t));
    sp[0] = 0x037f;                     // x87 control word: the default
    sp[1] = 0x1f80;                     // MXCSR: the default
    sp[8] = (uint64_t)(void *)fiber_main;  // cudaemu_switch's ret enters fiber_main; top[-1] is its
    f->sp = sp;                            // (never used) return address, so the entry rsp is 8 mod 16
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

static void read_order_env() {
    static bool done;
    if (done) return;
    done = true;
    const char *o = getenv("CUDAEMU_ORDER");
    if (!o || !*o || !strcmp(o, "forward")) order_mode = ORDER_FORWARD;
    else if (!strcmp(o, "reverse")) order_mode = ORDER_REVERSE;
    else if (!strcmp(o, "shuffle")) order_mode = ORDER_SHUFFLE;
    else fatal("CUDAEMU_ORDER=%s: expected forward, reverse or shuffle", o);
    const char *seed = getenv("CUDAEMU_SEED");
    order_rng.seed(seed ? strtoull(seed, NULL, 0) : 1);
}

static void set_thread_idx(int t) {
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

// The running thread stops in state s until the scheduler resumes it.
static void wait_as(thread_state s, const char *file, int line) {
    thread_rec &r = S.th[S.cur];
    r.state = s;
    r.file = file;
    r.line = line;
    to_scheduler(r.fib);
}

static void thread_exited(int t) {
    S.th[t].state = EXITED;
    S.live--;
    warp_rec &w = S.warps[t / 32];
    for (int i = 0; i < w.nops; i++)
        if (w.ops[i].mask & (1u << (t % 32))) {
            char who[64];
            thread_site(t, who, sizeof who);
            deadlock((std::string(who) + " exited while other lanes of its warp wait for it in a warp operation")
                         .c_str());
        }
}

// Runs the fiber's thread, then each following unstarted thread in order on the same stack.
static void run_threads(fiber *f) {
    for (;;) {
        int t = f->thread;
        S.cur = t;
        S.th[t].state = RUNNING;
        S.th[t].fib = f;
        set_thread_idx(t);
        S.thunk(S.ctx);
        thread_exited(t);
        int p = S.cursor + 1;
        if (p >= S.n || S.th[S.order[p]].state != FRESH) return;
        S.cursor = p;
        f->thread = S.order[p];
    }
}

[[noreturn]] static void fiber_main() {
    fiber *f = starting;
    for (;;) {
        run_threads(f);
        f->thread = -1;
        free_fibers.push_back(f);
        to_scheduler(f);
    }
}

static void run_block() {
    for (int t = 0; t < S.n; t++) S.th[t] = thread_rec{FRESH, NULL, NULL, 0};
    for (warp_rec &w : S.warps) w.nops = 0;
    S.live = S.n;
    S.at_sync = S.sync_pred = 0;
    S.cursor = -1;
    reshuffle();
    while (S.live > 0) {
        int t = pick_next();
        fiber *f;
        if (S.th[t].state == FRESH) {
            f = take_fiber();
            f->thread = t;
        } else {
            f = S.th[t].fib;
            S.cur = t;
            S.th[t].state = RUNNING;
            set_thread_idx(t);
        }
        to_fiber(f);
    }
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

unsigned activemask() {
    require_kernel("__activemask", "?", 0);
    int w = S.cur / 32;
    unsigned m = 0, present = warp_lanes_present(w);
    for (int l = 0; l < 32; l++)
        if ((present >> l & 1) && S.th[w * 32 + l].state != EXITED) m |= 1u << l;
    return m;
}

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

// Every lane of op has arrived: compute each lane's result and make the waiting ones runnable.
static void complete(int w, const warp_pending &op) {
    lane_rec *lane = &S.lanes[w * 32];
    unsigned ballot = 0;
    for (int l = 0; l < 32; l++)
        if ((op.mask >> l & 1) && lane[l].value) ballot |= 1u << l;
    for (int l = 0; l < 32; l++) {
        if (!(op.mask >> l & 1)) continue;
        if (op.kind == WARP_BALLOT) lane[l].result = ballot;
        else if (op.kind != WARP_SYNC) {
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
    for (int i = 0; i < 32; i++)
        if ((mask >> i & 1) && S.th[w * 32 + i].state == EXITED) {
            char why[160];
            snprintf(why, sizeof why, "warp operation at %s:%d: mask 0x%08x names lane %d, which has exited", file,
                     line, mask, i);
            deadlock(why);
        }
}

uint64_t warp_op(warp_kind kind, unsigned mask, uint64_t value, int arg, int width, const char *file, int line) {
    require_kernel("a warp intrinsic", file, line);
    if (width < 1 || width > 32 || (width & (width - 1)))
        fatal("warp operation at %s:%d: width %d is not a power of two up to 32", file, line, width);
    int t = S.cur, w = t / 32, l = t % 32;
    check_mask(mask, w, l, file, line);
    warp_rec &wr = S.warps[w];
    int i = 0;
    while (i < wr.nops && wr.ops[i].mask != mask) i++;
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

void cudaemu_unsupported(const char *what) {
    cudaemu::fatal("unsupported in the CPU emulation: %s", what);
}
