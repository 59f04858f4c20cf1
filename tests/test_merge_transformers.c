/* doppel merge --format hf checked by transformers (tests/reference/check_merge_hf.py): on the
 * tiny llama, qwen2 and qwen3 models with a random adapter, transformers' logits on the merged
 * directory (fp32 and the default bf16) equal doppel's forward with the adapter unmerged (fp32:
 * within 1e-4; bf16: doppel's own forward over the same bf16 weights, within 1e-4), and the
 * exported chat templates (ChatML and Llama-3, with and without a default system prompt) render
 * the conversations of tests/fixtures/chat-render.json and a few harder ones exactly as
 * data/chat_format.c does, under jinja2 and through apply_chat_template. Skipped (77) when
 * python3 lacks transformers, torch, jinja2 or safetensors. DOPPEL_MERGE_EXTRA_MODEL=DIR adds a
 * Hugging Face model of one's own to the logits check (by hand: SmolLM2, see the merge notes). */
#include "check.h"
#include "data/base/json.h"
#include "infer/export_hf.h"
#include "merge_fixture.h"

#include <cjson/cJSON.h>

#define FIXTURES DOPPEL_SOURCE_DIR "/tests/fixtures/"

static const int32_t ids[] = {1, 17, 42, 99, 3, 250, 7, 64, 128, 5, 200, 11, 2, 1, 31};
#define T ((int)(sizeof ids / sizeof ids[0]))

static const char *SYSTEM = "Você é o \"mossy\".\nResponda curto: {{ não }} {% raw %} \\ fim\t";

/* doppel's logits (T, V) and the ids into PATH as safetensors */
static int save_logits(const char *path, const float *logits, int V) {
    dp_st_writer *w = dp_st_writer_new();
    int64_t s1[1] = {T}, s2[2] = {T, V};
    int rc = !w || dp_st_writer_add(w, "ids", DP_DT_I32, 1, s1, ids) ||
             dp_st_writer_add(w, "logits", DP_DT_F32, 2, s2, logits) || dp_st_writer_save(w, path);
    dp_st_writer_free(w);
    return rc ? -1 : 0;
}

static cJSON *messages_json(const dp_chat_msg *m, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "role", dp_role_name(m[i].role));
        cJSON_AddStringToObject(o, "content", m[i].content);
        cJSON_AddItemToArray(a, o);
    }
    return a;
}

/* What chat and training render: the system prompt first unless the conversation has one. */
static char *doppel_render(dp_chat_format f, const char *system, const dp_chat_msg *m, int n,
                           bool gen) {
    dp_chat_msg all[32];
    int k = 0;
    if (system && (n == 0 || m[0].role != DP_ROLE_SYSTEM))
        all[k++] = (dp_chat_msg){DP_ROLE_SYSTEM, system, strlen(system)};
    for (int i = 0; i < n && k < 32; i++) all[k++] = m[i];
    dp_buf b = {0};
    if (dp_chat_render_text(f, all, (size_t)k, gen, &b)) return NULL;
    return b.data;
}

/* conversations: chat-render.json's, plus edge cases */
static int load_conversations(dp_chat_msg conv[][8], int *len, int max) {
    char *text = NULL;
    size_t tl = 0;
    int n = 0;
    if (dp_read_file(FIXTURES "chat-render.json", &text, &tl)) return -1;
    cJSON *j = cJSON_Parse(text), *c;
    cJSON_ArrayForEach(c, j) {
        if (n >= max - 3) break;
        cJSON *m;
        int k = 0;
        cJSON_ArrayForEach(m, cJSON_GetObjectItem(c, "messages")) {
            if (k == 8) break;
            dp_role r;
            if (dp_role_parse(cJSON_GetStringValue(cJSON_GetObjectItem(m, "role")), &r)) continue;
            const char *s = dp_strdup(cJSON_GetStringValue(cJSON_GetObjectItem(m, "content")));
            conv[n][k++] = (dp_chat_msg){r, s, strlen(s)};
        }
        len[n++] = k;
    }
    cJSON_Delete(j);
    free(text);
    /* surrounding whitespace (Llama-3 trims it), template-looking text, an empty reply */
    conv[n][0] = (dp_chat_msg){DP_ROLE_USER, "  [ana]: {{ oi }}\n\n", 19};
    conv[n][1] = (dp_chat_msg){DP_ROLE_ASSISTANT, "", 0};
    conv[n][2] = (dp_chat_msg){DP_ROLE_USER, "[ana]: '\"\\ {% if %}", 19};
    len[n++] = 3;
    conv[n][0] = (dp_chat_msg){DP_ROLE_SYSTEM, " outro sistema ", 15};
    conv[n][1] = (dp_chat_msg){DP_ROLE_USER, "[bo]: ok", 8};
    len[n++] = 2;
    return n;
}

