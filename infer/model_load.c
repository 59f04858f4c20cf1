/* dp_model from a Hugging Face directory (safetensors) or a GGUF file: every tensor's shape is
 * checked against the config before it is copied (as fp32) into one arena; block linears can be
 * quantized to NF4 on the fly or read from a bitsandbytes-layout file written by
 * dp_model_save_nf4. GGUF llama files store q/k rows permuted for interleaved RoPE: undone here. */
#include "infer/model_load.h"

#include "data/base/json.h"
#include "data/base/error.h"
#include "data/base/hash.h"
#include "data/base/io.h"
#include "data/base/progress.h"
#include "infer/config.h"
#include "infer/gguf.h"
#include "infer/safetensors.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

const char *const dp_linear_names[DP_N_LINEAR] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                  "gate_proj", "up_proj", "down_proj"};
static const char *const hf_module[DP_N_LINEAR] = {
    "self_attn", "self_attn", "self_attn", "self_attn", "mlp", "mlp", "mlp"};
static const char *const gguf_linear[DP_N_LINEAR] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                                     "ffn_gate", "ffn_up", "ffn_down"};

typedef struct {
    float *arena;
    size_t arena_floats;
    dp_nf4 *nf4; /* L * 7 + 1 (the lm_head) */
    int n_nf4;
    dp_q8 lm_q8;        /* the lm_head's decode copy (dp_model_lm_head_q8) */
    char source_fp[17]; /* fingerprint of the source weights (hex), "" when not loaded from files */
} storage;

/* where tensors come from: a safetensors set (HF names) or a GGUF file (GGUF names) */
typedef struct {
    dp_st_set *st;
    dp_gguf *gg;
    bool unpermute; /* GGUF llama: q/k rows interleaved per head */
} source;

static bool is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}
static bool exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

void dp_nf4_default_path(const char *model_path, char *buf, size_t cap) {
    size_t n = strlen(model_path);
    while (n > 1 && model_path[n - 1] == '/') n--;
    if (is_dir(model_path))
        snprintf(buf, cap, "%.*s/model.nf4.safetensors", (int)n, model_path);
    else
        snprintf(buf, cap, "%.*s.nf4.safetensors", (int)n, model_path);
}

/* GGUF row order of a head (2j + s) -> HF (s * D/2 + j), for each of nh heads of D rows */
static int unpermute_rows(float *w, int nh, int64_t rows, int64_t cols) {
    if (nh <= 0 || rows % nh || (rows / nh) % 2)
        return dp_fail("cannot undo the GGUF q/k permutation: %lld rows over %d heads",
                       (long long)rows, nh);
    int64_t D = rows / nh;
    float *tmp = malloc((size_t)(D * cols) * sizeof(float));
    if (!tmp) return dp_fail("out of memory undoing the GGUF q/k permutation");
    for (int h = 0; h < nh; h++) {
        float *head = w + (size_t)(h * D * cols);
        memcpy(tmp, head, (size_t)(D * cols) * sizeof(float));
        for (int64_t j = 0; j < D / 2; j++)
            for (int s = 0; s < 2; s++)
                memcpy(head + (size_t)((s * (D / 2) + j) * cols),
                       tmp + (size_t)((2 * j + s) * cols), (size_t)cols * sizeof(float));
    }
    free(tmp);
    return 0;
}

/* Drops the file pages of [p, p + n) from the process once a tensor has been copied out: the
 * mapping is read-only and private, so they fault back in from the file if touched again, and
 * the peak RSS of a load is the weights it keeps, not those plus the whole file. Only for
 * memory that is a file mapping (owns_map): on anonymous memory MADV_DONTNEED would zero it. */
#define SLICE_BYTES ((size_t)8 << 20) /* file bytes converted between page releases */

static void release_pages(bool mapped, const void *p, size_t n) {
    if (!mapped || !p || !n) return;
    static long page;
    if (!page) page = sysconf(_SC_PAGESIZE);
    if (page <= 0) return;
    uintptr_t a = (uintptr_t)p / (uintptr_t)page * (uintptr_t)page;
    uintptr_t b = ((uintptr_t)p + n + (uintptr_t)page - 1) / (uintptr_t)page * (uintptr_t)page;
    (void)madvise((void *)a, b - a, MADV_DONTNEED); /* advice only: failure costs memory */
}

/* copies one tensor as fp32 (rows, cols) (cols == 0: 1-D) into out; permute_heads > 0 undoes
 * the GGUF llama q/k permutation */
