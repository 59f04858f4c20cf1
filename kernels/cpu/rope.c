/* Rotary position embedding, half-split ("NEOX") pairs (i, i + D/2), fp32 reference, and
 * the inverse frequencies with Llama 3 scaling (as transformers' _compute_llama3_parameters). */
#include "kernels/ops.h"

#include <math.h>

void rope_inv_freq(float *inv_freq, int D, float theta, const dp_rope_scaling *scaling) {
    const double pi = 3.14159265358979323846;
    for (int i = 0; i < D / 2; i++) {
        double f = 1.0 / pow((double)theta, (double)(2 * i) / D);
        if (scaling && scaling->llama3) {
            /* long wavelengths are slowed by `factor`, short ones kept, and the band between
             * the two wavelength bounds interpolated smoothly */
            double old_len = scaling->original_max_position;
            double low_wavelen = old_len / scaling->low_freq_factor;
            double high_wavelen = old_len / scaling->high_freq_factor;
            double wavelen = 2 * pi / f;
            if (wavelen > low_wavelen) {
                f = f / scaling->factor;
            } else if (wavelen >= high_wavelen) {
                double smooth = (old_len / wavelen - scaling->low_freq_factor) /
                                (scaling->high_freq_factor - scaling->low_freq_factor);
                f = (1 - smooth) * f / scaling->factor + smooth * f;
            }
        }
        inv_freq[i] = (float)f;
    }
}

/* The angle is formed in fp32 as pos * inv_freq, the way transformers computes it, so long
 * positions round the same way. */
static void rope_rotate(float *x, const int32_t *pos, const float *inv_freq, int N, int nh, int D,
                        float sign) {
    int half = D / 2;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        for (int i = 0; i < half; i++) {
            float angle = (float)pos[n] * inv_freq[i];
            float c = cosf(angle), s = sign * sinf(angle);
            for (int h = 0; h < nh; h++) {
                float *row = x + ((size_t)n * nh + h) * D; // (D)
                float a = row[i], b = row[i + half];
                row[i] = a * c - b * s;
                row[i + half] = b * c + a * s;
            }
        }
    }
}

void rope_forward(float *x, const int32_t *pos, const float *inv_freq, int N, int nh, int D) {
    rope_rotate(x, pos, inv_freq, N, nh, D, 1.0f);
}

/* The rotation is orthogonal: its transpose is the rotation by -angle. */
void rope_backward(float *dx, const int32_t *pos, const float *inv_freq, int N, int nh, int D) {
    rope_rotate(dx, pos, inv_freq, N, nh, D, -1.0f);
}
