/* doppel train: fine-tune LoRA adapters over a frozen NF4 base model (QLoRA) (not built yet: issue
 * 6). */
#include "cmd/commands.h"

static const dp_opt opts[] = {{0}};

const dp_command_spec dp_train_spec = {
    .name = "train",
    .usage = "--model M --data train.jsonl --out adapter/",
    .summary = "fine-tune LoRA adapters over a frozen NF4 base model (QLoRA)",
    .opts = opts,
    .min_args = 0,
    .max_args = -1,
};

int dp_cmd_train(int argc, char **argv) {
    dp_cli cli;
    int rc = dp_cli_parse(&dp_train_spec, argc, argv, &cli);
    if (rc == 0) rc = dp_not_built(&dp_train_spec, "issue 6");
    dp_cli_free(&cli);
    return rc < 0 ? DP_EXIT_OK : rc;
}
