/* Every CUDA kernel, run under EMU (or on the device: DOPPEL_TEST_BACKEND=cuda), against its CPU
 * twin (kernels/ops.h) at several shapes, ragged ones included (not multiples of the block or tile
 * sizes). bf16 variants get inputs rounded to bf16, the CPU twin runs on the same rounded values,
 * and the tolerance allows the bf16 rounding of the outputs; every comparison prints its max
 * difference and tolerance. */
#include "check.h"
#include "fixture_emu.h"
#include "infer/dtype.h"
#include "data/base/error.h"
#include "kernels/cuda/kernels.h"
#include "kernels/emu/emu_api.h"
#include "kernels/ops.h"
#include "kernels/philox.h"

#include <stdint.h>

static const dp_gpu_ops *gpu; /* dp_emu_ops, or dp_cuda_ops under DOPPEL_TEST_BACKEND=cuda */

#define OK(call)                                                                                   \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        CHECK_REPORT(rc_ == 0, "%s failed: %s", #call, dp_last_error());                           \
    } while (0)

static check_rng rng = {2024};
static float *randn(size_t n, float scale) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = scale * check_rng_float(&rng);
    return x;
}

static void round_bf16(float *x, size_t n) { /* x := bf16(x), kept as floats */
    for (size_t i = 0; i < n; i++) x[i] = dp_bf16_to_f32(dp_f32_to_bf16(x[i]));
}

/* ---- device buffers */
static void *dev_copy(const void *h, size_t bytes) {
    void *d = NULL;
    OK(gpu->dev_malloc(&d, bytes ? bytes : 1));
    if (d && bytes) OK(gpu->upload(d, h, bytes));
    return d;
}
static float *dev_f32(const float *h, size_t n) {
    return dev_copy(h, n * sizeof(float));
}
static dp_bf16 *dev_bf16(const float *h, size_t n) {
    dp_bf16 *tmp = malloc((n ? n : 1) * sizeof(dp_bf16));
    for (size_t i = 0; i < n; i++) tmp[i] = dp_f32_to_bf16(h[i]);
    dp_bf16 *d = dev_copy(tmp, n * sizeof(dp_bf16));
    free(tmp);
    return d;
}
static float *get_f32(const float *d, size_t n) {
    float *h = malloc((n ? n : 1) * sizeof(float));
    OK(gpu->download(h, d, n * sizeof(float)));
    return h;
}
static float *get_bf16(const dp_bf16 *d, size_t n) {
    dp_bf16 *tmp = malloc((n ? n : 1) * sizeof(dp_bf16));
    float *h = malloc((n ? n : 1) * sizeof(float));
    OK(gpu->download(tmp, d, n * sizeof(dp_bf16)));
    for (size_t i = 0; i < n; i++) h[i] = dp_bf16_to_f32(tmp[i]);
    free(tmp);
    return h;
}
static void dfree(void *d) {
    OK(gpu->dev_free(d));
}

/* tolerances: fp32 kernels vs CPU, and bf16 outputs (8 bits of mantissa: 2^-8 relative) */
#define F32_ABS  1e-5
#define F32_REL  1e-4
#define BF16_ABS 1e-2
#define BF16_REL 1.6e-2

