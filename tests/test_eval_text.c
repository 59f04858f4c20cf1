/* doppel eval's text metrics (infer/eval_text.c): TF-IDF weights, style, divergences and
 * degeneration on inputs small enough to check by hand, and the authorship classifier against
 * scikit-learn on the bundled sample export (tests/reference/make_authorship_reference.py). */
#include <cjson/cJSON.h>

#include "check.h"
#include "data/base/error.h"
#include "data/base/io.h"
#include "infer/eval_text.h"

static void test_tfidf_by_hand(void) {
    /* "abcd" and "abce": 3-grams abc (both), bcd, bce; 4-grams abcd, abce; no 5-grams.
     * idf(abc) = ln(3/3) + 1 = 1, the others ln(3/2) + 1; "abcd" = (abc 1, bcd w, abcd w). */
    const char *texts[] = {"abcd", "abce"};
    const unsigned char persona[] = {1, 0};
    dp_authorship *a = dp_authorship_train(texts, persona, 2, NULL);
    CHECK(a != NULL);
    if (!a) return;
    CHECK_EQ_INT(5, dp_authorship_vocab(a));
    double w = log(1.5) + 1, norm = sqrt(1 + 2 * w * w);
    CHECK_NEAR(1 / norm, dp_authorship_weight(a, "abcd", "abc"), 1e-12, 0);
    CHECK_NEAR(w / norm, dp_authorship_weight(a, "abcd", "bcd"), 1e-12, 0);
    CHECK_NEAR(w / norm, dp_authorship_weight(a, "abcd", "abcd"), 1e-12, 0);
    CHECK_NEAR(0, dp_authorship_weight(a, "abcd", "bce"), 0, 0);
    /* counts: "abcabc" has abc twice, bca, cab once (only abc, bcd... are known): abc alone */
    CHECK_NEAR(1, dp_authorship_weight(a, "abcabc", "abc"), 1e-12, 0);
    dp_authorship_destroy(a);

    /* n-grams over code points, after 2+ whitespace become one space: "ab  c" -> "ab c" gives
     * "ab ", "b c", "ab c" (3, not the 6 of the raw bytes); "aéb" one 3-gram; "xyz" one */
    const char *t2[] = {"ab  c",
                        "a\xc3\xa9"
                        "b",
                        "xyz"};
    const unsigned char p2[] = {1, 1, 0};
    a = dp_authorship_train(t2, p2, 3, NULL);
    CHECK(a != NULL);
    if (!a) return;
    CHECK_EQ_INT(5, dp_authorship_vocab(a));
    CHECK(dp_authorship_weight(a, "ab\n\n c", "b c") > 0);
    dp_authorship_destroy(a);

    /* one class only: refused with a message */
    CHECK(dp_authorship_train(texts, (const unsigned char[]){1, 1}, 2, NULL) == NULL);
    CHECK(strstr(dp_last_error(), "both") != NULL);
}

static void test_classifier_separable(void) {
    const char *train[] = {
        "ngl that was so good",      "lowkey tired rn fr",         "omg same fr",
        "ngl i'm so hungry rn",      "Did you finish the report?", "I will be there at seven.",
        "Thanks, that helps a lot.", "We should book the table."};
    const unsigned char y[] = {1, 1, 1, 1, 0, 0, 0, 0};
    dp_authorship *a = dp_authorship_train(train, y, 8, NULL);
    CHECK(a != NULL);
    if (!a) return;
    const char *held[] = {"fr ngl so tired", "omg rn", "Did you book it?",
                          "Thanks, see you at seven."};
    const unsigned char hy[] = {1, 1, 0, 0};
    CHECK_NEAR(1.0, dp_authorship_accuracy(a, held, hy, 4), 0, 0);
    CHECK_NEAR(0.5, dp_authorship_share(a, held, 4), 0, 0);
    CHECK(dp_authorship_prob(a, "ngl fr") > 0.5 && dp_authorship_prob(a, "Thanks, I will.") < 0.5);
    dp_authorship_destroy(a);
}

/* The classifier against scikit-learn on the sample export's messages. */
static void test_classifier_sklearn(void) {
    char path[600], *json = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/tests/fixtures/sample-export.authorship.json",
             DOPPEL_SOURCE_DIR);
    CHECK_EQ_INT(0, dp_read_file(path, &json, &len));
    cJSON *root = json ? cJSON_Parse(json) : NULL;
    free(json);
    CHECK(root != NULL);
    if (!root) return;
    cJSON *tr = cJSON_GetObjectItem(root, "train"), *te = cJSON_GetObjectItem(root, "test");
    int ntr = cJSON_GetArraySize(tr), nte = cJSON_GetArraySize(te);
    const char **texts = calloc((size_t)(ntr + nte), sizeof *texts);
    unsigned char *y = calloc((size_t)(ntr + nte), 1);
    for (int i = 0; i < ntr; i++) {
        cJSON *row = cJSON_GetArrayItem(tr, i);
        texts[i] = cJSON_GetArrayItem(row, 0)->valuestring;
        y[i] = (unsigned char)cJSON_GetArrayItem(row, 1)->valueint;
    }
    for (int i = 0; i < nte; i++) {
        cJSON *row = cJSON_GetArrayItem(te, i);
        texts[ntr + i] = cJSON_GetArrayItem(row, 0)->valuestring;
        y[ntr + i] = (unsigned char)cJSON_GetArrayItem(row, 1)->valueint;
    }
    dp_authorship *a = dp_authorship_train(texts, y, (size_t)ntr, NULL);
    CHECK(a != NULL);
    if (a) {
        CHECK_EQ_INT(cJSON_GetObjectItem(root, "vocab")->valueint, dp_authorship_vocab(a));
        double max_diff = 0;
        int flips = 0;
        for (int i = 0; i < nte; i++) {
            double want = cJSON_GetArrayItem(cJSON_GetArrayItem(te, i), 2)->valuedouble;
            double got = dp_authorship_prob(a, texts[ntr + i]);
            if (fabs(got - want) > max_diff) max_diff = fabs(got - want);
            flips += (got > 0.5) != (want > 0.5);
        }
        /* liblinear's trust-region Newton stops at a tolerance, so the two fits agree to about
         * that tolerance, not to the last bit */
        double tol = 1e-4;
        printf("authorship vs scikit-learn: %d held-out messages, max |P diff| %.3g (tol %.0e), "
               "%d decisions differ; held-out accuracy %.4f (scikit-learn %.4f)\n",
               nte, max_diff, tol, flips,
               dp_authorship_accuracy(a, texts + ntr, y + ntr, (size_t)nte),
               cJSON_GetObjectItem(root, "accuracy")->valuedouble);
        CHECK(max_diff <= tol);
        CHECK_NEAR(cJSON_GetObjectItem(root, "accuracy")->valuedouble,
                   dp_authorship_accuracy(a, texts + ntr, y + ntr, (size_t)nte), 1e-9, 0);
        dp_authorship_destroy(a);
    }
    free(texts);
    free(y);
    cJSON_Delete(root);
}

