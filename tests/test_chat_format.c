/* Chat formats: rendered text written from the template definitions (REFERENCE.md section 7),
 * format recognition, the loss mask, and (with ../shared) ids identical to each model's own
 * chat_template rendered by jinja2 and encoded by HF `tokenizers`
 * (tests/fixtures/chat-render.json, made by tests/reference/make_tokenizer_corpus.py). */
#include "check.h"
#include "data/chat_format.h"
#include "data/base/error.h"
#include "data/tokenizer.h"

#include <cjson/cJSON.h>

#define MSG(role, text)                                                                            \
    { role, text, sizeof(text) - 1 }
static const dp_chat_msg conv[] = {
    MSG(DP_ROLE_SYSTEM, "Você é o kaiaku."), MSG(DP_ROLE_USER, "[ana]: bora jogar?"),
    MSG(DP_ROLE_ASSISTANT, "bora kkkk"),     MSG(DP_ROLE_USER, " [bia]: eu tb \n"),
    MSG(DP_ROLE_ASSISTANT, "  fechou  "),
};

static void test_text(void) {
    dp_buf b = {0};
    CHECK_EQ_INT(0, dp_chat_render_text(DP_CHAT_CHATML, conv, 5, true, &b));
    CHECK_EQ_STR("<|im_start|>system\nVocê é o kaiaku.<|im_end|>\n"
                 "<|im_start|>user\n[ana]: bora jogar?<|im_end|>\n"
                 "<|im_start|>assistant\nbora kkkk<|im_end|>\n"
                 "<|im_start|>user\n [bia]: eu tb \n<|im_end|>\n"
                 "<|im_start|>assistant\n  fechou  <|im_end|>\n"
                 "<|im_start|>assistant\n",
                 b.data);
    dp_buf_free(&b);
    /* Llama-3: content | trim, <|begin_of_text|> once */
    CHECK_EQ_INT(0, dp_chat_render_text(DP_CHAT_LLAMA3, conv, 5, false, &b));
    CHECK_EQ_STR("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nVocê é o "
                 "kaiaku.<|eot_id|>"
                 "<|start_header_id|>user<|end_header_id|>\n\n[ana]: bora jogar?<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\nbora kkkk<|eot_id|>"
                 "<|start_header_id|>user<|end_header_id|>\n\n[bia]: eu tb<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\nfechou<|eot_id|>",
                 b.data);
    dp_buf_free(&b);
    const dp_chat_msg bad[] = {{DP_ROLE_USER, NULL, 0}};
    CHECK_EQ_INT(-1, dp_chat_render_text(DP_CHAT_CHATML, bad, 1, false, &b));
    dp_buf_free(&b);
}

static void test_choose(void) {
    dp_chat_format f = 0;
    CHECK_EQ_INT(0, dp_chat_format_choose("{{'<|im_start|>' + m + '<|im_end|>'}}", NULL, &f));
    CHECK_EQ_INT(DP_CHAT_CHATML, f);
    CHECK_EQ_INT(0, dp_chat_format_choose("<|start_header_id|>x<|eot_id|>", NULL, &f));
    CHECK_EQ_INT(DP_CHAT_LLAMA3, f);
    CHECK_EQ_INT(0, dp_chat_format_choose("<|start_header_id|>x<|eot_id|>", "chatml", &f));
    CHECK_EQ_INT(DP_CHAT_CHATML, f);
    CHECK_EQ_INT(-1, dp_chat_format_choose("[INST] {{ m }} [/INST]", NULL, &f));
    CHECK(strstr(dp_last_error(), "--chat-format chatml|llama3") != NULL);
    CHECK_EQ_INT(-1, dp_chat_format_choose(NULL, NULL, &f));
    CHECK(strstr(dp_last_error(), "--chat-format chatml|llama3") != NULL);
    CHECK_EQ_INT(-1, dp_chat_format_choose(NULL, "vicuna", &f));
    CHECK(strstr(dp_last_error(), "vicuna") != NULL);
}

