/* The tool-call parser (whole replies and streamed in pieces, hostile inputs), the <think>
 * splitter, the template rendering of tool results and thoughts, and the tool runner
 * (timeout, output cap, working directory, a file that cannot run). The linear scanner is
 * checked against the old quadratic one (tests/fuzz/tool_scan_ref.h) on hostile replies. */
#include "check.h"
#include "data/base/error.h"
#include "data/chat_format.h"
#include "infer/tools.h"
#include "tests/fuzz/tool_scan_ref.h"

#include <stdint.h>
#include <time.h>
#include <unistd.h>

static const char *names[] = {"LOAD_FILE", "FETCH_URL"};

/* The reply parsed whole; every byte is either text or inside a call's raw text. */
static void parse(const char *reply, size_t n, dp_tool_calls *calls, dp_buf *text) {
    *calls = (dp_tool_calls){0};
    *text = (dp_buf){0};
    CHECK(dp_tool_calls_parse(reply, n, names, 2, calls, text) == 0);
}

typedef struct {
    dp_buf all; /* text and raw calls in order: must equal the input */
    dp_buf text;
    dp_tool_calls calls;
} pieces;

static int p_text(void *ctx, const char *s, size_t n) {
    pieces *p = ctx;
    return dp_buf_append(&p->all, s, n) || dp_buf_append(&p->text, s, n);
}
static int p_call(void *ctx, const dp_tool_call *c) {
    pieces *p = ctx;
    dp_tool_calls *v = &p->calls;
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 4;
        v->v = realloc(v->v, (size_t)v->cap * sizeof *v->v);
    }
    dp_tool_call_copy(&v->v[v->n++], c);
    return dp_buf_puts(&p->all, c->raw);
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

/* Fed in pieces (step 0: random sizes), the scanner finds what the whole parse finds and
 * gives every byte back exactly once. */
static void check_streamed(const char *reply, size_t n, size_t step) {
    dp_tool_calls whole;
    dp_buf whole_text;
    parse(reply, n, &whole, &whole_text);
    pieces p = {0};
    dp_tool_scanner *s = dp_tool_scanner_create(names, 2, (dp_tool_sink){p_text, p_call, &p});
    for (size_t i = 0; i < n;) {
        size_t k = step ? step : 1 + next_rand() % 7;
        if (k > n - i) k = n - i;
        CHECK(dp_tool_scanner_feed(s, reply + i, k) == 0);
        i += k;
    }
    CHECK(dp_tool_scanner_finish(s) == 0);
    dp_tool_scanner_destroy(s);
    CHECK_REPORT(p.all.len == n && (!n || !memcmp(p.all.data, reply, n)),
                 "streamed pieces do not add up to the reply \"%.60s\"", reply);
    CHECK_REPORT(p.calls.n == whole.n, "\"%.60s\" step %zu: %d calls streamed, %d whole", reply,
                 step, p.calls.n, whole.n);
    for (int i = 0; i < p.calls.n && i < whole.n; i++) {
        CHECK_EQ_STR(whole.v[i].raw, p.calls.v[i].raw);
        CHECK_EQ_INT(whole.v[i].n_args, p.calls.v[i].n_args);
    }
    CHECK_REPORT(p.text.len == whole_text.len &&
                     (!p.text.len || !memcmp(p.text.data, whole_text.data, p.text.len)),
                 "\"%.60s\": streamed text differs", reply);
    dp_tool_calls_free(&whole);
    dp_tool_calls_free(&p.calls);
    dp_buf_free(&whole_text);
    dp_buf_free(&p.text);
    dp_buf_free(&p.all);
}

/* expect: the calls as "NAME|arg|arg;NAME|arg" (tool index -1 written as NAME?), text */
static void check_case(const char *reply, const char *expect_calls, const char *expect_text) {
    dp_tool_calls c;
    dp_buf text;
    parse(reply, strlen(reply), &c, &text);
    dp_buf got = {0};
    dp_buf_append(&got, "", 0);
    for (int i = 0; i < c.n; i++) {
        dp_buf_printf(&got, "%s%s%s", i ? ";" : "", c.v[i].name, c.v[i].tool < 0 ? "?" : "");
        for (int a = 0; a < c.v[i].n_args; a++) dp_buf_printf(&got, "|%s", c.v[i].args[a]);
    }
    CHECK_REPORT(!strcmp(got.data, expect_calls), "calls of \"%s\":\n  expected %s\n  got      %s",
                 reply, expect_calls, got.data);
    if (expect_text) CHECK_EQ_STR(expect_text, text.data);
    dp_buf_free(&got);
    dp_buf_free(&text);
    dp_tool_calls_free(&c);
    check_streamed(reply, strlen(reply), 1);
    check_streamed(reply, strlen(reply), 0);
}

