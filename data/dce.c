/* DCE readers, the shared part: opening (file or memory, zstd by magic), the input window,
 * format detection, dates, system-message text and UTF-8 validation. */
#include "data/dce_impl.h"
#include "data/base/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DCE_WINDOW (1 << 20)

int dce_fill(dp_dce_reader *r) {
    if (r->pos < r->len) return 1;
    if (r->eof) return 0;
    if (!r->rd) { /* memory input: the whole buffer is the window */
        r->eof = true;
        return 0;
    }
    int64_t n = dp_reader_read(r->rd, r->buf, r->cap);
    if (n < 0) return dp_fail_context("%s", r->name);
    r->pos = 0;
    r->len = (size_t)n;
    if (n == 0) r->eof = true;
    return n > 0;
}

static dp_dce_reader *open_common(dp_dce_reader *r) {
    if (dce_fill(r) < 0) goto fail;
    if (r->len - r->pos >= 2 && ((r->buf[r->pos] == 0xFF && r->buf[r->pos + 1] == 0xFE) ||
                                 (r->buf[r->pos] == 0xFE && r->buf[r->pos + 1] == 0xFF))) {
        dp_fail("%s:1: the file is UTF-16 (a spreadsheet's \"Unicode\" save); save it as UTF-8 "
                "or use the export DiscordChatExporter wrote",
                r->name);
        goto fail;
    }
    /* spreadsheets add a BOM when they re-save a CSV */
    if (r->len - r->pos >= 3 && !memcmp(r->buf + r->pos, "\xEF\xBB\xBF", 3)) r->pos += 3;
    size_t i = r->pos;
    while (i < r->len &&
           (r->buf[i] == ' ' || r->buf[i] == '\t' || r->buf[i] == '\r' || r->buf[i] == '\n'))
        i++;
    if (i >= r->len) {
        dp_fail("%s: empty file (expected a DiscordChatExporter CSV or JSON export)", r->name);
        goto fail;
    }
    r->json = r->buf[i] == '{';
    if ((r->json ? dce_json_init(r) : dce_csv_init(r)) < 0) goto fail;
    return r;
fail:
    dp_dce_close(r);
    return NULL;
}

dp_dce_reader *dp_dce_open(const char *path) {
    dp_dce_reader *r = dp_calloc(1, sizeof *r);
    if (!r) return NULL;
    r->line = 1;
    r->name = dp_strdup(path);
    r->cap = DCE_WINDOW;
    r->buf = dp_malloc(r->cap);
    if (!r->name || !r->buf || !(r->rd = dp_reader_open(path))) {
        dp_dce_close(r);
        return NULL;
    }
    return open_common(r);
}

dp_dce_reader *dp_dce_open_mem(const char *name, const void *data, size_t len) {
    dp_dce_reader *r = dp_calloc(1, sizeof *r);
    if (!r) return NULL;
    r->line = 1;
    r->name = dp_strdup(name);
    if (!r->name) {
        dp_dce_close(r);
        return NULL;
    }
    /* the window is the caller's buffer; it is never written */
    r->buf = (unsigned char *)data;
    r->len = r->cap = r->mem_len = len;
    r->mem = data;
    r->eof = true;
    return open_common(r);
}

int dp_dce_next(dp_dce_reader *r, dp_dce_msg *m) {
    return r->json ? dce_json_next(r, m) : dce_csv_next(r, m);
}

bool dp_dce_is_json(const dp_dce_reader *r) {
    return r->json;
}

uint64_t dp_dce_file_pos(const dp_dce_reader *r) {
    return r->rd ? dp_reader_file_pos(r->rd) : r->pos;
}

uint64_t dp_dce_file_size(const dp_dce_reader *r) {
    return r->rd ? dp_reader_file_size(r->rd) : r->mem_len;
}

void dp_dce_close(dp_dce_reader *r) {
    if (!r) return;
    if (r->csv) dce_csv_free(r);
    if (r->js) dce_json_free(r);
    if (r->rd) {
        dp_reader_close(r->rd);
        free(r->buf);
    } else if (!r->mem) {
        free(r->buf);
    }
    free(r->name);
    free(r);
}

/* ------------------------------------------------------------------ dates */

const char dp_dce_date_formats[] =
    "yyyy-MM-ddTHH:mm:ss.fffffff+HH:mm as DiscordChatExporter 2.42.3+ writes CSV (for example "
    "2025-10-28T14:15:37.8280000-03:00), or ISO 8601 with an offset as in DCE JSON (for example "
    "2025-10-28T14:15:37.828-03:00)";

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's civil-days formula). */
static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int digits(const char *s, int n) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

