/* Token embedding lookup, fp32 reference. Callers check every token against the table's row
 * count (V is not passed here: the tokenizer/loader validates ids once, at the boundary). */
#include "kernels/ops.h"

#include <string.h>

void embedding_forward(float *out, const int32_t *tokens, const float *table, int N, int C) {
#pragma omp parallel for schedule(static) if (N > 1)
    for (int n = 0; n < N; n++)
        memcpy(out + (size_t)n * C, table + (size_t)tokens[n] * C, (size_t)C * sizeof(float));
}
