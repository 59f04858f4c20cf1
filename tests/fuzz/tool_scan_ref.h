/* The tool-call scanner as it was before it was made linear (infer/tools.c at fa5b9e0): a failed
 * call is re-read from the byte after its `[`, which costs O(n * DP_TOOL_MAX_CALL) on hostile
 * replies. Kept verbatim (names prefixed ref_) as the oracle that test_tools and fuzz_tool_calls
 * check the linear scanner against: the same text, the same calls, in the same order. */
#ifndef DOPPEL_TOOL_SCAN_REF_H
#define DOPPEL_TOOL_SCAN_REF_H

#include "data/base/error.h"
#include "infer/tools.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* The oracle is not what is fuzzed: no coverage feedback (nor trace-cmp's cost, which made the
 * quadratic scanner the bulk of each execution) from its code. */
#if defined(__clang__) && __clang_major__ >= 13
#define REF_FN __attribute__((no_sanitize("coverage"))) static
#else
#define REF_FN static
#endif

REF_FN bool ref_name_char(char c) {
    return isalnum((unsigned char)c) || c == '_' || c == '-';
}

/* a[0,n) is b (whole: all of it, else its start); `-` and `_` alike, any case */
REF_FN bool ref_name_match(const char *a, size_t n, const char *b, bool whole) {
    size_t i = 0;
    for (; i < n && b[i]; i++) {
        char x = (char)toupper((unsigned char)a[i]), y = (char)toupper((unsigned char)b[i]);
        if (x == '-') x = '_';
        if (y == '-') y = '_';
        if (x != y) return false;
    }
    return i == n && (!whole || !b[i]);
}
REF_FN bool ref_same_name(const char *a, size_t n, const char *b) {
    return ref_name_match(a, n, b, true);
}

/* the call reader's states */
enum { REF_CALL_NAME, REF_CALL_ARGS, REF_CALL_DQ, REF_CALL_DQ_ESC, REF_CALL_SQ, REF_CALL_CLOSED };
typedef struct ref_scanner ref_scanner;
REF_FN void ref_scanner_destroy(ref_scanner *s);

struct ref_scanner {
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
};

REF_FN ref_scanner *ref_scanner_create(const char *const *names, int n_names, dp_tool_sink sink) {
    ref_scanner *s = dp_calloc(1, sizeof *s);
    if (!s) return NULL;
    s->sink = sink;
    s->prefix = true;
    if (n_names > 0) {
        s->names = dp_calloc((size_t)n_names, sizeof *s->names);
        if (!s->names) goto fail;
        for (; s->n_names < n_names; s->n_names++)
            if (!(s->names[s->n_names] = dp_strdup(names[s->n_names]))) goto fail;
    }
    return s;
fail:
    ref_scanner_destroy(s);
    return NULL;
}

REF_FN void ref_scanner_destroy(ref_scanner *s) {
    if (!s) return;
    for (int i = 0; i < s->n_names; i++) free(s->names[i]);
    free(s->names);
    dp_buf_free(&s->in);
    free(s);
}

REF_FN size_t ref_scanner_held(const ref_scanner *s) {
    return s->in.len - s->shown;
}

REF_FN int ref_known_tool(const ref_scanner *s, const char *name, size_t n) {
    for (int i = 0; i < s->n_names; i++)
        if (ref_same_name(name, n, s->names[i])) return i;
    return -1;
}

/* A name that makes the bracket a call: a tool's, or an all-capitals one (unknown tool). */
REF_FN bool ref_call_name(const ref_scanner *s, const char *name, size_t n) {
    if (!n) return false;
    if (ref_known_tool(s, name, n) >= 0) return true;
    if (n < 2 || !isupper((unsigned char)name[0])) return false;
    for (size_t i = 0; i < n; i++)
        if (!(isupper((unsigned char)name[i]) || isdigit((unsigned char)name[i]) || name[i] == '_'))
            return false;
    return true;
}

/* Whether a name read so far can still become a call's: the start of a tool's name, or
 * capitals so far (an unknown tool); so `[see` is text at once, not held back. */
