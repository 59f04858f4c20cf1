/* The tokenizer.json doppel merge writes from a GGUF's tokenizer.ggml.* metadata
 * (dp_export_hf_tokenizer_from_gguf) for the Llama-3 (llama-bpe) and Qwen (qwen2) families: the
 * fixtures' Hugging Face tokenizer.json files are turned into tokenizer-only GGUFs as llama.cpp's
 * converter writes them (tests/reference/check_merge_hf_tokenizer_gguf.py), exported back, and
 * the `tokenizers` library encodes ~400 texts alike with the original and the exported file.
 * (SmolLM2's smollm form is checked on the real model by test_merge_hf_gguf.) Skipped (77)
 * without python3's tokenizers and gguf. */
#include "check.h"
#include "data/base/error.h"
#include "data/base/io.h"
#include "infer/export_hf.h"
#include "infer/gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int main(void) {
    if (system("python3 -c 'import tokenizers, gguf' >/dev/null 2>&1"))
        SKIP("python3 lacks tokenizers or gguf");
    char tmp[] = "/tmp/doppel-test-merge-hf-tok.XXXXXX";
    if (!mkdtemp(tmp)) return 1;
    const char *names[2] = {"llama3", "qwen3"}, *pres[2] = {"llama-bpe", "qwen2"};
    const char *eots[2] = {"<|eot_id|>", "<|im_end|>"};
    for (int k = 0; k < 2; k++) {
        char src[4300], json[4300], gg[4300], dir[4300], cmd[20000];
        snprintf(src, sizeof src, "%s/tests/fixtures/tokenizers/%s.tokenizer.json.zst",
                 DOPPEL_SOURCE_DIR, names[k]);
        snprintf(json, sizeof json, "%s/%s.json", tmp, names[k]);
        snprintf(gg, sizeof gg, "%s/%s.gguf", tmp, names[k]);
        snprintf(dir, sizeof dir, "%s/%s-hf", tmp, names[k]);
        char *text = NULL;
        size_t len = 0;
        CHECK(dp_read_file(src, &text, &len) == 0 && dp_write_file_atomic(json, text, len) == 0);
        free(text);
        snprintf(
            cmd, sizeof cmd,
            "cd %s && python3 tests/reference/check_merge_hf_tokenizer_gguf.py make '%s' %s '%s'",
            DOPPEL_SOURCE_DIR, json, pres[k], gg);
        CHECK(system(cmd) == 0);
        dp_gguf *g = dp_gguf_open(gg);
        CHECK_REPORT(g != NULL, "%s", dp_last_error());
        CHECK(mkdir(dir, 0755) == 0);
        CHECK_REPORT(g && dp_export_hf_tokenizer_from_gguf(g, dir, eots[k], "{{ messages }}") == 0,
                     "export: %s", dp_last_error());
        dp_gguf_close(g);
        snprintf(
            cmd, sizeof cmd,
            "cd %s && python3 tests/reference/check_merge_hf_tokenizer_gguf.py compare '%s' '%s'",
            DOPPEL_SOURCE_DIR, json, dir);
        CHECK_REPORT(system(cmd) == 0, "%s: the exported tokenizer.json encodes differently",
                     names[k]);
    }
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (!getenv("DOPPEL_KEEP") && system(cmd)) fprintf(stderr, "could not remove %s\n", tmp);
    return check_done();
}
