/* NF4 with double quantization, byte-compatible with bitsandbytes (REFERENCE.md section 3),
 * and the linear layers over NF4 weights. */
#ifndef DOPPEL_NF4_H
#define DOPPEL_NF4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A weight matrix (rows, cols) quantized to NF4 in blocks of `blocksize` (64) elements,
 * flattened row-major; absmax double-quantized in groups of 256 blocks. */
typedef struct {
    int64_t rows, cols, n; /* n = rows * cols */
    int blocksize;         /* 64 (bitsandbytes default) */
    uint8_t *codes;        /* (n / 2): two codes per byte, first element in the high nibble */
    uint8_t *absmax_q;     /* (nblocks): 8-bit dynamic-map codes of absmax - offset */
    float *absmax2;        /* (ceil(nblocks / 256)): scale of each group of 256 absmax codes */
    float offset;          /* mean of the absmax values */
    int64_t nblocks;
} dp_nf4;

/* The 16 NF4 values (bitsandbytes' quant_map), index 0..15. */
extern const float dp_nf4_values[16];
/* bitsandbytes' signed 8-bit dynamic map (create_dynamic_map(signed=True)): 256 sorted values,
 * code[0] = -0.99296875, code[127] = 0, code[255] = 1 (the nested_quant_map). */
void dp_dynamic_map(float code[256]);
/* The same map, computed once and shared (thread-safe). */
const float *dp_dynamic_map_cached(void);

/* Quantizes w (rows, cols), flattened row-major, to NF4 with double quantization exactly as
 * bitsandbytes' quantize_4bit(quant_type="nf4", compress_statistics=True) does on the CPU.
 * blocksize: a power of two in [64, 4096]. q's arrays are malloc'd (dp_nf4_free). */
int dp_nf4_quantize(dp_nf4 *q, const float *w, int64_t rows, int64_t cols, int blocksize);
/* The same with the offset given instead of mean(absmax): bitsandbytes takes the mean with
 * torch's float32 sum, whose rounding depends on the CPU's SIMD width, so tests pass its
 * offset to compare every other byte exactly. */
int dp_nf4_quantize_offset(dp_nf4 *q, const float *w, int64_t rows, int64_t cols, int blocksize,
                           float offset);
/* Allocates q's arrays for (rows, cols) without filling them (loading a quantized file). */
int dp_nf4_alloc(dp_nf4 *q, int64_t rows, int64_t cols, int blocksize);
void dp_nf4_free(dp_nf4 *q);
/* The fp32 absmax of every block (nblocks floats): code[absmax_q] * absmax2 + offset. */
void dp_nf4_absmax(const dp_nf4 *q, float *absmax);
/* Dequantizes elements [start, start + count) of the flattened matrix into out. */
void dp_nf4_dequantize_range(const dp_nf4 *q, float *out, int64_t start, int64_t count);
/* The whole matrix (n floats). */
void dp_nf4_dequantize(const dp_nf4 *q, float *out);
/* Bytes held by q's arrays. */
size_t dp_nf4_bytes(const dp_nf4 *q);
/* The same for a (rows, cols) matrix not yet quantized (the memory planner). */
size_t dp_nf4_size(int64_t rows, int64_t cols, int blocksize);

/* ---- linear layers over NF4 weights (kernels/cpu/matmul.c), same conventions as
 * matmul_forward: out (N, OC) = inp (N, C) @ W (OC, C)^T + bias (OC or NULL). */
/* Dequantizes row tiles of W to fp32 and runs sgemm on each (prefill / training). */
void matmul_nf4_forward(float *out, const float *inp, const dp_nf4 *w, const float *bias, int N,
                        int C, int OC);
/* Columns [o0, o1) of the same (out keeps its row stride OC): the rows of W in that range
 * dequantized tile by tile by the calling thread alone, then sgemm. Threads that split OC
 * between them decode each weight once in all (prefill of a few dozen rows). */
void matmul_nf4_forward_cols(float *out, const float *inp, const dp_nf4 *w, const float *bias,
                             int N, int C, int OC, int o0, int o1);
/* dinp (N, C) += dout (N, OC) @ W (the frozen weight's input gradient, for LoRA training). */
void matmul_nf4_backward_input(float *dinp, const float *dout, const dp_nf4 *w, int N, int C,
                               int OC);
/* Fused NF4 dot products for one token: out (OC) = W x (C) + bias; threads across rows. */
void gemv_nf4(float *out, const float *x, const dp_nf4 *w, const float *bias, int C, int OC);
/* n such products over the same x (C) in one parallel region (q/k/v, gate/up of a decode step):
 * out[i] (w[i]->rows) = W_i x + bias[i] (bias or bias[i] may be NULL). */
void gemv_nf4_multi(int n, float *const *out, const dp_nf4 *const *w, const float *const *bias,
                    const float *x, int C);
/* The same for R input rows x (R, C) at once (a batched decode step of R conversations):
 * out[i] (R, w[i]->rows) = x W_i^T + bias[i]. Each weight row is read and decoded once per
 * DP_GEMV_ROWS inputs, so R rows cost far less than R GEMVs. n <= DP_N_GEMV_MATS. */
#define DP_GEMV_ROWS   8
#define DP_N_GEMV_MATS 8
void gemv_nf4_rows_multi(int n, float *const *out, const dp_nf4 *const *w,
                         const float *const *bias, const float *x, int R, int C);
/* 1 (the default): the AVX-512 path of gemv_nf4_rows_multi runs two weight rows per pass over
 * the inputs; 0: one (the same sums bit for bit; tests and bench_serve_gemv switch it). */
extern int dp_gemv_row_pairs;

/* ---- decode with int8 activations (kernels/cpu/gemv_i8.c): the same products with x rounded
 * to int8 per 32 elements (d = max|x| / 127, as llama.cpp's Q8_0 activations) and the NF4 table
 * to int8 / 127 (dp_nf4_i8_value), summed exactly in int32 per 64-element chunk by
 * AVX512-VNNI, then scaled by the chunk's absmax and the two blocks' d. Not bit-equal to the
 * fp32 kernels: about 2x fewer vector instructions per weight, at an error bounded by half a
 * step of each rounding (tests/test_gemv_i8.c). */
#define DP_GEMV_I8_MAX_C 32768
/* The CPU has AVX512-VNNI (and DOPPEL_SIMD does not narrow the path below AVX-512). */
bool dp_gemv_i8_supported(void);
/* The int8 path takes w with inputs of width C (else the calls below run the fp32 kernel). */
bool dp_gemv_nf4_i8_fits(const dp_nf4 *w, int C);
/* NF4 code 0..15 as the int8 the kernel multiplies: round(dp_nf4_values[code] * 127). */
int dp_nf4_i8_value(int code);
/* gemv_nf4_rows_multi with int8 activations; the fp32 kernel where the path does not fit. */
void gemv_nf4_rows_multi_i8(int n, float *const *out, const dp_nf4 *const *w,
                            const float *const *bias, const float *x, int R, int C);

#ifdef __cplusplus
}
#endif
#endif