static int fetch(const source *s, const char *hf, const char *gg, float *out, int64_t rows,
                 int64_t cols, int permute_heads) {
    if (s->gg) {
        const dp_gguf_tensor *t = dp_gguf_find_tensor(s->gg, gg);
        if (!t) return dp_fail("%s: no tensor %s", s->gg->path, gg);
        bool ok = cols ? (t->n_dims == 2 && t->ne[0] == cols && t->ne[1] == rows)
                       : (t->n_dims == 1 && t->ne[0] == rows);
        if (!ok)
            return dp_fail("%s: tensor %s has dims [%lld, %lld] (innermost first), expected "
                           "[%lld, %lld]",
                           s->gg->path, gg, (long long)t->ne[0], (long long)t->ne[1],
                           (long long)(cols ? cols : rows), (long long)(cols ? rows : 1));
        /* in slices of whole rows, each released once converted: a large tensor's file pages
         * never all sit in memory beside its fp32 copy */
        int64_t nrows = cols ? rows : 1, rcols = cols ? cols : rows;
        size_t row_bytes = (size_t)(t->nbytes / (uint64_t)nrows);
        int64_t step = row_bytes ? (int64_t)(SLICE_BYTES / row_bytes) : nrows;
        if (step < 1) step = 1;
        if ((uint64_t)row_bytes * (uint64_t)nrows != t->nbytes) step = nrows; /* not by rows */
        for (int64_t r = 0; r < nrows; r += step) {
            int64_t nr = nrows - r < step ? nrows - r : step;
            const uint8_t *src = (const uint8_t *)t->data + (size_t)r * row_bytes;
            if (step == nrows
                    ? dp_gguf_tensor_f32(t, out)
                    : dp_ggml_dequantize(out + (size_t)(r * rcols), src, t->type, nr * rcols))
                return dp_fail_context("%s: tensor %s", s->gg->path, gg);
            release_pages(s->gg->owns_map, src, step == nrows ? t->nbytes : (size_t)nr * row_bytes);
        }
        if (permute_heads > 0 && s->unpermute)
            return unpermute_rows(out, permute_heads, rows, cols);
        return 0;
    }
    const dp_st_tensor *t = dp_st_set_find(s->st, hf);
    if (!t) return dp_fail("model has no tensor %s", hf);
    size_t esize = t->numel > 0 ? (size_t)(t->nbytes / (uint64_t)t->numel) : 0;
    if (!esize || (size_t)t->numel < SLICE_BYTES / esize) { /* small: in one go */
        if (dp_st_tensor_f32(t, out, rows, cols)) return -1;
        release_pages(true, t->data, t->nbytes); /* dp_st_set files are always mapped */
        return 0;
    }
    bool ok = cols ? (t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols)
                   : (t->ndim == 1 && t->shape[0] == rows);
    if (!ok) return dp_st_tensor_f32(t, out, rows, cols); /* its error names the shapes */
    size_t step = SLICE_BYTES / esize;
    for (size_t i = 0; i < (size_t)t->numel; i += step) {
        size_t n = (size_t)t->numel - i < step ? (size_t)t->numel - i : step;
        const uint8_t *src = (const uint8_t *)t->data + i * esize;
        if (dp_convert_to_f32(out + i, src, t->dtype, n)) return dp_fail_context("tensor %s", hf);
        release_pages(true, src, n * esize);
    }
    return 0;
}

/* ------------------------------------------------------------------ NF4 file */