int main(void) {
    if (system("python3 -c 'import transformers, torch, jinja2, safetensors' >/dev/null 2>&1"))
        SKIP("python3 with transformers, torch, jinja2 and safetensors is not installed");
    char tmp[] = "/tmp/doppel-test-merge-tf.XXXXXX";
    if (!mkdtemp(tmp)) return 1;
    cJSON *cases = cJSON_CreateObject();
    cJSON *models = cJSON_AddArrayToObject(cases, "models");
    cJSON *templates = cJSON_AddArrayToObject(cases, "templates");
    cJSON *tok_templates = cJSON_AddArrayToObject(cases, "tokenizer_templates");
    static dp_chat_msg conv[24][8];
    int clen[24];
    int nconv = load_conversations(conv, clen, 24);
    CHECK(nconv > 3);

    const char *names[] = {"tiny-llama", "tiny-qwen2", "tiny-qwen3", "extra"};
    const char *extra = getenv("DOPPEL_MERGE_EXTRA_MODEL");
    for (int a = 0; a < (extra && *extra ? 4 : 3); a++) {
        char model[4200], run[4200], out[4200], out16[4200], p[4300];
        snprintf(model, sizeof model, a == 3 ? "%s" : FIXTURES "%s", a == 3 ? extra : names[a]);
        snprintf(run, sizeof run, "%s/%s-run", tmp, names[a]);
        /* the qwen2 run has no system prompt: the template without a default */
        const char *sys = a == 1 ? NULL : SYSTEM;
        /* a real model's logits run away under the tiny models' amplitude */
        CHECK(mfx_make_adapter(model, run, sys, "chatml", 11 + a, a == 3 ? 0.02f : 0.3f) == 0);
        int V = 0;
        float *unmerged = mfx_logits(model, true, run, ids, T, &V);
        CHECK(unmerged != NULL);
        if (!unmerged) continue;
        for (int k = 0; k < 2; k++) {
            snprintf(k ? out16 : out, sizeof out, "%s/%s-%s", tmp, names[a], k ? "bf16" : "fp32");
            dp_merge *mg = dp_merge_open(model, run, DP_MERGE_INTO_DEQUANTIZED, true);
            dp_export_hf_opts eo = {
                .out_dir = k ? out16 : out, .dtype = k ? DP_DT_BF16 : DP_DT_F32, .quiet = true};
            CHECK_REPORT(mg && dp_export_hf(mg, &eo) == 0, "merge: %s", dp_last_error());
            dp_merge_close(mg);
        }
        /* fp32 export vs doppel unmerged; bf16 export vs doppel's forward over that export */
        int V16 = 0;
        float *l16 = mfx_logits(out16, false, NULL, ids, T, &V16);
        CHECK(l16 != NULL);
        for (int k = 0; k < 2 && l16; k++) {
            snprintf(p, sizeof p, "%s/%s-logits-%d.safetensors", tmp, names[a], k);
            CHECK(save_logits(p, k ? l16 : unmerged, V) == 0);
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "dir", k ? out16 : out);
            cJSON_AddStringToObject(m, "logits", p);
            cJSON_AddNumberToObject(m, "abs_tol", 1e-4);
            cJSON_AddNumberToObject(m, "rel_tol", 1e-4);
            cJSON_AddItemToArray(models, m);
        }
        for (int c = 0; c < nconv; c++)
            for (int gen = 0; gen < 2; gen++) {
                char *want = doppel_render(DP_CHAT_CHATML, sys, conv[c], clen[c], gen);
                CHECK(want != NULL);
                cJSON *t = cJSON_CreateObject();
                cJSON_AddStringToObject(t, "dir", out);
                cJSON_AddItemToObject(t, "messages", messages_json(conv[c], clen[c]));
                cJSON_AddBoolToObject(t, "add_generation_prompt", gen);
                cJSON_AddStringToObject(t, "expected", want ? want : "");
                cJSON_AddItemToArray(tok_templates, t);
                free(want);
            }
        free(unmerged);
        free(l16);
    }
    /* both formats' templates as text, with and without a default system prompt */
    for (int f = DP_CHAT_CHATML; f <= DP_CHAT_LLAMA3; f++)
        for (int s = 0; s < 2; s++) {
            dp_buf tmpl = {0};
            CHECK(dp_export_jinja_template((dp_chat_format)f, s ? SYSTEM : NULL, &tmpl) == 0);
            for (int c = 0; c < nconv; c++)
                for (int gen = 0; gen < 2; gen++) {
                    char *want =
                        doppel_render((dp_chat_format)f, s ? SYSTEM : NULL, conv[c], clen[c], gen);
                    CHECK(want != NULL);
                    cJSON *t = cJSON_CreateObject();
                    cJSON_AddStringToObject(t, "template", tmpl.data);
                    cJSON_AddItemToObject(t, "messages", messages_json(conv[c], clen[c]));
                    cJSON_AddBoolToObject(t, "add_generation_prompt", gen);
                    cJSON_AddStringToObject(t, "expected", want ? want : "");
                    cJSON_AddItemToArray(templates, t);
                    free(want);
                }
            dp_buf_free(&tmpl);
        }
    char path[4200], cmd[8600];
    snprintf(path, sizeof path, "%s/cases.json", tmp);
    char *text = cJSON_Print(cases);
    CHECK(text && dp_write_file_atomic(path, text, strlen(text)) == 0);
    free(text);
    cJSON_Delete(cases);
    snprintf(cmd, sizeof cmd, "python3 %s/tests/reference/check_merge_hf.py %s", DOPPEL_SOURCE_DIR,
             path);
    int rc = system(cmd);
    CHECK_REPORT(rc == 0, "check_merge_hf.py failed (exit status %d)", rc);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (!getenv("DOPPEL_KEEP") && system(cmd)) fprintf(stderr, "could not remove %s\n", tmp);
    return check_done();
}
