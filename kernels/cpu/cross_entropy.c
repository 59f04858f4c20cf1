/* Cross-entropy over rows of logits with ignored targets, fp32 with the vectorized exp of
 * vexp.h (sums in double). A target >= V is a caller bug (targets are validated against the
 * vocabulary when batches are built): it yields a NaN loss so it cannot pass unnoticed, never
 * an out-of-bounds read. */
#include "kernels/cpu/vexp.h"
#include "kernels/ops.h"

#include <math.h>

DP_CLONES_V3 static float row_max(const float *x, int V) {
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int i = 0; i < V; i++) mx = x[i] > mx ? x[i] : mx;
    return mx;
}

/* e[0, n) = exp(x[0, n) - mx); returns their sum (in double). e may be x. */
DP_CLONES_V3 static double exp_sum(float *e, const float *x, int n, float mx) {
    if (e != x) memcpy(e, x, (size_t)n * sizeof(float));
    dp_vexp(e, 1.0f, mx, n);
    double s = 0;
    for (int i = 0; i < n; i++) s += e[i];
    return s;
}

DP_CLONES_V3 static void scale_row(float *x, float s, int V) {
#pragma omp simd
    for (int i = 0; i < V; i++) x[i] *= s;
}

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
        float mx = row_max(x, V), xt = x[t];
        double sum = 0;
        if (dx) { /* x and dx may be the same row: x[t] and the max are read first */
            sum = exp_sum(dx, x, V, mx);
        } else {
            float buf[256];
            for (int i = 0; i < V; i += 256)
                sum += exp_sum(buf, x + i, V - i < 256 ? V - i : 256, mx);
        }
        double lse = mx + log(sum);
        if (losses) losses[n] = (float)(lse - xt);
        if (dx) {
            scale_row(dx, (float)(dloss / sum), V);
            dx[t] -= dloss;
        }
    }
}