static void test_parser(void) {
    /* calls and their arguments */
    check_case("Let me look. [LOAD_FILE notes.txt]", "LOAD_FILE|notes.txt", "Let me look. ");
    check_case("[load_file a.txt]", "load_file|a.txt", "");
    check_case("[Load-File a.txt]", "Load-File|a.txt", "");
    check_case("[LOAD_FILE]", "LOAD_FILE", "");
    check_case("[LOAD_FILE    a   b\tc ]", "LOAD_FILE|a|b|c", "");
    check_case("[LOAD_FILE \"my notes.txt\"]", "LOAD_FILE|my notes.txt", "");
    check_case("[FETCH_URL 'http://x/a b']", "FETCH_URL|http://x/a b", "");
    check_case("[LOAD_FILE \"a\\\"b\" c\\d]", "LOAD_FILE|a\"b|c\\d", "");
    check_case("[LOAD_FILE \"x]y\" 'p]q']", "LOAD_FILE|x]y|p]q", "");
    check_case("[LOAD_FILE a\"b c\"d'e f']", "LOAD_FILE|ab cde f", "");
    check_case("[LOAD_FILE \"\"]", "LOAD_FILE|", "");
    check_case("[LOAD_FILE \"1\\n2\\t3\\q\"]", "LOAD_FILE|1\n2\t3\\q", "");
    check_case("[LOAD_FILE 'it''s']", "LOAD_FILE|its", "");
    check_case("[LOAD_FILE \"é ü 漢字\"]", "LOAD_FILE|é ü 漢字", "");
    /* several in one reply */
    check_case("[LOAD_FILE a] and [FETCH_URL http://x] [LOAD_FILE b]",
               "LOAD_FILE|a;FETCH_URL|http://x;LOAD_FILE|b", " and  ");
    check_case("[LOAD_FILE a][LOAD_FILE b]", "LOAD_FILE|a;LOAD_FILE|b", "");
    check_case("[[LOAD_FILE a]]", "LOAD_FILE|a", "[]");
    check_case("[LOAD_FILE [LOAD_FILE a]", "LOAD_FILE|[LOAD_FILE|a", "");
    check_case("[see [LOAD_FILE a]", "LOAD_FILE|a", "[see ");
    /* unknown tools: capitals are a call (the model is told), other brackets are text */
    check_case("[READ_FILE a]", "READ_FILE?|a", "");
    check_case("[LOAD_FILE2 a]", "LOAD_FILE2?|a", "");
    check_case("[Readme a] [x] [see above] [ ] [] [1] [A]", "",
               "[Readme a] [x] [see above] [ ] [] [1] [A]");
    /* not calls */
    check_case("[LOAD_FILE a](http://example.com)", "", "[LOAD_FILE a](http://example.com)");
    check_case("[LOAD_FILE a\nb]", "", "[LOAD_FILE a\nb]");
    check_case("[LOAD_FILE a\r\n]", "", "[LOAD_FILE a\r\n]");
    check_case("[LOAD_FILE \"a]\nb\"]", "", "[LOAD_FILE \"a]\nb\"]");
    check_case("[LOAD_FILE \"unterminated]", "", "[LOAD_FILE \"unterminated]");
    check_case("[ LOAD_FILE a]", "", "[ LOAD_FILE a]");
    check_case("[LOAD_FILE a", "", "[LOAD_FILE a");
    check_case("ends with [Load_Fi", "", "ends with [Load_Fi");
    check_case("[LOAD_FILE:a]", "", "[LOAD_FILE:a]");
    /* code is never a call */
    check_case("```\n[LOAD_FILE a]\n```\n[LOAD_FILE b]", "LOAD_FILE|b", NULL);
    check_case("~~~python\n[LOAD_FILE a]\n~~~\n", "", NULL);
    check_case("see:\n   ```sh\n[LOAD_FILE a]\n   ```\n", "", NULL);
    check_case("```\n[LOAD_FILE a]", "", NULL); /* never closed: code to the end */
    check_case("````\n```\n[LOAD_FILE a]\n````\n[LOAD_FILE b]", "LOAD_FILE|b", NULL);
    check_case("```\n```x [LOAD_FILE a]\n```\n[LOAD_FILE b]", "LOAD_FILE|b", NULL);
    check_case("~~~\n```\n[LOAD_FILE a]\n~~~\n[LOAD_FILE b]", "LOAD_FILE|b", NULL);
    check_case("    ```\n[LOAD_FILE a]", "LOAD_FILE|a", NULL); /* 4 spaces: not a fence */
    check_case("`[LOAD_FILE a]` then [LOAD_FILE b]", "LOAD_FILE|b", "`[LOAD_FILE a]` then ");
    check_case("``x ` [LOAD_FILE a] `` [LOAD_FILE b]", "LOAD_FILE|b", NULL);
    check_case("`oops [LOAD_FILE a]\n[LOAD_FILE b]", "LOAD_FILE|b", NULL);
    check_case("a `x` [LOAD_FILE a] `y`", "LOAD_FILE|a", NULL);
    check_case("text ``` [LOAD_FILE a]", "", NULL); /* mid-line run: inline code */
    check_case("```\ncode\n```\n\n```\n[LOAD_FILE a]\n```", "", NULL);

    /* hostile: limits, NUL, floods */
    char args[1024] = "[LOAD_FILE";
    for (int i = 0; i < DP_TOOL_MAX_ARGS; i++) strcat(args, " a");
    strcat(args, "]");
    dp_tool_calls c;
    dp_buf t;
    parse(args, strlen(args), &c, &t);
    CHECK_EQ_INT(1, c.n);
    if (c.n) CHECK_EQ_INT(DP_TOOL_MAX_ARGS, c.v[0].n_args);
    dp_tool_calls_free(&c);
    dp_buf_free(&t);
    memcpy(args + strlen(args) - 1, " b]", 4); /* one too many: text */
    parse(args, strlen(args), &c, &t);
    CHECK_EQ_INT(0, c.n);
    CHECK_EQ_STR(args, t.data);
    dp_tool_calls_free(&c);
    dp_buf_free(&t);

    size_t big = DP_TOOL_MAX_CALL + 10;
    char *long_call = malloc(big + 1);
    memcpy(long_call, "[LOAD_FILE ", 11);
    memset(long_call + 11, 'x', big - 12);
    long_call[big - 1] = ']';
    long_call[big] = 0;
    parse(long_call, big, &c, &t);
    CHECK_EQ_INT(0, c.n);
    CHECK(t.len == big);
    dp_tool_calls_free(&c);
    dp_buf_free(&t);
    /* just under the limit is a call */
    size_t fit = DP_TOOL_MAX_CALL;
    memset(long_call + 11, 'x', fit - 12);
    long_call[fit - 1] = ']';
    parse(long_call, fit, &c, &t);
    CHECK_EQ_INT(1, c.n);
    dp_tool_calls_free(&c);
    dp_buf_free(&t);
    free(long_call);

    const char with_nul[] = "[LOAD_FILE a\0b] [LOAD_FILE c]";
    parse(with_nul, sizeof with_nul - 1, &c, &t);
    CHECK_EQ_INT(1, c.n);
    if (c.n) CHECK_EQ_STR("c", c.v[0].args[0]);
    CHECK(t.len == sizeof with_nul - 1 - strlen("[LOAD_FILE c]"));
    dp_tool_calls_free(&c);
    dp_buf_free(&t);
    check_streamed(with_nul, sizeof with_nul - 1, 1);

    /* floods of brackets, quotes and backticks finish quickly and give every byte back */
    const char *units[] = {"[", "[A", "[LOAD_FILE \"", "`", "```\n", "]", "[LOAD_FILE '[A \"]"};
    for (size_t u = 0; u < sizeof units / sizeof *units; u++) {
        size_t ul = strlen(units[u]), reps = 200000 / ul;
        char *flood = malloc(reps * ul + 1);
        for (size_t i = 0; i < reps; i++) memcpy(flood + i * ul, units[u], ul);
        flood[reps * ul] = 0;
        clock_t t0 = clock();
        parse(flood, reps * ul, &c, &t);
        double sec = (double)(clock() - t0) / CLOCKS_PER_SEC;
        CHECK_REPORT(sec < 5, "flood of \"%s\": %.1f s", units[u], sec);
        CHECK(c.n + t.len > 0);
        dp_tool_calls_free(&c);
        dp_buf_free(&t);
        check_streamed(flood, reps * ul, 4096);
        free(flood);
    }
    /* random bytes from a small alphabet of the grammar's characters */
    const char alpha[] = "[]\"'\\ `~\n(LOAD_FILEa_x";
    char rnd[300];
    for (int k = 0; k < 2000; k++) {
        size_t n = next_rand() % sizeof rnd;
        for (size_t i = 0; i < n; i++) rnd[i] = alpha[next_rand() % (sizeof alpha - 1)];
        check_streamed(rnd, n, 0);
        check_streamed(rnd, n, 1);
    }
}

