/* bf16 products over a frozen weight on the CPU: the weight packed into bf16 panels (pairs along
 * K, as vdpbf16ps and AMX's TDPBF16PS read them), activations rounded to bf16 once per GEMM, fp32
 * accumulation and output. Picked at run time: AMX tiles for whole 32 x 32 blocks (the edges by
 * the AVX512_BF16 micro-kernel), the AVX512_BF16 micro-kernel alone, or a scalar loop. */
#include "kernels/nf4.h"
#include "kernels/ops.h"

#include "kernels/cpu/simd.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__) && defined(DP_X86)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define DP_AMX 1
#endif

/* Panel layout (dp_bf16_panel_size): outputs in panels of DP_BF16_NR = 32; inside panel p,
 * element (o, k) sits at p * Kp * 32 + (k / 2) * 64 + (o % 32) * 2 + (k % 2), Kp = K rounded up
 * to even. One k pair of a panel is 64 bf16 = two zmm registers, each lane a (k, k+1) pair of one
 * output. Padding (k >= K, o >= NO) holds zeros. */
#define NR 32
#define MR 12 /* rows of accumulators: 12 x 2 zmm = 24 of the 32 registers */

static inline int even_up(int k) {
    return (k + 1) & ~1;
}

size_t dp_bf16_panel_size(int K, int NO) {
    return (size_t)even_up(K) * (size_t)((NO + NR - 1) / NR * NR);
}

bool dp_bf16_gemm_ok(void) {
    return dp_simd_bf16();
}

const char *dp_bf16_kernel_name(void) {
    return dp_bf16_amx_ok()    ? "AMX TDPBF16PS 32x32 tile blocks, vdpbf16ps 12x32 at the edges"
           : dp_bf16_gemm_ok() ? "AVX512_BF16 vdpbf16ps, 12x32 register block"
                               : NULL;
}

/* AMX-BF16 in the CPU, and the kernel's leave to use its tile data (asked once per process:
 * Linux hands AMX state out on request, ARCH_REQ_XCOMP_PERM); DOPPEL_SIMD=avx512bf16 (or a
 * narrower path) keeps the vdpbf16ps kernel alone. */
bool dp_bf16_amx_ok(void) {
#ifdef DP_AMX
    static int state; /* 0 unknown, 1 granted, -1 not */
    if (!dp_simd_bf16()) return false;
    const char *e = getenv("DOPPEL_SIMD");
    if (e && !strcmp(e, "avx512bf16")) return false;
    int st = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
    if (!st) {
        unsigned a, b, c, d;
        bool cpu = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 22)) && (d & (1u << 24));
        st = cpu && syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */,
                            18 /* XFEATURE_XTILEDATA */) == 0
                 ? 1
                 : -1;
        __atomic_store_n(&state, st, __ATOMIC_RELEASE);
    }
    return st > 0;
#else
    return false;
#endif
}

static inline uint16_t *at(uint16_t *wp, int Kp, int o, int k) {
    return wp + (size_t)(o / NR) * Kp * NR + (size_t)(k / 2) * 2 * NR + (o % NR) * 2 + (k & 1);
}

#ifdef DP_X86
/* 16 values at a time, the same integer rounding */
__attribute__((target("avx512f"))) static int round_avx512(uint16_t *dst, const float *src, int n) {
    const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff),
                  absm = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000),
                  qbit = _mm512_set1_epi32(0x40);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i u = _mm512_loadu_si512(src + i);
        __m512i hi = _mm512_srli_epi32(u, 16);
        __m512i r = _mm512_srli_epi32(
            _mm512_add_epi32(_mm512_add_epi32(u, bias), _mm512_and_si512(hi, one)), 16);
        __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, absm), inf);
        r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(hi, qbit));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtepi32_epi16(r));
    }
    return i;
}
#endif

/* n values rounded to bf16, nearest even (dp_bf16_round1's arithmetic) */
static void round_row(uint16_t *dst, const float *src, int n, bool simd512) {
    int i = 0;
#ifdef DP_X86
    if (simd512) i = round_avx512(dst, src, n);
#else
    (void)simd512;
#endif
    for (; i < n; i++) {
        uint32_t u;
        memcpy(&u, src + i, 4);
        uint32_t r = (u + 0x7fffu + ((u >> 16) & 1)) >> 16, q = (u >> 16) | 0x40;
        dst[i] = (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? q : r);
    }
}

