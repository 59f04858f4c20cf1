/* Training metrics: one HDF5 file of appendable 1-D datasets (step, loss, val_loss, lr,
 * grad_norm, tokens_per_s, elapsed), one row per optimizer step; val_loss is NaN between
 * evaluations; and the replies sampled at evaluations (sample_*). h5py reads it directly
 * (notebooks/training.ipynb). */
#ifndef DOPPEL_METRICS_H
#define DOPPEL_METRICS_H

#include <stdint.h>

typedef struct {
    int64_t step; /* 1-based optimizer step */
    double loss, val_loss, lr, grad_norm, tokens_per_s, elapsed;
} dp_metrics_row;

typedef struct dp_metrics dp_metrics;

/* Opens or creates the file. keep_until_step < 0 starts afresh; otherwise (resume) the rows
 * with step > keep_until_step are dropped, since the run repeats those steps. */
dp_metrics *dp_metrics_open(const char *path, int64_t keep_until_step);
int dp_metrics_append(dp_metrics *mt, const dp_metrics_row *row); /* flushes */
/* Replies generated at an evaluation (samples while training): one row per reply in the
 * datasets sample_step (int64), sample_context (int32: which fixed validation context) and
 * sample_text (variable-length UTF-8 strings). Flushes. */
int dp_metrics_append_samples(dp_metrics *mt, int64_t step, char *const *texts, int n);
/* Rows in the file now. */
int64_t dp_metrics_rows(const dp_metrics *mt);
void dp_metrics_close(dp_metrics *mt);

#endif
