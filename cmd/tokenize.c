/* doppel tokenize: show how a model tokenizes text (not built yet: issue 4). */
#include "cmd/commands.h"

static const dp_opt opts[] = {{0}};

const dp_command_spec dp_tokenize_spec = {
    .name = "tokenize",
    .usage = "--model PATH [--ids] [--jsonl] [TEXT]",
    .summary = "show how a model tokenizes text",
    .opts = opts,
    .min_args = 0,
    .max_args = -1,
};

int dp_cmd_tokenize(int argc, char **argv) {
    dp_cli cli;
    int rc = dp_cli_parse(&dp_tokenize_spec, argc, argv, &cli);
    if (rc == 0) rc = dp_not_built(&dp_tokenize_spec, "issue 4");
    dp_cli_free(&cli);
    return rc < 0 ? DP_EXIT_OK : rc;
}
