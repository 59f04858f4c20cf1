/* Linear layers on the CPU: fp32 via OpenBLAS sgemm, NF4 weights dequantized per row tile then
 * sgemm (prefill, training), and a fused NF4 dot product per row for one token (decode), with
 * OpenMP across rows and an AVX2 path picked at run time. */
#include "kernels/nf4.h"
#include "kernels/ops.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define DP_X86 1
#endif

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
/* AVX2: 16 bytes -> 32 nibbles in element order (high nibble first), looked up in the 16-entry
 * table with two permutes and a blend, multiplied into x with FMA. */
__attribute__((target("avx2,fma"))) static float
row_dot_avx2(const dp_nf4 *w, const float *x, const float *map, int64_t row, int C) {
    const int bs = w->blocksize;
    const uint8_t *q = w->codes + (size_t)row * C / 2;
    const int64_t b0 = row * C / bs;
    const __m256 tlo = _mm256_loadu_ps(dp_nf4_values), thi = _mm256_loadu_ps(dp_nf4_values + 8);
    const __m128i m4 = _mm_set1_epi8(0x0f);
    const __m256i seven = _mm256_set1_epi32(7);
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < C / bs; b++) {
        __m256 sb = _mm256_setzero_ps();
        for (int i = 0; i < bs; i += 32) {
            __m128i v = _mm_loadu_si128((const __m128i *)(q + ((size_t)b * bs + i) / 2));
            __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), m4), lo = _mm_and_si128(v, m4);
            __m128i e0 = _mm_unpacklo_epi8(hi, lo), e1 = _mm_unpackhi_epi8(hi, lo);
            const float *xb = x + (size_t)b * bs + i;
            __m128i parts[4] = {e0, _mm_srli_si128(e0, 8), e1, _mm_srli_si128(e1, 8)};
            for (int k = 0; k < 4; k++) {
                __m256i idx = _mm256_cvtepu8_epi32(parts[k]);
                __m256 vl = _mm256_permutevar8x32_ps(tlo, idx);
                __m256 vh = _mm256_permutevar8x32_ps(thi, idx);
                __m256 mask = _mm256_castsi256_ps(_mm256_cmpgt_epi32(idx, seven));
                __m256 val = _mm256_blendv_ps(vl, vh, mask);
                sb = _mm256_fmadd_ps(val, _mm256_loadu_ps(xb + 8 * k), sb);
            }
        }
        acc = _mm256_fmadd_ps(sb, _mm256_set1_ps(block_absmax(w, map, b0 + b)), acc);
    }
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* AVX-512: one permute looks up 16 codes in the whole 16-entry table. */
__attribute__((target("avx512f"))) static float
row_dot_avx512(const dp_nf4 *w, const float *x, const float *map, int64_t row, int C) {
    const int bs = w->blocksize;
    const uint8_t *q = w->codes + (size_t)row * C / 2;
    const int64_t b0 = row * C / bs;
    const __m512 tbl = _mm512_loadu_ps(dp_nf4_values);
    const __m128i m4 = _mm_set1_epi8(0x0f);
    __m512 acc = _mm512_setzero_ps();
    for (int b = 0; b < C / bs; b++) {
        __m512 sb = _mm512_setzero_ps();
        for (int i = 0; i < bs; i += 32) {
            __m128i v = _mm_loadu_si128((const __m128i *)(q + ((size_t)b * bs + i) / 2));
            __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), m4), lo = _mm_and_si128(v, m4);
            const float *xb = x + (size_t)b * bs + i;
            __m512 v0 = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(hi, lo)), tbl);
            __m512 v1 = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_unpackhi_epi8(hi, lo)), tbl);
            sb = _mm512_fmadd_ps(v0, _mm512_loadu_ps(xb), sb);
            sb = _mm512_fmadd_ps(v1, _mm512_loadu_ps(xb + 16), sb);
        }
        acc = _mm512_fmadd_ps(sb, _mm512_set1_ps(block_absmax(w, map, b0 + b)), acc);
    }
    return _mm512_reduce_add_ps(acc);
}
#endif

/* The GEMV kernel: the widest the CPU has, or DOPPEL_NF4_SIMD=scalar|avx2|avx512 (capped by the
 * CPU; tests run every path). */
enum { SIMD_SCALAR, SIMD_AVX2, SIMD_AVX512 };
static int simd_level(void) {
    int best = SIMD_SCALAR;
#ifdef DP_X86
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = SIMD_AVX2;
    if (__builtin_cpu_supports("avx512f")) best = SIMD_AVX512;
#endif
    const char *e = getenv("DOPPEL_NF4_SIMD");
    int want = !e                     ? best
               : !strcmp(e, "scalar") ? SIMD_SCALAR
               : !strcmp(e, "avx2")   ? SIMD_AVX2
                                      : best;
    return want < best ? want : best;
}

void gemv_nf4(float *out, const float *x, const dp_nf4 *w, const float *bias, int C, int OC) {
    const int bs = w->blocksize;
    if (C % bs) {
#pragma omp parallel for schedule(static)
        for (int o = 0; o < OC; o++) out[o] = row_dot_generic(w, x, o, C) + (bias ? bias[o] : 0);
        return;
    }
    const float *map = dp_dynamic_map_cached();
    const int simd = bs % 32 == 0 ? simd_level() : SIMD_SCALAR;
#pragma omp parallel for schedule(static)
    for (int o = 0; o < OC; o++) {
        float s;
#ifdef DP_X86
        if (simd == SIMD_AVX512)
            s = row_dot_avx512(w, x, map, o, C);
        else if (simd == SIMD_AVX2)
            s = row_dot_avx2(w, x, map, o, C);
        else
#endif
            s = row_dot_scalar(w, x, map, o, C);
        out[o] = s + (bias ? bias[o] : 0);
    }
}
