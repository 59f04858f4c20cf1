/* doppel chat: talk to a model (later: the persona) in the terminal, a REPL with libedit line
 * editing and history, or one answer with --prompt for scripts; with --tools the model may
 * call the helper programs of a directory (infer/tools.h runs the turn). */
#include "cmd/commands.h"
#include "data/chat_format.h"
#include "data/base/error.h"
#include "data/base/json.h"
#include "data/tokenizer.h"
#include "infer/adapter.h"
#include "infer/generate.h"
#include "infer/config.h"
#include "infer/model_load.h"
#include "infer/tools.h"
#include "kernels/cuda/kernels.h"
#include "kernels/device.h"

#include <cjson/cJSON.h>
#include <editline/readline.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    const char *model_path, *adapter_dir, *system_prompt, *as_name, *prompt_text, *device,
        *chat_format, *precision, *decode, *tools_dir, *tools_cwd;
    int64_t max_context, max_tokens, top_k, seed;     /* INT64_MIN: not given */
    double temperature, top_p, min_p, repeat_penalty; /* NAN: not given */
    double tool_timeout;
    int64_t tool_output, tool_rounds;
    bool show_stats, exact_lm_head, yes, show_thinking;
} chat_options;

static chat_options chat_defaults(void) {
    return (chat_options){.device = "auto",
                          .precision = "nf4",
                          .decode = "fp32",
                          .max_context = 2048,
                          .max_tokens = 512,
                          .top_k = INT64_MIN,
                          .seed = INT64_MIN,
                          .temperature = NAN,
                          .top_p = NAN,
                          .min_p = NAN,
                          .repeat_penalty = NAN,
                          .tool_timeout = 10,
                          .tool_output = 16384,
                          .tool_rounds = 8};
}

#define F(field) DP_FIELD(chat_options, field)

static const dp_opt opts[] = {
    {"model", DP_OPT_STRING, F(model_path), "M", "model: Hugging Face directory or .gguf file"},
    {"adapter", DP_OPT_STRING, F(adapter_dir), "DIR", "LoRA adapter from `doppel train`"},
    {"system", DP_OPT_STRING, F(system_prompt), "TEXT", "system prompt"},
    {"as", DP_OPT_STRING, F(as_name), "NAME", "send your messages as `[NAME]: text` lines"},
    {"prompt", DP_OPT_STRING, F(prompt_text), "TEXT", "answer this one message and exit"},
    {"max-context", DP_OPT_INT, F(max_context), "N",
     "context in tokens; older turns are dropped beyond it (default 2048)"},
    {"max-tokens", DP_OPT_INT, F(max_tokens), "N", "longest reply in tokens (default 512)"},
    {"temperature", DP_OPT_DOUBLE, F(temperature), "T", "0 = greedy (default 0.7 or the model's)"},
    {"top-k", DP_OPT_INT, F(top_k), "K", "keep the K most likely tokens, 0 = off (default 40)"},
    {"top-p", DP_OPT_DOUBLE, F(top_p), "P", "nucleus sampling, 1 = off (default 0.9)"},
    {"min-p", DP_OPT_DOUBLE, F(min_p), "P", "drop tokens below P x the best one (default 0.05)"},
    {"repeat-penalty", DP_OPT_DOUBLE, F(repeat_penalty), "X",
     "penalize the last 64 tokens, 1 = off (default 1.1)"},
    {"seed", DP_OPT_INT, F(seed), "N", "sampling seed (default: from the clock)"},
    {"device", DP_OPT_STRING, F(device), "auto|cpu|cuda",
     "where to run (default auto: the GPU when there is one)"},
    {"precision", DP_OPT_STRING, F(precision), "nf4|fp32",
     "base weights: NF4 (default) or fp32 as loaded"},
    {"chat-format", DP_OPT_STRING, F(chat_format), "chatml|llama3",
     "override the format read from the chat template"},
    {"stats", DP_OPT_FLAG, F(show_stats), NULL, "print tokens/s after each reply"},
    {"exact-lm-head", DP_OPT_FLAG, F(exact_lm_head), NULL,
     "decode through the full-precision lm_head (default: a Q8 copy, 4x less to read per token)"},
    {"decode", DP_OPT_STRING, F(decode), "fp32|int8-head|int8",
     "CPU decode products: exact fp32 (default), int8 activations into the Q8 lm_head, or into "
     "every NF4 linear too, as llama.cpp rounds them (AVX512-VNNI)"},
    {"tools", DP_OPT_STRING, F(tools_dir), "DIR",
     "let the model call the executables of DIR (e.g. build/tools) by writing [NAME args]"},
    {"yes", DP_OPT_FLAG, F(yes), NULL, "run the model's tool calls without asking (y/N) first"},
    {"tool-timeout", DP_OPT_DOUBLE, F(tool_timeout), "S",
     "stop a tool after S seconds (default 10)"},
    {"tool-output", DP_OPT_SIZE, F(tool_output), "BYTES",
     "keep at most this much of a tool's output (default 16KiB)"},
    {"tool-rounds", DP_OPT_INT, F(tool_rounds), "N",
     "replies with tool calls after one message of yours, at most (default 8)"},
    {"tool-cwd", DP_OPT_STRING, F(tools_cwd), "DIR",
     "working directory of the tools (default: the current one)"},
    {"show-thinking", DP_OPT_FLAG, F(show_thinking), NULL,
     "show a reasoning model's <think> text, dimmed (default: hidden)"},
    {0},
};
#undef F

