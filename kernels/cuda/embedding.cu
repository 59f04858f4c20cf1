/* Token embedding gather (forward) and scatter-add (backward). Twin of kernels/cpu/embedding.c;
 * a token outside [0, V) yields a NaN row (loud, never an out-of-bounds read). */
#include "kernels/cuda/common.cuh"

#define EMB_BLOCK 256

template <class T>
__global__ static void embedding_forward_kernel(T *out, const int32_t *tokens, const T *table,
                                                int C, int V) {
    int t = tokens[blockIdx.x];
    T *o = out + (size_t)blockIdx.x * C; // (C)
    bool ok = t >= 0 && t < V;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        if (ok)
            o[c] = table[(size_t)t * C + c];
        else
            dp_store(o + c, NAN);
}

/* dtable[tokens[n]] += dout[n]; repeated tokens meet in atomicAdd */
__global__ static void embedding_backward_kernel(float *dtable, const float *dout,
                                                 const int32_t *tokens, int C, int V) {
    int t = tokens[blockIdx.x];
    if (t < 0 || t >= V) return; /* the forward already produced NaNs for this row */
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        atomicAdd(dtable + (size_t)t * C + c, dout[(size_t)blockIdx.x * C + c]);
}

static int embedding_check(const char *what, int N, int C, int V) {
    if (N <= 0 || C <= 0 || V <= 0) return dp_fail("%s: bad shape N=%d C=%d V=%d", what, N, C, V);
    return 0;
}

/* out: (N, C); tokens: (N); table: (V, C) */
extern "C" int DP_CUDA_FN(embedding_forward)(float *out, const int32_t *tokens, const float *table,
                                             int N, int C, int V) {
    if (embedding_check("embedding_forward", N, C, V)) return -1;
    DP_LAUNCH(embedding_forward_kernel<float>, N, EMB_BLOCK, 0, 0, out, tokens, table, C, V);
    CUDA_CHECK_LAUNCH();
    return 0;
}
extern "C" int DP_CUDA_FN(embedding_forward_bf16)(dp_bf16 *out, const int32_t *tokens,
                                                  const dp_bf16 *table, int N, int C, int V) {
    if (embedding_check("embedding_forward_bf16", N, C, V)) return -1;
    DP_LAUNCH(embedding_forward_kernel<__nv_bfloat16>, N, EMB_BLOCK, 0, 0, dp_bf(out), tokens,
              dp_bf(table), C, V);
    CUDA_CHECK_LAUNCH();
    return 0;
}
/* dtable (+=): (V, C); dout: (N, C) */
extern "C" int DP_CUDA_FN(embedding_backward)(float *dtable, const float *dout,
                                              const int32_t *tokens, int N, int C, int V) {
    if (embedding_check("embedding_backward", N, C, V)) return -1;
    DP_LAUNCH(embedding_backward_kernel, N, EMB_BLOCK, 0, 0, dtable, dout, tokens, C, V);
    CUDA_CHECK_LAUNCH();
    return 0;
}
