/* Linear layers on the CPU: fp32 via OpenBLAS sgemm, NF4 weights dequantized per row tile then
 * sgemm (prefill, training), and a fused NF4 dot product per row for one token (decode), with
 * OpenMP across rows and an AVX2 path picked at run time. */
#include "kernels/nf4.h"
#include "kernels/ops.h"
#include "kernels/pool.h"

#include <cblas.h>
#include "kernels/cpu/simd.h"
#include "kernels/cpu/gemv_i8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void add_bias(float *out, const float *bias, int N, int OC) {
    if (!bias) return;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) out[(size_t)n * OC + o] += bias[o];
}

void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N,
                    int C, int OC) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, C, weight, C, 0.0f,
                out, OC);
    add_bias(out, bias, N, OC);
}

void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int C, int OC) {
    if (dinp) /* (N, C) += (N, OC) @ (OC, C) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dout, OC, weight, C,
                    1.0f, dinp, C);
    if (dweight) /* (OC, C) += (N, OC)^T @ (N, C) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f,
                    dweight, C);
    if (dbias)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) dbias[o] += dout[(size_t)n * OC + o];
}

/* ------------------------------------------------------------------ NF4, tiled */

/* rows per dequantized tile: about 1 MiB of fp32, at least 16 rows */
static int tile_rows(int C, int OC) {
    int tr = (int)((1 << 18) / (C > 0 ? C : 1));
    if (tr < 16) tr = 16;
    return tr < OC ? tr : OC;
}

static void dequant_tile(const dp_nf4 *w, float *tile, int r0, int tr, int C) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < tr; r++)
        dp_nf4_dequantize_range(w, tile + (size_t)r * C, (int64_t)(r0 + r) * C, C);
}

void matmul_nf4_forward(float *out, const float *inp, const dp_nf4 *w, const float *bias, int N,
                        int C, int OC) {
    if (N == 1) {
        gemv_nf4(out, inp, w, bias, C, OC);
        return;
    }
    int tr = tile_rows(C, OC);
    float *tile = malloc((size_t)tr * C * sizeof(float));
    if (!tile) abort(); /* ~1 MiB: out of memory here leaves nothing sensible to do */
    for (int r0 = 0; r0 < OC; r0 += tr) {
        int t = OC - r0 < tr ? OC - r0 : tr;
        dequant_tile(w, tile, r0, t, C);
        /* out[:, r0:r0+t] = inp @ tile^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, t, C, 1.0f, inp, C, tile, C, 0.0f,
                    out + r0, OC);
    }
    free(tile);
    add_bias(out, bias, N, OC);
}

void matmul_nf4_forward_cols(float *out, const float *inp, const dp_nf4 *w, const float *bias,
                             int N, int C, int OC, int o0, int o1) {
    if (o1 <= o0) return;
    int tr = tile_rows(C, o1 - o0);
    float *tile = malloc((size_t)tr * C * sizeof(float));
    if (!tile) abort(); /* ~1 MiB: out of memory here leaves nothing sensible to do */
    for (int r0 = o0; r0 < o1; r0 += tr) {
        int t = o1 - r0 < tr ? o1 - r0 : tr;
        for (int r = 0; r < t; r++) /* this thread's rows only: no team, no barrier */
            dp_nf4_dequantize_range(w, tile + (size_t)r * C, (int64_t)(r0 + r) * C, C);
        /* out[:, r0:r0+t] = inp @ tile^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, t, C, 1.0f, inp, C, tile, C, 0.0f,
                    out + r0, OC);
    }
    free(tile);
    if (bias)
        for (int n = 0; n < N; n++)
            for (int o = o0; o < o1; o++) out[(size_t)n * OC + o] += bias[o];
}

void matmul_nf4_backward_input(float *dinp, const float *dout, const dp_nf4 *w, int N, int C,
                               int OC) {
    int tr = tile_rows(C, OC);
    float *tile = malloc((size_t)tr * C * sizeof(float));
    if (!tile) abort();
    for (int r0 = 0; r0 < OC; r0 += tr) {
        int t = OC - r0 < tr ? OC - r0 : tr;
        dequant_tile(w, tile, r0, t, C);
        /* dinp += dout[:, r0:r0+t] @ tile */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, t, 1.0f, dout + r0, OC, tile,
                    C, 1.0f, dinp, C);
    }
    free(tile);
}

