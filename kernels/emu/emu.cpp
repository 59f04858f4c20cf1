/* EMU scheduler: runs a kernel launch on the CPU with one fiber per CUDA thread. The blocks of
 * the grid run one after another on the calling thread; within a block the fibers run in
 * thread order until each blocks at a barrier or a warp operation, then the barrier or warp
 * operation is resolved and they continue. A barrier that cannot complete is an error (the
 * launch fails with a message naming the kernel, block and source line), never a hang.
 * Also here: "device" memory on the host with allocation accounting. */
#include "kernels/emu/emu.h"

#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/status.h"

#if defined(__SANITIZE_ADDRESS__)
#define DP_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DP_EMU_ASAN 1
#endif
#endif
#ifdef DP_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

uint3 dp_emu_threadIdx, dp_emu_blockIdx;
dim3 dp_emu_blockDim, dp_emu_gridDim;

namespace {

/* ---------------------------------------------------------------- fibers */
enum State { READY, WAIT_BLOCK, WAIT_WARP, DONE };

struct Fiber {
    char *stack;       /* usable stack (above the guard page) */
    size_t stack_size; /* bytes */
#if defined(__x86_64__)
    void *sp; /* saved stack pointer while switched out */
#else
    ucontext_t uc;
#endif
#ifdef DP_EMU_ASAN
    void *fake_stack;
#endif
    State state;
    uint3 tid;
    int lane, warp;
    /* the warp operation this fiber waits in */
    int op;
    unsigned mask;
    uint64_t bits, result;
    int src;
    /* the __syncthreads this fiber waits at */
    const char *bar_file;
    int bar_line;
};

#ifdef DP_EMU_ASAN
const size_t STACK_SIZE = 512 * 1024; /* redzones make frames larger */
#else
const size_t STACK_SIZE = 128 * 1024;
#endif
const size_t GUARD = 4096;

struct Scheduler {
    std::mutex launch_mutex; /* static __shared__ arrays allow one launch at a time */
    std::vector<Fiber> fibers;
    Fiber *cur = nullptr;
    dp_emu_body body = nullptr;
    void *closure = nullptr;
#if defined(__x86_64__)
    void *sched_sp = nullptr;
#else
    ucontext_t sched_uc;
#endif
#ifdef DP_EMU_ASAN
    void *sched_fake = nullptr;
    const void *sched_bottom = nullptr;
    size_t sched_size = 0;
#endif
    std::vector<unsigned char> smem; /* dynamic shared memory of the running block */
    cudaError_t last_error = cudaSuccess;
    std::unordered_map<const void *, int> smem_attr; /* kernel -> max dynamic smem */
    size_t launches = 0, blocks = 0, switches = 0;

    ~Scheduler() {
        for (Fiber &f : fibers) munmap(f.stack - GUARD, f.stack_size + GUARD);
    }
};

Scheduler &sched() {
    static Scheduler s;
    return s;
}

#if defined(__x86_64__)
/* Saves the callee-saved registers (and the FP control words, also callee-saved in the SysV
 * ABI) on the current stack, stores the stack pointer in *save, and resumes the stack `next`. */
extern "C" void dp_emu_switch(void **save, void *next);
asm(R"(
    .text
    .globl dp_emu_switch
    .type dp_emu_switch, @function
dp_emu_switch:
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
    .size dp_emu_switch, .-dp_emu_switch
)");
#endif

[[noreturn]] void trampoline();

void fiber_init(Fiber &f) {
#ifdef DP_EMU_ASAN
    /* a reused stack still carries the redzones of the frames that were abandoned on it */
    __asan_unpoison_memory_region(f.stack, f.stack_size);
    f.fake_stack = nullptr;
#endif
#if defined(__x86_64__)
    /* a frame that dp_emu_switch "returns" into trampoline with: the return address at a
     * 16-byte aligned slot (so rsp is 8 mod 16 on entry, as after a call), six zeroed
     * registers below it, and the FP control words of this thread below those */
    uintptr_t top = ((uintptr_t)(f.stack + f.stack_size) & ~(uintptr_t)15) - 16;
    uint64_t *ret = (uint64_t *)top;
    ret[0] = (uint64_t)(uintptr_t)&trampoline;
    for (int i = 1; i <= 6; i++) ret[-i] = 0;
    char *sp = (char *)top - 64;
    unsigned mxcsr;
    unsigned short fpcw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpcw));
    memcpy(sp + 8, &mxcsr, 4);
    memcpy(sp, &fpcw, 2);
    f.sp = sp;
