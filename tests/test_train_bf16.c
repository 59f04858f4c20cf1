/* QLoRA with the frozen NF4 base's products in bf16 (dp_grad_ws_set_bf16, kernels/cpu/gemm_bf16.c):
 * loss and every LoRA gradient against the fp32 NF4 path (itself checked against PEFT on the
 * dequantized model by test_train_grad), a few AdamW steps' losses, and the fallback when the
 * CPU has no AVX512_BF16 (DOPPEL_SIMD=avx512): the workspace stays fp32, the bits unchanged.
 * dp_model_loss (validation) keeps fp32 products on a bf16 workspace: the same bits as fp32's.
 * On a CPU with AMX the head's two GEMMs are bf16 too (in the same bounds below).
 *
 * Tolerance: rounding x and W to bf16 moves each product by <= 2^-8 relative (2^-9 each), so
 * every base GEMM's output moves by about 2^-8 of its absolute-sum scale, and through a few
 * layers and the backward pass the gradients by ~1e-2 relative (the usual bf16-vs-fp32 gap of
 * QLoRA); layer 0's, behind every layer's backward GEMMs, by up to 3.9e-2 here (measured).
 * Checked per tensor in norm: |g_bf16 - g_fp32| <= 8e-2 |g_fp32|, the loss within 1e-3
 * relative; a wrong panel layout or a dropped K pair moves them by O(1). */
#include "check.h"
#include "fixture_h5.h"
#include "train/model_grad.h"
#include "train/optim.h"
#include "data/base/error.h"
#include "kernels/ops.h"

/* relative norm distance of b from a over n values */
static double rel_norm(const float *a, const float *b, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)a[i] * a[i];
    }
    return s > 0 ? sqrt(d / s) : sqrt(d);
}

/* one micro-batch's loss and gradients, bf16 or fp32 products; recompute as given */
static double grads(fx_model *fm, hid_t f, const dp_batch *b, int nt, bool bf16, bool recompute,
                    float **g, size_t *n, bool *ran_bf16, double *val) {
    dp_lora *lora = dp_lora_create(&fm->model.cfg, &fm->lc);
    CHECK(lora && fx_lora_init(f, lora) == 0);
    dp_grad_ws *ws = dp_grad_ws_create(&fm->model, lora, b->N, recompute, 5);
    CHECK(ws && dp_grad_ws_set_bf16(ws, &fm->model, bf16) == 0);
    *ran_bf16 = ws && dp_grad_ws_bf16(ws);
    double loss = NAN;
    int64_t ntr;
    CHECK(ws && dp_model_grad(ws, &fm->model, lora, b, 1.0f / nt, 0, &loss, &ntr) == 0);
    /* the forward-only loss keeps fp32 products (validation = doppel eval) */
    *val = NAN;
    CHECK(ws && dp_model_loss(ws, &fm->model, lora, b, val, &ntr) == 0);
    *n = lora->n;
    *g = malloc(lora->n * sizeof(float));
    memcpy(*g, lora->grads, lora->n * sizeof(float));
    /* a few AdamW steps train in bf16 as in fp32 */
    float *m = calloc(lora->n, sizeof(float)), *v = calloc(lora->n, sizeof(float));
    dp_adamw_config ac = {0.9f, 0.999f, 1e-8f, 0.0f, 1.0f};
    double l0 = loss, lk = loss;
    for (int s = 0; s < 4 && ws; s++) {
        memset(lora->grads, 0, lora->n * sizeof(float));
        dp_model_grad(ws, &fm->model, lora, b, 1.0f / nt, 0, &lk, &ntr);
        dp_adamw_step(lora, m, v, &ac, 3e-3f, s + 1);
    }
    fprintf(stderr, "  %s%s: loss %.6f, after 4 AdamW steps %.6f\n", bf16 ? "bf16" : "fp32",
            recompute ? " recompute" : "", l0 / nt, lk / nt);
    CHECK(lk < l0);
    free(m), free(v);
    dp_grad_ws_free(ws);
    dp_lora_free(lora);
    return loss / nt;
}

