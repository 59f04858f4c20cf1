/* doppel: dispatch to one command. */
#include "cmd/commands.h"
#include "kernels/cpu/blas.h"

#include <stdio.h>
#include <string.h>

#define COMMAND(name)                                                                              \
    { &dp_##name##_spec, dp_cmd_##name }
static const dp_command commands[] = {
    COMMAND(prep), COMMAND(train),    COMMAND(chat), COMMAND(serve),    COMMAND(merge),
    COMMAND(eval), COMMAND(quantize), COMMAND(plan), COMMAND(tokenize), COMMAND(info),
};
#define N_COMMANDS (int)(sizeof commands / sizeof commands[0])

static void usage(FILE *out) {
    fprintf(out,
            "doppel %s: turn a friend's Discord history into a chatbot that writes like them\n\n"
            "usage: doppel <command> [options]\n\ncommands:\n",
            DOPPEL_VERSION);
    for (int i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-10s %s\n", commands[i].spec->name, commands[i].spec->summary);
    fprintf(out, "\n`doppel <command> --help` lists a command's options.\n"
                 "Every command also takes --config FILE.json (command-line options win) and "
                 "--quiet.\n");
}

int main(int argc, char **argv) {
    dp_blas_setup(argv); /* may re-execute with the OpenBLAS kernel for this CPU */
    if (argc < 2) {
        usage(stderr);
        return DP_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
        usage(stdout);
        return DP_EXIT_OK;
    }
    if (!strcmp(name, "--version") || !strcmp(name, "-V")) {
        printf("doppel %s\n", DOPPEL_VERSION);
        return DP_EXIT_OK;
    }
    for (int i = 0; i < N_COMMANDS; i++)
        if (!strcmp(name, commands[i].spec->name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "doppel: unknown command '%s' (see `doppel --help`)\n", name);
    return DP_EXIT_USAGE;
}
