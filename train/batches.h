/* Training data as token ids: conversations rendered once (chat format + loss mask), truncated
 * from the left at message boundaries to fit the maximum length, stored in an HDF5 cache
 * (`tokens` int32, `loss_mask` uint8, `offsets` int64) keyed by dataset, tokenizer and length;
 * and the per-epoch shuffled packing of those sequences into micro-batches without padding. */
#ifndef DOPPEL_BATCHES_H
#define DOPPEL_BATCHES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "data/chat_format.h"
#include "data/dataset.h"
#include "train/model_grad.h"

typedef struct {
    int32_t *tokens;    /* (T) every sequence back to back */
    uint8_t *loss_mask; /* (T) 1 = the token is a training target */
    int64_t *offsets;   /* (nseq + 1) */
    int64_t nseq, T;
    int64_t n_read;      /* conversations read */
    int64_t n_truncated; /* shortened from the left to fit */
    int64_t n_skipped;   /* no trained token left, or the last reply alone is too long */
    int64_t n_trained;   /* tokens with loss_mask = 1 */
} dp_token_data;

/* Rendered messages of one conversation: ids and mask (n each). */
typedef struct {
    int32_t *ids;
    uint8_t *mask;
    size_t n, cap;
} dp_rendered;
int dp_rendered_push(dp_rendered *r, int32_t id, uint8_t mask);

/* Renders the conversation's leading system message (if any) followed by messages
 * [first, c->n) into out (cleared by the caller). Returns 0 or -1 with a message. */
typedef int (*dp_render_fn)(void *ctx, const dp_conversation *c, int first, dp_rendered *out);

/* The training rendering (dp_render_fn): the chat format with the loss mask on the assistant
 * turns, a leading system message kept when the conversation is cut from the left. train and
 * eval both render through it, so eval scores exactly the tokens training trained on. */
typedef struct {
    dp_tokenizer *tok; /* borrowed */
    dp_chat_format fmt;
    dp_chat_tokens ct;
    dp_chat_msg *tmp;
    int tmp_cap;
} dp_train_render_ctx;
int dp_train_render(void *ctx, const dp_conversation *c, int first, dp_rendered *out);
void dp_train_render_ctx_free(dp_train_render_ctx *x); /* its buffers; not the tokenizer */

/* Reads the JSONL dataset and renders every conversation, at most max_seq tokens each. */
int dp_token_data_build(const char *dataset, int max_seq, dp_render_fn render, void *ctx,
                        dp_token_data *out);
void dp_token_data_free(dp_token_data *d);

/* The cache file: <dir>/<basename>.tok-<key>.h5 with key = a hash (data/base/hash.h) of
 * (dataset, tokenizer, max_seq, format). dp_token_cache_load returns 1 when a valid cache with
 * that key was read, 0 when absent (or stale), -1 on a damaged file. */
void dp_token_cache_path(char *out, size_t cap, const char *dataset, uint64_t key);
int dp_token_cache_save(const char *path, uint64_t key, const dp_token_data *d);
int dp_token_cache_load(const char *path, uint64_t key, dp_token_data *d);

/* ------------------------------------------------------------------ packing */

/* Micro-batches of one epoch: sequences in a seeded shuffled order, packed greedily up to
 * batch_tokens rows each. Batch k spans order[start[k] .. start[k+1]). */
typedef struct {
    int64_t *order; /* (nseq) sequence indices */
    int64_t *start; /* (nbatches + 1) */
    int64_t nbatches;
} dp_epoch_plan;

/* shuffle = false keeps the file order (validation). */
int dp_epoch_plan_make(const dp_token_data *d, int64_t batch_tokens, uint64_t seed, int64_t epoch,
                       bool shuffle, dp_epoch_plan *plan);
void dp_epoch_plan_free(dp_epoch_plan *plan);

/* Buffers of one micro-batch in dp_batch form. */
typedef struct {
    dp_batch b;
    int32_t *tokens, *targets, *pos, *cu; /* (cap), (cap), (cap), (cap + 1) */
    int64_t cap;
    int64_t trained; /* rows with a target */
} dp_batch_buf;
int dp_batch_buf_init(dp_batch_buf *bb, int64_t cap);
void dp_batch_buf_free(dp_batch_buf *bb);
/* Fills bb with micro-batch k of the plan: target at row t is token t+1 when that token is
 * trained, else -1 (and -1 on each sequence's last row). */
int dp_batch_fill(dp_batch_buf *bb, const dp_token_data *d, const dp_epoch_plan *plan, int64_t k);

#endif
