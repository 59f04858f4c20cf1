/* doppel serve's request side, as pure functions (no model, no sockets, so they can be fuzzed
 * and unit-tested): the OpenAI chat-completions body -> a generation request or an error naming
 * the field, the group-chat mapping (`name` -> `[name]: ` lines, consecutive user messages
 * merged as `doppel prep` writes them), stop-string scanning for streamed text, the OpenAI
 * presence/frequency penalties and the log-probabilities reported by `logprobs`.
 * REFERENCE.md section 8. */
#ifndef DOPPEL_SERVER_REQUEST_H
#define DOPPEL_SERVER_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "data/dataset.h" /* dp_chat_msg */

#ifdef __cplusplus
extern "C" {
#endif

#define DP_API_MAX_STOP         4  /* OpenAI: up to 4 stop sequences */
#define DP_API_MAX_TOP_LOGPROBS 20 /* OpenAI: top_logprobs in [0, 20] */

/* An error as OpenAI shapes it: {"error": {"message", "type", "param", "code"}}. */
typedef struct {
    int status;        /* HTTP status: 400, 401, 404, 413, 500, 503 */
    const char *type;  /* "invalid_request_error", "authentication_error", "server_error" */
    const char *code;  /* NULL, "model_not_found", "context_length_exceeded", ... */
    char param[96];    /* the field at fault ("messages[2].content"), "" when none */
    char message[512]; /* for people: what is wrong and what to send instead */
} dp_api_error;

/* Records an error; returns -1 so parsers can `return dp_api_fail(...)`. */
int dp_api_fail(dp_api_error *e, int status, const char *param, const char *code, const char *fmt,
                ...) __attribute__((format(printf, 5, 6)));

/* A parsed POST /v1/chat/completions body. Unset optional numbers are NAN / -1, so the server's
 * defaults (the model's generation_config, the persona's) fill them. */
typedef struct {
    char *model;       /* persona name or the base model's id */
    dp_chat_msg *msgs; /* (n_msgs) after the group-chat mapping; content is owned */
    int n_msgs;
    bool has_system; /* msgs[0] is a system message from the request */
    float temperature, top_p, min_p, repeat_penalty; /* NAN = default */
    float presence_penalty, frequency_penalty;       /* 0 = off */
    int top_k;                                       /* -1 = default */
    int max_tokens;                                  /* -1 = default */
    bool has_seed;
    uint64_t seed;
    char *stop[DP_API_MAX_STOP]; /* stop strings (never empty) */
    int n_stop;
    bool stream, include_usage;
    bool logprobs;
    int top_logprobs; /* 0..DP_API_MAX_TOP_LOGPROBS */
    char *user;       /* OpenAI's `user` (reported, not used) */
} dp_chat_request;

/* body (len bytes, not NUL-terminated) -> *req. Returns 0, or -1 with *err filled (400 naming
 * the field). Unknown fields are ignored, as OpenAI-compatible servers do; a JSON string
 * holding \u0000 is refused (C strings would silently cut it). */
int dp_chat_request_parse(const char *body, size_t len, dp_chat_request *req, dp_api_error *err);
void dp_chat_request_free(dp_chat_request *req);

/* POST /tokenize body {"content": "text", "add_special": bool} -> text (malloc'd). */
int dp_tokenize_request_parse(const char *body, size_t len, char **content, size_t *content_len,
                              bool *add_special, dp_api_error *err);

/* ---- streaming text and stop strings */
/* text[0, len) is the reply so far. Returns how many bytes may be sent to the client: the
 * position of the first stop string (then *hit = true and the reply ends there), otherwise
 * len minus the longest tail that could still grow into a stop string (held back). Never
 * splits a UTF-8 character. `from` is where the search may start (bytes already sent). */
size_t dp_stop_scan(const char *text, size_t len, size_t from, char *const *stop, int n_stop,
                    bool *hit);

/* ---- numerics */
/* OpenAI's penalties on logits (V), over the ids generated so far (n): each id seen c times
 * loses c * frequency + presence. */
void dp_apply_openai_penalties(float *logits, int V, const int32_t *generated, int n,
                               float presence, float frequency, uint8_t *seen);

/* log softmax(logits[0..n_valid)) at temperature 1 for `id`, and the k most likely ids with
 * their log-probabilities (most likely first, ties by lower id). Computed before sampling
 * changes the logits. Returns k as filled. */
int dp_logprobs(const float *logits, int n_valid, int32_t id, float *id_logprob, int k,
                int32_t *top_ids, float *top_logprobs);

#ifdef __cplusplus
}
#endif
#endif
