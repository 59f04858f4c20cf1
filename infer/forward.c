/* The CPU forward pass: embedding → L × (RMSNorm, GQA attention with RoPE and a KV cache,
 * RMSNorm, SwiGLU MLP) → final RMSNorm → lm_head, for the llama / qwen2 / qwen3 families. */
#include "infer/forward.h"

#include "data/base/error.h"
#include "kernels/pool.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN_FLOATS 16 /* 64-byte alignment for every carved buffer */

static size_t round_up(size_t n) {
    return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
}

/* Threads: OpenMP only. The OpenBLAS calls run single-threaded inside OpenMP threads (see
 * dp_forward_tokens): a pthreads OpenBLAS spinning beside spinning OpenMP workers on the same
 * cores slows a busy 2-core machine down by orders of magnitude. dp_forward_create sets
 * OpenBLAS to one thread for the context's lifetime. */
static void dense_forward(float *y, const float *x, const dp_linear *lin, int N) {
    const int C = lin->in, OC = lin->out;
    int nt = omp_get_max_threads();
    if (N == 1) { /* decode: rows of W split across threads, one sgemv each */
#pragma omp parallel for schedule(static) if (nt > 1 && (size_t)OC * C >= 65536)
        for (int t = 0; t < nt; t++) {
            int o0 = (int)((int64_t)OC * t / nt), o1 = (int)((int64_t)OC * (t + 1) / nt);
            if (o1 <= o0) continue;
            cblas_sgemv(CblasRowMajor, CblasNoTrans, o1 - o0, C, 1.0f, lin->w + (size_t)o0 * C, C,
                        x, 1, 0.0f, y + o0, 1);
            if (lin->bias)
                for (int o = o0; o < o1; o++) y[o] += lin->bias[o];
        }
        return;
    }
    /* prefill: input rows split across threads, one sgemm each */
#pragma omp parallel for schedule(static) if (nt > 1 && N >= 2 * nt)
    for (int t = 0; t < nt; t++) {
        int n0 = (int)((int64_t)N * t / nt), n1 = (int)((int64_t)N * (t + 1) / nt);
        if (n1 > n0)
            matmul_forward(y + (size_t)n0 * OC, x + (size_t)n0 * C, lin->w, lin->bias, n1 - n0, C,
                           OC);
    }
}

/* prefill rows from which each thread takes its own input rows (and dequantizes every weight);
 * below, each takes its own output columns (every weight dequantized once) */
#ifndef NF4_ROW_SPLIT
#define NF4_ROW_SPLIT 256
#endif

int dp_linear_forward(float *y, const float *x, const dp_linear *lin, int N) {
    if (N == 1 && lin->q8) { /* the compact decode copy (the lm_head) */
        if (lin->i8)
            gemv_q8_rows_i8(y, x, lin->q8, lin->bias, 1, lin->in, lin->out);
        else
            gemv_q8(y, x, lin->q8, lin->bias, lin->in, lin->out);
        return 0;
    }
    if (lin->w) {
        dense_forward(y, x, lin, N);
        return 0;
    }
    if (lin->nf4) { /* a few rows (decode steps): the fused NF4 dot products, each weight row
                     * decoded once for all of them; more: dequantized tiles + sgemm */
        const int C = lin->in, OC = lin->out, nt = omp_get_max_threads();
        if (N <= DP_GEMV_ROWS && lin->i8 && lin->nf4->rows == OC) {
            gemv_nf4_rows_multi_i8(1, &y, (const dp_nf4 *const[]){lin->nf4},
                                   (const float *const[]){lin->bias}, x, N, C);
        } else if (N == 1) {
            gemv_nf4(y, x, lin->nf4, lin->bias, C, OC);
        } else if (N <= DP_GEMV_ROWS && lin->nf4->rows == OC) {
            gemv_nf4_rows_multi(1, &y, (const dp_nf4 *const[]){lin->nf4},
                                (const float *const[]){lin->bias}, x, N, C);
        } else if (nt > 1 && N >= 16 * nt && N >= NF4_ROW_SPLIT) {
            /* long prefill: input rows split across threads; each dequantizes the tiles itself
             * (nested OpenMP is off), which costs little next to its sgemm */
#pragma omp parallel for schedule(static)
            for (int t = 0; t < nt; t++) {
                int n0 = (int)((int64_t)N * t / nt), n1 = (int)((int64_t)N * (t + 1) / nt);
                matmul_nf4_forward(y + (size_t)n0 * OC, x + (size_t)n0 * C, lin->nf4, lin->bias,
                                   n1 - n0, C, OC);
            }
        } else if (nt > 1 && lin->nf4->rows == OC) {
            /* a short prompt: the output columns (rows of W) split across threads instead, so
             * each weight is decoded once, not once a thread (that costs as much as the sgemm
             * of a few dozen rows) */
#pragma omp parallel for schedule(static)
            for (int t = 0; t < nt; t++)
                matmul_nf4_forward_cols(y, x, lin->nf4, lin->bias, N, C, OC,
                                        (int)((int64_t)OC * t / nt),
                                        (int)((int64_t)OC * (t + 1) / nt));
        } else {
            matmul_nf4_forward(y, x, lin->nf4, lin->bias, N, C, OC);
        }
        return 0;
    }
    return dp_fail("linear layer (%d x %d) has no weights; the model was not fully loaded",
                   lin->out, lin->in);
}