/* Concatenated bytes of the masked (or unmasked) tokens. */
static void masked_text(dp_tokenizer *t, const dp_chat_tokens *c, int want, dp_buf *out) {
    for (size_t i = 0; i < c->ids.n; i++) {
        size_t l;
        const char *b = dp_tokenizer_token_bytes(t, c->ids.v[i], &l);
        if (c->mask[i] == want && b) dp_buf_append(out, b, l);
    }
    dp_buf_append(out, "", 0);
}

/* A toy byte-level tokenizer with the control tokens of both formats (no ../shared). */
static dp_tokenizer *toy(void) {
    static char bytes[256][3];
    const char *tokens[270];
    int32_t types[270];
    int n = 0;
    for (int b = 0, k = 0; b < 256; b++) {
        bool self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        int cp = self ? b : 256 + k++;
        if (cp < 0x80)
            bytes[b][0] = (char)cp;
        else
            bytes[b][0] = (char)(0xC0 | (cp >> 6)), bytes[b][1] = (char)(0x80 | (cp & 0x3F));
        types[n] = DP_TOKTYPE_NORMAL;
        tokens[n++] = bytes[b];
    }
    const char *sp[] = {"<|im_start|>",      "<|im_end|>",     "<|endoftext|>",
                        "<|begin_of_text|>", "<|eot_id|>",     "<|start_header_id|>",
                        "<|end_header_id|>", "<|end_of_text|>"};
    for (int i = 0; i < 8; i++) types[n] = DP_TOKTYPE_CONTROL, tokens[n++] = sp[i];
    dp_tokenizer_arrays a = {.name = "toy",
                             .pre = "gpt2",
                             .tokens = tokens,
                             .token_types = types,
                             .n_tokens = (size_t)n,
                             .bos_id = -1,
                             .eos_id = 257,
                             .pad_id = -1};
    return dp_tokenizer_from_arrays(&a);
}

static void test_mask_toy(void) {
    dp_tokenizer *t = toy();
    CHECK(t != NULL);
    if (!t) return;
    for (int f = DP_CHAT_CHATML; f <= DP_CHAT_LLAMA3; f++) {
        dp_chat_tokens c = {0};
        CHECK_EQ_INT(0, dp_chat_render(t, (dp_chat_format)f, conv, 5, true, &c));
        /* all tokens decode to the rendered text */
        dp_buf want = {0}, got = {0};
        dp_chat_render_text((dp_chat_format)f, conv, 5, true, &want);
        CHECK_EQ_INT(0, dp_tokenizer_decode(t, c.ids.v, c.ids.n, false, &got));
        CHECK_EQ_STR(want.data, got.data);
        dp_buf_free(&want);
        dp_buf_free(&got);
        /* the mask covers exactly the assistant contents and their end-of-turn tokens */
        masked_text(t, &c, 1, &got);
        CHECK_EQ_STR(f == DP_CHAT_CHATML ? "bora kkkk<|im_end|>  fechou  <|im_end|>"
                                         : "bora kkkk<|eot_id|>fechou<|eot_id|>",
                     got.data);
        dp_buf_free(&got);
        dp_chat_tokens_free(&c);
    }
    int32_t stop[4];
    int n = dp_chat_stop_ids(t, DP_CHAT_CHATML, stop, 4);
    CHECK(n == 2 && stop[0] == 257 && stop[1] == 258); /* im_end (= eos), endoftext */
    dp_tokenizer_free(t);
}

