/* The training loop (see trainer.h). Everything that decides a step's numbers (data order,
 * dropout masks, learning rate) is a pure function of (seed, step, epoch, cursor), so a run
 * resumed from a checkpoint repeats the losses of a run that never stopped. */
#include "train/trainer.h"
#include "data/base/error.h"
#include "data/base/progress.h"
#include "train/checkpoint.h"
#include "train/dist.h"
#include "train/metrics.h"
#include "train/grad_gpu.h"
#include "data/base/hash.h"
#include "data/base/rng.h"
#include "train/memplan.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

static double peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

/* micro-batches of epoch e */
static int64_t epoch_batches(const dp_train_opts *o, int64_t e) {
    dp_epoch_plan p;
    if (dp_epoch_plan_make(o->train, o->batch_tokens, o->seed, e, true, &p)) return -1;
    int64_t n = p.nbatches;
    dp_epoch_plan_free(&p);
    return n;
}

long dp_train_total_steps(const dp_train_opts *o) {
    if (o->max_steps > 0) return o->max_steps;
    int64_t micro = 0;
    for (int e = 0; e < o->epochs; e++) {
        int64_t n = epoch_batches(o, e);
        if (n < 0) return -1;
        micro += n;
    }
    int a = (o->grad_accum > 0 ? o->grad_accum : 1) * dp_dist_world(o->dist);
    return (long)((micro + a - 1) / a);
}

/* dp_eval_loss on the CPU workspace, or on the GPU step's (gt, its parameters) when not NULL;
 * with several ranks each takes every world-th batch and the sums are added up (every rank
 * gets the same mean). */
static double eval_loss(dp_grad_ws *ws, dp_gpu_train *gt, const dp_model *model,
                        const dp_lora *lora, const dp_token_data *d, int64_t batch_tokens,
                        dp_dist *dist) {
    dp_epoch_plan p;
    dp_batch_buf bb;
    if (dp_epoch_plan_make(d, batch_tokens, 0, 0, false, &p)) return NAN;
    if (dp_batch_buf_init(&bb, batch_tokens)) {
        dp_epoch_plan_free(&p);
        return NAN;
    }
    double sum = 0;
    int64_t n = 0;
    const int world = dp_dist_world(dist), rank = dp_dist_rank(dist);
    for (int64_t k = rank; k < p.nbatches; k += world) {
        double s;
        int64_t nt;
        if (dp_batch_fill(&bb, d, &p, k) || (gt ? dp_gpu_train_loss(gt, &bb.b, &s, &nt)
                                                : dp_model_loss(ws, model, lora, &bb.b, &s, &nt))) {
            sum = NAN;
            break;
        }
        sum += s;
        n += nt;
    }
    dp_batch_buf_free(&bb);
    dp_epoch_plan_free(&p);
    if (world > 1) { /* a rank's NAN (error) makes the mean NAN everywhere */
        double both[2] = {sum, (double)n};
        if (dp_dist_allreduce_sum_f64(dist, both, 2)) return NAN;
        sum = both[0], n = (int64_t)both[1];
    }
    return n > 0 ? sum / (double)n : NAN;
}

double dp_eval_loss(dp_grad_ws *ws, const dp_model *model, const dp_lora *lora,
                    const dp_token_data *d, int64_t batch_tokens) {
    return eval_loss(ws, NULL, model, lora, d, batch_tokens, NULL);
}

typedef struct {
    const dp_train_opts *o;
    dp_epoch_plan plan;
    int64_t plan_epoch;
} data_pos;

/* The plan of the state's epoch, moving to the next epoch when this one is used up. */
static int next_plan(data_pos *dp, dp_train_state *st) {
    for (;;) {
        if (dp->plan_epoch != st->epoch) {
            dp_epoch_plan_free(&dp->plan);
            if (dp_epoch_plan_make(dp->o->train, dp->o->batch_tokens, dp->o->seed, st->epoch, true,
                                   &dp->plan))
                return -1;
            dp->plan_epoch = st->epoch;
        }
        if (st->cursor < dp->plan.nbatches) return 0;
        st->epoch++;
        st->cursor = 0;
    }
}

