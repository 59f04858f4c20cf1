/* doppel eval: report loss and perplexity on a dataset (not built yet: not yet filed). */
#include "cmd/commands.h"

static const dp_opt opts[] = {{0}};

const dp_command_spec dp_eval_spec = {
    .name = "eval",
    .usage = "--model M [--adapter DIR] --data FILE.jsonl",
    .summary = "report loss and perplexity on a dataset",
    .opts = opts,
    .min_args = 0,
    .max_args = -1,
};

int dp_cmd_eval(int argc, char **argv) {
    struct {
        char none; /* no options yet */
    } o;
    dp_cli cli;
    int rc = dp_cli_parse(&dp_eval_spec, argc, argv, &o, &cli);
    if (rc) return rc < 0 ? DP_EXIT_OK : rc;
    dp_cli_free(&cli);
    return dp_not_built(&dp_eval_spec, "not yet filed");
}
