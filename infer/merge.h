/* doppel merge: a base model and a LoRA adapter made into one standalone model,
 * W' = W + scale * B @ A per adapted linear (PEFT's merge, REFERENCE.md section 12), produced
 * tensor by tensor so an exporter (infer/export_hf.h) streams the result to disk without ever
 * holding the merged model in memory. */
#ifndef DOPPEL_MERGE_H
#define DOPPEL_MERGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "infer/adapter.h"
#include "infer/model.h"
#include "infer/safetensors.h"

/* Which base weights the adapter is added to. It was trained against the NF4-dequantized
 * weights (unless trained with --fp32-base); a 16-bit Hugging Face base also has the originals. */
typedef enum { DP_MERGE_INTO_DEQUANTIZED, DP_MERGE_INTO_ORIGINAL } dp_merge_into;

/* W (out, in) += scale * B (out, r) @ A (r, in): one adapted module merged in place. */
void dp_lora_merge_weight(float *W, const dp_lora_module *m, int r, float scale);

typedef struct {
    dp_model *model;     /* the base: block linears in NF4 as training saw them (or fp32) */
    dp_lora *lora;       /* the adapter */
    char *doppel_json;   /* the adapter's doppel.json text (NULL when absent) */
    dp_st_set *original; /* the base's own weights for DP_MERGE_INTO_ORIGINAL, else NULL */
    dp_merge_into into;
    bool fp32_base; /* the adapter was trained over fp32 weights (doppel.json) */
    const char *model_path, *adapter_dir;
} dp_merge;

/* Loads the base as training did, the adapter, and checks doppel.json's fingerprint of the base
 * (an adapter from another model is refused). into == ORIGINAL needs a Hugging Face directory
 * whose weights are 16 or 32-bit. NULL with dp_last_error(). */
dp_merge *dp_merge_open(const char *model_path, const char *adapter_dir, dp_merge_into into,
                        bool quiet);
void dp_merge_close(dp_merge *mg);

/* Switches an open merge to the other base weights (cmd/merge.c's --merge-into auto decides
 * after evaluating both): ORIGINAL needs a Hugging Face directory. -1 with a message. */
int dp_merge_set_into(dp_merge *mg, dp_merge_into into);

/* Linear `id` of `layer` merged, as fp32 (out, in) into W (out * in floats). */
int dp_merge_linear(const dp_merge *mg, int layer, dp_linear_id id, float *W);

/* A string field of doppel.json ("persona", "system_prompt", "chat_format"): a malloc'd copy, or
 * NULL when absent, null or not a string. */
char *dp_merge_meta_string(const dp_merge *mg, const char *key);

/* The process's peak resident set so far, in bytes (getrusage). */
size_t dp_peak_rss_bytes(void);

#endif
