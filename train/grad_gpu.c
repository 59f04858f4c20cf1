/* The GPU training step (see grad_gpu.h): the same steps as train/model_grad.c through the
 * backend table, each device buffer carved from an item of the memory plan. */
#include "train/grad_gpu.h"

#include "data/base/error.h"
#include "infer/batch.h"
#include "infer/gpu_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* one layer's activations on the device, (N, ...) rows: every buffer of the shared block kept
 * for the backward (see dp_gpu_block_acts) */
typedef dp_gpu_block_acts gt_acts;

struct dp_gpu_train {
    const dp_gpu_ops *ops;
    const dp_model *model; /* borrowed */
    dp_lora_config lc;
    float scale;
    size_t n;        /* LoRA parameters */
    int maxN, nacts; /* rows per micro-batch; 1 (recomputation) or L sets of activations */
    bool bf16;
    float neftune_alpha; /* > 0: NEFTune noise on the embedded rows of training steps */
    dp_train_shape shape;
    dp_memplan plan;
    void **block;   /* (plan.n) one device allocation per item */
    uint64_t *used; /* (plan.n) bytes carved from each */
    dp_gpu_model gm;
    float *params, *grads, *m, *v; /* (n) flat, the host dp_lora's layout */
    double *acc;                   /* grad-norm sum of squares */
    float **dAl, **dBl;            /* (L * DP_N_LINEAR) gradient pointers per module */
    void *xs;                      /* (L+1, N, C) layer inputs; xs[L] the last output */
    gt_acts *acts;                 /* (nacts) */
    void *dx, *dh, *da, *dg, *du, *datt, *dq, *dk, *dv, *dqr, *dkr; /* gradients */
    dp_gpu_lora_scratch ls;
    void *xf;                             /* (N, C) final-norm output */
    float *rstdf;                         /* (N) */
    int32_t *tokens, *targets, *pos, *cu; /* (N) x3, (N + 1) */
    float *logits;                        /* (chunk, V) fp32 */
    void *dlog16;                         /* (chunk, V) bf16 copy of the logits gradient, or NULL */
    float *losses;                        /* (N) */
    void *workspace;                      /* cuBLAS */
    uint64_t workspace_bytes;
    int chunk;
    float *host_losses; /* (N) */
    bool failed;        /* a carve did not fit its item */
};

const dp_memplan *dp_gpu_train_plan(const dp_gpu_train *t) {
    return &t->plan;
}

#define TRY(call)                                                                                  \
    do {                                                                                           \
        if ((call) != 0) return -1;                                                                \
    } while (0)

/* ------------------------------------------------------------------ carving from the plan */

/* The next `bytes` of plan item (cat, name), 256-aligned. A missing item or one too small marks
 * the run failed (reported by check_used); the returned pointer is then NULL. */
static void *take(dp_gpu_train *t, dp_mem_category cat, const char *name, uint64_t bytes) {
    for (int i = 0; i < t->plan.n; i++) {
        const dp_alloc *a = &t->plan.items[i];
        if (a->category != cat || strcmp(a->name, name) != 0) continue;
        uint64_t b = dp_gpu_align(bytes);
        if (t->used[i] + b > a->bytes) {
            if (!t->failed)
                dp_fail("GPU training: plan item \"%s\" holds %llu bytes, the step needs more "
                        "(train/memplan.c and train/grad_gpu.c disagree)",
                        name, (unsigned long long)a->bytes);
            t->failed = true;
            return NULL;
        }
        void *p = (char *)t->block[i] + t->used[i];
        t->used[i] += b;
        return p;
    }
    if (!t->failed)
        dp_fail("GPU training: the memory plan has no item \"%s\" (train/memplan.c and "
                "train/grad_gpu.c disagree)",
                name);
    t->failed = true;
    return NULL;
}

static int check_used(dp_gpu_train *t) {
    if (t->failed) return -1;
    for (int i = 0; i < t->plan.n; i++) {
        const dp_alloc *a = &t->plan.items[i];
        if (a->category != DP_MEM_CONTEXT && t->used[i] != a->bytes)
            return dp_fail("GPU training: plan item \"%s\" holds %llu bytes, the step uses %llu "
                           "(train/memplan.c and train/grad_gpu.c disagree)",
                           a->name, (unsigned long long)a->bytes, (unsigned long long)t->used[i]);
    }
    return 0;
}

