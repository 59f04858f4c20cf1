/* doppel merge --format gguf (see export_gguf.h). */
#include "infer/export_gguf.h"
#include "data/base/error.h"
#include "data/base/io.h"
#include "data/base/progress.h"
#include "data/chat_format.h"
#include "infer/config.h"
#include "infer/dtype.h"
#include "infer/export_hf.h"
#include "infer/gguf.h"
#include "infer/gguf_tokenizer.h"
#include "infer/hf_tokenizer_gguf.h"
#include "kernels/ggml_quants.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define ALIGN 32 /* general.alignment's default; the base's own key is not carried over */

/* ------------------------------------------------------------------ the tensors */

typedef enum { T_FLOATS, T_LINEAR, T_RAW } gsrc;

typedef struct {
    char name[96];
    int n_dims;
    int64_t ne[2]; /* innermost first */
    int type;
    gsrc src;
    const float *floats;       /* T_FLOATS */
    int layer;                 /* T_LINEAR */
    dp_linear_id id;           /* T_LINEAR */
    int permute_heads;         /* T_LINEAR: llama q/k back to GGUF's interleaved rows */
    const dp_gguf_tensor *raw; /* T_RAW: copied as it is */
    uint64_t offset, nbytes;
} gtensor;

typedef struct {
    gtensor *t;
    int n, cap;
} glist;

static const char *const gguf_linear[DP_N_LINEAR] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                                     "ffn_gate", "ffn_up", "ffn_down"};

static gtensor *gpush(glist *l, const char *name, int n_dims, int64_t rows, int64_t cols) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        gtensor *t = dp_realloc(l->t, (size_t)cap * sizeof *t);
        if (!t) return NULL;
        l->t = t;
        l->cap = cap;
    }
    gtensor *t = &l->t[l->n++];
    *t = (gtensor){.n_dims = n_dims,
                   .ne = {n_dims == 2 ? cols : rows, n_dims == 2 ? rows : 1},
                   .type = DP_GGML_F32};
    snprintf(t->name, sizeof t->name, "%s", name);
    return t;
}

/* matrices in the chosen type when their rows split into blocks of 32, else F16 */
static int matrix_type(int type, int64_t cols) {
    return type == DP_GGML_F32 ? type : type == DP_GGML_F16 || cols % 32 ? DP_GGML_F16 : type;
}