static void test_arch(const char *arch) {
    hid_t f = fx_open(arch);
    if (f < 0) return;
    fx_model fm;
    CHECK(fx_model_load(f, arch, &fm) == 0);
    int32_t *bufs[4];
    dp_batch b = fx_batch(f, bufs);
    int nt = 0;
    for (int i = 0; i < b.N; i++) nt += b.targets[i] >= 0;
    const dp_model_config *c = &fm.model.cfg;
    dp_nf4 *q = fx_model_nf4(&fm);
    CHECK(q != NULL);
    for (int i = 0; q && i < c->L * DP_N_LINEAR; i++) {
        dp_linear *lin = &fm.model.layers[i / DP_N_LINEAR].lin[i % DP_N_LINEAR];
        lin->w = NULL, /* still owned by fm's blocks */ lin->nf4 = &q[i];
    }
    fprintf(stderr, "%s (NF4 base):\n", arch);
    for (int recompute = 1; recompute >= 0; recompute--) {
        float *g32, *g16;
        size_t n;
        bool r32, r16;
        double v32, v16;
        double l32 = grads(&fm, f, &b, nt, false, recompute, &g32, &n, &r32, &v32);
        double l16 = grads(&fm, f, &b, nt, true, recompute, &g16, &n, &r16, &v16);
        CHECK_REPORT(v32 == v16, "%s: dp_model_loss on a bf16 workspace %.9g != fp32's %.9g", arch,
                     v16, v32);
        CHECK(!r32);
        if (!dp_bf16_gemm_ok()) {
            CHECK(!r16);
            CHECK_REPORT(l16 == l32 && !memcmp(g16, g32, n * sizeof(float)),
                         "%s: without AVX512_BF16 the bf16 request must leave the fp32 path", arch);
        } else {
            CHECK(r16);
            CHECK_NEAR(l32, l16, 0, 1e-3);
            /* per LoRA tensor */
            dp_lora *shape = dp_lora_create(c, &fm.lc);
            double worst = 0;
            for (int l = 0; l < c->L && shape; l++)
                for (int m = 0; m < DP_N_LINEAR; m++) {
                    const dp_lora_module *md = dp_lora_mod(shape, l, m);
                    if (!md->A) continue;
                    size_t oa = (size_t)(md->dA - shape->grads), ob = (size_t)(md->dB - shape->grads);
                    size_t na = (size_t)shape->cfg.r * md->in, nb = (size_t)md->out * shape->cfg.r;
                    double ea = rel_norm(g32 + oa, g16 + oa, na), eb = rel_norm(g32 + ob, g16 + ob, nb);
                    worst = fmax(worst, fmax(ea, eb));
                    CHECK_REPORT(ea <= 8e-2 && eb <= 8e-2,
                                 "%s L%d module %d: bf16 grads |dA| off by %.3g, |dB| by %.3g "
                                 "(relative norm, tolerance 8e-2)",
                                 arch, l, m, ea, eb);
                }
            fprintf(stderr, "  %s%s: bf16 vs fp32 loss %.3g relative, grads %.3g (worst tensor, "
                            "relative norm; tolerance 8e-2)\n",
                    arch, recompute ? " recompute" : "", fabs(l16 - l32) / fabs(l32), worst);
            dp_lora_free(shape);
        }
        free(g32), free(g16);
    }
    for (int i = 0; i < c->L * DP_N_LINEAR; i++)
        fm.model.layers[i / DP_N_LINEAR].lin[i % DP_N_LINEAR].nf4 = NULL;
    fx_nf4_free(q, c->L);
    for (int i = 0; i < 4; i++) free(bufs[i]);
    fx_model_free(&fm);
    H5Fclose(f);
}

int main(void) {
    test_arch("llama");
    test_arch("qwen2");
    /* a CPU without AVX512_BF16 (or DOPPEL_SIMD below it): the request falls back to fp32 */
    setenv("DOPPEL_SIMD", "avx512", 1);
    fprintf(stderr, "DOPPEL_SIMD=avx512 (no bf16 products):\n");
    test_arch("qwen3");
    unsetenv("DOPPEL_SIMD");
    return check_done();
}
