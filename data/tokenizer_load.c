/* Tokenizer loaders: Hugging Face tokenizer.json (+ tokenizer_config.json) with cJSON, and plain
 * arrays (GGUF tokenizer.ggml.*). Both describe the pipeline as a tok_spec for dp_tok_build. */
#define _GNU_SOURCE
#include "data/base/json.h"
#include "data/base/error.h"
#include "data/base/io.h"
#include "data/tokenizer_impl.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char DP_TOK_RE_QWEN2[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                               "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                               "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char DP_TOK_RE_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/* the regex of HF's ByteLevel pre-tokenizer (use_regex: true), GPT-2's */
const char DP_TOK_RE_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static void spec_free(tok_spec *s) {
    free(s->str);
    free(s->len);
    free(s->type);
    free(s->ml);
    free(s->mr);
    free(s->mll);
    free(s->mrl);
}

static int spec_alloc(tok_spec *s, int32_t n_ids, size_t n_merges) {
    s->n_ids = n_ids;
    s->n_merges = n_merges;
    s->str = dp_calloc((size_t)n_ids + 1, sizeof *s->str);
    s->len = dp_calloc((size_t)n_ids + 1, sizeof *s->len);
    s->type = dp_calloc((size_t)n_ids + 1, sizeof *s->type);
    s->ml = dp_calloc(n_merges + 1, sizeof *s->ml);
    s->mr = dp_calloc(n_merges + 1, sizeof *s->mr);
    s->mll = dp_calloc(n_merges + 1, sizeof *s->mll);
    s->mrl = dp_calloc(n_merges + 1, sizeof *s->mrl);
    return s->str && s->len && s->type && s->ml && s->mr && s->mll && s->mrl ? 0 : -1;
}

/* "left right" -> two parts (byte-level tokens never hold a plain space). */
static int split_merge(tok_spec *s, size_t m, const char *str, size_t len) {
    const char *sp = memchr(str, ' ', len);
    if (!sp || sp == str || sp == str + len - 1 ||
        memchr(sp + 1, ' ', (size_t)(str + len - sp - 1)))
        return dp_fail("%s: merge %zu (\"%.*s\") is not two tokens separated by one space", s->name,
                       m, (int)(len > 80 ? 80 : len), str);
    s->ml[m] = str;
    s->mll[m] = (uint32_t)(sp - str);
    s->mr[m] = sp + 1;
    s->mrl[m] = (uint32_t)(str + len - sp - 1);
    return 0;
}

static int add_pre(tok_spec *s, int kind, const char *pattern, bool literal) {
    if (s->n_pre >= TOK_MAX_PRE)
        return dp_fail("%s: more than %d pre-tokenizer steps", s->name, TOK_MAX_PRE);
    s->pre[s->n_pre++] = (tok_pre_step){kind, pattern, literal};
    return 0;
}

/* ------------------------------------------------------------------ tokenizer.json */

static bool json_true(const cJSON *o, const char *key) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}

static const char *json_type(const cJSON *o) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

