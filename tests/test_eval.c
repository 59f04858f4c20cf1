/* doppel eval's model side (train/eval.c): the bootstrap interval by hand; the held-out loss
 * equal to the training loop's validation loss (dp_eval_loss, packed batches) on the tiny Llama
 * with a non-zero adapter; held-out contexts; the export's messages outside validation. */
#include <unistd.h>

#include "check.h"
#include "data/base/error.h"
#include "train/eval.h"
#include "infer/generate.h"
#include "infer/model_load.h"
#include "train/model_grad.h"
#include "data/base/rng.h"
#include "train/trainer.h"

static void test_bootstrap(void) {
    double lo, hi;
    /* one sequence: every resample is that sequence */
    double s1[] = {6.0};
    int64_t t1[] = {3};
    CHECK_EQ_INT(0, dp_eval_bootstrap(s1, t1, 1, 100, 7, &lo, &hi));
    CHECK_NEAR(2.0, lo, 0, 0);
    CHECK_NEAR(2.0, hi, 0, 0);
    /* two sequences of one token, losses 1 and 3: resample means are 1, 2 or 3 with chances
     * 1/4, 1/2, 1/4, so the 2.5th and 97.5th percentiles are 1 and 3 */
    double s2[] = {1, 3};
    int64_t t2[] = {1, 1};
    CHECK_EQ_INT(0, dp_eval_bootstrap(s2, t2, 2, 1000, 7, &lo, &hi));
    CHECK_NEAR(1.0, lo, 0, 0);
    CHECK_NEAR(3.0, hi, 0, 0);
    /* token-weighted: sums (1, 9) over (1, 3) tokens; resamples {a,a}=1, {a,b}=10/4, {b,b}=3 */
    double s3[] = {1, 9};
    int64_t t3[] = {1, 3};
    CHECK_EQ_INT(0, dp_eval_bootstrap(s3, t3, 2, 1000, 7, &lo, &hi));
    CHECK_NEAR(1.0, lo, 0, 0);
    CHECK_NEAR(3.0, hi, 0, 0);
    /* 400 sequences alternating 1 and 3: mean 2, sd 1, so the interval is about
     * 2 +- 1.96 / sqrt(400) = [1.902, 2.098] */
    double s4[400];
    int64_t t4[400];
    for (int i = 0; i < 400; i++) s4[i] = i % 2 ? 3 : 1, t4[i] = 1;
    CHECK_EQ_INT(0, dp_eval_bootstrap(s4, t4, 400, 2000, 7, &lo, &hi));
    printf("bootstrap of 400 values of mean 2, sd 1: [%.4f, %.4f] (normal theory [1.902, 2.098])\n",
           lo, hi);
    CHECK_NEAR(1.902, lo, 0.012, 0);
    CHECK_NEAR(2.098, hi, 0.012, 0);
    CHECK_EQ_INT(0, dp_eval_bootstrap(s4, t4, 400, 0, 7, &lo, &hi));
    CHECK(isnan(lo) && isnan(hi));
}

/* Held-out loss = the trainer's validation loss (packed batches) on the same tokens. */
static void test_loss_equals_validation(void) {
    char model_dir[600], data[600];
    snprintf(model_dir, sizeof model_dir, "%s/tests/fixtures/tiny-llama", DOPPEL_SOURCE_DIR);
    snprintf(data, sizeof data, "%s/tests/fixtures/sample-export.expected.jsonl",
             DOPPEL_SOURCE_DIR);
    dp_load_opts lo = {.nf4 = true, .quiet = true};
    dp_model *m = dp_model_load(model_dir, &lo);
    CHECK(m != NULL);
    if (!m) return;
    dp_train_render_ctx rc = {.tok = dp_model_tokenizer(model_dir)};
    CHECK(rc.tok != NULL);
    dp_token_data d = {0};
    CHECK_EQ_INT(0, dp_chat_format_choose(dp_tokenizer_chat_template(rc.tok), "chatml", &rc.fmt));
    CHECK_EQ_INT(0, dp_token_data_build(data, 128, dp_train_render, &rc, &d));
    dp_lora_config lc = {.r = 4, .alpha = 8, .targets = DP_LORA_ALL_TARGETS};
    dp_lora *lora = dp_lora_create(&m->cfg, &lc);
    CHECK(lora != NULL);
    if (!lora || !d.nseq) return;
    dp_lora_init(lora, 3);
    /* B is zero after PEFT's init: give every parameter a value so the adapter matters */
    for (size_t i = 0; i < lora->n; i++) lora->params[i] = 0.05f * (dp_rng_uniform(9, 1, i) - 0.5f);
    dp_grad_ws *ws = dp_grad_ws_create(m, lora, 256, false, 0);
    const dp_lora *systems[2] = {NULL, lora};
    double losses[2];
    for (int k = 0; k < 2; k++) {
        dp_eval_loss_result r;
        CHECK_EQ_INT(0, dp_eval_heldout_loss(m, systems[k], &d, 200, 1, &r));
        double want = dp_eval_loss(ws, m, systems[k], &d, 256);
        printf("%s: eval loss %.9f over %lld tokens in %lld sequences, training validation loss "
               "%.9f; perplexity %.3f [%.3f, %.3f]\n",
               k ? "adapter" : "base", r.loss, (long long)r.tokens, (long long)r.seqs, want, r.ppl,
               r.ppl_lo, r.ppl_hi);
        CHECK_NEAR(want, r.loss, 0, 1e-6);
        CHECK_EQ_INT(d.n_trained, r.tokens);
        CHECK_NEAR(exp(r.loss), r.ppl, 0, 1e-12);
        CHECK(r.loss_lo < r.loss && r.loss < r.loss_hi);
        losses[k] = r.loss;
    }
    CHECK(fabs(losses[0] - losses[1]) > 1e-3); // the adapter changes the loss: not a vacuous test
    dp_grad_ws_free(ws);
    dp_lora_free(lora);
    dp_token_data_free(&d);
    dp_train_render_ctx_free(&rc);
    dp_tokenizer_free(rc.tok);
    dp_model_free(m);
}

