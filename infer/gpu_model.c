/* Device-resident frozen weights and the op wrappers shared by the GPU forward and the GPU
 * training step (see gpu_model.h). */
#include "infer/gpu_model.h"

#include "data/base/error.h"
#include "infer/dtype.h"

#include <stdlib.h>
#include <string.h>

#define TRY(call)                                                                                  \
    do {                                                                                           \
        if ((call) != 0) return -1;                                                                \
    } while (0)

uint64_t dp_gpu_nf4_bytes(int64_t n, int blocksize) {
    uint64_t nblocks = (uint64_t)((n + blocksize - 1) / blocksize);
    return dp_gpu_align((uint64_t)(n + 1) / 2) + dp_gpu_align(nblocks) +
           dp_gpu_align((nblocks + 255) / 256 * 4);
}

static void layout_linear(dp_gpu_model *g, dp_gpu_linear *d, const dp_linear *lin, dp_linear_id id,
                          dp_gw_carve_fn fn, void *ctx, uint64_t *dequant) {
    const size_t es = g->bf16 ? 2 : 4;
    const bool head = id == DP_N_LINEAR;
    memset(d, 0, sizeof *d);
    d->id = id, d->out = lin->out, d->in = lin->in;
    if (lin->w) {
        d->w =
            fn(ctx, head ? DP_GW_DENSE_HEAD : DP_GW_DENSE_BLOCK, (uint64_t)lin->out * lin->in * es);
    } else {
        const dp_nf4 *q = lin->nf4;
        dp_gw_kind k = head ? DP_GW_NF4_HEAD : DP_GW_NF4_BLOCK;
        d->nf4.rows = q->rows, d->nf4.cols = q->cols, d->nf4.n = q->n;
        d->nf4.nblocks = q->nblocks, d->nf4.blocksize = q->blocksize, d->nf4.offset = q->offset;
        d->nf4.codes = fn(ctx, k, (uint64_t)(q->n + 1) / 2);
        d->nf4.absmax_q = fn(ctx, k, (uint64_t)q->nblocks);
        d->nf4.absmax2 = fn(ctx, k, (uint64_t)(q->nblocks + 255) / 256 * 4);
        d->nf4.maps = g->maps;
        if ((uint64_t)q->n * es > *dequant) *dequant = (uint64_t)q->n * es;
    }
    if (lin->bias) d->bias = fn(ctx, DP_GW_NORMS, (uint64_t)lin->out * 4);
}

void dp_gpu_model_layout(dp_gpu_model *g, dp_gw_carve_fn fn, void *ctx, uint64_t *dequant_bytes,
                         uint64_t *max_bias) {
    const dp_model *m = g->model;
    const dp_model_config *c = &m->cfg;
    const size_t es = g->bf16 ? 2 : 4;
    bool any_nf4 = m->lm_head.nf4 != NULL;
    for (int l = 0; l < c->L; l++)
        for (int i = 0; i < DP_N_LINEAR; i++) any_nf4 |= m->layers[l].lin[i].nf4 != NULL;
    g->maps = any_nf4 ? fn(ctx, DP_GW_NF4_MAPS, (256 + 16) * sizeof(float)) : NULL;
    *dequant_bytes = 0, *max_bias = 0;
    g->embed = fn(ctx, DP_GW_EMBED, (uint64_t)c->V * c->C * es);
    g->final_norm = fn(ctx, DP_GW_NORMS, (uint64_t)c->C * 4);
    for (int l = 0; l < c->L; l++) {
        const dp_layer *ly = &m->layers[l];
        dp_gpu_layer *d = &g->layers[l];
        d->attn_norm = fn(ctx, DP_GW_NORMS, (uint64_t)c->C * 4);
        d->ffn_norm = fn(ctx, DP_GW_NORMS, (uint64_t)c->C * 4);
        d->q_norm = ly->q_norm ? fn(ctx, DP_GW_NORMS, (uint64_t)c->D * 4) : NULL;
        d->k_norm = ly->k_norm ? fn(ctx, DP_GW_NORMS, (uint64_t)c->D * 4) : NULL;
        for (int i = 0; i < DP_N_LINEAR; i++) {
            layout_linear(g, &d->lin[i], &ly->lin[i], (dp_linear_id)i, fn, ctx, dequant_bytes);
            if (ly->lin[i].bias && (uint64_t)ly->lin[i].out > *max_bias)
                *max_bias = (uint64_t)ly->lin[i].out;
        }
    }
    if (c->tied_embeddings || m->lm_head.w == m->embed) {
        memset(&g->lm_head, 0, sizeof g->lm_head);
        g->lm_head.out = c->V, g->lm_head.in = c->C, g->lm_head.w = g->embed;
        g->lm_head.id = DP_N_LINEAR;
    } else {
        layout_linear(g, &g->lm_head, &m->lm_head, DP_N_LINEAR, fn, ctx, dequant_bytes);
    }
    g->inv_freq = fn(ctx, DP_GW_ROPE, (uint64_t)c->D / 2 * 4);
}

