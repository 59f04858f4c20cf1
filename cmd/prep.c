/* doppel prep: a DiscordChatExporter export (CSV or JSON, several files, .zst) becomes a JSONL
 * dataset of ChatML conversations in which the persona's replies are the assistant turns. */
#include "cmd/commands.h"
#include "data/chunk.h"
#include "data/dataset.h"
#include "data/dce.h"
#include "data/base/error.h"
#include "data/base/progress.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *persona, *out_path, *mode_name, *system_text, *stats_path;
    int64_t gap, max_turns, max_context_lines, min_reply_chars, seed, preview;
    double val_fraction;
    bool anonymize, keep_system, dedupe, lenient, list_authors, force_sort;
    dp_strlist exclude;
} prep_options;

#define F(field) DP_FIELD(prep_options, field)
static const dp_opt opts[] = {
    {"persona", DP_OPT_STRING, F(persona), "NAME_OR_ID",
     "whose replies become the assistant turns: a name (every id that used it) or an author id"},
    {"out", DP_OPT_STRING, F(out_path), "PATH",
     "output JSONL (a .zst suffix compresses); validation sessions go to PATH.val.jsonl"},
    {"gap", DP_OPT_INT, F(gap), "SECONDS", "silence that starts a new session (default 300)"},
    {"mode", DP_OPT_STRING, F(mode_name), "reply|multi",
     "reply: one sample per persona run (default); multi: each session one multi-turn "
     "conversation"},
    {"max-turns", DP_OPT_INT, F(max_turns), "N",
     "multi mode: turns per conversation, longer sessions are cut into windows (default 32, "
     "at most 64)"},
    {"system", DP_OPT_STRING, F(system_text), "TEXT",
     "a system message first in every conversation"},
    {"anonymize", DP_OPT_FLAG, F(anonymize), NULL,
     "other authors become user1, user2... by first appearance, in labels and @mentions"},
    {"exclude-author", DP_OPT_LIST, F(exclude), "NAME_OR_ID",
     "drop this author's messages (repeatable; bots)"},
    {"keep-system-messages", DP_OPT_FLAG, F(keep_system), NULL,
     "keep DCE system messages (\"Pinned a message.\") as user lines"},
    {"max-context-lines", DP_OPT_INT, F(max_context_lines), "N",
     "keep only the last N user lines before a reply (default: all)"},
    {"min-reply-chars", DP_OPT_INT, F(min_reply_chars), "N",
     "drop samples whose assistant turn has fewer characters"},
    {"dedupe", DP_OPT_FLAG, F(dedupe), NULL, "drop conversations identical to an earlier one"},
    {"val-fraction", DP_OPT_DOUBLE, F(val_fraction), "F",
     "share of whole sessions for validation (default 0.05; 0 writes no val file)"},
    {"seed", DP_OPT_INT, F(seed), "N", "seed of the train/val split (default 0)"},
    {"preview", DP_OPT_INT, F(preview), "N", "print N written conversations as ChatML text"},
    {"stats", DP_OPT_STRING, F(stats_path), "PATH.json", "write the run's statistics as JSON"},
    {"list-authors", DP_OPT_FLAG, F(list_authors), NULL,
     "list id, names, message count, first and last date of every author, then stop"},
    {"lenient", DP_OPT_FLAG, F(lenient), NULL,
     "skip malformed records (counted, the first ten shown) instead of stopping"},
    {"sort-in-memory", DP_OPT_FLAG, F(force_sort), NULL,
     "always collect and sort the whole export in memory (for comparison; slower)"},
    {0},
};
#undef F

const dp_command_spec dp_prep_spec = {
    .name = "prep",
    .usage =
        "EXPORT [EXPORT...] --persona NAME_OR_ID --out train.jsonl  |  --list-authors EXPORT...",
    .summary = "convert a DiscordChatExporter export into ChatML conversations",
    .details =
        "EXPORT: DiscordChatExporter CSV or JSON (optionally .zst); several files (partitions,\n"
        "threads) are merged into one timeline. Messages are ordered by instant, sessions end\n"
        "after --gap seconds of silence, and each run of persona messages after other people's\n"
        "lines becomes one sample: user = \"[Name]: text\" lines, assistant = the run.\n"
        "A malformed record stops the run with FILE:LINE and nothing is written (see --lenient).",
    .opts = opts,
    .min_args = 0,
    .max_args = -1,
};

static prep_options prep_defaults(void) {
    return (prep_options){.mode_name = "reply", .gap = 300, .max_turns = 32, .val_fraction = 0.05};
}