static int parse_pre(tok_spec *s, const cJSON *p, char *desc, size_t desc_cap) {
    if (!p || cJSON_IsNull(p)) return 0;
    const char *type = json_type(p);
    if (!type) return dp_fail("%s: pre_tokenizer has no \"type\"", s->name);
    size_t dl = strlen(desc);
    snprintf(desc + dl, desc_cap - dl, "%s%s", dl ? "+" : "", type);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        if (!cJSON_IsArray(list))
            return dp_fail("%s: Sequence pre_tokenizer has no \"pretokenizers\" list", s->name);
        desc[dl] = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, list) if (parse_pre(s, e, desc, desc_cap)) return -1;
        return 0;
    }
    if (!strcmp(type, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        const cJSON *str = cJSON_GetObjectItemCaseSensitive(pat, "String");
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(p, "behavior");
        if (!cJSON_IsString(re) && !cJSON_IsString(str))
            return dp_fail("%s: Split pre_tokenizer has no pattern {\"Regex\": ...} or "
                           "{\"String\": ...}",
                           s->name);
        if (!cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated"))
            return dp_fail("%s: Split pre_tokenizer behavior \"%s\" is not supported (only "
                           "\"Isolated\")",
                           s->name, cJSON_IsString(beh) ? beh->valuestring : "?");
        if (json_true(p, "invert"))
            return dp_fail("%s: Split pre_tokenizer with invert: true is not supported", s->name);
        return add_pre(s, TOK_PRE_SPLIT, cJSON_IsString(re) ? re->valuestring : str->valuestring,
                       !cJSON_IsString(re));
    }
    if (!strcmp(type, "ByteLevel")) {
        if (json_true(p, "add_prefix_space") && add_pre(s, TOK_PRE_PREFIX_SPACE, NULL, false))
            return -1;
        const cJSON *ur = cJSON_GetObjectItemCaseSensitive(p, "use_regex");
        /* use_regex defaults to true in HF */
        if ((!ur || cJSON_IsTrue(ur)) && add_pre(s, TOK_PRE_SPLIT, DP_TOK_RE_GPT2, false))
            return -1;
        return 0;
    }
    if (!strcmp(type, "Digits"))
        return add_pre(s, TOK_PRE_SPLIT, json_true(p, "individual_digits") ? "\\p{N}" : "\\p{N}+",
                       false);
    return dp_fail("%s: pre-tokenizer type \"%s\" is not supported (supported: Sequence, Split, "
                   "ByteLevel, Digits)",
                   s->name, type);
}

static int parse_normalizer(tok_spec *s, const cJSON *n) {
    if (!n || cJSON_IsNull(n)) return 0;
    const char *type = json_type(n);
    if (type && !strcmp(type, "NFC")) {
        s->nfc = true;
        return 0;
    }
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers"), *e;
        if (!cJSON_IsArray(list))
            return dp_fail("%s: Sequence normalizer has no \"normalizers\" list", s->name);
        cJSON_ArrayForEach(e, list) if (parse_normalizer(s, e)) return -1;
        return 0;
    }
    return dp_fail("%s: normalizer type \"%s\" is not supported (supported: NFC, none)", s->name,
                   type ? type : "?");
}

static int parse_decoder(tok_spec *s, const cJSON *d) {
    if (!d || cJSON_IsNull(d)) return 0;
    const char *type = json_type(d);
    if (type && !strcmp(type, "ByteLevel")) return 0;
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(d, "decoders"), *e;
        cJSON_ArrayForEach(e, list) if (parse_decoder(s, e)) return -1;
        return 0;
    }
    return dp_fail("%s: decoder type \"%s\" is not supported (byte-level BPE needs ByteLevel)",
                   s->name, type ? type : "?");
}

/* tokenizer_config.json: a token given as "text" or {"content": "text"} */
static const char *config_token(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int32_t find_token(const tok_spec *s, const char *text) {
    if (!text) return -1;
    size_t n = strlen(text);
    for (int32_t i = 0; i < s->n_ids; i++)
        if (s->str[i] && s->len[i] == n && s->type[i] != DP_TOKTYPE_NORMAL &&
            memcmp(s->str[i], text, n) == 0)
            return i;
    return -1;
}

/* The tokenizer.json "model" object: a byte-level BPE without the options doppel does not
 * implement. 0 or -1 with dp_last_error(). */
static int check_bpe_model(tok_spec *s, const cJSON *model, const char *name) {
    if (!cJSON_IsObject(model))
        return dp_fail("%s: no \"model\" object (is this a Hugging Face tokenizer.json?)", name);
    const char *mtype = json_type(model);
    if (mtype && strcmp(mtype, "BPE"))
        return dp_fail("%s: model type \"%s\" is not supported (only byte-level \"BPE\")", name,
                       mtype);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges))
        return dp_fail("%s: model has no \"vocab\" object or no \"merges\" list", name);
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (x && !cJSON_IsNull(x) && !(cJSON_IsNumber(x) && x->valuedouble == 0))
        return dp_fail("%s: BPE dropout is not supported", name);
    if (json_true(model, "byte_fallback"))
        return dp_fail("%s: BPE byte_fallback is not supported (not a byte-level BPE)", name);
    const char *affix[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        x = cJSON_GetObjectItemCaseSensitive(model, affix[i]);
        if (cJSON_IsString(x) && x->valuestring[0])
            return dp_fail("%s: BPE %s \"%s\" is not supported", name, affix[i], x->valuestring);
    }
    s->ignore_merges = json_true(model, "ignore_merges");
    return 0;
}