static int save_ckpt(const dp_train_opts *o, const dp_lora *lora, const float *m, const float *v,
                     const dp_train_state *st) {
    char path[4200];
    snprintf(path, sizeof path, "%s/checkpoint.h5", o->out_dir);
    return dp_checkpoint_save(path, lora, m, v, st, o->config_json);
}

/* The dropout seed of micro-batch j of step `step`. The first 64 keep the values of the runs
 * before --grad-accum could exceed 64 (step * 64 + j); later ones draw from their own stream so
 * they never repeat the next step's. */
static uint64_t dropout_seed(uint64_t seed, int64_t step, int j) {
    uint64_t idx = j < 64
                       ? (uint64_t)step * 64 + (uint64_t)j
                       : dp_mix64(((uint64_t)step << 32 | (uint64_t)j) ^ 0x6163636d) ^ (1ull << 63);
    return dp_mix64(seed ^ dp_mix64(idx)) | 1;
}

/* trained rows of micro-batch k (targets), without filling it */
static int64_t batch_trained(const dp_token_data *d, const dp_epoch_plan *p, int64_t k) {
    int64_t n = 0;
    for (int64_t i = p->start[k]; i < p->start[k + 1]; i++) {
        int64_t s = p->order[i];
        for (int64_t t = d->offsets[s] + 1; t < d->offsets[s + 1]; t++) n += d->loss_mask[t];
    }
    return n;
}

/* The GPU step's parameters and moments into the host copies the files are written from. */
static int host_state(const dp_gpu_train *gt, dp_lora *lora, float *m, float *v) {
    return gt ? dp_gpu_train_download(gt, lora->params, NULL, m, v) : 0;
}

static int save_adapter(const dp_train_opts *o, const dp_lora *lora, const char *sub) {
    char dir[4200];
    if (sub)
        snprintf(dir, sizeof dir, "%s/%s", o->out_dir, sub);
    else
        snprintf(dir, sizeof dir, "%s", o->out_dir);
    return dp_lora_save_peft(lora, dir, o->base_model, o->doppel_json);
}

/* What a run holds while it trains: created by loop_open, freed by loop_close. */
typedef struct {
    const dp_train_opts *o;
    dp_lora *lora;
    long total;       /* optimizer steps of the whole run */
    int accum;        /* micro-batches per step */
    float *m, *v;     /* AdamW moments (host copies when on the GPU) */
    dp_grad_ws *ws;   /* the CPU workspace, or */
    dp_gpu_train *gt; /* the GPU step's device buffers */
    dp_batch_buf bb;
    data_pos dpos;
    dp_metrics *mt;
    dp_progress *pg;
    dp_train_state st;
    dp_schedule sched;
    int rank, world; /* data parallel: this process's share of every step; rank 0 writes */
} train_loop;

/* Ranks must hold the same adapter and moments (they start from the same seed or checkpoint and
 * apply the same summed gradients): compared by hash against rank 0's, before a checkpoint. A
 * collective: every rank calls it at the same step. */
static int check_replicas(train_loop *t, const char *when) {
    if (t->world == 1) return 0;
    const size_t bytes = t->lora->n * sizeof(float);
    if (host_state(t->gt, t->lora, t->m, t->v)) return -1;
    uint64_t h = dp_hash_bytes(
        t->v, bytes, dp_hash_bytes(t->m, bytes, dp_hash_bytes(t->lora->params, bytes, 7)));
    uint64_t h0 = h;
    if (dp_dist_broadcast(t->o->dist, &h0, sizeof h0, 0)) return -1;
    double differ = h != h0;
    if (dp_dist_allreduce_sum_f64(t->o->dist, &differ, 1)) return -1;
    if (differ > 0)
        return dp_fail("%s: %g of %d ranks hold another adapter or optimizer state than rank 0 "
                       "(ranks with different data, model files or builds?)",
                       when, differ, t->world);
    return 0;
}

/* The moments, the workspace (or the GPU step), the resumed state and the metrics file; with
 * `files` false (the LR range test) nothing is read from or written to the run directory. */
