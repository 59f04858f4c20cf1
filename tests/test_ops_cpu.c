/* CPU reference ops: backward passes against central finite differences in double. */
#include "check.h"
#include "kernels/ops.h"

#include <stdint.h>

static uint64_t rng_state = 42;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((rng_state >> 40) * (1.0 / (1 << 24))) * 2.0f - 1.0f;
}

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
    for (int i = 0; i < N * C; i++) inp[i] = frand(), g[i] = frand();
    for (int c = 0; c < C; c++) w[c] = 1.0f + 0.5f * frand();
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

int main(void) {
    test_rmsnorm(1, 8);
    test_rmsnorm(3, 37);
    test_rmsnorm(7, 64);
    return check_done();
}
