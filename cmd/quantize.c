/* doppel quantize: quantize a model to NF4 with double quantization (not built yet: issue 5). */
#include "cmd/commands.h"

static const dp_opt opts[] = {{0}};

const dp_command_spec dp_quantize_spec = {
    .name = "quantize",
    .usage = "MODEL --out FILE",
    .summary = "quantize a model to NF4 with double quantization",
    .opts = opts,
    .min_args = 0,
    .max_args = -1,
};

int dp_cmd_quantize(int argc, char **argv) {
    dp_cli cli;
    int rc = dp_cli_parse(&dp_quantize_spec, argc, argv, &cli);
    if (rc == 0) rc = dp_not_built(&dp_quantize_spec, "issue 5");
    dp_cli_free(&cli);
    return rc < 0 ? DP_EXIT_OK : rc;
}
