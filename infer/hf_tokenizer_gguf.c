/* tokenizer.json -> tokenizer.ggml.* (see hf_tokenizer_gguf.h), following what llama.cpp's
 * convert_hf_to_gguf.py (get_vocab_base, gguf-py's SpecialVocab) writes for a byte-level BPE.
 *
 * tokenizer.ggml.pre is how llama.cpp picks its pre-tokenizer (its regexes, llama-vocab.cpp).
 * llama.cpp's converter names it from a hash of the tokenizer's output on a fixed text; doppel
 * names it from the pre-tokenizer itself, and only for the four pipelines whose llama.cpp
 * counterpart splits text exactly as Hugging Face does:
 *   gpt-2      ByteLevel(use_regex) alone                            (GPT-2's regex)
 *   smollm     Digits(individual_digits) + ByteLevel(use_regex)      (SmolLM / SmolLM2)
 *   qwen2      Split(Qwen2's regex) + ByteLevel(no regex), NFC       (Qwen2 / 2.5 / 3)
 *   llama-bpe  Split(Llama-3's regex) + ByteLevel(no regex), ignore_merges (Llama 3)
 * Anything else is refused: a wrong name would make llama.cpp tokenize differently, silently.
 * (llama.cpp does not NFC-normalize: qwen2 text that is not already NFC can split differently
 * there, as with the converter's own files.) */
#include "infer/hf_tokenizer_gguf.h"
#include "data/base/error.h"
#include "data/base/io.h"
#include "data/base/json.h"
#include "data/tokenizer.h"
#include "data/tokenizer_impl.h" /* the regexes of Qwen2 and Llama 3, as doppel's tokenizer */

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static bool json_true(const cJSON *o, const char *key) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}

static const char *json_str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* DIR/NAME parsed, or NULL (*failed set when it exists but cannot be read or parsed) */
static cJSON *read_json(const char *dir, const char *name, bool required, bool *failed) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat st;
    if (stat(path, &st) != 0) {
        if (required) {
            dp_fail("%s: missing (a Hugging Face tokenizer is needed for --format gguf)", path);
            *failed = true;
        }
        return NULL;
    }
    char *text = NULL;
    size_t len = 0;
    cJSON *j = NULL;
    if (dp_read_file(path, &text, &len) || dp_json_parse(text, len, DP_JSON_REFUSE_NUL, path, 1, &j))
        *failed = true;
    else if (!j) {
        dp_fail("%s: not valid JSON", path);
        *failed = true;
    }
    free(text);
    return j;
}

/* ------------------------------------------------------------------ the pre-tokenizer */

typedef struct {
    char kind; /* 'B' ByteLevel, 'S' Split, 'D' Digits, '?' other */
    bool use_regex, prefix_space, individual, isolated, invert;
    const char *regex, *type;
} pre_step;

static int flatten_pre(const cJSON *p, pre_step *steps, int *n) {
    if (!p || cJSON_IsNull(p)) return 0;
    const char *type = json_str(p, "type");
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(p, "pretokenizers")) {
            if (flatten_pre(e, steps, n)) return -1;
        }
        return 0;
    }
    if (*n >= 8) return -1;
    pre_step *s = &steps[(*n)++];
    *s = (pre_step){.kind = '?', .type = type ? type : "?"};
    if (!type) return 0;
    if (!strcmp(type, "ByteLevel")) {
        const cJSON *ur = cJSON_GetObjectItemCaseSensitive(p, "use_regex");
        const cJSON *aps = cJSON_GetObjectItemCaseSensitive(p, "add_prefix_space");
        s->kind = 'B';
        s->use_regex = !ur || cJSON_IsTrue(ur);     /* HF's defaults */
        s->prefix_space = !aps || cJSON_IsTrue(aps); /* (tokenizers always writes both) */
    } else if (!strcmp(type, "Split")) {
        s->kind = 'S';
        s->regex = json_str(cJSON_GetObjectItemCaseSensitive(p, "pattern"), "Regex");
        const char *beh = json_str(p, "behavior");
        s->isolated = beh && !strcmp(beh, "Isolated");
        s->invert = json_true(p, "invert");
    } else if (!strcmp(type, "Digits")) {
        s->kind = 'D';
        s->individual = json_true(p, "individual_digits");
    }
    return 0;
}

static bool split_is(const pre_step *s, const char *regex) {
    return s->kind == 'S' && s->regex && !strcmp(s->regex, regex) && s->isolated && !s->invert;
}

static bool bytelevel_is(const pre_step *s, bool use_regex) {
    return s->kind == 'B' && s->use_regex == use_regex && !s->prefix_space;
}

/* "nfc" when the normalizer is NFC (alone or in a one-step Sequence), "" when none, NULL for
 * any other */
