/* DCE JSON reader: walks the root object byte by byte, and cuts the `messages` array into one
 * message object at a time, each parsed by cJSON; the whole file is never one DOM. */
#include "data/dce_impl.h"
#include "data/base/error.h"
#include "data/base/json.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MESSAGE_BYTES (64u << 20) /* one message object; DCE's are a few KB */

enum { J_ROOT, J_KEYS, J_ARRAY, J_DONE };

struct dce_json {
    int state;
    dp_buf obj, key, name;
    cJSON *cur; /* the message handed out last (its strings are borrowed by the caller) */
    bool found_messages;
};

int dce_json_init(dp_dce_reader *r) {
    r->js = dp_calloc(1, sizeof *r->js);
    return r->js ? 0 : -1;
}

void dce_json_free(dp_dce_reader *r) {
    cJSON_Delete(r->js->cur);
    dp_buf_free(&r->js->obj);
    dp_buf_free(&r->js->key);
    dp_buf_free(&r->js->name);
    free(r->js);
    r->js = NULL;
}

/* next byte without consuming it; -1 at end of input, -2 on a read error */
static inline int peek(dp_dce_reader *r) {
    if (r->pos >= r->len) {
        int f = dce_fill(r);
        if (f <= 0) return f < 0 ? -2 : -1;
    }
    return r->buf[r->pos];
}

static inline void advance(dp_dce_reader *r) {
    if (r->buf[r->pos] == '\n') r->line++;
    r->pos++;
}

static int skip_ws(dp_dce_reader *r) {
    for (;;) {
        int c = peek(r);
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n') return c;
        advance(r);
    }
}

static int syntax(dp_dce_reader *r, int c, const char *expected) {
    if (c == -2) return DP_DCE_FATAL;
    if (c == -1)
        dp_fail("%s:%lld: the JSON ends early (expected %s); the file may be truncated", r->name,
                (long long)r->line, expected);
    else
        dp_fail("%s:%lld: malformed DCE JSON: expected %s, found '%c'", r->name, (long long)r->line,
                expected, c);
    return DP_DCE_FATAL;
}

/* Copies (out != NULL) or skips a string; the reader is at its opening quote. */
static int take_string(dp_dce_reader *r, dp_buf *out) {
    int64_t start = r->line;
    advance(r);
    if (out && dp_buf_append(out, "\"", 1)) return DP_DCE_FATAL;
    for (;;) {
        /* copy the run up to the next quote or backslash in one go */
        if (peek(r) < 0) break;
        const unsigned char *p = r->buf + r->pos, *end = r->buf + r->len, *q = p;
        while (q < end && *q != '"' && *q != '\\' && *q != '\n') q++;
        if (q > p) {
            if (out && dp_buf_append(out, p, (size_t)(q - p))) return DP_DCE_FATAL;
            r->pos += (size_t)(q - p);
            continue;
        }
        int c = *q;
        if (out && dp_buf_append(out, q, 1)) return DP_DCE_FATAL;
        advance(r);
        if (c == '"') return 0;
        if (c == '\\') {
            int e = peek(r);
            if (e < 0) break;
            unsigned char ch = (unsigned char)e;
            if (out && dp_buf_append(out, &ch, 1)) return DP_DCE_FATAL;
            advance(r);
        }
    }
    if (peek(r) == -2) return DP_DCE_FATAL;
    dp_fail("%s:%lld: unterminated JSON string (started at line %lld); the file may be truncated",
            r->name, (long long)r->line, (long long)start);
    return DP_DCE_FATAL;
}

/* Copies or skips one whole value (object, array, string or scalar). */
static int take_value(dp_dce_reader *r, dp_buf *out) {
    int c = skip_ws(r);
    if (c == '"') return take_string(r, out);
    if (c != '{' && c != '[') {
        int n = 0;
        while ((c = peek(r)) >= 0 && c != ',' && c != '}' && c != ']' && c != ' ' && c != '\n' &&
               c != '\r' && c != '\t') {
            unsigned char ch = (unsigned char)c;
            if (out && dp_buf_append(out, &ch, 1)) return DP_DCE_FATAL;
            advance(r);
            n++;
        }
        return n ? 0 : syntax(r, c, "a JSON value");
    }
    int depth = 0;
    for (;;) {
        c = peek(r);
        if (c < 0) return syntax(r, c, "the end of an object or array");
        if (c == '"') {
            if (take_string(r, out)) return DP_DCE_FATAL;
            continue;
        }
        if (c == '{' || c == '[') {
            if (++depth > 1000) {
                dp_fail("%s:%lld: JSON nested too deeply", r->name, (long long)r->line);
                return DP_DCE_FATAL;
            }
        }
        unsigned char ch = (unsigned char)c;
        if (out && dp_buf_append(out, &ch, 1)) return DP_DCE_FATAL;
        advance(r);
        if ((c == '}' || c == ']') && --depth == 0) return 0;
        if (out && out->len > MAX_MESSAGE_BYTES) {
            dp_fail("%s:%lld: a message object larger than %u MiB", r->name, (long long)r->line,
                    MAX_MESSAGE_BYTES >> 20);
            return DP_DCE_FATAL;
        }
    }
}

static const char *str_item(const cJSON *o, const char *k) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* DCE's MessageKind values 1..18 are system notifications; it writes the enum name, or the
 * number for kinds it has no name for. */
static bool system_kind(const char *type) {
    static const char *const names[] = {
        "RecipientAdd",      "RecipientRemove",   "Call",
        "ChannelNameChange", "ChannelIconChange", "ChannelPinnedMessage",
        "GuildMemberJoin",   "ThreadCreated",     NULL};
    if (!type) return false;
    for (int i = 0; names[i]; i++)
        if (!strcmp(type, names[i])) return true;
    char *end;
    long k = strtol(type, &end, 10);
    return end != type && !*end && k >= 1 && k <= 18;
}

