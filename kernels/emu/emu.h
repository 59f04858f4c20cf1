/* EMU: the CUDA kernel sources of kernels/cuda/ compiled by the host C++ compiler and run on
 * the CPU, one fiber per CUDA thread, the blocks of a grid one after another. This header
 * stands in for what nvcc provides (built-in variables, barriers, warp exchanges, atomics,
 * intrinsics, the runtime's memory calls); kernels/emu/emu.cpp is the scheduler.
 * It is included only through kernels/cuda/common.cuh when DOPPEL_EMU is defined. */
#ifndef DOPPEL_EMU_H
#define DOPPEL_EMU_H

#ifndef __cplusplus
#error "kernels/emu/emu.h is C++: it is included by CUDA sources compiled with DOPPEL_EMU"
#endif

/* The toolkit headers have host implementations of bf16/fp16 and the runtime's types. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <driver_types.h>
#include <vector_types.h>

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/emu/emu_api.h"

/* ---------------------------------------------------------------- qualifiers
 * Blocks run one after another, so one static copy of a __shared__ array is the block's
 * shared memory. (Launches are serialized by the scheduler for the same reason.) */
#undef __shared__
#define __shared__ static
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

/* ---------------------------------------------------------------- built-in variables
 * Set by the scheduler each time it switches to a fiber. */
extern uint3 dp_emu_threadIdx, dp_emu_blockIdx;
extern dim3 dp_emu_blockDim, dp_emu_gridDim;
#define threadIdx dp_emu_threadIdx
#define blockIdx  dp_emu_blockIdx
#define blockDim  dp_emu_blockDim
#define gridDim   dp_emu_gridDim
static const int warpSize = 32;

/* ---------------------------------------------------------------- barriers and warps */
void dp_emu_syncthreads(const char *file, int line);
#define __syncthreads() dp_emu_syncthreads(__FILE__, __LINE__)

/* Warp-wide operations block the calling fiber until every lane named in `mask` (that exists
 * in the block) has arrived; a lane that exited instead is an error, as on the GPU. */
enum { DP_EMU_WARP_SYNC, DP_EMU_WARP_SHFL, DP_EMU_WARP_BALLOT };
uint64_t dp_emu_warp_op(int op, unsigned mask, uint64_t bits, int src_lane);
/* the scheduler's lane of the running fiber */
int dp_emu_lane(void);

static inline void __syncwarp(unsigned mask = 0xffffffffu) {
    dp_emu_warp_op(DP_EMU_WARP_SYNC, mask, 0, 0);
}

template <class T> static inline T dp_emu_shfl(unsigned mask, T v, int src) {
    static_assert(sizeof(T) <= sizeof(uint64_t), "shuffle of a type wider than 8 bytes");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof v);
    bits = dp_emu_warp_op(DP_EMU_WARP_SHFL, mask, bits, src);
    memcpy(&v, &bits, sizeof v);
    return v;
}
/* Source lanes follow the CUDA programming guide, including `width` sub-segments; a source
 * outside the segment returns the caller's own value. */
template <class T> static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    int lane = dp_emu_lane();
    return dp_emu_shfl(mask, v, (lane & ~(width - 1)) + (src & (width - 1)));
}
template <class T>
static inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    int lane = dp_emu_lane();
    int src = (lane % width) >= (int)delta ? lane - (int)delta : lane;
    return dp_emu_shfl(mask, v, src);
}
template <class T>
static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    int lane = dp_emu_lane();
    int src = (lane % width) + (int)delta < width ? lane + (int)delta : lane;
    return dp_emu_shfl(mask, v, src);
}
template <class T>
static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    int lane = dp_emu_lane();
    int src = lane ^ lane_mask;
    if (src < (lane & ~(width - 1)) || src >= (lane & ~(width - 1)) + width) src = lane;
    return dp_emu_shfl(mask, v, src);
}
static inline unsigned __ballot_sync(unsigned mask, int pred) {
    return (unsigned)dp_emu_warp_op(DP_EMU_WARP_BALLOT, mask, pred != 0, 0);
}
static inline int __any_sync(unsigned mask, int pred) {
    return __ballot_sync(mask, pred) != 0;
}
static inline int __all_sync(unsigned mask, int pred) {
    return (__ballot_sync(mask, pred) & mask) == (__ballot_sync(mask, 1) & mask);
}

