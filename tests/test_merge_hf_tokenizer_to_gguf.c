/* tokenizer.json -> tokenizer.ggml.* for doppel merge --format gguf from a Hugging Face base
 * (infer/hf_tokenizer_gguf.c): the pre-tokenizer name of each family llama.cpp knows (gpt2,
 * smollm, qwen2, llama-bpe), a refusal for every near miss (one regex character, no NFC, no
 * ignore_merges, a prefix space, another pre-tokenizer), the token types llama.cpp expects
 * (special added -> CONTROL, "<|...|>" added -> CONTROL as the converter decides, other added ->
 * USER_DEFINED, ids past the tokenizer -> "[PADn]" UNUSED) and the special ids / add_bos as
 * gguf-py's SpecialVocab reads them. llama.cpp's own view of the result:
 * cli_merge_gguf_from_hf.sh. */
#include "check.h"
#include "data/base/error.h"
#include "data/base/io.h"
#include "data/tokenizer.h"
#include "infer/hf_tokenizer_gguf.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char tmp[] = "/tmp/doppel-test-hf-tok-gguf.XXXXXX";
static int n_dirs;

/* a model directory holding tokenizer.json = j (printed) and tokenizer_config.json = cfg */
static const char *make_dir(const cJSON *j, const char *cfg) {
    static char dir[4300];
    char path[4400];
    snprintf(dir, sizeof dir, "%s/m%d", tmp, n_dirs++);
    if (mkdir(dir, 0755)) return NULL;
    char *text = cJSON_PrintUnformatted(j);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    int rc = dp_write_file_atomic(path, text, strlen(text));
    free(text);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (cfg) rc |= dp_write_file_atomic(path, cfg, strlen(cfg));
    return rc ? NULL : dir;
}

static cJSON *load(const char *path) {
    char *text = NULL;
    size_t len = 0;
    if (dp_read_file(path, &text, &len)) return NULL;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    return j;
}

/* the pre name for j (NULL when refused, with the message kept in *why) */
static const char *pre_of(const cJSON *j, int64_t n_vocab, dp_hf_gguf_vocab *v) {
    const char *dir = make_dir(j, NULL);
    if (!dir || dp_hf_gguf_vocab_load(dir, n_vocab, v)) return NULL;
    return v->pre;
}

static void expect_pre(const cJSON *j, int64_t n_vocab, const char *want, const char *what) {
    dp_hf_gguf_vocab v;
    const char *got = pre_of(j, n_vocab, &v);
    if (want)
        CHECK_REPORT(got && !strcmp(got, want), "%s: pre %s, expected %s (%s)", what,
                     got ? got : "refused", want, got ? "" : dp_last_error());
    else
        CHECK_REPORT(!got && strstr(dp_last_error(), "a guessed tokenizer.ggml.pre"),
                     "%s: expected a refusal naming the reason, got %s / %s", what,
                     got ? got : "refused", dp_last_error());
    if (got) dp_hf_gguf_vocab_free(&v);
}

static int32_t id_of(const dp_hf_gguf_vocab *v, const char *text) {
    for (uint64_t i = 0; i < v->n_tokens; i++)
        if (v->token_lens[i] == strlen(text) && !memcmp(v->tokens[i], text, v->token_lens[i]))
            return (int32_t)i;
    return -1;
}

static cJSON *pre_step(const cJSON *j, int i) {
    return cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "pre_tokenizer"),
                                                  "pretokenizers"),
                              i);
}

