/* The training loop on the tiny Llama fixture model with synthetic packed data:
 * - resume: N steps == N/2 (--stop-at) + --resume, loss for loss and bit for bit, with dropout,
 *   gradient accumulation, evaluation and periodic checkpoints on;
 * - determinism: the same seed and data give identical losses, another seed does not;
 * - the PEFT adapter written at the end loads back to the same parameters;
 * - damaged checkpoints and mismatched shapes are refused with a message;
 * - packing: every sequence lands in exactly one micro-batch, none over the budget;
 * - --grad-accum above 64 takes that many micro-batches per step (once capped at 64);
 * - the CPU step's cross-entropy chunk defaults to the planner's (DP_CE_CHUNK_DEFAULT);
 * - schedules against the closed forms. */
#include "check.h"
#include "data/base/error.h"
#include "fixture_h5.h"
#include "train/checkpoint.h"
#include "data/base/rng.h"
#include "train/memplan.h"
#include "train/trainer.h"

#include <unistd.h>

static void synth_data(dp_token_data *d, int nseq, int V, uint64_t seed) {
    memset(d, 0, sizeof *d);
    d->offsets = calloc((size_t)nseq + 1, sizeof(int64_t));
    int64_t T = 0;
    for (int s = 0; s < nseq; s++) T += 4 + (int64_t)(dp_rng_bits(seed, 1, (uint64_t)s) % 27);
    d->tokens = malloc((size_t)T * 4);
    d->loss_mask = malloc((size_t)T);
    int64_t t = 0;
    for (int s = 0; s < nseq; s++) {
        int64_t len = 4 + (int64_t)(dp_rng_bits(seed, 1, (uint64_t)s) % 27);
        for (int64_t i = 0; i < len; i++, t++) {
            d->tokens[t] = (int32_t)(dp_rng_bits(seed, 2, (uint64_t)t) % (uint64_t)V);
            d->loss_mask[t] = i >= len / 2; /* the "reply" is the second half */
        }
        d->offsets[s + 1] = t;
    }
    d->T = T;
    d->nseq = nseq;
}

static char tmpdir[256];

static dp_train_opts base_opts(fx_model *fm, dp_lora *lora, const dp_token_data *tr,
                               const dp_token_data *va, const char *out) {
    return (dp_train_opts){.model = &fm->model,
                           .lora = lora,
                           .train = tr,
                           .val = va,
                           .batch_tokens = 64,
                           .grad_accum = 2,
                           .max_steps = 8,
                           .seed = 7,
                           .sched = DP_SCHED_COSINE,
                           .lr = 3e-3,
                           .warmup_steps = -1,
                           .warmup_ratio = 0.25,
                           .adam = {0.9f, 0.999f, 1e-8f, 0.01f, 1.0f},
                           .eval_every = 2,
                           .save_every = 3,
                           .recompute = true,
                           .out_dir = out,
                           .config_json = "{\"test\":true}",
                           .base_model = "tiny-llama",
                           .doppel_json = "{\"persona\":\"test\"}",
                           .quiet = true};
}

static double *read_losses(const char *dir, size_t *n) {
    char path[512];
    snprintf(path, sizeof path, "%s/metrics.h5", dir);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return NULL;
    hid_t d = H5Dopen2(f, "loss", H5P_DEFAULT);
    hid_t sp = H5Dget_space(d);
    *n = (size_t)H5Sget_simple_extent_npoints(sp);
    double *x = malloc(*n * sizeof(double) + 8);
    H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, x);
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(f);
    return x;
}

static int run(fx_model *fm, const dp_token_data *tr, const dp_token_data *va, const char *out,
               uint64_t seed, long stop_at, bool resume, float dropout, dp_train_result *res,
               float **params) {
    dp_lora_config lc = fm->lc;
    lc.dropout = dropout;
    dp_lora *lora = dp_lora_create(&fm->model.cfg, &lc);
    if (!lora) return -1;
    dp_lora_init(lora, seed);
    dp_train_opts o = base_opts(fm, lora, tr, va, out);
    o.seed = seed;
    o.stop_at = stop_at;
    o.resume = resume;
    int rc = dp_train(&o, res);
    if (rc) fprintf(stderr, "dp_train: %s\n", dp_last_error());
    if (params) {
        *params = malloc(lora->n * sizeof(float));
        memcpy(*params, lora->params, lora->n * sizeof(float));
    }
    dp_lora_free(lora);
    return rc;
}

