/* The bf16 GEMM over frozen weights (kernels/cpu/gemm_bf16.c) against sums in double of the same
 * bf16-rounded inputs, by each kernel this CPU has (AMX tiles with vdpbf16ps edges, vdpbf16ps
 * alone: DOPPEL_SIMD=avx512bf16); the NF4 panels bit-exact against dp_nf4_dequantize rounded;
 * the fallback to the fp32 path when the CPU (or DOPPEL_SIMD) has no AVX512_BF16.
 *
 * Tolerance, derived: a bf16 x bf16 product is exact in fp32 (8 + 8 significant bits), so the
 * kernel and the reference sum the same K terms and differ only by the kernel's fp32 additions:
 * at most K + 1 roundings of a partial sum, each <= 2^-24 |partial| <= 2^-24 S, S = sum |x_k w_k|
 * (+ |out| when accumulating). Bound (K + 2) 2^-24 S per element, plus 1e-30 for flushed
 * denormals. AMX's TDPBF16PS rounds at most twice per k pair (the pair's sum, the accumulation),
 * the same K roundings. Against the fp32 path the bf16 rounding of x and w adds
 * <= (2^-8 + 2^-16) S. */
#include "check.h"
#include "kernels/nf4.h"
#include "kernels/ops.h"

#include <stdint.h>

static check_rng rng = {777};
static float *rnd(size_t n) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = check_rng_float(&rng);
    return p;
}
static float bf(float x) {
    return dp_bf16_f32(dp_bf16_round1(x));
}

/* out (N, NO) vs init + sum_k bf(a[n, k]) bf(b(o, k)) in double, b(o, k) = w[o * so + k * sk];
 * tolerance (K + 2) 2^-24 S + extra S */
static int compare(const char *what, const float *out, const float *init, const float *a,
                   const float *w, int so, int sk, int N, int K, int NO, double extra) {
    double worst = 0, worst_tol = 0;
    int bad = 0;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < NO; o++) {
            double s = init ? init[(size_t)n * NO + o] : 0, S = fabs(s);
            for (int k = 0; k < K; k++) {
                double t = (double)bf(a[(size_t)n * K + k]) * bf(w[(size_t)o * so + (size_t)k * sk]);
                s += t, S += fabs(t);
            }
            double tol = (K + 2) * 0x1p-24 * S + extra * S + 1e-30;
            double d = fabs(s - out[(size_t)n * NO + o]);
            if (!(d <= tol)) bad++;
            if (d > worst) worst = d, worst_tol = tol;
        }
    printf("%-58s max |diff| %.3g (tol there %.3g)%s\n", what, worst, worst_tol,
           bad ? "  FAIL" : "");
    CHECK_REPORT(!bad, "%s: %d elements outside the bound", what, bad);
    return bad;
}

/* bf16 out vs the fp32 path's out32: the rounding of x and w moves each term by <= (2^-8 +
 * 2^-16) |x w|, both sums are within (K + 2) 2^-24 S of their exact values */
static void vs_fp32(const char *what, const float *out, const float *out32, const float *a,
                    const float *w, int so, int sk, int N, int K, int NO) {
    double worst = 0;
    int bad = 0;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < NO; o++) {
            double S = 0;
            for (int k = 0; k < K; k++)
                S += fabs((double)a[(size_t)n * K + k] * w[(size_t)o * so + (size_t)k * sk]);
            double d = fabs((double)out[(size_t)n * NO + o] - out32[(size_t)n * NO + o]);
            double tol = (0x1p-8 + 0x1p-16 + 2.0 * (K + 2) * 0x1p-24) * S + 1e-30;
            if (d > worst) worst = d;
            bad += !(d <= tol);
        }
    printf("%-58s max |diff| %.3g%s\n", what, worst, bad ? "  FAIL" : "");
    CHECK_REPORT(!bad, "%s: %d elements outside the bound", what, bad);
}

/* the panel kernel on fp32 weights of any shape (odd K, partial panels and row strips) */
static void test_packed(int N, int K, int NO) {
    float *x = rnd((size_t)N * K), *w = rnd((size_t)NO * K), *init = rnd((size_t)N * NO);
    uint16_t *xb = malloc((size_t)N * ((K + 1) & ~1) * 2);
    uint16_t *wp = malloc(dp_bf16_panel_size(K, NO) * 2);
    float *out = malloc((size_t)N * NO * 4);
    char what[128];
    dp_bf16_round(xb, x, N, K);
    /* two calls: threads split the rows */
    dp_bf16_pack_nt(wp, w, NO, K, 0, NO / 2);
    dp_bf16_pack_nt(wp, w, NO, K, NO / 2, NO);
    gemm_bf16_packed(out, NO, xb, wp, N, K, NO, false);
    snprintf(what, sizeof what, "gemm_bf16 nt N=%d K=%d NO=%d", N, K, NO);
    compare(what, out, NULL, x, w, K, 1, N, K, NO, 0);
    /* nn: w read as (K, NO), out += x w */
    dp_bf16_pack_nn(wp, w, K, NO, 0, K / 4 * 2); /* split at an even row */
    dp_bf16_pack_nn(wp, w, K, NO, K / 4 * 2, K);
    memcpy(out, init, (size_t)N * NO * 4);
    gemm_bf16_packed(out, NO, xb, wp, N, K, NO, true);
    snprintf(what, sizeof what, "gemm_bf16 nn accumulate N=%d K=%d NO=%d", N, K, NO);
    compare(what, out, init, x, w, 1, NO, N, K, NO, 0);
    free(x), free(w), free(init), free(xb), free(wp), free(out);
}

