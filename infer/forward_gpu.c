/* The whole-model forward pass through the backend table (dp_gpu_ops): the same steps as
 * infer/forward.c, with the weights, KV cache and activations in device memory carved from one
 * allocation per category; one layout function both sizes the table and assigns the pointers. */
#include "infer/forward_gpu.h"

#include "data/error.h"
#include "infer/dtype.h"
#include "kernels/cuda/kernels.h"

#include <stdlib.h>
#include <string.h>

const char *const dp_gf_category_names[DP_GF_N_CATEGORIES] = {
    "weights (NF4)",        "weights (dense, norms, biases)", "KV cache",
    "activations + logits", "NF4 dequantize scratch",         "LoRA A and B (fp32)"};

typedef struct {
    dp_linear_id id;
    int out, in;
    void *w;        /* (out, in) activation dtype, or NULL */
    dp_nf4_dev nf4; /* when w == NULL */
    float *bias;    /* (out) fp32 or NULL */
    float *A, *B;   /* LoRA A (r, in), B (out, r) fp32, or NULL */
} dp_gf_linear;

typedef struct {
    float *attn_norm, *ffn_norm, *q_norm, *k_norm; /* fp32 */
    dp_gf_linear lin[DP_N_LINEAR];
} dp_gf_layer;

struct dp_gpu_forward {
    const dp_gpu_ops *ops;
    const dp_model *model; /* borrowed */
    const dp_lora *lora;   /* borrowed, or NULL */
    bool bf16;
    int max_T, chunk, T;
    dp_gf_plan plan;
    void *block[DP_GF_N_CATEGORIES]; /* one device allocation per category */
    dp_blas *blas;
    void *embed;       /* (V, C) activation dtype */
    float *final_norm; /* (C) */
    dp_gf_linear lm_head;
    dp_gf_layer *layers;     /* (L) host array of device pointers */
    void *k_cache, *v_cache; /* each (L, max_T, KVH, D) */
    void *x, *xn, *proj;     /* (chunk, C) */
    void *q, *att;           /* (chunk, H, D) */
    void *gate, *up;         /* (chunk, F) */
    float *tmp;              /* (chunk, largest biased out) fp32: bias on bf16 activations */
    float *dlogits;          /* (chunk, V) fp32 */
    float *inv_freq;         /* (D/2) */
    int32_t *pos, *tokens;   /* (chunk) */
    void *dequant;           /* scratch for one NF4 matrix */
    float *xa;               /* (chunk, r) LoRA x A^T */
    float *losses;           /* (chunk) per-row cross-entropy */
    int32_t *targets;        /* (chunk) */
    float *lx, *ly;          /* (chunk, widest): fp32 copies for LoRA on bf16 activations */
    float *logits;           /* host (V): the last position's logits */
};

const float *dp_gpu_forward_logits(const dp_gpu_forward *g) {
    return g->logits;
}
int dp_gpu_forward_positions(const dp_gpu_forward *g) {
    return g->T;
}
int dp_gpu_forward_capacity(const dp_gpu_forward *g) {
    return g->max_T;
}
void dp_gpu_forward_truncate(dp_gpu_forward *g, int T) {
    if (T < 0) T = 0;
    if (T < g->T) g->T = T;
}
const dp_gf_plan *dp_gpu_forward_table(const dp_gpu_forward *g) {
    return &g->plan;
}

#define GF_ALIGN 256 /* every carved buffer starts 256-byte aligned, as cudaMalloc's are */

typedef struct {
    char *base[DP_GF_N_CATEGORIES]; /* NULL: only count */
    uint64_t off[DP_GF_N_CATEGORIES];
} carver;

static void *carve(carver *cv, dp_gf_category cat, uint64_t bytes) {
    void *p = cv->base[cat] ? cv->base[cat] + cv->off[cat] : NULL;
    cv->off[cat] += (bytes + GF_ALIGN - 1) / GF_ALIGN * GF_ALIGN;
    return p;
}

