/* GGUF tokenizer metadata (REFERENCE.md section 5) -> dp_tokenizer_arrays -> dp_tokenizer. */
#include "infer/gguf_tokenizer.h"
#include "data/base/error.h"

#include <stdlib.h>
#include <string.h>

static int32_t opt_id(const dp_gguf *g, const char *key) {
    int64_t v;
    if (!dp_gguf_find(g, key) || dp_gguf_get_int(g, key, &v) || v < 0 || v > INT32_MAX) return -1;
    return (int32_t)v;
}

dp_tokenizer *dp_tokenizer_from_gguf(const dp_gguf *g, const char *pre_override) {
    const char *name = g->path ? g->path : "gguf";
    const char *model = NULL, *pre = NULL, *tpl = NULL;
    char *const *tokens = NULL, *const *merges = NULL;
    const uint64_t *tlens = NULL, *mlens = NULL;
    uint64_t n_tokens = 0, n_merges = 0, n_types = 0;
    int64_t *types64 = NULL;
    int32_t *types = NULL;
    uint32_t *tl = NULL, *ml = NULL;
    dp_tokenizer *t = NULL;
    if (dp_gguf_get_str(g, "tokenizer.ggml.model", &model) ||
        dp_gguf_get_str_array(g, "tokenizer.ggml.tokens", &tokens, &tlens, &n_tokens)) {
        dp_fail_context("%s: no tokenizer in this GGUF", name);
        return NULL;
    }
    if (dp_gguf_find(g, "tokenizer.ggml.pre") && dp_gguf_get_str(g, "tokenizer.ggml.pre", &pre))
        return NULL;
    if (dp_gguf_find(g, "tokenizer.ggml.merges") &&
        dp_gguf_get_str_array(g, "tokenizer.ggml.merges", &merges, &mlens, &n_merges))
        return NULL;
    if (dp_gguf_find(g, "tokenizer.chat_template") &&
        dp_gguf_get_str(g, "tokenizer.chat_template", &tpl))
        return NULL;
    if (dp_gguf_find(g, "tokenizer.ggml.token_type")) {
        if (dp_gguf_get_int_array(g, "tokenizer.ggml.token_type", &types64, &n_types)) return NULL;
        if (n_types != n_tokens) {
            dp_fail("%s: tokenizer.ggml.token_type has %llu entries for %llu tokens", name,
                    (unsigned long long)n_types, (unsigned long long)n_tokens);
            goto done;
        }
    }
    if (n_tokens > 16777216 || n_merges > 16777216) {
        dp_fail("%s: tokenizer has %llu tokens and %llu merges (too many)", name,
                (unsigned long long)n_tokens, (unsigned long long)n_merges);
        goto done;
    }
    types = dp_malloc((n_tokens + 1) * sizeof *types);
    tl = dp_malloc((n_tokens + 1) * sizeof *tl);
    ml = dp_malloc((n_merges + 1) * sizeof *ml);
    if (!types || !tl || !ml) goto done;
    for (uint64_t i = 0; i < n_tokens; i++) {
        int64_t ty = types64 ? types64[i] : DP_TOKTYPE_NORMAL;
        types[i] = ty >= 0 && ty <= 255 ? (int32_t)ty : -1;
        if (tlens[i] > UINT32_MAX) {
            dp_fail("%s: token %llu is too long", name, (unsigned long long)i);
            goto done;
        }
        tl[i] = (uint32_t)tlens[i];
    }
    for (uint64_t i = 0; i < n_merges; i++) {
        if (mlens[i] > UINT32_MAX) {
            dp_fail("%s: merge %llu is too long", name, (unsigned long long)i);
            goto done;
        }
        ml[i] = (uint32_t)mlens[i];
    }
    dp_tokenizer_arrays a = {
        .name = name,
        .model = model,
        .pre = pre_override ? pre_override : pre,
        .tokens = (const char *const *)tokens,
        .token_lens = tl,
        .token_types = types,
        .n_tokens = (size_t)n_tokens,
        .merges = (const char *const *)merges,
        .merge_lens = ml,
        .n_merges = (size_t)n_merges,
        .bos_id = opt_id(g, "tokenizer.ggml.bos_token_id"),
        .eos_id = opt_id(g, "tokenizer.ggml.eos_token_id"),
        .pad_id = opt_id(g, "tokenizer.ggml.padding_token_id"),
        .chat_template = tpl,
    };
    t = dp_tokenizer_from_arrays(&a);
done:
    free(types64);
    free(types);
    free(tl);
    free(ml);
    return t;
}

dp_tokenizer *dp_tokenizer_load_gguf(const char *path) {
    dp_gguf *g = dp_gguf_open(path);
    if (!g) return NULL;
    dp_tokenizer *t = dp_tokenizer_from_gguf(g, NULL);
    dp_gguf_close(g);
    return t;
}
