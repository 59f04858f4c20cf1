/* The base library: errors, atomic/zstd I/O, the progress display, option parsing. */
#include "check.h"
#include "cmd/cli.h"
#include "data/base/error.h"
#include "data/base/io.h"
#include "data/base/progress.h"
#include "kernels/q8.h"
#include "kernels/status.h" /* with error.h: the two dp_fail declarations must agree */

#include <stdint.h>
#include <unistd.h>

static void test_io_roundtrip(const char *dir) {
    char path[512];
    const char *text = "line one\nline two with ünïcödé\n";
    for (int z = 0; z < 2; z++) {
        snprintf(path, sizeof path, "%s/doppel-test-io-%d.txt%s", dir, (int)getpid(),
                 z ? ".zst" : "");
        dp_writer *w = dp_writer_open(path);
        CHECK(w != NULL);
        for (int i = 0; i < 1000; i++) dp_writer_printf(w, "%d:%s", i, text);
        CHECK_EQ_INT(0, dp_writer_commit(w));
        char *data;
        size_t len;
        CHECK_EQ_INT(0, dp_read_file(path, &data, &len));
        dp_buf expect = {0};
        for (int i = 0; i < 1000; i++) dp_buf_printf(&expect, "%d:%s", i, text);
        CHECK_EQ_INT(expect.len, len);
        CHECK(len == expect.len && memcmp(expect.data, data, len) == 0);
        if (z) {
            /* zstd output really is compressed (magic), and a truncated frame is an error */
            FILE *f = fopen(path, "rb");
            unsigned char m[4] = {0};
            CHECK_EQ_INT(4, fread(m, 1, 4, f));
            fclose(f);
            CHECK(m[0] == 0x28 && m[1] == 0xB5);
            CHECK_EQ_INT(0, truncate(path, 20));
            char *d2;
            size_t l2;
            CHECK_EQ_INT(-1, dp_read_file(path, &d2, &l2));
            CHECK(strstr(dp_last_error(), "zstd") != NULL);
        }
        free(data);
        dp_buf_free(&expect);
        unlink(path);
    }
    /* an aborted writer leaves nothing behind, not even its temporary file */
    snprintf(path, sizeof path, "%s/doppel-test-abort-%d.txt", dir, (int)getpid());
    dp_writer *w = dp_writer_open(path);
    dp_writer_printf(w, "partial");
    dp_writer_abort(w);
    CHECK(access(path, F_OK) != 0);
    char *d;
    size_t l;
    CHECK_EQ_INT(-1, dp_read_file("/nonexistent/x.csv", &d, &l));
    CHECK(strstr(dp_last_error(), "/nonexistent/x.csv") != NULL);
}

static double fake_time;
static double fake_clock(void) {
    return fake_time;
}

static void test_progress(void) {
    char buf[4096] = {0};
    FILE *f = fmemopen(buf, sizeof buf, "w");
    dp_progress_opts o = {
        .out = f, .style = DP_PROGRESS_PLAIN, .plain_interval = 10, .clock = fake_clock};
    fake_time = 100;
    dp_progress *p = dp_progress_start("prep", 1000, "msg", &o);
    fake_time = 110; /* 10 s, 250 done: 25 msg/s, 750 left -> ETA 0:30 */
    dp_progress_update(p, 250);
    fake_time = 112; /* too soon for another plain line */
    dp_progress_update(p, 300);
    fake_time = 140;
    dp_progress_update(p, 1000);
    dp_progress_finish(p);
    fclose(f);
    CHECK(strstr(buf, "prep: 250/1000 msg (25%) 25.0 msg/s, 0:10, ETA 0:30") != NULL);
    CHECK(strstr(buf, "300/1000") == NULL);
    CHECK(strstr(buf, "1000/1000 msg (100%)") != NULL);
    CHECK(strstr(buf, "ETA done") != NULL);
    if (check_failures) fprintf(stderr, "progress output was:\n%s", buf);

    /* quiet prints nothing */
    memset(buf, 0, sizeof buf);
    f = fmemopen(buf, sizeof buf, "w");
    o.out = f;
    o.quiet = true;
    p = dp_progress_start("x", 10, "it", &o);
    dp_progress_update(p, 5);
    dp_progress_finish(p);
    fclose(f);
    CHECK_EQ_STR("", buf);

    char d[32];
    dp_format_duration(d, sizeof d, 3725);
    CHECK_EQ_STR("1:02:05", d);
    dp_format_duration(d, sizeof d, 65);
    CHECK_EQ_STR("1:05", d);
}

