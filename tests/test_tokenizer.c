/* The tokenizer on small hand-made vocabularies (no ../shared needed): merge order by rank,
 * leftmost ties, ignore_merges, added tokens (leftmost-longest, allow_special), both merge forms
 * in tokenizer.json, the streaming decoder, UTF-8 checks and the errors for unsupported types.
 * Expected ids are worked out by hand from the BPE rules of REFERENCE.md section 6. */
#include "check.h"
#include "tok_fixture.h"
#include "data/base/error.h"
#include "data/tokenizer.h"

#include <stdint.h>

/* GPT-2 byte -> code point, written from REFERENCE.md section 6 */
static void bytelevel_char(int b, char out[3]) {
    int n = 0, cp = -1;
    for (int x = 0; x < 256; x++) {
        bool self = (x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE;
        int c = self ? x : 256 + n++;
        if (x == b) cp = c;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = 0;
    }
}

/* ids 0..255 = bytes; 256.. = extra tokens given as byte-level strings, then added tokens */
static dp_tokenizer *toy(const char *pre, const char *const *extra, int n_extra,
                         const char *const *merges, int n_merges, const char *const *added,
                         const int32_t *added_types, int n_added) {
    static char bytes[256][3];
    const char *tokens[400];
    int32_t types[400];
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bytelevel_char(b, bytes[b]);
        types[n] = DP_TOKTYPE_NORMAL;
        tokens[n++] = bytes[b];
    }
    for (int i = 0; i < n_extra; i++) types[n] = DP_TOKTYPE_NORMAL, tokens[n++] = extra[i];
    for (int i = 0; i < n_added; i++) types[n] = added_types[i], tokens[n++] = added[i];
    dp_tokenizer_arrays a = {.name = "toy",
                             .model = "gpt2",
                             .pre = pre,
                             .tokens = tokens,
                             .token_types = types,
                             .n_tokens = (size_t)n,
                             .merges = merges,
                             .n_merges = (size_t)n_merges,
                             .bos_id = -1,
                             .eos_id = -1,
                             .pad_id = -1};
    return dp_tokenizer_from_arrays(&a);
}

static void check_ids(dp_tokenizer *t, const char *text, bool special, const int32_t *want,
                      int n_want) {
    dp_ids got = {0};
    int rc = dp_tokenizer_encode(t, text, strlen(text), special, &got);
    CHECK_REPORT(rc == 0, "encode \"%s\": %s", text, dp_last_error());
    bool same = rc == 0 && got.n == (size_t)n_want;
    for (int i = 0; same && i < n_want; i++) same = got.v[i] == want[i];
    CHECK_REPORT(same, "encode \"%s\": %zu ids, first %d (expected %d ids, first %d)", text, got.n,
                 got.n ? (int)got.v[0] : -1, n_want, n_want ? (int)want[0] : -1);
    dp_ids_free(&got);
}

#define IDS(...) (const int32_t[]){__VA_ARGS__}, (int)(sizeof((int32_t[]){__VA_ARGS__}) / 4)

