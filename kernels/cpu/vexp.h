/* A vectorized fp32 exp for the CPU kernels (attention softmax, cross-entropy, SwiGLU):
 * within 2 ulp of expf, 0 below -87.3 (masked scores, -inf), +inf above 88.7. 2^k times a
 * degree-6 polynomial on [-ln2/2, ln2/2] (the Cephes coefficients), 8 lanes at a time with GCC
 * vector extensions (compilers do not vectorize the scalar form's bit casts). Callers build it
 * twice with DP_CLONES_V3 (AVX2+FMA and baseline x86-64), picked at load time. */
#ifndef DOPPEL_VEXP_H
#define DOPPEL_VEXP_H

#include "kernels/cpu/simd.h"

#include <stdint.h>
#include <string.h>

typedef float dp_v8f __attribute__((vector_size(32)));
typedef int32_t dp_v8i __attribute__((vector_size(32)));

/* p[0..8) = exp(p[0..8) * mul - sub), in place (through memory: a vector argument would change
 * the ABI of the baseline clone) */
static inline __attribute__((always_inline)) void dp_vexp8(float *ptr, float mul, float sub) {
    dp_v8f x0;
    memcpy(&x0, ptr, sizeof x0);
    x0 = x0 * mul - sub;
    dp_v8i live = x0 > -87.3f; /* lanes of -1 where x0 > -87.3 */
    dp_v8f lo = x0 * 0.0f - 87.3f, hi = lo + (87.3f + 88.7f);
    dp_v8f x = (dp_v8f)(((dp_v8i)x0 & live) | ((dp_v8i)lo & ~live));
    dp_v8i big = x > 88.7f;
    x = (dp_v8f)(((dp_v8i)x & ~big) | ((dp_v8i)hi & big));
    /* round to nearest by the 1.5 * 2^23 trick (no SSE4.1 rounding in the baseline clone) */
    dp_v8f k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    dp_v8f r = x - k * 0.693359375f + k * 2.12194440e-4f;
    dp_v8f p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    dp_v8i e = (__builtin_convertvector(k, dp_v8i) + 127) << 23; /* k = 128: the bits of +inf */
    x0 = (dp_v8f)((dp_v8i)(p * (dp_v8f)e) & live);
    memcpy(ptr, &x0, sizeof x0);
}

/* p[j] = exp(p[j] * mul - sub) for j < n */
static inline __attribute__((always_inline)) void dp_vexp(float *p, float mul, float sub, int n) {
    int j = 0;
    for (; j + 8 <= n; j += 8) dp_vexp8(p + j, mul, sub);
    if (j < n) { /* the tail through a padded copy */
        float t[8] = {0};
        memcpy(t, p + j, (size_t)(n - j) * sizeof(float));
        dp_vexp8(t, mul, sub);
        memcpy(p + j, t, (size_t)(n - j) * sizeof(float));
    }
}

#endif
