/* Inverted dropout with the Philox stream shared with the CUDA kernels (kernels/philox.h), so
 * both backends drop the same elements for the same (seed, subsequence). */
#include "kernels/ops.h"
#include "kernels/philox.h"

void dropout_forward(float *out, const float *inp, size_t n, float p, uint64_t seed,
                     uint64_t subsequence) {
    float scale = 1.0f / (1.0f - p);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        out[i] = dp_philox_uniform(seed, subsequence, i) > p ? inp[i] * scale : 0.0f;
}
