/* The forward pass over a loaded dp_model on the CPU: prefill and single-token decode through a
 * per-layer KV cache, logits for the last position or for every position; and one step of
 * several sequences at once, each with its own KV cache (continuous batching). The blocks are
 * infer/block.c's, the ones the training step runs too. */
#ifndef DOPPEL_FORWARD_H
#define DOPPEL_FORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "infer/batch.h"
#include "infer/block.h"
#include "infer/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Called after each base linear of block `layer` with its input (N, in) and output (N, out);
 * it may add to `out` (a LoRA adapter adds B A x * scale there). Returns 0 or -1 (dp_fail). */
typedef int (*dp_linear_hook)(void *ctx, int layer, dp_linear_id id, float *out, const float *inp,
                              int N, int in, int out_features);

/* One sequence's KV cache: k and v, each (L, max_T, KVH, D); T positions held. */
typedef struct {
    float *k, *v;
    int max_T, T;
} dp_kv;

/* A cache for up to max_T positions of model m (one allocation). Returns 0 or -1 (dp_fail). */
int dp_kv_create(dp_kv *kv, const dp_model *m, int max_T);
void dp_kv_free(dp_kv *kv);

/* A forward-pass context: the model (borrowed), its KV cache and activation buffers.
 * Each category is one allocation carved by a table of sizes (see dp_forward_memory). */
typedef struct dp_forward {
    const dp_model *model;
    int max_T; /* context capacity (positions the KV cache holds) */
    int chunk; /* rows per internal forward step; longer inputs are processed in chunks */
    int T;     /* positions currently in the cache */
    float *kv; /* the KV cache block: k then v, each (L, max_T, KVH, D) */
    float *k_cache, *v_cache;
    float *act;                 /* the activation block, carved below */
    float *x;                   /* (chunk, C) residual stream */
    float *xn;                  /* (chunk, C) normalized input of a sub-block */
    float *q;                   /* (chunk, H, D) */
    float *k, *v;               /* (chunk, KVH, D) */
    float *att;                 /* (chunk, H, D) attention output */
    float *proj;                /* (chunk, C) o_proj / down_proj output */
    float *gate, *up;           /* (chunk, F) */
    float *logits;              /* (V) last-position logits */
    float *inv_freq;            /* (D/2) */
    int32_t *pos;               /* (chunk) */
    dp_block_acts acts;         /* the buffers above as the block sees them (one set, reused) */
    size_t kv_bytes, act_bytes; /* the two allocations, for the start-up line */
    int blas_threads;           /* OpenBLAS threads before create, restored by free */
    dp_linear_hook hook;        /* adapter hook or NULL */
    void *hook_ctx;
} dp_forward;

/* Creates a context for up to max_T positions (<= 0: the model's max_position), processing at
 * most `chunk` rows per step (<= 0: 256). Returns 0 or -1 with dp_fail. */
int dp_forward_create(dp_forward *f, const dp_model *m, int max_T, int chunk);
void dp_forward_free(dp_forward *f);

/* Forgets cached positions beyond T (0 = empty cache); T <= f->T. */
void dp_forward_truncate(dp_forward *f, int T);

/* Appends N tokens at positions [f->T, f->T + N) (a prefill when N > 1, a decode step when
 * N == 1). Logits: when `all_logits` is non-NULL it receives (N, V), one row per position;
 * f->logits always holds the last position's (V) afterwards. Fails (nothing appended) when
 * the cache would overflow max_T or a token id is outside [0, V). */
int dp_forward_tokens(dp_forward *f, const int32_t *tokens, int N, float *all_logits);

/* One step of b->nseq independent sequences packed as b's rows (at most `chunk` in all):
 * sequence s appends its rows [cu_seqlens[s], cu_seqlens[s+1]) (at least one) after the
 * kv[s]->T positions of its own cache, at positions kv[s]->T, kv[s]->T + 1, ... (b->pos must
 * say so). A decode step of B conversations is B sequences of one row. logits: (N, V), one row
 * per row, when every_row; else (nseq, V), each sequence's last row. b->targets is ignored.
 * The result equals one dp_forward_tokens-like step per sequence (up to summation order). Fails
 * with nothing appended on a bad batch or a full cache. The caches are distinct, each created
 * for f's model; f's own cache (dp_forward_tokens') is not used. */
int dp_forward_batch(dp_forward *f, dp_kv *const *kv, const dp_batch *b, float *logits,
                     bool every_row);

/* f's own KV cache as the view dp_forward_batch takes (T = the positions f holds), so a
 * decode step can advance several contexts' caches together; after the step, hand the view
 * back with dp_forward_cache_sync. */
dp_kv dp_forward_cache(const dp_forward *f);
/* Takes the positions a dp_forward_batch step appended to f's view (kv from dp_forward_cache(f),
 * kv->T in [f->T, f->max_T]) as f's own. Returns 0, or -1 (dp_fail) for another cache's view. */
int dp_forward_cache_sync(dp_forward *f, const dp_kv *kv);

/* Installs (or removes, with NULL) the adapter hook applied after every block linear. */
void dp_forward_set_hook(dp_forward *f, dp_linear_hook hook, void *ctx);

/* y (N, out) = x (N, in) W^T + b for a dp_linear of either storage (fp32 or NF4); a single row
 * goes through the linear's Q8 copy when it has one. */
int dp_linear_forward(float *y, const float *x, const dp_linear *lin, int N);

#ifdef __cplusplus
}
#endif
#endif
