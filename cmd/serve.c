/* doppel serve: the personas over an OpenAI-compatible HTTP API and a group-chat page
 * (infer/server.h), bound to loopback unless --host says otherwise. Ctrl-C drains and exits. */
#include "cmd/commands.h"
#include "data/base/error.h"
#include "data/base/io.h"
#include "infer/model_load.h"
#include "infer/server.h"
#include "kernels/device.h"
#include "kernels/nf4.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *model_path, *host, *api_key_file, *system_prompt, *chat_format, *alias, *precision,
        *decode, *device;
    dp_strlist adapters, api_keys;
    int64_t port, parallel, max_context, max_tokens, max_queue, max_body, timeout_s, drain_s;
    bool exact_lm_head;
} serve_options;

static serve_options serve_defaults(void) {
    return (serve_options){.host = "127.0.0.1",
                           .precision = "nf4",
                           .decode = "fp32",
                           .device = "cpu",
                           .port = 8080,
                           .parallel = 4,
                           .max_context = 2048,
                           .max_tokens = 512,
                           .max_queue = 64,
                           .max_body = 1 << 20,
                           .timeout_s = 30,
                           .drain_s = 30};
}

#define F(field) DP_FIELD(serve_options, field)

static const dp_opt opts[] = {
    {"model", DP_OPT_STRING, F(model_path), "M",
     "base model: Hugging Face directory or .gguf file"},
    {"adapter", DP_OPT_LIST, F(adapters), "NAME=DIR",
     "a persona: the adapter from `doppel train` in DIR, served as model NAME (repeatable)"},
    {"alias", DP_OPT_STRING, F(alias), "NAME", "the base model's name (default: the file's name)"},
    {"host", DP_OPT_STRING, F(host), "ADDR", "address to listen on (default 127.0.0.1)"},
    {"port", DP_OPT_INT, F(port), "N", "port (default 8080; 0 = any free port)"},
    {"api-key", DP_OPT_LIST, F(api_keys), "KEY",
     "require `Authorization: Bearer KEY` (repeatable: any of them)"},
    {"api-key-file", DP_OPT_STRING, F(api_key_file), "FILE", "the keys, one a line"},
    {"parallel", DP_OPT_INT, F(parallel), "N", "sequences generated at once (default 4)"},
    {"max-context", DP_OPT_INT, F(max_context), "N",
     "tokens per conversation, prompt and reply (default 2048)"},
    {"max-tokens", DP_OPT_INT, F(max_tokens), "N",
     "a reply's default and largest length in tokens (default 512)"},
    {"max-queue", DP_OPT_INT, F(max_queue), "N",
     "requests waiting for a free sequence before 503 (default 64)"},
    {"max-body", DP_OPT_SIZE, F(max_body), "SIZE", "largest request body, else 413 (default 1MiB)"},
    {"timeout", DP_OPT_INT, F(timeout_s), "S",
     "drop idle or stalled clients after S s (default 30)"},
    {"drain", DP_OPT_INT, F(drain_s), "S",
     "on Ctrl-C, let running replies finish for up to S s (default 30)"},
    {"system", DP_OPT_STRING, F(system_prompt), "TEXT",
     "system prompt when a request has none (default: each adapter's doppel.json)"},
    {"chat-format", DP_OPT_STRING, F(chat_format), "chatml|llama3",
     "override the format read from the chat template"},
    {"precision", DP_OPT_STRING, F(precision), "nf4|fp32", "base weights (default nf4)"},
    {"exact-lm-head", DP_OPT_FLAG, F(exact_lm_head), NULL,
     "decode through the full-precision lm_head (default: a Q8 copy)"},
    {"decode", DP_OPT_STRING, F(decode), "fp32|int8-head|int8",
     "decode products: exact fp32 (default), int8 activations into the Q8 lm_head, or into "
     "every NF4 linear too, as llama.cpp rounds them (AVX512-VNNI)"},
    {"device", DP_OPT_STRING, F(device), "cpu|cuda|auto",
     "where the model runs (default cpu; cuda: every sequence's cache and every adapter on the "
     "GPU, bf16 activations)"},
    {0},
};
#undef F

const dp_command_spec dp_serve_spec = {
    .name = "serve",
    .usage = "--model M [--adapter NAME=DIR ...] [--host ADDR] [--port N] [--api-key KEY]",
    .summary = "serve the personas over an OpenAI-compatible HTTP API and a chat page",
    .details =
        "Endpoints: POST /v1/chat/completions (OpenAI's, stream or not; `model` is a persona\n"
        "NAME or the base model, a user message's `name` becomes its `[name]: ` prefix),\n"
        "GET /v1/models, GET /health, GET /metrics, POST /tokenize, and the page at /.\n"
        "Generation runs on the CPU, or on the GPU with --device cuda. Ctrl-C stops taking\n"
        "requests, lets running replies finish (--drain) and exits.",
    .opts = opts,
    .min_args = 0,
    .max_args = 0,
};

