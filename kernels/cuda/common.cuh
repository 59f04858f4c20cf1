/* Shared by every CUDA source: error checks and the launcher naming. The same .cu files are
 * compiled by nvcc for the GPU and by the host compiler against kernels/emu/ for tests. */
#ifndef DOPPEL_CUDA_COMMON_CUH
#define DOPPEL_CUDA_COMMON_CUH

#ifdef DOPPEL_EMU
#include "kernels/emu/emu.h"
#define DP_CUDA_FN(name) dp_emu_##name
#else
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#define DP_CUDA_FN(name) dp_cuda_##name
/* Every launch goes through DP_LAUNCH; under EMU it runs the kernel on CPU fibers. */
#define DP_LAUNCH(kernel, grid, block, smem, stream, ...)                                          \
    kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#endif

/* The launch's dynamic shared memory as `type *name` (sized by DP_LAUNCH's smem argument). */
#ifdef DOPPEL_EMU
#define DP_DYNAMIC_SHARED(type, name) type *name = (type *)dp_emu_dynamic_smem()
#else
#define DP_DYNAMIC_SHARED(type, name)                                                              \
    extern __shared__ __align__(16) unsigned char dp_dynamic_smem_[];                              \
    type *name = (type *)dp_dynamic_smem_
#endif

#include <stdio.h>

#include "kernels/status.h"

/* Every runtime call is checked; a failure is recorded with file and line (returns -1). */
#define CUDA_CHECK(call)                                                                           \
    do {                                                                                           \
        cudaError_t err_ = (call);                                                                 \
        if (err_ != cudaSuccess)                                                                   \
            return dp_fail("%s:%d: CUDA error: %s (%s)", __FILE__, __LINE__,                       \
                           cudaGetErrorString(err_), #call);                                       \
    } while (0)

/* After a kernel launch: the launch itself can fail (bad configuration, no device). */
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

static inline int dp_ceil_div(int a, int b) {
    return (a + b - 1) / b;
}

#include "kernels/cuda/kernels.h"

/* ---- activations are fp32 or bf16 in memory; arithmetic is always fp32 */
__device__ static __forceinline__ float dp_load(const float *p) {
    return *p;
}
__device__ static __forceinline__ float dp_load(const __nv_bfloat16 *p) {
    return __bfloat162float(*p);
}
__device__ static __forceinline__ void dp_store(float *p, float v) {
    *p = v;
}
__device__ static __forceinline__ void dp_store(__nv_bfloat16 *p, float v) {
    *p = __float2bfloat16(v);
}
/* C callers pass bf16 as dp_bf16 (uint16_t); kernels see __nv_bfloat16 */
static inline __nv_bfloat16 *dp_bf(dp_bf16 *p) {
    return (__nv_bfloat16 *)p;
}
static inline const __nv_bfloat16 *dp_bf(const dp_bf16 *p) {
    return (const __nv_bfloat16 *)p;
}

/* ---- reductions (blockDim.x a multiple of 32: every warp is full) */
__device__ static __forceinline__ float dp_warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}
__device__ static __forceinline__ float dp_warp_max(float v) {
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}
/* Sum over the block, returned to every thread. `partial`: 32 floats of shared memory. */
__device__ static __forceinline__ float dp_block_sum(float v, float *partial) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    v = dp_warp_sum(v);
    __syncthreads(); /* `partial` may still be read by a previous reduction */
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    return dp_warp_sum(lane < nwarps ? partial[lane] : 0.0f);
}
__device__ static __forceinline__ float dp_block_max(float v, float *partial) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    v = dp_warp_max(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    return dp_warp_max(lane < nwarps ? partial[lane] : -INFINITY);
}

/* grid for an elementwise kernel over n elements (grid-stride loops cover the rest) */
static inline int dp_grid_for(size_t n, int block) {
    size_t g = (n + block - 1) / block;
    return g < 1 ? 1 : g > 65535 ? 65535 : (int)g;
}

#endif
