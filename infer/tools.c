/* Tool calls in chat replies: the streaming parser, the runner (fork/execve, timeout, output
 * cap), the toolbox of a directory and the chat turn that ties them to generation. */
#define _GNU_SOURCE /* pipe2 */
#include "infer/tools.h"
#include "data/base/error.h"
#include "data/base/utf8.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ================================================================ the call parser */
void dp_tool_call_free(dp_tool_call *c) {
    if (!c) return;
    for (int i = 0; i < c->n_args; i++) free(c->args[i]);
    free(c->args);
    free(c->name);
    free(c->raw);
    *c = (dp_tool_call){0};
}

int dp_tool_call_copy(dp_tool_call *d, const dp_tool_call *s) {
    *d = (dp_tool_call){.tool = s->tool};
    d->name = dp_strdup(s->name);
    d->raw = dp_strdup(s->raw);
    d->args = dp_calloc((size_t)(s->n_args ? s->n_args : 1), sizeof *d->args);
    if (!d->name || !d->raw || !d->args) goto fail;
    for (; d->n_args < s->n_args; d->n_args++)
        if (!(d->args[d->n_args] = dp_strdup(s->args[d->n_args]))) goto fail;
    return 0;
fail:
    dp_tool_call_free(d);
    return -1;
}

static bool name_char(char c) {
    return isalnum((unsigned char)c) || c == '_' || c == '-';
}

/* a[0,n) is b (whole: all of it, else its start); `-` and `_` alike, any case */
static bool name_match(const char *a, size_t n, const char *b, bool whole) {
    size_t i = 0;
    for (; i < n && b[i]; i++) {
        char x = (char)toupper((unsigned char)a[i]), y = (char)toupper((unsigned char)b[i]);
        if (x == '-') x = '_';
        if (y == '-') y = '_';
        if (x != y) return false;
    }
    return i == n && (!whole || !b[i]);
}
static bool same_name(const char *a, size_t n, const char *b) {
    return name_match(a, n, b, true);
}

/* The call reader's states. After the name, a call's future depends only on the position and
 * the state (and, for the length limit, on where its `[` was): calls that reach the same
 * (position, state) go on alike. */
enum {
    CALL_SEP,  /* between arguments */
    CALL_WORD, /* in an argument, outside quotes */
    CALL_DQ,
    CALL_DQ_ESC,
    CALL_SQ,
    CALL_WALK, /* states above: the ones a step is recorded for */
    CALL_NAME = CALL_WALK,
    CALL_CLOSED
};

/* A step already taken by some call from (position, state) after its name: it leads to state
 * `to`, `ahead` bytes later, past `args` argument starts. A failed call is re-read from its
 * `[` + 1 and the brackets inside it are tried as calls; one that reaches a (position, state)
 * a call went through jumps along the recorded steps instead of re-reading them (and the
 * steps it passes are pointed at where it lands), so every (position, state) is read once and
 * a reply costs O(n), however its brackets nest, instead of O(n * DP_TOOL_MAX_CALL). */
typedef struct {
    uint16_t ahead; /* 0: none recorded */
    uint16_t args;
    uint8_t to;
} call_step;

struct dp_tool_scanner {
    char **names;
    int n_names;
    dp_tool_sink sink;
    dp_buf in;    /* bytes from `base` on that are not all given out */
    size_t pos;   /* next byte of in to read */
    size_t shown; /* bytes of in already given out */
    /* Markdown, so that code is skipped */
    bool prefix;   /* reading the start of a line (up to 3 spaces, then a fence run) */
    int indent;    /* spaces in that prefix */
    int run;       /* fence characters in that prefix */
    char run_char; /* '`' or '~' */
    int fence_len; /* > 0: inside a fenced block opened by this many fence_char */
    char fence_char;
    bool fence_rest;    /* the rest of a fence line (info string, or code) is skipped */
    bool close_pending; /* this line may close the fence if only spaces follow */
    int ticks;          /* backticks just read (a run not yet ended) */
    int code_ticks;     /* > 0: inside an inline code span opened by this many backticks */
    /* a call being read */
    bool in_call;
    size_t call_start; /* of its `[` in in */
    int call_state;
    size_t name_len;
    bool *alive;      /* (n_names) the tools whose names begin with the name read so far */
    int n_alive;      /* of them */
    bool capitals;    /* the name so far is A-Z, then A-Z 0-9 _ (an unknown tool's) */
    int args;         /* argument starts read since the name */
    call_step *steps; /* (steps_cap, CALL_WALK) by position in in */
    size_t steps_cap;
};

dp_tool_scanner *dp_tool_scanner_create(const char *const *names, int n_names, dp_tool_sink sink) {
    dp_tool_scanner *s = dp_calloc(1, sizeof *s);
    if (!s) return NULL;
    s->sink = sink;
    s->prefix = true;
    if (n_names > 0) {
        s->names = dp_calloc((size_t)n_names, sizeof *s->names);
        s->alive = dp_calloc((size_t)n_names, sizeof *s->alive);
        if (!s->names || !s->alive) goto fail;
        for (; s->n_names < n_names; s->n_names++)
            if (!(s->names[s->n_names] = dp_strdup(names[s->n_names]))) goto fail;
    }
    return s;
fail:
    dp_tool_scanner_destroy(s);
    return NULL;
}

