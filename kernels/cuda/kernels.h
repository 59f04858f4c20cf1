/* The CUDA backend as seen from C: every launcher, with the same name, argument order and
 * shapes as its CPU twin in kernels/ops.h (plus bf16 variants: bf16 activations in and out,
 * fp32 arithmetic inside). Pointers are device pointers. Each exists twice: dp_cuda_<name>
 * (libdoppel built with nvcc, a real GPU) and dp_emu_<name> (libdoppel_emu: the same source run
 * on CPU fibers). Code that runs on either takes a `const dp_gpu_ops *` (dp_cuda_ops or
 * dp_emu_ops). Every launcher returns 0, or -1 with a message (dp_last_error) on bad shapes or
 * a failed launch. */
#ifndef DOPPEL_CUDA_KERNELS_H
#define DOPPEL_CUDA_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/nf4.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef uint16_t dp_bf16; /* bit pattern of a bfloat16 (__nv_bfloat16 on the device side) */
typedef enum { DP_F32 = 0, DP_BF16 = 1 } dp_act_dtype;
typedef struct dp_blas dp_blas; /* a cuBLAS handle (and workspace); a stub under EMU */

/* An NF4 matrix in device memory: a dp_nf4 (kernels/nf4.h) copied over by nf4_upload. */
typedef struct {
    int64_t rows, cols, n, nblocks;
    int blocksize;
    uint8_t *codes;    /* (ceil(n / 2)) first element in the high nibble */
    uint8_t *absmax_q; /* (nblocks) */
    float *absmax2;    /* (ceil(nblocks / 256)) */
    float *maps;       /* (256 + 16): the dynamic map of absmax codes, then the NF4 values */
    float offset;
} dp_nf4_dev;

