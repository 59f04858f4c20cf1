/* doppel eval: does an adapter write like the persona? Held-out loss and perplexity of the base
 * and each adapter, then replies to held-out contexts scored for authorship, style distance to
 * the real replies and degeneration (infer/eval.h, infer/eval_text.h); a table and --json. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd/commands.h"
#include "data/base/error.h"
#include "data/base/io.h"
#include "train/eval.h"
#include "infer/eval_text.h"
#include "infer/generate.h"
#include "infer/model_load.h"
#include "infer/adapter.h"

typedef struct {
    const char *model_path, *data_path, *export_path, *persona, *json_path, *precision, *format_s,
        *system_prompt;
    dp_strlist adapters;
    int64_t max_seq, contexts, max_tokens, seed, n_boot, n_examples, n_signature;
} eval_options;

static eval_options eval_defaults(void) {
    return (eval_options){.precision = "nf4",
                          .contexts = 16,
                          .max_tokens = 48,
                          .seed = 1,
                          .n_boot = 1000,
                          .n_examples = 3,
                          .n_signature = 20};
}

#define F(field) DP_FIELD(eval_options, field)

static const dp_opt opts[] = {
    {"model", DP_OPT_STRING, F(model_path), "M", "base model: HF directory or .gguf"},
    {"adapter", DP_OPT_LIST, F(adapters), "RUN",
     "a `doppel train` run directory (repeatable); RUN/best/ is evaluated too when present"},
    {"data", DP_OPT_STRING, F(data_path), "VAL.jsonl", "held-out conversations (prep's .val.jsonl)"},
    {"export", DP_OPT_STRING, F(export_path), "EXPORT",
     "the DCE export, for the authorship classifier (messages outside VAL's sessions)"},
    {"persona", DP_OPT_STRING, F(persona), "NAME",
     "persona name or author id in EXPORT (default: the adapter's doppel.json persona)"},
    {"json", DP_OPT_STRING, F(json_path), "FILE", "write every figure and the replies as JSON"},
    {"precision", DP_OPT_STRING, F(precision), "P", "nf4 or fp32 base weights (default nf4)"},
    {"max-seq", DP_OPT_INT, F(max_seq), "T",
     "conversation length in tokens, cut from the left as in training (default: the adapter's "
     "training max_seq, else 1024)"},
    {"contexts", DP_OPT_INT, F(contexts), "N",
     "held-out contexts to reply to (default 16; 0 = loss only)"},
    {"max-tokens", DP_OPT_INT, F(max_tokens), "N", "tokens per generated reply (default 48)"},
    {"seed", DP_OPT_INT, F(seed), "N", "sampling and bootstrap seed (default 1)"},
    {"bootstrap", DP_OPT_INT, F(n_boot), "N", "bootstrap resamples for the intervals (default 1000)"},
    {"examples", DP_OPT_INT, F(n_examples), "N", "replies shown side by side (default 3)"},
    {"signature", DP_OPT_INT, F(n_signature), "K", "signature words of the persona (default 20)"},
    {"chat-format", DP_OPT_STRING, F(format_s), "NAME",
     "chatml or llama3 (default: the adapter's, else the model's template)"},
    {"system", DP_OPT_STRING, F(system_prompt), "TEXT",
     "system prompt for generation (default: the adapter's doppel.json)"},
    {0},
};
#undef F

const dp_command_spec dp_eval_spec = {
    .name = "eval",
    .usage = "--model M [--adapter RUN ...] --data VAL.jsonl [--export EXPORT --persona NAME] "
             "[--json FILE]",
    .summary = "held-out perplexity, authorship, style and degeneration: base vs adapters",
    .details =
        "Loss is the training loss (assistant tokens only) over every VAL conversation, with a\n"
        "95% bootstrap interval over conversations. Replies are sampled with chat's sampler and\n"
        "defaults at a fixed seed (context i uses seed + i), on the CPU. Authorship: a character\n"
        "3-5-gram TF-IDF + logistic regression (liblinear) classifier of the persona's messages\n"
        "against everyone else's, trained on EXPORT without VAL's messages; it reports the share\n"
        "of replies it attributes to the persona (real replies: the ceiling), and its own\n"
        "accuracy on VAL (the persona's real replies against the other people's lines). Style\n"
        "distance is the Jensen-Shannon divergence (bits, 0..1) of word and word-bigram\n"
        "distributions; signature words are the persona's most over-represented words in\n"
        "EXPORT (log-odds ratio). Degeneration: distinct-1/2, repeated word 3-grams within a\n"
        "reply, replies that write someone's \"[Name]:\" line, replies that stop by themselves.",
    .opts = opts,
    .min_args = 0,
    .max_args = 0,
};

/* One evaluated system: the base, or the base + an adapter. */
typedef struct {
    char *name;  /* the directory, or "base" */
    char *label; /* for the table */
    dp_lora *lora;
    char *doppel_json;
    dp_eval_loss_result loss;
    char **replies;
    unsigned char *ended;
    double authorship;
    dp_style_stats style;
    double jsd1, jsd2;
    dp_degeneration degen;
} sys_result;