/* ---- the scanner against the reference (the old quadratic scanner), event for event */
static const char *names_b[] = {"A", "AB", "load-file", "LOAD_FILES", "x"};
static const struct {
    const char *const *v;
    int n;
} name_sets[] = {{names, 2}, {names_b, 5}, {NULL, 0}};
static int oracle_cases;

/* Cut the same way (step 0: random sizes, else step bytes), both scanners must hold back the
 * same bytes after every feed and give out the same events: text pieces, calls, in order. */
static void check_oracle_cut(const char *reply, size_t n, size_t step, int set) {
    dp_buf ref_log = {0}, new_log = {0};
    ref_scanner *r = ref_scanner_create(name_sets[set].v, name_sets[set].n, ref_log_sink(&ref_log));
    dp_tool_scanner *s =
        dp_tool_scanner_create(name_sets[set].v, name_sets[set].n, ref_log_sink(&new_log));
    bool held_ok = true;
    for (size_t i = 0; i < n;) {
        size_t k = step ? step : 1 + next_rand() % 9;
        if (k > n - i) k = n - i;
        CHECK(ref_scanner_feed(r, reply + i, k) == 0);
        CHECK(dp_tool_scanner_feed(s, reply + i, k) == 0);
        i += k;
        if (held_ok && ref_scanner_held(r) != dp_tool_scanner_held(s)) {
            CHECK_REPORT(false,
                         "\"%.60s\" (%zu bytes) step %zu: after %zu bytes %zu held, the "
                         "reference holds %zu",
                         reply, n, step, i, dp_tool_scanner_held(s), ref_scanner_held(r));
            held_ok = false;
        }
    }
    CHECK(ref_scanner_finish(r) == 0);
    CHECK(dp_tool_scanner_finish(s) == 0);
    ref_scanner_destroy(r);
    dp_tool_scanner_destroy(s);
    size_t at = 0;
    while (at < ref_log.len && at < new_log.len && ref_log.data[at] == new_log.data[at]) at++;
    CHECK_REPORT(at == ref_log.len && at == new_log.len,
                 "\"%.60s\" (%zu bytes, names %d) step %zu: the events differ from the "
                 "reference's at byte %zu of %zu:\n  reference %.80s\n  scanner   %.80s",
                 reply, n, set, step, at, ref_log.len, ref_log.data ? ref_log.data + at : "",
                 new_log.data ? new_log.data + at : "");
    dp_buf_free(&ref_log);
    dp_buf_free(&new_log);
}

