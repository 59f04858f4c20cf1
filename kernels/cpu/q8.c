/* Q8 storage (int8 blocks of 32 per row + fp32 scales) and its fused GEMV for decoding: the
 * tied 49152 x 576 lm_head of SmolLM2 reads 28 MiB per token instead of 108 MiB of fp32. */
#include "kernels/q8.h"

#include "kernels/status.h"
#include "kernels/pool.h"

#include "kernels/cpu/simd.h"
#include "kernels/cpu/gemv_i8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int dp_q8_quantize(dp_q8 *q, const float *w, int64_t rows, int64_t cols) {
    memset(q, 0, sizeof *q);
    if (rows <= 0 || cols <= 0 || cols % DP_Q8_BLOCK || rows > INT64_MAX / cols)
        return dp_fail("Q8: bad shape (%lld, %lld): columns must be a positive multiple of %d",
                       (long long)rows, (long long)cols, DP_Q8_BLOCK);
    const int64_t nb = rows * cols / DP_Q8_BLOCK;
    q->rows = rows, q->cols = cols;
    q->q = malloc((size_t)(rows * cols));
    q->d = malloc((size_t)nb * sizeof(float));
    if (!q->q || !q->d) {
        dp_q8_free(q);
        return dp_fail("out of memory for a (%lld, %lld) Q8 matrix", (long long)rows,
                       (long long)cols);
    }
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        const float *x = w + b * DP_Q8_BLOCK;
        float am = 0;
        for (int i = 0; i < DP_Q8_BLOCK; i++) am = fmaxf(am, fabsf(x[i]));
        float d = am / 127.0f;
        q->d[b] = d;
        for (int i = 0; i < DP_Q8_BLOCK; i++) {
            /* division, not a reciprocal: exact for values that already are k * d */
            float v = d > 0 ? roundf(x[i] / d) : 0.0f;
            q->q[b * DP_Q8_BLOCK + i] = (int8_t)fminf(fmaxf(v, -127.0f), 127.0f);
        }
    }
    return 0;
}

void dp_q8_free(dp_q8 *q) {
    free(q->q);
    free(q->d);
    q->q = NULL, q->d = NULL;
}

size_t dp_q8_bytes(const dp_q8 *q) {
    return (size_t)(q->rows * q->cols) + (size_t)(q->rows * q->cols / DP_Q8_BLOCK) * sizeof(float);
}

void dp_q8_dequantize_row(const dp_q8 *q, int64_t row, float *out) {
    const int8_t *c = q->q + row * q->cols;
    const float *d = q->d + row * (q->cols / DP_Q8_BLOCK);
    for (int64_t i = 0; i < q->cols; i++) out[i] = (float)c[i] * d[i / DP_Q8_BLOCK];
}

static float row_dot_scalar(const int8_t *q, const float *d, const float *x, int C) {
    float total = 0;
    for (int b = 0; b < C / DP_Q8_BLOCK; b++) {
        float s = 0;
        for (int i = 0; i < DP_Q8_BLOCK; i++)
            s += (float)q[b * DP_Q8_BLOCK + i] * x[b * DP_Q8_BLOCK + i];
        total += s * d[b];
    }
    return total;
}

#ifdef DP_X86
__attribute__((target("avx2,fma"))) static float row_dot_avx2(const int8_t *q, const float *d,
                                                              const float *x, int C) {
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < C / DP_Q8_BLOCK; b++) {
        const int8_t *qb = q + b * DP_Q8_BLOCK;
        const float *xb = x + b * DP_Q8_BLOCK;
        DP_PREFETCH(qb);
        __m256 s = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            __m128i c = _mm_loadl_epi64((const __m128i *)(qb + 8 * k));
            __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c));
            s = _mm256_fmadd_ps(v, _mm256_loadu_ps(xb + 8 * k), s);
        }
        acc = _mm256_fmadd_ps(s, _mm256_set1_ps(d[b]), acc);
    }
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx512f"))) static float row_dot_avx512(const int8_t *q, const float *d,
                                                               const float *x, int C) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    for (int b = 0; b < C / DP_Q8_BLOCK; b++) {
        const int8_t *qb = q + b * DP_Q8_BLOCK;
        const float *xb = x + b * DP_Q8_BLOCK;
        DP_PREFETCH(qb);
        __m512 v0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)qb)));
        __m512 v1 =
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(qb + 16))));
        /* the block's sum, then one multiply-add by its scale; alternate blocks go to two
         * accumulators (independent FMA chains) */
        __m512 s = _mm512_fmadd_ps(v1, _mm512_loadu_ps(xb + 16),
                                   _mm512_mul_ps(v0, _mm512_loadu_ps(xb)));
        if (b & 1)
            acc1 = _mm512_fmadd_ps(s, _mm512_set1_ps(d[b]), acc1);
        else
            acc0 = _mm512_fmadd_ps(s, _mm512_set1_ps(d[b]), acc0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

#endif

#ifdef DP_X86
/* Several inputs against one row (a batched decode step's heads): each block of codes is
 * widened once for all R <= DP_Q8_ROWS inputs. Inlined into one instance per R (below), so
 * the accumulators stay in registers. */
__attribute__((target("avx512f"), always_inline)) static inline void
row_dots_avx512(const int8_t *q, const float *d, const float *const *x, int C, int R, float *out) {
    __m512 acc[DP_Q8_ROWS];
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
    for (int b = 0; b < C / DP_Q8_BLOCK; b++) {
        const int8_t *qb = q + b * DP_Q8_BLOCK;
        __m512 db = _mm512_set1_ps(d[b]);
        DP_PREFETCH(qb);
        __m512 v0 = _mm512_mul_ps(
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)qb))), db);
        __m512 v1 = _mm512_mul_ps(
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(qb + 16)))),
            db);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const float *xb = x[r] + b * DP_Q8_BLOCK;
            acc[r] = _mm512_fmadd_ps(v0, _mm512_loadu_ps(xb), acc[r]);
            acc[r] = _mm512_fmadd_ps(v1, _mm512_loadu_ps(xb + 16), acc[r]);
        }
    }
    for (int r = 0; r < R; r++) out[r] = _mm512_reduce_add_ps(acc[r]);
}

