/* Q8 storage and gemv_q8 (kernels/q8.h): Q8_0 values come back exactly, the fused GEMV equals a
 * double-precision dot over the dequantized rows on every SIMD path, and its distance from the
 * fp32 product stays within the bound the rounding allows (sum |x| * absmax / 254 per block). */
#include "check.h"
#include "kernels/q8.h"

#include <math.h>
#include <stdlib.h>

static check_rng rng = {0x9e3779b97f4a7c15ull};

/* Q8_0 values as a GGUF file holds them: per block an fp16-representable scale and int8 codes
 * with one code at +-127 (the block's max); quantizing them must give the same codes and
 * scales back, so a Q8_0 tensor loses nothing in its decode copy */
static void test_exact(void) {
    const int rows = 7, cols = 96;
    float *w = malloc(sizeof(float) * rows * cols);
    int8_t *codes = malloc((size_t)rows * cols);
    float *scales = malloc(sizeof(float) * rows * cols / 32);
    for (int b = 0; b < rows * cols / 32; b++) {
        scales[b] = ldexpf(1.0f + (float)(b % 37) / 64.0f, -(b % 9) - 5); /* 7 mantissa bits */
        for (int i = 0; i < 32; i++) {
            int c = (int)lrintf(check_rng_xs_float(&rng) * 126.0f);
            if (i == b % 32) c = b % 2 ? 127 : -127;
            codes[b * 32 + i] = (int8_t)c;
            w[b * 32 + i] = (float)c * scales[b];
        }
    }
    dp_q8 q;
    CHECK(dp_q8_quantize(&q, w, rows, cols) == 0);
    int bad = 0;
    for (int i = 0; i < rows * cols; i++) bad += q.q[i] != codes[i];
    for (int b = 0; b < rows * cols / 32; b++) bad += q.d[b] != scales[b];
    CHECK_EQ_INT(0, bad);
    float row[96];
    dp_q8_dequantize_row(&q, 3, row);
    for (int i = 0; i < cols; i++) bad += row[i] != w[3 * cols + i];
    CHECK_EQ_INT(0, bad);
    CHECK_EQ_INT(rows * cols + rows * cols / 32 * 4, (int)dp_q8_bytes(&q));
    dp_q8_free(&q);
    free(w), free(codes), free(scales);
}

static void test_gemv(int C, int OC) {
    float *w = malloc(sizeof(float) * C * OC), *x = malloc(sizeof(float) * C),
          *b = malloc(sizeof(float) * OC), *y = malloc(sizeof(float) * OC),
          *ref = malloc(sizeof(float) * OC), *row = malloc(sizeof(float) * C);
    for (int i = 0; i < C * OC; i++)
        w[i] = check_rng_xs_float(&rng) * (1.0f + (float)(i % 97) / 10.0f);
    for (int i = 0; i < C; i++) x[i] = check_rng_xs_float(&rng) * 3.0f;
    for (int i = 0; i < OC; i++) b[i] = check_rng_xs_float(&rng);
    dp_q8 q;
    CHECK(dp_q8_quantize(&q, w, OC, C) == 0);
    gemv_q8(y, x, &q, b, C, OC);
    /* 1: the kernel computes the product with the dequantized rows, up to fp32 summation
     * (tolerance: a few ulps of the sum of |terms|, which cancel to a much smaller result) */
    double terms = 0;
    for (int o = 0; o < OC; o++) {
        dp_q8_dequantize_row(&q, o, row);
        double s = b[o], a = fabs(b[o]);
        for (int i = 0; i < C; i++) s += (double)row[i] * x[i], a += fabs((double)row[i] * x[i]);
        ref[o] = (float)s;
        terms = fmax(terms, a);
    }
    char what[96];
    snprintf(what, sizeof what, "gemv_q8 C=%d OC=%d vs dequantized rows", C, OC);
    check_arrays_near(what, ref, y, (size_t)OC, 1e-6 * terms, 0);
    /* 2: against the fp32 weights, within the rounding bound of each block */
    int over = 0;
    double worst = 0;
    for (int o = 0; o < OC; o++) {
        double s = b[o], bound = 1e-5;
        for (int blk = 0; blk < C / 32; blk++) {
            double am = 0, sx = 0;
            for (int i = blk * 32; i < blk * 32 + 32; i++) {
                s += (double)w[(size_t)o * C + i] * x[i];
                am = fmax(am, fabs(w[(size_t)o * C + i]));
                sx += fabs(x[i]);
            }
            bound += sx * am / 254.0;
        }
        double err = fabs(s - y[o]);
        worst = fmax(worst, err / bound);
        over += err > bound;
    }
    fprintf(stderr, "  gemv_q8 C=%d OC=%d vs fp32: worst error %.3f of the rounding bound\n", C, OC,
            worst);
    CHECK_EQ_INT(0, over);
    dp_q8_free(&q);
    free(w), free(x), free(b), free(y), free(ref), free(row);
}

