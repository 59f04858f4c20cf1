/* doppel serve's HTTP side: libmicrohttpd in thread-per-connection mode, so a connection's
 * thread may wait for its job (non-stream) or block in the SSE reader until the scheduler
 * publishes more text. A closed client socket cancels its job. */
#define _GNU_SOURCE /* POLLRDHUP */
#include "infer/server.h"

#include "data/base/error.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* the page, compiled in from infer/web/ by CMake (infer/web/embed.cmake) */
extern const unsigned char dp_web_index_html[];
extern const size_t dp_web_index_html_len;

static const int counted_statuses[] = {200, 400, 401, 404, 405, 413, 500, 503};
#define N_COUNTED ((int)(sizeof counted_statuses / sizeof *counted_statuses))

struct dp_server {
    dp_http_config cfg;
    struct MHD_Daemon *mhd;
    int port;
    _Atomic(dp_engine *) engine; /* NULL while loading */
    atomic_bool draining;
    atomic_ullong by_status[N_COUNTED + 1]; /* the last: any other status */
    atomic_ullong next_id;
    time_t started;
};

/* per request: the body as it arrives */
typedef struct {
    dp_buf body;
    size_t seen;    /* bytes received, kept or not */
    bool too_large; /* over max_body: the rest is read and dropped, then 413 */
} request_ctx;

/* ---- responses */
static void count_status(dp_server *s, int status) {
    int i = 0;
    while (i < N_COUNTED && counted_statuses[i] != status) i++;
    atomic_fetch_add(&s->by_status[i], 1);
}

static enum MHD_Result send_text(dp_server *s, struct MHD_Connection *c, int status,
                                 const char *type, const void *data, size_t len) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    if (status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    count_status(s, status);
    return rc;
}

static enum MHD_Result send_json(dp_server *s, struct MHD_Connection *c, int status, cJSON *j) {
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!text) return MHD_NO;
    enum MHD_Result rc = send_text(s, c, status, "application/json", text, strlen(text));
    cJSON_free(text);
    return rc;
}

static cJSON *error_json(const dp_api_error *e) {
    cJSON *root = cJSON_CreateObject(), *err = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(err, "message", e->message);
    cJSON_AddStringToObject(err, "type", e->type ? e->type : "invalid_request_error");
    if (*e->param)
        cJSON_AddStringToObject(err, "param", e->param);
    else
        cJSON_AddNullToObject(err, "param");
    if (e->code)
        cJSON_AddStringToObject(err, "code", e->code);
    else
        cJSON_AddNullToObject(err, "code");
    return root;
}

static enum MHD_Result send_error(dp_server *s, struct MHD_Connection *c, const dp_api_error *e) {
    return send_json(s, c, e->status, error_json(e));
}

/* ---- helpers */
static bool client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return true;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/* constant time in the key's length, so timing does not reveal a matching prefix */
static bool key_equal(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = la != lb;
    for (size_t i = 0; i < la; i++) diff |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return !diff;
}

static bool authorized(const dp_server *s, struct MHD_Connection *c) {
    if (!s->cfg.n_api_keys) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7)) return false;
    bool ok = false;
    for (int i = 0; i < s->cfg.n_api_keys; i++) ok |= key_equal(h + 7, s->cfg.api_keys[i]);
    return ok;
}

static void set_timeout(struct MHD_Connection *c, unsigned seconds) {
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, seconds);
}

/* ---- /v1/chat/completions */
typedef struct {
    dp_server *srv;
    dp_engine *eng;
    dp_job *job;
    struct MHD_Connection *conn;
    char id[48], model[128];
    long long created;
    bool include_usage;
    /* stream state */
    dp_buf out;
    size_t out_off;
    size_t text_sent;
    int tokens_sent;
    bool sent_role, finished;
} chat_ctx;

