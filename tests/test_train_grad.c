/* Whole-model LoRA gradient and AdamW training against transformers + PEFT: for the tiny
 * Llama, Qwen2 and Qwen3 models of tests/fixtures/peft/, doppel's loss and EVERY LoRA gradient
 * at a fixed non-zero init, with and without per-layer recomputation, and the losses, learning
 * rates and grad norms of 10 AdamW steps (cosine schedule, warmup, clipping), per tensor. */
#include "check.h"
#include "fixture_h5.h"
#include "train/model_grad.h"
#include "train/optim.h"
#include "data/base/rng.h"
#include "train/schedule.h"
#include "data/base/error.h"

static void compare_grads(hid_t f, const dp_lora *lora, const char *arch, const char *mode) {
    for (int l = 0; l < lora->L; l++)
        for (int m = 0; m < DP_N_LINEAR; m++) {
            const dp_lora_module *md = dp_lora_mod(lora, l, m);
            for (int ab = 0; ab < 2; ab++) {
                char name[256], what[128];
                size_t n = 0;
                fx_lora_name(name, sizeof name, "grads", l, m, ab ? 'B' : 'A');
                float *ref = fx_read(f, name, &n, 0);
                size_t want = ab ? (size_t)md->out * lora->cfg.r : (size_t)lora->cfg.r * md->in;
                CHECK(ref && n == want);
                if (!ref || n != want) {
                    free(ref);
                    continue;
                }
                snprintf(what, sizeof what, "%s %s L%d %s lora_%c", arch, mode, l,
                         fx_lin_hf[m] + (m <= DP_O ? 10 : 4), ab ? 'B' : 'A');
                check_arrays_near(what, ref, ab ? md->dB : md->dA, n, 2e-6, 2e-3);
                free(ref);
            }
        }
}

static int count_trained(const dp_batch *b) {
    int n = 0;
    for (int i = 0; i < b->N; i++) n += b->targets[i] >= 0;
    return n;
}

static void test_arch(const char *arch) {
    hid_t f = fx_open(arch);
    if (f < 0) return;
    fx_model fm;
    CHECK(fx_model_load(f, arch, &fm) == 0);
    int32_t *bufs[4];
    dp_batch b = fx_batch(f, bufs);
    int nt = count_trained(&b);
    double ref_loss = fx_read_scalar(f, "loss");
    fprintf(stderr, "%s: %d rows in %d sequences, %d trained, reference loss %.6f\n", arch, b.N,
            b.nseq, nt, ref_loss);

    for (int recompute = 1; recompute >= 0; recompute--) {
        dp_lora *lora = dp_lora_create(&fm.model.cfg, &fm.lc);
        CHECK(lora && fx_lora_init(f, lora) == 0);
        /* a chunk of 5 rows makes the cross-entropy loop run over several chunks */
        dp_grad_ws *ws = dp_grad_ws_create(&fm.model, lora, b.N, recompute, 5);
        CHECK(ws != NULL);
        if (!lora || !ws) {
            fprintf(stderr, "%s\n", dp_last_error());
            dp_lora_free(lora);
            break;
        }
        double sum;
        int64_t ntr;
        CHECK(dp_model_grad(ws, &fm.model, lora, &b, 1.0f / nt, 0, &sum, &ntr) == 0);
        CHECK_EQ_INT(nt, ntr);
        CHECK_NEAR(ref_loss, sum / nt, 1e-5, 1e-5);
        compare_grads(f, lora, arch, recompute ? "recompute" : "stored");
        /* the forward-only loss agrees with the training forward */
        double vsum;
        CHECK(dp_model_loss(ws, &fm.model, lora, &b, &vsum, &ntr) == 0);
        CHECK_NEAR(sum, vsum, 1e-6, 1e-6);
        dp_grad_ws_free(ws);
        dp_lora_free(lora);
    }

    /* 10 AdamW steps on the same batch, as torch.optim.AdamW + clip_grad_norm_ + cosine */
    size_t nsteps = 0;
    float *ref_lr = fx_read(f, "adamw/lr", &nsteps, 0);
    float *ref_l = fx_read(f, "adamw/loss", NULL, 0);
    float *ref_n = fx_read(f, "adamw/grad_norm", NULL, 0);
    dp_lora *lora = dp_lora_create(&fm.model.cfg, &fm.lc);
    dp_grad_ws *ws = lora ? dp_grad_ws_create(&fm.model, lora, b.N, true, 0) : NULL;
    CHECK(ref_lr && ref_l && ref_n && ws);
    if (ref_lr && ref_l && ref_n && ws && fx_lora_init(f, lora) == 0) {
        float *m = calloc(lora->n, sizeof(float)), *v = calloc(lora->n, sizeof(float));
        dp_schedule s = {.kind = DP_SCHED_COSINE, .lr = 3e-3, .total_steps = 10};
        s.warmup_steps = dp_schedule_warmup(10, 2, 0);
        dp_adamw_config ac = {0.9f, 0.999f, 1e-8f, 0.01f, 1.0f};
        float got_l[16], got_n[16], got_lr[16];
        for (size_t i = 0; i < nsteps && i < 16; i++) {
            memset(lora->grads, 0, lora->n * sizeof(float));
            double sum;
            int64_t ntr;
            dp_model_grad(ws, &fm.model, lora, &b, 1.0f / nt, 0, &sum, &ntr);
            got_l[i] = (float)(sum / nt);
            got_lr[i] = (float)dp_schedule_lr(&s, (long)i);
            got_n[i] = (float)dp_adamw_step(lora, m, v, &ac, got_lr[i], (long)i + 1);
        }
        char what[64];
        snprintf(what, sizeof what, "%s AdamW lr x10", arch);
        check_arrays_near(what, ref_lr, got_lr, nsteps, 1e-9, 1e-6);
        snprintf(what, sizeof what, "%s AdamW loss x10", arch);
        check_arrays_near(what, ref_l, got_l, nsteps, 1e-5, 1e-4);
        snprintf(what, sizeof what, "%s AdamW grad norm x10", arch);
        check_arrays_near(what, ref_n, got_n, nsteps, 1e-5, 1e-3);
        CHECK(got_l[nsteps - 1] < got_l[0]); /* it trains */
        free(m);
        free(v);
    }
    dp_grad_ws_free(ws);
    dp_lora_free(lora);
    free(ref_lr), free(ref_l), free(ref_n);
    for (int i = 0; i < 4; i++) free(bufs[i]);
    fx_model_free(&fm);
    H5Fclose(f);
}

