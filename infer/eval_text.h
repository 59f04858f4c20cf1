/* Text metrics for doppel eval (no model involved): does a set of replies read like the persona?
 * Authorship (a persona-vs-others classifier), style statistics and their distance to the real
 * replies, and degeneration (repetition, writing other people's lines, never stopping). */
#ifndef DOPPEL_EVAL_TEXT_H
#define DOPPEL_EVAL_TEXT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- authorship
 * Character n-gram TF-IDF + L2-regularized logistic regression (liblinear), the classic
 * authorship-attribution baseline, defined as scikit-learn's
 *   TfidfVectorizer(analyzer="char", ngram_range=(3, 5), lowercase=False) +
 *   LogisticRegression(solver="liblinear", C=1, tol=1e-4)
 * so that tests/reference/make_authorship_reference.py can check it: n-grams over code points
 * after runs of 2+ ASCII whitespace become one space; tf = raw count, idf = ln((1+N)/(1+df)) + 1,
 * rows L2-normalized; the intercept is liblinear's bias feature (value 1, regularized). Casing
 * is kept on purpose: it is part of a style. */
typedef struct {
    int min_n, max_n; // n-gram lengths in code points (3, 5)
    double C;         // inverse regularization strength (1)
    double eps;       // liblinear stopping tolerance (1e-4)
} dp_authorship_opts;

typedef struct dp_authorship dp_authorship;

void dp_authorship_opts_default(dp_authorship_opts *o);
/* Trains on n texts; is_persona[i] != 0 marks the persona's. Needs both classes. NULL on error. */
dp_authorship *dp_authorship_train(const char *const *texts, const unsigned char *is_persona,
                                   size_t n, const dp_authorship_opts *o);
void dp_authorship_destroy(dp_authorship *a);
/* P(persona | text). */
double dp_authorship_prob(const dp_authorship *a, const char *text);
/* Share of the texts attributed to the persona (P > 0.5). */
double dp_authorship_share(const dp_authorship *a, const char *const *texts, size_t n);
/* Share of labelled texts classified correctly (the classifier's own held-out accuracy). */
double dp_authorship_accuracy(const dp_authorship *a, const char *const *texts,
                              const unsigned char *is_persona, size_t n);
/* Vocabulary size (distinct n-grams seen in training). */
size_t dp_authorship_vocab(const dp_authorship *a);
/* The TF-IDF weight of one n-gram in text's normalized vector (0 if absent or unknown). */
double dp_authorship_weight(const dp_authorship *a, const char *text, const char *ngram);

/* ---------------------------------------------------------------- style
 * Words: whitespace-separated tokens, ASCII-lowercased, leading/trailing ASCII punctuation
 * stripped (emoji stay as tokens: they are part of a style). */
typedef struct {
    size_t replies;
    double chars_mean;      // code points per reply
    double lines_mean;      // lines per reply (a persona turn is her burst of messages)
    double lowercase_share; // lowercase / all cased ASCII letters
    double punct_per_100;   // ASCII punctuation per 100 code points
    double emoji_per_100;   // emoji (pictographs, U+1F000..1FAFF, U+2600..27BF) per 100 code points
    double signature_rate;  // share of word tokens that are signature words (when given)
} dp_style_stats;

/* signature: NULL or k words (dp_signature_words) whose rate to measure. */
void dp_style_measure(const char *const *texts, size_t n, const char *const *signature, size_t k,
                      dp_style_stats *out);
/* Jensen-Shannon divergence (base 2, 0 = same distribution, 1 = disjoint) between the word
 * (order 1) or word-bigram (order 2) distributions of two sets of texts. -1 when one is empty. */
double dp_text_jsd(const char *const *a, size_t na, const char *const *b, size_t nb, int order);
/* The k words most over-represented in the persona's texts against the others' (log-odds
 * ratio with add-one smoothing; words seen at least min_count times in the persona's texts).
 * Writes up to k malloc'd words to out; returns how many (-1 on error). */
int dp_signature_words(const char *const *persona, size_t np, const char *const *others, size_t no,
                       int k, int min_count, char **out);

/* ---------------------------------------------------------------- degeneration */
typedef struct {
    double distinct1, distinct2; // distinct word uni/bigrams / all of them, over every reply
    double repeated_3gram_rate;  // word 3-grams that already occurred in the same reply / all
    double other_speaker_share;  // replies with a line written as someone else ("[Name]: ...")
    double ended_share;          // replies that ended by themselves before the token limit
} dp_degeneration;

/* ended: NULL or one flag per reply (1 = stopped on its own). */
void dp_degeneration_measure(const char *const *texts, const unsigned char *ended, size_t n,
                             dp_degeneration *out);

#ifdef __cplusplus
}
#endif
#endif
