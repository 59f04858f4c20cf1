/* A model's frozen weights in device memory, shared by the GPU forward (infer/forward_gpu.c) and
 * the GPU training step (train/grad_gpu.c): where each buffer goes (one layout walk, the caller
 * decides the allocation it comes from), the upload, and the per-op wrappers that pick the fp32
 * or bf16 launcher: frozen linear forward and input gradient, RMSNorm, RoPE, residual, LoRA. */
#ifndef DOPPEL_GPU_MODEL_H
#define DOPPEL_GPU_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "infer/model.h"
#include "kernels/cuda/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    dp_linear_id id; /* DP_N_LINEAR for the lm_head */
    int out, in;
    void *w;        /* (out, in) activation dtype, or NULL */
    dp_nf4_dev nf4; /* when w == NULL */
    float *bias;    /* (out) fp32 or NULL */
    float *A, *B;   /* LoRA A (r, in), B (out, r) fp32, or NULL: the training step's adapter
                     * (inference passes dp_gpu_lora_group instead) */
} dp_gpu_linear;

typedef struct {
    float *attn_norm, *ffn_norm, *q_norm, *k_norm; /* fp32 */
    dp_gpu_linear lin[DP_N_LINEAR];
} dp_gpu_layer;

/* What a weight buffer is, so that each caller files it under its own allocation table. */
typedef enum {
    DP_GW_NF4_MAPS,    /* the 272 floats of the absmax-code map and the NF4 values */
    DP_GW_NF4_BLOCK,   /* codes / absmax codes / absmax scales of a block linear */
    DP_GW_NF4_HEAD,    /* the same for an NF4 lm_head */
    DP_GW_EMBED,       /* (V, C) activation dtype */
    DP_GW_DENSE_HEAD,  /* untied lm_head (V, C) activation dtype */
    DP_GW_DENSE_BLOCK, /* a dense block linear (out, in) activation dtype */
    DP_GW_NORMS,       /* norms and biases, fp32 */
    DP_GW_ROPE,        /* inverse frequencies (D/2) fp32 */
    DP_GW_N_KINDS
} dp_gw_kind;

/* Returns the device address for `bytes` of kind `kind` (or NULL when only counting). */
typedef void *(*dp_gw_carve_fn)(void *ctx, dp_gw_kind kind, uint64_t bytes);

#define DP_GPU_ALIGN 256 /* every carved buffer starts 256-byte aligned, as cudaMalloc's are */
static inline uint64_t dp_gpu_align(uint64_t bytes) {
    return (bytes + DP_GPU_ALIGN - 1) / DP_GPU_ALIGN * DP_GPU_ALIGN;
}
/* Device bytes of one NF4 matrix of n elements in blocks of `blocksize`: codes, absmax codes,
 * absmax scales, each aligned. */
uint64_t dp_gpu_nf4_bytes(int64_t n, int blocksize);

typedef struct {
    const dp_gpu_ops *ops;
    dp_blas *blas;
    const dp_model *model; /* borrowed */
    bool bf16;             /* activations (and dense weights) in bf16, else fp32 */
    void *embed;           /* (V, C) */
    float *final_norm;     /* (C) */
    dp_gpu_linear lm_head;
    dp_gpu_layer *layers; /* (L) host array of device pointers, owned */
    float *maps;          /* NF4 maps, or NULL when no weight is NF4 */
    float *inv_freq;      /* (D/2) */
    /* scratch, assigned by the caller */
    void *dequant; /* one NF4 matrix dequantized (dp_gpu_model_layout's *dequant_bytes) */
    float *tmp;    /* (rows, largest biased out) fp32, bias on bf16 activations */
} dp_gpu_model;

/* Assigns every weight pointer of g (g->model, g->bf16 and g->layers set), carving through fn.
 * *dequant_bytes gets the largest NF4 matrix in the activation dtype (0: none), *max_bias the
 * widest biased linear (0: none). */
void dp_gpu_model_layout(dp_gpu_model *g, dp_gw_carve_fn fn, void *ctx, uint64_t *dequant_bytes,
                         uint64_t *max_bias);
/* Uploads the weights, the NF4 maps and the RoPE frequencies (not LoRA). */
int dp_gpu_model_upload(const dp_gpu_model *g);

/* host fp32 -> device, converted to bf16 on the way when bf16 */
int dp_gpu_put(const dp_gpu_ops *ops, void *dst, const float *src, size_t n, bool bf16);

/* y (N, out) = x (N, in) W^T + b (frozen part only); y in the activation dtype, or fp32 when
 * f32_out; ldy: y's row stride. */
int dp_gpu_linear_forward(const dp_gpu_model *g, const dp_gpu_linear *d, void *y, int ldy,
                          const void *x, int N, bool f32_out);
/* dx (N, in) += dy (N, out) W: the gradient through the frozen weight, in the activation dtype. */
int dp_gpu_linear_backward(const dp_gpu_model *g, const dp_gpu_linear *d, void *dx, const void *dy,
                           int N);

int dp_gpu_rmsnorm(const dp_gpu_model *g, void *out, float *rstd, const void *inp, const float *w,
                   int N, int C);
int dp_gpu_rmsnorm_backward(const dp_gpu_model *g, void *dinp, const void *dout, const void *inp,
                            const float *w, const float *rstd, int N, int C);
int dp_gpu_rope(const dp_gpu_model *g, void *x, const int32_t *pos, int N, int nh);
int dp_gpu_rope_backward(const dp_gpu_model *g, void *dx, const int32_t *pos, int N, int nh);
int dp_gpu_residual(const dp_gpu_model *g, void *out, const void *a, const void *b, size_t n);

/* Scratch of the LoRA path: fp32 (rows, widest) copies for bf16 activations and the dropped
 * input, and (rows, r) for x A^T gradients. */
