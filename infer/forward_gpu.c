/* The whole-model forward pass through the backend table (dp_gpu_ops): the same steps as
 * infer/forward.c, with the weights, KV cache and activations in device memory carved from one
 * allocation per category; one layout function both sizes the table and assigns the pointers. */
#include "infer/forward_gpu.h"

#include "data/base/error.h"
#include "infer/gpu_model.h"

#include <stdlib.h>
#include <string.h>

const char *const dp_gf_category_names[DP_GF_N_CATEGORIES] = {
    "weights (NF4)",        "weights (dense, norms, biases)", "KV cache",
    "activations + logits", "NF4 dequantize scratch",         "LoRA A and B (fp32)"};

struct dp_gpu_forward {
    const dp_gpu_ops *ops;
    const dp_model *model; /* borrowed */
    const dp_lora *lora;   /* borrowed, or NULL */
    bool bf16;
    int max_T, chunk, T;
    dp_gf_plan plan;
    void *block[DP_GF_N_CATEGORIES]; /* one device allocation per category */
    dp_gpu_model gm;                 /* weights, blas handle, dequantize and bias scratch */
    void *k_cache, *v_cache;         /* each (L, max_T, KVH, D) */
    void *x, *xn, *proj;             /* (chunk, C) */
    void *q, *att;                   /* (chunk, H, D) */
    void *gate, *up;                 /* (chunk, F) */
    float *dlogits;                  /* (chunk, V) fp32 */
    int32_t *pos, *tokens;           /* (chunk) */
    float *xa;                       /* (chunk, r) LoRA x A^T */
    float *losses;                   /* (chunk) per-row cross-entropy */
    int32_t *targets;                /* (chunk) */
    dp_gpu_lora_scratch ls;          /* lx, ly (chunk, widest): fp32 copies for LoRA on bf16 */
    float *logits;                   /* host (V): the last position's logits */
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

typedef struct {
    char *base[DP_GF_N_CATEGORIES]; /* NULL: only count */
    uint64_t off[DP_GF_N_CATEGORIES];
} carver;

static void *carve(carver *cv, dp_gf_category cat, uint64_t bytes) {
    void *p = cv->base[cat] ? cv->base[cat] + cv->off[cat] : NULL;
    cv->off[cat] += dp_gpu_align(bytes);
    return p;
}

/* the weights' kinds filed under this run's categories */
static void *carve_weight(void *ctx, dp_gw_kind kind, uint64_t bytes) {
    static const dp_gf_category cat[DP_GW_N_KINDS] = {
        [DP_GW_NF4_MAPS] = DP_GF_WEIGHTS_NF4,     [DP_GW_NF4_BLOCK] = DP_GF_WEIGHTS_NF4,
        [DP_GW_NF4_HEAD] = DP_GF_WEIGHTS_NF4,     [DP_GW_EMBED] = DP_GF_WEIGHTS_DENSE,
        [DP_GW_DENSE_HEAD] = DP_GF_WEIGHTS_DENSE, [DP_GW_DENSE_BLOCK] = DP_GF_WEIGHTS_DENSE,
        [DP_GW_NORMS] = DP_GF_WEIGHTS_DENSE,      [DP_GW_ROPE] = DP_GF_ACTIVATIONS};
    return carve(ctx, cat[kind], bytes);
}

/* Assigns every device pointer of g (or, with cv->base all NULL, only sizes them). */
static void layout(dp_gpu_forward *g, carver *cv) {
    const dp_model *m = g->model;
    const dp_model_config *c = &m->cfg;
    const size_t es = g->bf16 ? 2 : 4, n = (size_t)g->chunk;
    const size_t qd = (size_t)c->H * c->D, kvd = (size_t)c->KVH * c->D;
    uint64_t dequant = 0, max_bias = 0;
    dp_gpu_model_layout(&g->gm, carve_weight, cv, &dequant, &max_bias);
    for (int l = 0; g->lora && l < c->L; l++)
        for (int i = 0; i < DP_N_LINEAR; i++) {
            const dp_lora_module *lm = dp_lora_mod(g->lora, l, i);
            dp_gpu_linear *d = &g->gm.layers[l].lin[i];
            d->A = lm->A ? carve(cv, DP_GF_LORA, (uint64_t)g->lora->cfg.r * d->in * 4) : NULL;
            d->B = lm->A ? carve(cv, DP_GF_LORA, (uint64_t)d->out * g->lora->cfg.r * 4) : NULL;
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
    g->gm.tmp = g->bf16 && max_bias ? carve(cv, DP_GF_ACTIVATIONS, n * max_bias * 4) : NULL;
    g->dlogits = carve(cv, DP_GF_ACTIVATIONS, n * c->V * 4);
    g->pos = carve(cv, DP_GF_ACTIVATIONS, n * 4);
    g->tokens = carve(cv, DP_GF_ACTIVATIONS, n * 4);
    g->targets = carve(cv, DP_GF_ACTIVATIONS, n * 4);
    g->losses = carve(cv, DP_GF_ACTIVATIONS, n * 4);
    g->gm.dequant = dequant ? carve(cv, DP_GF_DEQUANT, dequant) : NULL;
    g->xa = NULL;
    memset(&g->ls, 0, sizeof g->ls);
    if (g->lora) {
        uint64_t wide = (uint64_t)(c->F > c->C ? c->F : c->C);
        if ((uint64_t)qd > wide) wide = qd;
        g->xa = carve(cv, DP_GF_ACTIVATIONS, n * g->lora->cfg.r * 4);
        if (g->bf16) {
            g->ls.lx = carve(cv, DP_GF_ACTIVATIONS, n * wide * 4);
            g->ls.ly = carve(cv, DP_GF_ACTIVATIONS, n * wide * 4);
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
    g.gm.model = m, g.gm.bf16 = bf16;
    g.gm.layers = dp_calloc((size_t)m->cfg.L, sizeof *g.gm.layers);
    if (!g.gm.layers) return -1;
    carver cv = {0};
    layout(&g, &cv);
    free(g.gm.layers);
    for (int i = 0; i < DP_GF_N_CATEGORIES; i++) {
        plan->bytes[i] = cv.off[i];
        plan->total += cv.off[i];
    }
    return 0;
}

/* the frozen weights, then the adapter's A and B (fp32, as on the host) */
static int upload_weights(dp_gpu_forward *g) {
    if (dp_gpu_model_upload(&g->gm)) return -1;
    for (int l = 0; g->lora && l < g->model->cfg.L; l++)
        for (int i = 0; i < DP_N_LINEAR; i++) {
            const dp_gpu_linear *d = &g->gm.layers[l].lin[i];
            if (!d->A) continue;
            const dp_lora_module *lm = dp_lora_mod(g->lora, l, i);
            size_t r = (size_t)g->lora->cfg.r;
            if (g->ops->upload(d->A, lm->A, r * lm->in * 4) ||
                g->ops->upload(d->B, lm->B, (size_t)lm->out * r * 4))
                return -1;
        }
    return 0;
}

void dp_gpu_forward_free(dp_gpu_forward *g) {
    if (!g) return;
    if (g->ops) {
        for (int i = 0; i < DP_GF_N_CATEGORIES; i++)
            if (g->block[i]) g->ops->dev_free(g->block[i]);
        if (g->gm.blas) g->ops->blas_destroy(g->gm.blas);
    }
    free(g->gm.layers);
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
    g->gm.ops = ops, g->gm.model = m, g->gm.bf16 = bf16;
    g->gm.layers = dp_calloc((size_t)m->cfg.L, sizeof *g->gm.layers);
    g->logits = dp_calloc((size_t)m->cfg.V, sizeof(float));
    if (!g->gm.layers || !g->logits) goto fail;
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
    if (ops->blas_create(&g->gm.blas) || upload_weights(g)) goto fail;
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

/* logits (rows, V) fp32 in g->dlogits = xn W_head^T (the lm_head is never adapted) */
static int head(dp_gpu_forward *g, const void *xn, int rows) {
    return dp_gpu_linear_forward(&g->gm, &g->gm.lm_head, g->dlogits, g->model->cfg.V, xn, rows,
                                 true);
}

/* One step over N <= chunk rows at positions [g->T, g->T + N): the shared block
 * (dp_gpu_block_forward) per layer over one set of buffers, k and v written straight into the
 * cache rows of these positions; then the final norm and the lm_head. */
static int forward_chunk(dp_gpu_forward *g, const int32_t *tokens, int N, float *all_logits,
                         bool device_logits) {
    const dp_gpu_ops *ops = g->ops;
    const dp_model_config *c = &g->model->cfg;
    const int C = c->C, V = c->V, T0 = g->T;
    const size_t es = g->bf16 ? 2 : 4, kvd = (size_t)c->KVH * c->D;
    int32_t *pos = dp_malloc((size_t)N * sizeof(int32_t));
    if (!pos) return -1;
    for (int i = 0; i < N; i++) pos[i] = T0 + i;
    int rc = ops->upload(g->pos, pos, (size_t)N * 4);
    free(pos);
    TRY(rc);
    TRY(ops->upload(g->tokens, tokens, (size_t)N * 4));
    TRY(g->bf16 ? ops->embedding_forward_bf16(g->x, g->tokens, g->gm.embed, N, C, V)
                : ops->embedding_forward(g->x, g->tokens, g->gm.embed, N, C, V));
    /* nothing is kept for a backward: one buffer per role, reused by every layer */
    dp_gpu_block_acts acts = {.h1 = g->xn, .h2 = g->xn, .x2 = g->proj, .q = g->q, .qraw = g->q,
                              .att = g->att, .g = g->gate, .u = g->up, .a = g->gate};
    for (int i = 0; i < DP_N_LINEAR; i++) acts.xa[i] = g->xa;
    dp_gpu_block_step st = {.N = N, .pos = g->pos, .T0 = T0, .ls = &g->ls};
    if (g->lora) st.r = g->lora->cfg.r, st.scale = g->lora->scale;
    for (int l = 0; l < c->L; l++) {
        char *kc = (char *)g->k_cache + (size_t)l * g->max_T * kvd * es; // (max_T, KVH, D)
        char *vc = (char *)g->v_cache + (size_t)l * g->max_T * kvd * es; // (max_T, KVH, D)
        acts.k = acts.kraw = kc + (size_t)T0 * kvd * es;
        acts.v = vc + (size_t)T0 * kvd * es;
        st.k_cache = kc, st.v_cache = vc;
        TRY(dp_gpu_block_forward(&g->gm, l, g->x, g->x, &acts, &st));
    }
    /* final norm + lm_head (fp32 logits): every row when asked, else only the last one */
    if (all_logits || device_logits) { /* device_logits: left in g->dlogits (N, V) */
        TRY(dp_gpu_rmsnorm(&g->gm, g->xn, NULL, g->x, g->gm.final_norm, N, C));
        TRY(head(g, g->xn, N));
        if (!all_logits) {
            g->T = T0 + N;
            return 0;
        }
        TRY(ops->download(all_logits, g->dlogits, (size_t)N * V * 4));
        memcpy(g->logits, all_logits + (size_t)(N - 1) * V, (size_t)V * sizeof(float));
    } else {
        TRY(dp_gpu_rmsnorm(&g->gm, g->xn, NULL, (char *)g->x + (size_t)(N - 1) * C * es,
                           g->gm.final_norm, 1, C));
        TRY(head(g, g->xn, 1));
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