/* ------------------------------------------------------------------ NF4, fused GEMV */

/* one row, any layout: element-wise through the generic dequantizer (rows that share blocks) */
static float row_dot_generic(const dp_nf4 *w, const float *x, int64_t row, int C) {
    float buf[256];
    double s = 0;
    for (int c0 = 0; c0 < C; c0 += 256) {
        int n = C - c0 < 256 ? C - c0 : 256;
        dp_nf4_dequantize_range(w, buf, row * C + c0, n);
        for (int i = 0; i < n; i++) s += (double)buf[i] * x[c0 + i];
    }
    return (float)s;
}

/* one row whose blocks lie inside it (C % blocksize == 0): per block, sum of code values times
 * x, scaled once by the block's absmax */
/* the fp32 absmax of block b: code[q] * absmax2 + offset (as dp_nf4_absmax) */
static inline float block_absmax(const dp_nf4 *w, const float *map, int64_t b) {
    float v = map[w->absmax_q[b]] * w->absmax2[b / 256];
    return v + w->offset;
}

static float row_dot_scalar(const dp_nf4 *w, const float *x, const float *map, int64_t row, int C) {
    const int bs = w->blocksize;
    const uint8_t *q = w->codes + (size_t)row * C / 2;
    const int64_t b0 = row * C / bs;
    float total = 0;
    for (int b = 0; b < C / bs; b++) {
        float s = 0;
        const uint8_t *qb = q + (size_t)b * bs / 2;
        const float *xb = x + (size_t)b * bs;
        for (int i = 0; i < bs / 2; i++)
            s += dp_nf4_values[qb[i] >> 4] * xb[2 * i] + dp_nf4_values[qb[i] & 15] * xb[2 * i + 1];
        total += s * block_absmax(w, map, b0 + b);
    }
    return total;
}

#ifdef DP_X86
/* The SIMD paths read x de-interleaved in groups of G (16 for AVX2, 32 for AVX-512): the G/2
 * even elements of a group, then its G/2 odd ones. A byte's high nibble is an even element and
 * its low nibble the next odd one, so widened bytes index the table directly (shifted right by
 * 4 for the even ones; the table lookups ignore the bits above the index) and no per-row
 * shuffle is needed. xp is built once per call, shared by all rows. */
static void deinterleave(float *xp, const float *x, int C, int G) {
    for (int g = 0; g < C; g += G)
        for (int k = 0; k < G / 2; k++) {
            xp[g + k] = x[g + 2 * k];
            xp[g + G / 2 + k] = x[g + 2 * k + 1];
        }
}

/* AVX2: 8 bytes -> 8 even and 8 odd codes; the 16-entry table (scaled by the block's absmax)
 * is two 8-lane permutes blended on bit 3 of the code. */
__attribute__((target("avx2,fma"))) static inline __m256 lut16_avx2(__m256 lo, __m256 hi,
                                                                    __m256i idx) {
    __m256 mask = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)); /* bit 3 -> sign */
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx),
                            mask);
}

/* the sum of an AVX register's 8 lanes */
__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static float
row_dot_avx2(const dp_nf4 *w, const float *xp, const float *map, int64_t row, int C) {
    const int bs = w->blocksize;
    const uint8_t *q = w->codes + (size_t)row * C / 2;
    const int64_t b0 = row * C / bs;
    const __m256 tlo = _mm256_loadu_ps(dp_nf4_values), thi = _mm256_loadu_ps(dp_nf4_values + 8);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (int b = 0; b < C / bs; b++) {
        __m256 am = _mm256_set1_ps(block_absmax(w, map, b0 + b));
        __m256 lo = _mm256_mul_ps(tlo, am), hi = _mm256_mul_ps(thi, am);
        DP_PREFETCH(q + (size_t)b * bs / 2);
        for (int i = b * bs; i < (b + 1) * bs; i += 16) {
            __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(q + i / 2)));
            __m256 ve = lut16_avx2(lo, hi, _mm256_srli_epi32(v, 4)), vo = lut16_avx2(lo, hi, v);
            acc0 = _mm256_fmadd_ps(ve, _mm256_loadu_ps(xp + i), acc0);
            acc1 = _mm256_fmadd_ps(vo, _mm256_loadu_ps(xp + i + 8), acc1);
        }
    }
    __m256 acc = _mm256_add_ps(acc0, acc1);
    return hsum256(acc);
}