const dp_command_spec dp_chat_spec = {
    .name = "chat",
    .usage = "--model M [--adapter DIR] [--system TEXT] [--as NAME] [--prompt TEXT]",
    .summary = "chat with the persona in the terminal",
    .details =
        "In the REPL: /reset forgets the conversation (keeps the system prompt), /save FILE\n"
        "and /load FILE store and restore it as JSON, /temp X sets the temperature, /probs\n"
        "toggles a table of the 5 most likely next tokens at each step, /quit or Ctrl-D\n"
        "leaves. Ctrl-C stops a reply. Sampling defaults come from the model's\n"
        "generation_config.json where it has them.\n"
        "With --tools DIR every executable in DIR is a tool named after its file (load_file\n"
        "becomes LOAD_FILE); `TOOL --describe` gives its one-line description. The model\n"
        "calls it by writing [LOAD_FILE notes.txt]; each call is shown and asked (y/N)\n"
        "unless --yes, run without a shell, and its output goes back to the model, which\n"
        "then goes on. A reasoning model's <think> text is never kept in the history.",
    .opts = opts,
    .min_args = 0,
    .max_args = 0,
};

/* ---- one reply */
static volatile sig_atomic_t interrupted;
static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

typedef struct {
    dp_tokenizer *tok;
    dp_tok_stream stream;
    dp_buf text; /* the reply so far */
    bool probs;
    dp_tool_chat *turn; /* where the decoded text goes */
} reply_ctx;

/* A candidate token's own bytes as `doppel tokenize` shows them: a byte-level fragment of a
 * character prints as \xNN rather than as U+FFFD. */
static void print_token_text(const dp_tokenizer *t, int32_t id) {
    size_t len = 0;
    const char *b = dp_tokenizer_token_bytes(t, id, &len);
    dp_buf shown = {0};
    if (!dp_json_append_piece(&shown, b ? b : "", b ? len : 0)) fputs(shown.data, stdout);
    dp_buf_free(&shown);
}

static int on_token(void *vctx, int32_t id, const int32_t *top_ids, const float *top_probs,
                    int n_top) {
    reply_ctx *c = vctx;
    size_t before = c->text.len;
    if (dp_tok_stream_feed(&c->stream, c->tok, id, &c->text)) return -1;
    if (c->probs) {
        printf("  ");
        print_token_text(c->tok, id);
        printf("  <-");
        for (int i = 0; i < n_top; i++) {
            printf("  ");
            print_token_text(c->tok, top_ids[i]);
            printf(" %.1f%%", 100.0 * top_probs[i]);
        }
        putchar('\n');
    }
    int rc = c->text.len > before
                 ? dp_tool_chat_feed(c->turn, c->text.data + before, c->text.len - before)
                 : 0;
    fflush(stdout);
    return rc < 0 ? -1 : interrupted || rc ? 1 : 0;
}