static void add_usage(cJSON *obj, const dp_job *j) {
    cJSON *u = cJSON_AddObjectToObject(obj, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", j->n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", j->n_generated);
    cJSON_AddNumberToObject(u, "total_tokens", j->n_prompt + j->n_generated);
    cJSON *d = cJSON_AddObjectToObject(u, "prompt_tokens_details");
    cJSON_AddNumberToObject(d, "cached_tokens", j->n_reused);
}

/* OpenAI's {token, logprob, bytes} */
static cJSON *token_json(dp_engine *e, int32_t id, float logprob) {
    dp_buf text = {0}, raw = {0};
    cJSON *t = cJSON_CreateObject();
    dp_engine_token_text(e, id, &text, &raw);
    dp_buf_append(&text, "", 1); /* NUL-terminated for cJSON */
    cJSON_AddStringToObject(t, "token", text.data ? text.data : "");
    cJSON_AddNumberToObject(t, "logprob", logprob);
    cJSON *b = cJSON_AddArrayToObject(t, "bytes");
    for (size_t i = 0; i < raw.len; i++)
        cJSON_AddItemToArray(b, cJSON_CreateNumber((unsigned char)raw.data[i]));
    dp_buf_free(&text);
    dp_buf_free(&raw);
    return t;
}

/* {"content": [...]} for tokens [from, to) of the job (caller holds job->mu) */
static cJSON *logprobs_json(dp_engine *e, const dp_job *j, int from, int to) {
    cJSON *lp = cJSON_CreateObject(), *content = cJSON_AddArrayToObject(lp, "content");
    for (int i = from; i < to; i++) {
        const dp_job_token *t = &j->tokens[i];
        cJSON *item = token_json(e, t->id, t->logprob);
        cJSON *top = cJSON_AddArrayToObject(item, "top_logprobs");
        for (int k = 0; k < t->n_top; k++)
            cJSON_AddItemToArray(top, token_json(e, t->top_ids[k], t->top_logprobs[k]));
        cJSON_AddItemToArray(content, item);
    }
    cJSON_AddNullToObject(lp, "refusal");
    return lp;
}

static cJSON *completion_base(const chat_ctx *x, const char *object) {
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "id", x->id);
    cJSON_AddStringToObject(r, "object", object);
    cJSON_AddNumberToObject(r, "created", (double)x->created);
    cJSON_AddStringToObject(r, "model", x->model);
    cJSON_AddStringToObject(r, "system_fingerprint", "doppel-" DOPPEL_VERSION);
    return r;
}

static const char *openai_finish(const char *f) {
    return !strcmp(f, "stop") ? "stop" : "length";
}

/* the whole reply as one chat.completion (caller holds job->mu, the job is done) */
static cJSON *completion_json(const chat_ctx *x) {
    const dp_job *j = x->job;
    cJSON *r = completion_base(x, "chat.completion");
    cJSON *choices = cJSON_AddArrayToObject(r, "choices"), *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", 0);
    cJSON *msg = cJSON_AddObjectToObject(ch, "message");
    cJSON_AddStringToObject(msg, "role", "assistant");
    dp_buf text = {0};
    dp_buf_append(&text, j->text.data ? j->text.data : "", j->text.len);
    dp_buf_append(&text, "", 1);
    cJSON_AddStringToObject(msg, "content", text.data);
    dp_buf_free(&text);
    cJSON_AddNullToObject(msg, "refusal");
    if (j->logprobs)
        cJSON_AddItemToObject(ch, "logprobs", logprobs_json(x->eng, j, 0, j->n_tokens));
    else
        cJSON_AddNullToObject(ch, "logprobs");
    cJSON_AddStringToObject(ch, "finish_reason", openai_finish(j->finish));
    cJSON_AddItemToArray(choices, ch);
    add_usage(r, j);
    return r;
}

static int append_event(dp_buf *out, cJSON *j) {
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!text) return -1;
    int rc = dp_buf_printf(out, "data: %s\n\n", text);
    cJSON_free(text);
    return rc;
}