static int loop_open(train_loop *t, const dp_train_opts *o, long total, bool files,
                     dp_train_result *res) {
    dp_lora *lora = o->lora;
    /* one default for both steps and the planner (the steps' own fallbacks are not used) */
    const int ce_chunk = o->ce_chunk > 0 ? o->ce_chunk : DP_CE_CHUNK_DEFAULT;
    *t = (train_loop){.o = o,
                      .lora = lora,
                      .total = total,
                      .accum = o->grad_accum > 0 ? o->grad_accum : 1,
                      .dpos = {.o = o, .plan_epoch = -1},
                      .st = {.seed = o->seed, .best_val = NAN, .best_step = -1},
                      .rank = dp_dist_rank(o->dist),
                      .world = dp_dist_world(o->dist)};
    t->m = dp_calloc(lora->n, sizeof(float));
    t->v = dp_calloc(lora->n, sizeof(float));
    if (!o->gpu)
        t->ws = dp_grad_ws_create(o->model, lora, (int)o->batch_tokens, o->recompute, ce_chunk);
    if (!t->m || !t->v || (!t->ws && !o->gpu) || dp_batch_buf_init(&t->bb, o->batch_tokens))
        return -1;
    if (t->ws && o->cpu_bf16 && dp_grad_ws_set_bf16(t->ws, o->model, true)) return -1;
    if (t->ws) dp_grad_ws_set_neftune(t->ws, o->neftune_alpha);
    res->workspace_bytes = t->ws ? dp_grad_ws_bytes(t->ws) : 0;

    char path[4200];
    if (o->resume && files) {
        snprintf(path, sizeof path, "%s/checkpoint.h5", o->out_dir);
        if (dp_checkpoint_load(path, lora, t->m, t->v, &t->st)) return -1;
        if (t->st.seed != o->seed)
            return dp_fail("%s: checkpoint seed %llu differs from --seed %llu (resume with the "
                           "same options)",
                           path, (unsigned long long)t->st.seed, (unsigned long long)o->seed);
        if (t->st.step >= total)
            return dp_fail("%s: the checkpoint is at step %lld of %ld: nothing left to train "
                           "(raise --max-steps or --epochs)",
                           path, (long long)t->st.step, total);
    }
    if (o->gpu) { /* every device buffer from the memory plan; the (resumed) state uploaded */
        dp_train_shape sh =
            dp_gpu_train_shape(o->model, lora, (int)o->batch_tokens, o->gpu_bf16, ce_chunk);
        sh.recompute = o->recompute;
        if (dp_gpu_train_create(&t->gt, o->gpu, o->model, lora, &sh) ||
            dp_gpu_train_upload(t->gt, lora->params, t->m, t->v))
            return -1;
        dp_gpu_train_set_neftune(t->gt, o->neftune_alpha);
    }
    t->sched = (dp_schedule){.kind = o->sched, .lr = o->lr, .total_steps = total};
    t->sched.warmup_steps = dp_schedule_warmup(total, o->warmup_steps, o->warmup_ratio);
    if (check_replicas(t, "start")) return -1;
    if (!files || t->rank != 0) return 0;
    snprintf(path, sizeof path, "%s/metrics.h5", o->out_dir);
    t->mt = dp_metrics_open(path, o->resume ? t->st.step : -1);
    if (!t->mt && o->resume) {
        /* a kill -9 in the middle of an append can leave the metrics file unreadable: keep it
         * aside and start a new one rather than refuse to resume */
        char aside[4300];
        snprintf(aside, sizeof aside, "%s.damaged", path);
        if (!rename(path, aside)) {
            if (!o->quiet)
                fprintf(stderr, "train: %s; moved to %s, starting a new metrics file\n",
                        dp_last_error(), aside);
            t->mt = dp_metrics_open(path, -1);
        }
    }
    return t->mt ? 0 : -1;
}

