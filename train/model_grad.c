/* Whole-model training forward/backward with LoRA (see model_grad.h). The forward is the
 * inference forward's trunk and blocks (infer/block.c), run by every thread of the team on its
 * rows, with ops that keep what the backward needs; the backward is this file's. Layer inputs
 * are kept; with recomputation each layer's activations are rebuilt right before its backward
 * pass. Cross-entropy runs only over trained rows, in chunks, so full logits never exist.
 * Threads: one OpenMP region per call. Each thread owns a slice of the rows and runs every
 * row-wise step (norms, projections with single-threaded OpenBLAS, LoRA, RoPE, SwiGLU,
 * residuals, its share of the cross-entropy) on it alone; the team meets only around attention
 * (which mixes rows), the per-layer NF4 dequantization and the sum of the LoRA gradients. Few
 * meeting points matter on a busy machine, where each one can wait out a time slice. Every
 * split is a function of the row count and the thread count: the same thread count gives the
 * same bits. */
#include "train/model_grad.h"
#include "infer/block.h"
#include "data/base/error.h"
#include "kernels/ops.h"
#include "kernels/philox.h"
#include "train/memplan.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* phase timers (seconds, accumulated over the workspace's life, measured on thread 0) for the
 * benchmark's profile */
enum {
    T_DEQUANT,
    T_BASE_FWD,
    T_BASE_BWD,
    T_LORA_FWD,
    T_LORA_BWD,
    T_ATT_FWD,
    T_ATT_BWD,
    T_HEAD,
    T_RECOMPUTE,
    T_TOTAL,
    T_N
};
#define TIC         double t_ = omp_get_wtime()
#define TOC(ws, k)  ((ws)->times[k] += omp_get_wtime() - t_)
#define TOC0(th, k) (th->t == 0 ? (void)TOC(th->ws, k) : (void)0)

/* one layer's activations, (N, ...) rows, every one kept (rstd, raw q/k, lse) */
typedef dp_block_acts layer_acts;

struct dp_grad_ws {
    int maxN, L, C, H, KVH, D, F, V, r;
    size_t wide; /* max(C, F, H*D): row width of tmp, keep and xd */
    int nt;      /* threads of the team (omp_get_max_threads at creation) */
    int ce_rows; /* rows of logits per thread at once */
    bool recompute;
    float *xs; /* (L+1, N, C) layer inputs, xs[L] = last residual */
    /* with recomputation, (L, N, C) each layer's residual after attention as well: the
     * recomputation then skips the o and down projections (a third of the layer's GEMMs) */
    float *x2s;
    float *xas;                             /* (L, DP_N_LINEAR, N, r) every LoRA x_d A^T */
    layer_acts *acts;                       /* 1 (recompute) or L */
    float *xf, *rstdf, *dxf;                /* final norm (N, C), (N), grad (N, C) */
    float *dx, *dh, *tmp;                   /* (N, C) x2, (N, max(C, F, H*D)) */
    float *dq, *dk, *dv, *dqr, *dkr, *datt; /* (N, H*D) / (N, KVH*D) */
    float *dg, *du, *da;                    /* (N, F) */
    float *keep, *xd;                       /* (N, max in) dropout multipliers, dropped input */
    float *dxa;                             /* (N, r) */
    /* per thread: (ce_rows, V) logits, (ce_rows) losses, (ce_rows, C) x2, (ce_rows) targets */
    float *logits, *losses, *xrows, *dxrows;
    int32_t *ttargets;
    float *inv_freq; /* (D/2) */
    /* NF4 modules of the current layer dequantized once to fp32 and shared by the layer's
     * forward, recomputation and backward (one layer's worth, not the model's) */
    float *wdq;                  /* (2, sum of out * in over the layer's NF4 modules) or NULL */
    size_t wdq_off[DP_N_LINEAR]; /* offset of each NF4 module in one half of wdq */
    size_t wdq_n;                /* floats of one half: layer l uses half l % 2, so the team
                                  * never waits before overwriting the previous layer's */
    /* compute dtype bf16 (dp_grad_ws_set_bf16): instead of wdq, the NF4 modules packed as bf16
     * panels (kernels/cpu/gemm_bf16.c), each module twice: for x W^T (nt) and dout W (nn) */
    bool bf16;
    uint16_t *wbf;                        /* (2, wbf_n) or NULL */
    size_t wbf_nt[DP_N_LINEAR], wbf_nn[DP_N_LINEAR], wbf_n; /* offsets and size of one half */
    uint16_t *xbf;                        /* (N, wide + 1) activations rounded to bf16 */
    /* LoRA gradients of one layer for threads 1.., summed into lora->grads after the layer in
     * thread order (thread 0 accumulates in place) */
    float *gpart;        /* (2, nt - 1, glayer): layer l uses half l % 2 */
    size_t glayer;       /* LoRA parameters per layer */
    float neftune_alpha; /* > 0: NEFTune noise on the embedded rows of training steps */
    double tloss[64];
    int64_t tcount[64];
    int blas_threads;
    float *mem;
    size_t bytes;
    double times[T_N];
};

