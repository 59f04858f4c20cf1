/* The OpenAI chat-completions request as doppel serve reads it: JSON body -> dp_chat_request
 * (pure, fuzzed by tests/fuzz/fuzz_serve_request.c), stop strings, penalties, logprobs. */
#include "infer/server_request.h"

#include "data/base/error.h"
#include "data/base/io.h"
#include "data/base/json.h"
#include "data/base/utf8.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int dp_api_fail(dp_api_error *e, int status, const char *param, const char *code, const char *fmt,
                ...) {
    e->status = status;
    e->type = status == 401   ? "authentication_error"
              : status >= 500 ? "server_error"
                              : "invalid_request_error";
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- field readers: each names its field in the error */
static bool present(const cJSON *v) {
    return v && !cJSON_IsNull(v);
}

/* a number in [lo, hi]; integer when asked. Absent/null keeps *out. */
static int read_number(const cJSON *root, const char *key, double lo, double hi, bool integer,
                       double *out, dp_api_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!present(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return dp_api_fail(e, 400, key, "invalid_type", "%s must be a %s", key,
                           integer ? "integer" : "number");
    double d = v->valuedouble;
    if (integer && d != floor(d))
        return dp_api_fail(e, 400, key, "invalid_type", "%s must be an integer, not %g", key, d);
    if (d < lo || d > hi)
        return dp_api_fail(e, 400, key, "invalid_value", "%s must be between %g and %g, not %g",
                           key, lo, hi, d);
    *out = d;
    return 0;
}

static int read_bool(const cJSON *root, const char *key, bool *out, dp_api_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!present(v)) return 0;
    if (!cJSON_IsBool(v))
        return dp_api_fail(e, 400, key, "invalid_type", "%s must be true or false", key);
    *out = cJSON_IsTrue(v);
    return 0;
}

static int check_utf8(const char *s, const char *param, dp_api_error *e) {
    size_t n = strlen(s);
    if (dp_utf8_valid_prefix(s, n) != n)
        return dp_api_fail(e, 400, param, "invalid_value", "%s is not valid UTF-8", param);
    return 0;
}

/* message content: a string, or OpenAI's array of {"type": "text", "text"} parts (joined with
 * "\n"); null is "" (an assistant turn that only called tools). */
static int read_content(const cJSON *m, int i, dp_buf *out, dp_api_error *e) {
    char param[64];
    snprintf(param, sizeof param, "messages[%d].content", i);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (!present(c)) return 0;
    if (cJSON_IsString(c)) {
        if (check_utf8(c->valuestring, param, e)) return -1;
        return dp_buf_puts(out, c->valuestring) ? dp_api_fail(e, 500, NULL, NULL, "out of memory")
                                                : 0;
    }
    if (!cJSON_IsArray(c))
        return dp_api_fail(e, 400, param, "invalid_type",
                           "%s must be a string or an array of text parts", param);
    int k = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, c) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") || !cJSON_IsString(text)) {
            snprintf(param, sizeof param, "messages[%d].content[%d]", i, k);
            return dp_api_fail(e, 400, param, "invalid_value",
                               "%s: only {\"type\": \"text\", \"text\": ...} parts are supported",
                               param);
        }
        snprintf(param, sizeof param, "messages[%d].content[%d].text", i, k);
        if (check_utf8(text->valuestring, param, e)) return -1;
        if ((k && dp_buf_puts(out, "\n")) || dp_buf_puts(out, text->valuestring))
            return dp_api_fail(e, 500, NULL, NULL, "out of memory");
        k++;
    }
    return 0;
}

/* A user message's `name`: the speaker in `[name]: text`, as doppel prep writes other people's
 * lines. A newline or bracket in it would make a line that prep never writes. */
static int read_name(const cJSON *m, int i, const char **name, dp_api_error *e) {
    char param[64];
    snprintf(param, sizeof param, "messages[%d].name", i);
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(m, "name");
    *name = NULL;
    if (!present(n)) return 0;
    if (!cJSON_IsString(n))
        return dp_api_fail(e, 400, param, "invalid_type", "%s must be a string", param);
    if (check_utf8(n->valuestring, param, e)) return -1;
    for (const char *p = n->valuestring; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == ']')
            return dp_api_fail(e, 400, param, "invalid_value",
                               "%s must not hold control characters or ']'", param);
    if (*n->valuestring) *name = n->valuestring;
    return 0;
}