REF_FN bool ref_name_may_grow(const ref_scanner *s, const char *name, size_t n) {
    for (int i = 0; i < s->n_names; i++)
        if (ref_name_match(name, n, s->names[i], false)) return true;
    if (!isupper((unsigned char)name[0])) return false;
    for (size_t i = 0; i < n; i++)
        if (!(isupper((unsigned char)name[i]) || isdigit((unsigned char)name[i]) || name[i] == '_'))
            return false;
    return true;
}

/* Splits raw = "[NAME args]" (already checked by the reader) into the call. -1 with no
 * error recorded when there are too many arguments (the bracket is then text). */
REF_FN int ref_split_call(const ref_scanner *s, const char *raw, size_t n, dp_tool_call *c,
                          bool *too_many) {
    *c = (dp_tool_call){0};
    *too_many = false;
    size_t i = 1, nl = 0;
    while (ref_name_char(raw[i + nl])) nl++;
    c->name = dp_malloc(nl + 1);
    c->raw = dp_malloc(n + 1);
    c->args = dp_calloc(DP_TOOL_MAX_ARGS, sizeof *c->args);
    if (!c->name || !c->raw || !c->args) goto fail;
    memcpy(c->name, raw + 1, nl);
    c->name[nl] = 0;
    memcpy(c->raw, raw, n);
    c->raw[n] = 0;
    c->tool = ref_known_tool(s, raw + 1, nl);
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
REF_FN int ref_give_text(ref_scanner *s, size_t upto) {
    if (upto <= s->shown) return 0;
    int rc = s->sink.text ? s->sink.text(s->sink.ctx, s->in.data + s->shown, upto - s->shown) : 0;
    s->shown = upto;
    return rc;
}

/* The bracket at call_start is not a call: its `[` is text, reading goes on after it. */
REF_FN void ref_not_a_call(ref_scanner *s) {
    s->in_call = false;
    s->pos = s->call_start + 1;
}

/* The call in[call_start, pos) is complete. */
REF_FN int ref_give_call(ref_scanner *s) {
    dp_tool_call c;
    bool too_many;
    const char *raw = s->in.data + s->call_start;
    size_t n = s->pos - s->call_start;
    if (ref_split_call(s, raw, n, &c, &too_many)) {
        if (!too_many) return -1;
        ref_not_a_call(s);
        return 0;
    }
    s->in_call = false;
    int rc = ref_give_text(s, s->call_start);
    s->shown = s->pos;
    if (!rc && s->sink.call) rc = s->sink.call(s->sink.ctx, &c);
    dp_tool_call_free(&c);
    return rc;
}

/* One byte of a call being read; `final`: it is the end of the reply (c unused). */
REF_FN int ref_call_byte(ref_scanner *s, char c) {
    size_t len = s->pos - s->call_start; /* bytes read so far, the `[` included */
    if (s->call_state == REF_CALL_CLOSED) {
        if (c == '(') { /* [text](url): a link */
            ref_not_a_call(s);
            return 0;
        }
        return ref_give_call(s); /* pos stays: c is read again as text */
    }
    if (c == '\n' || c == '\r' || c == 0 || len + 1 > DP_TOOL_MAX_CALL) {
        ref_not_a_call(s);
        return 0;
    }
    switch (s->call_state) {
    case REF_CALL_NAME:
        if (ref_name_char(c)) {
            s->name_len++;
            if (!ref_name_may_grow(s, s->in.data + s->call_start + 1, s->name_len)) {
                ref_not_a_call(s);
                return 0;
            }
        } else if ((c == ' ' || c == '\t' || c == ']') &&
                   ref_call_name(s, s->in.data + s->call_start + 1, s->name_len)) {
            s->call_state = c == ']' ? REF_CALL_CLOSED : REF_CALL_ARGS;
        } else {
            ref_not_a_call(s);
            return 0;
        }
        break;
    case REF_CALL_ARGS:
        if (c == '"') s->call_state = REF_CALL_DQ;
        if (c == '\'') s->call_state = REF_CALL_SQ;
        if (c == ']') s->call_state = REF_CALL_CLOSED;
        break;
    case REF_CALL_DQ:
        if (c == '\\') s->call_state = REF_CALL_DQ_ESC;
        if (c == '"') s->call_state = REF_CALL_ARGS;
        break;
    case REF_CALL_DQ_ESC:
        s->call_state = REF_CALL_DQ;
        break;
    case REF_CALL_SQ:
        if (c == '\'') s->call_state = REF_CALL_ARGS;
        break;
    }
    s->pos++;
    return 0;
}

/* The end of a backtick run outside fences: opens or closes an inline code span. */
REF_FN void ref_end_ticks(ref_scanner *s) {
    if (!s->ticks) return;
    if (!s->code_ticks)
        s->code_ticks = s->ticks;
    else if (s->code_ticks == s->ticks)
        s->code_ticks = 0;
    s->ticks = 0;
}

REF_FN void ref_new_line(ref_scanner *s) {
    s->prefix = true;
    s->indent = s->run = 0;
    s->fence_rest = false;
    s->code_ticks = 0; /* a span never closed ends with its line */
    s->ticks = 0;
}

/* One byte of text (not inside a call). */
REF_FN void ref_text_byte(ref_scanner *s, char c) {
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
                    ref_new_line(s);
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
            ref_new_line(s);
        } else if (s->close_pending && c != ' ' && c != '\t' && c != '\r') {
            s->close_pending = false;
        }
        return;
    }
    if (c == '`') {
        s->ticks++;
        return;
    }
    ref_end_ticks(s);
    if (c == '\n') {
        ref_new_line(s);
        return;
    }
    if (c == '[' && !s->code_ticks) {
        s->in_call = true;
        s->call_start = s->pos - 1;
        s->call_state = REF_CALL_NAME;
        s->name_len = 0;
    }
}