static int list_gguf_tensors(const dp_model *m, const dp_gguf *base, int type,
                             const float *rope_factors, glist *l) {
    const dp_model_config *c = &m->cfg;
    char n[96];
    gtensor *t;
#define VEC(name_, ptr_, len_)                                                                     \
    do {                                                                                           \
        if (!(t = gpush(l, name_, 1, len_, 0))) return -1;                                         \
        t->src = T_FLOATS, t->floats = ptr_;                                                       \
    } while (0)
    if (!(t = gpush(l, "token_embd.weight", 2, c->V, c->C))) return -1;
    t->src = T_FLOATS, t->floats = m->embed, t->type = matrix_type(type, c->C);
    for (int i = 0; i < c->L; i++) {
        const dp_layer *ly = &m->layers[i];
        snprintf(n, sizeof n, "blk.%d.attn_norm.weight", i);
        VEC(n, ly->attn_norm, c->C);
        for (int id = 0; id < DP_N_LINEAR; id++) {
            const dp_linear *lin = &ly->lin[id];
            snprintf(n, sizeof n, "blk.%d.%s.weight", i, gguf_linear[id]);
            if (!(t = gpush(l, n, 2, lin->out, lin->in))) return -1;
            t->src = T_LINEAR, t->layer = i, t->id = (dp_linear_id)id;
            t->type = matrix_type(type, lin->in);
            if (c->arch == DP_ARCH_LLAMA && (id == DP_Q || id == DP_K))
                t->permute_heads = id == DP_Q ? c->H : c->KVH;
            if (lin->bias) {
                snprintf(n, sizeof n, "blk.%d.%s.bias", i, gguf_linear[id]);
                VEC(n, lin->bias, lin->out);
            }
        }
        if (ly->q_norm) {
            snprintf(n, sizeof n, "blk.%d.attn_q_norm.weight", i);
            VEC(n, ly->q_norm, c->D);
            snprintf(n, sizeof n, "blk.%d.attn_k_norm.weight", i);
            VEC(n, ly->k_norm, c->D);
        }
        snprintf(n, sizeof n, "blk.%d.ffn_norm.weight", i);
        VEC(n, ly->ffn_norm, c->C);
    }
    VEC("output_norm.weight", m->final_norm, c->C);
#undef VEC
    if (!c->tied_embeddings) {
        if (!m->lm_head.w) return dp_fail("the lm_head is not held in fp32; cannot export it");
        if (!(t = gpush(l, "output.weight", 2, c->V, c->C))) return -1;
        t->src = T_FLOATS, t->floats = m->lm_head.w, t->type = matrix_type(type, c->C);
    }
    /* from a Hugging Face base: Llama 3's RoPE scaling as llama.cpp's converter writes it */
    if (!base && c->rope_scaling.llama3) {
        if (!(t = gpush(l, "rope_freqs.weight", 1, c->D / 2, 0))) return -1;
        t->src = T_FLOATS, t->floats = rope_factors;
    }
    /* what else a GGUF base holds (llama 3's rope_freqs) goes over unchanged */
    for (uint64_t k = 0; base && k < base->n_tensors; k++) {
        const dp_gguf_tensor *bt = &base->tensors[k];
        bool known = false;
        for (int i = 0; i < l->n && !known; i++) known = !strcmp(l->t[i].name, bt->name);
        if (known) continue;
        if (bt->n_dims > 2)
            return dp_fail("%s: tensor %s has %d dims", base->path, bt->name, bt->n_dims);
        if (!(t = gpush(l, bt->name, bt->n_dims, bt->n_dims == 2 ? bt->ne[1] : bt->ne[0],
                        bt->ne[0])))
            return -1;
        t->src = T_RAW, t->raw = bt, t->type = bt->type;
    }
    uint64_t off = 0;
    for (int i = 0; i < l->n; i++) {
        gtensor *g = &l->t[i];
        int64_t numel = g->ne[0] * g->ne[1];
        g->nbytes =
            g->src == T_RAW
                ? g->raw->nbytes
                : (uint64_t)(numel / dp_ggml_block_elems(g->type) * dp_ggml_block_bytes(g->type));
        g->offset = off;
        off += (g->nbytes + ALIGN - 1) / ALIGN * ALIGN;
    }
    return 0;
}

void dp_gguf_permute_rows(const float *w, float *out, int nh, int64_t rows, int64_t cols) {
    int64_t D = rows / nh;
    for (int h = 0; h < nh; h++)
        for (int64_t j = 0; j < D / 2; j++)
            for (int s = 0; s < 2; s++)
                memcpy(out + (size_t)((h * D + 2 * j + s) * cols),
                       w + (size_t)((h * D + s * (D / 2) + j) * cols),
                       (size_t)cols * sizeof(float));
}

/* ------------------------------------------------------------------ metadata */

/* the header is built in memory (the tokenizer's arrays are its bulk: a few MB), then written */
static int put(dp_buf *w, const void *p, size_t n) {
    return dp_buf_append(w, p, n);
}
static int put_u32(dp_buf *w, uint32_t v) {
    return put(w, &v, 4);
}
static int put_u64(dp_buf *w, uint64_t v) {
    return put(w, &v, 8);
}
static int put_str(dp_buf *w, const char *s, uint64_t n) {
    return put_u64(w, n) || put(w, s, (size_t)n);
}

static size_t scalar_size(dp_gguf_vtype t) {
    switch (t) {
    case DP_GGUF_U8:
    case DP_GGUF_I8:
    case DP_GGUF_BOOL:
        return 1;
    case DP_GGUF_U16:
    case DP_GGUF_I16:
        return 2;
    case DP_GGUF_U32:
    case DP_GGUF_I32:
    case DP_GGUF_F32:
        return 4;
    case DP_GGUF_U64:
    case DP_GGUF_I64:
    case DP_GGUF_F64:
        return 8;
    default:
        return 0;
    }
}

