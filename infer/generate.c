/* Generation (prompt → sampled tokens through the KV cache) and the chat session: rendering
 * with history trimming, JSON save/load. */
#include "infer/generate.h"

#include "data/base/json.h"
#include "data/base/error.h"
#include "data/base/io.h"
#include "infer/gguf_tokenizer.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int dp_gen_state_create(dp_gen_state *g, const dp_model *m, int max_T) {
    memset(g, 0, sizeof *g);
    g->model = m;
    return dp_forward_create(&g->fwd, m, max_T, 0);
}

int dp_gen_state_create_gpu(dp_gen_state *g, const struct dp_gpu_ops *ops, const dp_model *m,
                            const dp_lora *lora, int max_T, bool bf16) {
    memset(g, 0, sizeof *g);
    g->model = m;
    g->gpu_logits = dp_malloc((size_t)m->cfg.V * sizeof(float));
    if (!g->gpu_logits || dp_gpu_forward_create(&g->gpu, ops, m, lora, max_T, 0, bf16)) {
        free(g->gpu_logits);
        g->gpu_logits = NULL;
        return -1;
    }
    return 0;
}

void dp_gen_state_free(dp_gen_state *g) {
    if (g->gpu) {
        dp_gpu_forward_free(g->gpu);
        free(g->gpu_logits);
    } else {
        dp_forward_free(&g->fwd);
    }
    dp_ids_free(&g->cached);
}

int dp_gen_capacity(const dp_gen_state *g) {
    return g->gpu ? dp_gpu_forward_capacity(g->gpu) : g->fwd.max_T;
}

static int positions(const dp_gen_state *g) {
    return g->gpu ? dp_gpu_forward_positions(g->gpu) : g->fwd.T;
}

/* runs ids through the model and records them as cached */
static int feed(dp_gen_state *g, const int32_t *ids, int n) {
    if (g->gpu) {
        if (dp_gpu_forward_tokens(g->gpu, ids, n, NULL)) return -1;
        memcpy(g->gpu_logits, dp_gpu_forward_logits(g->gpu),
               (size_t)g->model->cfg.V * sizeof(float));
    } else if (dp_forward_tokens(&g->fwd, ids, n, NULL)) {
        return -1;
    }
    for (int i = 0; i < n; i++)
        if (dp_ids_push(&g->cached, ids[i])) return -1;
    return 0;
}

static bool in_set(int32_t id, const int32_t *set, int n) {
    for (int i = 0; i < n; i++)
        if (set[i] == id) return true;
    return false;
}

int dp_generate(dp_gen_state *g, dp_sampler *s, const int32_t *prompt, int n_prompt,
                const dp_gen_opts *o, dp_gen_token_fn cb, void *ctx, dp_ids *out,
                dp_gen_result *res) {
    memset(res, 0, sizeof *res);
    res->n_prompt = n_prompt;
    res->finish = "length";
    if (n_prompt <= 0) return dp_fail("generate: empty prompt");
    const int max_T = dp_gen_capacity(g);
    if (n_prompt >= max_T)
        return dp_fail("generate: the prompt has %d tokens but the context holds %d; shorten it "
                       "or raise --max-context",
                       n_prompt, max_T);

    /* reuse the cached prefix; at least the last prompt token is run again for its logits */
    int p = 0;
    while (p < n_prompt - 1 && p < (int)g->cached.n && g->cached.v[p] == prompt[p]) p++;
    if (g->gpu)
        dp_gpu_forward_truncate(g->gpu, p);
    else
        dp_forward_truncate(&g->fwd, p);
    g->cached.n = (size_t)p;
    res->n_reused = p;
    double t0 = now_seconds();
    if (feed(g, prompt + p, n_prompt - p)) return -1;
    double t1 = now_seconds();
    res->prefill_seconds = t1 - t0;

    int32_t top_ids[DP_GEN_TOP];
    float top_probs[DP_GEN_TOP];
    for (;;) {
        if (res->n_generated >= o->max_tokens) {
            res->finish = "length";
            break;
        }
        float *logits = g->gpu ? g->gpu_logits : g->fwd.logits; /* (V); the sampler may modify it */
        int n_top = 0;
        if (o->top) n_top = dp_top_probs(logits, s->n_valid, DP_GEN_TOP, top_ids, top_probs);
        int32_t id = dp_sampler_sample(s, logits, g->cached.v, (int)g->cached.n);
        if (in_set(id, o->stop, o->n_stop)) {
            res->finish = "stop";
            break;
        }
        res->n_generated++;
        if (out && dp_ids_push(out, id)) return -1;
        if (cb) {
            int rc = cb(ctx, id, top_ids, top_probs, n_top);
            if (rc < 0) return -1;
            if (rc) {
                res->finish = "cancelled";
                break;
            }
        }
        if (res->n_generated >= o->max_tokens) break;
        if (positions(g) >= max_T) {
            res->finish = "context";
            break;
        }
        if (feed(g, &id, 1)) return -1;
    }
    res->decode_seconds = now_seconds() - t1;
    return 0;
}