/* AVX-512: 16 bytes -> 16 even and 16 odd codes, each looked up with one permute in the
 * 16-entry table scaled by the block's absmax; 64 elements per step into four independent
 * accumulators (blocksizes are powers of two >= 64). */
__attribute__((target("avx512f"))) static float
row_dot_avx512(const dp_nf4 *w, const float *xp, const float *map, int64_t row, int C) {
    const int bs = w->blocksize;
    const uint8_t *q = w->codes + (size_t)row * C / 2;
    const int64_t b0 = row * C / bs;
    const __m512 tbl = _mm512_loadu_ps(dp_nf4_values);
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(),
           a3 = _mm512_setzero_ps();
    for (int b = 0; b < C / bs; b++) {
        __m512 t = _mm512_mul_ps(tbl, _mm512_set1_ps(block_absmax(w, map, b0 + b)));
        DP_PREFETCH(q + (size_t)b * bs / 2);
        for (int i = b * bs; i < (b + 1) * bs; i += 64) {
            __m512i v0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q + i / 2)));
            __m512i v1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q + i / 2 + 16)));
            a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v0, 4), t),
                                 _mm512_loadu_ps(xp + i), a0);
            a1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(v0, t), _mm512_loadu_ps(xp + i + 16), a1);
            a2 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v1, 4), t),
                                 _mm512_loadu_ps(xp + i + 32), a2);
            a3 = _mm512_fmadd_ps(_mm512_permutexvar_ps(v1, t), _mm512_loadu_ps(xp + i + 48), a3);
        }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

/* Two consecutive rows against one input: the x loads (one per 16 products, as many as the
 * table lookups) are shared by both rows, and the two horizontal sums overlap. */
__attribute__((target("avx512f"))) static void row_dot2_avx512(const dp_nf4 *w, const float *xp,
                                                               const float *map, int64_t row,
                                                               int C, float *out) {
    const int bs = w->blocksize;
    const uint8_t *q0 = w->codes + (size_t)row * C / 2, *q1 = q0 + C / 2;
    const int64_t b0 = row * C / bs, b1 = b0 + C / bs;
    const __m512 tbl = _mm512_loadu_ps(dp_nf4_values);
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), c0 = _mm512_setzero_ps(),
           c1 = _mm512_setzero_ps();
    for (int b = 0; b < C / bs; b++) {
        __m512 t = _mm512_mul_ps(tbl, _mm512_set1_ps(block_absmax(w, map, b0 + b)));
        __m512 u = _mm512_mul_ps(tbl, _mm512_set1_ps(block_absmax(w, map, b1 + b)));
        DP_PREFETCH(q0 + (size_t)b * bs / 2);
        DP_PREFETCH(q1 + (size_t)b * bs / 2);
        for (int i = b * bs; i < (b + 1) * bs; i += 32) {
            __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q0 + i / 2)));
            __m512i y = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q1 + i / 2)));
            __m512 xe = _mm512_loadu_ps(xp + i), xo = _mm512_loadu_ps(xp + i + 16);
            a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), t), xe, a0);
            a1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(v, t), xo, a1);
            c0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(y, 4), u), xe, c0);
            c1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(y, u), xo, c1);
        }
    }
    out[0] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    out[1] = _mm512_reduce_add_ps(_mm512_add_ps(c0, c1));
}

/* Several inputs against one row (a batched decode step): each 64-element chunk of codes is
 * looked up once and multiplied into the R <= DP_GEMV_ROWS inputs xp[0..R) (each de-interleaved
 * as above), so the row's codes are read and decoded once for all of them. */
