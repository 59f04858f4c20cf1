/* doppel prep, unit level: the DCE readers (CSV edge cases, JSON, dates), the timeline (order,
 * DST, newest-first, unordered), persona resolution, anonymization, multi mode, the split, strict
 * errors with line numbers and the dataset reader/writer. Expected outputs are written by hand
 * from REFERENCE.md §2. */
#include "check.h"
#include "data/chunk.h"
#include "data/dataset.h"
#include "data/dce.h"
#include "data/base/error.h"

#include <stdint.h>
#include <unistd.h>

#define HDR "AuthorID,Author,Date,Content,Attachments,Reactions\n"

static char tmpdir[256];
static int file_no;

static const char *write_tmp(const char *ext, const char *data, size_t len) {
    static char paths[64][300];
    char *p = paths[file_no % 64];
    snprintf(p, 300, "%s/doppel-test-prep-%d-%d.%s", tmpdir, (int)getpid(), file_no++, ext);
    FILE *f = fopen(p, "wb");
    fwrite(data, 1, len, f);
    fclose(f);
    return p;
}

static const char *csv_file(const char *text) {
    return write_tmp("csv", text, strlen(text));
}

typedef struct {
    dp_buf train, val;
    int resets;
} collect;

static int collect_sink(void *ctx, const dp_conversation *c, bool val) {
    collect *k = ctx;
    dp_conversation bare = *c;
    bare.extra = NULL; /* compare the messages only */
    return dp_conversation_to_json(&bare, val ? &k->val : &k->train);
}

static int collect_reset(void *ctx) {
    collect *k = ctx;
    k->train.len = k->val.len = 0;
    if (k->train.data) k->train.data[0] = 0;
    if (k->val.data) k->val.data[0] = 0;
    k->resets++;
    return 0;
}

/* Runs prep over files; returns the train JSONL ("" when empty), or NULL on error. */
static char result[1 << 18];
static dp_prep_stats last_stats;
static char last_val[1 << 18];
static const char *run_opts(const dp_prep_opts *o, const char *const *paths, int n) {
    dp_prep *p = dp_prep_create(o);
    collect k = {0};
    int rc = dp_prep_run(p, paths, n, collect_sink, collect_reset, &k);
    last_stats = *dp_prep_get_stats(p);
    last_stats.order = NULL;
    dp_prep_destroy(p);
    snprintf(result, sizeof result, "%s", k.train.data ? k.train.data : "");
    snprintf(last_val, sizeof last_val, "%s", k.val.data ? k.val.data : "");
    dp_buf_free(&k.train);
    dp_buf_free(&k.val);
    return rc ? NULL : result;
}

static const char *run1(const char *persona, const char *path) {
    dp_prep_opts o;
    dp_prep_opts_default(&o);
    o.persona = persona;
    o.val_fraction = 0;
    return run_opts(&o, &path, 1);
}

#define U(s)        "{\"role\":\"user\",\"content\":\"" s "\"}"
#define A(s)        "{\"role\":\"assistant\",\"content\":\"" s "\"}"
#define S(s)        "{\"role\":\"system\",\"content\":\"" s "\"}"
#define CONV2(u, a) "{\"messages\":[" U(u) "," A(a) "]}\n"