static void test_style(void) {
    /* 9 + 4 code points; cased letters h,i,t,h,e,r,e + O,K; one '!'; one emoji; 3 lines */
    const char *t[] = {"hi there!", "OK\n\xf0\x9f\x98\xad"};
    dp_style_stats s;
    dp_style_measure(t, 2, NULL, 0, &s);
    CHECK_EQ_INT(2, s.replies);
    CHECK_NEAR(6.5, s.chars_mean, 1e-12, 0);
    CHECK_NEAR(1.5, s.lines_mean, 1e-12, 0);
    CHECK_NEAR(7.0 / 9, s.lowercase_share, 1e-12, 0);
    CHECK_NEAR(100.0 / 13, s.punct_per_100, 1e-12, 0);
    CHECK_NEAR(100.0 / 13, s.emoji_per_100, 1e-12, 0);
    CHECK(isnan(s.signature_rate));
    const char *sig[] = {"hi", "ok"};
    dp_style_measure(t, 2, sig, 2, &s); // words: hi there ok 😭
    CHECK_NEAR(0.5, s.signature_rate, 1e-12, 0);
}

static void test_jsd(void) {
    const char *ab[] = {"a b"}, *ac[] = {"a c"}, *xy[] = {"x y"};
    CHECK_NEAR(0, dp_text_jsd(ab, 1, ab, 1, 1), 1e-12, 0);
    CHECK_NEAR(1, dp_text_jsd(ab, 1, xy, 1, 1), 1e-12, 0);
    /* P = (a .5, b .5), Q = (a .5, c .5), M = (a .5, b .25, c .25): JSD = 1/2 bit */
    CHECK_NEAR(0.5, dp_text_jsd(ab, 1, ac, 1, 1), 1e-12, 0);
    CHECK_NEAR(1, dp_text_jsd(ab, 1, ac, 1, 2), 1e-12, 0); // bigrams "a b" vs "a c"
    /* casing and surrounding punctuation do not make another word */
    const char *AB[] = {"A, b!"};
    CHECK_NEAR(0, dp_text_jsd(ab, 1, AB, 1, 1), 1e-12, 0);
    const char *empty[] = {""};
    CHECK_NEAR(-1, dp_text_jsd(ab, 1, empty, 1, 1), 0, 0);
}

static void test_signature(void) {
    const char *p[] = {"ngl yes", "ngl no", "ngl ok"}, *o[] = {"yes", "no", "ok"};
    char *w[2] = {0};
    CHECK_EQ_INT(2, dp_signature_words(p, 3, o, 3, 2, 1, w));
    CHECK_EQ_STR("ngl", w[0]);
    free(w[0]);
    free(w[1]);
    CHECK_EQ_INT(1, dp_signature_words(p, 3, o, 3, 5, 3, w)); // only "ngl" is seen 3 times
    free(w[0]);
}

static void test_degeneration(void) {
    /* words: a b a b a b | theo hi ok | x y z: 12, 8 distinct; bigrams 5 + 2 + 2, distinct
     * ab ba + 2 + 2 = 6; 3-grams aba bab aba bab | theo-hi-ok | x-y-z: 6, 2 repeats */
    const char *t[] = {"a b a b a b", "[Theo]: hi\nok", "x y z"};
    const unsigned char ended[] = {1, 0, 1};
    dp_degeneration d;
    dp_degeneration_measure(t, ended, 3, &d);
    CHECK_NEAR(8.0 / 12, d.distinct1, 1e-12, 0);
    CHECK_NEAR(6.0 / 9, d.distinct2, 1e-12, 0);
    CHECK_NEAR(2.0 / 6, d.repeated_3gram_rate, 1e-12, 0);
    CHECK_NEAR(1.0 / 3, d.other_speaker_share, 1e-12, 0);
    CHECK_NEAR(2.0 / 3, d.ended_share, 1e-12, 0);
    /* a speaker line anywhere in the reply counts; brackets elsewhere do not */
    const char *t2[] = {"ok\n  [juno]: hey", "see [this]: no", "[]: x", "[a] : y"};
    dp_degeneration_measure(t2, NULL, 4, &d);
    CHECK_NEAR(0.25, d.other_speaker_share, 1e-12, 0);
    CHECK(isnan(d.ended_share));
}

int main(void) {
    test_tfidf_by_hand();
    test_classifier_separable();
    test_classifier_sklearn();
    test_style();
    test_jsd();
    test_signature();
    test_degeneration();
    return check_done();
}
