/* Decode GEMVs with int8 activations (kernels/cpu/gemv_i8.c) against two references:
 * - a scalar model of the same arithmetic written here (x rounded per 32 elements, NF4 table
 *   rounded to int8 / 127, exact integer sums per block, scales in double): the kernel may only
 *   differ by float summation order;
 * - the exact fp32 kernels: the distance must stay within what the two roundings allow, half a
 *   step each: sum |w| * d_x / 2 + sum |x| * absmax / 254 (NF4) and sum |w| * d_x / 2 (Q8).
 * Both on shapes with an odd last chunk, several matrices, 1..10 inputs, and bias. Where the
 * int8 path does not apply (blocksize 32, no VNNI) the calls must equal the fp32 kernels. */
#include "check.h"
#include "kernels/nf4.h"
#include "kernels/q8.h"

#include <math.h>
#include <stdlib.h>

static check_rng rng = {0x5bd1e995ull};

static float *rnd(size_t n, float scale) {
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = check_rng_xs_float(&rng) * scale;
    return v;
}

/* x (C) -> int8 per 32 (d = max|x| / 127, round to nearest even), d per block */
static void ref_quant(const float *x, int C, int *q, double *d) {
    for (int b = 0; b < C / 32; b++) {
        float am = 0;
        for (int i = 0; i < 32; i++) am = fmaxf(am, fabsf(x[b * 32 + i]));
        d[b] = am / 127.0f;
        float id = am > 0 ? 127.0f / am : 0.0f;
        for (int i = 0; i < 32; i++) {
            float v = fminf(fmaxf(x[b * 32 + i] * id, -127.0f), 127.0f);
            q[b * 32 + i] = (int)nearbyintf(v);
        }
    }
}

/* NF4 row o of w times x: per 32-block, integer sum of code values times q, times d / 127 and
 * the block's absmax; also the sum of |terms| (the scale of rounding differences) */
static double ref_nf4_row(const dp_nf4 *w, const float *absmax, const int *q, const double *d,
                          int C, int o, double *mag) {
    double s = 0;
    *mag = 0;
    for (int b = 0; b < C / 32; b++) {
        long long is = 0, ia = 0;
        for (int i = 0; i < 32; i++) {
            int64_t e = (int64_t)o * C + b * 32 + i;
            uint8_t byte = w->codes[e / 2];
            int code = e % 2 ? byte & 15 : byte >> 4;
            int t = (int)lrintf(dp_nf4_values[code] * 127.0f);
            is += (long long)t * q[b * 32 + i];
            ia += llabs((long long)t * q[b * 32 + i]);
        }
        double am = absmax[((int64_t)o * C + b * 32) / w->blocksize];
        s += (double)is * d[b] / 127.0 * am;
        *mag += (double)ia * d[b] / 127.0 * fabs(am);
    }
    return s;
}