static void test_csv_edge_cases(void) {
    /* BOM, CRLF records, quoted CRLF/LF newlines, doubled quotes, commas, a blank line,
     * the last record without a newline */
    const char *text =
        "\xEF\xBB\xBF"
        "AuthorID,Author,Date,Content,Attachments,Reactions\r\n"
        "\"1\",\"ann\",\"2025-01-01T10:00:00.0000000+00:00\",\"a, \"\"quoted\"\"\r\n"
        "second line\",\"https://x/a.png,https://x/b.png\",\"👍 (2),❤️ (1)\"\r\n"
        "\r\n"
        "\"2\",\"Bot#0001\",\"2025-01-01T10:00:01.0000000+00:00\",\"\",\"\",\"\"\r\n"
        "\"3\",\"c\",\"2025-01-01T10:00:02.5000000+00:00\",\"x\ny\",\"\",\"\"";
    dp_dce_reader *r = dp_dce_open_mem("edge.csv", text, strlen(text));
    CHECK(r != NULL);
    if (!r) return;
    dp_dce_msg m;
    CHECK_EQ_INT(DP_DCE_MSG, dp_dce_next(r, &m));
    CHECK_EQ_INT(1, (long long)m.author_id);
    CHECK_EQ_STR("ann", m.author);
    CHECK_EQ_STR("a, \"quoted\"\r\nsecond line", m.content);
    CHECK_EQ_INT(2, m.line);
    CHECK(!m.system);
    CHECK_EQ_INT(DP_DCE_MSG, dp_dce_next(r, &m));
    CHECK_EQ_STR("Bot#0001", m.author);
    CHECK_EQ_STR("", m.content);
    CHECK_EQ_INT(5, m.line);
    CHECK_EQ_INT(DP_DCE_MSG, dp_dce_next(r, &m));
    CHECK_EQ_STR("x\ny", m.content);
    CHECK_EQ_INT(6, m.line);
    CHECK_EQ_INT(25000000, m.t % 100000000); /* .5 s past a whole 10 s: 100 ns ticks */
    CHECK_EQ_INT(DP_DCE_END, dp_dce_next(r, &m));
    dp_dce_close(r);

    /* through the rule: CRLF inside content becomes LF, content is trimmed */
    const char *path =
        csv_file(HDR "\"1\",\"ann\",\"2025-01-01T10:00:00.0000000+00:00\",\" hi\r\n"
                     "there \",\"\",\"\"\n"
                     "\"9\",\"me\",\"2025-01-01T10:00:05.0000000+00:00\",\"\tyo\u00a0"
                     "\",\"\",\"\"\n");
    CHECK_EQ_STR(CONV2("[ann]: hi\\nthere", "yo"), run1("me", path));
}

static void test_dates(void) {
    int64_t a, b, c;
    CHECK_EQ_INT(0, dp_dce_parse_date("2025-10-28T14:15:37.8280000-03:00", 33, &a));
    CHECK_EQ_INT(0, dp_dce_parse_date("2025-10-28T14:15:37.828-03:00", 29, &b));
    CHECK_EQ_INT(0, dp_dce_parse_date("2025-10-28T17:15:37.828Z", 24, &c));
    CHECK_EQ_INT(a, b);
    CHECK_EQ_INT(a, c);
    /* 2025-10-28T17:15:37.828Z = 1761671737.828 s since the epoch (date -u -d ... +%s) */
    CHECK_EQ_INT(17616717378280000LL, a);
    char iso[48];
    dp_dce_format_instant(a, iso);
    CHECK_EQ_STR("2025-10-28T17:15:37.8280000Z", iso);
    /* DST: the same instant written in two offsets */
    CHECK_EQ_INT(0, dp_dce_parse_date("2025-11-02T01:30:00.0000000-02:00", 33, &a));
    CHECK_EQ_INT(0, dp_dce_parse_date("2025-11-02T00:30:00.0000000-03:00", 33, &b));
    CHECK_EQ_INT(a, b);
    const char *bad[] = {"10/6/2023 12:37 AM",
                         "14-May-19 09:48 PM",
                         "2025-10-28T14:15:37.8280000",
                         "2025-02-29T10:00:00.0000000+00:00",
                         "2025-10-28T24:00:00+00:00",
                         "2025-10-28T10:00:00.12345678+00:00",
                         "2025-10-28T10:00:00.+00:00",
                         "2025-10-28T10:00:00+0300",
                         NULL};
    for (int i = 0; bad[i]; i++)
        CHECK_REPORT(dp_dce_parse_date(bad[i], strlen(bad[i]), &a) == -1, "accepted %s", bad[i]);
    CHECK_EQ_INT(0, dp_dce_parse_date("2024-02-29T10:00:00+00:00", 25, &a));

    /* a DST change mid-file: wall clocks go back an hour, instants go on (90 s later):
     * one session, in file order; a wall-clock sort would put "after" first */
    const char *path =
        csv_file(HDR "\"1\",\"ann\",\"2025-11-02T01:59:00.0000000-02:00\",\"before\",\"\",\"\"\n"
                     "\"1\",\"ann\",\"2025-11-02T01:00:30.0000000-03:00\",\"after\",\"\",\"\"\n"
                     "\"9\",\"me\",\"2025-11-02T01:01:00.0000000-03:00\",\"reply\",\"\",\"\"\n");
    CHECK_EQ_STR(CONV2("[ann]: before\\n[ann]: after", "reply"), run1("me", path));
    CHECK_EQ_INT(1, last_stats.sessions);
}