/* clang-format off */
#define DP_GPU_OP_LIST(X)                                                                          \
    /* ---- memory (sizes in bytes; copies are synchronous) */                                   \
    X(dev_malloc, (void **p, size_t n))                                                           \
    X(dev_free, (void *p))                                                                        \
    X(upload, (void *dst, const void *src, size_t n))                                             \
    X(download, (void *dst, const void *src, size_t n))                                           \
    X(dev_memset, (void *p, int value, size_t n))                                                 \
    X(dev_copy, (void *dst, const void *src, size_t n)) /* device to device */                    \
    X(synchronize, (void))                                                                        \
    /* ---- GEMM through cuBLAS (fp32 compute), row-major:                                       \
     * C (M, N) = alpha * op(A) (M, K) @ op(B) (K, N) + beta * C; A is (M, K) or (K, M) when    \
     * transA, B is (K, N) or (N, K) when transB; ab: dtype of A and B, c: dtype of C.          \
     * The batched form steps A, B, C by strideA/B/C elements `batch` times. */                 \
    X(blas_create, (dp_blas **h))                                                                 \
    X(blas_destroy, (dp_blas *h))                                                                 \
    /* cuBLAS works in this device buffer (allocated by the caller, so its memory plan counts it) \
     * instead of one it allocates itself; a no-op under EMU */                                  \
    X(blas_set_workspace, (dp_blas *h, void *workspace, size_t bytes))                            \
    X(gemm, (dp_blas *h, bool transA, bool transB, int M, int N, int K, float alpha,             \
             const void *A, int lda, const void *B, int ldb, float beta, void *C, int ldc,        \
             dp_act_dtype ab, dp_act_dtype c))                                                            \
    X(gemm_batched, (dp_blas *h, bool transA, bool transB, int M, int N, int K, float alpha,     \
                     const void *A, int lda, int64_t strideA, const void *B, int ldb,             \
                     int64_t strideB, float beta, void *C, int ldc, int64_t strideC, int batch,   \
                     dp_act_dtype ab, dp_act_dtype c))                                                    \
    /* ---- elementwise: casts, residual out = a + b, bias out (N, OC) += bias (OC) */           \
    X(cast_f32_to_bf16, (dp_bf16 *out, const float *inp, size_t n))                               \
    X(cast_bf16_to_f32, (float *out, const dp_bf16 *inp, size_t n))                               \
    X(residual_forward, (float *out, const float *a, const float *b, size_t n))                   \
    X(residual_forward_bf16, (dp_bf16 *out, const dp_bf16 *a, const dp_bf16 *b, size_t n))        \
    X(bias_forward, (float *out, const float *bias, int N, int OC))                               \
    /* ---- embedding (a token >= V gives a NaN row, never a read out of bounds) */              \
    X(embedding_forward, (float *out, const int32_t *tokens, const float *table, int N, int C,    \
                          int V))                                                                 \
    X(embedding_forward_bf16, (dp_bf16 *out, const int32_t *tokens, const dp_bf16 *table, int N,  \
                               int C, int V))                                                     \
    X(embedding_backward, (float *dtable, const float *dout, const int32_t *tokens, int N, int C, \
                           int V))                                                                \
    /* ---- NEFTune noise on the embedded rows, in place (the CPU twin's n0 = 0, n1 = N) */       \
    X(neftune_forward, (float *x, const int32_t *cu_seqlens, int nseq, int N, int C, float alpha, \
                        uint64_t seed))                                                           \
    X(neftune_forward_bf16, (dp_bf16 *x, const int32_t *cu_seqlens, int nseq, int N, int C,       \
                             float alpha, uint64_t seed))                                         \
    /* ---- RMSNorm */                                                                           \
    X(rmsnorm_forward, (float *out, float *rstd, const float *inp, const float *weight, int N,    \
                        int C, float eps))                                                        \
    X(rmsnorm_forward_bf16, (dp_bf16 *out, float *rstd, const dp_bf16 *inp, const float *weight,  \
                             int N, int C, float eps))                                            \
    X(rmsnorm_backward, (float *dinp, float *dweight, const float *dout, const float *inp,        \
                         const float *weight, const float *rstd, int N, int C))                   \
    X(rmsnorm_backward_bf16, (dp_bf16 *dinp, float *dweight, const dp_bf16 *dout,                 \
                              const dp_bf16 *inp, const float *weight, const float *rstd, int N,  \
                              int C))                                                             \
    /* ---- RoPE (half-split, in place; inv_freq from rope_inv_freq) */                          \
    X(rope_forward, (float *x, const int32_t *pos, const float *inv_freq, int N, int nh, int D))  \
    X(rope_backward, (float *dx, const int32_t *pos, const float *inv_freq, int N, int nh, int D)) \
    X(rope_forward_bf16, (dp_bf16 *x, const int32_t *pos, const float *inv_freq, int N, int nh,   \
                          int D))                                                                 \
    X(rope_backward_bf16, (dp_bf16 *dx, const int32_t *pos, const float *inv_freq, int N, int nh, \
                           int D))                                                                \
    /* ---- causal GQA attention, varlen packed (D <= 128); lse fp32 */                          \
    X(attention_forward, (float *out, float *lse, const float *q, const float *k, const float *v, \
                          const int32_t *cu_seqlens, int nseq, int N, int H, int KVH, int D))     \
    X(attention_forward_bf16, (dp_bf16 *out, float *lse, const dp_bf16 *q, const dp_bf16 *k,      \
                               const dp_bf16 *v, const int32_t *cu_seqlens, int nseq, int N,      \
                               int H, int KVH, int D))                                            \
    X(attention_backward, (float *dq, float *dk, float *dv, const float *dout, const float *out,  \
                           const float *lse, const float *q, const float *k, const float *v,      \
                           const int32_t *cu_seqlens, int nseq, int N, int H, int KVH, int D))    \
    X(attention_backward_bf16, (dp_bf16 *dq, dp_bf16 *dk, dp_bf16 *dv, const dp_bf16 *dout,       \
                                const dp_bf16 *out, const float *lse, const dp_bf16 *q,           \
                                const dp_bf16 *k, const dp_bf16 *v, const int32_t *cu_seqlens,    \
                                int nseq, int N, int H, int KVH, int D))                          \
    X(attention_cached, (float *out, const float *q, const float *kcache, const float *vcache,    \
                         int Tq, int Tk, int H, int KVH, int D))                                  \
    X(attention_cached_bf16, (dp_bf16 *out, const dp_bf16 *q, const dp_bf16 *kcache,              \
                              const dp_bf16 *vcache, int Tq, int Tk, int H, int KVH, int D))      \
    /* ---- SwiGLU and dropout (Philox, kernels/philox.h: the CPU draws the same mask) */        \
    X(swiglu_forward, (float *out, const float *gate, const float *up, size_t n))                 \
    X(swiglu_backward, (float *dgate, float *dup, const float *dout, const float *gate,           \
                        const float *up, size_t n))                                               \
    X(swiglu_forward_bf16, (dp_bf16 *out, const dp_bf16 *gate, const dp_bf16 *up, size_t n))      \
    X(swiglu_backward_bf16, (dp_bf16 *dgate, dp_bf16 *dup, const dp_bf16 *dout,                   \
                             const dp_bf16 *gate, const dp_bf16 *up, size_t n))                   \
    X(dropout_forward, (float *out, const float *inp, size_t n, float p, uint64_t seed,           \
                        uint64_t subsequence))                                                    \
    /* ---- cross-entropy over a chunk of rows (dlogits written, may alias logits) */            \
    X(cross_entropy_forward_backward, (float *losses, float *dlogits, const float *logits,        \
                                       const int32_t *targets, int N, int V, float dloss))        \
    X(cross_entropy_forward_backward_bf16, (float *losses, dp_bf16 *dlogits,                      \
                                            const dp_bf16 *logits, const int32_t *targets, int N, \
                                            int V, float dloss))                                  \
    /* ---- NF4 (double-quantized absmax): upload, dequantize, fused GEMV for decoding:       \
     * out (OC) = W (OC, C) x (C) + bias (OC or NULL) */                                         \
    X(nf4_upload, (dp_nf4_dev *d, const dp_nf4 *q))                                               \
    X(nf4_free, (dp_nf4_dev *d))                                                                  \
    X(nf4_dequantize, (float *out, const dp_nf4_dev *w))                                          \
    X(nf4_dequantize_bf16, (dp_bf16 *out, const dp_nf4_dev *w))                                   \
    X(gemv_nf4, (float *out, const float *x, const dp_nf4_dev *w, const float *bias, int C,      \
                 int OC))                                                                         \
    /* ---- optimizer: AdamW step; sum of squares ACCUMULATED into *acc (device double) */      \
    X(adamw_update, (float *param, const float *grad, float *m, float *v, size_t n, float lr,     \
                     float beta1, float beta2, float eps, float weight_decay, float grad_scale,   \
                     int t))                                                                      \
    X(sum_squares, (double *acc, const float *x, size_t n))