static void check_oracle(const char *reply, size_t n) {
    oracle_cases++;
    bool long_one = n > 2000; /* the reference is slow on them: fewer ways */
    for (int set = 0; set < (long_one ? 1 : 3); set++) {
        check_oracle_cut(reply, n, n ? n : 1, set); /* whole */
        if (!long_one) check_oracle_cut(reply, n, 1, set);
        check_oracle_cut(reply, n, 0, set);
    }
}
static void check_oracle_str(const char *reply) {
    check_oracle(reply, strlen(reply));
}

/* pre + fill bytes of c + post */
static char *filled(const char *pre, size_t fill, char c, const char *post, size_t *n) {
    size_t a = strlen(pre), b = strlen(post);
    char *t = malloc(a + fill + b + 1);
    memcpy(t, pre, a);
    memset(t + a, c, fill);
    memcpy(t + a + fill, post, b + 1);
    *n = a + fill + b;
    return t;
}

/* unit repeated to n bytes (cut inside a unit), then tail */
static char *repeated(const char *unit, size_t n, const char *tail, size_t *len) {
    size_t ul = strlen(unit), tl = strlen(tail);
    char *t = malloc(n + tl + 1);
    for (size_t i = 0; i < n; i++) t[i] = unit[i % ul];
    memcpy(t + n, tail, tl + 1);
    *len = n + tl;
    return t;
}

