/* doppel serve's engine: the model, the personas, the slots and the scheduler thread.
 *
 * The scheduler's loop: admit queued jobs into free slots (the slot whose KV cache shares the
 * longest prefix with the prompt, same persona), prefill them (in chunks while others are
 * decoding), then ONE call advances every decoding sequence by one token (decode_step: one
 * batched forward over all of them, continuous batching), then each samples its next token. */
#include "infer/server_engine.h"

#include "data/base/error.h"
#include "data/chat_format.h"
#include "infer/forward.h"
#include "infer/forward_gpu.h"
#include "infer/generate.h"
#include "infer/model_load.h"
#include "infer/adapter.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* prompt tokens a scheduler pass puts into the caches while other conversations decode */
#define PREFILL_CHUNK 64
/* rows of one batched forward: the decode step's (one a slot) and the prompts of several
 * slots that arrived together, put in at once (their weights dequantized once, not once each) */
#define PREFILL_BATCH_ROWS 256
#define DP_MAX_SLOTS_BATCH 64 /* prompts in one batched prefill (more wait for the next pass) */

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- jobs */
dp_job *dp_job_create(void) {
    dp_job *j = dp_calloc(1, sizeof *j);
    if (!j) return NULL;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    atomic_init(&j->cancel, false);
    j->refs = 1;
    j->finish = "length";
    return j;
}

void dp_job_release(dp_job *j) {
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left) return;
    dp_ids_free(&j->prompt);
    for (int i = 0; i < j->n_stop; i++) free(j->stop[i]);
    dp_buf_free(&j->text);
    free(j->tokens);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

/* ---- engine */
typedef struct {
    char *name;
    dp_lora *lora; /* NULL for the base model */
    char *system;  /* default system prompt, NULL = none */
    dp_chat_format format;
} persona;

/* A sequence slot: its own forward context (KV cache; on a GPU, its cache in the engine's one
 * GPU forward), sampler and reply state. */
typedef struct {
    dp_forward fwd; /* CPU only */
    float *logits;  /* (V) the next token's: fwd.logits, or the engine's copy from the GPU */
    dp_sampler sampler;
    dp_ids cached; /* ids whose K/V are in fwd's cache, positions [0, fwd.T) */
    int persona;   /* whose adapter produced the cache (-1: nothing cached) */
    double last_used;
    dp_job *job; /* NULL when free */
    /* the reply in progress */
    dp_ids generated;
    dp_tok_stream stream;
    dp_buf full;  /* every byte decoded so far */
    size_t sent;  /* bytes of full published to job->text */
    int32_t next; /* the token the next decode step feeds */
    bool prefilling; /* the prompt is still going into the cache (cached.n of it so far) */
} slot;

struct dp_engine {
    dp_engine_config cfg;
    dp_tokenizer *tok;        /* the scheduler's (stop strings need no tokenizer) */
    dp_tokenizer *render_tok; /* HTTP threads', under render_mu */
    pthread_mutex_t render_mu;
    dp_model *model;
    persona *personas; /* (n_personas) 0 = base */
    int n_personas;
    char **format_bufs;
    slot *slots;
    int n_slots;
    int32_t stop_ids[16];
    int n_stop_ids;
    int n_valid; /* ids the tokenizer has (<= V) */
    dp_sampler_params defaults;
    uint8_t *seen;     /* (V) scratch for the OpenAI penalties */
    float *raw_logits; /* (V) the logits before sampling, for logprobs */
    /* the batched decode step (continuous batching): one context for the activations of up to
     * n_slots rows over the slots' own caches, and each row's adapter */
    dp_forward batch;
    bool have_batch;
    /* on a GPU: one forward over every slot's cache and every persona's adapter (CPU: NULL) */
    dp_gpu_forward *gpu;
    int *b_slots, *b_adapters; /* (n_slots) a GPU decode step's rows */
    dp_kv *views, **view_ptrs; /* (n_slots) the active slots' caches */
    dp_lora **row_lora;        /* (n_slots) */
    int b_rows;                       /* max(n_slots, PREFILL_BATCH_ROWS) */
    int32_t *b_tokens, *b_pos, *b_cu; /* (b_rows), (b_rows), (n_slots + 1) */
    float *b_logits;                  /* (n_slots, V) */

    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu; /* guards queue, stopping, stats */
    pthread_cond_t cv;
    dp_job **queue; /* (cfg.max_queue) FIFO */
    int q_head, q_len;
    bool stopping;
    atomic_bool abort_all; /* the drain timed out: cancel everything */
    dp_engine_stats stats;
};

int dp_engine_persona_count(const dp_engine *e) {
    return e->n_personas;
}
const char *dp_engine_persona_name(const dp_engine *e, int i) {
    return e->personas[i].name;
}
int dp_engine_max_context(const dp_engine *e) {
    return e->cfg.max_context;
}
int dp_engine_max_tokens(const dp_engine *e) {
    return e->cfg.max_tokens;
}
dp_sampler_params dp_engine_sampler_defaults(const dp_engine *e) {
    return e->defaults;
}