void dp_tool_scanner_destroy(dp_tool_scanner *s) {
    if (!s) return;
    for (int i = 0; i < s->n_names; i++) free(s->names[i]);
    free(s->names);
    free(s->alive);
    free(s->steps);
    dp_buf_free(&s->in);
    free(s);
}

size_t dp_tool_scanner_held(const dp_tool_scanner *s) {
    return s->in.len - s->shown;
}

static int known_tool(const dp_tool_scanner *s, const char *name, size_t n) {
    for (int i = 0; i < s->n_names; i++)
        if (same_name(name, n, s->names[i])) return i;
    return -1;
}

static bool capital_char(char c, bool first) {
    return isupper((unsigned char)c) || (!first && (isdigit((unsigned char)c) || c == '_'));
}

/* The name read so far grows by c. Whether it can still become a call's: the start of a
 * tool's name, or capitals so far (an unknown tool); so `[see` is text at once, not held
 * back. Kept per tool as the name grows, so a long name costs O(1) a byte. */
static bool name_grows(dp_tool_scanner *s, char c) {
    size_t k = s->name_len++;
    char x = (char)toupper((unsigned char)c);
    if (x == '-') x = '_';
    s->n_alive = 0;
    for (int i = 0; i < s->n_names; i++) {
        bool a = k == 0 || s->alive[i]; /* then names[i] is at least k bytes long */
        if (a) {
            char y = (char)toupper((unsigned char)s->names[i][k]);
            a = (y == '-' ? '_' : y) == x;
        }
        s->alive[i] = a;
        s->n_alive += a;
    }
    s->capitals = (k == 0 || s->capitals) && capital_char(c, k == 0);
    return s->n_alive > 0 || s->capitals;
}

/* The name read makes the bracket a call: a tool's, or an all-capitals one (unknown tool). */
static bool name_is_call(const dp_tool_scanner *s) {
    if (!s->name_len) return false;
    for (int i = 0; i < s->n_names; i++)
        if (s->alive[i] && !s->names[i][s->name_len]) return true;
    return s->name_len >= 2 && s->capitals;
}

/* Splits raw = "[NAME args]" (already checked by the reader) into the call. -1 with no
 * error recorded when there are too many arguments (the bracket is then text). */
static int split_call(const dp_tool_scanner *s, const char *raw, size_t n, dp_tool_call *c,
                      bool *too_many) {
    *c = (dp_tool_call){0};
    *too_many = false;
    size_t i = 1, nl = 0;
    while (name_char(raw[i + nl])) nl++;
    c->name = dp_malloc(nl + 1);
    c->raw = dp_malloc(n + 1);
    c->args = dp_calloc(DP_TOOL_MAX_ARGS, sizeof *c->args);
    if (!c->name || !c->raw || !c->args) goto fail;
    memcpy(c->name, raw + 1, nl);
    c->name[nl] = 0;
    memcpy(c->raw, raw, n);
    c->raw[n] = 0;
    c->tool = known_tool(s, raw + 1, nl);
    i = 1 + nl;
    size_t end = n - 1; /* the closing ] */
    dp_buf arg = {0};
    while (i < end) {
        while (i < end && (raw[i] == ' ' || raw[i] == '\t')) i++;
        if (i >= end) break;
        arg.len = 0;
        if (dp_buf_append(&arg, "", 0)) goto fail_arg;
        while (i < end && raw[i] != ' ' && raw[i] != '\t') {
            char q = raw[i];
            if (q == '"' || q == '\'') {
                for (i++; raw[i] != q; i++) {
                    char ch = raw[i];
                    if (q == '"' && ch == '\\') {
                        char e = raw[++i];
                        ch = e == 'n' ? '\n' : e == 't' ? '\t' : e;
                        if (e != 'n' && e != 't' && e != '"' && e != '\\' &&
                            dp_buf_append(&arg, "\\", 1))
                            goto fail_arg;
                    }
                    if (dp_buf_append(&arg, &ch, 1)) goto fail_arg;
                }
                i++;
            } else {
                if (dp_buf_append(&arg, &raw[i], 1)) goto fail_arg;
                i++;
            }
        }
        if (c->n_args == DP_TOOL_MAX_ARGS) {
            *too_many = true;
            dp_buf_free(&arg);
            dp_tool_call_free(c);
            return -1;
        }
        if (!(c->args[c->n_args] = dp_strdup(arg.data))) goto fail_arg;
        c->n_args++;
    }
    dp_buf_free(&arg);
    return 0;
fail_arg:
    dp_buf_free(&arg);
fail:
    dp_tool_call_free(c);
    return -1;
}

/* Gives out in[shown, upto) as text. */
static int give_text(dp_tool_scanner *s, size_t upto) {
    if (upto <= s->shown) return 0;
    int rc = s->sink.text ? s->sink.text(s->sink.ctx, s->in.data + s->shown, upto - s->shown) : 0;
    s->shown = upto;
    return rc;
}

