/* Causal grouped-query attention over packed sequences, fp32. The forward saves the
 * log-sum-exp of each (row, head); the backward recomputes the probabilities from it.
 * Training shapes run blocked: a block of query (or key) rows of one head against every key
 * (or query) row it sees, scores by sgemm (OpenBLAS, one thread per block), softmax with a
 * vectorized exp, products by sgemm; blocks are shared by the OpenMP team. KV-cache decoding
 * (attention_cached) keeps the one-row online-softmax loop. */
#include "kernels/ops.h"
#include "kernels/pool.h"
#include "kernels/cpu/vexp.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

static float dot(const float *a, const float *b, int D) {
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int d = 0; d < D; d++) s += a[d] * b[d];
    return s;
}

/* y += a * x */
static void axpy(float *y, float a, const float *x, int D) {
#pragma omp simd
    for (int d = 0; d < D; d++) y[d] += a * x[d];
}

#define ATT_KB 64 /* keys scored at once: one rescale of the output per block, not per key */

/* One query row against keys [0, nkeys): o = softmax(q.k * scale) @ v, with a running max
 * over blocks of keys (online softmax), accumulating straight into o. Returns the
 * log-sum-exp. q, o: (D); k, v: rows of D floats, `kstride` floats apart. */
/* Built twice (DP_CLONES_V3): the dot products and updates are most of the time here, and
 * 8-wide FMA doubles their speed. */

DP_CLONES_V3 static float attend_row(float *o, const float *q, const float *k, const float *v,
                                     size_t kstride, int nkeys, int D, float scale) {
    float mx = -INFINITY, s[ATT_KB];
    double sum = 0;
    for (int d = 0; d < D; d++) o[d] = 0;
    for (int j0 = 0; j0 < nkeys; j0 += ATT_KB) {
        int nb = nkeys - j0 < ATT_KB ? nkeys - j0 : ATT_KB;
        float bmx = -INFINITY;
        for (int j = 0; j < nb; j++) {
            s[j] = dot(q, k + (j0 + j) * kstride, D) * scale;
            bmx = s[j] > bmx ? s[j] : bmx;
        }
        if (bmx > mx) { /* new maximum: rescale what was accumulated so far */
            float c = expf(mx - bmx);
            for (int d = 0; d < D; d++) o[d] *= c;
            sum *= c;
            mx = bmx;
        }
        for (int j = 0; j < nb; j++) {
            float w = expf(s[j] - mx);
            sum += w;
            axpy(o, w, v + (j0 + j) * kstride, D);
        }
    }
    for (int d = 0; d < D; d++) o[d] = (float)(o[d] / sum);
    return mx + (float)log(sum);
}

#ifdef DP_X86
/* attend_row for G <= 3 query heads of one kv head (their q and o rows D = 16 * ND floats
 * apart, D = 64 or 128) on AVX-512: each key and value row is loaded once for the G heads, q
 * and the outputs stay in registers (the generic loop loads and stores o for every key), the
 * G dot products of a key reduce side by side, and the exps of a block of scores are
 * vectorized (dp_vexp, within 2 ulp of expf) instead of one expf call per key. */
