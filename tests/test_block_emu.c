/* A whole transformer block (Qwen2-style: RMSNorm, q/k/v with bias, RoPE, causal GQA attention
 * over packed sequences, o-projection, residual, RMSNorm, SwiGLU MLP, residual) composed from
 * the CUDA launchers under EMU (or on the device: DOPPEL_TEST_BACKEND=cuda), against the same block
 * composed from the CPU ops. Checks that the kernels and the GEMM wrapper agree on layouts end to
 * end, in fp32 and with bf16 activations and weights; then a decode step with a KV cache against
 * the full forward, and the input gradient through the block (frozen weights, as in LoRA training).
 */
#include "check.h"
#include "fixture_emu.h"
#include "infer/dtype.h"
#include "data/base/error.h"
#include "kernels/cuda/kernels.h"
#include "kernels/emu/emu_api.h"
#include "kernels/ops.h"

#include <stdint.h>

#define OK(call)                                                                                   \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        CHECK_REPORT(rc_ == 0, "%s failed: %s", #call, dp_last_error());                           \
    } while (0)

static const dp_gpu_ops *gpu; /* dp_emu_ops, or dp_cuda_ops under DOPPEL_TEST_BACKEND=cuda */
enum { C = 64, H = 4, KVH = 2, D = 16, F = 160, QD = H * D, KD = KVH * D };

static check_rng rng = {77};
static float *randn(size_t n, float scale) {
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = scale * check_rng_float(&rng);
    return x;
}

typedef struct {
    float *ln1, *wq, *bq, *wk, *bk, *wv, *bv, *wo, *ln2, *wg, *wu, *wd;
} block_w;

static void weights_init(block_w *w) {
    w->ln1 = randn(C, 0.2f), w->ln2 = randn(C, 0.2f);
    for (int c = 0; c < C; c++) w->ln1[c] += 1.0f, w->ln2[c] += 1.0f;
    float s = 1.0f / sqrtf((float)C);
    w->wq = randn((size_t)QD * C, s), w->bq = randn(QD, 0.1f);
    w->wk = randn((size_t)KD * C, s), w->bk = randn(KD, 0.1f);
    w->wv = randn((size_t)KD * C, s), w->bv = randn(KD, 0.1f);
    w->wo = randn((size_t)C * QD, 1.0f / sqrtf((float)QD));
    w->wg = randn((size_t)F * C, s), w->wu = randn((size_t)F * C, s);
    w->wd = randn((size_t)C * F, 1.0f / sqrtf((float)F));
}

/* ---- the CPU block: y = x2 + mlp(norm(x2)), x2 = x + attn(norm(x)) */
static void block_cpu(float *y, const float *x, const block_w *w, const int32_t *pos,
                      const int32_t *cu, int nseq, const float *inv_freq, int N) {
    float *h = malloc((size_t)N * C * 4), *q = malloc((size_t)N * QD * 4);
    float *k = malloc((size_t)N * KD * 4), *v = malloc((size_t)N * KD * 4);
    float *att = malloc((size_t)N * QD * 4), *o = malloc((size_t)N * C * 4);
    float *x2 = malloc((size_t)N * C * 4), *g = malloc((size_t)N * F * 4),
          *u = malloc((size_t)N * F * 4);
    rmsnorm_forward(h, NULL, x, w->ln1, N, C, 1e-6f);
    matmul_forward(q, h, w->wq, w->bq, N, C, QD);
    matmul_forward(k, h, w->wk, w->bk, N, C, KD);
    matmul_forward(v, h, w->wv, w->bv, N, C, KD);
    rope_forward(q, pos, inv_freq, N, H, D);
    rope_forward(k, pos, inv_freq, N, KVH, D);
    attention_forward(att, NULL, q, k, v, cu, nseq, H, KVH, D);
    matmul_forward(o, att, w->wo, NULL, N, QD, C);
    for (size_t i = 0; i < (size_t)N * C; i++) x2[i] = x[i] + o[i];
    rmsnorm_forward(h, NULL, x2, w->ln2, N, C, 1e-6f);
    matmul_forward(g, h, w->wg, NULL, N, C, F);
    matmul_forward(u, h, w->wu, NULL, N, C, F);
    swiglu_forward(g, g, u, (size_t)N * F);
    matmul_forward(o, g, w->wd, NULL, N, F, C);
    for (size_t i = 0; i < (size_t)N * C; i++) y[i] = x2[i] + o[i];
    free(h), free(q), free(k), free(v), free(att), free(o), free(x2), free(g), free(u);
}

