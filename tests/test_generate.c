/* Generation and the chat session on tests/fixtures/tiny-llama: greedy decoding through the KV
 * cache equals argmax over fresh full forward passes; prompt reuse; stop set and max tokens;
 * generation_config.json defaults; history trimming against directly rendered conversations;
 * session JSON save/load and its errors. */
#include "check.h"
#include "data/base/error.h"
#include "infer/forward.h"
#include "infer/generate.h"
#include "infer/model_load.h"

#include <stdlib.h>

static char dir[4096];

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static void test_generate(const dp_model *m) {
    const int V = m->cfg.V;
    int32_t prompt[8] = {5, 17, 250, 3, 99, 42, 7, 1};
    dp_sampler_params p = {.temperature = 0, .top_p = 1, .repeat_penalty = 1};
    dp_sampler s;
    CHECK(dp_sampler_create(&s, &p, V, V) == 0);
    dp_gen_state g;
    CHECK(dp_gen_state_create(&g, m, 64) == 0);
    dp_gen_opts o = {.max_tokens = 10};
    dp_gen_result r;
    dp_ids out = {0};
    CHECK(dp_generate(&g, &s, prompt, 8, &o, NULL, NULL, &out, &r) == 0);
    CHECK_EQ_INT(10, (int)out.n);
    CHECK_EQ_STR("length", r.finish);
    CHECK_EQ_INT(0, r.n_reused);

    /* the independent path: a fresh full forward over prompt + generated-so-far, argmax of the
     * last row, with no cache reuse between steps */
    int32_t seq[32];
    memcpy(seq, prompt, sizeof prompt);
    float *logits = malloc((size_t)32 * V * sizeof(float));
    for (int i = 0; i < 10; i++) {
        dp_forward f;
        CHECK(dp_forward_create(&f, m, 32, 0) == 0);
        CHECK(dp_forward_tokens(&f, seq, 8 + i, logits) == 0);
        int want = argmax(logits + (size_t)(7 + i) * V, V);
        CHECK_EQ_INT(want, out.v[i]);
        seq[8 + i] = want;
        dp_forward_free(&f);
    }
    free(logits);

    /* a prompt extending the cached ids reuses them, and the result is the same as fresh */
    int32_t longer[20];
    memcpy(longer, seq, 18 * sizeof(int32_t));
    dp_ids out2 = {0}, out3 = {0};
    CHECK(dp_generate(&g, &s, longer, 18, &o, NULL, NULL, &out2, &r) == 0);
    CHECK_EQ_INT(17, r.n_reused); /* all but the last generated token were fed */
    dp_gen_state g2;
    CHECK(dp_gen_state_create(&g2, m, 64) == 0);
    CHECK(dp_generate(&g2, &s, longer, 18, &o, NULL, NULL, &out3, &r) == 0);
    CHECK_EQ_INT(0, r.n_reused);
    CHECK_EQ_INT((int)out3.n, (int)out2.n);
    for (size_t i = 0; i < out2.n && i < out3.n; i++) CHECK_EQ_INT(out3.v[i], out2.v[i]);

    /* a changed prompt reuses only the common prefix */
    longer[3] = 200;
    CHECK(dp_generate(&g, &s, longer, 18, &o, NULL, NULL, NULL, &r) == 0);
    CHECK_EQ_INT(3, r.n_reused);

    /* the stop set: the first greedy token stops at once; it is not emitted */
    int32_t stop = out.v[0];
    dp_gen_opts os = {.max_tokens = 10, .stop = &stop, .n_stop = 1};
    dp_ids none = {0};
    CHECK(dp_generate(&g, &s, prompt, 8, &os, NULL, NULL, &none, &r) == 0);
    CHECK_EQ_STR("stop", r.finish);
    CHECK_EQ_INT(0, r.n_generated);
    CHECK_EQ_INT(0, (int)none.n);

    /* the context: generation ends when the cache is full */
    dp_gen_state small;
    CHECK(dp_gen_state_create(&small, m, 12) == 0);
    dp_ids o4 = {0};
    CHECK(dp_generate(&small, &s, prompt, 8, &o, NULL, NULL, &o4, &r) == 0);
    CHECK_EQ_STR("context", r.finish);
    CHECK_EQ_INT(5, (int)o4.n); /* positions 8..11 fed, the 5th token sampled from position 11 */
    CHECK(dp_generate(&small, &s, seq, 12, &o, NULL, NULL, NULL, &r) == -1);

    dp_ids_free(&o4);
    dp_gen_state_free(&small);
    dp_ids_free(&none);
    dp_ids_free(&out);
    dp_ids_free(&out2);
    dp_ids_free(&out3);
    dp_gen_state_free(&g);
    dp_gen_state_free(&g2);
    dp_sampler_free(&s);
}

