/* The int8-activation row kernels (kernels/cpu/gemv_i8.c) as the batched GEMV drivers run
 * them (matmul.c for NF4, q8.c for the Q8 head): inputs quantized once per call, rows claimed
 * by the pool's threads. */
#ifndef DOPPEL_CPU_GEMV_I8_H
#define DOPPEL_CPU_GEMV_I8_H

#include "kernels/nf4.h"
#include "kernels/q8.h"

/* One input row, laid out for the NF4 kernel in pairs of 64-element chunks (a pair is one
 * 512-bit load of codes: 128 elements). A code byte holds an even element (high nibble) and
 * the next odd one, so per pair: xh = the even elements of the first chunk then of the second,
 * xl = the odd ones; each 32-bit lane of vpdpbusd then sums 4 of them from one 32-element
 * quantization block. corr = -128 * each lane's share of xh + xl; da = each lane's block scale
 * divided by 127 (the table's scale). An odd last chunk is padded with zeros. */
typedef struct {
    int8_t *xh, *xl; /* (npairs, 64) */
    int32_t *corr;   /* (npairs, 16) */
    float *da;       /* (npairs, 16) */
    int npairs;
} dp_act_nf4;

/* bytes of one input's dp_act_nf4 arrays (C / 2 + ... about 2C) */
size_t dp_i8_nf4_act_bytes(int C);
/* quantizes x (C) into a, its arrays in buf (dp_i8_nf4_act_bytes(C), 64-byte aligned) */
void dp_i8_nf4_quant(dp_act_nf4 *a, uint8_t *buf, const float *x, int C);
/* rows [o0, o1) of w against the R <= DP_GEMV_ROWS inputs a: out[r][o] (+ bias[o]) */
void dp_i8_nf4_rows(float *const *out, const dp_act_nf4 *a, int R, const dp_nf4 *w,
                    const float *bias, const float *map, int C, int o0, int o1);

/* One input row for the Q8 kernel: xu = the int8 activations + 128 (unsigned), da = per pair of
 * 32-element blocks their two scales, each over 8 lanes (lanes 0-7: the first block). */
typedef struct {
    uint8_t *xu; /* (C) */
    float *da;   /* (C / 64 + 1, 16) */
} dp_act_q8;

/* whether gemv_q8_rows_i8 runs int8 at width C (else it runs gemv_q8_rows) */
bool dp_gemv_q8_i8_fits(int C);
/* bytes of one input's dp_act_q8 arrays (about 2C) */
size_t dp_i8_q8_act_bytes(int C);
/* quantizes x (C) into a, its arrays in buf (dp_i8_q8_act_bytes(C), 64-byte aligned) */
void dp_i8_q8_quant(dp_act_q8 *a, uint8_t *buf, const float *x, int C);
/* rows [o0, o1) of w against the R <= DP_Q8_ROWS inputs a: out[r * OC + o] (+ bias[o]) */
void dp_i8_q8_rows(float *out, int OC, const dp_act_q8 *a, int R, const dp_q8 *w, const float *bias,
                   int C, int64_t o0, int64_t o1);

#endif