#define MAX_THREADS 64

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
    ws->wide = wide;
    bool qkn = model->cfg.qk_norm;
    ws->xs = take(&p, (size_t)(ws->L + 1) * N * C);
    ws->x2s = ws->recompute ? take(&p, (size_t)ws->L * N * C) : NULL;
    ws->xas = take(&p, (size_t)ws->L * DP_N_LINEAR * N * r);
    int nacts = ws->recompute ? 1 : ws->L;
    for (int i = 0; i < nacts; i++) {
        layer_acts *A = &ws->acts[i];
        A->h1 = take(&p, N * C), A->rstd1 = take(&p, N);
        A->qraw = qkn ? take(&p, N * HD) : NULL, A->kraw = qkn ? take(&p, N * KD) : NULL;
        A->qn_rstd = qkn ? take(&p, N * ws->H) : NULL;
        A->kn_rstd = qkn ? take(&p, N * ws->KVH) : NULL;
        A->q = take(&p, N * HD), A->k = take(&p, N * KD), A->v = take(&p, N * KD);
        A->att = take(&p, N * HD), A->lse = take(&p, N * ws->H);
        A->x2 = ws->recompute ? NULL : take(&p, N * C); /* recompute: x2s */
        A->h2 = take(&p, N * C), A->rstd2 = take(&p, N);
        A->g = take(&p, N * F), A->u = take(&p, N * F), A->a = take(&p, N * F);
    }
    ws->xf = take(&p, N * C), ws->rstdf = take(&p, N), ws->dxf = take(&p, N * C);
    ws->dx = take(&p, N * C), ws->dh = take(&p, N * C), ws->tmp = take(&p, N * wide);
    for (int i = 0; i < nacts; i++) ws->acts[i].proj = ws->tmp; /* o and down outputs */
    ws->dq = take(&p, N * HD), ws->dk = take(&p, N * KD), ws->dv = take(&p, N * KD);
    ws->dqr = take(&p, N * HD), ws->dkr = take(&p, N * KD), ws->datt = take(&p, N * HD);
    ws->dg = take(&p, N * F), ws->du = take(&p, N * F), ws->da = take(&p, N * F);
    ws->keep = take(&p, N * wide), ws->xd = take(&p, N * wide), ws->dxa = take(&p, N * r);
    size_t ch = (size_t)ws->ce_rows * ws->nt;
    ws->logits = take(&p, ch * ws->V), ws->losses = take(&p, ch);
    ws->xrows = take(&p, ch * C), ws->dxrows = take(&p, ch * C);
    ws->ttargets = (int32_t *)take(&p, ch);
    ws->inv_freq = take(&p, (size_t)ws->D / 2 + 1);
    size_t nq = 0;
    for (int m = 0; m < DP_N_LINEAR; m++) {
        ws->wdq_off[m] = nq;
        if (!model->layers[0].lin[m].w) {
            int64_t o, i;
            dp_linear_shape(&model->cfg, (dp_linear_id)m, &o, &i);
            nq += (size_t)(o * i);
        }
    }
    ws->wdq_n = nq;
    /* bf16 too: the forward-only calls (validation) run fp32 products, as `doppel eval` does */
    ws->wdq = nq ? take(&p, 2 * nq) : NULL;
    ws->wbf = NULL, ws->xbf = NULL, ws->wbf_n = 0;
    if (nq && ws->bf16) {
        size_t nb = 0;
        for (int m = 0; m < DP_N_LINEAR; m++) {
            ws->wbf_nt[m] = nb, ws->wbf_nn[m] = nb;
            if (model->layers[0].lin[m].w) continue;
            int64_t o, i;
            dp_linear_shape(&model->cfg, (dp_linear_id)m, &o, &i);
            nb += dp_bf16_panel_size((int)i, (int)o);
            ws->wbf_nn[m] = nb;
            nb += dp_bf16_panel_size((int)o, (int)i);
        }
        nb = (nb + 31) / 32 * 32; /* each half 64-byte aligned */
        ws->wbf_n = nb;
        ws->wbf = (uint16_t *)take(&p, nb); /* 2 * nb bf16 */
        ws->xbf = (uint16_t *)take(&p, (N * (wide + 2) + 1) / 2);
    }
    ws->gpart = ws->glayer && ws->nt > 1 ? take(&p, 2 * ws->glayer * (size_t)(ws->nt - 1)) : NULL;
    return (size_t)(p - start) * sizeof(float);
}

/* (Re)carves the workspace's one allocation for its current settings. */
static int ws_alloc(dp_grad_ws *ws, const dp_model *model) {
    const dp_model_config *c = &model->cfg;
    free(ws->mem);
    ws->bytes = carve(ws, model, NULL);
    ws->mem = aligned_alloc(64, (ws->bytes + 63) / 64 * 64);
    if (!ws->mem)
        return dp_fail("out of memory: the training workspace needs %.1f MiB (lower --max-seq "
                       "or --batch-tokens)",
                       ws->bytes / 1048576.0);
    carve(ws, model, ws->mem);
    if (ws->gpart) memset(ws->gpart, 0, 2 * ws->glayer * (size_t)(ws->nt - 1) * sizeof(float));
    rope_inv_freq(ws->inv_freq, c->D, c->rope_theta, &c->rope_scaling);
    return 0;
}

int dp_grad_ws_set_bf16(dp_grad_ws *ws, const dp_model *model, bool bf16) {
    if (bf16 && !dp_bf16_gemm_ok()) bf16 = false; /* the fp32 path, said by the caller */
    if (bf16 == ws->bf16) return 0;
    ws->bf16 = bf16;
    return ws_alloc(ws, model);
}

bool dp_grad_ws_bf16(const dp_grad_ws *ws) {
    return ws->bf16 && ws->wbf;
}

