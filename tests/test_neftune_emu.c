/* NEFTune (--neftune-alpha): the CUDA kernel under EMU against its CPU twin (fp32 bit for bit
 * up to rounding, bf16 within its rounding), the noise's scale alpha / sqrt(L * C) per sequence
 * checked from its own statistics (independent of either implementation), and the training
 * step: the CPU step's gradient with noise against central finite differences of its own loss
 * at the same seed, determinism, validation untouched, and the GPU step (EMU) against the CPU
 * step with the noise on. */
#include "check.h"
#include "fixture_emu.h"
#include "infer/dtype.h"
#include "kernels/cuda/kernels.h"
#include "kernels/emu/emu_api.h"
#include "kernels/ops.h"
#include "train/grad_gpu.h"
#include "train/lora.h"
#include "train/model_grad.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const dp_gpu_ops *gpu = &dp_emu_ops;

#define OK(call)                                                                                   \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        CHECK_REPORT(rc_ == 0, "%s failed: %s", #call, dp_last_error());                           \
    } while (0)

static check_rng rng = {77};

static void *dev_copy(const void *h, size_t bytes) {
    void *d = NULL;
    OK(gpu->dev_malloc(&d, bytes));
    if (d) OK(gpu->upload(d, h, bytes));
    return d;
}

/* ---------------------------------------------------------------- the kernel */
static void test_kernel(int C, float alpha) {
    enum { NSEQ = 3 };
    const int32_t cu[NSEQ + 1] = {0, 5, 6, 29}; /* lengths 5, 1, 23: a ragged tail of groups */
    const int N = cu[NSEQ];
    const uint64_t seed = 0x1234567ULL;
    size_t n = (size_t)N * C;
    float *x = malloc(n * 4), *ref = malloc(n * 4), *got = malloc(n * 4);
    for (size_t i = 0; i < n; i++) x[i] = check_rng_float(&rng);
    memcpy(ref, x, n * 4);
    neftune_forward(ref, cu, NSEQ, 0, N, C, alpha, seed);

    /* the noise's own statistics per sequence: |noise| <= scale, mean square scale^2 / 3 */
    for (int s = 0; s < NSEQ; s++) {
        int L = cu[s + 1] - cu[s];
        double scale = alpha / sqrt((double)L * C), ms = 0, mx = 0;
        size_t cnt = (size_t)L * C;
        for (size_t i = (size_t)cu[s] * C; i < (size_t)cu[s + 1] * C; i++) {
            double d = (double)ref[i] - x[i];
            ms += d * d / (double)cnt;
            mx = fmax(mx, fabs(d));
        }
        fprintf(stderr,
                "  C=%d seq %d (L=%d): max|noise| %.4g (scale %.4g), rms/scale %.3f "
                "(uniform: %.3f)\n",
                C, s, L, mx, scale, sqrt(ms) / scale, sqrt(1.0 / 3));
        CHECK(mx <= scale * (1 + 1e-5) + 1e-6);
        CHECK(mx > 0.5 * scale);
        /* 1/sqrt(3) within 4 standard errors of a mean of cnt squares of uniforms */
        double se = sqrt(4.0 / 45.0 / (double)cnt) * 3; /* sd of u^2 is 2/sqrt(45); relative */
        CHECK_NEAR(1.0 / 3, ms / (scale * scale), 4 * se, 0);
    }
    /* a thread's share: rows [n0, n1) only, the same values as the whole */
    memcpy(got, x, n * 4);
    neftune_forward(got, cu, NSEQ, 4, 17, C, alpha, seed);
    size_t same = 0;
    for (size_t i = 0; i < n; i++) {
        size_t r = i / C;
        same += got[i] == (r >= 4 && r < 17 ? ref[i] : x[i]);
    }
    CHECK_EQ_INT((long long)n, (long long)same);
    /* another seed, other noise */
    memcpy(got, x, n * 4);
    neftune_forward(got, cu, NSEQ, 0, N, C, alpha, seed + 1);
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) differ += got[i] != ref[i];
    CHECK(differ > n * 9 / 10);

    /* EMU: fp32, in place */
    int32_t *dcu = dev_copy(cu, sizeof cu);
    float *dx = dev_copy(x, n * 4);
    OK(gpu->neftune_forward(dx, dcu, NSEQ, N, C, alpha, seed));
    OK(gpu->download(got, dx, n * 4));
    char what[64];
    snprintf(what, sizeof what, "neftune f32 C=%d alpha=%g", C, alpha);
    check_arrays_near(what, ref, got, n, 1e-7, 1e-6);
    /* bf16: the input rounded, the CPU twin on the rounded values, the output rounded */
    dp_bf16 *hb = malloc(n * 2);
    for (size_t i = 0; i < n; i++) {
        hb[i] = dp_f32_to_bf16(x[i]);
        ref[i] = dp_bf16_to_f32(hb[i]);
    }
    neftune_forward(ref, cu, NSEQ, 0, N, C, alpha, seed);
    dp_bf16 *db = dev_copy(hb, n * 2);
    OK(gpu->neftune_forward_bf16(db, dcu, NSEQ, N, C, alpha, seed));
    OK(gpu->download(hb, db, n * 2));
    for (size_t i = 0; i < n; i++) got[i] = dp_bf16_to_f32(hb[i]);
    snprintf(what, sizeof what, "neftune bf16 C=%d alpha=%g", C, alpha);
    check_arrays_near(what, ref, got, n, 0, 1.0 / 256); /* half an ulp of bf16 */
    /* bad shapes fail cleanly */
    CHECK(gpu->neftune_forward(dx, dcu, 0, N, C, alpha, seed) == -1);
    CHECK(gpu->neftune_forward(dx, dcu, NSEQ, N, C, -1.0f, seed) == -1);
    OK(gpu->dev_free(dx));
    OK(gpu->dev_free(db));
    OK(gpu->dev_free(dcu));
    free(x), free(ref), free(got), free(hb);
}

