/* doppel merge --ollama: the Modelfile's lines (FROM, ADAPTER, SYSTEM, PARAMETER stop and chat's
 * sampling defaults), and its Go TEMPLATE rendered by Go's text/template
 * (tests/reference/render_ollama_template.go, which reads the Modelfile as Ollama's parser does,
 * puts SYSTEM first and merges consecutive messages of one role as Ollama does) byte-equal to
 * data/chat_format.c's rendering of the same conversations: ChatML and Llama-3 (with and without
 * <|begin_of_text|>), with and without a default system prompt, the generation prompt after a
 * user or system message and a last assistant message left open (Ollama continues it). Not
 * compared, and counted: conversations with two consecutive messages of one role (Ollama merges
 * them) and Llama-3 messages with surrounding whitespace (training strips it; an Ollama template
 * cannot). The Modelfile checks run everywhere; the rendering is skipped without `go`. */
#include "check.h"
#include "data/base/json.h"
#include "infer/export_ollama.h"
#include "merge_fixture.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <string.h>

#define FIXTURES DOPPEL_SOURCE_DIR "/tests/fixtures/"

static const char *SYSTEM = "Você é o \"mossy\".\nResponda curto: {{ não }} {% raw %} \\ fim\t";
/* Llama-3 strips a message; its system prompt ends in no whitespace so that it is compared */
static const char *SYSTEM_LLAMA3 = "Você é o \"mossy\".\nResponda: {{ não }} {% raw %} \\ fim";

