/* The whole-model forward pass through the backend table (dp_gpu_ops): the same steps as
 * infer/forward.c, with the weights, KV caches and activations in device memory carved from one
 * allocation per category; one layout function both sizes the table and assigns the pointers.
 * Several sequences (slots, each its own cache) and adapters share the one upload of the weights;
 * a batched decode step advances several sequences, each row through its own adapter. */
#include "infer/forward_gpu.h"

#include "data/base/error.h"
#include "infer/gpu_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const dp_gf_category_names[DP_GF_N_CATEGORIES] = {
    "weights (NF4)",        "weights (dense, norms, biases)", "KV cache",
    "activations + logits", "NF4 dequantize scratch",         "LoRA A and B (fp32)"};

struct dp_gpu_forward {
    const dp_gpu_ops *ops;
    const dp_model *model; /* borrowed */
    const dp_lora **lora;  /* (n_adapters) borrowed; a NULL entry: the base */
    int n_adapters, slots;
    bool bf16;
    int max_T, chunk;
    int *T; /* (slots) positions in each sequence's cache */
    dp_gf_plan plan;
    void *block[DP_GF_N_CATEGORIES]; /* one device allocation per category */
    dp_gpu_model gm;                 /* weights, blas handle, dequantize and bias scratch */
    dp_gpu_adapter *ad;              /* (n_adapters) device A and B; r 0 for a NULL entry */
    float **ad_ptrs;                 /* (n_adapters, 2, L * DP_N_LINEAR): ad's A and B tables */
    void *k_cache, *v_cache;         /* each (slots, L, max_T, KVH, D) */
    void *x, *xn, *proj;             /* (chunk, C) */
    void *q, *att;                   /* (chunk, H, D) */
    void *k, *v;                     /* (chunk, KVH, D) the step's, before they go to the caches */
    void *gate, *up;                 /* (chunk, F) */
    float *dlogits;                  /* (chunk, V) fp32 */
    int32_t *pos, *tokens;           /* (chunk) */
    float *xa;                       /* (chunk, largest r) LoRA x A^T */
    float *losses;                   /* (chunk) per-row cross-entropy */
    int32_t *targets;                /* (chunk) */
    dp_gpu_lora_scratch ls;          /* lx, ly (chunk, widest): fp32 copies for LoRA on bf16 */
    /* host: the step's rows (chunk each) */
    int32_t *hpos, *htokens;
    int *order;                /* decode: the caller's row of each step row */
    int *seq_slot;             /* the slot of each of the step's sequences */
    dp_gpu_kv_seq *kv;         /* the step's sequences */
    dp_gpu_lora_group *groups; /* the step's adapted rows */
    float *logits;             /* host (V): the last position's of dp_gpu_forward_tokens */
};

static int check_slot(const dp_gpu_forward *g, int slot) {
    if (slot >= 0 && slot < g->slots) return 0;
    return dp_fail("GPU forward: slot %d does not exist (this run has slots 0 to %d)", slot,
                   g->slots - 1);
}
static int check_adapter(const dp_gpu_forward *g, int adapter) {
    if (adapter >= -1 && adapter < g->n_adapters) return 0;
    if (!g->n_adapters)
        return dp_fail("GPU forward: adapter %d does not exist (this run has only the base "
                       "model, -1)",
                       adapter);
    return dp_fail("GPU forward: adapter %d does not exist (this run has adapters 0 to %d, and -1 "
                   "for the base model)",
                   adapter, g->n_adapters - 1);
}
/* what the functions without a slot go through */
static int default_adapter(const dp_gpu_forward *g) {
    return g->n_adapters ? 0 : -1;
}

