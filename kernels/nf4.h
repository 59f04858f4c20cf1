/* NF4 with double quantization, byte-compatible with bitsandbytes (REFERENCE.md section 3),
 * and the linear layers over NF4 weights. */
#ifndef DOPPEL_NF4_H
#define DOPPEL_NF4_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A weight matrix (rows, cols) quantized to NF4 in blocks of `blocksize` (64) elements,
 * flattened row-major; absmax double-quantized in groups of 256 blocks. */
typedef struct {
    int64_t rows, cols, n;   /* n = rows * cols */
    int blocksize;           /* 64 (bitsandbytes default) */
    uint8_t *codes;          /* (n / 2): two codes per byte, first element in the high nibble */
    uint8_t *absmax_q;       /* (nblocks): 8-bit dynamic-map codes of absmax - offset */
    float *absmax2;          /* (ceil(nblocks / 256)): scale of each group of 256 absmax codes */
    float offset;            /* mean of the absmax values */
    int64_t nblocks;
} dp_nf4;

#ifdef __cplusplus
}
#endif
#endif
