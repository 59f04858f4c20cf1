/* doppel merge --format hf (see export_hf.h). */
#include "infer/export_hf.h"
#include "data/base/error.h"
#include "data/base/json.h"
#include "data/base/progress.h"
#include "infer/config.h"
#include "data/tokenizer_impl.h" /* the pre-tokenizer regexes, for tokenizer.json */
#include "infer/gguf_tokenizer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ chat template */

/* s as the body of a Jinja string literal: Jinja unescapes literals with Python's
 * unicode-escape after backslash-escaping non-ASCII, so UTF-8 passes through as is */
static int jinja_string(dp_buf *b, const char *s) {
    int rc = dp_buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p && !rc; p++) {
        if (*p == '\\' || *p == '"')
            rc = dp_buf_printf(b, "\\%c", *p);
        else if (*p == '\n')
            rc = dp_buf_puts(b, "\\n");
        else if (*p == '\r')
            rc = dp_buf_puts(b, "\\r");
        else if (*p == '\t')
            rc = dp_buf_puts(b, "\\t");
        else if (*p < 0x20)
            rc = dp_buf_printf(b, "\\x%02x", *p);
        else
            rc = dp_buf_append(b, p, 1);
    }
    return rc ? rc : dp_buf_puts(b, "\"");
}

/* No newline or space between tags: transformers renders with trim_blocks and lstrip_blocks,
 * llama.cpp without, and a template with nothing outside its tags renders the same under both. */
int dp_export_jinja_template(dp_chat_format f, const char *system, dp_buf *out) {
    int rc = 0;
    if (system) {
        rc = dp_buf_puts(out, "{% set default_system = ");
        if (!rc) rc = jinja_string(out, system);
        if (!rc) rc = dp_buf_puts(out, " %}");
    }
    if (f == DP_CHAT_CHATML) {
        if (system && !rc)
            rc = dp_buf_puts(out, "{% if messages and messages[0]['role'] != 'system' %}"
                                  "{{ '<|im_start|>system\\n' + default_system + '<|im_end|>\\n' }}"
                                  "{% endif %}");
        if (!rc)
            rc =
                dp_buf_puts(out, "{% for message in messages %}"
                                 "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
                                 "+ '<|im_end|>\\n' }}{% endfor %}"
                                 "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
                                 "{% endif %}");
        return rc;
    }
    if (f != DP_CHAT_LLAMA3) return dp_fail("no chat template for chat format %d", (int)f);
    /* Llama-3: <|begin_of_text|> before the first message only, contents trimmed */
    if (!rc) rc = dp_buf_puts(out, "{% set ns = namespace(first=true) %}");
    if (system && !rc)
        rc = dp_buf_puts(out,
                         "{% if messages and messages[0]['role'] != 'system' %}"
                         "{{ '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\n'"
                         " + default_system | trim + '<|eot_id|>' }}"
                         "{% set ns.first = false %}{% endif %}");
    if (!rc)
        rc = dp_buf_puts(out,
                         "{% for message in messages %}"
                         "{% if ns.first %}{{ '<|begin_of_text|>' }}"
                         "{% set ns.first = false %}{% endif %}"
                         "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
                         " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
                         "{% if add_generation_prompt %}"
                         "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
                         "{% endif %}");
    return rc;
}

/* ------------------------------------------------------------------ the tensors */

typedef enum { SRC_FLOATS, SRC_LINEAR } src_kind;

typedef struct {
    char name[128];
    int ndim;
    int64_t shape[2];
    src_kind kind;
    const float *floats; /* SRC_FLOATS */
    int layer;           /* SRC_LINEAR */
    dp_linear_id id;
    int shard;
    uint64_t offset, nbytes; /* in its shard's data section */
} out_tensor;

typedef struct {
    out_tensor *t;
    int n, cap;
} tensor_list;

static int push(tensor_list *l, const char *name, int ndim, int64_t d0, int64_t d1, src_kind kind,
                const float *floats, int layer, dp_linear_id id) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        out_tensor *t = dp_realloc(l->t, (size_t)cap * sizeof *t);
        if (!t) return -1;
        l->t = t;
        l->cap = cap;
    }
    out_tensor *o = &l->t[l->n++];
    *o = (out_tensor){
        .ndim = ndim, .shape = {d0, d1}, .kind = kind, .floats = floats, .layer = layer, .id = id};
    snprintf(o->name, sizeof o->name, "%s", name);
    return 0;
}