void dp_bf16_round(uint16_t *xb, const float *x, int N, int K) {
    int Kp = even_up(K);
    bool simd512 = dp_simd_level() == SIMD_AVX512; /* once per call: it reads the environment */
    for (int n = 0; n < N; n++) {
        round_row(xb + (size_t)n * Kp, x + (size_t)n * K, K, simd512);
        if (Kp > K) xb[(size_t)n * Kp + K] = 0;
    }
}

/* Rows of W come from an fp32 matrix or, dequantized (dp_nf4_dequantize_range: the values the
 * fp32 path multiplies), from NF4; either way rounded once, into a row of Kp bf16. */
typedef struct {
    const float *w;
    const dp_nf4 *q;
    int OC, C;
    float *f;      /* (SRC_ROWS, C) NF4 rows dequantized at once (one call for several rows) */
    int f0, fn;    /* rows [f0, f0 + fn) are in f */
    bool simd512;  /* dp_simd_level() == SIMD_AVX512, read once per call */
} rows_src;
#define SRC_ROWS 8

static void get_row(rows_src *s, int o, uint16_t *dst, int Kp) {
    const float *r = s->w ? s->w + (size_t)o * s->C : NULL;
    if (!r) {
        if (o < s->f0 || o >= s->f0 + s->fn) {
            s->f0 = o, s->fn = s->OC - o < SRC_ROWS ? s->OC - o : SRC_ROWS;
            dp_nf4_dequantize_range(s->q, s->f, (int64_t)o * s->C, (int64_t)s->fn * s->C);
        }
        r = s->f + (size_t)(o - s->f0) * s->C;
    }
    round_row(dst, r, s->C, s->simd512);
    for (int k = s->C; k < Kp; k++) dst[k] = 0;
}

/* out = x W^T: K = C along the pairs, outputs = W's rows. Rows [o0, o1) of one panel are rounded
 * into a (32, Kp) tile, then transposed pair by pair into the panel; the call that reaches OC
 * zeroes the padding rows. */
#ifdef DP_X86
/* a whole panel: pair p of rows 0..31 (32-bit units tile[i * P + p]) to dst[p * 32 + i] */
__attribute__((target("avx512f"))) static void transpose_avx512(uint16_t *dst, const uint16_t *tile,
                                                                 int P) {
    __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
                                                       14, 15),
                                     _mm512_set1_epi32(P));
    __m512i idx16 = _mm512_add_epi32(idx, _mm512_set1_epi32(16 * P));
    for (int p = 0; p < P; p++) {
        __m512i pp = _mm512_set1_epi32(p);
        __m512i g0 = _mm512_i32gather_epi32(_mm512_add_epi32(idx, pp), tile, 4);
        __m512i g1 = _mm512_i32gather_epi32(_mm512_add_epi32(idx16, pp), tile, 4);
        _mm512_storeu_si512(dst + (size_t)p * 2 * NR, g0);
        _mm512_storeu_si512(dst + (size_t)p * 2 * NR + NR, g1);
    }
}

/* rows 2j and 2j+1 (a, b: Cp bf16 each) into their slots, 32 columns (64 bf16) at a time */
__attribute__((target("avx512f,avx512bw"))) static void interleave_avx512(uint16_t *dst,
                                                                            const uint16_t *a,
                                                                            const uint16_t *b,
                                                                            int Cp, int Kp) {
    short lo[32], hi[32];
    for (int j = 0; j < 32; j++) lo[j] = (short)((j & 1) * 32 + j / 2), hi[j] = (short)(lo[j] + 16);
    __m512i il = _mm512_loadu_si512(lo), ih = _mm512_loadu_si512(hi);
    for (int c0 = 0; c0 < Cp; c0 += NR) {
        __m512i x = _mm512_loadu_si512(a + c0), y = _mm512_loadu_si512(b + c0);
        uint16_t *d = dst + (size_t)(c0 / NR) * Kp * NR;
        _mm512_storeu_si512(d, _mm512_permutex2var_epi16(x, il, y));
        _mm512_storeu_si512(d + NR, _mm512_permutex2var_epi16(x, ih, y));
    }
}
#endif