static void carve_linear(carver *cv, dp_gf_linear *d, const dp_linear *lin, dp_linear_id id,
                         size_t es, float *maps, uint64_t *dequant, const dp_lora_module *lm,
                         int r) {
    memset(d, 0, sizeof *d);
    d->id = id, d->out = lin->out, d->in = lin->in;
    if (lin->w) {
        d->w = carve(cv, DP_GF_WEIGHTS_DENSE, (uint64_t)lin->out * lin->in * es);
    } else {
        const dp_nf4 *q = lin->nf4;
        d->nf4.rows = q->rows, d->nf4.cols = q->cols, d->nf4.n = q->n;
        d->nf4.nblocks = q->nblocks, d->nf4.blocksize = q->blocksize, d->nf4.offset = q->offset;
        d->nf4.codes = carve(cv, DP_GF_WEIGHTS_NF4, (uint64_t)(q->n + 1) / 2);
        d->nf4.absmax_q = carve(cv, DP_GF_WEIGHTS_NF4, (uint64_t)q->nblocks);
        d->nf4.absmax2 = carve(cv, DP_GF_WEIGHTS_NF4, (uint64_t)(q->nblocks + 255) / 256 * 4);
        d->nf4.maps = maps;
        if ((uint64_t)q->n * es > *dequant) *dequant = (uint64_t)q->n * es;
    }
    if (lin->bias) d->bias = carve(cv, DP_GF_WEIGHTS_DENSE, (uint64_t)lin->out * 4);
    if (lm && lm->A) {
        d->A = carve(cv, DP_GF_LORA, (uint64_t)r * lin->in * 4);
        d->B = carve(cv, DP_GF_LORA, (uint64_t)lin->out * r * 4);
    }
}