static void test_resume(fx_model *fm, const dp_token_data *tr, const dp_token_data *va) {
    char a[300], b[300], c[300], e[300];
    snprintf(a, sizeof a, "%s/full", tmpdir);
    snprintf(b, sizeof b, "%s/halves", tmpdir);
    snprintf(c, sizeof c, "%s/again", tmpdir);
    snprintf(e, sizeof e, "%s/other-seed", tmpdir);
    dp_train_result ra, rb1, rb2, rc_, re;
    float *pa = NULL, *pb = NULL, *pc = NULL;
    CHECK(run(fm, tr, va, a, 7, 0, false, 0.1f, &ra, &pa) == 0);
    CHECK_EQ_INT(8, ra.steps_done);
    CHECK(!ra.interrupted);
    CHECK(ra.val_after < ra.val_before); /* it learns the synthetic replies */
    fprintf(stderr, "  val loss %.4f -> %.4f, best %.4f at step %ld\n", ra.val_before, ra.val_after,
            ra.best_val, ra.best_step);
    CHECK(run(fm, tr, va, b, 7, 4, false, 0.1f, &rb1, NULL) == 0);
    CHECK(rb1.interrupted);
    CHECK_EQ_INT(4, rb1.steps_done);
    CHECK(run(fm, tr, va, b, 7, 0, true, 0.1f, &rb2, &pb) == 0);
    CHECK_EQ_INT(8, rb2.steps_done);
    size_t na = 0, nb = 0;
    double *la = read_losses(a, &na), *lb = read_losses(b, &nb);
    CHECK_EQ_INT(8, na);
    CHECK_EQ_INT(8, nb);
    int same = la && lb && na == nb;
    for (size_t i = 0; same && i < na; i++) same = la[i] == lb[i];
    for (size_t i = 0; la && lb && i < na && i < nb; i++)
        fprintf(stderr, "  step %zu loss full %.9f resumed %.9f\n", i + 1, la[i], lb[i]);
    CHECK_REPORT(same, "resumed run's losses differ from the uninterrupted run's");
    CHECK(pa && pb && !memcmp(pa, pb, sizeof(float) * 16));
    CHECK(ra.best_step == rb2.best_step && ra.best_val == rb2.best_val);

    /* same seed again -> identical; another seed -> different */
    CHECK(run(fm, tr, va, c, 7, 0, false, 0.1f, &rc_, &pc) == 0);
    size_t nc = 0, ne = 0;
    double *lc = read_losses(c, &nc);
    same = lc && nc == na;
    for (size_t i = 0; same && i < na; i++) same = la[i] == lc[i];
    CHECK_REPORT(same, "the same seed gave different losses");
    CHECK(run(fm, tr, va, e, 8, 0, false, 0.1f, &re, NULL) == 0);
    double *le = read_losses(e, &ne);
    CHECK(le && ne == na && le[na - 1] != la[na - 1]);

    /* resuming a finished run is refused; a damaged checkpoint is refused */
    CHECK(run(fm, tr, va, a, 7, 0, true, 0.1f, &rb2, NULL) != 0);
    CHECK(strstr(dp_last_error(), "nothing left") != NULL);
    char ck[400];
    snprintf(ck, sizeof ck, "%s/checkpoint.h5", c);
    FILE *f = fopen(ck, "r+b");
    if (f) {
        fseek(f, 0, SEEK_END);
        long sz = ftell(f);
        CHECK(ftruncate(fileno(f), sz / 2) == 0);
        fclose(f);
    }
    CHECK(run(fm, tr, va, c, 7, 0, true, 0.1f, &rb2, NULL) != 0);
    fprintf(stderr, "  damaged checkpoint: %s\n", dp_last_error());

    /* the adapter written at the end loads back bit for bit; shape mismatches are refused */
    dp_lora *back = NULL;
    char *dj = NULL;
    CHECK(dp_lora_load_peft(a, &fm->model.cfg, &back, &dj) == 0);
    if (back && pa) {
        CHECK(!memcmp(back->params, pa, back->n * sizeof(float)));
        CHECK_NEAR(fm->lc.alpha / fm->lc.r, back->scale, 0, 1e-7);
        CHECK_EQ_STR("{\"persona\":\"test\"}", dj);
    }
    dp_lora_free(back);
    free(dj);
    dp_model_config other = fm->model.cfg;
    other.F += 8;
    CHECK(dp_lora_load_peft(a, &other, &back, NULL) != 0);
    fprintf(stderr, "  mismatched adapter: %s\n", dp_last_error());
    free(la), free(lb), free(lc), free(le), free(pa), free(pb), free(pc);
}