/* one chat.completion.chunk with a delta; finish NULL = not the last */
static int append_chunk(chat_ctx *x, const char *role, const char *text, size_t len, int tok_from,
                        int tok_to, const char *finish) {
    cJSON *r = completion_base(x, "chat.completion.chunk");
    cJSON *choices = cJSON_AddArrayToObject(r, "choices"), *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", 0);
    cJSON *delta = cJSON_AddObjectToObject(ch, "delta");
    if (role) cJSON_AddStringToObject(delta, "role", role);
    if (text) {
        dp_buf t = {0};
        dp_buf_append(&t, text, len);
        dp_buf_append(&t, "", 1);
        cJSON_AddStringToObject(delta, "content", t.data);
        dp_buf_free(&t);
    }
    if (x->job->logprobs && tok_to > tok_from)
        cJSON_AddItemToObject(ch, "logprobs", logprobs_json(x->eng, x->job, tok_from, tok_to));
    else
        cJSON_AddNullToObject(ch, "logprobs");
    if (finish)
        cJSON_AddStringToObject(ch, "finish_reason", finish);
    else
        cJSON_AddNullToObject(ch, "finish_reason");
    cJSON_AddItemToArray(choices, ch);
    if (x->include_usage) cJSON_AddNullToObject(r, "usage");
    return append_event(&x->out, r);
}

/* Fills x->out with the next SSE events, waiting for the scheduler; false when the client
 * went away (the job is cancelled). */

/* waits on the job's condition for at most 100 ms (j->mu held), so the caller can look at its
 * client's socket between waits */