static char *write_tmp(const char *text) {
    static char path[128];
    snprintf(path, sizeof path, "/tmp/doppel-test-eval-%d.jsonl", (int)getpid());
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_set_and_corpus(void) {
    const char *path = write_tmp(
        "{\"messages\":[{\"role\":\"user\",\"content\":\"[Sam Walker]: you'll see\"},"
        "{\"role\":\"assistant\",\"content\":\"ok i'm listening\\nsam\"}]}\n"
        "{\"messages\":[{\"role\":\"assistant\",\"content\":\"alone\"}]}\n"
        "{\"messages\":[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":"
        "\"[juno]: a\\n[Theo]: b\"},{\"role\":\"assistant\",\"content\":\"c\"}]}\n");
    dp_eval_set s;
    CHECK_EQ_INT(0, dp_eval_set_load(path, &s));
    CHECK_EQ_INT(2, s.n); // the reply with no context is not a context
    CHECK_EQ_INT(1, s.ctx[0].n);
    CHECK_EQ_STR("[Sam Walker]: you'll see", s.ctx[0].msgs[0].content);
    CHECK_EQ_STR("ok i'm listening\nsam", s.real[0]);
    CHECK_EQ_INT(2, s.ctx[1].n); // system + user
    CHECK_EQ_STR("c", s.real[1]);
    CHECK_EQ_INT(3, s.n_others);
    if (s.n_others == 3) {
        CHECK_EQ_STR("you'll see", s.others[0]);
        CHECK_EQ_STR("a", s.others[1]);
        CHECK_EQ_STR("b", s.others[2]);
    }
    /* the sample export: 1,492 messages kept by prep (not empty, not system), 742 of them
     * mossy's under two names; the set's lines hold some out */
    char csv[600];
    snprintf(csv, sizeof csv, "%s/tests/fixtures/sample-export.csv", DOPPEL_SOURCE_DIR);
    const char *who[] = {"mossy", "mossy.exe", "829104736521048064"};
    for (int i = 0; i < 3; i++) {
        dp_eval_corpus c;
        CHECK_EQ_INT(0, dp_eval_corpus_load(csv, who[i], &s, &c));
        CHECK_EQ_INT(1492, c.n + c.n_held_out);
        /* held out: "ok i'm listening" (1), "sam" (mossy's, several), "you'll see" (1), and
         * any message that is exactly "a", "b" or "c" (none in the sample) */
        size_t sam = 0, persona_total = 0;
        for (size_t k = 0; k < c.n; k++) {
            sam += !strcmp(c.texts[k], "sam") || !strcmp(c.texts[k], "you'll see");
            persona_total += c.is_persona[k];
        }
        CHECK_EQ_INT(0, sam);
        CHECK(c.n_held_out >= 3);
        CHECK_EQ_INT(c.n_persona, persona_total);
        CHECK(c.n_persona > 700 && c.n_persona < 742);
        if (i == 0)
            printf("corpus: %zu messages (%zu mossy's), %zu held out\n", c.n, c.n_persona,
                   c.n_held_out);
        dp_eval_corpus_free(&c);
    }
    dp_eval_corpus c;
    CHECK_EQ_INT(-1, dp_eval_corpus_load(csv, "nobody", &s, &c));
    CHECK(strstr(dp_last_error(), "--list-authors") != NULL);
    dp_eval_set_free(&s);
    unlink(path);
}

int main(void) {
    test_bootstrap();
    test_set_and_corpus();
    test_loss_equals_validation();
    return check_done();
}