static int convert(dp_dce_reader *r, int64_t line, dp_dce_msg *m) {
    dce_json *j = r->js;
    /* prep's chunking and anonymization take C strings: a NUL is refused, not cut */
    cJSON *o;
    if (dp_json_parse(j->obj.data, j->obj.len, DP_JSON_REFUSE_NUL, r->name, line, &o))
        return DP_DCE_BAD;
    if (!o || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return dp_fail("%s:%lld: malformed JSON in a message object (invalid escape, lone UTF-16 "
                       "surrogate or bad number)",
                       r->name, (long long)line),
               DP_DCE_BAD;
    }
    j->cur = o;
    const cJSON *author = cJSON_GetObjectItemCaseSensitive(o, "author");
    const char *ts = str_item(o, "timestamp"), *content = str_item(o, "content");
    const char *aid = cJSON_IsObject(author) ? str_item(author, "id") : NULL;
    const char *name = cJSON_IsObject(author) ? str_item(author, "name") : NULL;
    const char *disc = cJSON_IsObject(author) ? str_item(author, "discriminator") : NULL;
    const cJSON *cnode = cJSON_GetObjectItemCaseSensitive(o, "content");
    if (!ts || !aid || !name || (!content && cnode && !cJSON_IsNull(cnode)))
        return dp_fail("%s:%lld: a message without %s (DCE writes timestamp, content and "
                       "author{id,name})",
                       r->name, (long long)line,
                       !ts     ? "a timestamp string"
                       : !aid  ? "author.id"
                       : !name ? "author.name"
                               : "string content"),
               DP_DCE_BAD;
    if (!content) content = "";
    uint64_t id = 0;
    size_t idn = strlen(aid);
    bool id_ok = idn > 0 && idn <= 20;
    for (size_t i = 0; id_ok && i < idn; i++) {
        unsigned dgt = (unsigned)(aid[i] - '0');
        if (dgt > 9 || id > (UINT64_MAX - dgt) / 10)
            id_ok = false;
        else
            id = id * 10 + dgt;
    }
    if (!id_ok)
        return dp_fail("%s:%lld: author.id \"%.40s\" is not a decimal Discord id", r->name,
                       (long long)line, aid),
               DP_DCE_BAD;
    int64_t t;
    if (dp_dce_parse_date(ts, strlen(ts), &t))
        return dp_fail("%s:%lld: timestamp \"%.60s\" is not in an accepted format; accepted: %s",
                       r->name, (long long)line, ts, dp_dce_date_formats),
               DP_DCE_BAD;
    /* legacy accounts and bots are "Name#1234" in CSV: build the same name here */
    j->name.len = 0;
    if (dp_buf_puts(&j->name, name)) return DP_DCE_FATAL;
    if (disc && *disc && strcmp(disc, "0000") && strcmp(disc, "0"))
        if (dp_buf_printf(&j->name, "#%s", disc)) return DP_DCE_FATAL;
    size_t clen = strlen(content);
    if (dp_utf8_valid_prefix(content, clen) != clen ||
        dp_utf8_valid_prefix(j->name.data, j->name.len) != j->name.len)
        return dp_fail("%s:%lld: invalid UTF-8 in a message's content or author name", r->name,
                       (long long)line),
               DP_DCE_BAD;
    *m = (dp_dce_msg){.author_id = id,
                      .author = j->name.data,
                      .author_len = j->name.len,
                      .content = content,
                      .content_len = clen,
                      .t = t,
                      .system = system_kind(str_item(o, "type")),
                      .line = line};
    return DP_DCE_MSG;
}

int dce_json_next(dp_dce_reader *r, dp_dce_msg *m) {
    dce_json *j = r->js;
    cJSON_Delete(j->cur);
    j->cur = NULL;
    for (;;) {
        int c = skip_ws(r);
        switch (j->state) {
        case J_ROOT:
            if (c != '{') return syntax(r, c, "'{' (the root object of a DCE JSON export)");
            advance(r);
            j->state = J_KEYS;
            break;
        case J_KEYS:
            if (c == ',') {
                advance(r);
                break;
            }
            if (c == '}') {
                advance(r);
                j->state = J_DONE;
                break;
            }
            if (c != '"') return syntax(r, c, "a key of the root object");
            j->key.len = 0;
            if (take_string(r, &j->key)) return DP_DCE_FATAL;
            c = skip_ws(r);
            if (c != ':') return syntax(r, c, "':'");
            advance(r);
            if (j->key.len == 10 && !memcmp(j->key.data, "\"messages\"", 10)) {
                c = skip_ws(r);
                if (c != '[') return syntax(r, c, "'[' (the messages array)");
                advance(r);
                j->found_messages = true;
                j->state = J_ARRAY;
            } else if (take_value(r, NULL)) {
                return DP_DCE_FATAL;
            }
            break;
        case J_ARRAY: {
            if (c == ',') {
                advance(r);
                break;
            }
            if (c == ']') {
                advance(r);
                j->state = J_KEYS;
                break;
            }
            if (c != '{') return syntax(r, c, "a message object or ']'");
            int64_t line = r->line;
            j->obj.len = 0;
            if (take_value(r, &j->obj)) return DP_DCE_FATAL;
            return convert(r, line, m);
        }
        case J_DONE:
            if (c == -2) return DP_DCE_FATAL;
            if (c != -1) return syntax(r, c, "the end of the file after the root object");
            if (!j->found_messages) {
                dp_fail("%s: a JSON file without a \"messages\" array (not a DCE JSON export)",
                        r->name);
                return DP_DCE_FATAL;
            }
            return DP_DCE_END;
        }
    }
}
