/* The whole-model forward pass on a GPU backend (dp_gpu_ops: CUDA, or EMU on the CPU): weights
 * uploaded once, prefill and decode through a device KV cache, fp32 or bf16 activations. Its
 * device memory is one allocation per category, sized by dp_gpu_forward_plan. */
#ifndef DOPPEL_FORWARD_GPU_H
#define DOPPEL_FORWARD_GPU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "infer/model.h"
#include "infer/adapter.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    DP_GF_WEIGHTS_NF4,   /* NF4 codes, absmax codes, absmax scales of the NF4 linears; maps */
    DP_GF_WEIGHTS_DENSE, /* embedding, dense linears (activation dtype); norms, biases (fp32) */
    DP_GF_KV_CACHE,      /* k and v, each (slots, L, max_T, KVH, D), activation dtype */
    DP_GF_ACTIVATIONS,   /* one chunk's buffers, logits (chunk, V) fp32, positions, tokens */
    DP_GF_DEQUANT,       /* scratch for the largest NF4 matrix dequantized */
    DP_GF_LORA,          /* LoRA A and B of every adapter's adapted modules, fp32 */
    DP_GF_N_CATEGORIES
} dp_gf_category;

extern const char *const dp_gf_category_names[DP_GF_N_CATEGORIES];

/* The allocation table of a run: bytes per category (each a multiple of 256). */
typedef struct {
    uint64_t bytes[DP_GF_N_CATEGORIES];
    uint64_t total;
} dp_gf_plan;

/* The table for model `m` (its storage: NF4 or fp32 per linear), max_T positions, chunks of
 * `chunk` rows, activations in bf16 or fp32. Returns 0 or -1 (bad shape). */
int dp_gpu_forward_plan(dp_gf_plan *plan, const dp_model *m, const dp_lora *lora, int max_T,
                        int chunk, bool bf16);
/* The same for dp_gpu_forward_create_slots: every slot's cache and every adapter's A and B. */
int dp_gpu_forward_plan_slots(dp_gf_plan *plan, const dp_model *m, const dp_lora *const *adapters,
                              int n_adapters, int slots, int max_T, int chunk, bool bf16);

/* The run's state (weights, cache, buffers): opaque, so that this header does not need the
 * backend table's header (its dp_act_dtype clashes with infer/dtype.h's). */
typedef struct dp_gpu_forward dp_gpu_forward;
struct dp_gpu_ops; /* kernels/cuda/kernels.h: dp_cuda_ops or dp_emu_ops */

/* Uploads the weights (and the LoRA adapter when lora is not NULL: applied unmerged, y +=
 * scale * (x A^T) B^T after each adapted linear, as dp_lora_hook does on the CPU) and allocates the
 * cache for max_T positions (<= 0: 2048), chunks of `chunk` rows (<= 0: 256). Returns 0 or -1 with
 * dp_fail (nothing left allocated). */
int dp_gpu_forward_create(dp_gpu_forward **g, const struct dp_gpu_ops *ops, const dp_model *m,
                          const dp_lora *lora, int max_T, int chunk, bool bf16);
/* doppel serve: `slots` sequences over one upload of the weights, each with its own KV cache of
 * max_T positions, and n_adapters adapters (an entry may be NULL: the base model), any sequence
 * through any of them. dp_gpu_forward_create is the case of one slot and one adapter; the
 * functions below without a slot act on slot 0 through adapter 0 (the base when n_adapters is
 * 0). The adapters are borrowed until dp_gpu_forward_free. */
int dp_gpu_forward_create_slots(dp_gpu_forward **g, const struct dp_gpu_ops *ops, const dp_model *m,
                                const dp_lora *const *adapters, int n_adapters, int slots,
                                int max_T, int chunk, bool bf16);
void dp_gpu_forward_free(dp_gpu_forward *g);

/* Positions in the cache of sequence `slot` (-1 with dp_fail for a bad slot). */
int dp_gpu_forward_slot_positions(const dp_gpu_forward *g, int slot);
/* Forgets the positions of sequence `slot` from T on; the other sequences keep theirs. */
void dp_gpu_forward_slot_truncate(dp_gpu_forward *g, int slot, int T);
/* As dp_gpu_forward_tokens, on sequence `slot` through adapter `adapter` (-1: the base); the last
 * position's logits (V, host fp32) into `logits` when not NULL. Nothing appended on failure. */
int dp_gpu_forward_slot_tokens(dp_gpu_forward *g, int slot, int adapter, const int32_t *tokens,
                               int N, float *logits);
/* One batched decode step: row i appends tokens[i] at the next position of sequence slots[i]
 * (distinct slots) through adapter adapters[i] (-1: the base); logits (n, V) host fp32 in row
 * order. Rows of one adapter need not be adjacent. n <= the chunk. Nothing appended on failure
 * (a row whose cache is full fails the step with a message naming the slot). */
int dp_gpu_forward_decode(dp_gpu_forward *g, int n, const int *slots, const int *adapters,
                          const int32_t *tokens, float *logits);

/* As dp_forward_tokens: appends N tokens; all_logits (host, (N, V)) or NULL; dp_gpu_forward_logits
 * holds the last position's afterwards. Nothing appended on failure. */
int dp_gpu_forward_tokens(dp_gpu_forward *g, const int32_t *tokens, int N, float *all_logits);

/* Appends N tokens and sums the cross-entropy of each row's logits against targets (-1: row not
 * counted), one chunk of logits at a time on the device (never (N, V) at once), as
 * dp_model_loss does on the CPU: *loss_sum over the counted rows, *ntrained of them. */
int dp_gpu_forward_loss(dp_gpu_forward *g, const int32_t *tokens, const int32_t *targets, int N,
                        double *loss_sum, int64_t *ntrained);

const float *dp_gpu_forward_logits(const dp_gpu_forward *g); /* (V) last position, host */
int dp_gpu_forward_positions(const dp_gpu_forward *g);       /* positions in the cache */
int dp_gpu_forward_capacity(const dp_gpu_forward *g);        /* max_T */
/* Forgets the positions from T on (the next tokens overwrite them), as dp_forward_truncate. */
void dp_gpu_forward_truncate(dp_gpu_forward *g, int T);
const dp_gf_plan *dp_gpu_forward_table(const dp_gpu_forward *g);

#ifdef __cplusplus
}
#endif
#endif
