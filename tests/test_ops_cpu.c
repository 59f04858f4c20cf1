/* CPU reference ops: forwards against the formulas written out in double, backward passes
 * against central finite differences in double. Attention has its own suite. */
#include "check.h"
#include "kernels/ops.h"

#include <omp.h>
#include <stdint.h>

static check_rng rng = {42};

/* loss = sum(out * g) for a fixed random g, so dloss/dout = g. */
static double rms_loss(const float *inp, const float *w, const float *g, int N, int C) {
    float out[64 * 64];
    rmsnorm_forward(out, NULL, inp, w, N, C, 1e-5f);
    double s = 0;
    for (int i = 0; i < N * C; i++) s += (double)out[i] * g[i];
    return s;
}

static void test_rmsnorm(int N, int C) {
    float inp[64 * 64], w[64], g[64 * 64], rstd[64], out[64 * 64];
    float dinp[64 * 64] = {0}, dw[64] = {0}, num_dinp[64 * 64], num_dw[64];
    for (int i = 0; i < N * C; i++) {
        inp[i] = check_rng_float(&rng);
        g[i] = check_rng_float(&rng);
    }
    for (int c = 0; c < C; c++) w[c] = 1.0f + 0.5f * check_rng_float(&rng);
    rmsnorm_forward(out, rstd, inp, w, N, C, 1e-5f);
    /* forward against the formula written out in double */
    for (int n = 0; n < N; n++) {
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)inp[n * C + c] * inp[n * C + c];
        double r = 1.0 / sqrt(ss / C + 1e-5);
        for (int c = 0; c < C; c++)
            CHECK_NEAR(w[c] * inp[n * C + c] * r, out[n * C + c], 1e-6, 1e-5);
    }
    rmsnorm_backward(dinp, dw, g, inp, w, rstd, N, C);
    const float h = 1e-2f;
    for (int i = 0; i < N * C; i++) {
        float x = inp[i];
        inp[i] = x + h;
        double lp = rms_loss(inp, w, g, N, C);
        inp[i] = x - h;
        double lm = rms_loss(inp, w, g, N, C);
        inp[i] = x;
        num_dinp[i] = (float)((lp - lm) / (2 * h));
    }
    for (int c = 0; c < C; c++) {
        float x = w[c];
        w[c] = x + h;
        double lp = rms_loss(inp, w, g, N, C);
        w[c] = x - h;
        double lm = rms_loss(inp, w, g, N, C);
        w[c] = x;
        num_dw[c] = (float)((lp - lm) / (2 * h));
    }
    char what[64];
    snprintf(what, sizeof what, "rmsnorm dinp N=%d C=%d", N, C);
    check_arrays_near(what, num_dinp, dinp, (size_t)N * C, 2e-3, 2e-2);
    snprintf(what, sizeof what, "rmsnorm dweight N=%d C=%d", N, C);
    check_arrays_near(what, num_dw, dw, (size_t)C, 2e-3, 2e-2);
}

/* Central differences of a scalar function of one float array, in double. */
typedef double (*loss_fn)(const float *x, void *ctx);
static void numeric_grad(float *grad, float *x, size_t n, loss_fn f, void *ctx, float h) {
    for (size_t i = 0; i < n; i++) {
        float x0 = x[i];
        x[i] = x0 + h;
        double lp = f(x, ctx);
        x[i] = x0 - h;
        double lm = f(x, ctx);
        x[i] = x0;
        grad[i] = (float)((lp - lm) / ((double)(x0 + h) - (double)(x0 - h)));
    }
}

static void test_embedding(void) {
    enum { V = 11, C = 13, N = 6 };
    float table[V * C], out[N * C];
    int32_t tok[N] = {3, 0, 10, 3, 7, 1};
    for (int i = 0; i < V * C; i++) table[i] = check_rng_float(&rng);
    embedding_forward(out, tok, table, N, C);
    int bad = 0;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) bad += out[n * C + c] != table[tok[n] * C + c];
    CHECK_EQ_INT(0, bad);
}