/* Every tensor of the merged model under its Hugging Face name, in the order transformers
 * itself saves them (embedding, layers, final norm, lm_head). */
static int list_tensors(const dp_model *m, tensor_list *l) {
    const dp_model_config *c = &m->cfg;
    char n[128];
    int rc = push(l, "model.embed_tokens.weight", 2, c->V, c->C, SRC_FLOATS, m->embed, 0, 0);
    for (int i = 0; i < c->L && !rc; i++) {
        const dp_layer *ly = &m->layers[i];
        snprintf(n, sizeof n, "model.layers.%d.input_layernorm.weight", i);
        rc |= push(l, n, 1, c->C, 0, SRC_FLOATS, ly->attn_norm, 0, 0);
        for (int id = 0; id < DP_N_LINEAR && !rc; id++) {
            const char *mod = id <= DP_O ? "self_attn" : "mlp";
            const dp_linear *lin = &ly->lin[id];
            snprintf(n, sizeof n, "model.layers.%d.%s.%s.weight", i, mod, dp_linear_names[id]);
            rc |= push(l, n, 2, lin->out, lin->in, SRC_LINEAR, NULL, i, (dp_linear_id)id);
            if (lin->bias) {
                snprintf(n, sizeof n, "model.layers.%d.%s.%s.bias", i, mod, dp_linear_names[id]);
                rc |= push(l, n, 1, lin->out, 0, SRC_FLOATS, lin->bias, 0, 0);
            }
        }
        if (ly->q_norm) {
            snprintf(n, sizeof n, "model.layers.%d.self_attn.q_norm.weight", i);
            rc |= push(l, n, 1, c->D, 0, SRC_FLOATS, ly->q_norm, 0, 0);
            snprintf(n, sizeof n, "model.layers.%d.self_attn.k_norm.weight", i);
            rc |= push(l, n, 1, c->D, 0, SRC_FLOATS, ly->k_norm, 0, 0);
        }
        snprintf(n, sizeof n, "model.layers.%d.post_attention_layernorm.weight", i);
        rc |= push(l, n, 1, c->C, 0, SRC_FLOATS, ly->ffn_norm, 0, 0);
    }
    if (!rc) rc = push(l, "model.norm.weight", 1, c->C, 0, SRC_FLOATS, m->final_norm, 0, 0);
    if (!rc && !c->tied_embeddings) {
        if (!m->lm_head.w) return dp_fail("the lm_head is not held in fp32; cannot export it");
        rc = push(l, "lm_head.weight", 2, c->V, c->C, SRC_FLOATS, m->lm_head.w, 0, 0);
    }
    return rc;
}

/* Greedy shards in order: a new shard starts when the next tensor would pass the limit. */
static int assign_shards(tensor_list *l, size_t esize, int64_t max_bytes, uint64_t *total) {
    int shard = 0;
    uint64_t used = 0;
    *total = 0;
    for (int i = 0; i < l->n; i++) {
        out_tensor *t = &l->t[i];
        t->nbytes = (uint64_t)t->shape[0] * (uint64_t)(t->ndim == 2 ? t->shape[1] : 1) * esize;
        if (used && used + t->nbytes > (uint64_t)max_bytes) {
            shard++;
            used = 0;
        }
        t->shard = shard;
        t->offset = used;
        used += t->nbytes;
        *total += t->nbytes;
    }
    return shard + 1;
}

static void shard_name(char *out, size_t cap, int shard, int n_shards) {
    if (n_shards == 1)
        snprintf(out, cap, "model.safetensors");
    else
        snprintf(out, cap, "model-%05d-of-%05d.safetensors", shard + 1, n_shards);
}

/* ------------------------------------------------------------------ writing */

#define CONVERT_FLOATS ((size_t)1 << 20) /* elements converted per write */

typedef struct {
    const dp_merge *mg;
    const dp_export_hf_opts *o;
    char *tmp_dir;
    float *scratch;  /* (the largest linear) */
    void *converted; /* CONVERT_FLOATS elements of the output dtype */
    dp_progress *progress;
    int64_t done;
} hf_writer;

/* n floats as the output dtype through w; a value that does not fit (fp16 overflow, or not
 * finite) is refused with the tensor's name */