/* ---------------------------------------------------------------- RMSNorm */
static void test_rmsnorm(int N, int C) {
    size_t n = (size_t)N * C;
    float *x = randn(n, 2.0f), *w = randn(C, 1.0f), *g = randn(n, 1.0f), *acc0 = randn(n, 1.0f);
    for (int c = 0; c < C; c++) w[c] += 1.0f;
    float *out = malloc(n * 4), *rstd = malloc(N * 4), *dx = malloc(n * 4), *dw = calloc(C, 4);
    memcpy(dx, acc0, n * 4);
    rmsnorm_forward(out, rstd, x, w, N, C, 1e-6f);
    rmsnorm_backward(dx, dw, g, x, w, rstd, N, C);

    float *dx_ = dev_f32(x, n), *dw_ = dev_f32(w, C), *dg = dev_f32(g, n), *dacc = dev_f32(acc0, n);
    float *dout = dev_f32(out, n), *drstd = dev_f32(rstd, N), *ddw = NULL;
    OK(gpu->dev_malloc((void **)&ddw, C * 4));
    OK(gpu->dev_memset(ddw, 0, C * 4));
    OK(gpu->rmsnorm_forward(dout, drstd, dx_, dw_, N, C, 1e-6f));
    OK(gpu->rmsnorm_backward(dacc, ddw, dg, dx_, dw_, drstd, N, C));
    float *o = get_f32(dout, n), *r = get_f32(drstd, N), *gx = get_f32(dacc, n),
          *gw = get_f32(ddw, C);
    char what[96];
    snprintf(what, sizeof what, "rmsnorm fwd f32 N=%d C=%d", N, C);
    check_arrays_near(what, out, o, n, F32_ABS, F32_REL);
    check_arrays_near("  rstd", rstd, r, N, F32_ABS, F32_REL);
    snprintf(what, sizeof what, "rmsnorm bwd dinp f32 N=%d C=%d", N, C);
    check_arrays_near(what, dx, gx, n, 1e-4, 1e-4);
    check_arrays_near("  dweight", dw, gw, C, 1e-4, 1e-4);
    free(o), free(r), free(gx), free(gw);

    /* bf16: the CPU twin on the same bf16-rounded inputs */
    round_bf16(x, n), round_bf16(g, n), round_bf16(acc0, n);
    memcpy(dx, acc0, n * 4);
    memset(dw, 0, C * 4);
    rmsnorm_forward(out, rstd, x, w, N, C, 1e-6f);
    rmsnorm_backward(dx, dw, g, x, w, rstd, N, C);
    dp_bf16 *bx = dev_bf16(x, n), *bg = dev_bf16(g, n), *bacc = dev_bf16(acc0, n),
            *bout = dev_bf16(out, n);
    OK(gpu->dev_memset(ddw, 0, C * 4));
    OK(gpu->rmsnorm_forward_bf16(bout, drstd, bx, dw_, N, C, 1e-6f));
    OK(gpu->rmsnorm_backward_bf16(bacc, ddw, bg, bx, dw_, drstd, N, C));
    o = get_bf16(bout, n), gx = get_bf16(bacc, n), gw = get_f32(ddw, C);
    snprintf(what, sizeof what, "rmsnorm fwd bf16 N=%d C=%d", N, C);
    check_arrays_near(what, out, o, n, BF16_ABS, BF16_REL);
    check_arrays_near("  dinp bf16", dx, gx, n, BF16_ABS, BF16_REL);
    check_arrays_near("  dweight (fp32 from bf16 inputs)", dw, gw, C, 1e-3, 1e-3);
    free(o), free(gx), free(gw);
    dfree(dx_), dfree(dw_), dfree(dg), dfree(dacc), dfree(dout), dfree(drstd), dfree(ddw);
    dfree(bx), dfree(bg), dfree(bacc), dfree(bout);
    free(x), free(w), free(g), free(acc0), free(out), free(rstd), free(dx), free(dw);
}

/* ---------------------------------------------------------------- RoPE */
static void test_rope(int N, int nh, int D) {
    size_t n = (size_t)N * nh * D;
    float *x = randn(n, 1.0f), *inv = malloc(D / 2 * 4), *ref = malloc(n * 4);
    int32_t *pos = malloc(N * 4);
    for (int i = 0; i < N; i++) pos[i] = (i * 977) % 4096;
    rope_inv_freq(inv, D, 10000.0f, NULL);
    float *dinv = dev_f32(inv, D / 2);
    int32_t *dpos = dev_copy(pos, N * 4);
    char what[96];
    for (int dir = 0; dir < 2; dir++) {
        memcpy(ref, x, n * 4);
        if (dir == 0)
            rope_forward(ref, pos, inv, N, nh, D);
        else
            rope_backward(ref, pos, inv, N, nh, D);
        float *dx = dev_f32(x, n);
        OK((dir ? gpu->rope_backward : gpu->rope_forward)(dx, dpos, dinv, N, nh, D));
        float *o = get_f32(dx, n);
        snprintf(what, sizeof what, "rope %s f32 N=%d nh=%d D=%d", dir ? "bwd" : "fwd", N, nh, D);
        check_arrays_near(what, ref, o, n, 1e-5, 1e-5);
        free(o), dfree(dx);
        float *xb = malloc(n * 4);
        memcpy(xb, x, n * 4);
        round_bf16(xb, n);
        memcpy(ref, xb, n * 4);
        if (dir == 0)
            rope_forward(ref, pos, inv, N, nh, D);
        else
            rope_backward(ref, pos, inv, N, nh, D);
        dp_bf16 *bx = dev_bf16(xb, n);
        OK((dir ? gpu->rope_backward_bf16 : gpu->rope_forward_bf16)(bx, dpos, dinv, N, nh, D));
        o = get_bf16(bx, n);
        snprintf(what, sizeof what, "rope %s bf16 N=%d nh=%d D=%d", dir ? "bwd" : "fwd", N, nh, D);
        check_arrays_near(what, ref, o, n, BF16_ABS, BF16_REL);
        free(o), free(xb), dfree(bx);
    }
    dfree(dinv), dfree(dpos);
    free(x), free(inv), free(ref), free(pos);
}

