/* A merged model written as a Hugging Face directory (REFERENCE.md sections 5, 7, 12):
 * safetensors shards streamed tensor by tensor (model.safetensors, or model-0000k-of-0000N +
 * model.safetensors.index.json past the shard size), config.json, generation_config.json whose
 * eos ids include the chat's end-of-turn token, and the tokenizer files carrying the chat
 * template training used (from a GGUF base, tokenizer.json is made from its tokenizer.ggml.*
 * metadata). Written under a temporary name and renamed at the end. */
#ifndef DOPPEL_EXPORT_HF_H
#define DOPPEL_EXPORT_HF_H

#include <stdbool.h>
#include <stdint.h>

#include "data/base/io.h"
#include "data/chat_format.h"
#include "infer/dtype.h"
#include "infer/gguf.h"
#include "infer/merge.h"

#define DP_HF_SHARD_BYTES 5000000000ll /* 5 GB, transformers' default max_shard_size */

typedef struct {
    const char *out_dir;     /* must not exist */
    dp_dtype dtype;          /* DP_DT_BF16, DP_DT_F16 or DP_DT_F32 */
    int64_t max_shard_bytes; /* 0: DP_HF_SHARD_BYTES */
    bool quiet;
} dp_export_hf_opts;

int dp_export_hf(const dp_merge *mg, const dp_export_hf_opts *o);

/* tokenizer.json and tokenizer_config.json (eos_token = eot, chat_template) in dir, made from
 * g's tokenizer.ggml.* metadata: byte-level BPE with the pre-tokenizer of Hugging Face's files
 * of that family (tokenizer.ggml.pre qwen2, llama-bpe, smollm, gpt2; others refused). */
int dp_export_hf_tokenizer_from_gguf(const dp_gguf *g, const char *dir, const char *eot,
                                     const char *template_text);

/* The Jinja chat template that renders exactly what data/chat_format.h renders for format f,
 * with `system` (or NULL) inserted as the first message when a conversation has none (chat and
 * training do the same). Appended to out. Fails on a format it does not know. */
int dp_export_jinja_template(dp_chat_format f, const char *system, dp_buf *out);

#endif