/* Assigns every device pointer of g (or, with cv->base all NULL, only sizes them). */
static void layout(dp_gpu_forward *g, carver *cv) {
    const dp_model *m = g->model;
    const dp_model_config *c = &m->cfg;
    const size_t es = g->bf16 ? 2 : 4, n = (size_t)g->chunk;
    const size_t qd = (size_t)c->H * c->D, kvd = (size_t)c->KVH * c->D;
    bool any_nf4 = m->lm_head.nf4 != NULL;
    for (int l = 0; l < c->L; l++)
        for (int i = 0; i < DP_N_LINEAR; i++) any_nf4 |= m->layers[l].lin[i].nf4 != NULL;
    float *maps = any_nf4 ? carve(cv, DP_GF_WEIGHTS_NF4, (256 + 16) * sizeof(float)) : NULL;
    uint64_t dequant = 0, max_bias = 0;
    g->embed = carve(cv, DP_GF_WEIGHTS_DENSE, (uint64_t)c->V * c->C * es);
    g->final_norm = carve(cv, DP_GF_WEIGHTS_DENSE, (uint64_t)c->C * 4);
    for (int l = 0; l < c->L; l++) {
        const dp_layer *ly = &m->layers[l];
        dp_gf_layer *d = &g->layers[l];
        d->attn_norm = carve(cv, DP_GF_WEIGHTS_DENSE, (uint64_t)c->C * 4);
        d->ffn_norm = carve(cv, DP_GF_WEIGHTS_DENSE, (uint64_t)c->C * 4);
        d->q_norm = ly->q_norm ? carve(cv, DP_GF_WEIGHTS_DENSE, (uint64_t)c->D * 4) : NULL;
        d->k_norm = ly->k_norm ? carve(cv, DP_GF_WEIGHTS_DENSE, (uint64_t)c->D * 4) : NULL;
        for (int i = 0; i < DP_N_LINEAR; i++) {
            const dp_lora_module *lm = g->lora ? dp_lora_mod(g->lora, l, i) : NULL;
            carve_linear(cv, &d->lin[i], &ly->lin[i], (dp_linear_id)i, es, maps, &dequant, lm,
                         g->lora ? g->lora->cfg.r : 0);
            if (ly->lin[i].bias && (uint64_t)ly->lin[i].out > max_bias)
                max_bias = (uint64_t)ly->lin[i].out;
        }
    }
    if (c->tied_embeddings || m->lm_head.w == m->embed) {
        memset(&g->lm_head, 0, sizeof g->lm_head);
        g->lm_head.out = c->V, g->lm_head.in = c->C, g->lm_head.w = g->embed;
        g->lm_head.id = DP_N_LINEAR;
    } else {
        carve_linear(cv, &g->lm_head, &m->lm_head, DP_N_LINEAR, es, maps, &dequant, NULL, 0);
    }
    uint64_t kv = (uint64_t)c->L * g->max_T * kvd * es;
    g->k_cache = carve(cv, DP_GF_KV_CACHE, kv);
    g->v_cache = carve(cv, DP_GF_KV_CACHE, kv);
    g->x = carve(cv, DP_GF_ACTIVATIONS, n * c->C * es);
    g->xn = carve(cv, DP_GF_ACTIVATIONS, n * c->C * es);
    g->proj = carve(cv, DP_GF_ACTIVATIONS, n * c->C * es);
    g->q = carve(cv, DP_GF_ACTIVATIONS, n * qd * es);
    g->att = carve(cv, DP_GF_ACTIVATIONS, n * qd * es);
    g->gate = carve(cv, DP_GF_ACTIVATIONS, n * c->F * es);
    g->up = carve(cv, DP_GF_ACTIVATIONS, n * c->F * es);
    /* bias on bf16 activations goes through an fp32 copy (there is no bf16 bias kernel) */
    g->tmp = g->bf16 && max_bias ? carve(cv, DP_GF_ACTIVATIONS, n * max_bias * 4) : NULL;
    g->dlogits = carve(cv, DP_GF_ACTIVATIONS, n * c->V * 4);
    g->inv_freq = carve(cv, DP_GF_ACTIVATIONS, (uint64_t)c->D / 2 * 4);
    g->pos = carve(cv, DP_GF_ACTIVATIONS, n * 4);
    g->tokens = carve(cv, DP_GF_ACTIVATIONS, n * 4);
    g->targets = carve(cv, DP_GF_ACTIVATIONS, n * 4);
    g->losses = carve(cv, DP_GF_ACTIVATIONS, n * 4);
    g->dequant = dequant ? carve(cv, DP_GF_DEQUANT, dequant) : NULL;
    g->xa = g->lx = g->ly = NULL;
    if (g->lora) {
        uint64_t wide = (uint64_t)(c->F > c->C ? c->F : c->C);
        if ((uint64_t)qd > wide) wide = qd;
        g->xa = carve(cv, DP_GF_ACTIVATIONS, n * g->lora->cfg.r * 4);
        if (g->bf16) {
            g->lx = carve(cv, DP_GF_ACTIVATIONS, n * wide * 4);
            g->ly = carve(cv, DP_GF_ACTIVATIONS, n * wide * 4);
        }
    }
}

static int check_shape(const dp_model *m, int max_T, int chunk) {
    const dp_model_config *c = &m->cfg;
    if (c->L <= 0 || c->C <= 0 || c->H <= 0 || c->KVH <= 0 || c->D <= 0 || c->F <= 0 || c->V <= 0 ||
        c->H % c->KVH != 0 || c->D % 2 != 0 || c->D > 128 || max_T <= 0 || chunk <= 0)
        return dp_fail("%s: shape not supported by the GPU forward (L %d, C %d, H %d, KVH %d, "
                       "D %d (<= 128), F %d, V %d, max_T %d, chunk %d)",
                       m->source ? m->source : "model", c->L, c->C, c->H, c->KVH, c->D, c->F, c->V,
                       max_T, chunk);
    for (int l = 0; l < c->L; l++)
        for (int i = 0; i < DP_N_LINEAR; i++) {
            const dp_linear *lin = &m->layers[l].lin[i];
            if (!lin->w && !lin->nf4)
                return dp_fail("%s: layer %d %s has no weights; the model was not fully loaded",
                               m->source ? m->source : "model", l, dp_linear_names[i]);
        }
    return 0;
}

