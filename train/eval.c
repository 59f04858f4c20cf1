/* doppel eval's model side (see eval.h): held-out loss through the training loss, bootstrap
 * intervals, generation on held-out contexts, the export's messages outside validation. */
#include "train/eval.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/base/error.h"
#include "data/base/io.h"
#include "data/dce.h"
#include "infer/generate.h"
#include "train/model_grad.h"
#include "data/base/rng.h"

/* ---------------------------------------------------------------- loss */


static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int dp_eval_bootstrap(const double *loss_sum, const int64_t *tokens, size_t n, int n_boot,
                      uint64_t seed, double *lo, double *hi) {
    *lo = *hi = NAN;
    if (n == 0 || n_boot <= 0) return 0;
    double *means = dp_malloc((size_t)n_boot * sizeof *means);
    if (!means) return -1;
    int m = 0;
    for (int b = 0; b < n_boot; b++) {
        double s = 0;
        int64_t t = 0;
        for (size_t i = 0; i < n; i++) {
            /* an index in [0, n): 32 random bits scaled; n is far below 2^32 */
            uint64_t bits = dp_rng_bits(seed, 0xb007, (uint64_t)b * n + i) >> 32;
            size_t k = (size_t)((bits * n) >> 32);
            s += loss_sum[k];
            t += tokens[k];
        }
        if (t > 0) means[m++] = s / (double)t;
    }
    if (m > 0) {
        qsort(means, (size_t)m, sizeof *means, cmp_double);
        *lo = means[(size_t)(0.025 * (m - 1) + 0.5)];
        *hi = means[(size_t)(0.975 * (m - 1) + 0.5)];
    }
    free(means);
    return 0;
}

int dp_eval_heldout_loss(const dp_model *model, const dp_lora *lora, const dp_token_data *d,
                         int n_boot, uint64_t seed, dp_eval_loss_result *out) {
    memset(out, 0, sizeof *out);
    out->loss = out->loss_lo = out->loss_hi = out->ppl = out->ppl_lo = out->ppl_hi = NAN;
    if (d->nseq <= 0) return dp_fail("eval: the validation data has no sequence to score");
    int64_t longest = 0;
    for (int64_t i = 0; i < d->nseq; i++)
        if (d->offsets[i + 1] - d->offsets[i] > longest)
            longest = d->offsets[i + 1] - d->offsets[i];
    /* one sequence per batch: the plan is written by hand, in file order */
    dp_epoch_plan plan = {0};
    plan.order = dp_malloc((size_t)d->nseq * sizeof *plan.order);
    plan.start = dp_malloc((size_t)(d->nseq + 1) * sizeof *plan.start);
    double *sums = dp_calloc((size_t)d->nseq, sizeof *sums);
    int64_t *counts = dp_calloc((size_t)d->nseq, sizeof *counts);
    dp_batch_buf bb = {0};
    dp_grad_ws *ws = NULL;
    int rc = -1;
    if (!plan.order || !plan.start || !sums || !counts || dp_batch_buf_init(&bb, longest)) goto out;
    for (int64_t i = 0; i < d->nseq; i++) plan.order[i] = plan.start[i] = i;
    plan.start[d->nseq] = d->nseq;
    plan.nbatches = d->nseq;
    ws = dp_grad_ws_create(model, lora, (int)longest, false, 0);
    if (!ws) goto out;
    double total = 0;
    int64_t ntok = 0;
    for (int64_t k = 0; k < d->nseq; k++) {
        if (dp_batch_fill(&bb, d, &plan, k) ||
            dp_model_loss(ws, model, lora, &bb.b, &sums[k], &counts[k]))
            goto out;
        total += sums[k];
        ntok += counts[k];
    }
    if (ntok == 0) {
        dp_fail("eval: no trained (assistant) token in the validation data");
        goto out;
    }
    out->tokens = ntok;
    out->seqs = d->nseq;
    out->loss = total / (double)ntok;
    if (dp_eval_bootstrap(sums, counts, (size_t)d->nseq, n_boot, seed, &out->loss_lo,
                          &out->loss_hi))
        goto out;
    out->ppl = exp(out->loss);
    out->ppl_lo = exp(out->loss_lo);
    out->ppl_hi = exp(out->loss_hi);
    rc = 0;
out:
    dp_grad_ws_free(ws);
    dp_batch_buf_free(&bb);
    free(plan.order);
    free(plan.start);
    free(sums);
    free(counts);
    return rc;
}