/* reads X.weight + its quant state from a bitsandbytes-layout file into q */
static int load_nf4_linear(const dp_st_set *set, const char *x, dp_nf4 *q, int64_t rows,
                           int64_t cols) {
    char name[512];
    const dp_st_tensor *t[6];
    const char *suffix[6] = {"",
                             ".absmax",
                             ".quant_map",
                             ".nested_absmax",
                             ".nested_quant_map",
                             ".quant_state.bitsandbytes__nf4"};
    for (int i = 0; i < 6; i++) {
        snprintf(name, sizeof name, "%s.weight%s", x, suffix[i]);
        t[i] = dp_st_set_find(set, name);
        if (!t[i]) return dp_fail("NF4 file lacks %s (expected the bitsandbytes layout)", name);
    }
    const dp_st_tensor *qs = t[5];
    if (qs->dtype != DP_DT_U8) return dp_fail("%s.weight quant_state is not U8", x);
    cJSON *j = NULL;
    if (dp_json_parse(qs->data, (size_t)qs->nbytes, DP_JSON_REFUSE_NUL, x, 1, &j)) return -1;
    const cJSON *qt = cJSON_GetObjectItem(j, "quant_type"),
                *bs = cJSON_GetObjectItem(j, "blocksize"), *sh = cJSON_GetObjectItem(j, "shape"),
                *off = cJSON_GetObjectItem(j, "nested_offset"),
                *nbs = cJSON_GetObjectItem(j, "nested_blocksize");
    int rc = 0;
    if (!cJSON_IsString(qt) || strcmp(qt->valuestring, "nf4") || !cJSON_IsNumber(bs) ||
        !cJSON_IsArray(sh) || cJSON_GetArraySize(sh) != 2 || !cJSON_IsNumber(off) ||
        !cJSON_IsNumber(nbs) || nbs->valuedouble != 256)
        rc = dp_fail("%s.weight: quant_state is not an NF4 state with nested (double) "
                     "quantization of blocksize 256",
                     x);
    else if (cJSON_GetArrayItem(sh, 0)->valuedouble != (double)rows ||
             cJSON_GetArrayItem(sh, 1)->valuedouble != (double)cols)
        rc = dp_fail("%s.weight: quantized shape [%g, %g] but the model needs [%lld, %lld]", x,
                     cJSON_GetArrayItem(sh, 0)->valuedouble, cJSON_GetArrayItem(sh, 1)->valuedouble,
                     (long long)rows, (long long)cols);
    int blocksize = rc ? 0 : (int)bs->valuedouble;
    float offset = rc ? 0 : (float)off->valuedouble;
    cJSON_Delete(j);
    if (rc || dp_nf4_alloc(q, rows, cols, blocksize)) return -1;
    float map[256];
    dp_dynamic_map(map);
    int64_t ng = (q->nblocks + 255) / 256;
    if (t[0]->dtype != DP_DT_U8 || t[0]->nbytes != (uint64_t)(q->n + 1) / 2 ||
        t[1]->dtype != DP_DT_U8 || t[1]->nbytes != (uint64_t)q->nblocks ||
        t[3]->dtype != DP_DT_F32 || t[3]->nbytes != (uint64_t)ng * 4 || t[2]->dtype != DP_DT_F32 ||
        t[2]->nbytes != 64 || memcmp(t[2]->data, dp_nf4_values, 64) || t[4]->dtype != DP_DT_F32 ||
        t[4]->nbytes != 1024 || memcmp(t[4]->data, map, 1024)) {
        dp_nf4_free(q);
        return dp_fail("%s.weight: NF4 arrays have the wrong types or sizes for [%lld, %lld] in "
                       "blocks of %d, or non-standard code maps",
                       x, (long long)rows, (long long)cols, blocksize);
    }
    memcpy(q->codes, t[0]->data, t[0]->nbytes);
    memcpy(q->absmax_q, t[1]->data, t[1]->nbytes);
    memcpy(q->absmax2, t[3]->data, t[3]->nbytes);
    q->offset = offset;
    for (int i = 0; i < 2; i++) release_pages(true, t[i]->data, t[i]->nbytes);
    return 0;
}

/* ------------------------------------------------------------------ load */

void dp_model_free(dp_model *m) {
    if (!m) return;
    storage *s = m->storage;
    if (s) {
        free(s->arena);
        for (int i = 0; i < s->n_nf4; i++) dp_nf4_free(&s->nf4[i]);
        free(s->nf4);
        dp_q8_free(&s->lm_q8);
        free(s);
    }
    free(m->layers);
    free(m->source);
    free(m);
}

size_t dp_model_weight_bytes(const dp_model *m) {
    const storage *s = m->storage;
    size_t b = s->arena_floats * sizeof(float);
    for (int i = 0; i < s->n_nf4; i++)
        if (s->nf4[i].codes) b += dp_nf4_bytes(&s->nf4[i]);
    if (s->lm_q8.q) b += dp_q8_bytes(&s->lm_q8);
    return b;
}

typedef struct {
    int64_t rows, cols;
    int permute; /* heads for the GGUF unpermutation, 0 = none */
} lin_shape;

static lin_shape linear_shape(const dp_model_config *c, int id) {
    lin_shape s = {0, 0, 0};
    dp_linear_shape(c, (dp_linear_id)id, &s.rows, &s.cols);
    if (c->arch == DP_ARCH_LLAMA && (id == DP_Q || id == DP_K))
        s.permute = id == DP_Q ? c->H : c->KVH;
    return s;
}

static void names(int layer, int id, char *hf, char *gg, size_t cap, const char *what) {
    /* what: "weight" or "bias" */
    snprintf(hf, cap, "model.layers.%d.%s.%s.%s", layer, hf_module[id], dp_linear_names[id], what);
    snprintf(gg, cap, "blk.%d.%s.%s", layer, gguf_linear[id], what);
}

/* Floats of fp32 weights the arena holds: embeddings, norms, biases, the block linears unless
 * they are NF4, and an untied lm_head unless it is NF4. */
static size_t arena_floats(const dp_model_config *c, bool nf4, bool lm_nf4) {
    const size_t C = (size_t)c->C, V = (size_t)c->V, D = (size_t)c->D;
    size_t n = V * C + C; /* embed, final norm */
    for (int l = 0; l < c->L; l++) {
        n += 2 * C;
        if (c->qk_norm) n += 2 * D;
        if (c->qkv_bias) n += (size_t)(c->H + 2 * c->KVH) * D;
        if (!nf4)
            for (int id = 0; id < DP_N_LINEAR; id++) {
                lin_shape s = linear_shape(c, id);
                n += (size_t)(s.rows * s.cols);
            }
    }
    if (!c->tied_embeddings && !lm_nf4) n += V * C;
    return n;
}