typedef struct {
    float *lx, *ly; /* (rows, widest in/out) fp32 */
    float *dxa;     /* (rows, r) */
} dp_gpu_lora_scratch;

/* y (N, out) += scale * dropout(x) A^T B^T; xa (N, r) fp32 gets dropout(x) A^T. Dropout with
 * probability p (0: none) from Philox stream (seed, subsequence) over the (N, in) input. */
int dp_gpu_lora_forward(const dp_gpu_model *g, const dp_gpu_linear *d, int r, float scale, void *y,
                        const void *x, float *xa, const dp_gpu_lora_scratch *s, int N, float p,
                        uint64_t seed, uint64_t subsequence);
/* The backward of the same: dA (r, in), dB (out, r) fp32 accumulate; dx (N, in, activation
 * dtype) accumulates; xa as left by the forward. */
int dp_gpu_lora_backward(const dp_gpu_model *g, const dp_gpu_linear *d, int r, float scale,
                         float *dA, float *dB, void *dx, const void *dy, const void *x,
                         const float *xa, const dp_gpu_lora_scratch *s, int N, float p,
                         uint64_t seed, uint64_t subsequence);

/* ------------------------------------------------------------------ the transformer block
 * THE one GPU transformer block, called by the inference forward (infer/forward_gpu.c: prefill
 * and decode through the KV cache) and by the training step (train/grad_gpu.c: forward and
 * per-layer recomputation), which passes distinct buffers for what its backward needs. */

/* One layer's buffers, (N, ...) rows in the activation dtype unless said. A caller that keeps
 * nothing aliases them (h2 = h1, a = g, qraw = q, one xa for every module) and passes NULL for
 * the fp32 statistics. */
typedef struct {
    void *h1, *h2;            /* (N, C) attention-norm and ffn-norm outputs */
    void *x2;                 /* (N, C) the residual stream after attention; not x nor x_out */
    float *rstd1, *rstd2;     /* (N) fp32 RMSNorm statistics, or NULL */
    void *qraw, *kraw;        /* Qwen3: q, k before their per-head norm; may alias q, k */
    float *qn_rstd, *kn_rstd; /* (N * H), (N * KVH), or NULL */
    void *q, *att;            /* (N, H * D) */
    void *k, *v;              /* (N, KVH * D) packed rows */
    float *lse;               /* (N, H) fp32 log-sum-exp of the packed attention, or NULL */
    void *g, *u, *a;          /* (N, F) gate, up, silu(gate) * up (a may alias g) */
    float *xa[DP_N_LINEAR];   /* (N, r) fp32 LoRA dropout(x) A^T per adapted module, or NULL;
                               * with groups, (N, the largest r) */
} dp_gpu_block_acts;

/* One sequence of a cached step: its rows [row0, row0 + n) of the N, at positions [T0, T0 + n),
 * whose k and v the block writes into this layer's cache of the sequence at row T0 before the
 * rows attend to [0, T0 + n) there. */
typedef struct {
    void *k_cache, *v_cache; /* (max_T, KVH * D) this layer's cache of the sequence */
    int T0;
    int row0, n;
} dp_gpu_kv_seq;

/* One adapter in device memory: what a group of rows goes through. */
typedef struct {
    int r;          /* rank */
    float scale;    /* alpha / r, or alpha / sqrt(r) */
    float **A, **B; /* (L * DP_N_LINEAR) host arrays of device pointers: A (r, in), B (out, r)
                     * fp32 of module m of layer l at l * DP_N_LINEAR + m; NULL: not adapted */
} dp_gpu_adapter;

/* Rows [row0, row0 + n) of the N through one adapter. */
typedef struct {
    const dp_gpu_adapter *adapter;
    int row0, n;
} dp_gpu_lora_group;

/* How the N rows attend and what the adapter does. Attention is either packed (cu_seqlens
 * set: nseq sequences back to back, each attending to its own rows, as in training) or cached
 * (kv set: nkv sequences, each with its own cache; acts.k and acts.v are then packed (N, KVH * D)
 * scratch, copied into the caches after RoPE). A prefill chunk is one sequence of N rows, a
 * batched decode N sequences of one row each. LoRA: with groups set (inference, no dropout),
 * each group's rows through its adapter and the rows in no group through the base alone;
 * without, every row through the modules' d->A, d->B at rank r (training). */
typedef struct {
    int N;
    const int32_t *pos;        /* (N) device: position of each row in its sequence */
    const int32_t *cu_seqlens; /* (nseq + 1) device, packed attention; or NULL */
    int nseq;
    const dp_gpu_kv_seq *kv; /* (nkv) host, cached attention; or NULL */
    int nkv;
    const dp_gpu_lora_group *groups; /* (ngroups) host, disjoint; or NULL */
    int ngroups;
    int r;           /* without groups: LoRA rank (adapted modules: d->A != NULL) */
    float scale;     /* alpha / r */
    float dropout_p; /* 0: none */
    uint64_t seed;   /* dropout stream; the subsequence is layer * 8 + module */
    const dp_gpu_lora_scratch *ls;
} dp_gpu_block_step;

/* x_out (N, C) = block l (x (N, C)); x_out may be x (in place). Fills s. */
int dp_gpu_block_forward(const dp_gpu_model *g, int l, void *x_out, const void *x,
                         const dp_gpu_block_acts *s, const dp_gpu_block_step *st);
/* out (N, out) = the frozen linear of module m plus its LoRA path when it has one: what the
 * block applies to each projection (and the training backward's counterpart to undo). */
int dp_gpu_block_linear(const dp_gpu_model *g, int l, int m, void *out, const void *inp, float *xa,
                        const dp_gpu_block_step *st);

#ifdef __cplusplus
}
#endif
#endif
