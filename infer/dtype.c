/* Element types of model files and fp16/bf16 <-> fp32 conversion (bit manipulation, exact). */
#include "infer/dtype.h"

#include "data/base/error.h"
#include "kernels/ggml_quants.h"

#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtypes[DP_N_DTYPES] = {
    [DP_DT_F32] = {"F32", 4},   [DP_DT_F16] = {"F16", 2}, [DP_DT_BF16] = {"BF16", 2},
    [DP_DT_F64] = {"F64", 8},   [DP_DT_U8] = {"U8", 1},   [DP_DT_I8] = {"I8", 1},
    [DP_DT_I16] = {"I16", 2},   [DP_DT_I32] = {"I32", 4}, [DP_DT_I64] = {"I64", 8},
    [DP_DT_U16] = {"U16", 2},   [DP_DT_U32] = {"U32", 4}, [DP_DT_U64] = {"U64", 8},
    [DP_DT_BOOL] = {"BOOL", 1},
};

size_t dp_dtype_size(dp_dtype dt) {
    return (unsigned)dt < DP_N_DTYPES ? dtypes[dt].size : 0;
}

const char *dp_dtype_name(dp_dtype dt) {
    return (unsigned)dt < DP_N_DTYPES ? dtypes[dt].name : "?";
}

int dp_dtype_parse(const char *name, dp_dtype *dt) {
    for (int i = 0; i < DP_N_DTYPES; i++)
        if (!strcmp(name, dtypes[i].name)) {
            *dt = (dp_dtype)i;
            return 0;
        }
    return -1;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

float dp_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13)); /* inf / nan */
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in fp32 */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

float dp_bf16_to_f32(uint16_t h) {
    return bits_f32((uint32_t)h << 16);
}

uint16_t dp_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet nan */
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* one fp16 rounding for the whole project: the GGUF quantizers' (kernels/ may not include infer/) */
uint16_t dp_f32_to_f16(float f) { return dp_ggml_fp32_to_fp16(f); }

int dp_convert_to_f32(float *out, const void *src, dp_dtype dt, size_t n) {
    const uint8_t *s = src;
    switch (dt) {
    case DP_DT_F32:
        memcpy(out, src, n * 4);
        return 0;
    case DP_DT_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            out[i] = dp_f16_to_f32(h);
        }
        return 0;
    case DP_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            out[i] = dp_bf16_to_f32(h);
        }
        return 0;
    case DP_DT_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, s + 8 * i, 8);
            out[i] = (float)d;
        }
        return 0;
    default:
        return dp_fail("cannot convert a %s tensor to fp32 (expected F32, F16, BF16 or F64)",
                       dp_dtype_name(dt));
    }
}