/* A small chat in time order; its expected output under persona "me" written by hand. */
static const char *const chat_rows[] = {
    "\"1\",\"ann\",\"2025-03-01T10:00:00.0000000+00:00\",\"hi all\",\"\",\"\"\n",
    "\"2\",\"bob\",\"2025-03-01T10:01:00.0000000+00:00\",\"hey @ann\",\"\",\"\"\n",
    "\"9\",\"me\",\"2025-03-01T10:02:00.0000000+00:00\",\"yo @bob\",\"\",\"\"\n",
    "\"9\",\"me\",\"2025-03-01T10:02:30.0000000+00:00\",\"what's up\",\"\",\"\"\n",
    "\"1\",\"ann\",\"2025-03-01T10:03:00.0000000+00:00\",\"Pinned a message.\",\"\",\"\"\n",
    "\"1\",\"ann\",\"2025-03-01T10:04:00.0000000+00:00\",\"   \",\"\",\"\"\n",
    "\"2\",\"bob\",\"2025-03-01T10:05:00.0000000+00:00\",\"not much\",\"\",\"\"\n",
    "\"9\",\"me\",\"2025-03-01T10:06:00.0000000+00:00\",\"cool\",\"\",\"\"\n",
    /* 10:06 -> 10:11 is exactly 300 s: a new session */
    "\"2\",\"bob\",\"2025-03-01T10:11:00.0000000+00:00\",\"anyone?\",\"\",\"\"\n",
    "\"9\",\"me\",\"2025-03-01T10:20:00.0000000+00:00\",\"late\",\"\",\"\"\n",
    "\"1\",\"ann\",\"2025-03-01T10:21:00.0000000+00:00\",\"ok\",\"\",\"\"\n",
    "\"9\",\"me\",\"2025-03-01T10:21:30.0000000+00:00\",\"sure\",\"\",\"\"\n", NULL};
static const char chat_expected[] = CONV2("[ann]: hi all\\n[bob]: hey @ann", "yo @bob\\nwhat's up")
    CONV2("[bob]: not much", "cool") CONV2("[ann]: ok", "sure");

static const char *chat_csv(bool reverse, const int *perm) {
    static char text[8192];
    int n = 0;
    while (chat_rows[n]) n++;
    strcpy(text, HDR);
    for (int i = 0; i < n; i++) strcat(text, chat_rows[perm ? perm[i] : reverse ? n - 1 - i : i]);
    return csv_file(text);
}

static void test_order(void) {
    CHECK_EQ_STR(chat_expected, run1("me", chat_csv(false, NULL)));
    CHECK_EQ_INT(12, last_stats.rows);
    CHECK_EQ_INT(1, last_stats.dropped_empty);
    CHECK_EQ_INT(1, last_stats.dropped_system);
    CHECK_EQ_INT(3, last_stats.sessions);
    CHECK_EQ_INT(1, last_stats.contexts_no_reply);       /* "anyone?" */
    CHECK_EQ_INT(1, last_stats.persona_runs_no_context); /* "late" */
    CHECK_EQ_INT(4, last_stats.persona_messages);        /* yo, what's up, cool, sure */
    CHECK_EQ_INT(0, last_stats.restarts);
    /* newest first (DCE --reverse): the same dataset, streamed backwards */
    CHECK_EQ_STR(chat_expected, run1("me", chat_csv(true, NULL)));
    CHECK_EQ_INT(0, last_stats.restarts);
    /* no order at all: sorted in memory after a restart */
    static const int perm[] = {3, 0, 11, 5, 1, 7, 2, 10, 4, 8, 6, 9};
    CHECK_EQ_STR(chat_expected, run1("me", chat_csv(false, perm)));
    CHECK_EQ_INT(1, last_stats.restarts);
    /* forced sort: the same */
    dp_prep_opts o;
    dp_prep_opts_default(&o);
    o.persona = "me";
    o.val_fraction = 0;
    o.force_sort = true;
    const char *path = chat_csv(false, NULL);
    CHECK_EQ_STR(chat_expected, run_opts(&o, &path, 1));
    /* two files (partitions) merge into one timeline; the first half of the rows in the second
     * file, so the merged stream is unordered */
    char a[4096] = HDR, b[4096] = HDR;
    for (int i = 0; chat_rows[i]; i++) strcat(i < 6 ? b : a, chat_rows[i]);
    const char *two[2] = {csv_file(a), csv_file(b)};
    o.force_sort = false;
    CHECK_EQ_STR(chat_expected, run_opts(&o, two, 2));
    CHECK_EQ_INT(2, last_stats.files);
    /* equal instants keep file order (stable) */
    path = csv_file(HDR "\"1\",\"ann\",\"2025-03-01T10:00:00.0000000+00:00\",\"first\",\"\",\"\"\n"
                        "\"2\",\"bob\",\"2025-03-01T10:00:00.0000000+00:00\",\"second\",\"\",\"\"\n"
                        "\"9\",\"me\",\"2025-03-01T10:00:00.0000000+00:00\",\"third\",\"\",\"\"\n");
    CHECK_EQ_STR(CONV2("[ann]: first\\n[bob]: second", "third"), run1("me", path));
}

