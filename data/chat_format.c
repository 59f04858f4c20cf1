/* ChatML and Llama-3 rendering to text and to ids + loss mask (REFERENCE.md section 7). */
#include "data/chat_format.h"
#include "data/base/json.h"
#include "data/base/error.h"

#include <stdlib.h>
#include <string.h>

const char *dp_chat_format_name(dp_chat_format f) {
    return f == DP_CHAT_CHATML ? "chatml" : f == DP_CHAT_LLAMA3 ? "llama3" : "?";
}

int dp_chat_format_parse(const char *name, dp_chat_format *f) {
    if (!strcmp(name, "chatml"))
        *f = DP_CHAT_CHATML;
    else if (!strcmp(name, "llama3"))
        *f = DP_CHAT_LLAMA3;
    else
        return dp_fail("unknown chat format \"%s\" (use --chat-format chatml|llama3)", name);
    return 0;
}

int dp_chat_format_choose(const char *tpl, const char *override, dp_chat_format *f) {
    if (override && *override) return dp_chat_format_parse(override, f);
    if (!tpl || !*tpl)
        return dp_fail("the model has no chat_template; pass --chat-format chatml|llama3");
    if (strstr(tpl, "<|im_start|>") && strstr(tpl, "<|im_end|>")) {
        *f = DP_CHAT_CHATML;
        return 0;
    }
    if (strstr(tpl, "<|start_header_id|>") && strstr(tpl, "<|eot_id|>")) {
        *f = DP_CHAT_LLAMA3;
        return 0;
    }
    return dp_fail("the model's chat_template is neither ChatML nor Llama-3 (not recognized); "
                   "pass --chat-format chatml|llama3");
}

/* Python's str.isspace set, which Jinja's `trim` (Llama-3 templates) strips. */
static bool py_space(uint32_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

static uint32_t cp_at(const unsigned char *s, size_t n, size_t *k) {
    unsigned char c = s[0];
    int len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if ((size_t)len > n) len = 1;
    uint32_t v = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
    for (int i = 1; i < len; i++) v = (v << 6) | (s[i] & 0x3F);
    *k = (size_t)len;
    return v;
}

static void trim(const char *s, size_t len, const char **b, size_t *n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t start = 0, end = len, k;
    while (start < end && py_space(cp_at(u + start, end - start, &k))) start += k;
    while (end > start) {
        size_t p = end - 1;
        while (p > start && (u[p] & 0xC0) == 0x80) p--;
        if (!py_space(cp_at(u + p, end - p, &k))) break;
        end = p;
    }
    *b = s + start;
    *n = end - start;
}

static int check_msgs(const dp_chat_msg *m, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!m[i].content || (unsigned)m[i].role > DP_ROLE_TOOL)
            return dp_fail("message %zu has no content or an unknown role", i);
    return 0;
}

/* Llama 3.1's template writes a tool message as `message.content | tojson` (a string is
 * "iterable" to Jinja), and transformers' tojson is json.dumps(ensure_ascii=False): the
 * content in double quotes with " \ and the control characters escaped, the rest as is. */
static int append_tojson(dp_buf *b, const char *s, size_t n) {
    return dp_json_append_string(b, s, n);
}

/* Llama 3: a tool's output goes back as an `ipython` turn, JSON-quoted and not trimmed
 * (Llama 3.1's template); every other message is trimmed under its own role. */
static int llama3_body(const dp_chat_msg *m, const char **role, const char **c, size_t *cl,
                       dp_buf *json) {
    if (m->role != DP_ROLE_TOOL) {
        *role = dp_role_name(m->role);
        trim(m->content, m->len, c, cl);
        return 0;
    }
    *role = "ipython";
    if (append_tojson(json, m->content, m->len)) return -1;
    *c = json->data;
    *cl = json->len;
    return 0;
}

int dp_chat_render_text(dp_chat_format f, const dp_chat_msg *m, size_t n, bool gen, dp_buf *out) {
    if (check_msgs(m, n)) return -1;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        if (f == DP_CHAT_CHATML) {
            rc = dp_buf_printf(out, "<|im_start|>%s\n%.*s<|im_end|>\n", dp_role_name(m[i].role),
                               (int)m[i].len, m[i].content);
        } else {
            const char *c, *role;
            size_t cl;
            dp_buf json = {0};
            rc = llama3_body(&m[i], &role, &c, &cl, &json) ||
                 dp_buf_printf(out, "%s<|start_header_id|>%s<|end_header_id|>\n\n%.*s<|eot_id|>",
                               i == 0 ? "<|begin_of_text|>" : "", role, (int)cl, c);
            dp_buf_free(&json);
        }
    }
    if (!rc && gen)
        rc = dp_buf_puts(out, f == DP_CHAT_CHATML
                                  ? "<|im_start|>assistant\n"
                                  : "<|start_header_id|>assistant<|end_header_id|>\n\n");
    if (!rc && !out->data) rc = dp_buf_append(out, "", 0);
    return rc;
}

