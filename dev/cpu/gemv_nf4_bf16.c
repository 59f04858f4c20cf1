/* Sandbox (never part of libdoppel): the batched decode step's NF4 products in bf16 arithmetic,
 * beside doppel's fp32 kernel (gemv_nf4_rows_multi, kernels/cpu/matmul.c), to decide whether
 * serve's batched step should leave fp32. Variants:
 *   dpbf16  each block's 16 NF4 values scaled by its absmax and rounded to bf16, looked up 32 at a
 *           time (vpermw), the inputs rounded to bf16, vdpbf16ps (AVX512_BF16), fp32 sums;
 *   amx     16 weight rows decoded the same way into A tiles, the R inputs in B tiles,
 *           TDPBF16PS (AMX-BF16) sums them.
 * Both are checked against double sums of the same bf16 values (tolerance (C + 2) 2^-24 sum|w x|,
 * so a wrong lookup or layout fails) on the shapes of --check (the ctest suite sandbox_cpu), and
 * timed on SmolLM2-135M's 30 layers of linears (random codes, 53 MiB as in a real step) for
 * R = 1, 2, 4, 8 inputs, one thread, CPU time, medians, fp32 and variants alternating.
 *
 * What it found on this project's Xeon (Sapphire Rapids, 2026-12-02): neither beats fp32 where
 * serve needs it (R <= 4). vdpbf16ps runs at a quarter of vfmadd231ps' rate here (one per ~2
 * cycles against two per cycle), so 32 products per instruction buy nothing. AMX's products are
 * nearly free, but decoding NF4 to bf16 into the A tiles (lookups, stores, a tile load that waits
 * for them) costs about what the whole fp32 kernel costs at R = 1; it wins only from R = 8.
 * usage: sandbox_cpu_gemv_nf4_bf16 [--check] [--rounds N=5] */
#include "kernels/nf4.h"
#include "tests/bench/random_nf4.h"
#include "kernels/ops.h"

#include "kernels/cpu/simd.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(DP_X86) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define SB_X86 1
#endif

enum { MAX_R = 8 };

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float block_absmax(const dp_nf4 *w, const float *map, int64_t b) {
    return map[w->absmax_q[b]] * w->absmax2[b / 256] + w->offset;
}

/* inputs rounded to bf16, per 64 columns the 32 even ones then the 32 odd ones (dpbf16) */
static void layout_even_odd(uint16_t *xl, const uint16_t *xb, int C) {
    for (int c0 = 0; c0 < C; c0 += 64)
        for (int k = 0; k < 32; k++) {
            xl[c0 + k] = xb[c0 + 2 * k];
            xl[c0 + 32 + k] = xb[c0 + 2 * k + 1];
        }
}

/* inputs rounded to bf16, k pairs of one input side by side (amx's B tiles) */
static void layout_pairs(uint16_t *xv, const uint16_t *xb, int R, int C) {
    for (int k = 0; k < C; k += 2)
        for (int r = 0; r < R; r++) {
            xv[(size_t)k * R + 2 * r] = xb[(size_t)r * C + k];
            xv[(size_t)k * R + 2 * r + 1] = xb[(size_t)r * C + k + 1];
        }
}

#ifdef SB_X86
#define BF16_TARGET "avx512f,avx512bw,avx512vbmi,avx512bf16"

/* the block's scaled values as 32 bf16, the 16 twice (vpermw reads 5 index bits) */
__attribute__((target(BF16_TARGET), always_inline)) static inline __m512i
scaled_table(const dp_nf4 *w, const float *map, int64_t b) {
    __m512 t = _mm512_mul_ps(_mm512_loadu_ps(dp_nf4_values), _mm512_set1_ps(block_absmax(w, map, b)));
    return (__m512i)_mm512_cvtne2ps_pbh(t, t);
}