static void *carve_weight(void *ctx, dp_gw_kind kind, uint64_t bytes) {
    static const struct {
        dp_mem_category cat;
        const char *name;
    } where[DP_GW_N_KINDS] = {
        [DP_GW_NF4_MAPS] = {DP_MEM_BASE_NF4, "NF4 maps"},
        [DP_GW_NF4_BLOCK] = {DP_MEM_BASE_NF4, "block linears"},
        [DP_GW_NF4_HEAD] = {DP_MEM_BASE_NF4, "lm_head"},
        [DP_GW_EMBED] = {DP_MEM_BASE_16BIT, "embed_tokens"},
        [DP_GW_DENSE_HEAD] = {DP_MEM_BASE_16BIT, "lm_head"},
        [DP_GW_DENSE_BLOCK] = {DP_MEM_BASE_16BIT, "block linears (dense)"},
        [DP_GW_NORMS] = {DP_MEM_BASE_16BIT, "norms and biases (fp32)"},
        [DP_GW_ROPE] = {DP_MEM_BASE_16BIT, "RoPE frequencies"},
    };
    return take(ctx, where[kind].cat, where[kind].name, bytes);
}

static void layout(dp_gpu_train *t, const dp_lora *lora) {
    const dp_model_config *c = &t->model->cfg;
    const uint64_t es = t->bf16 ? 2 : 4, N = (uint64_t)t->maxN, C = (uint64_t)c->C;
    const uint64_t HD = (uint64_t)c->H * c->D, KVD = (uint64_t)c->KVH * c->D, F = (uint64_t)c->F;
    const uint64_t r = (uint64_t)t->lc.r;
    const dp_mem_category A = DP_MEM_ACTIVATIONS;
    uint64_t dequant = 0, max_bias = 0, wide = C;
    dp_gpu_model_layout(&t->gm, carve_weight, t, &dequant, &max_bias);
    t->params = take(t, DP_MEM_LORA_WEIGHTS, "lora A and B", t->n * 4);
    t->grads = take(t, DP_MEM_LORA_GRADS, "lora grads", t->n * 4);
    t->m = take(t, DP_MEM_OPTIMIZER, "adamw m", t->n * 4);
    t->v = take(t, DP_MEM_OPTIMIZER, "adamw v", t->n * 4);
    t->acc = take(t, DP_MEM_OPTIMIZER, "grad-norm accumulator", 8);
    for (int l = 0; l < c->L; l++)
        for (int i = 0; i < DP_N_LINEAR; i++) {
            const dp_lora_module *md = dp_lora_mod(lora, l, i);
            dp_gpu_linear *d = &t->gm.layers[l].lin[i];
            if ((uint64_t)d->in > wide) wide = (uint64_t)d->in;
            if ((uint64_t)d->out > wide) wide = (uint64_t)d->out;
            if (!md->A || !t->params) continue;
            size_t a = (size_t)(md->A - lora->params), b = (size_t)(md->B - lora->params);
            d->A = t->params + a, d->B = t->params + b;
            t->dAl[l * DP_N_LINEAR + i] = t->grads + a, t->dBl[l * DP_N_LINEAR + i] = t->grads + b;
        }
    t->xs = take(t, A, "layer-input checkpoints", (uint64_t)(c->L + 1) * N * C * es);
    const char *lname = t->shape.recompute ? "recomputed layer" : NULL;
    char all[48];
    snprintf(all, sizeof all, "all %d layers", c->L);
    if (!lname) lname = all;
    for (int i = 0; i < t->nacts; i++) {
        gt_acts *s = &t->acts[i];
        s->h1 = take(t, A, lname, N * C * es);
        s->x2 = take(t, A, lname, N * C * es);
        s->h2 = take(t, A, lname, N * C * es);
        s->rstd1 = take(t, A, lname, N * 4);
        s->rstd2 = take(t, A, lname, N * 4);
        s->q = take(t, A, lname, N * HD * es);
        s->att = take(t, A, lname, N * HD * es);
        s->k = take(t, A, lname, N * KVD * es);
        s->v = take(t, A, lname, N * KVD * es);
        s->g = take(t, A, lname, N * F * es);
        s->u = take(t, A, lname, N * F * es);
        s->a = take(t, A, lname, N * F * es);
        if (c->qk_norm) {
            s->qraw = take(t, A, lname, N * HD * es);
            s->kraw = take(t, A, lname, N * KVD * es);
            s->qn_rstd = take(t, A, lname, N * (uint64_t)c->H * 4);
            s->kn_rstd = take(t, A, lname, N * (uint64_t)c->KVH * 4);
        }
        for (int m = 0; m < DP_N_LINEAR; m++)
            s->xa[m] = (t->lc.targets >> m) & 1 ? take(t, A, lname, N * r * 4) : NULL;
        s->lse = take(t, DP_MEM_ATTENTION, "log-sum-exp rows", N * (uint64_t)c->H * 4);
    }
    t->dx = take(t, A, "residual gradient", N * C * es);
    const char *gs = "layer gradient scratch";
    t->dh = take(t, A, gs, N * C * es);
    t->da = take(t, A, gs, N * F * es);
    t->dg = take(t, A, gs, N * F * es);
    t->du = take(t, A, gs, N * F * es);
    t->datt = take(t, A, gs, N * HD * es);
    t->dq = take(t, A, gs, N * HD * es);
    t->dk = take(t, A, gs, N * KVD * es);
    t->dv = take(t, A, gs, N * KVD * es);
    t->dqr = c->qk_norm ? take(t, A, gs, N * HD * es) : NULL;
    t->dkr = c->qk_norm ? take(t, A, gs, N * KVD * es) : NULL;
    const char *lsn = "LoRA scratch (fp32)";
    t->ls.dxa = take(t, A, lsn, N * r * 4);
    t->ls.lx = t->bf16 || t->shape.dropout ? take(t, A, lsn, N * wide * 4) : NULL;
    t->ls.ly = t->bf16 ? take(t, A, lsn, N * wide * 4) : NULL;
    t->gm.tmp = t->bf16 && max_bias ? take(t, A, "bias scratch (fp32)", N * max_bias * 4) : NULL;
    t->xf = take(t, A, "final norm", N * C * es);
    t->rstdf = take(t, A, "final norm", N * 4);
    const char *ids = "tokens, targets, positions, offsets";
    t->tokens = take(t, A, ids, N * 4);
    t->targets = take(t, A, ids, N * 4);
    t->pos = take(t, A, ids, N * 4);
    t->cu = take(t, A, ids, (N + 1) * 4);
    t->gm.dequant = dequant ? take(t, DP_MEM_DEQUANT, "largest NF4 weight", dequant) : NULL;
    t->logits = take(t, DP_MEM_CROSS_ENTROPY, "logits chunk (fp32)", (uint64_t)t->chunk * c->V * 4);
    t->dlog16 = t->bf16 ? take(t, DP_MEM_CROSS_ENTROPY, "logits gradient chunk (bf16)",
                               (uint64_t)t->chunk * c->V * 2)
                        : NULL;
    t->losses = take(t, DP_MEM_CROSS_ENTROPY, "per-row losses", N * 4);
    for (int i = 0; i < t->plan.n; i++) /* cuBLAS takes the whole item */
        if (t->plan.items[i].category == DP_MEM_CUBLAS)
            t->workspace = take(t, DP_MEM_CUBLAS, t->plan.items[i].name,
                                t->workspace_bytes = t->plan.items[i].bytes);
}

