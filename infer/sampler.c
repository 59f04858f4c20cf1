/* Next-token sampling (see sampler.h for the exact order of the steps) and the PCG32 PRNG. */
#include "infer/sampler.h"

#include "data/base/error.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* ---- PCG32: the reference algorithm of pcg_basic.c */
uint32_t dp_pcg32_next(dp_pcg32 *rng) {
    uint64_t old = rng->state;
    rng->state = old * 6364136223846793005ULL + rng->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31));
}

void dp_pcg32_seed(dp_pcg32 *rng, uint64_t seed, uint64_t seq) {
    rng->state = 0U;
    rng->inc = (seq << 1u) | 1u;
    dp_pcg32_next(rng);
    rng->state += seed;
    dp_pcg32_next(rng);
}

float dp_pcg32_uniform(dp_pcg32 *rng) {
    return (float)(dp_pcg32_next(rng) >> 8) * 0x1p-24f;
}

/* ---- sampler */
dp_sampler_params dp_sampler_defaults(void) {
    return (dp_sampler_params){.temperature = 0.7f,
                               .top_k = 40,
                               .top_p = 0.9f,
                               .min_p = 0.05f,
                               .repeat_penalty = 1.1f,
                               .repeat_last_n = 64,
                               .seed = 0};
}

int dp_sampler_create(dp_sampler *s, const dp_sampler_params *p, int V, int n_valid) {
    memset(s, 0, sizeof *s);
    if (V <= 0 || n_valid <= 0 || n_valid > V)
        return dp_fail("sampler: bad vocabulary (%d logits, %d valid ids)", V, n_valid);
    s->V = V;
    s->n_valid = n_valid;
    s->cand = dp_malloc((size_t)V * sizeof *s->cand);
    s->seen = dp_calloc((size_t)V, 1);
    if (!s->cand || !s->seen) {
        dp_sampler_free(s);
        return -1;
    }
    s->p = *p;
    dp_pcg32_seed(&s->rng, p->seed, DP_SAMPLER_SEQ);
    return 0;
}

void dp_sampler_free(dp_sampler *s) {
    free(s->cand);
    free(s->seen);
    memset(s, 0, sizeof *s);
}

void dp_sampler_set(dp_sampler *s, const dp_sampler_params *p) {
    if (p->seed != s->p.seed) dp_pcg32_seed(&s->rng, p->seed, DP_SAMPLER_SEQ);
    s->p = *p;
}

/* descending by value, ties by lower id: a total order, so the result is deterministic */
static inline bool cand_before(dp_candidate x, dp_candidate y) {
    return x.p > y.p || (x.p == y.p && x.id < y.id);
}

static int cand_cmp(const void *a, const void *b) {
    const dp_candidate *x = a, *y = b;
    return cand_before(*x, *y) ? -1 : cand_before(*y, *x) ? 1 : 0;
}

