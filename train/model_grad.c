/* Whole-model training forward/backward with LoRA (see model_grad.h). Layer inputs are kept;
 * with recomputation each layer's activations are rebuilt right before its backward pass.
 * Cross-entropy runs only over trained rows, in chunks, so full logits never exist. */
#include "train/model_grad.h"
#include "data/error.h"
#include "kernels/ops.h"
#include "kernels/philox.h"

#include <stdlib.h>
#include <string.h>

typedef struct {              /* one layer's activations, (N, ...) rows */
    float *h1, *rstd1;        /* attn-norm output (N, C), (N) */
    float *qraw, *kraw;       /* before q/k norm (Qwen3): (N, H*D), (N, KVH*D) */
    float *qn_rstd, *kn_rstd; /* (N*H), (N*KVH) */
    float *q, *k, *v;         /* after norm + RoPE: (N, H*D), (N, KVH*D) x2 */
    float *att, *lse;         /* (N, H*D), (N, H) */
    float *x2;                /* residual after attention (N, C) */
    float *h2, *rstd2;        /* ffn-norm output (N, C), (N) */
    float *g, *u, *a;         /* (N, F) gate, up, silu(gate)*up */
    float *xa[DP_N_LINEAR];   /* (N, r) LoRA x A^T per module */
} layer_acts;

struct dp_grad_ws {
    int maxN, L, C, H, KVH, D, F, V, r, ce_chunk;
    bool recompute;
    float *xs;                               /* (L+1, N, C) layer inputs, xs[L] = last residual */
    layer_acts *acts;                        /* 1 (recompute) or L */
    float *xf, *rstdf, *dxf;                 /* final norm (N, C), (N), grad (N, C) */
    float *dx, *dh, *tmp;                    /* (N, C) x2, (N, max(C, F, H*D)) */
    float *dq, *dk, *dv, *dqr, *dkr, *datt;  /* (N, H*D) / (N, KVH*D) */
    float *dg, *du, *da;                     /* (N, F) */
    float *keep, *xd;                        /* (N, max in) dropout multipliers, dropped input */
    float *dxa;                              /* (N, r) */
    float *logits, *losses, *xrows, *dxrows; /* (chunk, V), (chunk), (chunk, C) x2 */
    int32_t *trows, *ttargets;               /* (N), (chunk) */
    float *inv_freq;                         /* (D/2) */
    float *mem;
    size_t bytes;
};

static float *take(float **p, size_t n) {
    float *r = *p;
    *p += (n + 15) / 16 * 16; /* keep 64-byte alignment of every buffer */
    return r;
}

/* Carves every buffer from one allocation; with base == NULL only counts. */
static size_t carve(dp_grad_ws *ws, const dp_model *model, float *base) {
    float *p = base ? base : (float *)64;
    float *start = p;
    size_t N = (size_t)ws->maxN, C = ws->C, HD = (size_t)ws->H * ws->D,
           KD = (size_t)ws->KVH * ws->D, F = ws->F, r = ws->r;
    size_t wide = C > F ? C : F;
    if (HD > wide) wide = HD;
    bool qkn = model->cfg.qk_norm;
    ws->xs = take(&p, (size_t)(ws->L + 1) * N * C);
    int nacts = ws->recompute ? 1 : ws->L;
    for (int i = 0; i < nacts; i++) {
        layer_acts *A = &ws->acts[i];
        A->h1 = take(&p, N * C), A->rstd1 = take(&p, N);
        A->qraw = qkn ? take(&p, N * HD) : NULL, A->kraw = qkn ? take(&p, N * KD) : NULL;
        A->qn_rstd = qkn ? take(&p, N * ws->H) : NULL;
        A->kn_rstd = qkn ? take(&p, N * ws->KVH) : NULL;
        A->q = take(&p, N * HD), A->k = take(&p, N * KD), A->v = take(&p, N * KD);
        A->att = take(&p, N * HD), A->lse = take(&p, N * ws->H);
        A->x2 = take(&p, N * C), A->h2 = take(&p, N * C), A->rstd2 = take(&p, N);
        A->g = take(&p, N * F), A->u = take(&p, N * F), A->a = take(&p, N * F);
        for (int m = 0; m < DP_N_LINEAR; m++) A->xa[m] = take(&p, N * r);
    }
    ws->xf = take(&p, N * C), ws->rstdf = take(&p, N), ws->dxf = take(&p, N * C);
    ws->dx = take(&p, N * C), ws->dh = take(&p, N * C), ws->tmp = take(&p, N * wide);
    ws->dq = take(&p, N * HD), ws->dk = take(&p, N * KD), ws->dv = take(&p, N * KD);
    ws->dqr = take(&p, N * HD), ws->dkr = take(&p, N * KD), ws->datt = take(&p, N * HD);
    ws->dg = take(&p, N * F), ws->du = take(&p, N * F), ws->da = take(&p, N * F);
    ws->keep = take(&p, N * wide), ws->xd = take(&p, N * wide), ws->dxa = take(&p, N * r);
    size_t ch = (size_t)ws->ce_chunk;
    ws->logits = take(&p, ch * ws->V), ws->losses = take(&p, ch);
    ws->xrows = take(&p, ch * C), ws->dxrows = take(&p, ch * C);
    ws->trows = (int32_t *)take(&p, N), ws->ttargets = (int32_t *)take(&p, ch);
    ws->inv_freq = take(&p, (size_t)ws->D / 2 + 1);
    return (size_t)(p - start) * sizeof(float);
}

