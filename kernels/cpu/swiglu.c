/* SwiGLU, fp32: out = silu(gate) * up, silu(g) = g * sigmoid(g), with the vectorized exp of
 * vexp.h over runs of 256 elements. */
#include "kernels/cpu/vexp.h"
#include "kernels/ops.h"

#include <math.h>

#define RUN 256

DP_CLONES_V3 static void fwd_run(float *out, const float *gate, const float *up, int n) {
    float e[RUN];
    memcpy(e, gate, (size_t)n * sizeof(float));
    dp_vexp(e, -1.0f, 0.0f, n); /* exp(-g) */
#pragma omp simd
    for (int i = 0; i < n; i++) out[i] = gate[i] / (1.0f + e[i]) * up[i];
}

void swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
    size_t runs = (n + RUN - 1) / RUN;
    /* a decode row (n = F) costs less than waking the team */
#pragma omp parallel for schedule(static) if (n >= 16384)
    for (size_t r = 0; r < runs; r++) {
        size_t i = r * RUN;
        fwd_run(out + i, gate + i, up + i, (int)(n - i < RUN ? n - i : RUN));
    }
}

/* d silu(g)/dg = s * (1 + g * (1 - s)), s = sigmoid(g). */
DP_CLONES_V3 static void bwd_run(float *dgate, float *dup, const float *dout, const float *gate,
                                 const float *up, int n) {
    float s[RUN];
    memcpy(s, gate, (size_t)n * sizeof(float));
    dp_vexp(s, -1.0f, 0.0f, n);
#pragma omp simd
    for (int i = 0; i < n; i++) s[i] = 1.0f / (1.0f + s[i]);
    if (dgate)
#pragma omp simd
        for (int i = 0; i < n; i++)
            dgate[i] += dout[i] * up[i] * s[i] * (1.0f + gate[i] * (1.0f - s[i]));
    if (dup)
#pragma omp simd
        for (int i = 0; i < n; i++) dup[i] += dout[i] * gate[i] * s[i];
}

void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, size_t n) {
    size_t runs = (n + RUN - 1) / RUN;
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < runs; r++) {
        size_t i = r * RUN;
        bwd_run(dgate ? dgate + i : NULL, dup ? dup + i : NULL, dout + i, gate + i, up + i,
                (int)(n - i < RUN ? n - i : RUN));
    }
}