static const char *normalizer_kind(const cJSON *n) {
    if (!n || cJSON_IsNull(n)) return "";
    const char *type = json_str(n, "type");
    if (type && !strcmp(type, "NFC")) return "nfc";
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        if (cJSON_GetArraySize(list) == 0) return "";
        if (cJSON_GetArraySize(list) == 1) return normalizer_kind(cJSON_GetArrayItem(list, 0));
    }
    return NULL;
}

static const char *name_pre(const cJSON *root, const char *path) {
    pre_step st[8];
    int n = 0;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    bool ignore_merges = json_true(model, "ignore_merges");
    const char *norm = normalizer_kind(cJSON_GetObjectItemCaseSensitive(root, "normalizer"));
    const char *pre = NULL;
    if (!flatten_pre(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), st, &n) && norm) {
        bool plain = !strcmp(norm, "") && !ignore_merges;
        if (n == 1 && bytelevel_is(&st[0], true) && plain)
            pre = "gpt-2"; /* llama.cpp's name (llama-vocab.cpp), not "gpt2" */
        else if (n == 2 && st[0].kind == 'D' && st[0].individual && bytelevel_is(&st[1], true) &&
                 plain)
            pre = "smollm";
        else if (n == 2 && split_is(&st[0], DP_TOK_RE_QWEN2) && bytelevel_is(&st[1], false) &&
                 !strcmp(norm, "nfc") && !ignore_merges)
            pre = "qwen2";
        else if (n == 2 && split_is(&st[0], DP_TOK_RE_LLAMA3) && bytelevel_is(&st[1], false) &&
                 !strcmp(norm, "") && ignore_merges)
            pre = "llama-bpe";
    }
    if (!pre) {
        char desc[200] = "";
        for (int i = 0; i < n; i++) {
            size_t l = strlen(desc);
            snprintf(desc + l, sizeof desc - l, "%s%s", i ? "+" : "", st[i].type);
        }
        dp_fail("%s: its pre-tokenizer (%s, normalizer %s%s) is not one of those doppel can name "
                "for llama.cpp (gpt-2: ByteLevel; smollm: Digits+ByteLevel; qwen2: Qwen2's Split "
                "regex+ByteLevel with NFC; llama-bpe: Llama 3's Split regex+ByteLevel with "
                "ignore_merges); a guessed tokenizer.ggml.pre would make llama.cpp tokenize "
                "differently. Use --format hf and llama.cpp's convert_hf_to_gguf.py",
                path, n ? desc : "none", norm ? (norm[0] ? norm : "none") : "other",
                ignore_merges ? ", ignore_merges" : "");
    }
    return pre;
}

/* ------------------------------------------------------------------ the vocabulary */

/* gguf-py's does_token_look_special: added tokens some models leave non-special although they
 * are control tokens ("<|fim_prefix|>"); the converter marks them CONTROL */
static bool looks_special(const char *t) {
    size_t n = strlen(t);
    static const char *const named[] = {"<pad>", "<mask>", "<2mass>", "[@BOS@]", NULL};
    for (int i = 0; named[i]; i++)
        if (!strcmp(t, named[i])) return true;
    if (n >= 4 && !strncmp(t, "<|", 2) && !strcmp(t + n - 2, "|>")) return true;
    /* "<｜" ... "｜>": U+FF5C, fullwidth vertical line (DeepSeek) */
    if (n >= 8 && !strncmp(t, "<\xef\xbd\x9c", 4) && !strcmp(t + n - 4, "\xef\xbd\x9c>"))
        return true;
    return n >= 8 && !strncmp(t, "<unused", 7) && t[n - 1] == '>';
}

static int set_token(dp_hf_gguf_vocab *v, int64_t id, const char *text, int32_t type) {
    char *s = dp_strdup(text);
    if (!s) return -1;
    free(v->tokens[id]);
    v->tokens[id] = s;
    v->token_lens[id] = strlen(s);
    v->token_types[id] = type;
    return 0;
}

/* the id of the added token whose content is `content` (first match, as gguf-py), or -1 */
static int32_t added_id(const cJSON *added, const char *content) {
    const cJSON *e;
    if (!content) return -1;
    cJSON_ArrayForEach(e, added) {
        const char *c = json_str(e, "content");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (c && !strcmp(c, content) && cJSON_IsNumber(id)) return (int32_t)id->valuedouble;
    }
    return -1;
}