#define ATT_GMAX 3
__attribute__((target("avx512f,avx2,fma"), always_inline)) static inline void
attend_heads_avx512(float *o, const float *q, const float *k, const float *v, size_t kstride,
                    int nkeys, float scale, const int ND, const int G) {
    const int D = 16 * ND;
    __m512 qv[ATT_GMAX][8], ov[ATT_GMAX][8];
    float mx[ATT_GMAX], s[ATT_GMAX][ATT_KB];
    double sum[ATT_GMAX];
    for (int g = 0; g < G; g++) {
        mx[g] = -INFINITY, sum[g] = 0;
        for (int c = 0; c < ND; c++)
            qv[g][c] = _mm512_loadu_ps(q + g * D + 16 * c), ov[g][c] = _mm512_setzero_ps();
    }
    for (int j0 = 0; j0 < nkeys; j0 += ATT_KB) {
        int nb = nkeys - j0 < ATT_KB ? nkeys - j0 : ATT_KB;
        float bmx[ATT_GMAX];
        for (int g = 0; g < G; g++) bmx[g] = -INFINITY;
        for (int j = 0; j < nb; j++) {
            const float *kj = k + (j0 + j) * kstride;
            __m512 kc[8];
            for (int c = 0; c < ND; c++) kc[c] = _mm512_loadu_ps(kj + 16 * c);
            for (int g = 0; g < G; g++) {
                __m512 a = _mm512_mul_ps(qv[g][0], kc[0]);
                for (int c = 1; c < ND; c++) a = _mm512_fmadd_ps(qv[g][c], kc[c], a);
                s[g][j] = _mm512_reduce_add_ps(a) * scale;
                bmx[g] = s[g][j] > bmx[g] ? s[g][j] : bmx[g];
            }
        }
        for (int g = 0; g < G; g++) {
            if (bmx[g] > mx[g]) { /* new maximum: rescale what was accumulated so far */
                float c = expf(mx[g] - bmx[g]);
                for (int d = 0; d < ND; d++) ov[g][d] = _mm512_mul_ps(ov[g][d], _mm512_set1_ps(c));
                sum[g] *= c;
                mx[g] = bmx[g];
            }
            dp_vexp(s[g], 1.0f, mx[g], nb);
        }
        for (int j = 0; j < nb; j++) {
            const float *vj = v + (j0 + j) * kstride;
            __m512 vc[8];
            for (int c = 0; c < ND; c++) vc[c] = _mm512_loadu_ps(vj + 16 * c);
            for (int g = 0; g < G; g++) {
                __m512 w = _mm512_set1_ps(s[g][j]);
                sum[g] += s[g][j];
                for (int c = 0; c < ND; c++) ov[g][c] = _mm512_fmadd_ps(w, vc[c], ov[g][c]);
            }
        }
    }
    for (int g = 0; g < G; g++)
        for (int c = 0; c < ND; c++) { /* o / sum as the generic loop rounds it: in double */
            float t[16];
            _mm512_storeu_ps(t, ov[g][c]);
            for (int d = 0; d < 16; d++) o[g * D + 16 * c + d] = (float)(t[d] / sum[g]);
        }
}

#define ATT_HEADS(ND, G)                                                                           \
    __attribute__((target("avx512f,avx2,fma"))) static void attend_heads_##ND##_##G(                \
        float *o, const float *q, const float *k, const float *v, size_t kstride, int nkeys,       \
        float scale) {                                                                             \
        attend_heads_avx512(o, q, k, v, kstride, nkeys, scale, ND, G);                             \
    }
ATT_HEADS(4, 1) ATT_HEADS(4, 2) ATT_HEADS(4, 3) ATT_HEADS(8, 1)
typedef void (*att_heads_fn)(float *, const float *, const float *, const float *, size_t, int,
                             float);
/* by head size (64, 128) and heads at once; D = 128 one head at a time (registers) */
static const att_heads_fn att_heads[2][ATT_GMAX + 1] = {
    {NULL, attend_heads_4_1, attend_heads_4_2, attend_heads_4_3},
    {NULL, attend_heads_8_1, NULL, NULL}};
#endif

typedef struct {
    float *out;
    const float *q, *kcache, *vcache;
    int Tq, Tk, H, KVH, D;
    int wide; /* the AVX-512 rows (D = 64 or 128) */
    int gw;   /* heads per unit of work: up to ATT_GMAX on the AVX-512 rows of D = 64, else 1 */
} cached_job;

/* units [u0, u1): unit u is up to gw consecutive heads of one kv head in one query row
 * (units per row: KVH * ceil(group / gw)) */
static void cached_rows(void *ctx, int64_t u0, int64_t u1) {
    const cached_job *j = ctx;
    const int H = j->H, D = j->D, group = H / j->KVH, per_kv = (group + j->gw - 1) / j->gw;
    const float scale = 1.0f / sqrtf((float)D);
    const size_t kstride = (size_t)j->KVH * D;
    for (int64_t u = u0; u < u1; u++) {
        int t = (int)(u / (j->KVH * per_kv)), r = (int)(u % (j->KVH * per_kv));
        int kvh = r / per_kv, h0 = kvh * group + (r % per_kv) * j->gw;
        int nh = group - (h0 - kvh * group) < j->gw ? group - (h0 - kvh * group) : j->gw;
        int nkeys = j->Tk - j->Tq + t + 1;
        float *o = j->out + ((size_t)t * H + h0) * D;
        const float *q = j->q + ((size_t)t * H + h0) * D, *k = j->kcache + (size_t)kvh * D,
                    *v = j->vcache + (size_t)kvh * D;
#ifdef DP_X86
        if (j->wide) {
            att_heads[D == 128][nh](o, q, k, v, kstride, nkeys, scale);
            continue;
        }
#endif
        for (int h = 0; h < nh; h++)
            attend_row(o + (size_t)h * D, q + (size_t)h * D, k, v, kstride, nkeys, D, scale);
    }
}