/* ---------------------------------------------------------------- held-out contexts */

static int push_str(char ***v, size_t *n, size_t *cap, char *s) {
    if (!s) return -1;
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 64;
        char **p = dp_realloc(*v, c * sizeof *p);
        if (!p) {
            free(s);
            return -1;
        }
        *v = p;
        *cap = c;
    }
    (*v)[(*n)++] = s;
    return 0;
}

/* "[Name]: text" -> "text" (other lines unchanged), copied */
static char *strip_speaker(const char *line, size_t len) {
    if (len > 3 && line[0] == '[') {
        const char *close = memchr(line, ']', len);
        if (close && close + 1 < line + len && close[1] == ':') {
            const char *t = close + 2;
            while (t < line + len && *t == ' ') t++;
            len -= (size_t)(t - line);
            line = t;
        }
    }
    char *s = dp_malloc(len + 1);
    if (s) {
        memcpy(s, line, len);
        s[len] = 0;
    }
    return s;
}

int dp_eval_set_load(const char *path, dp_eval_set *out) {
    memset(out, 0, sizeof *out);
    dp_dataset_reader *r = dp_dataset_open(path);
    if (!r) return -1;
    size_t cap = 0, ocap = 0;
    dp_conversation c;
    int got, rc = 0;
    while (!rc && (got = dp_dataset_next(r, &c)) == 1) {
        int last = -1;
        for (int i = 0; i < c.n; i++)
            if (c.msgs[i].role == DP_ROLE_ASSISTANT) last = i;
        if (last <= 0) continue; // nothing to reply to
        if (out->n == cap) {
            cap = cap ? 2 * cap : 64;
            dp_conversation *cv = dp_realloc(out->ctx, cap * sizeof *cv);
            char **rv = dp_realloc(out->real, cap * sizeof *rv);
            if (cv) out->ctx = cv;
            if (rv) out->real = rv;
            if (!cv || !rv) {
                rc = -1;
                break;
            }
        }
        dp_conversation *x = &out->ctx[out->n];
        *x = (dp_conversation){
            .msgs = dp_calloc((size_t)last, sizeof *x->msgs), .n = last, .line = c.line};
        out->real[out->n] = dp_strdup(c.msgs[last].content);
        out->n++;
        if (!x->msgs || !out->real[out->n - 1]) {
            rc = -1;
            break;
        }
        for (int i = 0; i < last && !rc; i++) {
            x->msgs[i].role = c.msgs[i].role;
            x->msgs[i].len = c.msgs[i].len;
            if (!(x->msgs[i].content = dp_strdup(c.msgs[i].content))) rc = -1;
            if (c.msgs[i].role != DP_ROLE_USER) continue;
            for (const char *p = c.msgs[i].content; *p && !rc;) {
                const char *nl = strchr(p, '\n');
                size_t len = nl ? (size_t)(nl - p) : strlen(p);
                if (len) rc = push_str(&out->others, &out->n_others, &ocap, strip_speaker(p, len));
                p += len + (nl != NULL);
            }
        }
    }
    dp_dataset_close(r);
    if (rc || got < 0) {
        dp_eval_set_free(out);
        return -1;
    }
    if (out->n == 0) {
        dp_eval_set_free(out);
        return dp_fail("%s: no conversation with an assistant reply after some context", path);
    }
    return 0;
}

void dp_eval_set_free(dp_eval_set *s) {
    for (size_t i = 0; i < s->n; i++) {
        if (s->ctx[i].msgs)
            for (int k = 0; k < s->ctx[i].n; k++) free((char *)s->ctx[i].msgs[k].content);
        free(s->ctx[i].msgs);
        free(s->real[i]);
    }
    for (size_t i = 0; i < s->n_others; i++) free(s->others[i]);
    free(s->ctx);
    free(s->real);
    free(s->others);
    memset(s, 0, sizeof *s);
}

