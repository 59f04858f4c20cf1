/* doppel merge --format hf on the tiny fixture models: the merged directory, loaded back by
 * doppel's own loader, gives the logits of the base with the adapter applied unmerged (what chat
 * runs), for the NF4-dequantized and the original weights, fp32 / bf16, one file or shards;
 * its JSON files carry the stop ids and the template; bad input leaves nothing behind.
 * transformers' side of the same check is test_merge_transformers. */
#include "check.h"
#include "data/base/json.h"
#include "infer/export_hf.h"
#include "merge_fixture.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <unistd.h>

#define FIXTURES DOPPEL_SOURCE_DIR "/tests/fixtures/"

static const int32_t ids[] = {1, 17, 42, 99, 3, 250, 7, 64, 128, 5, 200, 11};
#define T ((int)(sizeof ids / sizeof ids[0]))

/* dp_lora_merge_weight against the sum written out in double */
static void test_merge_weight(void) {
    const int out = 37, in = 23, r = 5;
    float W[37 * 23], ref[37 * 23], A[5 * 23], B[37 * 5];
    for (int i = 0; i < out * in; i++) W[i] = dp_rng_uniform(1, 0, i) - 0.5f;
    for (int i = 0; i < r * in; i++) A[i] = dp_rng_uniform(1, 1, i) - 0.5f;
    for (int i = 0; i < out * r; i++) B[i] = dp_rng_uniform(1, 2, i) - 0.5f;
    const float scale = 1.75f;
    for (int o = 0; o < out; o++)
        for (int c = 0; c < in; c++) {
            double s = 0;
            for (int k = 0; k < r; k++) s += (double)B[o * r + k] * A[k * in + c];
            ref[o * in + c] = (float)(W[o * in + c] + scale * s);
        }
    dp_lora_module m = {.out = out, .in = in, .A = A, .B = B};
    dp_lora_merge_weight(W, &m, r, scale);
    check_arrays_near("W + s B A", ref, W, (size_t)out * in, 1e-6, 1e-6);
    /* a module the adapter does not cover stays as it is */
    float W2[4] = {1, 2, 3, 4}, same[4] = {1, 2, 3, 4};
    dp_lora_module none = {.out = 2, .in = 2};
    dp_lora_merge_weight(W2, &none, r, scale);
    check_arrays_near("unadapted module", same, W2, 4, 0, 0);
}

static bool exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* no DIR.tmp.* beside dir: a failed merge left nothing */
static bool leftovers(const char *parent) {
    DIR *d = opendir(parent);
    bool found = false;
    struct dirent *e;
    while (d && (e = readdir(d))) found |= strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return found;
}

static float max_abs_diff(const float *a, const float *b, size_t n) {
    float m = 0;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(a[i] - b[i]));
    return m;
}

static void rm_rf(const char *dir) {
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
}

static cJSON *read_json(const char *dir, const char *name) {
    char p[4200], *text = NULL;
    size_t len = 0;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (dp_read_file(p, &text, &len)) return NULL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    return j;
}

static int shard_files(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) n += !strncmp(e->d_name, "model-0", 7);
    if (d) closedir(d);
    return n;
}

/* Every tensor of the 16-bit export is the fp32 export's value rounded to nearest even. */
static void same_weights_16(const char *fp32_dir, const char *dir16, dp_dtype dt) {
    char a[4300], b[4300];
    snprintf(a, sizeof a, "%s/model.safetensors", fp32_dir);
    snprintf(b, sizeof b, "%s/model.safetensors", dir16);
    dp_safetensors *s32 = dp_safetensors_open(a), *s16 = dp_safetensors_open(b);
    CHECK(s32 && s16);
    if (!s32 || !s16) goto out;
    CHECK_EQ_INT(s32->n_tensors, s16->n_tensors);
    size_t bad = 0, total = 0;
    for (int i = 0; i < s32->n_tensors; i++) {
        const dp_st_tensor *t = &s32->tensors[i], *h = dp_safetensors_find(s16, t->name);
        CHECK(h && h->dtype == dt && h->numel == t->numel);
        if (!h || h->numel != t->numel) continue;
        for (int64_t k = 0; k < t->numel; k++) {
            float x;
            uint16_t y;
            memcpy(&x, (const char *)t->data + 4 * k, 4);
            memcpy(&y, (const char *)h->data + 2 * k, 2);
            bad += y != (dt == DP_DT_BF16 ? dp_f32_to_bf16(x) : dp_f32_to_f16(x));
            total++;
        }
    }
    CHECK_REPORT(bad == 0 && total > 0, "%s: %zu of %zu weights are not the fp32 merge rounded",
                 dir16, bad, total);
out:
    dp_safetensors_close(s32);
    dp_safetensors_close(s16);
}

