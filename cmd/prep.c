/* doppel prep: convert a DiscordChatExporter export into ChatML conversations (not built yet: issue
 * 3). */
#include "cmd/commands.h"

static const dp_opt opts[] = {{0}};

const dp_command_spec dp_prep_spec = {
    .name = "prep",
    .usage = "EXPORT [EXPORT...] --persona NAME_OR_ID --out train.jsonl",
    .summary = "convert a DiscordChatExporter export into ChatML conversations",
    .opts = opts,
    .min_args = 0,
    .max_args = -1,
};

int dp_cmd_prep(int argc, char **argv) {
    dp_cli cli;
    int rc = dp_cli_parse(&dp_prep_spec, argc, argv, &cli);
    if (rc == 0) rc = dp_not_built(&dp_prep_spec, "issue 3");
    dp_cli_free(&cli);
    return rc < 0 ? DP_EXIT_OK : rc;
}