static void wait_a_little(dp_job *j) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100 * 1000 * 1000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&j->cv, &j->mu, &ts);
}
static bool produce_events(chat_ctx *x) {
    dp_job *j = x->job;
    x->out.len = x->out_off = 0;
    if (!x->sent_role) { /* OpenAI's first chunk: the role and an empty content */
        x->sent_role = true;
        pthread_mutex_lock(&j->mu);
        append_chunk(x, "assistant", "", 0, 0, 0, NULL);
        pthread_mutex_unlock(&j->mu);
        return true;
    }
    pthread_mutex_lock(&j->mu);
    while (!j->done && j->text.len == x->text_sent && j->n_tokens == x->tokens_sent) {
        wait_a_little(j);
        if (!j->done && client_gone(x->conn)) {
            atomic_store(&j->cancel, true);
            pthread_mutex_unlock(&j->mu);
            return false;
        }
    }
    if (j->text.len > x->text_sent || j->n_tokens > x->tokens_sent) {
        append_chunk(x, NULL, j->text.data + x->text_sent, j->text.len - x->text_sent,
                     x->tokens_sent, j->n_tokens, NULL);
        x->text_sent = j->text.len;
        x->tokens_sent = j->n_tokens;
    }
    if (j->done) {
        x->finished = true;
        if (!strcmp(j->finish, "error")) { /* headers are sent: the error goes in the stream */
            dp_api_error e;
            dp_api_fail(&e, 500, NULL, NULL, "generation failed: %s", j->error);
            append_event(&x->out, error_json(&e));
        } else {
            append_chunk(x, NULL, NULL, 0, 0, 0, openai_finish(j->finish));
            if (x->include_usage) {
                cJSON *r = completion_base(x, "chat.completion.chunk");
                cJSON_AddArrayToObject(r, "choices");
                add_usage(r, j);
                append_event(&x->out, r);
            }
        }
        dp_buf_puts(&x->out, "data: [DONE]\n\n");
    }
    pthread_mutex_unlock(&j->mu);
    return true;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    chat_ctx *x = cls;
    while (x->out_off == x->out.len) {
        if (x->finished) return MHD_CONTENT_READER_END_OF_STREAM;
        if (!produce_events(x)) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = x->out.len - x->out_off;
    if (n > max) n = max;
    memcpy(buf, x->out.data + x->out_off, n);
    x->out_off += n;
    /* 0 then the limit restarts the idle timer: a client that stops reading is dropped after
     * timeout_s, while waiting for the model never counts */
    set_timeout(x->conn, 0);
    set_timeout(x->conn, (unsigned)x->srv->cfg.timeout_s);
    return (ssize_t)n;
}

static void chat_ctx_free(void *cls) {
    chat_ctx *x = cls;
    if (!x) return;
    if (x->job) {
        atomic_store(&x->job->cancel, true); /* no-op when done; stops it when the client left */
        dp_job_release(x->job);
    }
    dp_buf_free(&x->out);
    free(x);
}

static enum MHD_Result handle_chat(dp_server *s, dp_engine *e, struct MHD_Connection *c,
                                   const char *body, size_t len) {
    dp_api_error err;
    dp_chat_request req;
    if (dp_chat_request_parse(body, len, &req, &err)) return send_error(s, c, &err);
    int pi = dp_engine_find_persona(e, req.model);
    if (pi < 0) {
        dp_api_fail(&err, 404, "model", "model_not_found",
                    "The model `%s` does not exist; GET /v1/models lists the personas", req.model);
        dp_chat_request_free(&req);
        return send_error(s, c, &err);
    }
    if (req.max_tokens > dp_engine_max_tokens(e)) {
        dp_api_fail(&err, 400, "max_tokens", "invalid_value",
                    "max_tokens is %d but this server allows at most %d (--max-tokens)",
                    req.max_tokens, dp_engine_max_tokens(e));
        dp_chat_request_free(&req);
        return send_error(s, c, &err);
    }
    dp_job *j = dp_job_create();
    chat_ctx *x = dp_calloc(1, sizeof *x);
    if (!j || !x) {
        dp_job_release(j);
        free(x);
        dp_chat_request_free(&req);
        dp_api_fail(&err, 500, NULL, NULL, "out of memory");
        return send_error(s, c, &err);
    }
    x->srv = s;
    x->eng = e;
    x->job = j;
    x->conn = c;
    x->created = (long long)time(NULL);
    x->include_usage = req.include_usage;
    snprintf(x->id, sizeof x->id, "chatcmpl-%llx%08llx", (unsigned long long)s->started,
             (unsigned long long)atomic_fetch_add(&s->next_id, 1));
    snprintf(x->model, sizeof x->model, "%s", req.model);
    j->persona = pi;
    j->sp = dp_engine_sampler_defaults(e);
    if (!isnan(req.temperature)) j->sp.temperature = req.temperature;
    if (!isnan(req.top_p)) j->sp.top_p = req.top_p;
    if (!isnan(req.min_p)) j->sp.min_p = req.min_p;
    if (!isnan(req.repeat_penalty)) j->sp.repeat_penalty = req.repeat_penalty;
    if (req.top_k >= 0) j->sp.top_k = req.top_k;
    if (req.has_seed) {
        j->sp.seed = req.seed;
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        j->sp.seed =
            (uint64_t)ts.tv_nsec * 2654435761u ^ (uint64_t)ts.tv_sec ^ atomic_load(&s->next_id);
    }
    j->presence_penalty = req.presence_penalty;
    j->frequency_penalty = req.frequency_penalty;
    j->max_tokens = req.max_tokens > 0 ? req.max_tokens : dp_engine_max_tokens(e);
    for (int i = 0; i < req.n_stop; i++) { /* the job takes the strings */
        j->stop[i] = req.stop[i];
        req.stop[i] = NULL;
    }
    j->n_stop = req.n_stop;
    req.n_stop = 0;
    j->logprobs = req.logprobs;
    j->top_logprobs = req.top_logprobs;
    bool stream = req.stream;
    int rc = dp_engine_render(e, pi, &req, &j->prompt, &err);
    dp_chat_request_free(&req);
    if (!rc) rc = dp_engine_submit(e, j, &err);
    if (rc) {
        chat_ctx_free(x);
        return send_error(s, c, &err);
    }
    set_timeout(c, 0); /* the model's time is not the client's idleness */

    if (stream) {
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096,
                                                                   stream_reader, x, chat_ctx_free);
        if (!r) {
            chat_ctx_free(x);
            return MHD_NO;
        }
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        enum MHD_Result q = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        count_status(s, 200);
        return q;
    }
    /* non-stream: wait here (this connection's own thread), watching for a closed socket */
    pthread_mutex_lock(&j->mu);
    bool gone = false;
    while (!j->done) {
        wait_a_little(j);
        if (!j->done && !gone && client_gone(c)) {
            gone = true;
            atomic_store(&j->cancel, true); /* the scheduler finishes it as "cancelled" */
        }
    }
    enum MHD_Result q;
    set_timeout(c, (unsigned)s->cfg.timeout_s);
    if (!strcmp(j->finish, "error")) {
        dp_api_fail(&err, 500, NULL, NULL, "generation failed: %s", j->error);
        pthread_mutex_unlock(&j->mu);
        q = send_error(s, c, &err);
    } else if (gone || !strcmp(j->finish, "cancelled")) {
        pthread_mutex_unlock(&j->mu);
        count_status(s, 499); /* nginx's "client closed request", counted as other */
        q = MHD_NO;           /* closes the connection */
    } else {
        cJSON *r = completion_json(x);
        pthread_mutex_unlock(&j->mu);
        q = send_json(s, c, 200, r);
    }
    chat_ctx_free(x);
    return q;
}

