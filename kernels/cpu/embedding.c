/* Token embedding lookup, fp32 reference, and NEFTune's noise on the looked-up rows. Callers
 * check every token against the table's row count (V is not passed here: the tokenizer/loader
 * validates ids once, at the boundary). */
#include "kernels/ops.h"
#include "kernels/philox.h"

#include <math.h>
#include <string.h>

void embedding_forward(float *out, const int32_t *tokens, const float *table, int N, int C) {
#pragma omp parallel for schedule(static) if (N > 8) /* a decode step (<= 8 rows): no thread sync */
    for (int n = 0; n < N; n++)
        memcpy(out + (size_t)n * C, table + (size_t)tokens[n] * C, (size_t)C * sizeof(float));
}

/* Rows [n0, n1) of x get noise; each row's scale uses its own sequence's length L. */
void neftune_forward(float *x, const int32_t *cu_seqlens, int nseq, int n0, int n1, int C,
                     float alpha, uint64_t seed) {
    int s = 0;
    for (int n = n0; n < n1; n++) {
        while (s < nseq - 1 && n >= cu_seqlens[s + 1]) s++;
        int L = cu_seqlens[s + 1] - cu_seqlens[s];
        float scale = alpha / sqrtf((float)L * (float)C);
        for (int c = 0; c < C; c++) {
            size_t i = (size_t)n * C + c;
            /* (0, 1] -> (-1, 1] */
            x[i] += scale * (2.0f * dp_philox_uniform(seed, DP_NEFTUNE_STREAM, i) - 1.0f);
        }
    }
}
