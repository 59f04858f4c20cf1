/* Next-token sampling: repetition penalty, temperature (0 = greedy), top-k, top-p, min-p, and
 * a seeded PRNG (PCG32), over logits whose rows beyond the tokenizer's size are never chosen. */
#ifndef DOPPEL_SAMPLER_H
#define DOPPEL_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* PCG32 (M. O'Neill, pcg-random.org, "pcg32_random_r"): 64-bit LCG state, XSH-RR output.
 * dp_pcg32_seed(rng, seed, seq) is pcg32_srandom_r(rng, initstate = seed, initseq = seq). */
typedef struct {
    uint64_t state, inc;
} dp_pcg32;
void dp_pcg32_seed(dp_pcg32 *rng, uint64_t seed, uint64_t seq);
uint32_t dp_pcg32_next(dp_pcg32 *rng);
/* Uniform in [0, 1): the top 24 bits of one output times 2^-24 (exact in a float). */
float dp_pcg32_uniform(dp_pcg32 *rng);

/* The sampler's stream: DP_SAMPLER_SEQ is the PCG32 stream selector used with --seed. */
#define DP_SAMPLER_SEQ 54u

typedef struct {
    float temperature;    /* 0 = greedy (argmax after the penalty) */
    int top_k;            /* keep the k most likely (0 = off) */
    float top_p;          /* keep the smallest head whose probability sum reaches p (1 = off) */
    float min_p;          /* drop tokens below min_p * p(most likely) (0 = off) */
    float repeat_penalty; /* > 1 discourages ids already in the history (1 = off) */
    int repeat_last_n;    /* how much history the penalty looks at (0 = all of it) */
    uint64_t seed;
} dp_sampler_params;

/* The defaults when neither the command line nor generation_config.json says otherwise. */
dp_sampler_params dp_sampler_defaults(void);

typedef struct {
    int32_t id;
    float p; /* logit while filtering, probability at the end */
} dp_candidate;

typedef struct {
    dp_sampler_params p;
    int V;       /* logits per row */
    int n_valid; /* ids >= n_valid (rows the tokenizer lacks) are never sampled */
    dp_pcg32 rng;
    dp_candidate *cand; /* (V) candidates: after dp_sampler_distribution, most likely first */
    uint8_t *seen;      /* (V) scratch: ids in the penalty window */
    int n_cand;
} dp_sampler;

/* n_valid <= V: the tokenizer's vocabulary size (pass V when all rows are real tokens). */
int dp_sampler_create(dp_sampler *s, const dp_sampler_params *p, int V, int n_valid);
void dp_sampler_free(dp_sampler *s);
/* Changes the parameters; re-seeds the PRNG only when the seed changed. */
void dp_sampler_set(dp_sampler *s, const dp_sampler_params *p);

/* Applies the whole pipeline to `logits` (V, modified in place: penalty then temperature) and
 * leaves the final candidates in s->cand (renormalized, sorted by probability, most
 * likely first, ties by lower id), s->n_cand of them. Order: repetition penalty (HF rule:
 * positive logits divided by the penalty, negative ones multiplied) → ids >= n_valid removed
 * → temperature → softmax → top-k → top-p → min-p → renormalize. With temperature 0 the single
 * candidate is the argmax (lowest id on ties). */
void dp_sampler_distribution(dp_sampler *s, float *logits, const int32_t *history, int n_history);

/* dp_sampler_distribution, then one draw: u = dp_pcg32_uniform(); the first candidate whose
 * cumulative probability exceeds u (the last candidate if rounding leaves none). */
int32_t dp_sampler_sample(dp_sampler *s, float *logits, const int32_t *history, int n_history);

/* The k most likely ids of softmax(logits[0..n_valid)) at temperature 1, for /probs. */
int dp_top_probs(const float *logits, int n_valid, int k, int32_t *ids, float *probs);

#ifdef __cplusplus
}
#endif
#endif
