/* ggml's GGUF block quantizers (quantize_row_q8_0_ref, quantize_row_q4_0_ref in ggml-quants.c),
 * bit-identical to llama.cpp's and gguf-py's: what `doppel merge --format gguf` writes. */
#ifndef DOPPEL_GGML_QUANTS_H
#define DOPPEL_GGML_QUANTS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DP_GGML_QK         32 /* elements per block */
#define DP_GGML_Q8_0_BYTES 34 /* fp16 d + 32 int8 codes: x = q * d */
#define DP_GGML_Q4_0_BYTES 18 /* fp16 d + 16 bytes of two 4-bit codes: x = (q - 8) * d */

/* n floats (a multiple of 32) into n / 32 blocks at out. Q8_0: d = max|x| / 127,
 * q = round(x / d). Q4_0: d = m / -8 with m the value of largest magnitude (sign kept),
 * q = min(15, (int8)(x / d + 8.5)), element j of a block in the low nibble of byte j and
 * element j + 16 in its high nibble. d is rounded to fp16 (nearest even) after the codes are
 * computed from the fp32 d, as ggml does. */
void dp_ggml_quantize_q8_0(const float *x, uint8_t *out, int64_t n);
void dp_ggml_quantize_q4_0(const float *x, uint8_t *out, int64_t n);

/* fp32 -> IEEE fp16 bits, round to nearest even, overflow to inf (numpy's float16 cast). */
uint16_t dp_ggml_fp32_to_fp16(float f);

#ifdef __cplusplus
}
#endif
#endif