/* ---------------------------------------------------------------- attention */
static void test_attention(const int32_t *cu, int nseq, int H, int KVH, int D, int bf16) {
    int N = cu[nseq];
    size_t nq = (size_t)N * H * D, nk = (size_t)N * KVH * D;
    float *q = randn(nq, 1.5f), *k = randn(nk, 1.5f), *v = randn(nk, 1.0f), *g = randn(nq, 1.0f);
    float *acc_q = randn(nq, 0.5f), *acc_k = randn(nk, 0.5f), *acc_v = randn(nk, 0.5f);
    if (bf16) {
        round_bf16(q, nq), round_bf16(k, nk), round_bf16(v, nk), round_bf16(g, nq);
        round_bf16(acc_q, nq), round_bf16(acc_k, nk), round_bf16(acc_v, nk);
    }
    float *out = malloc(nq * 4), *lse = malloc((size_t)N * H * 4);
    float *dq = malloc(nq * 4), *dk = malloc(nk * 4), *dv = malloc(nk * 4);
    memcpy(dq, acc_q, nq * 4), memcpy(dk, acc_k, nk * 4), memcpy(dv, acc_v, nk * 4);
    attention_forward(out, lse, q, k, v, cu, nseq, H, KVH, D);
    if (bf16) round_bf16(out, nq); /* the backward sees the bf16 output the GPU saved */
    attention_backward(dq, dk, dv, g, out, lse, q, k, v, cu, nseq, H, KVH, D);

    int32_t *dcu = dev_copy(cu, (nseq + 1) * 4);
    float *dlse = NULL;
    OK(gpu->dev_malloc((void **)&dlse, (size_t)N * H * 4));
    float *o, *l, *gq, *gk, *gv;
    if (!bf16) {
        float *dq_ = dev_f32(q, nq), *dk_ = dev_f32(k, nk), *dv_ = dev_f32(v, nk),
              *dg = dev_f32(g, nq);
        float *dout = dev_f32(g, nq), *daq = dev_f32(acc_q, nq), *dak = dev_f32(acc_k, nk),
              *dav = dev_f32(acc_v, nk);
        OK(gpu->attention_forward(dout, dlse, dq_, dk_, dv_, dcu, nseq, N, H, KVH, D));
        OK(gpu->attention_backward(daq, dak, dav, dg, dout, dlse, dq_, dk_, dv_, dcu, nseq, N, H,
                                   KVH, D));
        o = get_f32(dout, nq), gq = get_f32(daq, nq), gk = get_f32(dak, nk), gv = get_f32(dav, nk);
        dfree(dq_), dfree(dk_), dfree(dv_), dfree(dg), dfree(dout), dfree(daq), dfree(dak),
            dfree(dav);
    } else {
        dp_bf16 *dq_ = dev_bf16(q, nq), *dk_ = dev_bf16(k, nk), *dv_ = dev_bf16(v, nk),
                *dg = dev_bf16(g, nq);
        dp_bf16 *dout = dev_bf16(g, nq), *daq = dev_bf16(acc_q, nq), *dak = dev_bf16(acc_k, nk),
                *dav = dev_bf16(acc_v, nk);
        OK(gpu->attention_forward_bf16(dout, dlse, dq_, dk_, dv_, dcu, nseq, N, H, KVH, D));
        OK(gpu->attention_backward_bf16(daq, dak, dav, dg, dout, dlse, dq_, dk_, dv_, dcu, nseq, N,
                                        H, KVH, D));
        o = get_bf16(dout, nq), gq = get_bf16(daq, nq), gk = get_bf16(dak, nk),
        gv = get_bf16(dav, nk);
        dfree(dq_), dfree(dk_), dfree(dv_), dfree(dg), dfree(dout), dfree(daq), dfree(dak),
            dfree(dav);
    }
    l = get_f32(dlse, (size_t)N * H);
    double ta = bf16 ? BF16_ABS : F32_ABS, tr = bf16 ? BF16_REL : F32_REL;
    char what[128];
    const char *ty = bf16 ? "bf16" : "f32";
    snprintf(what, sizeof what, "attention fwd %s N=%d nseq=%d H=%d KVH=%d D=%d", ty, N, nseq, H,
             KVH, D);
    check_arrays_near(what, out, o, nq, ta, tr);
    check_arrays_near("  lse", lse, l, (size_t)N * H, 1e-5, 1e-5);
    /* gradients are sums over many rows: bf16 storage of their inputs adds more rounding */
    check_arrays_near("  dq (+=)", dq, gq, nq, bf16 ? 3e-2 : 1e-4, bf16 ? 2e-2 : 1e-4);
    check_arrays_near("  dk (+=)", dk, gk, nk, bf16 ? 3e-2 : 1e-4, bf16 ? 2e-2 : 1e-4);
    check_arrays_near("  dv (+=)", dv, gv, nk, bf16 ? 3e-2 : 1e-4, bf16 ? 2e-2 : 1e-4);
    free(o), free(l), free(gq), free(gk), free(gv);
    dfree(dcu), dfree(dlse);
    free(q), free(k), free(v), free(g), free(acc_q), free(acc_k), free(acc_v);
    free(out), free(lse), free(dq), free(dk), free(dv);
}