static void test_oracle(void) {
    const char *hand[] = {
        /* nested brackets */
        "[LOAD_FILE [LOAD_FILE [LOAD_FILE a]",
        "[AA [BB [CC x] y] z]",
        "[AA [BB [CC x] y\n z]",
        "[LOAD_FILE [LOAD_FILE a]]]",
        "[[[[LOAD_FILE a]]]]",
        "[AA [BB \"[CC x]\" y] [DD]",
        "[AA \"[BB 'c]' d]\" e]",
        "[AA '[BB \"c]' d] e\"]",
        "[AA [BB] [CC] [DD]\n[EE]",
        /* quotes that straddle newlines */
        "[LOAD_FILE \"a\n[LOAD_FILE b]\"]",
        "[XX 'a\n' [YY 'b]'\n]",
        "[XX \"a\\\n\" [YY b]",
        "[XX \"a\\\"\n[YY \"c\\\" d\"]",
        "[XX 'a\r[YY b]'",
        "[XX \"[YY \" z]\n\"]",
        /* fences and backticks inside failed calls */
        "[LOAD_FILE a\n```\n[LOAD_FILE b]\n```\n[LOAD_FILE c]",
        "[LOAD_FILE `x` [LOAD_FILE y]` z",
        "[LOAD_FILE \"``\" [BB c]\n`[DD e]`",
        "[AA \"\n```\n[BB c]\n```\n\" [DD e]",
        "[AA `[BB c]`\n` [DD e]",
        "[AA\n    ~~~\n[BB c]\n~~~\n[DD]",
        "[AA ``` [BB c]\n```\n[DD e]\n```\n[FF g]",
        "``[AA `` [BB c]`` [DD e]\n",
        /* tool-name prefixes and case */
        "[LOAD_FIL",
        "[LOAD_FILEX a]",
        "[load_filE a]",
        "[Load_fetch",
        "[FETCH-URL x]",
        "[lOAD [LOAD_FILE a]",
        "[load-files a] [a b] [Ab c] [aB] [XX] [x y]",
        "[LOAD_FILES",
        "[load_file",
        "[A1_ b] [1A b] [_A b] [A-B c] [a-b c]",
        /* links */
        "[x](y)",
        "[LOAD_FILE a](b)",
        "[LOAD_FILE [LOAD_FILE a](b)]",
        "[AA [BB c](d) e]",
        "[AA [BB c] (d)]",
        "[AA [BB c]](d)",
        "[AA](",
        "[AA b]",
        /* the end of the reply in each state */
        "[AA",
        "[AA ",
        "[AA b",
        "[AA \"b",
        "[AA \"b\\",
        "[AA 'b",
        "[AA b]",
        "[AA \"]\"]",
        "[AA \\]",
    };
    for (size_t i = 0; i < sizeof hand / sizeof *hand; i++) check_oracle_str(hand[i]);
    const char with_nul[] = "[LOAD_FILE a\0b] [LOAD_FILE [XX \"\0\" c]";
    check_oracle(with_nul, sizeof with_nul - 1);

    /* the length limit: calls of 4095, 4096 and 4097 bytes, alone and with a bracket inside
     * that fits when the outer call does not, in and out of quotes */
    char *t;
    size_t n;
    for (size_t len = DP_TOOL_MAX_CALL - 2; len <= DP_TOOL_MAX_CALL + 2; len++) {
        const char *pre[] = {"[LOAD_FILE ", "[AA \"",       "[AA [BB ",
                             "[AA [BB \"",  "[AA \"[BB \"", "ab[AA 'x' [BB "};
        const char *post[] = {"]", "\"]", "]", "\"]", "\"]", "]x"};
        for (size_t k = 0; k < sizeof pre / sizeof *pre; k++)
            for (int in_fill = 0; in_fill < 2; in_fill++) {
                size_t fill = len - strlen(pre[k]) - strlen(post[k]) + (k == 5 ? 3 : 0);
                t = filled(pre[k], fill, in_fill ? '[' : 'x', post[k], &n);
                check_oracle(t, n);
                free(t);
            }
        /* a call ending exactly at the limit, a `(` or nothing after it */
        t = filled("[AA [BB ", len - 7, 'y', "](", &n);
        check_oracle(t, n);
        free(t);
    }
    /* more than DP_TOOL_MAX_ARGS arguments outside, as many or fewer inside */
    for (int extra = -2; extra <= 2; extra++) {
        dp_buf many = {0};
        dp_buf_puts(&many, "[AA [BB [CC");
        for (int i = 0; i < DP_TOOL_MAX_ARGS + extra; i++)
            dp_buf_puts(&many, i % 3 ? " a" : " 'b c'd");
        dp_buf_puts(&many, "]");
        check_oracle(many.data, many.len);
        dp_buf_puts(&many, " \"x y\"'z' [DD]");
        check_oracle(many.data, many.len);
        dp_buf_free(&many);
    }

    /* floods, 4 KB and 12 KB: nested calls that fail at the limit, a newline or the end */
    const char *units[] = {"[LOAD_FILE ",    "[LOAD_FILE \"", "[AA \"[BB '", "[AA",
                           "[AA ]",          "[AA \\\"",      "[AA `",       "[AA [BB] ",
                           "[LOAD_FILE x](", "[AA \"\\",      "[AA 'b\" "};
    const char *tails[] = {"", "]", "\n", "\"]", "x]"};
    for (size_t u = 0; u < sizeof units / sizeof *units; u++)
        for (size_t k = 0; k < sizeof tails / sizeof *tails; k++)
            for (size_t len = 4096; len <= 12288; len += 8192) {
                t = repeated(units[u], len, tails[k], &n);
                check_oracle(t, n);
                free(t);
            }

    /* random replies from the grammar's characters, short and past the limit */
    const char alpha[] = "[[[]]\"\"''\\ \t`~\n(LOAD_FILEa_x-AB";
    for (int k = 0; k < 3000; k++) {
        size_t len = k % 100 == 0 ? 4000 + next_rand() % 5000 : next_rand() % 400;
        bool no_newlines = k % 3 == 0; /* so that calls run long */
        char *r = malloc(len + 1);
        for (size_t i = 0; i < len; i++) {
            do r[i] = alpha[next_rand() % (sizeof alpha - 1)];
            while (no_newlines && r[i] == '\n');
        }
        check_oracle(r, len);
        free(r);
    }
    printf("oracle: %d replies compared with the reference, whole and in random pieces (and "
           "byte by byte, with 3 name sets, up to 2000 bytes)\n",
           oracle_cases);
}