int dp_engine_find_persona(const dp_engine *e, const char *id) {
    for (int i = 0; i < e->n_personas; i++)
        if (!strcmp(e->personas[i].name, id)) return i;
    return -1;
}

/* doppel.json's system prompt and chat format for a persona, as doppel chat reads them */
static int load_persona(dp_engine *e, persona *p, const char *name, const char *dir) {
    char *dj = NULL;
    const char *format_name = e->cfg.chat_format;
    if (!(p->name = dp_strdup(name))) return -1;
    if (dp_lora_load_peft(dir, &e->model->cfg, &p->lora, &dj))
        return dp_fail_context("--adapter %s=%s", name, dir);
    int rc = 0;
    if (dj) {
        rc = dp_adapter_check_base(dj, dir, e->model);
        cJSON *j = rc ? NULL : cJSON_Parse(dj);
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(j, "system_prompt");
        const cJSON *cf = cJSON_GetObjectItemCaseSensitive(j, "chat_format");
        if (!e->cfg.system_prompt && cJSON_IsString(sp) && *sp->valuestring)
            p->system = dp_strdup(sp->valuestring);
        char fmt[32] = "";
        if (!format_name && cJSON_IsString(cf)) snprintf(fmt, sizeof fmt, "%s", cf->valuestring);
        cJSON_Delete(j);
        free(dj);
        if (!rc && *fmt)
            return dp_chat_format_choose(dp_tokenizer_chat_template(e->tok), fmt, &p->format);
    }
    if (!rc && !p->system && e->cfg.system_prompt) p->system = dp_strdup(e->cfg.system_prompt);
    return rc ? rc
              : dp_chat_format_choose(dp_tokenizer_chat_template(e->tok), format_name, &p->format);
}

static void *scheduler_main(void *arg);