static void test_merge_order(void) {
    /* 256 "ab", 257 "bc", 258 "abc" */
    const char *extra[] = {"ab", "bc", "abc"};
    const char *m1[] = {"a b", "b c", "ab c"};
    dp_tokenizer *t = toy("gpt2", extra, 3, m1, 3, NULL, NULL, 0);
    CHECK(t != NULL);
    check_ids(t, "abc", false, IDS(258)); /* a b first (rank 0), then ab c */
    check_ids(t, "bc", false, IDS(257));
    check_ids(t, "cab", false, IDS('c', 256));
    dp_tokenizer_free(t);
    const char *m2[] = {"b c", "a b", "ab c"};
    t = toy("gpt2", extra, 3, m2, 3, NULL, NULL, 0);
    check_ids(t, "abc", false, IDS('a', 257)); /* b c wins; no merge a bc */
    dp_tokenizer_free(t);

    /* ties: leftmost first. 256 "aa", 257 "aaaa" */
    const char *ex2[] = {"aa", "aaaa"};
    const char *m3[] = {"a a", "aa aa"};
    t = toy("gpt2", ex2, 2, m3, 2, NULL, NULL, 0);
    check_ids(t, "aaa", false, IDS(256, 'a'));
    check_ids(t, "aaaaa", false, IDS(257, 'a'));
    check_ids(t, "aaaaaaa", false, IDS(257, 256, 'a'));
    /* a long piece takes the heap path: 1001 a's = 250 x aaaa + a */
    static char run[1002];
    memset(run, 'a', 1001);
    dp_ids got = {0};
    CHECK_EQ_INT(0, dp_tokenizer_encode(t, run, 1001, false, &got));
    CHECK_EQ_INT(251, got.n);
    bool ok = got.n == 251 && got.v[250] == 'a';
    for (int i = 0; ok && i < 250; i++) ok = got.v[i] == 257;
    CHECK(ok);
    dp_ids_free(&got);
    /* the pre-tokenizer splits before merging: "aa aa" -> "aa" " aa" (no merge across) */
    check_ids(t, "aa aa", false, IDS(256, ' ', 256));
    dp_tokenizer_free(t);
}

static void test_bytes_and_space(void) {
    const char *extra[] = {"Ġh", "Ġhi"};
    const char *m[] = {"Ġ h", "Ġh i"};
    dp_tokenizer *t = toy("gpt2", extra, 2, m, 2, NULL, NULL, 0);
    check_ids(t, " hi", false, IDS(257));
    check_ids(t, "\xC3\xA9", false, IDS(0xC3, 0xA9)); /* é = two byte tokens */
    CHECK_EQ_INT(' ', dp_tokenizer_token_id(t, " "));
    CHECK_EQ_INT(257, dp_tokenizer_token_id(t, " hi"));
    size_t l;
    const char *b = dp_tokenizer_token_bytes(t, 257, &l);
    CHECK(b && l == 3 && memcmp(b, " hi", 3) == 0);
    dp_buf out = {0};
    CHECK_EQ_INT(0, dp_tokenizer_decode(t, (int32_t[]){'x', 257, 0xC3, 0xA9}, 4, false, &out));
    CHECK_EQ_STR("x hi\xC3\xA9", out.data);
    dp_buf_free(&out);
    /* invalid bytes decode to U+FFFD, one per maximal invalid subpart */
    CHECK_EQ_INT(0,
                 dp_tokenizer_decode(t, (int32_t[]){0xC3, 'a', 0xFF, 0xE2, 0x82}, 5, false, &out));
    CHECK_EQ_STR("\xEF\xBF\xBD"
                 "a\xEF\xBF\xBD\xEF\xBF\xBD",
                 out.data);
    dp_buf_free(&out);
    CHECK_EQ_INT(-1, dp_tokenizer_decode(t, (int32_t[]){100000}, 1, false, &out));
    CHECK(strstr(dp_last_error(), "100000") != NULL);
    dp_buf_free(&out);
    /* invalid UTF-8 input: an error with the byte offset */
    dp_ids ids = {0};
    CHECK_EQ_INT(-1, dp_tokenizer_encode(t, "ok\xC3(", 4, false, &ids));
    CHECK(strstr(dp_last_error(), "offset 2") != NULL);
    dp_ids_free(&ids);
    dp_tokenizer_free(t);
}

static void test_added_tokens(void) {
    /* 256 "<x>" control, 257 "<xy>" control, 258 "<u>" user-defined */
    const char *added[] = {"<x>", "<xy>", "<u>"};
    const int32_t types[] = {DP_TOKTYPE_CONTROL, DP_TOKTYPE_CONTROL, DP_TOKTYPE_USER_DEFINED};
    dp_tokenizer *t = toy("gpt2", NULL, 0, NULL, 0, added, types, 3);
    CHECK(t != NULL);
    check_ids(t, "a<xy>b", true, IDS('a', 257, 'b')); /* longest at the leftmost position */
    check_ids(t, "<x><xy>", true, IDS(256, 257));
    check_ids(t, "<<x>", true, IDS('<', 256));
    check_ids(t, "<x>", false, IDS('<', 'x', '>')); /* special text stays text */
    check_ids(t, "<u>", false, IDS(258));           /* non-special added tokens always match */
    CHECK(dp_tokenizer_is_special(t, 256));
    CHECK(!dp_tokenizer_is_special(t, 258));
    CHECK_EQ_INT(257, dp_tokenizer_token_id(t, "<xy>"));
    dp_buf out = {0};
    CHECK_EQ_INT(0, dp_tokenizer_decode(t, (int32_t[]){'a', 256, 258}, 3, true, &out));
    CHECK_EQ_STR("a<u>", out.data);
    dp_buf_free(&out);
    dp_tokenizer_free(t);
}