/* What is held back while a call may still be forming, and when it comes out. */
static void test_held_back(void) {
    pieces p = {0};
    dp_tool_scanner *s = dp_tool_scanner_create(names, 2, (dp_tool_sink){p_text, p_call, &p});
    dp_tool_scanner_feed(s, "Hi [LOAD_FILE no", 16);
    CHECK_EQ_INT(3, p.text.len);
    CHECK_EQ_INT(13, dp_tool_scanner_held(s));
    dp_tool_scanner_feed(s, "tes.txt]", 8);
    CHECK_EQ_INT(0, p.calls.n); /* a `(` could still make it a link */
    CHECK_EQ_INT(21, dp_tool_scanner_held(s));
    dp_tool_scanner_feed(s, " ok", 3);
    CHECK_EQ_INT(1, p.calls.n);
    CHECK_EQ_INT(0, dp_tool_scanner_held(s));
    CHECK_EQ_STR("Hi  ok", p.text.data);
    /* a bracket that is not a call is given out as soon as that is known */
    dp_tool_scanner_feed(s, " [see", 5);
    CHECK_EQ_INT(0, dp_tool_scanner_held(s));
    /* the end of the reply: a call just closed is a call */
    dp_tool_scanner_feed(s, " [FETCH_URL x]", 14);
    CHECK_EQ_INT(1, p.calls.n);
    dp_tool_scanner_finish(s);
    CHECK_EQ_INT(2, p.calls.n);
    /* the next reply starts fresh: the previous one's open code does not carry over */
    dp_tool_scanner_feed(s, "```\n", 4);
    dp_tool_scanner_finish(s);
    dp_tool_scanner_feed(s, "[LOAD_FILE z]", 13);
    dp_tool_scanner_finish(s);
    CHECK_EQ_INT(3, p.calls.n);
    dp_tool_scanner_destroy(s);
    dp_tool_calls_free(&p.calls);
    dp_buf_free(&p.text);
    dp_buf_free(&p.all);
}

