/* Q8: int8 codes in blocks of 32 along each row with one fp32 scale per block (llama.cpp's Q8_0
 * with an fp32 scale), the compact decode-time copy of a large fp32 matrix (the lm_head). */
#ifndef DOPPEL_Q8_H
#define DOPPEL_Q8_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DP_Q8_BLOCK 32

typedef struct {
    int64_t rows, cols; /* cols % DP_Q8_BLOCK == 0 */
    int8_t *q;          /* (rows, cols) */
    float *d;           /* (rows, cols / 32): value = q * d */
} dp_q8;

/* Quantizes w (rows, cols): per block d = max|x| / 127, q = round(x / d). A matrix that already
 * holds Q8_0 values (a GGUF Q8_0 tensor dequantized) comes back exactly. cols must be a
 * multiple of 32. Arrays malloc'd (dp_q8_free). Returns 0 or -1 with dp_fail. */
int dp_q8_quantize(dp_q8 *q, const float *w, int64_t rows, int64_t cols);
void dp_q8_free(dp_q8 *q);
size_t dp_q8_bytes(const dp_q8 *q);
/* Row `row` as fp32 (cols floats). */
void dp_q8_dequantize_row(const dp_q8 *q, int64_t row, float *out);

/* out (OC) = W x (C) + bias (OC or NULL) over Q8 rows with fp32 x: fused int8 -> fp32 dot
 * products (AVX-512 / AVX2+FMA picked at run time, DOPPEL_SIMD=scalar|avx2 narrows it);
 * threads across rows (kernels/pool.h). */
void gemv_q8(float *out, const float *x, const dp_q8 *w, const float *bias, int C, int OC);
/* The same for R inputs x (R, C) at once: out (R, OC); each row of W is read once per
 * DP_Q8_ROWS inputs (the heads of a batched decode step). */
#define DP_Q8_ROWS 8
void gemv_q8_rows(float *out, const float *x, const dp_q8 *w, const float *bias, int R, int C,
                  int OC);
/* The same with x rounded to int8 per 32 elements (kernels/nf4.h: decode with int8
 * activations); gemv_q8_rows where the CPU lacks AVX512-VNNI. */
void gemv_q8_rows_i8(float *out, const float *x, const dp_q8 *w, const float *bias, int R, int C,
                     int OC);

#ifdef __cplusplus
}
#endif
#endif
