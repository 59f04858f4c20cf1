/* Command-line parsing shared by every command: a table of options per command, --help
 * generated from it, and --config FILE.json merged under the command line.
 * Exit codes: 0 ok, 1 runtime error, 2 usage error. */
#ifndef DOPPEL_CLI_H
#define DOPPEL_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum { DP_EXIT_OK = 0, DP_EXIT_ERROR = 1, DP_EXIT_USAGE = 2 };

typedef enum {
    DP_OPT_FLAG,   /* bool *            --name (config: true/false) */
    DP_OPT_STRING, /* const char **     --name VALUE */
    DP_OPT_INT,    /* int64_t *         --name 123 */
    DP_OPT_DOUBLE, /* double *          --name 0.5 */
    DP_OPT_LIST,   /* dp_strlist *      --name A --name B (repeatable; config: array) */
    DP_OPT_SIZE,   /* int64_t * bytes   --name 12GB / 512MiB / 1000 */
} dp_opt_type;

typedef struct {
    const char **items;
    int n, cap;
} dp_strlist;

typedef struct {
    const char *name; /* long name without dashes: "persona" */
    dp_opt_type type;
    void *dest;
    const char *metavar; /* "NAME" in the help text */
    const char *help;    /* one line; the default is appended by the caller's text */
} dp_opt;

typedef struct {
    const char *name;       /* "prep" */
    const char *usage;      /* "EXPORT [EXPORT...] --persona NAME --out FILE" */
    const char *summary;    /* one line for `doppel --help` */
    const char *details;    /* paragraphs after the option list, or NULL */
    const dp_opt *opts;     /* terminated by an entry with name == NULL */
    int min_args, max_args; /* positional arguments; max_args < 0 = unlimited */
} dp_command_spec;

/* What every command gets besides its own options. */
typedef struct {
    dp_strlist args;    /* positional arguments */
    bool quiet;         /* --quiet: no progress output */
    const char *config; /* --config FILE.json, if given */
    void *config_json;  /* the parsed config (cJSON *), owned */
} dp_cli;

/* Parses argv (argv[0] is the command name). Returns DP_EXIT_OK to go on, or -1 when --help
 * was printed (the caller exits 0), or DP_EXIT_USAGE after printing the problem on stderr. */
int dp_cli_parse(const dp_command_spec *spec, int argc, char **argv, dp_cli *cli);
void dp_cli_free(dp_cli *cli);
void dp_cli_print_help(const dp_command_spec *spec, FILE *out);
/* Prints "doppel NAME: message" on stderr and returns DP_EXIT_USAGE. */
int dp_usage_error(const dp_command_spec *spec, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prints "doppel NAME: <dp_last_error()>" on stderr and returns DP_EXIT_ERROR. */
int dp_runtime_error(const dp_command_spec *spec);

int dp_strlist_push(dp_strlist *l, const char *s);
void dp_strlist_free(dp_strlist *l);

/* "12GB", "512MiB", "1.5G", "4096" -> bytes; K/M/G(B) are binary multiples, as for GPU memory. */
int dp_parse_size(const char *s, int64_t *bytes);

/* A command not built yet: says so on stderr and returns DP_EXIT_USAGE. */
int dp_not_built(const dp_command_spec *spec, const char *issue);

#endif
