/* Internal to the tokenizer files: the description both loaders (tokenizer.json, GGUF arrays)
 * fill in, and the one builder that turns it into a dp_tokenizer. Not a public header. */
#ifndef DOPPEL_TOKENIZER_IMPL_H
#define DOPPEL_TOKENIZER_IMPL_H

#include "data/tokenizer.h"

enum { TOK_PRE_SPLIT = 1, TOK_PRE_PREFIX_SPACE = 2 };
enum { TOK_MAX_PRE = 8 };

typedef struct {
    int kind;            /* TOK_PRE_* */
    const char *pattern; /* SPLIT: regex (or literal text when literal) */
    bool literal;
} tok_pre_step;

typedef struct {
    const char *name; /* file name for messages */
    int32_t n_ids;
    const char **str; /* (n_ids) token text; NULL = id unused */
    uint32_t *len;    /* (n_ids) */
    uint8_t *type;    /* (n_ids) DP_TOKTYPE_*: NORMAL/BYTE/UNUSED = byte-level vocab entry */
    size_t n_merges;
    const char **ml, **mr; /* (n_merges) left / right, byte-level */
    uint32_t *mll, *mrl;   /* (n_merges) their lengths */
    bool nfc, ignore_merges;
    int n_pre;
    tok_pre_step pre[TOK_MAX_PRE];
    const char *pre_desc; /* "Split+ByteLevel" for describe() */
    int32_t bos, eos, pad;
    const char *chat_template;
} tok_spec;

dp_tokenizer *dp_tok_build(const tok_spec *s);

/* The pre-tokenizer regexes of REFERENCE.md section 6. */
extern const char DP_TOK_RE_QWEN2[], DP_TOK_RE_LLAMA3[], DP_TOK_RE_GPT2[];

#endif