/* n = 3 matrices (heights as q/k/v differ), R inputs of width C */
static void test_nf4(int R, int C, int bs) {
    const int OCs[3] = {67, 128, 3 * 64 + 1};
    float *x = rnd((size_t)R * C, 2.0f);
    for (int i = 0; i < C; i += 97) x[i] *= 30.0f; /* an outlier channel, as hidden states have */
    dp_nf4 q[3];
    const dp_nf4 *wp[3];
    float *out[3], *exact[3], *bias[3];
    for (int i = 0; i < 3; i++) {
        float *w = rnd((size_t)OCs[i] * C, 0.05f);
        CHECK(dp_nf4_quantize(&q[i], w, OCs[i], C, bs) == 0);
        free(w);
        wp[i] = &q[i];
        out[i] = malloc((size_t)R * OCs[i] * 4), exact[i] = malloc((size_t)R * OCs[i] * 4);
        bias[i] = i == 1 ? NULL : rnd(OCs[i], 1.0f);
    }
    gemv_nf4_rows_multi_i8(3, out, wp, (const float *const *)bias, x, R, C);
    gemv_nf4_rows_multi(3, exact, wp, (const float *const *)bias, x, R, C);
    int *xq = malloc((size_t)C * sizeof(int));
    double *d = malloc((size_t)C / 32 * sizeof(double)), worst_ref = 0, worst_bound = 0;
    int bad_ref = 0, bad_bound = 0;
    for (int i = 0; i < 3; i++) {
        float *absmax = malloc((size_t)q[i].nblocks * 4), *wd = malloc((size_t)OCs[i] * C * 4);
        dp_nf4_absmax(&q[i], absmax);
        dp_nf4_dequantize(&q[i], wd);
        for (int r = 0; r < R; r++) {
            const float *xr = x + (size_t)r * C;
            ref_quant(xr, C, xq, d);
            for (int o = 0; o < OCs[i]; o++) {
                double mag, want = ref_nf4_row(&q[i], absmax, xq, d, C, o, &mag) +
                                   (bias[i] ? bias[i][o] : 0);
                double got = out[i][(size_t)r * OCs[i] + o];
                double e1 = fabs(got - want) / (1e-6 * mag + 1e-6);
                worst_ref = fmax(worst_ref, e1), bad_ref += e1 > 1;
                double bound = 0;
                for (int c = 0; c < C; c++)
                    bound += fabs(wd[(size_t)o * C + c]) * d[c / 32] / 2 +
                             fabs(xr[c]) * absmax[((int64_t)o * C + c) / bs] / 254.0;
                double e2 =
                    fabs(got - exact[i][(size_t)r * OCs[i] + o]) / (bound * (1 + 1e-5) + 1e-5);
                worst_bound = fmax(worst_bound, e2), bad_bound += e2 > 1;
            }
        }
        free(absmax), free(wd);
    }
    CHECK_REPORT(bad_ref == 0,
                 "NF4 int8 R=%d C=%d bs=%d: %d outputs off the int8 reference (worst %.2f x 1e-6 "
                 "of sum |terms|)",
                 R, C, bs, bad_ref, worst_ref);
    CHECK_REPORT(bad_bound == 0,
                 "NF4 int8 R=%d C=%d bs=%d: %d outputs beyond the rounding bound from fp32 (worst "
                 "%.2f of it)",
                 R, C, bs, bad_bound, worst_bound);
    fprintf(stderr,
            "  NF4 int8 R=%d C=%d bs=%d: worst %.3f x 1e-6 of sum |terms| from the reference, %.3f "
            "of the rounding bound from fp32\n",
            R, C, bs, worst_ref, worst_bound);
    for (int i = 0; i < 3; i++) free(out[i]), free(exact[i]), free(bias[i]), dp_nf4_free(&q[i]);
    free(x), free(xq), free(d);
}