/* With ../shared: ids equal to the model's own template + HF tokenizers. */
static void test_fixture(const char *shared) {
    char path[8192];
    snprintf(path, sizeof path, "%s/tests/fixtures/chat-render.json", DOPPEL_SOURCE_DIR);
    char *data;
    size_t len;
    CHECK_EQ_INT(0, dp_read_file(path, &data, &len));
    cJSON *root = cJSON_ParseWithLength(data, len);
    free(data);
    CHECK(cJSON_IsArray(root));
    /* expected masked text per conversation, worked out from the pre-tokenizer regex: in
     * ChatML "assistant\n" + "\ncomeça" tokenizes "\n\n" as one piece, which holds content */
    const char *masked[2][3] = {
        {"", "pior né<|im_end|>", "\n\ncomeça com newline\n\n<|im_end|> 👍🏽 vlw\n<|im_end|>"},
        {"", "pior né<|eot_id|>", "começa com newline<|eot_id|>👍🏽 vlw<|eot_id|>"}};
    const char *names[] = {"qwen3", "llama3"};
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/tokenizers/%s", shared, names[k]);
        dp_tokenizer *t = dp_tokenizer_load(path);
        CHECK_REPORT(t != NULL, "%s", dp_last_error());
        if (!t) continue;
        dp_chat_format f;
        CHECK_EQ_INT(0, dp_chat_format_choose(dp_tokenizer_chat_template(t), NULL, &f));
        CHECK_EQ_INT(k == 0 ? DP_CHAT_CHATML : DP_CHAT_LLAMA3, f);
        int ci = 0;
        const cJSON *row;
        cJSON_ArrayForEach(row, root) {
            const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(row, "messages"), *m;
            dp_chat_msg mv[16];
            size_t n = 0;
            cJSON_ArrayForEach(m, msgs) {
                const char *role = cJSON_GetObjectItemCaseSensitive(m, "role")->valuestring;
                mv[n].role = !strcmp(role, "system") ? DP_ROLE_SYSTEM
                             : !strcmp(role, "user") ? DP_ROLE_USER
                                                     : DP_ROLE_ASSISTANT;
                mv[n].content = cJSON_GetObjectItemCaseSensitive(m, "content")->valuestring;
                mv[n].len = strlen(mv[n].content);
                n++;
            }
            const cJSON *exp = cJSON_GetObjectItemCaseSensitive(row, names[k]);
            const cJSON *text = cJSON_GetObjectItemCaseSensitive(exp, "text");
            const cJSON *ids = cJSON_GetObjectItemCaseSensitive(exp, "ids");
            dp_buf b = {0};
            CHECK_EQ_INT(0, dp_chat_render_text(f, mv, n, true, &b));
            CHECK_EQ_STR(text->valuestring, b.data);
            dp_buf_free(&b);
            dp_chat_tokens c = {0};
            CHECK_EQ_INT(0, dp_chat_render(t, f, mv, n, true, &c));
            bool same = c.ids.n == (size_t)cJSON_GetArraySize(ids);
            for (size_t i = 0; same && i < c.ids.n; i++)
                same = cJSON_GetArrayItem(ids, (int)i)->valueint == c.ids.v[i];
            CHECK_REPORT(same, "%s conversation %d: ids differ from the template's (%zu vs %d)",
                         names[k], ci, c.ids.n, cJSON_GetArraySize(ids));
            masked_text(t, &c, 1, &b);
            if (ci < 3) CHECK_EQ_STR(masked[k][ci], b.data);
            dp_buf_free(&b);
            dp_chat_tokens_free(&c);
            ci++;
        }
        CHECK_EQ_INT(3, ci);
        int32_t stop[4];
        int ns = dp_chat_stop_ids(t, f, stop, 4);
        if (k == 0)
            CHECK(ns == 2 && stop[0] == 151645 && stop[1] == 151643);
        else
            CHECK(ns == 2 && stop[0] == 128009 && stop[1] == 128001);
        dp_tokenizer_free(t);
    }
    cJSON_Delete(root);
}

/* A tool turn: ChatML writes the `tool` role as given, Llama 3 an `ipython` turn with the
 * content as a JSON string (not trimmed); neither is in the loss mask. */