/* ------------------------------------------------------------------ create / free */

dp_train_shape dp_gpu_train_shape(const dp_model *m, const dp_lora *lora, int max_rows, bool bf16,
                                  int ce_chunk) {
    dp_train_shape s = dp_train_shape_default();
    s.seq = max_rows, s.micro_batch = 1, s.r = lora->cfg.r, s.targets = lora->cfg.targets;
    s.lm_head_nf4 = m->lm_head.nf4 != NULL;
    s.ce_chunk = ce_chunk > 0 ? ce_chunk : DP_CE_CHUNK_DEFAULT;
    s.act_f32 = !bf16;
    s.base_dense = m->layers[0].lin[0].nf4 == NULL;
    s.dropout = lora->cfg.dropout > 0;
    return s;
}

/* the model's storage and the adapter against what the plan assumes */
static int check_model(const dp_model *m, const dp_lora *lora, const dp_train_shape *s) {
    const dp_model_config *c = &m->cfg;
    const char *src = m->source ? m->source : "model";
    if (c->L <= 0 || c->C <= 0 || c->H <= 0 || c->KVH <= 0 || c->D <= 0 || c->F <= 0 || c->V <= 0 ||
        c->H % c->KVH != 0 || c->D % 2 != 0 || c->D > 128)
        return dp_fail("%s: shape not supported by the GPU training step (H %d, KVH %d, D %d "
                       "(even, <= 128))",
                       src, c->H, c->KVH, c->D);
    for (int l = 0; l < c->L; l++)
        for (int i = 0; i < DP_N_LINEAR; i++) {
            const dp_linear *lin = &m->layers[l].lin[i];
            bool bias = c->qkv_bias && (i == DP_Q || i == DP_K || i == DP_V);
            if (s->base_dense ? !lin->w : !lin->nf4 || lin->nf4->blocksize != 64)
                return dp_fail("%s: layer %d %s is not %s as the training plan assumes (quantize "
                               "every block linear to NF4 with blocksize 64, or none)",
                               src, l, dp_linear_names[i], s->base_dense ? "dense" : "NF4");
            if (!!lin->bias != bias)
                return dp_fail("%s: layer %d %s %s a bias, the config says otherwise", src, l,
                               dp_linear_names[i], lin->bias ? "has" : "lacks");
            if ((m->layers[l].q_norm != NULL) != c->qk_norm)
                return dp_fail("%s: layer %d q_norm does not match the config", src, l);
        }
    bool head_nf4 = m->lm_head.nf4 != NULL;
    if (head_nf4 != (s->lm_head_nf4 && !c->tied_embeddings))
        return dp_fail("%s: the lm_head is %s, the training plan assumes otherwise", src,
                       head_nf4 ? "NF4" : "dense");
    if (m->lm_head.bias) return dp_fail("%s: an lm_head bias is not supported", src);
    if (lora->L != c->L || lora->cfg.r != s->r || lora->cfg.targets != s->targets ||
        (lora->cfg.dropout > 0) != s->dropout)
        return dp_fail("GPU training: the adapter (rank %d, targets 0x%x, dropout %g) differs from "
                       "the training plan (rank %d, targets 0x%x%s)",
                       lora->cfg.r, lora->cfg.targets, lora->cfg.dropout, s->r, s->targets,
                       s->dropout ? ", dropout" : "");
    return 0;
}

