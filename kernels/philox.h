/* Philox4x32-10, the counter-based generator of cuRAND's curandStatePhilox4_32_10_t, as plain
 * C usable from CPU code and from CUDA kernels alike, so the CPU and CUDA backends draw
 * identical LoRA initializations and dropout masks. Element i of stream (seed, subsequence)
 * is output i % 4 of the block at counter (i / 4, subsequence): the value curand() returns
 * first after curand_init(seed, subsequence, i, &state). */
#ifndef DOPPEL_PHILOX_H
#define DOPPEL_PHILOX_H

#include <stdint.h>

#ifdef __CUDACC__
#define DP_HD __host__ __device__ __forceinline__
#else
#define DP_HD static inline
#endif

typedef struct {
    uint32_t v[4];
} dp_philox4;

DP_HD dp_philox4 dp_philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                                  uint32_t k1) {
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1, n3 = (uint32_t)p0;
        c0 = n0, c1 = n1, c2 = n2, c3 = n3;
        k0 += 0x9E3779B9u, k1 += 0xBB67AE85u;
    }
    dp_philox4 r = {{c0, c1, c2, c3}};
    return r;
}

/* The i-th 32-bit draw of stream (seed, subsequence). */
DP_HD uint32_t dp_philox_u32(uint64_t seed, uint64_t subsequence, uint64_t i) {
    uint64_t block = i / 4;
    dp_philox4 r =
        dp_philox4x32_10((uint32_t)block, (uint32_t)(block >> 32), (uint32_t)subsequence,
                         (uint32_t)(subsequence >> 32), (uint32_t)seed, (uint32_t)(seed >> 32));
    return r.v[i % 4];
}

/* Uniform in (0, 1], the same mapping as curand_uniform. */
DP_HD float dp_philox_uniform(uint64_t seed, uint64_t subsequence, uint64_t i) {
    return dp_philox_u32(seed, subsequence, i) * 2.3283064e-10f + (2.3283064e-10f / 2.0f);
}

#endif