dp_grad_ws *dp_grad_ws_create(const dp_model *model, const dp_lora *lora, int max_tokens,
                              bool recompute, int ce_chunk) {
    const dp_model_config *c = &model->cfg;
    if (max_tokens < 1) {
        dp_fail("micro-batch of %d tokens (must be at least 1)", max_tokens);
        return NULL;
    }
    if (!model->lm_head.w) {
        dp_fail("the training path needs an fp32 lm_head (NF4 lm_head is not supported yet)");
        return NULL;
    }
    dp_grad_ws *ws = dp_calloc(1, sizeof *ws);
    if (!ws) return NULL;
    ws->maxN = max_tokens, ws->L = c->L, ws->C = c->C, ws->H = c->H, ws->KVH = c->KVH;
    ws->D = c->D, ws->F = c->F, ws->V = c->V, ws->r = lora ? lora->cfg.r : 1;
    ws->ce_chunk = ce_chunk > 0 ? ce_chunk : 128;
    if (ws->ce_chunk > max_tokens) ws->ce_chunk = max_tokens;
    ws->recompute = recompute;
    ws->acts = dp_calloc(recompute ? 1 : (size_t)c->L, sizeof *ws->acts);
    if (!ws->acts) goto fail;
    ws->bytes = carve(ws, model, NULL);
    ws->mem = aligned_alloc(64, (ws->bytes + 63) / 64 * 64);
    if (!ws->mem) {
        dp_fail("out of memory: the training workspace needs %.1f MiB (lower --max-seq or "
                "--batch-tokens)",
                ws->bytes / 1048576.0);
        goto fail;
    }
    carve(ws, model, ws->mem);
    rope_inv_freq(ws->inv_freq, c->D, c->rope_theta, &c->rope_scaling);
    return ws;
fail:
    dp_grad_ws_free(ws);
    return NULL;
}

void dp_grad_ws_free(dp_grad_ws *ws) {
    if (!ws) return;
    free(ws->mem);
    free(ws->acts);
    free(ws);
}

size_t dp_grad_ws_bytes(const dp_grad_ws *ws) {
    return ws->bytes;
}

/* ------------------------------------------------------------------ frozen linears */

/* out (N, out) = inp (N, in) W^T + b; NF4 weights are dequantized tile by tile */
static void lin_fwd(float *out, const float *inp, const dp_linear *lin, int N) {
    if (lin->w)
        matmul_forward(out, inp, lin->w, lin->bias, N, lin->in, lin->out);
    else
        matmul_nf4_forward(out, inp, lin->nf4, lin->bias, N, lin->in, lin->out);
}

/* dinp (N, in) += dout (N, out) W: the gradient through the frozen weight */
static void lin_bwd(float *dinp, const float *dout, const float *inp, const dp_linear *lin, int N) {
    if (lin->w)
        matmul_backward(dinp, NULL, NULL, dout, inp, lin->w, N, lin->in, lin->out);
    else
        matmul_nf4_backward_input(dinp, dout, lin->nf4, N, lin->in, lin->out);
}

/* Dropout multipliers for (layer, module): 0 or 1/(1-p). Element i of the (N, in) input keeps
 * when Philox draw i of stream (seed, layer * 8 + module) exceeds p: the mask dropout_forward
 * (kernels/philox.h) draws on either backend, so the GPU step drops the same elements. */
static const float *make_keep(dp_grad_ws *ws, const dp_lora *lora, uint64_t seed, int l, int m,
                              size_t n) {
    float p = lora->cfg.dropout;
    if (!(p > 0) || !seed) return NULL;
    float s = 1.0f / (1.0f - p);
    uint64_t stream = (uint64_t)l * 8 + (uint64_t)m;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) ws->keep[i] = dp_philox_uniform(seed, stream, i) > p ? s : 0.0f;
    return ws->keep;
}