/* The sizes of a workspace (no allocation): 0, or -1 for a bad request. */
static int ws_init(dp_grad_ws *ws, const dp_model *model, const dp_lora *lora, int max_tokens,
                   bool recompute, int ce_chunk) {
    const dp_model_config *c = &model->cfg;
    if (max_tokens < 1) return dp_fail("micro-batch of %d tokens (must be at least 1)", max_tokens);
    if (!model->lm_head.w)
        return dp_fail("the training path needs an fp32 lm_head (NF4 lm_head is not supported yet)");
    ws->maxN = max_tokens, ws->L = c->L, ws->C = c->C, ws->H = c->H, ws->KVH = c->KVH;
    ws->D = c->D, ws->F = c->F, ws->V = c->V, ws->r = lora ? lora->cfg.r : 1;
    ws->nt = omp_get_max_threads();
    if (ws->nt > MAX_THREADS) ws->nt = MAX_THREADS;
    if (ws->nt > max_tokens) ws->nt = max_tokens; /* every thread gets rows */
    int chunk = ce_chunk > 0 ? ce_chunk : DP_CE_CHUNK_DEFAULT;
    if (chunk > max_tokens) chunk = max_tokens;
    ws->ce_rows = (chunk + ws->nt - 1) / ws->nt; /* the chunk shared by the team */
    ws->glayer = lora ? lora->n / (size_t)lora->L : 0;
    ws->recompute = recompute;
    return 0;
}

dp_grad_ws *dp_grad_ws_create(const dp_model *model, const dp_lora *lora, int max_tokens,
                              bool recompute, int ce_chunk) {
    dp_grad_ws *ws = dp_calloc(1, sizeof *ws);
    if (!ws) return NULL;
    if (ws_init(ws, model, lora, max_tokens, recompute, ce_chunk)) goto fail;
    ws->acts = dp_calloc(recompute ? 1 : (size_t)model->cfg.L, sizeof *ws->acts);
    if (!ws->acts || ws_alloc(ws, model)) goto fail;
    /* threads are OpenMP's alone while the workspace lives: OpenBLAS runs single-threaded
     * inside them (restored by dp_grad_ws_free) */
    ws->blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    return ws;
fail:
    dp_grad_ws_free(ws);
    return NULL;
}

size_t dp_grad_ws_plan_bytes(const dp_model *model, const dp_lora *lora, int max_tokens,
                             bool recompute, int ce_chunk, bool bf16) {
    dp_grad_ws ws = {0};
    if (ws_init(&ws, model, lora, max_tokens, recompute, ce_chunk)) return 0;
    ws.bf16 = bf16 && dp_bf16_gemm_ok();
    ws.acts = dp_calloc(recompute ? 1 : (size_t)model->cfg.L, sizeof *ws.acts);
    if (!ws.acts) return 0;
    size_t bytes = carve(&ws, model, NULL);
    free(ws.acts);
    return bytes;
}

void dp_grad_ws_free(dp_grad_ws *ws) {
    if (!ws) return;
    if (ws->mem && ws->blas_threads > 0) openblas_set_num_threads(ws->blas_threads);
    free(ws->mem);
    free(ws->acts);
    free(ws);
}

void dp_grad_ws_set_neftune(dp_grad_ws *ws, float alpha) {
    ws->neftune_alpha = alpha;
}

size_t dp_grad_ws_bytes(const dp_grad_ws *ws) {
    return ws->bytes;
}

void dp_grad_ws_times(const dp_grad_ws *ws, dp_grad_times *t) {
    const double *x = ws->times;
    *t = (dp_grad_times){x[T_DEQUANT], x[T_BASE_FWD], x[T_BASE_BWD], x[T_LORA_FWD],  x[T_LORA_BWD],
                         x[T_ATT_FWD], x[T_ATT_BWD],  x[T_HEAD],     x[T_RECOMPUTE], x[T_TOTAL]};
}

/* ------------------------------------------------------------------ one thread's view */

typedef struct {
    dp_grad_ws *ws;
    const dp_model *model;
    const dp_batch *b;
    uint64_t seed;
    int t, nt, n0, n1;   /* this thread, the team, its rows [n0, n1) */
    int w_layer;         /* layer whose NF4 weights wdq holds, -1 none */
    int w_layer_nn;      /* bf16: w_layer is the layer of the x W^T panels, this of dout W's */
    bool f32;            /* fp32 products in this call whatever the workspace's dtype: the
                          * forward-only calls, so validation losses are `doppel eval`'s */
    const dp_lora *lora; /* the adapter of the forward, or NULL */
    bool rc;             /* the recomputation pass is running */
    dp_block_ops ops;    /* the block's linears and attention, this struct as their context */
    layer_acts act;      /* this thread's view of the current layer's activations */
} thr;

/* layer l's weight of module m, fp32 */
static const float *weight(const thr *th, int l, int m) {
    const dp_linear *lin = &th->model->layers[l].lin[m];
    return lin->w ? lin->w : th->ws->wdq + (size_t)(l % 2) * th->ws->wdq_n + th->ws->wdq_off[m];
}

/* Dequantizes layer l's NF4 modules into wdq, every thread a share of the rows, unless it is
 * already there. Called by the whole team. */