/* ---- device side: weights uploaded as fp32 (bf16 = 0) or bf16 (bf16 = 1) */
typedef struct {
    void *wq, *wk, *wv, *wo, *wg, *wu, *wd;
    float *ln1, *ln2, *bq, *bk, *bv, *inv_freq;
} block_dev;

static void *up(const float *h, size_t n, int bf16) {
    void *d = NULL;
    OK(gpu->dev_malloc(&d, n * (bf16 ? 2 : 4)));
    if (bf16) {
        dp_bf16 *t = malloc(n * 2);
        for (size_t i = 0; i < n; i++) t[i] = dp_f32_to_bf16(h[i]);
        OK(gpu->upload(d, t, n * 2));
        free(t);
    } else {
        OK(gpu->upload(d, h, n * 4));
    }
    return d;
}
static float *down(const void *d, size_t n, int bf16) {
    float *h = malloc(n * 4);
    if (bf16) {
        dp_bf16 *t = malloc(n * 2);
        OK(gpu->download(t, d, n * 2));
        for (size_t i = 0; i < n; i++) h[i] = dp_bf16_to_f32(t[i]);
        free(t);
    } else {
        OK(gpu->download(h, d, n * 4));
    }
    return h;
}

/* out (N, OC) = inp (N, K) @ W (OC, K)^T, the matmul_forward convention through the wrapper */
static void linear(dp_blas *blas, void *out, const void *inp, const void *wt, int N, int K, int OC,
                   int bf16) {
    dp_act_dtype t = bf16 ? DP_BF16 : DP_F32;
    OK(gpu->gemm(blas, false, true, N, OC, K, 1.0f, inp, K, wt, K, 0.0f, out, OC, t, t));
}

/* bias on bf16 activations: no bf16 bias kernel, so add it in fp32 through a cast round trip */
static void add_bias(void *x, const float *bias, int N, int OC, int bf16, float *tmp) {
    if (!bf16) {
        OK(gpu->bias_forward(x, bias, N, OC));
        return;
    }
    OK(gpu->cast_bf16_to_f32(tmp, x, (size_t)N * OC));
    OK(gpu->bias_forward(tmp, bias, N, OC));
    OK(gpu->cast_f32_to_bf16(x, tmp, (size_t)N * OC));
}