/* one key/value copied from the base, in its own type */
static int put_kv(dp_buf *w, const dp_gguf_kv *kv) {
    if (put_str(w, kv->key, strlen(kv->key)) || put_u32(w, (uint32_t)kv->type)) return -1;
    if (kv->type == DP_GGUF_STRING) return put_str(w, kv->str, kv->str_len);
    if (kv->type == DP_GGUF_ARRAY) {
        if (put_u32(w, (uint32_t)kv->arr_type) || put_u64(w, kv->arr_n)) return -1;
        if (kv->arr_type == DP_GGUF_STRING) {
            for (uint64_t i = 0; i < kv->arr_n; i++)
                if (put_str(w, kv->arr_str[i], kv->arr_str_len[i])) return -1;
            return 0;
        }
        size_t es = scalar_size(kv->arr_type);
        if (!es) return dp_fail("metadata %s: nested arrays are not copied", kv->key);
        return put(w, kv->arr_data, es * (size_t)kv->arr_n);
    }
    size_t es = scalar_size(kv->type);
    if (kv->type == DP_GGUF_F32) {
        float f = (float)kv->f;
        return put(w, &f, 4);
    }
    if (kv->type == DP_GGUF_F64) return put(w, &kv->f, 8);
    uint64_t u = kv->u; /* little-endian: the low bytes are the value for every integer width */
    return put(w, &u, es);
}

static bool replaced_key(const char *k) {
    static const char *const keys[] = {"general.name",
                                       "general.file_type",
                                       "general.alignment",
                                       "general.quantization_version",
                                       "tokenizer.chat_template",
                                       "tokenizer.ggml.eot_token_id",
                                       NULL};
    for (int i = 0; keys[i]; i++)
        if (!strcmp(k, keys[i])) return true;
    return false;
}

/* ------------------------------------------------------------------ from a Hugging Face base */

/* one key/value appended to w, counted in *n */
static int kv_key(dp_buf *w, uint64_t *n, const char *key, dp_gguf_vtype type) {
    ++*n;
    return put_str(w, key, strlen(key)) || put_u32(w, (uint32_t)type);
}
static int kv_u32(dp_buf *w, uint64_t *n, const char *key, uint32_t v) {
    return kv_key(w, n, key, DP_GGUF_U32) || put_u32(w, v);
}
static int kv_f32(dp_buf *w, uint64_t *n, const char *key, float v) {
    return kv_key(w, n, key, DP_GGUF_F32) || put(w, &v, 4);
}
static int kv_bool(dp_buf *w, uint64_t *n, const char *key, bool v) {
    uint8_t b = v;
    return kv_key(w, n, key, DP_GGUF_BOOL) || put(w, &b, 1);
}
static int kv_str(dp_buf *w, uint64_t *n, const char *key, const char *v, size_t len) {
    return kv_key(w, n, key, DP_GGUF_STRING) || put_str(w, v, len);
}
static int kv_strs(dp_buf *w, uint64_t *n, const char *key, char *const *v, const uint64_t *lens,
                   uint64_t count) {
    if (kv_key(w, n, key, DP_GGUF_ARRAY) || put_u32(w, DP_GGUF_STRING) || put_u64(w, count))
        return -1;
    for (uint64_t i = 0; i < count; i++)
        if (put_str(w, v[i], lens[i])) return -1;
    return 0;
}

/* {arch}.SUFFIX */
static const char *arch_key(const dp_model_config *c, const char *suffix) {
    static char key[128];
    snprintf(key, sizeof key, "%s.%s", dp_arch_name(c->arch), suffix);
    return key;
}

/* The metadata llama.cpp's converter writes for a llama / qwen2 / qwen3 model and its
 * byte-level BPE tokenizer (hf_tokenizer_gguf.h), appended to w and counted in *n. */