/* ---- SwiGLU: loss = sum(g * silu(gate) * up) in double */
typedef struct {
    const float *other, *g;
    size_t n;
    int wrt_gate;
} swiglu_ctx;
static double swiglu_loss(const float *x, void *p) {
    swiglu_ctx *c = p;
    double s = 0;
    for (size_t i = 0; i < c->n; i++) {
        double gate = c->wrt_gate ? x[i] : c->other[i], up = c->wrt_gate ? c->other[i] : x[i];
        s += c->g[i] * gate / (1 + exp(-gate)) * up;
    }
    return s;
}
static void test_swiglu(void) {
    enum { n = 301 };
    float gate[n], up[n], g[n], out[n], dgate[n], dup[n], ng[n], nu[n], ref[n];
    for (int i = 0; i < n; i++) {
        gate[i] = 6 * check_rng_float(&rng);
        up[i] = 2 * check_rng_float(&rng);
        g[i] = check_rng_float(&rng);
    }
    swiglu_forward(out, gate, up, n);
    for (int i = 0; i < n; i++) ref[i] = (float)(gate[i] / (1 + exp(-(double)gate[i])) * up[i]);
    check_arrays_near("swiglu forward", ref, out, n, 1e-6, 1e-6);
    for (int i = 0; i < n; i++) dgate[i] = dup[i] = 0.5f; /* backward accumulates */
    swiglu_backward(dgate, dup, g, gate, up, n);
    for (int i = 0; i < n; i++) dgate[i] -= 0.5f, dup[i] -= 0.5f;
    swiglu_ctx c = {up, g, n, 1};
    numeric_grad(ng, gate, n, swiglu_loss, &c, 1e-3f);
    swiglu_ctx cu = {gate, g, n, 0};
    numeric_grad(nu, up, n, swiglu_loss, &cu, 1e-3f);
    check_arrays_near("swiglu dgate", ng, dgate, n, 1e-4, 1e-3);
    check_arrays_near("swiglu dup", nu, dup, n, 1e-4, 1e-3);
}

/* ---- RoPE */
static void test_rope(void) {
    enum { N = 5, nh = 3, D = 10 };
    float inv[D / 2], x[N * nh * D], x0[N * nh * D], ref[N * nh * D], g[N * nh * D];
    int32_t pos[N] = {0, 1, 7, 100, 4095};
    rope_inv_freq(inv, D, 10000.0f, NULL);
    float rinv[D / 2];
    for (int i = 0; i < D / 2; i++) rinv[i] = (float)exp(-log(10000.0) * (2.0 * i) / D);
    check_arrays_near("rope inv_freq theta=1e4", rinv, inv, D / 2, 0, 1e-6);
    for (int i = 0; i < N * nh * D; i++) {
        x[i] = x0[i] = check_rng_float(&rng);
        g[i] = check_rng_float(&rng);
    }
    rope_forward(x, pos, inv, N, nh, D);
    /* the pair (x_i, x_{i+D/2}) as a complex number times e^{i * pos * inv_freq} */
    for (int n = 0; n < N; n++)
        for (int h = 0; h < nh; h++)
            for (int i = 0; i < D / 2; i++) {
                const float *r = x0 + (n * nh + h) * D;
                double complex_re = r[i], complex_im = r[i + D / 2];
                double a = (double)((float)pos[n] * inv[i]);
                ref[(n * nh + h) * D + i] = (float)(complex_re * cos(a) - complex_im * sin(a));
                ref[(n * nh + h) * D + i + D / 2] =
                    (float)(complex_re * sin(a) + complex_im * cos(a));
            }
    check_arrays_near("rope forward", ref, x, N * nh * D, 1e-5, 1e-5);
    /* the backward is the transpose: <rope(x), g> == <x, rope^T(g)> for every x, g */
    float dx[N * nh * D];
    memcpy(dx, g, sizeof dx);
    rope_backward(dx, pos, inv, N, nh, D);
    double lhs = 0, rhs = 0;
    for (int i = 0; i < N * nh * D; i++) lhs += (double)x[i] * g[i], rhs += (double)x0[i] * dx[i];
    CHECK_NEAR(lhs, rhs, 1e-5, 1e-5);
    rope_backward(x, pos, inv, N, nh, D); /* inverse rotation restores the input */
    check_arrays_near("rope backward(forward(x)) == x", x0, x, N * nh * D, 1e-5, 1e-5);

    /* llama3 scaling, Llama 3.1 config: the three wavelength bands */
    dp_rope_scaling sc = {.llama3 = true,
                          .factor = 8.0f,
                          .low_freq_factor = 1.0f,
                          .high_freq_factor = 4.0f,
                          .original_max_position = 8192};
    float inv3[64], base[64];
    rope_inv_freq(inv3, 128, 500000.0f, &sc);
    rope_inv_freq(base, 128, 500000.0f, NULL);
    int high = 0, low = 0, mid = 0;
    for (int i = 0; i < 64; i++) {
        double wl = 2 * M_PI / base[i];
        if (wl < 8192 / 4.0) { /* short wavelengths: unchanged */
            high++;
            CHECK_NEAR(base[i], inv3[i], 0, 1e-6);
        } else if (wl > 8192 / 1.0) { /* long: slowed down by the factor */
            low++;
            CHECK_NEAR(base[i] / 8.0, inv3[i], 0, 1e-6);
        } else { /* between: linear in 1/wavelength from f/8 (at the long end) to f */
            mid++;
            double t = (8192 / wl - 1.0) / (4.0 - 1.0);
            CHECK_NEAR(base[i] / 8.0 + t * (base[i] - base[i] / 8.0), inv3[i], 0, 1e-5);
        }
    }
    CHECK(high > 0 && low > 0 && mid > 0);
}