void dp_gpu_train_free(dp_gpu_train *t) {
    if (!t) return;
    if (t->ops) {
        for (int i = 0; t->block && i < t->plan.n; i++)
            if (t->block[i]) t->ops->dev_free(t->block[i]);
        if (t->gm.blas) t->ops->blas_destroy(t->gm.blas);
    }
    free(t->block), free(t->used), free(t->acts), free(t->gm.layers);
    free(t->dAl), free(t->dBl), free(t->host_losses);
    dp_memplan_free(&t->plan);
    free(t);
}

int dp_gpu_train_create(dp_gpu_train **out, const dp_gpu_ops *ops, const dp_model *m,
                        const dp_lora *lora, const dp_train_shape *shape) {
    *out = NULL;
    if (check_model(m, lora, shape)) return -1;
    dp_gpu_train *t = dp_calloc(1, sizeof *t);
    if (!t) return -1;
    t->ops = ops, t->model = m, t->lc = lora->cfg, t->scale = lora->scale, t->n = lora->n;
    t->shape = *shape, t->bf16 = !shape->act_f32;
    t->maxN = shape->seq * shape->micro_batch;
    t->chunk = shape->ce_chunk < t->maxN ? shape->ce_chunk : t->maxN;
    t->nacts = shape->recompute ? 1 : m->cfg.L;
    if (dp_memplan_build(&t->plan, &m->cfg, shape)) goto fail;
    const size_t L = (size_t)m->cfg.L;
    t->block = dp_calloc((size_t)t->plan.n, sizeof *t->block);
    t->used = dp_calloc((size_t)t->plan.n, sizeof *t->used);
    t->acts = dp_calloc((size_t)t->nacts, sizeof *t->acts);
    t->gm.layers = dp_calloc(L, sizeof *t->gm.layers);
    t->dAl = dp_calloc(L * DP_N_LINEAR, sizeof *t->dAl);
    t->dBl = dp_calloc(L * DP_N_LINEAR, sizeof *t->dBl);
    t->host_losses = dp_calloc((size_t)t->maxN, sizeof(float));
    if (!t->block || !t->used || !t->acts || !t->gm.layers || !t->dAl || !t->dBl || !t->host_losses)
        goto fail;
    for (int i = 0; i < t->plan.n; i++) {
        const dp_alloc *a = &t->plan.items[i];
        if (a->category == DP_MEM_CONTEXT) continue; /* an estimate, not an allocation */
        if (ops->dev_malloc(&t->block[i], a->bytes)) {
            dp_fail_context("GPU training: %s / %s (%.1f MiB of %.1f MiB planned)",
                            dp_mem_category_names[a->category], a->name, a->bytes / 1048576.0,
                            t->plan.total / 1048576.0);
            goto fail;
        }
    }
    t->gm.ops = ops, t->gm.model = m, t->gm.bf16 = t->bf16;
    layout(t, lora);
    if (check_used(t)) goto fail;
    if (ops->blas_create(&t->gm.blas) ||
        ops->blas_set_workspace(t->gm.blas, t->workspace, t->workspace_bytes) ||
        dp_gpu_model_upload(&t->gm) || ops->upload(t->params, lora->params, t->n * 4) ||
        ops->dev_memset(t->grads, 0, t->n * 4) || ops->dev_memset(t->m, 0, t->n * 4) ||
        ops->dev_memset(t->v, 0, t->n * 4))
        goto fail;
    *out = t;
    return 0;
fail:
    dp_gpu_train_free(t);
    return -1;
}

