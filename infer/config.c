/* config.json / GGUF metadata -> dp_model_config, with every value range-checked, so the
 * loader can size allocations from it safely. */
#include "infer/config.h"

#include "data/base/json.h"
#include "data/base/error.h"
#include "data/base/io.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SUPPORTED "llama, qwen2, qwen3"

const char *dp_arch_name(dp_arch arch) {
    switch (arch) {
    case DP_ARCH_LLAMA:
        return "llama";
    case DP_ARCH_QWEN2:
        return "qwen2";
    case DP_ARCH_QWEN3:
        return "qwen3";
    }
    return "?";
}

static int parse_arch(const char *name, dp_arch *arch, const char *path) {
    if (!strcmp(name, "llama"))
        *arch = DP_ARCH_LLAMA;
    else if (!strcmp(name, "qwen2"))
        *arch = DP_ARCH_QWEN2;
    else if (!strcmp(name, "qwen3"))
        *arch = DP_ARCH_QWEN3;
    else
        return dp_fail("%s: unsupported architecture \"%.64s\" (supported: " SUPPORTED ")", path,
                       name);
    return 0;
}

void dp_config_add_eos(dp_model_config *cfg, int id) {
    if (id < 0) return;
    for (int i = 0; i < cfg->n_eos; i++)
        if (cfg->eos_ids[i] == id) return;
    if (cfg->n_eos < (int)(sizeof cfg->eos_ids / sizeof cfg->eos_ids[0]))
        cfg->eos_ids[cfg->n_eos++] = id;
}

/* Checks the ranges every later allocation relies on; derives D when it is 0. */
static int validate(dp_model_config *c, const char *path) {
#define RANGE(v, lo, hi, name)                                                                     \
    if ((v) < (lo) || (v) > (hi))                                                                  \
        return dp_fail("%s: %s = %lld is out of range [%lld, %lld]", path, name, (long long)(v),   \
                       (long long)(lo), (long long)(hi));
    RANGE(c->L, 1, 1024, "num_hidden_layers");
    RANGE(c->C, 1, 1 << 17, "hidden_size");
    RANGE(c->F, 1, 1 << 20, "intermediate_size");
    RANGE(c->H, 1, 1024, "num_attention_heads");
    RANGE(c->KVH, 1, c->H, "num_key_value_heads");
    RANGE(c->V, 1, 1 << 23, "vocab_size");
    RANGE(c->max_position, 1, 1 << 24, "max_position_embeddings");
    if (c->H % c->KVH)
        return dp_fail("%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                       path, c->H, c->KVH);
    if (c->D == 0) {
        if (c->C % c->H)
            return dp_fail("%s: hidden_size %d is not a multiple of num_attention_heads %d (set "
                           "head_dim)",
                           path, c->C, c->H);
        c->D = c->C / c->H;
    }
    RANGE(c->D, 2, 1024, "head_dim");
    if (c->D % 2) return dp_fail("%s: head_dim %d must be even for RoPE", path, c->D);
    if (!(c->rms_eps > 0 && c->rms_eps < 1))
        return dp_fail("%s: rms_norm_eps %g is out of range (0, 1)", path, c->rms_eps);
    if (!(c->rope_theta > 1 && isfinite(c->rope_theta)))
        return dp_fail("%s: rope_theta %g must be > 1", path, c->rope_theta);
    if (c->rope_scaling.llama3) {
        const dp_rope_scaling *s = &c->rope_scaling;
        if (!(s->factor >= 1 && s->low_freq_factor > 0 &&
              s->high_freq_factor > s->low_freq_factor && s->original_max_position > 0 &&
              isfinite(s->factor) && isfinite(s->high_freq_factor)))
            return dp_fail("%s: rope_scaling (llama3) needs factor >= 1, 0 < low_freq_factor < "
                           "high_freq_factor and original_max_position_embeddings > 0",
                           path);
    }
#undef RANGE
    return 0;
}

/* integer field: missing -> def (or error when def < 0) */
static int json_int(const cJSON *root, const char *key, long long def, long long *out,
                    const char *path) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        if (def < 0) return dp_fail("%s: missing \"%s\"", path, key);
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
        fabs(v->valuedouble) > 1e15)
        return dp_fail("%s: \"%s\" must be an integer", path, key);
    *out = (long long)v->valuedouble;
    return 0;
}

static int json_num(const cJSON *root, const char *key, double def, double *out, const char *path) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v)) return dp_fail("%s: \"%s\" must be a number", path, key);
    *out = v->valuedouble;
    return 0;
}