typedef struct {
    const chat_options *opt;
    const char *format_name; /* --chat-format, else the adapter's, else NULL: the template's */
    dp_model *model;
    dp_tokenizer *tok;
    dp_chat_format format;
    dp_gen_state gen;
    dp_sampler sampler;
    dp_sampler_params sp;
    int32_t stop[16];
    int n_stop;
    int max_context, max_tokens;
    bool probs;
    dp_lora *lora;         /* --adapter, applied through the forward hook */
    char *chat_format_buf; /* the adapter's chat_format */
    dp_toolbox *tools;     /* --tools */
    dp_tool_chat_opts turn;
    bool tty_out; /* stdout is a terminal: thoughts dimmed, calls in bold */
    dp_buf shown; /* /probs: the reply, printed after its table */
} chat_state;

/* --adapter DIR: the PEFT weights, checked against the base; doppel.json's system prompt and
 * chat format are used unless --system / --chat-format say otherwise (training = chat). */
static int load_adapter(chat_state *cs, dp_session *s, bool quiet) {
    char *dj = NULL;
    const char *adapter_dir = cs->opt->adapter_dir;
    if (dp_lora_load_peft(adapter_dir, &cs->model->cfg, &cs->lora, &dj)) return -1;
    int rc = 0;
    if (dj) {
        rc = dp_adapter_check_base(dj, adapter_dir, cs->model);
        cJSON *j = NULL;
        char where[4096];
        snprintf(where, sizeof where, "%s/doppel.json", adapter_dir);
        if (!rc) rc = dp_json_parse(dj, strlen(dj), DP_JSON_REFUSE_NUL, where, 1, &j);
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(j, "system_prompt");
        const cJSON *cf = cJSON_GetObjectItemCaseSensitive(j, "chat_format");
        const cJSON *pn = cJSON_GetObjectItemCaseSensitive(j, "persona");
        if (!cs->opt->system_prompt && cJSON_IsString(sp) && !s->system)
            s->system = dp_strdup(sp->valuestring);
        if (!cs->format_name && cJSON_IsString(cf))
            cs->format_name = cs->chat_format_buf = dp_strdup(cf->valuestring);
        if (cJSON_IsString(pn) && !quiet)
            fprintf(stderr, "doppel chat: adapter %s (persona %s)\n", adapter_dir, pn->valuestring);
        cJSON_Delete(j);
        free(dj);
    }
    return rc;
}

/* One reply to the session as it stands, its text streamed into the turn. 1: interrupted. */
static int generate_reply(void *ctx, dp_session *s, dp_tool_chat *turn) {
    chat_state *cs = ctx;
    int reserve = cs->max_tokens < cs->max_context / 2 ? cs->max_tokens : cs->max_context / 2;
    dp_chat_tokens ct = {0};
    int dropped = 0;
    if (dp_session_render(s, cs->tok, cs->format, cs->max_context - reserve, &ct, &dropped)) {
        dp_chat_tokens_free(&ct);
        return -1;
    }
    if (dropped) fprintf(stderr, "(history trimmed: %d oldest messages dropped)\n", dropped);

    reply_ctx rc_ctx = {.tok = cs->tok, .probs = cs->probs, .turn = turn};
    rc_ctx.stream.skip_special = true;
    dp_gen_opts go = {
        .max_tokens = cs->max_tokens, .stop = cs->stop, .n_stop = cs->n_stop, .top = cs->probs};
    dp_gen_result res;
    interrupted = 0;
    struct sigaction sa = {0}, old;
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, &old);
    int rc = dp_generate(&cs->gen, &cs->sampler, ct.ids.v, (int)ct.ids.n, &go, on_token, &rc_ctx,
                         NULL, &res);
    sigaction(SIGINT, &old, NULL);
    dp_chat_tokens_free(&ct);
    size_t before = rc_ctx.text.len;
    if (!rc) rc = dp_tok_stream_flush(&rc_ctx.stream, &rc_ctx.text);
    if (!rc && rc_ctx.text.len > before &&
        dp_tool_chat_feed(turn, rc_ctx.text.data + before, rc_ctx.text.len - before) < 0)
        rc = -1;
    dp_buf_free(&rc_ctx.text);
    if (rc) return -1;
    if (interrupted) fprintf(stderr, "(stopped)\n");
    if (!strcmp(res.finish, "context")) fprintf(stderr, "(the context is full)\n");
    if (cs->opt->show_stats)
        fprintf(stderr,
                "[prompt %d tokens (%d cached) in %.2f s; %d tokens in %.2f s, %.1f tok/s; "
                "finish: %s]\n",
                res.n_prompt, res.n_reused, res.prefill_seconds, res.n_generated,
                res.decode_seconds,
                res.decode_seconds > 0 ? res.n_generated / res.decode_seconds : 0.0, res.finish);
    return interrupted ? 1 : 0;
}