/* One step of 70 micro-batches (over several epochs of 48 short sequences): the checkpoint's
 * data position and token count must be those of 70 micro-batches walked from the plans. */
static void test_grad_accum_over_64(fx_model *fm, const dp_token_data *tr) {
    const int accum = 70;
    dp_lora *lora = dp_lora_create(&fm->model.cfg, &fm->lc);
    CHECK(lora != NULL);
    if (!lora) return;
    dp_lora_init(lora, 3);
    char out[400];
    snprintf(out, sizeof out, "%s/accum", tmpdir);
    dp_train_opts o = base_opts(fm, lora, tr, NULL, out);
    o.grad_accum = accum, o.max_steps = 1, o.eval_every = 0, o.save_every = 0;
    dp_train_result res;
    int rc = dp_train(&o, &res);
    CHECK_REPORT(rc == 0, "dp_train: %s", dp_last_error());
    /* the expected position and tokens, from the epoch plans alone */
    int64_t epoch = 0, cursor = 0, tokens = 0;
    dp_epoch_plan p;
    CHECK(dp_epoch_plan_make(tr, o.batch_tokens, o.seed, epoch, true, &p) == 0);
    for (int j = 0; j < accum; j++) {
        if (cursor == p.nbatches) {
            dp_epoch_plan_free(&p);
            epoch++, cursor = 0;
            CHECK(dp_epoch_plan_make(tr, o.batch_tokens, o.seed, epoch, true, &p) == 0);
        }
        for (int64_t i = p.start[cursor]; i < p.start[cursor + 1]; i++)
            tokens += tr->offsets[p.order[i] + 1] - tr->offsets[p.order[i]];
        cursor++;
    }
    dp_epoch_plan_free(&p);
    CHECK(epoch >= 2); /* the walk crossed epochs: more than one plan's worth */
    char ckpt[512];
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.h5", out);
    float *m = calloc(lora->n, sizeof(float)), *v = calloc(lora->n, sizeof(float));
    dp_train_state st;
    CHECK(dp_checkpoint_load(ckpt, lora, m, v, &st) == 0);
    CHECK_EQ_INT(1, st.step);
    CHECK_EQ_INT(epoch, st.epoch);
    CHECK_EQ_INT(cursor, st.cursor);
    CHECK_EQ_INT(tokens, st.tokens_seen);
    free(m);
    free(v);
    dp_lora_free(lora);
}

/* ce_chunk 0 in the trainer means the one default the planner and the GPU step use: the CPU
 * workspace must be the size of one built with DP_CE_CHUNK_DEFAULT rows (512-token batches,
 * so a smaller default would give a smaller workspace). */
static void test_ce_chunk_default(fx_model *fm, const dp_token_data *tr) {
    CHECK_EQ_INT(DP_CE_CHUNK_DEFAULT, dp_train_shape_default().ce_chunk);
    dp_lora *lora = dp_lora_create(&fm->model.cfg, &fm->lc);
    CHECK(lora != NULL);
    if (!lora) return;
    dp_lora_init(lora, 3);
    char out[400];
    snprintf(out, sizeof out, "%s/cechunk", tmpdir);
    dp_train_opts o = base_opts(fm, lora, tr, NULL, out);
    o.batch_tokens = 512, o.grad_accum = 1, o.max_steps = 1, o.eval_every = 0, o.save_every = 0;
    o.ce_chunk = 0;
    dp_train_result res;
    int rc = dp_train(&o, &res);
    CHECK_REPORT(rc == 0, "dp_train: %s", dp_last_error());
    dp_grad_ws *ws = dp_grad_ws_create(&fm->model, lora, 512, true, DP_CE_CHUNK_DEFAULT);
    CHECK(ws != NULL);
    if (ws) CHECK_EQ_INT(dp_grad_ws_bytes(ws), res.workspace_bytes);
    dp_grad_ws_free(ws);
    dp_lora_free(lora);
}

static void test_packing(const dp_token_data *tr) {
    dp_epoch_plan p;
    CHECK(dp_epoch_plan_make(tr, 64, 3, 1, true, &p) == 0);
    int *seen = calloc((size_t)tr->nseq, sizeof(int));
    for (int64_t k = 0; k < p.nbatches; k++) {
        int64_t rows = 0;
        for (int64_t i = p.start[k]; i < p.start[k + 1]; i++) {
            seen[p.order[i]]++;
            rows += tr->offsets[p.order[i] + 1] - tr->offsets[p.order[i]];
        }
        CHECK(rows <= 64 && rows > 0);
    }
    int once = 1;
    for (int64_t s = 0; s < tr->nseq; s++) once &= seen[s] == 1;
    CHECK(once);
    free(seen);
    dp_epoch_plan p2;
    CHECK(dp_epoch_plan_make(tr, 64, 3, 2, true, &p2) == 0);
    CHECK(memcmp(p.order, p2.order, (size_t)tr->nseq * sizeof(int64_t)) != 0); /* reshuffled */
    dp_epoch_plan_free(&p);
    dp_epoch_plan_free(&p2);
}