/* train.jsonl -> train.val.jsonl, train.jsonl.zst -> train.val.jsonl.zst, x -> x.val */
static char *val_path_for(const char *out) {
    size_t n = strlen(out);
    const char *suffixes[] = {".jsonl.zst", ".jsonl", ".json", NULL};
    for (int i = 0; suffixes[i]; i++) {
        size_t l = strlen(suffixes[i]);
        if (n > l && !strcmp(out + n - l, suffixes[i])) {
            char *p = dp_malloc(n + 5);
            if (p) snprintf(p, n + 5, "%.*s.val%s", (int)(n - l), out, suffixes[i]);
            return p;
        }
    }
    char *p = dp_malloc(n + 5);
    if (p) snprintf(p, n + 5, "%s.val", out);
    return p;
}

typedef struct {
    dp_dataset_writer *train, *val;
    const char *train_path;
    char *val_path;
} sink_ctx;

static int sink_open(sink_ctx *s) {
    if (!(s->train = dp_dataset_writer_open(s->train_path))) return -1;
    if (s->val_path && !(s->val = dp_dataset_writer_open(s->val_path))) return -1;
    return 0;
}

static void sink_abort(sink_ctx *s) {
    dp_dataset_writer_abort(s->train);
    dp_dataset_writer_abort(s->val);
    s->train = s->val = NULL;
}

static int sink_write(void *ctx, const dp_conversation *c, bool val) {
    sink_ctx *s = ctx;
    return dp_dataset_write(val && s->val ? s->val : s->train, c);
}

static int sink_reset(void *ctx) {
    sink_ctx *s = ctx;
    sink_abort(s);
    return sink_open(s);
}

static void on_progress(void *ctx, uint64_t bytes) {
    dp_progress_update(ctx, (int64_t)(bytes / 1000000));
}

static void print_authors(dp_prep *p) {
    const dp_author_info *list;
    int n = dp_prep_authors(p, &list);
    printf("%-20s  %8s  %-10s  %-10s  %s\n", "id", "messages", "first", "last", "names");
    for (int i = 0; i < n; i++) {
        char a[48], b[48];
        dp_dce_format_instant(list[i].first, a);
        dp_dce_format_instant(list[i].last, b);
        printf("%-20llu  %8lld  %.10s  %.10s  ", (unsigned long long)list[i].id,
               (long long)list[i].count, a, b);
        for (int j = 0; j < list[i].n_names; j++) printf("%s%s", j ? ", " : "", list[i].names[j]);
        printf("\n");
    }
}

static void add_pct(cJSON *o, const char *name, const double v[4]) {
    cJSON *x = cJSON_AddObjectToObject(o, name);
    cJSON_AddNumberToObject(x, "p50", v[0]);
    cJSON_AddNumberToObject(x, "p90", v[1]);
    cJSON_AddNumberToObject(x, "p99", v[2]);
    cJSON_AddNumberToObject(x, "max", v[3]);
}

static int write_stats(const prep_options *po, const char *path, const dp_prep_stats *st,
                       double seconds, const sink_ctx *s) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "persona", po->persona);
    cJSON_AddNumberToObject(o, "persona_ids", (double)st->persona_ids);
    cJSON_AddNumberToObject(o, "files", (double)st->files);
    cJSON_AddNumberToObject(o, "input_bytes", (double)st->input_bytes);
    cJSON_AddNumberToObject(o, "seconds", seconds);
    cJSON_AddNumberToObject(o, "reader_cpu_seconds", st->reader_cpu_seconds);
    cJSON_AddNumberToObject(o, "timeline_cpu_seconds", st->timeline_cpu_seconds);
    cJSON_AddNumberToObject(o, "rows", (double)st->rows);
    cJSON_AddNumberToObject(o, "kept", (double)st->kept);
    cJSON *d = cJSON_AddObjectToObject(o, "dropped");
    cJSON_AddNumberToObject(d, "empty", (double)st->dropped_empty);
    cJSON_AddNumberToObject(d, "system", (double)st->dropped_system);
    cJSON_AddNumberToObject(d, "excluded", (double)st->dropped_excluded);
    cJSON_AddNumberToObject(d, "malformed", (double)st->malformed);
    cJSON_AddStringToObject(o, "order", st->order ? st->order : "");
    cJSON_AddNumberToObject(o, "restarts", st->restarts);
    cJSON_AddNumberToObject(o, "sessions", (double)st->sessions);
    cJSON_AddNumberToObject(o, "gap_seconds", (double)po->gap);
    cJSON_AddStringToObject(o, "mode", po->mode_name);
    cJSON *c = cJSON_AddObjectToObject(o, "conversations");
    cJSON_AddNumberToObject(c, "train", (double)st->conv_train);
    cJSON_AddNumberToObject(c, "val", (double)st->conv_val);
    cJSON_AddStringToObject(c, "train_path", s->train_path);
    if (s->val_path) cJSON_AddStringToObject(c, "val_path", s->val_path);
    cJSON_AddNumberToObject(o, "persona_messages_used", (double)st->persona_messages);
    cJSON_AddNumberToObject(o, "persona_runs_without_context", (double)st->persona_runs_no_context);
    cJSON_AddNumberToObject(o, "contexts_without_reply", (double)st->contexts_no_reply);
    cJSON_AddNumberToObject(o, "dropped_short_replies", (double)st->dropped_short);
    cJSON_AddNumberToObject(o, "dropped_duplicates", (double)st->dropped_duplicate);
    add_pct(o, "assistant_chars", st->assistant_chars);
    add_pct(o, "user_chars", st->user_chars);
    add_pct(o, "messages_per_conversation", st->turns);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return dp_fail("out of memory");
    size_t n = strlen(text);
    text[n] = '\n';
    int rc = dp_write_file_atomic(path, text, n + 1);
    cJSON_free(text);
    return rc;
}

