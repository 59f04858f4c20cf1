/* RMSNorm on the GPU: one block per row, block reductions through warp shuffles. fp32 or bf16
 * activations, fp32 weight and arithmetic. Twins of kernels/cpu/rmsnorm.c. */
#include "kernels/cuda/common.cuh"

#define RMSNORM_BLOCK 256

template <class T>
__global__ static void rmsnorm_forward_kernel(T *out, float *rstd, const T *inp,
                                              const float *weight, int C, float eps) {
    __shared__ float partial[32];
    const T *x = inp + (size_t)blockIdx.x * C; // (C)
    T *o = out + (size_t)blockIdx.x * C;       // (C)
    float ss = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float xc = dp_load(x + c);
        ss += xc * xc;
    }
    ss = dp_block_sum(ss, partial);
    float r = rsqrtf(ss / C + eps);
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        dp_store(o + c, weight[c] * (dp_load(x + c) * r));
    if (rstd && threadIdx.x == 0) rstd[blockIdx.x] = r;
}

/* dx += r * w * dy - x * r^3 / C * sum(w * dy * x) */
template <class T>
__global__ static void rmsnorm_backward_kernel(T *dinp, const T *dout, const T *inp,
                                               const float *weight, const float *rstd, int C) {
    __shared__ float partial[32];
    size_t row = (size_t)blockIdx.x * C;
    float r = rstd[blockIdx.x];
    float dot = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        dot += weight[c] * dp_load(dout + row + c) * dp_load(inp + row + c);
    dot = dp_block_sum(dot, partial);
    float k = dot * r * r * r / C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float dx = r * weight[c] * dp_load(dout + row + c) - k * dp_load(inp + row + c);
        dp_store(dinp + row + c, dp_load(dinp + row + c) + dx);
    }
}

/* dweight[c] += sum_n dy * x * rstd: one thread per column, rows in order (deterministic) */
template <class T>
__global__ static void rmsnorm_dweight_kernel(float *dweight, const T *dout, const T *inp,
                                              const float *rstd, int N, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0.0f;
    for (int n = 0; n < N; n++)
        s += dp_load(dout + (size_t)n * C + c) * dp_load(inp + (size_t)n * C + c) * rstd[n];
    dweight[c] += s;
}

template <class T>
static int rmsnorm_forward_launch(T *out, float *rstd, const T *inp, const float *weight, int N,
                                  int C, float eps, int block = RMSNORM_BLOCK) {
    if (N <= 0 || C <= 0) return dp_fail("rmsnorm_forward: bad shape N=%d C=%d", N, C);
    if (block < 32 || block > 1024 || block % 32) /* the block reduction takes whole warps */
        return dp_fail("rmsnorm_forward: block size %d (a multiple of 32 up to 1024)", block);
    DP_LAUNCH(rmsnorm_forward_kernel<T>, N, block, 0, 0, out, rstd, inp, weight, C, eps);
    CUDA_CHECK_LAUNCH();
    return 0;
}

template <class T>
static int rmsnorm_backward_launch(T *dinp, float *dweight, const T *dout, const T *inp,
                                   const float *weight, const float *rstd, int N, int C) {
    if (N <= 0 || C <= 0) return dp_fail("rmsnorm_backward: bad shape N=%d C=%d", N, C);
    if (dinp) {
        DP_LAUNCH(rmsnorm_backward_kernel<T>, N, RMSNORM_BLOCK, 0, 0, dinp, dout, inp, weight, rstd,
                  C);
        CUDA_CHECK_LAUNCH();
    }
    if (dweight) {
        DP_LAUNCH(rmsnorm_dweight_kernel<T>, dp_ceil_div(C, 256), 256, 0, 0, dweight, dout, inp,
                  rstd, N, C);
        CUDA_CHECK_LAUNCH();
    }
    return 0;
}

/* out, inp: (N, C) device pointers; weight: (C); rstd: (N) or NULL. */
extern "C" int DP_CUDA_FN(rmsnorm_forward)(float *out, float *rstd, const float *inp,
                                           const float *weight, int N, int C, float eps) {
    return rmsnorm_forward_launch(out, rstd, inp, weight, N, C, eps);
}
extern "C" int DP_CUDA_FN(rmsnorm_forward_bf16)(dp_bf16 *out, float *rstd, const dp_bf16 *inp,
                                                const float *weight, int N, int C, float eps) {
    return rmsnorm_forward_launch(dp_bf(out), rstd, dp_bf(inp), weight, N, C, eps);
}
extern "C" int DP_CUDA_FN(rmsnorm_forward_bf16_block)(dp_bf16 *out, float *rstd, const dp_bf16 *inp,
                                                      const float *weight, int N, int C, float eps,
                                                      int block) {
    return rmsnorm_forward_launch(dp_bf(out), rstd, dp_bf(inp), weight, N, C, eps, block);
}
/* dinp (+=): (N, C); dweight (+=): (C); either may be NULL. */
extern "C" int DP_CUDA_FN(rmsnorm_backward)(float *dinp, float *dweight, const float *dout,
                                            const float *inp, const float *weight,
                                            const float *rstd, int N, int C) {
    return rmsnorm_backward_launch(dinp, dweight, dout, inp, weight, rstd, N, C);
}
extern "C" int DP_CUDA_FN(rmsnorm_backward_bf16)(dp_bf16 *dinp, float *dweight, const dp_bf16 *dout,
                                                 const dp_bf16 *inp, const float *weight,
                                                 const float *rstd, int N, int C) {
    return rmsnorm_backward_launch(dp_bf(dinp), dweight, dp_bf(dout), dp_bf(inp), weight, rstd, N,
                                   C);
}
