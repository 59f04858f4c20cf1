/* The commands of the doppel executable: one file in cmd/ each. */
#ifndef DOPPEL_COMMANDS_H
#define DOPPEL_COMMANDS_H

#include "cmd/cli.h"
#include "infer/model.h"

typedef struct {
    const dp_command_spec *spec;
    int (*run)(int argc, char **argv); /* argv[0] is the command name */
} dp_command;

#define DP_DECLARE_COMMAND(name)                                                                   \
    extern const dp_command_spec dp_##name##_spec;                                                 \
    int dp_cmd_##name(int argc, char **argv);

DP_DECLARE_COMMAND(prep)
DP_DECLARE_COMMAND(train)
DP_DECLARE_COMMAND(chat)
DP_DECLARE_COMMAND(serve)
DP_DECLARE_COMMAND(merge)
DP_DECLARE_COMMAND(eval)
DP_DECLARE_COMMAND(info)
DP_DECLARE_COMMAND(quantize)
DP_DECLARE_COMMAND(plan)
DP_DECLARE_COMMAND(tokenize)

/* A model's config from a HF directory, a config.json or a .gguf, without loading weights
 * (cmd/plan.c; train uses it to refuse a run that will not fit before loading anything). */
int dp_plan_load_config(dp_model_config *cfg, const char *path);

#endif
