/* Helpers of the prep export suites (test_prep_exports.c, test_prep_shared.c): run doppel prep
 * through the library, load an expected JSONL, compare "messages" arrays as parsed JSON, and
 * write an export's records newest first. */
#ifndef DOPPEL_TEST_PREP_COMPARE_H
#define DOPPEL_TEST_PREP_COMPARE_H

#include "check.h"
#include "data/chunk.h"
#include "data/dce.h"
#include "data/base/error.h"

#include <cjson/cJSON.h>
#include <unistd.h>

typedef struct {
    cJSON **conv;
    int n, cap;
} conv_list;

static int sink(void *ctx, const dp_conversation *c, bool val) {
    (void)val;
    conv_list *l = ctx;
    dp_buf b = {0};
    dp_conversation bare = *c;
    bare.extra = NULL;
    if (dp_conversation_to_json(&bare, &b)) return -1;
    cJSON *o = cJSON_Parse(b.data);
    dp_buf_free(&b);
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 256;
        l->conv = realloc(l->conv, (size_t)l->cap * sizeof *l->conv);
    }
    l->conv[l->n++] = o;
    return 0;
}

static int reset(void *ctx) {
    conv_list *l = ctx;
    for (int i = 0; i < l->n; i++) cJSON_Delete(l->conv[i]);
    l->n = 0;
    return 0;
}

static void list_free(conv_list *l) {
    reset(l);
    free(l->conv);
    *l = (conv_list){0};
}

static conv_list run(const char *path, const char *persona, bool force_sort, dp_prep_stats *st) {
    dp_prep_opts o;
    dp_prep_opts_default(&o);
    o.persona = persona;
    o.val_fraction = 0;
    o.force_sort = force_sort;
    dp_prep *p = dp_prep_create(&o);
    conv_list l = {0};
    int rc = dp_prep_run(p, &path, 1, sink, reset, &l);
    CHECK_REPORT(rc == 0, "%s: %s", path, dp_last_error());
    if (st) *st = *dp_prep_get_stats(p);
    dp_prep_destroy(p);
    return l;
}

static conv_list load_expected(const char *path) {
    conv_list l = {0};
    char *text;
    size_t len;
    if (dp_read_file(path, &text, &len)) {
        CHECK_REPORT(0, "%s", dp_last_error());
        return l;
    }
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        if (*line) {
            if (l.n == l.cap) {
                l.cap = l.cap ? l.cap * 2 : 256;
                l.conv = realloc(l.conv, (size_t)l.cap * sizeof *l.conv);
            }
            l.conv[l.n++] = cJSON_Parse(line);
        }
        if (!nl) break;
        line = nl + 1;
    }
    free(text);
    return l;
}

/* The "messages" arrays must be equal one by one. */
static void compare(const char *what, const conv_list *got, const conv_list *want) {
    CHECK_REPORT(got->n == want->n, "%s: %d conversations, expected %d", what, got->n, want->n);
    int bad = 0;
    for (int i = 0; i < got->n && i < want->n; i++) {
        cJSON *a = cJSON_GetObjectItemCaseSensitive(got->conv[i], "messages");
        cJSON *b = cJSON_GetObjectItemCaseSensitive(want->conv[i], "messages");
        if (!a || !b || !cJSON_Compare(a, b, 1)) {
            if (!bad++) {
                char *x = cJSON_PrintUnformatted(a), *y = cJSON_PrintUnformatted(b);
                fprintf(stderr, "%s: conversation %d differs:\n  got      %s\n  expected %s\n",
                        what, i + 1, x ? x : "null", y ? y : "null");
                free(x);
                free(y);
            }
        }
    }
    CHECK_REPORT(bad == 0, "%s: %d conversations differ", what, bad);
    fprintf(stderr, "  %-44s %d conversations, %d differ\n", what, got->n, bad);
}

/* Writes the export's records newest first (fields re-quoted as DCE does). */
static char *reversed_copy(const char *path) {
    char *text;
    size_t len;
    if (dp_read_file(path, &text, &len)) return NULL;
    dp_dce_reader *r = dp_dce_open_mem(path, text, len);
    dp_buf *rows = NULL;
    int n = 0;
    dp_dce_msg m;
    while (r && dp_dce_next(r, &m) == DP_DCE_MSG) {
        rows = realloc(rows, (size_t)(n + 1) * sizeof *rows);
        dp_buf *b = &rows[n++];
        *b = (dp_buf){0};
        char date[48];
        dp_dce_format_instant(m.t, date); /* UTC with Z: accepted too */
        dp_buf_printf(b, "\"%llu\",\"", (unsigned long long)m.author_id);
        for (size_t i = 0; i < m.author_len; i++)
            dp_buf_append(b, m.author[i] == '"' ? "\"\"" : &m.author[i],
                          m.author[i] == '"' ? 2 : 1);
        dp_buf_printf(b, "\",\"%s\",\"", date);
        for (size_t i = 0; i < m.content_len; i++)
            dp_buf_append(b, m.content[i] == '"' ? "\"\"" : &m.content[i],
                          m.content[i] == '"' ? 2 : 1);
        dp_buf_puts(b, "\",\"\",\"\"\r\n");
    }
    dp_dce_close(r);
    free(text);
    static char out[512];
    snprintf(out, sizeof out, "/tmp/doppel-test-reversed-%d.csv", (int)getpid());
    FILE *f = fopen(out, "wb");
    fputs("AuthorID,Author,Date,Content,Attachments,Reactions\r\n", f);
    for (int i = n - 1; i >= 0; i--) {
        fwrite(rows[i].data, 1, rows[i].len, f);
        dp_buf_free(&rows[i]);
    }
    fclose(f);
    free(rows);
    return out;
}

static void check_export(const char *csv, const char *expected, const char *persona) {
    conv_list want = load_expected(expected);
    char what[200];
    dp_prep_stats st;
    conv_list got = run(csv, persona, false, &st);
    snprintf(what, sizeof what, "%s (streamed)", strrchr(csv, '/') + 1);
    compare(what, &got, &want);
    CHECK_EQ_INT(0, st.restarts);
    list_free(&got);
    got = run(csv, persona, true, NULL);
    snprintf(what, sizeof what, "%s (sorted in memory)", strrchr(csv, '/') + 1);
    compare(what, &got, &want);
    list_free(&got);
    char *rev = reversed_copy(csv);
    CHECK(rev != NULL);
    if (rev) {
        got = run(rev, persona, false, &st);
        snprintf(what, sizeof what, "%s (newest first)", strrchr(csv, '/') + 1);
        compare(what, &got, &want);
        CHECK_EQ_INT(0, st.restarts);
        CHECK(strstr(st.order, "newest first") != NULL);
        list_free(&got);
        unlink(rev);
    }
    list_free(&want);
}

#endif