/* ---- model companions */
static bool has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

dp_tokenizer *dp_model_tokenizer(const char *path) {
    if (has_suffix(path, ".gguf")) return dp_tokenizer_load_gguf(path);
    return dp_tokenizer_load(path);
}

int dp_sampler_params_from_generation_config(dp_sampler_params *p, const char *model_path) {
    char file[4096];
    struct stat st;
    if (stat(model_path, &st) != 0 || !S_ISDIR(st.st_mode)) return 0; /* a .gguf: none */
    snprintf(file, sizeof file, "%s/generation_config.json", model_path);
    if (stat(file, &st) != 0) return 0;
    char *text = NULL;
    size_t len = 0;
    if (dp_read_file(file, &text, &len)) return -1;
    cJSON *root = NULL;
    int bad = dp_json_parse(text, len, DP_JSON_REFUSE_NUL, file, 1, &root);
    free(text);
    if (bad) return -1;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return dp_fail("%s: not a JSON object", file);
    }
    const cJSON *v;
    int rc = 0;
#define NUM(key, lo, hi, dst, cast)                                                                \
    if ((v = cJSON_GetObjectItemCaseSensitive(root, key)) && !cJSON_IsNull(v)) {                   \
        if (!cJSON_IsNumber(v) || v->valuedouble < (lo) || v->valuedouble > (hi))                  \
            rc = dp_fail("%s: %s must be a number in [%g, %g]", file, key, (double)(lo),           \
                         (double)(hi));                                                            \
        else                                                                                       \
            dst = (cast)v->valuedouble;                                                            \
    }
    NUM("temperature", 0, 100, p->temperature, float)
    NUM("top_k", 0, 1e9, p->top_k, int)
    NUM("top_p", 0, 1, p->top_p, float)
    NUM("min_p", 0, 1, p->min_p, float)
    NUM("repetition_penalty", 0.01, 100, p->repeat_penalty, float)
#undef NUM
    v = cJSON_GetObjectItemCaseSensitive(root, "do_sample");
    if (cJSON_IsFalse(v)) p->temperature = 0; /* transformers: greedy */
    cJSON_Delete(root);
    return rc;
}

/* ---- chat session */
void dp_session_init(dp_session *s, const char *system) {
    memset(s, 0, sizeof *s);
    if (system && *system) s->system = dp_strdup(system);
}

void dp_session_reset(dp_session *s) {
    for (int i = 0; i < s->n; i++) {
        free(s->msgs[i].role);
        free(s->msgs[i].content);
    }
    s->n = 0;
}

void dp_session_free(dp_session *s) {
    dp_session_reset(s);
    free(s->msgs);
    free(s->system);
    memset(s, 0, sizeof *s);
}

int dp_session_add(dp_session *s, const char *role, const char *content) {
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        dp_session_msg *m = dp_realloc(s->msgs, (size_t)cap * sizeof *m);
        if (!m) return -1;
        s->msgs = m;
        s->cap = cap;
    }
    char *r = dp_strdup(role), *c = dp_strdup(content);
    if (!r || !c) {
        free(r);
        free(c);
        return -1;
    }
    s->msgs[s->n++] = (dp_session_msg){r, c};
    return 0;
}

static void drop_first(dp_session *s) {
    free(s->msgs[0].role);
    free(s->msgs[0].content);
    memmove(s->msgs, s->msgs + 1, (size_t)(s->n - 1) * sizeof *s->msgs);
    s->n--;
}

void dp_session_drop_oldest(dp_session *s) {
    if (s->n == 0) return;
    drop_first(s);
    if (s->n > 0 && !strcmp(s->msgs[0].role, "assistant")) drop_first(s);
}