/* clang-format on */

#define DP_GPU_DECLARE(name, args)                                                                 \
    int dp_cuda_##name args;                                                                       \
    int dp_emu_##name args;
DP_GPU_OP_LIST(DP_GPU_DECLARE)
/* clang-format off */
/* Some launchers again with the block size (threads) as the last argument, for the kernel
 * sandbox (dev/cuda) that validates and times them at each block size to tune the default.
 * Not in dp_gpu_ops: nothing else calls them. A bad block size is refused like a bad shape. */
#define DP_GPU_BLOCK_OP_LIST(X)                                                                    \
    X(rmsnorm_forward_bf16_block, (dp_bf16 *out, float *rstd, const dp_bf16 *inp,                 \
                                   const float *weight, int N, int C, float eps, int block))      \
    X(nf4_dequantize_bf16_block, (dp_bf16 *out, const dp_nf4_dev *w, int block))                  \
    X(gemv_nf4_block, (float *out, const float *x, const dp_nf4_dev *w, const float *bias, int C, \
                       int OC, int block))                                                        \
    X(cross_entropy_forward_backward_bf16_block, (float *losses, dp_bf16 *dlogits,                \
                                                  const dp_bf16 *logits, const int32_t *targets,  \
                                                  int N, int V, float dloss, int block))          \
    X(swiglu_forward_bf16_block, (dp_bf16 *out, const dp_bf16 *gate, const dp_bf16 *up, size_t n, \
                                  int block))                                                     \
    X(adamw_update_block, (float *param, const float *grad, float *m, float *v, size_t n,         \
                           float lr, float beta1, float beta2, float eps, float weight_decay,     \
                           float grad_scale, int t, int block))
/* clang-format on */
DP_GPU_BLOCK_OP_LIST(DP_GPU_DECLARE)
#undef DP_GPU_DECLARE

typedef struct dp_gpu_ops {
    const char *backend; /* "cuda" or "emu" */
#define DP_GPU_FIELD(name, args) int(*name) args;
    DP_GPU_OP_LIST(DP_GPU_FIELD)
#undef DP_GPU_FIELD
} dp_gpu_ops;

extern const dp_gpu_ops dp_cuda_ops; /* in libdoppel when built with CUDA */
extern const dp_gpu_ops dp_emu_ops;  /* in libdoppel_emu */

#ifdef __cplusplus
}
#endif
#endif
