/* Training's side of LoRA adapters (the adapter itself, its unmerged forward and PEFT loading
 * are infer/adapter.h): PEFT initialization, the low-rank path's backward, and writing the PEFT
 * adapter files (adapter_config.json + adapter_model.safetensors, REFERENCE.md section 4) plus
 * doppel.json. */
#ifndef DOPPEL_LORA_H
#define DOPPEL_LORA_H

#include <stdint.h>

#include "infer/adapter.h"

/* PEFT init: A ~ kaiming-uniform(a=sqrt(5)) = uniform(-1/sqrt(in), 1/sqrt(in)), B = 0,
 * from the counter-based generator (stream = layer * 8 + module), so a seed fixes it. */
void dp_lora_init(dp_lora *lora, uint64_t seed);

/* Backward of dp_lora_forward: dA, dB accumulate; dx (N, in) accumulates (may be NULL).
 * dy: (N, out); xa as saved by dp_lora_forward; dxa: (N, r) scratch. */
void dp_lora_backward(float *dx, const float *dy, const float *x, const dp_lora_module *m, int r,
                      float scale, const float *keep, const float *xa, float *dxa, float *xd,
                      int N);

/* Saves the PEFT adapter into dir (created if needed): adapter_config.json,
 * adapter_model.safetensors, and doppel.json when doppel_json is not NULL (a JSON text). */
int dp_lora_save_peft(const dp_lora *lora, const char *dir, const char *base_model,
                      const char *doppel_json);

/* mkdir -p */
int dp_make_dirs(const char *dir);

#endif
