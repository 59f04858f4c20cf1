/* doppel merge's core (see merge.h): the base as training saw it, the adapter, and one merged
 * linear at a time. */
#include "infer/merge.h"
#include "data/base/error.h"
#include "data/base/json.h"
#include "infer/model_load.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

void dp_lora_merge_weight(float *W, const dp_lora_module *m, int r, float scale) {
    if (!m->A || !m->B) return;
    /* (out, in) += scale * (out, r) @ (r, in) */
    gemm_omp(false, false, m->out, m->in, r, scale, m->B, r, m->A, m->in, 1.0f, W, m->in);
}

size_t dp_peak_rss_bytes(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru)) return 0;
    return (size_t)ru.ru_maxrss * 1024; /* KiB on Linux */
}

/* doppel.json's training.fp32_base: the adapter was trained over fp32 weights, not NF4 */
static bool trained_fp32(const char *doppel_json) {
    if (!doppel_json) return false;
    cJSON *j = cJSON_Parse(doppel_json);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "training");
    bool fp32 = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(t, "fp32_base"));
    cJSON_Delete(j);
    return fp32;
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

dp_merge *dp_merge_open(const char *model_path, const char *adapter_dir, dp_merge_into into,
                        bool quiet) {
    dp_merge *mg = dp_calloc(1, sizeof *mg);
    if (!mg) return NULL;
    mg->into = into;
    mg->model_path = model_path;
    mg->adapter_dir = adapter_dir;
    /* doppel.json first: it says whether training saw NF4 or fp32 weights */
    char path[4200];
    snprintf(path, sizeof path, "%s/doppel.json", adapter_dir);
    struct stat st;
    if (stat(path, &st) != 0) {
        dp_fail("%s: no doppel.json (expected a run directory written by `doppel train`; it "
                "records which base model the adapter belongs to)",
                adapter_dir);
        goto fail;
    }
    size_t len;
    if (dp_read_file(path, &mg->doppel_json, &len)) goto fail;
    mg->fp32_base = trained_fp32(mg->doppel_json);
    if (into == DP_MERGE_INTO_ORIGINAL) {
        if (!is_dir(model_path)) {
            dp_fail("--merge-into original needs a Hugging Face model directory with 16 or 32-bit "
                    "weights; %s is a GGUF file whose weights are already quantized: use "
                    "--merge-into dequantized",
                    model_path);
            goto fail;
        }
        if (!(mg->original = dp_st_set_open_dir(model_path))) goto fail;
    }
    dp_load_opts lo = {.nf4 = !mg->fp32_base, .quiet = quiet};
    if (!(mg->model = dp_model_load(model_path, &lo))) goto fail;
    if (dp_adapter_check_base(mg->doppel_json, adapter_dir, mg->model)) goto fail;
    char *unused = NULL;
    if (dp_lora_load_peft(adapter_dir, &mg->model->cfg, &mg->lora, &unused)) goto fail;
    free(unused);
    return mg;
fail:
    dp_merge_close(mg);
    return NULL;
}

int dp_merge_set_into(dp_merge *mg, dp_merge_into into) {
    if (into == DP_MERGE_INTO_ORIGINAL && !mg->original) {
        if (!is_dir(mg->model_path))
            return dp_fail("--merge-into original needs a Hugging Face model directory; %s is a "
                           "GGUF file: use --merge-into dequantized",
                           mg->model_path);
        if (!(mg->original = dp_st_set_open_dir(mg->model_path))) return -1;
    } else if (into == DP_MERGE_INTO_DEQUANTIZED) {
        dp_st_set_close(mg->original);
        mg->original = NULL;
    }
    mg->into = into;
    return 0;
}

void dp_merge_close(dp_merge *mg) {
    if (!mg) return;
    dp_model_free(mg->model);
    dp_lora_free(mg->lora);
    dp_st_set_close(mg->original);
    free(mg->doppel_json);
    free(mg);
}

int dp_merge_linear(const dp_merge *mg, int layer, dp_linear_id id, float *W) {
    const dp_linear *lin = &mg->model->layers[layer].lin[id];
    if (mg->original) {
        char name[256];
        snprintf(name, sizeof name, "model.layers.%d.%s.%s.weight", layer,
                 id <= DP_O ? "self_attn" : "mlp", dp_linear_names[id]);
        const dp_st_tensor *t = dp_st_set_find(mg->original, name);
        if (!t) return dp_fail("%s: no tensor %s", mg->model_path, name);
        if (t->dtype != DP_DT_F32 && t->dtype != DP_DT_F16 && t->dtype != DP_DT_BF16)
            return dp_fail("%s: tensor %s is %s: --merge-into original needs 16 or 32-bit "
                           "weights (use --merge-into dequantized)",
                           mg->model_path, name, dp_dtype_name(t->dtype));
        if (dp_st_tensor_f32(t, W, lin->out, lin->in)) return -1;
    } else if (lin->nf4) {
        dp_nf4_dequantize(lin->nf4, W);
    } else {
        memcpy(W, lin->w, sizeof(float) * (size_t)lin->out * (size_t)lin->in);
    }
    dp_lora_merge_weight(W, dp_lora_mod(mg->lora, layer, id), mg->lora->cfg.r, mg->lora->scale);
    return 0;
}

char *dp_merge_meta_string(const dp_merge *mg, const char *key) {
    if (!mg->doppel_json) return NULL;
    cJSON *j = cJSON_Parse(mg->doppel_json);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    char *s = cJSON_IsString(v) ? dp_strdup(v->valuestring) : NULL;
    cJSON_Delete(j);
    return s;
}
