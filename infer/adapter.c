/* LoRA adapters at run time: parameters, the unmerged low-rank path (OpenBLAS GEMMs split across
 * OpenMP threads by gemm_omp), PEFT adapter reading through the checked safetensors reader, and
 * the base-model check of doppel.json (see adapter.h). */
#include "infer/adapter.h"
#include "data/base/json.h"
#include "data/base/error.h"
#include "data/base/hash.h"
#include "data/base/io.h"
#include "infer/safetensors.h"
#include "kernels/ops.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int dp_lora_parse_targets(const char *list, unsigned *mask) {
    *mask = 0;
    if (!strcmp(list, "all") || !strcmp(list, "all-linear")) {
        *mask = DP_LORA_ALL_TARGETS;
        return 0;
    }
    const char *p = list;
    while (*p) {
        while (*p == ',' || *p == ' ') p++;
        if (!*p) break;
        size_t len = strcspn(p, ", ");
        int found = -1;
        for (int m = 0; m < DP_N_LINEAR; m++)
            if (strlen(dp_linear_names[m]) == len && !strncmp(p, dp_linear_names[m], len))
                found = m;
        if (found < 0)
            return dp_fail("unknown LoRA target '%.*s' (expected q_proj k_proj v_proj o_proj "
                           "gate_proj up_proj down_proj, or all)",
                           (int)len, p);
        *mask |= 1u << found;
        p += len;
    }
    if (!*mask) return dp_fail("empty LoRA target list (name at least one module, or all)");
    return 0;
}

void dp_lora_format_targets(unsigned mask, char *out, size_t cap) {
    size_t len = 0;
    out[0] = 0;
    for (int m = 0; m < DP_N_LINEAR; m++)
        if (mask & (1u << m) && len < cap)
            len += (size_t)snprintf(out + len, cap - len, "%s%s", len ? "," : "",
                                    dp_linear_names[m]);
}

void dp_lora_module_shape(const dp_model_config *cfg, int m, int *out, int *in) {
    int64_t o, i;
    dp_linear_shape(cfg, (dp_linear_id)m, &o, &i);
    *out = (int)o, *in = (int)i;
}

dp_lora *dp_lora_create(const dp_model_config *mc, const dp_lora_config *lc) {
    if (lc->r < 1 || lc->r > 4096) {
        dp_fail("LoRA rank %d out of range (1..4096)", lc->r);
        return NULL;
    }
    if (!(lc->dropout >= 0 && lc->dropout < 1)) {
        dp_fail("LoRA dropout %g out of range [0, 1)", lc->dropout);
        return NULL;
    }
    if (!(lc->targets & DP_LORA_ALL_TARGETS)) {
        dp_fail("no LoRA target modules");
        return NULL;
    }
    dp_lora *lora = dp_calloc(1, sizeof *lora);
    if (!lora) return NULL;
    lora->cfg = *lc;
    lora->L = mc->L;
    lora->scale = lc->rslora ? lc->alpha / sqrtf((float)lc->r) : lc->alpha / (float)lc->r;
    lora->mod = dp_calloc((size_t)mc->L * DP_N_LINEAR, sizeof *lora->mod);
    if (!lora->mod) goto fail;
    size_t n = 0;
    for (int m = 0; m < DP_N_LINEAR; m++) {
        if (!(lc->targets & (1u << m))) continue;
        int out, in;
        dp_lora_module_shape(mc, m, &out, &in);
        n += (size_t)lc->r * ((size_t)in + out) * (size_t)mc->L;
    }
    lora->n = n;
    lora->params = dp_calloc(n, sizeof(float));
    lora->grads = dp_calloc(n, sizeof(float));
    if (!lora->params || !lora->grads) goto fail;
    size_t off = 0;
    for (int l = 0; l < mc->L; l++)
        for (int m = 0; m < DP_N_LINEAR; m++) {
            dp_lora_module *md = dp_lora_mod(lora, l, m);
            dp_lora_module_shape(mc, m, &md->out, &md->in);
            if (!(lc->targets & (1u << m))) continue;
            size_t na = (size_t)lc->r * md->in, nb = (size_t)md->out * lc->r;
            md->A = lora->params + off, md->dA = lora->grads + off;
            off += na;
            md->B = lora->params + off, md->dB = lora->grads + off;
            off += nb;
        }
    return lora;
fail:
    dp_lora_free(lora);
    return NULL;
}

void dp_lora_free(dp_lora *lora) {
    if (!lora) return;
    free(lora->params);
    free(lora->grads);
    free(lora->scratch);
    free(lora->mod);
    free(lora);
}