dp_engine *dp_engine_create(const dp_engine_config *cfg) {
    dp_engine *e = dp_calloc(1, sizeof *e);
    if (!e) return NULL;
    e->cfg = *cfg;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    pthread_mutex_init(&e->render_mu, NULL);
    if (cfg->slots < 1 || cfg->max_context < 16 || cfg->max_tokens < 1 || cfg->max_queue < 1) {
        dp_fail("serve: need --parallel >= 1, --max-context >= 16, --max-tokens >= 1");
        goto fail;
    }
    e->defaults = dp_sampler_defaults();
    if (dp_sampler_params_from_generation_config(&e->defaults, cfg->model_path)) goto fail;
    if (!(e->tok = dp_model_tokenizer(cfg->model_path))) goto fail;
    if (!(e->render_tok = dp_tokenizer_clone(e->tok))) goto fail;
    dp_load_opts lo = {
        .nf4 = cfg->nf4, .quiet = cfg->quiet, .lm_head_q8 = cfg->lm_head_q8, .decode = cfg->decode};
    if (!(e->model = dp_model_load(cfg->model_path, &lo))) goto fail;
    const dp_model_config *c = &e->model->cfg;
    if (c->max_position > 0 && e->cfg.max_context > c->max_position)
        e->cfg.max_context = c->max_position;
    e->n_valid = dp_tokenizer_vocab_size(e->tok) < c->V ? dp_tokenizer_vocab_size(e->tok) : c->V;

    e->n_personas = 1 + cfg->n_personas;
    if (!(e->personas = dp_calloc((size_t)e->n_personas, sizeof *e->personas))) goto fail;
    if (!(e->personas[0].name = dp_strdup(cfg->base_id))) goto fail;
    if (cfg->system_prompt && !(e->personas[0].system = dp_strdup(cfg->system_prompt))) goto fail;
    if (dp_chat_format_choose(dp_tokenizer_chat_template(e->tok), cfg->chat_format,
                              &e->personas[0].format))
        goto fail;
    for (int i = 0; i < cfg->n_personas; i++) {
        for (int j = 0; j <= i; j++)
            if (!strcmp(cfg->persona_names[i], e->personas[j].name)) {
                dp_fail("--adapter %s: the name is taken (the base model or another adapter); "
                        "give each adapter its own NAME",
                        cfg->persona_names[i]);
                goto fail;
            }
        if (load_persona(e, &e->personas[1 + i], cfg->persona_names[i], cfg->persona_dirs[i]))
            goto fail;
    }

    e->n_stop_ids = dp_chat_stop_ids(e->tok, e->personas[0].format, e->stop_ids, 8);
    for (int p = 1; p < e->n_personas; p++) { /* another persona's format adds its end tokens */
        int32_t more[8];
        int n = dp_chat_stop_ids(e->tok, e->personas[p].format, more, 8);
        for (int i = 0; i < n; i++) {
            bool have = false;
            for (int j = 0; j < e->n_stop_ids; j++) have |= e->stop_ids[j] == more[i];
            if (!have && e->n_stop_ids < 16) e->stop_ids[e->n_stop_ids++] = more[i];
        }
    }
    for (int i = 0; i < c->n_eos && e->n_stop_ids < 16; i++) {
        bool have = false;
        for (int j = 0; j < e->n_stop_ids; j++) have |= e->stop_ids[j] == c->eos_ids[i];
        if (!have) e->stop_ids[e->n_stop_ids++] = c->eos_ids[i];
    }

    if (!(e->seen = dp_calloc((size_t)c->V, 1))) goto fail;
    if (!(e->raw_logits = dp_malloc((size_t)c->V * sizeof(float)))) goto fail;
    if (!(e->queue = dp_calloc((size_t)cfg->max_queue, sizeof *e->queue))) goto fail;
    if (!(e->slots = dp_calloc((size_t)cfg->slots, sizeof *e->slots))) goto fail;
    if (cfg->gpu) { /* the adapters by persona index: the base's entry is NULL */
        const dp_lora **adapters = dp_calloc((size_t)e->n_personas, sizeof *adapters);
        if (!adapters) goto fail;
        for (int p = 0; p < e->n_personas; p++) adapters[p] = e->personas[p].lora;
        int rc = dp_gpu_forward_create_slots(&e->gpu, cfg->gpu, e->model, adapters, e->n_personas,
                                             cfg->slots, e->cfg.max_context, 0, true);
        free(adapters);
        if (rc) goto fail;
        const dp_gf_plan *t = dp_gpu_forward_table(e->gpu);
        if (!cfg->quiet)
            fprintf(stderr,
                    "doppel serve: GPU forward: %.1f MiB of device memory: weights %.1f, KV "
                    "caches %.1f (%d sequences of %d tokens), adapters %.1f, activations %.1f\n",
                    t->total / 1048576.0,
                    (t->bytes[DP_GF_WEIGHTS_NF4] + t->bytes[DP_GF_WEIGHTS_DENSE]) / 1048576.0,
                    t->bytes[DP_GF_KV_CACHE] / 1048576.0, cfg->slots, e->cfg.max_context,
                    t->bytes[DP_GF_LORA] / 1048576.0,
                    (t->bytes[DP_GF_ACTIVATIONS] + t->bytes[DP_GF_DEQUANT]) / 1048576.0);
    }
    for (int i = 0; i < cfg->slots; i++) {
        slot *s = &e->slots[i];
        s->persona = -1;
        if (e->gpu ? !(s->logits = dp_malloc((size_t)c->V * sizeof(float)))
                   : dp_forward_create(&s->fwd, e->model, e->cfg.max_context, 0))
            goto fail;
        if (!e->gpu) s->logits = s->fwd.logits;
        if (dp_sampler_create(&s->sampler, &e->defaults, c->V, e->n_valid)) {
            if (e->gpu)
                free(s->logits);
            else
                dp_forward_free(&s->fwd);
            goto fail;
        }
        e->n_slots++;
    }
    e->stats.slots = e->n_slots;
    if (e->n_slots > 1) {
        size_t n = (size_t)e->n_slots;
        e->b_rows = e->n_slots > PREFILL_BATCH_ROWS ? e->n_slots : PREFILL_BATCH_ROWS;
        if (!e->gpu) { /* the GPU forward prefills slot by slot and decodes all in one step */
            if (dp_forward_create(&e->batch, e->model, e->b_rows, e->b_rows)) goto fail;
            e->have_batch = true;
        }
        if (!(e->b_slots = dp_calloc(n, sizeof *e->b_slots)) ||
            !(e->b_adapters = dp_calloc(n, sizeof *e->b_adapters)) ||
            !(e->views = dp_calloc(n, sizeof *e->views)) ||
            !(e->view_ptrs = dp_calloc(n, sizeof *e->view_ptrs)) ||
            !(e->row_lora = dp_calloc(n, sizeof *e->row_lora)) ||
            !(e->b_tokens = dp_calloc((size_t)e->b_rows, sizeof *e->b_tokens)) ||
            !(e->b_pos = dp_calloc((size_t)e->b_rows, sizeof *e->b_pos)) ||
            !(e->b_cu = dp_calloc(n + 1, sizeof *e->b_cu)) ||
            !(e->b_logits = dp_malloc(n * (size_t)c->V * sizeof(float))))
            goto fail;
    }
    if (pthread_create(&e->thread, NULL, scheduler_main, e)) {
        dp_fail("serve: cannot start the scheduler thread: %s", strerror(errno));
        goto fail;
    }
    e->thread_started = true;
    return e;
fail:
    dp_engine_destroy(e);
    return NULL;
}

