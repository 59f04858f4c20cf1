/* Validation of packed micro-batches (see batch.h). */
#include "infer/batch.h"

#include "data/base/error.h"

int dp_batch_check(const dp_batch *b, int V, int max_rows, bool need_targets, const char *who) {
    if (b->N < 1 || b->N > max_rows)
        return dp_fail("%s: micro-batch of %d rows (the workspace holds 1 to %d)", who, b->N,
                       max_rows);
    if (!b->tokens || !b->pos || !b->cu_seqlens)
        return dp_fail("%s: micro-batch without tokens, positions or offsets", who);
    if (need_targets && !b->targets)
        return dp_fail("%s: micro-batch without targets (needed for the loss)", who);
    if (b->nseq < 1 || b->cu_seqlens[0] != 0 || b->cu_seqlens[b->nseq] != b->N)
        return dp_fail("%s: cu_seqlens do not cover the micro-batch's %d rows", who, b->N);
    for (int s = 0; s < b->nseq; s++)
        if (b->cu_seqlens[s + 1] < b->cu_seqlens[s])
            return dp_fail("%s: cu_seqlens decrease at sequence %d (%d after %d)", who, s,
                           b->cu_seqlens[s + 1], b->cu_seqlens[s]);
    for (int i = 0; i < b->N; i++) {
        if (b->tokens[i] < 0 || b->tokens[i] >= V)
            return dp_fail("%s: row %d: token id %d outside the vocabulary [0, %d)", who, i,
                           b->tokens[i], V);
        if (b->pos[i] < 0)
            return dp_fail("%s: row %d: negative position %d", who, i, b->pos[i]);
        if (b->targets && (b->targets[i] < -1 || b->targets[i] >= V))
            return dp_fail("%s: row %d: target id %d is neither -1 nor in [0, %d)", who, i,
                           b->targets[i], V);
    }
    return 0;
}
