/* An adapter written by doppel, loaded by Hugging Face PEFT onto the same tiny model, gives the
 * logits doppel gives (tests/reference/check_peft_adapter.py). Skipped when python3 with
 * torch + transformers + peft + h5py is not installed (CI has none of them). */
#include "check.h"
#include "data/base/error.h"
#include "fixture_h5.h"
#include "train/model_grad.h"

#include <unistd.h>

static char args[8192]; /* FIXTURE ADAPTER LOGITS triples for one python run */

static void test_arch(const char *arch, const char *tmp) {
    char path[1024], dir[512], lpath[512];
    snprintf(path, sizeof path, "%s/tests/fixtures/peft/%s.h5", DOPPEL_SOURCE_DIR, arch);
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
    snprintf(dir, sizeof dir, "%s/%s-adapter", tmp, arch);
    CHECK(dp_lora_save_peft(lora, dir, "tiny", NULL) == 0);
    dp_batch b = {.N = (int)n, .nseq = (int)ns - 1, .tokens = tok, .pos = pos, .cu_seqlens = cu};
    dp_grad_ws *ws = dp_grad_ws_create(&fm.model, lora, b.N, true, 0);
    float *logits = malloc(sizeof(float) * n * (size_t)fm.model.cfg.V);
    CHECK(ws && dp_model_logits(ws, &fm.model, lora, &b, logits) == 0);
    snprintf(lpath, sizeof lpath, "%s/%s-logits.f32", tmp, arch);
    FILE *o = fopen(lpath, "wb");
    CHECK(o && fwrite(logits, sizeof(float), n * (size_t)fm.model.cfg.V, o) ==
                   n * (size_t)fm.model.cfg.V);
    if (o) fclose(o);
    size_t len = strlen(args);
    snprintf(args + len, sizeof args - len, " %s %s %s", path, dir, lpath);
    free(logits);
    dp_grad_ws_free(ws);
    dp_lora_free(lora);
    free(tok), free(pos), free(cu);
    fx_model_free(&fm);
}

int main(void) {
    if (system("python3 -c 'import torch, transformers, peft, h5py' >/dev/null 2>&1") != 0)
        SKIP("python3 with torch, transformers, peft and h5py is not installed");
    char tmp[256], cmd[300];
    snprintf(tmp, sizeof tmp, "/tmp/doppel-peft-test.%d", (int)getpid());
    CHECK(dp_make_dirs(tmp) == 0);
    test_arch("llama", tmp);
    test_arch("qwen2", tmp);
    test_arch("qwen3", tmp);
    char run[9000];
    snprintf(run, sizeof run, "python3 %s/tests/reference/check_peft_adapter.py%s 2>&1",
             DOPPEL_SOURCE_DIR, args);
    CHECK_REPORT(system(run) == 0, "PEFT's logits with doppel's adapter differ (see above)");
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    CHECK(system(cmd) == 0);
    return check_done();
}