/* The ids: the vocab plus the added tokens (which win over a vocab entry of the same id). Sizes
 * the spec for the vocabulary and the merges. 0 or -1 with dp_last_error(). */
static int fill_vocab(tok_spec *s, const cJSON *vocab, const cJSON *added, size_t n_merges,
                      const char *name) {
    int64_t max_id = -1;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > 16777216 ||
            e->valuedouble != (double)(int64_t)e->valuedouble)
            return dp_fail("%s: vocab entry \"%.60s\" has no valid id", name, e->string);
        if ((int64_t)e->valuedouble > max_id) max_id = (int64_t)e->valuedouble;
    }
    cJSON_ArrayForEach(e, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > 16777216 ||
            !cJSON_IsString(content) || !content->valuestring[0])
            return dp_fail("%s: an added_tokens entry has no valid id or content", name);
        static const char *const flags[] = {"lstrip", "rstrip", "single_word"};
        for (int i = 0; i < 3; i++)
            if (json_true(e, flags[i]))
                return dp_fail("%s: added token \"%s\" has %s: true, which is not supported", name,
                               content->valuestring, flags[i]);
        if ((int64_t)id->valuedouble > max_id) max_id = (int64_t)id->valuedouble;
    }
    if (max_id < 0) return dp_fail("%s: the vocabulary is empty", name);
    if (spec_alloc(s, (int32_t)max_id + 1, n_merges)) return -1;
    cJSON_ArrayForEach(e, vocab) {
        int32_t id = (int32_t)e->valuedouble;
        if (s->str[id])
            return dp_fail("%s: id %d is used by two vocab entries (\"%.60s\" and \"%.60s\")", name,
                           (int)id, s->str[id], e->string);
        s->str[id] = e->string;
        s->len[id] = (uint32_t)strlen(e->string);
        s->type[id] = DP_TOKTYPE_NORMAL;
    }
    cJSON_ArrayForEach(e, added) {
        int32_t id = (int32_t)cJSON_GetObjectItemCaseSensitive(e, "id")->valuedouble;
        const char *content = cJSON_GetObjectItemCaseSensitive(e, "content")->valuestring;
        /* an added token always matches as a whole, even if the vocab also has it */
        s->str[id] = content;
        s->len[id] = (uint32_t)strlen(content);
        s->type[id] = json_true(e, "special") ? DP_TOKTYPE_CONTROL : DP_TOKTYPE_USER_DEFINED;
    }
    return 0;
}

/* The merges, as "a b" strings or ["a", "b"] pairs. 0 or -1 with dp_last_error(). */
static int fill_merges(tok_spec *s, const cJSON *merges, const char *name) {
    size_t m = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, merges) {
        if (cJSON_IsString(e)) {
            if (split_merge(s, m, e->valuestring, strlen(e->valuestring))) return -1;
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
            s->ml[m] = cJSON_GetArrayItem(e, 0)->valuestring;
            s->mr[m] = cJSON_GetArrayItem(e, 1)->valuestring;
            s->mll[m] = (uint32_t)strlen(s->ml[m]);
            s->mrl[m] = (uint32_t)strlen(s->mr[m]);
        } else {
            return dp_fail("%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", name, m);
        }
        m++;
    }
    return 0;
}

/* tokenizer_config.json: the chat template (a string, or a list naming a "default") and the
 * BOS / EOS / PAD tokens. */