void dp_engine_drain(dp_engine *e, double drain_seconds) {
    if (e->thread_started) {
        pthread_mutex_lock(&e->mu);
        e->stopping = true;
        pthread_cond_broadcast(&e->cv);
        pthread_mutex_unlock(&e->mu);
        /* drain: wait for running and queued jobs, then cancel what is left */
        double t_end = now_seconds() + drain_seconds;
        for (;;) {
            pthread_mutex_lock(&e->mu);
            bool idle = e->stats.running == 0 && e->q_len == 0;
            if (!idle && now_seconds() >= t_end) atomic_store(&e->abort_all, true);
            pthread_cond_broadcast(&e->cv);
            pthread_mutex_unlock(&e->mu);
            if (idle || atomic_load(&e->abort_all)) break;
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        pthread_join(e->thread, NULL);
        e->thread_started = false;
    }
}

void dp_engine_destroy(dp_engine *e) {
    if (!e) return;
    dp_engine_drain(e, 0);
    /* the batch context first: each context restores the OpenBLAS threads it found */
    if (e->have_batch) dp_forward_free(&e->batch);
    dp_gpu_forward_free(e->gpu); /* before the adapters and the model it borrows */
    free(e->b_slots);
    free(e->b_adapters);
    free(e->views);
    free(e->view_ptrs);
    free(e->row_lora);
    free(e->b_tokens);
    free(e->b_pos);
    free(e->b_cu);
    free(e->b_logits);
    for (int i = 0; i < e->n_slots; i++) {
        if (e->gpu)
            free(e->slots[i].logits);
        else
            dp_forward_free(&e->slots[i].fwd);
        dp_sampler_free(&e->slots[i].sampler);
        dp_ids_free(&e->slots[i].cached);
        dp_ids_free(&e->slots[i].generated);
        dp_buf_free(&e->slots[i].full);
    }
    free(e->slots);
    for (int i = 0; e->personas && i < e->n_personas; i++) {
        free(e->personas[i].name);
        free(e->personas[i].system);
        dp_lora_free(e->personas[i].lora);
    }
    free(e->personas);
    free(e->queue);
    free(e->seen);
    free(e->raw_logits);
    dp_model_free(e->model);
    dp_tokenizer_free(e->render_tok); /* the clone before its parent */
    dp_tokenizer_free(e->tok);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->render_mu);
    free(e);
}

/* ---- the HTTP side */
int dp_engine_render(dp_engine *e, int pi, const dp_chat_request *req, dp_ids *ids,
                     dp_api_error *err) {
    const persona *p = &e->personas[pi];
    int n = req->n_msgs + (!req->has_system && p->system ? 1 : 0);
    dp_chat_msg *msgs = dp_malloc((size_t)n * sizeof *msgs);
    if (!msgs) return dp_api_fail(err, 500, NULL, NULL, "out of memory");
    int k = 0;
    if (!req->has_system && p->system)
        msgs[k++] = (dp_chat_msg){DP_ROLE_SYSTEM, p->system, strlen(p->system)};
    for (int i = 0; i < req->n_msgs; i++) msgs[k++] = req->msgs[i];
    dp_chat_tokens ct = {0};
    pthread_mutex_lock(&e->render_mu);
    int rc = dp_chat_render(e->render_tok, p->format, msgs, (size_t)n, true, &ct);
    pthread_mutex_unlock(&e->render_mu);
    free(msgs);
    if (rc) {
        dp_chat_tokens_free(&ct);
        return dp_api_fail(err, 400, "messages", "invalid_value", "messages: %s", dp_last_error());
    }
    if ((int)ct.ids.n >= e->cfg.max_context) {
        int have = (int)ct.ids.n;
        dp_chat_tokens_free(&ct);
        return dp_api_fail(err, 400, "messages", "context_length_exceeded",
                           "the conversation renders to %d tokens but the context holds %d "
                           "(prompt and reply); send fewer or shorter messages",
                           have, e->cfg.max_context);
    }
    *ids = ct.ids;
    free(ct.mask);
    return 0;
}

int dp_engine_tokenize(dp_engine *e, const char *text, size_t len, bool add_special, dp_ids *ids,
                       dp_api_error *err) {
    pthread_mutex_lock(&e->render_mu);
    int rc = dp_tokenizer_encode(e->render_tok, text, len, add_special, ids);
    pthread_mutex_unlock(&e->render_mu);
    return rc ? dp_api_fail(err, 400, "content", "invalid_value", "content: %s", dp_last_error())
              : 0;
}

int dp_engine_token_text(dp_engine *e, int32_t id, dp_buf *out, dp_buf *raw) {
    dp_tok_stream st = {0};
    size_t n = 0;
    const char *b = dp_tokenizer_token_bytes(e->tok, id, &n); /* read-only tables */
    if (raw && b && dp_buf_append(raw, b, n)) return -1;
    if (dp_tok_stream_feed(&st, e->tok, id, out)) return -1;
    return dp_tok_stream_flush(&st, out);
}