static int write_floats(hf_writer *hw, dp_writer *w, const float *x, size_t n, const char *name) {
    dp_dtype dt = hw->o->dtype;
    for (size_t i = 0; i < n; i += CONVERT_FLOATS) {
        size_t k = n - i < CONVERT_FLOATS ? n - i : CONVERT_FLOATS;
        const void *src = x + i;
        for (size_t j = 0; j < k; j++)
            if (!isfinite(x[i + j]) || (dt == DP_DT_F16 && fabsf(x[i + j]) > 65504.0f))
                return dp_fail("merged tensor %s holds %g at element %zu, which %s cannot hold%s",
                               name, (double)x[i + j], i + j, dp_dtype_name(dt),
                               dt == DP_DT_F16 ? " (use --dtype bf16)" : "");
        if (dt == DP_DT_BF16 || dt == DP_DT_F16) {
            uint16_t *h = hw->converted;
            for (size_t j = 0; j < k; j++)
                h[j] = dt == DP_DT_BF16 ? dp_f32_to_bf16(x[i + j]) : dp_f32_to_f16(x[i + j]);
            src = h;
        }
        if (dp_writer_write(w, src, k * dp_dtype_size(dt))) return -1;
    }
    return 0;
}

static int write_shard(hf_writer *hw, const tensor_list *l, int shard, int n_shards) {
    char file[64], path[4200];
    shard_name(file, sizeof file, shard, n_shards);
    snprintf(path, sizeof path, "%s/%s", hw->tmp_dir, file);
    /* the header: every tensor's dtype, shape and offsets, padded to 8 bytes with spaces */
    dp_buf h = {0};
    int rc = dp_buf_puts(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < l->n && !rc; i++) {
        const out_tensor *t = &l->t[i];
        if (t->shard != shard) continue;
        rc = dp_buf_printf(&h, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld", t->name,
                           dp_dtype_name(hw->o->dtype), (long long)t->shape[0]);
        if (!rc && t->ndim == 2) rc = dp_buf_printf(&h, ",%lld", (long long)t->shape[1]);
        if (!rc)
            rc = dp_buf_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)t->offset,
                               (unsigned long long)(t->offset + t->nbytes));
    }
    if (!rc) rc = dp_buf_puts(&h, "}");
    while (!rc && h.len % 8) rc = dp_buf_puts(&h, " ");
    dp_writer *w = rc ? NULL : dp_writer_open(path);
    uint64_t hlen = h.len;
    if (!w || dp_writer_write(w, &hlen, 8) || dp_writer_write(w, h.data, h.len)) rc = -1;
    dp_buf_free(&h);
    for (int i = 0; i < l->n && !rc; i++) {
        const out_tensor *t = &l->t[i];
        if (t->shard != shard) continue;
        size_t n = (size_t)t->shape[0] * (size_t)(t->ndim == 2 ? t->shape[1] : 1);
        const float *x = t->floats;
        if (t->kind == SRC_LINEAR) {
            if (dp_merge_linear(hw->mg, t->layer, t->id, hw->scratch)) {
                rc = dp_fail_context("merging %s", t->name);
                break;
            }
            x = hw->scratch;
        }
        rc = write_floats(hw, w, x, n, t->name);
        dp_progress_update(hw->progress, ++hw->done);
    }
    if (!w) return -1;
    if (rc) {
        dp_writer_abort(w);
        return rc;
    }
    return dp_writer_commit(w);
}

