/* doppel serve: serve the persona over an OpenAI-compatible HTTP API (not built yet: not yet
 * filed). */
#include "cmd/commands.h"

static const dp_opt opts[] = {{0}};

const dp_command_spec dp_serve_spec = {
    .name = "serve",
    .usage = "--model M [--adapter DIR] [--port N]",
    .summary = "serve the persona over an OpenAI-compatible HTTP API",
    .opts = opts,
    .min_args = 0,
    .max_args = -1,
};

int dp_cmd_serve(int argc, char **argv) {
    struct {
        char none; /* no options yet */
    } o;
    dp_cli cli;
    int rc = dp_cli_parse(&dp_serve_spec, argc, argv, &o, &cli);
    if (rc) return rc < 0 ? DP_EXIT_OK : rc;
    dp_cli_free(&cli);
    return dp_not_built(&dp_serve_spec, "not yet filed");
}