/* ------------------------------------------------------------------ the step */

typedef struct { /* one micro-batch as the kernels see it */
    int N, nseq;
    uint64_t seed; /* dropout; 0: none */
} gt_batch;

static float dropout_p(const dp_gpu_train *t, const gt_batch *b) {
    return b->seed && t->lc.dropout > 0 ? t->lc.dropout : 0.0f;
}

static void *row(const dp_gpu_train *t, void *base, size_t rows, size_t width) {
    return (char *)base + rows * width * (t->bf16 ? 2 : 4);
}

/* dinp += d(out)/d(inp)^T dout; the module's LoRA gradients accumulate */
static int proj_bwd(dp_gpu_train *t, int l, int m, void *dinp, const void *dout, const void *inp,
                    const gt_acts *s, const gt_batch *b) {
    const dp_gpu_linear *d = &t->gm.layers[l].lin[m];
    TRY(dp_gpu_linear_backward(&t->gm, d, dinp, dout, b->N));
    if (!d->A) return 0;
    size_t k = (size_t)l * DP_N_LINEAR + (size_t)m;
    return dp_gpu_lora_backward(&t->gm, d, t->lc.r, t->scale, t->dAl[k], t->dBl[k], dinp, dout, inp,
                                s->xa[m], &t->ls, b->N, dropout_p(t, b), b->seed,
                                (uint64_t)l * 8 + (uint64_t)m);
}

/* the layer through the shared block (infer/gpu_model.c), keeping what layer_backward reads */
static int layer_forward(dp_gpu_train *t, int l, const void *x, void *x_out, gt_acts *s,
                         const gt_batch *b) {
    dp_gpu_block_step st = {.N = b->N,
                            .pos = t->pos,
                            .cu_seqlens = t->cu,
                            .nseq = b->nseq,
                            .r = t->lc.r,
                            .scale = t->scale,
                            .dropout_p = dropout_p(t, b),
                            .seed = b->seed,
                            .ls = &t->ls};
    return dp_gpu_block_forward(&t->gm, l, x_out, x, s, &st);
}

