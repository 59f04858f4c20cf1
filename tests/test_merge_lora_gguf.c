/* doppel merge --format lora-gguf checked by llama.cpp (tests/reference/check_merge_lora_gguf.py)
 * on SmolLM2 (a llama: q/k rows of B in GGUF's rope order): gguf-py reads the file as
 * llama-adapter.cpp expects it (general.type, adapter.*, the base's architecture, lora_a (r, in)
 * equal to PEFT's lora_A, lora_b (out, r) equal to lora_B permuted as convert_hf_to_gguf.py
 * permutes q/k), and llama-cpp-python's logits over the base GGUF move with the adapter
 * (lora_path) as doppel's forward with the adapter unmerged moves (tolerance in the script).
 * The adapter is random (every module, |A|, |B| < 0.07, r 4, alpha 8 so a wrong scale shows);
 * f32 and f16 files, and an rsLoRA copy (alpha / sqrt(r): llama.cpp's alpha is written as
 * alpha sqrt(r)). Skipped (77) without SmolLM2 or python3's gguf and safetensors; without
 * llama_cpp the file checks run and the test then skips (the logits were not compared). */
#include "check.h"
#include "infer/export_lora_gguf.h"
#include "infer/gguf.h"
#include "merge_fixture.h"

#include <string.h>
#include <unistd.h>

static int save_logits(const char *path, const int32_t *ids, int T, const float *base,
                       const float *adapted, int V) {
    dp_st_writer *w = dp_st_writer_new();
    int64_t s1[1] = {T}, s2[2] = {T, V};
    int rc = !w || dp_st_writer_add(w, "ids", DP_DT_I32, 1, s1, ids) ||
             dp_st_writer_add(w, "base", DP_DT_F32, 2, s2, base) ||
             dp_st_writer_add(w, "adapted", DP_DT_F32, 2, s2, adapted) ||
             dp_st_writer_save(w, path);
    dp_st_writer_free(w);
    return rc ? -1 : 0;
}

int main(void) {
    const char *model = check_smollm2_gguf(); /* SKIPs when absent */
    if (system("python3 -c 'import gguf, safetensors, numpy' >/dev/null 2>&1"))
        SKIP("python3 lacks gguf or safetensors");
    bool llama = system("python3 -c 'import llama_cpp' >/dev/null 2>&1") == 0;
    char tmp[] = "/tmp/doppel-test-merge-lora.XXXXXX";
    if (!mkdtemp(tmp)) return 1;
    char run[4200], cmd[20000];
    snprintf(run, sizeof run, "%s/run", tmp);
    CHECK_REPORT(mfx_make_adapter(model, run, NULL, "chatml", 5, 0.07f) == 0, "adapter: %s",
                 dp_last_error());
    /* the same adapter as rsLoRA: PEFT's adapter_config.json says use_rslora */
    char rs[4300], cfg[4400];
    snprintf(rs, sizeof rs, "%s/run-rslora", tmp);
    snprintf(cmd, sizeof cmd,
             "cp -r '%s' '%s' && sed -i 's/\"use_rslora\":\tfalse/\"use_rslora\":\ttrue/' "
             "'%s/adapter_config.json'",
             run, rs, rs);
    CHECK(system(cmd) == 0);
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", rs);
    char *ctext = NULL;
    size_t clen = 0;
    CHECK(dp_read_file(cfg, &ctext, &clen) == 0 && ctext && strstr(ctext, "\"use_rslora\":\ttrue"));
    free(ctext);

    /* a ChatML turn, as chat feeds it */
    dp_tokenizer *tok = dp_model_tokenizer(model);
    dp_ids ids = {0};
    const char *text = "<|im_start|>user\n[ana]: oi, tudo bem? bora jogar hoje?<|im_end|>\n"
                       "<|im_start|>assistant\n";
    CHECK(tok && dp_tokenizer_encode(tok, text, strlen(text), true, &ids) == 0);
    dp_tokenizer_free(tok);
    int T = (int)ids.n;
    /* k: f32, f16, f32 of the rsLoRA copy */
    for (int k = 0; k < 3; k++) {
        const char *dir = k == 2 ? rs : run;
        char out[4300], logits[4300] = "";
        snprintf(out, sizeof out, "%s/adapter-%d.gguf", tmp, k);
        dp_merge *mg = dp_merge_open(model, dir, DP_MERGE_INTO_DEQUANTIZED, true);
        dp_export_lora_gguf_opts o = {
            .out_path = out, .type = k == 1 ? DP_GGML_F16 : DP_GGML_F32, .quiet = true};
        CHECK_REPORT(mg && dp_export_lora_gguf(mg, &o) == 0, "export: %s", dp_last_error());
        /* an existing output is refused and left as it is */
        CHECK(mg && dp_export_lora_gguf(mg, &o) != 0 && strstr(dp_last_error(), "exists"));
        CHECK(!mg || mg->lora->cfg.rslora == (k == 2));
        dp_merge_close(mg);
        if (llama && k != 1) {
            /* the base as llama.cpp holds it (Q4_1 dequantized, no NF4), with and without */
            int V = 0, V2 = 0;
            float *base = mfx_logits(model, false, NULL, ids.v, T, &V);
            float *adapted = mfx_logits(model, false, dir, ids.v, T, &V2);
            CHECK(base && adapted && V == V2);
            snprintf(logits, sizeof logits, "%s/logits-%d.safetensors", tmp, k);
            CHECK(base && adapted && save_logits(logits, ids.v, T, base, adapted, V) == 0);
            free(base);
            free(adapted);
        }
        snprintf(cmd, sizeof cmd,
                 "python3 %s/tests/reference/check_merge_lora_gguf.py '%s' '%s' '%s' %s",
                 DOPPEL_SOURCE_DIR, model, out, dir, logits);
        int rc = system(cmd);
        CHECK_REPORT(rc == 0, "check_merge_lora_gguf.py on %s failed (exit status %d)", out, rc);
    }
    dp_ids_free(&ids);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (!getenv("DOPPEL_KEEP") && system(cmd)) fprintf(stderr, "could not remove %s\n", tmp);
    if (!llama) {
        if (check_done()) return 1;
        SKIP("python3 lacks llama_cpp (pip install llama-cpp-python): the files were checked, "
             "llama.cpp's logits were not");
    }
    return check_done();
}