int dp_kv_create(dp_kv *kv, const dp_model *m, int max_T) {
    memset(kv, 0, sizeof *kv);
    const dp_model_config *c = &m->cfg;
    if (max_T < 1) return dp_fail("KV cache of %d positions (must be at least 1)", max_T);
    size_t per = (size_t)c->L * max_T * c->KVH * c->D;
    kv->k = dp_malloc(2 * per * sizeof(float));
    if (!kv->k)
        return dp_fail_context("KV cache for %d positions (%.1f MiB)", max_T,
                               2 * per * sizeof(float) / 1048576.0);
    kv->v = kv->k + per;
    kv->max_T = max_T;
    return 0;
}

void dp_kv_free(dp_kv *kv) {
    if (!kv) return;
    free(kv->k);
    memset(kv, 0, sizeof *kv);
}

int dp_forward_create(dp_forward *f, const dp_model *m, int max_T, int chunk) {
    memset(f, 0, sizeof *f);
    const dp_model_config *c = &m->cfg;
    if (c->L <= 0 || c->C <= 0 || c->H <= 0 || c->KVH <= 0 || c->D <= 0 || c->F <= 0 || c->V <= 0 ||
        c->H % c->KVH != 0 || c->D % 2 != 0)
        return dp_fail("%s: inconsistent model shape (L %d, C %d, H %d, KVH %d, D %d, F %d, V %d)",
                       m->source ? m->source : "model", c->L, c->C, c->H, c->KVH, c->D, c->F, c->V);
    if (max_T <= 0) max_T = c->max_position > 0 ? c->max_position : 2048;
    if (chunk <= 0) chunk = 256;
    if (chunk > max_T) chunk = max_T;
    f->model = m;
    f->max_T = max_T;
    f->chunk = chunk;

    /* KV cache: one block, k then v, each (L, max_T, KVH, D) */
    size_t per = (size_t)c->L * max_T * c->KVH * c->D;
    f->kv_bytes = 2 * per * sizeof(float);
    f->kv = dp_malloc(f->kv_bytes);
    if (!f->kv)
        return dp_fail_context("KV cache for %d positions (%.1f MiB)", max_T,
                               f->kv_bytes / 1048576.0);
    f->k_cache = f->kv;
    f->v_cache = f->kv + per;

    /* activations: one block carved by this table of sizes (in floats) */
    size_t n = (size_t)chunk, qd = (size_t)c->H * c->D, kvd = (size_t)c->KVH * c->D;
    float **slot[] = {&f->x,    &f->xn,   &f->q,  &f->k,      &f->v,       &f->att,
                      &f->proj, &f->gate, &f->up, &f->logits, &f->inv_freq};
    size_t size[] = {n * c->C, n * c->C, n * qd,   n * kvd,      n * kvd,         n * qd,
                     n * c->C, n * c->F, n * c->F, (size_t)c->V, (size_t)c->D / 2};
    size_t nslot = sizeof size / sizeof size[0], total = round_up(n); /* + pos (int32) */
    for (size_t i = 0; i < nslot; i++) total += round_up(size[i]);
    f->act_bytes = total * sizeof(float);
    f->act = dp_malloc(f->act_bytes);
    if (!f->act) {
        dp_forward_free(f);
        return dp_fail_context("activations (%.1f MiB)", f->act_bytes / 1048576.0);
    }
    float *p = f->act;
    for (size_t i = 0; i < nslot; i++) {
        *slot[i] = p;
        p += round_up(size[i]);
    }
    f->pos = (int32_t *)p;
    /* the block's view: norms into xn, q/k normed in place, the residual updated in place,
     * silu(gate) * up into gate; nothing kept for a backward */
    f->acts = (dp_block_acts){.h1 = f->xn,
                              .q = f->q,
                              .k = f->k,
                              .v = f->v,
                              .att = f->att,
                              .x2 = f->x,
                              .h2 = f->xn,
                              .g = f->gate,
                              .u = f->up,
                              .a = f->gate,
                              .proj = f->proj};
    rope_inv_freq(f->inv_freq, c->D, c->rope_theta, &c->rope_scaling);
    /* OpenBLAS runs single-threaded while the context lives (restored by dp_forward_free):
     * switching its pool on and off per call wakes threads that spin beside OpenMP's */
    f->blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    return 0;
}

