/* The sampler: PCG32 against the published reference outputs, and every filter against
 * probabilities computed here from the formulas (in double, independently of the sampler). */
#include "check.h"
#include "infer/sampler.h"

#include <math.h>

static dp_sampler_params plain(float t) {
    return (dp_sampler_params){.temperature = t, .top_p = 1.0f, .repeat_penalty = 1.0f};
}

/* pcg32-demo (pcg-random.org, pcg_basic.c): pcg32_srandom_r(&rng, 42u, 54u) prints
 * 0xa15c02b7 0x7b47f409 0xba1d3330 0x83d2f293 0xbfa4784b 0xcbed606e */
static void test_pcg32(void) {
    static const uint32_t want[] = {0xa15c02b7u, 0x7b47f409u, 0xba1d3330u,
                                    0x83d2f293u, 0xbfa4784bu, 0xcbed606eu};
    dp_pcg32 r;
    dp_pcg32_seed(&r, 42u, 54u);
    for (int i = 0; i < 6; i++) CHECK_EQ_INT(want[i], dp_pcg32_next(&r));
    dp_pcg32_seed(&r, 42u, 54u);
    CHECK_NEAR((double)(0xa15c02b7u >> 8) / 16777216.0, dp_pcg32_uniform(&r), 0, 0);
}

static void test_greedy_and_vocab_limit(void) {
    dp_sampler s;
    dp_sampler_params p = plain(0);
    CHECK(dp_sampler_create(&s, &p, 5, 4) == 0);
    float l1[5] = {1, 3, 2, 3, 100}; /* row 4 is beyond the tokenizer: never chosen */
    CHECK_EQ_INT(1, dp_sampler_sample(&s, l1, NULL, 0)); /* tie 1/3: lower id */
    /* sampling at a high temperature over a peaked row 4 still never returns 4 */
    p = plain(5.0f);
    dp_sampler_set(&s, &p);
    int bad = 0;
    for (int i = 0; i < 2000; i++) {
        float l[5] = {0, 0, 0, 0, 50};
        if (dp_sampler_sample(&s, l, NULL, 0) >= 4) bad++;
    }
    CHECK_EQ_INT(0, bad);
    dp_sampler_free(&s);
}

static void test_repeat_penalty(void) {
    dp_sampler s;
    dp_sampler_params p = plain(0);
    p.repeat_penalty = 2.0f;
    CHECK(dp_sampler_create(&s, &p, 3, 3) == 0);
    float l[3] = {2, -1, 1.5f};
    int32_t hist[] = {0, 1, 1};
    /* 2/2 = 1 < 1.5, so greedy moves from id 0 to id 2; -1 becomes -2 (multiplied) */
    CHECK_EQ_INT(2, dp_sampler_sample(&s, l, hist, 3));
    CHECK_NEAR(1.0, l[0], 0, 0);
    CHECK_NEAR(-2.0, l[1], 0, 0); /* once, although 1 occurs twice */
    CHECK_NEAR(1.5, l[2], 0, 0);
    /* the window: only the last 1 entry counts */
    p.repeat_last_n = 1;
    dp_sampler_set(&s, &p);
    float l2[3] = {2, -1, 1.5f};
    CHECK_EQ_INT(0, dp_sampler_sample(&s, l2, hist, 3));
    CHECK_NEAR(2.0, l2[0], 0, 0);
    CHECK_NEAR(-2.0, l2[1], 0, 0);
    dp_sampler_free(&s);
}

/* softmax(l / t) over the listed ids, in double */
static void softmax_ref(const double *l, const int *ids, int n, double t, double *out) {
    double mx = -1e300, sum = 0;
    for (int i = 0; i < n; i++) mx = fmax(mx, l[ids[i]] / t);
    for (int i = 0; i < n; i++) sum += exp(l[ids[i]] / t - mx);
    for (int i = 0; i < n; i++) out[i] = exp(l[ids[i]] / t - mx) / sum;
}

