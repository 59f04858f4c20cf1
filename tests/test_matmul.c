/* Linear layers: OpenBLAS fp32 forward/backward against loops in double; NF4 tiled forward,
 * input-gradient and fused GEMV (scalar, AVX2 and AVX-512 paths) against the dequantized weight
 * multiplied in double. */
#include "check.h"
#include "kernels/nf4.h"
#include "kernels/ops.h"

#include <stdint.h>

static uint64_t rs = 12345;
static float frand(void) {
    rs = rs * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((rs >> 40) * (1.0 / (1 << 24))) * 2.0f - 1.0f;
}
static float *rnd(size_t n) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = frand();
    return p;
}

/* out = inp @ W^T + b in double */
static void ref_linear(float *out, const float *inp, const float *w, const float *b, int N, int C,
                       int OC) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = b ? b[o] : 0;
            for (int c = 0; c < C; c++) s += (double)inp[n * C + c] * w[(size_t)o * C + c];
            out[n * OC + o] = (float)s;
        }
}

static void test_dense(int N, int C, int OC) {
    float *x = rnd((size_t)N * C), *w = rnd((size_t)OC * C), *b = rnd(OC), *g = rnd((size_t)N * OC);
    float *out = malloc((size_t)N * OC * 4), *ref = malloc((size_t)N * OC * 4);
    matmul_forward(out, x, w, b, N, C, OC);
    ref_linear(ref, x, w, b, N, C, OC);
    check_arrays_near("matmul_forward vs double loops", ref, out, (size_t)N * OC, 1e-5, 1e-5);
    /* backward accumulates onto what is there */
    float *dx = calloc((size_t)N * C, 4), *dw = calloc((size_t)OC * C, 4), *db = calloc(OC, 4);
    float *rdx = malloc((size_t)N * C * 4), *rdw = malloc((size_t)OC * C * 4),
          *rdb = malloc(OC * 4);
    for (int i = 0; i < N * C; i++) dx[i] = 1.0f;
    for (int i = 0; i < OC; i++) db[i] = 0.5f;
    matmul_backward(dx, dw, db, g, x, w, N, C, OC);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            double s = 1.0;
            for (int o = 0; o < OC; o++) s += (double)g[n * OC + o] * w[(size_t)o * C + c];
            rdx[n * C + c] = (float)s;
        }
    for (int o = 0; o < OC; o++) {
        double sb = 0.5;
        for (int n = 0; n < N; n++) sb += g[n * OC + o];
        rdb[o] = (float)sb;
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int n = 0; n < N; n++) s += (double)g[n * OC + o] * x[n * C + c];
            rdw[(size_t)o * C + c] = (float)s;
        }
    }
    check_arrays_near("matmul_backward dinp", rdx, dx, (size_t)N * C, 1e-5, 1e-5);
    check_arrays_near("matmul_backward dweight", rdw, dw, (size_t)OC * C, 1e-5, 1e-5);
    check_arrays_near("matmul_backward dbias", rdb, db, OC, 1e-5, 1e-5);
    free(x), free(w), free(b), free(g), free(out), free(ref);
    free(dx), free(dw), free(db), free(rdx), free(rdw), free(rdb);
}

static void test_nf4(int N, int C, int OC, int bs) {
    float *x = rnd((size_t)N * C), *w = rnd((size_t)OC * C), *b = rnd(OC), *g = rnd((size_t)N * OC);
    dp_nf4 q;
    CHECK(dp_nf4_quantize(&q, w, OC, C, bs) == 0);
    float *wd = malloc((size_t)OC * C * 4);
    dp_nf4_dequantize(&q, wd);
    float *out = malloc((size_t)N * OC * 4), *ref = malloc((size_t)N * OC * 4);
    char what[96];
    matmul_nf4_forward(out, x, &q, b, N, C, OC);
    ref_linear(ref, x, wd, b, N, C, OC);
    snprintf(what, sizeof what, "matmul_nf4_forward N=%d C=%d OC=%d bs=%d", N, C, OC, bs);
    check_arrays_near(what, ref, out, (size_t)N * OC, 1e-4, 1e-4);
    /* single token: the fused path, every row */
    gemv_nf4(out, x, &q, NULL, C, OC);
    ref_linear(ref, x, wd, NULL, 1, C, OC);
    snprintf(what, sizeof what, "gemv_nf4 C=%d OC=%d bs=%d", C, OC, bs);
    check_arrays_near(what, ref, out, OC, 1e-4, 1e-4);
    float *dx = malloc((size_t)N * C * 4), *rdx = malloc((size_t)N * C * 4);
    for (int i = 0; i < N * C; i++) dx[i] = 0.25f;
    matmul_nf4_backward_input(dx, g, &q, N, C, OC);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            double s = 0.25;
            for (int o = 0; o < OC; o++) s += (double)g[n * OC + o] * wd[(size_t)o * C + c];
            rdx[n * C + c] = (float)s;
        }
    snprintf(what, sizeof what, "matmul_nf4_backward_input N=%d C=%d", N, C);
    check_arrays_near(what, rdx, dx, (size_t)N * C, 1e-4, 1e-4);
    dp_nf4_free(&q);
    free(x), free(w), free(b), free(g), free(wd), free(out), free(ref), free(dx), free(rdx);
}

/* A few rows at once (a batched decode step), over three matrices of different heights as
 * q/k/v are: every output against the dense reference on the dequantized weights. */
