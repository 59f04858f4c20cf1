/* LoRA adapters over the seven linear modules of every block: parameters in one flat buffer,
 * PEFT initialization, the low-rank path forward/backward, and the PEFT adapter files
 * (adapter_config.json + adapter_model.safetensors, REFERENCE.md section 4) plus doppel.json. */
#ifndef DOPPEL_LORA_H
#define DOPPEL_LORA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "infer/model.h"

#define DP_LORA_ALL_TARGETS ((1u << DP_N_LINEAR) - 1)

typedef struct {
    int r;
    float alpha;
    float dropout;    /* on the LoRA input only, as PEFT does */
    bool rslora;      /* scale alpha / sqrt(r) instead of alpha / r */
    unsigned targets; /* bit (1u << dp_linear_id) per adapted module */
} dp_lora_config;

typedef struct {
    int out, in;
    float *A, *B;   /* A (r, in), B (out, r); NULL when the module is not adapted */
    float *dA, *dB; /* gradients, same shapes (into dp_lora.grads) */
} dp_lora_module;

typedef struct {
    dp_lora_config cfg;
    float scale; /* alpha / r or alpha / sqrt(r) */
    int L;
    dp_lora_module *mod; /* (L, DP_N_LINEAR) */
    float *params;       /* (n) every A and B, layer by layer, module by module, A before B */
    float *grads;        /* (n) */
    size_t n;
    float *scratch; /* (scratch_rows, r) for dp_lora_hook */
    int scratch_rows;
} dp_lora;

/* "all" or a comma/space separated list of module names ("q_proj,v_proj") -> bit mask.
 * Returns -1 with a message naming the bad entry. */
int dp_lora_parse_targets(const char *list, unsigned *mask);
/* Writes "q_proj,k_proj,..." for a mask into out. */
void dp_lora_format_targets(unsigned mask, char *out, size_t cap);

/* Module shape (out, in) for a model configuration. */
void dp_lora_module_shape(const dp_model_config *cfg, int m, int *out, int *in);

dp_lora *dp_lora_create(const dp_model_config *mc, const dp_lora_config *lc);
void dp_lora_free(dp_lora *lora);
static inline dp_lora_module *dp_lora_mod(const dp_lora *lora, int layer, int m) {
    return &lora->mod[(size_t)layer * DP_N_LINEAR + m];
}

/* PEFT init: A ~ kaiming-uniform(a=sqrt(5)) = uniform(-1/sqrt(in), 1/sqrt(in)), B = 0,
 * from the counter-based generator (stream = layer * 8 + module), so a seed fixes it. */
void dp_lora_init(dp_lora *lora, uint64_t seed);

/* y (N, out) += scale * dropout(x) A^T B^T for one module; x (N, in). keep: (N, in) dropout
 * multipliers (0 or 1/(1-p)) or NULL for none. xa: (N, r) scratch that keeps x_d A^T for the
 * backward pass; xd: (N, in) scratch for the dropped input (only used when keep != NULL). */
void dp_lora_forward(float *y, const float *x, const dp_lora_module *m, int r, float scale,
                     const float *keep, float *xa, float *xd, int N);
/* Backward of the same: dA, dB accumulate; dx (N, in) accumulates (may be NULL).
 * dy: (N, out); xa as saved by dp_lora_forward; dxa: (N, r) scratch. */
void dp_lora_backward(float *dx, const float *dy, const float *x, const dp_lora_module *m, int r,
                      float scale, const float *keep, const float *xa, float *dxa, float *xd,
                      int N);

/* Inference with the adapter unmerged: the signature of infer/forward.h's dp_linear_hook, so
 * `dp_forward_set_hook(&f, dp_lora_hook, lora)` applies it: out (N, out_features) +=
 * scale * (inp A^T) B^T for an adapted module (no dropout). Thread-unsafe (a scratch buffer
 * inside lora grows to N * r). */
int dp_lora_hook(void *lora, int layer, dp_linear_id id, float *out, const float *inp, int N,
                 int in, int out_features);

/* Saves the PEFT adapter into dir (created if needed): adapter_config.json,
 * adapter_model.safetensors, and doppel.json when doppel_json is not NULL (a JSON text). */
int dp_lora_save_peft(const dp_lora *lora, const char *dir, const char *base_model,
                      const char *doppel_json);
/* Loads a PEFT adapter for a model of configuration mc. Checks every tensor's name and shape.
 * *doppel_json gets doppel.json's text (or NULL when the file is absent). */
int dp_lora_load_peft(const char *dir, const dp_model_config *mc, dp_lora **out,
                      char **doppel_json);

/* mkdir -p */
int dp_make_dirs(const char *dir);

#endif