void dp_forward_free(dp_forward *f) {
    if (!f) return;
    if (f->blas_threads > 0) openblas_set_num_threads(f->blas_threads);
    free(f->kv);
    free(f->act);
    memset(f, 0, sizeof *f);
}

void dp_forward_truncate(dp_forward *f, int T) {
    if (T < 0) T = 0;
    if (T < f->T) f->T = T;
}

dp_kv dp_forward_cache(const dp_forward *f) {
    return (dp_kv){f->k_cache, f->v_cache, f->max_T, f->T};
}

int dp_forward_cache_sync(dp_forward *f, const dp_kv *kv) {
    if (kv->k != f->k_cache || kv->v != f->v_cache || kv->T < f->T || kv->T > f->max_T)
        return dp_fail("forward: the KV view handed back is not this context's (or holds %d "
                       "positions where the context has %d of %d)",
                       kv->T, f->T, f->max_T);
    f->T = kv->T;
    return 0;
}

void dp_forward_set_hook(dp_forward *f, dp_linear_hook hook, void *ctx) {
    f->hook = hook;
    f->hook_ctx = ctx;
}

/* One step of the forward: the sequences' caches, their packing as rows (cu_seqlens), and the
 * block ops that run the linears and the cached attention for infer/block.c. */
typedef struct {
    dp_forward *f;
    dp_kv *const *kv;  /* (nseq) */
    const int32_t *cu; /* (nseq + 1) */
    int nseq;
} step;

static int linear(dp_forward *f, int l, dp_linear_id id, float *y, const float *x, int N) {
    const dp_linear *lin = &f->model->layers[l].lin[id];
    if (dp_linear_forward(y, x, lin, N)) return -1;
    if (f->hook) return f->hook(f->hook_ctx, l, id, y, x, N, lin->in, lin->out);
    return 0;
}

/* Linears of block l over the same input (all rows: inference calls the block with [0, N) from
 * outside any parallel region; each linear spreads over the threads itself). Several NF4
 * linears of a few rows (q/k/v, gate/up of a decode step, one conversation or a batch of them)
 * run as one parallel region (gemv_nf4_rows_multi), then the hook sees each in order as usual. */
static int step_linears(void *ctx, int l, int n, const dp_linear_id *ids, float *const *y,
                        const float *x, int n0, int n1) {
    dp_forward *f = ((step *)ctx)->f;
    const dp_linear *lin = f->model->layers[l].lin;
    int N = n1 - n0;
    bool fused = N <= DP_GEMV_ROWS && n > 1;
    for (int i = 0; i < n; i++) fused = fused && lin[ids[i]].nf4 && !lin[ids[i]].q8;
    if (!fused) {
        for (int i = 0; i < n; i++)
            if (linear(f, l, ids[i], y[i], x, N)) return -1;
        return 0;
    }
    const dp_nf4 *w[DP_N_LINEAR] = {0};
    const float *b[DP_N_LINEAR] = {0};
    for (int i = 0; i < n; i++) w[i] = lin[ids[i]].nf4, b[i] = lin[ids[i]].bias;
    if (lin[ids[0]].i8)
        gemv_nf4_rows_multi_i8(n, y, w, b, x, N, lin[ids[0]].in);
    else
        gemv_nf4_rows_multi(n, y, w, b, x, N, lin[ids[0]].in);
    for (int i = 0; f->hook && i < n; i++)
        if (f->hook(f->hook_ctx, l, ids[i], y[i], x, N, lin[ids[i]].in, lin[ids[i]].out)) return -1;
    return 0;
}