static const dp_lora_module *lmod(const dp_lora *lora, int l, int m) {
    if (!lora) return NULL;
    const dp_lora_module *md = dp_lora_mod(lora, l, m);
    return md->A ? md : NULL;
}

/* out = base(inp) + LoRA(inp) for module m of layer l */
static void proj_fwd(dp_grad_ws *ws, const dp_model *model, const dp_lora *lora, int l, int m,
                     float *out, const float *inp, float *xa, uint64_t seed, int N) {
    const dp_linear *lin = &model->layers[l].lin[m];
    lin_fwd(out, inp, lin, N);
    const dp_lora_module *md = lmod(lora, l, m);
    if (!md) return;
    const float *keep = make_keep(ws, lora, seed, l, m, (size_t)N * lin->in);
    dp_lora_forward(out, inp, md, lora->cfg.r, lora->scale, keep, xa, ws->xd, N);
}

/* dinp += d(out)/d(inp)^T dout; LoRA gradients accumulate */
static void proj_bwd(dp_grad_ws *ws, const dp_model *model, dp_lora *lora, int l, int m,
                     float *dinp, const float *dout, const float *inp, const float *xa,
                     uint64_t seed, int N) {
    const dp_linear *lin = &model->layers[l].lin[m];
    lin_bwd(dinp, dout, inp, lin, N);
    const dp_lora_module *md = lmod(lora, l, m);
    if (!md) return;
    const float *keep = make_keep(ws, lora, seed, l, m, (size_t)N * lin->in);
    dp_lora_backward(dinp, dout, inp, md, lora->cfg.r, lora->scale, keep, xa, ws->dxa, ws->xd, N);
}

static void layer_forward(dp_grad_ws *ws, const dp_model *model, const dp_lora *lora, int l,
                          const float *x, float *x_out, layer_acts *A, const dp_batch *b,
                          uint64_t seed) {
    const dp_model_config *c = &model->cfg;
    const dp_layer *ly = &model->layers[l];
    int N = b->N, C = c->C, H = c->H, KVH = c->KVH, D = c->D, F = c->F;
    size_t NC = (size_t)N * C;
    rmsnorm_forward(A->h1, A->rstd1, x, ly->attn_norm, N, C, c->rms_eps);
    float *q = c->qk_norm ? A->qraw : A->q, *k = c->qk_norm ? A->kraw : A->k;
    proj_fwd(ws, model, lora, l, DP_Q, q, A->h1, A->xa[DP_Q], seed, N);
    proj_fwd(ws, model, lora, l, DP_K, k, A->h1, A->xa[DP_K], seed, N);
    proj_fwd(ws, model, lora, l, DP_V, A->v, A->h1, A->xa[DP_V], seed, N);
    if (c->qk_norm) {
        rmsnorm_forward(A->q, A->qn_rstd, A->qraw, ly->q_norm, N * H, D, c->rms_eps);
        rmsnorm_forward(A->k, A->kn_rstd, A->kraw, ly->k_norm, N * KVH, D, c->rms_eps);
    }
    rope_forward(A->q, b->pos, ws->inv_freq, N, H, D);
    rope_forward(A->k, b->pos, ws->inv_freq, N, KVH, D);
    attention_forward(A->att, A->lse, A->q, A->k, A->v, b->cu_seqlens, b->nseq, H, KVH, D);
    proj_fwd(ws, model, lora, l, DP_O, ws->tmp, A->att, A->xa[DP_O], seed, N);
    for (size_t i = 0; i < NC; i++) A->x2[i] = x[i] + ws->tmp[i];
    rmsnorm_forward(A->h2, A->rstd2, A->x2, ly->ffn_norm, N, C, c->rms_eps);
    proj_fwd(ws, model, lora, l, DP_GATE, A->g, A->h2, A->xa[DP_GATE], seed, N);
    proj_fwd(ws, model, lora, l, DP_UP, A->u, A->h2, A->xa[DP_UP], seed, N);
    swiglu_forward(A->a, A->g, A->u, (size_t)N * F);
    proj_fwd(ws, model, lora, l, DP_DOWN, ws->tmp, A->a, A->xa[DP_DOWN], seed, N);
    for (size_t i = 0; i < NC; i++) x_out[i] = A->x2[i] + ws->tmp[i];
}