static void loop_close(train_loop *t) {
    if (t->pg) dp_progress_finish(t->pg);
    dp_metrics_close(t->mt);
    dp_epoch_plan_free(&t->dpos.plan);
    dp_batch_buf_free(&t->bb);
    dp_grad_ws_free(t->ws);
    dp_gpu_train_free(t->gt);
    free(t->m);
    free(t->v);
}

/* One optimizer step: the step's accum x world micro-batches (this rank computes every
 * world-th, from its rank on), the gradients summed across ranks, then AdamW. The step's mean
 * loss (NAN when no row is trained), its learning rate, the grad norm and the rows it read (all
 * ranks'). 0; 1 when the loss is not finite (diverged); -1 on error (a failed collective leaves
 * the state of the step before, for a checkpoint). */
static int loop_step(train_loop *t, double *loss, double *lr, double *gnorm, int64_t *rows) {
    const dp_train_opts *o = t->o;
    dp_train_state *st = &t->st;
    const dp_train_state before = *st;
    const int n_micro = t->accum * t->world;
    /* count trained rows first (a walk over the same positions), so the loss is the mean over
     * the whole step, as one big batch would give: every rank walks all of the step's
     * micro-batches, so each knows the step's total without asking the others */
    int64_t trained = 0;
    dp_train_state peek = *st;
    for (int j = 0; j < n_micro; j++) {
        if (next_plan(&t->dpos, &peek)) return -1;
        trained += batch_trained(o->train, &t->dpos.plan, peek.cursor);
        peek.cursor++;
    }
    memset(t->lora->grads, 0, t->lora->n * sizeof(float));
    double loss_sum = 0;
    *rows = 0;
    for (int j = 0; j < n_micro; j++) {
        if (next_plan(&t->dpos, st)) return -1;
        if (j % t->world == t->rank) {
            if (dp_batch_fill(&t->bb, o->train, &t->dpos.plan, st->cursor)) return -1;
            double s;
            int64_t nt;
            /* seeded by the micro-batch's place in the whole step: N ranks draw the masks one
             * rank with --grad-accum N would */
            uint64_t dseed = dropout_seed(o->seed, st->step, j);
            float scale = trained > 0 ? 1.0f / (float)trained : 0;
            if (trained > 0 &&
                (t->gt ? dp_gpu_train_grad(t->gt, &t->bb.b, scale, dseed, &s, &nt)
                       : dp_model_grad(t->ws, o->model, t->lora, &t->bb.b, scale, dseed, &s, &nt)))
                return -1;
            if (trained > 0) loss_sum += s;
            *rows += t->bb.b.N;
        }
        st->cursor++;
    }
    if (t->world > 1) {
        /* each rank's gradient is its share of sum(CE) / trained over the whole step: their sum
         * is the step's gradient (an average would weigh ranks with fewer trained rows wrongly) */
        double stats[2] = {loss_sum, (double)*rows};
        int bad = dp_dist_allreduce_sum_f64(o->dist, stats, 2);
        if (!bad && trained > 0)
            bad = t->gt ? dp_dist_allreduce_sum_device(o->dist, o->gpu, dp_gpu_train_grads(t->gt),
                                                       t->lora->n)
                        : dp_dist_allreduce_sum(o->dist, t->lora->grads, t->lora->n);
        if (bad) {
            *st = before; /* nothing of this step was applied */
            if (t->gt) dp_gpu_train_zero_grads(t->gt);
            return -1;
        }
        loss_sum = stats[0], *rows = (int64_t)stats[1];
    }
    *loss = trained > 0 ? loss_sum / (double)trained : NAN;
    if (trained > 0 && !isfinite(*loss)) {
        dp_fail("step %lld: the loss is %g (diverged: lower --lr or check the data)",
                (long long)st->step + 1, *loss);
        return 1;
    }
    *lr = dp_schedule_lr(&t->sched, st->step);
    *gnorm = 0;
    if (trained > 0 && !t->gt)
        *gnorm = dp_adamw_step(t->lora, t->m, t->v, &o->adam, *lr, st->step + 1);
    if (trained > 0 && t->gt && dp_gpu_train_adamw(t->gt, &o->adam, *lr, st->step + 1, gnorm))
        return -1;
    st->step++;
    st->tokens_seen += *rows;
    return 0;
}