static int write_index(const hf_writer *hw, const tensor_list *l, int n_shards, uint64_t total) {
    cJSON *j = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(j, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", (double)total);
    cJSON *map = cJSON_AddObjectToObject(j, "weight_map");
    char file[64];
    for (int i = 0; i < l->n; i++) {
        shard_name(file, sizeof file, l->t[i].shard, n_shards);
        cJSON_AddStringToObject(map, l->t[i].name, file);
    }
    char *text = cJSON_Print(j), path[4200];
    cJSON_Delete(j);
    if (!text) return dp_fail("out of memory");
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", hw->tmp_dir);
    int rc = dp_write_file_atomic(path, text, strlen(text));
    free(text);
    return rc;
}

/* ------------------------------------------------------------------ JSON files */

/* The shortest decimal that reads back as the same float (1e-05, not 9.99999975e-06). */
static double float_number(float f) {
    char s[48];
    for (int p = 1; p <= 9; p++) {
        snprintf(s, sizeof s, "%.*g", p, (double)f);
        if (strtof(s, NULL) == f) break;
    }
    return strtod(s, NULL);
}

static void set_item(cJSON *o, const char *key, cJSON *v) {
    if (cJSON_GetObjectItemCaseSensitive(o, key))
        cJSON_ReplaceItemInObjectCaseSensitive(o, key, v);
    else
        cJSON_AddItemToObject(o, key, v);
}

static int write_json(const char *dir, const char *name, const cJSON *j) {
    char path[4200], *text = cJSON_Print(j);
    if (!text) return dp_fail("out of memory");
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int rc = dp_write_file_atomic(path, text, strlen(text));
    free(text);
    return rc;
}

/* DIR/NAME parsed, or NULL (with *failed) when it exists but is unreadable; NULL when absent */
static cJSON *read_json(const char *dir, const char *name, bool *failed) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    *failed = false;
    struct stat st;
    if (stat(path, &st) != 0) return NULL;
    char *text = NULL;
    size_t len = 0;
    cJSON *j = NULL;
    if (dp_read_file(path, &text, &len) ||
        dp_json_parse(text, len, DP_JSON_REFUSE_NUL, path, 1, &j) || !cJSON_IsObject(j)) {
        if (!*dp_last_error()) dp_fail("%s: not a JSON object", path);
        cJSON_Delete(j);
        j = NULL;
        *failed = true;
    }
    free(text);
    return j;
}

static cJSON *int_array(const int *ids, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    return a;
}

static const char *torch_dtype(dp_dtype dt) {
    return dt == DP_DT_BF16 ? "bfloat16" : dt == DP_DT_F16 ? "float16" : "float32";
}

/* config.json: the base's own (Hugging Face base) with the new dtype and without a quantization
 * section, or one made from the configuration read from a GGUF. */
static int write_config(const hf_writer *hw, const char *base_dir, const int *eos, int n_eos) {
    const dp_model_config *c = &hw->mg->model->cfg;
    bool failed = false;
    cJSON *j = base_dir ? read_json(base_dir, "config.json", &failed) : NULL;
    if (failed) return -1;
    if (!j) {
        static const char *archs[] = {"LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"};
        if (c->rope_scaling.n_factors && !c->rope_scaling.llama3)
            return dp_fail("the GGUF's rope_freqs tensor has no config.json equivalent here; "
                           "export this model with --format gguf");
        j = cJSON_CreateObject();
        cJSON *a = cJSON_AddArrayToObject(j, "architectures");
        cJSON_AddItemToArray(a, cJSON_CreateString(archs[c->arch]));
        cJSON_AddStringToObject(j, "model_type", dp_arch_name(c->arch));
        cJSON_AddNumberToObject(j, "hidden_size", c->C);
        cJSON_AddNumberToObject(j, "intermediate_size", c->F);
        cJSON_AddNumberToObject(j, "num_hidden_layers", c->L);
        cJSON_AddNumberToObject(j, "num_attention_heads", c->H);
        cJSON_AddNumberToObject(j, "num_key_value_heads", c->KVH);
        cJSON_AddNumberToObject(j, "head_dim", c->D);
        cJSON_AddNumberToObject(j, "vocab_size", c->V);
        cJSON_AddNumberToObject(j, "max_position_embeddings", c->max_position);
        cJSON_AddNumberToObject(j, "rms_norm_eps", float_number(c->rms_eps));
        cJSON_AddNumberToObject(j, "rope_theta", float_number(c->rope_theta));
        cJSON_AddStringToObject(j, "hidden_act", "silu");
        cJSON_AddBoolToObject(j, "tie_word_embeddings", c->tied_embeddings);
        if (c->arch == DP_ARCH_LLAMA) {
            cJSON_AddBoolToObject(j, "attention_bias", false);
            cJSON_AddBoolToObject(j, "mlp_bias", false);
        }
        if (c->rope_scaling.llama3) {
            cJSON *r = cJSON_AddObjectToObject(j, "rope_scaling");
            cJSON_AddStringToObject(r, "rope_type", "llama3");
            cJSON_AddNumberToObject(r, "factor", float_number(c->rope_scaling.factor));
            cJSON_AddNumberToObject(r, "low_freq_factor",
                                    float_number(c->rope_scaling.low_freq_factor));
            cJSON_AddNumberToObject(r, "high_freq_factor",
                                    float_number(c->rope_scaling.high_freq_factor));
            cJSON_AddNumberToObject(r, "original_max_position_embeddings",
                                    c->rope_scaling.original_max_position);
        }
        if (c->bos_id >= 0) cJSON_AddNumberToObject(j, "bos_token_id", c->bos_id);
        set_item(j, "eos_token_id",
                 n_eos == 1 ? cJSON_CreateNumber(eos[0]) : int_array(eos, n_eos));
    }
    cJSON_DeleteItemFromObjectCaseSensitive(j, "quantization_config");
    /* transformers 5 writes "dtype", older versions "torch_dtype": keep the base's spelling */
    const char *key = cJSON_GetObjectItemCaseSensitive(j, "dtype") ? "dtype" : "torch_dtype";
    set_item(j, key, cJSON_CreateString(torch_dtype(hw->o->dtype)));
    int rc = write_json(hw->tmp_dir, "config.json", j);
    cJSON_Delete(j);
    return rc;
}