static void test_attention_cached(int Tq, int Tk, int H, int KVH, int D) {
    size_t nq = (size_t)Tq * H * D, nk = (size_t)Tk * KVH * D;
    float *q = randn(nq, 1.5f), *k = randn(nk, 1.5f), *v = randn(nk, 1.0f), *out = malloc(nq * 4);
    attention_cached(out, q, k, v, Tq, Tk, H, KVH, D);
    float *dq_ = dev_f32(q, nq), *dk_ = dev_f32(k, nk), *dv_ = dev_f32(v, nk),
          *dout = dev_f32(q, nq);
    OK(gpu->attention_cached(dout, dq_, dk_, dv_, Tq, Tk, H, KVH, D));
    float *o = get_f32(dout, nq);
    char what[96];
    snprintf(what, sizeof what, "attention cached f32 Tq=%d Tk=%d H=%d KVH=%d D=%d", Tq, Tk, H, KVH,
             D);
    check_arrays_near(what, out, o, nq, F32_ABS, F32_REL);
    free(o);
    round_bf16(q, nq), round_bf16(k, nk), round_bf16(v, nk);
    attention_cached(out, q, k, v, Tq, Tk, H, KVH, D);
    dp_bf16 *bq = dev_bf16(q, nq), *bk = dev_bf16(k, nk), *bv = dev_bf16(v, nk),
            *bout = dev_bf16(q, nq);
    OK(gpu->attention_cached_bf16(bout, bq, bk, bv, Tq, Tk, H, KVH, D));
    o = get_bf16(bout, nq);
    snprintf(what, sizeof what, "attention cached bf16 Tq=%d Tk=%d", Tq, Tk);
    check_arrays_near(what, out, o, nq, BF16_ABS, BF16_REL);
    free(o);
    dfree(dq_), dfree(dk_), dfree(dv_), dfree(dout), dfree(bq), dfree(bk), dfree(bv), dfree(bout);
    free(q), free(k), free(v), free(out);
}

static void test_attention_errors(void) {
    float *x = NULL;
    int32_t cu[2] = {0, 4};
    CHECK(gpu->attention_forward(x, x, x, x, x, cu, 1, 4, 4, 3, 8) != 0); /* H % KVH */
    CHECK(strstr(dp_last_error(), "multiple of KVH") != NULL);
    CHECK(gpu->attention_forward(x, x, x, x, x, cu, 1, 4, 4, 4, 160) != 0); /* D too large */
    CHECK(strstr(dp_last_error(), "D=160") != NULL);
    CHECK(gpu->attention_cached(x, x, x, x, 5, 4, 2, 2, 8) != 0);
}

/* ---------------------------------------------------------------- SwiGLU and dropout */
static void test_swiglu(size_t n) {
    float *gate = randn(n, 4.0f), *up = randn(n, 1.0f), *g = randn(n, 1.0f);
    float *a0 = randn(n, 0.5f), *b0 = randn(n, 0.5f), *out = malloc(n * 4);
    float *dg = malloc(n * 4), *du = malloc(n * 4);
    for (int bf = 0; bf < 2; bf++) {
        if (bf)
            round_bf16(gate, n), round_bf16(up, n), round_bf16(g, n), round_bf16(a0, n),
                round_bf16(b0, n);
        memcpy(dg, a0, n * 4), memcpy(du, b0, n * 4);
        swiglu_forward(out, gate, up, n);
        swiglu_backward(dg, du, g, gate, up, n);
        float *o, *gg, *gu;
        if (!bf) {
            float *d1 = dev_f32(gate, n), *d2 = dev_f32(up, n), *d3 = dev_f32(g, n),
                  *d4 = dev_f32(a0, n), *d5 = dev_f32(b0, n), *d6 = dev_f32(g, n);
            OK(gpu->swiglu_forward(d6, d1, d2, n));
            OK(gpu->swiglu_backward(d4, d5, d3, d1, d2, n));
            o = get_f32(d6, n), gg = get_f32(d4, n), gu = get_f32(d5, n);
            dfree(d1), dfree(d2), dfree(d3), dfree(d4), dfree(d5), dfree(d6);
        } else {
            dp_bf16 *d1 = dev_bf16(gate, n), *d2 = dev_bf16(up, n), *d3 = dev_bf16(g, n),
                    *d4 = dev_bf16(a0, n), *d5 = dev_bf16(b0, n), *d6 = dev_bf16(g, n);
            OK(gpu->swiglu_forward_bf16(d6, d1, d2, n));
            OK(gpu->swiglu_backward_bf16(d4, d5, d3, d1, d2, n));
            o = get_bf16(d6, n), gg = get_bf16(d4, n), gu = get_bf16(d5, n);
            dfree(d1), dfree(d2), dfree(d3), dfree(d4), dfree(d5), dfree(d6);
        }
        char what[64];
        snprintf(what, sizeof what, "swiglu fwd %s n=%zu", bf ? "bf16" : "f32", n);
        check_arrays_near(what, out, o, n, bf ? BF16_ABS : 1e-6, bf ? BF16_REL : 1e-5);
        check_arrays_near("  dgate (+=)", dg, gg, n, bf ? BF16_ABS : 1e-6, bf ? BF16_REL : 1e-5);
        check_arrays_near("  dup (+=)", du, gu, n, bf ? BF16_ABS : 1e-6, bf ? BF16_REL : 1e-5);
        free(o), free(gg), free(gu);
    }
    free(gate), free(up), free(g), free(a0), free(b0), free(out), free(dg), free(du);
}

