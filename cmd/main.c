/* doppel: dispatch to one command. */
#include "cmd/commands.h"
#include "kernels/cpu/blas.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(out,
            "doppel %s: turn a friend's Discord history into a chatbot that writes like them\n\n"
            "usage: doppel <command> [options]\n\ncommands:\n",
            DOPPEL_VERSION);
    for (const dp_command *c = dp_commands; c->spec; c++)
        fprintf(out, "  %-10s %s\n", c->spec->name, c->spec->summary);
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
    const dp_command *c = dp_command_find(name);
    if (c) return c->run(argc - 1, argv + 1);
    fprintf(stderr, "doppel: unknown command '%s' (see `doppel --help`)\n", name);
    return DP_EXIT_USAGE;
}
