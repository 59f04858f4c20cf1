/* Fused AdamW step (fp32 master weights and moments) and the sum of squares behind the global
 * gradient norm. Twins of kernels/cpu/adamw.c, with the same arithmetic order. */
#include "kernels/cuda/common.cuh"

#define ADAMW_BLOCK 256
#define SUMSQ_BLOCK 1024

__global__ static void adamw_kernel(float *param, const float *grad, float *m, float *v, size_t n,
                                    float beta1, float beta2, float eps, float step_size,
                                    float bc2_sqrt, float decay, float grad_scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = grad[i] * grad_scale;
        float p = param[i] * decay; /* decoupled weight decay, before the Adam step */
        float mi = m[i] + (1.0f - beta1) * (g - m[i]);
        float vi = v[i] * beta2 + (1.0f - beta2) * g * g;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        param[i] = p - step_size * (mi / denom);
        m[i] = mi;
        v[i] = vi;
    }
}

/* One block, each thread a strided partial sum in double, then a fixed-order reduction:
 * the same result every run (a grad norm is computed once per step, so one block suffices). */
__global__ static void sum_squares_kernel(double *acc, const float *x, size_t n) {
    __shared__ double partial[32];
    double s = 0;
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) s += (double)x[i] * x[i];
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) partial[warp] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0;
        for (int w = 0; w < (int)blockDim.x / 32; w++) total += partial[w];
        *acc += total;
    }
}

extern "C" int DP_CUDA_FN(adamw_update_block)(float *param, const float *grad, float *m, float *v,
                                              size_t n, float lr, float beta1, float beta2,
                                              float eps, float weight_decay, float grad_scale,
                                              int t, int block) {
    if (t < 1) return dp_fail("adamw_update: step t=%d must start at 1", t);
    if (block < 1 || block > 1024) return dp_fail("adamw_update: block size %d", block);
    if (!n) return 0;
    float bc1 = 1.0f - powf(beta1, (float)t);
    float bc2_sqrt = sqrtf(1.0f - powf(beta2, (float)t));
    DP_LAUNCH(adamw_kernel, dp_grid_for(n, block), block, 0, 0, param, grad, m, v, n, beta1, beta2,
              eps, lr / bc1, bc2_sqrt, 1.0f - lr * weight_decay, grad_scale);
    CUDA_CHECK_LAUNCH();
    return 0;
}
extern "C" int DP_CUDA_FN(adamw_update)(float *param, const float *grad, float *m, float *v,
                                        size_t n, float lr, float beta1, float beta2, float eps,
                                        float weight_decay, float grad_scale, int t) {
    return DP_CUDA_FN(adamw_update_block)(param, grad, m, v, n, lr, beta1, beta2, eps, weight_decay,
                                          grad_scale, t, ADAMW_BLOCK);
}

/* *acc (device double) += sum(x^2) */
extern "C" int DP_CUDA_FN(sum_squares)(double *acc, const float *x, size_t n) {
    if (!n) return 0;
    DP_LAUNCH(sum_squares_kernel, 1, SUMSQ_BLOCK, 0, 0, acc, x, n);
    CUDA_CHECK_LAUNCH();
    return 0;
}