static void defaults(int *max_T, int *chunk) {
    if (*max_T <= 0) *max_T = 2048;
    if (*chunk <= 0) *chunk = 256;
    if (*chunk > *max_T) *chunk = *max_T;
}

int dp_gpu_forward_plan(dp_gf_plan *plan, const dp_model *m, const dp_lora *lora, int max_T,
                        int chunk, bool bf16) {
    memset(plan, 0, sizeof *plan);
    defaults(&max_T, &chunk);
    if (check_shape(m, max_T, chunk)) return -1;
    if (lora && (lora->L != m->cfg.L || lora->cfg.r <= 0))
        return dp_fail("GPU forward: the LoRA adapter has %d layers (rank %d), the model %d",
                       lora->L, lora->cfg.r, m->cfg.L);
    dp_gpu_forward g = {.model = m, .lora = lora, .bf16 = bf16, .max_T = max_T, .chunk = chunk};
    g.layers = dp_calloc((size_t)m->cfg.L, sizeof *g.layers);
    if (!g.layers) return -1;
    carver cv = {0};
    layout(&g, &cv);
    free(g.layers);
    for (int i = 0; i < DP_GF_N_CATEGORIES; i++) {
        plan->bytes[i] = cv.off[i];
        plan->total += cv.off[i];
    }
    return 0;
}

/* host fp32 → device, converted to bf16 on the way when asked */
static int put(const dp_gpu_ops *ops, void *dst, const float *src, size_t n, bool bf16) {
    if (!bf16) return ops->upload(dst, src, n * 4);
    uint16_t *t = dp_malloc(n * 2);
    if (!t) return -1;
    for (size_t i = 0; i < n; i++) t[i] = dp_f32_to_bf16(src[i]);
    int rc = ops->upload(dst, t, n * 2);
    free(t);
    return rc;
}

static int put_linear(dp_gpu_forward *g, const dp_gf_linear *d, const dp_linear *lin) {
    const dp_gpu_ops *ops = g->ops;
    if (lin->w) {
        if (put(ops, d->w, lin->w, (size_t)lin->out * lin->in, g->bf16)) return -1;
    } else {
        const dp_nf4 *q = lin->nf4;
        if (ops->upload(d->nf4.codes, q->codes, (size_t)(q->n + 1) / 2) ||
            ops->upload(d->nf4.absmax_q, q->absmax_q, (size_t)q->nblocks) ||
            ops->upload(d->nf4.absmax2, q->absmax2, (size_t)(q->nblocks + 255) / 256 * 4))
            return -1;
    }
    if (lin->bias && put(ops, d->bias, lin->bias, (size_t)lin->out, false)) return -1;
    return 0;
}

