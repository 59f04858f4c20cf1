/* DiscordChatExporter exports read one message at a time: CSV (libcsv) and JSON (the `messages`
 * array cut into one object at a time, each parsed with cJSON), plain or zstd-compressed. */
#ifndef DOPPEL_DCE_H
#define DOPPEL_DCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "data/base/utf8.h"

/* Instants are int64 ticks of 100 ns since 1970-01-01T00:00:00Z: DCE writes 7 fractional
 * digits, so nothing of the export's precision is lost. */
#define DP_TICKS_PER_SECOND 10000000LL

typedef struct {
    uint64_t author_id;  /* snowflake */
    const char *author;  /* username, or "Name#1234" for legacy accounts and bots */
    const char *content; /* as exported: not trimmed, CRLF not normalized */
    size_t author_len, content_len;
    int64_t t;    /* instant, DP_TICKS_PER_SECOND ticks since the Unix epoch (UTC) */
    bool system;  /* a DCE system message (JSON `type`, or CSV fallback text) */
    int64_t line; /* 1-based line where the record starts */
} dp_dce_msg;

typedef struct dp_dce_reader dp_dce_reader;

enum { DP_DCE_END = 0, DP_DCE_MSG = 1, DP_DCE_FATAL = -1, DP_DCE_BAD = -2 };

/* Opens a CSV or JSON export (told apart by the first byte after an optional BOM: `{` is JSON),
 * zstd-compressed or not. NULL with dp_last_error() on failure. */
dp_dce_reader *dp_dce_open(const char *path);
/* The same over a memory buffer (fuzzers, tests); name is used in messages. data must outlive
 * the reader. */
dp_dce_reader *dp_dce_open_mem(const char *name, const void *data, size_t len);
/* Next message: DP_DCE_MSG (fields of *m valid until the next call), DP_DCE_END,
 * DP_DCE_BAD (a malformed record, "FILE:LINE: what" in dp_last_error(); the reader has moved
 * past it, so a lenient caller may go on) or DP_DCE_FATAL (cannot go on). */
int dp_dce_next(dp_dce_reader *r, dp_dce_msg *m);
bool dp_dce_is_json(const dp_dce_reader *r);
/* Bytes consumed from the file (compressed bytes for zstd) and the file's size. */
uint64_t dp_dce_file_pos(const dp_dce_reader *r);
uint64_t dp_dce_file_size(const dp_dce_reader *r);
void dp_dce_close(dp_dce_reader *r);

/* `yyyy-MM-ddTHH:mm:ss[.f{1,7}](±HH:mm|Z)` (DCE CSV writes 7 digits, JSON trims zeros).
 * Returns 0 and the instant, or -1 (no message recorded: the caller names the line). */
int dp_dce_parse_date(const char *s, size_t n, int64_t *t);
/* The accepted date forms, for error messages. */
extern const char dp_dce_date_formats[];
/* Formats an instant as UTC ISO 8601 with 7 fractional digits and `Z` (29 bytes + NUL; the buffer
 * is sized for any year). */
void dp_dce_format_instant(int64_t t, char out[48]);
/* True when the text is one of DCE's English system-message fallbacks ("Pinned a message.",
 * "Started a call that lasted 1,234 minutes.", ...): CSV has no type column. */
bool dp_dce_is_system_text(const char *s, size_t n);

#endif
