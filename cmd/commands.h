/* The commands of the doppel executable, one file in cmd/ each, and the one list of them that
 * main.c dispatches through, `doppel --help` prints and --config files name sections after. */
#ifndef DOPPEL_COMMANDS_H
#define DOPPEL_COMMANDS_H

#include "cmd/cli.h"

typedef struct {
    const dp_command_spec *spec;       /* name, one-line help, options */
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

/* Every command, in the order `doppel --help` lists them; terminated by {NULL, NULL}. */
extern const dp_command dp_commands[];

/* The command called `name`, or NULL. */
const dp_command *dp_command_find(const char *name);

#endif