static bool file_exists(const char *p) {
    struct stat st;
    return !stat(p, &st) && S_ISREG(st.st_mode);
}

static bool is_dir(const char *p) {
    struct stat st;
    return !stat(p, &st) && S_ISDIR(st.st_mode);
}

/* A column label: "base", the run directory's last component, or "that/best". */
static char *short_name(const char *dir, bool best) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s", dir);
    size_t l = strlen(tmp);
    while (l > 1 && tmp[l - 1] == '/') tmp[--l] = 0;
    const char *slash = strrchr(tmp, '/');
    char out[4300];
    snprintf(out, sizeof out, "%s%s", slash ? slash + 1 : tmp, best ? "/best" : "");
    return dp_strdup(out);
}

/* Prints text on one line: newlines (the persona's separate messages) become " / ". */
static void print_flat(const char *text) {
    for (const char *p = text; *p; p++) {
        if (*p == '\n')
            fputs(" / ", stdout);
        else
            putchar(*p);
    }
    putchar('\n');
}

/* doppel.json's training.config.max_seq, or 0 */
static int64_t adapter_max_seq(const cJSON *dj) {
    const cJSON *v = cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(dj, "training"), "config"), "max_seq");
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

static cJSON *style_json(const dp_style_stats *s) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "chars_mean", s->chars_mean);
    cJSON_AddNumberToObject(j, "lines_mean", s->lines_mean);
    cJSON_AddNumberToObject(j, "lowercase_share", s->lowercase_share);
    cJSON_AddNumberToObject(j, "punct_per_100", s->punct_per_100);
    cJSON_AddNumberToObject(j, "emoji_per_100", s->emoji_per_100);
    if (!isnan(s->signature_rate)) cJSON_AddNumberToObject(j, "signature_rate", s->signature_rate);
    return j;
}

static void add_num(cJSON *j, const char *k, double v) {
    if (isnan(v))
        cJSON_AddNullToObject(j, k);
    else
        cJSON_AddNumberToObject(j, k, v);
}

static void print_row(const char *what, const sys_result *s, int ns,
                      double (*get)(const sys_result *), const char *fmt, double real) {
    printf("  %-30s", what);
    for (int i = 0; i < ns; i++) {
        double v = get(&s[i]);
        if (isnan(v))
            printf(" %14s", "-");
        else {
            char b[64];
            snprintf(b, sizeof b, fmt, v);
            printf(" %14s", b);
        }
    }
    if (!isnan(real)) {
        char b[64];
        snprintf(b, sizeof b, fmt, real);
        printf(" %14s", b);
    }
    printf("\n");
}

#define GETTER(name, expr)                                                                         \
    static double name(const sys_result *s) {                                                      \
        return (expr);                                                                             \
    }