static bool json_bool(const cJSON *root, const char *key, bool def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

/* eos_token_id: int or list of ints */
static int add_eos_json(dp_model_config *cfg, const cJSON *v, const char *path) {
    if (!v || cJSON_IsNull(v)) return 0;
    if (cJSON_IsNumber(v)) {
        if (v->valuedouble >= 0 && v->valuedouble < (1 << 24))
            dp_config_add_eos(cfg, (int)v->valuedouble);
        return 0;
    }
    if (!cJSON_IsArray(v)) return dp_fail("%s: eos_token_id must be an integer or a list", path);
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        if (!cJSON_IsNumber(e)) return dp_fail("%s: eos_token_id list holds a non-number", path);
        if (e->valuedouble >= 0 && e->valuedouble < (1 << 24))
            dp_config_add_eos(cfg, (int)e->valuedouble);
    }
    return 0;
}

static int parse_rope_scaling(dp_model_config *cfg, const cJSON *rs, const char *path) {
    if (!rs || cJSON_IsNull(rs)) return 0;
    if (!cJSON_IsObject(rs)) return dp_fail("%s: rope_scaling must be an object or null", path);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!cJSON_IsString(t)) t = cJSON_GetObjectItemCaseSensitive(rs, "type");
    const char *type = cJSON_IsString(t) ? t->valuestring : "default";
    if (!strcmp(type, "default")) return 0;
    if (strcmp(type, "llama3"))
        return dp_fail("%s: rope_scaling type \"%.32s\" is not supported (supported: llama3)", path,
                       type);
    double factor = 0, lo = 0, hi = 0;
    long long orig = 0;
    if (json_num(rs, "factor", NAN, &factor, path) ||
        json_num(rs, "low_freq_factor", NAN, &lo, path) ||
        json_num(rs, "high_freq_factor", NAN, &hi, path) ||
        json_int(rs, "original_max_position_embeddings", -1, &orig, path))
        return -1;
    cfg->rope_scaling.llama3 = true;
    cfg->rope_scaling.factor = (float)factor;
    cfg->rope_scaling.low_freq_factor = (float)lo;
    cfg->rope_scaling.high_freq_factor = (float)hi;
    cfg->rope_scaling.original_max_position = orig > 0 && orig < (1 << 24) ? (int)orig : 0;
    return 0;
}

int dp_config_from_json(dp_model_config *cfg, const char *text, size_t len, const char *path) {
    memset(cfg, 0, sizeof *cfg);
    cfg->bos_id = -1;
    cJSON *root = NULL;
    if (dp_json_parse(text, len, DP_JSON_REFUSE_NUL, path, 1, &root)) return -1;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return dp_fail("%s: not a JSON object", path);
    }
    int rc = 0;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!cJSON_IsString(mt))
        rc = dp_fail("%s: no \"model_type\" (supported: " SUPPORTED ")", path);
    else
        rc = parse_arch(mt->valuestring, &cfg->arch, path);
    long long L = 0, C = 0, F = 0, H = 0, KVH = 0, V = 0, D = 0, maxp = 0, bos = -1;
    double eps = 0, theta = 0;
    if (!rc)
        rc = json_int(root, "num_hidden_layers", -1, &L, path) ||
             json_int(root, "hidden_size", -1, &C, path) ||
             json_int(root, "intermediate_size", -1, &F, path) ||
             json_int(root, "num_attention_heads", -1, &H, path) ||
             json_int(root, "num_key_value_heads", H, &KVH, path) ||
             json_int(root, "vocab_size", -1, &V, path) ||
             json_int(root, "head_dim", 0, &D, path) ||
             json_int(root, "max_position_embeddings", 2048, &maxp, path) ||
             json_num(root, "rms_norm_eps", 1e-6, &eps, path);
    /* transformers >= 5 moves rope_theta / rope_scaling into rope_parameters */
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    if (!rc) rc = json_num(root, "rope_theta", 10000.0, &theta, path);
    if (!rc && cJSON_IsObject(rp) && !cJSON_GetObjectItemCaseSensitive(root, "rope_theta"))
        rc = json_num(rp, "rope_theta", 10000.0, &theta, path);
    if (!rc) {
        const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
        rc = parse_rope_scaling(cfg, (rs && !cJSON_IsNull(rs)) ? rs : rp, path);
    }
    if (!rc) {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(root, "bos_token_id");
        if (cJSON_IsNumber(b) && b->valuedouble >= 0 && b->valuedouble < (1 << 24))
            bos = (long long)b->valuedouble;
        rc = add_eos_json(cfg, cJSON_GetObjectItemCaseSensitive(root, "eos_token_id"), path);
    }
    if (!rc) {
        if (cfg->arch != DP_ARCH_QWEN2 && json_bool(root, "attention_bias", false))
            rc = dp_fail("%s: attention_bias = true is not supported for %s", path,
                         dp_arch_name(cfg->arch));
        else if (json_bool(root, "mlp_bias", false))
            rc = dp_fail("%s: mlp_bias = true is not supported", path);
        else if (json_bool(root, "use_sliding_window", false))
            rc = dp_fail("%s: use_sliding_window = true is not supported", path);
    }
    if (!rc) {
        /* clamp before the casts; validate() reports the real range problems */
#define CL(x) ((x) < -1 ? -1 : (x) > (1LL << 30) ? (1LL << 30) : (x))
        cfg->L = (int)CL(L), cfg->C = (int)CL(C), cfg->F = (int)CL(F), cfg->H = (int)CL(H);
        cfg->KVH = (int)CL(KVH), cfg->V = (int)CL(V), cfg->D = (int)CL(D);
        cfg->max_position = (int)CL(maxp);
#undef CL
        if (D < 0) cfg->D = -1;
        cfg->rms_eps = (float)eps;
        cfg->rope_theta = (float)theta;
        cfg->bos_id = (int)bos;
        cfg->tied_embeddings = json_bool(root, "tie_word_embeddings", false);
        cfg->qkv_bias = cfg->arch == DP_ARCH_QWEN2;
        cfg->qk_norm = cfg->arch == DP_ARCH_QWEN3;
        rc = validate(cfg, path);
    }
    cJSON_Delete(root);
    return rc;
}