/* an fp32 weight rounded block by block (the training head's GEMMs): x W^T and a W with several
 * blocks, the last partial, K odd in the blocks of a W */
static void test_f32w(int N, int K, int NO, int block) {
    float *x = rnd((size_t)N * K), *w = rnd((size_t)NO * K), *out = rnd((size_t)N * NO);
    size_t snt = gemm_bf16_f32w_scratch(false, N, K, NO, block),
           snn = gemm_bf16_f32w_scratch(true, N, K, NO, block);
    uint16_t *scratch = malloc((snt > snn ? snt : snn) * 2);
    char what[128];
    gemm_bf16_f32w_nt(out, NO, x, w, N, K, NO, block, scratch);
    snprintf(what, sizeof what, "gemm_bf16_f32w_nt N=%d K=%d NO=%d block %d", N, K, NO, block);
    compare(what, out, NULL, x, w, K, 1, N, K, NO, 0);
    gemm_bf16_f32w_nn(out, NO, x, K, w, N, K, NO, block, scratch); /* w read as (K, NO) */
    snprintf(what, sizeof what, "gemm_bf16_f32w_nn N=%d K=%d NO=%d block %d", N, K, NO, block);
    compare(what, out, NULL, x, w, 1, NO, N, K, NO, 0);
    free(x), free(w), free(out), free(scratch);
}

/* NF4 panels: every slot the rounded dequantized value, padding zero */
static void test_nf4_panels(int OC, int C) {
    float *w = rnd((size_t)OC * C), *dq = malloc((size_t)OC * C * 4);
    dp_nf4 q;
    CHECK(dp_nf4_quantize(&q, w, OC, C, 64) == 0);
    dp_nf4_dequantize(&q, dq);
    size_t nt_n = dp_bf16_panel_size(C, OC), nn_n = dp_bf16_panel_size(OC, C);
    uint16_t *a = malloc(nt_n * 2), *b = malloc(nt_n * 2), *c = malloc(nn_n * 2),
             *d = malloc(nn_n * 2);
    memset(a, 0xab, nt_n * 2), memset(c, 0xab, nn_n * 2);
    dp_nf4_pack_bf16_nt(a, &q, 0, OC);
    dp_bf16_pack_nt(b, dq, OC, C, 0, OC);
    dp_nf4_pack_bf16_nn(c, &q, 0, OC);
    dp_bf16_pack_nn(d, dq, OC, C, 0, OC);
    CHECK_REPORT(!memcmp(a, b, nt_n * 2), "NF4 nt panel (%d, %d) != rounded dequantized", OC, C);
    CHECK_REPORT(!memcmp(c, d, nn_n * 2), "NF4 nn panel (%d, %d) != rounded dequantized", OC, C);
    /* the AVX-512 packing (rounding, transposes, pair interleaving) against the scalar loops */
    setenv("DOPPEL_SIMD", "avx2", 1);
    dp_nf4_pack_bf16_nt(b, &q, 0, OC / 3 * 2); /* split at an even row: threads share it so */
    dp_nf4_pack_bf16_nt(b, &q, OC / 3 * 2, OC);
    dp_nf4_pack_bf16_nn(d, &q, 0, OC / 3 * 2);
    dp_nf4_pack_bf16_nn(d, &q, OC / 3 * 2, OC);
    unsetenv("DOPPEL_SIMD");
    CHECK_REPORT(!memcmp(a, b, nt_n * 2), "NF4 nt panel (%d, %d): SIMD != scalar packing", OC, C);
    CHECK_REPORT(!memcmp(c, d, nn_n * 2), "NF4 nn panel (%d, %d): SIMD != scalar packing", OC, C);
    free(a), free(b), free(c), free(d), free(w), free(dq);
    dp_nf4_free(&q);
}

