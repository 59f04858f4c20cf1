/* The CPU training step's batch validation (infer/batch.h's dp_batch_check, the one the GPU step
 * uses too): decreasing cu_seqlens are refused by the step, the validation loss and the logits;
 * a batch without targets is refused where a loss is needed and accepted for logits, which
 * then equal those of the same batch with targets. A refused step leaves the gradients alone. */
#include "check.h"
#include "data/base/error.h"
#include "fixture_h5.h"
#include "train/model_grad.h"

#include <math.h>

static void test_arch(const char *arch) {
    hid_t f = fx_open(arch);
    if (f < 0) return;
    fx_model fm;
    CHECK(fx_model_load(f, arch, &fm) == 0);
    size_t n = 0, ns = 0;
    int32_t *tok = fx_read(f, "batch/tokens", &n, 1), *tgt = fx_read(f, "batch/targets", NULL, 1),
            *pos = fx_read(f, "batch/pos", NULL, 1), *cu = fx_read(f, "batch/cu_seqlens", &ns, 1);
    dp_lora *lora = dp_lora_create(&fm.model.cfg, &fm.lc);
    CHECK(lora && fx_lora_init(f, lora) == 0);
    H5Fclose(f);
    CHECK(ns >= 3); /* at least two sequences, so their offsets can be swapped */
    dp_batch b = {.N = (int)n,
                  .nseq = (int)ns - 1,
                  .tokens = tok,
                  .targets = tgt,
                  .pos = pos,
                  .cu_seqlens = cu};
    dp_grad_ws *ws = dp_grad_ws_create(&fm.model, lora, b.N, true, 0);
    CHECK(ws != NULL);
    const int V = fm.model.cfg.V;
    float *logits = malloc(sizeof(float) * n * V), *logits2 = malloc(sizeof(float) * n * V);
    double sum;
    int64_t ntr;

    /* cu_seqlens 0, c2, c1, ..., N: they still start at 0 and end at N, but decrease once */
    int32_t *down = malloc(sizeof(int32_t) * ns);
    memcpy(down, cu, sizeof(int32_t) * ns);
    down[1] = cu[2], down[2] = cu[1];
    dp_batch bad = b;
    bad.cu_seqlens = down;
    memset(lora->grads, 0, lora->n * sizeof(float));
    CHECK(dp_model_grad(ws, &fm.model, lora, &bad, 1.0f, 0, &sum, &ntr) == -1);
    fprintf(stderr, "%s: %s\n", arch, dp_last_error());
    CHECK(strstr(dp_last_error(), "cu_seqlens decrease") != NULL);
    CHECK(sum_squares(lora->grads, lora->n) == 0.0); /* nothing accumulated */
    CHECK(dp_model_loss(ws, &fm.model, lora, &bad, &sum, &ntr) == -1);
    CHECK(dp_model_logits(ws, &fm.model, lora, &bad, logits) == -1);

    /* no targets: no loss, but logits */
    dp_batch untargeted = b;
    untargeted.targets = NULL;
    CHECK(dp_model_grad(ws, &fm.model, lora, &untargeted, 1.0f, 0, &sum, &ntr) == -1);
    CHECK(strstr(dp_last_error(), "without targets") != NULL);
    CHECK(dp_model_loss(ws, &fm.model, lora, &untargeted, &sum, &ntr) == -1);
    CHECK(dp_model_logits(ws, &fm.model, lora, &untargeted, logits) == 0);
    CHECK(dp_model_logits(ws, &fm.model, lora, &b, logits2) == 0);
    char what[80];
    snprintf(what, sizeof what, "%s logits without targets vs with", arch);
    check_arrays_near(what, logits2, logits, n * V, 0, 0);

    /* the batch itself is good: the step runs and its gradients are not zero */
    CHECK(dp_model_grad(ws, &fm.model, lora, &b, 1.0f, 0, &sum, &ntr) == 0);
    CHECK(isfinite(sum) && ntr > 0);
    CHECK(sum_squares(lora->grads, lora->n) > 0.0);

    dp_grad_ws_free(ws);
    dp_lora_free(lora);
    free(logits), free(logits2), free(down), free(tok), free(tgt), free(pos), free(cu);
    fx_model_free(&fm);
}

int main(void) {
    test_arch("llama");
    test_arch("qwen3");
    return check_done();
}