/* generation_config.json: the base's sampling settings (chat's defaults where it has none) and
 * eos_token_id = every stop id, the chat format's end-of-turn token included, so generation
 * ends where training taught the persona to end. */
static int write_generation_config(const hf_writer *hw, const char *base_dir, const int *eos,
                                   int n_eos) {
    bool failed = false;
    cJSON *j = base_dir ? read_json(base_dir, "generation_config.json", &failed) : NULL;
    if (failed) return -1;
    if (!j) {
        j = cJSON_CreateObject();
        cJSON_AddBoolToObject(j, "do_sample", true);
        cJSON_AddNumberToObject(j, "temperature", 0.7);
        cJSON_AddNumberToObject(j, "top_k", 40);
        cJSON_AddNumberToObject(j, "top_p", 0.9);
        cJSON_AddNumberToObject(j, "repetition_penalty", 1.1);
    }
    const dp_model_config *c = &hw->mg->model->cfg;
    if (c->bos_id >= 0) set_item(j, "bos_token_id", cJSON_CreateNumber(c->bos_id));
    set_item(j, "eos_token_id", int_array(eos, n_eos));
    int rc = write_json(hw->tmp_dir, "generation_config.json", j);
    cJSON_Delete(j);
    return rc;
}

static int copy_file(const char *from, const char *to) {
    char *data = NULL;
    size_t len = 0;
    if (dp_read_file(from, &data, &len)) return -1;
    int rc = dp_write_file_atomic(to, data, len);
    free(data);
    return rc;
}

/* tokenizer.json copied from the base; tokenizer_config.json (and special_tokens_map.json) with
 * the training chat template and the end-of-turn token as eos_token. */
static int write_tokenizer_files(const hf_writer *hw, const char *base_dir, const char *eot,
                                 const char *template_text) {
    char from[4200], to[4200];
    snprintf(from, sizeof from, "%s/tokenizer.json", base_dir);
    snprintf(to, sizeof to, "%s/tokenizer.json", hw->tmp_dir);
    if (copy_file(from, to)) return -1;
    bool failed = false;
    cJSON *j = read_json(base_dir, "tokenizer_config.json", &failed);
    if (failed) return -1;
    if (!j) j = cJSON_CreateObject();
    set_item(j, "chat_template", cJSON_CreateString(template_text));
    set_item(j, "eos_token", cJSON_CreateString(eot));
    int rc = write_json(hw->tmp_dir, "tokenizer_config.json", j);
    cJSON_Delete(j);
    cJSON *s = rc ? NULL : read_json(base_dir, "special_tokens_map.json", &failed);
    if (failed) return -1;
    if (s) {
        set_item(s, "eos_token", cJSON_CreateString(eot));
        rc = write_json(hw->tmp_dir, "special_tokens_map.json", s);
        cJSON_Delete(s);
    }
    return rc;
}

/* tokenizer.json and tokenizer_config.json made from a GGUF's tokenizer.ggml.* metadata: the
 * byte-level BPE (vocabulary, merges, added tokens = CONTROL and USER_DEFINED tokens) with the
 * pre-tokenizer Hugging Face's own files of that family hold, as data/tokenizer_load.c reads
 * tokenizer.ggml.pre (qwen2: NFC + Split + ByteLevel; llama-bpe: Split + ByteLevel, merges
 * ignored for whole-word tokens; smollm: Digits + ByteLevel; gpt2: ByteLevel). */