/* ---- cross-entropy: loss = dloss * sum_n (logsumexp(x_n) - x_n[t_n]) in double */
typedef struct {
    const int32_t *t;
    int N, V;
    double dloss;
} ce_ctx;
static double ce_loss(const float *x, void *p) {
    ce_ctx *c = p;
    double s = 0;
    for (int n = 0; n < c->N; n++) {
        if (c->t[n] < 0) continue;
        double z = 0;
        for (int i = 0; i < c->V; i++) z += exp((double)x[n * c->V + i]);
        s += log(z) - x[n * c->V + c->t[n]];
    }
    return s * c->dloss;
}
static void test_cross_entropy(void) {
    enum { N = 6, V = 37 };
    float x[N * V], dx[N * V], ndx[N * V], losses[N], ref[N], alias[N * V], la[N];
    int32_t t[N] = {3, -100, 36, 0, -1, 17};
    for (int i = 0; i < N * V; i++) x[i] = 4 * check_rng_float(&rng);
    x[2 * V + 36] = 30.0f; /* a confident row: the max subtraction must keep it finite */
    cross_entropy_forward_backward(losses, dx, x, t, N, V, 0.25f);
    for (int n = 0; n < N; n++) {
        ce_ctx one = {t + n, 1, V, 1.0};
        ref[n] = (float)ce_loss(x + n * V, &one);
    }
    check_arrays_near("cross-entropy losses", ref, losses, N, 1e-6, 1e-6);
    ce_ctx c = {t, N, V, 0.25};
    numeric_grad(ndx, x, N * V, ce_loss, &c, 1e-2f);
    check_arrays_near("cross-entropy dlogits", ndx, dx, N * V, 1e-4, 1e-3);
    memcpy(alias, x, sizeof x); /* dlogits may alias logits */
    cross_entropy_forward_backward(la, alias, alias, t, N, V, 0.25f);
    CHECK(memcmp(alias, dx, sizeof dx) == 0 && memcmp(la, losses, sizeof la) == 0);
    int32_t bad[1] = {V}; /* an out-of-range target is loud, not a silent out-of-bounds read */
    cross_entropy_forward_backward(la, NULL, x, bad, 1, V, 1.0f);
    CHECK(isnan(la[0]));
}

/* ---- AdamW against the textbook update in double, 5 steps with weight decay and clipping */
static void test_adamw(void) {
    enum { n = 257 };
    float p[n], m[n] = {0}, v[n] = {0}, g[n];
    double P[n], M[n] = {0}, Vv[n] = {0};
    for (int i = 0; i < n; i++) P[i] = p[i] = check_rng_float(&rng);
    const double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1, scale = 0.5;
    for (int t = 1; t <= 5; t++) {
        for (int i = 0; i < n; i++) g[i] = check_rng_float(&rng) * (i % 7 == 0 ? 1e-6f : 1.0f);
        adamw_update(p, g, m, v, n, (float)lr, (float)b1, (float)b2, (float)eps, (float)wd,
                     (float)scale, t);
        for (int i = 0; i < n; i++) {
            double gi = g[i] * scale;
            P[i] -= lr * wd * P[i];
            M[i] = b1 * M[i] + (1 - b1) * gi;
            Vv[i] = b2 * Vv[i] + (1 - b2) * gi * gi;
            double mh = M[i] / (1 - pow(b1, t)), vh = Vv[i] / (1 - pow(b2, t));
            P[i] -= lr * mh / (sqrt(vh) + eps);
        }
    }
    float ref[n];
    for (int i = 0; i < n; i++) ref[i] = (float)P[i];
    check_arrays_near("adamw params after 5 steps", ref, p, n, 1e-6, 1e-5);
}

static void test_sum_squares(void) {
    enum { n = 100003 };
    float *x = malloc(n * sizeof(float));
    double ref = 0;
    for (int i = 0; i < n; i++) {
        x[i] = check_rng_float(&rng);
        ref += (double)x[i] * x[i];
    }
    double s2 = sum_squares(x, n);
    CHECK_NEAR(ref, s2, 0, 1e-12);
    omp_set_num_threads(1);
    double s1 = sum_squares(x, n);
    omp_set_num_threads(3);
    double s3 = sum_squares(x, n);
    CHECK(s1 == s2 && s2 == s3); /* bitwise, whatever the thread count */
    CHECK_NEAR(2.0, sum_squares((const float[]){1.0f, -1.0f}, 2), 0, 0);
    free(x);
}

int main(void) {
    test_rmsnorm(1, 8);
    test_rmsnorm(3, 37);
    test_rmsnorm(7, 64);
    test_embedding();
    test_swiglu();
    test_rope();
    test_cross_entropy();
    test_adamw();
    test_sum_squares();
    return check_done();
}