/* The bracket at call_start is not a call: its `[` is text, reading goes on after it. */
static void not_a_call(dp_tool_scanner *s) {
    s->in_call = false;
    s->pos = s->call_start + 1;
}

/* The call in[call_start, pos) is complete. */
static int give_call(dp_tool_scanner *s) {
    if (s->args > DP_TOOL_MAX_ARGS) { /* counted as read: no split of a long failed call */
        not_a_call(s);
        return 0;
    }
    dp_tool_call c;
    bool too_many;
    const char *raw = s->in.data + s->call_start;
    size_t n = s->pos - s->call_start;
    if (split_call(s, raw, n, &c, &too_many)) {
        if (!too_many) return -1;
        not_a_call(s);
        return 0;
    }
    s->in_call = false;
    int rc = give_text(s, s->call_start);
    s->shown = s->pos;
    if (!rc && s->sink.call) rc = s->sink.call(s->sink.ctx, &c);
    dp_tool_call_free(&c);
    return rc;
}

static call_step *step_at(dp_tool_scanner *s, size_t pos, int state) {
    return &s->steps[pos * CALL_WALK + (size_t)state];
}

/* Room for a step at every position of in. */
static int reserve_steps(dp_tool_scanner *s) {
    if (s->steps_cap >= s->in.len) return 0;
    size_t cap = s->steps_cap ? 2 * s->steps_cap : 256;
    if (cap < s->in.len) cap = s->in.len;
    call_step *p = dp_realloc(s->steps, cap * CALL_WALK * sizeof *p);
    if (!p) return -1;
    memset(p + s->steps_cap * CALL_WALK, 0, (cap - s->steps_cap) * CALL_WALK * sizeof *p);
    s->steps = p;
    s->steps_cap = cap;
    return 0;
}

/* Moves the call being read along the steps recorded from (pos, call_state) to where none is
 * recorded yet, and points each step passed straight there (path compression). */
static void follow_steps(dp_tool_scanner *s) {
    size_t end = s->pos;
    int end_state = s->call_state, args = 0;
    for (call_step *e; end < s->in.len && (e = step_at(s, end, end_state))->ahead;) {
        args += e->args;
        end += e->ahead;
        end_state = e->to;
    }
    int left = args, state = s->call_state;
    for (size_t p = s->pos; p < end;) {
        call_step *e = step_at(s, p, state), old = *e;
        if (end - p <= UINT16_MAX) /* always: a call reads at most DP_TOOL_MAX_CALL bytes */
            *e = (call_step){
                .ahead = (uint16_t)(end - p), .args = (uint16_t)left, .to = (uint8_t)end_state};
        left -= old.args;
        p += old.ahead;
        state = old.to;
    }
    s->pos = end;
    s->call_state = end_state;
    s->args += args;
}

/* One byte of a call being read, or a jump along recorded steps; -1 on an allocation error. */
static int call_byte(dp_tool_scanner *s, char c) {
    if (s->call_state == CALL_CLOSED) {
        if (c == '(') { /* [text](url): a link */
            not_a_call(s);
            return 0;
        }
        return give_call(s); /* pos stays: c is read again as text */
    }
    if (s->call_state != CALL_NAME) {
        if (reserve_steps(s)) return -1;
        if (step_at(s, s->pos, s->call_state)->ahead) {
            follow_steps(s);
            /* past the limit on the way: cannot be, the steps were laid by calls that began
             * earlier and so end within this one's limit; checked so a jump never skips it */
            if (s->pos - s->call_start > DP_TOOL_MAX_CALL) not_a_call(s);
            return 0;
        }
    }
    size_t len = s->pos - s->call_start; /* bytes read so far, the `[` included */
    if (c == '\n' || c == '\r' || c == 0 || len + 1 > DP_TOOL_MAX_CALL) {
        not_a_call(s);
        return 0;
    }
    int from = s->call_state;
    bool arg_start = false;
    switch (s->call_state) {
    case CALL_NAME:
        if (name_char(c)) {
            if (!name_grows(s, c)) {
                not_a_call(s);
                return 0;
            }
        } else if ((c == ' ' || c == '\t' || c == ']') && name_is_call(s)) {
            s->call_state = c == ']' ? CALL_CLOSED : CALL_SEP;
            s->args = 0;
        } else {
            not_a_call(s);
            return 0;
        }
        break;
    case CALL_SEP:
    case CALL_WORD:
        arg_start = s->call_state == CALL_SEP && c != ' ' && c != '\t' && c != ']';
        s->call_state = c == '"'                ? CALL_DQ
                        : c == '\''             ? CALL_SQ
                        : c == ']'              ? CALL_CLOSED
                        : c == ' ' || c == '\t' ? CALL_SEP
                                                : CALL_WORD;
        break;
    case CALL_DQ:
        if (c == '\\') s->call_state = CALL_DQ_ESC;
        if (c == '"') s->call_state = CALL_WORD;
        break;
    case CALL_DQ_ESC:
        s->call_state = CALL_DQ;
        break;
    case CALL_SQ:
        if (c == '\'') s->call_state = CALL_WORD;
        break;
    }
    if (from != CALL_NAME && s->call_state != CALL_CLOSED)
        *step_at(s, s->pos, from) =
            (call_step){.ahead = 1, .args = arg_start, .to = (uint8_t)s->call_state};
    s->args += arg_start;
    s->pos++;
    return 0;
}