/* ---- the other endpoints */
static enum MHD_Result handle_models(dp_server *s, dp_engine *e, struct MHD_Connection *c) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    for (int i = 0; i < dp_engine_persona_count(e); i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "id", dp_engine_persona_name(e, i));
        cJSON_AddStringToObject(m, "object", "model");
        cJSON_AddNumberToObject(m, "created", (double)s->started);
        cJSON_AddStringToObject(m, "owned_by", i ? "doppel-persona" : "doppel-base");
        cJSON_AddItemToArray(data, m);
    }
    return send_json(s, c, 200, root);
}

static enum MHD_Result handle_tokenize(dp_server *s, dp_engine *e, struct MHD_Connection *c,
                                       const char *body, size_t len) {
    dp_api_error err;
    char *text = NULL;
    size_t tl = 0;
    bool special;
    dp_ids ids = {0};
    if (dp_tokenize_request_parse(body, len, &text, &tl, &special, &err) ||
        dp_engine_tokenize(e, text, tl, special, &ids, &err)) {
        free(text);
        dp_ids_free(&ids);
        return send_error(s, c, &err);
    }
    free(text);
    cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "tokens");
    for (size_t i = 0; i < ids.n; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids.v[i]));
    dp_ids_free(&ids);
    return send_json(s, c, 200, root);
}

