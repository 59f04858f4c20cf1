/* doppel merge --format hf from a GGUF base (SmolLM2 Q4_1): the tokenizer.json written from the
 * GGUF's tokenizer.ggml.* metadata encodes ~400 texts (the sample export's messages, digits,
 * emoji, CJK, whitespace runs, special-token text) to doppel's own ids and decodes them back
 * under transformers (tests/reference/check_merge_hf_tokenizer.py), and transformers' logits on
 * the merged fp32 directory equal doppel's forward with the adapter unmerged over the NF4 base
 * (tests/reference/check_merge_hf.py, within 3e-4 + 1e-4 |ref|), with the exported chat template
 * through apply_chat_template. Skipped (77) without SmolLM2 or transformers / torch. */
#include "check.h"
#include "data/base/json.h"
#include "infer/export_hf.h"
#include "merge_fixture.h"

#include <cjson/cJSON.h>
#include <string.h>
#include <unistd.h>

static int save_logits(const char *path, const int32_t *ids, int T, const float *logits, int V) {
    dp_st_writer *w = dp_st_writer_new();
    int64_t s1[1] = {T}, s2[2] = {T, V};
    int rc = !w || dp_st_writer_add(w, "ids", DP_DT_I32, 1, s1, ids) ||
             dp_st_writer_add(w, "logits", DP_DT_F32, 2, s2, logits) || dp_st_writer_save(w, path);
    dp_st_writer_free(w);
    return rc ? -1 : 0;
}