/* ---------------------------------------------------------------- atomics
 * Fibers switch only at barriers and warp operations, so a plain read-modify-write is atomic. */
template <class T> static inline T atomicAdd(T *p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}
template <class T> static inline T atomicSub(T *p, T v) {
    T old = *p;
    *p = old - v;
    return old;
}
template <class T> static inline T atomicMax(T *p, T v) {
    T old = *p;
    *p = old > v ? old : v;
    return old;
}
template <class T> static inline T atomicMin(T *p, T v) {
    T old = *p;
    *p = old < v ? old : v;
    return old;
}
template <class T> static inline T atomicExch(T *p, T v) {
    T old = *p;
    *p = v;
    return old;
}
template <class T> static inline T atomicCAS(T *p, T compare, T v) {
    T old = *p;
    if (old == compare) *p = v;
    return old;
}
static inline void __threadfence(void) {}
static inline void __threadfence_block(void) {}

/* ---------------------------------------------------------------- loads and intrinsics */
template <class T> static inline T __ldg(const T *p) {
    return *p;
}
static inline float rsqrtf(float x) {
    return 1.0f / sqrtf(x);
}
/* __expf, __logf, __sinf, __cosf, __powf, __sincosf: glibc declares them (same results) */
static inline float __fdividef(float x, float y) {
    return x / y;
}
/* rounded operations that nvcc never contracts into an FMA */
static inline float __fmul_rn(float x, float y) {
    return x * y;
}
static inline float __fadd_rn(float x, float y) {
    return x + y;
}
static inline float __frcp_rn(float x) {
    return 1.0f / x;
}
static inline float __fsqrt_rn(float x) {
    return sqrtf(x);
}
static inline float __fmaf_rn(float a, float b, float c) {
    return fmaf(a, b, c);
}
static inline float __saturatef(float x) {
    return x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x;
}
static inline int __float2int_rn(float x) {
    return (int)nearbyintf(x);
}
static inline int __float_as_int(float x) {
    int i;
    memcpy(&i, &x, 4);
    return i;
}
static inline unsigned __float_as_uint(float x) {
    unsigned i;
    memcpy(&i, &x, 4);
    return i;
}
static inline float __int_as_float(int i) {
    float x;
    memcpy(&x, &i, 4);
    return x;
}
static inline float __uint_as_float(unsigned i) {
    float x;
    memcpy(&x, &i, 4);
    return x;
}
static inline unsigned __umulhi(unsigned a, unsigned b) {
    return (unsigned)(((uint64_t)a * b) >> 32);
}
static inline int __popc(unsigned x) {
    return __builtin_popcount(x);
}
static inline int __clz(int x) {
    return x ? __builtin_clz((unsigned)x) : 32;
}
static inline int __ffs(int x) {
    return __builtin_ffs(x);
}
/* device code's overloaded min/max */
static inline int min(int a, int b) {
    return a < b ? a : b;
}
static inline int max(int a, int b) {
    return a > b ? a : b;
}
static inline unsigned min(unsigned a, unsigned b) {
    return a < b ? a : b;
}
static inline unsigned max(unsigned a, unsigned b) {
    return a > b ? a : b;
}
static inline int64_t min(int64_t a, int64_t b) {
    return a < b ? a : b;
}
static inline int64_t max(int64_t a, int64_t b) {
    return a > b ? a : b;
}
static inline float min(float a, float b) {
    return fminf(a, b);
}
static inline float max(float a, float b) {
    return fmaxf(a, b);
}

/* ---------------------------------------------------------------- launches
 * DP_LAUNCH wraps the call in a closure that every fiber runs; arguments are evaluated once
 * per thread, as kernel parameters are copied per thread on the GPU. */
typedef void (*dp_emu_body)(void *closure);
cudaError_t dp_emu_launch(const char *name, const void *kernel, dim3 grid, dim3 block, size_t smem,
                          cudaStream_t stream, dp_emu_body body, void *closure);