static int upload_weights(dp_gpu_forward *g) {
    const dp_model *m = g->model;
    const dp_model_config *c = &m->cfg;
    const dp_gpu_ops *ops = g->ops;
    if (put(ops, g->embed, m->embed, (size_t)c->V * c->C, g->bf16) ||
        put(ops, g->final_norm, m->final_norm, (size_t)c->C, false))
        return -1;
    float *maps = NULL;
    for (int l = 0; l < c->L; l++) {
        const dp_layer *ly = &m->layers[l];
        const dp_gf_layer *d = &g->layers[l];
        if (put(ops, d->attn_norm, ly->attn_norm, (size_t)c->C, false) ||
            put(ops, d->ffn_norm, ly->ffn_norm, (size_t)c->C, false) ||
            (d->q_norm && put(ops, d->q_norm, ly->q_norm, (size_t)c->D, false)) ||
            (d->k_norm && put(ops, d->k_norm, ly->k_norm, (size_t)c->D, false)))
            return -1;
        for (int i = 0; i < DP_N_LINEAR; i++) {
            if (put_linear(g, &d->lin[i], &ly->lin[i])) return -1;
            if (d->lin[i].A) {
                const dp_lora_module *lm = dp_lora_mod(g->lora, l, i);
                int r = g->lora->cfg.r;
                if (ops->upload(d->lin[i].A, lm->A, (size_t)r * lm->in * 4) ||
                    ops->upload(d->lin[i].B, lm->B, (size_t)lm->out * r * 4))
                    return -1;
            }
            if (d->lin[i].nf4.maps) maps = d->lin[i].nf4.maps;
        }
    }
    if (g->lm_head.w != g->embed) {
        if (put_linear(g, &g->lm_head, &m->lm_head)) return -1;
        if (g->lm_head.nf4.maps) maps = g->lm_head.nf4.maps;
    }
    if (maps) { /* the dynamic map of the absmax codes, then the 16 NF4 values */
        float h[256 + 16];
        dp_dynamic_map(h);
        memcpy(h + 256, dp_nf4_values, sizeof(float) * 16);
        if (ops->upload(maps, h, sizeof h)) return -1;
    }
    float inv[64];
    rope_inv_freq(inv, c->D, c->rope_theta, &c->rope_scaling);
    return ops->upload(g->inv_freq, inv, (size_t)c->D / 2 * 4);
}

void dp_gpu_forward_free(dp_gpu_forward *g) {
    if (!g) return;
    if (g->ops) {
        for (int i = 0; i < DP_GF_N_CATEGORIES; i++)
            if (g->block[i]) g->ops->dev_free(g->block[i]);
        if (g->blas) g->ops->blas_destroy(g->blas);
    }
    free(g->layers);
    free(g->logits);
    free(g);
}

int dp_gpu_forward_create(dp_gpu_forward **out, const dp_gpu_ops *ops, const dp_model *m,
                          const dp_lora *lora, int max_T, int chunk, bool bf16) {
    *out = NULL;
    dp_gpu_forward *g = dp_calloc(1, sizeof *g);
    if (!g) return -1;
    defaults(&max_T, &chunk);
    if (dp_gpu_forward_plan(&g->plan, m, lora, max_T, chunk, bf16)) {
        free(g);
        return -1;
    }
    g->ops = ops, g->model = m, g->lora = lora, g->bf16 = bf16, g->max_T = max_T, g->chunk = chunk;
    g->layers = dp_calloc((size_t)m->cfg.L, sizeof *g->layers);
    g->logits = dp_calloc((size_t)m->cfg.V, sizeof(float));
    if (!g->layers || !g->logits) goto fail;
    carver cv = {0};
    for (int i = 0; i < DP_GF_N_CATEGORIES; i++) {
        if (!g->plan.bytes[i]) continue;
        if (ops->dev_malloc(&g->block[i], g->plan.bytes[i])) {
            dp_fail_context("GPU forward: %s (%.1f MiB of %.1f MiB planned)",
                            dp_gf_category_names[i], g->plan.bytes[i] / 1048576.0,
                            g->plan.total / 1048576.0);
            goto fail;
        }
        cv.base[i] = g->block[i];
    }
    layout(g, &cv);
    if (ops->blas_create(&g->blas) || upload_weights(g)) goto fail;
    *out = g;
    return 0;
fail:
    dp_gpu_forward_free(g);
    return -1;
}

#define TRY(call)                                                                                  \
    do {                                                                                           \
        if ((call) != 0) return -1;                                                                \
    } while (0)

static int add_bias(dp_gpu_forward *g, const dp_gf_linear *d, void *y, int ldy, int N,
                    dp_act_dtype cd);

