/* Option tables, --help text, and --config JSON merged under the command line. */
#include "cmd/cli.h"
#include "cmd/commands.h"
#include "data/base/json.h"
#include "data/base/error.h"
#include "data/base/io.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int dp_strlist_push(dp_strlist *l, const char *s) {
    if (l->n == l->cap) {
        int ncap = l->cap ? l->cap * 2 : 8;
        const char **ni = dp_realloc(l->items, sizeof *ni * (size_t)ncap);
        if (!ni) return -1;
        l->items = ni;
        l->cap = ncap;
    }
    l->items[l->n++] = s;
    return 0;
}

void dp_strlist_free(dp_strlist *l) {
    free(l->items);
    *l = (dp_strlist){0};
}

int dp_parse_size(const char *s, int64_t *bytes) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v >= 0) || !isfinite(v)) return -1;
    while (*end == ' ') end++;
    double mul = 1;
    if (!*end || !strcmp(end, "B")) mul = 1;
    /* binary multiples for every spelling: a "12 GB" card has 12 GiB (nvidia-smi: 12288MiB) */
    else if (!strcasecmp(end, "K") || !strcasecmp(end, "KB") || !strcasecmp(end, "KiB"))
        mul = 1024.0;
    else if (!strcasecmp(end, "M") || !strcasecmp(end, "MB") || !strcasecmp(end, "MiB"))
        mul = 1024.0 * 1024;
    else if (!strcasecmp(end, "G") || !strcasecmp(end, "GB") || !strcasecmp(end, "GiB"))
        mul = 1024.0 * 1024 * 1024;
    else
        return -1;
    double b = v * mul;
    if (b > 9.0e18) return -1;
    *bytes = (int64_t)b;
    return 0;
}

void dp_cli_print_help(const dp_command_spec *spec, FILE *out) {
    fprintf(out, "usage: doppel %s %s\n\n%s\n\noptions:\n", spec->name, spec->usage, spec->summary);
    for (const dp_opt *o = spec->opts; o && o->name; o++) {
        char left[64];
        if (o->type == DP_OPT_FLAG)
            snprintf(left, sizeof left, "--%s", o->name);
        else
            snprintf(left, sizeof left, "--%s %s", o->name, o->metavar ? o->metavar : "VALUE");
        fprintf(out, "  %-28s %s\n", left, o->help);
    }
    fprintf(out, "  %-28s %s\n", "--config FILE.json",
            "read options from a JSON file (command-line options win)");
    fprintf(out, "  %-28s %s\n", "--quiet", "no progress output");
    fprintf(out, "  %-28s %s\n", "-h, --help", "show this help");
    if (spec->details) fprintf(out, "\n%s\n", spec->details);
}

int dp_usage_error(const dp_command_spec *spec, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "doppel %s: ", spec->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see `doppel %s --help`)\n", spec->name);
    return DP_EXIT_USAGE;
}

int dp_runtime_error(const dp_command_spec *spec) {
    fprintf(stderr, "doppel %s: %s\n", spec->name, dp_last_error());
    return DP_EXIT_ERROR;
}

int dp_not_built(const dp_command_spec *spec, const char *issue) {
    fprintf(stderr, "doppel %s: not built yet (%s); see `doppel --help` for what works today\n",
            spec->name, issue);
    return DP_EXIT_USAGE;
}

/* "max-seq" and "max_seq" name the same option. */
static bool name_eq(const char *a, const char *b) {
    for (; *a && *b; a++, b++) {
        char ca = *a == '_' ? '-' : *a, cb = *b == '_' ? '-' : *b;
        if (ca != cb) return false;
    }
    return *a == *b;
}

static const dp_opt *find_opt(const dp_command_spec *spec, const char *name, size_t len) {
    for (const dp_opt *o = spec->opts; o && o->name; o++) {
        char buf[128];
        if (len >= sizeof buf) continue;
        memcpy(buf, name, len);
        buf[len] = 0;
        if (name_eq(o->name, buf)) return o;
    }
    return NULL;
}

