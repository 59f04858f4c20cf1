/* The fp32 absmax of up to 16 NF4 blocks in one register (code[absmax_q[b]] * absmax2[b / 256]
 * + offset, fused as the AVX-512 decode kernels always computed it), with one gather from the
 * 256-entry map. Decoding them one by one, a chain of dependent scalar loads per 64 weights
 * whose result went through memory, was most of a decode GEMV's time. For the AVX-512 row
 * kernels (matmul.c, gemv_i8.c). */
#ifndef DOPPEL_CPU_NF4_ABSMAX_H
#define DOPPEL_CPU_NF4_ABSMAX_H

#include "kernels/nf4.h"
#include "kernels/cpu/simd.h"

#include <string.h>

#ifdef DP_X86
/* lane i: the absmax of block b0 + ((c0 + i) >> shift), for i < min(k, 16) (0 beyond): blocks
 * (shift 0) or 64-element chunks of 2^shift-chunk blocks; k: how many are left in the row */
__attribute__((target("avx512f"), always_inline)) static inline __m512
nf4_absmax16(const dp_nf4 *w, const float *map, int64_t b0, int c0, int k, int shift) {
    if (k > 16) k = 16;
    const __mmask16 m = (__mmask16)(k >= 16 ? 0xffff : (1u << k) - 1);
    const int64_t first = b0 + (c0 >> shift), last = b0 + ((c0 + k - 1) >> shift);
    __m128i c8;
    if (shift == 0 && k == 16) {
        c8 = _mm_loadu_si128((const __m128i *)(w->absmax_q + first));
    } else {
        uint8_t tmp[16] = {0};
        for (int i = 0; i < k; i++) tmp[i] = w->absmax_q[b0 + ((c0 + i) >> shift)];
        c8 = _mm_loadu_si128((const __m128i *)tmp);
    }
    __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, _mm512_cvtepu8_epi32(c8), map, 4);
    __m512 s;
    if (first >> 8 == last >> 8) {
        s = _mm512_set1_ps(w->absmax2[first >> 8]);
    } else { /* the blocks straddle a group of 256: each lane's own group */
        const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
        __m512i blk = _mm512_add_epi32(
            _mm512_set1_epi32((int)(b0 - ((first >> 8) << 8))),
            _mm512_srli_epi32(_mm512_add_epi32(_mm512_set1_epi32(c0), lane), shift));
        s = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, _mm512_srli_epi32(blk, 8),
                                     w->absmax2 + (first >> 8), 4);
    }
    return _mm512_maskz_mov_ps(m, _mm512_fmadd_ps(v, s, _mm512_set1_ps(w->offset)));
}
#endif
#endif
