/* SwiGLU forward/backward and inverted dropout, elementwise. Twins of kernels/cpu/swiglu.c and
 * kernels/cpu/dropout.c: the dropout mask is drawn through cuRAND's device API (Philox4_32_10),
 * whose stream kernels/philox.h reproduces bit for bit on the CPU. */
/* cuRAND's device header first: under EMU it is compiled as host C++ before emu.h's CUDA macros */
#include "kernels/cuda/philox.cuh"

#include "kernels/cuda/common.cuh"

#define SWIGLU_BLOCK 256

template <class T>
__global__ static void swiglu_forward_kernel(T *out, const T *gate, const T *up, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = dp_load(gate + i);
        dp_store(out + i, g / (1.0f + expf(-g)) * dp_load(up + i));
    }
}

template <class T>
__global__ static void swiglu_backward_kernel(T *dgate, T *dup, const T *dout, const T *gate,
                                              const T *up, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = dp_load(gate + i), u = dp_load(up + i), d = dp_load(dout + i);
        float s = 1.0f / (1.0f + expf(-g));
        if (dgate) dp_store(dgate + i, dp_load(dgate + i) + d * u * s * (1.0f + g * (1.0f - s)));
        if (dup) dp_store(dup + i, dp_load(dup + i) + d * g * s);
    }
}

/* Each thread takes groups of 4 elements: element i is draw i of stream (seed, subsequence),
 * i.e. component i % 4 of curand4 after curand_init(seed, subsequence, i - i % 4), which is
 * dp_philox_uniform(seed, subsequence, i) on the CPU. */
__global__ static void dropout_kernel(float *out, const float *inp, size_t n, float p,
                                      uint64_t seed, uint64_t subsequence) {
    float scale = 1.0f / (1.0f - p);
    size_t groups = (n + 3) / 4;
    for (size_t g = blockIdx.x * (size_t)blockDim.x + threadIdx.x; g < groups;
         g += (size_t)gridDim.x * blockDim.x) {
        float u[4];
        philox_uniform4(seed, subsequence, g * 4, u);
        for (size_t k = 0, i = g * 4; k < 4 && i < n; k++, i++)
            out[i] = u[k] > p ? inp[i] * scale : 0.0f;
    }
}

extern "C" int DP_CUDA_FN(swiglu_forward)(float *out, const float *gate, const float *up,
                                          size_t n) {
    if (!n) return 0;
    DP_LAUNCH(swiglu_forward_kernel<float>, dp_grid_for(n, SWIGLU_BLOCK), SWIGLU_BLOCK, 0, 0, out,
              gate, up, n);
    CUDA_CHECK_LAUNCH();
    return 0;
}
extern "C" int DP_CUDA_FN(swiglu_forward_bf16_block)(dp_bf16 *out, const dp_bf16 *gate,
                                                     const dp_bf16 *up, size_t n, int block) {
    if (block < 1 || block > 1024) return dp_fail("swiglu_forward: block size %d", block);
    if (!n) return 0;
    DP_LAUNCH(swiglu_forward_kernel<__nv_bfloat16>, dp_grid_for(n, block), block, 0, 0, dp_bf(out),
              dp_bf(gate), dp_bf(up), n);
    CUDA_CHECK_LAUNCH();
    return 0;
}
extern "C" int DP_CUDA_FN(swiglu_forward_bf16)(dp_bf16 *out, const dp_bf16 *gate, const dp_bf16 *up,
                                               size_t n) {
    return DP_CUDA_FN(swiglu_forward_bf16_block)(out, gate, up, n, SWIGLU_BLOCK);
}
/* dgate, dup (+=), either may be NULL */
extern "C" int DP_CUDA_FN(swiglu_backward)(float *dgate, float *dup, const float *dout,
                                           const float *gate, const float *up, size_t n) {
    if (!n) return 0;
    DP_LAUNCH(swiglu_backward_kernel<float>, dp_grid_for(n, SWIGLU_BLOCK), SWIGLU_BLOCK, 0, 0,
              dgate, dup, dout, gate, up, n);
    CUDA_CHECK_LAUNCH();
    return 0;
}
extern "C" int DP_CUDA_FN(swiglu_backward_bf16)(dp_bf16 *dgate, dp_bf16 *dup, const dp_bf16 *dout,
                                                const dp_bf16 *gate, const dp_bf16 *up, size_t n) {
    if (!n) return 0;
    DP_LAUNCH(swiglu_backward_kernel<__nv_bfloat16>, dp_grid_for(n, SWIGLU_BLOCK), SWIGLU_BLOCK, 0,
              0, dp_bf(dgate), dp_bf(dup), dp_bf(dout), dp_bf(gate), dp_bf(up), n);
    CUDA_CHECK_LAUNCH();
    return 0;
}
/* out = inp * mask / (1 - p), mask from Philox stream (seed, subsequence); may be in place */
extern "C" int DP_CUDA_FN(dropout_forward)(float *out, const float *inp, size_t n, float p,
                                           uint64_t seed, uint64_t subsequence) {
    if (!(p >= 0.0f && p < 1.0f)) return dp_fail("dropout_forward: p=%g must be in [0, 1)", p);
    if (!n) return 0;
    DP_LAUNCH(dropout_kernel, dp_grid_for((n + 3) / 4, SWIGLU_BLOCK), SWIGLU_BLOCK, 0, 0, out, inp,
              n, p, seed, subsequence);
    CUDA_CHECK_LAUNCH();
    return 0;
}
