/* doppel merge --format lora-gguf: the adapter alone in llama.cpp's LoRA GGUF (what
 * convert_lora_to_gguf.py writes and src/llama-adapter.cpp loads: `llama-server --lora`,
 * Ollama's ADAPTER), nothing of the base but its architecture's name. */
#ifndef DOPPEL_EXPORT_LORA_GGUF_H
#define DOPPEL_EXPORT_LORA_GGUF_H

#include <stdbool.h>

#include "infer/merge.h"

typedef struct {
    const char *out_path; /* must not exist */
    int type;             /* DP_GGML_F32 or DP_GGML_F16 for lora_a / lora_b */
    bool quiet;
} dp_export_lora_gguf_opts;

/* One GGUF v3 file: general.type = "adapter", adapter.type = "lora", adapter.lora.alpha (f32),
 * general.architecture = the base's, general.name = the persona, and per adapted linear
 * `blk.L.<gguf name>.weight.lora_a` ne (in, r) and `.lora_b` ne (r, out) (PEFT's A (r, in) and
 * B (out, r) as they are; llama's q/k rows of B in GGUF's interleaved rope order). llama.cpp
 * scales B A x by alpha / r, so rsLoRA's alpha / sqrt(r) is written as alpha' = alpha sqrt(r).
 * Written under a temporary name and renamed at the end. */
int dp_export_lora_gguf(const dp_merge *mg, const dp_export_lora_gguf_opts *o);

#endif