static bool is_loopback(const char *h) {
    struct in_addr a4;
    struct in6_addr a6;
    if (!strcmp(h, "localhost")) return true;
    if (inet_pton(AF_INET, h, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, h, &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
    return false;
}

/* one key per line; blank lines and surrounding spaces ignored */
static int read_key_file(const char *path, char **text, dp_strlist *keys) {
    size_t len;
    if (dp_read_file(path, text, &len)) return -1;
    for (char *line = strtok(*text, "\r\n"); line; line = strtok(NULL, "\r\n")) {
        while (*line == ' ' || *line == '\t') line++;
        char *end = line + strlen(line);
        while (end > line && (end[-1] == ' ' || end[-1] == '\t')) *--end = 0;
        if (*line && dp_strlist_push(keys, line)) return -1;
    }
    return 0;
}

int dp_cmd_serve(int argc, char **argv) {
    dp_cli cli;
    serve_options o = serve_defaults();
    int rc = dp_cli_parse(&dp_serve_spec, argc, argv, &o, &cli);
    if (rc) return rc < 0 ? DP_EXIT_OK : rc;
    char *key_text = NULL, *base_name = NULL;
    const char **names = NULL, **dirs = NULL;
    char **adapter_copies = NULL;
    dp_server *srv = NULL;
    dp_engine *eng = NULL;

    if (!o.model_path) {
        rc = dp_usage_error(&dp_serve_spec, "--model is required (a model directory or .gguf)");
        goto out;
    }
    if (o.port < 0 || o.port > 65535 || o.parallel < 1 || o.parallel > 256 || o.max_context < 16 ||
        o.max_context > 1 << 20 || o.max_tokens < 1 || o.max_tokens > 1 << 20 || o.max_queue < 1 ||
        o.max_queue > 100000 || o.max_body < 1024 || o.timeout_s < 1 || o.drain_s < 0) {
        rc = dp_usage_error(&dp_serve_spec,
                            "need 0 <= --port <= 65535, 1 <= --parallel <= 256, --max-context "
                            "16..1048576, --max-tokens 1..1048576, --max-queue >= 1, --max-body "
                            ">= 1KiB, --timeout >= 1, --drain >= 0");
        goto out;
    }
    if (strcmp(o.precision, "nf4") && strcmp(o.precision, "fp32")) {
        rc = dp_usage_error(&dp_serve_spec, "--precision must be nf4 or fp32, not '%s'", o.precision);
        goto out;
    }
    const int decode = dp_decode_mode_parse(o.decode);
    if (decode < 0) {
        rc = dp_usage_error(&dp_serve_spec, "--decode must be fp32, int8-head or int8, not '%s'",
                            o.decode);
        goto out;
    }
    /* the --device names of chat and train; serve takes the hidden emu too, for its tests */
    dp_device dev;
    bool bad_name; /* unused: an unknown name and a missing backend are both usage errors */
    if (dp_device_select(o.device, true, &dev, &bad_name)) {
        rc = dp_usage_error(&dp_serve_spec, "%s", dev.why);
        goto out;
    }
    if (dev.cpu_fallback)
        fprintf(stderr, "doppel serve: no CUDA device (%s): serving on the CPU\n", dev.cuda.status);
    if (dev.gpu && decode != DP_DECODE_FP32) {
        rc = dp_usage_error(&dp_serve_spec, "--decode %s is a CPU path; drop it with --device %s",
                            o.decode, o.device);
        goto out;
    }
    if (decode != DP_DECODE_FP32 && !dp_gemv_i8_supported())
        fprintf(stderr,
                "doppel serve: --decode %s: this CPU has no AVX512-VNNI; decoding in fp32\n",
                o.decode);
    names = calloc((size_t)o.adapters.n + 1, sizeof *names);
    dirs = calloc((size_t)o.adapters.n + 1, sizeof *dirs);
    adapter_copies = calloc((size_t)o.adapters.n + 1, sizeof *adapter_copies);
    if (!names || !dirs || !adapter_copies) {
        rc = DP_EXIT_ERROR;
        goto out;
    }
    for (int i = 0; i < o.adapters.n; i++) {
        char *a = adapter_copies[i] = dp_strdup(o.adapters.items[i]);
        char *eq = a ? strchr(a, '=') : NULL;
        if (!eq || eq == a || !eq[1]) {
            rc = dp_usage_error(&dp_serve_spec,
                                "--adapter %s: expected NAME=DIR (the persona's model name, then "
                                "the directory `doppel train --out` wrote)",
                                o.adapters.items[i]);
            goto out;
        }
        *eq = 0;
        names[i] = a;
        dirs[i] = eq + 1;
    }
    if (o.api_key_file && read_key_file(o.api_key_file, &key_text, &o.api_keys)) {
        rc = dp_runtime_error(&dp_serve_spec);
        goto out;
    }
    if (o.api_key_file && !o.api_keys.n) {
        rc = dp_usage_error(&dp_serve_spec, "--api-key-file %s holds no key", o.api_key_file);
        goto out;
    }
    if (!is_loopback(o.host) && !o.api_keys.n)
        fprintf(stderr,
                "doppel serve: warning: listening on %s without --api-key: anyone who can reach "
                "this address can use the model\n",
                o.host);

    /* Ctrl-C and SIGTERM are taken by sigwait below: blocked here, before any thread starts,
     * so every thread inherits the mask and none is interrupted */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (!o.alias) {
        const char *b = strrchr(o.model_path, '/');
        b = b && b[1] ? b + 1 : o.model_path;
        base_name = dp_strdup(b);
        size_t n = base_name ? strlen(base_name) : 0;
        while (n > 1 && base_name[n - 1] == '/') base_name[--n] = 0;
        if (n > 5 && !strcmp(base_name + n - 5, ".gguf")) base_name[n - 5] = 0;
        o.alias = base_name;
    }
    dp_http_config hc = {.host = o.host,
                         .port = (int)o.port,
                         .api_keys = o.api_keys.items,
                         .n_api_keys = o.api_keys.n,
                         .max_body = (size_t)o.max_body,
                         .timeout_s = (int)o.timeout_s,
                         .max_connections = 256};
    if (!(srv = dp_server_start(&hc))) {
        rc = dp_runtime_error(&dp_serve_spec);
        goto out;
    }
    fprintf(stderr, "doppel serve: listening on http://%s%s%s:%d/ (loading %s)\n",
            strchr(o.host, ':') ? "[" : "", o.host, strchr(o.host, ':') ? "]" : "", dp_server_port(srv),
            o.model_path);
    dp_engine_config ec = {.model_path = o.model_path,
                           .base_id = o.alias,
                           .persona_names = names,
                           .persona_dirs = dirs,
                           .n_personas = o.adapters.n,
                           .system_prompt = o.system_prompt,
                           .chat_format = o.chat_format,
                           .slots = (int)o.parallel,
                           .max_context = (int)o.max_context,
                           .max_tokens = (int)o.max_tokens,
                           .max_queue = (int)o.max_queue,
                           .nf4 = !strcmp(o.precision, "nf4"),
                           .lm_head_q8 = !o.exact_lm_head,
                           .decode = decode,
                           .quiet = cli.quiet,
                           .gpu = dev.gpu};
    if (!(eng = dp_engine_create(&ec))) {
        rc = dp_runtime_error(&dp_serve_spec);
        goto out;
    }
    dp_server_set_engine(srv, eng);
    fprintf(stderr, "doppel serve: ready: models");
    for (int i = 0; i < dp_engine_persona_count(eng); i++)
        fprintf(stderr, " %s", dp_engine_persona_name(eng, i));
    fprintf(stderr, "; %d at once, %d tokens of context each, on %s; Ctrl-C to stop\n",
            (int)o.parallel, dp_engine_max_context(eng),
            !dev.gpu                     ? "the CPU"
            : dev.asked == DP_DEVICE_EMU ? "the GPU emulator"
                                         : dev.cuda.name);

    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr,
            "doppel serve: %s: finishing running replies (up to %d s; Ctrl-C again quits now), "
            "then exiting\n",
            sig == SIGINT ? "interrupted" : "terminated", (int)o.drain_s);
    signal(SIGINT, SIG_DFL); /* a second Ctrl-C ends the process at once */
    pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);
    dp_server_begin_drain(srv);
    dp_engine_drain(eng, (double)o.drain_s);
    rc = DP_EXIT_OK;
out:
    dp_server_stop(srv); /* connection threads first: they read the engine's jobs */
    dp_engine_destroy(eng);
    if (adapter_copies)
        for (int i = 0; i < o.adapters.n; i++) free(adapter_copies[i]);
    free(adapter_copies);
    free(names);
    free(dirs);
    free(key_text);
    free(base_name);
    dp_cli_free(&cli);
    return rc;
}