int dp_gpu_put(const dp_gpu_ops *ops, void *dst, const float *src, size_t n, bool bf16) {
    if (!bf16) return ops->upload(dst, src, n * 4);
    uint16_t *t = dp_malloc(n * 2);
    if (!t) return -1;
    for (size_t i = 0; i < n; i++) t[i] = dp_f32_to_bf16(src[i]);
    int rc = ops->upload(dst, t, n * 2);
    free(t);
    return rc;
}

static int put_linear(const dp_gpu_model *g, const dp_gpu_linear *d, const dp_linear *lin) {
    const dp_gpu_ops *ops = g->ops;
    if (lin->w) {
        TRY(dp_gpu_put(ops, d->w, lin->w, (size_t)lin->out * lin->in, g->bf16));
    } else {
        const dp_nf4 *q = lin->nf4;
        TRY(ops->upload(d->nf4.codes, q->codes, (size_t)(q->n + 1) / 2));
        TRY(ops->upload(d->nf4.absmax_q, q->absmax_q, (size_t)q->nblocks));
        TRY(ops->upload(d->nf4.absmax2, q->absmax2, (size_t)(q->nblocks + 255) / 256 * 4));
    }
    return lin->bias ? dp_gpu_put(ops, d->bias, lin->bias, (size_t)lin->out, false) : 0;
}

int dp_gpu_model_upload(const dp_gpu_model *g) {
    const dp_model *m = g->model;
    const dp_model_config *c = &m->cfg;
    const dp_gpu_ops *ops = g->ops;
    TRY(dp_gpu_put(ops, g->embed, m->embed, (size_t)c->V * c->C, g->bf16));
    TRY(dp_gpu_put(ops, g->final_norm, m->final_norm, (size_t)c->C, false));
    for (int l = 0; l < c->L; l++) {
        const dp_layer *ly = &m->layers[l];
        const dp_gpu_layer *d = &g->layers[l];
        TRY(dp_gpu_put(ops, d->attn_norm, ly->attn_norm, (size_t)c->C, false));
        TRY(dp_gpu_put(ops, d->ffn_norm, ly->ffn_norm, (size_t)c->C, false));
        if (d->q_norm) TRY(dp_gpu_put(ops, d->q_norm, ly->q_norm, (size_t)c->D, false));
        if (d->k_norm) TRY(dp_gpu_put(ops, d->k_norm, ly->k_norm, (size_t)c->D, false));
        for (int i = 0; i < DP_N_LINEAR; i++) TRY(put_linear(g, &d->lin[i], &ly->lin[i]));
    }
    if (g->lm_head.w != g->embed) TRY(put_linear(g, &g->lm_head, &m->lm_head));
    if (g->maps) { /* the dynamic map of the absmax codes, then the 16 NF4 values */
        float h[256 + 16];
        dp_dynamic_map(h);
        memcpy(h + 256, dp_nf4_values, sizeof(float) * 16);
        TRY(ops->upload(g->maps, h, sizeof h));
    }
    float inv[64];
    rope_inv_freq(inv, c->D, c->rope_theta, &c->rope_scaling);
    return ops->upload(g->inv_freq, inv, (size_t)c->D / 2 * 4);
}