static void test_dropout(size_t n, float p) {
    float *x = randn(n, 1.0f), *ref = malloc(n * 4);
    dropout_forward(ref, x, n, p, 1234, 7);
    float *d = dev_f32(x, n);
    OK(gpu->dropout_forward(d, d, n, p, 1234, 7)); /* in place */
    float *o = get_f32(d, n);
    size_t kept = 0, same = 0;
    for (size_t i = 0; i < n; i++) kept += ref[i] != 0.0f, same += ref[i] == o[i];
    fprintf(stderr, "  dropout p=%.2f n=%zu: kept %.4f, %zu of %zu equal to the CPU mask\n", p, n,
            (double)kept / n, same, n);
    CHECK_EQ_INT(n, same); /* the same Philox stream on both sides: identical masks */
    CHECK_NEAR(1.0 - p, (double)kept / n, 0.02, 0);
    CHECK(gpu->dropout_forward(d, d, n, 1.0f, 1, 1) != 0);
    free(x), free(ref), free(o), dfree(d);
}

/* ---------------------------------------------------------------- cross-entropy */
static void test_cross_entropy(int N, int V) {
    size_t n = (size_t)N * V;
    float *x = randn(n, 6.0f), *ref_l = malloc(N * 4), *ref_d = malloc(n * 4);
    int32_t *t = malloc(N * 4);
    for (int i = 0; i < N; i++) t[i] = i % 3 == 1 ? -100 : (i * 7919) % V;
    for (int bf = 0; bf < 2; bf++) {
        if (bf) round_bf16(x, n);
        cross_entropy_forward_backward(ref_l, ref_d, x, t, N, V, 0.25f);
        int32_t *dt = dev_copy(t, N * 4);
        float *dl = NULL, *o, *l;
        OK(gpu->dev_malloc((void **)&dl, N * 4));
        if (!bf) {
            float *dx = dev_f32(x, n);
            OK(gpu->cross_entropy_forward_backward(dl, dx, dx, dt, N, V, 0.25f)); /* in place */
            o = get_f32(dx, n);
            dfree(dx);
        } else {
            dp_bf16 *dx = dev_bf16(x, n);
            OK(gpu->cross_entropy_forward_backward_bf16(dl, dx, dx, dt, N, V, 0.25f));
            o = get_bf16(dx, n);
            dfree(dx);
        }
        l = get_f32(dl, N);
        char what[64];
        snprintf(what, sizeof what, "cross-entropy %s N=%d V=%d losses", bf ? "bf16" : "f32", N, V);
        check_arrays_near(what, ref_l, l, N, 1e-5, 1e-5);
        check_arrays_near("  dlogits (in place)", ref_d, o, n, bf ? 1e-4 : 1e-7,
                          bf ? BF16_REL : 1e-4);
        free(o), free(l), dfree(dl), dfree(dt);
    }
    free(x), free(ref_l), free(ref_d), free(t);
}

/* ---------------------------------------------------------------- AdamW, sum of squares */
static void test_adamw(size_t n) {
    float *p = randn(n, 1.0f), *m = calloc(n, 4), *v = calloc(n, 4);
    float *dp = dev_f32(p, n), *dm = dev_f32(m, n), *dv = dev_f32(v, n);
    for (int t = 1; t <= 3; t++) {
        float *g = randn(n, t == 2 ? 1e-3f : 1.0f);
        adamw_update(p, g, m, v, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 0.7f, t);
        float *dg = dev_f32(g, n);
        OK(gpu->adamw_update(dp, dg, dm, dv, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 0.7f, t));
        dfree(dg), free(g);
    }
    float *gp = get_f32(dp, n), *gm = get_f32(dm, n), *gv = get_f32(dv, n);
    char what[64];
    snprintf(what, sizeof what, "adamw 3 steps n=%zu params", n);
    check_arrays_near(what, p, gp, n, 1e-7, 1e-6);
    check_arrays_near("  m", m, gm, n, 1e-9, 1e-6);
    check_arrays_near("  v", v, gv, n, 1e-12, 1e-6);
    free(p), free(m), free(v), free(gp), free(gm), free(gv), dfree(dp), dfree(dm), dfree(dv);
}

static void test_sum_squares(size_t n) {
    float *x = randn(n, 1.0f);
    double ref = 2 * sum_squares(x, n), zero = 0, got = 0;
    float *dx = dev_f32(x, n);
    double *dacc = dev_copy(&zero, sizeof zero);
    OK(gpu->sum_squares(dacc, dx, n));
    OK(gpu->sum_squares(dacc, dx, n)); /* accumulates */
    OK(gpu->download(&got, dacc, sizeof got));
    fprintf(stderr, "  sum_squares n=%zu: cpu %.12g emu %.12g\n", n, ref, got);
    CHECK_NEAR(ref, got, 0, 1e-12);
    free(x), dfree(dx), dfree(dacc);
}

