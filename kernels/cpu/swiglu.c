/* SwiGLU, fp32 reference: out = silu(gate) * up, silu(g) = g * sigmoid(g). */
#include "kernels/ops.h"

#include <math.h>

void swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
    /* a decode row (n = F) costs less than waking the team */
#pragma omp parallel for schedule(static) if (n >= 16384)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

/* d silu(g)/dg = s * (1 + g * (1 - s)), s = sigmoid(g). */
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        float s = 1.0f / (1.0f + expf(-g));
        if (dgate) dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
        if (dup) dup[i] += dout[i] * g * s;
    }
}
