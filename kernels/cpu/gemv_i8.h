/* The int8-activation NF4 row kernel (kernels/cpu/gemv_i8.c) as matmul.c's batched GEMV
 * drives it: inputs quantized once per call, rows claimed by the pool's threads. */
#ifndef DOPPEL_CPU_GEMV_I8_H
#define DOPPEL_CPU_GEMV_I8_H

#include "kernels/nf4.h"

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

#endif
