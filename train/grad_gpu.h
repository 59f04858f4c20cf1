/* The QLoRA training step on a GPU backend (dp_gpu_ops: CUDA, or EMU on the CPU): forward and
 * backward of the whole model w.r.t. the LoRA parameters with per-layer recomputation, chunked
 * masked cross-entropy on the device, global grad norm, clipping and fused AdamW. Every device
 * buffer is carved from the training memory plan (train/memplan.h): one allocation per item. */
#ifndef DOPPEL_GRAD_GPU_H
#define DOPPEL_GRAD_GPU_H

#include <stdbool.h>
#include <stdint.h>

#include "infer/model.h"
#include "kernels/cuda/kernels.h"
#include "train/lora.h"
#include "train/memplan.h"
#include "train/model_grad.h"
#include "train/optim.h"

typedef struct dp_gpu_train dp_gpu_train;

/* The train shape of model m (its storage must match: NF4 block linears with blocksize 64
 * unless shape->base_dense, an NF4 lm_head only with shape->lm_head_nf4) and adapter lora
 * (rank and targets as in shape; dropout on only with shape->dropout): the plan for its config. */
dp_train_shape dp_gpu_train_shape(const dp_model *m, const dp_lora *lora, int max_rows, bool bf16,
                                  int ce_chunk);

/* Allocates every item of dp_memplan_build(m->cfg, shape) on the device, carves the buffers
 * (failing when they do not fill the items exactly), uploads the weights and lora's parameters;
 * gradients and moments start at zero. Micro-batches hold up to seq * micro_batch rows. */
int dp_gpu_train_create(dp_gpu_train **t, const dp_gpu_ops *ops, const dp_model *m,
                        const dp_lora *lora, const dp_train_shape *shape);
void dp_gpu_train_free(dp_gpu_train *t);
const dp_memplan *dp_gpu_train_plan(const dp_gpu_train *t);

/* Forward + backward of one micro-batch, as dp_model_grad: LoRA gradients ACCUMULATE (on the
 * device) for the loss sum(CE over trained rows) * dloss; dropout masks keyed by dropout_seed
 * (the same Philox draws as the CPU). *loss_sum, *ntrained as dp_model_grad. */
int dp_gpu_train_grad(dp_gpu_train *t, const dp_batch *b, float dloss, uint64_t dropout_seed,
                      double *loss_sum, int64_t *ntrained);
/* NEFTune noise on the embedded rows of dp_gpu_train_grad, as dp_grad_ws_set_neftune (the same
 * Philox draws as the CPU); 0 turns it off. */
void dp_gpu_train_set_neftune(dp_gpu_train *t, float alpha);
/* Forward only, no dropout, nothing accumulated: the same sums, for validation. */
int dp_gpu_train_loss(dp_gpu_train *t, const dp_batch *b, double *loss_sum, int64_t *ntrained);
/* One optimizer step, as dp_adamw_step: global grad norm (returned in *norm, before
 * clipping), clipping, fused AdamW with step count `step` (1-based); then zeroes the gradients. */
int dp_gpu_train_adamw(dp_gpu_train *t, const dp_adamw_config *c, double lr, long step,
                       double *norm);
int dp_gpu_train_zero_grads(dp_gpu_train *t);
/* The device gradients (n floats, the host dp_lora's layout): data-parallel training sums them
 * across ranks in place between the micro-batches and dp_gpu_train_adamw. */
float *dp_gpu_train_grads(dp_gpu_train *t);

/* Copies to the host (n floats each, lora->n; any may be NULL) / from it (resume). */
int dp_gpu_train_download(const dp_gpu_train *t, float *params, float *grads, float *m, float *v);
int dp_gpu_train_upload(dp_gpu_train *t, const float *params, const float *m, const float *v);

#endif