static void test_persona_resolution(void) {
    /* id 9 is "me" first, then renames to "me2"; id 7 used the name "me2" before */
    const char *path =
        csv_file(HDR "\"1\",\"ann\",\"2025-03-01T10:00:00.0000000+00:00\",\"q1\",\"\",\"\"\n"
                     "\"9\",\"me\",\"2025-03-01T10:00:10.0000000+00:00\",\"a1\",\"\",\"\"\n"
                     "\"1\",\"ann\",\"2025-03-01T10:00:20.0000000+00:00\",\"q2\",\"\",\"\"\n"
                     "\"9\",\"me2\",\"2025-03-01T10:00:30.0000000+00:00\",\"a2\",\"\",\"\"\n");
    const char *expected = CONV2("[ann]: q1", "a1") CONV2("[ann]: q2", "a2");
    CHECK_EQ_STR(expected, run1("me", path));
    CHECK_EQ_INT(0, last_stats.restarts);
    CHECK_EQ_STR(expected, run1("me2", path)); /* the id had messages before the rename */
    CHECK_EQ_INT(1, last_stats.restarts);
    CHECK_EQ_STR(expected, run1("9", path));
    CHECK_EQ_INT(1, last_stats.persona_ids);
    /* a name used by two ids resolves to both */
    path = csv_file(HDR "\"1\",\"ann\",\"2025-03-01T10:00:00.0000000+00:00\",\"q1\",\"\",\"\"\n"
                        "\"7\",\"me\",\"2025-03-01T10:00:10.0000000+00:00\",\"a1\",\"\",\"\"\n"
                        "\"7\",\"seven\",\"2025-03-01T10:00:15.0000000+00:00\",\"a1b\",\"\",\"\"\n"
                        "\"1\",\"ann\",\"2025-03-01T10:00:20.0000000+00:00\",\"q2\",\"\",\"\"\n"
                        "\"9\",\"me\",\"2025-03-01T10:00:30.0000000+00:00\",\"a2\",\"\",\"\"\n");
    CHECK_EQ_STR(CONV2("[ann]: q1", "a1\\na1b") CONV2("[ann]: q2", "a2"), run1("me", path));
    CHECK_EQ_INT(2, last_stats.persona_ids);
    /* unknown persona: an error listing the most active authors */
    CHECK(run1("nobody", path) == NULL);
    CHECK(strstr(dp_last_error(), "persona \"nobody\" not found") != NULL);
    CHECK(strstr(dp_last_error(), "ann") != NULL);
    CHECK(strstr(dp_last_error(), "seven") != NULL);
}