/* The end of a backtick run outside fences: opens or closes an inline code span. */
static void end_ticks(dp_tool_scanner *s) {
    if (!s->ticks) return;
    if (!s->code_ticks)
        s->code_ticks = s->ticks;
    else if (s->code_ticks == s->ticks)
        s->code_ticks = 0;
    s->ticks = 0;
}

static void new_line(dp_tool_scanner *s) {
    s->prefix = true;
    s->indent = s->run = 0;
    s->fence_rest = false;
    s->code_ticks = 0; /* a span never closed ends with its line */
    s->ticks = 0;
}

/* One byte of text (not inside a call). */
static void text_byte(dp_tool_scanner *s, char c) {
    s->pos++;
    if (s->prefix) {
        if (c == ' ' && s->run == 0 && s->indent < 3) {
            s->indent++;
            return;
        }
        if ((c == '`' || c == '~') && (s->run == 0 || c == s->run_char)) {
            s->run_char = c;
            s->run++;
            return;
        }
        /* the prefix ends here */
        s->prefix = false;
        if (s->fence_len) {
            if (s->run_char == s->fence_char && s->run >= s->fence_len) {
                s->close_pending = true;
                if (c == '\n') {
                    s->fence_len = 0;
                    s->close_pending = false;
                    new_line(s);
                    return;
                }
            }
            s->fence_rest = true;
        } else if (s->run >= 3) {
            s->fence_len = s->run;
            s->fence_char = s->run_char;
            s->fence_rest = true;
        } else if (s->run_char == '`' && s->run) {
            s->ticks = s->run;
        }
        s->run = 0;
    }
    if (s->fence_len) { /* inside a fenced block: only the end of the line matters */
        if (c == '\n') {
            if (s->close_pending) s->fence_len = 0;
            s->close_pending = false;
            new_line(s);
        } else if (s->close_pending && c != ' ' && c != '\t' && c != '\r') {
            s->close_pending = false;
        }
        return;
    }
    if (c == '`') {
        s->ticks++;
        return;
    }
    end_ticks(s);
    if (c == '\n') {
        new_line(s);
        return;
    }
    if (c == '[' && !s->code_ticks) {
        s->in_call = true;
        s->call_start = s->pos - 1;
        s->call_state = CALL_NAME;
        s->name_len = 0;
    }
}

/* Reads what was fed; `final`: decide everything held. */
static int scan(dp_tool_scanner *s, bool final) {
    int rc = 0;
    for (;;) {
        while (!rc && s->pos < s->in.len) {
            char c = s->in.data[s->pos];
            if (s->in_call)
                rc = call_byte(s, c);
            else
                text_byte(s, c);
        }
        if (rc || !final || !s->in_call) break;
        if (s->call_state == CALL_CLOSED)
            rc = give_call(s);
        else
            not_a_call(s);
    }
    if (rc) return rc;
    rc = give_text(s, s->in_call ? s->call_start : s->pos);
    /* drop what is given out, once it is at least what is kept (O(1) a byte however the
     * reply is cut into feeds) */
    size_t drop = s->shown, keep = s->in.len - drop;
    if (drop && drop >= keep) {
        memmove(s->in.data, s->in.data + drop, keep);
        s->in.len = keep;
        s->pos -= drop;
        s->shown = 0;
        if (s->in_call) s->call_start -= drop;
        size_t used = drop + keep < s->steps_cap ? drop + keep : s->steps_cap; /* may be set */
        size_t moved = used > drop ? used - drop : 0;
        if (moved)
            memmove(s->steps, s->steps + drop * CALL_WALK, moved * CALL_WALK * sizeof *s->steps);
        if (used > moved)
            memset(s->steps + moved * CALL_WALK, 0, (used - moved) * CALL_WALK * sizeof *s->steps);
    }
    return rc;
}

int dp_tool_scanner_feed(dp_tool_scanner *s, const char *text, size_t n) {
    if (n && dp_buf_append(&s->in, text, n)) return -1;
    return scan(s, false);
}

int dp_tool_scanner_finish(dp_tool_scanner *s) {
    int rc = scan(s, true);
    size_t used = s->in.len < s->steps_cap ? s->in.len : s->steps_cap;
    if (used) memset(s->steps, 0, used * CALL_WALK * sizeof *s->steps);
    s->in.len = s->pos = s->shown = 0;
    s->in_call = false;
    s->fence_len = 0;
    s->close_pending = false;
    new_line(s);
    return rc;
}

void dp_tool_calls_free(dp_tool_calls *c) {
    for (int i = 0; i < c->n; i++) dp_tool_call_free(&c->v[i]);
    free(c->v);
    *c = (dp_tool_calls){0};
}

typedef struct {
    dp_tool_calls *calls;
    dp_buf *text;
} collect_ctx;

static int collect_text(void *ctx, const char *s, size_t n) {
    collect_ctx *c = ctx;
    return c->text ? dp_buf_append(c->text, s, n) : 0;
}