static void load_layer_bf16(thr *th, int l, bool nn);
/* backward: the team is about to run layer l's backward (bf16 packs dout W's panels only) */
static void load_layer(thr *th, int l, bool backward) {
    dp_grad_ws *ws = th->ws;
    if (ws->wbf && !th->f32) {
        load_layer_bf16(th, l, backward);
        return;
    }
    if (!ws->wdq || th->w_layer == l) return;
    TIC;
    const dp_layer *ly = &th->model->layers[l];
    int64_t first[DP_N_LINEAR + 1] = {0}; /* row index of each module in the joint loop */
    for (int m = 0; m < DP_N_LINEAR; m++)
        first[m + 1] = first[m] + (ly->lin[m].w ? 0 : ly->lin[m].out);
    /* no barrier first: the half of wdq written here was last read two layers ago, and the
     * team has met since (at attention) */
    float *dst = ws->wdq + (size_t)(l % 2) * ws->wdq_n;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < first[DP_N_LINEAR]; r++) {
        int m = 0;
        while (r >= first[m + 1]) m++;
        const dp_linear *lin = &ly->lin[m];
        int64_t row = r - first[m];
        dp_nf4_dequantize_range(lin->nf4, dst + ws->wdq_off[m] + row * lin->in, row * lin->in,
                                lin->in);
    }
    th->w_layer = l;
    TOC0(th, T_DEQUANT);
}

/* The same into bf16 panels, the forward's (x W^T) or the backward's (dout W) only: units of 32
 * rows of a module (one panel of x W^T, 16 pairs of dout W), spread over the team. */
static uint16_t *wbf_nt(const thr *th, int l, int m) {
    return th->ws->wbf + (size_t)(l % 2) * th->ws->wbf_n + th->ws->wbf_nt[m];
}
static uint16_t *wbf_nn(const thr *th, int l, int m) {
    return th->ws->wbf + (size_t)(l % 2) * th->ws->wbf_n + th->ws->wbf_nn[m];
}
static void load_layer_bf16(thr *th, int l, bool nn) {
    /* the recomputation pass packs the backward's panels too: its layer's backward follows at
     * once, and the team meets once instead of twice */
    bool want_nt = !nn && th->w_layer != l, want_nn = (nn || th->rc) && th->w_layer_nn != l;
    if (!want_nt && !want_nn) return;
    TIC;
    const dp_layer *ly = &th->model->layers[l];
    int first[DP_N_LINEAR + 1] = {0}; /* unit index of each module in the joint loop */
    for (int m = 0; m < DP_N_LINEAR; m++)
        first[m + 1] = first[m] + (ly->lin[m].w ? 0 : (int)((ly->lin[m].out + 31) / 32));
#pragma omp for schedule(dynamic, 1)
    for (int u = 0; u < first[DP_N_LINEAR]; u++) {
        int m = 0;
        while (u >= first[m + 1]) m++;
        const dp_linear *lin = &ly->lin[m];
        int o0 = (u - first[m]) * 32, o1 = o0 + 32 < lin->out ? o0 + 32 : (int)lin->out;
        if (want_nn) dp_nf4_pack_bf16_nn(wbf_nn(th, l, m), lin->nf4, o0, o1);
        if (want_nt) dp_nf4_pack_bf16_nt(wbf_nt(th, l, m), lin->nf4, o0, o1);
    }
    if (want_nt) th->w_layer = l;
    if (want_nn) th->w_layer_nn = l;
    TOC0(th, T_DEQUANT);
}

/* Dropout multipliers of elements [i0, i1) of (layer, module) into keep[0, i1 - i0): 0 or
 * 1/(1-p). Element i of the (N, in) input keeps when Philox draw i of stream
 * (seed, layer * 8 + module) exceeds p: the mask dropout_forward (kernels/philox.h) draws on
 * either backend, so the GPU step drops the same elements. */
static const float *make_keep(float *keep, const dp_lora *lora, uint64_t seed, int l, int m,
                              size_t i0, size_t i1) {
    float p = lora->cfg.dropout;
    if (!(p > 0) || !seed) return NULL;
    float s = 1.0f / (1.0f - p);
    uint64_t stream = (uint64_t)l * 8 + (uint64_t)m;
    for (size_t i = i0; i < i1; i++)
        keep[i - i0] = dp_philox_uniform(seed, stream, i) > p ? s : 0.0f;
    return keep;
}

static const dp_lora_module *lmod(const dp_lora *lora, int l, int m) {
    if (!lora) return NULL;
    const dp_lora_module *md = dp_lora_mod(lora, l, m);
    return md->A ? md : NULL;
}

/* out = base(inp) + LoRA(inp) for module m of layer l, on this thread's rows; out, inp, xa
 * are the whole (N, ...) matrices. The recomputation pass (rc) finds xa = x_d A^T kept from the
 * first pass, so it adds xa B^T alone (the block skips the o and down projections, whose
 * outputs are checkpointed, altogether). */
