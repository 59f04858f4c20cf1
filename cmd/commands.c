/* The one list of commands (see commands.h). */
#include "cmd/commands.h"

#include <string.h>

#define COMMAND(name)                                                                              \
    { &dp_##name##_spec, dp_cmd_##name }
const dp_command dp_commands[] = {
    COMMAND(prep),     COMMAND(train), COMMAND(chat),     COMMAND(serve),
    COMMAND(merge),    COMMAND(eval),  COMMAND(quantize), COMMAND(plan),
    COMMAND(tokenize), COMMAND(info),  {NULL, NULL},
};

const dp_command *dp_command_find(const char *name) {
    for (const dp_command *c = dp_commands; c->spec; c++)
        if (!strcmp(name, c->spec->name)) return c;
    return NULL;
}