/* ---------------------------------------------------------------- embedding, elementwise */
static void test_embedding(int N, int C, int V) {
    float *table = randn((size_t)V * C, 1.0f), *ref = malloc((size_t)N * C * 4);
    int32_t *tok = malloc(N * 4);
    for (int i = 0; i < N; i++) tok[i] = (i * 31 + 3) % V;
    embedding_forward(ref, tok, table, N, C);
    float *dt = dev_f32(table, (size_t)V * C), *dout = NULL;
    int32_t *dtok = dev_copy(tok, N * 4);
    OK(gpu->dev_malloc((void **)&dout, (size_t)N * C * 4));
    OK(gpu->embedding_forward(dout, dtok, dt, N, C, V));
    float *o = get_f32(dout, (size_t)N * C);
    check_arrays_near("embedding fwd f32 (exact)", ref, o, (size_t)N * C, 0, 0);
    free(o);
    round_bf16(table, (size_t)V * C);
    embedding_forward(ref, tok, table, N, C);
    dp_bf16 *bt = dev_bf16(table, (size_t)V * C), *bout = dev_bf16(ref, (size_t)N * C);
    OK(gpu->embedding_forward_bf16(bout, dtok, bt, N, C, V));
    o = get_bf16(bout, (size_t)N * C);
    check_arrays_near("embedding fwd bf16 (exact)", ref, o, (size_t)N * C, 0, 0);
    free(o);
    /* backward: scatter-add of dout rows into the table gradient, repeated tokens summed */
    float *g = randn((size_t)N * C, 1.0f), *dref = calloc((size_t)V * C, 4);
    for (int i = 0; i < N; i++)
        for (int c = 0; c < C; c++) dref[(size_t)tok[i] * C + c] += g[(size_t)i * C + c];
    float *dg = dev_f32(g, (size_t)N * C), *ddt = NULL;
    OK(gpu->dev_malloc((void **)&ddt, (size_t)V * C * 4));
    OK(gpu->dev_memset(ddt, 0, (size_t)V * C * 4));
    OK(gpu->embedding_backward(ddt, dg, dtok, N, C, V));
    o = get_f32(ddt, (size_t)V * C);
    check_arrays_near("embedding bwd scatter-add", dref, o, (size_t)V * C, 1e-6, 1e-6);
    free(o);
    /* a token outside the table: a NaN row, no read out of bounds */
    int32_t bad = V;
    OK(gpu->upload(dtok, &bad, 4));
    OK(gpu->embedding_forward(dout, dtok, dt, 1, C, V));
    o = get_f32(dout, C);
    CHECK(isnan(o[0]) && isnan(o[C - 1]));
    free(o);
    free(table), free(ref), free(tok), free(g), free(dref);
    dfree(dt), dfree(dout), dfree(dtok), dfree(bt), dfree(bout), dfree(dg), dfree(ddt);
}

static void test_elementwise(size_t n) {
    float *a = randn(n, 3.0f), *b = randn(n, 3.0f), *ref = malloc(n * 4);
    float *da = dev_f32(a, n), *db = dev_f32(b, n), *dc = NULL;
    OK(gpu->dev_malloc((void **)&dc, n * 4));
    OK(gpu->residual_forward(dc, da, db, n));
    float *o = get_f32(dc, n);
    for (size_t i = 0; i < n; i++) ref[i] = a[i] + b[i];
    check_arrays_near("residual f32 (exact)", ref, o, n, 0, 0);
    free(o);
    /* casts: fp32 -> bf16 rounds to nearest even, bf16 -> fp32 is exact */
    dp_bf16 *bb = NULL;
    OK(gpu->dev_malloc((void **)&bb, n * 2));
    OK(gpu->cast_f32_to_bf16(bb, da, n));
    o = get_bf16(bb, n);
    for (size_t i = 0; i < n; i++) ref[i] = dp_bf16_to_f32(dp_f32_to_bf16(a[i]));
    check_arrays_near("cast f32->bf16 (exact rounding)", ref, o, n, 0, 0);
    free(o);
    OK(gpu->cast_bf16_to_f32(dc, bb, n));
    o = get_f32(dc, n);
    check_arrays_near("cast bf16->f32 (exact)", ref, o, n, 0, 0);
    free(o);
    dp_bf16 *ba = dev_bf16(a, n), *bc = dev_bf16(b, n);
    OK(gpu->residual_forward_bf16(bb, ba, bc, n));
    o = get_bf16(bb, n);
    for (size_t i = 0; i < n; i++)
        ref[i] = dp_bf16_to_f32(dp_f32_to_bf16(dp_bf16_to_f32(dp_f32_to_bf16(a[i])) +
                                               dp_bf16_to_f32(dp_f32_to_bf16(b[i]))));
    check_arrays_near("residual bf16", ref, o, n, 0, 0);
    free(o);
    /* bias over rows of width 37 */
    int OC = 37, N = (int)(n / OC);
    OK(gpu->upload(dc, a, (size_t)N * OC * 4));
    OK(gpu->bias_forward(dc, db, N, OC));
    o = get_f32(dc, (size_t)N * OC);
    for (int r = 0; r < N; r++)
        for (int c = 0; c < OC; c++) ref[(size_t)r * OC + c] = a[(size_t)r * OC + c] + b[c];
    check_arrays_near("bias f32 (exact)", ref, o, (size_t)N * OC, 0, 0);
    free(o);
    free(a), free(b), free(ref), dfree(da), dfree(db), dfree(dc), dfree(bb), dfree(ba), dfree(bc);
}