int main(void) {
    if (!mkdtemp(tmp)) return 1;
    char path[4300];

    /* gpt2: the tiny fixtures' ByteLevel(use_regex) alone; smollm: Digits + ByteLevel */
    snprintf(path, sizeof path, "%s/tests/fixtures/tiny-llama/tokenizer.json", DOPPEL_SOURCE_DIR);
    cJSON *tiny = load(path);
    CHECK(tiny != NULL);
    if (!tiny) return check_done();
    expect_pre(tiny, 320, "gpt-2", "tiny ByteLevel");
    {
        dp_hf_gguf_vocab v;
        CHECK(pre_of(tiny, 320, &v) != NULL);
        CHECK_EQ_INT(320, (int)v.n_tokens); /* padded to the embedding's rows */
        CHECK_EQ_INT(DP_TOKTYPE_UNUSED, v.token_types[310]);
        CHECK_EQ_STR("[PAD310]", v.tokens[310]);
        CHECK_EQ_INT(DP_TOKTYPE_CONTROL, v.token_types[2]); /* <|im_end|>, special */
        CHECK_EQ_INT(DP_TOKTYPE_NORMAL, v.token_types[3]);
        CHECK_EQ_INT(-1, v.add_bos);
        dp_hf_gguf_vocab_free(&v);
        dp_hf_gguf_vocab bad;
        CHECK(pre_of(tiny, 100, &bad) == NULL && strstr(dp_last_error(), "do not belong"));
    }
    cJSON *bl = cJSON_Duplicate(cJSON_GetObjectItem(tiny, "pre_tokenizer"), 1);
    cJSON *seq = cJSON_Parse("{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\", "
                             "\"individual_digits\": true}]}");
    cJSON_AddItemToArray(cJSON_GetObjectItem(seq, "pretokenizers"), bl);
    cJSON *smol = cJSON_Duplicate(tiny, 1);
    cJSON_ReplaceItemInObject(smol, "pre_tokenizer", seq);
    expect_pre(smol, 320, "smollm", "Digits(individual)+ByteLevel");
    cJSON_ReplaceItemInObject(pre_step(smol, 0), "individual_digits", cJSON_CreateFalse());
    expect_pre(smol, 320, NULL, "Digits(grouped)+ByteLevel");
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(tiny, "pre_tokenizer"), "add_prefix_space",
                              cJSON_CreateTrue());
    expect_pre(tiny, 320, NULL, "ByteLevel with a prefix space");
    cJSON_ReplaceItemInObject(tiny, "pre_tokenizer",
                              cJSON_Parse("{\"type\": \"Metaspace\", \"replacement\": \"_\"}"));
    expect_pre(tiny, 320, NULL, "Metaspace");
    cJSON_Delete(smol);

    /* qwen2: the real Qwen tokenizer, and its near misses */
    snprintf(path, sizeof path, "%s/tests/fixtures/tokenizers/qwen3.tokenizer.json.zst",
             DOPPEL_SOURCE_DIR);
    cJSON *qwen = load(path);
    CHECK(qwen != NULL);
    if (qwen) {
        const char *cfg = "{\"add_bos_token\": false, \"bos_token\": null, \"eos_token\": "
                          "\"<|im_end|>\", \"pad_token\": \"<|endoftext|>\"}";
        const char *dir = make_dir(qwen, cfg);
        dp_hf_gguf_vocab v;
        CHECK_REPORT(dir && dp_hf_gguf_vocab_load(dir, 151936, &v) == 0, "%s", dp_last_error());
        if (dir && v.tokens) {
            CHECK_EQ_STR("qwen2", v.pre);
            CHECK_EQ_INT(151936, (int)v.n_tokens);
            CHECK_EQ_INT(151645, v.eos_id);
            CHECK_EQ_INT(151643, v.pad_id);
            CHECK_EQ_INT(-1, v.bos_id);
            CHECK_EQ_INT(0, v.add_bos);
            CHECK_EQ_INT(DP_TOKTYPE_CONTROL, v.token_types[id_of(&v, "<|im_end|>")]);
            /* not special in tokenizer.json, but "<|...|>": CONTROL, as the converter */
            CHECK_EQ_INT(DP_TOKTYPE_CONTROL, v.token_types[id_of(&v, "<|fim_prefix|>")]);
            CHECK_EQ_INT(DP_TOKTYPE_USER_DEFINED, v.token_types[id_of(&v, "<think>")]);
            CHECK_EQ_INT(DP_TOKTYPE_NORMAL, v.token_types[id_of(&v, "\xc4\xa0")]); /* "Ġ" */
            CHECK_EQ_INT(DP_TOKTYPE_UNUSED, v.token_types[151935]);
            const cJSON *merges = cJSON_GetObjectItem(cJSON_GetObjectItem(qwen, "model"), "merges");
            CHECK_EQ_INT(cJSON_GetArraySize(merges), (int)v.n_merges);
            char first[64];
            snprintf(first, sizeof first, "%s %s",
                     cJSON_GetArrayItem(cJSON_GetArrayItem(merges, 0), 0)->valuestring,
                     cJSON_GetArrayItem(cJSON_GetArrayItem(merges, 0), 1)->valuestring);
            CHECK_EQ_STR(first, v.merges[0]); /* ["a", "b"] joined by a space */
            dp_hf_gguf_vocab_free(&v);
        }
        cJSON *nfc = cJSON_DetachItemFromObject(qwen, "normalizer");
        cJSON_AddNullToObject(qwen, "normalizer");
        expect_pre(qwen, 151936, NULL, "Qwen2's regex without NFC");
        cJSON_ReplaceItemInObject(qwen, "normalizer", nfc);
        cJSON *pat = cJSON_GetObjectItem(pre_step(qwen, 0), "pattern");
        char *re = dp_strdup(cJSON_GetObjectItem(pat, "Regex")->valuestring);
        char *digit = strstr(re, "\\p{N}|");
        if (digit) memcpy(digit, "\\p{N}+", 6); /* one character off: digits grouped */
        cJSON_ReplaceItemInObject(pat, "Regex", cJSON_CreateString(re));
        expect_pre(qwen, 151936, NULL, "Qwen2's regex one character off");
        free(re);
        cJSON_Delete(qwen);
    }

    /* llama-bpe: the real Llama 3 tokenizer; its TemplateProcessing adds BOS */
    snprintf(path, sizeof path, "%s/tests/fixtures/tokenizers/llama3.tokenizer.json.zst",
             DOPPEL_SOURCE_DIR);
    cJSON *llama = load(path);
    CHECK(llama != NULL);
    if (llama) {
        expect_pre(llama, 128256, "llama-bpe", "Llama 3");
        cJSON_ReplaceItemInObject(
            llama, "post_processor",
            cJSON_Parse("{\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": "
                        "{\"id\": \"<|begin_of_text|>\", \"type_id\": 0}}, {\"Sequence\": "
                        "{\"id\": \"A\", \"type_id\": 0}}]}"));
        const char *dir = make_dir(llama, "{\"bos_token\": \"<|begin_of_text|>\", \"eos_token\": "
                                          "\"<|eot_id|>\"}");
        dp_hf_gguf_vocab v;
        CHECK_REPORT(dir && dp_hf_gguf_vocab_load(dir, 128256, &v) == 0, "%s", dp_last_error());
        if (dir && v.tokens) {
            CHECK_EQ_INT(1, v.add_bos);
            CHECK_EQ_INT(128000, v.bos_id);
            CHECK_EQ_INT(128009, v.eos_id);
            CHECK_EQ_INT(0, (int)v.n_tokens - 128256);
            dp_hf_gguf_vocab_free(&v);
        }
        cJSON_ReplaceItemInObject(cJSON_GetObjectItem(llama, "model"), "ignore_merges",
                                  cJSON_CreateFalse());
        expect_pre(llama, 128256, NULL, "Llama 3's regex without ignore_merges");
        cJSON_Delete(llama);
    }
    cJSON_Delete(tiny);
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (!getenv("DOPPEL_KEEP") && system(cmd)) fprintf(stderr, "could not remove %s\n", tmp);
    return check_done();
}
