/* DCE CSV reader: libcsv in strict mode, fed one physical line at a time so that every record
 * knows the line it starts on; a record is validated (6 fields, snowflake, date, UTF-8) before
 * it is handed out. */
#include "data/dce_impl.h"
#include "data/base/error.h"

#include <csv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const header_names[6] = {"AuthorID", "Author",      "Date",
                                            "Content",  "Attachments", "Reactions"};
#define HEADER_TEXT "AuthorID,Author,Date,Content,Attachments,Reactions"

struct dce_csv {
    struct csv_parser p;
    dp_buf rec; /* the fields of the record being read, each followed by a NUL */
    size_t off[6], flen[6];
    int nfields, nrecords; /* nrecords: records completed in the current piece */
    bool in_record, header_done, oom, handed, ended_nl; /* handed: rec holds the last message */
    int64_t start_line;
};

static void cb_field(void *data, size_t len, void *ctx) {
    dp_dce_reader *r = ctx;
    dce_csv *c = r->csv;
    if (!c->in_record) {
        c->in_record = true;
        c->start_line = r->line;
    }
    if (c->nfields < 6) {
        c->off[c->nfields] = c->rec.len;
        c->flen[c->nfields] = len;
        /* the field and its NUL in one append: dp_buf keeps a NUL after len */
        if (dp_buf_append(&c->rec, data, len)) c->oom = true;
        c->rec.len++;
    }
    c->nfields++;
}

static void cb_record(int term, void *ctx) {
    (void)term;
    dp_dce_reader *r = ctx;
    r->csv->nrecords++;
}

int dce_csv_init(dp_dce_reader *r) {
    r->csv = dp_calloc(1, sizeof *r->csv);
    if (!r->csv) return -1;
    if (csv_init(&r->csv->p, CSV_STRICT | CSV_STRICT_FINI)) return dp_fail("out of memory");
    return 0;
}

void dce_csv_free(dp_dce_reader *r) {
    csv_free(&r->csv->p);
    dp_buf_free(&r->csv->rec);
    free(r->csv);
    r->csv = NULL;
}

static void reset_record(dce_csv *c) {
    c->rec.len = 0;
    c->nfields = 0;
    c->nrecords = 0;
    c->in_record = false;
}

static bool looks_like_locale_date(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] == '/' || s[i] == 'M' || (s[i] >= 'a' && s[i] <= 'z')) return true;
    return false;
}

/* Checks the completed record and fills *m; DP_DCE_BAD with a message when it is malformed. */
static int take_record(dp_dce_reader *r, dp_dce_msg *m) {
    dce_csv *c = r->csv;
    int64_t line = c->start_line;
    if (c->oom) return DP_DCE_FATAL;
    if (c->nrecords > 1)
        return dp_fail("%s:%lld: a bare carriage return (CR) ends a record in the middle of a "
                       "line; DCE ends records with LF or CRLF",
                       r->name, (long long)line),
               DP_DCE_BAD;
    const char *f[6];
    for (int i = 0; i < 6 && i < c->nfields; i++) f[i] = c->rec.data + c->off[i];
    if (!c->header_done) {
        bool ok = c->nfields == 6;
        for (int i = 0; ok && i < 6; i++) ok = !strcmp(f[i], header_names[i]);
        if (!ok) {
            char got[160] = "";
            size_t gl = 0;
            for (int i = 0; i < c->nfields && i < 6 && gl + 2 < sizeof got; i++)
                gl += (size_t)snprintf(got + gl, sizeof got - gl, "%s%.40s", i ? "," : "", f[i]);
            dp_fail("%s:%lld: not a DiscordChatExporter CSV header: expected \"%s\", found "
                    "\"%s\"%s (export with a current DCE, format CSV, or pass the JSON export)",
                    r->name, (long long)line, HEADER_TEXT, got, c->nfields > 6 ? ",..." : "");
            return DP_DCE_FATAL;
        }
        c->header_done = true;
        return DP_DCE_END; /* "no message yet": the caller reads on */
    }
    if (c->nfields != 6)
        return dp_fail("%s:%lld: expected 6 fields (" HEADER_TEXT "), found %d", r->name,
                       (long long)line, c->nfields),
               DP_DCE_BAD;
    for (int i = 0; i < 6; i++) {
        size_t ok = dp_utf8_valid_prefix(f[i], c->flen[i]);
        if (ok != c->flen[i])
            return dp_fail("%s:%lld: invalid UTF-8 in the %s field at byte %zu (DCE writes "
                           "UTF-8; re-save the file as UTF-8)",
                           r->name, (long long)line, header_names[i], ok),
                   DP_DCE_BAD;
    }
    /* AuthorID: a decimal snowflake that fits 64 bits */
    uint64_t id = 0;
    size_t idn = c->flen[0];
    bool id_ok = idn > 0 && idn <= 20;
    for (size_t i = 0; id_ok && i < idn; i++) {
        unsigned dgt = (unsigned)(f[0][i] - '0');
        if (dgt > 9 || id > (UINT64_MAX - dgt) / 10)
            id_ok = false;
        else
            id = id * 10 + dgt;
    }
    if (!id_ok)
        return dp_fail("%s:%lld: AuthorID \"%.40s\" is not a decimal Discord id", r->name,
                       (long long)line, f[0]),
               DP_DCE_BAD;
    int64_t t;
    if (dp_dce_parse_date(f[2], c->flen[2], &t))
        return dp_fail("%s:%lld: date \"%.60s\" is not in an accepted format%s; accepted: %s",
                       r->name, (long long)line, f[2],
                       looks_like_locale_date(f[2], c->flen[2])
                           ? " (an old locale-style DCE date: re-export with DiscordChatExporter "
                             "2.42.3 or newer)"
                           : "",
                       dp_dce_date_formats),
               DP_DCE_BAD;
    *m = (dp_dce_msg){.author_id = id,
                      .author = f[1],
                      .author_len = c->flen[1],
                      .content = f[3],
                      .content_len = c->flen[3],
                      .t = t,
                      .system = dp_dce_is_system_text(f[3], c->flen[3]),
                      .line = line};
    return DP_DCE_MSG;
}

