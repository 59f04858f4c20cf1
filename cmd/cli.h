/* Command-line parsing shared by every command: a table of options per command, --help
 * generated from it, and --config FILE.json merged under the command line.
 * Exit codes: 0 ok, 1 runtime error, 2 usage error. */
#ifndef DOPPEL_CLI_H
#define DOPPEL_CLI_H

#include <stdbool.h>
#include <stddef.h>
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

/* One option: where it lands is an offset into the command's own options struct, so the
 * table is constant and each run parses into a fresh struct (no file-scope state to reset). */
typedef struct {
    const char *name; /* long name without dashes: "persona" */
    dp_opt_type type;
    size_t offset;       /* of the field in the command's options struct */
    const char *metavar; /* "NAME" in the help text */
    const char *help;    /* one line; the default is appended by the caller's text */
} dp_opt;

/* A number in help text: "(default " DP_STR(DP_CE_CHUNK_DEFAULT) ")" */
#define DP_STR_(x) #x
#define DP_STR(x)  DP_STR_(x)

/* {"persona", DP_OPT_STRING, DP_FIELD(prep_options, persona), "NAME", "..."} */
#define DP_FIELD(type, field) offsetof(type, field)

/* A key of another command's config section this command reads too: `plan --config
 * rtx3060-12gb.json` plans the file's "train" section ("max-seq" -> --seq). */
typedef struct {
    const char *key;    /* in the borrowed section */
    const char *option; /* this command's option */
} dp_config_alias;

typedef struct {
    const char *name;       /* "prep" */
    const char *usage;      /* "EXPORT [EXPORT...] --persona NAME --out FILE" */
    const char *summary;    /* one line for `doppel --help` */
    const char *details;    /* paragraphs after the option list, or NULL */
    const dp_opt *opts;     /* terminated by an entry with name == NULL */
    int min_args, max_args; /* positional arguments; max_args < 0 = unlimited */
    /* keys of this other command's section applied first (under this command's own section
     * and the command line), in table order; other keys of that section are ignored */
    const char *borrowed_section;
    const dp_config_alias *borrowed; /* terminated by an entry with key == NULL */
} dp_command_spec;

/* What every command gets besides its own options. */
typedef struct {
    dp_strlist args;    /* positional arguments */
    bool quiet;         /* --quiet: no progress output */
    const char *config; /* --config FILE.json, if given */
    void *config_json;  /* the parsed config (cJSON *), owned */
    const dp_command_spec *spec;
    void *values; /* the command's options struct: its lists are freed with the cli */
} dp_cli;

/* Parses argv (argv[0] is the command name) into `values`, the command's options struct holding
 * its defaults. Strings in `values` point into argv or the config: they live until
 * dp_cli_free. Returns DP_EXIT_OK to go on; -1 when --help was printed (the caller exits 0) or
 * DP_EXIT_USAGE after printing the problem on stderr, having freed everything already (a later
 * dp_cli_free is harmless). */
int dp_cli_parse(const dp_command_spec *spec, int argc, char **argv, void *values, dp_cli *cli);
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