/* tokenizer_config.json's KEY: "text" or {"content": "text"} */
static const char *config_token(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* the special ids and add_bos / add_eos as gguf-py's SpecialVocab reads them: tokenizer.json's
 * TemplateProcessing says whether BOS / EOS are added, tokenizer_config.json's add_*_token
 * overrides that, its *_token names an added token; config.json's *_token_id fills the rest */
static void special_ids(dp_hf_gguf_vocab *v, const cJSON *root, const cJSON *cfg,
                        const cJSON *config) {
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    const char *bos = config_token(cfg, "bos_token"), *eos = config_token(cfg, "eos_token");
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(root, "post_processor"), *proc;
    const cJSON *procs = cJSON_GetObjectItemCaseSensitive(pp, "processors");
    cJSON *one = NULL;
    if (!procs && pp) {
        one = cJSON_CreateArray();
        cJSON_AddItemReferenceToArray(one, (cJSON *)pp);
        procs = one;
    }
    cJSON_ArrayForEach(proc, procs) {
        const char *type = json_str(proc, "type");
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(proc, "single");
        if (!type || strcmp(type, "TemplateProcessing") || cJSON_GetArraySize(single) < 2)
            continue;
        int n = cJSON_GetArraySize(single);
        const char *first = json_str(
            cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(single, 0), "SpecialToken"), "id");
        const char *last = json_str(
            cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(single, n - 1), "SpecialToken"),
            "id");
        if (first) {
            if (!cfg) bos = first;
            v->add_bos = bos && !strcmp(first, bos);
        }
        if (last) {
            if (!cfg) eos = last;
            v->add_eos = eos && !strcmp(last, eos);
        }
    }
    cJSON_Delete(one);
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token");
    const cJSON *ae = cJSON_GetObjectItemCaseSensitive(cfg, "add_eos_token");
    if (cJSON_IsBool(ab)) v->add_bos = cJSON_IsTrue(ab);
    if (cJSON_IsBool(ae)) v->add_eos = cJSON_IsTrue(ae);
    v->bos_id = added_id(added, bos);
    v->eos_id = added_id(added, eos);
    v->unk_id = added_id(added, config_token(cfg, "unk_token"));
    v->sep_id = added_id(added, config_token(cfg, "sep_token"));
    v->pad_id = added_id(added, config_token(cfg, "pad_token"));
    int32_t *ids[] = {&v->bos_id, &v->eos_id, &v->unk_id, &v->sep_id, &v->pad_id};
    const char *keys[] = {"bos_token_id", "eos_token_id", "unk_token_id", "sep_token_id",
                          "pad_token_id"};
    for (int i = 0; i < 5; i++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(config, keys[i]);
        /* an int only (a list of eos ids is left to generation_config, as gguf-py does) */
        if (*ids[i] < 0 && cJSON_IsNumber(x) && x->valuedouble >= 0 &&
            x->valuedouble == (double)(int64_t)x->valuedouble)
            *ids[i] = (int32_t)x->valuedouble;
        if (*ids[i] >= 0 && (uint64_t)*ids[i] >= v->n_tokens) *ids[i] = -1;
    }
}