/* dx: gradient at the layer's output on entry, at its input on return. */
static void layer_backward(dp_grad_ws *ws, const dp_model *model, dp_lora *lora, int l,
                           const float *x, const layer_acts *A, float *dx, const dp_batch *b,
                           uint64_t seed) {
    const dp_model_config *c = &model->cfg;
    const dp_layer *ly = &model->layers[l];
    int N = b->N, C = c->C, H = c->H, KVH = c->KVH, D = c->D, F = c->F;
    size_t NC = (size_t)N * C, NF = (size_t)N * F, NQ = (size_t)N * H * D, NK = (size_t)N * KVH * D;
    /* MLP: the residual passes dx through; the down projection sees dx too */
    memset(ws->da, 0, NF * sizeof(float));
    proj_bwd(ws, model, lora, l, DP_DOWN, ws->da, dx, A->a, A->xa[DP_DOWN], seed, N);
    memset(ws->dg, 0, NF * sizeof(float));
    memset(ws->du, 0, NF * sizeof(float));
    swiglu_backward(ws->dg, ws->du, ws->da, A->g, A->u, NF);
    memset(ws->dh, 0, NC * sizeof(float));
    proj_bwd(ws, model, lora, l, DP_GATE, ws->dh, ws->dg, A->h2, A->xa[DP_GATE], seed, N);
    proj_bwd(ws, model, lora, l, DP_UP, ws->dh, ws->du, A->h2, A->xa[DP_UP], seed, N);
    rmsnorm_backward(dx, NULL, ws->dh, A->x2, ly->ffn_norm, A->rstd2, N, C);
    /* attention */
    memset(ws->datt, 0, NQ * sizeof(float));
    proj_bwd(ws, model, lora, l, DP_O, ws->datt, dx, A->att, A->xa[DP_O], seed, N);
    memset(ws->dq, 0, NQ * sizeof(float));
    memset(ws->dk, 0, NK * sizeof(float));
    memset(ws->dv, 0, NK * sizeof(float));
    attention_backward(ws->dq, ws->dk, ws->dv, ws->datt, A->att, A->lse, A->q, A->k, A->v,
                       b->cu_seqlens, b->nseq, H, KVH, D);
    rope_backward(ws->dq, b->pos, ws->inv_freq, N, H, D);
    rope_backward(ws->dk, b->pos, ws->inv_freq, N, KVH, D);
    float *dq = ws->dq, *dk = ws->dk;
    const float *q_in = A->q, *k_in = A->k;
    if (c->qk_norm) {
        memset(ws->dqr, 0, NQ * sizeof(float));
        memset(ws->dkr, 0, NK * sizeof(float));
        rmsnorm_backward(ws->dqr, NULL, ws->dq, A->qraw, ly->q_norm, A->qn_rstd, N * H, D);
        rmsnorm_backward(ws->dkr, NULL, ws->dk, A->kraw, ly->k_norm, A->kn_rstd, N * KVH, D);
        dq = ws->dqr, dk = ws->dkr;
    }
    (void)q_in, (void)k_in;
    memset(ws->dh, 0, NC * sizeof(float));
    proj_bwd(ws, model, lora, l, DP_Q, ws->dh, dq, A->h1, A->xa[DP_Q], seed, N);
    proj_bwd(ws, model, lora, l, DP_K, ws->dh, dk, A->h1, A->xa[DP_K], seed, N);
    proj_bwd(ws, model, lora, l, DP_V, ws->dh, ws->dv, A->h1, A->xa[DP_V], seed, N);
    rmsnorm_backward(dx, NULL, ws->dh, x, ly->attn_norm, A->rstd1, N, C);
}

static int check_batch(const dp_grad_ws *ws, const dp_model *model, const dp_batch *b) {
    if (b->N < 1 || b->N > ws->maxN)
        return dp_fail("micro-batch of %d rows does not fit the workspace (%d)", b->N, ws->maxN);
    if (b->nseq < 1 || b->cu_seqlens[0] != 0 || b->cu_seqlens[b->nseq] != b->N)
        return dp_fail("micro-batch: cu_seqlens do not cover its %d rows", b->N);
    for (int i = 0; i < b->N; i++) {
        if (b->tokens[i] < 0 || b->tokens[i] >= model->cfg.V)
            return dp_fail("micro-batch row %d: token id %d outside the vocabulary (%d)", i,
                           b->tokens[i], model->cfg.V);
        if (b->targets && b->targets[i] >= model->cfg.V)
            return dp_fail("micro-batch row %d: target id %d outside the vocabulary (%d)", i,
                           b->targets[i], model->cfg.V);
    }
    return 0;
}

