/* Device memory through the runtime (host memory with accounting under EMU), and the
 * elementwise kernels: casts, residual add, bias add. */
#include "kernels/cuda/common.cuh"

extern "C" int DP_CUDA_FN(dev_malloc)(void **p, size_t n) {
    *p = NULL;
    cudaError_t err = cudaMalloc(p, n);
    if (err != cudaSuccess)
        return dp_fail("device allocation of %.1f MiB failed: %s (use a shorter --seq or a smaller "
                       "--micro-batch; `doppel plan` shows what fits)",
                       n / 1048576.0, cudaGetErrorString(err));
    return 0;
}
extern "C" int DP_CUDA_FN(dev_free)(void *p) {
    CUDA_CHECK(cudaFree(p));
    return 0;
}
extern "C" int DP_CUDA_FN(upload)(void *dst, const void *src, size_t n) {
    CUDA_CHECK(cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice));
    return 0;
}
extern "C" int DP_CUDA_FN(download)(void *dst, const void *src, size_t n) {
    CUDA_CHECK(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost));
    return 0;
}
extern "C" int DP_CUDA_FN(dev_memset)(void *p, int value, size_t n) {
    CUDA_CHECK(cudaMemset(p, value, n));
    return 0;
}
extern "C" int DP_CUDA_FN(dev_copy)(void *dst, const void *src, size_t n) {
    CUDA_CHECK(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToDevice));
    return 0;
}
extern "C" int DP_CUDA_FN(synchronize)(void) {
    CUDA_CHECK(cudaDeviceSynchronize());
    return 0;
}

/* ---------------------------------------------------------------- elementwise */
#define EW_BLOCK 256

/* launches take one template argument at most (a comma would split DP_LAUNCH's arguments) */
__global__ static void cast_f32_to_bf16_kernel(__nv_bfloat16 *out, const float *inp, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16(inp[i]);
}
__global__ static void cast_bf16_to_f32_kernel(float *out, const __nv_bfloat16 *inp, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = __bfloat162float(inp[i]);
}

template <class T>
__global__ static void residual_kernel(T *out, const T *a, const T *b, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dp_store(out + i, dp_load(a + i) + dp_load(b + i));
}

__global__ static void bias_kernel(float *out, const float *bias, int N, int OC) {
    size_t n = (size_t)N * OC;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] += bias[i % OC];
}

extern "C" int DP_CUDA_FN(cast_f32_to_bf16)(dp_bf16 *out, const float *inp, size_t n) {
    if (!n) return 0;
    DP_LAUNCH(cast_f32_to_bf16_kernel, dp_grid_for(n, EW_BLOCK), EW_BLOCK, 0, 0, dp_bf(out), inp,
              n);
    CUDA_CHECK_LAUNCH();
    return 0;
}
extern "C" int DP_CUDA_FN(cast_bf16_to_f32)(float *out, const dp_bf16 *inp, size_t n) {
    if (!n) return 0;
    DP_LAUNCH(cast_bf16_to_f32_kernel, dp_grid_for(n, EW_BLOCK), EW_BLOCK, 0, 0, out, dp_bf(inp),
              n);
    CUDA_CHECK_LAUNCH();
    return 0;
}
extern "C" int DP_CUDA_FN(residual_forward)(float *out, const float *a, const float *b, size_t n) {
    if (!n) return 0;
    DP_LAUNCH(residual_kernel<float>, dp_grid_for(n, EW_BLOCK), EW_BLOCK, 0, 0, out, a, b, n);
    CUDA_CHECK_LAUNCH();
    return 0;
}
extern "C" int DP_CUDA_FN(residual_forward_bf16)(dp_bf16 *out, const dp_bf16 *a, const dp_bf16 *b,
                                                 size_t n) {
    if (!n) return 0;
    DP_LAUNCH(residual_kernel<__nv_bfloat16>, dp_grid_for(n, EW_BLOCK), EW_BLOCK, 0, 0, dp_bf(out),
              dp_bf(a), dp_bf(b), n);
    CUDA_CHECK_LAUNCH();
    return 0;
}
/* out: (N, OC) += bias: (OC) broadcast over rows */
extern "C" int DP_CUDA_FN(bias_forward)(float *out, const float *bias, int N, int OC) {
    if (N <= 0 || OC <= 0) return dp_fail("bias_forward: bad shape N=%d OC=%d", N, OC);
    DP_LAUNCH(bias_kernel, dp_grid_for((size_t)N * OC, EW_BLOCK), EW_BLOCK, 0, 0, out, bias, N, OC);
    CUDA_CHECK_LAUNCH();
    return 0;
}
