/* RoPE, half-split pairs (i, i + D/2), in place: one thread per (row, head, pair). The angle is
 * pos * inv_freq in fp32, as on the CPU (kernels/cpu/rope.c). */
#include "kernels/cuda/common.cuh"

#define ROPE_BLOCK 256

template <class T>
__global__ static void rope_kernel(T *x, const int32_t *pos, const float *inv_freq, int N, int nh,
                                   int D, float sign) {
    int half = D / 2;
    size_t total = (size_t)N * nh * half;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(idx % half);
        size_t row = idx / half; /* n * nh + h */
        int n = (int)(row / nh);
        float angle = (float)pos[n] * inv_freq[i];
        float s, c;
        sincosf(angle, &s, &c);
        s *= sign;
        T *r = x + row * D; // (D)
        float a = dp_load(r + i), b = dp_load(r + i + half);
        dp_store(r + i, a * c - b * s);
        dp_store(r + i + half, b * c + a * s);
    }
}

template <class T>
static int rope_launch(const char *what, T *x, const int32_t *pos, const float *inv_freq, int N,
                       int nh, int D, float sign) {
    if (N <= 0 || nh <= 0 || D <= 0 || D % 2)
        return dp_fail("%s: bad shape N=%d nh=%d D=%d (D must be even)", what, N, nh, D);
    size_t total = (size_t)N * nh * (D / 2);
    DP_LAUNCH(rope_kernel<T>, dp_grid_for(total, ROPE_BLOCK), ROPE_BLOCK, 0, 0, x, pos, inv_freq, N,
              nh, D, sign);
    CUDA_CHECK_LAUNCH();
    return 0;
}

/* x: (N, nh, D) rotated in place; pos: (N); inv_freq: (D/2) */
extern "C" int DP_CUDA_FN(rope_forward)(float *x, const int32_t *pos, const float *inv_freq, int N,
                                        int nh, int D) {
    return rope_launch("rope_forward", x, pos, inv_freq, N, nh, D, 1.0f);
}
extern "C" int DP_CUDA_FN(rope_backward)(float *dx, const int32_t *pos, const float *inv_freq,
                                         int N, int nh, int D) {
    return rope_launch("rope_backward", dx, pos, inv_freq, N, nh, D, -1.0f);
}
extern "C" int DP_CUDA_FN(rope_forward_bf16)(dp_bf16 *x, const int32_t *pos, const float *inv_freq,
                                             int N, int nh, int D) {
    return rope_launch("rope_forward_bf16", dp_bf(x), pos, inv_freq, N, nh, D, 1.0f);
}
extern "C" int DP_CUDA_FN(rope_backward_bf16)(dp_bf16 *dx, const int32_t *pos,
                                              const float *inv_freq, int N, int nh, int D) {
    return rope_launch("rope_backward_bf16", dp_bf(dx), pos, inv_freq, N, nh, D, -1.0f);
}