/* Runs the block on the device; returns y (host) and leaves k, v (after RoPE) in kc, vc. */
static float *block_gpu(const float *x, const block_dev *w, const int32_t *pos, const int32_t *cu,
                        int nseq, int N, int bf16, void *kc, void *vc) {
    size_t es = bf16 ? 2 : 4;
    dp_blas *blas = NULL;
    OK(gpu->blas_create(&blas));
    void *dx = up(x, (size_t)N * C, bf16), *h, *q, *att, *o, *x2, *g, *u;
    float *tmp, *lse;
    OK(gpu->dev_malloc(&h, (size_t)N * C * es));
    OK(gpu->dev_malloc(&q, (size_t)N * QD * es));
    OK(gpu->dev_malloc(&att, (size_t)N * QD * es));
    OK(gpu->dev_malloc(&o, (size_t)N * C * es));
    OK(gpu->dev_malloc(&x2, (size_t)N * C * es));
    OK(gpu->dev_malloc(&g, (size_t)N * F * es));
    OK(gpu->dev_malloc(&u, (size_t)N * F * es));
    OK(gpu->dev_malloc((void **)&tmp, (size_t)N * F * 4));
    OK(gpu->dev_malloc((void **)&lse, (size_t)N * H * 4));
    int32_t *dpos = NULL, *dcu = NULL;
    OK(gpu->dev_malloc((void **)&dpos, N * 4));
    OK(gpu->dev_malloc((void **)&dcu, (nseq + 1) * 4));
    OK(gpu->upload(dpos, pos, N * 4));
    OK(gpu->upload(dcu, cu, (nseq + 1) * 4));

    if (bf16)
        OK(gpu->rmsnorm_forward_bf16(h, NULL, dx, w->ln1, N, C, 1e-6f));
    else
        OK(gpu->rmsnorm_forward(h, NULL, dx, w->ln1, N, C, 1e-6f));
    linear(blas, q, h, w->wq, N, C, QD, bf16);
    linear(blas, kc, h, w->wk, N, C, KD, bf16);
    linear(blas, vc, h, w->wv, N, C, KD, bf16);
    add_bias(q, w->bq, N, QD, bf16, tmp);
    add_bias(kc, w->bk, N, KD, bf16, tmp);
    add_bias(vc, w->bv, N, KD, bf16, tmp);
    if (bf16) {
        OK(gpu->rope_forward_bf16(q, dpos, w->inv_freq, N, H, D));
        OK(gpu->rope_forward_bf16(kc, dpos, w->inv_freq, N, KVH, D));
        OK(gpu->attention_forward_bf16(att, lse, q, kc, vc, dcu, nseq, N, H, KVH, D));
    } else {
        OK(gpu->rope_forward(q, dpos, w->inv_freq, N, H, D));
        OK(gpu->rope_forward(kc, dpos, w->inv_freq, N, KVH, D));
        OK(gpu->attention_forward(att, lse, q, kc, vc, dcu, nseq, N, H, KVH, D));
    }
    linear(blas, o, att, w->wo, N, QD, C, bf16);
    if (bf16) {
        OK(gpu->residual_forward_bf16(x2, dx, o, (size_t)N * C));
        OK(gpu->rmsnorm_forward_bf16(h, NULL, x2, w->ln2, N, C, 1e-6f));
    } else {
        OK(gpu->residual_forward(x2, dx, o, (size_t)N * C));
        OK(gpu->rmsnorm_forward(h, NULL, x2, w->ln2, N, C, 1e-6f));
    }
    linear(blas, g, h, w->wg, N, C, F, bf16);
    linear(blas, u, h, w->wu, N, C, F, bf16);
    if (bf16)
        OK(gpu->swiglu_forward_bf16(g, g, u, (size_t)N * F));
    else
        OK(gpu->swiglu_forward(g, g, u, (size_t)N * F));
    linear(blas, o, g, w->wd, N, F, C, bf16);
    if (bf16)
        OK(gpu->residual_forward_bf16(dx, x2, o, (size_t)N * C));
    else
        OK(gpu->residual_forward(dx, x2, o, (size_t)N * C));
    float *y = down(dx, (size_t)N * C, bf16);
    void *bufs[] = {dx, h, q, att, o, x2, g, u, tmp, lse, dpos, dcu};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) OK(gpu->dev_free(bufs[i]));
    OK(gpu->blas_destroy(blas));
    return y;
}

/* One new token at position `p`: its k, v go to row Tk - 1 of the cache, then attention over
 * the Tk cached rows (attention_cached) and the rest of the block; returns y (C) on the host. */