static void test_stream(void) {
    dp_tokenizer *t = toy("gpt2", NULL, 0, NULL, 0, NULL, NULL, 0);
    dp_tok_stream s = {0};
    dp_buf out = {0};
    const int32_t emoji[] = {0xF0, 0x9F, 0x98, 0x82}; /* 😂 one byte per token */
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(0, dp_tok_stream_feed(&s, t, emoji[i], &out));
        CHECK_EQ_INT(0, out.len); /* held back */
    }
    CHECK_EQ_INT(0, dp_tok_stream_feed(&s, t, emoji[3], &out));
    CHECK(out.len == 4 && memcmp(out.data, "\xF0\x9F\x98\x82", 4) == 0);
    CHECK_EQ_INT(0, dp_tok_stream_feed(&s, t, 'k', &out));
    CHECK_EQ_INT(0, dp_tok_stream_feed(&s, t, 0xE2, &out)); /* incomplete: held back */
    CHECK_EQ_INT(5, out.len);
    CHECK_EQ_INT(0, dp_tok_stream_feed(&s, t, 'x', &out)); /* E2 then x: invalid -> U+FFFD x */
    CHECK_EQ_INT(0, dp_tok_stream_feed(&s, t, 0xC3, &out));
    CHECK_EQ_INT(0, dp_tok_stream_flush(&s, &out));
    CHECK(out.len == 5 + 4 + 3 && memcmp(out.data + 5, "\xEF\xBF\xBDx\xEF\xBF\xBD", 7) == 0);
    CHECK_EQ_INT(-1, dp_tok_stream_feed(&s, t, -1, &out));
    dp_buf_free(&out);
    dp_tokenizer_free(t);
}

static void test_utf8(void) {
    CHECK_EQ_INT(5, dp_utf8_valid_prefix("abcde", 5));
    CHECK_EQ_INT(1, dp_utf8_valid_prefix("a\xC0\xAF", 3));    /* overlong */
    CHECK_EQ_INT(0, dp_utf8_valid_prefix("\xED\xA0\x80", 3)); /* surrogate */
    CHECK_EQ_INT(4, dp_utf8_valid_prefix("\xF0\x9F\x98\x82", 4));
    CHECK_EQ_INT(0, dp_utf8_valid_prefix("\xF4\x90\x80\x80", 4)); /* > U+10FFFF */
    size_t n;
    char *s = dp_utf8_nfc("e\xCC\x81", 3, &n); /* e + combining acute -> é */
    CHECK(s && n == 2 && memcmp(s, "\xC3\xA9", 2) == 0);
    free(s);
}

static void test_errors(void) {
    dp_tokenizer *t = toy("no-such-pre", NULL, 0, NULL, 0, NULL, NULL, 0);
    CHECK(t == NULL && strstr(dp_last_error(), "\"no-such-pre\"") != NULL);
    const char *m[] = {"a z"};
    t = toy("gpt2", NULL, 0, m, 1, NULL, NULL, 0); /* "az" is not in the vocab */
    CHECK(t == NULL && strstr(dp_last_error(), "merge 0") != NULL);

    const char *wp = "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}";
    t = dp_tokenizer_load_json(wp, strlen(wp), NULL, 0, "wp.json");
    CHECK(t == NULL && strstr(dp_last_error(), "\"WordPiece\"") != NULL);
    CHECK(dp_tokenizer_load_json("{", 1, NULL, 0, "x.json") == NULL);
    CHECK(strstr(dp_last_error(), "not valid JSON") != NULL);
    CHECK(dp_tokenizer_load("/nonexistent/dir/tokenizer.json") == NULL);
}

