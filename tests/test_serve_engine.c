/* doppel serve's engine on tests/fixtures/tiny-llama: jobs submitted together and decoded in
 * interleaved steps over 3 slots give, token for token, what dp_generate gives for each prompt
 * alone (greedy, and seeded sampling: every request from its own seed); a continued chat
 * reuses its slot's cached prefix with the same result; stop strings cut the text. Prompts that
 * arrive together go in as one batched prefill (prefill_batch), with the same results. */
#include "check.h"
#include "data/chat_format.h"
#include "data/base/error.h"
#include "infer/generate.h"
#include "infer/model_load.h"
#include "infer/server_engine.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char model_dir[1024];

/* the reference: dp_generate on its own model copy, one prompt at a time */
typedef struct {
    dp_model *model;
    dp_tokenizer *tok;
    dp_gen_state gen;
    dp_sampler sampler;
    int32_t stop[16];
    int n_stop;
} reference;

static int reference_create(reference *r) {
    memset(r, 0, sizeof *r);
    dp_load_opts lo = {.nf4 = true, .quiet = true, .lm_head_q8 = true};
    if (!(r->tok = dp_model_tokenizer(model_dir)) || !(r->model = dp_model_load(model_dir, &lo)))
        return -1;
    dp_sampler_params sp = dp_sampler_defaults();
    dp_sampler_params_from_generation_config(&sp, model_dir);
    int n_valid = dp_tokenizer_vocab_size(r->tok);
    if (n_valid > r->model->cfg.V) n_valid = r->model->cfg.V;
    if (dp_gen_state_create(&r->gen, r->model, 256) ||
        dp_sampler_create(&r->sampler, &sp, r->model->cfg.V, n_valid))
        return -1;
    dp_chat_format f;
    dp_chat_format_choose(dp_tokenizer_chat_template(r->tok), NULL, &f);
    r->n_stop = dp_chat_stop_ids(r->tok, f, r->stop, 8);
    for (int i = 0; i < r->model->cfg.n_eos; i++) r->stop[r->n_stop++] = r->model->cfg.eos_ids[i];
    return 0;
}

static void reference_free(reference *r) {
    dp_sampler_free(&r->sampler);
    dp_gen_state_free(&r->gen);
    dp_model_free(r->model);
    dp_tokenizer_free(r->tok);
}

/* reply text for prompt ids with sampling params sp */
static void reference_reply(reference *r, const dp_ids *prompt, dp_sampler_params sp,
                            int max_tokens, dp_buf *text) {
    dp_sampler_set(&r->sampler, &sp);
    dp_pcg32_seed(&r->sampler.rng, sp.seed, DP_SAMPLER_SEQ);
    dp_ids out = {0};
    dp_gen_opts go = {.max_tokens = max_tokens, .stop = r->stop, .n_stop = r->n_stop};
    dp_gen_result res;
    CHECK_EQ_INT(0, dp_generate(&r->gen, &r->sampler, prompt->v, (int)prompt->n, &go, NULL, NULL,
                                &out, &res));
    CHECK_EQ_INT(0, dp_tokenizer_decode(r->tok, out.v, out.n, true, text));
    dp_ids_free(&out);
}

static dp_job *submit(dp_engine *e, const char *user_text, const char *prev_reply,
                      float temperature, uint64_t seed, const char *stop) {
    /* the body as a client sends it (cJSON escapes whatever the reply holds) */
    cJSON *root = cJSON_CreateObject(), *msgs = cJSON_AddArrayToObject(root, "messages");
    cJSON_AddStringToObject(root, "model", "tiny");
    const char *turns[][2] = {
        {"user", user_text}, {"assistant", prev_reply}, {"user", "and then?"}};
    for (int i = 0; i < (prev_reply ? 3 : 1); i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", turns[i][0]);
        cJSON_AddStringToObject(m, "content", turns[i][1]);
        cJSON_AddItemToArray(msgs, m);
    }
    char *body = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    dp_chat_request req;
    dp_api_error err;
    dp_job *j = dp_job_create();
    if (dp_chat_request_parse(body, strlen(body), &req, &err) ||
        dp_engine_render(e, 0, &req, &j->prompt, &err)) {
        CHECK_REPORT(0, "request %s: %s", body, err.message);
        cJSON_free(body);
        return j;
    }
    cJSON_free(body);
    dp_chat_request_free(&req);
    j->sp = dp_engine_sampler_defaults(e);
    j->sp.temperature = temperature;
    j->sp.seed = seed;
    j->max_tokens = 24;
    if (stop) j->stop[j->n_stop++] = dp_strdup(stop);
    CHECK_EQ_INT(0, dp_engine_submit(e, j, &err));
    return j;
}