static void pack_nt(uint16_t *wp, rows_src *s, int o0, int o1) {
    int Kp = even_up(s->C), P = Kp / 2;
#ifdef DP_X86
    bool simd512 = s->simd512;
#endif
    uint16_t *tile = malloc((size_t)NR * Kp * sizeof(uint16_t));
    if (!tile) abort(); /* a few hundred KiB: out of memory here leaves nothing sensible to do */
    for (int oa = o0; oa < o1;) {
        int ob = (oa / NR + 1) * NR < o1 ? (oa / NR + 1) * NR : o1;
        for (int o = oa; o < ob; o++) get_row(s, o, tile + (size_t)(o % NR) * Kp, Kp);
        uint16_t *dst = wp + (size_t)(oa / NR) * Kp * NR;
        int ia = oa % NR, ib = ia + (ob - oa);
#ifdef DP_X86
        if (ia == 0 && ib == NR && simd512) {
            transpose_avx512(dst, tile, P);
            oa = ob;
            continue;
        }
#endif
        for (int p = 0; p < P; p++)
            for (int i = ia; i < ib; i++) {
                dst[(size_t)p * 2 * NR + 2 * i] = tile[(size_t)i * Kp + 2 * p];
                dst[(size_t)p * 2 * NR + 2 * i + 1] = tile[(size_t)i * Kp + 2 * p + 1];
            }
        oa = ob;
    }
    free(tile);
    if (o1 == s->OC)
        for (int o = s->OC; o < (s->OC + NR - 1) / NR * NR; o++)
            for (int k = 0; k < Kp; k++) *at(wp, Kp, o, k) = 0;
}

/* dinp += dout W: K = OC along the pairs, outputs = W's columns. Row o fills slot o % 2 of its
 * pairs, 32 columns at a time (contiguous); the call that reaches an odd OC zeroes the pad row. */
static void pack_nn(uint16_t *wp, rows_src *s, int o0, int o1) {
    int Kp = even_up(s->OC), Cp = (s->C + NR - 1) / NR * NR;
    uint16_t *row = malloc((size_t)2 * Cp * sizeof(uint16_t));
    if (!row) abort();
    int last = o1 == s->OC ? Kp : o1; /* the pad row, if any, with the last call */
#ifdef DP_X86
    if (s->simd512) /* whole pairs of rows */
        for (; !(o0 & 1) && o0 + 2 <= last; o0 += 2) {
            for (int h = 0; h < 2; h++)
                if (o0 + h < s->OC)
                    get_row(s, o0 + h, row + (size_t)h * Cp, Cp);
                else
                    memset(row + (size_t)h * Cp, 0, (size_t)Cp * sizeof(uint16_t));
            interleave_avx512(wp + (size_t)(o0 / 2) * 2 * NR, row, row + Cp, Cp, Kp);
        }
#endif
    for (int o = o0; o < last; o++) {
        if (o < s->OC)
            get_row(s, o, row, Cp);
        else
            memset(row, 0, (size_t)Cp * sizeof(uint16_t));
        uint16_t *dst = wp + (size_t)(o / 2) * 2 * NR + (o & 1);
        for (int c0 = 0; c0 < Cp; c0 += NR) {
            uint16_t *d = dst + (size_t)(c0 / NR) * Kp * NR;
            for (int i = 0; i < NR; i++) d[2 * i] = row[c0 + i];
        }
    }
    free(row);
}

void dp_bf16_pack_nt(uint16_t *wp, const float *w, int OC, int C, int o0, int o1) {
    rows_src s = {w, NULL, OC, C, NULL, 0, 0, dp_simd_level() == SIMD_AVX512};
    pack_nt(wp, &s, o0, o1);
}
void dp_bf16_pack_nn(uint16_t *wp, const float *w, int OC, int C, int o0, int o1) {
    rows_src s = {w, NULL, OC, C, NULL, 0, 0, dp_simd_level() == SIMD_AVX512};
    pack_nn(wp, &s, o0, o1);
}
void dp_nf4_pack_bf16_nt(uint16_t *wp, const dp_nf4 *w, int o0, int o1) {
    rows_src s = {NULL, w, (int)w->rows, (int)w->cols,
                  malloc((size_t)SRC_ROWS * w->cols * sizeof(float)), 0, 0,
                  dp_simd_level() == SIMD_AVX512};
    if (!s.f) abort();
    pack_nt(wp, &s, o0, o1);
    free(s.f);
}
void dp_nf4_pack_bf16_nn(uint16_t *wp, const dp_nf4 *w, int o0, int o1) {
    rows_src s = {NULL, w, (int)w->rows, (int)w->cols,
                  malloc((size_t)SRC_ROWS * w->cols * sizeof(float)), 0, 0,
                  dp_simd_level() == SIMD_AVX512};
    if (!s.f) abort();
    pack_nn(wp, &s, o0, o1);
    free(s.f);
}

