/* Text metrics for doppel eval: authorship classifier (char n-gram TF-IDF + liblinear logistic
 * regression), style statistics and divergences, degeneration measures. */
#include "infer/eval_text.h"

#include <ctype.h>
#include <linear.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "data/base/error.h"

/* ---------------------------------------------------------------- a string -> id map */

typedef struct {
    char *bytes; // every key, back to back
    size_t bytes_len, bytes_cap;
    size_t *key_off; // (n) where key i starts in bytes
    uint32_t *key_len;
    double *count;  // (n) a counter per key, for whoever needs one
    int64_t *slots; // (cap) key id + 1, 0 = empty
    size_t n, cap;
} strmap;

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; // FNV-1a
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static void strmap_free(strmap *m) {
    free(m->bytes);
    free(m->key_off);
    free(m->key_len);
    free(m->count);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static int strmap_grow(strmap *m) {
    size_t cap = m->cap ? 2 * m->cap : 1024;
    int64_t *slots = dp_calloc(cap, sizeof *slots);
    size_t *off = dp_realloc(m->key_off, cap / 2 * sizeof *off);
    if (off) m->key_off = off;
    uint32_t *len = dp_realloc(m->key_len, cap / 2 * sizeof *len);
    if (len) m->key_len = len;
    double *count = dp_realloc(m->count, cap / 2 * sizeof *count);
    if (count) m->count = count;
    if (!slots || !off || !len || !count) {
        free(slots);
        return -1;
    }
    for (size_t i = 0; i < m->n; i++) { // rehash: keys keep their ids
        uint64_t h = hash_bytes(m->bytes + m->key_off[i], m->key_len[i]);
        size_t s = h & (cap - 1);
        while (slots[s]) s = (s + 1) & (cap - 1);
        slots[s] = (int64_t)i + 1;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

/* The id of key (inserted when add, else -1 if absent); -2 on allocation failure. */
static int64_t strmap_id(strmap *m, const char *key, size_t n, int add) {
    if (m->cap) {
        uint64_t h = hash_bytes(key, n);
        for (size_t s = h & (m->cap - 1);; s = (s + 1) & (m->cap - 1)) {
            int64_t id = m->slots[s] - 1;
            if (id < 0) break;
            if (m->key_len[id] == n && !memcmp(m->bytes + m->key_off[id], key, n)) return id;
        }
    }
    if (!add) return -1;
    if (2 * (m->n + 1) > m->cap && strmap_grow(m)) return -2; // load <= 1/2
    if (m->bytes_len + n > m->bytes_cap) {
        size_t cap = m->bytes_cap ? 2 * m->bytes_cap : 1 << 16;
        while (cap < m->bytes_len + n) cap *= 2;
        char *b = dp_realloc(m->bytes, cap);
        if (!b) return -2;
        m->bytes = b;
        m->bytes_cap = cap;
    }
    memcpy(m->bytes + m->bytes_len, key, n);
    int64_t id = (int64_t)m->n++;
    m->key_off[id] = m->bytes_len;
    m->key_len[id] = (uint32_t)n;
    m->count[id] = 0;
    m->bytes_len += n;
    uint64_t h = hash_bytes(key, n);
    size_t s = h & (m->cap - 1);
    while (m->slots[s]) s = (s + 1) & (m->cap - 1);
    m->slots[s] = id + 1;
    return id;
}

/* ---------------------------------------------------------------- character n-grams */

static int is_ascii_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* scikit-learn's char analyzer input: every run of 2+ whitespace becomes one space (a single
 * newline stays). Returns a malloc'd copy and the code point starts (cp[i] = byte offset of
 * code point i, cp[ncp] = length). */
static char *char_normalize(const char *text, size_t **cp_out, size_t *ncp_out) {
    size_t len = strlen(text);
    char *s = dp_malloc(len + 1);
    size_t *cp = dp_malloc((len + 1) * sizeof *cp);
    if (!s || !cp) {
        free(s);
        free(cp);
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        if (is_ascii_space((unsigned char)text[i])) {
            size_t j = i;
            while (j < len && is_ascii_space((unsigned char)text[j])) j++;
            if (j - i >= 2) {
                s[o++] = ' ';
                i = j;
                continue;
            }
        }
        s[o++] = text[i++];
    }
    s[o] = 0;
    size_t ncp = 0;
    for (size_t i = 0; i < o; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) cp[ncp++] = i;
    cp[ncp] = o;
    *cp_out = cp;
    *ncp_out = ncp;
    return s;
}

struct dp_authorship {
    dp_authorship_opts opts;
    strmap vocab; // n-gram -> feature id (count = document frequency while training)
    double *idf;  // (vocab.n)
    struct model *model;
};

typedef struct {
    int64_t *ids; // feature ids of one text's n-grams, then sorted
    size_t n, cap;
} id_list;

/* The n-gram ids of text (added to the vocabulary when add). 0, or -1 on error. */
static int text_ngrams(strmap *vocab, const dp_authorship_opts *o, const char *text, int add,
                       id_list *out) {
    size_t *cp, ncp;
    char *s = char_normalize(text, &cp, &ncp);
    if (!s) return -1;
    out->n = 0;
    int rc = 0;
    for (int n = o->min_n; n <= o->max_n && (size_t)n <= ncp && !rc; n++) {
        for (size_t i = 0; i + (size_t)n <= ncp; i++) {
            int64_t id = strmap_id(vocab, s + cp[i], cp[i + n] - cp[i], add);
            if (id == -2) {
                rc = -1;
                break;
            }
            if (id < 0) continue; // unknown at prediction time: ignored, as scikit-learn does
            if (out->n == out->cap) {
                size_t cap = out->cap ? 2 * out->cap : 256;
                int64_t *ids = dp_realloc(out->ids, cap * sizeof *ids);
                if (!ids) {
                    rc = -1;
                    break;
                }
                out->ids = ids;
                out->cap = cap;
            }
            out->ids[out->n++] = id;
        }
    }
    free(s);
    free(cp);
    return rc;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Sorted ids -> liblinear nodes (1-based index, tf * idf, L2-normalized) + the bias node +
 * the terminator. nodes needs ids->n + 2 entries. Returns the node count before the bias. */
static size_t tfidf_nodes(const int64_t *ids, size_t n, const double *idf, int bias_index,
                          struct feature_node *nodes) {
    size_t k = 0;
    double norm = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && ids[j] == ids[i]) j++;
        double v = (double)(j - i) * idf[ids[i]];
        nodes[k].index = (int)ids[i] + 1;
        nodes[k].value = v;
        norm += v * v;
        k++;
        i = j;
    }
    norm = sqrt(norm);
    for (size_t i = 0; i < k && norm > 0; i++) nodes[i].value /= norm;
    nodes[k].index = bias_index;
    nodes[k].value = 1.0;
    nodes[k + 1].index = -1;
    return k;
}