static int push_msg(dp_chat_request *r, dp_role role, dp_buf *text, dp_api_error *e) {
    dp_chat_msg *m = dp_realloc(r->msgs, (size_t)(r->n_msgs + 1) * sizeof *m);
    if (!m) return dp_api_fail(e, 500, NULL, NULL, "out of memory");
    r->msgs = m;
    char *content = text->data ? text->data : dp_strdup("");
    if (!content) return dp_api_fail(e, 500, NULL, NULL, "out of memory");
    r->msgs[r->n_msgs++] = (dp_chat_msg){role, content, text->len};
    memset(text, 0, sizeof *text); /* the message owns it now */
    return 0;
}

/* messages -> r->msgs: roles checked, `name` prefixes applied, a run of user messages merged
 * into one user turn of lines joined with "\n" (prep's rule, REFERENCE.md section 2). */
static int read_messages(const cJSON *root, dp_chat_request *r, dp_api_error *e) {
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!present(msgs))
        return dp_api_fail(e, 400, "messages", "missing_required_parameter",
                           "messages is required: a list of {\"role\", \"content\"}");
    if (!cJSON_IsArray(msgs) || !cJSON_GetArraySize(msgs))
        return dp_api_fail(e, 400, "messages", "invalid_value",
                           "messages must be a non-empty list of {\"role\", \"content\"}");
    dp_buf user = {0}; /* the user turn being merged */
    bool in_user = false;
    int i = 0, rc = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        char param[64];
        snprintf(param, sizeof param, "messages[%d]", i);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsObject(m)) {
            rc = dp_api_fail(e, 400, param, "invalid_type", "%s must be an object", param);
            break;
        }
        snprintf(param, sizeof param, "messages[%d].role", i);
        dp_role rl;
        if (!cJSON_IsString(role)) {
            rc = dp_api_fail(e, 400, param, "missing_required_parameter",
                             "%s is required: \"system\", \"user\" or \"assistant\"", param);
            break;
        }
        if (!strcmp(role->valuestring, "developer")) /* OpenAI's newer name for system */
            rl = DP_ROLE_SYSTEM;
        else if (dp_role_parse(role->valuestring, &rl) || rl == DP_ROLE_TOOL) {
            rc = dp_api_fail(e, 400, param, "invalid_value",
                             "%s must be \"system\", \"user\" or \"assistant\" (tools are not "
                             "supported)",
                             param);
            break;
        }
        const char *name = NULL;
        dp_buf text = {0};
        if (rl == DP_ROLE_USER && read_name(m, i, &name, e)) rc = -1;
        if (!rc && name && dp_buf_printf(&text, "[%s]: ", name))
            rc = dp_api_fail(e, 500, NULL, NULL, "out of memory");
        if (!rc) rc = read_content(m, i, &text, e);
        if (!rc && rl == DP_ROLE_USER) {
            if ((in_user && dp_buf_puts(&user, "\n")) ||
                (text.len && dp_buf_append(&user, text.data, text.len)))
                rc = dp_api_fail(e, 500, NULL, NULL, "out of memory");
            in_user = true;
        } else if (!rc) {
            if (in_user) rc = push_msg(r, DP_ROLE_USER, &user, e);
            in_user = false;
            if (!rc) rc = push_msg(r, rl, &text, e);
            if (!rc && rl == DP_ROLE_SYSTEM && r->n_msgs == 1) r->has_system = true;
        }
        dp_buf_free(&text);
        if (rc) break;
        i++;
    }
    if (!rc && in_user) rc = push_msg(r, DP_ROLE_USER, &user, e);
    dp_buf_free(&user);
    return rc;
}

static int read_stop(const cJSON *root, dp_chat_request *r, dp_api_error *e) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(root, "stop");
    if (!present(s)) return 0;
    const cJSON *one = s;
    int n = 1;
    if (cJSON_IsArray(s)) {
        n = cJSON_GetArraySize(s);
        if (n > DP_API_MAX_STOP)
            return dp_api_fail(e, 400, "stop", "invalid_value",
                               "stop holds %d strings; at most %d are allowed", n, DP_API_MAX_STOP);
        one = s->child;
    } else if (!cJSON_IsString(s)) {
        return dp_api_fail(e, 400, "stop", "invalid_type",
                           "stop must be a string or a list of up to %d strings", DP_API_MAX_STOP);
    }
    for (int i = 0; i < n; i++, one = one->next) {
        char param[32];
        snprintf(param, sizeof param, cJSON_IsArray(s) ? "stop[%d]" : "stop", i);
        if (!cJSON_IsString(one))
            return dp_api_fail(e, 400, param, "invalid_type", "%s must be a string", param);
        if (check_utf8(one->valuestring, param, e)) return -1;
        if (!*one->valuestring) continue; /* an empty stop string would end every reply at once */
        if (!(r->stop[r->n_stop] = dp_strdup(one->valuestring)))
            return dp_api_fail(e, 500, NULL, NULL, "out of memory");
        r->n_stop++;
    }
    return 0;
}