int dp_session_save(const dp_session *s, const char *path) {
    cJSON *root = cJSON_CreateObject();
    if (s->system)
        cJSON_AddStringToObject(root, "system", s->system);
    else
        cJSON_AddNullToObject(root, "system");
    cJSON *arr = cJSON_AddArrayToObject(root, "messages");
    for (int i = 0; i < s->n; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", s->msgs[i].role);
        cJSON_AddStringToObject(m, "content", s->msgs[i].content);
        cJSON_AddItemToArray(arr, m);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return dp_fail("%s: out of memory while writing the session", path);
    int rc = dp_write_file_atomic(path, text, strlen(text));
    cJSON_free(text);
    return rc;
}

int dp_session_load(dp_session *s, const char *path) {
    char *text = NULL;
    size_t len = 0;
    if (dp_read_file(path, &text, &len)) return -1;
    cJSON *root = NULL;
    int bad = dp_json_parse(text, len, DP_JSON_REFUSE_NUL, path, 1, &root);
    free(text);
    if (bad) return -1;
    int rc = 0;
    const cJSON *sys, *msgs, *m;
    if (!cJSON_IsObject(root)) {
        rc = dp_fail("%s: not a JSON object (expected a session saved by /save)", path);
        goto out;
    }
    sys = cJSON_GetObjectItemCaseSensitive(root, "system");
    msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if ((sys && !cJSON_IsNull(sys) && !cJSON_IsString(sys)) || !cJSON_IsArray(msgs)) {
        rc = dp_fail("%s: expected {\"system\": string or null, \"messages\": [...]}", path);
        goto out;
    }
    int i = 0;
    cJSON_ArrayForEach(m, msgs) {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!cJSON_IsString(r) || !cJSON_IsString(c)) {
            rc = dp_fail("%s: messages[%d] needs string \"role\" and \"content\"", path, i);
            goto out;
        }
        i++;
    }
    dp_session fresh;
    dp_session_init(&fresh, cJSON_IsString(sys) ? sys->valuestring : s->system);
    cJSON_ArrayForEach(m, msgs) {
        if (dp_session_add(&fresh, cJSON_GetObjectItemCaseSensitive(m, "role")->valuestring,
                           cJSON_GetObjectItemCaseSensitive(m, "content")->valuestring)) {
            dp_session_free(&fresh);
            rc = -1;
            goto out;
        }
    }
    dp_session_free(s);
    *s = fresh;
out:
    cJSON_Delete(root);
    return rc;
}

int dp_session_render(dp_session *s, dp_tokenizer *t, dp_chat_format f, int max_ids,
                      dp_chat_tokens *out, int *dropped) {
    *dropped = 0;
    int first = 0; /* the oldest message kept; the session changes only on success */
    for (;;) {
        int n = s->n - first + (s->system ? 1 : 0);
        dp_chat_msg *msgs = dp_malloc((size_t)(n ? n : 1) * sizeof *msgs);
        if (!msgs) return -1;
        int k = 0;
        if (s->system) msgs[k++] = (dp_chat_msg){DP_ROLE_SYSTEM, s->system, strlen(s->system)};
        for (int i = first; i < s->n; i++) {
            dp_role r;
            if (dp_role_parse(s->msgs[i].role, &r)) {
                free(msgs);
                return dp_fail("chat session: message role \"%s\" is not system, user or "
                               "assistant",
                               s->msgs[i].role);
            }
            msgs[k++] = (dp_chat_msg){r, s->msgs[i].content, strlen(s->msgs[i].content)};
        }
        dp_chat_tokens_free(out);
        int rc = dp_chat_render(t, f, msgs, (size_t)n, true, out);
        free(msgs);
        if (rc) return -1;
        if ((int)out->ids.n <= max_ids) break;
        if (s->n - first <= 1)
            return dp_fail("the message and system prompt need %zu tokens but the context "
                           "holds %d; shorten them or raise --max-context",
                           out->ids.n, max_ids);
        first++; /* a turn: the oldest message and the assistant reply after it */
        if (first < s->n - 1 && !strcmp(s->msgs[first].role, "assistant")) first++;
    }
    for (int i = 0; i < first; i++) {
        free(s->msgs[i].role);
        free(s->msgs[i].content);
    }
    memmove(s->msgs, s->msgs + first, (size_t)(s->n - first) * sizeof *s->msgs);
    s->n -= first;
    *dropped = first;
    return 0;
}