static void test_nf4_rows(int R, int C, int bs) {
    const int OCs[3] = {3 * bs / 2 + 5, 64, 130};
    float *x = rnd((size_t)R * C);
    dp_nf4 q[3];
    const dp_nf4 *wp[3];
    float *out[3], *bias[3], *wd[3];
    for (int i = 0; i < 3; i++) {
        float *w = rnd((size_t)OCs[i] * C);
        CHECK(dp_nf4_quantize(&q[i], w, OCs[i], C, bs) == 0);
        wd[i] = malloc((size_t)OCs[i] * C * 4);
        dp_nf4_dequantize(&q[i], wd[i]);
        wp[i] = &q[i];
        out[i] = malloc((size_t)R * OCs[i] * 4);
        bias[i] = i == 1 ? NULL : rnd(OCs[i]);
        free(w);
    }
    gemv_nf4_rows_multi(3, out, wp, (const float *const *)bias, x, R, C);
    for (int i = 0; i < 3; i++) {
        float *ref = malloc((size_t)R * OCs[i] * 4);
        ref_linear(ref, x, wd[i], bias[i], R, C, OCs[i]);
        char what[96];
        snprintf(what, sizeof what, "gemv_nf4_rows_multi R=%d C=%d OC=%d bs=%d", R, C, OCs[i], bs);
        check_arrays_near(what, ref, out[i], (size_t)R * OCs[i], 1e-4, 1e-4);
        free(ref), free(out[i]), free(bias[i]), free(wd[i]);
        dp_nf4_free(&q[i]);
    }
    free(x);
}

/* The batched GEMV's two-weight-rows kernel (dp_gemv_row_pairs = 1, the default) against the
 * one-row kernel: the same products added in the same order, so bit for bit the same, for every
 * R and an odd number of rows (the last one alone). */
static void test_nf4_row_pairs_exact(int R, int C, int OC) {
    float *x = rnd((size_t)R * C), *w = rnd((size_t)OC * C), *b = rnd(OC);
    float *one = malloc((size_t)R * OC * 4), *two = malloc((size_t)R * OC * 4);
    dp_nf4 q;
    CHECK(dp_nf4_quantize(&q, w, OC, C, 64) == 0);
    const dp_nf4 *wp = &q;
    const float *bp = b;
    dp_gemv_row_pairs = 0;
    gemv_nf4_rows_multi(1, &one, &wp, &bp, x, R, C);
    dp_gemv_row_pairs = 1;
    gemv_nf4_rows_multi(1, &two, &wp, &bp, x, R, C);
    CHECK_REPORT(!memcmp(one, two, (size_t)R * OC * 4),
                 "gemv_nf4_rows_multi R=%d C=%d OC=%d: row pairs differ from one row at a time", R,
                 C, OC);
    dp_nf4_free(&q);
    free(x), free(w), free(b), free(one), free(two);
}

/* matmul_nf4_forward_cols: the output columns in ranges (as threads split a prefill between
 * them), each range's bias included and nothing outside it written, against the reference. */
static void test_nf4_cols(int N, int C, int OC, int parts) {
    float *x = rnd((size_t)N * C), *w = rnd((size_t)OC * C), *b = rnd(OC);
    float *out = malloc((size_t)N * OC * 4), *ref = malloc((size_t)N * OC * 4),
          *wd = malloc((size_t)OC * C * 4);
    dp_nf4 q;
    CHECK(dp_nf4_quantize(&q, w, OC, C, 64) == 0);
    dp_nf4_dequantize(&q, wd);
    ref_linear(ref, x, wd, b, N, C, OC);
    for (size_t i = 0; i < (size_t)N * OC; i++) out[i] = NAN;
    for (int p = 0; p < parts; p++)
        matmul_nf4_forward_cols(out, x, &q, b, N, C, OC, (int)((int64_t)OC * p / parts),
                                (int)((int64_t)OC * (p + 1) / parts));
    char what[96];
    snprintf(what, sizeof what, "matmul_nf4_forward_cols N=%d C=%d OC=%d in %d parts", N, C, OC,
             parts);
    check_arrays_near(what, ref, out, (size_t)N * OC, 1e-4, 1e-4);
    dp_nf4_free(&q);
    free(x), free(w), free(b), free(out), free(ref), free(wd);
}

int main(void) {
    test_nf4_cols(35, 576, 1536, 2);
    test_nf4_cols(9, 1536, 577, 3);
    test_nf4_cols(3, 128, 1000, 1); /* several tiles in one range */
    for (int R = 2; R <= DP_GEMV_ROWS; R++) test_nf4_row_pairs_exact(R, 576, 193);
    test_nf4_row_pairs_exact(4, 1536, 37);
    test_dense(1, 7, 5);
    test_dense(13, 64, 96);
    test_dense(33, 200, 150);
    test_nf4(5, 128, 70, 64);
    test_nf4(3, 576, 1536, 64);  /* SmolLM2 gate/up shape: several tiles */
    test_nf4(2, 1536, 576, 256); /* down_proj shape, blocksize 256 */
    test_nf4(4, 100, 9, 64);     /* rows share blocks: the generic path */
    test_nf4(1, 64, 3, 64);
    /* the narrower GEMV paths too (each capped by what this CPU has) */
    const char *paths[] = {"avx2", "scalar"};
    for (int i = 0; i < 2; i++) {
        setenv("DOPPEL_SIMD", paths[i], 1);
        fprintf(stderr, "DOPPEL_SIMD=%s\n", paths[i]);
        test_nf4(2, 576, 192, 64);
        test_nf4(1, 512, 64, 256);
        for (int R = 1; R <= 11; R += 2) test_nf4_rows(R, 576, 64);
    }
    unsetenv("DOPPEL_SIMD");
    for (int R = 2; R <= DP_GEMV_ROWS + 1; R++) test_nf4_rows(R, 256, 64); /* the widest path */
    test_nf4_rows(4, 512, 256);
    test_nf4_rows(3, 100, 64); /* rows share blocks: the generic path */
    return check_done();
}
