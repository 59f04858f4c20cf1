/* LoRA parameters, PEFT init, the low-rank path (OpenBLAS GEMMs split across OpenMP threads by
 * gemm_omp) and PEFT adapter files. */
#include "train/lora.h"
#include "data/base/error.h"
#include "data/base/io.h"
#include "kernels/ops.h"
#include "data/base/rng.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *const module_names[DP_N_LINEAR] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                      "gate_proj", "up_proj", "down_proj"};

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
            if (strlen(module_names[m]) == len && !strncmp(p, module_names[m], len)) found = m;
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
            len += (size_t)snprintf(out + len, cap - len, "%s%s", len ? "," : "", module_names[m]);
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

void dp_lora_init(dp_lora *lora, uint64_t seed) {
    for (int l = 0; l < lora->L; l++)
        for (int m = 0; m < DP_N_LINEAR; m++) {
            dp_lora_module *md = dp_lora_mod(lora, l, m);
            if (!md->A) continue;
            float bound = 1.0f / sqrtf((float)md->in);
            size_t na = (size_t)lora->cfg.r * md->in;
            uint64_t stream = (uint64_t)l * 8 + (uint64_t)m;
            for (size_t i = 0; i < na; i++)
                md->A[i] = (2.0f * dp_rng_uniform(seed, stream, i) - 1.0f) * bound;
            memset(md->B, 0, sizeof(float) * (size_t)md->out * lora->cfg.r);
        }
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

void dp_lora_backward(float *dx, const float *dy, const float *x, const dp_lora_module *m, int r,
                      float scale, const float *keep, const float *xa, float *dxa, float *xd,
                      int N) {
    size_t nx = (size_t)N * m->in;
    // dB (out, r) += scale * dy^T xa;  dxa (N, r) = scale * dy B
    gemm_omp(true, false, m->out, r, N, scale, dy, m->out, xa, r, 1.0f, m->dB, r);
    gemm_omp(false, false, N, r, m->out, scale, dy, m->out, m->B, r, 0.0f, dxa, r);
    const float *xin = x;
    if (keep) {
        for (size_t i = 0; i < nx; i++) xd[i] = x[i] * keep[i];
        xin = xd;
    }
    // dA (r, in) += dxa^T x_d
    gemm_omp(true, false, r, m->in, N, 1.0f, dxa, r, xin, m->in, 1.0f, m->dA, m->in);
    if (!dx) return;
    if (!keep) {
        gemm_omp(false, false, N, m->in, r, 1.0f, dxa, r, m->A, m->in, 1.0f, dx, m->in);
        return;
    }
    gemm_omp(false, false, N, m->in, r, 1.0f, dxa, r, m->A, m->in, 0.0f, xd, m->in);
    for (size_t i = 0; i < nx; i++) dx[i] += keep[i] * xd[i];
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
                       module_names[id], md->out, md->in, out_features, in);
    if (N > lora->scratch_rows) {
        float *s = dp_realloc(lora->scratch, sizeof(float) * (size_t)N * lora->cfg.r);
        if (!s) return -1;
        lora->scratch = s;
        lora->scratch_rows = N;
    }
    dp_lora_forward(out, inp, md, lora->cfg.r, lora->scale, NULL, lora->scratch, NULL, N);
    return 0;
}

/* ------------------------------------------------------------------ PEFT files */

static void tensor_name(char *out, size_t cap, int layer, int m, char ab) {
    snprintf(out, cap, "base_model.model.model.layers.%d.%s.%s.lora_%c.weight", layer,
             m <= DP_O ? "self_attn" : "mlp", module_names[m], ab);
}

int dp_make_dirs(const char *dir) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return dp_fail("%s: path too long", dir);
    for (char *p = path + 1;; p++) {
        if (*p == '/' || !*p) {
            char c = *p;
            *p = 0;
            if (mkdir(path, 0755) && errno != EEXIST)
                return dp_fail("%s: cannot create directory: %s", path, strerror(errno));
            *p = c;
            if (!c) break;
        }
    }
    return 0;
}

