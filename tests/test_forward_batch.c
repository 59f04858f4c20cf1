/* Several sequences in one step (dp_forward_batch, continuous batching), each with its own KV
 * cache, against each sequence run alone through dp_forward_tokens (itself checked against
 * transformers in test_forward): a packed prefill of prompts of different lengths, decode steps
 * of one row per sequence, and a step where each appends a different number of rows; with an
 * unmerged adapter on the fp32 PEFT fixtures and without one on an NF4 model (whose one-row
 * steps alone take the fused GEMV). Bad steps fail and leave every cache as it was. */
#include "check.h"
#include "data/base/error.h"
#include "fixture_h5.h"
#include "fixture_st.h"
#include "infer/adapter.h"
#include "infer/forward.h"
#include "infer/model_load.h"

#include <math.h>

#define NSEQ  3
#define STEPS 4 /* three decode steps of one row each, then one of 2, 1 and 3 rows */
#define CTX   48

static const int PROMPT[NSEQ] = {5, 9, 3};
static const int ROWS[STEPS][NSEQ] = {{1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {2, 1, 3}};

/* a deterministic token of sequence s at position p, different per sequence */
static int32_t token_at(int s, int p, int V) {
    return (int32_t)((s * 131 + p * 17 + 3) % V);
}

static void check_model(const dp_model *m, dp_linear_hook hook, void *hook_ctx, const char *name) {
    const int V = m->cfg.V;
    char what[160];
    /* the reference: each sequence alone, its last-row logits after the prompt and each step,
     * and every row's logits of the last step */
    float *want = malloc(sizeof(float) * (STEPS + 1) * NSEQ * V);
    float *want_rows = malloc(sizeof(float) * 6 * V);
    int pos[NSEQ], last_row0[NSEQ];
    for (int s = 0, r = 0; s < NSEQ; s++) {
        dp_forward f;
        CHECK(dp_forward_create(&f, m, CTX, 0) == 0);
        dp_forward_set_hook(&f, hook, hook_ctx);
        int32_t tok[CTX];
        for (int p = 0; p < CTX; p++) tok[p] = token_at(s, p, V);
        CHECK(dp_forward_tokens(&f, tok, PROMPT[s], NULL) == 0);
        memcpy(want + (size_t)s * V, f.logits, sizeof(float) * V);
        pos[s] = PROMPT[s];
        for (int k = 0; k < STEPS; k++) {
            int n = ROWS[k][s];
            float *rows = k == STEPS - 1 ? want_rows + (size_t)r * V : NULL;
            CHECK(dp_forward_tokens(&f, tok + pos[s], n, rows) == 0);
            if (rows) last_row0[s] = r, r += n;
            memcpy(want + ((size_t)(k + 1) * NSEQ + s) * V, f.logits, sizeof(float) * V);
            pos[s] += n;
        }
        dp_forward_free(&f);
    }

    /* the same through one context and three caches, all sequences in every step */
    dp_forward f;
    dp_kv kv[NSEQ], *kvp[NSEQ];
    CHECK(dp_forward_create(&f, m, CTX, 0) == 0);
    dp_forward_set_hook(&f, hook, hook_ctx);
    for (int s = 0; s < NSEQ; s++) {
        CHECK(dp_kv_create(&kv[s], m, CTX) == 0);
        kvp[s] = &kv[s];
    }
    float *got = malloc(sizeof(float) * NSEQ * V), *got_rows = malloc(sizeof(float) * 6 * V);
    int32_t tok[CTX], bpos[CTX], cu[NSEQ + 1];
    for (int k = -1; k < STEPS; k++) {
        int N = 0;
        cu[0] = 0;
        for (int s = 0; s < NSEQ; s++) {
            int n = k < 0 ? PROMPT[s] : ROWS[k][s];
            for (int i = 0; i < n; i++, N++) {
                bpos[N] = kv[s].T + i;
                tok[N] = token_at(s, bpos[N], V);
            }
            cu[s + 1] = N;
        }
        dp_batch b = {.N = N, .nseq = NSEQ, .tokens = tok, .pos = bpos, .cu_seqlens = cu};
        bool every_row = k == STEPS - 1;
        int rc = dp_forward_batch(&f, kvp, &b, every_row ? got_rows : got, every_row);
        CHECK_REPORT(rc == 0, "%s step %d: %s", name, k, dp_last_error());
        if (rc) break;
        for (int s = 0; s < NSEQ; s++) {
            const float *w = want + ((size_t)(k + 1) * NSEQ + s) * V;
            const float *g =
                every_row ? got_rows + (size_t)(cu[s + 1] - 1) * V : got + (size_t)s * V;
            snprintf(what, sizeof what, "%s step %d sequence %d (%d rows) vs alone", name, k, s,
                     cu[s + 1] - cu[s]);
            check_arrays_near(what, w, g, (size_t)V, 1e-5 * fx_max_abs(w, (size_t)V), 0);
            int T = PROMPT[s];
            for (int j = 0; j <= k; j++) T += ROWS[j][s];
            CHECK_EQ_INT(T, kv[s].T); /* each cache advanced by its own rows */
        }
        if (every_row) {
            snprintf(what, sizeof what, "%s mixed step, every row vs alone", name);
            check_arrays_near(what, want_rows, got_rows, (size_t)N * V,
                              1e-5 * fx_max_abs(want_rows, (size_t)N * V), 0);
            for (int s = 0; s < NSEQ; s++) CHECK_EQ_INT(last_row0[s], cu[s]);
        }
    }
    for (int s = 0; s < NSEQ; s++) CHECK_EQ_INT(pos[s], kv[s].T);

    /* bad steps: nothing appended to any cache */
    int T0[NSEQ];
    for (int s = 0; s < NSEQ; s++) T0[s] = kv[s].T;
    int32_t one[NSEQ] = {1, 2, 3}, p1[NSEQ] = {kv[0].T, kv[1].T, kv[2].T};
    int32_t cu_ok[NSEQ + 1] = {0, 1, 2, 3}, cu_down[NSEQ + 1] = {0, 2, 1, 3};
    dp_batch bad = {.N = 3, .nseq = NSEQ, .tokens = one, .pos = p1, .cu_seqlens = cu_down};
    CHECK(dp_forward_batch(&f, kvp, &bad, got, false) == -1); /* decreasing cu_seqlens */
    bad.cu_seqlens = cu_ok;
    p1[1] += 1;
    CHECK(dp_forward_batch(&f, kvp, &bad, got, false) == -1); /* position after a gap */
    p1[1] -= 1;
    kv[2].max_T = kv[2].T; /* a full cache */
    CHECK(dp_forward_batch(&f, kvp, &bad, got, false) == -1);
    kv[2].max_T = CTX;
    for (int s = 0; s < NSEQ; s++) CHECK_EQ_INT(T0[s], kv[s].T);
    /* and the good step still runs */
    CHECK(dp_forward_batch(&f, kvp, &bad, got, false) == 0);
    for (int s = 0; s < NSEQ; s++) CHECK_EQ_INT(T0[s] + 1, kv[s].T);

    for (int s = 0; s < NSEQ; s++) dp_kv_free(&kv[s]);
    dp_forward_free(&f);
    free(want), free(want_rows), free(got), free(got_rows);
}

/* Personas side by side (serve's decode step): sequences 0 and 2 speak through the adapter,
 * sequence 1 as the base model, in one batch through dp_lora_rows_hook; each must equal the
 * same sequence run alone with its own hook. */
static void check_mixed_adapters(const dp_model *m, dp_lora *lora, const char *name) {
    const int V = m->cfg.V;
    dp_lora *who[NSEQ] = {lora, NULL, lora};
    float *want = malloc(sizeof(float) * 2 * NSEQ * V), *got = malloc(sizeof(float) * NSEQ * V);
    int32_t tok[CTX], bpos[CTX], cu[NSEQ + 1];
    for (int s = 0; s < NSEQ; s++) { /* alone: the prompt, then one decode row */
        dp_forward f;
        CHECK(dp_forward_create(&f, m, CTX, 0) == 0);
        dp_forward_set_hook(&f, who[s] ? dp_lora_hook : NULL, who[s]);
        for (int p = 0; p <= PROMPT[s]; p++) tok[p] = token_at(s, p, V);
        CHECK(dp_forward_tokens(&f, tok, PROMPT[s], NULL) == 0);
        memcpy(want + (size_t)s * V, f.logits, sizeof(float) * V);
        CHECK(dp_forward_tokens(&f, tok + PROMPT[s], 1, NULL) == 0);
        memcpy(want + (size_t)(NSEQ + s) * V, f.logits, sizeof(float) * V);
        dp_forward_free(&f);
    }
    dp_forward f;
    dp_kv kv[NSEQ], *kvp[NSEQ];
    CHECK(dp_forward_create(&f, m, CTX, 0) == 0);
    for (int s = 0; s < NSEQ; s++) {
        CHECK(dp_kv_create(&kv[s], m, CTX) == 0);
        kvp[s] = &kv[s];
    }
    dp_lora_rows map = {who, cu, NSEQ};
    dp_forward_set_hook(&f, dp_lora_rows_hook, &map);
    for (int step = 0; step < 2; step++) { /* the packed prompts, then one row each */
        int N = 0;
        cu[0] = 0;
        for (int s = 0; s < NSEQ; s++) {
            int n = step == 0 ? PROMPT[s] : 1;
            for (int i = 0; i < n; i++, N++) {
                bpos[N] = kv[s].T + i;
                tok[N] = token_at(s, bpos[N], V);
            }
            cu[s + 1] = N;
        }
        dp_batch b = {.N = N, .nseq = NSEQ, .tokens = tok, .pos = bpos, .cu_seqlens = cu};
        int rc = dp_forward_batch(&f, kvp, &b, got, false);
        CHECK_REPORT(rc == 0, "%s mixed adapters step %d: %s", name, step, dp_last_error());
        if (rc) break;
        for (int s = 0; s < NSEQ; s++) {
            char what[160];
            const float *w = want + ((size_t)step * NSEQ + s) * V;
            snprintf(what, sizeof what, "%s step %d sequence %d (%s) vs alone", name, step, s,
                     who[s] ? "adapter" : "base");
            check_arrays_near(what, w, got + (size_t)s * V, (size_t)V,
                              1e-5 * fx_max_abs(w, (size_t)V), 0);
        }
    }
    for (int s = 0; s < NSEQ; s++) dp_kv_free(&kv[s]);
    dp_forward_free(&f);
    free(want), free(got);
}

/* A context's own cache through a batched step (serve's slots): dp_forward_cache's view goes
 * into dp_forward_batch beside another cache, dp_forward_cache_sync takes the new positions
 * back, and the context then continues as if it had decoded that token itself. */
static void check_cache_view(const dp_model *m, const char *name) {
    const int V = m->cfg.V;
    int32_t tok[8];
    for (int p = 0; p < 8; p++) tok[p] = token_at(0, p, V);
    dp_forward alone, mine, batch;
    CHECK(dp_forward_create(&alone, m, CTX, 0) == 0 && dp_forward_create(&mine, m, CTX, 0) == 0 &&
          dp_forward_create(&batch, m, CTX, 4) == 0);
    CHECK(dp_forward_tokens(&alone, tok, 7, NULL) == 0); /* 6 prompt tokens, then 1, as one */
    CHECK(dp_forward_tokens(&mine, tok, 6, NULL) == 0);
    dp_kv other;
    CHECK(dp_kv_create(&other, m, CTX) == 0);
    dp_kv views[2] = {dp_forward_cache(&mine), other}, *vp[2] = {&views[0], &views[1]};
    CHECK_EQ_INT(6, views[0].T);
    int32_t bt[2] = {tok[6], tok[0]}, bp[2] = {6, 0}, cu[3] = {0, 1, 2};
    dp_batch b = {.N = 2, .nseq = 2, .tokens = bt, .pos = bp, .cu_seqlens = cu};
    float *lg = malloc(sizeof(float) * 2 * V);
    CHECK(dp_forward_batch(&batch, vp, &b, lg, false) == 0);
    CHECK_EQ_INT(6, mine.T); /* not yet its own */
    CHECK(dp_forward_cache_sync(&mine, &views[1]) == -1); /* another cache's view */
    CHECK(dp_forward_cache_sync(&mine, &views[0]) == 0);
    CHECK_EQ_INT(7, mine.T);
    char what[160];
    snprintf(what, sizeof what, "%s: a context's cache through a batch step", name);
    check_arrays_near(what, alone.logits, lg, (size_t)V, 1e-5 * fx_max_abs(alone.logits, V), 0);
    CHECK(dp_forward_tokens(&alone, tok + 7, 1, NULL) == 0 &&
          dp_forward_tokens(&mine, tok + 7, 1, NULL) == 0);
    snprintf(what, sizeof what, "%s: and the step after it", name);
    check_arrays_near(what, alone.logits, mine.logits, (size_t)V,
                      1e-5 * fx_max_abs(alone.logits, V), 0);
    dp_forward_truncate(&mine, 3);
    CHECK(dp_forward_cache_sync(&mine, &views[0]) == 0 && mine.T == 7); /* T grows back, */
    views[0].T = 2;
    CHECK(dp_forward_cache_sync(&mine, &views[0]) == -1); /* never shrinks */
    free(lg);
    dp_kv_free(&other);
    dp_forward_free(&alone), dp_forward_free(&mine), dp_forward_free(&batch);
}

int main(void) {
    /* fp32 weights with the PEFT fixture's adapter applied unmerged */
    static const char *const archs[] = {"llama", "qwen2", "qwen3"};
    for (int i = 0; i < 3; i++) {
        hid_t h = fx_open(archs[i]);
        if (h < 0) continue;
        fx_model fm;
        CHECK(fx_model_load(h, archs[i], &fm) == 0);
        dp_lora *lora = dp_lora_create(&fm.model.cfg, &fm.lc);
        CHECK(lora && fx_lora_init(h, lora) == 0);
        H5Fclose(h);
        char name[64];
        snprintf(name, sizeof name, "%s + adapter", archs[i]);
        check_model(&fm.model, dp_lora_hook, lora, name);
        check_mixed_adapters(&fm.model, lora, archs[i]);
        dp_lora_free(lora);
        fx_model_free(&fm);
    }
    /* NF4 weights: one-row steps take the fused GEMV, several rows the dequantized tiles */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/tiny-qwen3", DOPPEL_SOURCE_DIR);
    dp_load_opts opts = {.quiet = true};
    dp_model *m = dp_model_load(dir, &opts);
    if (!m || dp_model_quantize_nf4(m, 64, false)) {
        CHECK_REPORT(0, "tiny-qwen3 (NF4): %s", dp_last_error());
    } else {
        check_model(m, NULL, NULL, "tiny-qwen3 NF4");
        check_cache_view(m, "tiny-qwen3 NF4");
    }
    dp_model_free(m);
    return check_done();
}
