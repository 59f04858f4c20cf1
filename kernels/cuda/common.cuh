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

extern "C" {
#include "data/error.h"
}

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

#endif