/* The splitter, whole and byte by byte. */
static void check_think(const char *reply, const char *thought, const char *answer) {
    for (int step = 0; step < 2; step++) {
        dp_think_splitter t = {0};
        dp_buf th = {0}, an = {0};
        size_t n = strlen(reply);
        for (size_t i = 0; i < n;) {
            size_t k = step ? 1 : n;
            CHECK(dp_think_feed(&t, reply + i, k, &th, &an) == 0);
            i += k;
        }
        CHECK(dp_think_finish(&t, &th, &an) == 0);
        dp_buf_append(&th, "", 0);
        dp_buf_append(&an, "", 0);
        CHECK_EQ_STR(thought, th.data);
        CHECK_EQ_STR(answer, an.data);
        dp_think_free(&t);
        dp_buf_free(&th);
        dp_buf_free(&an);
    }
}

static void test_think(void) {
    check_think("<think>\nI plan.\n</think>\n\nHello", "I plan.\n", "Hello");
    check_think("<think></think>Hi", "", "Hi");
    check_think("\n <think>a</think>\n\n\nb\n\nc", "a", "b\n\nc");
    check_think("Hello <think>x</think>", "", "Hello <think>x</think>");
    check_think("<think>unfinished", "unfinished", "");
    check_think("<thi", "", "<thi");
    check_think("<think>a </thin b</think>c", "a </thin b", "c");
    check_think("", "", "");
    check_think("  ", "", "  ");
}

/* The rendered conversation equals what Qwen3's own chat_template renders (jinja2, from
 * ../shared/tokenizers/qwen3/tokenizer_config.json, run by hand) for: user, an assistant turn
 * with a thought and two calls, two "tool" messages, an assistant turn with a thought, user. */
static void test_render_like_qwen3(void) {
    const char *expected =
        "<|im_start|>user\nread a.txt and b.txt<|im_end|>\n<|im_start|>assistant\n[LOAD_FILE "
        "a.txt] [LOAD_FILE b.txt]<|im_end|>\n<|im_start|>user\n<tool_response>\nA\n</"
        "tool_response>\n<tool_response>\nB\n</tool_response><|im_end|>\n<|im_start|>"
        "assistant\nBoth say hi.<|im_end|>\n<|im_start|>user\nthanks<|im_end|>\n<|im_start|>"
        "assistant\n";
    const char *replies[] = {"<think>\nI need both files.\n</think>\n\n[LOAD_FILE a.txt] "
                             "[LOAD_FILE b.txt]",
                             "<think>\nok\n</think>\n\nBoth say hi."};
    dp_buf kept[2] = {{0}, {0}};
    for (int i = 0; i < 2; i++) {
        dp_think_splitter t = {0};
        dp_buf th = {0};
        dp_think_feed(&t, replies[i], strlen(replies[i]), &th, &kept[i]);
        dp_think_finish(&t, &th, &kept[i]);
        dp_think_free(&t);
        dp_buf_free(&th);
    }
    char *tpl = NULL;
    size_t tl;
    CHECK(dp_read_file(DOPPEL_SOURCE_DIR "/../shared/tokenizers/qwen3/tokenizer_config.json", &tpl,
                       &tl) == 0);
    dp_chat_tool_style st = dp_chat_tool_style_for(tpl);
    CHECK_EQ_STR("user", st.role);
    const char *results[] = {"A", "B"};
    dp_buf tool_msg = {0};
    CHECK(dp_chat_tool_message(&st, results, 2, &tool_msg) == 0);
    dp_chat_msg m[] = {{DP_ROLE_USER, "read a.txt and b.txt", 20},
                       {DP_ROLE_ASSISTANT, kept[0].data, kept[0].len},
                       {DP_ROLE_USER, tool_msg.data, tool_msg.len},
                       {DP_ROLE_ASSISTANT, kept[1].data, kept[1].len},
                       {DP_ROLE_USER, "thanks", 6}};
    dp_buf out = {0};
    CHECK(dp_chat_render_text(DP_CHAT_CHATML, m, 5, true, &out) == 0);
    CHECK_EQ_STR(expected, out.data);
    /* a plain ChatML template (SmolLM2's) writes any role as given: one `tool` message; a
     * template that is neither ChatML nor knows a tool turn (Llama 3.0's) gets a system one */
    dp_chat_tool_style plain = dp_chat_tool_style_for(
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
        "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}");
    CHECK_EQ_STR("tool", plain.role);
    CHECK_EQ_STR("system", dp_chat_tool_style_for("{{ '<|start_header_id|>' + message['role'] "
                                                  "+ '<|end_header_id|>' }}")
                               .role);
    dp_buf pm = {0};
    CHECK(dp_chat_tool_message(&plain, results, 2, &pm) == 0);
    CHECK_EQ_STR("A\n\nB", pm.data);
    free(tpl);
    dp_buf_free(&pm);
    dp_buf_free(&out);
    dp_buf_free(&tool_msg);
    dp_buf_free(&kept[0]);
    dp_buf_free(&kept[1]);
}