static void test_schedule(void) {
    dp_schedule s = {.kind = DP_SCHED_LINEAR, .lr = 1.0, .total_steps = 100, .warmup_steps = 10};
    CHECK_NEAR(0.0, dp_schedule_lr(&s, 0), 0, 0);
    CHECK_NEAR(0.5, dp_schedule_lr(&s, 5), 1e-12, 0);
    CHECK_NEAR(1.0, dp_schedule_lr(&s, 10), 1e-12, 0);
    CHECK_NEAR(0.5, dp_schedule_lr(&s, 55), 1e-12, 0); /* (100 - 55) / 90 */
    s.kind = DP_SCHED_COSINE;
    CHECK_NEAR(0.5, dp_schedule_lr(&s, 55), 1e-12, 0); /* cos(pi/2) midpoint */
    CHECK_NEAR(0.0, dp_schedule_lr(&s, 100), 1e-12, 0);
    s.kind = DP_SCHED_CONSTANT;
    CHECK_NEAR(1.0, dp_schedule_lr(&s, 99), 0, 0);
    CHECK_EQ_INT(3, dp_schedule_warmup(100, -1, 0.03));
    CHECK_EQ_INT(7, dp_schedule_warmup(100, 7, 0.5));
    unsigned mask;
    CHECK(dp_lora_parse_targets("q_proj, v_proj", &mask) == 0 && mask == 5);
    CHECK(dp_lora_parse_targets("qproj", &mask) != 0);
}

/* dp_lora_hook (the unmerged adapter of chat) against y = s * B (A x) written out in double */
static void test_hook(fx_model *fm) {
    dp_lora *lora = dp_lora_create(&fm->model.cfg, &fm->lc);
    dp_lora_init(lora, 3);
    for (size_t i = 0; i < lora->n; i++) lora->params[i] += 0.01f * (float)((int)(i % 13) - 6);
    const dp_lora_module *md = dp_lora_mod(lora, 1, DP_DOWN);
    int N = 5, r = lora->cfg.r;
    float *x = malloc(sizeof(float) * N * md->in), *y = calloc((size_t)N * md->out, 4),
          *ref = malloc(sizeof(float) * N * md->out);
    for (int i = 0; i < N * md->in; i++) x[i] = (float)dp_rng_uniform(9, 0, i) - 0.5f;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < md->out; o++) {
            double acc = 0;
            for (int k = 0; k < r; k++) {
                double ax = 0;
                for (int i = 0; i < md->in; i++)
                    ax += (double)md->A[k * md->in + i] * x[n * md->in + i];
                acc += md->B[o * r + k] * ax;
            }
            ref[n * md->out + o] = (float)(acc * lora->scale);
        }
    CHECK(dp_lora_hook(lora, 1, DP_DOWN, y, x, N, md->in, md->out) == 0);
    check_arrays_near("dp_lora_hook down_proj", ref, y, (size_t)N * md->out, 1e-6, 1e-5);
    CHECK(dp_lora_hook(lora, 1, DP_DOWN, y, x, N, md->in + 1, md->out) != 0);
    free(x), free(y), free(ref);
    dp_lora_free(lora);
}

/* A render callback independent of any tokenizer: each message is <role id> then its bytes then
 * 0; the mask is 1 on an assistant message's bytes and its closing 0. */
static int byte_render(void *ctx, const dp_conversation *c, int first, dp_rendered *out) {
    (void)ctx;
    for (int i = 0; i < c->n; i++) {
        if (i > 0 && i < first) continue;
        if (i == 0 && first > 0 && c->msgs[0].role != DP_ROLE_SYSTEM) continue;
        uint8_t m = c->msgs[i].role == DP_ROLE_ASSISTANT;
        if (dp_rendered_push(out, 1 + (int32_t)c->msgs[i].role, 0)) return -1;
        for (size_t k = 0; k < c->msgs[i].len; k++)
            if (dp_rendered_push(out, (uint8_t)c->msgs[i].content[k], m)) return -1;
        if (dp_rendered_push(out, 0, m)) return -1;
    }
    return 0;
}