static int write_json_file(const char *path, cJSON *j) {
    char *s = cJSON_Print(j);
    if (!s) return dp_fail("%s: out of memory while writing JSON", path);
    size_t len = strlen(s);
    s[len] = '\n';
    int rc = dp_write_file_atomic(path, s, len + 1);
    cJSON_free(s);
    return rc;
}

static double strtod_float(float x) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.7g", x);
    return strtod(buf, NULL);
}

int dp_lora_save_peft(const dp_lora *lora, const char *dir, const char *base_model,
                      const char *doppel_json) {
    if (dp_make_dirs(dir)) return -1;
    char path[4200], name[160];
    /* adapter_config.json */
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "peft_type", "LORA");
    cJSON_AddStringToObject(c, "task_type", "CAUSAL_LM");
    cJSON_AddStringToObject(c, "base_model_name_or_path", base_model ? base_model : "");
    cJSON_AddNumberToObject(c, "r", lora->cfg.r);
    /* floats printed as the decimal the user typed, not 0.05000000074505806 */
    cJSON_AddNumberToObject(c, "lora_alpha", strtod_float(lora->cfg.alpha));
    cJSON_AddNumberToObject(c, "lora_dropout", strtod_float(lora->cfg.dropout));
    cJSON *tm = cJSON_AddArrayToObject(c, "target_modules");
    for (int m = 0; m < DP_N_LINEAR; m++)
        if (lora->cfg.targets & (1u << m))
            cJSON_AddItemToArray(tm, cJSON_CreateString(module_names[m]));
    cJSON_AddStringToObject(c, "bias", "none");
    cJSON_AddBoolToObject(c, "use_rslora", lora->cfg.rslora);
    cJSON_AddBoolToObject(c, "use_dora", false);
    cJSON_AddBoolToObject(c, "inference_mode", true);
    cJSON_AddBoolToObject(c, "fan_in_fan_out", false);
    cJSON_AddBoolToObject(c, "init_lora_weights", true);
    cJSON_AddNullToObject(c, "modules_to_save");
    cJSON_AddNullToObject(c, "layers_to_transform");
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    int rc = write_json_file(path, c);
    cJSON_Delete(c);
    if (rc) return -1;

    /* adapter_model.safetensors: JSON header, space-padded to 8 bytes, then F32 data in the
     * order of the flat buffer (A before B, layer by layer). */
    cJSON *h = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(h, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    size_t off = 0;
    for (int l = 0; l < lora->L; l++)
        for (int m = 0; m < DP_N_LINEAR; m++) {
            const dp_lora_module *md = dp_lora_mod(lora, l, m);
            if (!md->A) continue;
            for (int ab = 0; ab < 2; ab++) {
                tensor_name(name, sizeof name, l, m, ab ? 'B' : 'A');
                int rows = ab ? md->out : lora->cfg.r, cols = ab ? lora->cfg.r : md->in;
                size_t bytes = (size_t)rows * cols * sizeof(float);
                cJSON *t = cJSON_AddObjectToObject(h, name);
                cJSON_AddStringToObject(t, "dtype", "F32");
                cJSON *shape = cJSON_AddArrayToObject(t, "shape");
                cJSON_AddItemToArray(shape, cJSON_CreateNumber(rows));
                cJSON_AddItemToArray(shape, cJSON_CreateNumber(cols));
                cJSON *offs = cJSON_AddArrayToObject(t, "data_offsets");
                cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
                cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + bytes)));
                off += bytes;
            }
        }
    char *hs = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    if (!hs) return dp_fail("%s: out of memory", dir);
    size_t hlen = strlen(hs), padded = (hlen + 7) / 8 * 8;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    dp_writer *w = dp_writer_open(path);
    if (!w) {
        free(hs);
        return -1;
    }
    uint64_t n8 = padded;
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)(n8 >> (8 * i));
    rc = dp_writer_write(w, le, 8);
    if (!rc) rc = dp_writer_write(w, hs, hlen);
    for (size_t i = hlen; !rc && i < padded; i++) rc = dp_writer_write(w, " ", 1);
    free(hs);
    /* the flat buffer is exactly the data section (little-endian hosts only, as x86/ARM are) */
    if (!rc) rc = dp_writer_write(w, lora->params, lora->n * sizeof(float));
    if (rc) {
        dp_writer_abort(w);
        return -1;
    }
    if (dp_writer_commit(w)) return -1;

    if (doppel_json) {
        snprintf(path, sizeof path, "%s/doppel.json", dir);
        if (dp_write_file_atomic(path, doppel_json, strlen(doppel_json))) return -1;
    }
    return 0;
}

