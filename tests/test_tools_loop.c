/* The chat turn with tools end to end, a scripted stand-in giving the model's replies: real
 * tools run from a directory (the built load_file and small scripts), their results go back
 * into the session in the template's style, and the "model" is asked again; unknown tools,
 * failures, timeouts, declined calls, calls inside code or thoughts, round limits. */
#include "check.h"
#include "data/base/error.h"
#include "infer/tools.h"

#include <libgen.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    const char **replies; /* one per generate call */
    int n_replies, next;
    int interrupt_at;   /* this reply reports a user interrupt (-1: none) */
    char *seen_last[8]; /* the session's last message at each generate call */
    size_t fed[8];      /* bytes of each reply fed before the turn said stop */
    dp_buf shown[5];    /* by dp_show_kind */
    bool answer_yes;
    int asked;
} script;

static int scripted_generate(void *ctx, dp_session *s, dp_tool_chat *tc) {
    script *sc = ctx;
    if (sc->next >= sc->n_replies) return dp_fail("the script has no reply %d", sc->next + 1);
    int k = sc->next++;
    sc->seen_last[k] = strdup(s->n ? s->msgs[s->n - 1].content : "");
    const char *r = sc->replies[k];
    size_t n = strlen(r), i = 0;
    while (i < n) { /* in 3-byte pieces, as tokens come */
        size_t piece = n - i < 3 ? n - i : 3;
        int rc = dp_tool_chat_feed(tc, r + i, piece);
        i += piece;
        if (rc < 0) return -1;
        if (rc) break;
    }
    sc->fed[k] = i;
    return k == sc->interrupt_at ? 1 : 0;
}

static void scripted_show(void *ctx, dp_show_kind kind, const char *text, size_t n) {
    script *sc = ctx;
    dp_buf_append(&sc->shown[kind], text, n);
    dp_buf_append(&sc->shown[kind], "", 0);
}

static bool scripted_confirm(void *ctx, const dp_tool_call *c, const dp_tool *t) {
    (void)c, (void)t;
    script *sc = ctx;
    sc->asked++;
    return sc->answer_yes;
}

static void script_free(script *sc) {
    for (int i = 0; i < 8; i++) free(sc->seen_last[i]);
    for (int i = 0; i < 5; i++) dp_buf_free(&sc->shown[i]);
}

static char dir[256], tools_dir[300], work_dir[300];

static void write_file(const char *path, const char *text, mode_t mode) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

/* Runs one user message through the turn. */
static int run_turn(dp_session *s, const dp_tool_chat_opts *o, script *sc, const char *user) {
    dp_session_add(s, "user", user);
    dp_tool_chat_io io = {scripted_generate, scripted_show, scripted_confirm, sc};
    return dp_tool_chat_reply(s, o, &io);
}

#define MSG(i)  (s.n > (i) ? s.msgs[i].content : "(none)")
#define ROLE(i) (s.n > (i) ? s.msgs[i].role : "(none)")