static enum MHD_Result handle_metrics(dp_server *s, dp_engine *e, struct MHD_Connection *c) {
    dp_buf b = {0};
    dp_engine_stats st = {0};
    if (e) dp_engine_get_stats(e, &st);
    dp_buf_puts(&b, "# HELP doppel_requests_total HTTP requests answered, by status.\n"
                    "# TYPE doppel_requests_total counter\n");
    for (int i = 0; i <= N_COUNTED; i++) {
        unsigned long long n = atomic_load(&s->by_status[i]);
        if (i < N_COUNTED)
            dp_buf_printf(&b, "doppel_requests_total{status=\"%d\"} %llu\n", counted_statuses[i],
                          n);
        else
            dp_buf_printf(&b, "doppel_requests_total{status=\"other\"} %llu\n", n);
    }
    dp_buf_printf(&b,
                  "# HELP doppel_prompt_tokens_total Prompt tokens received.\n"
                  "# TYPE doppel_prompt_tokens_total counter\n"
                  "doppel_prompt_tokens_total %llu\n"
                  "# HELP doppel_tokens_predicted_total Tokens generated.\n"
                  "# TYPE doppel_tokens_predicted_total counter\n"
                  "doppel_tokens_predicted_total %llu\n"
                  "# HELP doppel_prompt_seconds_total Scheduler time spent on prompts.\n"
                  "# TYPE doppel_prompt_seconds_total counter\n"
                  "doppel_prompt_seconds_total %.6f\n"
                  "# HELP doppel_tokens_predicted_seconds_total Scheduler time spent decoding.\n"
                  "# TYPE doppel_tokens_predicted_seconds_total counter\n"
                  "doppel_tokens_predicted_seconds_total %.6f\n"
                  "# HELP doppel_predicted_tokens_seconds Generated tokens per decoding second.\n"
                  "# TYPE doppel_predicted_tokens_seconds gauge\n"
                  "doppel_predicted_tokens_seconds %.3f\n"
                  "# HELP doppel_requests_processing Requests being generated.\n"
                  "# TYPE doppel_requests_processing gauge\n"
                  "doppel_requests_processing %d\n"
                  "# HELP doppel_requests_deferred Requests waiting for a slot.\n"
                  "# TYPE doppel_requests_deferred gauge\n"
                  "doppel_requests_deferred %d\n"
                  "# HELP doppel_slots Sequences decoded together.\n"
                  "# TYPE doppel_slots gauge\n"
                  "doppel_slots %d\n"
                  "# HELP doppel_batched_steps_total Decode steps that advanced several sequences.\n"
                  "# TYPE doppel_batched_steps_total counter\n"
                  "doppel_batched_steps_total %llu\n"
                  "# HELP doppel_batched_rows_total Sequences advanced by those steps.\n"
                  "# TYPE doppel_batched_rows_total counter\n"
                  "doppel_batched_rows_total %llu\n"
                  "# HELP doppel_decode_steps_total Decode steps (one sequence or several).\n"
                  "# TYPE doppel_decode_steps_total counter\n"
                  "doppel_decode_steps_total %llu\n"
                  "# HELP doppel_decode_rows_total Sequences advanced by the decode steps.\n"
                  "# TYPE doppel_decode_rows_total counter\n"
                  "doppel_decode_rows_total %llu\n"
                  "# HELP doppel_sample_seconds_total Scheduler time sampling and publishing.\n"
                  "# TYPE doppel_sample_seconds_total counter\n"
                  "doppel_sample_seconds_total %.6f\n"
                  "# HELP doppel_busy_seconds_total Scheduler time with work to do (all of it).\n"
                  "# TYPE doppel_busy_seconds_total counter\n"
                  "doppel_busy_seconds_total %.6f\n",
                  (unsigned long long)st.prompt_tokens, (unsigned long long)st.generated_tokens,
                  st.prefill_seconds, st.decode_seconds,
                  st.decode_seconds > 0 ? st.generated_tokens / st.decode_seconds : 0.0, st.running,
                  st.queued, st.slots, (unsigned long long)st.batched_steps,
                  (unsigned long long)st.batched_rows, (unsigned long long)st.steps,
                  (unsigned long long)st.step_rows, st.sample_seconds, st.busy_seconds);
    enum MHD_Result rc = send_text(s, c, 200, "text/plain; version=0.0.4", b.data, b.len);
    dp_buf_free(&b);
    return rc;
}