/* A tokenizer.json built here: both merge forms, the Metaspace error, ignore_merges. */
static char *toy_json(const char *merges, const char *pre, bool ignore_merges) {
    dp_buf b = {0};
    dp_buf_puts(&b, "{\"model\":{\"type\":\"BPE\",\"ignore_merges\":");
    dp_buf_puts(&b, ignore_merges ? "true" : "false");
    dp_buf_puts(&b, ",\"vocab\":{");
    for (int x = 0; x < 256; x++) {
        char c[3];
        bytelevel_char(x, c);
        if (c[0] == '"' || c[0] == '\\')
            dp_buf_printf(&b, "\"\\%s\":%d,", c, x);
        else
            dp_buf_printf(&b, "\"%s\":%d,", c, x);
    }
    dp_buf_printf(&b, "\"ab\":256,\"abc\":257,\"bc\":258},\"merges\":%s},", merges);
    dp_buf_printf(&b, "\"normalizer\":null,\"pre_tokenizer\":%s,", pre);
    dp_buf_puts(&b, "\"added_tokens\":[{\"id\":259,\"content\":\"<|e|>\",\"special\":true}]}");
    return b.data;
}

static void test_json_loader(void) {
    const char *bl = "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}";
    const char *forms[] = {"[\"a b\",\"b c\"]", "[[\"a\",\"b\"],[\"b\",\"c\"]]"};
    for (int f = 0; f < 2; f++) {
        char *j = toy_json(forms[f], bl, false);
        dp_tokenizer *t = dp_tokenizer_load_json(j, strlen(j), NULL, 0, "toy.json");
        CHECK_REPORT(t != NULL, "%s", dp_last_error());
        if (t) {
            check_ids(t, "abc", true, IDS(256, 'c')); /* abc is in the vocab but not merged */
            check_ids(t, "x<|e|>", true, IDS('x', 259));
            dp_tokenizer_free(t);
        }
        free(j);
    }
    char *j = toy_json(forms[0], bl, true); /* ignore_merges: "abc" is emitted whole */
    dp_tokenizer *t = dp_tokenizer_load_json(j, strlen(j), NULL, 0, "toy.json");
    check_ids(t, "abc", true, IDS(257));
    dp_tokenizer_free(t);
    free(j);
    j = toy_json(forms[0], "{\"type\":\"Metaspace\"}", false);
    t = dp_tokenizer_load_json(j, strlen(j), NULL, 0, "toy.json");
    CHECK(t == NULL && strstr(dp_last_error(), "\"Metaspace\"") != NULL);
    free(j);
    /* a split regex that is not UTF-8 (a lone lead byte before the closing quote): refused with
     * pcre2's message, never compiled unchecked (fuzz_tokenizer found the read past it) */
    j = toy_json(forms[0],
                 "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":"
                 "{\"Regex\":\"a\xC4\"},\"behavior\":\"Isolated\",\"invert\":false},"
                 "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]}",
                 false);
    t = dp_tokenizer_load_json(j, strlen(j), NULL, 0, "toy.json");
    CHECK_REPORT(t == NULL && strstr(dp_last_error(), "regex") != NULL, "%s",
                 t ? "loaded" : dp_last_error());
    dp_tokenizer_free(t);
    free(j);
}