static float *decode_gpu(const float *x, const block_dev *w, int32_t p, void *kcache, void *vcache,
                         int Tk, int bf16) {
    size_t es = bf16 ? 2 : 4;
    dp_blas *blas = NULL;
    OK(gpu->blas_create(&blas));
    void *dx = up(x, C, bf16), *h, *q, *att, *o, *x2, *g, *u;
    void *krow = (char *)kcache + (size_t)(Tk - 1) * KD * es;
    void *vrow = (char *)vcache + (size_t)(Tk - 1) * KD * es;
    float *tmp;
    int32_t *dpos = NULL;
    OK(gpu->dev_malloc(&h, C * es));
    OK(gpu->dev_malloc(&q, QD * es));
    OK(gpu->dev_malloc(&att, QD * es));
    OK(gpu->dev_malloc(&o, C * es));
    OK(gpu->dev_malloc(&x2, C * es));
    OK(gpu->dev_malloc(&g, F * es));
    OK(gpu->dev_malloc(&u, F * es));
    OK(gpu->dev_malloc((void **)&tmp, F * 4));
    OK(gpu->dev_malloc((void **)&dpos, 4));
    OK(gpu->upload(dpos, &p, 4));
    if (bf16)
        OK(gpu->rmsnorm_forward_bf16(h, NULL, dx, w->ln1, 1, C, 1e-6f));
    else
        OK(gpu->rmsnorm_forward(h, NULL, dx, w->ln1, 1, C, 1e-6f));
    linear(blas, q, h, w->wq, 1, C, QD, bf16);
    linear(blas, krow, h, w->wk, 1, C, KD, bf16);
    linear(blas, vrow, h, w->wv, 1, C, KD, bf16);
    add_bias(q, w->bq, 1, QD, bf16, tmp);
    add_bias(krow, w->bk, 1, KD, bf16, tmp);
    add_bias(vrow, w->bv, 1, KD, bf16, tmp);
    if (bf16) {
        OK(gpu->rope_forward_bf16(q, dpos, w->inv_freq, 1, H, D));
        OK(gpu->rope_forward_bf16(krow, dpos, w->inv_freq, 1, KVH, D));
        OK(gpu->attention_cached_bf16(att, q, kcache, vcache, 1, Tk, H, KVH, D));
    } else {
        OK(gpu->rope_forward(q, dpos, w->inv_freq, 1, H, D));
        OK(gpu->rope_forward(krow, dpos, w->inv_freq, 1, KVH, D));
        OK(gpu->attention_cached(att, q, kcache, vcache, 1, Tk, H, KVH, D));
    }
    linear(blas, o, att, w->wo, 1, QD, C, bf16);
    if (bf16) {
        OK(gpu->residual_forward_bf16(x2, dx, o, C));
        OK(gpu->rmsnorm_forward_bf16(h, NULL, x2, w->ln2, 1, C, 1e-6f));
    } else {
        OK(gpu->residual_forward(x2, dx, o, C));
        OK(gpu->rmsnorm_forward(h, NULL, x2, w->ln2, 1, C, 1e-6f));
    }
    linear(blas, g, h, w->wg, 1, C, F, bf16);
    linear(blas, u, h, w->wu, 1, C, F, bf16);
    if (bf16)
        OK(gpu->swiglu_forward_bf16(g, g, u, F));
    else
        OK(gpu->swiglu_forward(g, g, u, F));
    linear(blas, o, g, w->wd, 1, F, C, bf16);
    if (bf16)
        OK(gpu->residual_forward_bf16(dx, x2, o, C));
    else
        OK(gpu->residual_forward(dx, x2, o, C));
    float *y = down(dx, C, bf16);
    void *bufs[] = {dx, h, q, att, o, x2, g, u, tmp, dpos};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) OK(gpu->dev_free(bufs[i]));
    OK(gpu->blas_destroy(blas));
    return y;
}

static void dev_weights(block_dev *d, const block_w *w, const float *inv_freq, int bf16) {
    d->wq = up(w->wq, (size_t)QD * C, bf16), d->wk = up(w->wk, (size_t)KD * C, bf16);
    d->wv = up(w->wv, (size_t)KD * C, bf16), d->wo = up(w->wo, (size_t)C * QD, bf16);
    d->wg = up(w->wg, (size_t)F * C, bf16), d->wu = up(w->wu, (size_t)F * C, bf16);
    d->wd = up(w->wd, (size_t)C * F, bf16);
    d->ln1 = up(w->ln1, C, 0), d->ln2 = up(w->ln2, C, 0), d->bq = up(w->bq, QD, 0);
    d->bk = up(w->bk, KD, 0), d->bv = up(w->bv, KD, 0), d->inv_freq = up(inv_freq, D / 2, 0);
}
static void dev_weights_free(block_dev *d) {
    void *p[] = {d->wq,  d->wk,  d->wv, d->wo, d->wg, d->wu,      d->wd,
                 d->ln1, d->ln2, d->bq, d->bk, d->bv, d->inv_freq};
    for (size_t i = 0; i < sizeof p / sizeof *p; i++) OK(gpu->dev_free(p[i]));
}

/* ---- the input gradient through the block with frozen weights (what LoRA training needs):
 * the forward's intermediates come from the CPU, then the backward chain runs once with the
 * CPU ops (matmul_backward etc.) and once with the launchers (transposed GEMMs). */
typedef struct {
    float *h1, *rstd1, *q, *k, *v, *att, *lse, *x2, *h2, *rstd2, *g, *u;
} block_saved;