/* One sequence's part of a step's attention: its new k, v rows go into its cache after its T
 * cached positions; its queries attend over the whole cache. */
static void attend_seq(const step *st, int l, dp_block_acts *A, int s) {
    const dp_model_config *c = &st->f->model->cfg;
    const int H = c->H, KVH = c->KVH, D = c->D;
    const size_t kvd = (size_t)KVH * D, qd = (size_t)H * D;
    const dp_kv *kv = st->kv[s];
    int r0 = st->cu[s], ns = st->cu[s + 1] - r0, T0 = kv->T;
    float *kc = kv->k + (size_t)l * kv->max_T * kvd; // (max_T, KVH, D)
    float *vc = kv->v + (size_t)l * kv->max_T * kvd; // (max_T, KVH, D)
    memcpy(kc + (size_t)T0 * kvd, A->k + (size_t)r0 * kvd, (size_t)ns * kvd * sizeof(float));
    memcpy(vc + (size_t)T0 * kvd, A->v + (size_t)r0 * kvd, (size_t)ns * kvd * sizeof(float));
    attention_cached(A->att + (size_t)r0 * qd, A->q + (size_t)r0 * qd, kc, vc, ns, T0 + ns, H, KVH,
                     D);
}

typedef struct {
    const step *st;
    dp_block_acts *A;
    int l;
} attend_job;

/* sequences [s0, s1) of a decode step, on whichever thread claimed them: attention_cached runs
 * alone there (one thread: a long cache must not start an OpenMP team from a pool thread) */
static void attend_chunk(void *ctx, int64_t s0, int64_t s1) {
    const attend_job *j = ctx;
    int nt = omp_get_max_threads(); /* this thread's setting, restored below */
    omp_set_num_threads(1);
    for (int64_t s = s0; s < s1; s++) attend_seq(j->st, j->l, j->A, (int)s);
    omp_set_num_threads(nt);
}

/* A decode step of several conversations (one row each) spreads its sequences over the decode
 * pool (kernels/pool.h), not over OpenMP: every OpenMP region wakes the team and waits at its
 * barrier for threads the OS may not have scheduled, which on a busy 2-core machine costs
 * more than the attention itself (a region per sequence and layer made a 4-conversation step
 * dozens of times slower than a 1-conversation one). One conversation's decode row goes to
 * attention_cached whole, which shares its heads over the same pool once the cache is long
 * enough to pay for the hand-off. A prefill keeps attention_cached's own threading. */
static int step_attention(void *ctx, int l, dp_block_acts *A, int n0, int n1) {
    (void)n0, (void)n1;
    const step *st = ctx;
    if (st->nseq > 1 && st->cu[st->nseq] == st->nseq) {
        attend_job j = {st, A, l};
        dp_pool_for(st->nseq, 1, attend_chunk, &j);
        return 0;
    }
    for (int s = 0; s < st->nseq; s++) attend_seq(st, l, A, s);
    return 0;
}

/* inference keeps one residual stream x, updated in place, and one set of activations */
static int step_layer(void *ctx, int l, const float **x, float **x_out, dp_block_acts **A) {
    (void)l;
    dp_forward *f = ((step *)ctx)->f;
    *x = f->x, *x_out = f->x, *A = &f->acts;
    return 0;
}

/* N <= chunk rows of nseq sequences through the blocks, then the final norm and the head:
 * logits (N, V) when every_row, else (nseq, V) of each sequence's last row through the decode
 * head (the Q8 copy), as a single sequence's decode step computes it. The caches'
 * positions advance only on success. */
