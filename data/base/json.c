/* JSON without lost bytes: dp_json_parse finds the strings cJSON would cut at a NUL by
 * scanning the source text, then keeps (decoding their escapes again, with the length) or
 * refuses them; the string writers used by every JSON output. */
#include "data/base/json.h"
#include "data/base/error.h"
#include "data/base/utf8.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One string literal of the source holding a NUL: its place among all string literals (keys
 * and values, in document order) and its bytes between the quotes. */
typedef struct {
    size_t ordinal;
    const char *body;
    size_t body_len;
} nul_string;

/* Cheap test first: no raw 0 byte and no "\u0000" escape candidate means cJSON loses nothing. */
static bool may_hold_nul(const char *s, size_t n) {
    if (memchr(s, 0, n)) return true;
    for (const char *p = s; (p = memchr(p, '\\', (size_t)(s + n - p))) != NULL; p++)
        if ((size_t)(s + n - p) >= 6 && !memcmp(p + 1, "u0000", 5)) return true;
    return false;
}

/* Scans the string literals of valid JSON text[0..n), in order; records those holding a NUL
 * (up to cap, counting all in *n_found). Outside strings valid JSON has no quote, inside
 * them a backslash escapes the next byte. */
static void find_nul_strings(const char *s, size_t n, nul_string *found, size_t cap,
                             size_t *n_found) {
    size_t ordinal = 0;
    *n_found = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '"') continue;
        size_t start = ++i;
        bool nul = false;
        for (; i < n && s[i] != '"'; i++) {
            if (s[i] == 0) nul = true;
            if (s[i] == '\\') {
                if (i + 5 < n && !memcmp(s + i + 1, "u0000", 5)) nul = true;
                i++;
            }
        }
        if (nul) {
            if (*n_found < cap) found[*n_found] = (nul_string){ordinal, s + start, i - start};
            ++*n_found;
        }
        ordinal++;
    }
}

/* ---- the path of a string holding a NUL: the nesting as the text is scanned (valid JSON:
 * outside strings no quote, inside them a backslash escapes the next byte) */
typedef struct {
    bool array, expect_key;
    int index;
    const char *key;
    size_t key_len;
} json_frame;

static void frame_path(const json_frame *st, int depth, const char *cur_key, size_t cur_len,
                       char *path, size_t cap) {
    size_t n = 0;
    if (!cap) return;
    path[0] = 0;
    for (int i = 0; i < depth && n < cap; i++) {
        int w;
        if (st[i].array)
            w = snprintf(path + n, cap - n, "[%d]", st[i].index);
        else if (i + 1 == depth && cur_key) /* the string is this key itself */
            w = snprintf(path + n, cap - n, "%s%.*s", n ? "." : "", (int)cur_len, cur_key);
        else
            w = snprintf(path + n, cap - n, "%s%.*s", n ? "." : "", (int)st[i].key_len, st[i].key);
        if (w < 0) break;
        n += (size_t)w;
    }
}

bool dp_json_find_nul(const char *s, size_t len, char *path, size_t cap) {
    enum { MAX_DEPTH = 64 };
    if (cap) path[0] = 0;
    if (!may_hold_nul(s, len)) return false; /* the common case: one memchr pass */
    json_frame st[MAX_DEPTH];
    int depth = 0, deeper = 0; /* levels beyond MAX_DEPTH: scanned, not in the path */
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '{' || c == '[') {
            if (depth == MAX_DEPTH) deeper++;
            else st[depth++] = (json_frame){.array = c == '[', .expect_key = c == '{'};
        } else if (c == '}' || c == ']') {
            if (deeper) deeper--;
            else if (depth) depth--;
        } else if (c == ',' && !deeper) {
            if (depth && st[depth - 1].array) st[depth - 1].index++;
            if (depth && !st[depth - 1].array) st[depth - 1].expect_key = true;
        } else if (c == '"') {
            size_t start = ++i;
            bool nul = false;
            for (; i < len && s[i] != '"'; i++) {
                if (s[i] == 0) nul = true;
                if (s[i] != '\\') continue;
                if (i + 5 < len && !memcmp(s + i + 1, "u0000", 5)) nul = true;
                i++; /* the escaped character */
            }
            bool is_key = !deeper && depth && !st[depth - 1].array && st[depth - 1].expect_key;
            if (is_key) {
                st[depth - 1].key = s + start;
                st[depth - 1].key_len = i - start;
                st[depth - 1].expect_key = false;
            }
            if (nul) {
                frame_path(st, depth, is_key ? s + start : NULL, i - start, path, cap);
                return true;
            }
        }
    }
    return false;
}