/* ------------------------------------------------------------------ the products */

/* scalar: the same bf16 values, fp32 sums in k order (CPUs without AVX512_BF16) */
static void gemm_scalar(float *out, int ldo, const uint16_t *xb, const uint16_t *wp, int N, int K,
                        int NO, bool accumulate) {
    int Kp = even_up(K);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < NO; o++) {
            float s = 0;
            for (int k = 0; k < Kp; k++)
                s += dp_bf16_f32(xb[(size_t)n * Kp + k]) * dp_bf16_f32(*at((uint16_t *)wp, Kp, o, k));
            out[(size_t)n * ldo + o] = accumulate ? out[(size_t)n * ldo + o] + s : s;
        }
}

#ifdef DP_X86
/* rows x 32 outputs over k pairs [0, np): a points at the rows' first pair (lda bf16 apart), b
 * at the panel's first pair. Inlined with rows constant, so the accumulators live in registers. */
__attribute__((target("avx512f,avx512bw,avx512bf16"), always_inline)) static inline void
micro(int rows, float *out, int ldo, const uint16_t *a, int lda, const uint16_t *b, int np,
      int ncols, bool acc) {
    __m512 c[MR][2];
    for (int i = 0; i < rows; i++) c[i][0] = c[i][1] = _mm512_setzero_ps();
    for (int p = 0; p < np; p++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + (size_t)p * 2 * NR);
        __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + (size_t)p * 2 * NR + NR);
        for (int i = 0; i < rows; i++) {
            int32_t pair;
            memcpy(&pair, a + (size_t)i * lda + 2 * p, 4);
            __m512bh ai = (__m512bh)_mm512_set1_epi32(pair);
            c[i][0] = _mm512_dpbf16_ps(c[i][0], ai, b0);
            c[i][1] = _mm512_dpbf16_ps(c[i][1], ai, b1);
        }
    }
    __mmask16 m0 = ncols >= 16 ? 0xffff : (__mmask16)((1u << ncols) - 1);
    __mmask16 m1 = ncols >= 32 ? 0xffff : ncols <= 16 ? 0 : (__mmask16)((1u << (ncols - 16)) - 1);
    for (int i = 0; i < rows; i++) {
        float *o = out + (size_t)i * ldo;
        if (acc) {
            c[i][0] = _mm512_add_ps(c[i][0], _mm512_maskz_loadu_ps(m0, o));
            c[i][1] = _mm512_add_ps(c[i][1], _mm512_maskz_loadu_ps(m1, o + 16));
        }
        _mm512_mask_storeu_ps(o, m0, c[i][0]);
        _mm512_mask_storeu_ps(o + 16, m1, c[i][1]);
    }
}

#define MICRO(R)                                                                                   \
    __attribute__((target("avx512f,avx512bw,avx512bf16"))) static void micro_##R(                  \
        float *out, int ldo, const uint16_t *a, int lda, const uint16_t *b, int np, int ncols,    \
        bool acc) {                                                                                \
        micro(R, out, ldo, a, lda, b, np, ncols, acc);                                             \
    }
MICRO(1)
MICRO(2)
MICRO(3)
MICRO(4)
MICRO(5)
MICRO(6)
MICRO(7)
MICRO(8)
MICRO(9)
MICRO(10)
MICRO(11)
MICRO(12)
typedef void (*micro_fn)(float *, int, const uint16_t *, int, const uint16_t *, int, int, bool);
static const micro_fn micros[MR + 1] = {NULL,     micro_1, micro_2, micro_3,  micro_4,
                                        micro_5,  micro_6, micro_7, micro_8,  micro_9,
                                        micro_10, micro_11, micro_12};

/* Blocking for Zen 4 / Ice Lake caches: KC pairs of k so a 12-row strip of x (12 * 2 KC bf16)
 * stays in L1 beside one panel's slice (32 * 2 KC), NCP panels (NCP * 32 outputs) of W's slice
 * in L2 while every row strip passes over them. */