int dp_eval_generate(const dp_model *model, const dp_lora *lora, dp_tokenizer *tok,
                     dp_chat_format fmt, const dp_eval_set *set, size_t n,
                     const dp_eval_gen_opts *o, char **texts, unsigned char *ended) {
    if (n > set->n) n = set->n;
    for (size_t i = 0; i < n; i++) texts[i] = NULL;
    const dp_model_config *c = &model->cfg;
    int max_context = o->max_context;
    if (c->max_position > 0 && max_context > c->max_position) max_context = c->max_position;
    dp_gen_state g;
    if (dp_gen_state_create(&g, model, max_context)) return -1;
    if (lora) dp_forward_set_hook(&g.fwd, dp_lora_hook, (void *)lora);
    int n_valid = dp_tokenizer_vocab_size(tok);
    if (n_valid > c->V) n_valid = c->V;
    dp_sampler smp;
    if (dp_sampler_create(&smp, &o->sampling, c->V, n_valid)) {
        dp_gen_state_free(&g);
        return -1;
    }
    int32_t stop[16];
    int n_stop = dp_chat_stop_ids(tok, fmt, stop, 8); // chat's stop set: format's + the model's
    for (int i = 0; i < c->n_eos && n_stop < 16; i++) {
        bool have = false;
        for (int j = 0; j < n_stop; j++) have |= stop[j] == c->eos_ids[i];
        if (!have) stop[n_stop++] = c->eos_ids[i];
    }
    dp_chat_msg *msgs = NULL;
    dp_chat_tokens ct = {0};
    dp_ids ids = {0};
    dp_buf text = {0};
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const dp_conversation *x = &set->ctx[i];
        dp_chat_msg *m = dp_realloc(msgs, sizeof *m * (size_t)(x->n + 1));
        if (!m) {
            rc = -1;
            break;
        }
        msgs = m;
        int k = 0;
        if (o->system && !(x->n > 0 && x->msgs[0].role == DP_ROLE_SYSTEM))
            msgs[k++] = (dp_chat_msg){DP_ROLE_SYSTEM, o->system, strlen(o->system)};
        for (int j = 0; j < x->n; j++) msgs[k++] = x->msgs[j];
        ct.ids.n = 0;
        if (dp_chat_render(tok, fmt, msgs, (size_t)k, true, &ct)) {
            rc = -1;
            break;
        }
        /* a context longer than the window keeps its most recent tokens */
        int keep = max_context - o->max_tokens;
        size_t skip = (int)ct.ids.n > keep && keep > 0 ? ct.ids.n - (size_t)keep : 0;
        dp_sampler_params sp = o->sampling;
        sp.seed =
            o->sampling.seed + i; // each context its own stream: replies do not depend on order
        dp_sampler_set(&smp, &sp);
        dp_gen_opts go = {.max_tokens = o->max_tokens, .stop = stop, .n_stop = n_stop};
        dp_gen_result res;
        ids.n = 0;
        if (dp_generate(&g, &smp, ct.ids.v + skip, (int)(ct.ids.n - skip), &go, NULL, NULL, &ids,
                        &res)) {
            rc = -1;
            break;
        }
        text.len = 0;
        if (text.data) text.data[0] = 0;
        if (dp_tokenizer_decode(tok, ids.v, ids.n, true, &text)) {
            rc = -1;
            break;
        }
        texts[i] = dp_strdup(text.data ? text.data : "");
        if (!texts[i]) rc = -1;
        ended[i] = !strcmp(res.finish, "stop");
    }
    free(msgs);
    dp_chat_tokens_free(&ct);
    dp_ids_free(&ids);
    dp_buf_free(&text);
    dp_sampler_free(&smp);
    dp_gen_state_free(&g);
    if (rc)
        for (size_t i = 0; i < n; i++) free(texts[i]), texts[i] = NULL;
    return rc;
}

/* ---------------------------------------------------------------- the export */

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* trimmed copy with CRLF -> LF, as prep keeps a message */
static char *trimmed(const char *s, size_t n) {
    while (n && isspace((unsigned char)*s)) s++, n--;
    while (n && isspace((unsigned char)s[n - 1])) n--;
    char *t = dp_malloc(n + 1);
    if (!t) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] == '\r' && i + 1 < n && s[i + 1] == '\n')) t[o++] = s[i];
    t[o] = 0;
    return t;
}