static int hf_metadata(dp_buf *w, uint64_t *n, const dp_model_config *c,
                       const dp_hf_gguf_vocab *v) {
    const char *arch = dp_arch_name(c->arch);
    if (kv_str(w, n, "general.architecture", arch, strlen(arch)) ||
        kv_u32(w, n, arch_key(c, "block_count"), (uint32_t)c->L) ||
        kv_u32(w, n, arch_key(c, "context_length"), (uint32_t)c->max_position) ||
        kv_u32(w, n, arch_key(c, "embedding_length"), (uint32_t)c->C) ||
        kv_u32(w, n, arch_key(c, "feed_forward_length"), (uint32_t)c->F) ||
        kv_u32(w, n, arch_key(c, "attention.head_count"), (uint32_t)c->H) ||
        kv_u32(w, n, arch_key(c, "attention.head_count_kv"), (uint32_t)c->KVH) ||
        kv_u32(w, n, arch_key(c, "attention.key_length"), (uint32_t)c->D) ||
        kv_u32(w, n, arch_key(c, "attention.value_length"), (uint32_t)c->D) ||
        kv_f32(w, n, arch_key(c, "rope.freq_base"), c->rope_theta) ||
        kv_f32(w, n, arch_key(c, "attention.layer_norm_rms_epsilon"), c->rms_eps))
        return -1;
    if (c->arch == DP_ARCH_LLAMA && (kv_u32(w, n, arch_key(c, "vocab_size"), (uint32_t)c->V) ||
                                     kv_u32(w, n, arch_key(c, "rope.dimension_count"), (uint32_t)c->D)))
        return -1;
    if (kv_str(w, n, "tokenizer.ggml.model", "gpt2", 4) ||
        kv_str(w, n, "tokenizer.ggml.pre", v->pre, strlen(v->pre)) ||
        kv_strs(w, n, "tokenizer.ggml.tokens", v->tokens, v->token_lens, v->n_tokens) ||
        kv_key(w, n, "tokenizer.ggml.token_type", DP_GGUF_ARRAY) || put_u32(w, DP_GGUF_I32) ||
        put_u64(w, v->n_tokens) || put(w, v->token_types, 4 * (size_t)v->n_tokens) ||
        kv_strs(w, n, "tokenizer.ggml.merges", v->merges, v->merge_lens, v->n_merges))
        return -1;
    const char *id_keys[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                             "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.seperator_token_id",
                             "tokenizer.ggml.padding_token_id"};
    const int32_t ids[] = {v->bos_id, v->eos_id, v->unk_id, v->sep_id, v->pad_id};
    for (int i = 0; i < 5; i++)
        if (ids[i] >= 0 && kv_u32(w, n, id_keys[i], (uint32_t)ids[i])) return -1;
    /* what Hugging Face does when its files do not say: no BOS, no EOS added */
    return kv_bool(w, n, "tokenizer.ggml.add_bos_token", v->add_bos == 1) ||
           kv_bool(w, n, "tokenizer.ggml.add_eos_token", v->add_eos == 1);
}

/* Llama 3's RoPE scaling as llama.cpp's converter stores it: D/2 divisors of the frequencies */
static void llama3_rope_factors(const dp_model_config *c, float *out) {
    const dp_rope_scaling *s = &c->rope_scaling;
    const double pi = 3.14159265358979323846, old_len = s->original_max_position;
    const double low_wavelen = old_len / s->low_freq_factor;
    const double high_wavelen = old_len / s->high_freq_factor;
    for (int i = 0; i < c->D / 2; i++) {
        /* the frequencies in fp32, as torch computes them there; the rest in double */
        float freq = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->D);
        double wavelen = 2 * pi / freq, smooth;
        if (wavelen < high_wavelen)
            out[i] = 1.0f;
        else if (wavelen > low_wavelen)
            out[i] = s->factor;
        else {
            smooth = (old_len / wavelen - s->low_freq_factor) /
                     (s->high_freq_factor - s->low_freq_factor);
            out[i] = (float)(1.0 / ((1.0 - smooth) / s->factor + smooth));
        }
    }
}

/* ------------------------------------------------------------------ the file */

#define ENCODE_FLOATS ((size_t)1 << 20) /* elements encoded per write */

/* rows x cols floats in `type` through w, a chunk of whole rows at a time (qbuf holds one) */
static int write_encoded(dp_writer *w, const float *x, int64_t rows, int64_t cols, int type,
                         uint8_t *qbuf) {
    if (type == DP_GGML_F32) return dp_writer_write(w, x, sizeof(float) * (size_t)(rows * cols));
    const size_t row_bytes = (size_t)(cols / dp_ggml_block_elems(type) * dp_ggml_block_bytes(type));
    int64_t step = (int64_t)(ENCODE_FLOATS / (size_t)cols);
    if (step < 1) step = 1;
    for (int64_t r = 0; r < rows; r += step) {
        int64_t nr = rows - r < step ? rows - r : step, n = nr * cols;
        const float *xr = x + (size_t)(r * cols);
        if (type == DP_GGML_F16) {
            uint16_t *h = (uint16_t *)qbuf;
            for (int64_t k = 0; k < n; k++) h[k] = dp_f32_to_f16(xr[k]);
        } else if (type == DP_GGML_Q8_0) {
            dp_ggml_quantize_q8_0(xr, qbuf, n);
        } else {
            dp_ggml_quantize_q4_0(xr, qbuf, n);
        }
        if (dp_writer_write(w, qbuf, row_bytes * (size_t)nr)) return -1;
    }
    return 0;
}