/* ---- dpbf16: WR weight rows x R inputs, even and odd columns in two accumulators each */
__attribute__((target(BF16_TARGET), always_inline)) static inline void
dpbf16_rows(const dp_nf4 *w, const uint16_t *xl, const float *map, int64_t row, int C, int WR,
            int R, float *out /* (R, rows) */) {
    __m512 ae[2][MAX_R], ao[2][MAX_R];
    for (int k = 0; k < WR; k++)
        for (int r = 0; r < R; r++) ae[k][r] = ao[k][r] = _mm512_setzero_ps();
    for (int c0 = 0; c0 < C; c0 += 64)
        for (int k = 0; k < WR; k++) {
            __m512i t = scaled_table(w, map, ((row + k) * C + c0) / w->blocksize);
            __m512i v = _mm512_cvtepu8_epi16(
                _mm256_loadu_si256((const __m256i *)(w->codes + ((row + k) * C + c0) / 2)));
            __m512bh e = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(v, 4), t);
            __m512bh o = (__m512bh)_mm512_permutexvar_epi16(v, t);
            for (int r = 0; r < R; r++) {
                const uint16_t *x = xl + (size_t)r * C + c0;
                ae[k][r] = _mm512_dpbf16_ps(ae[k][r], e, (__m512bh)_mm512_loadu_si512(x));
                ao[k][r] = _mm512_dpbf16_ps(ao[k][r], o, (__m512bh)_mm512_loadu_si512(x + 32));
            }
        }
    for (int k = 0; k < WR; k++)
        for (int r = 0; r < R; r++)
            out[(size_t)r * w->rows + row + k] =
                _mm512_reduce_add_ps(_mm512_add_ps(ae[k][r], ao[k][r]));
}
#define DPBF16(WR, R)                                                                              \
    __attribute__((target(BF16_TARGET))) static void dpbf16_##WR##_##R(                            \
        const dp_nf4 *w, const uint16_t *xl, const float *map, int64_t row, int C, float *out) {   \
        dpbf16_rows(w, xl, map, row, C, WR, R, out);                                               \
    }
DPBF16(2, 1) DPBF16(2, 2) DPBF16(2, 3) DPBF16(2, 4) DPBF16(1, 5) DPBF16(1, 6) DPBF16(1, 7)
DPBF16(1, 8)
typedef void (*dpbf16_fn)(const dp_nf4 *, const uint16_t *, const float *, int64_t, int, float *);
static const dpbf16_fn dpbf16_by_r[MAX_R + 1] = {NULL,        dpbf16_2_1, dpbf16_2_2, dpbf16_2_3,
                                                 dpbf16_2_4,  dpbf16_1_5, dpbf16_1_6, dpbf16_1_7,
                                                 dpbf16_1_8};

static void dpbf16(const dp_nf4 *w, const uint16_t *xb, float *out, int R, int C, uint16_t *tmp) {
    for (int r = 0; r < R; r++) layout_even_odd(tmp + (size_t)r * C, xb + (size_t)r * C, C);
    const float *map = dp_dynamic_map_cached();
    int WR = R <= 4 ? 2 : 1;
    for (int64_t o = 0; o < w->rows; o += WR) dpbf16_by_r[R](w, tmp, map, o, C, out);
}

/* ---- amx */
#define AMX_TARGET BF16_TARGET ",amx-tile,amx-bf16"
/* literals: GCC's AMX intrinsics paste the tile number into the instruction text */
#define TILE_C  0
#define TILE_A0 1
#define TILE_A1 2
#define TILE_B0 3
#define TILE_B1 4
/* GCC's AMX intrinsics are asm statements without memory operands: order stores and tile loads */
#define MEMORY_BARRIER() __asm__ volatile("" ::: "memory")
#define KC 256 /* columns decoded before their tiles are loaded (a load right after the stores
                * that wrote its data waits for them) */

static bool amx_ok(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 22)) || !(d & (1u << 24)))
        return false;                                      /* AMX-BF16, AMX-TILE */
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;       /* ARCH_REQ_XCOMP_PERM, XTILEDATA */
}

__attribute__((target(AMX_TARGET))) static void amx_configure(int R) {
    dp_amx_tilecfg c = {0};
    c.rows[TILE_C] = 16, c.colsb[TILE_C] = (uint16_t)(R * 4); /* 16 weight rows x R fp32 */
    c.rows[TILE_A0] = c.rows[TILE_A1] = 16, c.colsb[TILE_A0] = c.colsb[TILE_A1] = 64;
    c.rows[TILE_B0] = c.rows[TILE_B1] = 16;
    c.colsb[TILE_B0] = c.colsb[TILE_B1] = (uint16_t)(R * 4); /* 16 k pairs x R inputs */
    dp_amx_load_config(&c);
}

/* weight row `row`, columns [c0, c0 + 64) as bf16 in natural order: vpermb puts each code byte in
 * both words of a pair, vpsrlvw shifts the first down by 4 (the high nibble: the even column) */
