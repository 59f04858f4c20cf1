/* RMSNorm, forward and backward, fp32 reference (accumulates in double for the mean). */
#include "kernels/ops.h"

#include <math.h>

void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C,
                     float eps) {
#pragma omp parallel for schedule(static) if (N > 8) /* a decode step (<= 8 rows): no thread sync */
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C; // (C)
        float *o = out + (size_t)n * C;       // (C)
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)x[c] * x[c];
        float r = 1.0f / sqrtf((float)(ss / C) + eps);
        for (int c = 0; c < C; c++) o[c] = weight[c] * (x[c] * r);
        if (rstd) rstd[n] = r;
    }
}

/* y = w * x * r, r = (mean(x^2)+eps)^-1/2:
 * dx = r * (w*dy) - x * r^3 / C * sum(w*dy*x);  dw = sum_n dy * x * r. */
void rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                      const float *weight, const float *rstd, int N, int C) {
    if (dinp) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
            float *dx = dinp + (size_t)n * C;
            float r = rstd[n];
            double dot = 0;
            for (int c = 0; c < C; c++) dot += (double)weight[c] * dy[c] * x[c];
            float k = (float)(dot * r * r * r / C);
            for (int c = 0; c < C; c++) dx[c] += r * weight[c] * dy[c] - k * x[c];
        }
    }
    if (dweight) {
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
            for (int c = 0; c < C; c++) dweight[c] += dy[c] * x[c] * rstd[n];
        }
    }
}