template <class F> static void dp_emu_call(void *f) {
    (*(F *)f)();
}
#define DP_LAUNCH(kernel, grid, block, smem, stream, ...)                                          \
    do {                                                                                           \
        auto dp_emu_closure_ = [&]() { kernel(__VA_ARGS__); };                                     \
        dp_emu_launch(#kernel, (const void *)&kernel, dim3(grid), dim3(block), (smem), (stream),   \
                      dp_emu_call<decltype(dp_emu_closure_)>, &dp_emu_closure_);                   \
    } while (0)
/* The launch's dynamic shared memory (extern __shared__ under nvcc). */
void *dp_emu_dynamic_smem(void);

/* ---------------------------------------------------------------- runtime API
 * Device memory is host memory; copies are synchronous; every allocation is recorded. */
cudaError_t dp_emu_cudaMalloc(void **p, size_t n);
cudaError_t dp_emu_cudaFree(void *p);
cudaError_t dp_emu_cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind);
cudaError_t dp_emu_cudaMemset(void *p, int value, size_t n);
cudaError_t dp_emu_cudaGetLastError(void);
cudaError_t dp_emu_cudaPeekAtLastError(void);
const char *dp_emu_cudaGetErrorString(cudaError_t err);
cudaError_t dp_emu_cudaStreamCreate(cudaStream_t *s);
cudaError_t dp_emu_cudaStreamDestroy(cudaStream_t s);
cudaError_t dp_emu_cudaFuncSetAttribute(const void *kernel, cudaFuncAttribute attr, int value);
#define cudaMalloc(p, n)                    dp_emu_cudaMalloc((void **)(p), (n))
#define cudaFree(p)                         dp_emu_cudaFree((void *)(p))
#define cudaMemcpy(d, s, n, k)              dp_emu_cudaMemcpy((d), (s), (n), (k))
#define cudaMemcpyAsync(d, s, n, k, stream) dp_emu_cudaMemcpy((d), (s), (n), (k))
#define cudaMemset(p, v, n)                 dp_emu_cudaMemset((p), (v), (n))
#define cudaMemsetAsync(p, v, n, stream)    dp_emu_cudaMemset((p), (v), (n))
#define cudaGetLastError()                  dp_emu_cudaGetLastError()
#define cudaPeekAtLastError()               dp_emu_cudaPeekAtLastError()
#define cudaGetErrorString(e)               dp_emu_cudaGetErrorString(e)
#define cudaDeviceSynchronize()             dp_emu_cudaPeekAtLastError()
#define cudaStreamSynchronize(s)            dp_emu_cudaPeekAtLastError()
#define cudaStreamCreate(s)                 dp_emu_cudaStreamCreate(s)
#define cudaStreamDestroy(s)                dp_emu_cudaStreamDestroy(s)
#define cudaFuncSetAttribute(kernel, attr, v)                                                      \
    dp_emu_cudaFuncSetAttribute((const void *)&(kernel), (attr), (v))

/* Events exist so that timing code compiles and runs, but EMU measures no time: an elapsed
 * time between two recorded events is 0 ms (callers print "not measured" under EMU). */
cudaError_t dp_emu_cudaEventCreate(cudaEvent_t *e);
cudaError_t dp_emu_cudaEventDestroy(cudaEvent_t e);
cudaError_t dp_emu_cudaEventRecord(cudaEvent_t e, cudaStream_t stream = 0);
cudaError_t dp_emu_cudaEventSynchronize(cudaEvent_t e);
cudaError_t dp_emu_cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end);
#define cudaEventCreate(e)               dp_emu_cudaEventCreate(e)
#define cudaEventDestroy(e)              dp_emu_cudaEventDestroy(e)
#define cudaEventRecord                  dp_emu_cudaEventRecord
#define cudaEventSynchronize(e)          dp_emu_cudaEventSynchronize(e)
#define cudaEventElapsedTime(ms, e0, e1) dp_emu_cudaEventElapsedTime((ms), (e0), (e1))

#endif