__attribute__((target(AMX_TARGET), always_inline)) static inline void
decode64(const dp_nf4 *w, const float *map, int64_t row, int c0, uint16_t *a0, uint16_t *a1) {
    const int64_t C = w->cols;
    __m512i tbl = scaled_table(w, map, (row * C + c0) / w->blocksize);
    __m512i bytes = _mm512_castsi256_si512(
        _mm256_loadu_si256((const __m256i *)(w->codes + (size_t)(row * C + c0) / 2)));
    const __m512i pick0 = _mm512_set_epi8(
        0, 15, 0, 15, 0, 14, 0, 14, 0, 13, 0, 13, 0, 12, 0, 12, 0, 11, 0, 11, 0, 10, 0, 10, 0, 9, 0,
        9, 0, 8, 0, 8, 0, 7, 0, 7, 0, 6, 0, 6, 0, 5, 0, 5, 0, 4, 0, 4, 0, 3, 0, 3, 0, 2, 0, 2, 0, 1,
        0, 1, 0, 0, 0, 0);
    const __m512i pick1 = _mm512_add_epi16(pick0, _mm512_set1_epi16(16));
    const __m512i shift = _mm512_set1_epi32(4);
    const __mmask64 low_bytes = 0x5555555555555555ull;
    __m512i i0 = _mm512_srlv_epi16(_mm512_maskz_permutexvar_epi8(low_bytes, pick0, bytes), shift);
    __m512i i1 = _mm512_srlv_epi16(_mm512_maskz_permutexvar_epi8(low_bytes, pick1, bytes), shift);
    _mm512_store_si512(a0, _mm512_permutexvar_epi16(i0, tbl));
    _mm512_store_si512(a1, _mm512_permutexvar_epi16(i1, tbl));
}

__attribute__((target(AMX_TARGET))) static void amx_rows16(const dp_nf4 *w, const uint16_t *xv,
                                                           const float *map, int64_t o0, int m,
                                                           int R, float *out) {
    const int C = (int)w->cols;
    _Alignas(64) uint16_t a[KC / 32][16][32];
    _Alignas(64) float c[16 * 16];
    if (m < 16) memset(a, 0, sizeof a);
    _tile_zero(TILE_C);
    for (int k0 = 0; k0 < C; k0 += KC) {
        int kn = C - k0 < KC ? C - k0 : KC;
        for (int r = 0; r < m; r++)
            for (int c0 = 0; c0 < kn; c0 += 64)
                decode64(w, map, o0 + r, k0 + c0, a[c0 / 32][r], a[c0 / 32 + 1][r]);
        MEMORY_BARRIER();
        for (int s = 0; s < kn / 32; s += 2) {
            _tile_loadd(TILE_A0, a[s], 64);
            _tile_loadd(TILE_B0, xv + (size_t)(k0 + 32 * s) * R, R * 4);
            _tile_dpbf16ps(TILE_C, TILE_A0, TILE_B0);
            _tile_loadd(TILE_A1, a[s + 1], 64);
            _tile_loadd(TILE_B1, xv + (size_t)(k0 + 32 * s + 32) * R, R * 4);
            _tile_dpbf16ps(TILE_C, TILE_A1, TILE_B1);
        }
        MEMORY_BARRIER();
    }
    _tile_stored(TILE_C, c, R * 4);
    MEMORY_BARRIER();
    for (int r = 0; r < m; r++)
        for (int x = 0; x < R; x++) out[(size_t)x * w->rows + o0 + r] = c[r * R + x];
}

static int amx_configured_r;
static void amx(const dp_nf4 *w, const uint16_t *xb, float *out, int R, int C, uint16_t *tmp) {
    layout_pairs(tmp, xb, R, C);
    if (amx_configured_r != R) amx_configure(R), amx_configured_r = R;
    const float *map = dp_dynamic_map_cached();
    for (int64_t o = 0; o < w->rows; o += 16)
        amx_rows16(w, tmp, map, o, (int)(w->rows - o < 16 ? w->rows - o : 16), R, out);
}
#endif

typedef void (*variant_fn)(const dp_nf4 *, const uint16_t *, float *, int, int, uint16_t *);
typedef struct {
    const char *name;
    variant_fn fn;
    bool ok;
} variant;

static uint32_t rng = 12345;
static uint32_t next(void) {
    return random_nf4_next(&rng);
}

static void fill_nf4(dp_nf4 *q, int rows, int cols) {
    random_nf4(q, rows, cols, &rng);
}

