/* ggml's Q8_0 / Q4_0 block quantizers (see kernels/ggml_quants.h): scalar, the reference. */
#include "kernels/ggml_quants.h"

#include <math.h>
#include <string.h>

/* infer/dtype.c has the same conversion; kernels/ may not include infer/, so it is here again */
uint16_t dp_ggml_fp32_to_fp16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00;  /* nan */
    if (a >= 0x477ff000u) return sign | 0x7c00; /* rounds to >= 65520: inf */
    if (a < 0x38800000u) {                      /* below the smallest normal 2^-14 */
        float v;
        memcpy(&v, &a, 4);
        v *= 16777216.0f; /* value / 2^-24, rounded to nearest even */
        uint32_t q = (uint32_t)v;
        float rem = v - (float)q;
        if (rem > 0.5f || (rem == 0.5f && (q & 1))) q++;
        return sign | (uint16_t)q;
    }
    uint32_t exp = (a >> 23) - 112, man = a & 0x7fffff;
    uint32_t h = (exp << 10) | (man >> 13), rest = man & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++; /* carry may bump the exponent */
    return sign | (uint16_t)h;
}

void dp_ggml_quantize_q8_0(const float *x, uint8_t *out, int64_t n) {
    for (int64_t b = 0; b < n / DP_GGML_QK; b++, x += DP_GGML_QK, out += DP_GGML_Q8_0_BYTES) {
        float amax = 0;
        for (int j = 0; j < DP_GGML_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127, id = d ? 1.0f / d : 0.0f;
        uint16_t h = dp_ggml_fp32_to_fp16(d);
        memcpy(out, &h, 2);
        for (int j = 0; j < DP_GGML_QK; j++) out[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
    }
}

void dp_ggml_quantize_q4_0(const float *x, uint8_t *out, int64_t n) {
    for (int64_t b = 0; b < n / DP_GGML_QK; b++, x += DP_GGML_QK, out += DP_GGML_Q4_0_BYTES) {
        float amax = 0, max = 0; /* the value of largest magnitude, sign kept */
        for (int j = 0; j < DP_GGML_QK; j++)
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        const float d = max / -8, id = d ? 1.0f / d : 0.0f;
        uint16_t h = dp_ggml_fp32_to_fp16(d);
        memcpy(out, &h, 2);
        for (int j = 0; j < DP_GGML_QK / 2; j++) {
            int q0 = (int8_t)(x[j] * id + 8.5f), q1 = (int8_t)(x[DP_GGML_QK / 2 + j] * id + 8.5f);
            out[2 + j] = (uint8_t)((q0 < 15 ? q0 : 15) | (q1 < 15 ? q1 : 15) << 4);
        }
    }
}