/* t->dx: the gradient at the layer's output on entry, at its input on return */
static int layer_backward(dp_gpu_train *t, int l, const void *x, const gt_acts *s,
                          const gt_batch *b) {
    const dp_gpu_ops *ops = t->ops;
    const dp_model_config *c = &t->model->cfg;
    const dp_gpu_layer *ly = &t->gm.layers[l];
    const int N = b->N, C = c->C, H = c->H, KVH = c->KVH, D = c->D;
    const size_t es = t->bf16 ? 2 : 4, NC = (size_t)N * C, NF = (size_t)N * c->F;
    const size_t NQ = (size_t)N * H * D, NK = (size_t)N * KVH * D;
    /* MLP: the residual passes dx through; the down projection sees dx too */
    TRY(ops->dev_memset(t->da, 0, NF * es));
    TRY(proj_bwd(t, l, DP_DOWN, t->da, t->dx, s->a, s, b));
    TRY(ops->dev_memset(t->dg, 0, NF * es));
    TRY(ops->dev_memset(t->du, 0, NF * es));
    TRY(t->bf16 ? ops->swiglu_backward_bf16(t->dg, t->du, t->da, s->g, s->u, NF)
                : ops->swiglu_backward(t->dg, t->du, t->da, s->g, s->u, NF));
    TRY(ops->dev_memset(t->dh, 0, NC * es));
    TRY(proj_bwd(t, l, DP_GATE, t->dh, t->dg, s->h2, s, b));
    TRY(proj_bwd(t, l, DP_UP, t->dh, t->du, s->h2, s, b));
    TRY(dp_gpu_rmsnorm_backward(&t->gm, t->dx, t->dh, s->x2, ly->ffn_norm, s->rstd2, N, C));
    /* attention */
    TRY(ops->dev_memset(t->datt, 0, NQ * es));
    TRY(proj_bwd(t, l, DP_O, t->datt, t->dx, s->att, s, b));
    TRY(ops->dev_memset(t->dq, 0, NQ * es));
    TRY(ops->dev_memset(t->dk, 0, NK * es));
    TRY(ops->dev_memset(t->dv, 0, NK * es));
    TRY(t->bf16 ? ops->attention_backward_bf16(t->dq, t->dk, t->dv, t->datt, s->att, s->lse, s->q,
                                               s->k, s->v, t->cu, b->nseq, N, H, KVH, D)
                : ops->attention_backward(t->dq, t->dk, t->dv, t->datt, s->att, s->lse, s->q, s->k,
                                          s->v, t->cu, b->nseq, N, H, KVH, D));
    TRY(dp_gpu_rope_backward(&t->gm, t->dq, t->pos, N, H));
    TRY(dp_gpu_rope_backward(&t->gm, t->dk, t->pos, N, KVH));
    void *dq = t->dq, *dk = t->dk;
    if (c->qk_norm) {
        TRY(ops->dev_memset(t->dqr, 0, NQ * es));
        TRY(ops->dev_memset(t->dkr, 0, NK * es));
        TRY(dp_gpu_rmsnorm_backward(&t->gm, t->dqr, t->dq, s->qraw, ly->q_norm, s->qn_rstd, N * H,
                                    D));
        TRY(dp_gpu_rmsnorm_backward(&t->gm, t->dkr, t->dk, s->kraw, ly->k_norm, s->kn_rstd, N * KVH,
                                    D));
        dq = t->dqr, dk = t->dkr;
    }
    TRY(ops->dev_memset(t->dh, 0, NC * es));
    TRY(proj_bwd(t, l, DP_Q, t->dh, dq, s->h1, s, b));
    TRY(proj_bwd(t, l, DP_K, t->dh, dk, s->h1, s, b));
    TRY(proj_bwd(t, l, DP_V, t->dh, t->dv, s->h1, s, b));
    return dp_gpu_rmsnorm_backward(&t->gm, t->dx, t->dh, x, ly->attn_norm, s->rstd1, N, C);
}

/* Final norm, then the cross-entropy over chunks of rows (chunks without a trained row are
 * skipped); with grad, t->dh gets the gradient at the final norm's output. */