static void forward_trunk(dp_grad_ws *ws, const dp_model *model, const dp_lora *lora,
                          const dp_batch *b, uint64_t seed) {
    size_t NC = (size_t)b->N * ws->C;
    embedding_forward(ws->xs, b->tokens, model->embed, b->N, ws->C);
    for (int l = 0; l < ws->L; l++)
        layer_forward(ws, model, lora, l, ws->xs + l * NC, ws->xs + (l + 1) * NC,
                      &ws->acts[ws->recompute ? 0 : l], b, seed);
    rmsnorm_forward(ws->xf, ws->rstdf, ws->xs + ws->L * NC, model->final_norm, b->N, ws->C,
                    model->cfg.rms_eps);
}

/* Cross-entropy over the trained rows, chunked; with grad, fills ws->dxf (N, C). */
static void head(dp_grad_ws *ws, const dp_model *model, const dp_batch *b, bool grad, float dloss,
                 double *loss_sum, int64_t *ntrained) {
    int C = ws->C, V = ws->V, nt = 0;
    for (int i = 0; i < b->N; i++)
        if (b->targets[i] >= 0) ws->trows[nt++] = i;
    if (grad) memset(ws->dxf, 0, (size_t)b->N * C * sizeof(float));
    const float *W = model->lm_head.w; // (V, C)
    double sum = 0;
    for (int s = 0; s < nt; s += ws->ce_chunk) {
        int n = nt - s < ws->ce_chunk ? nt - s : ws->ce_chunk;
        for (int i = 0; i < n; i++) {
            int row = ws->trows[s + i];
            memcpy(ws->xrows + (size_t)i * C, ws->xf + (size_t)row * C, C * sizeof(float));
            ws->ttargets[i] = b->targets[row];
        }
        matmul_forward(ws->logits, ws->xrows, W, NULL, n, C, V);
        cross_entropy_forward_backward(ws->losses, ws->logits, ws->logits, ws->ttargets, n, V,
                                       dloss);
        for (int i = 0; i < n; i++) sum += ws->losses[i];
        if (!grad) continue;
        memset(ws->dxrows, 0, (size_t)n * C * sizeof(float));
        matmul_backward(ws->dxrows, NULL, NULL, ws->logits, ws->xrows, W, n, C, V);
        for (int i = 0; i < n; i++) {
            float *d = ws->dxf + (size_t)ws->trows[s + i] * C;
            const float *g = ws->dxrows + (size_t)i * C;
            for (int j = 0; j < C; j++) d[j] += g[j];
        }
    }
    *loss_sum = sum;
    *ntrained = nt;
}

int dp_model_grad(dp_grad_ws *ws, const dp_model *model, dp_lora *lora, const dp_batch *b,
                  float dloss, uint64_t dropout_seed, double *loss_sum, int64_t *ntrained) {
    if (check_batch(ws, model, b)) return -1;
    if (!lora || lora->cfg.r != ws->r) return dp_fail("LoRA rank differs from the workspace's");
    size_t NC = (size_t)b->N * ws->C;
    forward_trunk(ws, model, lora, b, dropout_seed);
    head(ws, model, b, true, dloss, loss_sum, ntrained);
    memset(ws->dx, 0, NC * sizeof(float));
    rmsnorm_backward(ws->dx, NULL, ws->dxf, ws->xs + ws->L * NC, model->final_norm, ws->rstdf, b->N,
                     ws->C);
    for (int l = ws->L - 1; l >= 0; l--) {
        layer_acts *A = &ws->acts[ws->recompute ? 0 : l];
        /* recomputation rewrites xs[l+1] with the same values it already holds */
        if (ws->recompute)
            layer_forward(ws, model, lora, l, ws->xs + l * NC, ws->xs + (l + 1) * NC, A, b,
                          dropout_seed);
        layer_backward(ws, model, lora, l, ws->xs + l * NC, A, ws->dx, b, dropout_seed);
    }
    return 0;
}

int dp_model_loss(dp_grad_ws *ws, const dp_model *model, const dp_lora *lora, const dp_batch *b,
                  double *loss_sum, int64_t *ntrained) {
    if (check_batch(ws, model, b)) return -1;
    if (lora && lora->cfg.r != ws->r) return dp_fail("LoRA rank differs from the workspace's");
    forward_trunk(ws, model, lora, b, 0);
    head(ws, model, b, false, 0.0f, loss_sum, ntrained);
    return 0;
}

int dp_model_logits(dp_grad_ws *ws, const dp_model *model, const dp_lora *lora, const dp_batch *b,
                    float *logits) {
    if (check_batch(ws, model, b)) return -1;
    forward_trunk(ws, model, lora, b, 0);
    matmul_forward(logits, ws->xf, model->lm_head.w, NULL, b->N, ws->C, ws->V);
    return 0;
}
