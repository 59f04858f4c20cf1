/* A merged model written as one GGUF v3 file (REFERENCE.md section 5) for llama.cpp, Ollama and
 * LM Studio: the base GGUF's metadata and tokenizer (tokenizer.ggml.*) carried over, or, from a
 * Hugging Face directory, made as llama.cpp's converter makes them (infer/hf_tokenizer_gguf.h;
 * a pre-tokenizer llama.cpp has no name for is refused),
 * general.name = the persona, tokenizer.chat_template = the training format
 * (dp_export_jinja_template), tokenizer.ggml.eot_token_id = the chat's end-of-turn token, and
 * every tensor streamed in F16, Q8_0 or Q4_0 (kernels/ggml_quants.h; norms and biases F32). Written
 * to a temporary name and renamed at the end. */
#ifndef DOPPEL_EXPORT_GGUF_H
#define DOPPEL_EXPORT_GGUF_H

#include <stdbool.h>
#include <stdint.h>

#include "infer/merge.h"

typedef struct {
    const char *out_path; /* must not exist */
    int type;             /* DP_GGML_F16, DP_GGML_Q8_0 or DP_GGML_Q4_0 */
    bool quiet;
} dp_export_gguf_opts;

int dp_export_gguf(const dp_merge *mg, const dp_export_gguf_opts *o);

/* w (rows, cols) in Hugging Face's row order of a head (s * D/2 + j) -> out in GGUF's (2j + s),
 * nh heads of D = rows / nh rows: the inverse of the loader's unpermutation, as llama.cpp's
 * converter permutes llama's q/k (and a LoRA's B of q/k). */
void dp_gguf_permute_rows(const float *w, float *out, int nh, int64_t rows, int64_t cols);

#endif
