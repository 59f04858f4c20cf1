/* Cross-entropy over a chunk of logits rows: one block per row, block max then block sum of
 * exp, then dlogits written in place of (or beside) the logits. Twin of
 * kernels/cpu/cross_entropy.c; the caller chunks rows so full fp32 logits never exist. */
#include "kernels/cuda/common.cuh"

#define CE_BLOCK 512

template <class T>
__global__ static void cross_entropy_kernel(float *losses, T *dlogits, const T *logits,
                                            const int32_t *targets, int V, float dloss) {
    __shared__ float partial[32];
    const T *x = logits + (size_t)blockIdx.x * V; // (V)
    T *dx = dlogits ? dlogits + (size_t)blockIdx.x * V : NULL;
    int t = targets[blockIdx.x];
    if (t < 0 || t >= V) { /* ignored row (or a bad target: NaN loss, see the CPU twin) */
        if (losses && threadIdx.x == 0) losses[blockIdx.x] = t < 0 ? 0.0f : NAN;
        if (dx)
            for (int i = threadIdx.x; i < V; i += blockDim.x) dp_store(dx + i, 0.0f);
        return;
    }
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, dp_load(x + i));
    mx = dp_block_max(mx, partial);
    float sum = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) sum += expf(dp_load(x + i) - mx);
    sum = dp_block_sum(sum, partial);
    float lse = mx + logf(sum);
    float xt = dp_load(x + t);
    __syncthreads(); /* every thread has read x[t] before anyone overwrites it (aliasing) */
    if (losses && threadIdx.x == 0) losses[blockIdx.x] = lse - xt;
    if (dx)
        for (int i = threadIdx.x; i < V; i += blockDim.x) {
            float p = expf(dp_load(x + i) - lse);
            dp_store(dx + i, (p - (i == t ? 1.0f : 0.0f)) * dloss);
        }
}

template <class T>
static int cross_entropy_launch(float *losses, T *dlogits, const T *logits, const int32_t *targets,
                                int N, int V, float dloss, int block = CE_BLOCK) {
    if (N <= 0 || V <= 0) return dp_fail("cross_entropy: bad shape N=%d V=%d", N, V);
    if (block < 32 || block > 1024 || block % 32) /* the block reductions take whole warps */
        return dp_fail("cross_entropy: block size %d (a multiple of 32 up to 1024)", block);
    DP_LAUNCH(cross_entropy_kernel<T>, N, block, 0, 0, losses, dlogits, logits, targets, V, dloss);
    CUDA_CHECK_LAUNCH();
    return 0;
}

/* losses: (N); dlogits, logits: (N, V), dlogits written (may alias logits); targets: (N) */
extern "C" int DP_CUDA_FN(cross_entropy_forward_backward)(float *losses, float *dlogits,
                                                          const float *logits,
                                                          const int32_t *targets, int N, int V,
                                                          float dloss) {
    return cross_entropy_launch(losses, dlogits, logits, targets, N, V, dloss);
}
extern "C" int DP_CUDA_FN(cross_entropy_forward_backward_bf16)(float *losses, dp_bf16 *dlogits,
                                                               const dp_bf16 *logits,
                                                               const int32_t *targets, int N, int V,
                                                               float dloss) {
    return cross_entropy_launch(losses, dp_bf(dlogits), dp_bf(logits), targets, N, V, dloss);
}
extern "C" int
DP_CUDA_FN(cross_entropy_forward_backward_bf16_block)(float *losses, dp_bf16 *dlogits,
                                                      const dp_bf16 *logits, const int32_t *targets,
                                                      int N, int V, float dloss, int block) {
    return cross_entropy_launch(losses, dp_bf(dlogits), dp_bf(logits), targets, N, V, dloss, block);
}