static void test_cli(const char *dir) {
    typedef struct {
        const char *name;
        int64_t n, vram;
        double lr;
        bool flag;
        dp_strlist tags;
    } test_options;
    const dp_opt opts[] = {
        {"name", DP_OPT_STRING, DP_FIELD(test_options, name), "NAME", "a name"},
        {"max-seq", DP_OPT_INT, DP_FIELD(test_options, n), "N", "a number"},
        {"lr", DP_OPT_DOUBLE, DP_FIELD(test_options, lr), "X", "a rate"},
        {"vram", DP_OPT_SIZE, DP_FIELD(test_options, vram), "SIZE", "memory"},
        {"flag", DP_OPT_FLAG, DP_FIELD(test_options, flag), NULL, "a flag"},
        {"tag", DP_OPT_LIST, DP_FIELD(test_options, tags), "T", "repeatable"},
        {0},
    };
    dp_command_spec spec = {
        .name = "train", .usage = "X", .summary = "s", .opts = opts, .min_args = 1, .max_args = 1};
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s/doppel-test-cfg-%d.json", dir, (int)getpid());
    const char *json = "{\"_comment\": \"x\", \"max_seq\": 256, \"lr\": 0.001, \"flag\": true,"
                       " \"tag\": [\"a\", \"b\"], \"vram\": \"12GB\","
                       " \"plan\": {\"unknown_to_train\": 1}, \"train\": {\"name\": \"fromcfg\"}}";
    dp_write_file_atomic(cfg, json, strlen(json));
    char *argv[] = {"train", "--config", cfg, "pos", "--lr=0.5", "--tag", "c", NULL};
    dp_cli cli;
    test_options o = {.n = 5};
    CHECK_EQ_INT(0, dp_cli_parse(&spec, 7, argv, &o, &cli));
    CHECK_EQ_INT(256, o.n);      /* from the config */
    CHECK_NEAR(0.5, o.lr, 0, 0); /* the command line wins */
    CHECK(o.flag);
    CHECK_EQ_STR("fromcfg", o.name); /* the section for this command applies */
    CHECK_EQ_INT(12LL << 30, o.vram);
    CHECK_EQ_INT(1, o.tags.n); /* a list on the command line replaces the config's */
    CHECK_EQ_STR("c", o.tags.n ? o.tags.items[0] : NULL);
    CHECK_EQ_INT(1, cli.args.n);
    CHECK_EQ_STR("pos", cli.args.items[0]);
    dp_cli_free(&cli);
    CHECK(o.tags.items == NULL && o.tags.n == 0); /* the options' lists go with the cli */

    /* another command's section, borrowed: keys in table order, the own section and the
     * command line over it, its other keys ignored */
    const dp_config_alias borrowed[] = {{"seq", "max-seq"}, {"batch", "max-seq"}, {NULL, NULL}};
    dp_command_spec plan = spec;
    plan.name = "plan", plan.borrowed_section = "train", plan.borrowed = borrowed;
    const char *json2 = "{\"train\": {\"batch\": 64, \"seq\": 32, \"other\": 1, \"name\": \"t\"},"
                        " \"plan\": {\"lr\": 0.25}}";
    dp_write_file_atomic(cfg, json2, strlen(json2));
    char *argv2[] = {"plan", "--config", cfg, "pos", NULL};
    o = (test_options){.n = 5};
    CHECK_EQ_INT(0, dp_cli_parse(&plan, 4, argv2, &o, &cli));
    CHECK_EQ_INT(64, o.n); /* "batch" is later in the table than "seq" */
    CHECK_NEAR(0.25, o.lr, 0, 0);
    CHECK(o.name == NULL); /* not borrowed */
    dp_cli_free(&cli);

    char *bad1[] = {"train", "--max-seq", "abc", "x", NULL};
    CHECK_EQ_INT(DP_EXIT_USAGE, dp_cli_parse(&spec, 4, bad1, &o, &cli));
    dp_cli_free(&cli);
    char *bad2[] = {"train", "--nope", "x", NULL};
    CHECK_EQ_INT(DP_EXIT_USAGE, dp_cli_parse(&spec, 3, bad2, &o, &cli));
    dp_cli_free(&cli);
    char *bad3[] = {"train", NULL};
    CHECK_EQ_INT(DP_EXIT_USAGE, dp_cli_parse(&spec, 1, bad3, &o, &cli));
    dp_cli_free(&cli);
    /* a usage error frees what the parse had gathered (ASan's leak check sees it otherwise) */
    char *bad5[] = {"train", "--tag", "a", "--tag", "b", "x", "y", NULL};
    CHECK_EQ_INT(DP_EXIT_USAGE, dp_cli_parse(&spec, 7, bad5, &o, &cli));
    CHECK(o.tags.items == NULL && cli.args.items == NULL);
    const char *badjson = "{\"max_seq\": 1,\n \"oops\": }";
    dp_write_file_atomic(cfg, badjson, strlen(badjson));
    char *bad4[] = {"train", "--config", cfg, "x", NULL};
    CHECK_EQ_INT(DP_EXIT_USAGE, dp_cli_parse(&spec, 4, bad4, &o, &cli));
    dp_cli_free(&cli);
    unlink(cfg);

    int64_t b;
    CHECK_EQ_INT(0, dp_parse_size("512MiB", &b));
    CHECK_EQ_INT(512LL << 20, b);
    CHECK_EQ_INT(-1, dp_parse_size("12XB", &b));
}

/* A kernel's message (kernels/status.h) lands in the one error slot that every layer reads. */
static void test_kernel_error_reaches_caller(void) {
    dp_clear_error();
    dp_q8 q = {0};
    float w[8] = {0};
    CHECK_EQ_INT(-1, dp_q8_quantize(&q, w, 1, 8)); /* 8 columns: not a multiple of 32 */
    CHECK(strstr(dp_last_error(), "Q8: bad shape (1, 8)") != NULL);
    CHECK_EQ_INT(-1, dp_fail_context("model.gguf: token_embd.weight"));
    CHECK(strstr(dp_last_error(), "model.gguf: token_embd.weight: Q8: bad shape") != NULL);
}

int main(void) {
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    test_io_roundtrip(dir);
    test_progress();
    test_cli(dir);
    test_kernel_error_reaches_caller();
    return check_done();
}
