/* AdamW step with global grad-norm clipping (see optim.h). */
#include "train/optim.h"
#include "kernels/ops.h"

#include <math.h>

double dp_adamw_step(dp_lora *lora, float *m, float *v, const dp_adamw_config *c, double lr,
                     long t) {
    double norm = sqrt(sum_squares(lora->grads, lora->n));
    /* clip_grad_norm_: coefficient max / (norm + 1e-6), never above 1 */
    double scale = 1.0;
    if (c->max_grad_norm > 0) {
        scale = c->max_grad_norm / (norm + 1e-6);
        if (scale > 1.0) scale = 1.0;
    }
    adamw_update(lora->params, lora->grads, m, v, lora->n, (float)lr, c->beta1, c->beta2, c->eps,
                 c->weight_decay, (float)scale, (int)t);
    return norm;
}