/* ---------------------------------------------------------------- GEMM wrapper */
static void test_gemm(int M, int N, int K, int batch) {
    dp_blas *h = NULL;
    OK(gpu->blas_create(&h));
    for (int ab = 0; ab < 2; ab++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
                size_t sa = (size_t)(ta ? K : M) * lda, sb = (size_t)(tb ? N : K) * ldb,
                       sc = (size_t)M * ldc;
                float *A = randn(sa * batch, 1.0f), *B = randn(sb * batch, 1.0f),
                      *C = randn(sc * batch, 1.0f);
                if (ab) round_bf16(A, sa * batch), round_bf16(B, sb * batch);
                float *ref = malloc(sc * batch * 4);
                for (int bi = 0; bi < batch; bi++)
                    for (int i = 0; i < M; i++)
                        for (int j = 0; j < ldc; j++) {
                            size_t ci = bi * sc + (size_t)i * ldc + j;
                            if (j >= N) { /* padding columns are left alone */
                                ref[ci] = C[ci];
                                continue;
                            }
                            double s = 0;
                            for (int kk = 0; kk < K; kk++) {
                                double a = ta ? A[bi * sa + (size_t)kk * lda + i]
                                              : A[bi * sa + (size_t)i * lda + kk];
                                double bv = tb ? B[bi * sb + (size_t)j * ldb + kk]
                                               : B[bi * sb + (size_t)kk * ldb + j];
                                s += a * bv;
                            }
                            ref[ci] = (float)(0.5 * s + 0.25 * C[ci]);
                        }
                void *dA = ab ? (void *)dev_bf16(A, sa * batch) : (void *)dev_f32(A, sa * batch);
                void *dB = ab ? (void *)dev_bf16(B, sb * batch) : (void *)dev_f32(B, sb * batch);
                float *dC = dev_f32(C, sc * batch);
                if (batch == 1)
                    OK(gpu->gemm(h, ta, tb, M, N, K, 0.5f, dA, lda, dB, ldb, 0.25f, dC, ldc,
                                 ab ? DP_BF16 : DP_F32, DP_F32));
                else
                    OK(gpu->gemm_batched(h, ta, tb, M, N, K, 0.5f, dA, lda, sa, dB, ldb, sb, 0.25f,
                                         dC, ldc, sc, batch, ab ? DP_BF16 : DP_F32, DP_F32));
                float *o = get_f32(dC, sc * batch);
                char what[96];
                snprintf(what, sizeof what, "gemm %s tA=%d tB=%d M=%d N=%d K=%d batch=%d",
                         ab ? "bf16" : "f32", ta, tb, M, N, K, batch);
                check_arrays_near(what, ref, o, sc * batch, 1e-5, 1e-5);
                free(A), free(B), free(C), free(ref), free(o), dfree(dA), dfree(dB), dfree(dC);
            }
    CHECK(gpu->gemm(h, false, false, 4, 4, 4, 1, NULL, 2, NULL, 4, 0, NULL, 4, DP_F32, DP_F32) !=
          0);
    CHECK(strstr(dp_last_error(), "lda=2") != NULL);
    OK(gpu->blas_destroy(h));
}

