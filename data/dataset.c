/* JSONL conversation datasets: the writer (hand-escaped JSON, atomic, zstd by suffix) and the
 * streaming line reader (cJSON per line) that training iterates. */
#include "data/dataset.h"
#include "data/base/error.h"
#include "data/base/json.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

const char *dp_role_name(dp_role r) {
    switch (r) {
    case DP_ROLE_SYSTEM:
        return "system";
    case DP_ROLE_USER:
        return "user";
    case DP_ROLE_ASSISTANT:
        return "assistant";
    case DP_ROLE_TOOL:
        return "tool";
    }
    return "?";
}

int dp_role_parse(const char *name, dp_role *r) {
    for (int i = DP_ROLE_SYSTEM; i <= DP_ROLE_TOOL; i++)
        if (!strcmp(name, dp_role_name((dp_role)i))) {
            *r = (dp_role)i;
            return 0;
        }
    return -1;
}

/* ------------------------------------------------------------------ writer */

int dp_conversation_to_json(const dp_conversation *c, dp_buf *b) {
    if (dp_buf_puts(b, "{\"messages\":[")) return -1;
    for (int i = 0; i < c->n; i++) {
        if ((i && dp_buf_append(b, ",", 1)) || dp_buf_puts(b, "{\"role\":\"") ||
            dp_buf_puts(b, dp_role_name(c->msgs[i].role)) || dp_buf_puts(b, "\",\"content\":") ||
            dp_json_append_string(b, c->msgs[i].content, c->msgs[i].len) ||
            dp_buf_append(b, "}", 1))
            return -1;
    }
    if (dp_buf_append(b, "]", 1)) return -1;
    if (c->extra && *c->extra && (dp_buf_append(b, ",", 1) || dp_buf_puts(b, c->extra))) return -1;
    return dp_buf_append(b, "}\n", 2);
}

struct dp_dataset_writer {
    dp_writer *w;
    dp_buf line;
    int64_t count;
};

dp_dataset_writer *dp_dataset_writer_open(const char *path) {
    dp_dataset_writer *d = dp_calloc(1, sizeof *d);
    if (!d) return NULL;
    if (!(d->w = dp_writer_open(path))) {
        free(d);
        return NULL;
    }
    return d;
}

int dp_dataset_write(dp_dataset_writer *d, const dp_conversation *c) {
    /* lines are batched: one write per ~256 KB */
    if (dp_conversation_to_json(c, &d->line)) return -1;
    d->count++;
    if (d->line.len >= (256u << 10)) {
        if (dp_writer_write(d->w, d->line.data, d->line.len)) return -1;
        d->line.len = 0;
    }
    return 0;
}

int64_t dp_dataset_writer_count(const dp_dataset_writer *d) {
    return d->count;
}

int dp_dataset_writer_commit(dp_dataset_writer *d) {
    int rc = d->line.len ? dp_writer_write(d->w, d->line.data, d->line.len) : 0;
    if (rc)
        dp_writer_abort(d->w);
    else
        rc = dp_writer_commit(d->w);
    dp_buf_free(&d->line);
    free(d);
    return rc;
}

void dp_dataset_writer_abort(dp_dataset_writer *d) {
    if (!d) return;
    dp_writer_abort(d->w);
    dp_buf_free(&d->line);
    free(d);
}

/* ------------------------------------------------------------------ reader */

struct dp_dataset_reader {
    dp_reader *r;
    char *path;
    dp_buf buf; /* unconsumed input starts at pos */
    size_t pos;
    bool eof;
    int64_t line;
    cJSON *cur;
    dp_chat_msg *msgs;
    int cap;
};

dp_dataset_reader *dp_dataset_open(const char *path) {
    dp_dataset_reader *d = dp_calloc(1, sizeof *d);
    if (!d) return NULL;
    d->path = dp_strdup(path);
    if (!d->path || !(d->r = dp_reader_open(path))) {
        dp_dataset_close(d);
        return NULL;
    }
    return d;
}

void dp_dataset_close(dp_dataset_reader *d) {
    if (!d) return;
    dp_reader_close(d->r);
    cJSON_Delete(d->cur);
    dp_buf_free(&d->buf);
    free(d->msgs);
    free(d->path);
    free(d);
}