static int load_conversations(dp_chat_msg conv[][8], int *len, int max) {
    char *text = NULL;
    size_t tl = 0;
    int n = 0;
    if (dp_read_file(FIXTURES "chat-render.json", &text, &tl)) return -1;
    cJSON *j = cJSON_Parse(text), *c;
    cJSON_ArrayForEach(c, j) {
        if (n >= max - 7) break;
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
    /* template-looking text, quotes, an empty reply, a last assistant message (a prefill),
     * a system message of the conversation's own, an empty conversation */
    conv[n][0] = (dp_chat_msg){DP_ROLE_USER, "[ana]: {{ .Content }} {{ oi }}", 30};
    conv[n][1] = (dp_chat_msg){DP_ROLE_ASSISTANT, "", 0};
    conv[n][2] = (dp_chat_msg){DP_ROLE_USER, "[ana]: '\"\\ {% if %} \"\"\"", 24};
    len[n++] = 3;
    conv[n][0] = (dp_chat_msg){DP_ROLE_USER, "[bo]: bora jogar hoje?", 22};
    conv[n][1] = (dp_chat_msg){DP_ROLE_ASSISTANT, "bora, que horas", 15};
    len[n++] = 2;
    conv[n][0] = (dp_chat_msg){DP_ROLE_SYSTEM, "outro sistema", 13};
    conv[n][1] = (dp_chat_msg){DP_ROLE_USER, "[bo]: ok", 8};
    len[n++] = 2;
    conv[n][0] = (dp_chat_msg){DP_ROLE_USER, "[carla]: kkkkkk", 15};
    conv[n][1] = (dp_chat_msg){DP_ROLE_ASSISTANT, "kkkk né", 8};
    conv[n][2] = (dp_chat_msg){DP_ROLE_USER, "[carla]: e aí?\n[bo]: fala", 26};
    conv[n][3] = (dp_chat_msg){DP_ROLE_ASSISTANT, "oi\tgente", 9};
    conv[n][4] = (dp_chat_msg){DP_ROLE_USER, "[ana]: 🙂", 11};
    len[n++] = 5;
    conv[n][0] = (dp_chat_msg){DP_ROLE_USER, "  [ana]: oi\n\n", 13};
    len[n++] = 1;
    len[n++] = 0;
    return n;
}

static bool space_at_ends(const dp_chat_msg *m) {
    return m->len && (isspace((unsigned char)m->content[0]) ||
                      isspace((unsigned char)m->content[m->len - 1]));
}

/* What Ollama must render: training's text, the system prompt first unless the conversation
 * has one; the generation prompt unless the last message is the assistant's, which stays open.
 * NULL (with *skip set) for a conversation the template cannot match by design. */
static char *expected(dp_chat_format f, bool with_bos, const char *system, const dp_chat_msg *m,
                      int n, int *skip) {
    dp_chat_msg all[16];
    int k = 0;
    if (system && (n == 0 || m[0].role != DP_ROLE_SYSTEM))
        all[k++] = (dp_chat_msg){DP_ROLE_SYSTEM, system, strlen(system)};
    for (int i = 0; i < n; i++) all[k++] = m[i];
    for (int i = 0; i < k; i++)
        if ((i && all[i].role == all[i - 1].role) ||
            (f == DP_CHAT_LLAMA3 && space_at_ends(&all[i]))) {
            (*skip)++;
            return NULL;
        }
    bool open = k && all[k - 1].role == DP_ROLE_ASSISTANT;
    dp_buf b = {0};
    if (dp_chat_render_text(f, all, (size_t)k, !open, &b)) return NULL;
    const char *close = f == DP_CHAT_CHATML ? "<|im_end|>\n" : "<|eot_id|>";
    if (open && b.len >= strlen(close)) b.data[b.len -= strlen(close)] = 0;
    const char *bos = "<|begin_of_text|>";
    if (f == DP_CHAT_LLAMA3 && !with_bos && !strncmp(b.data, bos, strlen(bos)))
        memmove(b.data, b.data + strlen(bos), b.len - strlen(bos) + 1);
    return b.data;
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

int main(void) {
    char tmp[] = "/tmp/doppel-test-merge-ollama.XXXXXX";
    if (!mkdtemp(tmp)) return 1;
    const char *model = FIXTURES "tiny-llama";
    static dp_chat_msg conv[32][8];
    int clen[32];
    int nconv = load_conversations(conv, clen, 32);
    CHECK(nconv > 7);
    cJSON *cases = cJSON_CreateArray();
    int skipped = 0, n_cases = 0;
    /* f: ChatML, Llama-3; s: with / without a system prompt; bos: Llama-3 with its own BOS */
    for (int f = DP_CHAT_CHATML; f <= DP_CHAT_LLAMA3; f++)
        for (int s = 0; s < 2; s++) {
            char run[4200], gguf[4200], mf[4300], *text = NULL;
            const char *sys = !s ? NULL : f == DP_CHAT_CHATML ? SYSTEM : SYSTEM_LLAMA3;
            snprintf(run, sizeof run, "%s/run-%d-%d", tmp, f, s);
            snprintf(gguf, sizeof gguf, "%s/out-%d-%d.gguf", tmp, f, s);
            CHECK(mfx_make_adapter(model, run, sys, dp_chat_format_name((dp_chat_format)f), 3,
                                   0.1f) == 0);
            dp_merge *mg = dp_merge_open(model, run, DP_MERGE_INTO_DEQUANTIZED, true);
            CHECK_REPORT(mg && dp_export_ollama(mg, gguf, s) == 0, "ollama: %s", dp_last_error());
            /* never overwritten */
            CHECK(mg && dp_export_ollama(mg, gguf, s) != 0 && strstr(dp_last_error(), "exists"));
            dp_merge_close(mg);
            dp_ollama_modelfile_path(gguf, mf, sizeof mf);
            size_t tl = 0;
            CHECK(dp_read_file(mf, &text, &tl) == 0);
            if (!text) continue;
            /* s = 1: LoRA GGUF over the base; s = 0: a merged GGUF */
            char want[4400];
            snprintf(want, sizeof want, "\nADAPTER ./out-%d-%d.gguf\n", f, s);
            CHECK(s ? strstr(text, want) && strstr(text, "\nFROM /")
                    : !strstr(text, "ADAPTER") && strstr(text, "\nFROM ./out-"));
            CHECK(!strstr(text, "SYSTEM") == !s);
            /* the tiny model's eos is <|im_end|>; ChatML adds <|endoftext|> */
            CHECK(strstr(text, "PARAMETER stop \"<|im_end|>\"\n") != NULL);
            CHECK(f != DP_CHAT_CHATML || strstr(text, "PARAMETER stop \"<|endoftext|>\"\n"));
            CHECK(strstr(text, "PARAMETER temperature 0.7\nPARAMETER top_k 40\nPARAMETER top_p "
                               "0.9\nPARAMETER min_p 0.05\nPARAMETER repeat_penalty 1.1\n"
                               "PARAMETER repeat_last_n 64\n") != NULL);
            free(text);
            for (int c = 0; c < nconv; c++) {
                char *exp = expected((dp_chat_format)f, false, sys, conv[c], clen[c], &skipped);
                if (!exp) continue;
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "modelfile", mf);
                cJSON_AddItemToObject(o, "messages", messages_json(conv[c], clen[c]));
                cJSON_AddStringToObject(o, "expected", exp);
                cJSON_AddItemToArray(cases, o);
                n_cases++;
                free(exp);
            }
        }
    /* Llama-3 for a GGUF whose tokenizer adds no BOS: the template writes <|begin_of_text|> */
    {
        dp_buf b = {0};
        char mf[4300];
        snprintf(mf, sizeof mf, "%s/bos.Modelfile", tmp);
        CHECK(dp_buf_puts(&b, "FROM ./x.gguf\nTEMPLATE \"\"\"") == 0 &&
              dp_ollama_template(DP_CHAT_LLAMA3, true, &b) == 0 &&
              dp_buf_puts(&b, "\"\"\"\n") == 0);
        CHECK(dp_write_file_atomic(mf, b.data, b.len) == 0);
        dp_buf_free(&b);
        for (int c = 0; c < nconv; c++) {
            char *exp = expected(DP_CHAT_LLAMA3, true, NULL, conv[c], clen[c], &skipped);
            if (!exp) continue;
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "modelfile", mf);
            cJSON_AddItemToObject(o, "messages", messages_json(conv[c], clen[c]));
            cJSON_AddStringToObject(o, "expected", exp);
            cJSON_AddItemToArray(cases, o);
            n_cases++;
            free(exp);
        }
    }
    printf("%d conversations to render, %d left out (consecutive roles, Llama-3 whitespace)\n",
           n_cases, skipped);
    CHECK(n_cases >= 4 * (nconv - 2));
    char path[4200], cmd[9000];
    snprintf(path, sizeof path, "%s/cases.json", tmp);
    char *json = cJSON_Print(cases);
    CHECK(json && dp_write_file_atomic(path, json, strlen(json)) == 0);
    free(json);
    cJSON_Delete(cases);
    bool have_go = system("command -v go >/dev/null 2>&1") == 0;
    if (have_go) {
        snprintf(cmd, sizeof cmd,
                 "cd '%s' && GO111MODULE=off go run "
                 "%s/tests/reference/render_ollama_template.go '%s'",
                 tmp, DOPPEL_SOURCE_DIR, path);
        int rc = system(cmd);
        CHECK_REPORT(rc == 0, "render_ollama_template.go failed (exit status %d)", rc);
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (!getenv("DOPPEL_KEEP") && system(cmd)) fprintf(stderr, "could not remove %s\n", tmp);
    if (!have_go)
        SKIP("go is not installed (apt-get install golang-go): the Modelfile lines were "
             "checked, not its template's rendering");
    return check_done();
}
