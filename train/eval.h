/* doppel eval's model side: held-out loss and perplexity on the persona's tokens (the training
 * masking, through the training loss dp_model_loss: no second forward) with a bootstrap
 * interval, replies generated to held-out contexts with chat's sampler, and the export's
 * messages outside the validation sessions for the authorship classifier (infer/eval_text.h).
 * It lives in train/ because it scores with the training loss and token cache. */
#ifndef DOPPEL_EVAL_H
#define DOPPEL_EVAL_H

#include <stdbool.h>
#include <stdint.h>

#include "data/chat_format.h"
#include "data/dataset.h"
#include "data/tokenizer.h"
#include "infer/model.h"
#include "infer/sampler.h"
#include "train/batches.h"
#include "train/lora.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- loss */


typedef struct {
    double loss;                /* mean cross-entropy (nats) per trained token */
    double loss_lo, loss_hi;    /* 95% bootstrap interval (percentiles), resampling sequences */
    double ppl, ppl_lo, ppl_hi; /* exp of the three */
    int64_t tokens, seqs;
} dp_eval_loss_result;

/* Loss of base + lora (NULL: the base alone) over every sequence of d, one sequence per
 * forward so each sequence's sum is known; n_boot resamples (0: no interval) from seed. */
int dp_eval_heldout_loss(const dp_model *model, const dp_lora *lora, const dp_token_data *d,
                         int n_boot, uint64_t seed, dp_eval_loss_result *out);
/* The interval alone, from per-sequence loss sums and trained-token counts (testable by hand):
 * the mean of resample b is sum(loss[i]) / sum(tokens[i]) over n indices drawn with
 * replacement; lo/hi are its 2.5th and 97.5th percentiles (nearest rank). */
int dp_eval_bootstrap(const double *loss_sum, const int64_t *tokens, size_t n, int n_boot,
                      uint64_t seed, double *lo, double *hi);

/* ---------------------------------------------------------------- held-out contexts */

/* A validation set as contexts and real replies: for each conversation, the messages before
 * its last assistant turn (the context) and that turn (the persona's real reply). Also every
 * line other people wrote in it (without its "[Name]: " prefix), to measure the classifier. */
typedef struct {
    dp_conversation *ctx; /* (n) contexts; their strings are owned */
    char **real;          /* (n) the persona's real replies */
    char **others;        /* (n_others) other people's lines */
    size_t n, n_others;
} dp_eval_set;
int dp_eval_set_load(const char *path, dp_eval_set *out);
void dp_eval_set_free(dp_eval_set *s);

typedef struct {
    int max_tokens; /* per reply */
    int max_context;
    dp_sampler_params sampling; /* chat's defaults; .seed + i seeds context i */
    const char *system;         /* system prompt for every context, or NULL */
} dp_eval_gen_opts;

/* Replies of base + lora (NULL: the base) to the first n contexts of set on the CPU, text and
 * whether each ended by itself (a stop token) before max_tokens. texts[i] are malloc'd. */
int dp_eval_generate(const dp_model *model, const dp_lora *lora, dp_tokenizer *tok,
                     dp_chat_format fmt, const dp_eval_set *set, size_t n,
                     const dp_eval_gen_opts *o, char **texts, unsigned char *ended);

/* ---------------------------------------------------------------- the export */

/* The export's messages (trimmed; system messages and empty ones dropped) that appear in no
 * validation conversation, labelled by author: persona is a name or an author id, resolved to
 * every id that used it as prep does. A message is held out when its first line equals a line
 * of the validation set (a user line without its "[Name]: "), which may hold out a few
 * common short messages of the training sessions too, never the other way round. */
typedef struct {
    char **texts;
    unsigned char *is_persona;
    size_t n, n_persona, n_held_out;
} dp_eval_corpus;
int dp_eval_corpus_load(const char *export_path, const char *persona, const dp_eval_set *val,
                        dp_eval_corpus *out);
void dp_eval_corpus_free(dp_eval_corpus *c);

#ifdef __cplusplus
}
#endif
#endif