/* Stores a textual value into an option's field of the options struct `values`. */
static int set_value(const dp_command_spec *spec, const dp_opt *opt, void *values, const char *v,
                     const char *where) {
    char *end;
    struct {
        const char *name;
        dp_opt_type type;
        void *dest;
    } o_ = {opt->name, opt->type, (char *)values + opt->offset}, *o = &o_;
    switch (o->type) {
    case DP_OPT_FLAG:
        *(bool *)o->dest = true;
        return 0;
    case DP_OPT_STRING:
        *(const char **)o->dest = v;
        return 0;
    case DP_OPT_LIST:
        return dp_strlist_push(o->dest, v) ? DP_EXIT_ERROR : 0;
    case DP_OPT_INT: {
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end)
            return dp_usage_error(spec, "%s--%s expects a whole number, got '%s'", where, o->name,
                                  v);
        *(int64_t *)o->dest = x;
        return 0;
    }
    case DP_OPT_DOUBLE: {
        errno = 0;
        double x = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x))
            return dp_usage_error(spec, "%s--%s expects a number, got '%s'", where, o->name, v);
        *(double *)o->dest = x;
        return 0;
    }
    case DP_OPT_SIZE:
        if (dp_parse_size(v, o->dest))
            return dp_usage_error(spec, "%s--%s expects a size such as 12GB or 512MiB, got '%s'",
                                  where, o->name, v);
        return 0;
    }
    return DP_EXIT_USAGE;
}

/* One config value (a JSON item named k) into option o. */
static int apply_config_item(const dp_command_spec *spec, const dp_opt *o, void *values,
                             const cJSON *it, const char *k, const char *where) {
    char num[64];
    void *dest = (char *)values + o->offset;
    int rc = 0;
    if (o->type == DP_OPT_FLAG) {
        if (!cJSON_IsBool(it))
            return dp_usage_error(spec, "%s\"%s\" must be true or false", where, k);
        *(bool *)dest = cJSON_IsTrue(it);
    } else if (o->type == DP_OPT_LIST) {
        if (!cJSON_IsArray(it))
            return dp_usage_error(spec, "%s\"%s\" must be a list of strings", where, k);
        for (cJSON *e = it->child; e && !rc; e = e->next) {
            if (!cJSON_IsString(e))
                return dp_usage_error(spec, "%s\"%s\" must be a list of strings", where, k);
            rc = set_value(spec, o, values, e->valuestring, where);
        }
    } else if (cJSON_IsString(it)) {
        rc = set_value(spec, o, values, it->valuestring, where);
    } else if (cJSON_IsNumber(it)) {
        snprintf(num, sizeof num, "%.17g", it->valuedouble);
        rc = set_value(spec, o, values, num, where);
    } else {
        return dp_usage_error(spec, "%s\"%s\" has the wrong type", where, k);
    }
    return rc;
}

/* The keys of another command's section this command borrows (spec->borrowed), in table
 * order, so that e.g. "batch-tokens" wins over "max-seq" wherever they stand in the file. */
static int apply_borrowed(const dp_command_spec *spec, void *values, const cJSON *root,
                          const char *where) {
    const cJSON *sec = cJSON_GetObjectItemCaseSensitive(root, spec->borrowed_section);
    if (!cJSON_IsObject(sec)) return 0;
    for (const dp_config_alias *a = spec->borrowed; a->key; a++) {
        const dp_opt *o = find_opt(spec, a->option, strlen(a->option));
        if (!o) /* a mistake in the command's table, not the user's */
            return dp_usage_error(spec, "internal: no option --%s for the borrowed key \"%s\"",
                                  a->option, a->key);
        for (const cJSON *it = sec->child; it; it = it->next) {
            if (!name_eq(it->string, a->key)) continue;
            int rc = apply_config_item(spec, o, values, it, it->string, where);
            if (rc) return rc;
        }
    }
    return 0;
}

static int apply_config_object(const dp_command_spec *spec, void *values, cJSON *obj,
                               const char *file) {
    char where[600];
    snprintf(where, sizeof where, "%s: ", file);
    for (cJSON *it = obj->child; it; it = it->next) {
        const char *k = it->string;
        if (k[0] == '_') continue; /* "_comment" and friends */
        if (dp_command_find(k)) {  /* a command's section: only this command's own applies */
            if (!strcmp(k, spec->name) && cJSON_IsObject(it)) {
                int rc = apply_config_object(spec, values, it, file);
                if (rc) return rc;
            }
            continue;
        }
        const dp_opt *o = find_opt(spec, k, strlen(k));
        if (!o)
            return dp_usage_error(spec, "%sunknown option \"%s\" for doppel %s", where, k,
                                  spec->name);
        int rc = apply_config_item(spec, o, values, it, k, where);
        if (rc) return rc;
    }
    return 0;
}