int dp_config_add_generation(dp_model_config *cfg, const char *text, size_t len, const char *path) {
    cJSON *root = NULL;
    if (dp_json_parse(text, len, DP_JSON_REFUSE_NUL, path, 1, &root)) return -1;
    int rc = cJSON_IsObject(root)
                 ? add_eos_json(cfg, cJSON_GetObjectItemCaseSensitive(root, "eos_token_id"), path)
                 : dp_fail("%s: not a JSON object", path);
    cJSON_Delete(root);
    return rc;
}

int dp_config_load_dir(dp_model_config *cfg, const char *dir) {
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (stat(path, &sb) != 0)
        return dp_fail("model dir %s: no config.json (expected a Hugging Face model directory or "
                       "a .gguf file)",
                       dir);
    char *text = NULL;
    size_t len = 0;
    if (dp_read_file(path, &text, &len)) return -1;
    int rc = dp_config_from_json(cfg, text, len, path);
    free(text);
    if (rc) return rc;
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    if (stat(path, &sb) != 0) return 0;
    if (dp_read_file(path, &text, &len)) return -1;
    rc = dp_config_add_generation(cfg, text, len, path);
    free(text);
    return rc;
}

/* ------------------------------------------------------------------ GGUF */

static int gguf_int(const dp_gguf *g, const char *arch, const char *suffix, long long def,
                    long long *out) {
    char key[256];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (!dp_gguf_find(g, key)) {
        if (def < 0) return dp_fail("%s: no metadata key \"%s\"", g->path, key);
        *out = def;
        return 0;
    }
    int64_t v;
    if (dp_gguf_get_int(g, key, &v)) return -1;
    *out = v < -1 ? -1 : v > (1LL << 30) ? (1LL << 30) : v;
    return 0;
}

static int gguf_num(const dp_gguf *g, const char *arch, const char *suffix, double def,
                    double *out) {
    char key[256];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (!dp_gguf_find(g, key)) {
        *out = def;
        return 0;
    }
    return dp_gguf_get_num(g, key, out);
}

/* llama.cpp stores Llama 3's RoPE scaling as a tensor of D/2 divisors of the frequencies */
static int rope_factors(dp_model_config *cfg, const dp_gguf *g) {
    const dp_gguf_tensor *t = dp_gguf_find_tensor(g, "rope_freqs.weight");
    if (!t) return 0;
    int D = cfg->D ? cfg->D : (cfg->H > 0 ? cfg->C / cfg->H : 0);
    if (t->n_dims != 1 || D <= 0 || t->ne[0] != D / 2 || D / 2 > DP_ROPE_MAX_FACTORS)
        return dp_fail("%s: rope_freqs.weight must hold head_dim/2 = %d factors (at most %d), "
                       "not %llu; the file is damaged or from an unsupported converter",
                       g->path, D / 2, DP_ROPE_MAX_FACTORS, (unsigned long long)t->ne[0]);
    if (dp_gguf_tensor_f32(t, cfg->rope_scaling.freq_factors)) return -1;
    for (int i = 0; i < D / 2; i++)
        if (!(cfg->rope_scaling.freq_factors[i] > 0) || isinf(cfg->rope_scaling.freq_factors[i]))
            return dp_fail("%s: rope_freqs.weight[%d] is %g; factors must be positive and finite",
                           g->path, i, cfg->rope_scaling.freq_factors[i]);
    cfg->rope_scaling.n_factors = D / 2;
    return 0;
}

