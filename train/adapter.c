/* doppel.json writer (see adapter.h). */
#include "train/adapter.h"
#include "data/base/error.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void hex64(char out[17], uint64_t x) {
    snprintf(out, 17, "%016llx", (unsigned long long)x);
}

char *dp_adapter_meta_json(const dp_adapter_meta *meta, const dp_model *m) {
    const dp_model_config *c = &m->cfg;
    char hx[17];
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "format", "doppel-adapter");
    cJSON_AddNumberToObject(j, "version", 1);
    if (meta->persona)
        cJSON_AddStringToObject(j, "persona", meta->persona);
    else
        cJSON_AddNullToObject(j, "persona");
    if (meta->system_prompt)
        cJSON_AddStringToObject(j, "system_prompt", meta->system_prompt);
    else
        cJSON_AddNullToObject(j, "system_prompt");
    cJSON_AddStringToObject(j, "chat_format", meta->chat_format);
    hex64(hx, meta->tokenizer_fingerprint);
    cJSON_AddStringToObject(j, "tokenizer_fingerprint", hx);
    cJSON *b = cJSON_AddObjectToObject(j, "base_model");
    cJSON_AddStringToObject(b, "path", meta->base_model ? meta->base_model : "");
    cJSON_AddStringToObject(b, "arch",
                            c->arch == DP_ARCH_LLAMA   ? "llama"
                            : c->arch == DP_ARCH_QWEN2 ? "qwen2"
                                                       : "qwen3");
    cJSON_AddNumberToObject(b, "layers", c->L);
    cJSON_AddNumberToObject(b, "hidden", c->C);
    cJSON_AddNumberToObject(b, "ffn", c->F);
    cJSON_AddNumberToObject(b, "heads", c->H);
    cJSON_AddNumberToObject(b, "kv_heads", c->KVH);
    cJSON_AddNumberToObject(b, "vocab", c->V);
    hex64(hx, dp_model_fingerprint(m));
    cJSON_AddStringToObject(b, "fingerprint", hx);
    if (meta->training_json) {
        cJSON *t = cJSON_Parse(meta->training_json);
        if (t) cJSON_AddItemToObject(j, "training", t);
    }
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    if (!s) dp_fail("out of memory");
    return s;
}