int dp_chat_request_parse(const char *body, size_t len, dp_chat_request *r, dp_api_error *e) {
    memset(r, 0, sizeof *r);
    r->temperature = r->top_p = r->min_p = r->repeat_penalty = NAN;
    r->top_k = r->max_tokens = -1;
    if (memchr(body, 0, len))
        return dp_api_fail(e, 400, NULL, NULL, "the request body holds a NUL byte; send JSON text");
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return dp_api_fail(e, 400, NULL, NULL,
                           "the request body is not a JSON object (expected {\"model\", "
                           "\"messages\", ...})");
    }
    char path[96];
    int rc = 0;
    double d;
    const cJSON *v;
    if (dp_json_find_nul(body, len, path, sizeof path)) {
        rc = dp_api_fail(e, 400, path, "invalid_value",
                         "%s holds \\u0000 (a NUL character), which doppel does not accept", path);
        goto out;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!present(v)) {
        rc = dp_api_fail(e, 400, "model", "missing_required_parameter",
                         "model is required: a persona name or the base model (GET /v1/models "
                         "lists them)");
        goto out;
    }
    if (!cJSON_IsString(v)) {
        rc = dp_api_fail(e, 400, "model", "invalid_type", "model must be a string");
        goto out;
    }
    if (!(r->model = dp_strdup(v->valuestring))) {
        rc = dp_api_fail(e, 500, NULL, NULL, "out of memory");
        goto out;
    }
    if ((rc = read_messages(root, r, e))) goto out;
#define NUMBER(key, lo, hi, integer, dst)                                                          \
    d = NAN;                                                                                       \
    if ((rc = read_number(root, key, lo, hi, integer, &d, e))) goto out;                           \
    if (!isnan(d)) dst = d;
    NUMBER("temperature", 0, 2, false, r->temperature)
    NUMBER("top_p", 1e-6, 1, false, r->top_p)
    NUMBER("min_p", 0, 1, false, r->min_p)
    NUMBER("repeat_penalty", 0.01, 100, false, r->repeat_penalty)
    NUMBER("presence_penalty", -2, 2, false, r->presence_penalty)
    NUMBER("frequency_penalty", -2, 2, false, r->frequency_penalty)
    NUMBER("top_k", 0, 1e9, true, r->top_k)
    NUMBER("max_tokens", 1, 1e9, true, r->max_tokens)
    NUMBER("max_completion_tokens", 1, 1e9, true, r->max_tokens) /* the newer name wins */
    NUMBER("top_logprobs", 0, DP_API_MAX_TOP_LOGPROBS, true, r->top_logprobs)
    d = NAN;
    if ((rc = read_number(root, "seed", -9007199254740992.0, 9007199254740992.0, true, &d, e)))
        goto out;
    if (!isnan(d)) {
        r->has_seed = true;
        r->seed = (uint64_t)(int64_t)d;
    }
    d = 1;
    if ((rc = read_number(root, "n", 1, 1e9, true, &d, e))) goto out;
    if (d != 1) {
        rc = dp_api_fail(e, 400, "n", "invalid_value", "only n = 1 is supported");
        goto out;
    }
#undef NUMBER
    if ((rc = read_stop(root, r, e)) || (rc = read_bool(root, "stream", &r->stream, e)) ||
        (rc = read_bool(root, "logprobs", &r->logprobs, e)))
        goto out;
    if (r->top_logprobs > 0 && !r->logprobs) {
        rc = dp_api_fail(e, 400, "top_logprobs", "invalid_value",
                         "top_logprobs needs \"logprobs\": true");
        goto out;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (present(v)) {
        if (!cJSON_IsObject(v)) {
            rc = dp_api_fail(e, 400, "stream_options", "invalid_type",
                             "stream_options must be an object");
            goto out;
        }
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(v, "include_usage");
        if (present(u) && !cJSON_IsBool(u)) {
            rc = dp_api_fail(e, 400, "stream_options.include_usage", "invalid_type",
                             "stream_options.include_usage must be true or false");
            goto out;
        }
        r->include_usage = cJSON_IsTrue(u);
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "tools");
    if (present(v) && !(cJSON_IsArray(v) && !cJSON_GetArraySize(v))) {
        rc = dp_api_fail(e, 400, "tools", "invalid_value", "tools are not supported by doppel");
        goto out;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "user");
    if (cJSON_IsString(v) && !(r->user = dp_strdup(v->valuestring)))
        rc = dp_api_fail(e, 500, NULL, NULL, "out of memory");
out:
    cJSON_Delete(root);
    if (rc) dp_chat_request_free(r);
    return rc;
}