/* What the turn shows: the reply, thoughts (--show-thinking), calls and what the model is
 * told about them. */
static void show(void *ctx, dp_show_kind kind, const char *text, size_t n) {
    chat_state *cs = ctx;
    const char *on = "", *off = "";
    switch (kind) {
    case DP_SHOW_TEXT:
        if (cs->probs)
            dp_buf_append(&cs->shown, text, n);
        else
            fwrite(text, 1, n, stdout);
        break;
    case DP_SHOW_THOUGHT:
        if (!cs->opt->show_thinking) break;
        if (cs->tty_out) on = "\033[2m", off = "\033[0m";
        printf("%s%.*s%s", on, (int)n, text, off);
        break;
    case DP_SHOW_CALL:
        if (cs->probs) {
            dp_buf_append(&cs->shown, text, n);
            break;
        }
        if (cs->tty_out) on = "\033[1m", off = "\033[0m";
        printf("%s%.*s%s", on, (int)n, text, off);
        break;
    case DP_SHOW_RESULT: {
        /* the first lines: enough to see what happened without flooding the terminal */
        size_t cut = 0;
        int lines = 0;
        while (cut < n && lines < 8) lines += text[cut++] == '\n';
        if (cs->tty_out) on = "\033[2m", off = "\033[0m";
        printf("%s(tool) %.*s%s%s\n", on, (int)cut, text, cut < n ? "..." : "", off);
        break;
    }
    case DP_SHOW_END:
        if (cs->probs && cs->shown.len) fwrite(cs->shown.data, 1, cs->shown.len, stdout);
        cs->shown.len = 0;
        putchar('\n');
        break;
    }
    fflush(stdout);
}

static char *read_line(bool tty);

/* (y/N) before a tool runs; anything but y/yes (or the end of input) is no. */
static bool confirm(void *ctx, const dp_tool_call *c, const dp_tool *tool) {
    (void)ctx;
    printf("run %s", tool->path);
    for (int i = 0; i < c->n_args; i++) printf(" '%s'", c->args[i]);
    printf("? (y/N) ");
    fflush(stdout);
    bool tty = isatty(STDIN_FILENO);
    char *line = tty ? readline("") : read_line(false);
    if (!tty) putchar('\n');
    bool yes = line && (!strcasecmp(line, "y") || !strcasecmp(line, "yes"));
    free(line);
    return yes;
}

/* Sends the user's line, streams the reply (and the tool rounds after it), and records them
 * in the session. */
static int answer(chat_state *cs, dp_session *s, const char *line) {
    dp_buf msg = {0};
    const char *as_name = cs->opt->as_name;
    if (as_name && *as_name ? dp_buf_printf(&msg, "[%s]: %s", as_name, line)
                            : dp_buf_puts(&msg, line))
        return -1;
    int rc = dp_session_add(s, "user", msg.data);
    dp_buf_free(&msg);
    if (rc) return -1;
    int n_before = s->n;
    dp_tool_chat_io io = {generate_reply, show, cs->opt->yes ? NULL : confirm, cs};
    rc = dp_tool_chat_reply(s, &cs->turn, &io);
    if (rc < 0 && s->n == n_before) { /* the message that does not fit is not kept */
        s->n--;
        free(s->msgs[s->n].role);
        free(s->msgs[s->n].content);
    }
    return rc < 0 ? -1 : 0;
}

/* ---- the REPL */
static char *read_line(bool tty) {
    if (tty) return readline("> ");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
    return line;
}

static void help(void) {
    printf("commands: /reset  /save FILE  /load FILE  /temp X  /probs  /quit (or Ctrl-D); "
           "Ctrl-C stops a reply\n");
}

