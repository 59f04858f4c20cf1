/* The numeric ops, CPU reference side (fp32). Each CUDA kernel in kernels/cuda/ has the same
 * name, argument order and shapes, and is tested against its twin here.
 * Dimension names: N rows (tokens), C hidden, H heads, KVH kv heads, D head dim, F ffn,
 * V vocab, r LoRA rank. Row-major everywhere; counts and offsets in size_t/int64_t.
 * Backward functions ACCUMULATE (+=) into their gradient outputs; any output may be NULL. */
#ifndef DOPPEL_OPS_H
#define DOPPEL_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/nf4.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- embedding: out[n] = table[tokens[n]]. out: (N, C); table: (V, C). */
void embedding_forward(float *out, const int32_t *tokens, const float *table, int N, int C);
/* ---- NEFTune (Jain et al. 2023): x (N, C) += alpha / sqrt(L * C) * u, u uniform in (-1, 1]
 * from Philox stream (seed, DP_NEFTUNE_STREAM) element n * C + c, L the length of row n's
 * sequence (cu_seqlens (nseq + 1)); only rows [n0, n1) change (a thread's share). Training only:
 * the noise is a constant offset on the frozen embedding, so no backward. */
#define DP_NEFTUNE_STREAM 0x4e4546544e45ull /* apart from dropout's layer * 8 + module */
void neftune_forward(float *x, const int32_t *cu_seqlens, int nseq, int n0, int n1, int C,
                     float alpha, uint64_t seed);

/* ---- RMSNorm: out = weight * x * rsqrt(mean(x^2) + eps), per row.
 * out, inp: (N, C); weight: (C); rstd: (N) saved for the backward pass (may be NULL). */
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C,
                     float eps);
void rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                      const float *weight, const float *rstd, int N, int C);

/* ---- RoPE, half-split ("NEOX") pairs (i, i + D/2), in place.
 * inv_freq: (D/2) from rope_inv_freq; x: (N, nh, D); pos: (N) position of each row. */
#define DP_ROPE_MAX_FACTORS 256
typedef struct {
    bool llama3; /* rope_scaling.rope_type == "llama3" */
    float factor, low_freq_factor, high_freq_factor;
    int original_max_position;
    /* GGUF's rope_freqs tensor (llama.cpp's form of llama3 scaling): inv_freq[i] is divided by
     * freq_factors[i]; n_factors is 0 or D/2 */
    int n_factors;
    float freq_factors[DP_ROPE_MAX_FACTORS];
} dp_rope_scaling;
void rope_inv_freq(float *inv_freq, int D, float theta, const dp_rope_scaling *scaling);
void rope_forward(float *x, const int32_t *pos, const float *inv_freq, int N, int nh, int D);
/* The transpose rotation: dx holds dout on entry and d/dx on return (in place). */
void rope_backward(float *dx, const int32_t *pos, const float *inv_freq, int N, int nh, int D);

/* ---- causal GQA attention over packed sequences (varlen, no padding): sequence s spans rows
 * [cu_seqlens[s], cu_seqlens[s+1]); rows never attend across sequences. Query head h uses kv
 * head h / (H / KVH). Scale 1/sqrt(D).
 * q, out: (N, H, D); k, v: (N, KVH, D); lse: (N, H) log-sum-exp saved for backward (may be NULL).
 * Called by every thread of an OpenMP parallel region, the two share their blocks with that
 * team (the training step); called outside one, they run a team of their own. */
void attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                       const int32_t *cu_seqlens, int nseq, int H, int KVH, int D);
void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                        const float *lse, const float *q, const float *k, const float *v,
                        const int32_t *cu_seqlens, int nseq, int H, int KVH, int D);
/* Decoding with a KV cache: Tq new query rows at positions [Tk - Tq, Tk) against Tk cached rows.
 * q, out: (Tq, H, D); kcache, vcache: (Tk, KVH, D). */
void attention_cached(float *out, const float *q, const float *kcache, const float *vcache, int Tq,
                      int Tk, int H, int KVH, int D);

/* ---- SwiGLU: out = silu(gate) * up, elementwise over n. */
void swiglu_forward(float *out, const float *gate, const float *up, size_t n);
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, size_t n);

/* ---- inverted dropout: out = inp / (1 - p) where the Philox draw (kernels/philox.h) of element
 * i of stream (seed, subsequence) is > p, else 0; out may alias inp; 0 <= p < 1. */
void dropout_forward(float *out, const float *inp, size_t n, float p, uint64_t seed,
                     uint64_t subsequence);

/* ---- dense linear (OpenBLAS): out (N, OC) = inp (N, C) @ weight (OC, C)^T + bias (OC or NULL). */
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N,
                    int C, int OC);
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int C, int OC);

/* ---- C (M, N) = alpha op(A) op(B) + beta C, row-major sgemm (op = transpose when ta / tb),
 * split along the longer side of C across OpenMP threads with OpenBLAS single-threaded in each
 * (callers set openblas_set_num_threads(1) for their lifetime; with more OpenBLAS threads, or
 * inside a parallel region, it is one plain call). Same thread count -> same bits. */