void dp_authorship_opts_default(dp_authorship_opts *o) {
    *o = (dp_authorship_opts){.min_n = 3, .max_n = 5, .C = 1.0, .eps = 1e-4};
}

static void liblinear_quiet(const char *s) {
    (void)s;
}

dp_authorship *dp_authorship_train(const char *const *texts, const unsigned char *is_persona,
                                   size_t n, const dp_authorship_opts *opts) {
    dp_authorship_opts o;
    if (opts)
        o = *opts;
    else
        dp_authorship_opts_default(&o);
    size_t npos = 0;
    for (size_t i = 0; i < n; i++) npos += is_persona[i] != 0;
    if (npos == 0 || npos == n) {
        dp_fail("authorship classifier: %zu texts, %zu of them the persona's (it needs both the "
                "persona's messages and other people's)",
                n, npos);
        return NULL;
    }
    if (o.min_n < 1 || o.max_n < o.min_n) {
        dp_fail("authorship classifier: bad n-gram range %d..%d", o.min_n, o.max_n);
        return NULL;
    }
    dp_authorship *a = dp_calloc(1, sizeof *a);
    int64_t **doc_ids = dp_calloc(n, sizeof *doc_ids);
    size_t *doc_n = dp_calloc(n, sizeof *doc_n);
    struct feature_node **rows = dp_calloc(n, sizeof *rows);
    double *y = dp_calloc(n, sizeof *y);
    id_list ids = {0};
    int ok = a && doc_ids && doc_n && rows && y;
    if (ok) a->opts = o;
    /* pass 1: vocabulary, document frequencies, each text's sorted ids */
    for (size_t i = 0; i < n && ok; i++) {
        if (text_ngrams(&a->vocab, &o, texts[i], 1, &ids)) {
            ok = 0;
            break;
        }
        if (ids.n) qsort(ids.ids, ids.n, sizeof *ids.ids, cmp_i64);
        doc_ids[i] = dp_malloc((ids.n ? ids.n : 1) * sizeof **doc_ids);
        if (!doc_ids[i]) {
            ok = 0;
            break;
        }
        memcpy(doc_ids[i], ids.ids, ids.n * sizeof *ids.ids);
        doc_n[i] = ids.n;
        for (size_t k = 0; k < ids.n; k++)
            if (k == 0 || ids.ids[k] != ids.ids[k - 1]) a->vocab.count[ids.ids[k]] += 1;
        y[i] = is_persona[i] ? 1 : 0;
    }
    if (ok) ok = (a->idf = dp_malloc((a->vocab.n ? a->vocab.n : 1) * sizeof *a->idf)) != NULL;
    for (size_t f = 0; ok && f < a->vocab.n; f++) // smooth idf, as scikit-learn's default
        a->idf[f] = log((1.0 + (double)n) / (1.0 + a->vocab.count[f])) + 1.0;
    int bias_index = (int)a->vocab.n + 1;
    for (size_t i = 0; i < n && ok; i++) {
        rows[i] = dp_malloc((doc_n[i] + 2) * sizeof **rows);
        if (!rows[i])
            ok = 0;
        else
            tfidf_nodes(doc_ids[i], doc_n[i], a->idf, bias_index, rows[i]);
    }
    if (ok) {
        struct problem prob = {.l = (int)n, .n = bias_index, .y = y, .x = rows, .bias = 1.0};
        struct parameter param = {.solver_type = L2R_LR, .eps = o.eps, .C = o.C};
        const char *err = check_parameter(&prob, &param);
        if (err) {
            dp_fail("authorship classifier: liblinear refused the problem: %s", err);
            ok = 0;
        } else {
            set_print_string_function(liblinear_quiet);
            a->model = train(&prob, &param);
            ok = a->model != NULL;
            if (!ok) dp_fail("authorship classifier: liblinear's train() failed");
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (doc_ids) free(doc_ids[i]);
        if (rows) free(rows[i]);
    }
    free(doc_ids);
    free(doc_n);
    free(rows);
    free(y);
    free(ids.ids);
    if (!ok) {
        dp_authorship_destroy(a);
        return NULL;
    }
    return a;
}

void dp_authorship_destroy(dp_authorship *a) {
    if (!a) return;
    strmap_free(&a->vocab);
    free(a->idf);
    if (a->model) free_and_destroy_model(&a->model);
    free(a);
}

size_t dp_authorship_vocab(const dp_authorship *a) {
    return a->vocab.n;
}

/* The normalized vector of text; NULL on allocation failure. *k = nodes before the bias. */
static struct feature_node *text_vector(const dp_authorship *a, const char *text, size_t *k) {
    id_list ids = {0};
    /* lookups only: the map is not modified (add = 0) */
    if (text_ngrams((strmap *)&a->vocab, &a->opts, text, 0, &ids)) {
        free(ids.ids);
        return NULL;
    }
    if (ids.n) qsort(ids.ids, ids.n, sizeof *ids.ids, cmp_i64); /* none: a text of no n-gram */
    struct feature_node *x = dp_malloc((ids.n + 2) * sizeof *x);
    if (x) *k = tfidf_nodes(ids.ids, ids.n, a->idf, (int)a->vocab.n + 1, x);
    free(ids.ids);
    return x;
}

double dp_authorship_prob(const dp_authorship *a, const char *text) {
    size_t k;
    struct feature_node *x = text_vector(a, text, &k);
    if (!x) return NAN;
    double p[2];
    predict_probability(a->model, x, p);
    free(x);
    int labels[2];
    get_labels(a->model, labels); // liblinear orders classes by first appearance
    return labels[0] == 1 ? p[0] : p[1];
}

double dp_authorship_share(const dp_authorship *a, const char *const *texts, size_t n) {
    if (!n) return NAN;
    size_t yes = 0;
    for (size_t i = 0; i < n; i++) yes += dp_authorship_prob(a, texts[i]) > 0.5;
    return (double)yes / (double)n;
}

double dp_authorship_accuracy(const dp_authorship *a, const char *const *texts,
                              const unsigned char *is_persona, size_t n) {
    if (!n) return NAN;
    size_t right = 0;
    for (size_t i = 0; i < n; i++)
        right += (dp_authorship_prob(a, texts[i]) > 0.5) == (is_persona[i] != 0);
    return (double)right / (double)n;
}

double dp_authorship_weight(const dp_authorship *a, const char *text, const char *ngram) {
    int64_t id = strmap_id((strmap *)&a->vocab, ngram, strlen(ngram), 0);
    if (id < 0) return 0;
    size_t k;
    struct feature_node *x = text_vector(a, text, &k);
    if (!x) return NAN;
    double w = 0;
    for (size_t i = 0; i < k; i++)
        if (x[i].index == id + 1) w = x[i].value;
    free(x);
    return w;
}

/* ---------------------------------------------------------------- words */

/* Calls fn for each word of text (see the header for what a word is). buf holds the word. */
typedef void (*word_fn)(const char *w, size_t n, void *ctx);

static void for_each_word(const char *text, word_fn fn, void *ctx) {
    char buf[256];
    const char *p = text;
    while (*p) {
        while (*p && is_ascii_space((unsigned char)*p)) p++;
        const char *start = p;
        while (*p && !is_ascii_space((unsigned char)*p)) p++;
        const char *end = p;
        while (start < end && ispunct((unsigned char)*start)) start++;
        while (end > start && ispunct((unsigned char)end[-1])) end--;
        size_t n = (size_t)(end - start);
        if (!n) continue;
        if (n >= sizeof buf) n = sizeof buf - 1; // a 255-byte prefix identifies a word enough
        for (size_t i = 0; i < n; i++) buf[i] = (char)tolower((unsigned char)start[i]);
        buf[n] = 0;
        fn(buf, n, ctx);
    }
}

/* Word n-grams (order 1 or 2) of one text, joined by a space, counted into a map. */
typedef struct {
    strmap *map;
    int order;
    char prev[256];
    size_t prev_n;
    int have_prev;
    size_t total;
    int failed;
} gram_counter;

static void count_gram(const char *w, size_t n, void *ctx) {
    gram_counter *g = ctx;
    if (g->order == 1) {
        int64_t id = strmap_id(g->map, w, n, 1);
        if (id < 0)
            g->failed = 1;
        else
            g->map->count[id] += 1, g->total++;
        return;
    }
    if (g->have_prev) {
        char pair[520];
        memcpy(pair, g->prev, g->prev_n);
        pair[g->prev_n] = ' ';
        memcpy(pair + g->prev_n + 1, w, n);
        int64_t id = strmap_id(g->map, pair, g->prev_n + 1 + n, 1);
        if (id < 0)
            g->failed = 1;
        else
            g->map->count[id] += 1, g->total++;
    }
    memcpy(g->prev, w, n);
    g->prev_n = n;
    g->have_prev = 1;
}

/* Counts the order-grams of every text into map; returns their total (bigrams never cross
 * from one text to the next). -1 on allocation failure. */
static long long count_grams(strmap *map, const char *const *texts, size_t n, int order) {
    gram_counter g = {.map = map, .order = order};
    for (size_t i = 0; i < n; i++) {
        g.have_prev = 0;
        for_each_word(texts[i], count_gram, &g);
    }
    return g.failed ? -1 : (long long)g.total;
}

double dp_text_jsd(const char *const *a, size_t na, const char *const *b, size_t nb, int order) {
    strmap ma = {0}, mb = {0};
    long long ta = count_grams(&ma, a, na, order), tb = count_grams(&mb, b, nb, order);
    double jsd = -1;
    if (ta > 0 && tb > 0) {
        /* JSD = H(M) - (H(P) + H(Q)) / 2 written term by term over the union of keys */
        jsd = 0;
        for (size_t i = 0; i < ma.n; i++) {
            double p = ma.count[i] / (double)ta;
            int64_t j = strmap_id(&mb, ma.bytes + ma.key_off[i], ma.key_len[i], 0);
            double q = j >= 0 ? mb.count[j] / (double)tb : 0;
            double m = (p + q) / 2;
            jsd += 0.5 * p * log2(p / m);
            if (q > 0) jsd += 0.5 * q * log2(q / m);
        }
        for (size_t j = 0; j < mb.n; j++) // keys only in b: q * log2(q / (q/2)) / 2 = q / 2
            if (strmap_id(&ma, mb.bytes + mb.key_off[j], mb.key_len[j], 0) < 0)
                jsd += 0.5 * (mb.count[j] / (double)tb);
        if (jsd < 0) jsd = 0; // rounding
    }
    strmap_free(&ma);
    strmap_free(&mb);
    return jsd;
}

typedef struct {
    char *word;
    double score;
} scored_word;

static int cmp_score_desc(const void *a, const void *b) {
    double x = ((const scored_word *)a)->score, y = ((const scored_word *)b)->score;
    if (x != y) return x < y ? 1 : -1;
    return strcmp(((const scored_word *)a)->word, ((const scored_word *)b)->word);
}

int dp_signature_words(const char *const *persona, size_t np, const char *const *others, size_t no,
                       int k, int min_count, char **out) {
    strmap mp = {0}, mo = {0};
    long long tp = count_grams(&mp, persona, np, 1), to = count_grams(&mo, others, no, 1);
    int got = -1;
    scored_word *s = NULL;
    if (tp >= 0 && to >= 0 && (s = dp_malloc((mp.n ? mp.n : 1) * sizeof *s))) {
        size_t ns = 0;
        double vocab = (double)(mp.n + mo.n); // add-one smoothing over (roughly) the union
        for (size_t i = 0; i < mp.n; i++) {
            if (mp.count[i] < min_count) continue;
            int64_t j = strmap_id(&mo, mp.bytes + mp.key_off[i], mp.key_len[i], 0);
            double co = j >= 0 ? mo.count[j] : 0;
            double lp = log((mp.count[i] + 1) / ((double)tp + vocab));
            double lo = log((co + 1) / ((double)to + vocab));
            s[ns].score = lp - lo;
            s[ns].word = dp_malloc(mp.key_len[i] + 1); // keys are stored unterminated
            if (!s[ns].word) break;
            memcpy(s[ns].word, mp.bytes + mp.key_off[i], mp.key_len[i]);
            s[ns].word[mp.key_len[i]] = 0;
            ns++;
        }
        if (ns) qsort(s, ns, sizeof *s, cmp_score_desc);
        got = 0;
        for (size_t i = 0; i < ns; i++) {
            if (got < k)
                out[got++] = s[i].word;
            else
                free(s[i].word);
        }
    }
    free(s);
    strmap_free(&mp);
    strmap_free(&mo);
    if (got < 0) dp_fail("signature words: out of memory");
    return got;
}

/* ---------------------------------------------------------------- style and degeneration */

static uint32_t next_cp(const unsigned char **p) {
    const unsigned char *s = *p;
    uint32_t c = *s++;
    int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    if (extra) c &= 0x3F >> extra;
    for (; extra && (*s & 0xC0) == 0x80; extra--) c = (c << 6) | (*s++ & 0x3F);
    *p = s;
    return c;
}

static int is_emoji(uint32_t c) {
    return (c >= 0x1F000 && c <= 0x1FAFF) || (c >= 0x2600 && c <= 0x27BF);
}

typedef struct {
    strmap *signature;
    size_t words, hits;
} sig_counter;

static void count_signature(const char *w, size_t n, void *ctx) {
    sig_counter *c = ctx;
    c->words++;
    c->hits += strmap_id(c->signature, w, n, 0) >= 0;
}

void dp_style_measure(const char *const *texts, size_t n, const char *const *signature, size_t k,
                      dp_style_stats *out) {
    memset(out, 0, sizeof *out);
    out->replies = n;
    size_t cps = 0, lines = 0, lower = 0, cased = 0, punct = 0, emoji = 0;
    for (size_t i = 0; i < n; i++) {
        lines++;
        for (const unsigned char *p = (const unsigned char *)texts[i]; *p;) {
            uint32_t c = next_cp(&p);
            cps++;
            lines += c == '\n';
            if (c < 128) {
                lower += islower((int)c) != 0;
                cased += isalpha((int)c) != 0;
                punct += ispunct((int)c) != 0;
            }
            emoji += is_emoji(c);
        }
    }
    if (n) {
        out->chars_mean = (double)cps / (double)n;
        out->lines_mean = (double)lines / (double)n;
    }
    out->lowercase_share = cased ? (double)lower / (double)cased : NAN;
    out->punct_per_100 = cps ? 100.0 * (double)punct / (double)cps : NAN;
    out->emoji_per_100 = cps ? 100.0 * (double)emoji / (double)cps : NAN;
    out->signature_rate = NAN;
    if (signature && k) {
        strmap sig = {0};
        for (size_t i = 0; i < k; i++) strmap_id(&sig, signature[i], strlen(signature[i]), 1);
        sig_counter c = {.signature = &sig};
        for (size_t i = 0; i < n; i++) for_each_word(texts[i], count_signature, &c);
        out->signature_rate = c.words ? (double)c.hits / (double)c.words : NAN;
        strmap_free(&sig);
    }
}

/* Word 3-grams of one reply that repeat an earlier one in the same reply. */
typedef struct {
    strmap seen;
    char w[3][256];
    size_t wn[3];
    size_t nwords, grams, repeats;
} trigram_counter;

static void count_trigram(const char *w, size_t n, void *ctx) {
    trigram_counter *t = ctx;
    memmove(t->w[0], t->w[1], sizeof t->w[0] * 2);
    memmove(t->wn, t->wn + 1, sizeof t->wn[0] * 2);
    memcpy(t->w[2], w, n + 1);
    t->wn[2] = n;
    if (++t->nwords < 3) return;
    char key[780];
    size_t k = 0;
    for (int i = 0; i < 3; i++) {
        memcpy(key + k, t->w[i], t->wn[i]);
        k += t->wn[i];
        key[k++] = ' ';
    }
    size_t before = t->seen.n;
    strmap_id(&t->seen, key, k, 1);
    t->grams++;
    t->repeats += t->seen.n == before;
}

static int writes_other_speaker(const char *text) {
    for (const char *line = text; line; line = strchr(line, '\n')) {
        if (*line == '\n') line++;
        while (*line == ' ' || *line == '\t') line++;
        if (*line == '[') {
            const char *close = strchr(line, ']');
            const char *nl = strchr(line, '\n');
            if (close && close > line + 1 && (!nl || close < nl) && close[1] == ':') return 1;
        }
    }
    return 0;
}

void dp_degeneration_measure(const char *const *texts, const unsigned char *ended, size_t n,
                             dp_degeneration *out) {
    memset(out, 0, sizeof *out);
    strmap m1 = {0}, m2 = {0};
    long long t1 = count_grams(&m1, texts, n, 1), t2 = count_grams(&m2, texts, n, 2);
    out->distinct1 = t1 > 0 ? (double)m1.n / (double)t1 : NAN;
    out->distinct2 = t2 > 0 ? (double)m2.n / (double)t2 : NAN;
    strmap_free(&m1);
    strmap_free(&m2);
    size_t grams = 0, repeats = 0, other = 0, stopped = 0;
    for (size_t i = 0; i < n; i++) {
        trigram_counter *t = dp_calloc(1, sizeof *t);
        if (t) {
            for_each_word(texts[i], count_trigram, t);
            grams += t->grams;
            repeats += t->repeats;
            strmap_free(&t->seen);
            free(t);
        }
        other += (size_t)writes_other_speaker(texts[i]);
        stopped += ended ? ended[i] != 0 : 0;
    }
    out->repeated_3gram_rate = grams ? (double)repeats / (double)grams : 0;
    out->other_speaker_share = n ? (double)other / (double)n : NAN;
    out->ended_share = n && ended ? (double)stopped / (double)n : NAN;
}