/* Reads what was fed; `final`: decide everything held. */
REF_FN int ref_scan(ref_scanner *s, bool final) {
    int rc = 0;
    for (;;) {
        while (!rc && s->pos < s->in.len) {
            char c = s->in.data[s->pos];
            if (s->in_call)
                rc = ref_call_byte(s, c);
            else
                ref_text_byte(s, c);
        }
        if (rc || !final || !s->in_call) break;
        if (s->call_state == REF_CALL_CLOSED)
            rc = ref_give_call(s);
        else
            ref_not_a_call(s);
    }
    if (rc) return rc;
    rc = ref_give_text(s, s->in_call ? s->call_start : s->pos);
    /* drop what is given out */
    size_t drop = s->shown;
    if (drop) {
        memmove(s->in.data, s->in.data + drop, s->in.len - drop);
        s->in.len -= drop;
        s->pos -= drop;
        s->shown = 0;
        if (s->in_call) s->call_start -= drop;
    }
    return rc;
}

REF_FN int ref_scanner_feed(ref_scanner *s, const char *text, size_t n) {
    if (n && dp_buf_append(&s->in, text, n)) return -1;
    return ref_scan(s, false);
}

REF_FN int ref_scanner_finish(ref_scanner *s) {
    int rc = ref_scan(s, true);
    s->in.len = s->pos = s->shown = 0;
    s->in_call = false;
    s->fence_len = 0;
    s->close_pending = false;
    ref_new_line(s);
    return rc;
}

/* A sink that writes every event in order (text pieces, calls with their tool, name,
 * arguments and raw text; each piece as a tag, its length in binary and its bytes), so two
 * scanners can be compared byte for byte. No printf: it was a tenth of a fuzz execution. */
REF_FN int ref_log_piece(dp_buf *log, char tag, const void *s, size_t n) {
    return dp_buf_append(log, &tag, 1) || dp_buf_append(log, &n, sizeof n) ||
           dp_buf_append(log, s, n);
}
REF_FN int ref_log_text(void *ctx, const char *s, size_t n) {
    return ref_log_piece(ctx, 'T', s, n);
}
REF_FN int ref_log_call(void *ctx, const dp_tool_call *c) {
    dp_buf *log = ctx;
    if (ref_log_piece(log, 'C', &c->tool, sizeof c->tool) ||
        ref_log_piece(log, 'N', c->name, strlen(c->name)))
        return -1;
    for (int i = 0; i < c->n_args; i++)
        if (ref_log_piece(log, 'A', c->args[i], strlen(c->args[i]))) return -1;
    return ref_log_piece(log, 'R', c->raw, strlen(c->raw));
}
REF_FN dp_tool_sink ref_log_sink(dp_buf *log) {
    return (dp_tool_sink){ref_log_text, ref_log_call, log};
}

#endif
