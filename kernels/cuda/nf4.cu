/* NF4 on the GPU: dequantization (double-quantized absmax: code_map[absmax_q] * absmax2 +
 * offset, times the NF4 value of each 4-bit code) to fp32 or bf16 for the cuBLAS path, and
 * a fused GEMV for decoding (one warp per output row, dequantizing on the fly). Twins of
 * dp_nf4_dequantize and gemv_nf4 in kernels/cpu/nf4.c and kernels/cpu/matmul.c. */
#include "kernels/cuda/common.cuh"

#include <stdlib.h>
#include <string.h>

#define NF4_BLOCK      256
#define NF4_GEMV_WARPS 8

__device__ static __forceinline__ float nf4_absmax(const dp_nf4_dev &w, int64_t block) {
    /* no FMA contraction: the same roundings as the CPU twin, so both dequantize alike */
    return __fadd_rn(__fmul_rn(w.maps[w.absmax_q[block]], w.absmax2[block / 256]), w.offset);
}
__device__ static __forceinline__ float nf4_value(const dp_nf4_dev &w, int64_t e) {
    uint8_t byte = w.codes[e / 2];
    return w.maps[256 + ((e & 1) ? (byte & 15) : (byte >> 4))];
}

/* one thread per element; consecutive threads share bytes and blocks (cache-friendly) */
template <class T> __global__ static void nf4_dequantize_kernel(T *out, dp_nf4_dev w) {
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < w.n;
         e += (int64_t)gridDim.x * blockDim.x)
        dp_store(out + e, __fmul_rn(nf4_value(w, e), nf4_absmax(w, e / w.blocksize)));
}

__global__ static void gemv_nf4_kernel(float *out, const float *x, dp_nf4_dev w, const float *bias,
                                       int C, int OC) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= OC) return; /* whole warps leave together */
    float s = 0.0f;
    for (int c = lane; c < C; c += 32) {
        int64_t e = (int64_t)row * C + c;
        s += __fmul_rn(nf4_value(w, e), nf4_absmax(w, e / w.blocksize)) * x[c];
    }
    s = dp_warp_sum(s);
    if (lane == 0) out[row] = s + (bias ? bias[row] : 0.0f);
}

extern "C" int DP_CUDA_FN(nf4_free)(dp_nf4_dev *d) {
    int rc = 0;
    void *p[4] = {d->codes, d->absmax_q, d->absmax2, d->maps};
    for (int i = 0; i < 4; i++)
        if (p[i] && cudaFree(p[i]) != cudaSuccess) rc = dp_fail("nf4_free: cudaFree failed");
    memset(d, 0, sizeof *d);
    return rc;
}

extern "C" int DP_CUDA_FN(nf4_upload)(dp_nf4_dev *d, const dp_nf4 *q) {
    memset(d, 0, sizeof *d);
    if (q->rows <= 0 || q->cols <= 0 || q->n != q->rows * q->cols || q->blocksize <= 0 ||
        q->nblocks != (q->n + q->blocksize - 1) / q->blocksize)
        return dp_fail("nf4_upload: inconsistent NF4 matrix (%lld x %lld, n=%lld, blocksize %d, "
                       "%lld blocks)",
                       (long long)q->rows, (long long)q->cols, (long long)q->n, q->blocksize,
                       (long long)q->nblocks);
    d->rows = q->rows, d->cols = q->cols, d->n = q->n, d->nblocks = q->nblocks;
    d->blocksize = q->blocksize, d->offset = q->offset;
    size_t ncodes = (size_t)(q->n + 1) / 2, ngroups = (size_t)(q->nblocks + 255) / 256;
    float maps[256 + 16];
    dp_dynamic_map(maps);
    memcpy(maps + 256, dp_nf4_values, sizeof(float) * 16);
    if (cudaMalloc(&d->codes, ncodes) != cudaSuccess ||
        cudaMalloc(&d->absmax_q, (size_t)q->nblocks) != cudaSuccess ||
        cudaMalloc(&d->absmax2, ngroups * sizeof(float)) != cudaSuccess ||
        cudaMalloc(&d->maps, sizeof maps) != cudaSuccess) {
        DP_CUDA_FN(nf4_free)(d);
        return dp_fail("nf4_upload: device allocation of %.1f MiB failed for a %lld x %lld "
                       "matrix",
                       (ncodes + q->nblocks) / 1048576.0, (long long)q->rows, (long long)q->cols);
    }
    CUDA_CHECK(cudaMemcpy(d->codes, q->codes, ncodes, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d->absmax_q, q->absmax_q, (size_t)q->nblocks, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d->absmax2, q->absmax2, ngroups * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d->maps, maps, sizeof maps, cudaMemcpyHostToDevice));
    return 0;
}

extern "C" int DP_CUDA_FN(nf4_dequantize)(float *out, const dp_nf4_dev *w) {
    if (w->n <= 0) return dp_fail("nf4_dequantize: empty matrix");
    DP_LAUNCH(nf4_dequantize_kernel<float>, dp_grid_for((size_t)w->n, NF4_BLOCK), NF4_BLOCK, 0, 0,
              out, *w);
    CUDA_CHECK_LAUNCH();
    return 0;
}

extern "C" int DP_CUDA_FN(nf4_dequantize_bf16_block)(dp_bf16 *out, const dp_nf4_dev *w, int block) {
    if (w->n <= 0) return dp_fail("nf4_dequantize_bf16: empty matrix");
    if (block < 1 || block > 1024) return dp_fail("nf4_dequantize_bf16: block size %d", block);
    DP_LAUNCH(nf4_dequantize_kernel<__nv_bfloat16>, dp_grid_for((size_t)w->n, block), block, 0, 0,
              dp_bf(out), *w);
    CUDA_CHECK_LAUNCH();
    return 0;
}
extern "C" int DP_CUDA_FN(nf4_dequantize_bf16)(dp_bf16 *out, const dp_nf4_dev *w) {
    return DP_CUDA_FN(nf4_dequantize_bf16_block)(out, w, NF4_BLOCK);
}

/* out: (OC); x: (C); W: (OC, C); block: threads, one warp per row */
extern "C" int DP_CUDA_FN(gemv_nf4_block)(float *out, const float *x, const dp_nf4_dev *w,
                                          const float *bias, int C, int OC, int block) {
    if (C <= 0 || OC <= 0 || w->rows != OC || w->cols != C)
        return dp_fail("gemv_nf4: weight is %lld x %lld, expected OC=%d x C=%d", (long long)w->rows,
                       (long long)w->cols, OC, C);
    if (block < 32 || block > 1024 || block % 32)
        return dp_fail("gemv_nf4: block size %d (a multiple of 32 up to 1024)", block);
    DP_LAUNCH(gemv_nf4_kernel, dp_ceil_div(OC, block / 32), block, 0, 0, out, x, *w, bias, C, OC);
    CUDA_CHECK_LAUNCH();
    return 0;
}
extern "C" int DP_CUDA_FN(gemv_nf4)(float *out, const float *x, const dp_nf4_dev *w,
                                    const float *bias, int C, int OC) {
    return DP_CUDA_FN(gemv_nf4_block)(out, x, w, bias, C, OC, NF4_GEMV_WARPS * 32);
}