/* the weight as a dense matrix in the activation dtype: dequantized into g->dequant if NF4 */
static const void *dense_weight(const dp_gpu_model *g, const dp_gpu_linear *d) {
    if (d->w) return d->w;
    if (g->bf16 ? g->ops->nf4_dequantize_bf16(g->dequant, &d->nf4)
                : g->ops->nf4_dequantize(g->dequant, &d->nf4))
        return NULL;
    return g->dequant;
}

static int add_bias(const dp_gpu_model *g, const dp_gpu_linear *d, void *y, int ldy, int N,
                    dp_act_dtype cd) {
    const dp_gpu_ops *ops = g->ops;
    if (cd == DP_F32 && ldy == d->out) return ops->bias_forward(y, d->bias, N, d->out);
    if (ldy != d->out) return dp_fail("GPU forward: bias on a strided output is not supported");
    /* bias on bf16 activations goes through an fp32 copy (there is no bf16 bias kernel) */
    TRY(ops->cast_bf16_to_f32(g->tmp, y, (size_t)N * d->out));
    TRY(ops->bias_forward(g->tmp, d->bias, N, d->out));
    return ops->cast_f32_to_bf16(y, g->tmp, (size_t)N * d->out);
}

int dp_gpu_linear_forward(const dp_gpu_model *g, const dp_gpu_linear *d, void *y, int ldy,
                          const void *x, int N, bool f32_out) {
    const dp_gpu_ops *ops = g->ops;
    const dp_act_dtype ab = g->bf16 ? DP_BF16 : DP_F32, cd = f32_out ? DP_F32 : ab;
    if (!d->w && ab == DP_F32 && N == 1 && ldy == d->out) /* decode: the fused NF4 GEMV */
        return ops->gemv_nf4(y, x, &d->nf4, d->bias, d->in, d->out);
    const void *w = dense_weight(g, d);
    if (!w) return -1;
    TRY(ops->gemm(g->blas, false, true, N, d->out, d->in, 1.0f, x, d->in, w, d->in, 0.0f, y, ldy,
                  ab, cd));
    return d->bias ? add_bias(g, d, y, ldy, N, cd) : 0;
}

int dp_gpu_linear_backward(const dp_gpu_model *g, const dp_gpu_linear *d, void *dx, const void *dy,
                           int N) {
    const dp_act_dtype ab = g->bf16 ? DP_BF16 : DP_F32;
    const void *w = dense_weight(g, d);
    if (!w) return -1;
    return g->ops->gemm(g->blas, false, false, N, d->in, d->out, 1.0f, dy, d->out, w, d->in, 1.0f,
                        dx, d->in, ab, ab);
}

