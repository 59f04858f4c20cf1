/* Byte-level BPE tokenizer (Qwen2/Qwen3, Llama-3, SmolLM2/GPT-2), exact to Hugging Face
 * `tokenizers`: loaded from tokenizer.json (+ tokenizer_config.json) or built from plain arrays
 * (a GGUF file's tokenizer.ggml.* metadata). REFERENCE.md section 6. */
#ifndef DOPPEL_TOKENIZER_H
#define DOPPEL_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "data/base/io.h"
#include "data/base/utf8.h"

/* A growable list of token ids. Functions that produce ids append to it. */
typedef struct {
    int32_t *v;
    size_t n, cap;
} dp_ids;
int dp_ids_push(dp_ids *ids, int32_t id);
void dp_ids_free(dp_ids *ids);

/* One tokenizer. Loading is slow-ish (150k tokens); encoding keeps a cache of recent pieces
 * and regex match state inside, so one object is used by one thread at a time: other threads
 * use dp_tokenizer_clone (cheap). */
typedef struct dp_tokenizer dp_tokenizer;

/* PATH is a tokenizer.json file or a directory holding one (a Hugging Face model dir);
 * tokenizer_config.json beside it, when present, gives the chat template and bos/eos tokens.
 * Returns NULL with dp_last_error() naming the file and the problem. */
dp_tokenizer *dp_tokenizer_load(const char *path);

/* The same from memory: tokenizer.json text, and tokenizer_config.json text or NULL.
 * `name` is used in error messages. */
dp_tokenizer *dp_tokenizer_load_json(const char *json, size_t len, const char *config_json,
                                     size_t config_len, const char *name);

/* GGUF token types (tokenizer.ggml.token_type). */
enum {
    DP_TOKTYPE_NORMAL = 1,
    DP_TOKTYPE_UNKNOWN = 2,
    DP_TOKTYPE_CONTROL = 3,      /* special: matched in text only with allow_special */
    DP_TOKTYPE_USER_DEFINED = 4, /* added token: always matched in text */
    DP_TOKTYPE_UNUSED = 5,
    DP_TOKTYPE_BYTE = 6,
};

/* A tokenizer as plain arrays, the way GGUF stores it. Strings of NORMAL tokens and merges are
 * in the GPT-2 byte-level alphabet ("Ġhello"); CONTROL / USER_DEFINED tokens are plain text. */
typedef struct {
    const char *name;           /* for error messages (file name) */
    const char *model;          /* tokenizer.ggml.model: only "gpt2" (byte-level BPE) */
    const char *pre;            /* tokenizer.ggml.pre: "qwen2", "llama-bpe", "smollm", ... */
    const char *const *tokens;  /* (n_tokens) token strings */
    const uint32_t *token_lens; /* (n_tokens) byte lengths, or NULL for NUL-terminated */
    const int32_t *token_types; /* (n_tokens) DP_TOKTYPE_*, or NULL (all NORMAL) */
    size_t n_tokens;
    const char *const *merges;  /* (n_merges) "left right", rank = index */
    const uint32_t *merge_lens; /* (n_merges) or NULL */
    size_t n_merges;
    int32_t bos_id, eos_id, pad_id; /* -1 when absent */
    const char *chat_template;      /* tokenizer.chat_template, or NULL */
} dp_tokenizer_arrays;

/* Builds a tokenizer from arrays; the pre-tokenizer comes from `pre` (unknown names are an
 * error that lists the known ones). The arrays are copied. */
dp_tokenizer *dp_tokenizer_from_arrays(const dp_tokenizer_arrays *a);

/* Frees a tokenizer or a clone (free clones before their parent). */
void dp_tokenizer_free(dp_tokenizer *t);

/* A handle for another thread: shares the parent's read-only tables (no copy of the
 * vocabulary) and has its own cache and match state. The parent must outlive it. */
dp_tokenizer *dp_tokenizer_clone(const dp_tokenizer *parent);

/* Encodes UTF-8 text (invalid UTF-8 is an error naming the byte offset), appending to *out.
 * allow_special: special-token text ("<|im_end|>") becomes its id; otherwise it is encoded
 * as plain text (non-special added tokens are always recognized, as in HF `tokenizers`).
 * No BOS/EOS is added. */
int dp_tokenizer_encode(dp_tokenizer *t, const char *text, size_t len, bool allow_special,
                        dp_ids *out);

/* Decodes ids to UTF-8 text appended to *out. Byte sequences that are not valid UTF-8 become
 * U+FFFD, as HF does. Special tokens are included unless skip_special. An id outside the
 * vocabulary is an error. */
int dp_tokenizer_decode(const dp_tokenizer *t, const int32_t *ids, size_t n, bool skip_special,
                        dp_buf *out);

/* The raw bytes of one token (not NUL-terminated; may be part of a UTF-8 character), or NULL
 * when the id is out of range or unused. */
const char *dp_tokenizer_token_bytes(const dp_tokenizer *t, int32_t id, size_t *len);
/* The id of a token given as text: an added/special token's content ("<|im_end|>") or a
 * vocabulary token's decoded bytes ("hello"); -1 when there is none. */
int32_t dp_tokenizer_token_id(const dp_tokenizer *t, const char *text);
bool dp_tokenizer_is_special(const dp_tokenizer *t, int32_t id);
/* Bytes dropped by encode so far because the vocabulary has no token for them (HF drops them
 * too; SmolLM2 lacks 21 byte tokens). Callers report a non-zero count. */
uint64_t dp_tokenizer_dropped_bytes(const dp_tokenizer *t);
/* Number of ids (max id + 1, including added tokens). */
int32_t dp_tokenizer_vocab_size(const dp_tokenizer *t);

/* Facts for the chat layer: ids (-1 when absent) and the chat template (NULL when absent). */
int32_t dp_tokenizer_bos_id(const dp_tokenizer *t);
int32_t dp_tokenizer_eos_id(const dp_tokenizer *t);
const char *dp_tokenizer_chat_template(const dp_tokenizer *t);
/* A 64-bit hash of everything that decides the ids (tokens, token kinds, merges, normalizer,
 * pre-tokenizer), so an adapter can check it is used with the tokenizer it was trained with.
 * A model's tokenizer.json and its GGUF conversion give the same value when equivalent. */
uint64_t dp_tokenizer_fingerprint(const dp_tokenizer *t);
/* A short description: "byte-level BPE, 151669 ids, 151387 merges, NFC, pre: Split+ByteLevel" */
const char *dp_tokenizer_describe(const dp_tokenizer *t);

/* Streaming decoder for chat output: feed one id at a time; complete UTF-8 characters are
 * appended to *out, an incomplete trailing sequence is held back until the next id.
 * dp_tok_stream_flush emits what is held back (as U+FFFD: it can no longer complete). */
typedef struct {
    unsigned char pending[8];
    int n_pending;
    bool skip_special;
} dp_tok_stream;
int dp_tok_stream_feed(dp_tok_stream *s, const dp_tokenizer *t, int32_t id, dp_buf *out);
int dp_tok_stream_flush(dp_tok_stream *s, dp_buf *out);

/* UTF-8 helpers shared with the chat layer and tests. */
/* NFC of s (malloc'd, NUL-terminated), or NULL with dp_last_error(). */
char *dp_utf8_nfc(const char *s, size_t len, size_t *out_len);

#endif
