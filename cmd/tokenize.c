/* doppel tokenize: show how a model's tokenizer splits text (pieces and ids), or tokenize JSONL
 * {"text": ...} lines into {"text": ..., "ids": [...]}. */
#include "cmd/commands.h"
#include "data/base/error.h"
#include "data/base/io.h"
#include "data/base/json.h"
#include "data/tokenizer.h"
#include "infer/gguf_tokenizer.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *model_path;
    bool ids_only, jsonl;
} tokenize_options;

static const dp_opt opts[] = {
    {"model", DP_OPT_STRING, DP_FIELD(tokenize_options, model_path), "PATH",
     "tokenizer.json, a Hugging Face model directory, or a .gguf file"},
    {"ids", DP_OPT_FLAG, DP_FIELD(tokenize_options, ids_only), NULL,
     "print only the ids, on one line"},
    {"jsonl", DP_OPT_FLAG, DP_FIELD(tokenize_options, jsonl), NULL,
     "read {\"text\": ...} lines on stdin, write {\"text\": ..., \"ids\": [...]} lines"},
    {0},
};

const dp_command_spec dp_tokenize_spec = {
    .name = "tokenize",
    .usage = "--model PATH [--ids] [--jsonl] [TEXT]",
    .summary = "show how a model tokenizes text",
    .details = "TEXT (several arguments are joined by spaces) or, without TEXT, all of stdin is\n"
               "tokenized. Special-token text such as <|im_end|> becomes its id; no BOS/EOS is\n"
               "added. The default output is one token per line: id, then its bytes as a JSON\n"
               "string (a token holding part of a UTF-8 character shows \\xNN escapes).",
    .opts = opts,
    .min_args = 0,
    .max_args = -1,
};

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int read_stdin(dp_buf *b) {
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0)
        if (dp_buf_append(b, chunk, n)) return -1;
    if (ferror(stdin)) return dp_fail("stdin: read error");
    return dp_buf_append(b, "", 0);
}

static int run_jsonl(dp_tokenizer *t) {
    dp_buf in = {0};
    if (read_stdin(&in)) return -1;
    dp_ids ids = {0};
    dp_buf out = {0};
    int line = 0, rc = 0;
    for (char *p = in.data; p < in.data + in.len && !rc;) {
        char *nl = memchr(p, '\n', (size_t)(in.data + in.len - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(in.data + in.len - p);
        line++;
        if (l && p[l - 1] == '\r') l--;
        bool blank = true;
        for (size_t k = 0; k < l && blank; k++) blank = p[k] == ' ' || p[k] == '\t';
        if (!blank) {
            cJSON *j = NULL;
            size_t text_len = 0;
            /* the text keeps every byte, NULs included: the tokenizer takes a length */
            if (dp_json_parse(p, l, DP_JSON_KEEP_NUL, "stdin", line, &j)) {
                rc = -1;
            } else if (!j) {
                rc = dp_fail("stdin:%d: not valid JSON", line);
            } else {
                const char *text =
                    dp_json_bytes(cJSON_GetObjectItemCaseSensitive(j, "text"), &text_len);
                ids.n = 0;
                if (!text)
                    rc = dp_fail("stdin:%d: no \"text\" string", line);
                else if (dp_tokenizer_encode(t, text, text_len, true, &ids))
                    rc = dp_fail_context("stdin:%d", line);
                else {
                    out.len = 0;
                    rc = dp_buf_puts(&out, "{\"text\":") ||
                         dp_json_append_string(&out, text, text_len) ||
                         dp_buf_puts(&out, ",\"ids\":[");
                    for (size_t i = 0; i < ids.n && !rc; i++)
                        rc = dp_buf_printf(&out, "%s%d", i ? "," : "", (int)ids.v[i]);
                    if (!rc) rc = dp_buf_puts(&out, "]}\n");
                    if (!rc) fwrite(out.data, 1, out.len, stdout);
                }
            }
            cJSON_Delete(j);
        }
        p += (nl ? (size_t)(nl - p) : l) + 1;
    }
    dp_ids_free(&ids);
    dp_buf_free(&out);
    dp_buf_free(&in);
    return rc;
}

int dp_cmd_tokenize(int argc, char **argv) {
    tokenize_options o = {0};
    dp_cli cli;
    int rc = dp_cli_parse(&dp_tokenize_spec, argc, argv, &o, &cli);
    if (rc) return rc < 0 ? DP_EXIT_OK : rc;
    const char *model_path = o.model_path;
    if (!model_path) {
        rc = dp_usage_error(&dp_tokenize_spec, "--model PATH is required");
        goto done;
    }
    if (o.jsonl && cli.args.n) {
        rc = dp_usage_error(&dp_tokenize_spec, "--jsonl reads stdin; give no TEXT");
        goto done;
    }
    dp_tokenizer *t = ends_with(model_path, ".gguf") ? dp_tokenizer_load_gguf(model_path)
                                                     : dp_tokenizer_load(model_path);
    if (!t) {
        rc = dp_runtime_error(&dp_tokenize_spec);
        goto done;
    }
    if (o.jsonl) {
        rc = run_jsonl(t) ? dp_runtime_error(&dp_tokenize_spec) : DP_EXIT_OK;
    } else {
        dp_buf text = {0};
        int r = 0;
        if (cli.args.n)
            for (int i = 0; i < cli.args.n && !r; i++)
                r = dp_buf_printf(&text, "%s%s", i ? " " : "", cli.args.items[i]);
        else
            r = read_stdin(&text);
        dp_ids ids = {0};
        if (r || dp_tokenizer_encode(t, text.data ? text.data : "", text.len, true, &ids)) {
            rc = dp_runtime_error(&dp_tokenize_spec);
        } else if (o.ids_only) {
            for (size_t i = 0; i < ids.n; i++) printf("%s%d", i ? " " : "", (int)ids.v[i]);
            putchar('\n');
        } else {
            for (size_t i = 0; i < ids.n; i++) {
                size_t l;
                const char *b = dp_tokenizer_token_bytes(t, ids.v[i], &l);
                dp_buf shown = {0};
                if (dp_json_append_piece(&shown, b, l)) {
                    rc = dp_runtime_error(&dp_tokenize_spec);
                    break;
                }
                printf("%7d  %s\n", (int)ids.v[i], shown.data);
                dp_buf_free(&shown);
            }
            printf("%zu tokens, %zu bytes (%s; fingerprint %016llx)\n", ids.n, text.len,
                   dp_tokenizer_describe(t), (unsigned long long)dp_tokenizer_fingerprint(t));
        }
        dp_ids_free(&ids);
        dp_buf_free(&text);
    }
    if (rc == DP_EXIT_OK && dp_tokenizer_dropped_bytes(t))
        fprintf(stderr,
                "doppel tokenize: warning: %llu bytes had no token in this vocabulary and were "
                "dropped (as Hugging Face tokenizers does)\n",
                (unsigned long long)dp_tokenizer_dropped_bytes(t));
    dp_tokenizer_free(t);
done:
    dp_cli_free(&cli);
    return rc;
}
