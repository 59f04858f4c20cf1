/* An NF4 matrix of random codes and scales for benchmarks and sandboxes, whose cost does not
 * depend on the values (xorshift32 from *state; exits when out of memory). */
#ifndef DOPPEL_BENCH_RANDOM_NF4_H
#define DOPPEL_BENCH_RANDOM_NF4_H

#include "kernels/nf4.h"

#include <stdlib.h>

static inline uint32_t random_nf4_next(uint32_t *s) {
    *s ^= *s << 13, *s ^= *s >> 17, *s ^= *s << 5;
    return *s;
}

static inline void random_nf4(dp_nf4 *q, int rows, int cols, uint32_t *s) {
    if (dp_nf4_alloc(q, rows, cols, 64)) exit(1);
    for (int64_t i = 0; i < q->n / 2; i++) q->codes[i] = (uint8_t)random_nf4_next(s);
    for (int64_t b = 0; b < q->nblocks; b++) q->absmax_q[b] = (uint8_t)random_nf4_next(s);
    for (int64_t g = 0; g < (q->nblocks + 255) / 256; g++) q->absmax2[g] = 1e-3f * (1 + g % 3);
    q->offset = 0.05f;
}

#endif