static void test_tool_role(void) {
    const dp_chat_msg m[] = {MSG(DP_ROLE_USER, "read it"), MSG(DP_ROLE_ASSISTANT, "[LOAD_FILE a]"),
                             MSG(DP_ROLE_TOOL, " \"a\"\tb\\\n\x01 é "),
                             MSG(DP_ROLE_ASSISTANT, "ok")};
    dp_buf b = {0};
    CHECK_EQ_INT(0, dp_chat_render_text(DP_CHAT_CHATML, m, 4, false, &b));
    CHECK_EQ_STR("<|im_start|>user\nread it<|im_end|>\n<|im_start|>assistant\n[LOAD_FILE "
                 "a]<|im_end|>\n<|im_start|>tool\n \"a\"\tb\\\n\x01 é <|im_end|>\n"
                 "<|im_start|>assistant\nok<|im_end|>\n",
                 b.data);
    dp_buf_free(&b);
    CHECK_EQ_INT(0, dp_chat_render_text(DP_CHAT_LLAMA3, m, 4, false, &b));
    CHECK_EQ_STR("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nread it<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\n[LOAD_FILE a]<|eot_id|>"
                 "<|start_header_id|>ipython<|end_header_id|>\n\n\" \\\"a\\\"\\tb\\\\\\n\\u0001 "
                 "é \"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nok<|eot_id|>",
                 b.data);
    dp_buf_free(&b);
    dp_tokenizer *t = toy();
    CHECK(t != NULL);
    for (int f = DP_CHAT_CHATML; t && f <= DP_CHAT_LLAMA3; f++) {
        dp_chat_tokens c = {0};
        CHECK_EQ_INT(0, dp_chat_render(t, (dp_chat_format)f, m, 4, true, &c));
        dp_buf want = {0}, got = {0};
        dp_chat_render_text((dp_chat_format)f, m, 4, true, &want);
        CHECK_EQ_INT(0, dp_tokenizer_decode(t, c.ids.v, c.ids.n, false, &got));
        CHECK_EQ_STR(want.data, got.data);
        dp_buf_free(&got);
        masked_text(t, &c, 1, &got);
        CHECK_EQ_STR(f == DP_CHAT_CHATML ? "[LOAD_FILE a]<|im_end|>ok<|im_end|>"
                                         : "[LOAD_FILE a]<|eot_id|>ok<|eot_id|>",
                     got.data);
        dp_buf_free(&want);
        dp_buf_free(&got);
        dp_chat_tokens_free(&c);
    }
    dp_tokenizer_free(t);
    dp_role r;
    CHECK(dp_role_parse("tool", &r) == 0 && r == DP_ROLE_TOOL);
    CHECK(dp_role_parse("ipython", &r) == -1);
    const dp_chat_msg bad[] = {{(dp_role)(DP_ROLE_TOOL + 1), "x", 1}};
    CHECK_EQ_INT(-1, dp_chat_render_text(DP_CHAT_CHATML, bad, 1, false, &b));
    dp_buf_free(&b);
}

/* With ../shared: tool turns equal to what each model's own template renders (Llama 3.1's
 * ipython turn, Qwen3's <tool_response> user turn, SmolLM2's plain ChatML `tool` turn) in the
 * style dp_chat_tool_style_for picks from the real template text, and the same ids as HF
 * tokenizers where the fixture has them (tests/fixtures/tools/tool-render.json, made by
 * tests/reference/make_tool_render.py). */