/* R as a constant in each instance */
#define Q8_ROW_DOTS_FIXED(R)                                                                       \
    __attribute__((target("avx512f"))) static void row_dots_avx512_##R(                            \
        const int8_t *q, const float *d, const float *const *x, int C, float *out) {               \
        row_dots_avx512(q, d, x, C, R, out);                                                       \
    }
Q8_ROW_DOTS_FIXED(2) Q8_ROW_DOTS_FIXED(3) Q8_ROW_DOTS_FIXED(4) Q8_ROW_DOTS_FIXED(5)
Q8_ROW_DOTS_FIXED(6) Q8_ROW_DOTS_FIXED(7) Q8_ROW_DOTS_FIXED(8)
typedef void (*q8_row_dots_fn)(const int8_t *, const float *, const float *const *, int, float *);
static const q8_row_dots_fn row_dots_by_r[DP_Q8_ROWS + 1] = {
    NULL, NULL, row_dots_avx512_2, row_dots_avx512_3, row_dots_avx512_4,
    row_dots_avx512_5, row_dots_avx512_6, row_dots_avx512_7, row_dots_avx512_8};
#endif

typedef struct {
    float *out;            /* (R, OC) */
    const float *x, *bias; /* x (R, C) */
    const dp_q8 *w;
    int simd, C, R, OC;
    const dp_act_q8 *a; /* (R) int8 inputs (gemv_q8_rows_i8), or NULL */
} gemv_job;

static void gemv_chunk(void *ctx, int64_t o0, int64_t o1) {
    const gemv_job *j = ctx;
    if (j->a) {
        dp_i8_q8_rows(j->out, j->OC, j->a, j->R, j->w, j->bias, j->C, o0, o1);
        return;
    }
    const int C = j->C, nbr = C / DP_Q8_BLOCK;
    const float *xs[DP_Q8_ROWS];
    for (int r = 0; r < j->R; r++) xs[r] = j->x + (size_t)r * C;
    int64_t o = o0;
    for (; o < o1; o++) {
        const int8_t *q = j->w->q + (size_t)o * C;
        const float *d = j->w->d + (size_t)o * nbr;
        float s[DP_Q8_ROWS];
#ifdef DP_X86
        if (j->simd == SIMD_AVX512 && j->R > 1)
            row_dots_by_r[j->R](q, d, xs, C, s);
        else if (j->simd == SIMD_AVX512)
            s[0] = row_dot_avx512(q, d, xs[0], C);
        else if (j->simd == SIMD_AVX2)
            for (int r = 0; r < j->R; r++) s[r] = row_dot_avx2(q, d, xs[r], C);
        else
#endif
            for (int r = 0; r < j->R; r++) s[r] = row_dot_scalar(q, d, xs[r], C);
        for (int r = 0; r < j->R; r++)
            j->out[(size_t)r * j->OC + o] = s[r] + (j->bias ? j->bias[o] : 0);
    }
}

/* gemv_q8_rows, with int8 inputs when i8 (the caller checked dp_gemv_q8_i8_fits) */
static void gemv_rows_q8(float *out, const float *x, const dp_q8 *w, const float *bias, int R,
                         int C, int OC, bool i8) {
    const size_t per = i8 ? dp_i8_q8_act_bytes(C) : 0,
                 need = (R < DP_Q8_ROWS ? R : DP_Q8_ROWS) * per;
    _Alignas(64) uint8_t stack[32768];
    uint8_t *buf = need <= sizeof stack ? stack : malloc(need);
    if (!buf) abort(); /* R x ~2C bytes: out of memory here leaves nothing sensible to do */
    for (int r0 = 0; r0 < R; r0 += DP_Q8_ROWS) {
        int g = R - r0 < DP_Q8_ROWS ? R - r0 : DP_Q8_ROWS;
        dp_act_q8 a[DP_Q8_ROWS];
        for (int r = 0; i8 && r < g; r++)
            dp_i8_q8_quant(&a[r], buf + r * per, x + (size_t)(r0 + r) * C, C);
        gemv_job j = {out + (size_t)r0 * OC, x + (size_t)r0 * C, bias, w, dp_simd_level(), C, g, OC,
                      i8 ? a : NULL};
        dp_pool_rows(OC, gemv_chunk, &j);
    }
    if (buf != stack) free(buf);
}

void gemv_q8_rows(float *out, const float *x, const dp_q8 *w, const float *bias, int R, int C,
                  int OC) {
    gemv_rows_q8(out, x, w, bias, R, C, OC, false);
}

void gemv_q8_rows_i8(float *out, const float *x, const dp_q8 *w, const float *bias, int R, int C,
                     int OC) {
    gemv_rows_q8(out, x, w, bias, R, C, OC, dp_gemv_q8_i8_fits(C));
}

void gemv_q8(float *out, const float *x, const dp_q8 *w, const float *bias, int C, int OC) {
    gemv_q8_rows(out, x, w, bias, 1, C, OC);
}
