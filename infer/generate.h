/* Text generation over a dp_forward context (prompt reuse through the KV cache, sampling,
 * stop set, max tokens), and the chat session that renders, trims, saves and loads a
 * conversation for `doppel chat`. */
#ifndef DOPPEL_GENERATE_H
#define DOPPEL_GENERATE_H

#include <stdbool.h>
#include <stdint.h>

#include "data/chat_format.h"
#include "data/tokenizer.h"
#include "infer/forward.h"
#include "infer/forward_gpu.h"
#include "infer/sampler.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DP_GEN_TOP 5 /* candidates shown by /probs */

/* Called for each generated token (stop tokens excluded) with the model's top candidates at
 * that step (softmax at temperature 1 over the tokenizer's ids; n_top = 0 unless asked for).
 * Return 0 to go on, non-zero to stop (finish "cancelled"), or -1 with dp_fail for an error. */
typedef int (*dp_gen_token_fn)(void *ctx, int32_t id, const int32_t *top_ids,
                               const float *top_probs, int n_top);

typedef struct {
    int max_tokens;      /* stop after this many generated tokens */
    const int32_t *stop; /* the stop set */
    int n_stop;
    bool top; /* compute the top-DP_GEN_TOP table for the callback */
} dp_gen_opts;

typedef struct {
    int n_prompt, n_reused; /* prompt tokens, of which already in the KV cache */
    int n_generated;
    const char *finish; /* "stop", "length", "context" (cache full) or "cancelled" */
    double prefill_seconds, decode_seconds;
} dp_gen_result;

/* A forward context (the CPU's, or a GPU backend's when gpu is set) plus the ids its KV cache
 * holds, so a new prompt that extends the last one (the next chat turn) only runs the new
 * tokens. */
typedef struct {
    dp_forward fwd;      /* the CPU path (unused when gpu is set) */
    dp_gpu_forward *gpu; /* the GPU path, or NULL */
    float *gpu_logits;   /* (V) host copy the sampler may modify */
    const dp_model *model;
    dp_ids cached; /* ids at positions [0, T) */
} dp_gen_state;

int dp_gen_state_create(dp_gen_state *g, const dp_model *m, int max_T);
/* The same on a GPU backend (dp_cuda_ops, or dp_emu_ops in tests): weights uploaded once, the
 * adapter (or NULL) applied unmerged, bf16 or fp32 activations. */
int dp_gen_state_create_gpu(dp_gen_state *g, const struct dp_gpu_ops *ops, const dp_model *m,
                            const dp_lora *lora, int max_T, bool bf16);
void dp_gen_state_free(dp_gen_state *g);
int dp_gen_capacity(const dp_gen_state *g); /* positions the KV cache holds */

/* Feeds `prompt` (reusing the longest cached prefix), then samples until a stop id, max_tokens,
 * a full context or the callback says stop. Generated ids are appended to *out (may be NULL). */
int dp_generate(dp_gen_state *g, dp_sampler *s, const int32_t *prompt, int n_prompt,
                const dp_gen_opts *o, dp_gen_token_fn cb, void *ctx, dp_ids *out,
                dp_gen_result *res);

/* ---- model companions */
/* The tokenizer of a model: DIR (tokenizer.json) or FILE.gguf (tokenizer.ggml.* metadata). */
dp_tokenizer *dp_model_tokenizer(const char *path);
/* Sampling defaults from DIR/generation_config.json (temperature, top_k, top_p, min_p,
 * repetition_penalty; do_sample false = greedy) over *p; absent file or keys keep *p. */
int dp_sampler_params_from_generation_config(dp_sampler_params *p, const char *model_path);

/* ---- chat session */
typedef struct {
    char *role, *content;
} dp_session_msg;

typedef struct {
    char *system; /* NULL when none */
    dp_session_msg *msgs;
    int n, cap;
} dp_session;

void dp_session_init(dp_session *s, const char *system);
void dp_session_free(dp_session *s);
int dp_session_add(dp_session *s, const char *role, const char *content);
/* Forgets the turns, keeps the system prompt. */
void dp_session_reset(dp_session *s);
/* Drops the oldest turn: the first message, and the assistant reply after it. */
void dp_session_drop_oldest(dp_session *s);
/* {"system": str|null, "messages": [{"role", "content"}, ...]}, written atomically. */
int dp_session_save(const dp_session *s, const char *path);
/* Replaces *s with the file's session (the file's system prompt, when it has one, wins). */
int dp_session_load(dp_session *s, const char *path);

/* Renders system + turns + the generation prompt to ids. When they exceed max_ids, the oldest
 * turns are dropped from the session (the system prompt stays) until they fit; *dropped counts
 * the messages dropped. Fails when even the system prompt and the last message do not fit. */
int dp_session_render(dp_session *s, dp_tokenizer *t, dp_chat_format f, int max_ids,
                      dp_chat_tokens *out, int *dropped);

#ifdef __cplusplus
}
#endif
#endif