static void block_forward_saved(block_saved *s, const float *x, const block_w *w,
                                const int32_t *pos, const int32_t *cu, int nseq,
                                const float *inv_freq, int N) {
    s->h1 = malloc((size_t)N * C * 4), s->rstd1 = malloc(N * 4), s->q = malloc((size_t)N * QD * 4);
    s->k = malloc((size_t)N * KD * 4), s->v = malloc((size_t)N * KD * 4);
    s->att = malloc((size_t)N * QD * 4), s->lse = malloc((size_t)N * H * 4);
    s->x2 = malloc((size_t)N * C * 4), s->h2 = malloc((size_t)N * C * 4), s->rstd2 = malloc(N * 4);
    s->g = malloc((size_t)N * F * 4), s->u = malloc((size_t)N * F * 4);
    float *o = malloc((size_t)N * C * 4);
    rmsnorm_forward(s->h1, s->rstd1, x, w->ln1, N, C, 1e-6f);
    matmul_forward(s->q, s->h1, w->wq, w->bq, N, C, QD);
    matmul_forward(s->k, s->h1, w->wk, w->bk, N, C, KD);
    matmul_forward(s->v, s->h1, w->wv, w->bv, N, C, KD);
    rope_forward(s->q, pos, inv_freq, N, H, D);
    rope_forward(s->k, pos, inv_freq, N, KVH, D);
    attention_forward(s->att, s->lse, s->q, s->k, s->v, cu, nseq, H, KVH, D);
    matmul_forward(o, s->att, w->wo, NULL, N, QD, C);
    for (size_t i = 0; i < (size_t)N * C; i++) s->x2[i] = x[i] + o[i];
    rmsnorm_forward(s->h2, s->rstd2, s->x2, w->ln2, N, C, 1e-6f);
    matmul_forward(s->g, s->h2, w->wg, NULL, N, C, F);
    matmul_forward(s->u, s->h2, w->wu, NULL, N, C, F);
    free(o);
}

static void block_backward_cpu(float *dx, const float *dy, const float *x, const block_w *w,
                               const block_saved *s, const int32_t *pos, const int32_t *cu,
                               int nseq, const float *inv_freq, int N) {
    float *dx2 = malloc((size_t)N * C * 4), *da = calloc((size_t)N * F, 4);
    float *dg = calloc((size_t)N * F, 4), *du = calloc((size_t)N * F, 4);
    float *dh = calloc((size_t)N * C, 4), *datt = calloc((size_t)N * QD, 4);
    float *dq = calloc((size_t)N * QD, 4), *dk = calloc((size_t)N * KD, 4),
          *dv = calloc((size_t)N * KD, 4);
    memcpy(dx2, dy, (size_t)N * C * 4);
    matmul_backward(da, NULL, NULL, dy, NULL, w->wd, N, F, C);
    swiglu_backward(dg, du, da, s->g, s->u, (size_t)N * F);
    matmul_backward(dh, NULL, NULL, dg, NULL, w->wg, N, C, F);
    matmul_backward(dh, NULL, NULL, du, NULL, w->wu, N, C, F);
    rmsnorm_backward(dx2, NULL, dh, s->x2, w->ln2, s->rstd2, N, C);
    matmul_backward(datt, NULL, NULL, dx2, NULL, w->wo, N, QD, C);
    attention_backward(dq, dk, dv, datt, s->att, s->lse, s->q, s->k, s->v, cu, nseq, H, KVH, D);
    rope_backward(dq, pos, inv_freq, N, H, D);
    rope_backward(dk, pos, inv_freq, N, KVH, D);
    memset(dh, 0, (size_t)N * C * 4);
    matmul_backward(dh, NULL, NULL, dq, NULL, w->wq, N, C, QD);
    matmul_backward(dh, NULL, NULL, dk, NULL, w->wk, N, C, KD);
    matmul_backward(dh, NULL, NULL, dv, NULL, w->wv, N, C, KD);
    memcpy(dx, dx2, (size_t)N * C * 4);
    rmsnorm_backward(dx, NULL, dh, x, w->ln1, s->rstd1, N, C);
    free(dx2), free(da), free(dg), free(du), free(dh), free(datt), free(dq), free(dk), free(dv);
}

/* dinp (N, K) += dout (N, OC) @ W (OC, K) */
static void linear_backward(dp_blas *blas, float *dinp, const float *dout, const void *wt, int N,
                            int K, int OC) {
    OK(gpu->gemm(blas, false, false, N, K, OC, 1.0f, dout, OC, wt, K, 1.0f, dinp, K, DP_F32,
                 DP_F32));
}