int dp_export_hf_tokenizer_from_gguf(const dp_gguf *g, const char *dir, const char *eot,
                                     const char *template_text) {
    const char *pre = NULL;
    char *const *tokens = NULL, *const *merges = NULL;
    const uint64_t *tlens = NULL, *mlens = NULL;
    uint64_t n_tokens = 0, n_merges = 0, n_types = 0;
    int64_t *types = NULL;
    if (dp_gguf_find(g, "tokenizer.ggml.pre") && dp_gguf_get_str(g, "tokenizer.ggml.pre", &pre))
        return -1;
    if (dp_gguf_get_str_array(g, "tokenizer.ggml.tokens", &tokens, &tlens, &n_tokens) ||
        dp_gguf_get_str_array(g, "tokenizer.ggml.merges", &merges, &mlens, &n_merges))
        return dp_fail_context("%s: the tokenizer cannot be written as tokenizer.json", g->path);
    if (dp_gguf_find(g, "tokenizer.ggml.token_type") &&
        dp_gguf_get_int_array(g, "tokenizer.ggml.token_type", &types, &n_types))
        return -1;
    if (types && n_types != n_tokens) {
        free(types);
        return dp_fail("%s: tokenizer.ggml.token_type has %llu entries for %llu tokens", g->path,
                       (unsigned long long)n_types, (unsigned long long)n_tokens);
    }
    if (!pre) pre = "gpt2";
    bool qwen2 = !strcmp(pre, "qwen2") || !strcmp(pre, "deepseek-r1-qwen");
    bool llama3 = !strcmp(pre, "llama-bpe") || !strcmp(pre, "llama3");
    bool smollm = !strcmp(pre, "smollm"), gpt2 = !strcmp(pre, "gpt2") || !strcmp(pre, "gpt-2");
    if (!qwen2 && !llama3 && !smollm && !gpt2) {
        free(types);
        return dp_fail("%s: tokenizer.ggml.pre \"%s\" has no tokenizer.json form here (qwen2, "
                       "llama-bpe, smollm, gpt2): use --format gguf",
                       g->path, pre);
    }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "version", "1.0");
    cJSON_AddNullToObject(j, "truncation");
    cJSON_AddNullToObject(j, "padding");
    cJSON *added = cJSON_AddArrayToObject(j, "added_tokens");
    for (uint64_t i = 0; i < n_tokens; i++) {
        int64_t ty = types ? types[i] : DP_TOKTYPE_NORMAL;
        if (ty != DP_TOKTYPE_CONTROL && ty != DP_TOKTYPE_USER_DEFINED) continue;
        cJSON *a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", (double)i);
        cJSON_AddStringToObject(a, "content", tokens[i]);
        cJSON_AddBoolToObject(a, "single_word", false);
        cJSON_AddBoolToObject(a, "lstrip", false);
        cJSON_AddBoolToObject(a, "rstrip", false);
        cJSON_AddBoolToObject(a, "normalized", false);
        cJSON_AddBoolToObject(a, "special", ty == DP_TOKTYPE_CONTROL);
        cJSON_AddItemToArray(added, a);
    }
    if (qwen2) {
        cJSON *nfc = cJSON_AddObjectToObject(j, "normalizer");
        cJSON_AddStringToObject(nfc, "type", "NFC");
    } else {
        cJSON_AddNullToObject(j, "normalizer");
    }
    cJSON *byte_level = cJSON_CreateObject();
    cJSON_AddStringToObject(byte_level, "type", "ByteLevel");
    cJSON_AddBoolToObject(byte_level, "add_prefix_space", false);
    cJSON_AddBoolToObject(byte_level, "trim_offsets", !(qwen2 || llama3));
    cJSON_AddBoolToObject(byte_level, "use_regex", smollm || gpt2);
    if (gpt2) {
        cJSON_AddItemToObject(j, "pre_tokenizer", byte_level);
    } else {
        cJSON *seq = cJSON_AddObjectToObject(j, "pre_tokenizer");
        cJSON_AddStringToObject(seq, "type", "Sequence");
        cJSON *list = cJSON_AddArrayToObject(seq, "pretokenizers");
        cJSON *first = cJSON_CreateObject();
        if (smollm) {
            cJSON_AddStringToObject(first, "type", "Digits");
            cJSON_AddBoolToObject(first, "individual_digits", true);
        } else {
            cJSON_AddStringToObject(first, "type", "Split");
            cJSON *pat = cJSON_AddObjectToObject(first, "pattern");
            cJSON_AddStringToObject(pat, "Regex", qwen2 ? DP_TOK_RE_QWEN2 : DP_TOK_RE_LLAMA3);
            cJSON_AddStringToObject(first, "behavior", "Isolated");
            cJSON_AddBoolToObject(first, "invert", false);
        }
        cJSON_AddItemToArray(list, first);
        cJSON_AddItemToArray(list, byte_level);
    }
    /* no BOS is added on encode: the training template writes every special token itself */
    cJSON *post = cJSON_AddObjectToObject(j, "post_processor");
    cJSON_AddStringToObject(post, "type", "ByteLevel");
    cJSON_AddBoolToObject(post, "add_prefix_space", true);
    cJSON_AddBoolToObject(post, "trim_offsets", false);
    cJSON_AddBoolToObject(post, "use_regex", true);
    cJSON *dec = cJSON_AddObjectToObject(j, "decoder");
    cJSON_AddStringToObject(dec, "type", "ByteLevel");
    cJSON_AddBoolToObject(dec, "add_prefix_space", true);
    cJSON_AddBoolToObject(dec, "trim_offsets", true);
    cJSON_AddBoolToObject(dec, "use_regex", true);
    cJSON *model = cJSON_AddObjectToObject(j, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddBoolToObject(model, "fuse_unk", false);
    cJSON_AddBoolToObject(model, "byte_fallback", false);
    cJSON_AddBoolToObject(model, "ignore_merges", llama3);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (uint64_t i = 0; i < n_tokens; i++)
        cJSON_AddItemToObject(vocab, tokens[i], cJSON_CreateNumber((double)i));
    cJSON *ml = cJSON_AddArrayToObject(model, "merges");
    for (uint64_t i = 0; i < n_merges; i++) cJSON_AddItemToArray(ml, cJSON_CreateString(merges[i]));
    int rc = write_json(dir, "tokenizer.json", j);
    cJSON_Delete(j);
    free(types);
    if (rc) return rc;
    /* tokenizer_config.json: the special tokens by text, the training template */
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "tokenizer_class", "PreTrainedTokenizerFast");
    cJSON_AddBoolToObject(c, "clean_up_tokenization_spaces", false);
    int64_t id;
    const char *keys[][2] = {{"tokenizer.ggml.bos_token_id", "bos_token"},
                             {"tokenizer.ggml.padding_token_id", "pad_token"},
                             {"tokenizer.ggml.unknown_token_id", "unk_token"}};
    for (int k = 0; k < 3; k++)
        if (dp_gguf_find(g, keys[k][0]) && !dp_gguf_get_int(g, keys[k][0], &id) && id >= 0 &&
            (uint64_t)id < n_tokens)
            cJSON_AddStringToObject(c, keys[k][1], tokens[id]);
    cJSON_AddStringToObject(c, "eos_token", eot);
    cJSON_AddStringToObject(c, "chat_template", template_text);
    rc = write_json(dir, "tokenizer_config.json", c);
    cJSON_Delete(c);
    return rc;
}