/* Samples while training: the adapter's replies to the fixed validation contexts, printed and
 * stored in the metrics file under this step. */
static int loop_sample(train_loop *t) {
    const dp_train_opts *o = t->o;
    if (!o->sample || o->n_samples <= 0) return 0;
    char **texts = dp_calloc((size_t)o->n_samples, sizeof *texts);
    if (!texts) return -1;
    int rc = host_state(t->gt, t->lora, t->m, t->v) || o->sample(o->sample_ctx, t->lora, texts)
                 ? -1
                 : dp_metrics_append_samples(t->mt, t->st.step, texts, o->n_samples);
    if (!rc && !o->quiet) {
        fprintf(stderr, "\ntrain: step %lld, replies to the fixed validation contexts:\n",
                (long long)t->st.step);
        for (int i = 0; i < o->n_samples; i++) {
            fprintf(stderr, "  [%d] ", i + 1);
            for (const char *c = texts[i] ? texts[i] : ""; *c; c++) /* one line each */
                fputc((unsigned char)*c < 0x20 ? ' ' : *c, stderr); /* one line, no controls */
            fputc('\n', stderr);
        }
    }
    for (int i = 0; i < o->n_samples; i++) free(texts[i]);
    free(texts);
    return rc;
}

/* Validation after a step: the loss into the metrics row, best/ when it is the best so far. */
static int loop_validate(train_loop *t, dp_metrics_row *row) {
    const dp_train_opts *o = t->o;
    dp_train_state *st = &t->st;
    row->val_loss = eval_loss(t->ws, t->gt, o->model, t->lora, o->val, o->batch_tokens, o->dist);
    if (isnan(st->best_val) || row->val_loss < st->best_val) {
        st->best_val = row->val_loss;
        st->best_step = st->step;
        st->evals_since_best = 0;
        if (t->rank == 0 &&
            (host_state(t->gt, t->lora, t->m, t->v) || save_adapter(o, t->lora, "best")))
            return -1;
    } else
        st->evals_since_best++;
    if (!o->quiet && t->rank == 0)
        dp_progress_note(t->pg, "val loss %.4f (best %.4f at step %lld)", row->val_loss,
                         st->best_val, (long long)st->best_step);
    return t->rank == 0 ? loop_sample(t) : 0;
}

/* A checkpoint of the state: every rank checks it holds rank 0's (a collective), rank 0
 * writes it. */
static int loop_checkpoint(train_loop *t) {
    if (check_replicas(t, "checkpoint")) return -1;
    if (t->rank != 0) return 0;
    return host_state(t->gt, t->lora, t->m, t->v) || save_ckpt(t->o, t->lora, t->m, t->v, &t->st);
}

/* Every rank stops at the same step: when any of them was asked to (SIGINT, SIGTERM). */
static bool loop_should_stop(train_loop *t) {
    const dp_train_opts *o = t->o;
    double stop = o->stop_flag && *o->stop_flag;
    if (t->world > 1 && dp_dist_allreduce_sum_f64(o->dist, &stop, 1))
        stop = 1; /* a lost peer: stop here (the caller sees the failure) */
    return stop > 0 || (o->stop_at > 0 && t->st.step == o->stop_at);
}

/* After a collective failed (a rank died or hangs): rank 0 still holds the state of the last
 * whole step; it becomes the checkpoint, so --resume (with any number of ranks) goes on. */
static void loop_rescue(train_loop *t) {
    if (!dp_dist_failed(t->o->dist) || t->rank != 0) return;
    char why[1024];
    snprintf(why, sizeof why, "%s", dp_last_error());
    if (host_state(t->gt, t->lora, t->m, t->v) || save_ckpt(t->o, t->lora, t->m, t->v, &t->st))
        dp_fail("%s; and the checkpoint could not be written: %s", why, dp_last_error());
    else
        dp_fail("%s; the checkpoint of step %lld is saved: continue with --resume (with any "
                "number of ranks whose --grad-accum x ranks is %d)",
                why, (long long)t->st.step, t->accum * t->world);
}