static int head(dp_gpu_train *t, const dp_batch *b, bool grad, float dloss) {
    const dp_gpu_ops *ops = t->ops;
    const dp_model_config *c = &t->model->cfg;
    const int N = b->N, C = c->C, V = c->V;
    const size_t es = t->bf16 ? 2 : 4;
    TRY(dp_gpu_rmsnorm(&t->gm, t->xf, t->rstdf, row(t, t->xs, (size_t)c->L * N, C),
                       t->gm.final_norm, N, C));
    if (grad) TRY(ops->dev_memset(t->dh, 0, (size_t)N * C * es));
    TRY(ops->dev_memset(t->losses, 0, (size_t)N * 4));
    for (int s0 = 0; s0 < N; s0 += t->chunk) {
        int n = N - s0 < t->chunk ? N - s0 : t->chunk;
        bool any = false;
        for (int i = 0; i < n && !any; i++) any = b->targets[s0 + i] >= 0;
        if (!any) continue;
        TRY(dp_gpu_linear_forward(&t->gm, &t->gm.lm_head, t->logits, V, row(t, t->xf, s0, C), n,
                                  true));
        TRY(ops->cross_entropy_forward_backward(t->losses + s0, grad ? t->logits : NULL, t->logits,
                                                t->targets + s0, n, V, dloss));
        if (!grad) continue;
        const void *dy = t->logits;
        if (t->bf16) {
            TRY(ops->cast_f32_to_bf16(t->dlog16, t->logits, (size_t)n * V));
            dy = t->dlog16;
        }
        TRY(dp_gpu_linear_backward(&t->gm, &t->gm.lm_head, row(t, t->dh, s0, C), dy, n));
    }
    return 0;
}

/* The batch uploaded, the forward through every layer and the cross-entropy (with its
 * gradient at the final norm's output when grad). */
static int forward(dp_gpu_train *t, const dp_batch *b, const gt_batch *gb, bool grad, float dloss) {
    const dp_gpu_ops *ops = t->ops;
    const dp_model_config *c = &t->model->cfg;
    const int N = b->N, C = c->C;
    /* both entry points sum a loss: targets are required */
    if (dp_batch_check(b, c->V, t->maxN, true, "GPU training")) return -1;
    TRY(ops->upload(t->tokens, b->tokens, (size_t)N * 4));
    TRY(ops->upload(t->targets, b->targets, (size_t)N * 4));
    TRY(ops->upload(t->pos, b->pos, (size_t)N * 4));
    TRY(ops->upload(t->cu, b->cu_seqlens, (size_t)(b->nseq + 1) * 4));
    TRY(t->bf16 ? ops->embedding_forward_bf16(t->xs, t->tokens, t->gm.embed, N, C, c->V)
                : ops->embedding_forward(t->xs, t->tokens, t->gm.embed, N, C, c->V));
    /* NEFTune: training steps only (seeded); xs[0] keeps the noise for the recomputation */
    if (gb->seed && t->neftune_alpha > 0)
        TRY(t->bf16
                ? ops->neftune_forward_bf16(t->xs, t->cu, b->nseq, N, C, t->neftune_alpha, gb->seed)
                : ops->neftune_forward(t->xs, t->cu, b->nseq, N, C, t->neftune_alpha, gb->seed));
    for (int l = 0; l < c->L; l++)
        TRY(layer_forward(t, l, row(t, t->xs, (size_t)l * N, C),
                          row(t, t->xs, (size_t)(l + 1) * N, C), &t->acts[t->nacts > 1 ? l : 0],
                          gb));
    return head(t, b, grad, dloss);
}

/* the per-row losses summed over the trained rows, in row order */
static int sum_losses(dp_gpu_train *t, const dp_batch *b, double *loss_sum, int64_t *ntrained) {
    TRY(t->ops->download(t->host_losses, t->losses, (size_t)b->N * 4));
    double sum = 0;
    int64_t nt = 0;
    for (int i = 0; i < b->N; i++)
        if (b->targets[i] >= 0) sum += t->host_losses[i], nt++;
    *loss_sum = sum, *ntrained = nt;
    return t->ops->synchronize();
}