static void proj_fwd(thr *th, const dp_lora *lora, int l, int m, float *out, const float *inp,
                     float *xa, bool rc) {
    dp_grad_ws *ws = th->ws;
    const dp_linear *lin = &th->model->layers[l].lin[m];
    int n = th->n1 - th->n0, fi = lin->in, fo = lin->out;
    if (n <= 0) return;
    out += (size_t)th->n0 * fo, inp += (size_t)th->n0 * fi;
    {
        TIC;
        if (ws->wbf && !lin->w && !th->f32) { /* bf16 products, fp32 out */
            uint16_t *xb = ws->xbf + (size_t)th->n0 * (ws->wide + 2);
            dp_bf16_round(xb, inp, n, fi);
            gemm_bf16_packed(out, fo, xb, wbf_nt(th, l, m), n, fi, fo, false);
        } else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, fo, fi, 1.0f, inp, fi,
                        weight(th, l, m), fi, 0.0f, out, fo);
        if (lin->bias)
            for (int i = 0; i < n; i++)
                for (int o = 0; o < fo; o++) out[(size_t)i * fo + o] += lin->bias[o];
        TOC0(th, T_BASE_FWD);
    }
    const dp_lora_module *md = lmod(lora, l, m);
    if (!md) return;
    TIC;
    int r = lora->cfg.r;
    xa += (size_t)th->n0 * r;
    if (rc) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, fo, r, lora->scale, xa, r, md->B, r,
                    1.0f, out, fo);
    } else {
        size_t i0 = (size_t)th->n0 * fi;
        /* keep and xd: this thread's rows at the widest row width, whatever this module's */
        size_t w0 = (size_t)th->n0 * ws->wide;
        const float *keep = make_keep(ws->keep + w0, lora, th->seed, l, m, i0, i0 + (size_t)n * fi);
        dp_lora_forward(out, inp, md, r, lora->scale, keep, xa, ws->xd + w0, n);
    }
    TOC0(th, T_LORA_FWD);
}

/* dinp = beta dinp + d(out)/d(inp)^T dout on this thread's rows; LoRA gradients accumulate
 * (thread 0 into lora->grads, the others into their share of gpart) */
static void proj_bwd(thr *th, dp_lora *lora, int l, int m, float *dinp, const float *dout,
                     const float *inp, const float *xa, float beta) {
    dp_grad_ws *ws = th->ws;
    const dp_linear *lin = &th->model->layers[l].lin[m];
    int n = th->n1 - th->n0, fi = lin->in, fo = lin->out;
    if (n <= 0) return;
    dinp += (size_t)th->n0 * fi, dout += (size_t)th->n0 * fo, inp += (size_t)th->n0 * fi;
    {
        TIC;
        if (ws->wbf && !lin->w) { /* beta is 0 or 1 */
            uint16_t *xb = ws->xbf + (size_t)th->n0 * (ws->wide + 2);
            dp_bf16_round(xb, dout, n, fo);
            gemm_bf16_packed(dinp, fi, xb, wbf_nn(th, l, m), n, fo, fi, beta != 0.0f);
        } else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, fi, fo, 1.0f, dout, fo,
                        weight(th, l, m), fi, beta, dinp, fi);
        TOC0(th, T_BASE_BWD);
    }
    const dp_lora_module *md = lmod(lora, l, m);
    if (!md) return;
    TIC;
    dp_lora_module mt = *md;
    if (th->t > 0) { /* the same place in this thread's copy of the layer's gradients */
        const float *g0 = lora->grads + (size_t)l * ws->glayer;
        float *part = ws->gpart + ((size_t)(l % 2) * (th->nt - 1) + (th->t - 1)) * ws->glayer;
        mt.dA = part + (md->dA - g0), mt.dB = part + (md->dB - g0);
    }
    int r = lora->cfg.r;
    size_t i0 = (size_t)th->n0 * fi;
    size_t w0 = (size_t)th->n0 * ws->wide;
    const float *keep = make_keep(ws->keep + w0, lora, th->seed, l, m, i0, i0 + (size_t)n * fi);
    dp_lora_backward(dinp, dout, inp, &mt, r, lora->scale, keep, xa + (size_t)th->n0 * r,
                     ws->dxa + (size_t)th->n0 * r, ws->xd + w0, n);
    TOC0(th, T_LORA_BWD);
}

/* lora->grads of layer l += the other threads' parts, in thread order; the parts are zeroed.
 * Called by the whole team once every thread has finished layer l's backward: with nowait,
 * during the next layer's backward (which writes the other half of gpart), so it costs no
 * meeting of its own. */
static void reduce_grads(thr *th, dp_lora *lora, int l, bool nowait) {
    dp_grad_ws *ws = th->ws;
    if (!ws->gpart || !lora || l < 0 || l >= ws->L) return;
    float *g = lora->grads + (size_t)l * ws->glayer;
    float *parts = ws->gpart + (size_t)(l % 2) * (th->nt - 1) * ws->glayer;
    size_t n = ws->glayer;
    if (nowait) {
#pragma omp for schedule(static) nowait
        for (size_t i = 0; i < n; i++) {
            float s = g[i];
            for (int t = 1; t < th->nt; t++) {
                s += parts[(size_t)(t - 1) * n + i];
                parts[(size_t)(t - 1) * n + i] = 0.0f;
            }
            g[i] = s;
        }
    } else {
#pragma omp for schedule(static)
        for (size_t i = 0; i < n; i++) {
            float s = g[i];
            for (int t = 1; t < th->nt; t++) {
                s += parts[(size_t)(t - 1) * n + i];
                parts[(size_t)(t - 1) * n + i] = 0.0f;
            }
            g[i] = s;
        }
    }
}

/* module m's x_d A^T of layer l, kept for every layer (with recomputation too) */
#define XA(ws, l, m) ((ws)->xas + ((size_t)(l)*DP_N_LINEAR + (m)) * (ws)->maxN * (ws)->r)

/* rows [n0, n1) of a (N, w) matrix */
#define MY(th, p, w) ((p) + (size_t)(th)->n0 * (w))

/* The block ops of the training step (see infer/block.h): each thread runs them on its rows. */
static int train_linears(void *ctx, int l, int n, const dp_linear_id *ids, float *const *out,
                         const float *inp, int n0, int n1) {
    thr *th = ctx;
    (void)n0, (void)n1; /* th->n0, th->n1 */
    for (int i = 0; i < n; i++)
        proj_fwd(th, th->lora, l, ids[i], out[i], inp, XA(th->ws, l, ids[i]), th->rc);
    return 0;
}

