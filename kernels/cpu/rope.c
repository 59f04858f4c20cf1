/* Rotary position embedding, half-split ("NEOX") pairs (i, i + D/2), fp32 reference, and
 * the inverse frequencies with Llama 3 scaling (as transformers' _compute_llama3_parameters). */
#include "kernels/ops.h"

#include <math.h>

/* In fp32 with the same operations as transformers (torch computes these tensors in float32):
 * at position 4000 one ulp of inv_freq already moves the angle by ~2e-4 rad, so the rounding
 * of the model's own reference implementation is the one to follow. */
void rope_inv_freq(float *inv_freq, int D, float theta, const dp_rope_scaling *scaling) {
    const float pi = 3.14159265358979323846f;
    for (int i = 0; i < D / 2; i++) {
        float f = 1.0f / powf(theta, (float)(2 * i) / (float)D);
        if (scaling && scaling->llama3) {
            /* long wavelengths are slowed by `factor`, short ones kept, and the band between
             * the two wavelength bounds interpolated smoothly */
            float old_len = (float)scaling->original_max_position;
            float low_wavelen = old_len / scaling->low_freq_factor;
            float high_wavelen = old_len / scaling->high_freq_factor;
            float wavelen = 2 * pi / f;
            float scaled = wavelen > low_wavelen ? f / scaling->factor : f;
            if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
                float smooth = (old_len / wavelen - scaling->low_freq_factor) /
                               (scaling->high_freq_factor - scaling->low_freq_factor);
                scaled = (1 - smooth) * scaled / scaling->factor + smooth * scaled;
            }
            f = scaled;
        }
        if (scaling && scaling->n_factors == D / 2) f = f / scaling->freq_factors[i];
        inv_freq[i] = f;
    }
}

/* The angle is formed in fp32 as pos * inv_freq, the way transformers computes it, so long
 * positions round the same way. */
static void rope_rotate(float *x, const int32_t *pos, const float *inv_freq, int N, int nh, int D,
                        float sign) {
    int half = D / 2;
#pragma omp parallel for schedule(static) if (N > 8) /* a decode step (<= 8 rows): no thread sync */
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