#else
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = f.stack;
    f.uc.uc_stack.ss_size = f.stack_size;
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, (void (*)())trampoline, 0);
#endif
}

/* scheduler -> fiber */
void switch_to(Scheduler &s, Fiber &f) {
    s.cur = &f;
    dp_emu_threadIdx = f.tid;
    s.switches++;
#ifdef DP_EMU_ASAN
    __sanitizer_start_switch_fiber(&s.sched_fake, f.stack, f.stack_size);
#endif
#if defined(__x86_64__)
    dp_emu_switch(&s.sched_sp, f.sp);
#else
    swapcontext(&s.sched_uc, &f.uc);
#endif
#ifdef DP_EMU_ASAN
    __sanitizer_finish_switch_fiber(s.sched_fake, nullptr, nullptr);
#endif
    s.cur = nullptr;
}

/* fiber -> scheduler; returns when the scheduler resumes this fiber */
void yield(Scheduler &s, Fiber &f) {
#ifdef DP_EMU_ASAN
    /* a finished fiber never comes back: its fake stack is released */
    __sanitizer_start_switch_fiber(f.state == DONE ? nullptr : &f.fake_stack, s.sched_bottom,
                                   s.sched_size);
#endif
#if defined(__x86_64__)
    dp_emu_switch(&f.sp, s.sched_sp);
#else
    swapcontext(&f.uc, &s.sched_uc);
#endif
#ifdef DP_EMU_ASAN
    __sanitizer_finish_switch_fiber(f.fake_stack, &s.sched_bottom, &s.sched_size);
#endif
}

void trampoline() {
    Scheduler &s = sched();
#ifdef DP_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &s.sched_bottom, &s.sched_size);
#endif
    s.body(s.closure);
    Fiber &f = *s.cur;
    f.state = DONE;
    yield(s, f);
    abort(); /* a finished fiber is never resumed */
}

Fiber &current(const char *what) {
    Fiber *f = sched().cur;
    if (!f) {
        fprintf(stderr, "EMU: %s called outside a kernel\n", what);
        abort();
    }
    return *f;
}