/* y (N, out) += scale * (x A^T) B^T, fp32 GEMMs over the fp32 master weights (bf16 activations
 * go through fp32 copies) */
static int lora_forward(dp_gpu_forward *g, const dp_gf_linear *d, void *y, const void *x, int N) {
    const dp_gpu_ops *ops = g->ops;
    const int r = g->lora->cfg.r;
    const float *xf = x;
    float *yf = y;
    if (g->bf16) {
        TRY(ops->cast_bf16_to_f32(g->lx, x, (size_t)N * d->in));
        TRY(ops->cast_bf16_to_f32(g->ly, y, (size_t)N * d->out));
        xf = g->lx, yf = g->ly;
    }
    TRY(ops->gemm(g->blas, false, true, N, r, d->in, 1.0f, xf, d->in, d->A, d->in, 0.0f, g->xa, r,
                  DP_F32, DP_F32));
    TRY(ops->gemm(g->blas, false, true, N, d->out, r, g->lora->scale, g->xa, r, d->B, r, 1.0f, yf,
                  d->out, DP_F32, DP_F32));
    return g->bf16 ? ops->cast_f32_to_bf16(y, g->ly, (size_t)N * d->out) : 0;
}

/* y (N, out) = x (N, in) W^T + b (+ the LoRA path); y in the activation dtype, or fp32 when
 * f32_out */
static int linear(dp_gpu_forward *g, const dp_gf_linear *d, void *y, int ldy, const void *x, int N,
                  bool f32_out) {
    const dp_gpu_ops *ops = g->ops;
    const dp_act_dtype ab = g->bf16 ? DP_BF16 : DP_F32, cd = f32_out ? DP_F32 : ab;
    const void *w = d->w;
    if (!w) {
        if (ab == DP_F32 && N == 1 && ldy == d->out) /* decode: the fused NF4 GEMV */
        {
            TRY(ops->gemv_nf4(y, x, &d->nf4, d->bias, d->in, d->out));
            return d->A ? lora_forward(g, d, y, x, N) : 0;
        }
        TRY(g->bf16 ? ops->nf4_dequantize_bf16(g->dequant, &d->nf4)
                    : ops->nf4_dequantize(g->dequant, &d->nf4));
        w = g->dequant;
    }
    TRY(ops->gemm(g->blas, false, true, N, d->out, d->in, 1.0f, x, d->in, w, d->in, 0.0f, y, ldy,
                  ab, cd));
    if (d->bias) TRY(add_bias(g, d, y, ldy, N, cd));
    return d->A ? lora_forward(g, d, y, x, N) : 0;
}

static int add_bias(dp_gpu_forward *g, const dp_gf_linear *d, void *y, int ldy, int N,
                    dp_act_dtype cd) {
    const dp_gpu_ops *ops = g->ops;
    if (cd == DP_F32 && ldy == d->out) return ops->bias_forward(y, d->bias, N, d->out);
    if (ldy != d->out) return dp_fail("GPU forward: bias on a strided output is not supported");
    TRY(ops->cast_bf16_to_f32(g->tmp, y, (size_t)N * d->out));
    TRY(ops->bias_forward(g->tmp, d->bias, N, d->out));
    return ops->cast_f32_to_bf16(y, g->tmp, (size_t)N * d->out);
}

static int rmsnorm(dp_gpu_forward *g, void *out, const void *inp, const float *w, int N, int C) {
    float eps = g->model->cfg.rms_eps;
    return g->bf16 ? g->ops->rmsnorm_forward_bf16(out, NULL, inp, w, N, C, eps)
                   : g->ops->rmsnorm_forward(out, NULL, inp, w, N, C, eps);
}
static int rope(dp_gpu_forward *g, void *x, int N, int nh) {
    int D = g->model->cfg.D;
    return g->bf16 ? g->ops->rope_forward_bf16(x, g->pos, g->inv_freq, N, nh, D)
                   : g->ops->rope_forward(x, g->pos, g->inv_freq, N, nh, D);
}
static int residual(dp_gpu_forward *g, void *x, const void *y, size_t n) {
    return g->bf16 ? g->ops->residual_forward_bf16(x, x, y, n)
                   : g->ops->residual_forward(x, x, y, n);
}