int dp_gpu_train_grad(dp_gpu_train *t, const dp_batch *b, float dloss, uint64_t dropout_seed,
                      double *loss_sum, int64_t *ntrained) {
    const dp_gpu_ops *ops = t->ops;
    const dp_model_config *c = &t->model->cfg;
    *loss_sum = 0, *ntrained = 0;
    const int N = b->N, C = c->C;
    gt_batch gb = {.N = N, .nseq = b->nseq, .seed = dropout_seed};
    TRY(forward(t, b, &gb, true, dloss));
    const size_t es = t->bf16 ? 2 : 4;
    TRY(ops->dev_memset(t->dx, 0, (size_t)N * C * es));
    TRY(dp_gpu_rmsnorm_backward(&t->gm, t->dx, t->dh, row(t, t->xs, (size_t)c->L * N, C),
                                t->gm.final_norm, t->rstdf, N, C));
    for (int l = c->L - 1; l >= 0; l--) {
        gt_acts *s = &t->acts[t->nacts > 1 ? l : 0];
        /* recomputation (the last layer's activations are still there) rewrites xs[l+1] with
         * the values it already holds */
        if (t->nacts == 1 && l < c->L - 1)
            TRY(layer_forward(t, l, row(t, t->xs, (size_t)l * N, C),
                              row(t, t->xs, (size_t)(l + 1) * N, C), s, &gb));
        TRY(layer_backward(t, l, row(t, t->xs, (size_t)l * N, C), s, &gb));
    }
    return sum_losses(t, b, loss_sum, ntrained);
}

int dp_gpu_train_loss(dp_gpu_train *t, const dp_batch *b, double *loss_sum, int64_t *ntrained) {
    *loss_sum = 0, *ntrained = 0;
    gt_batch gb = {.N = b->N, .nseq = b->nseq, .seed = 0};
    TRY(forward(t, b, &gb, false, 0.0f));
    return sum_losses(t, b, loss_sum, ntrained);
}

void dp_gpu_train_set_neftune(dp_gpu_train *t, float alpha) {
    t->neftune_alpha = alpha;
}

int dp_gpu_train_zero_grads(dp_gpu_train *t) {
    return t->ops->dev_memset(t->grads, 0, t->n * 4);
}

float *dp_gpu_train_grads(dp_gpu_train *t) {
    return t->grads;
}

int dp_gpu_train_adamw(dp_gpu_train *t, const dp_adamw_config *c, double lr, long step,
                       double *norm) {
    const dp_gpu_ops *ops = t->ops;
    double ss = 0;
    TRY(ops->dev_memset(t->acc, 0, 8));
    TRY(ops->sum_squares(t->acc, t->grads, t->n));
    TRY(ops->download(&ss, t->acc, 8));
    *norm = sqrt(ss);
    /* clip_grad_norm_: coefficient max / (norm + 1e-6), never above 1 */
    double scale = 1.0;
    if (c->max_grad_norm > 0) {
        scale = c->max_grad_norm / (*norm + 1e-6);
        if (scale > 1.0) scale = 1.0;
    }
    TRY(ops->adamw_update(t->params, t->grads, t->m, t->v, t->n, (float)lr, c->beta1, c->beta2,
                          c->eps, c->weight_decay, (float)scale, (int)step));
    return dp_gpu_train_zero_grads(t);
}

int dp_gpu_train_download(const dp_gpu_train *t, float *params, float *grads, float *m, float *v) {
    const dp_gpu_ops *ops = t->ops;
    const size_t bytes = t->n * 4;
    if (params) TRY(ops->download(params, t->params, bytes));
    if (grads) TRY(ops->download(grads, t->grads, bytes));
    if (m) TRY(ops->download(m, t->m, bytes));
    if (v) TRY(ops->download(v, t->v, bytes));
    return 0;
}

int dp_gpu_train_upload(dp_gpu_train *t, const float *params, const float *m, const float *v) {
    const dp_gpu_ops *ops = t->ops;
    const size_t bytes = t->n * 4;
    if (params) TRY(ops->upload(t->params, params, bytes));
    if (m) TRY(ops->upload(t->m, m, bytes));
    if (v) TRY(ops->upload(t->v, v, bytes));
    return 0;
}