static int collect_call(void *ctx, const dp_tool_call *call) {
    dp_tool_calls *v = ((collect_ctx *)ctx)->calls;
    if (v->n == v->cap) {
        int cap = v->cap ? 2 * v->cap : 4;
        dp_tool_call *p = dp_realloc(v->v, (size_t)cap * sizeof *p);
        if (!p) return -1;
        v->v = p;
        v->cap = cap;
    }
    if (dp_tool_call_copy(&v->v[v->n], call)) return -1;
    v->n++;
    return 0;
}

int dp_tool_calls_parse(const char *reply, size_t n, const char *const *names, int n_names,
                        dp_tool_calls *calls, dp_buf *text) {
    collect_ctx cc = {calls, text};
    dp_tool_scanner *s =
        dp_tool_scanner_create(names, n_names, (dp_tool_sink){collect_text, collect_call, &cc});
    if (!s) return -1;
    int rc = dp_tool_scanner_feed(s, reply, n);
    if (!rc) rc = dp_tool_scanner_finish(s);
    dp_tool_scanner_destroy(s);
    if (!rc && text && !text->data) rc = dp_buf_append(text, "", 0);
    return rc;
}

/* ================================================================ running a tool */
dp_tool_limits dp_tool_limits_default(void) {
    return (dp_tool_limits){.timeout_s = 10, .output_cap = 16384, .cwd = NULL};
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* In the child between fork and execve: async-signal-safe calls only. */
static void child_exec(char *const argv[], const char *cwd, int out_fd, int err_fd) {
    setpgid(0, 0);
    int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(out_fd, 2) < 0) {
        int e = errno;
        (void)!write(err_fd, &e, sizeof e);
        _exit(127);
    }
    if (cwd && chdir(cwd)) {
        int e = errno;
        (void)!write(err_fd, &e, sizeof e);
        _exit(127);
    }
    /* the model files and sockets of the parent stay out of the tool */
    long max_fd = sysconf(_SC_OPEN_MAX);
    if (max_fd < 0 || max_fd > 65536) max_fd = 65536;
    for (int fd = 3; fd < max_fd; fd++)
        if (fd != err_fd) close(fd);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    execve(argv[0], argv, environ);
    int e = errno;
    (void)!write(err_fd, &e, sizeof e);
    _exit(127);
}

int dp_tool_run(char *const argv[], const dp_tool_limits *lim, dp_buf *out, dp_tool_status *st) {
    *st = (dp_tool_status){.exit_code = -1};
    int out_pipe[2], err_pipe[2]; /* err_pipe: execve's errno, closed on success by CLOEXEC */
    if (pipe2(out_pipe, O_CLOEXEC))
        return dp_fail("running %s: pipe: %s", argv[0], strerror(errno));
    if (pipe2(err_pipe, O_CLOEXEC)) {
        close(out_pipe[0]);
        close(out_pipe[1]);
        return dp_fail("running %s: pipe: %s", argv[0], strerror(errno));
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(out_pipe[0]), close(out_pipe[1]), close(err_pipe[0]), close(err_pipe[1]);
        return dp_fail("running %s: fork: %s", argv[0], strerror(e));
    }
    if (pid == 0) child_exec(argv, lim->cwd, out_pipe[1], err_pipe[1]);
    setpgid(pid, pid); /* also here: no race with the kill below */
    close(out_pipe[1]);
    close(err_pipe[1]);

    int rc = 0;
    double deadline = now_s() + lim->timeout_s;
    size_t kept = 0;
    bool open_out = true;
    char chunk[4096];
    while (open_out) {
        double left = deadline - now_s();
        if (left <= 0) {
            st->timed_out = true;
            break;
        }
        struct pollfd p = {.fd = out_pipe[0], .events = POLLIN};
        int r = poll(&p, 1, (int)(left * 1000) + 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) continue;
        ssize_t n = read(out_pipe[0], chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            open_out = false;
            break;
        }
        size_t take = (size_t)n;
        if (kept + take > lim->output_cap) {
            take = lim->output_cap - kept;
            st->truncated = true;
        }
        if (take && dp_buf_append(out, chunk, take)) {
            rc = -1;
            st->truncated = true;
        }
        kept += take;
        if (st->truncated) break;
    }
    /* the output is closed (or enough): wait for the exit, up to the same deadline */
    int status = 0;
    pid_t w = 0;
    while (!st->timed_out && !st->truncated) {
        w = waitpid(pid, &status, WNOHANG);
        if (w == pid || (w < 0 && errno != EINTR)) break;
        if (now_s() >= deadline) {
            st->timed_out = true;
            break;
        }
        struct timespec nap = {0, 5 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    if (w != pid) {
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
    }
    close(out_pipe[0]);

    int exec_errno = 0;
    ssize_t en;
    while ((en = read(err_pipe[0], &exec_errno, sizeof exec_errno)) < 0 && errno == EINTR) {
    }
    close(err_pipe[0]);
    if (en == (ssize_t)sizeof exec_errno) {
        out->len = 0;
        st->timed_out = st->truncated = false;
        if (dp_buf_printf(out, "cannot run %s: %s", argv[0], strerror(exec_errno))) rc = -1;
        return rc;
    }
    st->started = true;
    if (WIFEXITED(status) && !st->timed_out && !st->truncated) st->exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status) && !st->timed_out && !st->truncated) st->signal = WTERMSIG(status);
    if (!out->data && dp_buf_append(out, "", 0)) rc = -1;
    return rc;
}