static void test_anonymize_and_options(void) {
    dp_prep_opts o;
    dp_prep_opts_default(&o);
    o.persona = "me";
    o.val_fraction = 0;
    o.anonymize = true;
    const char *path = chat_csv(false, NULL);
    /* ann first appears (user1), then bob (user2); "@ann" and "@bob" follow */
    CHECK_EQ_STR(CONV2("[user1]: hi all\\n[user2]: hey @user1", "yo @user2\\nwhat's up")
                     CONV2("[user2]: not much", "cool") CONV2("[user1]: ok", "sure"),
                 run_opts(&o, &path, 1));
    /* a mention of an author who speaks only later, and a longer name sharing a prefix */
    const char *p2 =
        csv_file(HDR "\"1\",\"ann\",\"2025-03-01T10:00:00.0000000+00:00\",\"ask @anna or @annx\","
                     "\"\",\"\"\n"
                     "\"9\",\"me\",\"2025-03-01T10:00:10.0000000+00:00\",\"ok @me\",\"\",\"\"\n"
                     "\"3\",\"anna\",\"2025-03-01T10:00:20.0000000+00:00\",\"hi\",\"\",\"\"\n"
                     "\"9\",\"me\",\"2025-03-01T10:00:30.0000000+00:00\",\"hey\",\"\",\"\"\n");
    CHECK_EQ_STR(CONV2("[user1]: ask @user2 or @annx", "ok @me") CONV2("[user2]: hi", "hey"),
                 run_opts(&o, &p2, 1));
    o.anonymize = false;

    /* --system, --max-context-lines, --exclude-author, --keep-system-messages */
    o.system = "You are me.";
    o.max_context_lines = 1;
    o.exclude = (const char *const[]){"bob"};
    o.n_exclude = 1;
    o.keep_system = true;
    CHECK_EQ_STR(
        "{\"messages\":[" S("You are me.") "," U("[ann]: hi all") "," A(
            "yo @bob\\nwhat's up") "]}\n"
                                   "{\"messages\":[" S("You are me.") "," U(
                                       "[ann]: Pinned a "
                                       "message.") "," A("cool") "]}\n"
                                                                 "{\"messages\":[" S("You are me.") "," U(
                                                                     "[ann]: ok") "," A("sure") "]}"
                                                                                                "\n",
        run_opts(&o, &path, 1));
    CHECK_EQ_INT(3, last_stats.dropped_excluded);
    o.system = NULL;
    o.max_context_lines = 0;
    o.n_exclude = 0;
    o.keep_system = false;
    /* --min-reply-chars 5 drops "cool" and "sure" (4 characters) */
    o.min_reply_chars = 5;
    CHECK_EQ_STR(CONV2("[ann]: hi all\\n[bob]: hey @ann", "yo @bob\\nwhat's up"),
                 run_opts(&o, &path, 1));
    CHECK_EQ_INT(2, last_stats.dropped_short);
    o.min_reply_chars = 0;
    /* --dedupe */
    const char *p3 =
        csv_file(HDR "\"1\",\"ann\",\"2025-03-01T10:00:00.0000000+00:00\",\"gm\",\"\",\"\"\n"
                     "\"9\",\"me\",\"2025-03-01T10:00:10.0000000+00:00\",\"gm\",\"\",\"\"\n"
                     "\"1\",\"ann\",\"2025-03-02T10:00:00.0000000+00:00\",\"gm\",\"\",\"\"\n"
                     "\"9\",\"me\",\"2025-03-02T10:00:10.0000000+00:00\",\"gm\",\"\",\"\"\n");
    o.dedupe = true;
    CHECK_EQ_STR(CONV2("[ann]: gm", "gm"), run_opts(&o, &p3, 1));
    CHECK_EQ_INT(1, last_stats.dropped_duplicate);
}

static void test_multi(void) {
    dp_prep_opts o;
    dp_prep_opts_default(&o);
    o.persona = "me";
    o.val_fraction = 0;
    o.mode = DP_CHUNK_MULTI;
    const char *path = chat_csv(false, NULL);
    const char *expected =
        "{\"messages\":[" U("[ann]: hi all\\n[bob]: hey @ann") "," A("yo @bob\\nwhat's up") "," U(
            "[bob]: not much") "," A("cool") "]}\n" CONV2("[ann]: ok", "sure");
    CHECK_EQ_STR(expected, run_opts(&o, &path, 1));
    /* windows of 2 turns */
    o.max_turns = 2;
    CHECK_EQ_STR(CONV2("[ann]: hi all\\n[bob]: hey @ann", "yo @bob\\nwhat's up")
                     CONV2("[bob]: not much", "cool") CONV2("[ann]: ok", "sure"),
                 run_opts(&o, &path, 1));
}