int dp_config_from_gguf(dp_model_config *cfg, const dp_gguf *g) {
    memset(cfg, 0, sizeof *cfg);
    cfg->bos_id = -1;
    const char *arch;
    if (dp_gguf_get_str(g, "general.architecture", &arch)) return -1;
    if (parse_arch(arch, &cfg->arch, g->path)) return -1;
    long long L = 0, C = 0, F = 0, H = 0, KVH = 0, D = 0, maxp = 0;
    double eps = 0, theta = 0;
    if (gguf_int(g, arch, "block_count", -1, &L) || gguf_int(g, arch, "embedding_length", -1, &C) ||
        gguf_int(g, arch, "feed_forward_length", -1, &F) ||
        gguf_int(g, arch, "attention.head_count", -1, &H) ||
        gguf_int(g, arch, "attention.head_count_kv", H, &KVH) ||
        gguf_int(g, arch, "attention.key_length", 0, &D) ||
        gguf_int(g, arch, "context_length", 2048, &maxp) ||
        gguf_num(g, arch, "attention.layer_norm_rms_epsilon", 1e-6, &eps) ||
        gguf_num(g, arch, "rope.freq_base", 10000.0, &theta))
        return -1;
    cfg->L = (int)L, cfg->C = (int)C, cfg->F = (int)F, cfg->H = (int)H, cfg->KVH = (int)KVH;
    cfg->D = (int)D, cfg->max_position = (int)maxp;
    cfg->rms_eps = (float)eps, cfg->rope_theta = (float)theta;
    /* vocabulary: {arch}.vocab_size, else the embedding's rows */
    long long V = 0;
    if (gguf_int(g, arch, "vocab_size", 0, &V)) return -1;
    const dp_gguf_tensor *emb = dp_gguf_find_tensor(g, "token_embd.weight");
    if (!V && emb && emb->n_dims == 2) V = emb->ne[1] > (1LL << 30) ? (1LL << 30) : emb->ne[1];
    if (!V) return dp_fail("%s: no %s.vocab_size and no token_embd.weight", g->path, arch);
    cfg->V = (int)V;
    cfg->tied_embeddings = dp_gguf_find_tensor(g, "output.weight") == NULL;
    cfg->qkv_bias = cfg->arch == DP_ARCH_QWEN2;
    cfg->qk_norm = cfg->arch == DP_ARCH_QWEN3;
    if (rope_factors(cfg, g)) return -1;
    int64_t id;
    const char *ids[] = {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"};
    for (int i = 0; i < 2; i++)
        if (dp_gguf_find(g, ids[i]) && dp_gguf_get_int(g, ids[i], &id) == 0 && id >= 0 &&
            id < (1 << 24))
            dp_config_add_eos(cfg, (int)id);
    if (dp_gguf_find(g, "tokenizer.ggml.bos_token_id") &&
        dp_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &id) == 0 && id >= 0 && id < (1 << 24))
        cfg->bos_id = (int)id;
    return validate(cfg, g->path);
}

void dp_linear_shape(const dp_model_config *c, dp_linear_id id, int64_t *out, int64_t *in) {
    int64_t q = (int64_t)c->H * c->D, kv = (int64_t)c->KVH * c->D;
    switch (id) {
    case DP_Q:
        *out = q, *in = c->C;
        break;
    case DP_K:
    case DP_V:
        *out = kv, *in = c->C;
        break;
    case DP_O:
        *out = c->C, *in = q;
        break;
    case DP_GATE:
    case DP_UP:
        *out = c->F, *in = c->C;
        break;
    default:
        *out = c->C, *in = c->F;
        break; /* DP_DOWN */
    }
}

int dp_config_load_path(dp_model_config *cfg, const char *path) {
    size_t n = strlen(path);
    if (n > 5 && !strcmp(path + n - 5, ".gguf")) {
        dp_gguf *g = dp_gguf_open(path);
        if (!g) return -1;
        int rc = dp_config_from_gguf(cfg, g);
        dp_gguf_close(g);
        return rc;
    }
    if (n > 5 && !strcmp(path + n - 5, ".json")) {
        char *text;
        size_t len;
        if (dp_read_file(path, &text, &len)) return -1;
        int rc = dp_config_from_json(cfg, text, len, path);
        free(text);
        return rc;
    }
    return dp_config_load_dir(cfg, path);
}