/* QLoRA: with the block linears in NF4, the gradients equal those of the fp32 model whose
 * weights are dequantize(quantize(W)) (tiled NF4 GEMMs against dense ones). */
static void test_nf4(const char *arch) {
    hid_t f = fx_open(arch);
    if (f < 0) return;
    fx_model fm;
    CHECK(fx_model_load(f, arch, &fm) == 0);
    int32_t *bufs[4];
    dp_batch b = fx_batch(f, bufs);
    int nt = count_trained(&b);
    const dp_model_config *c = &fm.model.cfg;
    dp_nf4 *q = fx_model_nf4(&fm);
    CHECK(q != NULL);
    if (!q) {
        for (int i = 0; i < 4; i++) free(bufs[i]);
        fx_model_free(&fm);
        H5Fclose(f);
        return;
    }
    float *saved[64];
    for (int i = 0; i < c->L * DP_N_LINEAR; i++)
        saved[i] = fm.model.layers[i / DP_N_LINEAR].lin[i % DP_N_LINEAR].w;
    float *g[2] = {NULL, NULL};
    double loss[2];
    size_t n = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int l = 0; l < c->L; l++)
            for (int m = 0; m < DP_N_LINEAR; m++) {
                dp_linear *lin = &fm.model.layers[l].lin[m];
                dp_nf4 *qq = &q[l * DP_N_LINEAR + m];
                if (pass == 0) { /* NF4 */
                    lin->w = NULL;
                    lin->nf4 = qq;
                } else { /* fp32 holding the dequantized values */
                    lin->nf4 = NULL;
                    lin->w = saved[l * DP_N_LINEAR + m];
                    dp_nf4_dequantize(qq, lin->w);
                }
            }
        dp_lora *lora = dp_lora_create(c, &fm.lc);
        CHECK(lora && fx_lora_init(f, lora) == 0);
        dp_grad_ws *ws = dp_grad_ws_create(&fm.model, lora, b.N, true, 0);
        int64_t ntr;
        CHECK(ws && dp_model_grad(ws, &fm.model, lora, &b, 1.0f / nt, 0, &loss[pass], &ntr) == 0);
        n = lora->n;
        g[pass] = malloc(n * sizeof(float));
        memcpy(g[pass], lora->grads, n * sizeof(float));
        dp_grad_ws_free(ws);
        dp_lora_free(lora);
    }
    char what[64];
    snprintf(what, sizeof what, "%s NF4 vs dequantized fp32 grads", arch);
    check_arrays_near(what, g[1], g[0], n, 1e-6, 1e-4);
    CHECK_NEAR(loss[1], loss[0], 1e-6, 1e-6);
    /* quantization moved the loss away from the fp32 model's, but not far */
    double d = fabs(loss[0] / nt - fx_read_scalar(f, "loss"));
    fprintf(stderr, "  %s: NF4 moves the loss by %.3g from the fp32 model's\n", arch, d);
    CHECK(d < 0.05 && d > 1e-6);
    fx_nf4_free(q, c->L);
    free(g[0]), free(g[1]);
    for (int i = 0; i < 4; i++) free(bufs[i]);
    fx_model_free(&fm);
    H5Fclose(f);
}

