/* The training loop: micro-batches with gradient accumulation, AdamW, LR schedule, validation,
 * best adapter, early stopping, checkpoints, resume, SIGINT/--stop-at, progress and metrics.
 * Output directory: adapter files (PEFT + doppel.json), best/ (lowest val loss),
 * checkpoint.h5, metrics.h5. */
#ifndef DOPPEL_TRAINER_H
#define DOPPEL_TRAINER_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "train/batches.h"
#include "train/lora.h"
#include "train/optim.h"
#include "train/schedule.h"

typedef struct {
    const dp_model *model;
    dp_lora *lora;              /* initialized by the caller; overwritten on resume */
    const dp_token_data *train; /* packed training sequences */
    const dp_token_data *val;   /* or NULL */
    int64_t batch_tokens;       /* rows per micro-batch (>= the longest sequence) */
    int grad_accum;             /* micro-batches per optimizer step */
    int epochs;                 /* used when max_steps <= 0 */
    long max_steps;             /* > 0: the run's length (and the schedule's) */
    uint64_t seed;
    dp_sched_kind sched;
    double lr, warmup_ratio;
    long warmup_steps; /* < 0: use warmup_ratio */
    dp_adamw_config adam;
    long eval_every;     /* 0: only before and after */
    long save_every;     /* 0: only at the end / on interrupt */
    long early_stop;     /* 0: off; else evaluations without improvement before stopping */
    long stop_at;        /* > 0: save a checkpoint at this step and end, as SIGINT does */
    bool recompute;      /* per-layer recomputation */
    bool cpu_bf16;       /* CPU: the NF4 base's products in bf16 (fp32 without AVX512_BF16) */
    int ce_chunk;        /* rows of logits at once (0: DP_CE_CHUNK_DEFAULT) */
    float neftune_alpha; /* > 0: NEFTune noise on the input embeddings of training steps */
    /* GPU backend (dp_cuda_ops or dp_emu_ops) for the gradients, the optimizer and validation,
     * or NULL for the CPU (the parameters and moments come back to the host each step, for the
     * adapter files and checkpoints) */
    const struct dp_gpu_ops *gpu;
    bool gpu_bf16; /* bf16 activations on the GPU (else fp32) */
    /* samples while training: at each validation, n_samples replies of the adapter to fixed
     * validation contexts, printed and stored in metrics.h5; sample(ctx, lora, texts) fills
     * texts[0..n_samples) with malloc'd strings (on the host model: a GPU run's parameters
     * are downloaded first). NULL: none. */
    int (*sample)(void *ctx, const dp_lora *lora, char **texts);
    void *sample_ctx;
    int n_samples;
    const char *out_dir;
    const char *config_json; /* the full run configuration, kept in checkpoints */
    const char *base_model;  /* adapter_config.json base_model_name_or_path */
    const char *doppel_json; /* doppel.json text written beside the adapter */
    bool resume;
    bool quiet;
    volatile sig_atomic_t *stop_flag; /* set asynchronously (SIGINT: 1, SIGTERM: 2) */
    /* data parallel (train/dist.h), or NULL for one process: each optimizer step's
     * grad_accum x world micro-batches are dealt round-robin to the ranks, the LoRA gradients
     * summed across them before the (identical) optimizer step; rank 0 alone writes files and
     * prints progress. */
    struct dp_dist *dist;
} dp_train_opts;

typedef struct {
    long total_steps, steps_done;
    double val_before, val_after, best_val; /* NAN when there is no validation data */
    long best_step;
    bool interrupted, early_stopped;
    double tokens_per_s;    /* over this process's steps */
    double peak_rss_mib;    /* of the process */
    size_t workspace_bytes; /* activations + scratch */
    int world;              /* ranks that trained */
    double bytes_reduced_per_step; /* gradient bytes each rank all-reduced per optimizer step */
} dp_train_result;

int dp_train(const dp_train_opts *o, dp_train_result *res);

/* Total optimizer steps for these options (the schedule's length). */
long dp_train_total_steps(const dp_train_opts *o);

/* Mean validation loss over every sequence of d (file order), or NAN on error. */
double dp_eval_loss(dp_grad_ws *ws, const dp_model *model, const dp_lora *lora,
                    const dp_token_data *d, int64_t batch_tokens);

/* The LR range test (Smith 2017; fastai's lr_find): `steps` optimizer steps of the run's data
 * and optimizer with the learning rate swept exponentially from lr_min to lr_max (no schedule),
 * on a throwaway copy of o->lora (its values are restored, fresh AdamW moments; nothing is read
 * from or written to o->out_dir). The loss is smoothed by an EMA (beta, bias-corrected); the
 * sweep stops when the smoothed loss exceeds diverge x its minimum, or the loss is not finite.
 * Suggested peak lr: the lr at the minimum of the smoothed loss / 10 (NAN when no step had a
 * loss). */
typedef struct {
    double lr_min, lr_max;
    long steps;
    double beta;    /* smoothing, e.g. 0.9 */
    double diverge; /* e.g. 4 */
} dp_lr_find_opts;

typedef struct {
    long n;                       /* steps taken */
    double *lr, *loss, *smoothed; /* (n) each; a diverged step's loss is +inf */
    long i_min;                   /* step of the smoothed minimum */
    double lr_at_min, suggested;
    bool diverged;
} dp_lr_find_result;

int dp_find_lr(const dp_train_opts *o, const dp_lr_find_opts *f, dp_lr_find_result *r);
void dp_lr_find_result_free(dp_lr_find_result *r);

#endif