static void print_summary(const prep_options *po, const dp_prep_stats *st, double seconds,
                          const sink_ctx *s) {
    double mb = (double)st->input_bytes / 1e6;
    fprintf(stderr,
            "prep: %lld file%s, %.1f MB, %lld rows in %.2f s (%.0f MB/s, %.0f rows/s)\n"
            "  kept %lld; dropped %lld empty, %lld system, %lld excluded, %lld malformed\n"
            "  timeline: %s; %lld sessions (gap %lld s); persona \"%s\" = %lld id%s\n"
            "  conversations: %lld train -> %s, %lld val%s%s\n"
            "  persona messages used %lld; persona runs without context %lld; contexts without "
            "reply %lld; short replies dropped %lld; duplicates dropped %lld\n"
            "  assistant chars p50 %.0f p90 %.0f p99 %.0f max %.0f; user chars p50 %.0f p90 "
            "%.0f p99 %.0f max %.0f\n",
            (long long)st->files, st->files == 1 ? "" : "s", mb, (long long)st->rows, seconds,
            seconds > 0 ? mb / seconds : 0, seconds > 0 ? (double)st->rows / seconds : 0,
            (long long)st->kept, (long long)st->dropped_empty, (long long)st->dropped_system,
            (long long)st->dropped_excluded, (long long)st->malformed, st->order,
            (long long)st->sessions, (long long)po->gap, po->persona, (long long)st->persona_ids,
            st->persona_ids == 1 ? "" : "s", (long long)st->conv_train, s->train_path,
            (long long)st->conv_val, s->val_path ? " -> " : "", s->val_path ? s->val_path : "",
            (long long)st->persona_messages, (long long)st->persona_runs_no_context,
            (long long)st->contexts_no_reply, (long long)st->dropped_short,
            (long long)st->dropped_duplicate, st->assistant_chars[0], st->assistant_chars[1],
            st->assistant_chars[2], st->assistant_chars[3], st->user_chars[0], st->user_chars[1],
            st->user_chars[2], st->user_chars[3]);
}

static int print_preview(const char *path, int64_t n) {
    dp_dataset_reader *r = dp_dataset_open(path);
    if (!r) return -1;
    dp_conversation c;
    int rc = 0;
    for (int64_t i = 0; i < n && (rc = dp_dataset_next(r, &c)) == 1; i++) {
        printf("--- conversation %lld (%s:%lld)\n", (long long)i + 1, path, (long long)c.line);
        dp_chatml_print(stdout, &c);
    }
    dp_dataset_close(r);
    return rc < 0 ? -1 : 0;
}

static int prep(const prep_options *po, const dp_cli *cli);

int dp_cmd_prep(int argc, char **argv) {
    prep_options po = prep_defaults();
    dp_cli cli;
    int rc = dp_cli_parse(&dp_prep_spec, argc, argv, &po, &cli);
    if (rc) return rc < 0 ? DP_EXIT_OK : rc;
    rc = prep(&po, &cli);
    dp_cli_free(&cli); /* with po's lists */
    return rc;
}