int dp_eval_corpus_load(const char *export_path, const char *persona, const dp_eval_set *val,
                        dp_eval_corpus *out) {
    memset(out, 0, sizeof *out);
    /* every line of the validation set, sorted, to hold messages out */
    char **lines = NULL;
    size_t nl = 0, lcap = 0;
    int rc = 0;
    for (size_t i = 0; i < val->n && !rc; i++) {
        for (const char *p = val->real[i]; *p && !rc;) { // a reply's lines are her messages
            const char *e = strchr(p, '\n');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            rc = push_str(&lines, &nl, &lcap, trimmed(p, len));
            p += len + (e != NULL);
        }
    }
    for (size_t i = 0; i < val->n_others && !rc; i++)
        rc = push_str(&lines, &nl, &lcap, trimmed(val->others[i], strlen(val->others[i])));
    if (!rc) qsort(lines, nl, sizeof *lines, cmp_str);

    dp_dce_reader *r = rc ? NULL : dp_dce_open(export_path);
    if (!r) rc = -1;
    uint64_t *ids = NULL;
    size_t cap = 0, n_ids = 0, id_cap = 0, author_cap = 0;
    uint64_t *author = NULL;
    char *end = NULL;
    unsigned long long want_id = strtoull(persona, &end, 10);
    bool by_id = end && *end == 0 && *persona;
    dp_dce_msg m;
    int got;
    while (!rc && (got = dp_dce_next(r, &m)) != DP_DCE_END) {
        if (got != DP_DCE_MSG) {
            rc = -1;
            break;
        }
        /* the persona's ids: every id that wrote under that name (prep's rule) */
        bool named =
            by_id ? m.author_id == want_id
                  : m.author_len == strlen(persona) && !memcmp(m.author, persona, m.author_len);
        if (named) {
            bool have = false;
            for (size_t i = 0; i < n_ids; i++) have |= ids[i] == m.author_id;
            if (!have) {
                if (n_ids == id_cap) {
                    id_cap = id_cap ? 2 * id_cap : 4;
                    uint64_t *p = dp_realloc(ids, id_cap * sizeof *p);
                    if (!p) {
                        rc = -1;
                        break;
                    }
                    ids = p;
                }
                ids[n_ids++] = m.author_id;
            }
        }
        if (m.system || dp_dce_is_system_text(m.content, m.content_len)) continue;
        char *t = trimmed(m.content, m.content_len);
        if (!t) {
            rc = -1;
            break;
        }
        if (!*t) {
            free(t);
            continue;
        }
        char *first_line = t, *nlp = strchr(t, '\n');
        if (nlp) *nlp = 0;
        bool held = nl && bsearch(&first_line, lines, nl, sizeof *lines, cmp_str);
        if (nlp) *nlp = '\n';
        if (held) {
            out->n_held_out++;
            free(t);
            continue;
        }
        if (out->n == author_cap) {
            author_cap = author_cap ? 2 * author_cap : 256;
            uint64_t *a = dp_realloc(author, author_cap * sizeof *a);
            if (!a) {
                free(t);
                rc = -1;
                break;
            }
            author = a;
        }
        author[out->n] = m.author_id;
        if (push_str(&out->texts, &out->n, &cap, t)) {
            rc = -1;
            break;
        }
    }
    if (r) dp_dce_close(r);
    if (!rc) {
        out->is_persona = dp_calloc(out->n ? out->n : 1, 1);
        if (!out->is_persona) rc = -1;
        for (size_t i = 0; i < out->n && !rc; i++) {
            for (size_t k = 0; k < n_ids; k++) out->is_persona[i] |= author[i] == ids[k];
            out->n_persona += out->is_persona[i];
        }
        if (!rc && n_ids == 0)
            rc = dp_fail("%s: no message by \"%s\" (give the persona's name or author id as "
                         "`doppel prep --list-authors` shows it)",
                         export_path, persona);
    }
    for (size_t i = 0; i < nl; i++) free(lines[i]);
    free(lines);
    free(ids);
    free(author);
    if (rc) dp_eval_corpus_free(out);
    return rc;
}

void dp_eval_corpus_free(dp_eval_corpus *c) {
    for (size_t i = 0; i < c->n; i++) free(c->texts[i]);
    free(c->texts);
    free(c->is_persona);
    memset(c, 0, sizeof *c);
}
