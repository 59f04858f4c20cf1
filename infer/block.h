/* The one transformer block of the CPU forward (and the trunk of blocks around it), shared by
 * inference (infer/forward.c: KV cache, one or several sequences) and the training step
 * (train/model_grad.c: packed micro-batches, activations kept for its backward). The block
 * reads like the math; how the linears and the attention run is the caller's (dp_block_ops):
 * pool GEMVs and a KV cache for decoding, one OpenMP team with row slices for training. */
#ifndef DOPPEL_BLOCK_H
#define DOPPEL_BLOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "infer/model.h"

/* One block's activations, each an (N, ...) matrix of which the block touches rows [n0, n1).
 * The training step keeps them for its backward; inference reuses one set for every layer. */
typedef struct {
    float *h1, *rstd1;        /* attn-norm output (N, C); its (N) rstd, or NULL: not kept */
    float *qraw, *kraw;       /* Qwen3: q, k before their norm (N, H*D), (N, KVH*D), or NULL:
                               * normed in place */
    float *qn_rstd, *kn_rstd; /* (N*H), (N*KVH) rstd of the q/k norm, or NULL */
    float *q, *k, *v;         /* after norm and RoPE: (N, H*D), (N, KVH*D), (N, KVH*D) */
    float *att, *lse;         /* attention output (N, H*D); (N, H) log-sum-exp or NULL */
    float *x2;                /* (N, C) residual after attention; may alias x and x_out */
    float *h2, *rstd2;        /* ffn-norm output (N, C); its (N) rstd or NULL */
    float *g, *u, *a;         /* (N, F) gate, up, silu(gate) * up; a may alias g */
    float *proj;              /* (N, C) scratch: the o and down outputs */
} dp_block_acts;

/* What the caller runs for the block. Every function returns 0 or -1 (dp_fail). */
typedef struct {
    /* out[i] (N, lin.out) = linear ids[i] of layer l applied to inp (N, lin.in), adapter
     * included, on rows [n0, n1); the n linears share their input (q/k/v, gate/up) */
    int (*linears)(void *ctx, int l, int n, const dp_linear_id *ids, float *const *out,
                   const float *inp, int n0, int n1);
    /* A->att (and A->lse) of rows [n0, n1) from A->q, A->k, A->v of layer l; rows mix here, so
     * a team of threads meets inside */
    int (*attention)(void *ctx, int l, dp_block_acts *A, int n0, int n1);
    /* Before layer l (the trunk only): names its input x, output x_out and activations; may
     * prepare the layer's weights */
    int (*layer)(void *ctx, int l, const float **x, float **x_out, dp_block_acts **A);
    void *ctx;
} dp_block_ops;

/* Block l over rows [n0, n1) of x (N, C) into x_out (N, C) (may alias x): RMSNorm, q/k/v,
 * (Qwen3 q/k norm), RoPE at pos (N), attention, o, residual; RMSNorm, gate/up, SwiGLU, down,
 * residual. recompute: the training step's second pass, A->x2 and x_out already hold the
 * residuals, so the o and down projections and the residual adds are skipped. An empty range
 * still takes part in the attention (where a team meets). */
int dp_block_forward(const dp_model *m, int l, const dp_block_ops *ops, dp_block_acts *A,
                     const float *x, float *x_out, const int32_t *pos, const float *inv_freq,
                     int n0, int n1, bool recompute);

/* Embedding of tokens (N) into x0 (N, C) then every block in order (ops->layer names each
 * one's buffers), on rows [n0, n1). The final norm and the head are the caller's. */
int dp_trunk_forward(const dp_model *m, const dp_block_ops *ops, const int32_t *tokens, float *x0,
                     const int32_t *pos, const float *inv_freq, int n0, int n1);

#endif