/* ------------------------------------------------------------------ the directory */

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[4200];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

int dp_export_hf(const dp_merge *mg, const dp_export_hf_opts *o) {
    if (o->dtype != DP_DT_BF16 && o->dtype != DP_DT_F16 && o->dtype != DP_DT_F32)
        return dp_fail("--dtype must be bf16, fp16 or fp32");
    struct stat st;
    if (stat(o->out_dir, &st) == 0)
        return dp_fail("%s already exists: give a new path (doppel merge never overwrites)",
                       o->out_dir);
    const dp_model *m = mg->model;
    const char *base_dir = is_dir(mg->model_path) ? mg->model_path : NULL;
    char *format_name = dp_merge_meta_string(mg, "chat_format");
    char *system = dp_merge_meta_string(mg, "system_prompt");
    dp_tokenizer *tok = NULL;
    dp_gguf *gguf = NULL; /* a GGUF base: its tokenizer becomes tokenizer.json */
    tensor_list l = {0};
    dp_buf tmpl = {0};
    hf_writer hw = {.mg = mg, .o = o};
    int rc = -1;
    dp_chat_format fmt;
    if (!format_name) {
        dp_fail("%s/doppel.json: no chat_format", mg->adapter_dir);
        goto out;
    }
    if (dp_chat_format_parse(format_name, &fmt)) goto out;
    if (!base_dir && !(gguf = dp_gguf_open(mg->model_path))) goto out;
    tok = base_dir ? dp_tokenizer_load(base_dir) : dp_tokenizer_from_gguf(gguf, NULL);
    if (!tok) goto out;
    /* the stop set: the model's eos ids and the chat format's end-of-turn tokens */
    int eos[16], n_eos = 0;
    for (int i = 0; i < m->cfg.n_eos; i++) eos[n_eos++] = m->cfg.eos_ids[i];
    int32_t chat_stop[8];
    int n_chat = dp_chat_stop_ids(tok, fmt, chat_stop, 8);
    for (int i = 0; i < n_chat; i++) {
        bool dup = false;
        for (int k = 0; k < n_eos; k++) dup |= eos[k] == chat_stop[i];
        if (!dup && n_eos < 16) eos[n_eos++] = chat_stop[i];
    }
    if (!n_chat) {
        dp_fail("the tokenizer has no end-of-turn token for chat format %s", format_name);
        goto out;
    }
    if (dp_export_jinja_template(fmt, system, &tmpl)) goto out;

    if (list_tensors(m, &l)) goto out;
    uint64_t total;
    int64_t max = o->max_shard_bytes > 0 ? o->max_shard_bytes : DP_HF_SHARD_BYTES;
    int n_shards = assign_shards(&l, dp_dtype_size(o->dtype), max, &total);
    size_t big = 0;
    for (int i = 0; i < l.n; i++)
        if (l.t[i].kind == SRC_LINEAR && (size_t)(l.t[i].shape[0] * l.t[i].shape[1]) > big)
            big = (size_t)(l.t[i].shape[0] * l.t[i].shape[1]);
    hw.scratch = dp_malloc(big * sizeof(float));
    hw.converted = dp_malloc(CONVERT_FLOATS * sizeof(float));
    size_t tl = strlen(o->out_dir) + 32;
    hw.tmp_dir = dp_malloc(tl);
    if (!hw.scratch || !hw.converted || !hw.tmp_dir) goto out;
    snprintf(hw.tmp_dir, tl, "%s.tmp.%ld", o->out_dir, (long)getpid());
    if (mkdir(hw.tmp_dir, 0755)) {
        dp_fail("%s: cannot create: %s", hw.tmp_dir, strerror(errno));
        goto out;
    }
    dp_progress_opts popts = {.quiet = o->quiet};
    hw.progress = dp_progress_start("merging", l.n, "tensors", &popts);
    for (int s = 0; s < n_shards; s++)
        if (write_shard(&hw, &l, s, n_shards)) goto fail_dir;
    dp_progress_finish(hw.progress);
    hw.progress = NULL;
    if (n_shards > 1 && write_index(&hw, &l, n_shards, total)) goto fail_dir;
    const char *eot = fmt == DP_CHAT_CHATML ? "<|im_end|>" : "<|eot_id|>";
    if (write_config(&hw, base_dir, eos, n_eos) ||
        write_generation_config(&hw, base_dir, eos, n_eos) ||
        (base_dir ? write_tokenizer_files(&hw, base_dir, eot, tmpl.data)
                  : dp_export_hf_tokenizer_from_gguf(gguf, hw.tmp_dir, eot, tmpl.data)))
        goto fail_dir;
    if (rename(hw.tmp_dir, o->out_dir)) {
        dp_fail("%s: cannot rename to %s: %s", hw.tmp_dir, o->out_dir, strerror(errno));
        goto fail_dir;
    }
    rc = 0;
    goto out;
fail_dir:
    dp_progress_finish(hw.progress);
    hw.progress = NULL;
    remove_tree(hw.tmp_dir);
out:
    dp_progress_finish(hw.progress);
    free(hw.scratch);
    free(hw.converted);
    free(hw.tmp_dir);
    free(l.t);
    dp_buf_free(&tmpl);
    dp_tokenizer_free(tok);
    dp_gguf_close(gguf);
    free(format_name);
    free(system);
    return rc;
}