int main(void) {
    const char *model = check_smollm2_gguf(); /* SKIPs when absent */
    if (system("python3 -c 'import transformers, torch, jinja2, safetensors' >/dev/null 2>&1"))
        SKIP("python3 lacks transformers, torch, jinja2 or safetensors");
    char tmp[] = "/tmp/doppel-test-merge-hf-gguf.XXXXXX";
    if (!mkdtemp(tmp)) return 1;
    char run[4200], out[4300], p[4300], texts[4300], cmd[13000];
    snprintf(run, sizeof run, "%s/run", tmp);
    snprintf(out, sizeof out, "%s/hf", tmp);
    CHECK_REPORT(mfx_make_adapter(model, run, "Você é o mossy.", "chatml", 9, 0.02f) == 0,
                 "adapter: %s", dp_last_error());
    dp_merge *mg = dp_merge_open(model, run, DP_MERGE_INTO_DEQUANTIZED, true);
    dp_export_hf_opts eo = {.out_dir = out, .dtype = DP_DT_F32, .quiet = true};
    CHECK_REPORT(mg && dp_export_hf(mg, &eo) == 0, "merge: %s", dp_last_error());
    dp_merge_close(mg);

    /* doppel's ids for the texts: the GGUF's tokenizer, special-token text allowed */
    dp_tokenizer *tok = dp_model_tokenizer(model);
    CHECK(tok != NULL);
    snprintf(texts, sizeof texts, "%s/ids.jsonl", tmp);
    FILE *f = fopen(texts, "w");
    CHECK(f != NULL);
    static const char *fixed[] = {"oi, tudo bem?",
                                  "  dois  espaços\n\n e linhas\r\n",
                                  "12345 67.89 1,000,000",
                                  "emoji 🙂🙂 ção über",
                                  "<|im_start|>user\nhello<|im_end|>\n",
                                  "it's we're they'll I'd",
                                  "\t\ttabs\tand   x  ",
                                  "日本語のテキスト",
                                  "def f(x):\n    return x**2  # ok",
                                  "kkkkkkkkkkkk"};
    char *csv = NULL;
    size_t csv_len = 0;
    CHECK(dp_read_file(DOPPEL_SOURCE_DIR "/tests/fixtures/sample-export.csv", &csv, &csv_len) == 0);
    int n = 0;
    for (int i = 0; tok && f && i < 10 + 300; i++) {
        char line[4096];
        const char *t = NULL;
        if (i < 10) {
            t = fixed[i];
        } else {
            /* whole lines of the export: quotes, commas, ids and dates as text */
            static size_t at = 0;
            if (!csv || at >= csv_len) break;
            size_t e = at;
            while (e < csv_len && csv[e] != '\n') e++;
            size_t l = e - at < sizeof line - 1 ? e - at : sizeof line - 1;
            memcpy(line, csv + at, l);
            line[l] = 0;
            at = e + 1;
            t = line;
        }
        dp_ids ids = {0};
        if (dp_tokenizer_encode(tok, t, strlen(t), true, &ids)) continue;
        cJSON *o = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(o, "ids");
        cJSON_AddStringToObject(o, "text", t);
        for (size_t k = 0; k < ids.n; k++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids.v[k]));
        char *js = cJSON_PrintUnformatted(o);
        fprintf(f, "%s\n", js);
        free(js);
        cJSON_Delete(o);
        dp_ids_free(&ids);
        n++;
    }
    free(csv);
    if (f) fclose(f);
    CHECK(n > 200);
    snprintf(cmd, sizeof cmd, "python3 %s/tests/reference/check_merge_hf_tokenizer.py '%s' '%s'",
             DOPPEL_SOURCE_DIR, out, texts);
    CHECK_REPORT(system(cmd) == 0, "the exported tokenizer.json differs from doppel's tokenizer");

    /* logits: transformers on the merged fp32 directory vs doppel with the adapter unmerged */
    dp_ids ids = {0};
    const char *text = "<|im_start|>user\n[ana]: oi, tudo bem?<|im_end|>\n<|im_start|>assistant\n";
    CHECK(tok && dp_tokenizer_encode(tok, text, strlen(text), true, &ids) == 0);
    dp_tokenizer_free(tok);
    int V = 0;
    float *logits = mfx_logits(model, true, run, ids.v, (int)ids.n, &V);
    CHECK(logits != NULL);
    snprintf(p, sizeof p, "%s/logits.safetensors", tmp);
    CHECK(logits && save_logits(p, ids.v, (int)ids.n, logits, V) == 0);
    free(logits);
    dp_ids_free(&ids);
    cJSON *cases = cJSON_CreateObject();
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "dir", out);
    cJSON_AddStringToObject(m, "logits", p);
    /* fp32 sums over 30 layers in two orders: 1.2e-4 seen in Release, 1.4e-4 in the
     * sanitizer (Debug) build; a wrong merge moves logits by whole units */
    cJSON_AddNumberToObject(m, "abs_tol", 3e-4);
    cJSON_AddNumberToObject(m, "rel_tol", 1e-4);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(cases, "models"), m);
    cJSON *t = cJSON_CreateObject(), *msgs = cJSON_AddArrayToObject(t, "messages");
    cJSON *u = cJSON_CreateObject();
    cJSON_AddStringToObject(u, "role", "user");
    cJSON_AddStringToObject(u, "content", "[ana]: oi, tudo bem?");
    cJSON_AddItemToArray(msgs, u);
    cJSON_AddStringToObject(t, "dir", out);
    cJSON_AddBoolToObject(t, "add_generation_prompt", true);
    cJSON_AddStringToObject(t, "expected",
                            "<|im_start|>system\nVocê é o mossy.<|im_end|>\n"
                            "<|im_start|>user\n[ana]: oi, tudo bem?<|im_end|>\n"
                            "<|im_start|>assistant\n");
    cJSON_AddItemToArray(cJSON_AddArrayToObject(cases, "tokenizer_templates"), t);
    char path[4300];
    snprintf(path, sizeof path, "%s/cases.json", tmp);
    char *js = cJSON_Print(cases);
    CHECK(js && dp_write_file_atomic(path, js, strlen(js)) == 0);
    free(js);
    cJSON_Delete(cases);
    snprintf(cmd, sizeof cmd, "python3 %s/tests/reference/check_merge_hf.py %s", DOPPEL_SOURCE_DIR,
             path);
    CHECK_REPORT(system(cmd) == 0, "check_merge_hf.py failed on the merge of a GGUF base");
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (!getenv("DOPPEL_KEEP") && system(cmd)) fprintf(stderr, "could not remove %s\n", tmp);
    return check_done();
}