bool ensure_fibers(Scheduler &s, size_t n) {
    while (s.fibers.size() < n) {
        void *mem = mmap(nullptr, STACK_SIZE + GUARD, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (mem == MAP_FAILED) return false;
        mprotect(mem, GUARD, PROT_NONE); /* a stack overflow faults instead of corrupting */
        Fiber f;
        memset((void *)&f, 0, sizeof f);
        f.stack = (char *)mem + GUARD;
        f.stack_size = STACK_SIZE;
        s.fibers.push_back(f);
    }
    return true;
}

/* ---------------------------------------------------------------- one block */
const char *state_name(State st) {
    return st == READY        ? "running"
           : st == WAIT_BLOCK ? "at __syncthreads"
           : st == WAIT_WARP  ? "in a warp operation"
                              : "exited";
}

/* Resolves every warp whose participating lanes have all arrived. Returns 1 if some lanes were
 * released, 0 if none could be, -1 on an error (recorded). */
int resolve_warps(Scheduler &s, int n, const char *name) {
    int released = 0;
    int nwarps = (n + 31) / 32;
    for (int w = 0; w < nwarps; w++) {
        Fiber *lanes = &s.fibers[(size_t)w * 32];
        int nl = n - w * 32 < 32 ? n - w * 32 : 32;
        unsigned exist = nl == 32 ? 0xffffffffu : ((1u << nl) - 1);
        int first = -1;
        for (int l = 0; l < nl; l++)
            if (lanes[l].state == WAIT_WARP) {
                first = l;
                break;
            }
        if (first < 0) continue;
        unsigned mask = lanes[first].mask & exist;
        if (!(mask >> first & 1u))
            return dp_fail("EMU %s: block (%u,%u,%u) warp %d: lane %d calls a warp operation "
                           "with mask 0x%08x that does not include itself",
                           name, dp_emu_blockIdx.x, dp_emu_blockIdx.y, dp_emu_blockIdx.z, w, first,
                           lanes[first].mask);
        bool ready = true;
        for (int l = 0; l < nl; l++) {
            if (!(mask >> l & 1u)) continue;
            if (lanes[l].state == DONE)
                return dp_fail("EMU %s: block (%u,%u,%u) warp %d: lane %d exited while lanes of "
                               "mask 0x%08x wait for it in a warp operation (shuffle/syncwarp)",
                               name, dp_emu_blockIdx.x, dp_emu_blockIdx.y, dp_emu_blockIdx.z, w, l,
                               mask);
            if (lanes[l].state != WAIT_WARP)
                ready = false;
            else if (lanes[l].op != lanes[first].op)
                return dp_fail("EMU %s: block (%u,%u,%u) warp %d: lanes %d and %d wait in "
                               "different kinds of warp operation",
                               name, dp_emu_blockIdx.x, dp_emu_blockIdx.y, dp_emu_blockIdx.z, w,
                               first, l);
        }
        if (!ready) continue;
        uint64_t ballot = 0;
        for (int l = 0; l < nl; l++)
            if (mask >> l & 1u) ballot |= (uint64_t)(lanes[l].bits != 0) << l;
        for (int l = 0; l < nl; l++) {
            if (!(mask >> l & 1u)) continue;
            Fiber &f = lanes[l];
            int src = f.src;
            if (f.op == DP_EMU_WARP_SHFL)
                f.result = src >= 0 && src < nl && (mask >> src & 1u) ? lanes[src].bits : f.bits;
            else if (f.op == DP_EMU_WARP_BALLOT)
                f.result = ballot;
            f.state = READY;
            released = 1;
        }
    }
    return released;
}

int run_block(Scheduler &s, int n, const char *name) {
    for (int t = 0; t < n; t++) {
        Fiber &f = s.fibers[t];
        fiber_init(f);
        f.state = READY;
        f.tid.x = t % dp_emu_blockDim.x;
        f.tid.y = t / dp_emu_blockDim.x % dp_emu_blockDim.y;
        f.tid.z = t / (dp_emu_blockDim.x * dp_emu_blockDim.y);
        f.lane = t % 32;
        f.warp = t / 32;
    }
    for (;;) {
        for (int t = 0; t < n; t++)
            if (s.fibers[t].state == READY) switch_to(s, s.fibers[t]);
        int r = resolve_warps(s, n, name);
        if (r < 0) return -1;
        if (r > 0) continue;
        int waiting = 0, done = 0, first = -1;
        for (int t = 0; t < n; t++) {
            if (s.fibers[t].state == DONE) done++;
            if (s.fibers[t].state == WAIT_BLOCK) {
                waiting++;
                if (first < 0) first = t;
            }
        }
        if (done == n) return 0;
        Fiber &a = s.fibers[first < 0 ? 0 : first];
        if (waiting > 0 && waiting + done == n) {
            if (done > 0)
                return dp_fail("EMU %s: block (%u,%u,%u): __syncthreads at %s:%d reached by %d "
                               "of %d threads; the other %d had exited (a barrier must be "
                               "reached by every thread of the block)",
                               name, dp_emu_blockIdx.x, dp_emu_blockIdx.y, dp_emu_blockIdx.z,
                               a.bar_file, a.bar_line, waiting, n, done);
            for (int t = 0; t < n; t++) {
                Fiber &f = s.fibers[t];
                if (f.bar_line != a.bar_line || strcmp(f.bar_file, a.bar_file))
                    return dp_fail("EMU %s: block (%u,%u,%u): threads wait at different "
                                   "barriers: thread %d at %s:%d, thread %d at %s:%d",
                                   name, dp_emu_blockIdx.x, dp_emu_blockIdx.y, dp_emu_blockIdx.z,
                                   first, a.bar_file, a.bar_line, t, f.bar_file, f.bar_line);
                f.state = READY;
            }
            continue;
        }
        /* nothing can move: describe who waits where */
        int t2 = 0;
        while (t2 < n && s.fibers[t2].state == s.fibers[0].state) t2++;
        Fiber &b = s.fibers[t2 < n ? t2 : 0];
        return dp_fail("EMU %s: block (%u,%u,%u) deadlocks: thread 0 is %s%s%s, thread %d is "
                       "%s (a barrier or warp operation not reached by every thread)",
                       name, dp_emu_blockIdx.x, dp_emu_blockIdx.y, dp_emu_blockIdx.z,
                       state_name(s.fibers[0].state), s.fibers[0].state == WAIT_BLOCK ? " " : "",
                       s.fibers[0].state == WAIT_BLOCK ? s.fibers[0].bar_file : "", t2,
                       state_name(b.state));
    }
}

/* ---------------------------------------------------------------- device memory */
struct Memory {
    std::mutex mutex;
    std::unordered_map<void *, size_t> live;
    size_t bytes = 0, peak = 0, limit = 0;
};
Memory &memory() {
    static Memory m;
    return m;
}

} // namespace