static unsigned hex4(const char *p) {
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p[k];
        v = v * 16 + (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
}

/* Decodes a string literal's body (already accepted by cJSON, so its escapes and surrogate
 * pairs are valid) into out, which has room for body_len bytes; returns the byte count. */
static size_t decode_body(const char *s, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\') {
            out[o++] = s[i];
            continue;
        }
        char e = s[++i];
        if (e != 'u') {
            static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
            const char *k = strchr(from, e);
            out[o++] = k ? to[k - from] : e;
            continue;
        }
        unsigned cp = hex4(s + i + 1);
        i += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF && i + 6 < n && s[i + 1] == '\\') {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (hex4(s + i + 3) - 0xDC00);
            i += 6;
        }
        if (cp < 0x80) {
            out[o++] = (char)cp;
        } else if (cp < 0x800) {
            out[o++] = (char)(0xC0 | (cp >> 6));
            out[o++] = (char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out[o++] = (char)(0xE0 | (cp >> 12));
            out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            out[o++] = (char)(0x80 | (cp & 0x3F));
        } else {
            out[o++] = (char)(0xF0 | (cp >> 18));
            out[o++] = (char)(0x80 | ((cp >> 12) & 0x3F));
            out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            out[o++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    return o;
}

typedef struct {
    const nul_string *found;
    size_t n_found, next, ordinal;
    int rc;
    bool key_nul;
} keep_walk;

/* Visits keys and string values in document order (cJSON keeps members in source order), so
 * the k-th string met is the k-th literal of the source. */
static void keep_strings(cJSON *item, keep_walk *w) {
    for (; item && !w->rc; item = item->next) {
        if (item->string) {
            if (w->next < w->n_found && w->found[w->next].ordinal == w->ordinal) {
                w->key_nul = true;
                w->rc = -1;
                return;
            }
            w->ordinal++;
        }
        if (cJSON_IsString(item)) {
            if (w->next < w->n_found && w->found[w->next].ordinal == w->ordinal) {
                const nul_string *f = &w->found[w->next++];
                char *bytes = cJSON_malloc(f->body_len + 1);
                if (!bytes) {
                    w->rc = dp_fail("out of memory decoding a JSON string");
                    return;
                }
                size_t n = decode_body(f->body, f->body_len, bytes);
                bytes[n] = 0;
                cJSON_free(item->valuestring);
                item->valuestring = bytes;
                item->valuedouble = (double)n;
            }
            w->ordinal++;
        }
        keep_strings(item->child, w);
    }
}

int dp_json_check_nul(const char *text, size_t len, const char *where, int64_t first_line) {
    if (!may_hold_nul(text, len)) return 0;
    nul_string first;
    size_t n_found;
    find_nul_strings(text, len, &first, 1, &n_found);
    if (!n_found) return 0;
    int64_t line = first_line;
    for (const char *p = text; p < first.body; p++) line += *p == '\n';
    return dp_fail("%s:%lld: a JSON string holds a NUL character (\\u0000), which doppel cannot "
                   "carry here and will not cut short; remove it from the input",
                   where, (long long)line);
}

int dp_json_parse(const char *text, size_t len, dp_json_nul nul, const char *where,
                  int64_t first_line, cJSON **out) {
    const char *end = NULL;
    *out = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (!*out || !may_hold_nul(text, (size_t)(end - text))) return 0;
    size_t parsed = (size_t)(end - text), n_found;
    find_nul_strings(text, parsed, NULL, 0, &n_found);
    if (!n_found) return 0;
    nul_string *found = dp_malloc(n_found * sizeof *found);
    if (!found) goto refuse;
    find_nul_strings(text, parsed, found, n_found, &n_found);
    int rc = -1;
    bool key_nul = false;
    const nul_string *at = &found[0];
    if (nul == DP_JSON_KEEP_NUL) {
        keep_walk w = {found, n_found, 0, 0, 0, false};
        keep_strings(*out, &w);
        rc = w.rc;
        key_nul = w.key_nul;
        if (key_nul) at = &found[w.next];
        if (rc && !key_nul) { /* out of memory, already reported */
            free(found);
            cJSON_Delete(*out);
            *out = NULL;
            return -1;
        }
    }
    if (rc) {
        int64_t line = first_line;
        for (const char *p = text; p < at->body; p++) line += *p == '\n';
        dp_fail("%s:%lld: a JSON %s holds a NUL character (\\u0000), which doppel cannot carry "
                "here and will not cut short; remove it from the input",
                where, (long long)line, key_nul ? "object key" : "string");
    }
    free(found);
    if (!rc) return 0;
refuse:
    cJSON_Delete(*out);
    *out = NULL;
    return -1;
}

const char *dp_json_bytes(const cJSON *item, size_t *len) {
    if (!cJSON_IsString(item) || !item->valuestring) return NULL;
    *len = item->valuedouble > 0 ? (size_t)item->valuedouble : strlen(item->valuestring);
    return item->valuestring;
}

int dp_json_append_string(dp_buf *b, const char *s, size_t n) {
    if (dp_buf_append(b, "\"", 1)) return -1;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && (unsigned char)s[j] >= 0x20 && s[j] != '"' && s[j] != '\\') j++;
        if (j > i && dp_buf_append(b, s + i, j - i)) return -1;
        if (j == n) break;
        char esc[8];
        unsigned char c = (unsigned char)s[j];
        switch (c) {
        case '"':
            memcpy(esc, "\\\"", 3);
            break;
        case '\\':
            memcpy(esc, "\\\\", 3);
            break;
        case '\n':
            memcpy(esc, "\\n", 3);
            break;
        case '\r':
            memcpy(esc, "\\r", 3);
            break;
        case '\t':
            memcpy(esc, "\\t", 3);
            break;
        case '\b': /* the short escapes, as Python's json.dumps writes them (chat templates' tojson) */
            memcpy(esc, "\\b", 3);
            break;
        case '\f':
            memcpy(esc, "\\f", 3);
            break;
        default:
            snprintf(esc, sizeof esc, "\\u%04x", c);
        }
        if (dp_buf_puts(b, esc)) return -1;
        i = j + 1;
    }
    return dp_buf_append(b, "\"", 1);
}

int dp_json_append_piece(dp_buf *b, const char *s, size_t n) {
    if (dp_buf_append(b, "\"", 1)) return -1;
    size_t i = 0;
    while (i < n) {
        size_t ok = dp_utf8_valid_prefix(s + i, n - i);
        if (ok == 0) {
            if (dp_buf_printf(b, "\\x%02X", (unsigned char)s[i])) return -1;
            i++;
            continue;
        }
        for (size_t k = 0; k < ok; k++) {
            unsigned char c = (unsigned char)s[i + k];
            int rc;
            if (c == '"' || c == '\\')
                rc = dp_buf_printf(b, "\\%c", c);
            else if (c == '\n')
                rc = dp_buf_puts(b, "\\n");
            else if (c == '\r')
                rc = dp_buf_puts(b, "\\r");
            else if (c == '\t')
                rc = dp_buf_puts(b, "\\t");
            else if (c < 0x20 || c == 0x7F)
                rc = dp_buf_printf(b, "\\u%04X", c);
            else
                rc = dp_buf_append(b, &s[i + k], 1);
            if (rc) return -1;
        }
        i += ok;
    }
    return dp_buf_append(b, "\"", 1);
}