void attention_cached(float *out, const float *q, const float *kcache, const float *vcache, int Tq,
                      int Tk, int H, int KVH, int D) {
    int wide = dp_simd_level() == SIMD_AVX512 && (D == 64 || D == 128);
    int gw = wide && D == 64 ? 3 : 1; /* ATT_GMAX (x86 only) */
    cached_job j = {out, q, kcache, vcache, Tq, Tk, H, KVH, D, wide, gw};
    const int group = H / KVH, units = Tq * KVH * ((group + gw - 1) / gw);
    if (Tq == 1) {
        /* a decode row: units shared by the decode pool (its workers are awake from the step's
         * GEMVs; an OpenMP team would be a second set of spinning threads); a short cache
         * costs less than the hand-off */
        if ((size_t)Tk * H * D >= (1u << 15))
            dp_pool_for(units, 1, cached_rows, &j);
        else
            cached_rows(&j, 0, units);
        return;
    }
#pragma omp parallel for schedule(static)
    for (int u = 0; u < units; u++) cached_rows(&j, u, u + 1);
}

/* ------------------------------------------------------------------ blocked (training) */

#define ATT_B 64 /* query rows (forward, dq) or key rows (dk, dv) per block */

/* p[j] = exp(p[j] - sub) for j < n, 0 for n <= j < w */
DP_CLONES_V3 static void exp_row(float *p, float sub, int n, int w) {
    dp_vexp(p, 1.0f, sub, n);
    for (int j = n; j < w; j++) p[j] = 0.0f;
}

DP_CLONES_V3 static float max_row(const float *p, int n) {
    float m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int j = 0; j < n; j++) m = p[j] > m ? p[j] : m;
    return m;
}

DP_CLONES_V3 static float sum_row(const float *p, int n) {
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int j = 0; j < n; j++) s += p[j];
    return s;
}

/* ds[j] = p[j] * (ds[j] - di) * scale */
DP_CLONES_V3 static void dsoft_row(float *ds, const float *p, float di, float scale, int n) {
#pragma omp simd
    for (int j = 0; j < n; j++) ds[j] = p[j] * (ds[j] - di) * scale;
}

/* The block tasks of one call: sequence s has ceil(len / ATT_B) blocks per head (or per kv
 * head); task t -> (sequence, head, block) through the prefix counts. */
typedef struct {
    const int32_t *cu;
    int nseq, heads;
    int *first; /* (nseq + 1) first task of each sequence */
} tasks;

static int tasks_init(tasks *t, const int32_t *cu, int nseq, int heads, int *first) {
    t->cu = cu, t->nseq = nseq, t->heads = heads, t->first = first;
    first[0] = 0;
    for (int s = 0; s < nseq; s++)
        first[s + 1] = first[s] + heads * ((cu[s + 1] - cu[s] + ATT_B - 1) / ATT_B);
    return first[nseq];
}

/* task -> sequence s, head h, rows [r0, r1) of the block */
static void task_of(const tasks *t, int task, int *s, int *h, int *r0, int *r1) {
    int lo = 0, hi = t->nseq - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (t->first[mid] <= task)
            lo = mid;
        else
            hi = mid - 1;
    }
    int i = task - t->first[lo], nb = (t->cu[lo + 1] - t->cu[lo] + ATT_B - 1) / ATT_B;
    *s = lo, *h = i / nb;
    *r0 = t->cu[lo] + (i % nb) * ATT_B;
    *r1 = *r0 + ATT_B < t->cu[lo + 1] ? *r0 + ATT_B : t->cu[lo + 1];
}

static int longest(const int32_t *cu, int nseq) {
    int T = 1;
    for (int s = 0; s < nseq; s++)
        if (cu[s + 1] - cu[s] > T) T = cu[s + 1] - cu[s];
    return T;
}

/* Runs body(ctx, task, scratch) for every task over the current OpenMP team when called by
 * every thread of one (so the training step threads a whole layer with one parallel region),
 * else over a team of its own. scratch: per thread, `floats` floats. Dynamic scheduling is
 * safe for reproducibility: every task owns its outputs. */
