/* Chat formats (ChatML, Llama-3): a conversation rendered to text, or to token ids plus a loss
 * mask (1 on assistant content and its closing end-of-turn token). Training and chat use the
 * same renderer, so a chat prompt looks like the training data. REFERENCE.md section 7. */
#ifndef DOPPEL_CHAT_FORMAT_H
#define DOPPEL_CHAT_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "data/dataset.h" /* dp_chat_msg: role, content, len */
#include "data/base/io.h"
#include "data/tokenizer.h"

typedef enum { DP_CHAT_CHATML = 1, DP_CHAT_LLAMA3 = 2 } dp_chat_format;

/* "chatml" / "llama3" */
const char *dp_chat_format_name(dp_chat_format f);
int dp_chat_format_parse(const char *name, dp_chat_format *f);

/* The format for a model: `override` ("chatml"/"llama3", or NULL) wins; otherwise it is
 * recognized from the model's chat_template. An absent or unrecognized template is an error
 * that names the --chat-format flag. */
int dp_chat_format_choose(const char *chat_template, const char *override, dp_chat_format *f);

/* The exact text the template produces (no system prompt is added). With
 * add_generation_prompt the assistant header follows the last message. */
int dp_chat_render_text(dp_chat_format f, const dp_chat_msg *msgs, size_t n,
                        bool add_generation_prompt, dp_buf *out);

/* Token ids and loss mask, appended. Control tokens are inserted as ids; message text is
 * encoded with special-token text NOT recognized (a message cannot forge "<|im_end|>"). */
typedef struct {
    dp_ids ids;
    uint8_t *mask; /* (ids.n) */
    size_t mask_cap;
} dp_chat_tokens;
int dp_chat_render(dp_tokenizer *t, dp_chat_format f, const dp_chat_msg *msgs, size_t n,
                   bool add_generation_prompt, dp_chat_tokens *out);
void dp_chat_tokens_free(dp_chat_tokens *c);

/* Ids that end an assistant turn in this format (end-of-turn token, the tokenizer's eos, the
 * end-of-text token), without duplicates; returns the count (<= max). */
int dp_chat_stop_ids(const dp_tokenizer *t, dp_chat_format f, int32_t *ids, int max);

/* ---- tool results and thinking (doppel chat --tools, reasoning models) */
/* How a template gives a tool's result back to the model. Qwen2.5/Qwen3 templates render a
 * run of "tool" messages as one user turn of <tool_response> blocks; a plain ChatML template
 * (SmolLM2) writes a `tool` turn and Llama 3.1+ an `ipython` turn (the "tool" role, which
 * dp_chat_render writes that way); a template with neither (Llama 3.0) gets the results as a
 * system message. tests/fixtures/tools/tool-render.json holds each real template's text. */
typedef struct {
    const char *role;         /* "user", "tool" or "system" */
    const char *open, *close; /* around each result */
    const char *sep;          /* between two results */
} dp_chat_tool_style;
dp_chat_tool_style dp_chat_tool_style_for(const char *chat_template);
/* The content of the one message that carries n results, appended to *out. */
int dp_chat_tool_message(const dp_chat_tool_style *st, const char *const *results, int n,
                         dp_buf *out);

/* A reply of a reasoning model (Qwen3) opens with <think>...</think>: the splitter, fed the
 * reply as it streams, sends the thinking and the answer to separate buffers. The answer
 * is what Qwen3's template keeps of a past assistant turn: the text after </think> without
 * its leading newlines. A reply that does not open with <think> (after optional whitespace)
 * is all answer. A partial tag at the end of a piece is held back until the next one. */
typedef struct {
    int state;           /* 0: nothing decided yet, 1: thinking, 2: answer */
    bool strip_newlines; /* right after <think> or </think> */
    dp_buf held;
} dp_think_splitter;
int dp_think_feed(dp_think_splitter *t, const char *s, size_t n, dp_buf *thought, dp_buf *answer);
/* The end of the reply: what was held back is given out; the splitter is ready again. */
int dp_think_finish(dp_think_splitter *t, dp_buf *thought, dp_buf *answer);
void dp_think_free(dp_think_splitter *t);

#endif
