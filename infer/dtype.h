/* Element types of tensors in model files (safetensors names) and the 16-bit float
 * conversions every loader needs. */
#ifndef DOPPEL_DTYPE_H
#define DOPPEL_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    DP_DT_F32,
    DP_DT_F16,
    DP_DT_BF16,
    DP_DT_F64,
    DP_DT_U8,
    DP_DT_I8,
    DP_DT_I16,
    DP_DT_I32,
    DP_DT_I64,
    DP_DT_U16,
    DP_DT_U32,
    DP_DT_U64,
    DP_DT_BOOL,
    DP_N_DTYPES
} dp_dtype;

/* Bytes per element. */
size_t dp_dtype_size(dp_dtype dt);
/* The safetensors spelling ("F32", "BF16", ...). */
const char *dp_dtype_name(dp_dtype dt);
/* Parses the safetensors spelling; -1 when unknown. */
int dp_dtype_parse(const char *name, dp_dtype *dt);

float dp_f16_to_f32(uint16_t h);
float dp_bf16_to_f32(uint16_t h);
uint16_t dp_f32_to_f16(float f);  /* round to nearest even, saturating to inf */
uint16_t dp_f32_to_bf16(float f); /* round to nearest even (as torch does) */

/* Converts n elements of a float tensor (F32, F16, BF16, F64) to fp32; -1 for other types. */
int dp_convert_to_f32(float *out, const void *src, dp_dtype dt, size_t n);

#endif