static float *block_backward_gpu(const float *dy, const float *x, const block_dev *w,
                                 const block_saved *s, const int32_t *pos, const int32_t *cu,
                                 int nseq, int N) {
    dp_blas *blas = NULL;
    OK(gpu->blas_create(&blas));
    float *ddy = up(dy, (size_t)N * C, 0), *dxx = up(x, (size_t)N * C, 0);
    float *dx2 = up(dy, (size_t)N * C, 0), *g = up(s->g, (size_t)N * F, 0),
          *u = up(s->u, (size_t)N * F, 0);
    float *x2 = up(s->x2, (size_t)N * C, 0), *r1 = up(s->rstd1, N, 0), *r2 = up(s->rstd2, N, 0);
    float *q = up(s->q, (size_t)N * QD, 0), *k = up(s->k, (size_t)N * KD, 0),
          *v = up(s->v, (size_t)N * KD, 0);
    float *att = up(s->att, (size_t)N * QD, 0), *lse = up(s->lse, (size_t)N * H, 0);
    float *da, *dg, *du, *dh, *datt, *dq, *dk, *dv;
    float **z[] = {&da, &dg, &du, &dh, &datt, &dq, &dk, &dv};
    size_t zn[] = {(size_t)N * F,  (size_t)N * F,  (size_t)N * F,  (size_t)N * C,
                   (size_t)N * QD, (size_t)N * QD, (size_t)N * KD, (size_t)N * KD};
    for (int i = 0; i < 8; i++) {
        OK(gpu->dev_malloc((void **)z[i], zn[i] * 4));
        OK(gpu->dev_memset(*z[i], 0, zn[i] * 4));
    }
    int32_t *dpos = NULL, *dcu = NULL;
    OK(gpu->dev_malloc((void **)&dpos, N * 4));
    OK(gpu->dev_malloc((void **)&dcu, (nseq + 1) * 4));
    OK(gpu->upload(dpos, pos, N * 4));
    OK(gpu->upload(dcu, cu, (nseq + 1) * 4));

    linear_backward(blas, da, ddy, w->wd, N, F, C);
    OK(gpu->swiglu_backward(dg, du, da, g, u, (size_t)N * F));
    linear_backward(blas, dh, dg, w->wg, N, C, F);
    linear_backward(blas, dh, du, w->wu, N, C, F);
    OK(gpu->rmsnorm_backward(dx2, NULL, dh, x2, w->ln2, r2, N, C));
    linear_backward(blas, datt, dx2, w->wo, N, QD, C);
    OK(gpu->attention_backward(dq, dk, dv, datt, att, lse, q, k, v, dcu, nseq, N, H, KVH, D));
    OK(gpu->rope_backward(dq, dpos, w->inv_freq, N, H, D));
    OK(gpu->rope_backward(dk, dpos, w->inv_freq, N, KVH, D));
    OK(gpu->dev_memset(dh, 0, (size_t)N * C * 4));
    linear_backward(blas, dh, dq, w->wq, N, C, QD);
    linear_backward(blas, dh, dk, w->wk, N, C, KD);
    linear_backward(blas, dh, dv, w->wv, N, C, KD);
    OK(gpu->rmsnorm_backward(dx2, NULL, dh, dxx, w->ln1, r1, N, C)); /* dx = dx2 + d(norm1) */
    float *out = down(dx2, (size_t)N * C, 0);
    void *bufs[] = {ddy, dxx, dx2, g,  u,  x2,   r1, r2, q,  k,    v,  att,
                    lse, da,  dg,  du, dh, datt, dq, dk, dv, dpos, dcu};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) OK(gpu->dev_free(bufs[i]));
    OK(gpu->blas_destroy(blas));
    return out;
}

static void test_block_backward(const float *x, const block_w *w, const int32_t *pos,
                                const int32_t *cu, int nseq, const float *inv_freq, int N) {
    block_saved s;
    block_forward_saved(&s, x, w, pos, cu, nseq, inv_freq, N);
    float *dy = randn((size_t)N * C, 1.0f), *dx = malloc((size_t)N * C * 4);
    block_backward_cpu(dx, dy, x, w, &s, pos, cu, nseq, inv_freq, N);
    block_dev d;
    dev_weights(&d, w, inv_freq, 0);
    float *gx = block_backward_gpu(dy, x, &d, &s, pos, cu, nseq, N);
    char what[96];
    snprintf(what, sizeof what, "block input gradient f32 N=%d nseq=%d", N, nseq);
    check_arrays_near(what, dx, gx, (size_t)N * C, 1e-4, 1e-4);
    dev_weights_free(&d);
    float **p = &s.h1;
    for (int i = 0; i < 12; i++) free(p[i]);
    free(dy), free(dx), free(gx);
}