/* Where one layer's tensors come from while loading. */
typedef struct {
    const dp_model_config *c;
    const source *base; /* norms and biases: the NF4 file when there is one, else src */
    const source *src;  /* the model's own weights */
    dp_st_set *nf4;     /* the quantized copy, or NULL: quantize from src */
    const dp_load_opts *opts;
    storage *stg;
    float *tmp; /* staging for one linear when quantizing */
} layer_loader;

#define TAKE(k) (*p += (k), *p - (k))
/* Layer l's norms, biases and linears; its fp32 tensors carved from *p. 0, -1, or -2 when the
 * NF4 file is at fault (the caller names it). */
static int load_layer(const layer_loader *ld, int l, dp_layer *ly, float **p) {
    const size_t C = (size_t)ld->c->C, D = (size_t)ld->c->D;
    char hf[256], gg[256];
    ly->attn_norm = TAKE(C);
    ly->ffn_norm = TAKE(C);
    snprintf(hf, sizeof hf, "model.layers.%d.input_layernorm.weight", l);
    snprintf(gg, sizeof gg, "blk.%d.attn_norm.weight", l);
    if (fetch(ld->base, hf, gg, ly->attn_norm, ld->c->C, 0, 0)) return -1;
    snprintf(hf, sizeof hf, "model.layers.%d.post_attention_layernorm.weight", l);
    snprintf(gg, sizeof gg, "blk.%d.ffn_norm.weight", l);
    if (fetch(ld->base, hf, gg, ly->ffn_norm, ld->c->C, 0, 0)) return -1;
    if (ld->c->qk_norm) {
        ly->q_norm = TAKE(D);
        ly->k_norm = TAKE(D);
        snprintf(hf, sizeof hf, "model.layers.%d.self_attn.q_norm.weight", l);
        snprintf(gg, sizeof gg, "blk.%d.attn_q_norm.weight", l);
        if (fetch(ld->base, hf, gg, ly->q_norm, ld->c->D, 0, 0)) return -1;
        snprintf(hf, sizeof hf, "model.layers.%d.self_attn.k_norm.weight", l);
        snprintf(gg, sizeof gg, "blk.%d.attn_k_norm.weight", l);
        if (fetch(ld->base, hf, gg, ly->k_norm, ld->c->D, 0, 0)) return -1;
    }
    for (int id = 0; id < DP_N_LINEAR; id++) {
        lin_shape s = linear_shape(ld->c, id);
        dp_linear *lin = &ly->lin[id];
        lin->out = (int)s.rows;
        lin->in = (int)s.cols;
        if (ld->c->qkv_bias && id <= DP_V) {
            lin->bias = TAKE((size_t)s.rows);
            names(l, id, hf, gg, sizeof hf, "bias");
            /* the GGUF bias of q/k is permuted like its rows (llama only; qwen2 is not) */
            if (fetch(ld->base, hf, gg, lin->bias, s.rows, 0, 0)) return -1;
        }
        names(l, id, hf, gg, sizeof hf, "weight");
        if (!ld->opts->nf4) {
            lin->w = TAKE((size_t)(s.rows * s.cols));
            if (fetch(ld->src, hf, gg, lin->w, s.rows, s.cols, s.permute)) return -1;
            continue;
        }
        dp_nf4 *q = &ld->stg->nf4[l * DP_N_LINEAR + id];
        lin->nf4 = q;
        if (ld->nf4) {
            snprintf(hf, sizeof hf, "model.layers.%d.%s.%s", l, hf_module[id], dp_linear_names[id]);
            if (load_nf4_linear(ld->nf4, hf, q, s.rows, s.cols)) return -2;
        } else if (fetch(ld->src, hf, gg, ld->tmp, s.rows, s.cols, s.permute) ||
                   dp_nf4_quantize(q, ld->tmp, s.rows, s.cols, ld->opts->blocksize))
            return -1;
    }
    return 0;
}
#undef TAKE

/* ------------------------------------------------------------------ source fingerprint */

/* The NF4 file records which weights it was quantized from, so a MODEL/model.nf4.safetensors
 * left from other weights is not used for the current ones. The fingerprint covers config.json,
 * every weight file's size and header (names, dtypes, shapes, offsets) and its data: all of it
 * up to FP_FULL_BYTES, else FP_SAMPLES evenly spaced slices (a few hundred KiB read per file, so
 * checking a 15 GB model costs milliseconds; a fine-tune changes nearly every tensor, so the
 * slices see it). */
#define FP_FULL_BYTES   (1u << 20)
#define FP_SAMPLES      64
#define FP_SAMPLE_BYTES 4096
#define NF4_SOURCE_KEY  "doppel.source_fingerprint"

static void fp_data(XXH3_state_t *h, const unsigned char *p, size_t n) {
    uint64_t n64 = n;
    XXH3_64bits_update(h, &n64, sizeof n64);
    if (n <= FP_FULL_BYTES) {
        XXH3_64bits_update(h, p, n);
        return;
    }
    size_t step = (n - FP_SAMPLE_BYTES) / (FP_SAMPLES - 1);
    for (int i = 0; i < FP_SAMPLES; i++) XXH3_64bits_update(h, p + step * i, FP_SAMPLE_BYTES);
}

