/* Causal grouped-query attention over packed sequences, fp32 reference. The forward saves the
 * log-sum-exp of each (row, head); the backward recomputes the probabilities from it. */
#include "kernels/ops.h"

#include <math.h>

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
/* Built twice (AVX2+FMA and baseline x86-64), picked at load time: the dot products and
 * updates are most of the time here, and 8-wide FMA doubles their speed. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) &&                             \
    !defined(__SANITIZE_ADDRESS__)
#define ATT_CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define ATT_CLONES
#endif

ATT_CLONES static float attend_row(float *o, const float *q, const float *k, const float *v,
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

/* The sequence holding `row` (rows are sorted): the last s with cu_seqlens[s] <= row. */
static int seq_of(const int32_t *cu_seqlens, int nseq, int row) {
    int lo = 0, hi = nseq - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (cu_seqlens[mid] <= row)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

void attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                       const int32_t *cu_seqlens, int nseq, int H, int KVH, int D) {
    int rows0 = cu_seqlens[0], N = cu_seqlens[nseq] - rows0, group = H / KVH;
    float scale = 1.0f / sqrtf((float)D);
    size_t kstride = (size_t)KVH * D;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N * H; i++) {
        int n = rows0 + i / H, h = i % H, kvh = h / group;
        int start = cu_seqlens[seq_of(cu_seqlens, nseq, n)];
        size_t kv0 = (size_t)start * kstride + (size_t)kvh * D;
        float l = attend_row(out + ((size_t)n * H + h) * D, q + ((size_t)n * H + h) * D, k + kv0,
                             v + kv0, kstride, n - start + 1, D, scale);
        if (lse) lse[(size_t)n * H + h] = l;
    }
}

void attention_cached(float *out, const float *q, const float *kcache, const float *vcache, int Tq,
                      int Tk, int H, int KVH, int D) {
    int group = H / KVH;
    float scale = 1.0f / sqrtf((float)D);
    size_t kstride = (size_t)KVH * D;
    /* one decode row over a short cache costs less than waking the team */
#pragma omp parallel for schedule(static) if (Tq > 1 || (size_t)Tk * H * D >= (1u << 17))
    for (int i = 0; i < Tq * H; i++) {
        int t = i / H, h = i % H, kvh = h / group;
        attend_row(out + ((size_t)t * H + h) * D, q + ((size_t)t * H + h) * D,
                   kcache + (size_t)kvh * D, vcache + (size_t)kvh * D, kstride, Tk - Tq + t + 1, D,
                   scale);
    }
}

/* With P = softmax(S), S = scale * q.k, and Di = dout_i . out_i = sum_j P_ij dP_ij:
 *   dP_ij = dout_i . v_j,  dS_ij = P_ij (dP_ij - Di),
 *   dq_i += scale sum_j dS_ij k_j,  dk_j += scale sum_i dS_ij q_i,  dv_j += sum_i P_ij dout_i.
 * Two passes, each output row owned by one iteration (no atomics, thread-count independent):
 * pass 1 over query rows for dq, pass 2 over key rows for dk and dv (all heads of the group). */
ATT_CLONES void attention_backward(float *dq, float *dk, float *dv, const float *dout,
                                   const float *out, const float *lse, const float *q,
                                   const float *k, const float *v, const int32_t *cu_seqlens,
                                   int nseq, int H, int KVH, int D) {
    int rows0 = cu_seqlens[0], N = cu_seqlens[nseq] - rows0, group = H / KVH;
    float scale = 1.0f / sqrtf((float)D);
    size_t qstride = (size_t)H * D, kstride = (size_t)KVH * D;
    if (dq) {
#pragma omp parallel for schedule(static)
        for (int i = 0; i < N * H; i++) {
            int n = rows0 + i / H, h = i % H, kvh = h / group;
            int start = cu_seqlens[seq_of(cu_seqlens, nseq, n)];
            size_t qi0 = (size_t)n * qstride + (size_t)h * D;
            const float *qi = q + qi0, *gi = dout + qi0;
            float l = lse[(size_t)n * H + h], Di = dot(gi, out + qi0, D);
            for (int j = start; j <= n; j++) {
                const float *kj = k + (size_t)j * kstride + (size_t)kvh * D;
                const float *vj = v + (size_t)j * kstride + (size_t)kvh * D;
                float ds = expf(dot(qi, kj, D) * scale - l) * (dot(gi, vj, D) - Di) * scale;
                axpy(dq + qi0, ds, kj, D);
            }
        }
    }
    if (dk || dv) {
#pragma omp parallel for schedule(static)
        for (int i = 0; i < N * KVH; i++) {
            int j = rows0 + i / KVH, kvh = i % KVH;
            int end = cu_seqlens[seq_of(cu_seqlens, nseq, j) + 1];
            size_t kj0 = (size_t)j * kstride + (size_t)kvh * D;
            const float *kj = k + kj0, *vj = v + kj0;
            for (int n = j; n < end; n++) {
                for (int h = kvh * group; h < (kvh + 1) * group; h++) {
                    size_t qi0 = (size_t)n * qstride + (size_t)h * D;
                    const float *qi = q + qi0, *gi = dout + qi0;
                    float p = expf(dot(qi, kj, D) * scale - lse[(size_t)n * H + h]);
                    float ds = p * (dot(gi, vj, D) - dot(gi, out + qi0, D)) * scale;
                    if (dk) axpy(dk + kj0, ds, qi, D);
                    if (dv) axpy(dv + kj0, p, gi, D);
                }
            }
        }
    }
}