/* ================================================================ a directory of tools */
static int by_name(const void *a, const void *b) {
    return strcmp(((const dp_tool *)a)->name, ((const dp_tool *)b)->name);
}

void dp_toolbox_close(dp_toolbox *tb) {
    if (!tb) return;
    for (int i = 0; i < tb->n; i++) {
        free(tb->tools[i].name);
        free(tb->tools[i].call_name);
        free(tb->tools[i].path);
        free(tb->tools[i].description);
    }
    free(tb->tools);
    free(tb->names);
    free(tb);
}

static bool tool_file_name(const char *n) {
    if (!*n || *n == '-' || strlen(n) > 64) return false;
    for (const char *p = n; *p; p++)
        if (!name_char(*p)) return false;
    return true;
}

/* First line of `TOOL --describe`, as the tool's description. */
static int describe(dp_tool *t, const dp_tool_limits *lim) {
    dp_tool_limits dl = *lim;
    if (dl.timeout_s > 5) dl.timeout_s = 5;
    dl.output_cap = 1024;
    char *argv[] = {t->path, "--describe", NULL};
    dp_buf out = {0};
    dp_tool_status st;
    if (dp_tool_run(argv, &dl, &out, &st)) {
        dp_buf_free(&out);
        return -1;
    }
    size_t n = 0;
    while (n < out.len && out.data[n] != '\n' && out.data[n] != '\r') n++;
    while (n && (out.data[n - 1] == ' ' || out.data[n - 1] == '\t')) n--;
    int rc = 0;
    if (!st.started || st.timed_out || st.exit_code != 0 || !n || memchr(out.data, 0, n) ||
        dp_utf8_valid_prefix(out.data, n) != n) {
        rc = dp_fail("tool %s: `%s --describe` must print a one-line description of it and exit "
                     "0 (it %s%s%.*s); fix the tool or move it out of the tools directory",
                     t->name, t->path,
                     !st.started    ? "could not run"
                     : st.timed_out ? "timed out"
                     : st.exit_code ? "failed"
                                    : "printed no text line",
                     out.len ? ": " : "", (int)(out.len > 200 ? 200 : out.len),
                     out.data ? out.data : "");
    } else if (!(t->description = dp_malloc(n + 1))) {
        rc = -1;
    } else {
        memcpy(t->description, out.data, n);
        t->description[n] = 0;
    }
    dp_buf_free(&out);
    return rc;
}

dp_toolbox *dp_toolbox_open(const char *dir, const dp_tool_limits *limits) {
    char real[PATH_MAX];
    if (!realpath(dir, real)) {
        dp_fail("--tools %s: %s (expected a directory of executables)", dir, strerror(errno));
        return NULL;
    }
    DIR *d = opendir(real);
    if (!d) {
        dp_fail("--tools %s: %s (expected a directory of executables)", dir, strerror(errno));
        return NULL;
    }
    dp_toolbox *tb = dp_calloc(1, sizeof *tb);
    if (!tb) goto fail;
    tb->limits = *limits;
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[PATH_MAX + 256];
        snprintf(path, sizeof path, "%s/%s", real, e->d_name);
        struct stat sb;
        if (stat(path, &sb) || !S_ISREG(sb.st_mode) || access(path, X_OK)) continue;
        if (!tool_file_name(e->d_name)) {
            fprintf(stderr,
                    "doppel: %s is not used as a tool: a tool's name is letters, "
                    "digits, _ and - only\n",
                    path);
            continue;
        }
        if (tb->n == cap) {
            cap = cap ? 2 * cap : 8;
            dp_tool *t = dp_realloc(tb->tools, (size_t)cap * sizeof *t);
            if (!t) goto fail;
            tb->tools = t;
        }
        dp_tool *t = &tb->tools[tb->n];
        *t = (dp_tool){dp_strdup(e->d_name), dp_strdup(e->d_name), dp_strdup(path), NULL};
        tb->n++;
        if (!t->name || !t->call_name || !t->path) goto fail;
        for (char *p = t->call_name; *p; p++)
            *p = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    }
    closedir(d);
    d = NULL;
    if (!tb->n) {
        dp_fail("--tools %s: no executable file in it (a tool is an executable named after "
                "what it does, answering --describe)",
                dir);
        goto fail;
    }
    qsort(tb->tools, (size_t)tb->n, sizeof *tb->tools, by_name);
    for (int i = 1; i < tb->n; i++)
        if (!strcmp(tb->tools[i - 1].call_name, tb->tools[i].call_name)) {
            dp_fail("--tools %s: %s and %s are both called %s; rename one", dir,
                    tb->tools[i - 1].name, tb->tools[i].name, tb->tools[i].call_name);
            goto fail;
        }
    tb->names = dp_calloc((size_t)tb->n, sizeof *tb->names);
    if (!tb->names) goto fail;
    for (int i = 0; i < tb->n; i++) {
        tb->names[i] = tb->tools[i].call_name;
        if (describe(&tb->tools[i], limits)) goto fail;
    }
    return tb;