/* One step over N <= chunk rows at positions [g->T, g->T + N). */
static int forward_chunk(dp_gpu_forward *g, const int32_t *tokens, int N, float *all_logits,
                         bool device_logits) {
    const dp_gpu_ops *ops = g->ops;
    const dp_model_config *c = &g->model->cfg;
    const int C = c->C, H = c->H, KVH = c->KVH, D = c->D, F = c->F, V = c->V, T0 = g->T;
    const size_t es = g->bf16 ? 2 : 4, kvd = (size_t)KVH * D;
    int32_t *pos = dp_malloc((size_t)N * sizeof(int32_t));
    if (!pos) return -1;
    for (int i = 0; i < N; i++) pos[i] = T0 + i;
    int rc = ops->upload(g->pos, pos, (size_t)N * 4);
    free(pos);
    TRY(rc);
    TRY(ops->upload(g->tokens, tokens, (size_t)N * 4));
    TRY(g->bf16 ? ops->embedding_forward_bf16(g->x, g->tokens, g->embed, N, C, V)
                : ops->embedding_forward(g->x, g->tokens, g->embed, N, C, V));
    for (int l = 0; l < c->L; l++) {
        const dp_gf_layer *ly = &g->layers[l];
        char *kc = (char *)g->k_cache + (size_t)l * g->max_T * kvd * es; // (max_T, KVH, D)
        char *vc = (char *)g->v_cache + (size_t)l * g->max_T * kvd * es; // (max_T, KVH, D)
        void *krow = kc + (size_t)T0 * kvd * es, *vrow = vc + (size_t)T0 * kvd * es;
        /* attention: k and v are written straight into the cache rows of these positions */
        TRY(rmsnorm(g, g->xn, g->x, ly->attn_norm, N, C));
        TRY(linear(g, &ly->lin[DP_Q], g->q, H * D, g->xn, N, false));
        TRY(linear(g, &ly->lin[DP_K], krow, (int)kvd, g->xn, N, false));
        TRY(linear(g, &ly->lin[DP_V], vrow, (int)kvd, g->xn, N, false));
        if (ly->q_norm) { /* Qwen3: RMSNorm over each head's D values, before RoPE */
            TRY(rmsnorm(g, g->q, g->q, ly->q_norm, N * H, D));
            TRY(rmsnorm(g, krow, krow, ly->k_norm, N * KVH, D));
        }
        TRY(rope(g, g->q, N, H));
        TRY(rope(g, krow, N, KVH));
        TRY(g->bf16 ? ops->attention_cached_bf16(g->att, g->q, (dp_bf16 *)kc, (dp_bf16 *)vc, N,
                                                 T0 + N, H, KVH, D)
                    : ops->attention_cached(g->att, g->q, (float *)kc, (float *)vc, N, T0 + N, H,
                                            KVH, D));
        TRY(linear(g, &ly->lin[DP_O], g->proj, C, g->att, N, false));
        TRY(residual(g, g->x, g->proj, (size_t)N * C));
        /* MLP: down(silu(gate(x)) * up(x)) */
        TRY(rmsnorm(g, g->xn, g->x, ly->ffn_norm, N, C));
        TRY(linear(g, &ly->lin[DP_GATE], g->gate, F, g->xn, N, false));
        TRY(linear(g, &ly->lin[DP_UP], g->up, F, g->xn, N, false));
        TRY(g->bf16 ? ops->swiglu_forward_bf16(g->gate, g->gate, g->up, (size_t)N * F)
                    : ops->swiglu_forward(g->gate, g->gate, g->up, (size_t)N * F));
        TRY(linear(g, &ly->lin[DP_DOWN], g->proj, C, g->gate, N, false));
        TRY(residual(g, g->x, g->proj, (size_t)N * C));
    }
    /* final norm + lm_head (fp32 logits): every row when asked, else only the last one */
    if (all_logits || device_logits) { /* device_logits: left in g->dlogits (N, V) */
        TRY(rmsnorm(g, g->xn, g->x, g->final_norm, N, C));
        TRY(linear(g, &g->lm_head, g->dlogits, V, g->xn, N, true));
        if (!all_logits) {
            g->T = T0 + N;
            return 0;
        }
        TRY(ops->download(all_logits, g->dlogits, (size_t)N * V * 4));
        memcpy(g->logits, all_logits + (size_t)(N - 1) * V, (size_t)V * sizeof(float));
    } else {
        TRY(rmsnorm(g, g->xn, (char *)g->x + (size_t)(N - 1) * C * es, g->final_norm, 1, C));
        TRY(linear(g, &g->lm_head, g->dlogits, V, g->xn, 1, true));
        TRY(ops->download(g->logits, g->dlogits, (size_t)V * 4));
    }
    g->T = T0 + N;
    return 0;
}