/* The next line without its newline (NUL-terminated in place), or NULL at the end. */
static char *next_line(dp_dataset_reader *d, size_t *n, int *err) {
    *err = 0;
    for (;;) {
        char *start = d->buf.data ? d->buf.data + d->pos : NULL;
        size_t avail = d->buf.len - d->pos;
        char *nl = avail ? memchr(start, '\n', avail) : NULL;
        if (nl) {
            *nl = 0;
            *n = (size_t)(nl - start);
            d->pos += *n + 1;
            d->line++;
            return start;
        }
        if (d->eof) {
            if (!avail) return NULL;
            *n = avail;
            d->pos = d->buf.len;
            d->line++;
            return start; /* dp_buf keeps a NUL after len */
        }
        /* keep the partial line, read more */
        if (d->pos) {
            memmove(d->buf.data, d->buf.data + d->pos, avail);
            d->buf.len = avail;
            d->pos = 0;
        }
        char chunk[1 << 16];
        int64_t got = dp_reader_read(d->r, chunk, sizeof chunk);
        if (got < 0) {
            *err = -1;
            return NULL;
        }
        if (got == 0)
            d->eof = true;
        else if (dp_buf_append(&d->buf, chunk, (size_t)got)) {
            *err = -1;
            return NULL;
        }
    }
}

int dp_dataset_next(dp_dataset_reader *d, dp_conversation *c) {
    cJSON_Delete(d->cur);
    d->cur = NULL;
    for (;;) {
        size_t n;
        int err;
        char *s = next_line(d, &n, &err);
        if (err) return -1;
        if (!s) return 0;
        size_t k = 0;
        while (k < n && (s[k] == ' ' || s[k] == '\t' || s[k] == '\r')) k++;
        if (k == n) continue; /* blank line */
        long long line = (long long)d->line;
        /* content is handed on as C strings (chat templates, prep): a NUL is refused, not cut */
        cJSON *o;
        if (dp_json_parse(s, n, DP_JSON_REFUSE_NUL, d->path, line, &o)) return -1;
        d->cur = o;
        if (!cJSON_IsObject(o))
            return dp_fail("%s:%lld: not a JSON object (expected {\"messages\":[{\"role\":...,"
                           "\"content\":...},...]} on each line)",
                           d->path, line);
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "messages");
        if (!cJSON_IsArray(arr)) return dp_fail("%s:%lld: no \"messages\" array", d->path, line);
        int count = cJSON_GetArraySize(arr);
        if (count == 0) return dp_fail("%s:%lld: \"messages\" is empty", d->path, line);
        if (count > d->cap) {
            dp_chat_msg *nm = dp_realloc(d->msgs, (size_t)count * sizeof *nm);
            if (!nm) return -1;
            d->msgs = nm;
            d->cap = count;
        }
        int i = 0;
        for (const cJSON *m = arr->child; m; m = m->next, i++) {
            const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
            const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
            if (!cJSON_IsString(role) || !cJSON_IsString(content))
                return dp_fail("%s:%lld: message %d is not {\"role\": string, \"content\": "
                               "string}",
                               d->path, line, i + 1);
            dp_role r;
            if (dp_role_parse(role->valuestring, &r))
                return dp_fail("%s:%lld: message %d has role \"%.40s\" (expected system, user, "
                               "assistant or tool)",
                               d->path, line, i + 1, role->valuestring);
            d->msgs[i] = (dp_chat_msg){r, content->valuestring, strlen(content->valuestring)};
        }
        *c = (dp_conversation){.msgs = d->msgs, .n = count, .extra = NULL, .line = line};
        return 1;
    }
}

/* ------------------------------------------------------------------ ChatML */

void dp_chatml_print(FILE *out, const dp_conversation *c) {
    for (int i = 0; i < c->n; i++)
        fprintf(out, "<|im_start|>%s\n%.*s<|im_end|>\n", dp_role_name(c->msgs[i].role),
                (int)c->msgs[i].len, c->msgs[i].content);
}
