/* Decode GEMVs with int8 activations (kernels/nf4.h, kernels/q8.h): the input row is rounded to
 * int8 per 32 elements (llama.cpp's Q8_0 activations) and the products run on AVX512-VNNI's
 * vpdpbusd, 64 multiply-adds per instruction, where the exact fp32 kernels (matmul.c, q8.c) do
 * 16. NF4 codes become int8 through one byte shuffle with the NF4 table rounded to 1/127 (as
 * llama.cpp's IQ4_NL does); each 64-element chunk is then scaled once by its block's absmax.
 *
 * vpdpbusd multiplies unsigned by signed bytes. NF4: the table is stored +128 (unsigned) and
 * the input stays signed; the 128 * sum(x) it adds is subtracted by starting each sum from a
 * per-input correction. Q8 head: the weights stay signed and the input is stored +128; the
 * 128 * sum(w) is one more vpdpbusd against a vector of 128s. */
#include "kernels/nf4.h"
#include "kernels/q8.h"

#include "kernels/cpu/simd.h"
#include "kernels/cpu/nf4_absmax.h"
#include "kernels/cpu/gemv_i8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* the int8 activations of one input row x (C): per 32 elements d = max|x| / 127, q = x / d
 * rounded to nearest even */
static inline float quant_block32(const float *x, int8_t *q) {
    float am = 0;
    for (int i = 0; i < 32; i++) am = fmaxf(am, fabsf(x[i]));
    const float d = am / 127.0f, id = am > 0 ? 127.0f / am : 0.0f;
    for (int i = 0; i < 32; i++) q[i] = (int8_t)lrintf(fminf(fmaxf(x[i] * id, -127.0f), 127.0f));
    return d;
}

bool dp_gemv_i8_supported(void) {
#ifdef DP_X86
    return dp_simd_level() == SIMD_AVX512 && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni");
#else
    return false;
#endif
}

int dp_nf4_i8_value(int code) {
    return (int)lrintf(dp_nf4_values[code & 15] * 127.0f);
}

#ifdef DP_X86
#define TGT_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))

/* ------------------------------------------------------------------ NF4 */

static void quant_nf4(dp_act_nf4 *a, const float *x, int C) {
    const int nch = C / 64;
    a->npairs = (nch + 1) / 2;
    memset(a->xh, 0, (size_t)a->npairs * 64);
    memset(a->xl, 0, (size_t)a->npairs * 64);
    for (int c = 0; c < nch; c++) {
        int8_t q[64];
        float d0 = quant_block32(x + c * 64, q), d1 = quant_block32(x + c * 64 + 32, q + 32);
        int8_t *h = a->xh + (c / 2) * 64 + (c % 2) * 32, *l = a->xl + (c / 2) * 64 + (c % 2) * 32;
        for (int j = 0; j < 32; j++) h[j] = q[2 * j], l[j] = q[2 * j + 1];
        for (int i = 0; i < 8; i++) { /* lane i covers elements 8i .. 8i+7 of the chunk */
            int s = 0;
            for (int k = 0; k < 4; k++) s += h[4 * i + k] + l[4 * i + k];
            a->corr[(c / 2) * 16 + (c % 2) * 8 + i] = -128 * s;
            a->da[(c / 2) * 16 + (c % 2) * 8 + i] = (i < 4 ? d0 : d1) / 127.0f;
        }
    }
    if (nch % 2)
        for (int i = 8; i < 16; i++) a->corr[(nch / 2) * 16 + i] = 0, a->da[(nch / 2) * 16 + i] = 0;
}

/* the table +128, in each 128-bit lane (vpshufb looks up within lanes) */
TGT_VNNI static inline __m512i nf4_table_u8(void) {
    uint8_t t[64];
    for (int i = 0; i < 64; i++) t[i] = (uint8_t)(dp_nf4_i8_value(i % 16) + 128);
    return _mm512_loadu_si512(t);
}

/* rows [o0, o1) of w against R <= DP_GEMV_ROWS inputs; R fixed per instance (below) so the
 * accumulators stay in registers */