static int check_tokens(dp_gpu_forward *g, const int32_t *tokens, int N) {
    const dp_model_config *c = &g->model->cfg;
    if (N <= 0) return dp_fail("GPU forward: no tokens to process");
    if (N > g->max_T - g->T)
        return dp_fail("GPU forward: %d new tokens after %d cached ones exceed the context of %d "
                       "positions; shorten the input or raise --max-context",
                       N, g->T, g->max_T);
    for (int i = 0; i < N; i++)
        if (tokens[i] < 0 || tokens[i] >= c->V)
            return dp_fail("GPU forward: token id %d at position %d is outside the vocabulary "
                           "[0, %d)",
                           tokens[i], i, c->V);
    return 0;
}

int dp_gpu_forward_tokens(dp_gpu_forward *g, const int32_t *tokens, int N, float *all_logits) {
    const dp_model_config *c = &g->model->cfg;
    if (check_tokens(g, tokens, N)) return -1;
    int T_start = g->T;
    for (int done = 0; done < N;) {
        int n = N - done < g->chunk ? N - done : g->chunk;
        if (forward_chunk(g, tokens + done, n, all_logits ? all_logits + (size_t)done * c->V : NULL,
                          false)) {
            g->T = T_start; /* nothing appended on failure */
            return -1;
        }
        done += n;
    }
    return g->ops->synchronize();
}

int dp_gpu_forward_loss(dp_gpu_forward *g, const int32_t *tokens, const int32_t *targets, int N,
                        double *loss_sum, int64_t *ntrained) {
    const dp_gpu_ops *ops = g->ops;
    const int V = g->model->cfg.V;
    *loss_sum = 0, *ntrained = 0;
    if (check_tokens(g, tokens, N)) return -1;
    float *losses = dp_malloc((size_t)g->chunk * sizeof(float));
    if (!losses) return -1;
    int T_start = g->T, rc = 0;
    for (int done = 0; done < N && !rc;) {
        int n = N - done < g->chunk ? N - done : g->chunk;
        rc = forward_chunk(g, tokens + done, n, NULL, true) ||
             ops->upload(g->targets, targets + done, (size_t)n * 4) ||
             ops->cross_entropy_forward_backward(g->losses, NULL, g->dlogits, g->targets, n, V,
                                                 0.0f) ||
             ops->download(losses, g->losses, (size_t)n * 4);
        for (int i = 0; i < n && !rc; i++)
            if (targets[done + i] >= 0) *loss_sum += losses[i], ++*ntrained;
        done += n;
    }
    free(losses);
    if (rc) g->T = T_start;
    return rc ? -1 : ops->synchronize();
}