/* ---------------------------------------------------------------- NF4 */
static void test_nf4(int rows, int cols, int blocksize) {
    size_t n = (size_t)rows * cols;
    float *w = randn(n, 0.05f), *ref = malloc(n * 4), *x = randn(cols, 1.0f),
          *bias = randn(rows, 1.0f);
    w[n / 3] = 0.4f; /* an outlier block */
    dp_nf4 q;
    OK(dp_nf4_quantize(&q, w, rows, cols, blocksize));
    dp_nf4_dequantize(&q, ref);
    dp_nf4_dev d;
    OK(gpu->nf4_upload(&d, &q));
    float *out = NULL;
    OK(gpu->dev_malloc((void **)&out, n * 4));
    OK(gpu->nf4_dequantize(out, &d));
    float *o = get_f32(out, n);
    char what[96];
    snprintf(what, sizeof what, "nf4 dequantize f32 %dx%d bs=%d (exact)", rows, cols, blocksize);
    check_arrays_near(what, ref, o, n, 0, 0);
    free(o);
    dp_bf16 *ob = (dp_bf16 *)out;
    OK(gpu->nf4_dequantize_bf16(ob, &d));
    o = get_bf16(ob, n);
    round_bf16(ref, n);
    check_arrays_near("  dequantize bf16 (exact rounding)", ref, o, n, 0, 0);
    free(o);
    float *gref = malloc(rows * 4), *dx = dev_f32(x, cols), *db = dev_f32(bias, rows), *dy = NULL;
    gemv_nf4(gref, x, &q, bias, cols, rows);
    OK(gpu->dev_malloc((void **)&dy, rows * 4));
    OK(gpu->gemv_nf4(dy, dx, &d, db, cols, rows));
    o = get_f32(dy, rows);
    check_arrays_near("  fused gemv vs CPU gemv_nf4", gref, o, rows, 1e-5, 1e-4);
    free(o);
    CHECK(gpu->gemv_nf4(dy, dx, &d, db, cols + 1, rows) != 0); /* shape mismatch is refused */
    OK(gpu->nf4_free(&d));
    dp_nf4_free(&q);
    free(w), free(ref), free(x), free(bias), free(gref);
    dfree(out), dfree(dx), dfree(db), dfree(dy);
}

/* ---------------------------------------------------------------- memory accounting */
static void test_peak_bytes(void) {
    size_t before = dp_emu_device_bytes();
    dp_emu_reset_peak();
    void *a = NULL, *b = NULL;
    OK(gpu->dev_malloc(&a, 1 << 20));
    OK(gpu->dev_malloc(&b, 3 << 20));
    dfree(a);
    OK(gpu->dev_malloc(&a, 2 << 20));
    size_t peak = dp_emu_device_peak_bytes();
    fprintf(stderr, "  device bytes: peak %.2f MiB above %zu live before\n",
            (peak - before) / 1048576.0, before);
    CHECK_EQ_INT(before + (5 << 20), peak);
    dfree(a), dfree(b);
    dp_emu_set_device_limit(before + (1 << 20));
    CHECK(gpu->dev_malloc(&a, 2 << 20) != 0);
    CHECK(strstr(dp_last_error(), "out of memory") != NULL);
    dp_emu_set_device_limit(0);
    CHECK_EQ_INT(before, dp_emu_device_bytes());
}

int main(void) {
    gpu = test_gpu_backend_or_fail();
    if (!gpu) return check_done();
    const char *asked = getenv("DOPPEL_TEST_BACKEND");
    CHECK_EQ_STR(asked && *asked ? asked : "emu", gpu->backend);
    test_rmsnorm(1, 8);
    test_rmsnorm(3, 37);
    test_rmsnorm(5, 1000);
    test_rmsnorm(17, 896);
    test_rope(5, 3, 10);
    test_rope(17, 4, 64);
    const int32_t one[] = {0, 9}, packed[] = {0, 5, 12, 13, 20}, ragged[] = {0, 37, 40, 90};
    const int32_t long1[] = {0, 45};
    for (int bf = 0; bf < 2; bf++) {
        test_attention(one, 1, 2, 2, 8, bf);
        test_attention(packed, 4, 4, 2, 12, bf); /* D not a multiple of 8 */
        test_attention(ragged, 3, 6, 2, 64, bf); /* several key tiles, ragged ends */
        test_attention(long1, 1, 3, 1, 128, bf); /* D = 128: shared memory past 48 KiB */
    }
    test_attention(packed, 4, 3, 3, 33, 0); /* D past one lane's column */
    test_attention_cached(1, 40, 4, 2, 64);
    test_attention_cached(5, 37, 6, 3, 20);
    test_attention_cached(33, 33, 2, 1, 16);
    test_attention_errors();
    test_swiglu(1000);
    test_swiglu(77);
    test_dropout(100000, 0.1f);
    test_dropout(1001, 0.5f);
    test_cross_entropy(5, 1000);
    test_cross_entropy(3, 50021);
    test_adamw(1000);
    test_sum_squares(100003);
    test_embedding(13, 37, 11);
    test_elementwise(37 * 29);
    test_gemm(7, 5, 9, 1);
    test_gemm(4, 6, 3, 3);
    test_nf4(37, 100, 64);  /* ragged last block */
    test_nf4(3, 65, 64);    /* odd element count */
    test_nf4(300, 128, 64); /* more than 256 blocks: two absmax2 groups */
    test_nf4(8, 512, 128);
    if (test_gpu_counts_bytes(gpu)) {
        test_peak_bytes();
        size_t launches, blocks, switches;
        dp_emu_counters(&launches, &blocks, &switches);
        fprintf(stderr, "  EMU: %zu launches, %zu blocks, %zu fiber switches\n", launches, blocks,
                switches);
    } else {
        fprintf(stderr,
                "  SKIPPED on %s: EMU's device-byte accounting and limit (no such counter "
                "on a real device)\n",
                gpu->backend);
    }
    return check_done();
}
