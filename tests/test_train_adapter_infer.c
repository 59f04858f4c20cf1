/* The unmerged adapter at inference (infer/forward.c + dp_lora_hook, what chat --adapter runs)
 * gives the logits of the training forward with the same LoRA (train/model_grad.c, itself
 * checked against PEFT), on the tiny fixture models, through a prefill and a KV-cache step. */
#include "check.h"
#include "data/base/error.h"
#include "fixture_h5.h"
#include "infer/forward.h"
#include "train/model_grad.h"

static void test_arch(const char *arch) {
    hid_t f = fx_open(arch);
    if (f < 0) return;
    fx_model fm;
    CHECK(fx_model_load(f, arch, &fm) == 0);
    size_t n = 0, ns = 0;
    int32_t *tok = fx_read(f, "batch/tokens", &n, 1), *pos = fx_read(f, "batch/pos", NULL, 1),
            *cu = fx_read(f, "batch/cu_seqlens", &ns, 1);
    dp_lora *lora = dp_lora_create(&fm.model.cfg, &fm.lc);
    CHECK(lora && fx_lora_init(f, lora) == 0);
    H5Fclose(f);
    int V = fm.model.cfg.V;
    /* the first sequence only: the inference forward runs one sequence at a time */
    int T = cu[1];
    dp_batch b = {.N = T, .nseq = 1, .tokens = tok, .pos = pos, .cu_seqlens = (int32_t[]){0, T}};
    float *ref = malloc(sizeof(float) * (size_t)T * V),
          *got = malloc(sizeof(float) * (size_t)T * V);
    dp_grad_ws *ws = dp_grad_ws_create(&fm.model, lora, T, true, 0);
    CHECK(ws && dp_model_logits(ws, &fm.model, lora, &b, ref) == 0);
    dp_forward fw;
    CHECK(dp_forward_create(&fw, &fm.model, 64, 0) == 0);
    dp_forward_set_hook(&fw, dp_lora_hook, lora);
    /* a prefill of all but the last token, then one decode step through the KV cache */
    CHECK(dp_forward_tokens(&fw, tok, T - 1, got) == 0);
    CHECK(dp_forward_tokens(&fw, tok + T - 1, 1, got + (size_t)(T - 1) * V) == 0);
    char what[80];
    snprintf(what, sizeof what, "%s forward+hook vs training forward logits", arch);
    check_arrays_near(what, ref, got, (size_t)T * V, 2e-5, 1e-4);
    /* without the hook the logits differ: the adapter really is applied */
    dp_forward_truncate(&fw, 0);
    dp_forward_set_hook(&fw, NULL, NULL);
    CHECK(dp_forward_tokens(&fw, tok, T, got) == 0);
    double maxd = 0;
    for (size_t i = 0; i < (size_t)T * V; i++) maxd = fmax(maxd, fabs(ref[i] - got[i]));
    CHECK(maxd > 1e-2);
    dp_forward_free(&fw);
    dp_grad_ws_free(ws);
    dp_lora_free(lora);
    free(ref), free(got), free(tok), free(pos), free(cu);
    fx_model_free(&fm);
}

int main(void) {
    test_arch("llama");
    test_arch("qwen2");
    test_arch("qwen3");
    return check_done();
}
