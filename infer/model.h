/* The model at run time: configuration, weights (fp32 or NF4), and their loading.
 * Shared by the loaders (safetensors, GGUF), the forward pass, training and merge. */
#ifndef DOPPEL_MODEL_H
#define DOPPEL_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/nf4.h"
#include "kernels/ops.h"
#include "kernels/q8.h"

typedef enum { DP_ARCH_LLAMA, DP_ARCH_QWEN2, DP_ARCH_QWEN3 } dp_arch;

typedef struct {
    dp_arch arch;
    int L;      /* num_hidden_layers */
    int C;      /* hidden_size */
    int F;      /* intermediate_size */
    int H, KVH; /* num_attention_heads, num_key_value_heads */
    int D;      /* head_dim (explicit in Qwen3, else C / H) */
    int V;      /* vocab_size (rows of the embedding; may exceed the tokenizer's count) */
    int max_position;
    float rms_eps, rope_theta;
    dp_rope_scaling rope_scaling;
    bool tied_embeddings; /* lm_head shares the embedding matrix */
    bool qkv_bias;        /* Qwen2 */
    bool qk_norm;         /* Qwen3 */
    int bos_id;           /* -1 when none */
    int eos_ids[8];       /* the stop set (REFERENCE.md section 7) */
    int n_eos;
} dp_model_config;

/* A linear layer y = x W^T + b: W (out, in) either fp32 or NF4 (exactly one is set). */
typedef struct {
    int out, in;
    float *w;    /* (out, in) fp32, or NULL */
    dp_nf4 *nf4; /* NF4 + double quant, or NULL */
    float *bias; /* (out) or NULL */
    dp_q8 *q8;   /* optional compact copy of W for one-row products (decode), or NULL */
    bool i8;     /* decode products (a few rows, NF4 or the Q8 copy) round x to int8 */
} dp_linear;

/* The seven linear modules of a block, in PEFT's order of names. */
typedef enum { DP_Q, DP_K, DP_V, DP_O, DP_GATE, DP_UP, DP_DOWN, DP_N_LINEAR } dp_linear_id;
extern const char *const dp_linear_names[DP_N_LINEAR]; /* "q_proj", ... "down_proj" */

/* (out, in) of linear module `id` of a block: the shape of W, of LoRA B (out, r) and A (r, in). */
void dp_linear_shape(const dp_model_config *c, dp_linear_id id, int64_t *out, int64_t *in);

typedef struct {
    float *attn_norm;       /* (C) input_layernorm */
    float *ffn_norm;        /* (C) post_attention_layernorm */
    float *q_norm, *k_norm; /* (D) Qwen3 only */
    dp_linear lin[DP_N_LINEAR];
} dp_layer;

typedef struct dp_model {
    dp_model_config cfg;
    float *embed;      /* (V, C) */
    float *final_norm; /* (C) */
    dp_linear lm_head; /* (V, C); .w == embed when tied */
    dp_layer *layers;  /* (L) */
    char *source;      /* path it was loaded from */
    void *storage;     /* owned allocations / mappings, freed by dp_model_free */
} dp_model;

#endif