__attribute__((target("avx512f"), always_inline)) static inline void
row_dots_avx512(const dp_nf4 *w, const float *const *xp, const float *map, int64_t row, int C,
                int R, float *out) {
    const int bs = w->blocksize;
    const uint8_t *q = w->codes + (size_t)row * C / 2;
    const int64_t b0 = row * C / bs;
    const __m512 tbl = _mm512_loadu_ps(dp_nf4_values);
    __m512 acc[DP_GEMV_ROWS];
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
    for (int b = 0; b < C / bs; b++) {
        __m512 t = _mm512_mul_ps(tbl, _mm512_set1_ps(block_absmax(w, map, b0 + b)));
        DP_PREFETCH(q + (size_t)b * bs / 2);
        for (int i = b * bs; i < (b + 1) * bs; i += 32) {
            __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q + i / 2)));
            __m512 ve = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), t),
                   vo = _mm512_permutexvar_ps(v, t);
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                acc[r] = _mm512_fmadd_ps(ve, _mm512_loadu_ps(xp[r] + i), acc[r]);
                acc[r] = _mm512_fmadd_ps(vo, _mm512_loadu_ps(xp[r] + i + 16), acc[r]);
            }
        }
    }
    for (int r = 0; r < R; r++) out[r] = _mm512_reduce_add_ps(acc[r]);
}

/* Two consecutive weight rows against the same R <= DP_GEMV_ROWS inputs: each x load feeds
 * both rows' FMAs (half the loads of two row_dots_avx512 calls, which bound the batched step
 * more than the FMAs do), and the 2R accumulators are independent chains. Every product is
 * added in the same order as row_dots_avx512 adds it, so the sums are bit-for-bit the same. */
__attribute__((target("avx512f"), always_inline)) static inline void
row_dots2_avx512(const dp_nf4 *w, const float *const *xp, const float *map, int64_t row, int C,
                 int R, float *out0, float *out1) {
    const int bs = w->blocksize;
    const uint8_t *q0 = w->codes + (size_t)row * C / 2, *q1 = q0 + C / 2;
    const int64_t b0 = row * C / bs, b1 = b0 + C / bs;
    const __m512 tbl = _mm512_loadu_ps(dp_nf4_values);
    __m512 acc0[DP_GEMV_ROWS], acc1[DP_GEMV_ROWS];
    for (int r = 0; r < R; r++) acc0[r] = acc1[r] = _mm512_setzero_ps();
    for (int b = 0; b < C / bs; b++) {
        __m512 t = _mm512_mul_ps(tbl, _mm512_set1_ps(block_absmax(w, map, b0 + b)));
        __m512 u = _mm512_mul_ps(tbl, _mm512_set1_ps(block_absmax(w, map, b1 + b)));
        DP_PREFETCH(q0 + (size_t)b * bs / 2);
        DP_PREFETCH(q1 + (size_t)b * bs / 2);
        for (int i = b * bs; i < (b + 1) * bs; i += 32) {
            __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q0 + i / 2)));
            __m512i y = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q1 + i / 2)));
            __m512 ve = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), t),
                   vo = _mm512_permutexvar_ps(v, t);
            __m512 ye = _mm512_permutexvar_ps(_mm512_srli_epi32(y, 4), u),
                   yo = _mm512_permutexvar_ps(y, u);
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                __m512 xe = _mm512_loadu_ps(xp[r] + i), xo = _mm512_loadu_ps(xp[r] + i + 16);
                acc0[r] = _mm512_fmadd_ps(ve, xe, acc0[r]);
                acc1[r] = _mm512_fmadd_ps(ye, xe, acc1[r]);
                acc0[r] = _mm512_fmadd_ps(vo, xo, acc0[r]);
                acc1[r] = _mm512_fmadd_ps(yo, xo, acc1[r]);
            }
        }
    }
    for (int r = 0; r < R; r++) {
        out0[r] = _mm512_reduce_add_ps(acc0[r]);
        out1[r] = _mm512_reduce_add_ps(acc1[r]);
    }
}