static void expect_dist(dp_sampler *s, const int *ids, const double *probs, int n) {
    CHECK_EQ_INT(n, s->n_cand);
    for (int i = 0; i < n && i < s->n_cand; i++) {
        CHECK_EQ_INT(ids[i], s->cand[i].id);
        CHECK_NEAR(probs[i], s->cand[i].p, 1e-6, 1e-5);
    }
}

static void test_filters(void) {
    const double L[5] = {0.0, 1.0, 2.0, 3.0, -1.0};
    dp_sampler s;
    dp_sampler_params p = plain(0.5f);
    CHECK(dp_sampler_create(&s, &p, 5, 5) == 0);
    float l[5];

    /* temperature only: all five, ordered 3 2 1 0 4 */
    for (int i = 0; i < 5; i++) l[i] = (float)L[i];
    dp_sampler_distribution(&s, l, NULL, 0);
    int all[5] = {3, 2, 1, 0, 4};
    double pa[5];
    softmax_ref(L, all, 5, 0.5, pa);
    expect_dist(&s, all, pa, 5);

    /* top-k 3: softmax over the three largest */
    p.top_k = 3;
    dp_sampler_set(&s, &p);
    for (int i = 0; i < 5; i++) l[i] = (float)L[i];
    dp_sampler_distribution(&s, l, NULL, 0);
    double pk[3];
    softmax_ref(L, all, 3, 0.5, pk);
    expect_dist(&s, all, pk, 3);

    /* top-p and min-p over probabilities 0.5 0.3 0.15 0.05 (logits = their logs, t = 1) */
    const double P[4] = {0.5, 0.3, 0.15, 0.05};
    double LP[4];
    for (int i = 0; i < 4; i++) LP[i] = log(P[i]);
    dp_sampler s4;
    p = plain(1.0f);
    p.top_p = 0.75f; /* 0.5 < 0.75 <= 0.8: two kept, renormalized 0.625 / 0.375 */
    CHECK(dp_sampler_create(&s4, &p, 4, 4) == 0);
    float l4[4];
    for (int i = 0; i < 4; i++) l4[i] = (float)LP[i];
    dp_sampler_distribution(&s4, l4, NULL, 0);
    int ids2[2] = {0, 1};
    double p2[2] = {0.625, 0.375};
    expect_dist(&s4, ids2, p2, 2);

    /* one draw with seed 42: u = 0xa15c02 / 2^24 = 0.6303 > 0.625, so the second candidate */
    p.seed = 42;
    dp_sampler_set(&s4, &p);
    for (int i = 0; i < 4; i++) l4[i] = (float)LP[i];
    CHECK_EQ_INT(1, dp_sampler_sample(&s4, l4, NULL, 0));

    /* min-p 0.25: threshold 0.125 keeps 0.5 0.3 0.15, renormalized by 0.95 */
    p = plain(1.0f);
    p.min_p = 0.25f;
    dp_sampler_set(&s4, &p);
    for (int i = 0; i < 4; i++) l4[i] = (float)LP[i];
    dp_sampler_distribution(&s4, l4, NULL, 0);
    int ids3[3] = {0, 1, 2};
    double p3[3] = {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95};
    expect_dist(&s4, ids3, p3, 3);

    /* frequencies of 40000 draws from 0.5 0.3 0.15 0.05: each within 5 standard deviations */
    p = plain(1.0f);
    p.seed = 7;
    dp_sampler_set(&s4, &p);
    int counts[4] = {0};
    const int n = 40000;
    for (int k = 0; k < n; k++) {
        for (int i = 0; i < 4; i++) l4[i] = (float)LP[i];
        int32_t id = dp_sampler_sample(&s4, l4, NULL, 0);
        if (id >= 0 && id < 4) counts[id]++;
    }
    for (int i = 0; i < 4; i++) {
        double sd = sqrt(n * P[i] * (1 - P[i]));
        CHECK_NEAR(n * P[i], counts[i], 5 * sd, 0);
    }
    dp_sampler_free(&s4);
    dp_sampler_free(&s);
}