static void test_model(const char *name, const char *tmp) {
    char model[4200], adapter[4200], out[4200];
    snprintf(model, sizeof model, FIXTURES "%s", name);
    if (!exists(model)) {
        CHECK_REPORT(false, "fixture %s is missing", model);
        return;
    }
    snprintf(adapter, sizeof adapter, "%s/%s-run", tmp, name);
    const char *system = "Você é o \"mossy\".\nResponda curto: {{ não }} \\ fim";
    CHECK(mfx_make_adapter(model, adapter, system, "chatml", 7, 0.3f) == 0);
    int V = 0;
    float *unmerged = mfx_logits(model, true, adapter, ids, T, &V);
    float *base = mfx_logits(model, true, NULL, ids, T, &V);
    float *unmerged32 = mfx_logits(model, false, adapter, ids, T, &V);
    CHECK(unmerged && base && unmerged32);
    if (!unmerged || !base || !unmerged32) return;
    size_t n = (size_t)T * (size_t)V;
    float moved = max_abs_diff(base, unmerged, n);
    CHECK_REPORT(moved > 0.5f, "%s: the adapter moves the logits by only %g", name, moved);

    struct {
        dp_merge_into into;
        dp_dtype dt;
        int64_t shard;
        const float *ref;
        double abs_tol, rel_tol;
    } cases[] = {
        /* fp32: the same weights summed in another order than the hook's two products */
        {DP_MERGE_INTO_DEQUANTIZED, DP_DT_F32, 0, unmerged, 1e-4, 1e-4},
        /* shards of at most 100 kB: several files and the index */
        {DP_MERGE_INTO_DEQUANTIZED, DP_DT_F32, 100000, unmerged, 1e-4, 1e-4},
        {DP_MERGE_INTO_ORIGINAL, DP_DT_F32, 0, unmerged32, 1e-4, 1e-4},
        /* 16-bit: every weight is checked to be the fp32 merge rounded (same_weights_16); the
         * logits only within what rounding each weight by 2^-9 (bf16) or 2^-12 (fp16) relative
         * can do to logits of a few units in these 2-layer models */
        {DP_MERGE_INTO_DEQUANTIZED, DP_DT_BF16, 0, unmerged, 0.2, 0.05},
        {DP_MERGE_INTO_DEQUANTIZED, DP_DT_F16, 0, unmerged, 2e-2, 1e-2},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        snprintf(out, sizeof out, "%s/%s-merged-%zu", tmp, name, c);
        dp_merge *mg = dp_merge_open(model, adapter, cases[c].into, true);
        CHECK_REPORT(mg != NULL, "dp_merge_open: %s", dp_last_error());
        if (!mg) continue;
        dp_export_hf_opts eo = {
            .out_dir = out, .dtype = cases[c].dt, .max_shard_bytes = cases[c].shard, .quiet = true};
        CHECK_REPORT(dp_export_hf(mg, &eo) == 0, "dp_export_hf: %s", dp_last_error());
        dp_merge_close(mg);
        char p[4300];
        snprintf(p, sizeof p, "%s/model.safetensors.index.json", out);
        CHECK_EQ_INT(cases[c].shard > 0, exists(p));
        if (cases[c].shard) CHECK(shard_files(out) > 1);
        int V2 = 0;
        float *merged = mfx_logits(out, false, NULL, ids, T, &V2);
        CHECK_REPORT(merged != NULL, "loading %s: %s", out, dp_last_error());
        if (merged) {
            char what[200];
            snprintf(what, sizeof what, "%s case %zu: merged vs unmerged logits", name, c);
            check_arrays_near(what, cases[c].ref, merged, n, cases[c].abs_tol, cases[c].rel_tol);
        }
        free(merged);
        if (cases[c].dt != DP_DT_F32) {
            char fp32_dir[4200];
            snprintf(fp32_dir, sizeof fp32_dir, "%s/%s-merged-0", tmp, name);
            same_weights_16(fp32_dir, out, cases[c].dt);
        }
    }
    /* the JSON files of case 0 */
    snprintf(out, sizeof out, "%s/%s-merged-0", tmp, name);
    dp_tokenizer *tok = dp_tokenizer_load(out);
    CHECK(tok != NULL);
    int32_t eot = tok ? dp_tokenizer_token_id(tok, "<|im_end|>") : -1;
    CHECK(eot >= 0);
    cJSON *gc = read_json(out, "generation_config.json");
    const cJSON *eos = cJSON_GetObjectItem(gc, "eos_token_id"), *e;
    bool has_eot = false;
    cJSON_ArrayForEach(e, eos) has_eot |= (int)e->valuedouble == eot;
    CHECK_REPORT(has_eot, "%s: generation_config.json eos_token_id lacks <|im_end|> (%d)", name,
                 eot);
    cJSON_Delete(gc);
    cJSON *cfg = read_json(out, "config.json");
    CHECK_EQ_STR("float32", cJSON_GetStringValue(cJSON_GetObjectItem(cfg, "torch_dtype")));
    cJSON_Delete(cfg);
    cJSON *tc = read_json(out, "tokenizer_config.json");
    dp_buf want = {0};
    CHECK(dp_export_jinja_template(DP_CHAT_CHATML, system, &want) == 0);
    CHECK_EQ_STR(want.data, cJSON_GetStringValue(cJSON_GetObjectItem(tc, "chat_template")));
    CHECK_EQ_STR("<|im_end|>", cJSON_GetStringValue(cJSON_GetObjectItem(tc, "eos_token")));
    /* doppel's own tokenizer reads the template back and recognizes the format */
    dp_chat_format f = 0;
    CHECK(tok && dp_chat_format_choose(dp_tokenizer_chat_template(tok), NULL, &f) == 0);
    CHECK_EQ_INT(DP_CHAT_CHATML, f);
    dp_buf_free(&want);
    cJSON_Delete(tc);
    dp_tokenizer_free(tok);
    free(unmerged), free(base), free(unmerged32);
}