#define KC  128
#define NCP 16
static void gemm_avx512(float *out, int ldo, const uint16_t *xb, const uint16_t *wp, int N, int K,
                        int NO, bool accumulate) {
    int Kp = even_up(K), npairs = Kp / 2, npanels = (NO + NR - 1) / NR;
    int nkb = (npairs + KC - 1) / KC, kc = nkb ? (npairs + nkb - 1) / nkb : 0;
    for (int p0 = 0; p0 < npanels; p0 += NCP) {
        int p1 = p0 + NCP < npanels ? p0 + NCP : npanels;
        for (int k0 = 0; k0 < npairs; k0 += kc) {
            int nk = npairs - k0 < kc ? npairs - k0 : kc;
            bool acc = accumulate || k0 > 0;
            for (int i0 = 0; i0 < N; i0 += MR) {
                int rows = N - i0 < MR ? N - i0 : MR;
                const uint16_t *a = xb + (size_t)i0 * Kp + 2 * (size_t)k0;
                for (int p = p0; p < p1; p++) {
                    int ncols = NO - p * NR < NR ? NO - p * NR : NR;
                    micros[rows](out + (size_t)i0 * ldo + (size_t)p * NR, ldo, a, Kp,
                                 wp + (size_t)p * Kp * NR + (size_t)k0 * 2 * NR, nk, ncols, acc);
                }
            }
        }
    }
}
#endif

#ifdef DP_AMX
/* AMX: tiles 0-3 hold a 32 x 32 block of out (2 x 2 tiles of 16 x 16 fp32), 4-5 two 16-row
 * strips of xb (32 k each), 6-7 the two 16-output halves of a panel's 16 k pairs; every tile 16
 * rows of 64 bytes. GCC's tile intrinsics are asm without memory operands: the barriers keep
 * the C stores and loads in order with the surrounding code. */
#define AMX_TARGET    "avx512f,avx512bw,avx512bf16,amx-tile,amx-bf16"
#define AMX_BARRIER() __asm__ volatile("" ::: "memory")
__attribute__((target(AMX_TARGET))) static void amx_configure(void) {
    dp_amx_tilecfg c = {0};
    for (int t = 0; t < 8; t++) c.rows[t] = 16, c.colsb[t] = 64;
    dp_amx_load_config(&c);
}

/* out (32 x 32, ldo apart) [+]= xb rows (32, Kp bf16 each) x panel b, k pairs [0, np), np a
 * multiple of 16 */