static void test_tool_fixture(const char *shared) {
    char path[8192];
    snprintf(path, sizeof path, "%s/tests/fixtures/tools/tool-render.json", DOPPEL_SOURCE_DIR);
    char *data;
    size_t len;
    CHECK_EQ_INT(0, dp_read_file(path, &data, &len));
    cJSON *root = cJSON_ParseWithLength(data, len);
    free(data);
    const cJSON *tpls = cJSON_GetObjectItemCaseSensitive(root, "templates");
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(root, "cases"), *row;
    int n_cases = 0, n_ids = 0;
    cJSON_ArrayForEach(row, cases) {
        const char *name = cJSON_GetObjectItemCaseSensitive(row, "name")->valuestring;
        const char *tname = cJSON_GetObjectItemCaseSensitive(row, "template")->valuestring;
        const char *tpl = cJSON_GetObjectItemCaseSensitive(tpls, tname)->valuestring;
        dp_chat_format f = 0;
        CHECK_EQ_INT(0, dp_chat_format_choose(tpl, NULL, &f));
        CHECK_EQ_STR(cJSON_GetObjectItemCaseSensitive(row, "format")->valuestring,
                     dp_chat_format_name(f));
        dp_chat_tool_style st = dp_chat_tool_style_for(tpl);
        dp_chat_msg mv[16];
        size_t n = 0;
        bool style_used = false;
        const cJSON *m;
        cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(row, "messages")) {
            const char *role = cJSON_GetObjectItemCaseSensitive(m, "role")->valuestring;
            const char *content = cJSON_GetObjectItemCaseSensitive(m, "content")->valuestring;
            CHECK(n < 16 && dp_role_parse(role, &mv[n].role) == 0);
            /* the fixture's tool turn is the one in the template's style */
            if (!strcmp(role, "tool") || !strncmp(content, "<tool_response>", 15)) {
                CHECK_REPORT(!strcmp(st.role, role), "%s: style role %s, template wants %s", name,
                             st.role, role);
                style_used = true;
            }
            mv[n].content = content;
            mv[n].len = strlen(content);
            n++;
        }
        CHECK(style_used);
        dp_buf b = {0};
        CHECK_EQ_INT(0, dp_chat_render_text(f, mv, n, true, &b));
        CHECK_REPORT(
            b.data && !strcmp(b.data, cJSON_GetObjectItemCaseSensitive(row, "text")->valuestring),
            "%s: the rendered text differs from the template's", name);
        dp_buf_free(&b);
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(row, "ids");
        const cJSON *tok = cJSON_GetObjectItemCaseSensitive(row, "tokenizer");
        if (cJSON_IsArray(ids) && cJSON_IsString(tok)) {
            snprintf(path, sizeof path, "%s/tokenizers/%s", shared, tok->valuestring);
            dp_tokenizer *t = dp_tokenizer_load(path);
            CHECK_REPORT(t != NULL, "%s", dp_last_error());
            dp_chat_tokens c = {0};
            if (t) CHECK_EQ_INT(0, dp_chat_render(t, f, mv, n, true, &c));
            bool same = t && c.ids.n == (size_t)cJSON_GetArraySize(ids);
            for (size_t i = 0; same && i < c.ids.n; i++)
                same = cJSON_GetArrayItem(ids, (int)i)->valueint == c.ids.v[i];
            CHECK_REPORT(same, "%s: ids differ from the template's (%zu vs %d)", name, c.ids.n,
                         cJSON_GetArraySize(ids));
            n_ids++;
            dp_chat_tokens_free(&c);
            dp_tokenizer_free(t);
        }
        n_cases++;
    }
    CHECK_EQ_INT(9, n_cases);
    CHECK_EQ_INT(4, n_ids);
    cJSON_Delete(root);
    /* Llama 3.0's template (../shared/tokenizers/llama3) has no tool turn: a system message */
    snprintf(path, sizeof path, "%s/tokenizers/llama3", shared);
    dp_tokenizer *t = dp_tokenizer_load(path);
    CHECK(t != NULL);
    if (t) CHECK_EQ_STR("system", dp_chat_tool_style_for(dp_tokenizer_chat_template(t)).role);
    dp_tokenizer_free(t);
}

int main(void) {
    test_text();
    test_choose();
    test_mask_toy();
    test_tool_role();
    const char *shared = check_shared_dir();
    if (shared) {
        test_fixture(shared);
        test_tool_fixture(shared);
    } else
        fprintf(stderr, "../shared not found: the real-tokenizer part is not run\n");
    return check_done();
}
