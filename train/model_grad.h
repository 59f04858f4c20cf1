/* The LoRA-augmented training forward and backward of the whole model on the CPU: gradients
 * of the masked mean cross-entropy with respect to the LoRA parameters only; the frozen base
 * (fp32 or NF4) is used through forward and transposed GEMMs and never gets a gradient. */
#ifndef DOPPEL_MODEL_GRAD_H
#define DOPPEL_MODEL_GRAD_H

#include <stdbool.h>
#include <stdint.h>

#include "infer/batch.h"
#include "infer/model.h"
#include "train/lora.h"


typedef struct dp_grad_ws dp_grad_ws;

/* Workspace for micro-batches of up to max_tokens rows. recompute: per-layer recomputation
 * (gradient checkpointing); otherwise every layer's activations are kept. ce_chunk: rows of
 * logits materialized at once (0 = default 128). */
dp_grad_ws *dp_grad_ws_create(const dp_model *model, const dp_lora *lora, int max_tokens,
                              bool recompute, int ce_chunk);
void dp_grad_ws_free(dp_grad_ws *ws);
/* Compute dtype of the frozen NF4 base's products: bf16 (AVX512_BF16 vdpbf16ps, fp32 sums and
 * outputs, kernels/cpu/gemm_bf16.c) or fp32 (OpenBLAS). LoRA, norms, attention, the head and
 * the optimizer stay fp32. Call before the first step (re-carves the workspace). On a CPU
 * without AVX512_BF16 the workspace stays fp32: dp_grad_ws_bf16 says which runs. Training steps
 * only: dp_model_loss and dp_model_logits keep fp32 products, so validation losses are those
 * of `doppel eval`. */
int dp_grad_ws_set_bf16(dp_grad_ws *ws, const dp_model *model, bool bf16);
bool dp_grad_ws_bf16(const dp_grad_ws *ws);
/* NEFTune (kernels/ops.h neftune_forward): alpha > 0 adds uniform noise of scale
 * alpha / sqrt(L * C) to the input embeddings of every dp_model_grad call with a non-zero seed
 * (keyed by that seed); validation and logits never see it. 0 (the default) turns it off. */
void dp_grad_ws_set_neftune(dp_grad_ws *ws, float alpha);
/* The bytes dp_grad_ws_create (and dp_grad_ws_set_bf16 with bf16) would hold, without
 * allocating them: for choosing recomputation before a run. 0 on a bad request. */
size_t dp_grad_ws_plan_bytes(const dp_model *model, const dp_lora *lora, int max_tokens,
                             bool recompute, int ce_chunk, bool bf16);
/* Bytes the workspace holds (activations and scratch), for the memory report. */
size_t dp_grad_ws_bytes(const dp_grad_ws *ws);
/* Seconds spent per phase by dp_model_grad since the workspace was created (the benchmark's
 * profile). The phases overlap recompute, which is the re-run layer forwards in total; total
 * is the whole of dp_model_grad, so total - the rest is norms, RoPE, SwiGLU and residuals. */
typedef struct {
    double dequant, base_fwd, base_bwd, lora_fwd, lora_bwd, att_fwd, att_bwd, head, recompute,
        total;
} dp_grad_times;
void dp_grad_ws_times(const dp_grad_ws *ws, dp_grad_times *t);

/* Forward + backward of one micro-batch. LoRA gradients ACCUMULATE into lora->grads, for the
 * loss sum(CE over trained rows) * dloss (dloss = 1 / trained rows of the whole optimizer step).
 * dropout_seed keys the dropout masks (same seed -> same masks; ignored when dropout is 0) and
 * NEFTune's noise (dp_grad_ws_set_neftune).
 * *loss_sum gets the sum of the per-row losses, *ntrained the trained rows. */
int dp_model_grad(dp_grad_ws *ws, const dp_model *model, dp_lora *lora, const dp_batch *b,
                  float dloss, uint64_t dropout_seed, double *loss_sum, int64_t *ntrained);
/* Forward only (no dropout): the same sums, for validation. lora may be NULL (base model). */
int dp_model_loss(dp_grad_ws *ws, const dp_model *model, const dp_lora *lora, const dp_batch *b,
                  double *loss_sum, int64_t *ntrained);
/* Forward only, full logits (N, V) for every row (tests and the PEFT comparison). */
int dp_model_logits(dp_grad_ws *ws, const dp_model *model, const dp_lora *lora, const dp_batch *b,
                    float *logits);

#endif