/* With LoRA dropout on, the analytic gradient against central differences of the same masked
 * loss (the masks are a pure function of the seed, so both sides see the same ones), and the
 * dropout really changes the loss. */
static void test_dropout(const char *arch) {
    hid_t f = fx_open(arch);
    if (f < 0) return;
    fx_model fm;
    CHECK(fx_model_load(f, arch, &fm) == 0);
    int32_t *bufs[4];
    dp_batch b = fx_batch(f, bufs);
    int nt = count_trained(&b);
    fm.lc.dropout = 0.3f;
    dp_lora *lora = dp_lora_create(&fm.model.cfg, &fm.lc);
    CHECK(lora && fx_lora_init(f, lora) == 0);
    dp_grad_ws *ws = dp_grad_ws_create(&fm.model, lora, b.N, true, 0);
    const uint64_t seed = 12345;
    double l0, l1;
    int64_t ntr;
    CHECK(dp_model_grad(ws, &fm.model, lora, &b, 1.0f / nt, seed, &l0, &ntr) == 0);
    float *g = malloc(lora->n * sizeof(float));
    memcpy(g, lora->grads, lora->n * sizeof(float));
    CHECK(dp_model_loss(ws, &fm.model, lora, &b, &l1, &ntr) == 0);
    CHECK(fabs(l0 - l1) > 1e-3 * nt); /* dropout is on in training, off in evaluation */
    /* the same batch and seed again, several times: the same bits (the threads' shares of
     * the rows, attention blocks and gradient sums are fixed by the shapes) */
    for (int rep = 0; rep < 5; rep++) {
        double l2;
        memset(lora->grads, 0, lora->n * sizeof(float));
        CHECK(dp_model_grad(ws, &fm.model, lora, &b, 1.0f / nt, seed, &l2, &ntr) == 0);
        CHECK(l2 == l0 && !memcmp(g, lora->grads, lora->n * sizeof(float)));
    }
    enum { K = 24 };
    float num[K], ana[K];
    const float h = 1e-2f;
    for (int k = 0; k < K; k++) {
        size_t i = (size_t)(dp_rng_bits(77, 0, (uint64_t)k) % lora->n);
        float x = lora->params[i];
        double lp, lm;
        lora->params[i] = x + h;
        dp_model_grad(ws, &fm.model, lora, &b, 1.0f / nt, seed, &lp, &ntr);
        lora->params[i] = x - h;
        dp_model_grad(ws, &fm.model, lora, &b, 1.0f / nt, seed, &lm, &ntr);
        lora->params[i] = x;
        num[k] = (float)((lp - lm) / nt / (2 * h));
        ana[k] = g[i];
    }
    char what[64];
    snprintf(what, sizeof what, "%s dropout 0.3 grads vs central differences", arch);
    check_arrays_near(what, num, ana, K, 2e-4, 2e-2);
    free(g);
    dp_grad_ws_free(ws);
    dp_lora_free(lora);
    for (int i = 0; i < 4; i++) free(bufs[i]);
    fx_model_free(&fm);
    H5Fclose(f);
}

int main(void) {
    test_arch("llama");
    test_arch("qwen2");
    test_arch("qwen3");
    test_nf4("qwen2");
    test_nf4("qwen3");
    test_dropout("llama");
    return check_done();
}