static float half_to_float(uint16_t h, bool bf16) {
    if (bf16) {
        uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    uint32_t sign = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 31, man = h & 1023, u;
    if (e == 0) {
        float f = ldexpf((float)man, -24);
        return sign ? -f : f;
    }
    if (e == 31)
        u = sign | 0x7f800000u | (man << 13);
    else
        u = sign | ((e + 112) << 23) | (man << 13);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int dp_lora_load_peft(const char *dir, const dp_model_config *mc, dp_lora **out,
                      char **doppel_json) {
    *out = NULL;
    if (doppel_json) *doppel_json = NULL;
    char path[4200], name[160];
    char *text = NULL, *blob = NULL;
    size_t len = 0, blen = 0;
    cJSON *c = NULL, *h = NULL;
    dp_lora *lora = NULL;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    if (dp_read_file(path, &text, &len))
        return dp_fail("%s: no adapter_config.json (expected a PEFT LoRA adapter directory)", dir);
    c = cJSON_Parse(text);
    if (!c) {
        dp_fail("%s: not valid JSON", path);
        goto fail;
    }
    const cJSON *pt = cJSON_GetObjectItem(c, "peft_type"), *r = cJSON_GetObjectItem(c, "r"),
                *al = cJSON_GetObjectItem(c, "lora_alpha"),
                *dr = cJSON_GetObjectItem(c, "lora_dropout"),
                *rs = cJSON_GetObjectItem(c, "use_rslora"),
                *tm = cJSON_GetObjectItem(c, "target_modules"),
                *ff = cJSON_GetObjectItem(c, "fan_in_fan_out"),
                *dora = cJSON_GetObjectItem(c, "use_dora");
    if (!cJSON_IsString(pt) || strcmp(pt->valuestring, "LORA")) {
        dp_fail("%s: peft_type is not \"LORA\" (only LoRA adapters are supported)", path);
        goto fail;
    }
    if (!cJSON_IsNumber(r) || r->valuedouble < 1 || r->valuedouble > 4096 ||
        r->valuedouble != (int)r->valuedouble || !cJSON_IsNumber(al)) {
        dp_fail("%s: r must be a whole number in 1..4096 and lora_alpha a number", path);
        goto fail;
    }
    if (cJSON_IsTrue(ff) || cJSON_IsTrue(dora)) {
        dp_fail("%s: fan_in_fan_out / use_dora adapters are not supported", path);
        goto fail;
    }
    dp_lora_config lc = {.r = r->valueint,
                         .alpha = (float)al->valuedouble,
                         .dropout = cJSON_IsNumber(dr) ? (float)dr->valuedouble : 0.0f,
                         .rslora = cJSON_IsTrue(rs)};
    if (cJSON_IsString(tm)) {
        if (dp_lora_parse_targets(tm->valuestring, &lc.targets)) {
            dp_fail_context("%s: target_modules", path);
            goto fail;
        }
    } else if (cJSON_IsArray(tm)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, tm) {
            unsigned bit;
            if (!cJSON_IsString(it) || dp_lora_parse_targets(it->valuestring, &bit)) {
                dp_fail("%s: target_modules holds an entry doppel cannot adapt", path);
                goto fail;
            }
            lc.targets |= bit;
        }
    } else {
        dp_fail("%s: no target_modules list", path);
        goto fail;
    }
    if (!(lc.dropout >= 0 && lc.dropout < 1)) lc.dropout = 0;
    lora = dp_lora_create(mc, &lc);
    if (!lora) goto fail;

    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (dp_read_file(path, &blob, &blen)) goto fail;
    uint64_t hn = 0;
    if (blen < 8) {
        dp_fail("%s: file too short for a safetensors header", path);
        goto fail;
    }
    for (int i = 0; i < 8; i++) hn |= (uint64_t)(uint8_t)blob[i] << (8 * i);
    if (hn > 100000000 || hn > blen - 8) {
        dp_fail("%s: header length %llu does not fit the file (%zu bytes)", path,
                (unsigned long long)hn, blen);
        goto fail;
    }
    h = cJSON_ParseWithLength(blob + 8, (size_t)hn);
    if (!cJSON_IsObject(h)) {
        dp_fail("%s: safetensors header is not a JSON object", path);
        goto fail;
    }
    const uint8_t *data = (const uint8_t *)blob + 8 + hn;
    size_t dlen = blen - 8 - (size_t)hn;
    int found = 0, expected = 0;
    for (int l = 0; l < lora->L; l++)
        for (int m = 0; m < DP_N_LINEAR; m++) {
            dp_lora_module *md = dp_lora_mod(lora, l, m);
            if (!md->A) continue;
            for (int ab = 0; ab < 2; ab++) {
                expected++;
                tensor_name(name, sizeof name, l, m, ab ? 'B' : 'A');
                const cJSON *t = cJSON_GetObjectItem(h, name);
                if (!t) {
                    /* PEFT also writes names with the adapter name ("lora_A.default") in
                     * some versions */
                    char alt[200];
                    snprintf(alt, sizeof alt, "%.*s.default.weight",
                             (int)(strlen(name) - strlen(".weight")), name);
                    t = cJSON_GetObjectItem(h, alt);
                }
                if (!t) {
                    dp_fail("%s: tensor %s is missing (adapter for another model or other "
                            "targets?)",
                            path, name);
                    goto fail;
                }
                int rows = ab ? md->out : lc.r, cols = ab ? lc.r : md->in;
                const cJSON *dt = cJSON_GetObjectItem(t, "dtype"),
                            *sh = cJSON_GetObjectItem(t, "shape"),
                            *of = cJSON_GetObjectItem(t, "data_offsets");
                if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || cJSON_GetArraySize(sh) != 2 ||
                    !cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2 ||
                    cJSON_GetArrayItem(sh, 0)->valuedouble != rows ||
                    cJSON_GetArrayItem(sh, 1)->valuedouble != cols) {
                    dp_fail("%s: tensor %s: expected shape [%d, %d] with dtype and "
                            "data_offsets",
                            path, name, rows, cols);
                    goto fail;
                }
                int esz = !strcmp(dt->valuestring, "F32") ? 4
                          : (!strcmp(dt->valuestring, "BF16") || !strcmp(dt->valuestring, "F16"))
                              ? 2
                              : 0;
                if (!esz) {
                    dp_fail("%s: tensor %s has dtype %s (expected F32, BF16 or F16)", path, name,
                            dt->valuestring);
                    goto fail;
                }
                double b = cJSON_GetArrayItem(of, 0)->valuedouble,
                       e = cJSON_GetArrayItem(of, 1)->valuedouble;
                size_t count = (size_t)rows * cols;
                if (!(b >= 0) || !(e >= b) || e > (double)dlen || e - b != (double)(count * esz)) {
                    dp_fail("%s: tensor %s: data_offsets [%.0f, %.0f] do not match its size or "
                            "the file",
                            path, name, b, e);
                    goto fail;
                }
                float *dst = ab ? md->B : md->A;
                const uint8_t *src = data + (size_t)b;
                if (esz == 4)
                    memcpy(dst, src, count * 4);
                else
                    for (size_t i = 0; i < count; i++)
                        dst[i] = half_to_float((uint16_t)(src[2 * i] | src[2 * i + 1] << 8),
                                               dt->valuestring[0] == 'B');
                found++;
            }
        }
    (void)found;
    (void)expected;
    for (size_t i = 0; i < lora->n; i++)
        if (!isfinite(lora->params[i])) {
            dp_fail("%s: adapter holds a non-finite value", path);
            goto fail;
        }
    if (doppel_json) {
        snprintf(path, sizeof path, "%s/doppel.json", dir);
        struct stat st;
        if (stat(path, &st) == 0 && dp_read_file(path, doppel_json, &len)) goto fail;
    }
    cJSON_Delete(c);
    cJSON_Delete(h);
    free(text);
    free(blob);
    *out = lora;
    return 0;
fail:
    cJSON_Delete(c);
    cJSON_Delete(h);
    free(text);
    free(blob);
    dp_lora_free(lora);
    return -1;
}