void dp_lora_forward(float *y, const float *x, const dp_lora_module *m, int r, float scale,
                     const float *keep, float *xa, float *xd, int N) {
    const float *xin = x;
    size_t nx = (size_t)N * m->in;
    if (keep) {
        for (size_t i = 0; i < nx; i++) xd[i] = x[i] * keep[i];
        xin = xd;
    }
    // xa (N, r) = xin (N, in) A^T;  y (N, out) += scale * xa B^T
    gemm_omp(false, true, N, r, m->in, 1.0f, xin, m->in, m->A, m->in, 0.0f, xa, r);
    gemm_omp(false, true, N, m->out, r, scale, xa, r, m->B, r, 1.0f, y, m->out);
}

int dp_lora_hook(void *vlora, int layer, dp_linear_id id, float *out, const float *inp, int N,
                 int in, int out_features) {
    dp_lora *lora = vlora;
    if (layer < 0 || layer >= lora->L || (int)id < 0 || id >= DP_N_LINEAR)
        return dp_fail("adapter: layer %d module %d out of range", layer, (int)id);
    const dp_lora_module *md = dp_lora_mod(lora, layer, id);
    if (!md->A) return 0;
    if (md->in != in || md->out != out_features)
        return dp_fail("adapter: layer %d %s is (%d, %d), the model's is (%d, %d)", layer,
                       dp_linear_names[id], md->out, md->in, out_features, in);
    if (N > lora->scratch_rows) {
        float *s = dp_realloc(lora->scratch, sizeof(float) * (size_t)N * lora->cfg.r);
        if (!s) return -1;
        lora->scratch = s;
        lora->scratch_rows = N;
    }
    dp_lora_forward(out, inp, md, lora->cfg.r, lora->scale, NULL, lora->scratch, NULL, N);
    return 0;
}