/* 16 hex digits into out[17]. 0, or -1 with dp_last_error(). */
static int source_fingerprint(const char *path, const dp_st_set *st, const dp_gguf *gg,
                              char out[17]) {
    XXH3_state_t h;
    XXH3_64bits_reset(&h);
    if (st) {
        char cfg[4200], *text = NULL;
        size_t len = 0;
        snprintf(cfg, sizeof cfg, "%s/config.json", path);
        if (dp_read_file(cfg, &text, &len)) return -1;
        XXH3_64bits_update(&h, text, len);
        free(text);
        for (int i = 0; i < st->n_files; i++) {
            const dp_safetensors *f = st->files[i];
            const unsigned char *map = f->map;
            uint64_t hlen;
            memcpy(&hlen, map, 8); /* checked by dp_safetensors_open */
            XXH3_64bits_update(&h, map, 8 + hlen);
            fp_data(&h, map + 8 + hlen, f->map_size - 8 - hlen);
        }
    } else {
        const unsigned char *map = gg->map;
        XXH3_64bits_update(&h, map, gg->data_offset); /* metadata and tensor infos */
        fp_data(&h, map + gg->data_offset, gg->map_size - gg->data_offset);
    }
    snprintf(out, 17, "%016" PRIx64, (uint64_t)XXH3_64bits_digest(&h));
    return 0;
}

/* The quantized copy to read the NF4 linears from, or NULL to quantize from the source: the file
 * --nf4-file names (refused when it was made from other weights) or the default one (passed
 * over, with a note, when stale). NULL with *failed on an error. */
static dp_st_set *open_nf4_copy(const char *path, const dp_load_opts *opts, const char *source_fp,
                                char *nf4path, size_t cap, bool *failed) {
    *failed = false;
    if (!opts->nf4 || opts->nf4_fresh) return NULL;
    if (opts->nf4_file)
        snprintf(nf4path, cap, "%s", opts->nf4_file);
    else
        dp_nf4_default_path(path, nf4path, cap);
    if (!exists(nf4path)) {
        if (opts->nf4_file) {
            dp_fail("%s: no such NF4 file (make one with `doppel quantize`)", nf4path);
            *failed = true;
        }
        return NULL;
    }
    dp_st_set *set = dp_st_set_open_file(nf4path);
    if (!set) {
        *failed = true;
        return NULL;
    }
    const char *made_from = dp_safetensors_meta(set->files[0], NF4_SOURCE_KEY);
    if (made_from && !strcmp(made_from, source_fp)) return set;
    dp_st_set_close(set);
    const char *why = made_from ? "was quantized from other weights than"
                                : "does not record which "
                                  "weights it came from, "
                                  "so may not match";
    if (opts->nf4_file) {
        dp_fail("%s %s %s (quantize them again: `doppel quantize %s --out %s`)", nf4path, why, path,
                path, nf4path);
        *failed = true;
        return NULL;
    }
    if (!opts->quiet)
        fprintf(stderr,
                "note: %s %s %s: quantizing from the weights instead (`doppel quantize %s` "
                "refreshes it)\n",
                nf4path, why, path, path);
    return NULL;
}