typedef void (*task_fn)(const void *ctx, int task, float *scratch);
static void run_tasks(task_fn body, const void *ctx, int ntasks, size_t floats) {
    if (omp_in_parallel()) {
        float *scr = malloc(floats * sizeof(float));
        if (!scr) abort(); /* a few blocks of scores; nothing sensible is left to do */
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < ntasks; t++) body(ctx, t, scr);
        free(scr);
        return;
    }
#pragma omp parallel
    {
        float *scr = malloc(floats * sizeof(float));
        if (!scr) abort();
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < ntasks; t++) body(ctx, t, scr);
        free(scr);
    }
}

typedef struct {
    float *out, *lse, *dq, *dk, *dv;
    const float *q, *k, *v, *dout, *o, *lse_in;
    tasks tq, tk;
    int H, KVH, D, T;
    float scale;
} att_ctx;

/* forward, one block of query rows of head h: S = scale Q K^T over keys [start, r1), causal
 * softmax per row (lse saved), O = P V */
static void fwd_task(const void *vc, int task, float *S) {
    const att_ctx *c = vc;
    int s, h, r0, r1;
    task_of(&c->tq, task, &s, &h, &r0, &r1);
    int H = c->H, D = c->D, kvh = h / (H / c->KVH), start = c->tq.cu[s];
    int bq = r1 - r0, nk = r1 - start;
    size_t qs = (size_t)H * D, ks = (size_t)c->KVH * D;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, nk, D, c->scale,
                c->q + r0 * qs + h * D, (int)qs, c->k + start * ks + kvh * D, (int)ks, 0.0f, S, nk);
    for (int i = 0; i < bq; i++) {
        float *p = S + (size_t)i * nk;
        int n = r0 + i - start + 1; /* keys this row sees */
        float mx = max_row(p, n);
        exp_row(p, mx, n, nk);
        float sum = sum_row(p, n), inv = 1.0f / sum;
        for (int j = 0; j < n; j++) p[j] *= inv;
        if (c->lse) c->lse[(size_t)(r0 + i) * H + h] = mx + logf(sum);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, D, nk, 1.0f, S, nk,
                c->v + start * ks + kvh * D, (int)ks, 0.0f, c->out + r0 * qs + h * D, (int)qs);
}

void attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                       const int32_t *cu_seqlens, int nseq, int H, int KVH, int D) {
    int first[nseq + 1];
    att_ctx c = {.out = out,
                 .lse = lse,
                 .q = q,
                 .k = k,
                 .v = v,
                 .H = H,
                 .KVH = KVH,
                 .D = D,
                 .scale = 1.0f / sqrtf((float)D),
                 .T = longest(cu_seqlens, nseq)};
    int n = tasks_init(&c.tq, cu_seqlens, nseq, H, first);
    run_tasks(fwd_task, &c, n, (size_t)ATT_B * c.T);
}

/* Di = dout_i . out_i for rows [r0, r1) of head h */
DP_CLONES_V3 static void row_dots(float *di, const att_ctx *c, int h, int r0, int r1) {
    size_t qs = (size_t)c->H * c->D;
    for (int i = r0; i < r1; i++) {
        const float *g = c->dout + i * qs + h * c->D, *o = c->o + i * qs + h * c->D;
        float s = 0;
#pragma omp simd reduction(+ : s)
        for (int d = 0; d < c->D; d++) s += g[d] * o[d];
        di[i - r0] = s;
    }
}

/* With P = softmax(S), S = scale * q.k, and Di = dout_i . out_i = sum_j P_ij dP_ij:
 *   dP_ij = dout_i . v_j,  dS_ij = P_ij (dP_ij - Di),
 *   dq_i += scale sum_j dS_ij k_j,  dk_j += scale sum_i dS_ij q_i,  dv_j += sum_i P_ij dout_i.
 * dq by blocks of query rows per head; dk, dv by blocks of key rows per kv head (every query
 * head of its group, every later query row): each task owns its output rows, so there are no
 * atomics and the result does not depend on the thread count. */
