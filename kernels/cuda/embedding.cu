/* Token embedding gather (forward) and scatter-add (backward), and NEFTune's noise on the
 * gathered rows. Twin of kernels/cpu/embedding.c; a token outside [0, V) yields a NaN row (loud,
 * never an out-of-bounds read). The noise is drawn through cuRAND's device API (Philox4_32_10),
 * whose stream kernels/philox.h reproduces bit for bit on the CPU. */
/* cuRAND's device header first: under EMU it is compiled as host C++ before emu.h's CUDA macros */
#include "kernels/cuda/philox.cuh"

#include "kernels/cuda/common.cuh"
#include "kernels/ops.h" /* DP_NEFTUNE_STREAM */

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

/* Each thread takes groups of 4 elements of x (N, C): element i is draw i of stream
 * (seed, DP_NEFTUNE_STREAM), component i % 4 of curand_uniform4 after curand_init(seed, stream,
 * i - i % 4), i.e. dp_philox_uniform on the CPU. Row n's sequence by binary search. */
template <class T>
__global__ static void neftune_kernel(T *x, const int32_t *cu_seqlens, int nseq, int N, int C,
                                      float alpha, uint64_t seed) {
    size_t n_el = (size_t)N * C, groups = (n_el + 3) / 4;
    for (size_t g = blockIdx.x * (size_t)blockDim.x + threadIdx.x; g < groups;
         g += (size_t)gridDim.x * blockDim.x) {
        float u[4];
        philox_uniform4(seed, DP_NEFTUNE_STREAM, g * 4, u);
        for (size_t k = 0, i = g * 4; k < 4 && i < n_el; k++, i++) {
            int n = (int)(i / C), lo = 0, hi = nseq - 1; /* last s with cu_seqlens[s] <= n */
            while (lo < hi) {
                int mid = (lo + hi + 1) / 2;
                if (cu_seqlens[mid] <= n)
                    lo = mid;
                else
                    hi = mid - 1;
            }
            int L = cu_seqlens[lo + 1] - cu_seqlens[lo];
            float scale = alpha / sqrtf((float)L * (float)C);
            dp_store(x + i, dp_load(x + i) + scale * (2.0f * u[k] - 1.0f));
        }
    }
}

static int neftune_check(const char *what, int nseq, int N, int C, float alpha) {
    if (N <= 0 || C <= 0 || nseq <= 0 || nseq > N)
        return dp_fail("%s: bad shape N=%d C=%d nseq=%d", what, N, C, nseq);
    if (!(alpha >= 0.0f)) return dp_fail("%s: alpha %g must be >= 0", what, alpha);
    return 0;
}

/* x (N, C) += NEFTune noise in place; cu_seqlens (nseq + 1) on the device */
extern "C" int DP_CUDA_FN(neftune_forward)(float *x, const int32_t *cu_seqlens, int nseq, int N,
                                           int C, float alpha, uint64_t seed) {
    if (neftune_check("neftune_forward", nseq, N, C, alpha)) return -1;
    size_t groups = ((size_t)N * C + 3) / 4;
    DP_LAUNCH(neftune_kernel<float>, dp_grid_for(groups, EMB_BLOCK), EMB_BLOCK, 0, 0, x,
              cu_seqlens, nseq, N, C, alpha, seed);
    CUDA_CHECK_LAUNCH();
    return 0;
}
extern "C" int DP_CUDA_FN(neftune_forward_bf16)(dp_bf16 *x, const int32_t *cu_seqlens, int nseq,
                                                int N, int C, float alpha, uint64_t seed) {
    if (neftune_check("neftune_forward_bf16", nseq, N, C, alpha)) return -1;
    size_t groups = ((size_t)N * C + 3) / 4;
    DP_LAUNCH(neftune_kernel<__nv_bfloat16>, dp_grid_for(groups, EMB_BLOCK), EMB_BLOCK, 0, 0,
              dp_bf(x), cu_seqlens, nseq, N, C, alpha, seed);
    CUDA_CHECK_LAUNCH();
    return 0;
}