static void test_top_probs(void) {
    const float l[5] = {1, 5, 3, 5, 2};
    int32_t ids[3];
    float pr[3];
    CHECK_EQ_INT(3, dp_top_probs(l, 5, 3, ids, pr));
    CHECK_EQ_INT(1, ids[0]);
    CHECK_EQ_INT(3, ids[1]);
    CHECK_EQ_INT(2, ids[2]);
    double z = exp(1) + 2 * exp(5) + exp(3) + exp(2);
    CHECK_NEAR(exp(5) / z, pr[0], 1e-7, 1e-6);
    CHECK_NEAR(exp(3) / z, pr[2], 1e-7, 1e-6);
    /* rows beyond n_valid are ignored */
    CHECK_EQ_INT(2, dp_top_probs(l, 2, 3, ids, pr));
    CHECK_EQ_INT(1, ids[0]);
    CHECK_NEAR(exp(5) / (exp(1) + exp(5)), pr[0], 1e-7, 1e-6);
}

/* The reference order for the large-vocabulary test: logit descending, ties by lower id. */
static const double *ref_logits;
static int ref_cmp(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    if (ref_logits[x] != ref_logits[y]) return ref_logits[x] > ref_logits[y] ? -1 : 1;
    return (x > y) - (x < y);
}

/* A vocabulary of SmolLM2's size with many tied logits (a grid of 1/512, six ids a value): the
 * sampler's selection of the top k (a heap, not a full sort) and min-p's shortcut without
 * top-k must give exactly the candidates and probabilities of the formulas over a full sort. */
static void test_large_vocab(void) {
    enum { V = 49152 };
    static double L[V];
    static float l[V];
    static int order[V];
    static double pr[V];
    dp_pcg32 r;
    dp_pcg32_seed(&r, 3, 5);
    for (int i = 0; i < V; i++) L[i] = floor(dp_pcg32_uniform(&r) * 8192.0) / 512.0 - 8.0;
    for (int i = 0; i < V; i++) order[i] = i;
    ref_logits = L;
    qsort(order, V, sizeof *order, ref_cmp);
    const struct {
        int top_k;
        float top_p, min_p;
    } cases[] = {{40, 1.0f, 0}, {40, 0.5f, 0.05f}, {1, 1.0f, 0}, {0, 1.0f, 0.9f},
                 {0, 0.9f, 0.8f}, {0, 0.999f, 0}, {V, 1.0f, 0.97f}};
    dp_sampler s;
    dp_sampler_params p = plain(1.0f);
    CHECK(dp_sampler_create(&s, &p, V, V) == 0);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        p = plain(1.0f);
        p.top_k = cases[c].top_k, p.top_p = cases[c].top_p, p.min_p = cases[c].min_p;
        dp_sampler_set(&s, &p);
        for (int i = 0; i < V; i++) l[i] = (float)L[i];
        dp_sampler_distribution(&s, l, NULL, 0);
        /* the formulas: softmax over the top k, the top-p head, the min-p cut, renormalized */
        int m = p.top_k > 0 && p.top_k < V ? p.top_k : V;
        softmax_ref(L, order, m, 1.0, pr);
        if (p.top_p < 1) {
            double cum = 0;
            int keep = m;
            for (int i = 0; i < m; i++)
                if ((cum += pr[i]) >= p.top_p) {
                    keep = i + 1;
                    break;
                }
            m = keep;
        }
        int keep = 1;
        while (p.min_p > 0 && keep < m && pr[keep] >= p.min_p * pr[0]) keep++;
        if (p.min_p > 0) m = keep;
        double sum = 0;
        for (int i = 0; i < m; i++) sum += pr[i];
        for (int i = 0; i < m; i++) pr[i] /= sum;
        expect_dist(&s, order, pr, m);
    }
    dp_sampler_free(&s);
}

int main(void) {
    test_pcg32();
    test_greedy_and_vocab_limit();
    test_repeat_penalty();
    test_filters();
    test_top_probs();
    test_large_vocab();
    return check_done();
}
