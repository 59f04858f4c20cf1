/* A Hugging Face tokenizer (tokenizer.json + tokenizer_config.json + config.json) as the
 * tokenizer.ggml.* arrays llama.cpp's convert_hf_to_gguf.py writes for a byte-level BPE, for
 * doppel merge --format gguf from a Hugging Face directory. */
#ifndef DOPPEL_HF_TOKENIZER_GGUF_H
#define DOPPEL_HF_TOKENIZER_GGUF_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    /* (n_tokens) by id: NORMAL tokens in the GPT-2 byte-level alphabet ("Ġhello"), added tokens
     * as plain text, ids no token uses as "[PAD<id>]" (UNUSED) up to the model's vocab_size */
    char **tokens;
    uint64_t *token_lens;
    int32_t *token_types; /* DP_TOKTYPE_* (data/tokenizer.h) */
    uint64_t n_tokens;
    char **merges; /* (n_merges) "left right", rank = index */
    uint64_t *merge_lens;
    uint64_t n_merges;
    const char *pre; /* tokenizer.ggml.pre: "gpt-2", "smollm", "qwen2" or "llama-bpe" (static) */
    int32_t bos_id, eos_id, unk_id, sep_id, pad_id; /* -1 when none */
    int add_bos, add_eos;                           /* 1 / 0; -1 when the files do not say */
} dp_hf_gguf_vocab;

/* Reads DIR's tokenizer files. n_vocab is the model's vocab_size (the embedding's rows): the
 * token list is padded to it (never cut: more ids than rows is an error). The pre-tokenizer
 * must be one llama.cpp names (see hf_tokenizer_gguf.c); any other is refused with a message,
 * never guessed. 0, or -1 with dp_last_error() naming the file and what to do. */
int dp_hf_gguf_vocab_load(const char *dir, int64_t n_vocab, dp_hf_gguf_vocab *v);
void dp_hf_gguf_vocab_free(dp_hf_gguf_vocab *v);

#endif