/* an adapter from another base, a path that exists, a truncated adapter: an error naming the
 * problem and no output at all */
static void test_refusals(const char *tmp) {
    char llama_run[4200], qwen_run[4200], out[4200], p[4300];
    snprintf(llama_run, sizeof llama_run, "%s/tiny-llama-run", tmp);
    snprintf(qwen_run, sizeof qwen_run, "%s/tiny-qwen2-run", tmp);
    snprintf(out, sizeof out, "%s/refused", tmp);
    /* tiny-qwen2's adapter over tiny-llama: refused by shape or by fingerprint */
    dp_merge *mg = dp_merge_open(FIXTURES "tiny-llama", qwen_run, DP_MERGE_INTO_DEQUANTIZED, true);
    CHECK(mg == NULL);
    CHECK_REPORT(strstr(dp_last_error(), "another base model") != NULL, "message: %s",
                 dp_last_error());
    dp_merge_close(mg);
    /* an existing output path */
    mg = dp_merge_open(FIXTURES "tiny-llama", llama_run, DP_MERGE_INTO_DEQUANTIZED, true);
    CHECK(mg != NULL);
    if (mg) {
        CHECK(mkdir(out, 0755) == 0);
        dp_export_hf_opts eo = {.out_dir = out, .dtype = DP_DT_BF16, .quiet = true};
        CHECK(dp_export_hf(mg, &eo) != 0);
        CHECK_REPORT(strstr(dp_last_error(), "already exists") != NULL, "message: %s",
                     dp_last_error());
        snprintf(p, sizeof p, "%s/config.json", out);
        CHECK(!exists(p));
        /* a chat format doppel has no template for */
        free(mg->doppel_json);
        mg->doppel_json = dp_strdup("{\"chat_format\": \"alpaca\"}");
        snprintf(p, sizeof p, "%s/refused-format", tmp);
        eo.out_dir = p;
        CHECK(dp_export_hf(mg, &eo) != 0);
        CHECK(!exists(p));
        dp_merge_close(mg);
    }
    /* a truncated adapter_model.safetensors */
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", llama_run);
    struct stat st;
    CHECK(stat(p, &st) == 0 && truncate(p, st.st_size - 100) == 0);
    mg = dp_merge_open(FIXTURES "tiny-llama", llama_run, DP_MERGE_INTO_DEQUANTIZED, true);
    CHECK(mg == NULL);
    CHECK_REPORT(strstr(dp_last_error(), "adapter_model.safetensors") != NULL, "message: %s",
                 dp_last_error());
    dp_merge_close(mg);
    /* none of the refusals above left a temporary directory */
    CHECK(leftovers(tmp) == false);
}

int main(void) {
    test_merge_weight();
    char tmp[] = "/tmp/doppel-test-merge.XXXXXX";
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    test_model("tiny-llama", tmp);
    test_model("tiny-qwen2", tmp);
    test_model("tiny-qwen3", tmp);
    test_refusals(tmp);
    CHECK(leftovers(tmp) == false);
    rm_rf(tmp);
    return check_done();
}
