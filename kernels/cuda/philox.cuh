/* The four uniform draws a thread of a Philox-keyed kernel takes: elements i0 .. i0+3 of stream
 * (seed, subsequence), i.e. curand_uniform4 after curand_init(seed, subsequence, i0) — the same
 * numbers as dp_philox_uniform(seed, subsequence, i) on the CPU (kernels/philox.h). Included
 * before common.cuh: curand_kernel.h must come before the EMU macros. */
#ifndef DOPPEL_CUDA_PHILOX_CUH
#define DOPPEL_CUDA_PHILOX_CUH

#include <curand_kernel.h>
#include <stddef.h>
#include <stdint.h>

__device__ static inline void philox_uniform4(uint64_t seed, uint64_t subsequence, size_t i0,
                                              float u[4]) {
    curandStatePhilox4_32_10_t state;
    curand_init(seed, subsequence, i0, &state);
    float4 u4 = curand_uniform4(&state);
    u[0] = u4.x, u[1] = u4.y, u[2] = u4.z, u[3] = u4.w;
}

#endif