dp_model *dp_model_load(const char *path, const dp_load_opts *opts_in) {
    dp_load_opts opts = {0};
    if (opts_in) opts = *opts_in;
    if (!opts.blocksize) opts.blocksize = 64;
    dp_model *m = dp_calloc(1, sizeof *m);
    storage *stg = dp_calloc(1, sizeof *stg);
    source src = {0}, nf4src = {0};
    float *tmp = NULL;
    dp_progress *progress = NULL;
    if (!m || !stg) goto fail;
    m->storage = stg;
    m->source = dp_strdup(path);
    if (!m->source) goto fail;
    dp_model_config *c = &m->cfg;
    if (is_dir(path)) {
        if (dp_config_load_dir(c, path) || !(src.st = dp_st_set_open_dir(path))) goto fail;
    } else if (exists(path)) {
        if (!(src.gg = dp_gguf_open(path)) || dp_config_from_gguf(c, src.gg)) goto fail;
        src.unpermute = c->arch == DP_ARCH_LLAMA;
    } else {
        dp_fail("model %s: no such file or directory (expected a Hugging Face model directory or a "
                ".gguf file)",
                path);
        goto fail;
    }
    if (source_fingerprint(path, src.st, src.gg, stg->source_fp)) goto fail;
    /* a quantized copy of these weights, when asked for NF4 */
    char nf4path[4096] = "";
    bool failed;
    nf4src.st = open_nf4_copy(path, &opts, stg->source_fp, nf4path, sizeof nf4path, &failed);
    if (failed) goto fail;
    /* tensors other than NF4 linears come from the NF4 file when there is one (it holds them all)
     */
    const source *base = nf4src.st ? &nf4src : &src;
    bool lm_nf4 = opts.nf4 && opts.nf4_lm_head && !c->tied_embeddings;
    if (nf4src.st && !c->tied_embeddings) {
        lm_nf4 = dp_st_set_find(nf4src.st, "lm_head.weight.absmax") != NULL;
    }
    const int L = c->L;
    const size_t C = (size_t)c->C, V = (size_t)c->V;
    size_t n = arena_floats(c, opts.nf4, lm_nf4);
    stg->arena = malloc(n * sizeof(float));
    m->layers = dp_calloc((size_t)L, sizeof(dp_layer));
    if (!stg->arena || !m->layers) {
        dp_fail("out of memory: the model needs %.1f MiB of fp32 weights", n * 4.0 / 1048576);
        goto fail;
    }
    stg->arena_floats = n;
    if (opts.nf4) {
        stg->nf4 = dp_calloc((size_t)L * DP_N_LINEAR + 1, sizeof(dp_nf4));
        if (!stg->nf4) goto fail;
        stg->n_nf4 = L * DP_N_LINEAR + 1;
        size_t maxlin = V * C * (lm_nf4 ? 1 : 0);
        for (int id = 0; id < DP_N_LINEAR; id++) {
            lin_shape s = linear_shape(c, id);
            if ((size_t)(s.rows * s.cols) > maxlin) maxlin = (size_t)(s.rows * s.cols);
        }
        if (!nf4src.st && !(tmp = malloc(maxlin * sizeof(float)))) {
            dp_fail("out of memory for a %zu-float staging buffer", maxlin);
            goto fail;
        }
    }
    float *p = stg->arena;
#define TAKE(k) (p += (k), p - (k))
    m->embed = TAKE(V * C);
    if (fetch(base, "model.embed_tokens.weight", "token_embd.weight", m->embed, c->V, c->C, 0))
        goto fail;
    m->final_norm = TAKE(C);
    if (fetch(base, "model.norm.weight", "output_norm.weight", m->final_norm, c->C, 0, 0))
        goto fail;
    dp_progress_opts popts = {.quiet = opts.quiet};
    progress = dp_progress_start(opts.nf4 && !nf4src.st ? "loading + NF4" : "loading", L, "layers",
                                 &popts);
    const layer_loader ld = {c, base, &src, nf4src.st, &opts, stg, tmp};
    for (int l = 0; l < L; l++) {
        dp_progress_update(progress, l);
        int rc = load_layer(&ld, l, &m->layers[l], &p);
        if (rc == -2) goto fail_nf4;
        if (rc) goto fail;
    }
    dp_progress_update(progress, L);
    dp_progress_finish(progress);
    progress = NULL;
    m->lm_head.out = c->V;
    m->lm_head.in = c->C;
    if (c->tied_embeddings) {
        m->lm_head.w = m->embed;
    } else if (lm_nf4) {
        dp_nf4 *q = &stg->nf4[L * DP_N_LINEAR];
        m->lm_head.nf4 = q;
        if (nf4src.st) {
            if (load_nf4_linear(nf4src.st, "lm_head", q, c->V, c->C)) goto fail_nf4;
        } else if (fetch(&src, "lm_head.weight", "output.weight", tmp, c->V, c->C, 0) ||
                   dp_nf4_quantize(q, tmp, c->V, c->C, opts.blocksize))
            goto fail;
    } else {
        m->lm_head.w = TAKE(V * C);
        if (fetch(base, "lm_head.weight", "output.weight", m->lm_head.w, c->V, c->C, 0)) goto fail;
    }
#undef TAKE
    if (opts.lm_head_q8 && dp_model_lm_head_q8(m)) goto fail;
    if (opts.decode != DP_DECODE_FP32) dp_model_set_decode(m, (dp_decode_mode)opts.decode);
    if (!opts.quiet)
        fprintf(stderr, "loaded %s: %s, %d layers, %s%s weights %.1f MiB\n", path,
                dp_arch_name(c->arch), L, opts.nf4 ? "NF4" : "fp32",
                nf4src.st ? " (from the quantized file)" : "",
                dp_model_weight_bytes(m) / 1048576.0);
    free(tmp);
    dp_st_set_close(src.st);
    dp_gguf_close(src.gg);
    dp_st_set_close(nf4src.st);
    return m;
fail_nf4:
    dp_fail_context("%s", nf4path);
fail:
    dp_progress_finish(progress);
    free(tmp);
    dp_st_set_close(src.st);
    dp_gguf_close(src.gg);
    dp_st_set_close(nf4src.st);
    dp_model_free(m);
    return NULL;
}

/* ------------------------------------------------------------------ quantize / save */

/* Moves the fp32 tensors the model still uses (everything but quantized linears) into a new
 * arena of just their size and frees the old one: after quantizing, the fp32 copies of the
 * linears would otherwise stay resident. */