int dp_train(const dp_train_opts *o, dp_train_result *res) {
    memset(res, 0, sizeof *res);
    res->val_before = res->val_after = res->best_val = NAN;
    res->best_step = -1;
    long total = dp_train_total_steps(o);
    if (total < 0) return -1;
    if (total == 0) return dp_fail("the run has no steps (no data, or --max-steps 0)");
    res->total_steps = total;
    if (dp_dist_rank(o->dist) == 0 && dp_make_dirs(o->out_dir)) return -1;

    int status = -1;
    bool stepping = false; /* loop_open done: the state is a whole step's */
    train_loop t;
    dp_train_state *st = &t.st;
    if (loop_open(&t, o, total, true, res)) goto done;
    stepping = true;
    const bool talk = !o->quiet && t.rank == 0;
    res->world = t.world;
    if (o->val && !o->resume) {
        res->val_before = eval_loss(t.ws, t.gt, o->model, t.lora, o->val, o->batch_tokens, o->dist);
        if (talk) fprintf(stderr, "train: validation loss before training %.4f\n", res->val_before);
    }
    dp_progress_opts popts = {.quiet = !talk};
    t.pg = dp_progress_start("train", total, "step", &popts);
    dp_progress_update(t.pg, st->step);
    double t0 = dp_now_seconds(), elapsed0 = st->elapsed, smooth = NAN;
    int64_t tokens_here = 0;
    bool stopped = false;
    double last_val = NAN; /* validation loss after the last step, when it was evaluated */
    const uint64_t reduced0 = dp_dist_bytes_reduced(o->dist);
    const int64_t step0 = st->step;
    while (st->step < total) {
        if (loop_should_stop(&t)) {
            if (dp_dist_failed(o->dist)) goto done;
            stopped = true;
            break;
        }
        double loss = NAN, lr = 0, gnorm = 0;
        int64_t rows = 0;
        if (loop_step(&t, &loss, &lr, &gnorm, &rows)) goto done;
        tokens_here += rows;
        double now = dp_now_seconds();
        st->elapsed = elapsed0 + (now - t0);
        double tps = tokens_here / (now - t0 > 1e-9 ? now - t0 : 1e-9);
        if (!isnan(loss)) smooth = isnan(smooth) ? loss : 0.9 * smooth + 0.1 * loss;

        dp_metrics_row row = {.step = st->step,
                              .loss = loss,
                              .val_loss = NAN,
                              .lr = lr,
                              .grad_norm = gnorm,
                              .tokens_per_s = tps,
                              .elapsed = st->elapsed};
        bool last = st->step == total;
        if (o->val && ((o->eval_every > 0 && st->step % o->eval_every == 0) || last) &&
            loop_validate(&t, &row))
            goto done;
        last_val = last ? row.val_loss : NAN;
        if (t.mt && dp_metrics_append(t.mt, &row)) goto done;
        dp_progress_note(t.pg, "loss %.4f  lr %.2e  %.0f tok/s  %.0f MiB", smooth, lr, tps,
                         peak_rss_mib());
        dp_progress_update(t.pg, st->step);
        if (o->save_every > 0 && st->step % o->save_every == 0 && !last && loop_checkpoint(&t))
            goto done;
        if (o->early_stop > 0 && st->evals_since_best >= o->early_stop) {
            res->early_stopped = true;
            break;
        }
    }
    res->steps_done = st->step;
    res->best_val = st->best_val;
    res->best_step = st->best_step;
    double secs = dp_now_seconds() - t0;
    res->tokens_per_s = secs > 0 ? tokens_here / secs : 0;
    res->peak_rss_mib = peak_rss_mib();
    if (st->step > step0)
        res->bytes_reduced_per_step =
            (double)(dp_dist_bytes_reduced(o->dist) - reduced0) / (double)(st->step - step0);
    if (loop_checkpoint(&t)) goto done;
    /* an interrupted run leaves a usable adapter too; --resume continues from the checkpoint */
    if (t.rank == 0 && save_adapter(o, t.lora, NULL)) goto done;
    res->interrupted = stopped;
    if (o->val && !stopped)
        res->val_after = !isnan(last_val) ? last_val
                                          : eval_loss(t.ws, t.gt, o->model, t.lora, o->val,
                                                      o->batch_tokens, o->dist);
    status = 0;
done:
    if (status && stepping) loop_rescue(&t);
    loop_close(&t);
    return status;
}