__attribute__((target(AMX_TARGET))) static void
amx_block(float *out, int ldo, const uint16_t *a, int Kp, const uint16_t *b, int np, bool acc) {
    float *o1 = out + (size_t)16 * ldo;
    AMX_BARRIER();
    if (acc) {
        _tile_loadd(0, out, ldo * 4);
        _tile_loadd(1, out + 16, ldo * 4);
        _tile_loadd(2, o1, ldo * 4);
        _tile_loadd(3, o1 + 16, ldo * 4);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    const uint16_t *a1 = a + (size_t)16 * Kp;
    for (int p = 0; p < np; p += 16) {
        _tile_loadd(4, a + 2 * p, Kp * 2);
        _tile_loadd(5, a1 + 2 * p, Kp * 2);
        _tile_loadd(6, b + (size_t)p * 2 * NR, 2 * NR * 2);
        _tile_loadd(7, b + (size_t)p * 2 * NR + NR, 2 * NR * 2);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, out, ldo * 4);
    _tile_stored(1, out + 16, ldo * 4);
    _tile_stored(2, o1, ldo * 4);
    _tile_stored(3, o1 + 16, ldo * 4);
    AMX_BARRIER();
}

/* The whole 32-row blocks against the whole panels over the k pairs that fill tiles (16 at a
 * time) by AMX, and the last rows too when there are AMX_TAIL or more (a 32-row tile pass costs
 * about what 8 rows cost vdpbf16ps); the rest (k pairs past the tiles, fewer last rows, a partial
 * last panel) by the vdpbf16ps kernel, accumulating where AMX has written. */
#define AMX_TAIL 8
__attribute__((target(AMX_TARGET))) static void gemm_amx(float *out, int ldo, const uint16_t *xb,
                                                         const uint16_t *wp, int N, int K, int NO,
                                                         bool accumulate) {
    int Kp = even_up(K), npairs = Kp / 2, np16 = npairs / 16 * 16;
    int rows = N / 32 * 32, panels = NO / NR;
    if (!np16 || !panels || N < AMX_TAIL) {
        gemm_avx512(out, ldo, xb, wp, N, K, NO, accumulate);
        return;
    }
    amx_configure();
    for (int i0 = 0; i0 < rows; i0 += 32)
        for (int p = 0; p < panels; p++)
            amx_block(out + (size_t)i0 * ldo + (size_t)p * NR, ldo, xb + (size_t)i0 * Kp, Kp,
                      wp + (size_t)p * Kp * NR, np16, accumulate);
    _tile_release();
    if (np16 < npairs) /* the k pairs past the tiles, onto the blocks */
        for (int i0 = 0; i0 < rows; i0 += MR) {
            int r = rows - i0 < MR ? rows - i0 : MR;
            for (int p = 0; p < panels; p++)
                micros[r](out + (size_t)i0 * ldo + (size_t)p * NR, ldo,
                          xb + (size_t)i0 * Kp + 2 * (size_t)np16, Kp,
                          wp + (size_t)p * Kp * NR + (size_t)np16 * 2 * NR, npairs - np16, NR,
                          true);
        }
    int tail = N - rows;
    if (tail >= AMX_TAIL) { /* one more block, from copies padded with zero rows */
        uint16_t *xa = calloc((size_t)32 * Kp, sizeof(uint16_t));
        float *oa = calloc((size_t)32 * NO, sizeof(float));
        if (!xa || !oa) abort(); /* 32 rows: out of memory here leaves nothing sensible to do */
        memcpy(xa, xb + (size_t)rows * Kp, (size_t)tail * Kp * sizeof(uint16_t));
        for (int i = 0; accumulate && i < tail; i++)
            memcpy(oa + (size_t)i * NO, out + (size_t)(rows + i) * ldo, NO * sizeof(float));
        gemm_amx(oa, NO, xa, wp, 32, K, NO, accumulate);
        for (int i = 0; i < tail; i++)
            memcpy(out + (size_t)(rows + i) * ldo, oa + (size_t)i * NO, NO * sizeof(float));
        free(xa), free(oa);
    } else if (tail)
        gemm_avx512(out + (size_t)rows * ldo, ldo, xb + (size_t)rows * Kp, wp, tail, K, NO,
                    accumulate);
    if (panels * NR < NO)
        gemm_avx512(out + (size_t)panels * NR, ldo, xb, wp + (size_t)panels * Kp * NR, rows, K,
                    NO - panels * NR, accumulate);
}
#endif

void gemm_bf16_packed(float *out, int ldo, const uint16_t *xb, const uint16_t *wp, int N, int K,
                      int NO, bool accumulate) {
    if (N <= 0 || NO <= 0) return;
#ifdef DP_X86
    if (dp_simd_bf16()) {
        if (K <= 0) {
            if (!accumulate)
                for (int n = 0; n < N; n++) memset(out + (size_t)n * ldo, 0, NO * sizeof(float));
            return;
        }
#ifdef DP_AMX
        if (dp_bf16_amx_ok()) {
            gemm_amx(out, ldo, xb, wp, N, K, NO, accumulate);
            return;
        }
#endif
        gemm_avx512(out, ldo, xb, wp, N, K, NO, accumulate);
        return;
    }
#endif
    gemm_scalar(out, ldo, xb, wp, N, K, NO, accumulate);
}

/* ------------------------------------------------------------------ fp32 weights, a block at a
 * time */

size_t gemm_bf16_f32w_scratch(bool nn, int N, int K, int NO, int block) {
    if (nn) {
        int nk = K < block ? K : block;
        return dp_bf16_panel_size(nk, NO) + (size_t)N * even_up(nk);
    }
    return dp_bf16_panel_size(K, NO < block ? NO : block) + (size_t)N * even_up(K);
}

void gemm_bf16_f32w_nt(float *out, int ldo, const float *x, const float *w, int N, int K, int NO,
                       int block, uint16_t *scratch) {
    uint16_t *xb = scratch, *wp = scratch + (size_t)N * even_up(K);
    dp_bf16_round(xb, x, N, K);
    for (int o0 = 0; o0 < NO; o0 += block) {
        int no = NO - o0 < block ? NO - o0 : block;
        dp_bf16_pack_nt(wp, w + (size_t)o0 * K, no, K, 0, no);
        gemm_bf16_packed(out + o0, ldo, xb, wp, N, K, no, false);
    }
}

void gemm_bf16_f32w_nn(float *out, int ldo, const float *a, int lda, const float *w, int N, int K,
                       int NO, int block, uint16_t *scratch) {
    bool simd512 = dp_simd_level() == SIMD_AVX512; /* once per call: it reads the environment */
    uint16_t *xb = scratch, *wp = scratch + (size_t)N * even_up(K < block ? K : block);
    for (int k0 = 0; k0 < K; k0 += block) {
        int nk = K - k0 < block ? K - k0 : block, kp = even_up(nk);
        for (int i = 0; i < N; i++) { /* a's rows are lda apart: rounded one by one */
            round_row(xb + (size_t)i * kp, a + (size_t)i * lda + k0, nk, simd512);
            if (kp > nk) xb[(size_t)i * kp + nk] = 0;
        }
        dp_bf16_pack_nn(wp, w + (size_t)k0 * NO, nk, NO, 0, nk);
        gemm_bf16_packed(out, ldo, xb, wp, N, nk, NO, k0 > 0);
    }
}

/* ------------------------------------------------------------------ whole NF4 layers */

/* rows [n0, n1) of N split across nt threads, whole micro-kernel strips where possible */
static void share(int N, int t, int nt, int *n0, int *n1) {
    int strips = (N + MR - 1) / MR;
    *n0 = (int)((int64_t)strips * t / nt) * MR;
    *n1 = (int)((int64_t)strips * (t + 1) / nt) * MR;
    if (*n0 > N) *n0 = N;
    if (*n1 > N) *n1 = N;
}

void matmul_nf4_forward_bf16(float *out, const float *inp, const dp_nf4 *w, const float *bias,
                             int N, int C, int OC) {
    if (!dp_bf16_gemm_ok() || N == 1) {
        matmul_nf4_forward(out, inp, w, bias, N, C, OC);
        return;
    }
    int Kp = even_up(C);
    uint16_t *wp = malloc(dp_bf16_panel_size(C, OC) * sizeof(uint16_t));
    uint16_t *xb = malloc((size_t)N * Kp * sizeof(uint16_t));
    if (!wp || !xb) abort();
#pragma omp parallel
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads(), n0, n1;
        int o0 = (int)((int64_t)OC * t / nt), o1 = (int)((int64_t)OC * (t + 1) / nt);
        dp_nf4_pack_bf16_nt(wp, w, o0, o1);
        share(N, t, nt, &n0, &n1);
        dp_bf16_round(xb + (size_t)n0 * Kp, inp + (size_t)n0 * C, n1 - n0, C);
#pragma omp barrier
        gemm_bf16_packed(out + (size_t)n0 * OC, OC, xb + (size_t)n0 * Kp, wp, n1 - n0, C, OC,
                         false);
        if (bias)
            for (int n = n0; n < n1; n++)
                for (int o = 0; o < OC; o++) out[(size_t)n * OC + o] += bias[o];
    }
    free(wp);
    free(xb);
}

