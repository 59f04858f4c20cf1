/* doppel.json writer and base-model check (see adapter.h). */
#include "train/adapter.h"
#include "data/base/error.h"
#include "data/base/hash.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t dp_model_fingerprint(const dp_model *m) {
    const dp_model_config *c = &m->cfg;
    int64_t dims[] = {
        c->arch,     c->L,      c->C, c->F, c->H, c->KVH, c->D, c->V, c->tied_embeddings,
        c->qkv_bias, c->qk_norm};
    uint64_t h = dp_hash_bytes(dims, sizeof dims, 0x646f7070);
    h = dp_hash_bytes(&c->rope_theta, sizeof c->rope_theta, h);
    h = dp_hash_bytes(m->final_norm, sizeof(float) * (size_t)c->C, h);
    /* a few embedding rows spread over the table */
    for (int i = 0; i < 8; i++) {
        size_t row = (size_t)c->V * (size_t)i / 8;
        h = dp_hash_bytes(m->embed + row * (size_t)c->C, sizeof(float) * (size_t)c->C, h);
    }
    for (int l = 0; l < c->L; l++) {
        h = dp_hash_bytes(m->layers[l].attn_norm, sizeof(float) * (size_t)c->C, h);
        h = dp_hash_bytes(m->layers[l].ffn_norm, sizeof(float) * (size_t)c->C, h);
    }
    return h;
}

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

int dp_adapter_check_base(const char *doppel_json, const char *where, const dp_model *m) {
    cJSON *j = cJSON_Parse(doppel_json);
    if (!j) return dp_fail("%s/doppel.json: not valid JSON", where);
    const cJSON *b = cJSON_GetObjectItem(j, "base_model");
    const cJSON *fp = cJSON_GetObjectItem(b, "fingerprint"), *path = cJSON_GetObjectItem(b, "path");
    char hx[17];
    hex64(hx, dp_model_fingerprint(m));
    int rc = 0;
    if (!cJSON_IsString(fp))
        rc = dp_fail("%s/doppel.json: no base_model.fingerprint (not written by doppel train?)",
                     where);
    else if (strcmp(fp->valuestring, hx))
        rc = dp_fail("%s: this adapter was trained on another base model (%s, fingerprint %s); "
                     "the model given has fingerprint %s: pass the model it was trained on",
                     where, cJSON_IsString(path) ? path->valuestring : "?", fp->valuestring, hx);
    cJSON_Delete(j);
    return rc;
}