static int train_attention(void *ctx, int l, dp_block_acts *A, int n0, int n1) {
    thr *th = ctx;
    const dp_batch *b = th->b;
    (void)l, (void)n0, (void)n1;
#pragma omp barrier /* attention reads every row's k and v */
    TIC;
    attention_forward(A->att, A->lse, A->q, A->k, A->v, b->cu_seqlens, b->nseq, th->ws->H,
                      th->ws->KVH, th->ws->D);
    TOC0(th, T_ATT_FWD);
    return 0;
}

/* layer l reads xs[l] and writes xs[l + 1]; with recomputation its one set of activations
 * takes the layer's kept residual after attention. The view is the thread's own: the team
 * meets only at attention, so a thread may start layer l + 1 while another ends layer l. */
static layer_acts *layer_setup(thr *th, int l) {
    dp_grad_ws *ws = th->ws;
    th->act = ws->acts[ws->recompute ? 0 : l];
    if (ws->x2s) th->act.x2 = ws->x2s + (size_t)l * th->b->N * ws->C;
    load_layer(th, l, false);
    return &th->act;
}

static int train_layer(void *ctx, int l, const float **x, float **x_out, dp_block_acts **A) {
    thr *th = ctx;
    size_t NC = (size_t)th->b->N * th->ws->C;
    /* before layer 0: the trunk has just embedded this thread's rows into xs[0]; NEFTune's noise
     * goes there, in training steps only (seeded), and stays for the recomputation and the
     * backward, which read xs[0] */
    if (l == 0 && th->ws->neftune_alpha > 0 && th->seed)
        neftune_forward(th->ws->xs, th->b->cu_seqlens, th->b->nseq, th->n0, th->n1, th->ws->C,
                        th->ws->neftune_alpha, th->seed);
    *x = th->ws->xs + l * NC, *x_out = th->ws->xs + (l + 1) * NC;
    *A = layer_setup(th, l);
    return 0;
}

/* The recomputation pass before layer l's backward: the block again, whose output (and
 * residual after attention) are already in xs / x2s. */
static void layer_recompute(thr *th, int l) {
    size_t NC = (size_t)th->b->N * th->ws->C;
    th->rc = true; /* before layer_setup: bf16 packs the backward's panels with the forward's */
    layer_acts *A = layer_setup(th, l);
    (void)dp_block_forward(th->model, l, &th->ops, A, th->ws->xs + l * NC,
                           th->ws->xs + (l + 1) * NC, th->b->pos, th->ws->inv_freq, th->n0, th->n1,
                           true);
    th->rc = false;
}

/* dx: gradient at the layer's output on entry, at its input on return (this thread's rows). */
static void layer_backward(thr *th, dp_lora *lora, int l, const float *x, const layer_acts *A,
                           float *dx) {
    dp_grad_ws *ws = th->ws;
    const dp_model_config *c = &th->model->cfg;
    const dp_layer *ly = &th->model->layers[l];
    const dp_batch *b = th->b;
    int n = th->n1 - th->n0, C = c->C, H = c->H, KVH = c->KVH, D = c->D, F = c->F;
    int HD = H * D, KD = KVH * D;
    load_layer(th, l, true);
    if (n > 0) {
        /* MLP: the residual passes dx through; the down projection sees dx too */
        proj_bwd(th, lora, l, DP_DOWN, ws->da, dx, A->a, XA(ws, l, DP_DOWN), 0.0f);
        memset(MY(th, ws->dg, F), 0, (size_t)n * F * sizeof(float));
        memset(MY(th, ws->du, F), 0, (size_t)n * F * sizeof(float));
        swiglu_backward(MY(th, ws->dg, F), MY(th, ws->du, F), MY(th, ws->da, F), MY(th, A->g, F),
                        MY(th, A->u, F), (size_t)n * F);
        proj_bwd(th, lora, l, DP_GATE, ws->dh, ws->dg, A->h2, XA(ws, l, DP_GATE), 0.0f);
        proj_bwd(th, lora, l, DP_UP, ws->dh, ws->du, A->h2, XA(ws, l, DP_UP), 1.0f);
        const float *x2 = ws->x2s ? ws->x2s + (size_t)l * b->N * C : A->x2;
        rmsnorm_backward(MY(th, dx, C), NULL, MY(th, ws->dh, C), MY(th, x2, C), ly->ffn_norm,
                         MY(th, A->rstd2, 1), n, C);
        /* attention */
        proj_bwd(th, lora, l, DP_O, ws->datt, dx, A->att, XA(ws, l, DP_O), 0.0f);
        memset(MY(th, ws->dq, HD), 0, (size_t)n * HD * sizeof(float));
        memset(MY(th, ws->dk, KD), 0, (size_t)n * KD * sizeof(float));
        memset(MY(th, ws->dv, KD), 0, (size_t)n * KD * sizeof(float));
    }
#pragma omp barrier /* attention's backward reads every row's output gradient */
    {
        TIC;
        attention_backward(ws->dq, ws->dk, ws->dv, ws->datt, A->att, A->lse, A->q, A->k, A->v,
                           b->cu_seqlens, b->nseq, H, KVH, D);
        TOC0(th, T_ATT_BWD);
    }
    /* every thread has met at this layer's attention, so layer l+1 is done everywhere */
    reduce_grads(th, lora, l + 1, true);
    if (n > 0) {
        rope_backward(MY(th, ws->dq, HD), b->pos + th->n0, ws->inv_freq, n, H, D);
        rope_backward(MY(th, ws->dk, KD), b->pos + th->n0, ws->inv_freq, n, KVH, D);
        float *dq = ws->dq, *dk = ws->dk;
        if (c->qk_norm) {
            memset(MY(th, ws->dqr, HD), 0, (size_t)n * HD * sizeof(float));
            memset(MY(th, ws->dkr, KD), 0, (size_t)n * KD * sizeof(float));
            rmsnorm_backward(MY(th, ws->dqr, HD), NULL, MY(th, ws->dq, HD), MY(th, A->qraw, HD),
                             ly->q_norm, MY(th, A->qn_rstd, H), n * H, D);
            rmsnorm_backward(MY(th, ws->dkr, KD), NULL, MY(th, ws->dk, KD), MY(th, A->kraw, KD),
                             ly->k_norm, MY(th, A->kn_rstd, KVH), n * KVH, D);
            dq = ws->dqr, dk = ws->dkr;
        }
        proj_bwd(th, lora, l, DP_Q, ws->dh, dq, A->h1, XA(ws, l, DP_Q), 0.0f);
        proj_bwd(th, lora, l, DP_K, ws->dh, dk, A->h1, XA(ws, l, DP_K), 1.0f);
        proj_bwd(th, lora, l, DP_V, ws->dh, ws->dv, A->h1, XA(ws, l, DP_V), 1.0f);
        rmsnorm_backward(MY(th, dx, C), NULL, MY(th, ws->dh, C), MY(th, x, C), ly->attn_norm,
                         MY(th, A->rstd1, 1), n, C);
    }
}