static int forward_rows(dp_forward *f, dp_kv *const *kv, const int32_t *tokens, const int32_t *pos,
                        const int32_t *cu, int nseq, int N, float *logits, bool every_row) {
    const dp_model *m = f->model;
    const dp_model_config *c = &m->cfg;
    const int C = c->C, V = c->V;
    step st = {f, kv, cu, nseq};
    dp_block_ops ops = {step_linears, step_attention, step_layer, &st};
    if (dp_trunk_forward(m, &ops, tokens, f->x, pos, f->inv_freq, 0, N)) return -1;
    if (every_row) {
        rmsnorm_forward(f->xn, NULL, f->x, m->final_norm, N, C, c->rms_eps);
        if (dp_linear_forward(logits, f->xn, &m->lm_head, N)) return -1;
    } else {
        for (int s = 0; s < nseq; s++) /* each sequence's last row, side by side */
            rmsnorm_forward(f->xn + (size_t)s * C, NULL, f->x + (size_t)(cu[s + 1] - 1) * C,
                            m->final_norm, 1, C, c->rms_eps);
        if (nseq > 1 && m->lm_head.q8 && m->lm_head.i8) /* the decode copy, rows read once */
            gemv_q8_rows_i8(logits, f->xn, m->lm_head.q8, m->lm_head.bias, nseq, C, V);
        else if (nseq > 1 && m->lm_head.q8)
            gemv_q8_rows(logits, f->xn, m->lm_head.q8, m->lm_head.bias, nseq, C, V);
        else
            for (int s = 0; s < nseq; s++)
                if (dp_linear_forward(logits + (size_t)s * V, f->xn + (size_t)s * C, &m->lm_head,
                                      1))
                    return -1;
    }
    for (int s = 0; s < nseq; s++) kv[s]->T += cu[s + 1] - cu[s];
    return 0;
}

int dp_forward_tokens(dp_forward *f, const int32_t *tokens, int N, float *all_logits) {
    const dp_model_config *c = &f->model->cfg;
    if (N <= 0) return dp_fail("forward: no tokens to process");
    if (N > f->max_T - f->T)
        return dp_fail("forward: %d new tokens after %d cached ones exceed the context of %d "
                       "positions; shorten the input or raise --max-context",
                       N, f->T, f->max_T);
    for (int i = 0; i < N; i++)
        if (tokens[i] < 0 || tokens[i] >= c->V)
            return dp_fail("forward: token id %d at position %d is outside the vocabulary [0, %d)",
                           tokens[i], i, c->V);
    /* f's own cache, as the one sequence of each step */
    dp_kv own = {f->k_cache, f->v_cache, f->max_T, f->T}, *kv = &own;
    for (int done = 0; done < N;) {
        int n = N - done < f->chunk ? N - done : f->chunk;
        int32_t cu[2] = {0, n};
        for (int i = 0; i < n; i++) f->pos[i] = own.T + i;
        float *lg = all_logits ? all_logits + (size_t)done * c->V : f->logits;
        if (forward_rows(f, &kv, tokens + done, f->pos, cu, 1, n, lg, all_logits != NULL))
            return -1; /* f->T untouched: nothing appended */
        done += n;
    }
    if (all_logits)
        memcpy(f->logits, all_logits + (size_t)(N - 1) * c->V, (size_t)c->V * sizeof(float));
    f->T = own.T;
    return 0;
}

int dp_forward_batch(dp_forward *f, dp_kv *const *kv, const dp_batch *b, float *logits,
                     bool every_row) {
    if (dp_batch_check(b, f->model->cfg.V, f->chunk, false, "forward")) return -1;
    for (int s = 0; s < b->nseq; s++) {
        int r0 = b->cu_seqlens[s], ns = b->cu_seqlens[s + 1] - r0;
        if (!kv[s] || !kv[s]->k)
            return dp_fail("forward: sequence %d of the step has no KV cache (dp_kv_create)", s);
        if (ns < 1) return dp_fail("forward: sequence %d of the step has no rows", s);
        if (ns > kv[s]->max_T - kv[s]->T)
            return dp_fail("forward: sequence %d: %d new tokens after %d cached ones exceed its "
                           "context of %d positions",
                           s, ns, kv[s]->T, kv[s]->max_T);
        for (int i = 0; i < ns; i++)
            if (b->pos[r0 + i] != kv[s]->T + i)
                return dp_fail("forward: sequence %d, row %d: position %d, but its cache holds %d "
                               "positions (rows continue at %d)",
                               s, r0 + i, b->pos[r0 + i], kv[s]->T, kv[s]->T + i);
    }
    return forward_rows(f, kv, b->tokens, b->pos, b->cu_seqlens, b->nseq, b->N, logits, every_row);
}