static void dq_task(const void *vc, int task, float *scr) {
    const att_ctx *c = vc;
    int s, h, r0, r1;
    task_of(&c->tq, task, &s, &h, &r0, &r1);
    int H = c->H, D = c->D, kvh = h / (H / c->KVH), start = c->tq.cu[s];
    int bq = r1 - r0, nk = r1 - start;
    size_t qs = (size_t)H * D, ks = (size_t)c->KVH * D;
    float *P = scr, *dS = scr + (size_t)ATT_B * c->T, *di = dS + (size_t)ATT_B * c->T;
    const float *kb = c->k + start * ks + kvh * D, *vb = c->v + start * ks + kvh * D;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, nk, D, c->scale,
                c->q + r0 * qs + h * D, (int)qs, kb, (int)ks, 0.0f, P, nk);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, nk, D, 1.0f, c->dout + r0 * qs + h * D,
                (int)qs, vb, (int)ks, 0.0f, dS, nk);
    row_dots(di, c, h, r0, r1);
    for (int i = 0; i < bq; i++) {
        float *p = P + (size_t)i * nk, *ds = dS + (size_t)i * nk;
        int n = r0 + i - start + 1;
        exp_row(p, c->lse_in[(size_t)(r0 + i) * H + h], n, nk);
        dsoft_row(ds, p, di[i], c->scale, nk);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, D, nk, 1.0f, dS, nk, kb, (int)ks,
                1.0f, c->dq + r0 * qs + h * D, (int)qs);
}

static void dkv_task(const void *vc, int task, float *scr) {
    const att_ctx *c = vc;
    int s, kvh, k0, k1;
    task_of(&c->tk, task, &s, &kvh, &k0, &k1);
    int H = c->H, D = c->D, group = H / c->KVH, end = c->tk.cu[s + 1];
    int bk = k1 - k0, nq = end - k0; /* queries k0.. see the block */
    size_t qs = (size_t)H * D, ks = (size_t)c->KVH * D;
    float *P = scr, *dS = scr + (size_t)ATT_B * c->T, *di = dS + (size_t)ATT_B * c->T;
    const float *kb = c->k + k0 * ks + kvh * D, *vb = c->v + k0 * ks + kvh * D;
    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        const float *qb = c->q + k0 * qs + h * D, *gb = c->dout + k0 * qs + h * D;
        /* transposed scores: row j = key k0 + j, column i = query k0 + i (seen when i >= j) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bk, nq, D, c->scale, kb, (int)ks, qb,
                    (int)qs, 0.0f, P, nq);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bk, nq, D, 1.0f, vb, (int)ks, gb,
                    (int)qs, 0.0f, dS, nq);
        row_dots(di, c, h, k0, end);
        for (int j = 0; j < bk; j++) {
            float *p = P + (size_t)j * nq, *ds = dS + (size_t)j * nq;
            for (int i = 0; i < j; i++) p[i] = -INFINITY; /* queries before the key */
            for (int i = j; i < nq; i++) p[i] -= c->lse_in[(size_t)(k0 + i) * H + h];
            exp_row(p, 0.0f, nq, nq);
            for (int i = 0; i < nq; i++) ds[i] = p[i] * (ds[i] - di[i]) * c->scale;
        }
        if (c->dv)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bk, D, nq, 1.0f, P, nq, gb,
                        (int)qs, 1.0f, c->dv + k0 * ks + kvh * D, (int)ks);
        if (c->dk)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bk, D, nq, 1.0f, dS, nq, qb,
                        (int)qs, 1.0f, c->dk + k0 * ks + kvh * D, (int)ks);
    }
}

/* both kinds of task in one list: dq blocks first, then dk/dv blocks */
static void bwd_task(const void *vc, int task, float *scr) {
    const att_ctx *c = vc;
    int nq = c->dq ? c->tq.first[c->tq.nseq] : 0;
    if (task < nq)
        dq_task(vc, task, scr);
    else
        dkv_task(vc, task - nq, scr);
}

void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                        const float *lse, const float *q, const float *k, const float *v,
                        const int32_t *cu_seqlens, int nseq, int H, int KVH, int D) {
    int first_q[nseq + 1], first_k[nseq + 1];
    att_ctx c = {.dq = dq,
                 .dk = dk,
                 .dv = dv,
                 .dout = dout,
                 .o = out,
                 .lse_in = lse,
                 .q = q,
                 .k = k,
                 .v = v,
                 .H = H,
                 .KVH = KVH,
                 .D = D,
                 .scale = 1.0f / sqrtf((float)D),
                 .T = longest(cu_seqlens, nseq)};
    int nq = tasks_init(&c.tq, cu_seqlens, nseq, H, first_q);
    int nk = tasks_init(&c.tk, cu_seqlens, nseq, KVH, first_k);
    int n = (dq ? nq : 0) + (dk || dv ? nk : 0);
    run_tasks(bwd_task, &c, n, (size_t)2 * ATT_B * c.T + (size_t)c.T);
}