TGT_VNNI __attribute__((always_inline)) static inline void
nf4_rows_i8(float *const *out, const dp_act_nf4 *a, const dp_nf4 *w, const float *bias,
            const float *map, int C, int R, int o0, int o1) {
    const __m512i tbl = nf4_table_u8(), m4 = _mm512_set1_epi8(15), two = _mm512_set1_epi32(2);
    const __m512i pair0 = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    const int nch = C / 64, full = nch / 2, nb = C / w->blocksize;
    const int shift = __builtin_ctz((unsigned)(w->blocksize / 64));
    for (int o = o0; o < o1; o++) {
        const uint8_t *q = w->codes + (size_t)o * C / 2;
        __m512 acc[DP_GEMV_ROWS];
        for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
        for (int c16 = 0; c16 < nch; c16 += 16) { /* 16 chunks' absmax in one register */
            const __m512 dw = nf4_absmax16(w, map, (int64_t)o * nb, c16, nch - c16, shift);
            __m512i idx = pair0;
            for (int p = c16 / 2; p < (c16 + 16 < nch ? c16 + 16 : nch + 1) / 2; p++) {
                DP_PREFETCH(q + 64 * p);
                __m512i v = p < full ? _mm512_loadu_si512(q + 64 * p)
                                     : _mm512_maskz_loadu_epi8(0xffffffffull, q + 64 * p);
                __m512i wh =
                    _mm512_shuffle_epi8(tbl, _mm512_and_si512(_mm512_srli_epi16(v, 4), m4));
                __m512i wl = _mm512_shuffle_epi8(tbl, _mm512_and_si512(v, m4));
                const __m512 sw = _mm512_permutexvar_ps(idx, dw); /* lanes 0-7: chunk 2p */
                idx = _mm512_add_epi32(idx, two);
#pragma GCC unroll 8
                for (int r = 0; r < R; r++) {
                    __m512i s = _mm512_loadu_si512(a[r].corr + 16 * p);
                    s = _mm512_dpbusd_epi32(s, wh, _mm512_loadu_si512(a[r].xh + 64 * p));
                    s = _mm512_dpbusd_epi32(s, wl, _mm512_loadu_si512(a[r].xl + 64 * p));
                    __m512 sc = _mm512_mul_ps(sw, _mm512_loadu_ps(a[r].da + 16 * p));
                    acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), sc, acc[r]);
                }
            }
        }
        for (int r = 0; r < R; r++) out[r][o] = _mm512_reduce_add_ps(acc[r]) + (bias ? bias[o] : 0);
    }
}

#define NF4_I8_FIXED(R)                                                                            \
    TGT_VNNI static void nf4_rows_i8_##R(float *const *out, const dp_act_nf4 *a, const dp_nf4 *w,  \
                                         const float *bias, const float *map, int C, int o0,       \
                                         int o1) {                                                 \
        nf4_rows_i8(out, a, w, bias, map, C, R, o0, o1);                                           \
    }
typedef void (*nf4_rows_fn)(float *const *, const dp_act_nf4 *, const dp_nf4 *, const float *,
                            const float *, int, int, int);
/* clang-format off */
NF4_I8_FIXED(1) NF4_I8_FIXED(2) NF4_I8_FIXED(3) NF4_I8_FIXED(4)
NF4_I8_FIXED(5) NF4_I8_FIXED(6) NF4_I8_FIXED(7) NF4_I8_FIXED(8)
static const nf4_rows_fn nf4_rows_by_r[DP_GEMV_ROWS + 1] = {
    NULL,          nf4_rows_i8_1, nf4_rows_i8_2, nf4_rows_i8_3, nf4_rows_i8_4,
    nf4_rows_i8_5, nf4_rows_i8_6, nf4_rows_i8_7, nf4_rows_i8_8
};
/* clang-format on */

#endif

size_t dp_i8_nf4_act_bytes(int C) {
    return (size_t)(C / 128 + 1) * (64 * 2 + 16 * 8);
}

void dp_i8_nf4_quant(dp_act_nf4 *a, uint8_t *buf, const float *x, int C) {
    const size_t np = (size_t)(C / 128 + 1);
    a->xh = (int8_t *)buf, a->xl = (int8_t *)(buf + np * 64);
    a->corr = (int32_t *)(buf + np * 128), a->da = (float *)(buf + np * 192);
#ifdef DP_X86
    quant_nf4(a, x, C);
#else
    (void)x;
    abort(); /* dp_gemv_nf4_i8_fits is false: never called */
#endif
}

void dp_i8_nf4_rows(float *const *out, const dp_act_nf4 *a, int R, const dp_nf4 *w,
                    const float *bias, const float *map, int C, int o0, int o1) {
#ifdef DP_X86
    nf4_rows_by_r[R](out, a, w, bias, map, C, o0, o1);
#else
    (void)out, (void)a, (void)R, (void)w, (void)bias, (void)map, (void)C, (void)o0, (void)o1;
    abort(); /* dp_gemv_nf4_i8_fits is false: never called */
#endif
}

bool dp_gemv_nf4_i8_fits(const dp_nf4 *w, int C) {
    return dp_gemv_i8_supported() && C > 0 && C <= DP_GEMV_I8_MAX_C && C % 64 == 0 &&
           w->blocksize % 64 == 0 && C % w->blocksize == 0;
}

/* ------------------------------------------------------------------ Q8 (the lm_head) */

