/* Helper tools for chat: the call parser (`[NAME args]` in a reply, fed as the reply streams),
 * the toolbox (a directory of executables, each run without a shell under a timeout and an
 * output cap) and the chat turn that runs a reply's calls and lets the model continue. The
 * parser and the runner know nothing of the terminal, so `serve` can use them too. */
#ifndef DOPPEL_TOOLS_H
#define DOPPEL_TOOLS_H

#include <stdbool.h>
#include <stddef.h>

#include "data/base/io.h"
#include "data/chat_format.h"
#include "infer/generate.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the call parser
 * A call is `[NAME]` or `[NAME ARG ARG ...]` on one line:
 * - NAME is one of the scanner's tool names (any case, `-` and `_` alike) or, for a tool that
 *   does not exist, an all-capitals name of two or more of A-Z 0-9 _ (so `[see above]` and
 *   `[x]` stay text, and `[LOAD_FILE2 a]` is reported as a call to an unknown tool);
 * - arguments are separated by spaces or tabs; "double quotes" (with \" \\ \n \t escapes)
 *   and 'single quotes' (literal) hold spaces and `]`; pieces next to each other join;
 * - a newline, a NUL byte, more than DP_TOOL_MAX_ARGS arguments, more than DP_TOOL_MAX_CALL
 *   bytes or a `(` right after the `]` (a Markdown link) make the bracket plain text;
 * - nothing inside code is a call: fenced blocks (``` or ~~~ at the start of a line, up to the
 *   closing fence or the end of the reply) and inline `code` spans (up to the same run of
 *   backticks, or the end of the line when it never comes). */
#define DP_TOOL_MAX_CALL 4096
#define DP_TOOL_MAX_ARGS 32

typedef struct {
    char *name;  /* as written */
    int tool;    /* index into the scanner's names, -1 for a tool that does not exist */
    char **args; /* (n_args) unquoted */
    int n_args;
    char *raw; /* the call as written, brackets included */
} dp_tool_call;
void dp_tool_call_free(dp_tool_call *c);
int dp_tool_call_copy(dp_tool_call *dst, const dp_tool_call *src);

/* Where a scanner sends what it finds, in the order of the text. Every byte fed comes out
 * exactly once, either as text or inside a call's raw text. A non-zero return stops the feed
 * and is passed on (-1 = an error recorded with dp_fail). */
typedef struct {
    int (*text)(void *ctx, const char *s, size_t n); /* text that is not (part of) a call */
    int (*call)(void *ctx, const dp_tool_call *c);   /* a complete call; copy what you keep */
    void *ctx;
} dp_tool_sink;

typedef struct dp_tool_scanner dp_tool_scanner;
/* names: the tools that exist (copied; may be NULL with n_names 0). */
dp_tool_scanner *dp_tool_scanner_create(const char *const *names, int n_names, dp_tool_sink sink);
void dp_tool_scanner_destroy(dp_tool_scanner *s);
/* Feeds the next piece of a reply. Text that may still turn out to be a call (an open `[`, or
 * a `]` not yet followed by anything) is held back until it is decided. */
int dp_tool_scanner_feed(dp_tool_scanner *s, const char *text, size_t n);
/* The reply is over: what was held back is decided with nothing after it. The scanner is then
 * ready for the next reply (which starts at a line start, outside any code). */
int dp_tool_scanner_finish(dp_tool_scanner *s);
/* Bytes held back now (for tests and for callers that show progress). */
size_t dp_tool_scanner_held(const dp_tool_scanner *s);

typedef struct {
    dp_tool_call *v;
    int n, cap;
} dp_tool_calls;
void dp_tool_calls_free(dp_tool_calls *c);
/* A whole reply at once: its calls appended to *calls, its other text to *text (may be NULL). */
int dp_tool_calls_parse(const char *reply, size_t n, const char *const *names, int n_names,
                        dp_tool_calls *calls, dp_buf *text);

/* ---- running a tool */
typedef struct {
    double timeout_s;  /* wall clock per run; the tool's process group is killed after it */
    size_t output_cap; /* bytes of output kept; the tool is stopped when it writes more */
    const char *cwd;   /* working directory of the tool (NULL: the caller's) */
} dp_tool_limits;
dp_tool_limits dp_tool_limits_default(void); /* 10 s, 16 KiB, the caller's directory */

typedef struct {
    bool started;   /* false: it could not be executed (output says why) */
    bool timed_out; /* stopped at the timeout */
    bool truncated; /* stopped at the output cap */
    int exit_code;  /* when it exited, else -1 */
    int signal;     /* the signal that ended it, else 0 */
} dp_tool_status;

/* Runs argv[0] (a path) with argv, no shell: stdin /dev/null, stdout and stderr together into
 * *out (at most lim->output_cap bytes), in its own process group. -1 only when the machinery
 * fails (pipe, fork); a tool that cannot be executed, fails or hangs is a status. */
int dp_tool_run(char *const argv[], const dp_tool_limits *lim, dp_buf *out, dp_tool_status *st);

/* ---- a directory of tools */
typedef struct {
    char *name;        /* the file's name, "load_file" */
    char *call_name;   /* how the model writes it: "LOAD_FILE" */
    char *path;        /* absolute */
    char *description; /* first line of `TOOL --describe` */
} dp_tool;

typedef struct {
    dp_tool *tools; /* (n) sorted by name */
    int n;
    const char **names; /* (n) call names, for the scanner */
    dp_tool_limits limits;
} dp_toolbox;

/* Every executable regular file of dir whose name is letters, digits, `_` or `-` becomes a
 * tool; each is asked `--describe` (a tool that fails it is an error naming the tool). */
dp_toolbox *dp_toolbox_open(const char *dir, const dp_tool_limits *limits);
void dp_toolbox_close(dp_toolbox *tb);
/* The rules of use and the list of tools, for the system prompt. */
int dp_toolbox_prompt(const dp_toolbox *tb, dp_buf *out);
/* Runs one call (an unknown tool or a declined call is not run) and writes what the model is
 * told: the output, or why there is none. */
int dp_toolbox_result(const dp_toolbox *tb, const dp_tool_call *c, bool declined, dp_buf *told);

/* ---- one chat turn with tools and thinking */
typedef enum {
    DP_SHOW_TEXT,    /* the reply, as it streams */
    DP_SHOW_THOUGHT, /* <think> text, as it streams */
    DP_SHOW_CALL,    /* a call found in the reply (its raw text) */
    DP_SHOW_RESULT,  /* what the model is told about a call */
    DP_SHOW_END,     /* a reply is over (n = 0) */
} dp_show_kind;

typedef struct dp_tool_chat dp_tool_chat;
/* Every piece of decoded reply text goes here; a non-zero return means: stop generating
 * (a call is complete and the reply went on with other text, or an error). */
int dp_tool_chat_feed(dp_tool_chat *tc, const char *text, size_t n);

typedef struct {
    /* Generates the assistant's next reply to the session as it stands, passing its text to
     * dp_tool_chat_feed until that returns non-zero. 0, 1 when the user interrupted it, -1. */
    int (*generate)(void *ctx, dp_session *s, dp_tool_chat *tc);
    void (*show)(void *ctx, dp_show_kind kind, const char *text, size_t n);
    /* Asked before each call to a tool that exists; NULL runs them all (--yes). */
    bool (*confirm)(void *ctx, const dp_tool_call *c, const dp_tool *tool);
    void *ctx;
} dp_tool_chat_io;

typedef struct {
    const dp_toolbox *tools;  /* NULL: no calls are looked for */
    bool thinking;            /* a reply may open with <think>...</think> */
    dp_chat_tool_style style; /* how results go back (dp_chat_tool_style_for) */
    int max_rounds;           /* tool rounds after one user message (0: 8) */
} dp_tool_chat_opts;

/* Answers the session's last (user) message: generates, keeps the reply's answer (never its
 * thinking, nor text after its last call) as the assistant message, runs the calls, adds
 * their results as one message in the template's style and generates again, until a reply
 * has no call, max_rounds is reached or the user interrupts. 0, 1 (interrupted) or -1. */
int dp_tool_chat_reply(dp_session *s, const dp_tool_chat_opts *o, const dp_tool_chat_io *io);

#ifdef __cplusplus
}
#endif
#endif
