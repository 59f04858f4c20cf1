/* A packed micro-batch of token rows (several sequences back to back, no padding) and its
 * validation, shared by the CPU and GPU forwards so both backends accept exactly the same
 * batches. */
#ifndef DOPPEL_BATCH_H
#define DOPPEL_BATCH_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    int N;                     /* rows (tokens) */
    int nseq;                  /* sequences */
    const int32_t *tokens;     /* (N) input ids */
    const int32_t *targets;    /* (N) the id to predict at each row, or -1 (not trained); NULL:
                                * no targets (logits only) */
    const int32_t *pos;        /* (N) position of each row inside its sequence */
    const int32_t *cu_seqlens; /* (nseq + 1) row offsets: 0, nondecreasing, N last */
} dp_batch;

/* 0, or -1 with a message (prefixed by `who`) naming the first bad row or offset: N in
 * [1, max_rows], cu_seqlens covering the rows in order, token ids in [0, V), positions >= 0,
 * targets -1 or in [0, V) — and present when need_targets. */
int dp_batch_check(const dp_batch *b, int V, int max_rows, bool need_targets, const char *who);

#endif