static int repl(chat_state *cs, dp_session *s) {
    bool tty = isatty(STDIN_FILENO);
    char hist[4096] = "";
    const char *home = getenv("HOME");
    if (tty) {
        if (home) {
            snprintf(hist, sizeof hist, "%s/.doppel_history", home);
            read_history(hist);
        }
        printf("doppel chat: %s (%s). /help for commands, Ctrl-D to leave.\n", cs->opt->model_path,
               dp_chat_format_name(cs->format));
    }
    char *line;
    while ((line = read_line(tty))) {
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (!*p) {
            free(line);
            continue;
        }
        if (tty) add_history(p);
        int rc = 0;
        if (*p == '/') {
            char *arg = strchr(p, ' ');
            if (arg) {
                *arg++ = 0;
                while (*arg == ' ') arg++;
            }
            if (!strcmp(p, "/quit") || !strcmp(p, "/exit")) {
                free(line);
                break;
            } else if (!strcmp(p, "/reset")) {
                dp_session_reset(s);
                printf("(conversation cleared%s)\n", s->system ? "; system prompt kept" : "");
            } else if (!strcmp(p, "/save") && arg && *arg) {
                rc = dp_session_save(s, arg);
                if (!rc) printf("(saved %d messages to %s)\n", s->n, arg);
            } else if (!strcmp(p, "/load") && arg && *arg) {
                rc = dp_session_load(s, arg);
                if (!rc) printf("(loaded %d messages from %s)\n", s->n, arg);
            } else if (!strcmp(p, "/temp") && arg && *arg) {
                char *end;
                double t = strtod(arg, &end);
                if (*end || !(t >= 0 && t <= 100)) {
                    printf("/temp needs a number from 0 (greedy) to 100\n");
                } else {
                    cs->sp.temperature = (float)t;
                    dp_sampler_set(&cs->sampler, &cs->sp);
                    printf("(temperature %g)\n", t);
                }
            } else if (!strcmp(p, "/probs")) {
                cs->probs = !cs->probs;
                printf("(next-token table %s)\n", cs->probs ? "on" : "off");
            } else {
                help();
            }
        } else {
            rc = answer(cs, s, p);
        }
        if (rc) fprintf(stderr, "doppel chat: %s\n", dp_last_error());
        free(line);
    }
    if (tty && *hist) write_history(hist);
    return DP_EXIT_OK;
}

/* Sampling: defaults < generation_config.json < command line. 0 or the exit code. */
static int choose_sampling(const chat_options *o, dp_sampler_params *sp) {
    *sp = dp_sampler_defaults();
    if (dp_sampler_params_from_generation_config(sp, o->model_path))
        return dp_runtime_error(&dp_chat_spec);
    if (!isnan(o->temperature)) sp->temperature = (float)o->temperature;
    if (!isnan(o->top_p)) sp->top_p = (float)o->top_p;
    if (!isnan(o->min_p)) sp->min_p = (float)o->min_p;
    if (!isnan(o->repeat_penalty)) sp->repeat_penalty = (float)o->repeat_penalty;
    if (o->top_k != INT64_MIN) sp->top_k = (int)o->top_k;
    sp->seed = o->seed != INT64_MIN ? (uint64_t)o->seed : (uint64_t)time(NULL);
    if (!(sp->temperature >= 0) || !(sp->top_p > 0 && sp->top_p <= 1) ||
        !(sp->min_p >= 0 && sp->min_p <= 1) || !(sp->repeat_penalty > 0) || sp->top_k < 0)
        return dp_usage_error(&dp_chat_spec, "sampling: need temperature >= 0, 0 < top-p <= 1, "
                                             "0 <= min-p <= 1, repeat-penalty > 0, top-k >= 0");
    return 0;
}

static int chat(const chat_options *o, bool quiet);

/* --tools DIR: the toolbox (its rules go after the system prompt: tools_prompt). */
static int open_tools(chat_state *cs) {
    const chat_options *o = cs->opt;
    dp_tool_limits lim = {
        .timeout_s = o->tool_timeout, .output_cap = (size_t)o->tool_output, .cwd = o->tools_cwd};
    if (o->tools_cwd) {
        struct stat st;
        if (stat(o->tools_cwd, &st) || !S_ISDIR(st.st_mode))
            return dp_fail("--tool-cwd %s: not a directory", o->tools_cwd);
    }
    if (!(cs->tools = dp_toolbox_open(o->tools_dir, &lim))) return -1;
    cs->turn.tools = cs->tools;
    cs->turn.max_rounds = (int)o->tool_rounds;
    return 0;
}