static void thr_init(thr *th, dp_grad_ws *ws, const dp_model *model, const dp_batch *b,
                     const dp_lora *lora, uint64_t seed) {
    th->ws = ws, th->model = model, th->b = b, th->seed = seed, th->w_layer = -1;
    th->w_layer_nn = -1, th->f32 = false;
    th->lora = lora, th->rc = false;
    th->ops = (dp_block_ops){train_linears, train_attention, train_layer, th};
    th->t = omp_get_thread_num(), th->nt = omp_get_num_threads();
    th->n0 = (int)((int64_t)b->N * th->t / th->nt);
    th->n1 = (int)((int64_t)b->N * (th->t + 1) / th->nt);
}

/* the trunk (infer/block.c) on this thread's rows, then the final norm */
static void forward_trunk(thr *th) {
    dp_grad_ws *ws = th->ws;
    const dp_batch *b = th->b;
    int n = th->n1 - th->n0, C = ws->C;
    size_t NC = (size_t)b->N * C;
    (void)dp_trunk_forward(th->model, &th->ops, b->tokens, ws->xs, b->pos, ws->inv_freq, th->n0,
                           th->n1);
    if (n > 0)
        rmsnorm_forward(MY(th, ws->xf, C), MY(th, ws->rstdf, 1), MY(th, ws->xs + ws->L * NC, C),
                        th->model->final_norm, n, C, th->model->cfg.rms_eps);
}

/* The head's two GEMMs with bf16 products on AMX tiles (bf16 workspaces on CPUs with AMX-BF16:
 * about 3x sgemm there, where vdpbf16ps alone is slower than sgemm). The fp32 head weight is
 * rounded into bf16 panels HB vocabulary rows at a time, per call (gemm_bf16_f32w_*), so no
 * second copy of it lives beside the fp32 one: logits = x W^T, then dx = dlogits W. */
#define HB 1024

/* Cross-entropy over the trained rows, chunked: thread t takes the t-th share of the trained
 * rows (wherever they lie), so the team splits the vocabulary GEMMs evenly. With grad, fills
 * ws->dxf (N, C). The loss sum and count go to tloss[t], tcount[t]. */
static void head(thr *th, bool grad, float dloss) {
    dp_grad_ws *ws = th->ws;
    const dp_batch *b = th->b;
    int C = ws->C, V = ws->V, R = ws->ce_rows;
    const float *W = th->model->lm_head.w; // (V, C)
    int64_t total = 0;
    for (int i = 0; i < b->N; i++) total += b->targets[i] >= 0;
    int64_t k0 = total * th->t / th->nt, k1 = total * (th->t + 1) / th->nt;
    float *logits = ws->logits + (size_t)th->t * R * V, *losses = ws->losses + (size_t)th->t * R;
    float *xrows = ws->xrows + (size_t)th->t * R * C, *dxrows = ws->dxrows + (size_t)th->t * R * C;
    int32_t *tt = ws->ttargets + (size_t)th->t * R;
    int rows[R];
    uint16_t *hb = NULL; /* the bf16 head's scratch, for both GEMMs */
    if (ws->wbf && !th->f32 && dp_bf16_amx_ok()) {
        size_t nt = gemm_bf16_f32w_scratch(false, R, C, V, HB),
               nn = gemm_bf16_f32w_scratch(true, R, V, C, HB);
        hb = malloc((nt > nn ? nt : nn) * sizeof(uint16_t)); /* NULL: the fp32 head */
    }
    if (grad) memset(MY(th, ws->dxf, C), 0, (size_t)(th->n1 - th->n0) * C * sizeof(float));
#pragma omp barrier /* every row of xf is final, and dxf is zero */
    double sum = 0;
    int64_t k = 0;
    int i = 0;
    while (k < k1) {
        int n = 0; /* the next chunk of this thread's trained rows */
        for (; i < b->N && n < R && k < k1; i++) {
            if (b->targets[i] < 0) continue;
            if (k++ < k0) continue;
            rows[n] = i;
            memcpy(xrows + (size_t)n * C, ws->xf + (size_t)i * C, C * sizeof(float));
            tt[n++] = b->targets[i];
        }
        if (!n) break;
        if (hb)
            gemm_bf16_f32w_nt(logits, V, xrows, W, n, C, V, HB, hb);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, V, C, 1.0f, xrows, C, W, C,
                        0.0f, logits, V);
        cross_entropy_forward_backward(losses, logits, logits, tt, n, V, dloss);
        for (int j = 0; j < n; j++) sum += losses[j];
        if (!grad) continue;
        if (hb)
            gemm_bf16_f32w_nn(dxrows, C, logits, V, W, n, V, C, HB, hb);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, C, V, 1.0f, logits, V, W, C,
                        0.0f, dxrows, C);
        for (int j = 0; j < n; j++) /* each trained row is one thread's */
            memcpy(ws->dxf + (size_t)rows[j] * C, dxrows + (size_t)j * C, C * sizeof(float));
    }
    free(hb);
    ws->tloss[th->t] = sum;
    ws->tcount[th->t] = k1 - k0;