int dp_gpu_rmsnorm(const dp_gpu_model *g, void *out, float *rstd, const void *inp, const float *w,
                   int N, int C) {
    float eps = g->model->cfg.rms_eps;
    return g->bf16 ? g->ops->rmsnorm_forward_bf16(out, rstd, inp, w, N, C, eps)
                   : g->ops->rmsnorm_forward(out, rstd, inp, w, N, C, eps);
}
int dp_gpu_rmsnorm_backward(const dp_gpu_model *g, void *dinp, const void *dout, const void *inp,
                            const float *w, const float *rstd, int N, int C) {
    return g->bf16 ? g->ops->rmsnorm_backward_bf16(dinp, NULL, dout, inp, w, rstd, N, C)
                   : g->ops->rmsnorm_backward(dinp, NULL, dout, inp, w, rstd, N, C);
}
int dp_gpu_rope(const dp_gpu_model *g, void *x, const int32_t *pos, int N, int nh) {
    int D = g->model->cfg.D;
    return g->bf16 ? g->ops->rope_forward_bf16(x, pos, g->inv_freq, N, nh, D)
                   : g->ops->rope_forward(x, pos, g->inv_freq, N, nh, D);
}
int dp_gpu_rope_backward(const dp_gpu_model *g, void *dx, const int32_t *pos, int N, int nh) {
    int D = g->model->cfg.D;
    return g->bf16 ? g->ops->rope_backward_bf16(dx, pos, g->inv_freq, N, nh, D)
                   : g->ops->rope_backward(dx, pos, g->inv_freq, N, nh, D);
}
int dp_gpu_residual(const dp_gpu_model *g, void *out, const void *a, const void *b, size_t n) {
    return g->bf16 ? g->ops->residual_forward_bf16(out, a, b, n)
                   : g->ops->residual_forward(out, a, b, n);
}

/* x (N, in) as fp32 for the LoRA GEMMs: the activations themselves, a copy (bf16), and dropped
 * out (into s->lx) when p > 0 */
static const float *lora_input(const dp_gpu_model *g, const dp_gpu_linear *d, const void *x,
                               const dp_gpu_lora_scratch *s, int N, float p, uint64_t seed,
                               uint64_t subsequence) {
    const size_t n = (size_t)N * d->in;
    const float *xf = x;
    if (g->bf16) {
        if (g->ops->cast_bf16_to_f32(s->lx, x, n)) return NULL;
        xf = s->lx;
    }
    if (p > 0) {
        if (g->ops->dropout_forward(s->lx, xf, n, p, seed, subsequence)) return NULL;
        xf = s->lx;
    }
    return xf;
}

int dp_gpu_lora_forward(const dp_gpu_model *g, const dp_gpu_linear *d, int r, float scale, void *y,
                        const void *x, float *xa, const dp_gpu_lora_scratch *s, int N, float p,
                        uint64_t seed, uint64_t subsequence) {
    const dp_gpu_ops *ops = g->ops;
    const float *xf = lora_input(g, d, x, s, N, p, seed, subsequence);
    if (!xf) return -1;
    float *yf = y;
    if (g->bf16) {
        TRY(ops->cast_bf16_to_f32(s->ly, y, (size_t)N * d->out));
        yf = s->ly;
    }
    TRY(ops->gemm(g->blas, false, true, N, r, d->in, 1.0f, xf, d->in, d->A, d->in, 0.0f, xa, r,
                  DP_F32, DP_F32));
    TRY(ops->gemm(g->blas, false, true, N, d->out, r, scale, xa, r, d->B, r, 1.0f, yf, d->out,
                  DP_F32, DP_F32));
    return g->bf16 ? ops->cast_f32_to_bf16(y, s->ly, (size_t)N * d->out) : 0;
}

