/* LoRA adapters at run time (chat, serve, eval, merge and the training step all use them): the
 * parameters over the seven linear modules of every block in one flat buffer, the low-rank path
 * applied unmerged, PEFT adapters read from disk (adapter_config.json +
 * adapter_model.safetensors, REFERENCE.md section 4) and doppel.json's check of the base model.
 * Training's side (init, backward, writing adapters) is train/lora.h and train/adapter.h. */
#ifndef DOPPEL_INFER_ADAPTER_H
#define DOPPEL_INFER_ADAPTER_H

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

/* y (N, out) += scale * dropout(x) A^T B^T for one module; x (N, in). keep: (N, in) dropout
 * multipliers (0 or 1/(1-p)) or NULL for none. xa: (N, r) scratch that keeps x_d A^T for the
 * backward pass; xd: (N, in) scratch for the dropped input (only used when keep != NULL). */
void dp_lora_forward(float *y, const float *x, const dp_lora_module *m, int r, float scale,
                     const float *keep, float *xa, float *xd, int N);

/* Inference with the adapter unmerged: the signature of infer/forward.h's dp_linear_hook, so
 * `dp_forward_set_hook(&f, dp_lora_hook, lora)` applies it: out (N, out_features) +=
 * scale * (inp A^T) B^T for an adapted module (no dropout). Thread-unsafe (a scratch buffer
 * inside lora grows to N * r). */
int dp_lora_hook(void *lora, int layer, dp_linear_id id, float *out, const float *inp, int N,
                 int in, int out_features);

/* Several adapters over one packed batch (serve's batched decode, where each conversation may
 * speak as another persona): rows [cu_seqlens[s], cu_seqlens[s+1]) go through lora[s], or the
 * base alone where lora[s] is NULL. dp_forward_set_hook(&f, dp_lora_rows_hook, &rows). */
typedef struct {
    dp_lora *const *lora;      /* (nseq) */
    const int32_t *cu_seqlens; /* (nseq + 1) */
    int nseq;
} dp_lora_rows;
int dp_lora_rows_hook(void *rows, int layer, dp_linear_id id, float *out, const float *inp, int N,
                      int in, int out_features);

/* The PEFT name of a module's lora_A (ab 'A') or lora_B ('B') weight, as PEFT saves it. */
void dp_lora_tensor_name(char *out, size_t cap, int layer, int m, char ab);

/* Loads a PEFT adapter for a model of configuration mc. Checks every tensor's name and shape.
 * *doppel_json gets doppel.json's text (or NULL when the file is absent). */
int dp_lora_load_peft(const char *dir, const dp_model_config *mc, dp_lora **out,
                      char **doppel_json);

/* A hash (data/base/hash.h) of the base model's configuration and of a sample of its weights
 * (every norm, eight embedding rows), independent of fp32/NF4 storage of the block linears. */
uint64_t dp_model_fingerprint(const dp_model *m);

/* Checks that doppel.json (text, from adapter dir `where`) was trained on a model like m:
 * same architecture and sizes, and the same fingerprint. -1 with a message naming both. */
int dp_adapter_check_base(const char *doppel_json, const char *where, const dp_model *m);

#endif
