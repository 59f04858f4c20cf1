/* The numeric ops, CPU reference side (fp32). Each CUDA kernel in kernels/cuda/ has the same
 * name, argument order and shapes, and is tested against its twin here.
 * Dimension names: B batch, T time, C hidden, H heads, KVH kv heads, D head dim, F ffn, V vocab. */
#ifndef DOPPEL_OPS_H
#define DOPPEL_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* out = weight * x * rsqrt(mean(x^2) + eps), per row.
 * out, inp: (N, C); weight: (C); rstd: (N) saved for the backward pass (may be NULL). */
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C,
                     float eps);
/* dinp += d/dinp, dweight += d/dweight (either may be NULL). rstd from the forward pass. */
void rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                      const float *weight, const float *rstd, int N, int C);

#ifdef __cplusplus
}
#endif
#endif
