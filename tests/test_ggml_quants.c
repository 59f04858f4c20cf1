/* ggml's Q8_0 / Q4_0 block quantizers (kernels/ggml_quants.h): the fp16 scale rounding equals
 * infer/dtype.c's conversion on every class of value; decoded blocks stay within half a step of
 * the input (Q8_0) or within a step (Q4_0, whose codes are truncated and clamped at 15); and
 * random rows plus hard blocks (zeros, a constant, exact .5 ties, one large value, a negative
 * maximum, fp16 subnormal and overflowing scales) equal gguf-py's quantization byte for byte
 * (tests/reference/check_ggml_quants.py; that part skips without python3's gguf). */
#include "check.h"
#include "infer/dtype.h"
#include "kernels/ggml_quants.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COLS 128
#define ROWS 64

static check_rng rng = {0x243f6a8885a308d3ull};

static float fp16_value(uint16_t h) {
    return dp_f16_to_f32(h);
}

int main(void) {
    /* the scale's rounding: the same bits as the converter the rest of doppel uses */
    int same = 0, n = 0;
    for (int e = -30; e <= 17; e++)
        for (int k = 0; k < 200; k++, n++) {
            float f = ldexpf(1.0f + (float)k / 200.0f + check_rng_xs_float(&rng) * 1e-3f, e) *
                      (k % 2 ? -1 : 1);
            same += dp_ggml_fp32_to_fp16(f) == dp_f32_to_f16(f);
        }
    CHECK_EQ_INT(n, same);
    CHECK(dp_ggml_fp32_to_fp16(0.0f) == 0 && dp_ggml_fp32_to_fp16(-0.0f) == 0x8000);
    CHECK(dp_ggml_fp32_to_fp16(70000.0f) == 0x7c00);

    static float x[ROWS * COLS];
    for (int i = 0; i < ROWS * COLS; i++)
        x[i] = check_rng_xs_float(&rng) * ldexpf(1.0f, (i / COLS) % 13 - 6);
    /* hard blocks in the last rows: block k of row r = ROWS - 8 + k / 4 */
    float *h = x + (ROWS - 8) * COLS;
    for (int j = 0; j < 32; j++) {
        h[0 * 32 + j] = 0.0f;                                            /* zeros */
        h[1 * 32 + j] = 0.75f;                                           /* a constant */
        h[2 * 32 + j] = (float)(j - 16) * 0.5f;                          /* .5 ties at every step */
        h[3 * 32 + j] = j == 7 ? 1000.0f : check_rng_xs_float(&rng);     /* one large value */
        h[4 * 32 + j] = j == 3 ? -2.0f : check_rng_xs_float(&rng);       /* negative maximum */
        h[5 * 32 + j] = check_rng_xs_float(&rng) * 1e-9f;                /* subnormal fp16 scale */
        h[6 * 32 + j] = check_rng_xs_float(&rng) * 1e-30f;               /* scale rounds to 0 */
        h[7 * 32 + j] = j == 0 ? 1e7f : check_rng_xs_float(&rng) * 1e6f; /* scale overflows fp16 */
        h[8 * 32 + j] = (float)j * (j % 2 ? -1.0f : 1.0f) / 16.0f;       /* alternating signs */
    }
    static uint8_t q8[ROWS * COLS / 32 * DP_GGML_Q8_0_BYTES],
        q4[ROWS * COLS / 32 * DP_GGML_Q4_0_BYTES];
    dp_ggml_quantize_q8_0(x, q8, ROWS * COLS);
    dp_ggml_quantize_q4_0(x, q4, ROWS * COLS);

    /* decoded values near the input, on the random rows (finite, normal scales) */
    double worst8 = 0, worst4 = 0;
    for (int b = 0; b < (ROWS - 8) * COLS / 32; b++) {
        uint16_t d8, d4;
        memcpy(&d8, q8 + b * 34, 2);
        memcpy(&d4, q4 + b * 18, 2);
        float s8 = fp16_value(d8), s4 = fp16_value(d4);
        for (int j = 0; j < 32; j++) {
            float v = x[b * 32 + j];
            float y8 = (float)(int8_t)q8[b * 34 + 2 + j] * s8;
            int c = j < 16 ? q4[b * 18 + 2 + j] & 15 : q4[b * 18 + 2 + j - 16] >> 4;
            float y4 = (float)(c - 8) * s4;
            /* fp16 rounding of d moves a code's value by at most 2^-11 relative */
            double e8 = fabs(y8 - v) / (fabs(s8) * (0.5 + 127 * 0x1p-11));
            double e4 = fabs(y4 - v) / (fabs(s4) * (1.0 + 8 * 0x1p-11));
            if (e8 > worst8) worst8 = e8;
            if (e4 > worst4) worst4 = e4;
        }
    }
    CHECK_REPORT(worst8 <= 1.0, "Q8_0 error %.3f of the bound", worst8);
    CHECK_REPORT(worst4 <= 1.0, "Q4_0 error %.3f of the bound", worst4);

    if (system("python3 -c 'import gguf, numpy' >/dev/null 2>&1")) {
        if (check_done()) return 1;
        SKIP("python3 lacks gguf (pip install gguf): the comparison with gguf-py did not run");
    }
    char dir[] = "/tmp/doppel-test-ggml-quants.XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char px[4200], p8[4200], p4[4200], cmd[13000];
    snprintf(px, sizeof px, "%s/x.f32", dir);
    snprintf(p8, sizeof p8, "%s/q8_0.bin", dir);
    snprintf(p4, sizeof p4, "%s/q4_0.bin", dir);
    FILE *f;
    CHECK((f = fopen(px, "wb")) && fwrite(x, sizeof x, 1, f) == 1 && !fclose(f));
    CHECK((f = fopen(p8, "wb")) && fwrite(q8, sizeof q8, 1, f) == 1 && !fclose(f));
    CHECK((f = fopen(p4, "wb")) && fwrite(q4, sizeof q4, 1, f) == 1 && !fclose(f));
    snprintf(cmd, sizeof cmd, "python3 %s/tests/reference/check_ggml_quants.py %s %d %s %s",
             DOPPEL_SOURCE_DIR, px, COLS, p8, p4);
    int rc = system(cmd);
    CHECK_REPORT(rc == 0, "check_ggml_quants.py: doppel's blocks differ from gguf-py's");
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    return check_done();
}