__attribute__((target("avx2,fma"), always_inline)) static inline void
row_dots_avx2(const dp_nf4 *w, const float *const *xp, const float *map, int64_t row, int C, int R,
              float *out) {
    const int bs = w->blocksize;
    const uint8_t *q = w->codes + (size_t)row * C / 2;
    const int64_t b0 = row * C / bs;
    const __m256 tlo = _mm256_loadu_ps(dp_nf4_values), thi = _mm256_loadu_ps(dp_nf4_values + 8);
    __m256 acc[DP_GEMV_ROWS];
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    for (int b = 0; b < C / bs; b++) {
        __m256 am = _mm256_set1_ps(block_absmax(w, map, b0 + b));
        __m256 lo = _mm256_mul_ps(tlo, am), hi = _mm256_mul_ps(thi, am);
        DP_PREFETCH(q + (size_t)b * bs / 2);
        for (int i = b * bs; i < (b + 1) * bs; i += 16) {
            __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(q + i / 2)));
            __m256 ve = lut16_avx2(lo, hi, _mm256_srli_epi32(v, 4)), vo = lut16_avx2(lo, hi, v);
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                acc[r] = _mm256_fmadd_ps(ve, _mm256_loadu_ps(xp[r] + i), acc[r]);
                acc[r] = _mm256_fmadd_ps(vo, _mm256_loadu_ps(xp[r] + i + 8), acc[r]);
            }
        }
    }
    for (int r = 0; r < R; r++) out[r] = hsum256(acc[r]);
}

/* R as a constant in each instance, so the accumulators stay in registers */
#define ROW_DOTS_FIXED(isa, tgt, R)                                                             \
    __attribute__((target(tgt))) static void row_dots_##isa##_##R(                             \
        const dp_nf4 *w, const float *const *xp, const float *map, int64_t row, int C, float *out) { \
        row_dots_##isa(w, xp, map, row, C, R, out);                                                 \
    }
#define ROW_DOTS_ALL(isa, tgt)                                                                     \
    ROW_DOTS_FIXED(isa, tgt, 2) ROW_DOTS_FIXED(isa, tgt, 3) ROW_DOTS_FIXED(isa, tgt, 4)           \
    ROW_DOTS_FIXED(isa, tgt, 5) ROW_DOTS_FIXED(isa, tgt, 6) ROW_DOTS_FIXED(isa, tgt, 7)           \
    ROW_DOTS_FIXED(isa, tgt, 8)
ROW_DOTS_ALL(avx512, "avx512f")
#define ROW_DOTS2_FIXED(R)                                                                         \
    __attribute__((target("avx512f"))) static void row_dots2_avx512_##R(                           \
        const dp_nf4 *w, const float *const *xp, const float *map, int64_t row, int C, float *o0,  \
        float *o1) {                                                                               \
        row_dots2_avx512(w, xp, map, row, C, R, o0, o1);                                           \
    }
ROW_DOTS2_FIXED(2) ROW_DOTS2_FIXED(3) ROW_DOTS2_FIXED(4) ROW_DOTS2_FIXED(5) ROW_DOTS2_FIXED(6)
ROW_DOTS2_FIXED(7) ROW_DOTS2_FIXED(8)
typedef void (*row_dots2_fn)(const dp_nf4 *, const float *const *, const float *, int64_t, int,
                             float *, float *);
static const row_dots2_fn row_dots2_avx512_by_r[DP_GEMV_ROWS + 1] = {
    NULL, NULL, row_dots2_avx512_2, row_dots2_avx512_3, row_dots2_avx512_4,
    row_dots2_avx512_5, row_dots2_avx512_6, row_dots2_avx512_7, row_dots2_avx512_8};
ROW_DOTS_ALL(avx2, "avx2,fma")
typedef void (*row_dots_fn)(const dp_nf4 *, const float *const *, const float *, int64_t, int,
                            float *);
static const row_dots_fn row_dots_avx512_by_r[DP_GEMV_ROWS + 1] = {
    NULL, NULL, row_dots_avx512_2, row_dots_avx512_3, row_dots_avx512_4,
    row_dots_avx512_5, row_dots_avx512_6, row_dots_avx512_7, row_dots_avx512_8};
static const row_dots_fn row_dots_avx2_by_r[DP_GEMV_ROWS + 1] = {
    NULL, NULL, row_dots_avx2_2, row_dots_avx2_3, row_dots_avx2_4,
    row_dots_avx2_5, row_dots_avx2_6, row_dots_avx2_7, row_dots_avx2_8};
#endif

int dp_gemv_row_pairs = 1;

/* the row kernel of one GEMV: rows [o0, o1) of w against the R inputs x[r] (C each; xp[r]
 * their de-interleaved copies for the SIMD paths); out[r] is input r's (w->rows) output */