void dp_chat_tokens_free(dp_chat_tokens *c) {
    dp_ids_free(&c->ids);
    free(c->mask);
    *c = (dp_chat_tokens){0};
}

static int sync_mask(dp_chat_tokens *c, size_t from, uint8_t v) {
    if (c->ids.n > c->mask_cap) {
        size_t cap = c->ids.cap > c->ids.n ? c->ids.cap : c->ids.n;
        uint8_t *m = dp_realloc(c->mask, cap);
        if (!m) return -1;
        c->mask = m;
        c->mask_cap = cap;
    }
    for (size_t i = from; i < c->ids.n; i++) c->mask[i] = v;
    return 0;
}

static int push_special(dp_tokenizer *t, dp_chat_tokens *c, const char *tok, uint8_t mask) {
    int32_t id = dp_tokenizer_token_id(t, tok);
    if (id < 0) return dp_fail("the tokenizer has no %s token, which this chat format needs", tok);
    size_t from = c->ids.n;
    if (dp_ids_push(&c->ids, id)) return -1;
    return sync_mask(c, from, mask);
}

/* head + body encoded as one text (so tokens can span the boundary exactly as in the full
 * rendered string); a token holding any byte of body gets mask `body_mask`. */
static int push_text(dp_tokenizer *t, dp_chat_tokens *c, const char *head, const char *body,
                     size_t body_len, uint8_t body_mask) {
    dp_buf b = {0};
    size_t hl = strlen(head);
    if (dp_buf_append(&b, head, hl) || dp_buf_append(&b, body, body_len)) {
        dp_buf_free(&b);
        return -1;
    }
    size_t from = c->ids.n;
    int rc = dp_tokenizer_encode(t, b.data, b.len, false, &c->ids);
    dp_buf_free(&b);
    if (rc || sync_mask(c, from, 0)) return -1;
    /* head is ASCII, so NFC leaves it as is: byte offsets in the tokens' bytes line up */
    size_t pos = 0;
    for (size_t i = from; i < c->ids.n; i++) {
        size_t l = 0;
        dp_tokenizer_token_bytes(t, c->ids.v[i], &l);
        pos += l;
        if (pos > hl) c->mask[i] = body_mask;
    }
    return 0;
}

int dp_chat_render(dp_tokenizer *t, dp_chat_format f, const dp_chat_msg *m, size_t n, bool gen,
                   dp_chat_tokens *out) {
    if (check_msgs(m, n)) return -1;
    for (size_t i = 0; i < n; i++) {
        uint8_t a = m[i].role == DP_ROLE_ASSISTANT;
        const char *role = dp_role_name(m[i].role);
        if (f == DP_CHAT_CHATML) {
            dp_buf head = {0};
            if (dp_buf_printf(&head, "%s\n", role)) return -1;
            int rc = push_special(t, out, "<|im_start|>", 0) ||
                     push_text(t, out, head.data, m[i].content, m[i].len, a) ||
                     push_special(t, out, "<|im_end|>", a) || push_text(t, out, "\n", "", 0, 0);
            dp_buf_free(&head);
            if (rc) return -1;
        } else {
            const char *c;
            size_t cl;
            dp_buf json = {0};
            int rc = llama3_body(&m[i], &role, &c, &cl, &json) ||
                     (i == 0 && push_special(t, out, "<|begin_of_text|>", 0)) ||
                     push_special(t, out, "<|start_header_id|>", 0) ||
                     push_text(t, out, role, "", 0, 0) ||
                     push_special(t, out, "<|end_header_id|>", 0) ||
                     push_text(t, out, "\n\n", c, cl, a) || push_special(t, out, "<|eot_id|>", a);
            dp_buf_free(&json);
            if (rc) return -1;
        }
    }
    if (gen) {
        if (f == DP_CHAT_CHATML) {
            if (push_special(t, out, "<|im_start|>", 0) ||
                push_text(t, out, "assistant\n", "", 0, 0))
                return -1;
        } else if (push_special(t, out, "<|start_header_id|>", 0) ||
                   push_text(t, out, "assistant", "", 0, 0) ||
                   push_special(t, out, "<|end_header_id|>", 0) ||
                   push_text(t, out, "\n\n", "", 0, 0))
            return -1;
    }
    return 0;
}