/* whole NF4 layers, forward and input gradient, against bf16 in double and against fp32 */
static void test_nf4_layer(int N, int C, int OC) {
    float *x = rnd((size_t)N * C), *w = rnd((size_t)OC * C), *g = rnd((size_t)N * OC);
    float *dq = malloc((size_t)OC * C * 4), *out = malloc((size_t)N * OC * 4),
          *out32 = malloc((size_t)N * OC * 4), *dx = rnd((size_t)N * C),
          *dx0 = malloc((size_t)N * C * 4), *dx32 = malloc((size_t)N * C * 4);
    memcpy(dx0, dx, (size_t)N * C * 4), memcpy(dx32, dx, (size_t)N * C * 4);
    dp_nf4 q;
    CHECK(dp_nf4_quantize(&q, w, OC, C, 64) == 0);
    dp_nf4_dequantize(&q, dq);
    char what[128];
    matmul_nf4_forward_bf16(out, x, &q, NULL, N, C, OC);
    snprintf(what, sizeof what, "matmul_nf4_forward_bf16 N=%d C=%d OC=%d", N, C, OC);
    compare(what, out, NULL, x, dq, C, 1, N, C, OC, 0);
    matmul_nf4_forward(out32, x, &q, NULL, N, C, OC);
    vs_fp32("  ... vs the fp32 path", out, out32, x, dq, C, 1, N, C, OC);
    matmul_nf4_backward_input_bf16(dx, g, &q, N, C, OC);
    snprintf(what, sizeof what, "matmul_nf4_backward_input_bf16 N=%d C=%d OC=%d", N, C, OC);
    compare(what, dx, dx0, g, dq, 1, C, N, OC, C, 0);
    matmul_nf4_backward_input(dx32, g, &q, N, C, OC);
    vs_fp32("  ... vs the fp32 path", dx, dx32, g, dq, 1, C, N, OC, C);
    free(x), free(w), free(g), free(dq), free(out), free(out32), free(dx), free(dx0), free(dx32);
    dp_nf4_free(&q);
}

/* DOPPEL_SIMD=avx512 (AVX-512 without bf16 products): the entry points are the fp32 ones, bit
 * for bit, and the panel kernel runs its scalar loop */
static void test_fallback(void) {
    setenv("DOPPEL_SIMD", "avx512", 1);
    CHECK(!dp_bf16_gemm_ok());
    int N = 20, C = 128, OC = 96;
    float *x = rnd((size_t)N * C), *w = rnd((size_t)OC * C), *g = rnd((size_t)N * OC);
    float *a = malloc((size_t)N * OC * 4), *b = malloc((size_t)N * OC * 4);
    float *da = calloc((size_t)N * C, 4), *db = calloc((size_t)N * C, 4);
    dp_nf4 q;
    CHECK(dp_nf4_quantize(&q, w, OC, C, 64) == 0);
    matmul_nf4_forward_bf16(a, x, &q, NULL, N, C, OC);
    matmul_nf4_forward(b, x, &q, NULL, N, C, OC);
    CHECK_REPORT(!memcmp(a, b, (size_t)N * OC * 4), "fallback forward != the fp32 path");
    matmul_nf4_backward_input_bf16(da, g, &q, N, C, OC);
    matmul_nf4_backward_input(db, g, &q, N, C, OC);
    CHECK_REPORT(!memcmp(da, db, (size_t)N * C * 4), "fallback backward != the fp32 path");
    printf("fallback (DOPPEL_SIMD=avx512): fp32 path bit for bit; scalar panel loop:\n");
    test_packed(13, 33, 35);
    unsetenv("DOPPEL_SIMD");
    free(x), free(w), free(g), free(a), free(b), free(da), free(db);
    dp_nf4_free(&q);
}

int main(void) {
    test_fallback();
    test_nf4_panels(70, 130);
    test_nf4_panels(192, 576);
    test_nf4_panels(33, 64);
    if (!dp_bf16_gemm_ok()) {
        printf("this CPU has no AVX512_BF16: the vdpbf16ps kernel is not tested here\n");
        if (check_failures) return check_done();
        SKIP("no AVX512_BF16");
    }
    /* the AMX blocks need 32 rows, 32 columns and 32 k: shapes with none, exactly one, and
     * whole blocks with every kind of edge (last rows below and from AMX_TAIL = 8 on, padded
     * into a block; a partial panel; k pairs past the tiles) */
    int shapes[][3] = {{1, 2, 1},     {5, 7, 3},    {12, 64, 32},   {13, 33, 35},  {25, 300, 70},
                       {37, 577, 97}, {24, 1, 40},  {32, 32, 32},   {64, 576, 96}, {70, 600, 100},
                       {96, 31, 64},  {33, 64, 33}, {45, 600, 100}, {20, 64, 40}};
    bool amx = dp_bf16_amx_ok();
    for (int pass = 0; pass < (amx ? 2 : 1); pass++) {
        if (pass) setenv("DOPPEL_SIMD", "avx512bf16", 1);
        printf("kernel: %s\n", dp_bf16_amx_ok() ? "AMX tiles, vdpbf16ps edges" : "vdpbf16ps");
        for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
            test_packed(shapes[i][0], shapes[i][1], shapes[i][2]);
        test_nf4_layer(64, 576, 192);
        test_nf4_layer(50, 576, 1536);
        test_nf4_layer(31, 1536, 576);
        test_f32w(45, 96, 2500, 1024);
        test_f32w(40, 2501, 96, 1000);
    }
    unsetenv("DOPPEL_SIMD");
    if (!amx) printf("no AMX-BF16 (or no leave from the kernel to use it): AMX not tested here\n");
    return check_done();
}