GETTER(g_loss, s->loss.loss)
GETTER(g_ppl, s->loss.ppl)
GETTER(g_ppl_lo, s->loss.ppl_lo)
GETTER(g_ppl_hi, s->loss.ppl_hi)
GETTER(g_auth, s->authorship)
GETTER(g_chars, s->style.chars_mean)
GETTER(g_lines, s->style.lines_mean)
GETTER(g_lower, s->style.lowercase_share)
GETTER(g_punct, s->style.punct_per_100)
GETTER(g_emoji, s->style.emoji_per_100)
GETTER(g_sig, s->style.signature_rate)
GETTER(g_jsd1, s->jsd1)
GETTER(g_jsd2, s->jsd2)
GETTER(g_d1, s->degen.distinct1)
GETTER(g_d2, s->degen.distinct2)
GETTER(g_rep, s->degen.repeated_3gram_rate)
GETTER(g_other, s->degen.other_speaker_share)
GETTER(g_ended, s->degen.ended_share)

int dp_cmd_eval(int argc, char **argv) {
    eval_options o = eval_defaults();
    dp_cli cli;
    int rc = dp_cli_parse(&dp_eval_spec, argc, argv, &o, &cli);
    if (rc) return rc < 0 ? DP_EXIT_OK : rc;
    const dp_command_spec *S = &dp_eval_spec;
    if (!o.model_path || !o.data_path)
        rc = dp_usage_error(S, "--model and --data are required");
    else if (strcmp(o.precision, "nf4") && strcmp(o.precision, "fp32"))
        rc = dp_usage_error(S, "--precision must be nf4 or fp32, not '%s'", o.precision);
    else if (o.max_seq < 0 || o.contexts < 0 || o.max_tokens < 1 || o.n_boot < 0 || o.n_examples < 0 ||
             o.n_signature < 0)
        rc = dp_usage_error(S, "--max-seq, --contexts, --bootstrap, --examples, --signature must "
                               "be >= 0 and --max-tokens >= 1");
    else if (!file_exists(o.data_path))
        rc = dp_usage_error(S, "--data %s: no such file", o.data_path);
    else if (o.export_path && !file_exists(o.export_path))
        rc = dp_usage_error(S, "--export %s: no such file", o.export_path);
    for (int i = 0; i < o.adapters.n && !rc; i++)
        if (!is_dir(o.adapters.items[i]))
            rc = dp_usage_error(S,
                                "--adapter %s: not a directory (give a `doppel train` --out "
                                "directory)",
                                o.adapters.items[i]);
    if (rc) {
        dp_cli_free(&cli);
        return rc;
    }

    int status = DP_EXIT_ERROR;
    dp_tokenizer *tok = NULL;
    dp_model *model = NULL;
    dp_train_render_ctx rctx = {0};
    dp_token_data td = {0};
    dp_eval_set set = {0};
    dp_eval_corpus corpus = {0};
    dp_authorship *auth = NULL;
    char *sig[256] = {0};
    int nsig = 0;
    int max_sys = 1 + 2 * o.adapters.n, ns = 0;
    sys_result *sys = calloc((size_t)max_sys, sizeof *sys);
    cJSON *first_dj = NULL;
    size_t nctx = 0; // replies per system
    double real_auth = NAN, clf_acc = NAN;
    dp_style_stats real_style;
    memset(&real_style, 0, sizeof real_style);
    real_style.lowercase_share = real_style.signature_rate = NAN;
    if (!sys) goto fail;

    dp_load_opts lo = {.nf4 = !strcmp(o.precision, "nf4"), .quiet = cli.quiet};
    model = dp_model_load(o.model_path, &lo);
    if (!model) goto fail;
    tok = dp_model_tokenizer(o.model_path);
    if (!tok) goto fail;

    /* the systems: the base, then each adapter and its best/ */
    sys[ns].name = dp_strdup("base");
    sys[ns++].label = dp_strdup("base");
    for (int i = 0; i < o.adapters.n; i++) {
        char best[4200];
        snprintf(best, sizeof best, "%s/best", o.adapters.items[i]);
        const char *dirs[2] = {o.adapters.items[i], is_dir(best) ? best : NULL};
        for (int k = 0; k < 2; k++) {
            if (!dirs[k]) continue;
            sys_result *s = &sys[ns];
            if (dp_lora_load_peft(dirs[k], &model->cfg, &s->lora, &s->doppel_json)) goto fail;
            if (s->doppel_json && dp_adapter_check_base(s->doppel_json, dirs[k], model)) goto fail;
            s->name = dp_strdup(dirs[k]);
            s->label = short_name(o.adapters.items[i], k == 1);
            ns++;
            if (!first_dj && s->doppel_json) first_dj = cJSON_Parse(s->doppel_json);
        }
    }
    const cJSON *dj_fmt = cJSON_GetObjectItem(first_dj, "chat_format");
    if (!o.format_s && cJSON_IsString(dj_fmt)) o.format_s = dj_fmt->valuestring;
    const cJSON *dj_sys = cJSON_GetObjectItem(first_dj, "system_prompt");
    if (!o.system_prompt && cJSON_IsString(dj_sys)) o.system_prompt = dj_sys->valuestring;
    const cJSON *dj_persona = cJSON_GetObjectItem(first_dj, "persona");
    if (!o.persona && cJSON_IsString(dj_persona)) o.persona = dj_persona->valuestring;
    if (!o.max_seq) o.max_seq = adapter_max_seq(first_dj);
    if (!o.max_seq) o.max_seq = 1024;
    rctx.tok = tok;
    if (dp_chat_format_choose(dp_tokenizer_chat_template(tok), o.format_s, &rctx.fmt)) goto fail;

    /* held-out loss: the training render and masking, every system */
    if (dp_token_data_build(o.data_path, (int)o.max_seq, dp_train_render, &rctx, &td)) goto fail;
    if (!cli.quiet)
        fprintf(stderr,
                "eval: %s: %lld conversations -> %lld sequences, %lld scored tokens (max-seq "
                "%lld, %lld cut from the left)\n",
                o.data_path, (long long)td.n_read, (long long)td.nseq, (long long)td.n_trained,
                (long long)o.max_seq, (long long)td.n_truncated);
    for (int i = 0; i < ns; i++) {
        if (dp_eval_heldout_loss(model, sys[i].lora, &td, (int)o.n_boot, (uint64_t)o.seed,
                                 &sys[i].loss))
            goto fail;
        if (!cli.quiet)
            fprintf(stderr, "eval: %-24s loss %.4f  perplexity %.2f [%.2f, %.2f]\n", sys[i].name,
                    sys[i].loss.loss, sys[i].loss.ppl, sys[i].loss.ppl_lo, sys[i].loss.ppl_hi);
    }

    /* generation and text metrics */
    if (o.contexts > 0) {
        if (dp_eval_set_load(o.data_path, &set)) goto fail;
        nctx = (size_t)o.contexts < set.n ? (size_t)o.contexts : set.n;
        if (o.export_path) {
            if (!o.persona) {
                dp_fail("--export needs --persona (or an adapter whose doppel.json names one)");
                goto fail;
            }
            if (dp_eval_corpus_load(o.export_path, o.persona, &set, &corpus)) goto fail;
            auth = dp_authorship_train((const char *const *)corpus.texts, corpus.is_persona,
                                       corpus.n, NULL);
            if (!auth) goto fail;
            /* held-out accuracy: the validation set's real replies against its other lines */
            size_t nacc = set.n + set.n_others;
            const char **acc_t = malloc(nacc * sizeof *acc_t);
            unsigned char *acc_y = malloc(nacc);
            if (!acc_t || !acc_y) {
                free(acc_t);
                free(acc_y);
                dp_fail("out of memory");
                goto fail;
            }
            for (size_t i = 0; i < set.n; i++) acc_t[i] = set.real[i], acc_y[i] = 1;
            for (size_t i = 0; i < set.n_others; i++)
                acc_t[set.n + i] = set.others[i], acc_y[set.n + i] = 0;
            clf_acc = dp_authorship_accuracy(auth, acc_t, acc_y, nacc);
            free(acc_t);
            free(acc_y);
            real_auth = dp_authorship_share(auth, (const char *const *)set.real, nctx);
            /* signature words: the o.persona's training messages against the others' */
            const char **pt = malloc(corpus.n * sizeof *pt), **ot = malloc(corpus.n * sizeof *ot);
            size_t np = 0, no = 0;
            if (pt && ot) {
                for (size_t i = 0; i < corpus.n; i++) {
                    if (corpus.is_persona[i])
                        pt[np++] = corpus.texts[i];
                    else
                        ot[no++] = corpus.texts[i];
                }
                int k = o.n_signature < 256 ? (int)o.n_signature : 256;
                nsig = dp_signature_words(pt, np, ot, no, k, 5, sig);
            }
            free(pt);
            free(ot);
            if (nsig < 0) goto fail;
            if (!cli.quiet)
                fprintf(stderr,
                        "eval: authorship classifier: %zu messages of %s (%zu theirs), %zu "
                        "held out as validation; vocabulary %zu n-grams; held-out "
                        "accuracy %.3f\n",
                        corpus.n, o.export_path, corpus.n_persona, corpus.n_held_out,
                        dp_authorship_vocab(auth), clf_acc);
        }
        dp_style_measure((const char *const *)set.real, nctx, (const char *const *)sig,
                         (size_t)(nsig > 0 ? nsig : 0), &real_style);
        dp_eval_gen_opts go = {.max_tokens = (int)o.max_tokens,
                               .max_context = (int)(o.max_seq + o.max_tokens),
                               .system = o.system_prompt};
        go.sampling = dp_sampler_defaults();
        if (dp_sampler_params_from_generation_config(&go.sampling, o.model_path)) goto fail;
        go.sampling.seed = (uint64_t)o.seed;
        for (int i = 0; i < ns; i++) {
            sys_result *s = &sys[i];
            s->replies = calloc(nctx, sizeof *s->replies);
            s->ended = calloc(nctx ? nctx : 1, 1);
            if (!s->replies || !s->ended) goto fail;
            if (!cli.quiet)
                fprintf(stderr, "eval: %s: %zu replies of up to %lld tokens\n", s->name, nctx,
                        (long long)o.max_tokens);
            if (dp_eval_generate(model, s->lora, tok, rctx.fmt, &set, nctx, &go, s->replies,
                                 s->ended))
                goto fail;
            const char *const *r = (const char *const *)s->replies;
            s->authorship = auth ? dp_authorship_share(auth, r, nctx) : NAN;
            dp_style_measure(r, nctx, (const char *const *)sig, (size_t)(nsig > 0 ? nsig : 0),
                             &s->style);
            s->jsd1 = dp_text_jsd(r, nctx, (const char *const *)set.real, nctx, 1);
            s->jsd2 = dp_text_jsd(r, nctx, (const char *const *)set.real, nctx, 2);
            dp_degeneration_measure(r, s->ended, nctx, &s->degen);
        }
    }

    /* the table */
    printf("doppel eval: %s on %s (%lld scored tokens in %lld conversations", o.model_path, o.data_path,
           (long long)sys[0].loss.tokens, (long long)sys[0].loss.seqs);
    if (nctx)
        printf("; %zu replies of up to %lld tokens, seed %lld", nctx, (long long)o.max_tokens,
               (long long)o.seed);
    printf(")\n  %-30s", "");
    for (int i = 0; i < ns; i++) {
        const char *n = sys[i].label;
        size_t l = strlen(n);
        printf(" %14s", l > 14 ? n + l - 14 : n);
    }
    if (nctx) printf(" %14s", "real replies");
    printf("\n");
    print_row("held-out loss (nats/token)", sys, ns, g_loss, "%.4f", NAN);
    print_row("perplexity", sys, ns, g_ppl, "%.2f", NAN);
    print_row("  95% interval, low", sys, ns, g_ppl_lo, "%.2f", NAN);
    print_row("  95% interval, high", sys, ns, g_ppl_hi, "%.2f", NAN);
    if (nctx) {
        if (auth) print_row("authorship: persona share", sys, ns, g_auth, "%.3f", real_auth);
        print_row("style: chars per reply", sys, ns, g_chars, "%.1f", real_style.chars_mean);
        print_row("style: lines per reply", sys, ns, g_lines, "%.2f", real_style.lines_mean);
        print_row("style: lowercase share", sys, ns, g_lower, "%.3f", real_style.lowercase_share);
        print_row("style: punctuation / 100 chars", sys, ns, g_punct, "%.2f",
                  real_style.punct_per_100);
        print_row("style: emoji / 100 chars", sys, ns, g_emoji, "%.2f", real_style.emoji_per_100);
        if (nsig > 0)
            print_row("style: signature-word rate", sys, ns, g_sig, "%.3f",
                      real_style.signature_rate);
        print_row("style: word JSD to real (bits)", sys, ns, g_jsd1, "%.3f", NAN);
        print_row("style: bigram JSD to real", sys, ns, g_jsd2, "%.3f", NAN);
        dp_degeneration real_degen;
        dp_degeneration_measure((const char *const *)set.real, NULL, nctx, &real_degen);
        print_row("distinct-1", sys, ns, g_d1, "%.3f", real_degen.distinct1);
        print_row("distinct-2", sys, ns, g_d2, "%.3f", real_degen.distinct2);
        print_row("repeated 3-gram rate", sys, ns, g_rep, "%.3f", real_degen.repeated_3gram_rate);
        print_row("writes [Name]: lines", sys, ns, g_other, "%.3f", real_degen.other_speaker_share);
        print_row("ends before the limit", sys, ns, g_ended, "%.3f", NAN);
        if (auth) printf("  (authorship classifier: held-out accuracy %.3f)\n", clf_acc);
        for (size_t e = 0; e < nctx && e < (size_t)o.n_examples; e++) {
            const dp_conversation *c = &set.ctx[e];
            const char *last = c->n ? c->msgs[c->n - 1].content : "";
            const char *nl = strrchr(last, '\n');
            printf("\n  context %zu (last line): %s\n", e + 1, nl ? nl + 1 : last);
            printf("    %-15s ", "real:");
            print_flat(set.real[e]);
            for (int i = 0; i < ns; i++) {
                const char *n = sys[i].label;
                size_t l = strlen(n);
                printf("    %-14s: ", l > 14 ? n + l - 14 : n);
                print_flat(sys[i].replies[e]);
            }
        }
    }

    if (o.json_path) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", o.model_path);
        cJSON_AddStringToObject(j, "data", o.data_path);
        if (o.export_path) cJSON_AddStringToObject(j, "export", o.export_path);
        if (o.persona) cJSON_AddStringToObject(j, "persona", o.persona);
        cJSON_AddStringToObject(j, "precision", o.precision);
        cJSON_AddNumberToObject(j, "max_seq", (double)o.max_seq);
        cJSON_AddNumberToObject(j, "seed", (double)o.seed);
        cJSON_AddNumberToObject(j, "bootstrap", (double)o.n_boot);
        cJSON_AddNumberToObject(j, "contexts", (double)nctx);
        cJSON_AddNumberToObject(j, "max_tokens", (double)o.max_tokens);
        cJSON_AddStringToObject(j, "divergence", "Jensen-Shannon, base 2 (0 = same, 1 = disjoint)");
        if (auth) {
            cJSON *a = cJSON_AddObjectToObject(j, "classifier");
            cJSON_AddStringToObject(a, "features",
                                    "char 3-5-gram TF-IDF (scikit-learn's definition)");
            cJSON_AddStringToObject(a, "model", "L2 logistic regression, liblinear, C 1");
            cJSON_AddNumberToObject(a, "train_messages", (double)corpus.n);
            cJSON_AddNumberToObject(a, "train_persona_messages", (double)corpus.n_persona);
            cJSON_AddNumberToObject(a, "held_out_messages", (double)corpus.n_held_out);
            cJSON_AddNumberToObject(a, "vocab", (double)dp_authorship_vocab(auth));
            add_num(a, "held_out_accuracy", clf_acc);
        }
        if (nsig > 0) {
            cJSON *sw = cJSON_AddArrayToObject(j, "signature_words");
            for (int i = 0; i < nsig; i++) cJSON_AddItemToArray(sw, cJSON_CreateString(sig[i]));
        }
        if (nctx) {
            cJSON *r = cJSON_AddObjectToObject(j, "real");
            add_num(r, "authorship", real_auth);
            cJSON_AddItemToObject(r, "style", style_json(&real_style));
            cJSON *texts = cJSON_AddArrayToObject(r, "replies");
            cJSON *ctxs = cJSON_AddArrayToObject(r, "contexts");
            for (size_t i = 0; i < nctx; i++) {
                cJSON_AddItemToArray(texts, cJSON_CreateString(set.real[i]));
                const dp_conversation *c = &set.ctx[i];
                cJSON_AddItemToArray(ctxs,
                                     cJSON_CreateString(c->n ? c->msgs[c->n - 1].content : ""));
            }
        }
        cJSON *sa = cJSON_AddArrayToObject(j, "systems");
        for (int i = 0; i < ns; i++) {
            sys_result *s = &sys[i];
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", s->name);
            add_num(o, "loss", s->loss.loss);
            add_num(o, "loss_lo", s->loss.loss_lo);
            add_num(o, "loss_hi", s->loss.loss_hi);
            add_num(o, "perplexity", s->loss.ppl);
            add_num(o, "perplexity_lo", s->loss.ppl_lo);
            add_num(o, "perplexity_hi", s->loss.ppl_hi);
            cJSON_AddNumberToObject(o, "tokens", (double)s->loss.tokens);
            cJSON_AddNumberToObject(o, "conversations", (double)s->loss.seqs);
            if (nctx) {
                add_num(o, "authorship", s->authorship);
                cJSON_AddItemToObject(o, "style", style_json(&s->style));
                add_num(o, "word_jsd", s->jsd1);
                add_num(o, "bigram_jsd", s->jsd2);
                cJSON *d = cJSON_AddObjectToObject(o, "degeneration");
                add_num(d, "distinct1", s->degen.distinct1);
                add_num(d, "distinct2", s->degen.distinct2);
                add_num(d, "repeated_3gram_rate", s->degen.repeated_3gram_rate);
                add_num(d, "other_speaker_share", s->degen.other_speaker_share);
                add_num(d, "ended_share", s->degen.ended_share);
                cJSON *rep = cJSON_AddArrayToObject(o, "replies");
                for (size_t k = 0; k < nctx; k++)
                    cJSON_AddItemToArray(rep, cJSON_CreateString(s->replies[k]));
            }
            cJSON_AddItemToArray(sa, o);
        }
        char *text = cJSON_Print(j);
        cJSON_Delete(j);
        int wrc = text ? dp_write_file_atomic(o.json_path, text, strlen(text)) : -1;
        cJSON_free(text);
        if (wrc) goto fail;
    }
    status = DP_EXIT_OK;
    goto done;
fail:
    fprintf(stderr, "doppel eval: %s\n", dp_last_error());
done:
    for (int i = 0; i < max_sys && sys; i++) {
        free(sys[i].name);
        free(sys[i].label);
        dp_lora_free(sys[i].lora);
        free(sys[i].doppel_json);
        for (size_t k = 0; sys[i].replies && k < nctx; k++) free(sys[i].replies[k]);
        free(sys[i].replies);
        free(sys[i].ended);
    }
    free(sys);
    for (int i = 0; i < nsig; i++) free(sig[i]);
    dp_authorship_destroy(auth);
    dp_eval_corpus_free(&corpus);
    dp_eval_set_free(&set);
    dp_token_data_free(&td);
    dp_train_render_ctx_free(&rctx);
    cJSON_Delete(first_dj);
    dp_model_free(model);
    dp_tokenizer_free(tok);
    dp_cli_free(&cli);
    return status;
}