/* The exit code. */
static int prep(const prep_options *po, const dp_cli *cli) {
    const dp_command_spec *spec = &dp_prep_spec;
    int rc = DP_EXIT_OK;
    dp_prep *p = NULL;
    sink_ctx s = {0};
    dp_prep_opts o;
    dp_prep_opts_default(&o);
    if (cli->args.n < 1) {
        rc = dp_usage_error(spec, "no export given: %s", spec->usage);
        goto done;
    }
    if (strcmp(po->mode_name, "reply") && strcmp(po->mode_name, "multi")) {
        rc = dp_usage_error(spec, "--mode must be reply or multi, not '%s'", po->mode_name);
        goto done;
    }
    if (po->gap < 1 || po->max_turns < 2 || po->max_turns > 64 || po->max_context_lines < 0 ||
        po->min_reply_chars < 0 || po->preview < 0) {
        rc = dp_usage_error(spec, "--gap must be >= 1, --max-turns 2..64, and --max-context-lines,"
                                  " --min-reply-chars, --preview >= 0");
        goto done;
    }
    if (!(po->val_fraction >= 0 && po->val_fraction < 1)) {
        rc = dp_usage_error(spec, "--val-fraction must be in [0, 1), not %g", po->val_fraction);
        goto done;
    }
    o.persona = po->persona;
    o.gap_seconds = po->gap;
    o.mode = strcmp(po->mode_name, "multi") ? DP_CHUNK_REPLY : DP_CHUNK_MULTI;
    o.max_turns = (int)po->max_turns;
    o.system = po->system_text;
    o.anonymize = po->anonymize;
    o.keep_system = po->keep_system;
    o.dedupe = po->dedupe;
    o.lenient = po->lenient;
    o.exclude = po->exclude.items;
    o.n_exclude = po->exclude.n;
    o.max_context_lines = (int)po->max_context_lines;
    o.min_reply_chars = (int)po->min_reply_chars;
    o.val_fraction = po->val_fraction;
    o.seed = (uint64_t)po->seed;
    o.force_sort = po->force_sort;
    if (!(p = dp_prep_create(&o))) {
        rc = dp_runtime_error(spec);
        goto done;
    }
    const char *const *paths = cli->args.items;
    if (po->list_authors) {
        if (dp_prep_scan_authors(p, paths, cli->args.n))
            rc = dp_runtime_error(spec);
        else
            print_authors(p);
        goto done;
    }
    if (!po->persona || !po->out_path) {
        rc = dp_usage_error(spec, "--persona and --out are required (see --list-authors)");
        goto done;
    }
    s.train_path = po->out_path;
    if (po->val_fraction > 0 && !(s.val_path = val_path_for(po->out_path))) {
        rc = dp_runtime_error(spec);
        goto done;
    }
    if (sink_open(&s)) {
        rc = dp_runtime_error(spec);
        goto done;
    }
    int64_t total = 0;
    for (int i = 0; i < cli->args.n; i++) {
        FILE *f = fopen(paths[i], "rb");
        if (f && !fseek(f, 0, SEEK_END)) total += ftell(f);
        if (f) fclose(f);
    }
    /* a few seconds of work or less needs no meter */
    dp_progress_opts meter = {.quiet = cli->quiet || total < 50 * 1000000};
    dp_progress *bar = dp_progress_start("prep", total / 1000000, "MB", &meter);
    dp_prep_on_progress(p, on_progress, bar);
    double t0 = dp_now_seconds();
    int run = dp_prep_run(p, paths, cli->args.n, sink_write, sink_reset, &s);
    double seconds = dp_now_seconds() - t0;
    dp_progress_finish(bar);
    const dp_prep_stats *st = dp_prep_get_stats(p);
    const char *const *bad;
    int nbad = dp_prep_malformed_examples(p, &bad);
    if (nbad) {
        fprintf(stderr, "prep: skipped %lld malformed record%s (--lenient); the first %d:\n",
                (long long)st->malformed, st->malformed == 1 ? "" : "s", nbad);
        for (int i = 0; i < nbad; i++) fprintf(stderr, "  %s\n", bad[i]);
    }
    if (run == 0 && st->conv_train + st->conv_val == 0)
        run =
            dp_fail("no conversations: persona \"%s\" has %lld messages kept, but none follows "
                    "another author's message within a session (%lld sessions, gap %lld s); "
                    "try a larger --gap or check --persona with --list-authors",
                    po->persona, (long long)st->kept, (long long)st->sessions, (long long)po->gap);
    if (run == 0 && st->conv_train == 0)
        run = dp_fail("every conversation went to the validation set; lower --val-fraction");
    if (run) {
        sink_abort(&s);
        rc = dp_runtime_error(spec);
        goto done;
    }
    int c1 = dp_dataset_writer_commit(s.train);
    s.train = NULL;
    int c2 = s.val ? dp_dataset_writer_commit(s.val) : 0;
    s.val = NULL;
    if (c1 || c2) {
        rc = dp_runtime_error(spec);
        goto done;
    }
    print_summary(po, st, seconds, &s);
    if (po->stats_path && write_stats(po, po->stats_path, st, seconds, &s)) {
        rc = dp_runtime_error(spec);
        goto done;
    }
    if (po->preview > 0 && print_preview(po->out_path, po->preview)) {
        rc = dp_runtime_error(spec);
        goto done;
    }
    rc = DP_EXIT_OK;
done:
    sink_abort(&s);
    free(s.val_path);
    dp_prep_destroy(p);
    return rc;
}
