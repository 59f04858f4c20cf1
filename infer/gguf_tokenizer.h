/* A dp_tokenizer from a GGUF file's tokenizer.ggml.* metadata (byte-level BPE models). */
#ifndef DOPPEL_GGUF_TOKENIZER_H
#define DOPPEL_GGUF_TOKENIZER_H

#include "data/tokenizer.h"
#include "infer/gguf.h"

/* Builds the tokenizer from an open GGUF (tokens, token types, merges, pre-tokenizer name,
 * bos/eos/padding ids, chat template). pre_override (or NULL) replaces tokenizer.ggml.pre.
 * NULL with dp_last_error() naming the file and key. */
dp_tokenizer *dp_tokenizer_from_gguf(const dp_gguf *g, const char *pre_override);
/* Opens PATH, builds the tokenizer and closes the file. */
dp_tokenizer *dp_tokenizer_load_gguf(const char *path);

#endif