int dp_hf_gguf_vocab_load(const char *dir, int64_t n_vocab, dp_hf_gguf_vocab *v) {
    *v = (dp_hf_gguf_vocab){.bos_id = -1, .eos_id = -1, .unk_id = -1, .sep_id = -1, .pad_id = -1,
                            .add_bos = -1, .add_eos = -1};
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    bool failed = false;
    cJSON *root = read_json(dir, "tokenizer.json", true, &failed);
    cJSON *cfg = failed ? NULL : read_json(dir, "tokenizer_config.json", false, &failed);
    cJSON *config = failed ? NULL : read_json(dir, "config.json", false, &failed);
    int rc = -1;
    if (failed) goto out;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    const char *mtype = json_str(model, "type");
    const char *dec = json_str(cJSON_GetObjectItemCaseSensitive(root, "decoder"), "type");
    /* the converter's test for a GPT-2 BPE (gguf-py's BpeVocab) */
    if ((mtype && strcmp(mtype, "BPE")) || !cJSON_IsObject(vocab) || !cJSON_IsArray(merges) ||
        json_true(model, "byte_fallback") || !dec || strcmp(dec, "ByteLevel")) {
        dp_fail("%s: not a byte-level BPE (model type BPE without byte_fallback, decoder "
                "ByteLevel): tokenizer.ggml.model \"gpt2\" cannot describe it",
                path);
        goto out;
    }
    if (!(v->pre = name_pre(root, path))) goto out;
    /* the ids: vocab, then the added tokens, which win over a vocab entry of their id */
    int64_t max_id = -1;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > 16777216) {
            dp_fail("%s: vocab entry \"%.60s\" has no valid id", path, e->string);
            goto out;
        }
        if ((int64_t)e->valuedouble > max_id) max_id = (int64_t)e->valuedouble;
    }
    cJSON_ArrayForEach(e, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > 16777216 ||
            !json_str(e, "content")) {
            dp_fail("%s: an added_tokens entry has no valid id or content", path);
            goto out;
        }
        if ((int64_t)id->valuedouble > max_id) max_id = (int64_t)id->valuedouble;
    }
    if (max_id + 1 > n_vocab) {
        dp_fail("%s: the tokenizer has ids up to %lld but the model's embedding has %lld rows "
                "(config.json vocab_size): they do not belong together",
                path, (long long)max_id, (long long)n_vocab);
        goto out;
    }
    v->n_tokens = (uint64_t)n_vocab;
    v->tokens = dp_calloc(v->n_tokens, sizeof *v->tokens);
    v->token_lens = dp_calloc(v->n_tokens, sizeof *v->token_lens);
    v->token_types = dp_calloc(v->n_tokens, sizeof *v->token_types);
    if (!v->tokens || !v->token_lens || !v->token_types) goto out;
    cJSON_ArrayForEach(e, vocab) {
        int64_t id = (int64_t)e->valuedouble;
        if (v->tokens[id]) {
            dp_fail("%s: id %lld is used by two vocab entries", path, (long long)id);
            goto out;
        }
        if (set_token(v, id, e->string, DP_TOKTYPE_NORMAL)) goto out;
    }
    cJSON_ArrayForEach(e, added) {
        const char *content = json_str(e, "content");
        bool control = json_true(e, "special") || looks_special(content);
        /* llama.cpp matches user-defined tokens as plain text: SentencePiece's "▁" is a space
         * there (the converter's pre-normalization) */
        char buf[1024];
        if (!control && strstr(content, "\xe2\x96\x81") && strlen(content) < sizeof buf) {
            size_t o = 0;
            for (const char *p = content; *p;) {
                if (!strncmp(p, "\xe2\x96\x81", 3)) buf[o++] = ' ', p += 3;
                else buf[o++] = *p++;
            }
            buf[o] = 0;
            content = buf;
        }
        if (set_token(v, (int64_t)cJSON_GetObjectItemCaseSensitive(e, "id")->valuedouble, content,
                      control ? DP_TOKTYPE_CONTROL : DP_TOKTYPE_USER_DEFINED))
            goto out;
    }
    for (uint64_t i = 0; i < v->n_tokens; i++) {
        if (v->tokens[i]) continue;
        char pad[32];
        snprintf(pad, sizeof pad, "[PAD%llu]", (unsigned long long)i);
        if (set_token(v, (int64_t)i, pad, DP_TOKTYPE_UNUSED)) goto out;
    }
    /* merges: "a b", or ["a", "b"] joined by a space (byte-level parts never hold one) */
    v->n_merges = (uint64_t)cJSON_GetArraySize(merges);
    v->merges = dp_calloc(v->n_merges + 1, sizeof *v->merges);
    v->merge_lens = dp_calloc(v->n_merges + 1, sizeof *v->merge_lens);
    if (!v->merges || !v->merge_lens) goto out;
    uint64_t m = 0;
    cJSON_ArrayForEach(e, merges) {
        const char *a = cJSON_IsString(e) ? e->valuestring : NULL, *b = NULL;
        if (!a && cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2) {
            a = cJSON_GetStringValue(cJSON_GetArrayItem(e, 0));
            b = cJSON_GetStringValue(cJSON_GetArrayItem(e, 1));
            if (a && b && (strchr(a, ' ') || strchr(b, ' '))) a = NULL;
        }
        if (!a || (cJSON_IsArray(e) && !b)) {
            dp_fail("%s: merge %llu is neither \"a b\" nor a pair of byte-level tokens", path,
                    (unsigned long long)m);
            goto out;
        }
        size_t la = strlen(a), lb = b ? strlen(b) : 0;
        char *s = dp_malloc(la + lb + 2);
        if (!s) goto out;
        memcpy(s, a, la);
        if (b) s[la] = ' ', memcpy(s + la + 1, b, lb);
        s[la + (b ? lb + 1 : 0)] = 0;
        v->merges[m] = s;
        v->merge_lens[m++] = strlen(s);
    }
    special_ids(v, root, cfg, config);
    rc = 0;
out:
    if (rc) dp_hf_gguf_vocab_free(v);
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    cJSON_Delete(config);
    return rc;
}

void dp_hf_gguf_vocab_free(dp_hf_gguf_vocab *v) {
    for (uint64_t i = 0; v->tokens && i < v->n_tokens; i++) free(v->tokens[i]);
    for (uint64_t i = 0; v->merges && i < v->n_merges; i++) free(v->merges[i]);
    free(v->tokens);
    free(v->token_lens);
    free(v->token_types);
    free(v->merges);
    free(v->merge_lens);
    *v = (dp_hf_gguf_vocab){.bos_id = -1, .eos_id = -1, .unk_id = -1, .sep_id = -1, .pad_id = -1};
}