int dp_export_gguf(const dp_merge *mg, const dp_export_gguf_opts *o) {
    if (o->type != DP_GGML_F32 && o->type != DP_GGML_F16 && o->type != DP_GGML_Q8_0 &&
        o->type != DP_GGML_Q4_0)
        return dp_fail("--type must be f32, f16, q8_0 or q4_0");
    struct stat st;
    if (stat(o->out_path, &st) == 0)
        return dp_fail("%s already exists: give a new path (doppel merge never overwrites)",
                       o->out_path);
    /* a Hugging Face base: its metadata and tokenizer are written as llama.cpp's converter
     * would; a GGUF base: its own are carried over */
    const bool hf = stat(mg->model_path, &st) == 0 && S_ISDIR(st.st_mode);
    const dp_model *m = mg->model;
    dp_gguf *base = hf ? NULL : dp_gguf_open(mg->model_path);
    char *format_name = dp_merge_meta_string(mg, "chat_format");
    char *system = dp_merge_meta_string(mg, "system_prompt");
    char *persona = dp_merge_meta_string(mg, "persona");
    dp_hf_gguf_vocab vocab = {0};
    float rope_factors[DP_ROPE_MAX_FACTORS];
    dp_tokenizer *tok = NULL;
    glist l = {0};
    dp_buf tmpl = {0}, header = {0}, kvs = {0};
    dp_writer *w = NULL;
    dp_progress *progress = NULL;
    float *scratch = NULL, *permuted = NULL;
    uint8_t *qbuf = NULL;
    int rc = -1;
    dp_chat_format fmt;
    if (!hf && !base) goto out;
    if (!format_name) {
        dp_fail("%s/doppel.json: no chat_format", mg->adapter_dir);
        goto out;
    }
    if (dp_chat_format_parse(format_name, &fmt) || dp_export_jinja_template(fmt, system, &tmpl))
        goto out;
    if (hf ? !(tok = dp_tokenizer_load(mg->model_path)) ||
                 dp_hf_gguf_vocab_load(mg->model_path, m->cfg.V, &vocab)
           : !(tok = dp_tokenizer_from_gguf(base, NULL)))
        goto out;
    if (hf && m->cfg.rope_scaling.llama3) llama3_rope_factors(&m->cfg, rope_factors);
    int32_t eot = dp_tokenizer_token_id(tok, fmt == DP_CHAT_CHATML ? "<|im_end|>" : "<|eot_id|>");
    if (eot < 0) {
        dp_fail("%s: the tokenizer has no end-of-turn token for chat format %s", mg->model_path,
                format_name);
        goto out;
    }
    if (list_gguf_tensors(m, base, o->type, rope_factors, &l)) goto out;
    size_t big = 0;
    for (int i = 0; i < l.n; i++)
        if (l.t[i].src == T_LINEAR && (size_t)(l.t[i].ne[0] * l.t[i].ne[1]) > big)
            big = (size_t)(l.t[i].ne[0] * l.t[i].ne[1]);
    scratch = dp_malloc(big * sizeof(float));
    permuted = dp_malloc(big * sizeof(float));
    /* one chunk of rows encoded (F16 is the largest encoding made; F32 is written as it is) */
    qbuf = dp_malloc((ENCODE_FLOATS + (size_t)m->cfg.F + (size_t)m->cfg.V + (size_t)m->cfg.C) * 2);
    if (!scratch || !permuted || !qbuf || !(w = dp_writer_open(o->out_path))) goto out;

    /* header: magic, version, counts, metadata, tensor infos, padding */
    uint64_t n_kv = 0;
    dp_buf *k = &kvs;
    if (hf && hf_metadata(k, &n_kv, &m->cfg, &vocab)) goto out;
    for (uint64_t i = 0; base && i < base->n_kv; i++)
        if (!replaced_key(base->kv[i].key) && (++n_kv, put_kv(k, &base->kv[i]))) goto out;
    const char *name = persona ? persona : "doppel merge";
    /* llama_ftype: ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q4_0 2, MOSTLY_Q8_0 7 */
    const uint32_t ftype = o->type == DP_GGML_F32    ? 0
                           : o->type == DP_GGML_F16  ? 1
                           : o->type == DP_GGML_Q8_0 ? 7
                                                     : 2;
    if (kv_str(k, &n_kv, "general.name", name, strlen(name)) ||
        kv_u32(k, &n_kv, "general.file_type", ftype) ||
        kv_u32(k, &n_kv, "general.quantization_version", 2) ||
        kv_str(k, &n_kv, "tokenizer.chat_template", tmpl.data, tmpl.len) ||
        kv_u32(k, &n_kv, "tokenizer.ggml.eot_token_id", (uint32_t)eot))
        goto out;
    dp_buf *h = &header;
    if (put(h, "GGUF", 4) || put_u32(h, 3) || put_u64(h, (uint64_t)l.n) || put_u64(h, n_kv) ||
        put(h, k->data, k->len))
        goto out;
    for (int i = 0; i < l.n; i++) {
        const gtensor *t = &l.t[i];
        if (put_str(h, t->name, strlen(t->name)) || put_u32(h, (uint32_t)t->n_dims) ||
            put_u64(h, (uint64_t)t->ne[0]) || (t->n_dims == 2 && put_u64(h, (uint64_t)t->ne[1])) ||
            put_u32(h, (uint32_t)t->type) || put_u64(h, t->offset))
            goto out;
    }
    static const uint8_t zeros[ALIGN] = {0};
    if ((h->len % ALIGN && put(h, zeros, ALIGN - h->len % ALIGN)) ||
        dp_writer_write(w, h->data, h->len))
        goto out;
    dp_progress_opts popts = {.quiet = o->quiet};
    progress = dp_progress_start("merging", l.n, "tensors", &popts);
    for (int i = 0; i < l.n; i++) {
        const gtensor *t = &l.t[i];
        int64_t numel = t->ne[0] * t->ne[1];
        const void *data = NULL;
        if (t->src == T_RAW) {
            data = t->raw->data;
        } else {
            const float *x = t->floats;
            if (t->src == T_LINEAR) {
                if (dp_merge_linear(mg, t->layer, t->id, scratch)) {
                    dp_fail_context("merging %s", t->name);
                    goto out;
                }
                x = scratch;
                if (t->permute_heads) {
                    dp_gguf_permute_rows(scratch, permuted, t->permute_heads, t->ne[1], t->ne[0]);
                    x = permuted;
                }
            }
            for (int64_t k = 0; k < numel; k++)
                if (!isfinite(x[k]) || (t->type == DP_GGML_F16 && fabsf(x[k]) > 65504.0f)) {
                    dp_fail("merged tensor %s holds %g, which %s cannot hold", t->name,
                            (double)x[k], dp_ggml_type_name(t->type));
                    goto out;
                }
            if (write_encoded(w, x, t->ne[1], t->ne[0], t->type, qbuf)) goto out;
        }
        if ((data && dp_writer_write(w, data, (size_t)t->nbytes)) ||
            (t->nbytes % ALIGN && dp_writer_write(w, zeros, ALIGN - t->nbytes % ALIGN)))
            goto out;
        dp_progress_update(progress, i + 1);
    }
    dp_progress_finish(progress);
    progress = NULL;
    rc = dp_writer_commit(w);
    w = NULL;
out:
    dp_progress_finish(progress);
    if (w) dp_writer_abort(w);
    free(scratch);
    free(permuted);
    free(qbuf);
    free(l.t);
    dp_buf_free(&tmpl);
    dp_buf_free(&header);
    dp_buf_free(&kvs);
    dp_hf_gguf_vocab_free(&vocab);
    dp_tokenizer_free(tok);
    dp_gguf_close(base);
    free(format_name);
    free(system);
    free(persona);
    return rc;
}