static void test_generation_config(void) {
    dp_sampler_params p = dp_sampler_defaults();
    p.min_p = 0.5f;
    CHECK(dp_sampler_params_from_generation_config(&p, dir) == 0);
    /* tiny-llama/generation_config.json: temperature 0.7 top_p 0.9 top_k 40 penalty 1.1 */
    CHECK_NEAR(0.7, p.temperature, 1e-7, 0);
    CHECK_NEAR(0.9, p.top_p, 1e-7, 0);
    CHECK_EQ_INT(40, p.top_k);
    CHECK_NEAR(1.1, p.repeat_penalty, 1e-7, 0);
    CHECK_NEAR(0.5, p.min_p, 0, 0); /* absent there: kept */
}

static void render_expected(dp_tokenizer *t, const dp_chat_msg *msgs, int n, dp_chat_tokens *ct) {
    memset(ct, 0, sizeof *ct);
    CHECK(dp_chat_render(t, DP_CHAT_CHATML, msgs, (size_t)n, true, ct) == 0);
}

static void test_session(void) {
    dp_tokenizer *t = dp_model_tokenizer(dir);
    CHECK_REPORT(t != NULL, "%s", dp_last_error());
    if (!t) return;
    CHECK_EQ_INT(300, dp_tokenizer_vocab_size(t));
    dp_session s;
    dp_session_init(&s, "be brief");
    const char *turns[] = {"hello there, how are you doing today?", "i am fine",
                           "what are you up to this weekend?", "a walk", "lol that is so funny"};
    for (int i = 0; i < 5; i++) dp_session_add(&s, i % 2 ? "assistant" : "user", turns[i]);

    /* everything fits: identical to rendering the whole conversation directly */
    dp_chat_msg all[6] = {{DP_ROLE_SYSTEM, "be brief", 8}};
    for (int i = 0; i < 5; i++)
        all[i + 1] =
            (dp_chat_msg){i % 2 ? DP_ROLE_ASSISTANT : DP_ROLE_USER, turns[i], strlen(turns[i])};
    dp_chat_tokens full, want, got = {0};
    render_expected(t, all, 6, &full);
    int dropped = -1;
    CHECK(dp_session_render(&s, t, DP_CHAT_CHATML, 1000, &got, &dropped) == 0);
    CHECK_EQ_INT(0, dropped);
    CHECK_EQ_INT((int)full.ids.n, (int)got.ids.n);

    /* one token less than the whole: the oldest user+assistant pair goes, the system stays */
    dp_chat_msg trimmed[4] = {all[0], all[3], all[4], all[5]};
    render_expected(t, trimmed, 4, &want);
    CHECK(dp_session_render(&s, t, DP_CHAT_CHATML, (int)full.ids.n - 1, &got, &dropped) == 0);
    CHECK_EQ_INT(2, dropped);
    CHECK_EQ_INT(3, s.n);
    CHECK_EQ_INT((int)want.ids.n, (int)got.ids.n);
    for (size_t i = 0; i < want.ids.n && i < got.ids.n; i++)
        CHECK_EQ_INT(want.ids.v[i], got.ids.v[i]);

    /* save, reset, load: the same conversation back */
    char path[4200];
    snprintf(path, sizeof path, "%s/session_test.json", ".");
    CHECK(dp_session_save(&s, path) == 0);
    dp_session_reset(&s);
    CHECK_EQ_INT(0, s.n);
    CHECK_EQ_STR("be brief", s.system);
    CHECK(dp_session_load(&s, path) == 0);
    CHECK_EQ_INT(3, s.n);
    CHECK_EQ_STR("lol that is so funny", s.msgs[2].content);
    CHECK_EQ_STR("assistant", s.msgs[1].role);

    /* too small for even the last message: an error naming --max-context; nothing lost */
    CHECK(dp_session_render(&s, t, DP_CHAT_CHATML, 5, &got, &dropped) == -1);
    CHECK(strstr(dp_last_error(), "--max-context") != NULL);
    CHECK_EQ_INT(3, s.n);

    /* bad session files: errors naming the file, the session unchanged */
    FILE *f = fopen(path, "w");
    fputs("{\"messages\": [{\"role\": \"user\"}]}", f);
    fclose(f);
    CHECK(dp_session_load(&s, path) == -1);
    CHECK(strstr(dp_last_error(), "messages[0]") != NULL);
    f = fopen(path, "w");
    fputs("[1, 2", f);
    fclose(f);
    CHECK(dp_session_load(&s, path) == -1);
    CHECK(strstr(dp_last_error(), "session_test.json") != NULL);
    CHECK_EQ_INT(3, s.n);
    remove(path);

    dp_chat_tokens_free(&full);
    dp_chat_tokens_free(&want);
    dp_chat_tokens_free(&got);
    dp_session_free(&s);
    dp_tokenizer_free(t);
}

int main(void) {
    snprintf(dir, sizeof dir, "%s/tests/fixtures/tiny-llama", DOPPEL_SOURCE_DIR);
    dp_load_opts opts = {.quiet = true};
    dp_model *m = dp_model_load(dir, &opts);
    if (!m) {
        CHECK_REPORT(0, "%s", dp_last_error());
        return check_done();
    }
    test_generate(m);
    dp_model_free(m);
    test_generation_config();
    test_session();
    return check_done();
}