/* ------------------------------------------------------------------ LR range test */

int dp_find_lr(const dp_train_opts *o, const dp_lr_find_opts *f, dp_lr_find_result *r) {
    memset(r, 0, sizeof *r);
    r->suggested = r->lr_at_min = NAN;
    if (!(f->lr_min > 0 && f->lr_max > f->lr_min && f->steps >= 8 && f->beta >= 0 && f->beta < 1 &&
          f->diverge > 1))
        return dp_fail("LR range test: needs 0 < lr_min < lr_max, at least 8 steps, smoothing "
                       "in [0, 1) and a divergence factor above 1");
    dp_lora *lora = o->lora;
    /* the throwaway copy: the sweep trains the caller's adapter, which gets its values back */
    float *saved = dp_malloc(lora->n * sizeof(float));
    r->lr = dp_calloc((size_t)f->steps, sizeof(double));
    r->loss = dp_calloc((size_t)f->steps, sizeof(double));
    r->smoothed = dp_calloc((size_t)f->steps, sizeof(double));
    if (!saved || !r->lr || !r->loss || !r->smoothed) {
        free(saved);
        dp_lr_find_result_free(r);
        return -1;
    }
    memcpy(saved, lora->params, lora->n * sizeof(float));
    dp_train_result res;
    train_loop t;
    int status = -1;
    if (loop_open(&t, o, f->steps, false, &res)) goto done;
    t.sched = (dp_schedule){.kind = DP_SCHED_CONSTANT, .total_steps = f->steps};
    dp_progress_opts popts = {.quiet = o->quiet};
    t.pg = dp_progress_start("find-lr", f->steps, "step", &popts);
    double ema = 0, best = INFINITY;
    long seen = 0; /* steps with a loss, for the bias correction */
    for (long k = 0; k < f->steps; k++) {
        if (o->stop_flag && *o->stop_flag) break;
        /* exponential sweep: lr_min at the first step, lr_max at the last */
        t.sched.lr = f->lr_min * pow(f->lr_max / f->lr_min, (double)k / (double)(f->steps - 1));
        double loss = NAN, lr = 0, gnorm = 0;
        int64_t rows = 0;
        int rc = loop_step(&t, &loss, &lr, &gnorm, &rows);
        if (rc < 0) goto done;
        r->lr[r->n] = t.sched.lr;
        r->loss[r->n] = rc ? INFINITY : loss;
        if (!isnan(loss) && !rc) { /* an EMA with Adam's bias correction (fastai's) */
            ema = f->beta * ema + (1 - f->beta) * loss;
            seen++;
        }
        double sm = seen ? ema / (1 - pow(f->beta, (double)seen)) : NAN;
        r->smoothed[r->n] = rc ? INFINITY : sm;
        r->n++;
        if (rc || (seen && sm > f->diverge * best)) {
            r->diverged = true;
            break;
        }
        if (seen && sm < best) best = sm, r->i_min = r->n - 1;
        dp_progress_note(t.pg, "lr %.2e  loss %.4f  smoothed %.4f", t.sched.lr, loss, sm);
        dp_progress_update(t.pg, k + 1);
    }
    if (isfinite(best)) {
        r->lr_at_min = r->lr[r->i_min];
        r->suggested = r->lr_at_min / 10;
    }
    status = 0;
done:
    loop_close(&t);
    memcpy(lora->params, saved, lora->n * sizeof(float));
    memset(lora->grads, 0, lora->n * sizeof(float));
    free(saved);
    if (status) dp_lr_find_result_free(r);
    return status;
}

void dp_lr_find_result_free(dp_lr_find_result *r) {
    free(r->lr);
    free(r->loss);
    free(r->smoothed);
    r->lr = r->loss = r->smoothed = NULL;
}