int dp_lora_rows_hook(void *vrows, int layer, dp_linear_id id, float *out, const float *inp, int N,
                      int in, int out_features) {
    const dp_lora_rows *rows = vrows;
    if (rows->cu_seqlens[rows->nseq] != N)
        return dp_fail("adapter: the batch has %d rows, the adapters' row map %d", N,
                       rows->cu_seqlens[rows->nseq]);
    for (int s = 0; s < rows->nseq; s++) {
        int r0 = rows->cu_seqlens[s], n = rows->cu_seqlens[s + 1] - r0;
        if (!rows->lora[s] || n <= 0) continue;
        if (dp_lora_hook(rows->lora[s], layer, id, out + (size_t)r0 * out_features,
                         inp + (size_t)r0 * in, n, in, out_features))
            return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ PEFT files */

void dp_lora_tensor_name(char *out, size_t cap, int layer, int m, char ab) {
    snprintf(out, cap, "base_model.model.model.layers.%d.%s.%s.lora_%c.weight", layer,
             m <= DP_O ? "self_attn" : "mlp", dp_linear_names[m], ab);
}

/* target_modules: a string ("all-linear", "q_proj,v_proj") or a list of module names. */
static int parse_target_modules(const cJSON *tm, const char *path, unsigned *targets) {
    *targets = 0;
    if (cJSON_IsString(tm)) {
        if (dp_lora_parse_targets(tm->valuestring, targets))
            return dp_fail_context("%s: target_modules", path);
        return 0;
    }
    if (!cJSON_IsArray(tm)) return dp_fail("%s: no target_modules list", path);
    const cJSON *it;
    cJSON_ArrayForEach(it, tm) {
        unsigned bit;
        if (!cJSON_IsString(it) || dp_lora_parse_targets(it->valuestring, &bit))
            return dp_fail("%s: target_modules holds an entry doppel cannot adapt", path);
        *targets |= bit;
    }
    return 0;
}

/* DIR/adapter_config.json -> the LoRA configuration; refuses what doppel cannot apply. */
static int read_adapter_config(const char *dir, dp_lora_config *lc) {
    char path[4200], *text = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    if (dp_read_file(path, &text, &len))
        return dp_fail("%s: no adapter_config.json (expected a PEFT LoRA adapter directory)", dir);
    cJSON *c = NULL;
    int bad = dp_json_parse(text, len, DP_JSON_REFUSE_NUL, path, 1, &c);
    free(text);
    if (bad) return -1;
    if (!c) return dp_fail("%s: not valid JSON", path);
    const cJSON *pt = cJSON_GetObjectItem(c, "peft_type"), *r = cJSON_GetObjectItem(c, "r"),
                *al = cJSON_GetObjectItem(c, "lora_alpha"),
                *dr = cJSON_GetObjectItem(c, "lora_dropout"),
                *rs = cJSON_GetObjectItem(c, "use_rslora"),
                *ff = cJSON_GetObjectItem(c, "fan_in_fan_out"),
                *dora = cJSON_GetObjectItem(c, "use_dora");
    int rc = 0;
    if (!cJSON_IsString(pt) || strcmp(pt->valuestring, "LORA"))
        rc = dp_fail("%s: peft_type is not \"LORA\" (only LoRA adapters are supported)", path);
    else if (!cJSON_IsNumber(r) || r->valuedouble < 1 || r->valuedouble > 4096 ||
             r->valuedouble != (int)r->valuedouble || !cJSON_IsNumber(al))
        rc = dp_fail("%s: r must be a whole number in 1..4096 and lora_alpha a number", path);
    else if (cJSON_IsTrue(ff) || cJSON_IsTrue(dora))
        rc = dp_fail("%s: fan_in_fan_out / use_dora adapters are not supported", path);
    if (!rc) {
        *lc = (dp_lora_config){.r = r->valueint,
                               .alpha = (float)al->valuedouble,
                               .dropout = cJSON_IsNumber(dr) ? (float)dr->valuedouble : 0.0f,
                               .rslora = cJSON_IsTrue(rs)};
        /* dropout only matters to training; an odd value must not refuse the adapter */
        if (!(lc->dropout >= 0 && lc->dropout < 1)) lc->dropout = 0;
        rc = parse_target_modules(cJSON_GetObjectItem(c, "target_modules"), path, &lc->targets);
    }
    cJSON_Delete(c);
    return rc;
}

/* One lora_A / lora_B into dst (rows, cols) as fp32, by PEFT's name or by the name with the
 * adapter's name inserted ("lora_A.default.weight") that some PEFT versions write. */
static int read_adapter_tensor(const dp_safetensors *st, int layer, int m, char ab, float *dst,
                               int rows, int cols) {
    char name[160], alt[200];
    dp_lora_tensor_name(name, sizeof name, layer, m, ab);
    const dp_st_tensor *t = dp_safetensors_find(st, name);
    if (!t) {
        snprintf(alt, sizeof alt, "%.*s.default.weight", (int)(strlen(name) - strlen(".weight")),
                 name);
        t = dp_safetensors_find(st, alt);
    }
    if (!t)
        return dp_fail("%s: tensor %s is missing (adapter for another model or other targets?)",
                       st->path, name);
    if (dp_st_tensor_f32(t, dst, rows, cols)) return dp_fail_context("%s", st->path);
    return 0;
}

/* DIR/adapter_model.safetensors -> every adapted module's A and B; all values finite. */
static int read_adapter_weights(const char *dir, dp_lora *lora) {
    char path[4200];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    dp_safetensors *st = dp_safetensors_open(path);
    if (!st) return -1;
    int rc = 0, r = lora->cfg.r;
    for (int l = 0; l < lora->L && !rc; l++)
        for (int m = 0; m < DP_N_LINEAR && !rc; m++) {
            dp_lora_module *md = dp_lora_mod(lora, l, m);
            if (!md->A) continue;
            rc = read_adapter_tensor(st, l, m, 'A', md->A, r, md->in);
            if (!rc) rc = read_adapter_tensor(st, l, m, 'B', md->B, md->out, r);
        }
    dp_safetensors_close(st);
    for (size_t i = 0; i < lora->n && !rc; i++)
        if (!isfinite(lora->params[i])) rc = dp_fail("%s: adapter holds a non-finite value", path);
    return rc;
}

int dp_lora_load_peft(const char *dir, const dp_model_config *mc, dp_lora **out,
                      char **doppel_json) {
    *out = NULL;
    if (doppel_json) *doppel_json = NULL;
    dp_lora_config lc;
    if (read_adapter_config(dir, &lc)) return -1;
    dp_lora *lora = dp_lora_create(mc, &lc);
    if (!lora) return dp_fail_context("%s", dir);
    if (read_adapter_weights(dir, lora)) {
        dp_lora_free(lora);
        return -1;
    }
    if (doppel_json) {
        char path[4200];
        size_t len;
        struct stat st;
        snprintf(path, sizeof path, "%s/doppel.json", dir);
        if (stat(path, &st) == 0 && dp_read_file(path, doppel_json, &len)) {
            dp_lora_free(lora);
            return -1;
        }
    }
    *out = lora;
    return 0;
}

/* ------------------------------------------------------------------ doppel.json */

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

int dp_adapter_check_base(const char *doppel_json, const char *where, const dp_model *m) {
    char name[4096];
    snprintf(name, sizeof name, "%s/doppel.json", where);
    cJSON *j = NULL;
    if (dp_json_parse(doppel_json, strlen(doppel_json), DP_JSON_REFUSE_NUL, name, 1, &j)) return -1;
    if (!j) return dp_fail("%s: not valid JSON", name);
    const cJSON *b = cJSON_GetObjectItem(j, "base_model");
    const cJSON *fp = cJSON_GetObjectItem(b, "fingerprint"), *path = cJSON_GetObjectItem(b, "path");
    char hx[17];
    snprintf(hx, sizeof hx, "%016llx", (unsigned long long)dp_model_fingerprint(m));
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