static int compact_arena(dp_model *m) {
    storage *s = m->storage;
    const dp_model_config *c = &m->cfg;
    const size_t C = (size_t)c->C, V = (size_t)c->V, D = (size_t)c->D;
    /* every fp32 tensor pointer with its size, in arena order */
    size_t cap = 3 + (size_t)c->L * (4 + 2 * DP_N_LINEAR), k = 0, n = 0;
    float ***ptr = dp_malloc(cap * sizeof *ptr);
    size_t *len = dp_malloc(cap * sizeof *len);
    if (!ptr || !len) {
        free(ptr);
        free(len);
        return -1;
    }
#define ADD(field, size)                                                                           \
    do {                                                                                           \
        if (field) ptr[k] = &(field), len[k] = (size), n += len[k], k++;                           \
    } while (0)
    bool tied_w = m->lm_head.w && m->lm_head.w == m->embed;
    ADD(m->embed, V * C);
    ADD(m->final_norm, C);
    for (int l = 0; l < c->L; l++) {
        dp_layer *ly = &m->layers[l];
        ADD(ly->attn_norm, C);
        ADD(ly->ffn_norm, C);
        ADD(ly->q_norm, D);
        ADD(ly->k_norm, D);
        for (int id = 0; id < DP_N_LINEAR; id++) {
            dp_linear *lin = &ly->lin[id];
            ADD(lin->bias, (size_t)lin->out);
            ADD(lin->w, (size_t)lin->out * lin->in);
        }
    }
    if (!tied_w) ADD(m->lm_head.w, V * C);
#undef ADD
    float *arena = malloc((n ? n : 1) * sizeof(float));
    if (!arena) {
        free(ptr);
        free(len);
        return dp_fail("out of memory compacting the model's fp32 weights (%.1f MiB)",
                       n * 4.0 / 1048576);
    }
    float *p = arena;
    for (size_t i = 0; i < k; i++) {
        memcpy(p, *ptr[i], len[i] * sizeof(float));
        *ptr[i] = p;
        p += len[i];
    }
    if (tied_w) m->lm_head.w = m->embed;
    free(ptr);
    free(len);
    free(s->arena);
    s->arena = arena;
    s->arena_floats = n;
    return 0;
}

int dp_model_quantize_nf4(dp_model *m, int blocksize, bool lm_head) {
    storage *s = m->storage;
    const int L = m->cfg.L;
    if (!s->nf4) {
        s->nf4 = dp_calloc((size_t)L * DP_N_LINEAR + 1, sizeof(dp_nf4));
        if (!s->nf4) return -1;
        s->n_nf4 = L * DP_N_LINEAR + 1;
    }
    for (int l = 0; l < L; l++)
        for (int id = 0; id < DP_N_LINEAR; id++) {
            dp_linear *lin = &m->layers[l].lin[id];
            if (!lin->w) continue;
            dp_nf4 *q = &s->nf4[l * DP_N_LINEAR + id];
            if (dp_nf4_quantize(q, lin->w, lin->out, lin->in, blocksize)) return -1;
            lin->nf4 = q;
            lin->w = NULL;
        }
    if (lm_head && !m->cfg.tied_embeddings && m->lm_head.w) {
        dp_nf4 *q = &s->nf4[L * DP_N_LINEAR];
        if (dp_nf4_quantize(q, m->lm_head.w, m->cfg.V, m->cfg.C, blocksize)) return -1;
        m->lm_head.nf4 = q;
        m->lm_head.w = NULL;
    }
    return compact_arena(m);
}

int dp_model_lm_head_q8(dp_model *m) {
    storage *s = m->storage;
    dp_linear *lin = &m->lm_head;
    if (!lin->w || lin->in % DP_Q8_BLOCK || lin->q8) return 0;
    if (dp_q8_quantize(&s->lm_q8, lin->w, lin->out, lin->in)) return -1;
    lin->q8 = &s->lm_q8;
    return 0;
}

int dp_decode_mode_parse(const char *name) {
    static const char *const names[] = {"fp32", "int8-head", "int8"};
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, names[i])) return i;
    return -1;
}

bool dp_model_set_decode(dp_model *m, dp_decode_mode mode) {
    const bool vnni = dp_gemv_i8_supported(), linears = vnni && mode == DP_DECODE_INT8;
    bool any = false;
    for (int l = 0; l < m->cfg.L; l++)
        for (int i = 0; i < DP_N_LINEAR; i++) {
            dp_linear *lin = &m->layers[l].lin[i];
            lin->i8 = linears && lin->nf4 && dp_gemv_nf4_i8_fits(lin->nf4, lin->in);
            any = any || lin->i8;
        }
    m->lm_head.i8 = vnni && mode != DP_DECODE_FP32 && m->lm_head.q8;
    return any || m->lm_head.i8;
}

static int add_f32(dp_st_writer *w, const char *name, const float *data, int64_t rows,
                   int64_t cols) {
    int64_t shape[2] = {rows, cols};
    return dp_st_writer_add(w, name, DP_DT_F32, cols ? 2 : 1, shape, data);
}

