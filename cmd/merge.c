/* doppel merge: merge an adapter into a standalone model (safetensors or GGUF) (not built yet: not
 * yet filed). */
#include "cmd/commands.h"

static const dp_opt opts[] = {{0}};

const dp_command_spec dp_merge_spec = {
    .name = "merge",
    .usage = "--model M --adapter DIR --out PATH",
    .summary = "merge an adapter into a standalone model (safetensors or GGUF)",
    .opts = opts,
    .min_args = 0,
    .max_args = -1,
};

int dp_cmd_merge(int argc, char **argv) {
    struct {
        char none; /* no options yet */
    } o;
    dp_cli cli;
    int rc = dp_cli_parse(&dp_merge_spec, argc, argv, &o, &cli);
    if (rc) return rc < 0 ? DP_EXIT_OK : rc;
    dp_cli_free(&cli);
    return dp_not_built(&dp_merge_spec, "not yet filed");
}
