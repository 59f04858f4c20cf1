/* doppel plan: plan GPU memory for training and print the longest sequence that fits (not built
 * yet: issue 7). */
#include "cmd/commands.h"

static const dp_opt opts[] = {{0}};

const dp_command_spec dp_plan_spec = {
    .name = "plan",
    .usage = "--model M --vram 12GB [--seq N] [--r R]",
    .summary = "plan GPU memory for training and print the longest sequence that fits",
    .opts = opts,
    .min_args = 0,
    .max_args = -1,
};

int dp_cmd_plan(int argc, char **argv) {
    dp_cli cli;
    int rc = dp_cli_parse(&dp_plan_spec, argc, argv, &cli);
    if (rc == 0) rc = dp_not_built(&dp_plan_spec, "issue 7");
    dp_cli_free(&cli);
    return rc < 0 ? DP_EXIT_OK : rc;
}