/* the six bitsandbytes tensors of one NF4 linear; json receives the quant_state text to free */
static int add_nf4(dp_st_writer *w, const char *x, const dp_nf4 *q, const float *map, char **json) {
    char name[512];
    int64_t s;
    char buf[512];
    int len = snprintf(buf, sizeof buf,
                       "{\"quant_type\": \"nf4\", \"blocksize\": %d, \"dtype\": \"float32\", "
                       "\"shape\": [%lld, %lld], \"nested_blocksize\": 256, \"nested_dtype\": "
                       "\"float32\", \"nested_offset\": %.9g}",
                       q->blocksize, (long long)q->rows, (long long)q->cols, (double)q->offset);
    *json = dp_strdup(buf);
    if (!*json) return -1;
    int rc = 0;
    int64_t packed[2] = {(q->n + 1) / 2, 1};
    snprintf(name, sizeof name, "%s.weight", x);
    rc |= dp_st_writer_add(w, name, DP_DT_U8, 2, packed, q->codes);
    s = q->nblocks;
    snprintf(name, sizeof name, "%s.weight.absmax", x);
    rc |= dp_st_writer_add(w, name, DP_DT_U8, 1, &s, q->absmax_q);
    s = 16;
    snprintf(name, sizeof name, "%s.weight.quant_map", x);
    rc |= dp_st_writer_add(w, name, DP_DT_F32, 1, &s, dp_nf4_values);
    s = (q->nblocks + 255) / 256;
    snprintf(name, sizeof name, "%s.weight.nested_absmax", x);
    rc |= dp_st_writer_add(w, name, DP_DT_F32, 1, &s, q->absmax2);
    s = 256;
    snprintf(name, sizeof name, "%s.weight.nested_quant_map", x);
    rc |= dp_st_writer_add(w, name, DP_DT_F32, 1, &s, map);
    s = len;
    snprintf(name, sizeof name, "%s.weight.quant_state.bitsandbytes__nf4", x);
    rc |= dp_st_writer_add(w, name, DP_DT_U8, 1, &s, *json);
    return rc ? -1 : 0;
}

int dp_model_save_nf4(const dp_model *m, const char *path) {
    const dp_model_config *c = &m->cfg;
    const int L = c->L;
    char **json = dp_calloc((size_t)L * DP_N_LINEAR + 1, sizeof(char *));
    dp_st_writer *w = dp_st_writer_new();
    float map[256];
    dp_dynamic_map(map);
    int rc = (json && w) ? 0 : -1;
    char name[256];
    if (!rc) rc = add_f32(w, "model.embed_tokens.weight", m->embed, c->V, c->C);
    if (!rc) rc = add_f32(w, "model.norm.weight", m->final_norm, c->C, 0);
    for (int l = 0; l < L && !rc; l++) {
        const dp_layer *ly = &m->layers[l];
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        rc |= add_f32(w, name, ly->attn_norm, c->C, 0);
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        rc |= add_f32(w, name, ly->ffn_norm, c->C, 0);
        if (ly->q_norm) {
            snprintf(name, sizeof name, "model.layers.%d.self_attn.q_norm.weight", l);
            rc |= add_f32(w, name, ly->q_norm, c->D, 0);
            snprintf(name, sizeof name, "model.layers.%d.self_attn.k_norm.weight", l);
            rc |= add_f32(w, name, ly->k_norm, c->D, 0);
        }
        for (int id = 0; id < DP_N_LINEAR && !rc; id++) {
            const dp_linear *lin = &ly->lin[id];
            snprintf(name, sizeof name, "model.layers.%d.%s.%s", l, hf_module[id],
                     dp_linear_names[id]);
            if (!lin->nf4) {
                rc = dp_fail("cannot save %s: the model is not quantized to NF4", name);
                break;
            }
            rc = add_nf4(w, name, lin->nf4, map, &json[l * DP_N_LINEAR + id]);
            if (!rc && lin->bias) {
                char bn[300];
                snprintf(bn, sizeof bn, "%s.bias", name);
                rc = add_f32(w, bn, lin->bias, lin->out, 0);
            }
        }
    }
    if (!rc && !c->tied_embeddings) {
        if (m->lm_head.nf4)
            rc = add_nf4(w, "lm_head", m->lm_head.nf4, map, &json[L * DP_N_LINEAR]);
        else
            rc = add_f32(w, "lm_head.weight", m->lm_head.w, c->V, c->C);
    }
    if (!rc) rc = dp_st_writer_meta(w, "format", "pt");
    if (!rc) rc = dp_st_writer_meta(w, "doppel.source", m->source ? m->source : "");
    const storage *stg = m->storage;
    if (!rc && stg && stg->source_fp[0]) rc = dp_st_writer_meta(w, NF4_SOURCE_KEY, stg->source_fp);
    if (!rc) rc = dp_st_writer_save(w, path);
    dp_st_writer_free(w);
    if (json)
        for (int i = 0; i < L * DP_N_LINEAR + 1; i++) free(json[i]);
    free(json);
    return rc;
}