const float *dp_gpu_forward_logits(const dp_gpu_forward *g) {
    return g->logits;
}
int dp_gpu_forward_slot_positions(const dp_gpu_forward *g, int slot) {
    return check_slot(g, slot) ? -1 : g->T[slot];
}
int dp_gpu_forward_positions(const dp_gpu_forward *g) {
    return g->T[0];
}
int dp_gpu_forward_capacity(const dp_gpu_forward *g) {
    return g->max_T;
}
void dp_gpu_forward_slot_truncate(dp_gpu_forward *g, int slot, int T) {
    if (check_slot(g, slot)) return;
    if (T < 0) T = 0;
    if (T < g->T[slot]) g->T[slot] = T;
}
void dp_gpu_forward_truncate(dp_gpu_forward *g, int T) {
    dp_gpu_forward_slot_truncate(g, 0, T);
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
    int max_r = 0;
    dp_gpu_model_layout(&g->gm, carve_weight, cv, &dequant, &max_bias);
    for (int a = 0; a < g->n_adapters; a++) {
        const dp_lora *lora = g->lora[a];
        dp_gpu_adapter *ad = &g->ad[a];
        ad->r = lora ? lora->cfg.r : 0, ad->scale = lora ? lora->scale : 0.0f;
        if (ad->r > max_r) max_r = ad->r;
        for (int l = 0; lora && l < c->L; l++)
            for (int i = 0; i < DP_N_LINEAR; i++) {
                const dp_lora_module *lm = dp_lora_mod(lora, l, i);
                const dp_gpu_linear *d = &g->gm.layers[l].lin[i];
                size_t k = (size_t)l * DP_N_LINEAR + (size_t)i;
                ad->A[k] = lm->A ? carve(cv, DP_GF_LORA, (uint64_t)ad->r * d->in * 4) : NULL;
                ad->B[k] = lm->A ? carve(cv, DP_GF_LORA, (uint64_t)d->out * ad->r * 4) : NULL;
            }
    }
    uint64_t kv = (uint64_t)g->slots * c->L * g->max_T * kvd * es;
    g->k_cache = carve(cv, DP_GF_KV_CACHE, kv);
    g->v_cache = carve(cv, DP_GF_KV_CACHE, kv);
    g->x = carve(cv, DP_GF_ACTIVATIONS, n * c->C * es);
    g->xn = carve(cv, DP_GF_ACTIVATIONS, n * c->C * es);
    g->proj = carve(cv, DP_GF_ACTIVATIONS, n * c->C * es);
    g->q = carve(cv, DP_GF_ACTIVATIONS, n * qd * es);
    g->att = carve(cv, DP_GF_ACTIVATIONS, n * qd * es);
    g->k = carve(cv, DP_GF_ACTIVATIONS, n * kvd * es);
    g->v = carve(cv, DP_GF_ACTIVATIONS, n * kvd * es);
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
    if (max_r) {
        uint64_t wide = (uint64_t)(c->F > c->C ? c->F : c->C);
        if ((uint64_t)qd > wide) wide = qd;
        g->xa = carve(cv, DP_GF_ACTIVATIONS, n * max_r * 4);
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

/* adapter a fits the model: its layers, rank and every adapted module's shape */
static int check_lora(const dp_model *m, const dp_lora *lora, int a) {
    if (lora->L != m->cfg.L || lora->cfg.r <= 0)
        return dp_fail("GPU forward: LoRA adapter %d has %d layers (rank %d), the model %d", a,
                       lora->L, lora->cfg.r, m->cfg.L);
    for (int l = 0; l < m->cfg.L; l++)
        for (int i = 0; i < DP_N_LINEAR; i++) {
            const dp_lora_module *lm = dp_lora_mod(lora, l, i);
            const dp_linear *lin = &m->layers[l].lin[i];
            if (lm->A && (lm->out != lin->out || lm->in != lin->in))
                return dp_fail("GPU forward: LoRA adapter %d, layer %d %s is (%d, %d), the "
                               "model's (%d, %d)",
                               a, l, dp_linear_names[i], lm->out, lm->in, lin->out, lin->in);
        }
    return 0;
}

static void defaults(int *max_T, int *chunk) {
    if (*max_T <= 0) *max_T = 2048;
    if (*chunk <= 0) *chunk = 256;
    if (*chunk > *max_T) *chunk = *max_T;
}

static void free_tables(dp_gpu_forward *g) {
    free(g->lora), free(g->T), free(g->gm.layers), free(g->ad), free(g->ad_ptrs);
    free(g->hpos), free(g->htokens), free(g->order), free(g->seq_slot), free(g->kv);
    free(g->groups), free(g->logits);
}

/* g's shape and host tables, after checking the arguments (no device memory yet); what
 * is allocated is left for free_tables on failure too */
static int init(dp_gpu_forward *g, const dp_model *m, const dp_lora *const *adapters,
                int n_adapters, int slots, int max_T, int chunk, bool bf16) {
    defaults(&max_T, &chunk);
    if (check_shape(m, max_T, chunk)) return -1;
    if (slots < 1) return dp_fail("GPU forward: %d slots (at least 1 sequence is needed)", slots);
    if (n_adapters < 0 || (n_adapters && !adapters))
        return dp_fail("GPU forward: %d adapters%s (0 or more, each a LoRA or NULL for the base)",
                       n_adapters, adapters ? "" : " but no list of them");
    for (int a = 0; a < n_adapters; a++)
        if (adapters[a] && check_lora(m, adapters[a], a)) return -1;
    g->model = m, g->n_adapters = n_adapters, g->slots = slots;
    g->bf16 = bf16, g->max_T = max_T, g->chunk = chunk;
    g->gm.model = m, g->gm.bf16 = bf16;
    const size_t nmod = (size_t)m->cfg.L * DP_N_LINEAR, n = (size_t)chunk;
    g->lora = dp_calloc((size_t)n_adapters, sizeof *g->lora);
    g->T = dp_calloc((size_t)slots, sizeof *g->T);
    g->gm.layers = dp_calloc((size_t)m->cfg.L, sizeof *g->gm.layers);
    g->ad = dp_calloc((size_t)n_adapters, sizeof *g->ad);
    g->ad_ptrs = dp_calloc((size_t)n_adapters * 2 * nmod, sizeof *g->ad_ptrs);
    g->hpos = dp_calloc(n, sizeof *g->hpos);
    g->htokens = dp_calloc(n, sizeof *g->htokens);
    g->order = dp_calloc(n, sizeof *g->order);
    g->seq_slot = dp_calloc(n, sizeof *g->seq_slot);
    g->kv = dp_calloc(n, sizeof *g->kv);
    g->groups = dp_calloc(n, sizeof *g->groups);
    g->logits = dp_calloc((size_t)m->cfg.V, sizeof *g->logits);
    if (!g->lora || !g->T || !g->gm.layers || !g->ad || !g->ad_ptrs || !g->hpos || !g->htokens ||
        !g->order || !g->seq_slot || !g->kv || !g->groups || !g->logits)
        return -1;
    for (int a = 0; a < n_adapters; a++) {
        g->lora[a] = adapters[a];
        g->ad[a].A = g->ad_ptrs + (size_t)(2 * a) * nmod;
        g->ad[a].B = g->ad_ptrs + (size_t)(2 * a + 1) * nmod;
    }
    return 0;
}

/* g->plan from the layout, counted */
static void count(dp_gpu_forward *g) {
    carver cv = {0};
    layout(g, &cv);
    memset(&g->plan, 0, sizeof g->plan);
    for (int i = 0; i < DP_GF_N_CATEGORIES; i++) {
        g->plan.bytes[i] = cv.off[i];
        g->plan.total += cv.off[i];
    }
}

int dp_gpu_forward_plan_slots(dp_gf_plan *plan, const dp_model *m, const dp_lora *const *adapters,
                              int n_adapters, int slots, int max_T, int chunk, bool bf16) {
    memset(plan, 0, sizeof *plan);
    dp_gpu_forward g = {0};
    int rc = init(&g, m, adapters, n_adapters, slots, max_T, chunk, bf16);
    if (!rc) {
        count(&g);
        *plan = g.plan;
    }
    free_tables(&g);
    return rc;
}

int dp_gpu_forward_plan(dp_gf_plan *plan, const dp_model *m, const dp_lora *lora, int max_T,
                        int chunk, bool bf16) {
    return dp_gpu_forward_plan_slots(plan, m, &lora, 1, 1, max_T, chunk, bf16);
}

/* the frozen weights, then every adapter's A and B (fp32, as on the host) */
static int upload_weights(dp_gpu_forward *g) {
    if (dp_gpu_model_upload(&g->gm)) return -1;
    for (int a = 0; a < g->n_adapters; a++)
        for (int l = 0; g->lora[a] && l < g->model->cfg.L; l++)
            for (int i = 0; i < DP_N_LINEAR; i++) {
                const dp_gpu_adapter *ad = &g->ad[a];
                size_t k = (size_t)l * DP_N_LINEAR + (size_t)i, r = (size_t)ad->r;
                if (!ad->A[k]) continue;
                const dp_lora_module *lm = dp_lora_mod(g->lora[a], l, i);
                if (g->ops->upload(ad->A[k], lm->A, r * lm->in * 4) ||
                    g->ops->upload(ad->B[k], lm->B, (size_t)lm->out * r * 4))
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
    free_tables(g);
    free(g);
}

int dp_gpu_forward_create_slots(dp_gpu_forward **out, const dp_gpu_ops *ops, const dp_model *m,
                                const dp_lora *const *adapters, int n_adapters, int slots,
                                int max_T, int chunk, bool bf16) {
    *out = NULL;
    dp_gpu_forward *g = dp_calloc(1, sizeof *g);
    if (!g) return -1;
    if (init(g, m, adapters, n_adapters, slots, max_T, chunk, bf16)) goto fail;
    count(g);
    g->ops = ops, g->gm.ops = ops;
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

int dp_gpu_forward_create(dp_gpu_forward **out, const dp_gpu_ops *ops, const dp_model *m,
                          const dp_lora *lora, int max_T, int chunk, bool bf16) {
    return dp_gpu_forward_create_slots(out, ops, m, &lora, 1, 1, max_T, chunk, bf16);
}

#define TRY(call)                                                                                  \
    do {                                                                                           \
        if ((call) != 0) return -1;                                                                \
    } while (0)

/* logits (rows, V) fp32 in g->dlogits = final_norm(x rows) W_head^T (the lm_head is never
 * adapted); x: rows of (C) in the activation dtype */
static int head(dp_gpu_forward *g, const void *x, int rows) {
    TRY(dp_gpu_rmsnorm(&g->gm, g->xn, NULL, x, g->gm.final_norm, rows, g->model->cfg.C));
    return dp_gpu_linear_forward(&g->gm, &g->gm.lm_head, g->dlogits, g->model->cfg.V, g->xn, rows,
                                 true);
}

/* this layer's cache (max_T, KVH, D) of sequence `slot`, in k's or v's (slots, L, max_T, KVH, D) */
static void *layer_cache(const dp_gpu_forward *g, void *cache, int slot, int l) {
    const dp_model_config *c = &g->model->cfg;
    const size_t es = g->bf16 ? 2 : 4, kvd = (size_t)c->KVH * c->D;
    return (char *)cache + ((size_t)slot * c->L + (size_t)l) * g->max_T * kvd * es;
}

/* rows [row0, row0 + n) of the step through adapter `adapter`; the base's rows are in no group */
static void add_group(dp_gpu_forward *g, int *ngroups, int adapter, int row0, int n) {
    if (adapter >= 0 && g->lora[adapter])
        g->groups[(*ngroups)++] = (dp_gpu_lora_group){&g->ad[adapter], row0, n};
}

/* One step over N <= chunk rows: the nseq sequences of g->kv (whose slots are g->seq_slot) and
 * the ngroups adapted row ranges of g->groups through the shared block (dp_gpu_block_forward)
 * per layer over one set of buffers; the last hidden states (N, C) are left in g->x. */
static int run_layers(dp_gpu_forward *g, const int32_t *tokens, int N, int nseq, int ngroups) {
    const dp_gpu_ops *ops = g->ops;
    const dp_model_config *c = &g->model->cfg;
    for (int j = 0; j < nseq; j++)
        for (int i = 0; i < g->kv[j].n; i++) g->hpos[g->kv[j].row0 + i] = g->kv[j].T0 + i;
    TRY(ops->upload(g->pos, g->hpos, (size_t)N * 4));
    TRY(ops->upload(g->tokens, tokens, (size_t)N * 4));
    TRY(g->bf16 ? ops->embedding_forward_bf16(g->x, g->tokens, g->gm.embed, N, c->C, c->V)
                : ops->embedding_forward(g->x, g->tokens, g->gm.embed, N, c->C, c->V));
    /* nothing is kept for a backward: one buffer per role, reused by every layer */
    dp_gpu_block_acts acts = {.h1 = g->xn,
                              .h2 = g->xn,
                              .x2 = g->proj,
                              .q = g->q,
                              .qraw = g->q,
                              .k = g->k,
                              .kraw = g->k,
                              .v = g->v,
                              .att = g->att,
                              .g = g->gate,
                              .u = g->up,
                              .a = g->gate};
    for (int i = 0; i < DP_N_LINEAR; i++) acts.xa[i] = g->xa;
    dp_gpu_block_step st = {.N = N,
                            .pos = g->pos,
                            .kv = g->kv,
                            .nkv = nseq,
                            .groups = g->groups,
                            .ngroups = ngroups,
                            .ls = &g->ls};
    for (int l = 0; l < c->L; l++) {
        for (int j = 0; j < nseq; j++) {
            g->kv[j].k_cache = layer_cache(g, g->k_cache, g->seq_slot[j], l);
            g->kv[j].v_cache = layer_cache(g, g->v_cache, g->seq_slot[j], l);
        }
        TRY(dp_gpu_block_forward(&g->gm, l, g->x, g->x, &acts, &st));
    }
    return 0;
}

/* Appends N <= chunk tokens to sequence `slot` through adapter `adapter`. Logits (fp32), each
 * when asked: every row's into all_logits (host (N, V)) or left in g->dlogits (device_logits);
 * the last row's into last (host (V)). */
static int forward_chunk(dp_gpu_forward *g, int slot, int adapter, const int32_t *tokens, int N,
                         float *all_logits, bool device_logits, float *last) {
    const int V = g->model->cfg.V;
    const size_t es = g->bf16 ? 2 : 4;
    int ngroups = 0;
    g->kv[0] = (dp_gpu_kv_seq){.T0 = g->T[slot], .row0 = 0, .n = N};
    g->seq_slot[0] = slot;
    add_group(g, &ngroups, adapter, 0, N);
    TRY(run_layers(g, tokens, N, 1, ngroups));
    if (all_logits || device_logits) {
        TRY(head(g, g->x, N));
        if (all_logits) TRY(g->ops->download(all_logits, g->dlogits, (size_t)N * V * 4));
        if (all_logits && last)
            memcpy(last, all_logits + (size_t)(N - 1) * V, (size_t)V * sizeof(float));
        else if (last)
            TRY(g->ops->download(last, g->dlogits + (size_t)(N - 1) * V, (size_t)V * 4));
    } else if (last) {
        TRY(head(g, (char *)g->x + (size_t)(N - 1) * g->model->cfg.C * es, 1));
        TRY(g->ops->download(last, g->dlogits, (size_t)V * 4));
    }
    g->T[slot] += N;
    return 0;
}

static int check_tokens(dp_gpu_forward *g, int slot, const int32_t *tokens, int N) {
    const dp_model_config *c = &g->model->cfg;
    char where[40] = ""; /* a run of one sequence does not speak of slots */
    if (g->slots > 1) snprintf(where, sizeof where, " (slot %d)", slot);
    if (N <= 0) return dp_fail("GPU forward: no tokens to process%s", where);
    if (N > g->max_T - g->T[slot])
        return dp_fail("GPU forward: %d new tokens after %d cached ones exceed the context of %d "
                       "positions%s; shorten the input or raise --max-context",
                       N, g->T[slot], g->max_T, where);
    for (int i = 0; i < N; i++)
        if (tokens[i] < 0 || tokens[i] >= c->V)
            return dp_fail("GPU forward: token id %d at position %d is outside the vocabulary "
                           "[0, %d)%s",
                           tokens[i], i, c->V, where);
    return 0;
}

/* Appends N tokens to `slot` a chunk at a time; logits as forward_chunk's, last only after the
 * last chunk. Nothing appended on failure. */
static int forward_tokens(dp_gpu_forward *g, int slot, int adapter, const int32_t *tokens, int N,
                          float *all_logits, float *last) {
    const int V = g->model->cfg.V;
    if (check_slot(g, slot) || check_adapter(g, adapter) || check_tokens(g, slot, tokens, N))
        return -1;
    int T_start = g->T[slot];
    for (int done = 0; done < N;) {
        int n = N - done < g->chunk ? N - done : g->chunk;
        if (forward_chunk(g, slot, adapter, tokens + done, n,
                          all_logits ? all_logits + (size_t)done * V : NULL, false,
                          done + n == N ? last : NULL)) {
            g->T[slot] = T_start;
            return -1;
        }
        done += n;
    }
    return g->ops->synchronize();
}

int dp_gpu_forward_tokens(dp_gpu_forward *g, const int32_t *tokens, int N, float *all_logits) {
    return forward_tokens(g, 0, default_adapter(g), tokens, N, all_logits, g->logits);
}

int dp_gpu_forward_slot_tokens(dp_gpu_forward *g, int slot, int adapter, const int32_t *tokens,
                               int N, float *logits) {
    return forward_tokens(g, slot, adapter, tokens, N, NULL, logits);
}

/* the decode step's rows, each checked: slots distinct and not full, adapters and tokens valid */
static int check_decode(dp_gpu_forward *g, int n, const int *slots, const int *adapters,
                        const int32_t *tokens) {
    if (n <= 0 || n > g->chunk)
        return dp_fail("GPU forward: a decode step of %d rows (1 to the chunk of %d)", n, g->chunk);
    for (int i = 0; i < n; i++) {
        if (check_slot(g, slots[i]) || check_adapter(g, adapters[i]))
            return dp_fail_context("decode row %d", i);
        if (g->T[slots[i]] >= g->max_T)
            return dp_fail("GPU forward: decode row %d: slot %d is full (%d positions); truncate "
                           "it or raise --max-context",
                           i, slots[i], g->max_T);
        if (check_tokens(g, slots[i], &tokens[i], 1)) return dp_fail_context("decode row %d", i);
        for (int j = 0; j < i; j++)
            if (slots[j] == slots[i])
                return dp_fail("GPU forward: decode rows %d and %d both append to slot %d", j, i,
                               slots[i]);
    }
    return 0;
}

int dp_gpu_forward_decode(dp_gpu_forward *g, int n, const int *slots, const int *adapters,
                          const int32_t *tokens, float *logits) {
    const int V = g->model->cfg.V;
    if (check_decode(g, n, slots, adapters, tokens)) return -1;
    /* the step's rows sorted by adapter (stable): each adapter's rows one group, one LoRA GEMM
     * pair per adapter and module */
    for (int i = 0; i < n; i++) {
        int j = i, row = i;
        for (; j > 0 && adapters[g->order[j - 1]] > adapters[row]; j--)
            g->order[j] = g->order[j - 1];
        g->order[j] = row;
    }
    int ngroups = 0;
    for (int i = 0, start = 0; i < n; i++) {
        int row = g->order[i], s = slots[row];
        g->htokens[i] = tokens[row];
        g->kv[i] = (dp_gpu_kv_seq){.T0 = g->T[s], .row0 = i, .n = 1};
        g->seq_slot[i] = s;
        if (i + 1 == n || adapters[g->order[i + 1]] != adapters[row]) {
            add_group(g, &ngroups, adapters[row], start, i + 1 - start);
            start = i + 1;
        }
    }
    TRY(run_layers(g, g->htokens, n, n, ngroups));
    TRY(head(g, g->x, n));
    for (int i = 0; i < n; i++) /* back in the caller's row order */
        TRY(g->ops->download(logits + (size_t)g->order[i] * V, g->dlogits + (size_t)i * V,
                             (size_t)V * 4));
    for (int i = 0; i < n; i++) g->T[slots[i]]++;
    return g->ops->synchronize();
}

int dp_gpu_forward_loss(dp_gpu_forward *g, const int32_t *tokens, const int32_t *targets, int N,
                        double *loss_sum, int64_t *ntrained) {
    const dp_gpu_ops *ops = g->ops;
    const int V = g->model->cfg.V;
    *loss_sum = 0, *ntrained = 0;
    if (check_tokens(g, 0, tokens, N)) return -1;
    float *losses = dp_malloc((size_t)g->chunk * sizeof(float));
    if (!losses) return -1;
    int T_start = g->T[0], rc = 0;
    for (int done = 0; done < N && !rc;) {
        int n = N - done < g->chunk ? N - done : g->chunk;
        rc = forward_chunk(g, 0, default_adapter(g), tokens + done, n, NULL, true, NULL) ||
             ops->upload(g->targets, targets + done, (size_t)n * 4) ||
             ops->cross_entropy_forward_backward(g->losses, NULL, g->dlogits, g->targets, n, V,
                                                 0.0f) ||
             ops->download(losses, g->losses, (size_t)n * 4);
        for (int i = 0; i < n && !rc; i++)
            if (targets[done + i] >= 0) *loss_sum += losses[i], ++*ntrained;
        done += n;
    }
    free(losses);
    if (rc) g->T[0] = T_start;
    return rc ? -1 : ops->synchronize();
}