/* ---------------------------------------------------------------- kernel-side calls */
void dp_emu_syncthreads(const char *file, int line) {
    Fiber &f = current("__syncthreads");
    f.state = WAIT_BLOCK;
    f.bar_file = file;
    f.bar_line = line;
    yield(sched(), f);
}

uint64_t dp_emu_warp_op(int op, unsigned mask, uint64_t bits, int src_lane) {
    Fiber &f = current("a warp operation");
    f.state = WAIT_WARP;
    f.op = op;
    f.mask = mask;
    f.bits = bits;
    f.src = src_lane; /* lane within the warp */
    yield(sched(), f);
    return f.result;
}

int dp_emu_lane(void) {
    return current("a warp operation").lane;
}

void *dp_emu_dynamic_smem(void) {
    return sched().smem.data();
}

cudaError_t dp_emu_launch(const char *name, const void *kernel, dim3 grid, dim3 block, size_t smem,
                          cudaStream_t stream, dp_emu_body body, void *closure) {
    (void)stream;
    Scheduler &s = sched();
    std::lock_guard<std::mutex> lock(s.launch_mutex);
    uint64_t nthreads = (uint64_t)block.x * block.y * block.z;
    if (!grid.x || !grid.y || !grid.z || !nthreads || nthreads > 1024 || block.z > 64 ||
        grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) {
        dp_fail("EMU %s: invalid launch configuration grid (%u,%u,%u) block (%u,%u,%u) (at most "
                "1024 threads per block, grid y/z at most 65535)",
                name, grid.x, grid.y, grid.z, block.x, block.y, block.z);
        return s.last_error = cudaErrorInvalidConfiguration;
    }
    auto attr = s.smem_attr.find(kernel);
    size_t smem_max = attr != s.smem_attr.end() ? (size_t)attr->second : 48 * 1024;
    if (smem > smem_max) {
        dp_fail("EMU %s: %zu bytes of dynamic shared memory, above the %zu allowed (past 48 KiB a "
                "kernel needs cudaFuncSetAttribute(MaxDynamicSharedMemorySize), at most 99 KiB "
                "on sm_86)",
                name, smem, smem_max);
        return s.last_error = cudaErrorInvalidValue;
    }
    if (!ensure_fibers(s, (size_t)nthreads)) {
        dp_fail("EMU %s: cannot map stacks for %llu fibers", name, (unsigned long long)nthreads);
        return s.last_error = cudaErrorMemoryAllocation;
    }
    s.smem.assign(smem ? smem : 16, 0);
    s.body = body;
    s.closure = closure;
    s.launches++;
    dp_emu_gridDim = grid;
    dp_emu_blockDim = block;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                dp_emu_blockIdx = make_uint3(x, y, z);
                /* shared memory starts as garbage on the GPU: NaN bytes make a read before
                 * write visible */
                memset(s.smem.data(), 0xff, s.smem.size());
                s.blocks++;
                if (run_block(s, (int)nthreads, name) < 0)
                    return s.last_error = cudaErrorLaunchFailure;
            }
    return cudaSuccess;
}

/* ---------------------------------------------------------------- runtime API */
cudaError_t dp_emu_cudaMalloc(void **p, size_t n) {
    Memory &m = memory();
    std::lock_guard<std::mutex> lock(m.mutex);
    *p = nullptr;
    if (m.limit && m.bytes + n > m.limit) return cudaErrorMemoryAllocation;
    size_t rounded = (n + 255) / 256 * 256; /* cudaMalloc pointers are 256-byte aligned */
    void *mem = aligned_alloc(256, rounded ? rounded : 256);
    if (!mem) return cudaErrorMemoryAllocation;
    memset(mem, 0xff, rounded ? rounded : 256); /* uninitialized device memory reads as NaN */
    m.live[mem] = n;
    m.bytes += n;
    if (m.bytes > m.peak) m.peak = m.bytes;
    *p = mem;
    return cudaSuccess;
}