/* ---- routing */
static void request_done(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    request_ctx *r = *con_cls;
    if (r) {
        dp_buf_free(&r->body);
        free(r);
    }
    *con_cls = NULL;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls) {
    (void)version;
    dp_server *s = cls;
    request_ctx *r = *con_cls;
    if (!r) {
        if (!(r = calloc(1, sizeof *r))) return MHD_NO;
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_size) { /* the body, in pieces: kept up to max_body, the rest only counted */
        r->seen += *upload_size;
        if (!r->too_large && r->body.len + *upload_size > r->body.len &&
            r->body.len + *upload_size <= s->cfg.max_body) {
            if (dp_buf_append(&r->body, upload, *upload_size)) return MHD_NO;
        } else {
            r->too_large = true;
            dp_buf_free(&r->body);
        }
        *upload_size = 0;
        /* a body far beyond the limit is not read to its end */
        if (r->seen / 16 > s->cfg.max_body) return MHD_NO;
        return MHD_YES;
    }

    dp_api_error err;
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
    dp_engine *e = atomic_load(&s->engine);
    bool draining = atomic_load(&s->draining);
    if (!strcmp(url, "/health")) { /* no key needed, as llama.cpp's */
        if (e && !draining)
            return send_text(s, c, 200, "application/json", "{\"status\":\"ok\"}", 15);
        dp_api_fail(&err, 503, NULL, "unavailable",
                    draining ? "the server is shutting down" : "Loading model");
        return send_error(s, c, &err);
    }
    if (!strcmp(url, "/") || !strcmp(url, "/index.html")) {
        if (!get) goto method;
        return send_text(s, c, 200, "text/html; charset=utf-8", dp_web_index_html,
                         dp_web_index_html_len);
    }
    static const char *const api[] = {"/v1/chat/completions",
                                      "/chat/completions",
                                      "/v1/models",
                                      "/models",
                                      "/tokenize",
                                      "/metrics"};
    int route = -1;
    for (int i = 0; i < (int)(sizeof api / sizeof *api); i++)
        if (!strcmp(url, api[i])) route = i;
    if (route < 0) {
        dp_api_fail(&err, 404, NULL, "unknown_url", "Unknown request URL: %s %s", method, url);
        return send_error(s, c, &err);
    }
    if (!authorized(s, c)) {
        dp_api_fail(&err, 401, NULL, "invalid_api_key",
                    "Incorrect or missing API key: send the header `Authorization: Bearer KEY`");
        return send_error(s, c, &err);
    }
    if (r->too_large) {
        dp_api_fail(&err, 413, NULL, "request_too_large",
                    "the request body has %zu bytes; this server accepts at most %zu", r->seen,
                    s->cfg.max_body);
        return send_error(s, c, &err);
    }
    bool wants_post = route <= 1 || route == 4;
    if (wants_post ? !post : !get) goto method;
    if (route == 5) return handle_metrics(s, e, c);
    if (!e || draining) {
        dp_api_fail(&err, 503, NULL, "unavailable",
                    draining ? "the server is shutting down" : "Loading model");
        return send_error(s, c, &err);
    }
    const char *body = r->body.data ? r->body.data : "";
    if (route <= 1) return handle_chat(s, e, c, body, r->body.len);
    if (route <= 3) return handle_models(s, e, c);
    return handle_tokenize(s, e, c, body, r->body.len);
method:
    dp_api_fail(&err, 405, NULL, "method_not_allowed", "%s does not accept %s", url, method);
    return send_error(s, c, &err);
}

/* ---- lifecycle */
dp_server *dp_server_start(const dp_http_config *cfg) {
    dp_server *s = dp_calloc(1, sizeof *s);
    if (!s) return NULL;
    s->cfg = *cfg;
    s->started = time(NULL);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->port);
    int g = getaddrinfo(cfg->host, port, &hints, &ai);
    if (g) {
        dp_fail("--host %s: %s", cfg->host, gai_strerror(g));
        free(s);
        return NULL;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC |
                     (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    s->mhd =
        MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, handle, s, MHD_OPTION_SOCK_ADDR,
                         ai->ai_addr, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->timeout_s,
                         MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
                         MHD_OPTION_NOTIFY_COMPLETED, request_done, s, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->mhd) {
        dp_fail("cannot listen on %s port %d (in use, or not an address of this machine); "
                "choose another --port or --host",
                cfg->host, cfg->port);
        free(s);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    return s;
}

int dp_server_port(const dp_server *s) {
    return s->port;
}
void dp_server_set_engine(dp_server *s, dp_engine *e) {
    atomic_store(&s->engine, e);
}
void dp_server_begin_drain(dp_server *s) {
    atomic_store(&s->draining, true);
}

void dp_server_stop(dp_server *s) {
    if (!s) return;
    MHD_stop_daemon(s->mhd);
    free(s);
}
