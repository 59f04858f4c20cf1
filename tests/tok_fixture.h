/* Test helper shared by the tokenizer suites: checks a JSONL file of {"text", "<key>": [ids]}
 * lines against dp_tokenizer_encode (special-token text recognized), with a round trip
 * decode(encode(s)) == NFC(s) (or s when the tokenizer has no normalizer). */
#ifndef DOPPEL_TOK_FIXTURE_H
#define DOPPEL_TOK_FIXTURE_H

#include "check.h"
#include "data/base/error.h"
#include "data/base/io.h"
#include "data/tokenizer.h"

#include <cjson/cJSON.h>

static inline bool ids_equal(const dp_ids *got, const cJSON *want) {
    if (!cJSON_IsArray(want) || (size_t)cJSON_GetArraySize(want) != got->n) return false;
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, want) if (!cJSON_IsNumber(e) || e->valueint != got->v[i++]) return false;
    return true;
}

static inline void print_mismatch(const char *what, int line, const char *text, const dp_ids *got,
                                  const cJSON *want) {
    fprintf(stderr, "%s line %d: \"%.200s\"\n  expected:", what, line, text);
    const cJSON *e;
    cJSON_ArrayForEach(e, want) fprintf(stderr, " %d", e->valueint);
    fprintf(stderr, "\n  got:     ");
    for (size_t i = 0; i < got->n; i++) fprintf(stderr, " %d", (int)got->v[i]);
    fprintf(stderr, "\n");
}

/* Every {"text", "ids"} line (or {"text", "<key>"} when key is given) must encode exactly. */
static inline int check_jsonl(dp_tokenizer *t, const char *path, const char *key, int *n_lines,
                              bool round_trip) {
    char *data;
    size_t len;
    if (dp_read_file(path, &data, &len)) {
        CHECK_REPORT(0, "%s", dp_last_error());
        return -1;
    }
    int line = 0, bad = 0;
    for (char *p = data; p < data + len;) {
        char *nl = memchr(p, '\n', (size_t)(data + len - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(data + len - p);
        line++;
        if (l) {
            cJSON *j = cJSON_ParseWithLength(p, l);
            const cJSON *text = cJSON_GetObjectItemCaseSensitive(j, "text");
            const cJSON *want = cJSON_GetObjectItemCaseSensitive(j, key);
            CHECK_REPORT(cJSON_IsString(text) && want, "%s:%d: no text/%s", path, line, key);
            if (cJSON_IsString(text) && want) {
                dp_ids got = {0};
                uint64_t dropped0 = dp_tokenizer_dropped_bytes(t);
                int rc = dp_tokenizer_encode(t, text->valuestring, strlen(text->valuestring), true,
                                             &got);
                CHECK_REPORT(rc == 0, "%s:%d: encode failed: %s", path, line, dp_last_error());
                bool ok = rc == 0 && ids_equal(&got, want);
                check_count++;
                if (!ok) {
                    check_failures++;
                    if (bad++ < 5) print_mismatch(path, line, text->valuestring, &got, want);
                }
                /* round trip: decode(encode(s)) == NFC(s) with an NFC normalizer, else s */
                if (!round_trip) {
                    dp_ids_free(&got);
                    cJSON_Delete(j);
                    p += l + 1;
                    continue;
                }
                dp_buf dec = {0};
                CHECK_EQ_INT(0, dp_tokenizer_decode(t, got.v, got.n, false, &dec));
                char *nfc = dp_utf8_nfc(text->valuestring, strlen(text->valuestring), NULL);
                char *expect = strstr(dp_tokenizer_describe(t), ", NFC,") ? nfc : text->valuestring;
                if (dp_tokenizer_dropped_bytes(t) != dropped0) {
                    /* bytes the vocabulary has no token for are dropped (as HF does) */
                    size_t k = 0;
                    for (char *q = expect; *q; q++)
                        if (dp_tokenizer_token_id(t, (char[]){*q, 0}) >= 0) expect[k++] = *q;
                    expect[k] = 0;
                }
                CHECK_REPORT(dec.data && strcmp(dec.data, expect) == 0, "%s:%d: round trip differs",
                             path, line);
                free(nfc);
                dp_buf_free(&dec);
                dp_ids_free(&got);
            }
            cJSON_Delete(j);
        }
        p += l + 1;
    }
    free(data);
    if (bad) fprintf(stderr, "%s: %d of %d lines differ\n", path, bad, line);
    *n_lines = line;
    return bad ? -1 : 0;
}

#endif
