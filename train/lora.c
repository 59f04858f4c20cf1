/* LoRA's training side: PEFT init, the low-rank backward (OpenBLAS GEMMs split across OpenMP
 * threads by gemm_omp) and writing PEFT adapter files (see lora.h). */
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

/* ------------------------------------------------------------------ PEFT files */

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
            cJSON_AddItemToArray(tm, cJSON_CreateString(dp_linear_names[m]));
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
                dp_lora_tensor_name(name, sizeof name, l, m, ab ? 'B' : 'A');
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