static void read_tokenizer_config(tok_spec *s, const cJSON *cfg) {
    const cJSON *tpl = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template"), *e;
    if (cJSON_IsString(tpl))
        s->chat_template = tpl->valuestring;
    else if (cJSON_IsArray(tpl)) { /* [{"name": "default", "template": ...}, ...] */
        cJSON_ArrayForEach(e, tpl) {
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
            const cJSON *tx = cJSON_GetObjectItemCaseSensitive(e, "template");
            if (cJSON_IsString(tx) &&
                (!s->chat_template || (cJSON_IsString(nm) && !strcmp(nm->valuestring, "default"))))
                s->chat_template = tx->valuestring;
        }
    }
    s->bos = find_token(s, config_token(cfg, "bos_token"));
    s->eos = find_token(s, config_token(cfg, "eos_token"));
    s->pad = find_token(s, config_token(cfg, "pad_token"));
}

dp_tokenizer *dp_tokenizer_load_json(const char *json, size_t len, const char *config_json,
                                     size_t config_len, const char *name) {
    tok_spec s = {.name = name, .bos = -1, .eos = -1, .pad = -1};
    cJSON *root = NULL, *cfg = NULL;
    dp_tokenizer *t = NULL;
    char desc[160] = "";
    if (dp_json_parse(json, len, DP_JSON_REFUSE_NUL, name, 1, &root)) return NULL;
    if (!root) {
        const char *e = cJSON_GetErrorPtr();
        dp_fail("%s: not valid JSON (near byte %zu)", name,
                e && e >= json && e <= json + len ? (size_t)(e - json) : (size_t)0);
        return NULL;
    }
    if (config_json) {
        if (dp_json_parse(config_json, config_len, DP_JSON_REFUSE_NUL, "tokenizer_config.json", 1,
                          &cfg))
            goto done;
        if (!cfg) {
            dp_fail("%s: tokenizer_config.json beside it is not valid JSON", name);
            goto done;
        }
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (check_bpe_model(&s, model, name)) goto done;
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (fill_vocab(&s, cJSON_GetObjectItemCaseSensitive(model, "vocab"),
                   cJSON_GetObjectItemCaseSensitive(root, "added_tokens"),
                   (size_t)cJSON_GetArraySize(merges), name) ||
        fill_merges(&s, merges, name))
        goto done;
    if (parse_normalizer(&s, cJSON_GetObjectItemCaseSensitive(root, "normalizer")) ||
        parse_pre(&s, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), desc, sizeof desc) ||
        parse_decoder(&s, cJSON_GetObjectItemCaseSensitive(root, "decoder")))
        goto done;
    s.pre_desc = desc[0] ? desc : NULL;
    if (cfg) read_tokenizer_config(&s, cfg);
    t = dp_tok_build(&s);
done:
    spec_free(&s);
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    return t;
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

dp_tokenizer *dp_tokenizer_load(const char *path) {
    char file[4096], cfgpath[4096];
    if (is_dir(path)) {
        snprintf(file, sizeof file, "%s/tokenizer.json", path);
        struct stat st;
        if (stat(file, &st) != 0) {
            dp_fail("model dir %s: no tokenizer.json (expected a Hugging Face model directory, "
                    "a tokenizer.json or a .gguf file)",
                    path);
            return NULL;
        }
    } else
        snprintf(file, sizeof file, "%s", path);
    /* tokenizer_config.json beside the tokenizer.json */
    const char *slash = strrchr(file, '/');
    snprintf(cfgpath, sizeof cfgpath, "%.*stokenizer_config.json",
             slash ? (int)(slash - file + 1) : 0, file);
    char *json = NULL, *cfg = NULL;
    size_t len = 0, cfg_len = 0;
    if (dp_read_file(file, &json, &len)) return NULL;
    struct stat st;
    if (stat(cfgpath, &st) == 0 && dp_read_file(cfgpath, &cfg, &cfg_len)) {
        free(json);
        return NULL;
    }
    dp_tokenizer *t = dp_tokenizer_load_json(json, len, cfg, cfg_len, file);
    free(json);
    free(cfg);
    return t;
}

/* ------------------------------------------------------------------ arrays (GGUF) */

dp_tokenizer *dp_tokenizer_from_arrays(const dp_tokenizer_arrays *a) {
    const char *name = a->name ? a->name : "tokenizer";
    if (a->model && strcmp(a->model, "gpt2")) {
        dp_fail("%s: tokenizer model \"%s\" is not supported (only \"gpt2\", byte-level BPE)", name,
                a->model);
        return NULL;
    }
    if (a->n_tokens == 0 || a->n_tokens > 16777216) {
        dp_fail("%s: token count %zu is out of range", name, a->n_tokens);
        return NULL;
    }
    tok_spec s = {.name = name, .bos = -1, .eos = -1, .pad = -1};
    const char *pre = a->pre ? a->pre : "(none)";
    if (!strcmp(pre, "qwen2") || !strcmp(pre, "deepseek-r1-qwen")) {
        s.nfc = true; /* HF's Qwen2 tokenizer.json normalizes to NFC; GGUF does not record it */
        add_pre(&s, TOK_PRE_SPLIT, DP_TOK_RE_QWEN2, false);
        s.pre_desc = "Split(qwen2)+ByteLevel";
    } else if (!strcmp(pre, "llama-bpe") || !strcmp(pre, "llama3")) {
        s.ignore_merges = true;
        add_pre(&s, TOK_PRE_SPLIT, DP_TOK_RE_LLAMA3, false);
        s.pre_desc = "Split(llama3)+ByteLevel";
    } else if (!strcmp(pre, "smollm")) {
        add_pre(&s, TOK_PRE_SPLIT, "\\p{N}", false);
        add_pre(&s, TOK_PRE_SPLIT, DP_TOK_RE_GPT2, false);
        s.pre_desc = "Digits(individual)+ByteLevel(regex)";
    } else if (!strcmp(pre, "gpt2") || !strcmp(pre, "gpt-2")) { /* "gpt-2": llama.cpp's name */
        add_pre(&s, TOK_PRE_SPLIT, DP_TOK_RE_GPT2, false);
        s.pre_desc = "ByteLevel(regex)";
    } else {
        dp_fail("%s: pre-tokenizer \"%s\" (tokenizer.ggml.pre) is not supported (supported: "
                "qwen2, deepseek-r1-qwen, llama-bpe, llama3, smollm, gpt2)",
                name, pre);
        return NULL;
    }
    dp_tokenizer *t = NULL;
    if (spec_alloc(&s, (int32_t)a->n_tokens, a->n_merges)) goto done;
    for (size_t i = 0; i < a->n_tokens; i++) {
        if (!a->tokens[i]) {
            dp_fail("%s: token %zu is missing", name, i);
            goto done;
        }
        s.str[i] = a->tokens[i];
        s.len[i] = a->token_lens ? a->token_lens[i] : (uint32_t)strlen(a->tokens[i]);
        int32_t ty = a->token_types ? a->token_types[i] : DP_TOKTYPE_NORMAL;
        if (ty < 0 || ty > DP_TOKTYPE_BYTE) {
            dp_fail("%s: token %zu has unknown token type %d", name, i, (int)ty);
            goto done;
        }
        s.type[i] = (uint8_t)(ty == 0 ? DP_TOKTYPE_NORMAL : ty);
        if (s.type[i] == DP_TOKTYPE_UNKNOWN || s.type[i] == DP_TOKTYPE_UNUSED ||
            s.type[i] == DP_TOKTYPE_BYTE)
            s.type[i] = DP_TOKTYPE_NORMAL;
    }
    for (size_t m = 0; m < a->n_merges; m++) {
        if (!a->merges[m]) {
            dp_fail("%s: merge %zu is missing", name, m);
            goto done;
        }
        size_t l = a->merge_lens ? a->merge_lens[m] : strlen(a->merges[m]);
        if (split_merge(&s, m, a->merges[m], l)) goto done;
    }
    s.bos = a->bos_id >= 0 && (size_t)a->bos_id < a->n_tokens ? a->bos_id : -1;
    s.eos = a->eos_id >= 0 && (size_t)a->eos_id < a->n_tokens ? a->eos_id : -1;
    s.pad = a->pad_id >= 0 && (size_t)a->pad_id < a->n_tokens ? a->pad_id : -1;
    s.chat_template = a->chat_template;
    t = dp_tok_build(&s);
done:
    spec_free(&s);
    return t;
}