int dp_dce_parse_date(const char *s, size_t n, int64_t *t) {
    /* 2025-10-28T14:15:37 = 19 bytes, then [.fraction], then Z or +HH:mm */
    if (n < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != ' ') || s[13] != ':' ||
        s[16] != ':')
        return -1;
    int y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2);
    int h = digits(s + 11, 2), mi = digits(s + 14, 2), se = digits(s + 17, 2);
    if (y < 0 || mo < 1 || mo > 12 || d < 1 || h < 0 || h > 23 || mi < 0 || mi > 59 || se < 0 ||
        se > 59)
        return -1;
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[mo - 1] + (mo == 2 && leap)) return -1;
    size_t i = 19;
    int64_t frac = 0;
    if (i < n && s[i] == '.') {
        int nd = 0;
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++, nd++) {
            if (nd >= 7) return -1; /* finer than DCE's 100 ns ticks */
            frac = frac * 10 + (s[i] - '0');
        }
        if (nd == 0) return -1;
        for (; nd < 7; nd++) frac *= 10;
    }
    int64_t off = 0;
    if (i < n && s[i] == 'Z') {
        i++;
    } else if (i + 6 <= n && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
        int oh = digits(s + i + 1, 2), om = digits(s + i + 4, 2);
        if (oh < 0 || oh > 14 || om < 0 || om > 59) return -1;
        off = (s[i] == '-' ? -1 : 1) * (int64_t)(oh * 3600 + om * 60);
        i += 6;
    } else {
        return -1; /* no offset: a wall clock, not an instant */
    }
    if (i != n) return -1;
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - off;
    *t = secs * DP_TICKS_PER_SECOND + frac;
    return 0;
}

void dp_dce_format_instant(int64_t t, char out[48]) {
    int64_t secs = t / DP_TICKS_PER_SECOND, frac = t % DP_TICKS_PER_SECOND;
    if (frac < 0) {
        frac += DP_TICKS_PER_SECOND;
        secs--;
    }
    int64_t days = secs / 86400, rem = secs % 86400;
    if (rem < 0) {
        rem += 86400;
        days--;
    }
    int64_t y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    if (y < 0 || y > 9999) {
        snprintf(out, 48, "%lld-%02d-%02dT%02d:%02d:%02d.%07dZ", (long long)y, m, d,
                 (int)(rem / 3600), (int)(rem / 60 % 60), (int)(rem % 60), (int)frac);
        return;
    }
    /* by hand: this runs twice per written conversation */
    int v[7] = {(int)y, m, d, (int)(rem / 3600), (int)(rem / 60 % 60), (int)(rem % 60), (int)frac};
    static const int width[7] = {4, 2, 2, 2, 2, 2, 7};
    static const char sep[7] = {'-', '-', 'T', ':', ':', '.', 'Z'};
    char *o = out;
    for (int i = 0; i < 7; i++) {
        for (int k = width[i] - 1; k >= 0; k--, v[i] /= 10) o[k] = (char)('0' + v[i] % 10);
        o += width[i];
        *o++ = sep[i];
    }
    *o = 0;
}

/* ------------------------------------------------------------------ system messages */

static bool has_prefix(const char *s, size_t n, const char *p, size_t *pl) {
    *pl = strlen(p);
    return n >= *pl && !memcmp(s, p, *pl);
}

static bool has_suffix(const char *s, size_t n, const char *x) {
    size_t l = strlen(x);
    return n >= l && !memcmp(s + n - l, x, l);
}

bool dp_dce_is_system_text(const char *s, size_t n) {
    static const char *const exact[] = {"Pinned a message.",
                                        "Joined the server.",
                                        "Changed the channel icon.",
                                        "Added a recipient.",
                                        "Left the group.",
                                        "Started a thread.",
                                        NULL};
    if (n == 0 || n > 300 || memchr(s, '\n', n)) return false;
    for (int i = 0; exact[i]; i++)
        if (strlen(exact[i]) == n && !memcmp(s, exact[i], n)) return true;
    size_t pl;
    if (has_prefix(s, n, "Started a call that lasted ", &pl)) {
        size_t i = pl, nd = 0;
        for (; i < n && ((s[i] >= '0' && s[i] <= '9') || s[i] == ','); i++) nd++;
        size_t rest = n - i;
        return nd > 0 && ((rest == 9 && !memcmp(s + i, " minutes.", 9)) ||
                          (rest == 8 && !memcmp(s + i, " minute.", 8)));
    }
    if (has_prefix(s, n, "Changed the channel name: ", &pl)) return n > pl;
    if (has_prefix(s, n, "Added ", &pl) && has_suffix(s, n, " to the group.")) return n > pl + 14;
    if (has_prefix(s, n, "Removed ", &pl) && has_suffix(s, n, " from the group."))
        return n > pl + 16;
    return false;
}
