/* The tokenizer against real tokenizers: the committed corpus fixture encoded by HF
 * `tokenizers` (tests/reference/make_tokenizer_corpus.py), long runs of one letter and clones,
 * everywhere with the committed cut-down Qwen3 and Llama-3 tokenizers
 * (tests/fixtures/tokenizers/, tests/reference/make_tokenizer_subsets.py: HF gives them the
 * corpus's ids), and beside ../shared with the full ones of ../shared/tokenizers/{qwen3,llama3}
 * (every line of their reference-ids.jsonl too); only that part skips without ../shared. */
#include "check.h"
#include "tok_fixture.h"
#include "data/base/error.h"
#include "data/base/io.h"
#include "data/tokenizer.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <pthread.h>
#include <time.h>

/* Clones in two threads at once encode the same texts as the parent (one text per line). */
typedef struct {
    dp_tokenizer *t;
    const char *text;
    size_t len;
    size_t n_ids;
    uint64_t sum;
    int rc;
} clone_job;

static void *clone_thread(void *arg) {
    clone_job *j = arg;
    dp_ids ids = {0};
    for (int rep = 0; rep < 3; rep++) {
        j->n_ids = 0;
        j->sum = 0;
        for (const char *p = j->text; p < j->text + j->len;) {
            const char *nl = memchr(p, '\n', (size_t)(j->text + j->len - p));
            size_t l = nl ? (size_t)(nl - p) : (size_t)(j->text + j->len - p);
            ids.n = 0;
            if (dp_tokenizer_encode(j->t, p, l, true, &ids)) j->rc = -1;
            for (size_t i = 0; i < ids.n; i++) j->sum = j->sum * 31 + (uint64_t)ids.v[i];
            j->n_ids += ids.n;
            p += l + 1;
        }
    }
    dp_ids_free(&ids);
    return NULL;
}

static void check_clones(dp_tokenizer *t, const char *path) {
    char *text;
    size_t len;
    if (dp_read_file(path, &text, &len)) return;
    clone_job ref = {t, text, len, 0, 0, 0}, jobs[2];
    clone_thread(&ref);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        jobs[i] = (clone_job){dp_tokenizer_clone(t), text, len, 0, 0, 0};
        CHECK(jobs[i].t != NULL);
        pthread_create(&th[i], NULL, clone_thread, &jobs[i]);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(0, jobs[i].rc);
        CHECK_EQ_INT(ref.n_ids, jobs[i].n_ids);
        CHECK(ref.sum == jobs[i].sum);
        dp_tokenizer_free(jobs[i].t);
    }
    free(text);
}

/* 100 KB of one letter and other long runs: linear-ish time (the heap merge loop). */
static void check_long_runs(dp_tokenizer *t, const char *name) {
    size_t n = 100 * 1000;
    char *s = malloc(n + 1);
    const char *letters = "k a\n1";
    for (int v = 0; v < 5; v++) {
        memset(s, letters[v], n);
        s[n] = 0;
        dp_ids ids = {0};
        clock_t c0 = clock();
        CHECK_EQ_INT(0, dp_tokenizer_encode(t, s, n, false, &ids));
        double sec = (double)(clock() - c0) / CLOCKS_PER_SEC;
        fprintf(stderr, "  %s: 100 KB of '%s' -> %zu tokens in %.3f s\n", name,
                letters[v] == '\n' ? "\\n" : (char[]){letters[v], 0}, ids.n, sec);
        dp_buf dec = {0};
        CHECK_EQ_INT(0, dp_tokenizer_decode(t, ids.v, ids.n, false, &dec));
        CHECK(dec.len == n && memcmp(dec.data, s, n) == 0);
        dp_buf_free(&dec);
        dp_ids_free(&ids);
    }
    free(s);
}

/* Loads a tokenizer and checks the corpus fixture (and reference-ids.jsonl when given). */
static void check_tokenizer(const char *name, const char *path, const char *reference_ids) {
    clock_t c0 = clock();
    dp_tokenizer *t = dp_tokenizer_load(path);
    CHECK_REPORT(t != NULL, "load %s: %s", path, dp_last_error());
    if (!t) return;
    fprintf(stderr, "%s (%s): %s (loaded in %.2f s)\n", name, path, dp_tokenizer_describe(t),
            (double)(clock() - c0) / CLOCKS_PER_SEC);
    int n = 0;
    if (reference_ids) {
        check_jsonl(t, reference_ids, "ids", &n, true);
        fprintf(stderr, "  reference-ids.jsonl: %d lines\n", n);
    }
    char corpus[8192];
    snprintf(corpus, sizeof corpus, "%s/tests/fixtures/tokenizer-corpus.jsonl.zst",
             DOPPEL_SOURCE_DIR);
    check_jsonl(t, corpus, name, &n, true);
    fprintf(stderr, "  tokenizer-corpus fixture: %d lines\n", n);
    check_long_runs(t, name);
    check_clones(t, corpus); /* the corpus fixture's JSON lines, as text */
    dp_tokenizer_free(t);
}

int main(void) {
    const char *names[] = {"qwen3", "llama3"};
    char path[8192], ref[8192];
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/tests/fixtures/tokenizers/%s.tokenizer.json.zst",
                 DOPPEL_SOURCE_DIR, names[k]);
        check_tokenizer(names[k], path, NULL);
    }
    const char *shared = check_shared_dir();
    if (!shared) {
        fprintf(stderr, "SKIPPED (this part only): ../shared not found: the full reference "
                        "tokenizers and their reference-ids.jsonl live there\n");
        return check_done();
    }
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/tokenizers/%s", shared, names[k]);
        snprintf(ref, sizeof ref, "%s/tokenizers/%s/reference-ids.jsonl", shared, names[k]);
        check_tokenizer(names[k], path, ref);
    }
    return check_done();
}