int dp_engine_submit(dp_engine *e, dp_job *job, dp_api_error *err) {
    pthread_mutex_lock(&e->mu);
    int rc = 0;
    if (e->stopping)
        rc = dp_api_fail(err, 503, NULL, "shutting_down", "the server is shutting down");
    else if (e->q_len == e->cfg.max_queue)
        rc = dp_api_fail(err, 503, NULL, "server_busy",
                         "%d requests are already waiting; try again shortly", e->q_len);
    if (!rc) {
        pthread_mutex_lock(&job->mu);
        job->refs++;
        job->n_prompt = (int)job->prompt.n;
        pthread_mutex_unlock(&job->mu);
        e->queue[(e->q_head + e->q_len++) % e->cfg.max_queue] = job;
        e->stats.queued = e->q_len;
        pthread_cond_broadcast(&e->cv);
    }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

void dp_engine_get_stats(dp_engine *e, dp_engine_stats *s) {
    pthread_mutex_lock(&e->mu);
    *s = e->stats;
    pthread_mutex_unlock(&e->mu);
}

/* ---- the scheduler */
/* the slot's sequence in the backend (its CPU forward, or its cache in the GPU forward: the
 * GPU sequence of slot i is i) */
static int slot_index(const dp_engine *e, const slot *s) {
    return (int)(s - e->slots);
}
static int seq_positions(const dp_engine *e, const slot *s) {
    return e->gpu ? dp_gpu_forward_slot_positions(e->gpu, slot_index(e, s))
                  : dp_forward_cache(&s->fwd).T;
}
static void seq_truncate(dp_engine *e, slot *s, int T) {
    if (e->gpu)
        dp_gpu_forward_slot_truncate(e->gpu, slot_index(e, s), T);
    else
        dp_forward_truncate(&s->fwd, T);
}
/* appends n tokens through the slot's persona, the last one's logits into s->logits */
static int seq_append(dp_engine *e, slot *s, const int32_t *tokens, int n) {
    return e->gpu ? dp_gpu_forward_slot_tokens(e->gpu, slot_index(e, s), s->persona, tokens, n,
                                               s->logits)
                  : dp_forward_tokens(&s->fwd, tokens, n, NULL);
}

static bool cache_full(const dp_engine *e, const slot *s) {
    return seq_positions(e, s) >= e->cfg.max_context;
}

static bool is_stop_id(const dp_engine *e, int32_t id) {
    for (int i = 0; i < e->n_stop_ids; i++)
        if (e->stop_ids[i] == id) return true;
    return false;
}

/* publishes full[sent, upto) to the job and wakes its HTTP thread */
static void publish(slot *s, size_t upto, bool done, const char *finish) {
    dp_job *j = s->job;
    pthread_mutex_lock(&j->mu);
    if (upto > s->sent) dp_buf_append(&j->text, s->full.data + s->sent, upto - s->sent);
    s->sent = upto > s->sent ? upto : s->sent;
    j->n_generated = (int)s->generated.n;
    if (done) {
        j->done = true;
        j->finish = finish;
    }
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

static void finish_seq(dp_engine *e, slot *s, const char *finish, const char *error) {
    dp_job *j = s->job;
    if (!error && strcmp(finish, "cancelled")) {
        dp_tok_stream_flush(&s->stream, &s->full);
        bool hit;
        size_t upto = dp_stop_scan(s->full.data, s->full.len, s->sent, j->stop, j->n_stop, &hit);
        publish(s, hit ? upto : s->full.len, true, hit ? "stop" : finish);
    } else {
        if (error) {
            pthread_mutex_lock(&j->mu);
            snprintf(j->error, sizeof j->error, "%s", error);
            pthread_mutex_unlock(&j->mu);
        }
        publish(s, s->sent, true, error ? "error" : "cancelled");
    }
    pthread_mutex_lock(&e->mu);
    e->stats.generated_tokens += s->generated.n;
    e->stats.requests_done++;
    e->stats.running--;
    pthread_mutex_unlock(&e->mu);
    s->job = NULL;
    s->last_used = now_seconds();
    dp_job_release(j);
}

/* Samples the next token from the slot's logits and publishes its text. Returns true when
 * the sequence goes on (s->next is to be fed by the next decode step). */
static bool sample_and_emit(dp_engine *e, slot *s) {
    dp_job *j = s->job;
    if (atomic_load(&j->cancel) || atomic_load(&e->abort_all)) {
        finish_seq(e, s, "cancelled", NULL);
        return false;
    }
    float *logits = s->logits; /* (V); penalties and temperature modify it */
    const size_t V = (size_t)e->model->cfg.V;
    if (j->logprobs) memcpy(e->raw_logits, logits, V * sizeof *logits);
    if (j->presence_penalty != 0 || j->frequency_penalty != 0)
        dp_apply_openai_penalties(logits, (int)V, s->generated.v, (int)s->generated.n,
                                  j->presence_penalty, j->frequency_penalty, e->seen);
    int32_t id = dp_sampler_sample(&s->sampler, logits, s->cached.v, (int)s->cached.n);
    dp_job_token t = {.id = id};
    if (j->logprobs) /* from the logits before sampling changed them, as llama.cpp reports */
        t.n_top = dp_logprobs(e->raw_logits, e->n_valid, id, &t.logprob, j->top_logprobs, t.top_ids,
                              t.top_logprobs);
    if (is_stop_id(e, id)) {
        finish_seq(e, s, "stop", NULL);
        return false;
    }
    if (dp_ids_push(&s->generated, id) || dp_tok_stream_feed(&s->stream, e->tok, id, &s->full)) {
        finish_seq(e, s, "error", dp_last_error());
        return false;
    }
    if (j->logprobs) {
        pthread_mutex_lock(&j->mu);
        if (j->n_tokens == j->cap_tokens) {
            int cap = j->cap_tokens ? 2 * j->cap_tokens : 64;
            dp_job_token *nt = realloc(j->tokens, (size_t)cap * sizeof *nt);
            if (nt) {
                j->tokens = nt;
                j->cap_tokens = cap;
            }
        }
        if (j->n_tokens < j->cap_tokens) j->tokens[j->n_tokens++] = t;
        pthread_mutex_unlock(&j->mu);
    }
    bool hit;
    size_t upto = dp_stop_scan(s->full.data, s->full.len, s->sent, j->stop, j->n_stop, &hit);
    if (hit) {
        publish(s, upto, true, "stop");
        finish_seq(e, s, "stop", NULL);
        return false;
    }
    publish(s, upto, false, NULL);
    if ((int)s->generated.n >= j->max_tokens || cache_full(e, s)) {
        finish_seq(e, s, "length", NULL);
        return false;
    }
    s->next = id;
    return true;
}

/* A newly admitted job: its slot keeps the longest prefix already in the cache (a continuing
 * chat resends its history); the rest of the prompt goes in by prefill_some. */
static void start_seq(dp_engine *e, slot *s) {
    dp_job *j = s->job;
    const persona *p = &e->personas[j->persona];
    int n = (int)j->prompt.n, reuse = 0;
    if (s->persona == j->persona)
        while (reuse < n - 1 && reuse < (int)s->cached.n &&
               s->cached.v[reuse] == j->prompt.v[reuse])
            reuse++;
    seq_truncate(e, s, reuse);
    s->cached.n = (size_t)reuse;
    s->persona = j->persona;
    if (!e->gpu) dp_forward_set_hook(&s->fwd, p->lora ? dp_lora_hook : NULL, p->lora);
    dp_sampler_set(&s->sampler, &j->sp);
    dp_pcg32_seed(&s->sampler.rng, j->sp.seed, DP_SAMPLER_SEQ); /* every request from its seed */
    s->generated.n = 0;
    s->full.len = 0;
    s->sent = 0;
    memset(&s->stream, 0, sizeof s->stream);
    s->stream.skip_special = true;
    s->prefilling = true;
    pthread_mutex_lock(&j->mu);
    j->n_reused = reuse;
    pthread_mutex_unlock(&j->mu);
    pthread_mutex_lock(&e->mu);
    e->stats.prompt_tokens += (uint64_t)n;
    pthread_mutex_unlock(&e->mu);
}

/* Puts up to `budget` more prompt tokens of a prefilling slot into its cache (budget < 0: all
 * of them); when the prompt is in, samples the first token. Returns the tokens used. Chunks
 * equal one whole prefill: each row's result depends on the positions before it only. */
static int prefill_some(dp_engine *e, slot *s, int budget) {
    dp_job *j = s->job;
    if (atomic_load(&j->cancel) || atomic_load(&e->abort_all)) {
        s->prefilling = false;
        finish_seq(e, s, "cancelled", NULL);
        return 0;
    }
    int done = (int)s->cached.n, n = (int)j->prompt.n - done;
    if (budget >= 0 && n > budget) n = budget;
    double t0 = now_seconds();
    int rc = n > 0 ? seq_append(e, s, j->prompt.v + done, n) : 0;
    for (int i = 0; !rc && i < n; i++) rc = dp_ids_push(&s->cached, j->prompt.v[done + i]);
    pthread_mutex_lock(&e->mu);
    e->stats.prefill_seconds += now_seconds() - t0;
    pthread_mutex_unlock(&e->mu);
    if (rc) {
        s->cached.n = 0;
        seq_truncate(e, s, 0);
        s->prefilling = false;
        finish_seq(e, s, "error", dp_last_error());
        return n;
    }
    if (s->cached.n == j->prompt.n) {
        s->prefilling = false;
        sample_and_emit(e, s);
    } else if (done == j->n_reused) {
        pthread_mutex_lock(&e->mu);
        e->stats.chunked_prompts++; /* its first chunk, and more to come */
        pthread_mutex_unlock(&e->mu);
    }
    return n;
}

/* The prompts of several prefilling slots (pre, n >= 2) in one batched forward, up to `budget`
 * tokens in all (< 0: up to the batch's rows), each slot's rows through its own adapter; the
 * same as prefill_some on each in turn (each row depends on its own sequence's positions
 * only), but the weights are decoded once for all of them. */
static void prefill_batch(dp_engine *e, slot **pre, int n, int budget) {
    const int V = e->model->cfg.V;
    int room = budget >= 0 && budget < e->b_rows ? budget : e->b_rows, k = 0, rows = 0;
    slot *in[DP_MAX_SLOTS_BATCH];
    int take[DP_MAX_SLOTS_BATCH];
    for (int i = 0; i < n && room > 0 && k < DP_MAX_SLOTS_BATCH; i++) {
        slot *s = pre[i];
        dp_job *j = s->job;
        if (atomic_load(&j->cancel) || atomic_load(&e->abort_all)) {
            s->prefilling = false;
            finish_seq(e, s, "cancelled", NULL);
            continue;
        }
        int done = (int)s->cached.n, t = (int)j->prompt.n - done;
        if (t > room) t = room;
        if (t <= 0) continue;
        e->views[k] = dp_forward_cache(&s->fwd);
        e->view_ptrs[k] = &e->views[k];
        e->b_cu[k] = rows;
        e->row_lora[k] = e->personas[s->persona].lora;
        for (int r = 0; r < t; r++) {
            e->b_tokens[rows + r] = j->prompt.v[done + r];
            e->b_pos[rows + r] = e->views[k].T + r;
        }
        in[k] = s, take[k] = t;
        rows += t, room -= t, k++;
    }
    if (!k) return;
    e->b_cu[k] = rows;
    double t0 = now_seconds();
    dp_batch b = {.N = rows, .nseq = k, .tokens = e->b_tokens, .pos = e->b_pos,
                  .cu_seqlens = e->b_cu};
    dp_lora_rows map = {e->row_lora, e->b_cu, k};
    dp_forward_set_hook(&e->batch, dp_lora_rows_hook, &map);
    int rc = dp_forward_batch(&e->batch, e->view_ptrs, &b, e->b_logits, false);
    pthread_mutex_lock(&e->mu);
    e->stats.prefill_seconds += now_seconds() - t0;
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < k; i++) {
        slot *s = in[i];
        dp_job *j = s->job;
        int done = (int)s->cached.n, ok = !rc && !dp_forward_cache_sync(&s->fwd, &e->views[i]);
        for (int r = 0; ok && r < take[i]; r++)
            ok = !dp_ids_push(&s->cached, j->prompt.v[done + r]);
        if (!ok) {
            s->cached.n = 0;
            dp_forward_truncate(&s->fwd, 0);
            s->prefilling = false;
            finish_seq(e, s, "error", dp_last_error());
            continue;
        }
        if (s->cached.n == j->prompt.n) {
            memcpy(s->logits, e->b_logits + (size_t)i * V, (size_t)V * sizeof(float));
            s->prefilling = false;
            sample_and_emit(e, s);
        } else if (done == j->n_reused) {
            pthread_mutex_lock(&e->mu);
            e->stats.chunked_prompts++;
            pthread_mutex_unlock(&e->mu);
        }
    }
}

/* THE decode step: feeds each active sequence's next token at its next position, leaving each
 * slot's logits for sampling. Several sequences advance together in one batched forward
 * (dp_forward_batch over the slots' caches, each row through its own persona's adapter); a
 * lone one takes the one-row path (fused GEMVs). A sequence that fails is finished here (its
 * entry NULLed); a failing batch finishes all of its sequences. */
static void step_alone(dp_engine *e, slot *s, slot **entry) {
    if (seq_append(e, s, &s->next, 1) || dp_ids_push(&s->cached, s->next)) {
        finish_seq(e, s, "error", dp_last_error());
        *entry = NULL;
    }
}

/* After the batched step (rc) over the nb live entries of active[0..n), row r in e->b_logits:
 * counts it; each row takes back its cache (CPU views), its logits and its fed token; a failed
 * step or row finishes its sequence (the entry NULLed). */
static void batched_step_done(dp_engine *e, slot **active, int n, int nb, int rc) {
    const int V = e->model->cfg.V;
    pthread_mutex_lock(&e->mu);
    e->stats.batched_steps++;
    e->stats.batched_rows += (uint64_t)nb;
    pthread_mutex_unlock(&e->mu);
    for (int i = 0, r = 0; i < n; i++) {
        slot *s = active[i];
        if (!s) continue;
        bool ok = !rc && (e->gpu || !dp_forward_cache_sync(&s->fwd, &e->views[r]));
        if (ok) memcpy(s->logits, e->b_logits + (size_t)r * V, (size_t)V * sizeof(float));
        r++;
        if (!ok || dp_ids_push(&s->cached, s->next)) {
            finish_seq(e, s, "error", dp_last_error());
            active[i] = NULL;
        }
    }
}

/* the same on the GPU: the nb non-NULL entries of active[0..n) in one dp_gpu_forward_decode */
static void decode_step_gpu(dp_engine *e, slot **active, int n, int nb) {
    for (int i = 0, k = 0; i < n; i++)
        if (active[i]) {
            e->b_slots[k] = slot_index(e, active[i]);
            e->b_adapters[k] = active[i]->persona;
            e->b_tokens[k++] = active[i]->next;
        }
    int rc = dp_gpu_forward_decode(e->gpu, nb, e->b_slots, e->b_adapters, e->b_tokens, e->b_logits);
    batched_step_done(e, active, n, nb, rc);
}

static void decode_step(dp_engine *e, slot **active, int n) {
    int nb = 0;
    for (int i = 0; i < n; i++) /* a full cache fails alone, with its own message */
        if (cache_full(e, active[i]))
            step_alone(e, active[i], &active[i]);
        else nb++;
    if (nb > 1 && e->gpu) {
        decode_step_gpu(e, active, n, nb);
        return;
    }
    if (nb <= 1 || !e->have_batch) {
        for (int i = 0; i < n; i++)
            if (active[i]) step_alone(e, active[i], &active[i]);
        return;
    }
    int k = 0;
    for (int i = 0; i < n; i++) {
        slot *s = active[i];
        if (!s) continue;
        e->views[k] = dp_forward_cache(&s->fwd);
        e->view_ptrs[k] = &e->views[k];
        e->b_tokens[k] = s->next;
        e->b_pos[k] = e->views[k].T;
        e->b_cu[k] = k;
        e->row_lora[k] = e->personas[s->persona].lora;
        k++;
    }
    e->b_cu[nb] = nb;
    dp_batch b = {.N = nb, .nseq = nb, .tokens = e->b_tokens, .pos = e->b_pos,
                  .cu_seqlens = e->b_cu};
    dp_lora_rows map = {e->row_lora, e->b_cu, nb};
    dp_forward_set_hook(&e->batch, dp_lora_rows_hook, &map);
    int rc = dp_forward_batch(&e->batch, e->view_ptrs, &b, e->b_logits, false);
    batched_step_done(e, active, n, nb, rc);
}

/* a free slot for a job: the same persona's slot that shares the longest prefix, else the one
 * used longest ago */
static slot *pick_slot(dp_engine *e, const dp_job *j) {
    slot *best = NULL;
    int best_reuse = -1;
    for (int i = 0; i < e->n_slots; i++) {
        slot *s = &e->slots[i];
        if (s->job) continue;
        int reuse = 0;
        if (s->persona == j->persona)
            while (reuse < (int)j->prompt.n && reuse < (int)s->cached.n &&
                   s->cached.v[reuse] == j->prompt.v[reuse])
                reuse++;
        if (reuse > best_reuse || (reuse == best_reuse && s->last_used < best->last_used)) {
            best = s;
            best_reuse = reuse;
        }
    }
    return best;
}

/* one pass of the scheduler's loop in the stats (the part of the time that is neither
 * prompts, steps nor sampling is what the loop itself costs) */
static void account_busy(dp_engine *e, double t_busy, double decode_s, double sample_s,
                         int steps, int rows) {
    double busy = now_seconds() - t_busy;
    pthread_mutex_lock(&e->mu);
    e->stats.busy_seconds += busy;
    e->stats.decode_seconds += decode_s;
    e->stats.sample_seconds += sample_s;
    e->stats.steps += (uint64_t)steps;
    e->stats.step_rows += (uint64_t)rows;
    pthread_mutex_unlock(&e->mu);
}

static void *scheduler_main(void *arg) {
    dp_engine *e = arg;
    slot **active = dp_calloc((size_t)e->n_slots, sizeof *active);
    slot **admitted = dp_calloc((size_t)e->n_slots, sizeof *admitted);
    if (!active || !admitted) {
        free(active);
        free(admitted);
        return NULL;
    }
    for (;;) {
        int n_admit = 0, n_active = 0;
        pthread_mutex_lock(&e->mu);
        while (!e->q_len && !e->stats.running && !e->stopping) pthread_cond_wait(&e->cv, &e->mu);
        if (e->stopping && !e->q_len && !e->stats.running) {
            pthread_mutex_unlock(&e->mu);
            break;
        }
        while (e->q_len) {
            dp_job *j = e->queue[e->q_head];
            slot *s = pick_slot(e, j);
            if (!s) break;
            e->q_head = (e->q_head + 1) % e->cfg.max_queue;
            e->q_len--;
            s->job = j;
            admitted[n_admit++] = s;
            e->stats.running++;
        }
        e->stats.queued = e->q_len;
        pthread_mutex_unlock(&e->mu);

        double t_busy = now_seconds();
        for (int i = 0; i < n_admit; i++) start_seq(e, admitted[i]);
        /* chunked prefill: while other conversations are decoding, a pass puts at most
         * PREFILL_CHUNK prompt tokens into the caches, so a long prompt delays their next
         * tokens by one chunk's time, not by the whole prompt's; with nobody decoding, whole
         * prompts (the shortest time to a first token) */
        bool decoding = false;
        for (int i = 0; i < e->n_slots; i++)
            decoding |= e->slots[i].job && !e->slots[i].prefilling;
        int budget = decoding ? PREFILL_CHUNK : -1, n_pre = 0;
        for (int i = 0; i < e->n_slots; i++)
            if (e->slots[i].job && e->slots[i].prefilling) active[n_pre++] = &e->slots[i];
        if (n_pre > 1 && e->have_batch) /* several prompts: one forward for all */
            prefill_batch(e, active, n_pre, budget);
        else
            for (int i = 0; i < n_pre && budget != 0; i++) {
                int used = prefill_some(e, active[i], budget);
                if (budget > 0) budget = used < budget ? budget - used : 0;
            }
        for (int i = 0; i < e->n_slots; i++) /* fresh ones included: their first token is due */
            if (e->slots[i].job && !e->slots[i].prefilling) active[n_active++] = &e->slots[i];
        if (!n_active) {
            account_busy(e, t_busy, 0, 0, 0, 0);
            continue;
        }
        double t0 = now_seconds();
        decode_step(e, active, n_active);
        double t1 = now_seconds();
        for (int i = 0; i < n_active; i++)
            if (active[i]) sample_and_emit(e, active[i]);
        account_busy(e, t_busy, t1 - t0, now_seconds() - t1, 1, n_active);
    }
    free(active);
    free(admitted);
    return NULL;
}