static void gemv_rows(float *const *out, const float *const *x, const float *const *xp,
                      const dp_nf4 *w, const float *bias, const float *map, int simd, int C,
                      int R, int o0, int o1) {
    if (C % w->blocksize) {
        for (int o = o0; o < o1; o++)
            for (int r = 0; r < R; r++)
                out[r][o] = row_dot_generic(w, x[r], o, C) + (bias ? bias[o] : 0);
        return;
    }
    int o = o0;
#ifdef DP_X86
    /* two rows at a time: 2-7% faster from cache, 18-25% from memory (A/B in one process) */
    if (simd == SIMD_AVX512 && R == 1)
        for (; o + 1 < o1; o += 2) {
            float s2[2];
            row_dot2_avx512(w, xp[0], map, o, C, s2);
            out[0][o] = s2[0] + (bias ? bias[o] : 0);
            out[0][o + 1] = s2[1] + (bias ? bias[o + 1] : 0);
        }
    /* and for several inputs, two weight rows per x load (dp_gemv_row_pairs = 0: one) */
    if (simd == SIMD_AVX512 && R > 1 && dp_gemv_row_pairs)
        for (; o + 1 < o1; o += 2) {
            float s0[DP_GEMV_ROWS], s1[DP_GEMV_ROWS];
            row_dots2_avx512_by_r[R](w, xp, map, o, C, s0, s1);
            for (int r = 0; r < R; r++) {
                out[r][o] = s0[r] + (bias ? bias[o] : 0);
                out[r][o + 1] = s1[r] + (bias ? bias[o + 1] : 0);
            }
        }
#endif
    for (; o < o1; o++) {
        float s[DP_GEMV_ROWS];
#ifdef DP_X86
        if (simd == SIMD_AVX512 && R == 1)
            s[0] = row_dot_avx512(w, xp[0], map, o, C);
        else if (simd == SIMD_AVX512)
            row_dots_avx512_by_r[R](w, xp, map, o, C, s);
        else if (simd == SIMD_AVX2 && R == 1)
            s[0] = row_dot_avx2(w, xp[0], map, o, C);
        else if (simd == SIMD_AVX2)
            row_dots_avx2_by_r[R](w, xp, map, o, C, s);
        else
#endif
            for (int r = 0; r < R; r++) s[r] = row_dot_scalar(w, x[r], map, o, C);
        for (int r = 0; r < R; r++) out[r][o] = s[r] + (bias ? bias[o] : 0);
    }
    (void)xp;
}

typedef struct {
    int n, R;
    float *const *out; /* (n) each (R, w[i]->rows) */
    const dp_nf4 *const *w;
    const float *const *bias;
    const float *const *x, *const *xp; /* (R) */
    const float *map;
    int simd, C;
    const dp_act_nf4 *a; /* (R) int8 inputs (gemv_nf4_rows_multi_i8), or NULL */
} gemv_job;

/* rows [r0, r1) of the concatenated matrices */
static void gemv_chunk(void *ctx, int64_t r0, int64_t r1) {
    const gemv_job *j = ctx;
    int64_t base = 0;
    for (int i = 0; i < j->n && base < r1; i++) {
        int64_t rows = j->w[i]->rows, a = r0 - base, b = r1 - base;
        if (a < 0) a = 0;
        if (b > rows) b = rows;
        if (a < b) {
            float *out[DP_GEMV_ROWS];
            for (int r = 0; r < j->R; r++) out[r] = j->out[i] + (size_t)r * rows;
            const float *bias = j->bias ? j->bias[i] : NULL;
            if (j->a)
                dp_i8_nf4_rows(out, j->a, j->R, j->w[i], bias, j->map, j->C, (int)a, (int)b);
            else
                gemv_rows(out, j->x, j->xp, j->w[i], bias, j->map, j->simd, j->C, j->R, (int)a,
                          (int)b);
        }
        base += rows;
    }
}