int dce_csv_next(dp_dce_reader *r, dp_dce_msg *m) {
    dce_csv *c = r->csv;
    if (c->handed) {
        c->rec.len = 0;
        c->handed = false;
    }
    for (;;) {
        if (c->nrecords) {
            int rc = take_record(r, m);
            if (rc != DP_DCE_MSG) {
                bool header = !c->header_done || rc == DP_DCE_END;
                reset_record(c);
                if (rc == DP_DCE_END) continue; /* the header */
                return header ? DP_DCE_FATAL : rc;
            }
            c->nrecords = 0;
            c->nfields = 0;
            c->in_record = false;
            c->handed = true; /* the fields stay in c->rec until the next call */
            return DP_DCE_MSG;
        }
        int f = dce_fill(r);
        if (f < 0) return DP_DCE_FATAL;
        if (f == 0) {
            if (csv_fini(&c->p, cb_field, cb_record, r) != 0) {
                int64_t start = c->start_line;
                reset_record(c);
                /* csv_fini keeps failing once the input ended inside quotes: start over, so
                 * the next call sees a clean end of input */
                csv_free(&c->p);
                if (csv_init(&c->p, CSV_STRICT | CSV_STRICT_FINI)) {
                    dp_fail("out of memory");
                    return DP_DCE_FATAL;
                }
                dp_fail("%s:%lld: unterminated quoted field (started at line %lld): the file "
                        "ends inside quotes; it may be truncated",
                        r->name, (long long)(r->line - c->ended_nl), (long long)start);
                return c->header_done ? DP_DCE_BAD : DP_DCE_FATAL;
            }
            if (c->nrecords) continue;
            if (!c->header_done) {
                dp_fail("%s:%lld: no DiscordChatExporter CSV header (expected \"%s\")", r->name,
                        (long long)r->line, HEADER_TEXT);
                return DP_DCE_FATAL;
            }
            return DP_DCE_END;
        }
        /* one physical line (or what the window holds of it) per csv_parse call */
        const unsigned char *p = r->buf + r->pos;
        size_t avail = r->len - r->pos;
        const unsigned char *nl = memchr(p, '\n', avail);
        size_t k = nl ? (size_t)(nl - p) + 1 : avail;
        if (!c->in_record && !(nl && (k == 1 || (k == 2 && p[0] == '\r')))) {
            c->in_record = true;
            c->start_line = r->line;
        }
        size_t done = csv_parse(&c->p, p, k, cb_field, cb_record, r);
        r->pos += k;
        int64_t line = r->line;
        if (nl) r->line++;
        c->ended_nl = nl != NULL;
        if (done < k) {
            int err = csv_error(&c->p);
            int64_t start = c->in_record ? c->start_line : line;
            csv_free(&c->p);
            reset_record(c);
            if (csv_init(&c->p, CSV_STRICT | CSV_STRICT_FINI)) {
                dp_fail("out of memory");
                return DP_DCE_FATAL;
            }
            if (err == CSV_EPARSE)
                dp_fail("%s:%lld: malformed CSV: a quote inside an unquoted field or text after "
                        "a closing quote (record starting at line %lld); DCE quotes every field "
                        "and doubles the quotes inside",
                        r->name, (long long)line, (long long)start);
            else
                dp_fail("%s:%lld: CSV parser: %s", r->name, (long long)line, csv_strerror(err));
            return c->header_done && err == CSV_EPARSE ? DP_DCE_BAD : DP_DCE_FATAL;
        }
    }
}