static void test_json_same_as_csv(void) {
    /* the same messages as DCE JSON: emoji as surrogate pairs, trimmed fractions, a legacy
     * discriminator, a system message by type, messageCount after the array */
    const char *csv =
        HDR "\"1\",\"ann\",\"2025-03-01T10:00:00.1000000-03:00\",\"hi 😀\",\"\",\"\"\n"
            "\"5\",\"Dyno#3861\",\"2025-03-01T10:00:05.0000000-03:00\",\"Welcome!\",\"\",\"\"\n"
            "\"1\",\"ann\",\"2025-03-01T10:00:06.0000000-03:00\",\"Pinned a message.\",\"\",\"\"\n"
            "\"9\",\"me\",\"2025-03-01T10:00:10.0000000-03:00\",\"yo \"\"x\"\"\",\"\",\"\"\n";
    const char *json =
        "{\"guild\":{\"id\":\"1\",\"name\":\"g\"},\"channel\":{\"id\":\"2\",\"name\":\"c\"},"
        "\"dateRange\":{\"after\":null,\"before\":null},\"exportedAt\":\"x\",\n"
        "\"messages\":[\n"
        "{\"id\":\"10\",\"type\":\"Default\",\"timestamp\":\"2025-03-01T10:00:00.1-03:00\","
        "\"content\":\"hi \\uD83D\\uDE00\",\"author\":{\"id\":\"1\",\"name\":\"ann\","
        "\"discriminator\":\"0000\",\"isBot\":false},\"attachments\":[],\"reactions\":[]},\n"
        "{\"id\":\"11\",\"type\":\"Default\",\"timestamp\":\"2025-03-01T10:00:05-03:00\","
        "\"content\":\"Welcome!\",\"author\":{\"id\":\"5\",\"name\":\"Dyno\","
        "\"discriminator\":\"3861\",\"isBot\":true}},\n"
        "{\"id\":\"12\",\"type\":\"ChannelPinnedMessage\",\"timestamp\":\"2025-03-01T10:00:06-03:"
        "00\","
        "\"content\":\"Pinned a message.\",\"author\":{\"id\":\"1\",\"name\":\"ann\"}},\n"
        "{\"id\":\"13\",\"type\":\"Reply\",\"timestamp\":\"2025-03-01T10:00:10.000-03:00\","
        "\"content\":\"yo \\\"x\\\"\",\"author\":{\"id\":\"9\",\"name\":\"me\",\"nickname\":"
        "\"Me {braces]\"},\"reference\":{\"messageId\":\"11\"}}\n"
        "],\n\"messageCount\":4}\n";
    const char *expected = CONV2("[ann]: hi 😀\\n[Dyno#3861]: Welcome!", "yo \\\"x\\\"");
    CHECK_EQ_STR(expected, run1("me", csv_file(csv)));
    CHECK_EQ_STR(expected, run1("me", write_tmp("json", json, strlen(json))));
    CHECK_EQ_INT(1, last_stats.dropped_system);
    /* a lone surrogate is a malformed record, named by its line */
    const char *bad = "{\"messages\":[\n{\"timestamp\":\"2025-03-01T10:00:00Z\",\"content\":"
                      "\"\\uD83D\",\"author\":{\"id\":\"1\",\"name\":\"a\"}}]}";
    CHECK(run1("me", write_tmp("json", bad, strlen(bad))) == NULL);
    CHECK(strstr(dp_last_error(), ".json:2: malformed JSON") != NULL);
    /* truncated JSON */
    const char *trunc = "{\"messages\":[\n{\"timestamp\":\"2025-03-01T10:00:00Z\",\"content\":\"x";
    CHECK(run1("me", write_tmp("json", trunc, strlen(trunc))) == NULL);
    CHECK(strstr(dp_last_error(), "unterminated JSON string") != NULL);
}