/* R inputs at once (gemv_q8_rows, a batched decode step's heads): each output row equals the
 * one-input kernel's product for that input, within fp32 summation order. */
static void test_gemv_rows(int R, int C, int OC) {
    float *w = malloc(sizeof(float) * C * OC), *x = malloc(sizeof(float) * R * C),
          *b = malloc(sizeof(float) * OC), *y = malloc(sizeof(float) * R * OC),
          *ref = malloc(sizeof(float) * R * OC), *row = malloc(sizeof(float) * C);
    for (int i = 0; i < C * OC; i++)
        w[i] = check_rng_xs_float(&rng) * (1.0f + (float)(i % 89) / 10.0f);
    for (int i = 0; i < R * C; i++) x[i] = check_rng_xs_float(&rng) * 3.0f;
    for (int i = 0; i < OC; i++) b[i] = check_rng_xs_float(&rng);
    dp_q8 q;
    CHECK(dp_q8_quantize(&q, w, OC, C) == 0);
    gemv_q8_rows(y, x, &q, b, R, C, OC);
    double terms = 0;
    for (int r = 0; r < R; r++)
        for (int o = 0; o < OC; o++) {
            dp_q8_dequantize_row(&q, o, row);
            double s = b[o], a = fabs(b[o]);
            for (int i = 0; i < C; i++)
                s += (double)row[i] * x[(size_t)r * C + i], a += fabs((double)row[i] * x[r * C + i]);
            ref[(size_t)r * OC + o] = (float)s;
            terms = fmax(terms, a);
        }
    char what[96];
    snprintf(what, sizeof what, "gemv_q8_rows R=%d C=%d OC=%d vs dequantized rows", R, C, OC);
    check_arrays_near(what, ref, y, (size_t)R * OC, 1e-6 * terms, 0);
    dp_q8_free(&q);
    free(w), free(x), free(b), free(y), free(ref), free(row);
}

int main(void) {
    test_exact();
    for (int R = 1; R <= DP_Q8_ROWS + 2; R += 3) test_gemv_rows(R, 576, 257);
    dp_q8 q;
    float w[64] = {0};
    CHECK(dp_q8_quantize(&q, w, 2, 31) != 0); /* width not a multiple of 32 */
    CHECK(dp_q8_quantize(&q, w, 0, 32) != 0);
    CHECK(dp_q8_quantize(&q, w, 2, 32) == 0); /* all zeros: scale 0, codes 0 */
    CHECK(q.d[0] == 0 && q.q[5] == 0);
    dp_q8_free(&q);
    test_gemv(576, 333);
    test_gemv(896, 64);
    const char *paths[] = {"avx2", "scalar"};
    for (int i = 0; i < 2; i++) {
        setenv("DOPPEL_SIMD", paths[i], 1);
        fprintf(stderr, "DOPPEL_SIMD=%s\n", paths[i]);
        test_gemv(576, 100);
        test_gemv(64, 7);
        test_gemv_rows(3, 128, 40);
    }
    return check_done();
}
