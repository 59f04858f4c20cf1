/* The one CPU transformer block and the trunk of blocks (see block.h). */
#include "infer/block.h"

#include "kernels/ops.h"

#include <stddef.h>

/* rows [n0, ...) of a (N, w) matrix */
#define ROWS(p, n0, w) ((p) + (size_t)(n0) * (size_t)(w))

static void residual_add(float *out, const float *x, const float *y, size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; i++) out[i] = x[i] + y[i];
}

int dp_block_forward(const dp_model *m, int l, const dp_block_ops *ops, dp_block_acts *A,
                     const float *x, float *x_out, const int32_t *pos, const float *inv_freq,
                     int n0, int n1, bool recompute) {
    const dp_model_config *c = &m->cfg;
    const dp_layer *ly = &m->layers[l];
    const int n = n1 - n0, C = c->C, H = c->H, KVH = c->KVH, D = c->D, F = c->F;
    const int HD = H * D, KD = KVH * D;
    static const dp_linear_id qkv[3] = {DP_Q, DP_K, DP_V}, gate_up[2] = {DP_GATE, DP_UP},
                              o_id[1] = {DP_O}, down_id[1] = {DP_DOWN};
    float *rstd1 = A->rstd1 ? ROWS(A->rstd1, n0, 1) : NULL;
    float *rstd2 = A->rstd2 ? ROWS(A->rstd2, n0, 1) : NULL;

    /* attention: x2 = x + o(attention(rope(q(h1)), rope(k(h1)), v(h1))), h1 = norm(x) */
    if (n > 0) {
        rmsnorm_forward(ROWS(A->h1, n0, C), rstd1, ROWS(x, n0, C), ly->attn_norm, n, C, c->rms_eps);
        bool keep_raw = c->qk_norm && A->qraw;
        float *q = keep_raw ? A->qraw : A->q, *k = keep_raw ? A->kraw : A->k;
        if (ops->linears(ops->ctx, l, 3, qkv, (float *const[]){q, k, A->v}, A->h1, n0, n1))
            return -1;
        if (c->qk_norm) { /* Qwen3: RMSNorm over each head's D values, before RoPE */
            rmsnorm_forward(ROWS(A->q, n0, HD), A->qn_rstd ? ROWS(A->qn_rstd, n0, H) : NULL,
                            ROWS(q, n0, HD), ly->q_norm, n * H, D, c->rms_eps);
            rmsnorm_forward(ROWS(A->k, n0, KD), A->kn_rstd ? ROWS(A->kn_rstd, n0, KVH) : NULL,
                            ROWS(k, n0, KD), ly->k_norm, n * KVH, D, c->rms_eps);
        }
        rope_forward(ROWS(A->q, n0, HD), pos + n0, inv_freq, n, H, D);
        rope_forward(ROWS(A->k, n0, KD), pos + n0, inv_freq, n, KVH, D);
    }
    if (ops->attention(ops->ctx, l, A, n0, n1)) return -1;
    if (n <= 0) return 0;
    size_t a0 = (size_t)n0 * C, a1 = (size_t)n1 * C;
    if (!recompute) {
        if (ops->linears(ops->ctx, l, 1, o_id, (float *const[]){A->proj}, A->att, n0, n1))
            return -1;
        residual_add(A->x2, x, A->proj, a0, a1);
    }

    /* MLP: x_out = x2 + down(silu(gate(h2)) * up(h2)), h2 = norm(x2) */
    rmsnorm_forward(ROWS(A->h2, n0, C), rstd2, ROWS(A->x2, n0, C), ly->ffn_norm, n, C, c->rms_eps);
    if (ops->linears(ops->ctx, l, 2, gate_up, (float *const[]){A->g, A->u}, A->h2, n0, n1))
        return -1;
    swiglu_forward(ROWS(A->a, n0, F), ROWS(A->g, n0, F), ROWS(A->u, n0, F), (size_t)n * F);
    if (!recompute) {
        if (ops->linears(ops->ctx, l, 1, down_id, (float *const[]){A->proj}, A->a, n0, n1))
            return -1;
        residual_add(x_out, A->x2, A->proj, a0, a1);
    }
    return 0;
}

int dp_trunk_forward(const dp_model *m, const dp_block_ops *ops, const int32_t *tokens, float *x0,
                     const int32_t *pos, const float *inv_freq, int n0, int n1) {
    const int C = m->cfg.C;
    if (n1 > n0) embedding_forward(ROWS(x0, n0, C), tokens + n0, m->embed, n1 - n0, C);
    for (int l = 0; l < m->cfg.L; l++) {
        const float *x;
        float *x_out;
        dp_block_acts *A;
        if (ops->layer(ops->ctx, l, &x, &x_out, &A)) return -1;
        if (dp_block_forward(m, l, ops, A, x, x_out, pos, inv_freq, n0, n1, false)) return -1;
    }
    return 0;
}