/* A vocabulary without some byte tokens drops those bytes (as HF does) and counts them. */
static void test_missing_byte(void) {
    static char bytes[256][3];
    const char *tokens[256];
    for (int b = 0; b < 256; b++) bytelevel_char(b, bytes[b]), tokens[b] = bytes[b];
    tokens['q'] = "QQ"; /* id 113 is now "QQ"; byte 'q' has no token */
    tokens['Q'] = "Q";
    const char *merges[] = {"a b"};
    const char *tok2[257];
    memcpy(tok2, tokens, sizeof tokens);
    tok2[256] = "ab";
    dp_tokenizer_arrays a = {.name = "toy",
                             .pre = "gpt2",
                             .tokens = tok2,
                             .n_tokens = 257,
                             .merges = merges,
                             .n_merges = 1,
                             .bos_id = -1,
                             .eos_id = -1,
                             .pad_id = -1};
    dp_tokenizer *t = dp_tokenizer_from_arrays(&a);
    CHECK_REPORT(t != NULL, "%s", dp_last_error());
    if (!t) return;
    check_ids(t, "aqb", false, IDS(256)); /* q dropped, then a b merge (HF's Word) */
    check_ids(t, "q", false, (const int32_t[]){0}, 0);
    CHECK_EQ_INT(2, dp_tokenizer_dropped_bytes(t));
    CHECK_REPORT(strstr(dp_tokenizer_describe(t), "1 bytes without a token") != NULL, "%s",
                 dp_tokenizer_describe(t));
    dp_tokenizer_free(t);
}

/* The fingerprint follows what decides ids: same inputs -> same value; merges, pre-tokenizer or
 * token kinds changed -> another value. */
static void test_fingerprint(void) {
    const char *extra[] = {"ab", "bc", "abc"};
    const char *m1[] = {"a b", "b c", "ab c"}, *m2[] = {"b c", "a b", "ab c"};
    const char *added[] = {"<x>"};
    const int32_t ctl[] = {DP_TOKTYPE_CONTROL}, usr[] = {DP_TOKTYPE_USER_DEFINED};
    dp_tokenizer *a = toy("gpt2", extra, 3, m1, 3, added, ctl, 1);
    dp_tokenizer *b = toy("gpt2", extra, 3, m1, 3, added, ctl, 1);
    dp_tokenizer *c = toy("gpt2", extra, 3, m2, 3, added, ctl, 1);
    dp_tokenizer *d = toy("qwen2", extra, 3, m1, 3, added, ctl, 1);
    dp_tokenizer *e = toy("gpt2", extra, 3, m1, 3, added, usr, 1);
    dp_tokenizer *k = dp_tokenizer_clone(a);
    CHECK(a && b && c && d && e && k);
    if (a && b && c && d && e && k) {
        CHECK(dp_tokenizer_fingerprint(a) == dp_tokenizer_fingerprint(b));
        CHECK(dp_tokenizer_fingerprint(a) == dp_tokenizer_fingerprint(k));
        CHECK(dp_tokenizer_fingerprint(a) != dp_tokenizer_fingerprint(c));
        CHECK(dp_tokenizer_fingerprint(a) != dp_tokenizer_fingerprint(d));
        CHECK(dp_tokenizer_fingerprint(a) != dp_tokenizer_fingerprint(e));
        check_ids(k, "abc<x>", true, IDS(258, 259)); /* a clone encodes like its parent */
    }
    dp_tokenizer_free(k);
    dp_tokenizer_free(a);
    dp_tokenizer_free(b);
    dp_tokenizer_free(c);
    dp_tokenizer_free(d);
    dp_tokenizer_free(e);
}

/* The generic tokenizer.json pipeline (NFC, Digits, Split, ByteLevel with add_prefix_space and
 * its regex, an added token) against HF tokenizers' ids (tests/fixtures/toy-tokenizer*). */
static void test_toy_fixture(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/fixtures/toy-tokenizer.json", DOPPEL_SOURCE_DIR);
    dp_tokenizer *t = dp_tokenizer_load(path);
    CHECK_REPORT(t != NULL, "%s", dp_last_error());
    if (!t) return;
    snprintf(path, sizeof path, "%s/tests/fixtures/toy-tokenizer-ids.jsonl", DOPPEL_SOURCE_DIR);
    int n = 0;
    check_jsonl(t, path, "ids", &n, false); /* add_prefix_space: no plain round trip */
    CHECK_EQ_INT(300, n);
    dp_tokenizer_free(t);
}

int main(void) {
    test_toy_fixture();
    test_fingerprint();
    test_missing_byte();
    test_merge_order();
    test_bytes_and_space();
    test_added_tokens();
    test_stream();
    test_utf8();
    test_errors();
    test_json_loader();
    return check_done();
}