/* heap of the k best so far, the worst of them at the root: sift the root down */
static void heap_sift(dp_candidate *h, int k, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < k && cand_before(h[w], h[l])) w = l;
        if (r < k && cand_before(h[w], h[r])) w = r;
        if (w == i) return;
        dp_candidate t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* The k best ids of logits[0, n) (cand_cmp's order) into cand[0, k), sorted. One pass with a
 * k-heap: after the first few thousand ids almost every logit loses to the heap's worst at one
 * comparison, so this costs about a pass over the vocabulary instead of sorting all of it
 * (a full qsort of 49k candidates was most of a serve step's sampling time). Ids come in
 * increasing order, so a later id that ties the worst never wins: `logit > worst` alone decides,
 * and only winners are written (a serve step samples every row on one thread). */
static void select_top(dp_candidate *cand, const float *logits, int n, int k) {
    for (int i = 0; i < k; i++) cand[i] = (dp_candidate){i, logits[i]};
    for (int i = k / 2 - 1; i >= 0; i--) heap_sift(cand, k, i);
    float worst = cand[0].p;
    for (int i = k; i < n; i++)
        if (logits[i] > worst) {
            cand[0] = (dp_candidate){i, logits[i]};
            heap_sift(cand, k, 0);
            worst = cand[0].p;
        }
    qsort(cand, (size_t)k, sizeof *cand, cand_cmp);
}

/* the largest logit of cand[0, n) (NaNs ignored; -inf when there is no number) */
static float max_logit(const dp_candidate *cand, int n) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (cand[i].p > mx) mx = cand[i].p;
    return mx;
}

static void apply_penalty(dp_sampler *s, float *logits, const int32_t *history, int n) {
    float pen = s->p.repeat_penalty;
    if (!(pen > 0) || pen == 1.0f || !history || n <= 0) return;
    int start = s->p.repeat_last_n > 0 && n > s->p.repeat_last_n ? n - s->p.repeat_last_n : 0;
    for (int i = start; i < n; i++) {
        int32_t id = history[i];
        if (id < 0 || id >= s->V || s->seen[id]) continue;
        s->seen[id] = 1; /* each id penalized once, however often it occurs */
        logits[id] = logits[id] > 0 ? logits[id] / pen : logits[id] * pen;
    }
    for (int i = start; i < n; i++)
        if (history[i] >= 0 && history[i] < s->V) s->seen[history[i]] = 0;
}

void dp_sampler_distribution(dp_sampler *s, float *logits, const int32_t *history, int n_history) {
    apply_penalty(s, logits, history, n_history);
    const int n = s->n_valid;
    if (!(s->p.temperature > 0)) { /* greedy */
        int best = 0;
        for (int i = 1; i < n; i++)
            if (logits[i] > logits[best]) best = i;
        s->cand[0] = (dp_candidate){best, 1.0f};
        s->n_cand = 1;
        return;
    }
    float inv_t = 1.0f / s->p.temperature;
    for (int i = 0; i < n; i++) logits[i] *= inv_t;
    /* the head the softmax runs over, sorted: the top k when top-k is on (selected, then only
     * they sorted: the same head a full sort gives), else every id. Without top-k the ids that
     * min-p will drop anyway need no order: their exp() still counts in the sum (taken first,
     * so the sum's order differs from a full sort's by rounding only) */
    int m = n;
    double rest = 0; /* exp(logit - max) of the softmax head's ids outside cand[0, m) */
    if (s->p.top_k > 0 && s->p.top_k < n) {
        m = s->p.top_k;
        select_top(s->cand, logits, n, m);
    } else {
        for (int i = 0; i < n; i++) s->cand[i] = (dp_candidate){i, logits[i]};
        float mx = max_logit(s->cand, n);
        if (s->p.min_p > 0 && s->p.min_p <= 1 && isfinite(mx)) {
            /* kept by min-p needs p_i >= min_p * p_max, i.e. logit_i >= max + log(min_p): the
             * margin keeps every id that rounding could let through */
            float floor_logit = mx + logf(s->p.min_p) - 1e-3f;
            int kept = 0;
            for (int i = 0; i < n; i++) {
                dp_candidate c = s->cand[i];
                if (!(c.p < floor_logit)) s->cand[kept++] = c; /* NaN kept, as a full sort would */
                else rest += expf(c.p - mx);
            }
            m = kept; /* >= 1: the max is kept */
        }
        qsort(s->cand, (size_t)m, sizeof *s->cand, cand_cmp);
    }

    /* softmax over the kept head (sorted, so cand[0] holds the max) */
    float mx = s->cand[0].p;
    double sum = rest;
    for (int i = 0; i < m; i++) {
        float e = expf(s->cand[i].p - mx);
        s->cand[i].p = e;
        sum += e;
    }
    for (int i = 0; i < m; i++) s->cand[i].p = (float)(s->cand[i].p / sum);

    if (s->p.top_p > 0 && s->p.top_p < 1) {
        double cum = 0;
        int keep = m;
        for (int i = 0; i < m; i++) {
            cum += s->cand[i].p;
            if (cum >= s->p.top_p) {
                keep = i + 1;
                break;
            }
        }
        m = keep;
    }
    if (s->p.min_p > 0) {
        float thr = s->p.min_p * s->cand[0].p;
        int keep = 1;
        while (keep < m && s->cand[keep].p >= thr) keep++;
        m = keep;
    }
    sum = 0;
    for (int i = 0; i < m; i++) sum += s->cand[i].p;
    for (int i = 0; i < m; i++) s->cand[i].p = (float)(s->cand[i].p / sum);
    s->n_cand = m;
}

int32_t dp_sampler_sample(dp_sampler *s, float *logits, const int32_t *history, int n_history) {
    dp_sampler_distribution(s, logits, history, n_history);
    if (s->n_cand == 1) return s->cand[0].id;
    float u = dp_pcg32_uniform(&s->rng);
    double cum = 0;
    for (int i = 0; i < s->n_cand; i++) {
        cum += s->cand[i].p;
        if (u < cum) return s->cand[i].id;
    }
    return s->cand[s->n_cand - 1].id;
}

int dp_top_probs(const float *logits, int n_valid, int k, int32_t *ids, float *probs) {
    if (k > n_valid) k = n_valid;
    float mx = logits[0];
    for (int i = 1; i < n_valid; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (int i = 0; i < n_valid; i++) sum += exp((double)logits[i] - mx);
    /* insertion into a k-long sorted list: k is small (5) */
    int have = 0;
    for (int i = 0; i < n_valid; i++) {
        float v = logits[i];
        if (have == k && !(v > logits[ids[k - 1]])) continue;
        int j = have < k ? have++ : k - 1;
        while (j > 0 && logits[ids[j - 1]] < v) {
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = i;
    }
    for (int i = 0; i < have; i++) probs[i] = (float)(exp((double)logits[ids[i]] - mx) / sum);
    return have;
}