#ifdef DP_X86
static void quant_q8(dp_act_q8 *a, const float *x, int C) {
    for (int b = 0; b < C / 32; b++) {
        int8_t q[32];
        float d = quant_block32(x + b * 32, q);
        for (int i = 0; i < 32; i++) a->xu[b * 32 + i] = (uint8_t)(q[i] + 128);
        for (int i = 0; i < 8; i++) a->da[(b / 2) * 16 + (b % 2) * 8 + i] = d;
    }
    if ((C / 32) % 2)
        for (int i = 8; i < 16; i++) a->da[(C / 64) * 16 + i] = 0;
}

TGT_VNNI __attribute__((always_inline)) static inline void
q8_rows_i8(float *out, int OC, const dp_act_q8 *a, const dp_q8 *w, const float *bias, int C, int R,
           int64_t o0, int64_t o1) {
    const __m512i c128 = _mm512_set1_epi8((char)128);
    const __m512i pair_idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    const int nb = C / 32, npairs = (nb + 1) / 2, full = nb / 2;
    for (int64_t o = o0; o < o1; o++) {
        const int8_t *q = w->q + (size_t)o * C;
        const float *d = w->d + (size_t)o * nb;
        __m512 acc[DP_Q8_ROWS];
        for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
        for (int p = 0; p < npairs; p++) {
            __m512i v;
            __m512 sw;
            DP_PREFETCH(q + 64 * p);
            if (p < full) {
                v = _mm512_loadu_si512(q + 64 * p);
                sw = _mm512_permutexvar_ps(
                    pair_idx, _mm512_castps128_ps512(
                                  _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)(d + 2 * p)))));
            } else { /* an odd last block: the upper half of the pair is zero */
                v = _mm512_maskz_loadu_epi8(0xffffffffull, q + 64 * p);
                sw = _mm512_set1_ps(d[2 * p]);
            }
            /* 128 * the sum of each lane's 4 weights, which the +128 of xu adds */
            __m512i off = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c128, v);
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                __m512i xv = p < full ? _mm512_loadu_si512(a[r].xu + 64 * p)
                                      : _mm512_maskz_loadu_epi8(0xffffffffull, a[r].xu + 64 * p);
                __m512i s =
                    _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), xv, v), off);
                __m512 sc = _mm512_mul_ps(sw, _mm512_loadu_ps(a[r].da + 16 * p));
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), sc, acc[r]);
            }
        }
        for (int r = 0; r < R; r++)
            out[(size_t)r * OC + o] = _mm512_reduce_add_ps(acc[r]) + (bias ? bias[o] : 0);
    }
}

#define Q8_I8_FIXED(R)                                                                             \
    TGT_VNNI static void q8_rows_i8_##R(float *out, int OC, const dp_act_q8 *a, const dp_q8 *w,    \
                                        const float *bias, int C, int64_t o0, int64_t o1) {        \
        q8_rows_i8(out, OC, a, w, bias, C, R, o0, o1);                                             \
    }
typedef void (*q8_rows_fn)(float *, int, const dp_act_q8 *, const dp_q8 *, const float *, int,
                           int64_t, int64_t);
/* clang-format off */
Q8_I8_FIXED(1) Q8_I8_FIXED(2) Q8_I8_FIXED(3) Q8_I8_FIXED(4)
Q8_I8_FIXED(5) Q8_I8_FIXED(6) Q8_I8_FIXED(7) Q8_I8_FIXED(8)
static const q8_rows_fn q8_rows_by_r[DP_Q8_ROWS + 1] = {
    NULL,         q8_rows_i8_1, q8_rows_i8_2, q8_rows_i8_3, q8_rows_i8_4,
    q8_rows_i8_5, q8_rows_i8_6, q8_rows_i8_7, q8_rows_i8_8
};
/* clang-format on */

#endif

size_t dp_i8_q8_act_bytes(int C) {
    return (size_t)C + (size_t)(C / 64 + 1) * 64;
}

void dp_i8_q8_quant(dp_act_q8 *a, uint8_t *buf, const float *x, int C) {
    a->xu = buf, a->da = (float *)(buf + C);
#ifdef DP_X86
    quant_q8(a, x, C);
#else
    (void)x;
    abort(); /* dp_gemv_q8_i8_fits is false: never called */
#endif
}

void dp_i8_q8_rows(float *out, int OC, const dp_act_q8 *a, int R, const dp_q8 *w, const float *bias,
                   int C, int64_t o0, int64_t o1) {
#ifdef DP_X86
    q8_rows_by_r[R](out, OC, a, w, bias, C, o0, o1);
#else
    (void)out, (void)OC, (void)a, (void)R, (void)w, (void)bias, (void)C, (void)o0, (void)o1;
    abort(); /* dp_gemv_q8_i8_fits is false: never called */
#endif
}

bool dp_gemv_q8_i8_fits(int C) {
    return dp_gemv_i8_supported() && C > 0 && C <= DP_GEMV_I8_MAX_C && C % 32 == 0;
}
