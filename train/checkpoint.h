/* Training checkpoints: one HDF5 file with the LoRA tensors, AdamW moments, step, RNG seed,
 * data cursor, early-stopping state and the full run configuration (JSON). Written to a
 * temporary name, fsync'd and renamed, so a crash at any moment leaves the previous file. */
#ifndef DOPPEL_CHECKPOINT_H
#define DOPPEL_CHECKPOINT_H

#include <stdint.h>

#include "train/lora.h"

typedef struct {
    int64_t step;             /* optimizer steps done */
    uint64_t seed;            /* the run's seed (init, shuffles and dropout derive from it) */
    int64_t epoch, cursor;    /* data position: next micro-batch of the epoch's order */
    double best_val;          /* best validation loss so far (NAN: none) */
    int64_t best_step;        /* step of best_val */
    int64_t evals_since_best; /* early-stopping counter */
    int64_t tokens_seen;      /* trained tokens so far */
    double elapsed;           /* training seconds so far */
} dp_train_state;

/* lora->params and m, v (lora->n each) with the state and the config JSON text. */
int dp_checkpoint_save(const char *path, const dp_lora *lora, const float *m, const float *v,
                       const dp_train_state *st, const char *config_json);
/* Reads only the run configuration (to rebuild the model and LoRA shapes before loading). */
int dp_checkpoint_read_config(const char *path, char **config_json);
/* Loads into an existing lora of the same shape (every size is checked) and m, v. */
int dp_checkpoint_load(const char *path, dp_lora *lora, float *m, float *v, dp_train_state *st);

#endif
