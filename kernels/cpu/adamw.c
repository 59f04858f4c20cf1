/* AdamW step and squared norms, fp32 reference. Same arithmetic order as PyTorch's
 * single-tensor AdamW (lerp for m, addcmul for v, denom = sqrt(v)/sqrt(bc2) + eps). */
#include "kernels/ops.h"

#include <math.h>

void adamw_update(float *param, const float *grad, float *m, float *v, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                  int t) {
    float bc1 = 1.0f - powf(beta1, (float)t);
    float bc2_sqrt = sqrtf(1.0f - powf(beta2, (float)t));
    float step_size = lr / bc1;
    float decay = 1.0f - lr * weight_decay;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] * grad_scale;
        float p = param[i] * decay; /* decoupled weight decay, before the Adam step */
        float mi = m[i] + (1.0f - beta1) * (g - m[i]);
        float vi = v[i] * beta2 + (1.0f - beta2) * g * g;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        param[i] = p - step_size * (mi / denom);
        m[i] = mi;
        v[i] = vi;
    }
}

/* Fixed chunks summed in a fixed order: the result does not depend on the thread count. */
#define SUMSQ_CHUNKS 64
double sum_squares(const float *x, size_t n) {
    double part[SUMSQ_CHUNKS];
    size_t chunk = (n + SUMSQ_CHUNKS - 1) / SUMSQ_CHUNKS;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < SUMSQ_CHUNKS; c++) {
        size_t lo = (size_t)c * chunk, hi = lo + chunk < n ? lo + chunk : n;
        double s = 0;
        for (size_t i = lo; i < hi; i++) s += (double)x[i] * x[i];
        part[c] = s;
    }
    double s = 0;
    for (int c = 0; c < SUMSQ_CHUNKS; c++) s += part[c];
    return s;
}
