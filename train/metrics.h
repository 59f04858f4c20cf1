/* Training metrics: one HDF5 file of appendable 1-D datasets (step, loss, val_loss, lr,
 * grad_norm, tokens_per_s, elapsed), one row per optimizer step; val_loss is NaN between
 * evaluations. h5py reads it directly (notebooks/training.ipynb). */
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
/* Rows in the file now. */
int64_t dp_metrics_rows(const dp_metrics *mt);
void dp_metrics_close(dp_metrics *mt);

#endif