/* ---------------------------------------------------------------- the training step */
enum { N = 24, NSEQ = 2 };
static int32_t tokens[N], targets[N], pos[N], cu[NSEQ + 1] = {0, 13, N};

static dp_batch make_batch(int V) {
    check_rng st = {5};
    for (int i = 0; i < N; i++) tokens[i] = (int32_t)((check_rng_next(&st) >> 33) % (uint64_t)V);
    for (int s = 0; s < NSEQ; s++)
        for (int i = cu[s]; i < cu[s + 1]; i++) {
            pos[i] = i - cu[s];
            targets[i] = pos[i] < 2 || i + 1 == cu[s + 1] ? -1 : tokens[i + 1];
        }
    return (dp_batch){
        .N = N, .nseq = NSEQ, .tokens = tokens, .targets = targets, .pos = pos, .cu_seqlens = cu};
}

/* mean loss of one training step at `seed` (gradients go to lora->grads, zeroed first) */
static double step_loss(dp_grad_ws *ws, const dp_model *m, dp_lora *lora, const dp_batch *b, int nt,
                        uint64_t seed) {
    memset(lora->grads, 0, lora->n * sizeof(float));
    double s = 0;
    int64_t k = 0;
    CHECK(dp_model_grad(ws, m, lora, b, 1.0f / nt, seed, &s, &k) == 0);
    return s / (double)k;
}