int main(void) {
    gpu = test_gpu_backend_or_fail();
    if (!gpu) return check_done();
    bool counts = test_gpu_counts_bytes(gpu);
    block_w w;
    weights_init(&w);
    float inv_freq[D / 2];
    rope_inv_freq(inv_freq, D, 1000000.0f, NULL);
    const int32_t cu[] = {0, 7, 19, 20, 33}; /* packed, ragged, a 1-token sequence */
    int nseq = 4, N = cu[nseq];
    int32_t pos[64];
    for (int s = 0; s < nseq; s++)
        for (int r = cu[s]; r < cu[s + 1]; r++) pos[r] = r - cu[s];
    float *x = randn((size_t)N * C, 1.0f), *ref = malloc((size_t)N * C * 4);
    block_cpu(ref, x, &w, pos, cu, nseq, inv_freq, N);

    size_t live0 = 0;
    if (counts) {
        dp_emu_reset_peak();
        live0 = dp_emu_device_bytes();
    }
    for (int bf16 = 0; bf16 < 2; bf16++) {
        block_dev d;
        dev_weights(&d, &w, inv_freq, bf16);
        void *kc, *vc;
        OK(gpu->dev_malloc(&kc, (size_t)N * KD * (bf16 ? 2 : 4)));
        OK(gpu->dev_malloc(&vc, (size_t)N * KD * (bf16 ? 2 : 4)));
        float *y = block_gpu(x, &d, pos, cu, nseq, N, bf16, kc, vc);
        char what[96];
        snprintf(what, sizeof what, "block forward %s N=%d nseq=%d", bf16 ? "bf16" : "f32", N,
                 nseq);
        /* bf16: every activation and weight rounded to 8 bits of mantissa along the way */
        check_arrays_near(what, ref, y, (size_t)N * C, bf16 ? 2.5e-2 : 2e-5, bf16 ? 1.6e-2 : 2e-5);
        free(y);

        /* decode: the last token of the last sequence through the whole block, alone, against
         * the cache of the rows before it (its own k, v row is cleared first: the decode step
         * has to write it) */
        int s0 = cu[nseq - 1], T = cu[nseq] - s0;
        size_t es = bf16 ? 2 : 4;
        void *kcs = (char *)kc + (size_t)s0 * KD * es, *vcs = (char *)vc + (size_t)s0 * KD * es;
        OK(gpu->dev_memset((char *)kcs + (size_t)(T - 1) * KD * es, 0, KD * es));
        OK(gpu->dev_memset((char *)vcs + (size_t)(T - 1) * KD * es, 0, KD * es));
        float *y1 = decode_gpu(x + (size_t)(N - 1) * C, &d, pos[N - 1], kcs, vcs, T, bf16);
        snprintf(what, sizeof what, "decode step with KV cache %s Tk=%d", bf16 ? "bf16" : "f32", T);
        check_arrays_near(what, ref + (size_t)(N - 1) * C, y1, C, bf16 ? 2.5e-2 : 2e-5,
                          bf16 ? 1.6e-2 : 2e-5);
        free(y1);
        OK(gpu->dev_free(kc));
        OK(gpu->dev_free(vc));
        dev_weights_free(&d);
    }
    test_block_backward(x, &w, pos, cu, nseq, inv_freq, N);
    if (counts) {
        fprintf(stderr,
                "  EMU peak device bytes of these runs: %zu (weights, activations, cache)\n",
                dp_emu_device_peak_bytes() - live0);
        CHECK_EQ_INT(live0, dp_emu_device_bytes()); /* everything freed */
    } else {
        fprintf(stderr, "  SKIPPED on %s: EMU's count of the bytes freed\n", gpu->backend);
    }
    free(x), free(ref);
    float **p = &w.ln1;
    for (int i = 0; i < 12; i++) free(p[i]);
    return check_done();
}
