/* The tokenizer against real tokenizers (../shared/tokenizers/{qwen3,llama3}): every line of
 * reference-ids.jsonl, the committed corpus fixture encoded by HF `tokenizers`
 * (tests/reference/make_tokenizer_corpus.py), round trips and long runs of one letter. */
#include "check.h"
#include "data/error.h"
#include "data/io.h"
#include "data/tokenizer.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <time.h>

static bool ids_equal(const dp_ids *got, const cJSON *want) {
    if (!cJSON_IsArray(want) || (size_t)cJSON_GetArraySize(want) != got->n) return false;
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, want) if (!cJSON_IsNumber(e) || e->valueint != got->v[i++]) return false;
    return true;
}

static void print_mismatch(const char *what, int line, const char *text, const dp_ids *got,
                           const cJSON *want) {
    fprintf(stderr, "%s line %d: \"%.200s\"\n  expected:", what, line, text);
    const cJSON *e;
    cJSON_ArrayForEach(e, want) fprintf(stderr, " %d", e->valueint);
    fprintf(stderr, "\n  got:     ");
    for (size_t i = 0; i < got->n; i++) fprintf(stderr, " %d", (int)got->v[i]);
    fprintf(stderr, "\n");
}

/* Every {"text", "ids"} line (or {"text", "<key>"} when key is given) must encode exactly. */
static int check_jsonl(dp_tokenizer *t, const char *path, const char *key, int *n_lines) {
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
                dp_buf dec = {0};
                CHECK_EQ_INT(0, dp_tokenizer_decode(t, got.v, got.n, false, &dec));
                char *nfc = dp_utf8_nfc(text->valuestring, strlen(text->valuestring), NULL);
                const char *expect =
                    strstr(dp_tokenizer_describe(t), ", NFC,") ? nfc : text->valuestring;
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

/* 100 KB of one letter and other long runs: linear-ish time (the heap merge loop). */
static void check_long_runs(dp_tokenizer *t, const char *name) {
    size_t n = 100 * 1000;
    char *s = malloc(n + 1);
    const char *letters = "k a\n1";
    for (int v = 0; v < 5; v++) {
        memset(s, letters[v], n);
        s[n] = 0;
        dp_ids ids = {0};
        clock_t c0 = clock();
        CHECK_EQ_INT(0, dp_tokenizer_encode(t, s, n, false, &ids));
        double sec = (double)(clock() - c0) / CLOCKS_PER_SEC;
        fprintf(stderr, "  %s: 100 KB of '%s' -> %zu tokens in %.3f s\n", name,
                letters[v] == '\n' ? "\\n" : (char[]){letters[v], 0}, ids.n, sec);
        dp_buf dec = {0};
        CHECK_EQ_INT(0, dp_tokenizer_decode(t, ids.v, ids.n, false, &dec));
        CHECK(dec.len == n && memcmp(dec.data, s, n) == 0);
        dp_buf_free(&dec);
        dp_ids_free(&ids);
    }
    free(s);
}

int main(void) {
    const char *shared = check_shared_dir();
    if (!shared) SKIP("../shared not found: the reference tokenizers live there");
    const char *names[] = {"qwen3", "llama3"};
    for (int k = 0; k < 2; k++) {
        char path[8192];
        snprintf(path, sizeof path, "%s/tokenizers/%s", shared, names[k]);
        clock_t c0 = clock();
        dp_tokenizer *t = dp_tokenizer_load(path);
        CHECK_REPORT(t != NULL, "load %s: %s", path, dp_last_error());
        if (!t) continue;
        fprintf(stderr, "%s: %s (loaded in %.2f s)\n", names[k], dp_tokenizer_describe(t),
                (double)(clock() - c0) / CLOCKS_PER_SEC);
        int n = 0;
        snprintf(path, sizeof path, "%s/tokenizers/%s/reference-ids.jsonl", shared, names[k]);
        check_jsonl(t, path, "ids", &n);
        fprintf(stderr, "  reference-ids.jsonl: %d lines\n", n);
        snprintf(path, sizeof path, "%s/tests/fixtures/tokenizer-corpus.jsonl.zst",
                 DOPPEL_SOURCE_DIR);
        check_jsonl(t, path, names[k], &n);
        fprintf(stderr, "  tokenizer-corpus fixture: %d lines\n", n);
        check_long_runs(t, names[k]);
        dp_tokenizer_free(t);
    }
    return check_done();
}