fail:
    if (d) closedir(d);
    dp_toolbox_close(tb);
    return NULL;
}

int dp_toolbox_prompt(const dp_toolbox *tb, dp_buf *out) {
    if (dp_buf_puts(out, "You can use these tools:\n")) return -1;
    for (int i = 0; i < tb->n; i++)
        if (dp_buf_printf(out, "- %s: %s\n", tb->tools[i].call_name, tb->tools[i].description))
            return -1;
    return dp_buf_printf(
        out,
        "To use a tool, write its name and argument in square brackets, for example "
        "[%s %s], then stop; put an argument with spaces in double quotes. The user "
        "runs the call and gives you its output in the next message; then answer with it. "
        "Use a tool only when you need it, and never write its output yourself.",
        tb->tools[0].call_name, "...");
}

/* The output as message text: a byte that is not UTF-8 (or a NUL, which would end the message
 * early) becomes '?'; a character cut by the output cap is dropped. */
static void as_text(dp_buf *b, bool cut) {
    size_t i = 0;
    while (i < b->len) {
        i += dp_utf8_valid_prefix(b->data + i, b->len - i);
        if (i >= b->len) break;
        if (cut && b->len - i < 4) { /* perhaps the start of a character the cap cut */
            size_t k = i + 1;
            while (k < b->len && ((unsigned char)b->data[k] & 0xC0) == 0x80) k++;
            if (k == b->len) {
                b->len = i;
                break;
            }
        }
        b->data[i++] = '?';
    }
    for (size_t k = 0; k < b->len; k++)
        if (!b->data[k]) b->data[k] = '?';
}

int dp_toolbox_result(const dp_toolbox *tb, const dp_tool_call *c, bool declined, dp_buf *told) {
    if (c->tool < 0 || c->tool >= tb->n) {
        if (dp_buf_printf(told, "%s failed: there is no tool named %s. The tools are:", c->raw,
                          c->name))
            return -1;
        for (int i = 0; i < tb->n; i++)
            if (dp_buf_printf(told, " %s%s", tb->tools[i].call_name, i + 1 < tb->n ? "," : "."))
                return -1;
        return 0;
    }
    if (declined) return dp_buf_printf(told, "%s was not run: the user declined it.", c->raw);
    const dp_tool *t = &tb->tools[c->tool];
    char **argv = dp_calloc((size_t)c->n_args + 2, sizeof *argv);
    if (!argv) return -1;
    argv[0] = t->path;
    for (int i = 0; i < c->n_args; i++) argv[i + 1] = c->args[i];
    dp_buf out = {0};
    dp_tool_status st;
    int rc = dp_tool_run(argv, &tb->limits, &out, &st);
    free(argv);
    if (rc) {
        dp_buf_free(&out);
        return -1;
    }
    as_text(&out, st.truncated || st.timed_out);
    /* trailing newlines add nothing for the model */
    while (out.len && (out.data[out.len - 1] == '\n' || out.data[out.len - 1] == '\r')) out.len--;
    const char *o = out.len ? out.data : "";
    int n = (int)out.len;
    if (!st.started)
        rc = dp_buf_printf(told, "%s failed: the tool could not be started (%.*s).", c->raw, n, o);
    else if (st.timed_out)
        rc = dp_buf_printf(told, "%s failed: it did not finish within %g s and was stopped.%s%.*s",
                           c->raw, tb->limits.timeout_s, n ? " Its output so far:\n" : "", n, o);
    else if (st.truncated)
        rc = dp_buf_printf(told, "%s returned (cut at %zu bytes):\n%.*s", c->raw,
                           tb->limits.output_cap, n, o);
    else if (st.signal)
        rc = dp_buf_printf(told, "%s failed: the tool was killed by signal %d.%s%.*s", c->raw,
                           st.signal, n ? " Its output:\n" : "", n, o);
    else if (st.exit_code)
        rc = dp_buf_printf(told, "%s failed (exit status %d):\n%.*s", c->raw, st.exit_code, n,
                           n ? o : "(no output)");
    else
        rc = dp_buf_printf(told, "%s returned:\n%.*s", c->raw, n, n ? o : "(no output)");
    dp_buf_free(&out);
    return rc;
}

/* ================================================================ one chat turn */
struct dp_tool_chat {
    const dp_tool_chat_io *io;
    dp_think_splitter think;
    dp_tool_scanner *scanner; /* NULL without tools */
    dp_buf thought, answer;   /* what one piece gave, shown then cleared */
    dp_buf kept;              /* the reply as the history keeps it */
    dp_buf after_call;        /* whitespace after a call (kept only if another call follows) */
    dp_tool_calls calls;
    bool stop; /* the reply went on with text after its calls: the rest is not wanted */
};

static void show(dp_tool_chat *tc, dp_show_kind k, const char *s, size_t n) {
    if (tc->io->show && (n || k == DP_SHOW_END)) tc->io->show(tc->io->ctx, k, s, n);
}