static int load_config(const dp_command_spec *spec, dp_cli *cli) {
    char *text;
    size_t len;
    if (dp_read_file(cli->config, &text, &len))
        return dp_usage_error(spec, "--config: %s", dp_last_error());
    const char *err_at = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &err_at, 1);
    if (root && dp_json_check_nul(text, len, cli->config, 1)) {
        free(text);
        cJSON_Delete(root);
        return dp_usage_error(spec, "--config: %s", dp_last_error());
    }
    if (!root || !cJSON_IsObject(root)) {
        int line = 1;
        for (const char *p = text; err_at && p < err_at; p++) line += *p == '\n';
        free(text);
        cJSON_Delete(root);
        return dp_usage_error(spec, "%s:%d: not a valid JSON object", cli->config, line);
    }
    free(text);
    cli->config_json = root;
    char where[600];
    snprintf(where, sizeof where, "%s: ", cli->config);
    if (spec->borrowed_section) {
        int rc = apply_borrowed(spec, cli->values, root, where);
        if (rc) return rc;
    }
    return apply_config_object(spec, cli->values, root, cli->config);
}

static int parse(const dp_command_spec *spec, int argc, char **argv, dp_cli *cli);

int dp_cli_parse(const dp_command_spec *spec, int argc, char **argv, void *values, dp_cli *cli) {
    *cli = (dp_cli){.spec = spec, .values = values};
    int rc = parse(spec, argc, argv, cli);
    if (rc) dp_cli_free(cli);
    return rc;
}

static int parse(const dp_command_spec *spec, int argc, char **argv, dp_cli *cli) {
    /* First pass: --help and --config, so the config lands under the command line. */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--")) break;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            dp_cli_print_help(spec, stdout);
            return -1;
        }
        if (!strncmp(argv[i], "--config=", 9))
            cli->config = argv[i] + 9;
        else if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) return dp_usage_error(spec, "--config needs a FILE.json");
            cli->config = argv[++i];
        }
    }
    if (cli->config) {
        int rc = load_config(spec, cli);
        if (rc) return rc;
    }
    /* A list given on the command line replaces the config's list. */
    bool list_from_cli[64] = {0};
    bool only_positional = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_positional || a[0] != '-' || !strcmp(a, "-")) {
            if (dp_strlist_push(&cli->args, a)) return DP_EXIT_ERROR;
            continue;
        }
        if (!strcmp(a, "--")) {
            only_positional = true;
            continue;
        }
        if (strncmp(a, "--", 2)) return dp_usage_error(spec, "unknown option '%s'", a);
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        if (nlen == 6 && !strncmp(name, "config", 6)) {
            if (!eq) i++;
            continue;
        }
        if (nlen == 5 && !strncmp(name, "quiet", 5) && !eq) {
            cli->quiet = true;
            continue;
        }
        const dp_opt *o = find_opt(spec, name, nlen);
        if (!o) return dp_usage_error(spec, "unknown option '--%.*s'", (int)nlen, name);
        if (o->type == DP_OPT_FLAG) {
            if (eq) return dp_usage_error(spec, "--%s takes no value", o->name);
            *(bool *)((char *)cli->values + o->offset) = true;
            continue;
        }
        const char *v = eq ? eq + 1 : NULL;
        if (!v) {
            if (i + 1 >= argc)
                return dp_usage_error(spec, "--%s needs a value (%s)", o->name,
                                      o->metavar ? o->metavar : "VALUE");
            v = argv[++i];
        }
        if (o->type == DP_OPT_LIST) {
            int idx = (int)(o - spec->opts);
            if (idx < 64 && !list_from_cli[idx]) {
                ((dp_strlist *)((char *)cli->values + o->offset))->n = 0;
                list_from_cli[idx] = true;
            }
        }
        int rc = set_value(spec, o, cli->values, v, "");
        if (rc) return rc;
    }
    if (cli->args.n < spec->min_args)
        return dp_usage_error(spec, "expected %s%d argument%s: %s",
                              spec->max_args == spec->min_args ? "" : "at least ", spec->min_args,
                              spec->min_args == 1 ? "" : "s", spec->usage);
    if (spec->max_args >= 0 && cli->args.n > spec->max_args)
        return dp_usage_error(spec, "too many arguments ('%s'): %s",
                              cli->args.items[spec->max_args], spec->usage);
    return DP_EXIT_OK;
}

void dp_cli_free(dp_cli *cli) {
    if (cli->spec && cli->values)
        for (const dp_opt *o = cli->spec->opts; o && o->name; o++)
            if (o->type == DP_OPT_LIST)
                dp_strlist_free((dp_strlist *)((char *)cli->values + o->offset));
    dp_strlist_free(&cli->args);
    cJSON_Delete(cli->config_json);
    *cli = (dp_cli){0};
}
