/* doppel chat: chat with the persona in the terminal (not built yet: issue 5). */
#include "cmd/commands.h"

static const dp_opt opts[] = {{0}};

const dp_command_spec dp_chat_spec = {
    .name = "chat",
    .usage = "--model M [--adapter DIR]",
    .summary = "chat with the persona in the terminal",
    .opts = opts,
    .min_args = 0,
    .max_args = -1,
};

int dp_cmd_chat(int argc, char **argv) {
    dp_cli cli;
    int rc = dp_cli_parse(&dp_chat_spec, argc, argv, &cli);
    if (rc == 0) rc = dp_not_built(&dp_chat_spec, "issue 5");
    dp_cli_free(&cli);
    return rc < 0 ? DP_EXIT_OK : rc;
}