cudaError_t dp_emu_cudaFree(void *p) {
    if (!p) return cudaSuccess;
    Memory &m = memory();
    std::lock_guard<std::mutex> lock(m.mutex);
    auto it = m.live.find(p);
    if (it == m.live.end()) return cudaErrorInvalidValue;
    m.bytes -= it->second;
    m.live.erase(it);
    free(p);
    return cudaSuccess;
}

cudaError_t dp_emu_cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
    (void)kind;
    if (n && (!dst || !src)) return cudaErrorInvalidValue;
    if (n) memmove(dst, src, n);
    return cudaSuccess;
}

cudaError_t dp_emu_cudaMemset(void *p, int value, size_t n) {
    if (n && !p) return cudaErrorInvalidValue;
    if (n) memset(p, value, n);
    return cudaSuccess;
}

cudaError_t dp_emu_cudaGetLastError(void) {
    cudaError_t e = sched().last_error;
    sched().last_error = cudaSuccess;
    return e;
}

cudaError_t dp_emu_cudaPeekAtLastError(void) {
    return sched().last_error;
}

const char *dp_emu_cudaGetErrorString(cudaError_t err) {
    switch (err) {
    case cudaSuccess:
        return "no error";
    case cudaErrorInvalidValue:
        return "invalid argument";
    case cudaErrorMemoryAllocation:
        return "out of memory";
    case cudaErrorInvalidConfiguration:
        return "invalid configuration argument";
    case cudaErrorLaunchFailure:
        return "unspecified launch failure (EMU: see the message before)";
    default:
        return "EMU error";
    }
}

cudaError_t dp_emu_cudaStreamCreate(cudaStream_t *st) {
    static char dummy;
    *st = (cudaStream_t)(void *)&dummy; /* every stream is the synchronous host */
    return cudaSuccess;
}

cudaError_t dp_emu_cudaStreamDestroy(cudaStream_t st) {
    (void)st;
    return cudaSuccess;
}

cudaError_t dp_emu_cudaFuncSetAttribute(const void *kernel, cudaFuncAttribute attr, int value) {
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
    if (value < 0 || value > 99 * 1024) return cudaErrorInvalidValue;
    Scheduler &s = sched();
    std::lock_guard<std::mutex> lock(s.launch_mutex);
    s.smem_attr[kernel] = value;
    return cudaSuccess;
}

/* ---------------------------------------------------------------- events (no clock) */
struct CUevent_st {
    bool recorded;
};

cudaError_t dp_emu_cudaEventCreate(cudaEvent_t *e) {
    *e = new (std::nothrow) CUevent_st{false};
    return *e ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t dp_emu_cudaEventDestroy(cudaEvent_t e) {
    if (!e) return cudaErrorInvalidResourceHandle;
    delete e;
    return cudaSuccess;
}

cudaError_t dp_emu_cudaEventRecord(cudaEvent_t e, cudaStream_t stream) {
    (void)stream;
    if (!e) return cudaErrorInvalidResourceHandle;
    e->recorded = true; /* work is synchronous: everything before it has completed */
    return cudaSuccess;
}

cudaError_t dp_emu_cudaEventSynchronize(cudaEvent_t e) {
    return e ? cudaSuccess : cudaErrorInvalidResourceHandle;
}

/* as on the GPU, both events must have been recorded; the time is 0 (not measured) */
cudaError_t dp_emu_cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    if (!ms || !start || !end) return cudaErrorInvalidValue;
    *ms = 0.0f;
    return start->recorded && end->recorded ? cudaSuccess : cudaErrorInvalidResourceHandle;
}

/* ---------------------------------------------------------------- C API (emu_api.h) */
extern "C" size_t dp_emu_device_bytes(void) {
    std::lock_guard<std::mutex> lock(memory().mutex);
    return memory().bytes;
}
extern "C" size_t dp_emu_device_peak_bytes(void) {
    std::lock_guard<std::mutex> lock(memory().mutex);
    return memory().peak;
}
extern "C" void dp_emu_reset_peak(void) {
    std::lock_guard<std::mutex> lock(memory().mutex);
    memory().peak = memory().bytes;
}
extern "C" void dp_emu_set_device_limit(size_t bytes) {
    std::lock_guard<std::mutex> lock(memory().mutex);
    memory().limit = bytes;
}
extern "C" void dp_emu_counters(size_t *launches, size_t *blocks, size_t *switches) {
    Scheduler &s = sched();
    if (launches) *launches = s.launches;
    if (blocks) *blocks = s.blocks;
    if (switches) *switches = s.switches;
}