int dp_gpu_lora_backward(const dp_gpu_model *g, const dp_gpu_linear *d, int r, float scale,
                         float *dA, float *dB, void *dx, const void *dy, const void *x,
                         const float *xa, const dp_gpu_lora_scratch *s, int N, float p,
                         uint64_t seed, uint64_t subsequence) {
    const dp_gpu_ops *ops = g->ops;
    const size_t nx = (size_t)N * d->in;
    const float *dyf = dy;
    if (g->bf16) {
        TRY(ops->cast_bf16_to_f32(s->ly, dy, (size_t)N * d->out));
        dyf = s->ly;
    }
    /* dB (out, r) += scale * dy^T xa;  dxa (N, r) = scale * dy B */
    TRY(ops->gemm(g->blas, true, false, d->out, r, N, scale, dyf, d->out, xa, r, 1.0f, dB, r,
                  DP_F32, DP_F32));
    TRY(ops->gemm(g->blas, false, false, N, r, d->out, scale, dyf, d->out, d->B, r, 0.0f, s->dxa, r,
                  DP_F32, DP_F32));
    /* dA (r, in) += dxa^T dropout(x) */
    const float *xf = lora_input(g, d, x, s, N, p, seed, subsequence);
    if (!xf) return -1;
    TRY(ops->gemm(g->blas, true, false, r, d->in, N, 1.0f, s->dxa, r, xf, d->in, 1.0f, dA, d->in,
                  DP_F32, DP_F32));
    if (!g->bf16 && !(p > 0)) /* dx += dxa A straight into the fp32 gradient */
        return ops->gemm(g->blas, false, false, N, d->in, r, 1.0f, s->dxa, r, d->A, d->in, 1.0f, dx,
                         d->in, DP_F32, DP_F32);
    /* dx_d = dxa A in lx (the input copy is spent), masked like the input, then added */
    TRY(ops->gemm(g->blas, false, false, N, d->in, r, 1.0f, s->dxa, r, d->A, d->in, 0.0f, s->lx,
                  d->in, DP_F32, DP_F32));
    if (p > 0) TRY(ops->dropout_forward(s->lx, s->lx, nx, p, seed, subsequence));
    if (!g->bf16) return ops->residual_forward(dx, dx, s->lx, nx);
    TRY(ops->cast_bf16_to_f32(s->ly, dx, nx));
    TRY(ops->residual_forward(s->ly, s->ly, s->lx, nx));
    return ops->cast_f32_to_bf16(dx, s->ly, nx);
}

/* ------------------------------------------------------------------ the transformer block */

int dp_gpu_block_linear(const dp_gpu_model *g, int l, int m, void *out, const void *inp, float *xa,
                        const dp_gpu_block_step *st) {
    const dp_gpu_linear *d = &g->layers[l].lin[m];
    TRY(dp_gpu_linear_forward(g, d, out, d->out, inp, st->N, false));
    if (!st->groups)
        return d->A ? dp_gpu_lora_forward(g, d, st->r, st->scale, out, inp, xa, st->ls, st->N,
                                          st->dropout_p, st->seed, (uint64_t)l * 8 + (uint64_t)m)
                    : 0;
    const size_t es = g->bf16 ? 2 : 4, k = (size_t)l * DP_N_LINEAR + (size_t)m;
    for (int j = 0; j < st->ngroups; j++) {
        const dp_gpu_lora_group *gr = &st->groups[j];
        const dp_gpu_adapter *ad = gr->adapter;
        if (!ad->A[k]) continue;
        dp_gpu_linear dj = *d; /* the module with this group's A and B */
        dj.A = ad->A[k], dj.B = ad->B[k];
        TRY(dp_gpu_lora_forward(g, &dj, ad->r, ad->scale,
                                (char *)out + (size_t)gr->row0 * d->out * es,
                                (const char *)inp + (size_t)gr->row0 * d->in * es,
                                xa + (size_t)gr->row0 * ad->r, st->ls, gr->n, 0.0f, 0, 0));
    }
    return 0;
}

/* sequence sq's k and v rows into its cache at T0, then its rows' attention over [0, T0 + n) */
static int attend_cached(const dp_gpu_model *g, const dp_gpu_block_acts *s,
                         const dp_gpu_kv_seq *sq) {
    const dp_gpu_ops *ops = g->ops;
    const dp_model_config *c = &g->model->cfg;
    const int H = c->H, KVH = c->KVH, D = c->D, Tk = sq->T0 + sq->n;
    const size_t es = g->bf16 ? 2 : 4, qrow = (size_t)H * D * es, kvrow = (size_t)KVH * D * es;
    TRY(ops->dev_copy((char *)sq->k_cache + (size_t)sq->T0 * kvrow,
                      (const char *)s->k + (size_t)sq->row0 * kvrow, (size_t)sq->n * kvrow));
    TRY(ops->dev_copy((char *)sq->v_cache + (size_t)sq->T0 * kvrow,
                      (const char *)s->v + (size_t)sq->row0 * kvrow, (size_t)sq->n * kvrow));
    void *att = (char *)s->att + (size_t)sq->row0 * qrow;
    const void *q = (const char *)s->q + (size_t)sq->row0 * qrow;
    return g->bf16
               ? ops->attention_cached_bf16(att, q, sq->k_cache, sq->v_cache, sq->n, Tk, H, KVH, D)
               : ops->attention_cached(att, q, sq->k_cache, sq->v_cache, sq->n, Tk, H, KVH, D);
}