static int tools_prompt(chat_state *cs, dp_session *s) {
    dp_buf sys = {0};
    if ((s->system && dp_buf_printf(&sys, "%s\n\n", s->system)) ||
        dp_toolbox_prompt(cs->tools, &sys))
        return -1;
    free(s->system);
    s->system = sys.data;
    return 0;
}

int dp_cmd_chat(int argc, char **argv) {
    chat_options o = chat_defaults();
    dp_cli cli;
    int rc = dp_cli_parse(&dp_chat_spec, argc, argv, &o, &cli);
    if (rc) return rc < 0 ? DP_EXIT_OK : rc;
    rc = chat(&o, cli.quiet);
    dp_cli_free(&cli);
    return rc;
}

/* Checks the options, loads the model and answers --prompt or runs the REPL. The exit code. */
static int chat(const chat_options *o, bool quiet) {
    int rc = DP_EXIT_OK;
    chat_state cs;
    memset(&cs, 0, sizeof cs);
    cs.opt = o;
    cs.format_name = o->chat_format;
    dp_session s;
    dp_session_init(&s, o->system_prompt);
    bool gen_ok = false, sampler_ok = false;
    const char *precision = o->precision;

    if (!o->model_path) {
        rc = dp_usage_error(&dp_chat_spec, "--model is required (a model directory or .gguf)");
        goto out;
    }
    if (strcmp(precision, "nf4") && strcmp(precision, "fp32")) {
        rc = dp_usage_error(&dp_chat_spec, "--precision must be nf4 or fp32, not '%s'", precision);
        goto out;
    }
    const int decode = dp_decode_mode_parse(o->decode);
    if (decode < 0) {
        rc = dp_usage_error(&dp_chat_spec, "--decode must be fp32, int8-head or int8, not '%s'",
                            o->decode);
        goto out;
    }
    if (!(o->tool_timeout > 0 && o->tool_timeout <= 3600) || o->tool_output < 1 ||
        o->tool_output > 1 << 24 || o->tool_rounds < 1 || o->tool_rounds > 1000) {
        rc = dp_usage_error(&dp_chat_spec, "--tool-timeout must be in (0, 3600] seconds, "
                                           "--tool-output 1 byte..16MiB and --tool-rounds "
                                           "1..1000");
        goto out;
    }
    if (o->max_context < 16 || o->max_context > 1 << 20 || o->max_tokens < 1 ||
        o->max_tokens > 1 << 20) {
        rc = dp_usage_error(&dp_chat_spec, "--max-context must be 16..1048576 and --max-tokens "
                                           "1..1048576");
        goto out;
    }
    /* the same --device names and choice as train and serve, the hidden emu included (the
     * serve tests compare with chat on it) */
    dp_device dev;
    bool bad_name;
    if (dp_device_select(o->device, true, &dev, &bad_name)) {
        rc = dp_usage_error(&dp_chat_spec, "%s", dev.why);
        goto out;
    }
    if ((rc = choose_sampling(o, &cs.sp))) goto out;

    if (o->tools_dir && open_tools(&cs)) { /* before the model: a bad directory fails fast */
        rc = dp_runtime_error(&dp_chat_spec);
        goto out;
    }
    cs.tok = dp_model_tokenizer(o->model_path);
    if (!cs.tok) {
        rc = dp_runtime_error(&dp_chat_spec);
        goto out;
    }
    dp_load_opts lo = {
        .nf4 = !strcmp(precision, "nf4"), .quiet = quiet, .lm_head_q8 = !o->exact_lm_head};
    cs.model = dp_model_load(o->model_path, &lo);
    if (!cs.model) {
        rc = dp_runtime_error(&dp_chat_spec);
        goto out;
    }
    const bool int8_on = dp_model_set_decode(cs.model, (dp_decode_mode)decode);
    if (decode != DP_DECODE_FP32 && !int8_on)
        fprintf(stderr, "doppel chat: --decode %s: %s; decoding in fp32\n", o->decode,
                dp_gemv_i8_supported() ? "no layer of this model has a shape it takes"
                                       : "this CPU has no AVX512-VNNI");
    const dp_model_config *c = &cs.model->cfg;
    if (o->adapter_dir && load_adapter(&cs, &s, quiet)) {
        rc = dp_runtime_error(&dp_chat_spec);
        goto out;
    }
    if (dp_chat_format_choose(dp_tokenizer_chat_template(cs.tok), cs.format_name, &cs.format)) {
        rc = dp_runtime_error(&dp_chat_spec);
        goto out;
    }
    if (o->tools_dir && tools_prompt(&cs, &s)) {
        rc = dp_runtime_error(&dp_chat_spec);
        goto out;
    }
    const char *tpl = dp_tokenizer_chat_template(cs.tok);
    cs.turn.style = dp_chat_tool_style_for(tpl);
    cs.turn.thinking = dp_tokenizer_token_id(cs.tok, "<think>") >= 0 &&
                       dp_tokenizer_token_id(cs.tok, "</think>") >= 0;
    cs.tty_out = isatty(STDOUT_FILENO);
    cs.max_context = (int)o->max_context;
    if (c->max_position > 0 && cs.max_context > c->max_position) cs.max_context = c->max_position;
    cs.max_tokens = (int)o->max_tokens;
    const dp_gpu_ops *gpu_ops = dev.gpu;
    if (gpu_ops ? dp_gen_state_create_gpu(&cs.gen, gpu_ops, cs.model, cs.lora, cs.max_context, true)
                : dp_gen_state_create(&cs.gen, cs.model, cs.max_context)) {
        rc = dp_runtime_error(&dp_chat_spec);
        goto out;
    }
    gen_ok = true;
    if (cs.lora && !gpu_ops) dp_forward_set_hook(&cs.gen.fwd, dp_lora_hook, cs.lora);
    int n_valid = dp_tokenizer_vocab_size(cs.tok);
    if (n_valid > c->V) n_valid = c->V;
    if (dp_sampler_create(&cs.sampler, &cs.sp, c->V, n_valid)) {
        rc = dp_runtime_error(&dp_chat_spec);
        goto out;
    }
    sampler_ok = true;
    cs.n_stop = dp_chat_stop_ids(cs.tok, cs.format, cs.stop, 8);
    for (int i = 0; i < c->n_eos && cs.n_stop < 16; i++) {
        bool have = false;
        for (int j = 0; j < cs.n_stop; j++) have |= cs.stop[j] == c->eos_ids[i];
        if (!have) cs.stop[cs.n_stop++] = c->eos_ids[i];
    }
    if (!quiet && gpu_ops)
        fprintf(stderr,
                "doppel chat: %s, %s weights on %s (%s, bf16 activations); %.1f MiB of device "
                "memory for %d tokens; temperature %g top-k %d top-p %g min-p %g repeat-penalty "
                "%g\n",
                dp_arch_name(c->arch), precision, dev.cuda.name, gpu_ops->backend,
                dp_gpu_forward_table(cs.gen.gpu)->total / 1048576.0, cs.max_context,
                cs.sp.temperature, cs.sp.top_k, cs.sp.top_p, cs.sp.min_p, cs.sp.repeat_penalty);
    else if (!quiet)
        fprintf(stderr,
                "doppel chat: %s, %s weights on the CPU%s%s; KV cache %.1f MiB for %d tokens, "
                "activations %.1f MiB; temperature %g top-k %d top-p %g min-p %g repeat-penalty "
                "%g\n",
                dp_arch_name(c->arch), precision,
                dev.asked == DP_DEVICE_CPU || dev.cuda.compiled ? "" : " (no CUDA in this build)",
                !int8_on                   ? ""
                : decode == DP_DECODE_INT8 ? ", int8 decode activations"
                                           : ", int8 activations into the lm_head",
                cs.gen.fwd.kv_bytes / 1048576.0, cs.max_context, cs.gen.fwd.act_bytes / 1048576.0,
                cs.sp.temperature, cs.sp.top_k, cs.sp.top_p, cs.sp.min_p, cs.sp.repeat_penalty);

    if (o->prompt_text) {
        if (answer(&cs, &s, o->prompt_text)) rc = dp_runtime_error(&dp_chat_spec);
    } else {
        rc = repl(&cs, &s);
    }
out:
    if (sampler_ok) dp_sampler_free(&cs.sampler);
    if (gen_ok) dp_gen_state_free(&cs.gen);
    dp_lora_free(cs.lora);
    dp_toolbox_close(cs.tools);
    dp_buf_free(&cs.shown);
    free(cs.chat_format_buf);
    dp_model_free(cs.model);
    dp_tokenizer_free(cs.tok);
    dp_session_free(&s);
    return rc;
}
