/* AdamW over the flat LoRA buffer with global grad-norm clipping (torch.optim.AdamW +
 * torch.nn.utils.clip_grad_norm_ semantics). */
#ifndef DOPPEL_OPTIM_H
#define DOPPEL_OPTIM_H

#include "train/lora.h"

typedef struct {
    float beta1, beta2, eps, weight_decay;
    float max_grad_norm; /* <= 0: no clipping */
} dp_adamw_config;

/* One update of lora->params from lora->grads with moments m, v (n each); t is the 1-based
 * step count. Returns the global grad norm before clipping. Does not clear the gradients. */
double dp_adamw_step(dp_lora *lora, float *m, float *v, const dp_adamw_config *c, double lr,
                     long t);

#endif
