/* JSON text that never loses bytes. cJSON keeps strings NUL-terminated, so a string holding
 * "\u0000" (or a raw 0 byte) would come out cut at that point without a word; every reader of
 * JSON text goes through dp_json_parse, which keeps such strings whole or refuses them with
 * WHERE:LINE. Also the writers: length-aware JSON string escaping, and the display form of a
 * token's raw bytes that `doppel tokenize` and chat's /probs print. */
#ifndef DOPPEL_JSON_H
#define DOPPEL_JSON_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "data/base/io.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    DP_JSON_REFUSE_NUL, /* a string holding NUL fails the parse (callers that need C strings) */
    DP_JSON_KEEP_NUL,   /* string values keep every byte: read them with dp_json_bytes */
} dp_json_nul;

/* Parses len bytes of JSON as cJSON_ParseWithLength does. Returns 0 and *out, which is NULL
 * when the text is not JSON (the caller words that error, knowing what it expected); or -1
 * with "WHERE:LINE: ..." recorded when a string holds a NUL and nul is DP_JSON_REFUSE_NUL, or
 * an object key holds one (a key cut at its NUL would match another key). LINE counts from
 * first_line at the start of text. Free *out with cJSON_Delete. */
int dp_json_parse(const char *text, size_t len, dp_json_nul nul, const char *where,
                  int64_t first_line, cJSON **out);

/* For JSON text already parsed by cJSON (its [0, len) span): 0, or -1 with "WHERE:LINE: ..."
 * when a string or key holds a NUL, as dp_json_parse's refusal (callers that need cJSON's own
 * parse options: strict trailing text, the end of a header). */
int dp_json_check_nul(const char *text, size_t len, const char *where, int64_t first_line);

/* The path of the first string (key or value) of valid JSON text[0, len) that holds a NUL, a
 * raw 0 byte or the escape \u0000, written into path as "messages[1].name" (the key's own
 * path when the key holds it; cut at cap); false when there is none. For errors that name the
 * field (doppel serve's 400s) where dp_json_check_nul names the line. */
bool dp_json_find_nul(const char *text, size_t len, char *path, size_t cap);

/* A string item's bytes and their count, NULs included (a tree from dp_json_parse with
 * DP_JSON_KEEP_NUL records the count of such strings in the item's unused valuedouble);
 * NULL when item is not a string. */
const char *dp_json_bytes(const cJSON *item, size_t *len);

/* Appends s[0..n) as a quoted JSON string: \" \\ \n \r \t, other control bytes (NUL too) as
 * \u00XX; every other byte as it is. */
int dp_json_append_string(dp_buf *b, const char *s, size_t n);

/* Appends a token's raw bytes for people, as a quoted JSON-like string: complete UTF-8
 * characters as they are (escaped as JSON escapes them), every byte outside one as \xNN, so
 * a token holding part of a character shows exactly which bytes it holds. */
int dp_json_append_piece(dp_buf *b, const char *s, size_t n);

#ifdef __cplusplus
}
#endif
#endif