static void test_strict_errors(void) {
    struct {
        const char *text, *want;
    } cases[] = {
        {HDR "\"1\",\"a\",\"2025-03-01T10:00:00.0000000+00:00\",\"x\",\"\"\n",
         ":2: expected 6 fields"},
        {HDR "\"1\",\"a\",\"2025-03-01T10:00:00.0000000+00:00\",\"x\",\"\",\"\"\n"
             "\"1\",\"a\",\"10/6/2023 12:37 AM\",\"x\",\"\",\"\"\n",
         ":3: date \"10/6/2023 12:37 AM\" is not in an accepted format (an old locale-style"},
        {HDR "\"1\",\"a\",\"2025-03-01T10:00:00.0000000+00:00\",\"x\",\"\",\"\"\n"
             "\"1\",\"a\",\"2025-03-01T10:00:00.0000000+00:00\",\"open\nstill open\n",
         ":4: unterminated quoted field (started at line 3)"},
        {HDR "\"1\",\"a\",\"2025-03-01T10:00:00.0000000+00:00\",\"x\"y,\"\",\"\"\n",
         ":2: malformed CSV"},
        {HDR "\"x1\",\"a\",\"2025-03-01T10:00:00.0000000+00:00\",\"x\",\"\",\"\"\n",
         ":2: AuthorID \"x1\" is not a decimal Discord id"},
        {HDR "\"1\",\"a\",\"2025-03-01T10:00:00.0000000+00:00\",\"bad \xC3\x28\",\"\",\"\"\n",
         ":2: invalid UTF-8 in the Content field at byte 4"},
        {"Author,Date,Content\n\"a\",\"b\",\"c\"\n", ":1: not a DiscordChatExporter CSV header"},
        {HDR, "the export has no messages (only a header)"},
        {"", "empty file"},
        {"\xFF\xFE"
         "A",
         ":1: the file is UTF-16"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *path = csv_file(cases[i].text);
        const char *out = run1("a", path);
        CHECK_REPORT(out == NULL, "case %zu accepted", i);
        CHECK_REPORT(strstr(dp_last_error(), cases[i].want) != NULL,
                     "case %zu: want \"%s\", got \"%s\"", i, cases[i].want, dp_last_error());
        CHECK_REPORT(strncmp(dp_last_error(), path, strlen(path)) == 0,
                     "case %zu: no file name: %s", i, dp_last_error());
    }
    /* --lenient: bad records are skipped and counted, the rest goes through */
    dp_prep_opts o;
    dp_prep_opts_default(&o);
    o.persona = "me";
    o.val_fraction = 0;
    o.lenient = true;
    const char *path =
        csv_file(HDR "\"1\",\"ann\",\"2025-03-01T10:00:00.0000000+00:00\",\"q\",\"\",\"\"\n"
                     "\"1\",\"ann\",\"14-May-19 09:48 PM\",\"lost\",\"\",\"\"\n"
                     "\"1\",\"ann\",\"2025-03-01T10:00:01.0000000+00:00\",\"x\",\"\"\n"
                     "\"9\",\"me\",\"2025-03-01T10:00:10.0000000+00:00\",\"a\",\"\",\"\"\n");
    CHECK_EQ_STR(CONV2("[ann]: q", "a"), run_opts(&o, &path, 1));
    CHECK_EQ_INT(2, last_stats.malformed);
    CHECK_EQ_INT(4, last_stats.rows);
    /* ... and an export that ends inside quotes ends there (one malformed record) */
    path = csv_file(HDR "\"1\",\"ann\",\"2025-03-01T10:00:00.0000000+00:00\",\"q\",\"\",\"\"\n"
                        "\"9\",\"me\",\"2025-03-01T10:00:10.0000000+00:00\",\"a\",\"\",\"\"\n"
                        "\"9\",\"me\",\"2025-03-01T10:00:10.0000000+00:00\",\"cut\n");
    CHECK_EQ_STR(CONV2("[ann]: q", "a"), run_opts(&o, &path, 1));
    CHECK_EQ_INT(1, last_stats.malformed);
}

static void test_split(void) {
    char path[600];
    snprintf(path, sizeof path, "%s/tests/fixtures/sample-export.csv", DOPPEL_SOURCE_DIR);
    const char *pp = path;
    dp_prep_opts o;
    dp_prep_opts_default(&o);
    o.persona = "mossy";
    o.val_fraction = 0;
    static char all[1 << 18], train1[1 << 18], val1[1 << 18];
    run_opts(&o, &pp, 1);
    snprintf(all, sizeof all, "%s", result);
    int64_t total = last_stats.conv_train;
    o.val_fraction = 0.25;
    o.seed = 7;
    run_opts(&o, &pp, 1);
    snprintf(train1, sizeof train1, "%s", result);
    snprintf(val1, sizeof val1, "%s", last_val);
    CHECK_EQ_INT(total, last_stats.conv_train + last_stats.conv_val);
    CHECK(last_stats.conv_val > 0 && last_stats.conv_train > last_stats.conv_val);
    /* the same seed: the same split; whole sessions, so the shares are only roughly 25% */
    run_opts(&o, &pp, 1);
    CHECK(!strcmp(train1, result) && !strcmp(val1, last_val));
    o.seed = 8;
    run_opts(&o, &pp, 1);
    CHECK(strcmp(val1, last_val) != 0);
    /* no conversation is in both sets, and train + val hold every conversation */
    size_t nall = 0, found = 0;
    for (char *line = all; *line;) {
        char *nl = strchr(line, '\n');
        *nl = 0;
        nall++;
        bool in_t = strstr(train1, line) != NULL, in_v = strstr(val1, line) != NULL;
        found += in_t || in_v;
        *nl = '\n';
        line = nl + 1;
    }
    CHECK_EQ_INT(nall, found);
    CHECK_EQ_INT(total, (int64_t)nall);
}

static void test_dataset_io(void) {
    char path[400];
    snprintf(path, sizeof path, "%s/doppel-test-ds-%d.jsonl.zst", tmpdir, (int)getpid());
    dp_dataset_writer *w = dp_dataset_writer_open(path);
    dp_chat_msg m[3] = {{DP_ROLE_SYSTEM, "sys", 3},
                        {DP_ROLE_USER, "[a]: \"q\"\n\ttab \x01 é 😀", 0},
                        {DP_ROLE_ASSISTANT, "back\\slash", 10}};
    m[1].len = strlen(m[1].content);
    dp_conversation c = {.msgs = m, .n = 3, .extra = "\"session\":1"};
    for (int i = 0; i < 100; i++) CHECK_EQ_INT(0, dp_dataset_write(w, &c));
    CHECK_EQ_INT(0, dp_dataset_writer_commit(w));
    dp_dataset_reader *r = dp_dataset_open(path);
    CHECK(r != NULL);
    int n = 0, rc;
    dp_conversation got;
    while ((rc = dp_dataset_next(r, &got)) == 1) {
        n++;
        CHECK_EQ_INT(3, got.n);
        CHECK_EQ_INT(n, got.line);
        for (int i = 0; i < 3 && got.n == 3; i++) {
            CHECK_EQ_INT(m[i].role, got.msgs[i].role);
            CHECK_EQ_STR(m[i].content, got.msgs[i].content);
        }
    }
    CHECK_EQ_INT(0, rc);
    CHECK_EQ_INT(100, n);
    dp_dataset_close(r);
    unlink(path);
    /* the written line is standard JSON (escapes checked by hand) */
    dp_buf b = {0};
    dp_conversation one = {.msgs = m + 1, .n = 1};
    dp_conversation_to_json(&one, &b);
    CHECK_EQ_STR(
        "{\"messages\":[{\"role\":\"user\",\"content\":\"[a]: \\\"q\\\"\\n\\ttab \\u0001 é "
        "😀\"}]}\n",
        b.data);
    dp_buf_free(&b);
    /* bad lines name FILE:LINE */
    const char *bad = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}\n\n"
                      "{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}\n";
    const char *bp = write_tmp("jsonl", bad, strlen(bad));
    r = dp_dataset_open(bp);
    CHECK_EQ_INT(1, dp_dataset_next(r, &got));
    CHECK_EQ_INT(-1, dp_dataset_next(r, &got));
    CHECK(strstr(dp_last_error(), ":3: message 1 has role \"robot\"") != NULL);
    dp_dataset_close(r);
    const char *notjson = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}\n{oops\n";
    bp = write_tmp("jsonl", notjson, strlen(notjson));
    r = dp_dataset_open(bp);
    CHECK_EQ_INT(1, dp_dataset_next(r, &got));
    CHECK_EQ_INT(-1, dp_dataset_next(r, &got));
    CHECK(strstr(dp_last_error(), ":2: not a JSON object") != NULL);
    dp_dataset_close(r);
}

int main(void) {
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s", t && *t ? t : "/tmp");
    test_csv_edge_cases();
    test_dates();
    test_order();
    test_persona_resolution();
    test_anonymize_and_options();
    test_multi();
    test_json_same_as_csv();
    test_strict_errors();
    test_split();
    test_dataset_io();
    char pat[400];
    for (int i = 0; i < file_no; i++) {
        static const char *exts[] = {"csv", "json", "jsonl"};
        for (int e = 0; e < 3; e++) {
            snprintf(pat, sizeof pat, "%s/doppel-test-prep-%d-%d.%s", tmpdir, (int)getpid(), i,
                     exts[e]);
            unlink(pat);
        }
    }
    return check_done();
}