/* gemv_nf4_rows_multi, with int8 inputs when i8 (the caller checked that every w fits) */
static void gemv_multi(int n, float *const *out, const dp_nf4 *const *w, const float *const *bias,
                       const float *x, int R, int C, bool i8) {
    if (R > DP_GEMV_ROWS) { /* in groups the row kernels hold in registers */
        for (int r0 = 0; r0 < R; r0 += DP_GEMV_ROWS) {
            float *o[DP_N_GEMV_MATS];
            for (int i = 0; i < n; i++) o[i] = out[i] + (size_t)r0 * w[i]->rows;
            int g = R - r0 < DP_GEMV_ROWS ? R - r0 : DP_GEMV_ROWS;
            gemv_multi(n, o, w, bias, x + (size_t)r0 * C, g, C, i8);
        }
        return;
    }
    if (i8) {
        const size_t per = dp_i8_nf4_act_bytes(C);
        _Alignas(64) uint8_t stack[32768];
        uint8_t *buf = R * per <= sizeof stack ? stack : malloc(R * per);
        if (!buf) abort(); /* R x ~2C bytes: out of memory here leaves nothing sensible to do */
        dp_act_nf4 a[DP_GEMV_ROWS];
        int total = 0;
        for (int r = 0; r < R; r++) dp_i8_nf4_quant(&a[r], buf + r * per, x + (size_t)r * C, C);
        for (int i = 0; i < n; i++) total += (int)w[i]->rows;
        gemv_job job = {n, R, out, w, bias, NULL, NULL, dp_dynamic_map_cached(), 0, C, a};
        dp_pool_rows(total, gemv_chunk, &job);
        if (buf != stack) free(buf);
        return;
    }
    const float *map = dp_dynamic_map_cached();
    int simd = dp_simd_level(), total = 0;
    for (int i = 0; i < n; i++) {
        if (w[i]->blocksize % 32 || C % w[i]->blocksize) simd = SIMD_SCALAR;
        total += (int)w[i]->rows;
    }
    /* the de-interleaved inputs of the SIMD paths: on the stack for the usual widths */
    float stack[8192], *xpbuf = NULL;
    const float *xs[DP_GEMV_ROWS], *xps[DP_GEMV_ROWS];
    for (int r = 0; r < R; r++) xs[r] = xps[r] = x + (size_t)r * C;
    if (simd != SIMD_SCALAR) {
        size_t need = (size_t)R * C;
        xpbuf = need <= 8192 ? stack : malloc(need * sizeof(float));
        if (!xpbuf) abort(); /* R x C floats: out of memory here leaves nothing sensible to do */
#ifdef DP_X86
        for (int r = 0; r < R; r++) {
            deinterleave(xpbuf + (size_t)r * C, xs[r], C, simd == SIMD_AVX512 ? 32 : 16);
            xps[r] = xpbuf + (size_t)r * C;
        }
#endif
    }
    /* the rows of all matrices end to end, in chunks claimed by the pool's threads (each
     * sync point costs a scheduling round trip when the machine is busy: one per call) */
    gemv_job job = {n, R, out, w, bias, xs, xps, map, simd, C, NULL};
    dp_pool_rows(total, gemv_chunk, &job);
    if (xpbuf != stack) free(xpbuf);
}

void gemv_nf4_rows_multi(int n, float *const *out, const dp_nf4 *const *w,
                         const float *const *bias, const float *x, int R, int C) {
    gemv_multi(n, out, w, bias, x, R, C, false);
}

void gemv_nf4_rows_multi_i8(int n, float *const *out, const dp_nf4 *const *w,
                            const float *const *bias, const float *x, int R, int C) {
    bool fits = n <= DP_N_GEMV_MATS;
    for (int i = 0; i < n; i++) fits = fits && dp_gemv_nf4_i8_fits(w[i], C);
    gemv_multi(n, out, w, bias, x, R, C, fits);
}

void gemv_nf4_multi(int n, float *const *out, const dp_nf4 *const *w, const float *const *bias,
                    const float *x, int C) {
    gemv_nf4_rows_multi(n, out, w, bias, x, 1, C);
}

void gemv_nf4(float *out, const float *x, const dp_nf4 *w, const float *bias, int C, int OC) {
    dp_nf4 first = *w; /* the first OC rows (all of them, as every caller passes) */
    if (OC < first.rows) first.rows = OC;
    const dp_nf4 *wp = &first;
    gemv_nf4_multi(1, &out, &wp, &bias, x, C);
}
