/* Cross-entropy over rows of logits with ignored targets, fp32 reference (sums in double).
 * A target >= V is a caller bug (targets are validated against the vocabulary when batches
 * are built): it yields a NaN loss so it cannot pass unnoticed, never an out-of-bounds read. */
#include "kernels/ops.h"

#include <math.h>

void cross_entropy_forward_backward(float *losses, float *dlogits, const float *logits,
                                    const int32_t *targets, int N, int V, float dloss) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = logits + (size_t)n * V; // (V)
        float *dx = dlogits ? dlogits + (size_t)n * V : NULL;
        int32_t t = targets[n];
        if (t < 0 || t >= V) {
            if (losses) losses[n] = t < 0 ? 0.0f : NAN;
            if (dx)
                for (int i = 0; i < V; i++) dx[i] = 0.0f;
            continue;
        }
        float mx = -INFINITY;
        for (int i = 0; i < V; i++) mx = x[i] > mx ? x[i] : mx;
        double sum = 0;
        for (int i = 0; i < V; i++) sum += exp((double)x[i] - mx);
        double lse = mx + log(sum);
        float xt = x[t];
        if (losses) losses[n] = (float)(lse - xt);
        if (dx) { /* x and dx may be the same row: each x[i] is read before dx[i] is written */
            for (int i = 0; i < V; i++) dx[i] = (float)exp((double)x[i] - lse) * dloss;
            dx[t] -= dloss;
        }
    }
}