/* Left truncation at message boundaries: the system prompt and the reply are kept, the oldest
 * turns go; a reply that cannot fit is skipped and counted; the HDF5 cache round-trips. */
static void test_truncation(void) {
    char path[300], cache[400];
    snprintf(path, sizeof path, "%s/trunc.jsonl", tmpdir);
    dp_make_dirs(tmpdir);
    FILE *f = fopen(path, "w");
    fprintf(f, "{\"messages\":[{\"role\":\"system\",\"content\":\"sys\"},"
               "{\"role\":\"user\",\"content\":\"aaaaaaaaaaaaaaaaaaaa\"},"
               "{\"role\":\"assistant\",\"content\":\"bbbb\"},"
               "{\"role\":\"user\",\"content\":\"cc\"},"
               "{\"role\":\"assistant\",\"content\":\"dd\"}]}\n");
    fprintf(f, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
               "{\"role\":\"assistant\",\"content\":\"yo\"}]}\n");
    fprintf(f,
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
            "{\"role\":\"assistant\",\"content\":\"%s\"}]}\n",
            "a-reply-far-too-long-to-fit-any-budget-at-all");
    fclose(f);
    dp_token_data d;
    CHECK(dp_token_data_build(path, 16, byte_render, NULL, &d) == 0);
    CHECK_EQ_INT(3, d.n_read);
    CHECK_EQ_INT(2, d.nseq);
    CHECK_EQ_INT(1, d.n_truncated);
    CHECK_EQ_INT(1, d.n_skipped);
    /* first sequence: system (5) + the 2nd user turn (4) + "dd" reply (4) = 13 tokens; the
     * 20-byte user turn and the first reply were dropped (with all but the 20-byte turn it
     * would be 19 > 16) */
    CHECK_EQ_INT(13, d.offsets[1]);
    if (d.nseq == 2) {
        CHECK_EQ_INT(1 + DP_ROLE_SYSTEM, d.tokens[0]);
        CHECK_EQ_INT('s', d.tokens[1]);
        CHECK_EQ_INT(1 + DP_ROLE_USER, d.tokens[5]);
        CHECK_EQ_INT('c', d.tokens[6]);
        CHECK_EQ_INT('d', d.tokens[10]);
        CHECK_EQ_INT(1, d.loss_mask[10]);
        CHECK_EQ_INT(0, d.loss_mask[6]);
        CHECK_EQ_INT(1, d.loss_mask[12]);
    }
    dp_token_cache_path(cache, sizeof cache, path, 99);
    CHECK(dp_token_cache_save(cache, 99, &d) == 0);
    dp_token_data e;
    CHECK_EQ_INT(0, dp_token_cache_load(cache, 98, &e)); /* another key: stale, rebuilt */
    CHECK_EQ_INT(1, dp_token_cache_load(cache, 99, &e));
    CHECK(e.T == d.T && e.nseq == d.nseq && !memcmp(e.tokens, d.tokens, (size_t)d.T * 4) &&
          !memcmp(e.loss_mask, d.loss_mask, (size_t)d.T) && e.n_truncated == 1);
    dp_token_data_free(&e);
    dp_token_data_free(&d);
}

int main(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fixtures/peft/llama.h5", DOPPEL_SOURCE_DIR);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECK(f >= 0);
    if (f < 0) return check_done();
    fx_model fm;
    CHECK(fx_model_load(f, "llama", &fm) == 0);
    H5Fclose(f);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/doppel-train-test.%d", (int)getpid());
    dp_token_data tr, va;
    synth_data(&tr, 48, fm.model.cfg.V, 11);
    synth_data(&va, 8, fm.model.cfg.V, 12);
    /* the "reply" repeats the prompt's tokens, so there is something to learn */
    for (dp_token_data *d = &tr; d; d = d == &tr ? &va : NULL)
        for (int64_t s = 0; s < d->nseq; s++) {
            int64_t b0 = d->offsets[s], len = d->offsets[s + 1] - b0;
            for (int64_t i = len / 2; i < len; i++) d->tokens[b0 + i] = d->tokens[b0 + i - len / 2];
        }
    test_schedule();
    test_hook(&fm);
    test_truncation();
    test_packing(&tr);
    test_resume(&fm, &tr, &va);
    test_grad_accum_over_64(&fm, &tr);
    test_ce_chunk_default(&fm, &tr);
    dp_token_data_free(&tr);
    dp_token_data_free(&va);
    fx_model_free(&fm);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    CHECK(system(cmd) == 0);
    return check_done();
}