void matmul_nf4_backward_input_bf16(float *dinp, const float *dout, const dp_nf4 *w, int N, int C,
                                    int OC) {
    if (!dp_bf16_gemm_ok()) {
        matmul_nf4_backward_input(dinp, dout, w, N, C, OC);
        return;
    }
    int Kp = even_up(OC);
    uint16_t *wp = malloc(dp_bf16_panel_size(OC, C) * sizeof(uint16_t));
    uint16_t *gb = malloc((size_t)N * Kp * sizeof(uint16_t));
    if (!wp || !gb) abort();
#pragma omp parallel
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads(), n0, n1;
        /* whole row pairs per thread: a pair shares its slots */
        int o0 = (int)((int64_t)(OC / 2) * t / nt) * 2, o1 = (int)((int64_t)(OC / 2) * (t + 1) / nt) * 2;
        if (t == nt - 1) o1 = OC;
        dp_nf4_pack_bf16_nn(wp, w, o0, o1);
        share(N, t, nt, &n0, &n1);
        dp_bf16_round(gb + (size_t)n0 * Kp, dout + (size_t)n0 * OC, n1 - n0, OC);
#pragma omp barrier
        gemm_bf16_packed(dinp + (size_t)n0 * C, C, gb + (size_t)n0 * Kp, wp, n1 - n0, OC, C, true);
    }
    free(wp);
    free(gb);
}
