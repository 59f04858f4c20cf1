/* doppel serve's engine: one base model in memory, its personas (LoRA adapters applied
 * unmerged, each with doppel.json's system prompt and chat format), a fixed set of sequence
 * slots (each its own KV cache, reused when a chat continues) and the scheduler thread that
 * advances every active sequence by one token per step. HTTP threads only render, submit and
 * read jobs. */
#ifndef DOPPEL_SERVER_ENGINE_H
#define DOPPEL_SERVER_ENGINE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "data/base/io.h"
#include "data/tokenizer.h"
#include "infer/sampler.h"
#include "infer/server_request.h"

#ifdef __cplusplus
extern "C" {
#endif

struct dp_gpu_ops;

typedef struct {
    const char *model_path;
    const char *base_id;              /* the base model's name in /v1/models */
    const char *const *persona_names; /* (n_personas) --adapter NAME=DIR */
    const char *const *persona_dirs;
    int n_personas;
    const char *system_prompt; /* --system: overrides doppel.json's, NULL = theirs */
    const char *chat_format;   /* --chat-format override, NULL = from the template/doppel.json */
    int slots;                 /* sequences decoded together (--parallel) */
    int max_context;           /* tokens per sequence (prompt + reply) */
    int max_tokens;            /* a reply's default and largest length */
    int max_queue;             /* requests waiting for a slot beyond which 503 is answered */
    int decode;                /* dp_decode_mode */
    bool nf4, lm_head_q8, quiet;
    /* the GPU backend (kernels/cuda/kernels.h: dp_cuda_ops, or dp_emu_ops in tests): every slot's
     * cache and every adapter in one GPU forward (bf16 activations, as doppel chat on a GPU);
     * NULL: the CPU */
    const struct dp_gpu_ops *gpu;
} dp_engine_config;

/* One generated token as logprobs reports it. */
typedef struct {
    int32_t id;
    float logprob;
    int n_top;
    int32_t top_ids[DP_API_MAX_TOP_LOGPROBS];
    float top_logprobs[DP_API_MAX_TOP_LOGPROBS];
} dp_job_token;

/* A request in flight, shared by its HTTP thread and the scheduler (refcounted). */
typedef struct dp_job {
    /* set before dp_engine_submit, read-only afterwards */
    int persona; /* 0 = the base, 1.. = --adapter order */
    dp_ids prompt;
    dp_sampler_params sp;
    float presence_penalty, frequency_penalty;
    int max_tokens;
    char *stop[DP_API_MAX_STOP];
    int n_stop;
    bool logprobs;
    int top_logprobs;

    atomic_bool cancel; /* the client went away: the scheduler drops the sequence */

    /* written by the scheduler, read by the HTTP thread, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    dp_buf text;          /* reply text cleared for sending (stop strings cut, tails held) */
    dp_job_token *tokens; /* (n_tokens) when logprobs */
    int n_tokens, cap_tokens;
    bool done;
    const char *finish; /* "stop" or "length" (OpenAI's finish_reason), "cancelled", "error" */
    int n_prompt, n_generated, n_reused;
    char error[256];
    int refs;
} dp_job;

dp_job *dp_job_create(void);
/* Drops one reference; the last one frees the job. */
void dp_job_release(dp_job *job);

typedef struct dp_engine dp_engine;

/* Loads the tokenizer, the base model (NF4 + Q8 head as chat does), every adapter (checked
 * against the base), the slots, and starts the scheduler thread. NULL with dp_last_error(). */
dp_engine *dp_engine_create(const dp_engine_config *cfg);
/* Stops taking jobs (503), lets the running and queued ones finish (cancels what is left after
 * drain_seconds) and joins the scheduler. Jobs stay readable until released. */
void dp_engine_drain(dp_engine *e, double drain_seconds);
/* Drains (at once) if not done yet, then frees everything. */
void dp_engine_destroy(dp_engine *e);

/* Personas: index 0 is the base model, then the adapters. -1 when no model has this id. */
int dp_engine_persona_count(const dp_engine *e);
const char *dp_engine_persona_name(const dp_engine *e, int i);
int dp_engine_find_persona(const dp_engine *e, const char *id);
int dp_engine_max_context(const dp_engine *e);
int dp_engine_max_tokens(const dp_engine *e);
/* The sampling defaults (the model's generation_config.json over doppel's) */
dp_sampler_params dp_engine_sampler_defaults(const dp_engine *e);

/* Renders a request's messages for a persona (its system prompt unless the request has one,
 * its chat format) to prompt ids. 400 errors name the field; a prompt that leaves no room for
 * a reply is context_length_exceeded. Thread-safe. */
int dp_engine_render(dp_engine *e, int persona, const dp_chat_request *req, dp_ids *ids,
                     dp_api_error *err);
/* ids of text (POST /tokenize); thread-safe. */
int dp_engine_tokenize(dp_engine *e, const char *text, size_t len, bool add_special, dp_ids *ids,
                       dp_api_error *err);
/* The text of one token, valid UTF-8 (a partial character becomes U+FFFD), appended to out;
 * the token's raw bytes too when raw is not NULL. */
int dp_engine_token_text(dp_engine *e, int32_t id, dp_buf *out, dp_buf *raw);

/* Queues a job (the engine takes a reference). 503 when the queue is full or the engine is
 * draining. */
int dp_engine_submit(dp_engine *e, dp_job *job, dp_api_error *err);

typedef struct {
    uint64_t prompt_tokens, generated_tokens, requests_done;
    double prefill_seconds, decode_seconds; /* scheduler time spent in each */
    uint64_t batched_steps, batched_rows;   /* decode steps that advanced several sequences at
                                             * once (continuous batching), and their rows */
    uint64_t steps, step_rows; /* every decode step (one sequence or several), and its rows */
    double sample_seconds;     /* scheduler time sampling and publishing the tokens */
    double busy_seconds;       /* scheduler time with work: prompts, steps, sampling, the rest */
    uint64_t chunked_prompts;  /* prompts put in over several passes (others were decoding) */
    int running, queued, slots;
} dp_engine_stats;
void dp_engine_get_stats(dp_engine *e, dp_engine_stats *s);

#ifdef __cplusplus
}
#endif
#endif