void dp_chat_request_free(dp_chat_request *r) {
    for (int i = 0; i < r->n_msgs; i++) free((char *)r->msgs[i].content);
    free(r->msgs);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->model);
    free(r->user);
    memset(r, 0, sizeof *r);
}

int dp_tokenize_request_parse(const char *body, size_t len, char **content, size_t *content_len,
                              bool *add_special, dp_api_error *e) {
    *content = NULL;
    *add_special = false;
    if (memchr(body, 0, len))
        return dp_api_fail(e, 400, NULL, NULL, "the request body holds a NUL byte; send JSON text");
    cJSON *root = cJSON_ParseWithLength(body, len);
    int rc = 0;
    char path[96];
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(root, "content");
    if (!cJSON_IsObject(root))
        rc = dp_api_fail(e, 400, NULL, NULL, "the request body is not a JSON object");
    else if (dp_json_find_nul(body, len, path, sizeof path))
        rc = dp_api_fail(e, 400, path, "invalid_value", "%s holds \\u0000 (a NUL character)", path);
    else if (!cJSON_IsString(c))
        rc = dp_api_fail(e, 400, "content", "missing_required_parameter",
                         "content is required: the text to tokenize");
    else if (check_utf8(c->valuestring, "content", e))
        rc = -1;
    else
        rc = read_bool(root, "add_special", add_special, e);
    if (!rc) {
        *content_len = strlen(c->valuestring);
        if (!(*content = dp_strdup(c->valuestring)))
            rc = dp_api_fail(e, 500, NULL, NULL, "out of memory");
    }
    cJSON_Delete(root);
    return rc;
}

/* ---- stop strings */
size_t dp_stop_scan(const char *text, size_t len, size_t from, char *const *stop, int n_stop,
                    bool *hit) {
    *hit = false;
    if (from > len) from = len;
    size_t first = len, hold = 0;
    for (int i = 0; i < n_stop; i++) {
        size_t sl = strlen(stop[i]);
        /* a stop string never starts in text already sent: its prefix would have been held */
        for (size_t p = from; p + sl <= len && p < first; p++)
            if (!memcmp(text + p, stop[i], sl)) {
                first = p;
                *hit = true;
                break;
            }
        for (size_t k = sl - 1 < len - from ? sl - 1 : len - from; k > hold; k--)
            if (!memcmp(text + len - k, stop[i], k)) {
                hold = k;
                break;
            }
    }
    if (*hit) return first;
    size_t safe = len - hold;
    while (safe > from && safe < len && ((unsigned char)text[safe] & 0xC0) == 0x80) safe--;
    return safe;
}

/* ---- numerics */
void dp_apply_openai_penalties(float *logits, int V, const int32_t *generated, int n,
                               float presence, float frequency, uint8_t *seen) {
    for (int i = 0; i < n; i++) {
        int32_t id = generated[i];
        if (id < 0 || id >= V) continue;
        logits[id] -= frequency;
        if (!seen[id]) logits[id] -= presence;
        seen[id] = 1;
    }
    for (int i = 0; i < n; i++)
        if (generated[i] >= 0 && generated[i] < V) seen[generated[i]] = 0;
}

int dp_logprobs(const float *logits, int n_valid, int32_t id, float *id_logprob, int k,
                int32_t *top_ids, float *top_logprobs) {
    float mx = -INFINITY;
    for (int i = 0; i < n_valid; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (int i = 0; i < n_valid; i++) sum += exp((double)logits[i] - mx);
    double lse = mx + log(sum);
    *id_logprob = id >= 0 && id < n_valid ? (float)(logits[id] - lse) : -INFINITY;
    if (k > n_valid) k = n_valid;
    int filled = 0;
    for (int i = 0; i < n_valid && k > 0;
         i++) { /* insertion into the k best; ties keep the lower id */
        float l = logits[i];
        if (filled == k && !(l > top_logprobs[k - 1])) continue;
        int j = filled < k ? filled++ : k - 1;
        while (j > 0 && l > top_logprobs[j - 1]) {
            top_logprobs[j] = top_logprobs[j - 1];
            top_ids[j] = top_ids[j - 1];
            j--;
        }
        top_logprobs[j] = l;
        top_ids[j] = i;
    }
    for (int j = 0; j < filled; j++) top_logprobs[j] = (float)(top_logprobs[j] - lse);
    return filled;
}