static void test_q8(int R, int C, int OC) {
    float *w = rnd((size_t)OC * C, 0.1f), *x = rnd((size_t)R * C, 2.0f), *b = rnd(OC, 1.0f);
    for (int i = 0; i < C; i += 89) x[i] *= 25.0f;
    dp_q8 q;
    CHECK(dp_q8_quantize(&q, w, OC, C) == 0);
    float *y = malloc((size_t)R * OC * 4), *exact = malloc((size_t)R * OC * 4);
    gemv_q8_rows_i8(y, x, &q, b, R, C, OC);
    gemv_q8_rows(exact, x, &q, b, R, C, OC);
    int *xq = malloc((size_t)C * sizeof(int)), bad_ref = 0, bad_bound = 0;
    double *d = malloc((size_t)C / 32 * sizeof(double)), worst_ref = 0, worst_bound = 0;
    for (int r = 0; r < R; r++) {
        ref_quant(x + (size_t)r * C, C, xq, d);
        for (int o = 0; o < OC; o++) {
            double want = b[o], mag = 0, bound = 0;
            for (int k = 0; k < C / 32; k++) {
                long long is = 0, ia = 0;
                for (int i = 0; i < 32; i++) {
                    int wq = q.q[(size_t)o * C + k * 32 + i];
                    is += (long long)wq * xq[k * 32 + i],
                        ia += llabs((long long)wq * xq[k * 32 + i]);
                    bound += fabs(wq * (double)q.d[(size_t)o * (C / 32) + k]) * d[k] / 2;
                }
                want += (double)is * q.d[(size_t)o * (C / 32) + k] * d[k];
                mag += (double)ia * q.d[(size_t)o * (C / 32) + k] * d[k];
            }
            double got = y[(size_t)r * OC + o];
            double e1 = fabs(got - want) / (1e-6 * mag + 1e-6);
            worst_ref = fmax(worst_ref, e1), bad_ref += e1 > 1;
            double e2 = fabs(got - exact[(size_t)r * OC + o]) / (bound * (1 + 1e-5) + 1e-5);
            worst_bound = fmax(worst_bound, e2), bad_bound += e2 > 1;
        }
    }
    CHECK_REPORT(bad_ref == 0, "Q8 int8 R=%d C=%d: %d outputs off the int8 reference (worst %.2f)",
                 R, C, bad_ref, worst_ref);
    CHECK_REPORT(bad_bound == 0,
                 "Q8 int8 R=%d C=%d: %d outputs beyond the rounding bound (worst %.2f)", R, C,
                 bad_bound, worst_bound);
    fprintf(stderr,
            "  Q8 int8 R=%d C=%d: worst %.3f x 1e-6 from the reference, %.3f of the rounding bound "
            "from fp32\n",
            R, C, worst_ref, worst_bound);
    dp_q8_free(&q);
    free(w), free(x), free(b), free(y), free(exact), free(xq), free(d);
}

/* where the int8 path does not apply, the same numbers as the fp32 kernel, bit for bit */
static void test_fallback(void) {
    const int C = 96, OC = 40;
    float *w = rnd((size_t)OC * C, 0.1f), *x = rnd(C, 1.0f);
    dp_nf4 q;
    CHECK(dp_nf4_quantize(&q, w, OC, C, 32 * 2) == 0); /* 96 % 64: does not fit */
    CHECK(!dp_gemv_nf4_i8_fits(&q, C));
    const dp_nf4 *wp = &q;
    float a[40], b[40], *pa = a, *pb = b;
    gemv_nf4_rows_multi_i8(1, &pa, &wp, NULL, x, 1, C);
    gemv_nf4_rows_multi(1, &pb, &wp, NULL, x, 1, C);
    CHECK(memcmp(a, b, sizeof a) == 0);
    dp_nf4_free(&q);
    free(w), free(x);
}

int main(void) {
    /* the table the kernel multiplies: the NF4 values times 127, both ends exact */
    CHECK_EQ_INT(-127, dp_nf4_i8_value(0));
    CHECK_EQ_INT(0, dp_nf4_i8_value(7));
    CHECK_EQ_INT(127, dp_nf4_i8_value(15));
    test_fallback();
    if (!dp_gemv_i8_supported())
        SKIP("this CPU has no AVX512-VNNI (or DOPPEL_SIMD narrows it): the int8 kernels fall back "
             "to fp32, checked above");
    for (int R = 1; R <= 10; R += 3) {
        test_nf4(R, 576, 64); /* SmolLM2: 9 chunks, an odd last one */
        test_nf4(R, 896, 64); /* Qwen2.5-0.5B */
    }
    test_nf4(1, 64, 64);    /* one chunk, alone in its pair */
    test_nf4(2, 1536, 256); /* larger blocks: chunks share an absmax */
    test_nf4(3, 1536, 64);  /* 24 chunks: a second, partial group of 16 absmax */
    test_nf4(1, 4864, 64);  /* Qwen2.5-0.5B's down_proj: 76 chunks */
    for (int R = 1; R <= 10; R += 3) {
        test_q8(R, 576, 301);
        test_q8(R, 96, 33); /* 3 blocks: an odd last one */
    }
    return check_done();
}