static void test_step(const char *name) {
    dp_model *m = emu_tiny_model(name, false);
    if (!m) return;
    dp_batch b = make_batch(m->cfg.V);
    int nt = 0;
    for (int i = 0; i < N; i++) nt += targets[i] >= 0;
    /* no LoRA dropout: the noise is the step's only randomness */
    dp_lora_config lc = {.r = 4, .alpha = 8, .dropout = 0, .targets = DP_LORA_ALL_TARGETS};
    dp_lora *lora = dp_lora_create(&m->cfg, &lc);
    emu_fill_lora(lora, 99);
    dp_grad_ws *ws = dp_grad_ws_create(m, lora, N, true, 5);
    CHECK_REPORT(ws != NULL, "%s", dp_last_error());
    if (!ws) return;
    const uint64_t seed = 0xabcdef12345ULL;
    /* alpha large enough that the noise moves the loss well beyond rounding (tiny models have
     * C = 64, so the noise per element is alpha / sqrt(13 * 64) ~ alpha / 29) */
    const float alpha = 5.0f;
    double plain = step_loss(ws, m, lora, &b, nt, seed);
    float *g_plain = malloc(lora->n * 4), *g = malloc(lora->n * 4);
    memcpy(g_plain, lora->grads, lora->n * 4);
    dp_grad_ws_set_neftune(ws, alpha);
    double noisy = step_loss(ws, m, lora, &b, nt, seed);
    memcpy(g, lora->grads, lora->n * 4);
    double again = step_loss(ws, m, lora, &b, nt, seed);
    CHECK(memcmp(g, lora->grads, lora->n * 4) == 0); /* the same seed, the same step, bit for bit */
    CHECK(again == noisy);
    double other = step_loss(ws, m, lora, &b, nt, seed + 2);
    fprintf(stderr, "  %s: step loss %.6f plain, %.6f with NEFTune alpha %g, %.6f another seed\n",
            name, plain, noisy, alpha, other);
    CHECK(fabs(noisy - plain) > 1e-4);
    CHECK(fabs(other - noisy) > 1e-5);
    /* validation never sees the noise */
    double v1 = 0, v0 = 0;
    int64_t k1 = 0, k0 = 0;
    CHECK(dp_model_loss(ws, m, lora, &b, &v1, &k1) == 0);
    dp_grad_ws_set_neftune(ws, 0);
    CHECK(dp_model_loss(ws, m, lora, &b, &v0, &k0) == 0);
    CHECK(v1 == v0);
    CHECK(fabs(v0 / k0 - plain) < 1e-9 * fabs(plain) + 1e-12);
    dp_grad_ws_set_neftune(ws, alpha);

    /* central differences of the noisy loss at the same seed, on the 8 largest gradients */
    int idx[8] = {0};
    for (int j = 0; j < 8; j++) {
        size_t best = 0;
        float bv = -1;
        for (size_t i = 0; i < lora->n; i++) {
            bool taken = false;
            for (int q = 0; q < j; q++) taken |= idx[q] == (int)i;
            if (!taken && fabsf(g[i]) > bv) bv = fabsf(g[i]), best = i;
        }
        idx[j] = (int)best;
    }
    double worst = 0;
    int dist = 0;
    for (int j = 0; j < 8; j++) {
        float keep = lora->params[idx[j]], h = 1e-2f;
        lora->params[idx[j]] = keep + h;
        double up = step_loss(ws, m, lora, &b, nt, seed);
        lora->params[idx[j]] = keep - h;
        double down = step_loss(ws, m, lora, &b, nt, seed);
        lora->params[idx[j]] = keep;
        double fd = (up - down) / (2.0 * (double)h), an = g[idx[j]];
        double err = fabs(fd - an) / (2e-3 + 2e-2 * fabs(an));
        worst = fmax(worst, err);
        CHECK_NEAR(an, fd, 2e-3, 2e-2);
        /* the noise matters to this gradient beyond the tolerance (a test that can fail) */
        dist += fabs(g_plain[idx[j]] - an) > 2e-3 + 2e-2 * fabs(an);
    }
    fprintf(stderr,
            "  %s: 8 largest LoRA gradients with NEFTune vs central differences: worst "
            "%.2f of the tolerance (2e-3 + 2e-2|g|); %d of 8 differ from the noiseless "
            "gradient by more than it\n",
            name, worst, dist);
    CHECK(dist >= 4);

    /* the GPU step (EMU, fp32 activations) with the same noise */
    step_loss(ws, m, lora, &b, nt, seed);
    dp_train_shape shape = dp_gpu_train_shape(m, lora, N, false, 5);
    dp_gpu_train *t = NULL;
    if (dp_gpu_train_create(&t, &dp_emu_ops, m, lora, &shape)) {
        CHECK_REPORT(0, "%s", dp_last_error());
    } else {
        dp_gpu_train_set_neftune(t, alpha);
        double s = 0;
        int64_t k = 0;
        CHECK(dp_gpu_train_grad(t, &b, 1.0f / nt, seed, &s, &k) == 0);
        fprintf(stderr, "  %s: GPU step (EMU) loss with NEFTune %.6f, CPU %.6f\n", name, s / k,
                noisy);
        CHECK_NEAR(noisy, s / k, 0, 1e-5);
        float *gg = malloc(lora->n * 4);
        CHECK(dp_gpu_train_download(t, NULL, gg, NULL, NULL) == 0);
        double gmax = 0;
        for (size_t i = 0; i < lora->n; i++) gmax = fmax(gmax, fabs(lora->grads[i]));
        char what[96];
        snprintf(what, sizeof what, "%s GPU grads with NEFTune", name);
        check_arrays_near(what, lora->grads, gg, lora->n, 1e-4 * gmax, 0);
        free(gg);
        dp_gpu_train_free(t);
    }
    free(g), free(g_plain);
    dp_grad_ws_free(ws);
    dp_lora_free(lora);
    dp_model_free(m);
}

int main(void) {
    test_kernel(64, 5.0f);
    test_kernel(37, 15.0f); /* a row width that is not a multiple of 4 */
    test_step("tiny-llama");
    if (!REDUCED) test_step("tiny-qwen2");
    return check_done();
}