int dp_gpu_block_forward(const dp_gpu_model *g, int l, void *x_out, const void *x,
                         const dp_gpu_block_acts *s, const dp_gpu_block_step *st) {
    const dp_gpu_ops *ops = g->ops;
    const dp_model_config *c = &g->model->cfg;
    const dp_gpu_layer *ly = &g->layers[l];
    const int N = st->N, C = c->C, H = c->H, KVH = c->KVH, D = c->D;
    const size_t NC = (size_t)N * C, NF = (size_t)N * c->F;
    /* attention */
    TRY(dp_gpu_rmsnorm(g, s->h1, s->rstd1, x, ly->attn_norm, N, C));
    void *q = ly->q_norm ? s->qraw : s->q, *k = ly->q_norm ? s->kraw : s->k;
    TRY(dp_gpu_block_linear(g, l, DP_Q, q, s->h1, s->xa[DP_Q], st));
    TRY(dp_gpu_block_linear(g, l, DP_K, k, s->h1, s->xa[DP_K], st));
    TRY(dp_gpu_block_linear(g, l, DP_V, s->v, s->h1, s->xa[DP_V], st));
    if (ly->q_norm) { /* Qwen3: RMSNorm over each head's D values, before RoPE */
        TRY(dp_gpu_rmsnorm(g, s->q, s->qn_rstd, s->qraw, ly->q_norm, N * H, D));
        TRY(dp_gpu_rmsnorm(g, s->k, s->kn_rstd, s->kraw, ly->k_norm, N * KVH, D));
    }
    TRY(dp_gpu_rope(g, s->q, st->pos, N, H));
    TRY(dp_gpu_rope(g, s->k, st->pos, N, KVH));
    if (st->kv) {
        for (int j = 0; j < st->nkv; j++) TRY(attend_cached(g, s, &st->kv[j]));
    } else {
        TRY(g->bf16 ? ops->attention_forward_bf16(s->att, s->lse, s->q, s->k, s->v, st->cu_seqlens,
                                                  st->nseq, N, H, KVH, D)
                    : ops->attention_forward(s->att, s->lse, s->q, s->k, s->v, st->cu_seqlens,
                                             st->nseq, N, H, KVH, D));
    }
    TRY(dp_gpu_block_linear(g, l, DP_O, s->x2, s->att, s->xa[DP_O], st));
    TRY(dp_gpu_residual(g, s->x2, s->x2, x, NC));
    /* MLP: down(silu(gate(x)) * up(x)); x is spent, so x_out may be x */
    TRY(dp_gpu_rmsnorm(g, s->h2, s->rstd2, s->x2, ly->ffn_norm, N, C));
    TRY(dp_gpu_block_linear(g, l, DP_GATE, s->g, s->h2, s->xa[DP_GATE], st));
    TRY(dp_gpu_block_linear(g, l, DP_UP, s->u, s->h2, s->xa[DP_UP], st));
    TRY(g->bf16 ? ops->swiglu_forward_bf16(s->a, s->g, s->u, NF)
                : ops->swiglu_forward(s->a, s->g, s->u, NF));
    TRY(dp_gpu_block_linear(g, l, DP_DOWN, x_out, s->a, s->xa[DP_DOWN], st));
    return dp_gpu_residual(g, x_out, x_out, s->x2, NC);
}