void gemm_omp(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);

/* ---- bf16 products over a frozen weight (kernels/cpu/gemm_bf16.c): QLoRA's usual compute dtype
 * (bitsandbytes' bnb_4bit_compute_dtype = bfloat16) at vdpbf16ps' twice-fp32 rate. W (OC, C) is
 * packed once per GEMM into bf16 panels (pairs along the summed dimension), the activations
 * rounded to bf16 (nearest even) once, sums and outputs fp32. On a CPU without AVX512_BF16 (or
 * DOPPEL_SIMD below it) the products run in a scalar loop and the matmul_nf4_*_bf16 entry points
 * are the fp32 ones. */
static inline uint16_t dp_bf16_round1(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}
static inline float dp_bf16_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
/* true when the vdpbf16ps kernel runs (AVX512_BF16, not narrowed by DOPPEL_SIMD) */
bool dp_bf16_gemm_ok(void);
/* true when AMX tiles (TDPBF16PS) take the whole 32 x 32 blocks of those products (AMX-BF16, the
 * kernel's leave to use it, not narrowed by DOPPEL_SIMD=avx512bf16) */
bool dp_bf16_amx_ok(void);
/* the bf16 products' kernel in words (doppel info, the benchmarks), NULL when there is none */
const char *dp_bf16_kernel_name(void);
/* bf16 elements of a packed weight for products summing over K into NO outputs */
size_t dp_bf16_panel_size(int K, int NO);
/* xb (N, K rounded up to even) = bf16(x (N, K)), the pad column zero */
void dp_bf16_round(uint16_t *xb, const float *x, int N, int K);
/* Packs rows [o0, o1) of W (OC, C); the call that reaches OC also writes the padding, so threads
 * may split the rows (_nn: at even boundaries). _nt: for out = x W^T (K = C, NO = OC);
 * _nn: for dinp += dout W (K = OC, NO = C). */
void dp_bf16_pack_nt(uint16_t *wp, const float *w, int OC, int C, int o0, int o1);
void dp_bf16_pack_nn(uint16_t *wp, const float *w, int OC, int C, int o0, int o1);
void dp_nf4_pack_bf16_nt(uint16_t *wp, const dp_nf4 *w, int o0, int o1);
void dp_nf4_pack_bf16_nn(uint16_t *wp, const dp_nf4 *w, int o0, int o1);
/* out (N, NO; row stride ldo) = [out +] xb (N, K) Wp^T, on the calling thread */
void gemm_bf16_packed(float *out, int ldo, const uint16_t *xb, const uint16_t *wp, int N, int K,
                      int NO, bool accumulate);
/* Products with an fp32 weight, rounded into bf16 panels `block` rows of W at a time (no bf16
 * copy of the whole weight), on the calling thread, in a scratch of
 * gemm_bf16_f32w_scratch(nn, ...) elements. _nt: out (N, NO; ldo) = x (N, K) W^T, W (NO, K);
 * _nn: out (N, NO; ldo) = a (N, K; lda) W, W (K, NO). */
size_t gemm_bf16_f32w_scratch(bool nn, int N, int K, int NO, int block);
void gemm_bf16_f32w_nt(float *out, int ldo, const float *x, const float *w, int N, int K, int NO,
                       int block, uint16_t *scratch);
void gemm_bf16_f32w_nn(float *out, int ldo, const float *a, int lda, const float *w, int N, int K,
                       int NO, int block, uint16_t *scratch);
/* matmul_nf4_forward / matmul_nf4_backward_input in bf16 (OpenMP over rows) */
void matmul_nf4_forward_bf16(float *out, const float *inp, const dp_nf4 *w, const float *bias,
                             int N, int C, int OC);
void matmul_nf4_backward_input_bf16(float *dinp, const float *dout, const dp_nf4 *w, int N, int C,
                                    int OC);

/* ---- cross-entropy over logits rows with ignored targets (target < 0 is not trained).
 * logits, dlogits: (N, V); losses: (N) per-row loss (0 for ignored rows).
 * dlogits = (softmax - onehot) * dloss for trained rows, 0 for ignored ones (written, not +=).
 * dlogits may alias logits. Callers chunk N so full fp32 logits never exist at once. */
void cross_entropy_forward_backward(float *losses, float *dlogits, const float *logits,
                                    const int32_t *targets, int N, int V, float dloss);

/* ---- optimizer: one AdamW step (decoupled weight decay, bias correction), t = step (1-based).
 * grad is multiplied by grad_scale first (clipping). */
void adamw_update(float *param, const float *grad, float *m, float *v, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, float grad_scale, int t);
/* sum of squares, accumulated in double (global grad-norm = sqrt of the sum over tensors). */
double sum_squares(const float *x, size_t n);

#ifdef __cplusplus
}
#endif
#endif