static void wait_done(dp_job *j) {
    pthread_mutex_lock(&j->mu);
    while (!j->done) pthread_cond_wait(&j->cv, &j->mu);
    pthread_mutex_unlock(&j->mu);
}

static char *job_text(dp_job *j) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%.*s", (int)j->text.len, j->text.data ? j->text.data : "");
    return buf;
}

int main(void) {
    snprintf(model_dir, sizeof model_dir, "%s/tests/fixtures/tiny-llama", DOPPEL_SOURCE_DIR);
    struct stat st;
    if (stat(model_dir, &st)) SKIP("%s is missing", model_dir);
    dp_engine_config cfg = {.model_path = model_dir,
                            .base_id = "tiny",
                            .slots = 3,
                            .max_context = 256,
                            .max_tokens = 64,
                            .max_queue = 16,
                            .nf4 = true,
                            .lm_head_q8 = true,
                            .quiet = true};
    dp_engine *e = dp_engine_create(&cfg);
    reference ref;
    if (!e || reference_create(&ref)) {
        fprintf(stderr, "%s\n", dp_last_error());
        return 1;
    }

    /* 6 jobs at once over 3 slots: greedy and seeded, different prompts */
    const char *prompts[] = {"hello there",  "what a day",  "who is up",
                             "tell me more", "hello there", "ok"};
    const float temps[] = {0, 0, 1, 1, 0.8f, 0};
    enum { N = 6 };
    dp_job *jobs[N];
    for (int i = 0; i < N; i++) jobs[i] = submit(e, prompts[i], NULL, temps[i], 100 + i, NULL);
    for (int i = 0; i < N; i++) wait_done(jobs[i]);
    /* they were decoded together: 3 slots busy at once make batched steps */
    dp_engine_stats est;
    dp_engine_get_stats(e, &est);
    CHECK_REPORT(est.batched_steps > 0 && est.batched_rows >= 2 * est.batched_steps,
                 "batched decode steps %llu, rows %llu", (unsigned long long)est.batched_steps,
                 (unsigned long long)est.batched_rows);
    fprintf(stderr, "  %llu batched decode steps, %.2f sequences each\n",
            (unsigned long long)est.batched_steps,
            est.batched_steps ? (double)est.batched_rows / est.batched_steps : 0.0);
    char first_reply[4096] = "";
    for (int i = 0; i < N; i++) {
        dp_sampler_params sp = dp_engine_sampler_defaults(e);
        sp.temperature = temps[i];
        sp.seed = 100 + i;
        dp_buf want = {0};
        reference_reply(&ref, &jobs[i]->prompt, sp, 24, &want);
        dp_buf_append(&want, "", 1);
        CHECK_EQ_STR(want.data, job_text(jobs[i]));
        CHECK(jobs[i]->n_generated > 0);
        if (i == 0) snprintf(first_reply, sizeof first_reply, "%s", want.data);
        dp_buf_free(&want);
    }

    /* the chat goes on: the history is resent, the slot's cache holds its prefix */
    CHECK(*first_reply);
    if (*first_reply) {
        dp_job *next = submit(e, "hello there", first_reply, 0, 1, NULL);
        wait_done(next);
        CHECK(next->n_reused > 0);
        fprintf(stderr, "  continued chat: %d of %d prompt tokens reused\n", next->n_reused,
                next->n_prompt);
        dp_sampler_params sp = dp_engine_sampler_defaults(e);
        sp.temperature = 0;
        sp.seed = 1;
        dp_buf want = {0};
        reference_reply(&ref, &next->prompt, sp, 24, &want);
        dp_buf_append(&want, "", 1);
        CHECK_EQ_STR(want.data, job_text(next));
        dp_buf_free(&want);
        dp_job_release(next);
    }

    /* the same seed twice lands on the same slot (its cached prefix): the same reply, since
     * every request starts its own stream from its seed */
    char seeded[4096] = "";
    for (int round = 0; round < 2; round++) {
        dp_job *j = submit(e, "who is up", NULL, 1, 777, NULL);
        wait_done(j);
        if (round == 0)
            snprintf(seeded, sizeof seeded, "%s", job_text(j));
        else
            CHECK_EQ_STR(seeded, job_text(j));
        dp_job_release(j);
    }

    /* chunked prefill: a long prompt arriving while another conversation decodes goes in over
     * several passes (that one keeps getting its tokens meanwhile); the reply is the same */
    /* the tiny model decodes so fast that `a` could finish before `b` is admitted (then `b`
     * rightly goes in whole): this thread holds a's lock from before a's first token until `b`
     * is queued, so the engine, once it has taken `a`, cannot publish any of a's tokens, let
     * alone finish it, before `b` arrives; `b` is admitted at the next pass, with `a` decoding */
    bool chunked = false;
    int b_tokens = 0;
    for (int attempt = 0; attempt < 10 && !chunked; attempt++) {
        dp_engine_stats before;
        dp_engine_get_stats(e, &before);
        dp_job *a = submit(e, "hello there", NULL, 0, 1, NULL);
        pthread_mutex_lock(&a->mu);
        for (int spin = 0; spin < 50000; spin++) { /* until the engine took `a` (5 s at most) */
            dp_engine_get_stats(e, &est);
            if (est.running >= 1 && est.queued == 0) break;
            usleep(100);
        }
        /* a new first word each try, so no slot holds this prompt's prefix from the last one */
        char story[512];
        snprintf(story, sizeof story,
                 "%s so here is the whole story of the day from the start to the end "
                 "with every little thing that happened in the morning and then in the "
                 "afternoon and also late in the evening when we all came home and sat "
                 "down and talked about it for a long long time",
                 (const char *[]){"ok", "well", "right", "alright", "listen", "look", "hey", "yes",
                                  "so", "now"}[attempt]);
        dp_job *b = submit(e, story, NULL, 0.8f, 5, NULL);
        pthread_mutex_unlock(&a->mu);
        wait_done(a);
        wait_done(b);
        dp_engine_get_stats(e, &est);
        chunked = est.chunked_prompts > before.chunked_prompts;
        b_tokens = (int)b->prompt.n;
        CHECK_EQ_STR(first_reply, job_text(a));
        dp_sampler_params sp = dp_engine_sampler_defaults(e);
        sp.temperature = 0.8f;
        sp.seed = 5;
        dp_buf want = {0};
        reference_reply(&ref, &b->prompt, sp, 24, &want);
        dp_buf_append(&want, "", 1);
        CHECK_EQ_STR(want.data, job_text(b));
        dp_buf_free(&want);
        dp_job_release(a);
        dp_job_release(b);
    }
    CHECK_REPORT(chunked, "a %d-token prompt went in whole while another decoded (10 tries)",
                 b_tokens);

    /* a stop string: the reply ends just before it */
    if (strlen(first_reply) >= 4) {
        char stop[3] = {first_reply[2], first_reply[3], 0};
        dp_job *s = submit(e, "hello there", NULL, 0, 1, stop);
        wait_done(s);
        size_t cut = (size_t)(strstr(first_reply, stop) - first_reply);
        CHECK_EQ_INT(cut, s->text.len);
        CHECK(!strncmp(first_reply, job_text(s), cut));
        CHECK_EQ_STR("stop", s->finish);
        dp_job_release(s);
    }

    for (int i = 0; i < N; i++) dp_job_release(jobs[i]);
    dp_engine_destroy(e);
    reference_free(&ref);
    return check_done();
}