static void test_run(void) {
    dp_tool_limits lim = dp_tool_limits_default();
    dp_buf out = {0};
    dp_tool_status st;
    char *echo[] = {"/bin/echo", "a b", "c", NULL};
    CHECK(dp_tool_run(echo, &lim, &out, &st) == 0);
    CHECK(st.started && st.exit_code == 0 && !st.timed_out && !st.truncated);
    dp_buf_append(&out, "", 0);
    CHECK_EQ_STR("a b c\n", out.data);

    /* stderr comes too; the exit status is reported; no shell expands anything */
    out.len = 0;
    char *sh[] = {"/bin/sh", "-c", "echo out; echo err >&2; echo $0; exit 3", "$HOME", NULL};
    CHECK(dp_tool_run(sh, &lim, &out, &st) == 0);
    dp_buf_append(&out, "", 0);
    CHECK_EQ_INT(3, st.exit_code);
    CHECK_EQ_STR("out\nerr\n$HOME\n", out.data);

    /* the working directory */
    out.len = 0;
    lim.cwd = "/tmp";
    char *pwd[] = {"/bin/pwd", NULL};
    CHECK(dp_tool_run(pwd, &lim, &out, &st) == 0);
    dp_buf_append(&out, "", 0);
    CHECK_EQ_STR("/tmp\n", out.data);
    lim.cwd = NULL;

    /* a timeout kills the tool and what it started (its process group) */
    out.len = 0;
    lim.timeout_s = 0.5;
    char *sleepy[] = {"/bin/sh", "-c", "echo started; sleep 30 & sleep 30", NULL};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(dp_tool_run(sleepy, &lim, &out, &st) == 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    CHECK(st.timed_out);
    CHECK_REPORT(sec < 5, "the timed-out tool took %.1f s to stop", sec);
    dp_buf_append(&out, "", 0);
    CHECK_EQ_STR("started\n", out.data);
    /* a tool that closes its output but keeps running still times out */
    out.len = 0;
    char *closer[] = {"/bin/sh", "-c", "exec >/dev/null 2>&1; sleep 30", NULL};
    CHECK(dp_tool_run(closer, &lim, &out, &st) == 0);
    CHECK(st.timed_out);

    /* the output cap stops an endless writer */
    out.len = 0;
    lim.timeout_s = 10;
    lim.output_cap = 1000;
    char *yes[] = {"/usr/bin/yes", "y", NULL};
    CHECK(dp_tool_run(yes, &lim, &out, &st) == 0);
    CHECK(st.truncated && !st.timed_out);
    CHECK_EQ_INT(1000, out.len);

    /* a file that cannot run is a status with the reason, not an error */
    out.len = 0;
    char *missing[] = {"/nonexistent/tool", NULL};
    CHECK(dp_tool_run(missing, &lim, &out, &st) == 0);
    CHECK(!st.started);
    dp_buf_append(&out, "", 0);
    CHECK_REPORT(strstr(out.data, "No such file") != NULL, "got \"%s\"", out.data);
    dp_buf_free(&out);
}

int main(void) {
    test_parser();
    test_oracle();
    test_held_back();
    test_think();
    test_render_like_qwen3();
    test_run();
    return check_done();
}