/* the variant against double sums of its own bf16 values; 0 or 1 */
static int check(const variant *v, int rows, int C, int R) {
    dp_nf4 w;
    fill_nf4(&w, rows, C);
    float *x = malloc(sizeof(float) * R * C), *out = malloc(sizeof(float) * R * rows);
    uint16_t *xb = malloc(2 * (size_t)R * C), *tmp = malloc(4 * (size_t)R * C);
    for (int i = 0; i < R * C; i++) x[i] = ((float)(next() % 20001) / 10000.0f - 1.0f) * (1 + i % 7);
    dp_bf16_round(xb, x, R, C);
    v->fn(&w, xb, out, R, C, tmp);
    const float *map = dp_dynamic_map_cached();
    double worst = 0;
    for (int r = 0; r < R; r++)
        for (int o = 0; o < rows; o++) {
            double s = 0, a = 0;
            for (int k = 0; k < C; k++) {
                int64_t e = (int64_t)o * C + k;
                int code = k % 2 ? w.codes[e / 2] & 15 : w.codes[e / 2] >> 4;
                float wv = dp_bf16_f32(dp_bf16_round1(dp_nf4_values[code] *
                                                      block_absmax(&w, map, e / w.blocksize)));
                double p = (double)wv * dp_bf16_f32(xb[(size_t)r * C + k]);
                s += p, a += fabs(p);
            }
            double tol = (C + 2) * ldexp(1, -24) * a + 1e-30;
            double err = fabs(out[(size_t)r * rows + o] - s) / tol;
            if (err > worst) worst = err;
        }
    printf("  %-7s rows %d C %d R %d: worst error %.3f of the tolerance %s\n", v->name, rows, C, R,
           worst, worst <= 1 ? "ok" : "FAIL");
    dp_nf4_free(&w);
    free(x), free(out), free(xb), free(tmp);
    return worst <= 1 ? 0 : 1;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int rounds = 5, check_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--check")) check_only = 1;
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
    }
    if (rounds < 1 || rounds > 64) return fprintf(stderr, "usage: %s [--check] [--rounds N]\n", argv[0]), 2;
    variant vs[2] = {{"dpbf16", NULL, false}, {"amx", NULL, false}};
#ifdef SB_X86
    vs[0].fn = dpbf16, vs[0].ok = dp_bf16_gemm_ok() && __builtin_cpu_supports("avx512vbmi");
    vs[1].fn = amx, vs[1].ok = vs[0].ok && amx_ok();
#endif
    int fails = 0, ran = 0;
    for (int i = 0; i < 2; i++) {
        if (!vs[i].ok) {
            printf("  %-7s not on this CPU: skipped\n", vs[i].name);
            continue;
        }
        ran++;
        for (int R = 1; R <= MAX_R; R += 3) fails += check(&vs[i], 40, 576, R);
        fails += check(&vs[i], 32, 1536, 8);
    }
    if (fails) return 1;
    if (!ran) return 77;
    if (check_only) return 0;

    enum { L = 30, C0 = 576, KVD = 192, F = 1536 };
    static dp_nf4 w[L][7];
    const int rows[7] = {C0, KVD, KVD, C0, F, F, C0}, cols[7] = {C0, C0, C0, C0, C0, C0, F};
    for (int l = 0; l < L; l++)
        for (int m = 0; m < 7; m++) fill_nf4(&w[l][m], rows[m], cols[m]);
    float *x = malloc(sizeof(float) * MAX_R * F), *y = malloc(sizeof(float) * MAX_R * F);
    uint16_t *xb = malloc(2 * (size_t)MAX_R * F), *tmp = malloc(4 * (size_t)MAX_R * F);
    for (int i = 0; i < MAX_R * F; i++) x[i] = (float)(next() % 2001) / 1000.0f - 1.0f;
    printf("sandbox gemv_nf4_bf16: SmolLM2-135M's 30 layers of NF4 linears, 1 thread, CPU ms per "
           "step, medians of %d rounds (fp32 = doppel's kernel)\n", rounds);
    const int sizes[4] = {1, 2, 4, 8};
    for (int si = 0; si < 4; si++) {
        int R = sizes[si];
        double t[3][64];
        for (int rd = 0; rd < rounds; rd++)
            for (int vi = 0; vi < 3; vi++) {
                int v = (vi + rd) % 3; /* alternate the order */
                if (v > 0 && !vs[v - 1].ok) continue;
                double t0 = cpu_now();
                for (int l = 0; l < L; l++)
                    for (int m = 0; m < 7; m++) {
                        int Cm = cols[m];
                        if (v == 0) {
                            const dp_nf4 *wp = &w[l][m];
                            gemv_nf4_rows_multi(1, &y, &wp, (const float *const[]){NULL}, x, R, Cm);
                        } else {
                            dp_bf16_round(xb, x, R, Cm); /* part of the variant's cost */
                            vs[v - 1].fn(&w[l][m], xb, y, R, Cm, tmp);
                        }
                    }
                t[v][rd] = (cpu_now() - t0) * 1e3;
            }
        printf("  R=%d  fp32 ", R);
        for (int v = 0; v < 3; v++) {
            if (v > 0 && !vs[v - 1].ok) continue;
            qsort(t[v], (size_t)rounds, sizeof(double), cmp_double);
            if (v == 0) printf("%7.2f", t[0][rounds / 2]);
            else printf("   %s %7.2f (x%.2f)", vs[v - 1].name, t[v][rounds / 2], t[0][rounds / 2] / t[v][rounds / 2]);
        }
        printf("\n");
    }
    return 0;
}