int main(void) {
    const char *bin = getenv("DOPPEL_BIN");
    if (!bin) SKIP("DOPPEL_BIN is not set (run through ctest)");
    char bin_copy[4096];
    snprintf(bin_copy, sizeof bin_copy, "%s", bin);
    char load_file[4200];
    snprintf(load_file, sizeof load_file, "%s/tools/load_file", dirname(bin_copy));
    if (access(load_file, X_OK)) SKIP("%s is not built", load_file);

    snprintf(dir, sizeof dir, "/tmp/doppel_tools_loop_XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    snprintf(tools_dir, sizeof tools_dir, "%s/tools", dir);
    snprintf(work_dir, sizeof work_dir, "%s/work", dir);
    mkdir(tools_dir, 0755);
    mkdir(work_dir, 0755);
    char p[512];
    snprintf(p, sizeof p, "%s/load_file", tools_dir);
    CHECK(symlink(load_file, p) == 0);
    snprintf(p, sizeof p, "%s/fail", tools_dir);
    write_file(p,
               "#!/bin/sh\n[ \"$1\" = --describe ] && { echo always fails; exit 0; }\n"
               "echo boom >&2; exit 3\n",
               0755);
    snprintf(p, sizeof p, "%s/slow", tools_dir);
    write_file(p,
               "#!/bin/sh\n[ \"$1\" = --describe ] && { echo never ends; exit 0; }\n"
               "echo working; sleep 30\n",
               0755);
    snprintf(p, sizeof p, "%s/mark", tools_dir);
    write_file(p,
               "#!/bin/sh\n[ \"$1\" = --describe ] && { echo leaves a mark; exit 0; }\n"
               "touch ran; echo marked \"$@\"\n",
               0755);
    snprintf(p, sizeof p, "%s/notes.md", tools_dir); /* not executable: not a tool */
    write_file(p, "not a tool\n", 0644);
    snprintf(p, sizeof p, "%s/notes.txt", work_dir);
    write_file(p, "The meeting is on Tuesday at 3pm.\n", 0644);
    snprintf(p, sizeof p, "%s/secret.txt", dir);
    write_file(p, "outside\n", 0644);

    dp_tool_limits lim = {.timeout_s = 0.5, .output_cap = 16384, .cwd = work_dir};
    dp_toolbox *tb = dp_toolbox_open(tools_dir, &lim);
    CHECK_REPORT(tb != NULL, "toolbox: %s", dp_last_error());
    if (!tb) return check_done();
    CHECK_EQ_INT(4, tb->n);
    CHECK_EQ_STR("FAIL", tb->names[0]);
    CHECK_EQ_STR("LOAD_FILE", tb->names[1]);
    CHECK_EQ_STR("shows a text file from the current directory or below: LOAD_FILE path",
                 tb->tools[1].description);
    dp_buf prompt = {0};
    CHECK(dp_toolbox_prompt(tb, &prompt) == 0);
    CHECK(strstr(prompt.data, "- SLOW: never ends\n") != NULL);
    CHECK(strstr(prompt.data, "[FAIL ...]") != NULL);
    dp_buf_free(&prompt);

    dp_tool_chat_opts o = {.tools = tb, .style = dp_chat_tool_style_for(NULL), .max_rounds = 4};

    { /* a call, its result back to the model, the model answers; what it imagined after the
       * call is neither fed further, shown nor kept */
        const char *r[] = {"Let me check. [LOAD_FILE notes.txt]\nThe file says Monday.",
                           "The meeting is on Tuesday."};
        script sc = {.replies = r, .n_replies = 2, .interrupt_at = -1, .answer_yes = true};
        dp_session s;
        dp_session_init(&s, "sys");
        CHECK_EQ_INT(0, run_turn(&s, &o, &sc, "when is the meeting?"));
        CHECK_EQ_INT(4, s.n);
        CHECK_EQ_STR("Let me check. [LOAD_FILE notes.txt]", MSG(1));
        CHECK_EQ_STR("system", ROLE(2));
        CHECK_EQ_STR("[LOAD_FILE notes.txt] returned:\nThe meeting is on Tuesday at 3pm.", MSG(2));
        CHECK_EQ_STR("assistant", ROLE(3));
        CHECK_EQ_STR("The meeting is on Tuesday.", MSG(3));
        CHECK_EQ_STR(MSG(2), sc.seen_last[1]); /* the model saw the result */
        CHECK(sc.fed[0] < strlen(r[0]));       /* generation stopped after the call */
        CHECK_EQ_STR("Let me check. The meeting is on Tuesday.", sc.shown[DP_SHOW_TEXT].data);
        CHECK_EQ_STR("[LOAD_FILE notes.txt]", sc.shown[DP_SHOW_CALL].data);
        CHECK_EQ_INT(1, sc.asked);
        script_free(&sc);
        dp_session_free(&s);
    }
    { /* several calls in one reply: an escape refused, an unknown tool, a failure, a timeout;
       * all told in one message, and the chat goes on */
        const char *r[] = {"[LOAD_FILE ../secret.txt] [NO_SUCH x]\n[fail] [SLOW]\n",
                           "Sorry, none of that worked."};
        script sc = {.replies = r, .n_replies = 2, .interrupt_at = -1, .answer_yes = true};
        dp_session s;
        dp_session_init(&s, NULL);
        CHECK_EQ_INT(0, run_turn(&s, &o, &sc, "try things"));
        CHECK_EQ_INT(4, s.n);
        CHECK_EQ_STR("[LOAD_FILE ../secret.txt] [NO_SUCH x]\n[fail] [SLOW]", MSG(1));
        const char *told = MSG(2);
        CHECK(strstr(told, "[LOAD_FILE ../secret.txt] failed (exit status 1):\nload_file: "
                           "../secret.txt: outside the current directory") != NULL);
        CHECK(strstr(told, "outside\n") == NULL); /* the file's text never came back */
        CHECK(strstr(told, "[NO_SUCH x] failed: there is no tool named NO_SUCH. The tools are: "
                           "FAIL, LOAD_FILE, MARK, SLOW.") != NULL);
        CHECK(strstr(told, "[fail] failed (exit status 3):\nboom") != NULL);
        CHECK(strstr(told, "[SLOW] failed: it did not finish within 0.5 s and was stopped. Its "
                           "output so far:\nworking") != NULL);
        CHECK_EQ_INT(3, sc.asked); /* an unknown tool is not asked about */
        CHECK_EQ_STR("Sorry, none of that worked.", MSG(3));
        CHECK_REPORT(strstr(told, "\n\n[NO_SUCH x]") != NULL, "results not separated: %s", told);
        script_free(&sc);
        dp_session_free(&s);
    }
    { /* declined: not run, and the model is told */
        const char *r[] = {"[MARK a b]", "OK."};
        script sc = {.replies = r, .n_replies = 2, .interrupt_at = -1, .answer_yes = false};
        dp_session s;
        dp_session_init(&s, NULL);
        CHECK_EQ_INT(0, run_turn(&s, &o, &sc, "mark it"));
        CHECK_EQ_STR("[MARK a b] was not run: the user declined it.", MSG(2));
        snprintf(p, sizeof p, "%s/ran", work_dir);
        CHECK(access(p, F_OK) != 0);
        sc.answer_yes = true; /* and accepted: it runs in the working directory */
        sc.n_replies = 2;
        sc.next = 0;
        const char *r2[] = {"[MARK \"a b\"]", "Done."};
        sc.replies = r2;
        script_free(&sc);
        memset(sc.seen_last, 0, sizeof sc.seen_last);
        memset(sc.shown, 0, sizeof sc.shown);
        CHECK_EQ_INT(0, run_turn(&s, &o, &sc, "mark it"));
        CHECK_EQ_STR("[MARK \"a b\"] returned:\nmarked a b", MSG(6));
        CHECK(access(p, F_OK) == 0);
        script_free(&sc);
        dp_session_free(&s);
    }
    { /* calls inside code or inside a thought are not run; the thought is not kept */
        dp_tool_chat_opts ot = o;
        ot.thinking = true;
        const char *r[] = {"<think>\nmaybe [LOAD_FILE notes.txt]\n</think>\n\nWrite it like "
                           "this:\n```\n[LOAD_FILE notes.txt]\n```\nor `[LOAD_FILE x]`."};
        script sc = {.replies = r, .n_replies = 1, .interrupt_at = -1, .answer_yes = true};
        dp_session s;
        dp_session_init(&s, NULL);
        CHECK_EQ_INT(0, run_turn(&s, &ot, &sc, "how do I call it?"));
        CHECK_EQ_INT(2, s.n);
        CHECK_EQ_STR("Write it like this:\n```\n[LOAD_FILE notes.txt]\n```\nor `[LOAD_FILE x]`.",
                     MSG(1));
        CHECK_EQ_STR("maybe [LOAD_FILE notes.txt]\n", sc.shown[DP_SHOW_THOUGHT].data);
        CHECK_EQ_INT(0, sc.asked);
        script_free(&sc);
        dp_session_free(&s);
    }
    { /* a model that keeps calling stops after max_rounds replies; Qwen's style of results */
        dp_tool_chat_opts oq = o;
        oq.max_rounds = 3;
        char *tpl = NULL;
        size_t tl;
        CHECK(dp_read_file(DOPPEL_SOURCE_DIR "/../shared/tokenizers/qwen3/tokenizer_config.json",
                           &tpl, &tl) == 0);
        oq.style = dp_chat_tool_style_for(tpl);
        free(tpl);
        const char *r[] = {"[LOAD_FILE notes.txt]", "[LOAD_FILE notes.txt]",
                           "[LOAD_FILE notes.txt]", "unused"};
        script sc = {.replies = r, .n_replies = 4, .interrupt_at = -1, .answer_yes = true};
        dp_session s;
        dp_session_init(&s, NULL);
        CHECK_EQ_INT(0, run_turn(&s, &oq, &sc, "loop"));
        CHECK_EQ_INT(3, sc.next);
        CHECK_EQ_INT(6, s.n); /* user, (assistant, results) x2, assistant */
        CHECK_EQ_STR("user", ROLE(2));
        CHECK_EQ_STR("<tool_response>\n[LOAD_FILE notes.txt] returned:\nThe meeting is on "
                     "Tuesday at 3pm.\n</tool_response>",
                     MSG(2));
        CHECK(strstr(sc.shown[DP_SHOW_RESULT].data, "too many tool rounds") != NULL);
        script_free(&sc);
        dp_session_free(&s);
    }
    { /* an interrupted reply is kept as far as it went; its calls are not run */
        const char *r[] = {"[MARK x]"};
        script sc = {.replies = r, .n_replies = 1, .interrupt_at = 0, .answer_yes = true};
        dp_session s;
        dp_session_init(&s, NULL);
        snprintf(p, sizeof p, "%s/ran", work_dir);
        unlink(p);
        CHECK_EQ_INT(1, run_turn(&s, &o, &sc, "go"));
        CHECK_EQ_INT(2, s.n);
        CHECK_EQ_INT(0, sc.asked);
        CHECK(access(p, F_OK) != 0);
        script_free(&sc);
        dp_session_free(&s);
    }
    /* a tool that cannot describe itself is named */
    snprintf(p, sizeof p, "%s/mute", tools_dir);
    write_file(p, "#!/bin/sh\nexit 1\n", 0755);
    dp_toolbox *bad = dp_toolbox_open(tools_dir, &lim);
    CHECK(bad == NULL);
    CHECK_REPORT(strstr(dp_last_error(), "tool mute") != NULL, "got: %s", dp_last_error());
    CHECK(dp_toolbox_open(work_dir, &lim) == NULL); /* no executable in it */
    CHECK(strstr(dp_last_error(), "no executable") != NULL);

    dp_toolbox_close(tb);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return check_done();
}