int dp_chat_stop_ids(const dp_tokenizer *t, dp_chat_format f, int32_t *ids, int max) {
    const char *names[] = {f == DP_CHAT_CHATML ? "<|im_end|>" : "<|eot_id|>",
                           f == DP_CHAT_CHATML ? "<|endoftext|>" : "<|end_of_text|>"};
    int32_t cand[3] = {dp_tokenizer_token_id(t, names[0]), dp_tokenizer_eos_id(t),
                       dp_tokenizer_token_id(t, names[1])};
    int n = 0;
    for (int i = 0; i < 3; i++) {
        if (cand[i] < 0 || n >= max) continue;
        bool dup = false;
        for (int j = 0; j < n; j++) dup |= ids[j] == cand[i];
        if (!dup) ids[n++] = cand[i];
    }
    return n;
}

/* ---- tool results and thinking */
dp_chat_tool_style dp_chat_tool_style_for(const char *tpl) {
    if (tpl && strstr(tpl, "<tool_response>"))
        return (dp_chat_tool_style){"user", "<tool_response>\n", "\n</tool_response>", "\n"};
    /* a plain ChatML template writes any role as given; Llama 3.1+ has the ipython turn */
    if (tpl && (strstr(tpl, "<|im_start|>") || strstr(tpl, "ipython")))
        return (dp_chat_tool_style){"tool", "", "", "\n\n"};
    return (dp_chat_tool_style){"system", "", "", "\n\n"};
}

int dp_chat_tool_message(const dp_chat_tool_style *st, const char *const *results, int n,
                         dp_buf *out) {
    for (int i = 0; i < n; i++)
        if ((i && dp_buf_puts(out, st->sep)) || dp_buf_puts(out, st->open) ||
            dp_buf_puts(out, results[i]) || dp_buf_puts(out, st->close))
            return -1;
    return out->data ? 0 : dp_buf_append(out, "", 0);
}

static const char think_open[] = "<think>", think_close[] = "</think>";

/* Length of the longest suffix of s[0,n) that is a proper prefix of tag. */
static size_t partial_tag(const char *s, size_t n, const char *tag) {
    size_t tl = strlen(tag);
    for (size_t k = tl - 1 < n ? tl - 1 : n; k > 0; k--)
        if (!memcmp(s + n - k, tag, k)) return k;
    return 0;
}

/* Appends s to out, without the newlines that open a thought or an answer. */
static int give_answer(dp_think_splitter *t, const char *s, size_t n, dp_buf *out) {
    if (t->strip_newlines) {
        while (n && *s == '\n') s++, n--;
        if (n) t->strip_newlines = false;
    }
    return n ? dp_buf_append(out, s, n) : 0;
}

/* Decides what t->held holds; `final`: nothing more will come. */
static int think_step(dp_think_splitter *t, bool final, dp_buf *thought, dp_buf *answer) {
    for (;;) {
        char *h = t->held.data;
        size_t n = t->held.len, used = 0;
        if (!n) return 0;
        if (t->state == 0) {
            size_t ws = 0;
            while (ws < n && (h[ws] == ' ' || h[ws] == '\n' || h[ws] == '\r' || h[ws] == '\t'))
                ws++;
            size_t rest = n - ws, ol = sizeof think_open - 1;
            if (rest >= ol && !memcmp(h + ws, think_open, ol)) {
                t->state = 1;
                t->strip_newlines = true; /* the template's lstrip('\n') */
                used = ws + ol;
            } else if (!final && (rest == 0 || (rest < ol && !memcmp(h + ws, think_open, rest)))) {
                return 0; /* still could open a thought */
            } else {
                t->state = 2;
                continue;
            }
        } else if (t->state == 1) {
            size_t cl = sizeof think_close - 1;
            char *end = NULL;
            for (size_t i = 0; i + cl <= n && !end; i++)
                if (!memcmp(h + i, think_close, cl)) end = h + i;
            if (end) {
                size_t tl = (size_t)(end - h);
                if (give_answer(t, h, tl, thought)) return -1;
                used = tl + cl;
                t->state = 2;
                t->strip_newlines = true;
            } else {
                size_t keep = final ? 0 : partial_tag(h, n, think_close);
                if (give_answer(t, h, n - keep, thought)) return -1;
                used = n - keep;
                if (!used) return 0;
            }
        } else {
            if (give_answer(t, h, n, answer)) return -1;
            used = n;
        }
        memmove(h, h + used, n - used);
        t->held.len = n - used;
    }
}

int dp_think_feed(dp_think_splitter *t, const char *s, size_t n, dp_buf *thought, dp_buf *answer) {
    if (t->state == 2 && !t->held.len) return give_answer(t, s, n, answer);
    if (n && dp_buf_append(&t->held, s, n)) return -1;
    return think_step(t, false, thought, answer);
}

int dp_think_finish(dp_think_splitter *t, dp_buf *thought, dp_buf *answer) {
    int rc = think_step(t, true, thought, answer);
    dp_buf held = t->held;
    held.len = 0;
    *t = (dp_think_splitter){.held = held};
    return rc;
}

void dp_think_free(dp_think_splitter *t) {
    dp_buf_free(&t->held);
    *t = (dp_think_splitter){0};
}
