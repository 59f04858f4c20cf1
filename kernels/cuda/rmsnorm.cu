/* RMSNorm forward on the GPU: one block per row, a block reduction of sum(x^2) through
 * warp shuffles and shared memory. Twin of rmsnorm_forward in kernels/cpu/rmsnorm.c. */
#include "kernels/cuda/common.cuh"

#define RMSNORM_BLOCK 256

__device__ static float warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

__global__ static void rmsnorm_forward_kernel(float *out, float *rstd, const float *inp,
                                              const float *weight, int C, float eps) {
    __shared__ float partial[RMSNORM_BLOCK / 32];
    const float *x = inp + (size_t)blockIdx.x * C; // (C)
    float *o = out + (size_t)blockIdx.x * C;       // (C)
    float ss = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) ss += x[c] * x[c];
    ss = warp_sum(ss);
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) partial[warp] = ss;
    __syncthreads();
    if (warp == 0) {
        ss = lane < (int)(blockDim.x / 32) ? partial[lane] : 0.0f;
        ss = warp_sum(ss);
        if (lane == 0) partial[0] = rsqrtf(ss / C + eps);
    }
    __syncthreads();
    float r = partial[0];
    for (int c = threadIdx.x; c < C; c += blockDim.x) o[c] = weight[c] * (x[c] * r);
    if (rstd && threadIdx.x == 0) rstd[blockIdx.x] = r;
}

/* out, inp: (N, C) device pointers; weight: (C); rstd: (N) or NULL. */
extern "C" int DP_CUDA_FN(rmsnorm_forward)(float *out, float *rstd, const float *inp,
                                           const float *weight, int N, int C, float eps) {
    if (N <= 0 || C <= 0) return dp_fail("rmsnorm_forward: bad shape N=%d C=%d", N, C);
    DP_LAUNCH(rmsnorm_forward_kernel, N, RMSNORM_BLOCK, 0, 0, out, rstd, inp, weight, C, eps);
    CUDA_CHECK_LAUNCH();
    return 0;
}