#pragma omp barrier /* every row of dxf is written */
}

static void sum_loss(const dp_grad_ws *ws, int nt, double *loss_sum, int64_t *ntrained) {
    double s = 0;
    int64_t c = 0;
    for (int t = 0; t < nt; t++) s += ws->tloss[t], c += ws->tcount[t];
    *loss_sum = s;
    *ntrained = c;
}

int dp_model_grad(dp_grad_ws *ws, const dp_model *model, dp_lora *lora, const dp_batch *b,
                  float dloss, uint64_t dropout_seed, double *loss_sum, int64_t *ntrained) {
    if (dp_batch_check(b, model->cfg.V, ws->maxN, true, "training step")) return -1;
    if (!lora || lora->cfg.r != ws->r) return dp_fail("LoRA rank differs from the workspace's");
    if (lora->n / (size_t)lora->L != ws->glayer)
        return dp_fail("LoRA layout differs from the workspace's");
    int nt = ws->nt < b->N ? ws->nt : b->N;
    double t0 = omp_get_wtime();
#pragma omp parallel num_threads(nt)
    {
        thr th;
        thr_init(&th, ws, model, b, lora, dropout_seed);
        size_t NC = (size_t)b->N * ws->C;
        int n = th.n1 - th.n0;
        forward_trunk(&th);
        {
            TIC;
            head(&th, true, dloss);
            TOC0((&th), T_HEAD);
        }
        if (n > 0) {
            memset(MY(&th, ws->dx, ws->C), 0, (size_t)n * ws->C * sizeof(float));
            rmsnorm_backward(MY(&th, ws->dx, ws->C), NULL, MY(&th, ws->dxf, ws->C),
                             MY(&th, ws->xs + ws->L * NC, ws->C), model->final_norm,
                             MY(&th, ws->rstdf, 1), n, ws->C);
        }
        for (int l = ws->L - 1; l >= 0; l--) {
            layer_acts *A = &ws->acts[ws->recompute ? 0 : l];
            if (ws->recompute) {
                TIC;
                layer_recompute(&th, l);
                TOC0((&th), T_RECOMPUTE);
            }
            layer_backward(&th, lora, l, ws->xs + l * NC, A, ws->dx);
        }
#pragma omp barrier /* layer 0's backward is done everywhere */
        reduce_grads(&th, lora, 0, false);
    }
    ws->times[T_TOTAL] += omp_get_wtime() - t0;
    sum_loss(ws, nt, loss_sum, ntrained);
    return 0;
}

/* The forward alone (no dropout) on the team: the trunk, then with `loss` the cross-entropy
 * sums of the trained rows (targets needed). */
static int forward_only(dp_grad_ws *ws, const dp_model *model, const dp_lora *lora,
                        const dp_batch *b, bool loss, const char *who) {
    if (dp_batch_check(b, model->cfg.V, ws->maxN, loss, who)) return -1;
    if (lora && lora->cfg.r != ws->r) return dp_fail("LoRA rank differs from the workspace's");
    int nt = ws->nt < b->N ? ws->nt : b->N;
#pragma omp parallel num_threads(nt)
    {
        thr th;
        thr_init(&th, ws, model, b, lora, 0);
        th.f32 = true;
        forward_trunk(&th);
        if (loss) head(&th, false, 0.0f);
    }
    return 0;
}

int dp_model_loss(dp_grad_ws *ws, const dp_model *model, const dp_lora *lora, const dp_batch *b,
                  double *loss_sum, int64_t *ntrained) {
    if (forward_only(ws, model, lora, b, true, "validation loss")) return -1;
    sum_loss(ws, ws->nt < b->N ? ws->nt : b->N, loss_sum, ntrained);
    return 0;
}

int dp_model_logits(dp_grad_ws *ws, const dp_model *model, const dp_lora *lora, const dp_batch *b,
                    float *logits) {
    if (forward_only(ws, model, lora, b, false, "logits")) return -1;
    gemm_omp(false, true, b->N, ws->V, ws->C, 1.0f, ws->xf, ws->C, model->lm_head.w, ws->C, 0.0f,
             logits, ws->V);
    return 0;
}