static int on_reply_text(void *ctx, const char *s, size_t n) {
    dp_tool_chat *tc = ctx;
    if (tc->stop) return 0;
    if (!tc->calls.n) {
        show(tc, DP_SHOW_TEXT, s, n);
        return dp_buf_append(&tc->kept, s, n);
    }
    for (size_t i = 0; i < n; i++)
        if (!isspace((unsigned char)s[i])) {
            /* a model that writes on after a call is usually imagining its output */
            tc->stop = true;
            return 0;
        }
    return dp_buf_append(&tc->after_call, s, n);
}

static int on_reply_call(void *ctx, const dp_tool_call *c) {
    dp_tool_chat *tc = ctx;
    if (tc->stop) return 0;
    if (dp_buf_append(&tc->kept, tc->after_call.data, tc->after_call.len) ||
        dp_buf_puts(&tc->kept, c->raw))
        return -1;
    tc->after_call.len = 0;
    show(tc, DP_SHOW_CALL, c->raw, strlen(c->raw));
    collect_ctx cc = {&tc->calls, NULL};
    return collect_call(&cc, c);
}

/* The answer part of a piece: to the scanner, or straight to the user and the history. */
static int take_answer(dp_tool_chat *tc) {
    int rc = 0;
    show(tc, DP_SHOW_THOUGHT, tc->thought.data, tc->thought.len);
    if (tc->answer.len && !tc->stop)
        rc = tc->scanner ? dp_tool_scanner_feed(tc->scanner, tc->answer.data, tc->answer.len)
                         : on_reply_text(tc, tc->answer.data, tc->answer.len);
    tc->thought.len = tc->answer.len = 0;
    return rc;
}

int dp_tool_chat_feed(dp_tool_chat *tc, const char *text, size_t n) {
    if (tc->stop) return 1;
    if (dp_think_feed(&tc->think, text, n, &tc->thought, &tc->answer) || take_answer(tc)) return -1;
    return tc->stop ? 1 : 0;
}

/* The results of a reply's calls, as one message. */
static int run_calls(dp_tool_chat *tc, dp_session *s, const dp_tool_chat_opts *o) {
    const dp_toolbox *tb = o->tools;
    int n = tc->calls.n, rc = 0;
    dp_buf *told = dp_calloc((size_t)n, sizeof *told);
    const char **texts = dp_calloc((size_t)n, sizeof *texts);
    if (!told || !texts) rc = -1;
    for (int i = 0; i < n && !rc; i++) {
        const dp_tool_call *c = &tc->calls.v[i];
        bool declined = c->tool >= 0 && tc->io->confirm &&
                        !tc->io->confirm(tc->io->ctx, c, &tb->tools[c->tool]);
        rc = dp_toolbox_result(tb, c, declined, &told[i]);
        if (!rc) {
            show(tc, DP_SHOW_RESULT, told[i].data, told[i].len);
            texts[i] = told[i].data;
        }
    }
    dp_buf msg = {0};
    if (!rc) rc = dp_chat_tool_message(&o->style, texts, n, &msg);
    if (!rc) rc = dp_session_add(s, o->style.role, msg.data);
    dp_buf_free(&msg);
    for (int i = 0; told && i < n; i++) dp_buf_free(&told[i]);
    free(told);
    free(texts);
    return rc;
}

int dp_tool_chat_reply(dp_session *s, const dp_tool_chat_opts *o, const dp_tool_chat_io *io) {
    dp_tool_chat tc = {.io = io};
    if (o->tools) {
        tc.scanner = dp_tool_scanner_create(o->tools->names, o->tools->n,
                                            (dp_tool_sink){on_reply_text, on_reply_call, &tc});
        if (!tc.scanner) return -1;
    }
    if (!o->thinking) tc.think.state = 2; /* all answer */
    int max_rounds = o->max_rounds > 0 ? o->max_rounds : 8, rc = 0;
    for (int round = 0; round < max_rounds && !rc; round++) {
        tc.kept.len = tc.after_call.len = 0;
        tc.stop = false;
        dp_tool_calls_free(&tc.calls);
        rc = io->generate(io->ctx, s, &tc);
        if (rc >= 0) {
            int interrupted = rc;
            rc = dp_think_finish(&tc.think, &tc.thought, &tc.answer) || take_answer(&tc) ? -1 : 0;
            if (!o->thinking) tc.think.state = 2;
            if (!rc && tc.scanner) rc = dp_tool_scanner_finish(tc.scanner);
            show(&tc, DP_SHOW_END, "", 0);
            if (!rc) rc = dp_session_add(s, "assistant", tc.kept.data ? tc.kept.data : "");
            if (!rc) rc = interrupted;
        }
        if (rc || !tc.calls.n) break;
        if (round + 1 == max_rounds) {
            static const char note[] = "(the model's calls were not run: too many tool rounds "
                                       "for one message)";
            show(&tc, DP_SHOW_RESULT, note, sizeof note - 1);
            break;
        }
        rc = run_calls(&tc, s, o);
    }
    dp_tool_scanner_destroy(tc.scanner);
    dp_think_free(&tc.think);
    dp_buf_free(&tc.thought);
    dp_buf_free(&tc.answer);
    dp_buf_free(&tc.kept);
    dp_buf_free(&tc.after_call);
    dp_tool_calls_free(&tc.calls);
    return rc;
}
