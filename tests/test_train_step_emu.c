/* The GPU training step (train/grad_gpu.c) under EMU (or on the device: DOPPEL_TEST_BACKEND=cuda)
 * on the tiny reference models, fp32 and NF4
 * bases, fp32 and bf16 activations: the loss and EVERY LoRA gradient against the CPU training
 * path (train/model_grad.c, itself held to transformers + PEFT), with LoRA dropout on (the same
 * Philox masks on both), the parameters after 3 AdamW steps with clipping against the CPU
 * optimizer (train/optim.c), and the run's peak "device" bytes against the memory planner (EMU
 * only: it counts every byte). */
#include "check.h"
#include "fixture_emu.h"
#include "data/base/error.h"
#include "infer/model_load.h"
#include "kernels/cuda/kernels.h"
#include "kernels/emu/emu_api.h"
#include "train/grad_gpu.h"
#include "train/lora.h"
#include "train/memplan.h"
#include "train/model_grad.h"
#include "train/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Two packed sequences (13 + 11 rows) of made-up tokens; targets are the next token inside each
 * sequence, the first 3 rows of each and its last row not trained. */
enum { N = 24, NSEQ = 2 };

static const dp_gpu_ops *gpu; /* dp_emu_ops, or dp_cuda_ops under DOPPEL_TEST_BACKEND=cuda */
static bool counts;           /* EMU's device-byte counters exist (test_gpu_counts_bytes) */
static size_t live_bytes(void) {
    return counts ? dp_emu_device_bytes() : 0;
}
static size_t peak_bytes(void) {
    return counts ? dp_emu_device_peak_bytes() : 0;
}
static void reset_peak(void) {
    if (counts) dp_emu_reset_peak();
}
static int32_t tokens[N], targets[N], pos[N], cu[NSEQ + 1] = {0, 13, N};

static dp_batch make_batch(int V) {
    check_rng st = {99};
    for (int i = 0; i < N; i++) tokens[i] = (int32_t)((check_rng_next(&st) >> 33) % (uint64_t)V);
    for (int s = 0; s < NSEQ; s++)
        for (int i = cu[s]; i < cu[s + 1]; i++) {
            pos[i] = i - cu[s];
            targets[i] = pos[i] < 3 || i + 1 == cu[s + 1] ? -1 : tokens[i + 1];
        }
    return (dp_batch){
        .N = N, .nseq = NSEQ, .tokens = tokens, .targets = targets, .pos = pos, .cu_seqlens = cu};
}

/* Random A and B (PEFT's init leaves B = 0, which would make every dA zero). */
static dp_lora *make_lora(const dp_model *m, float dropout) {
    dp_lora_config lc = {.r = 4, .alpha = 8, .dropout = dropout, .targets = DP_LORA_ALL_TARGETS};
    dp_lora *lora = dp_lora_create(&m->cfg, &lc);
    if (lora) emu_fill_lora(lora, 12345);
    return lora;
}

/* Every LoRA tensor of `got` (flat, lora's layout) against the CPU's, each with a tolerance
 * relative to its own largest element; one line with the worst tensor. */
static void compare_tensors(const char *what, const dp_lora *lora, const float *want,
                            const float *got, double rel) {
    double worst = 0;
    char worst_name[64] = "";
    int ntensors = 0;
    for (int l = 0; l < lora->L; l++)
        for (int m = 0; m < DP_N_LINEAR; m++) {
            const dp_lora_module *md = dp_lora_mod(lora, l, m);
            if (!md->A) continue;
            for (int ab = 0; ab < 2; ab++) {
                size_t off = (size_t)((ab ? md->B : md->A) - lora->params);
                size_t n = (size_t)lora->cfg.r * (size_t)(ab ? md->out : md->in);
                double scale = 0, diff = 0;
                for (size_t i = 0; i < n; i++) {
                    scale = fmax(scale, fabs(want[off + i]));
                    double d = fabs((double)want[off + i] - got[off + i]);
                    diff = d > diff || d != d ? d : diff;
                }
                ntensors++;
                double r = scale > 0 ? diff / scale : diff;
                CHECK_REPORT(scale > 0,
                             "%s: L%d %s %c is all zero on the CPU (a test that "
                             "cannot fail)",
                             what, l, dp_linear_names[m], ab ? 'B' : 'A');
                CHECK_REPORT(r <= rel,
                             "%s: L%d %s lora_%c max|diff| %.3g = %.3g of its largest "
                             "element (tol %.3g)",
                             what, l, dp_linear_names[m], ab ? 'B' : 'A', diff, r, rel);
                if (r > worst || r != r) {
                    worst = r;
                    snprintf(worst_name, sizeof worst_name, "L%d %s lora_%c", l, dp_linear_names[m],
                             ab ? 'B' : 'A');
                }
            }
        }
    fprintf(stderr, "  %-52s %d tensors, worst %s: max|diff| %.3g of its largest (tol %.3g)%s\n",
            what, ntensors, worst_name, worst, rel, worst <= rel ? "" : "  FAIL");
}

/* 3 optimizer steps with clipping active, from the same parameters. Each GPU step (fused AdamW
 * after the device grad norm) against the CPU optimizer applied to the same state and the GPU's
 * own gradients: equal but for the summation order of the norm. Then the whole 3-step
 * trajectory against the all-CPU one: Adam divides each gradient by its own magnitude, so
 * near-zero gradient elements turn 1e-6 gradient differences into parameter differences of a
 * fraction of lr, which later steps carry on (a Debug build's CPU path alone moves them by 2%
 * of the largest move): the bound there is 5% of the largest move, and the grad norms of the
 * later steps agree to 1e-4. A wrong learning rate, bias correction or clip is off by far
 * more. With bf16 activations only the per-step check applies (the gradients themselves differ
 * by a few percent). */
static void check_adamw(dp_gpu_train *t, const dp_model *m, dp_lora *cpu, const dp_lora *init,
                        const dp_batch *b, int nt, uint64_t seed, const char *what, bool bf16) {
    const size_t n = cpu->n;
    dp_adamw_config ac = {0.9f, 0.999f, 1e-8f, 0.01f, 0.5f};
    float *mm = calloc(n, 4), *vv = calloc(n, 4), *p = malloc(n * 4), *gm = malloc(n * 4);
    float *gv = malloc(n * 4), *gz = malloc(n * 4), *em = malloc(n * 4), *ev = malloc(n * 4);
    dp_lora *ref = make_lora(m, cpu->cfg.dropout); /* the CPU optimizer on the GPU's state */
    dp_grad_ws *ws = dp_grad_ws_create(m, cpu, N, true, 5);
    CHECK(ws && ref && dp_gpu_train_zero_grads(t) == 0);
    double worst = 0;
    const long steps = REDUCED ? 2 : 3;
    for (long step = 1; ws && ref && step <= steps; step++) {
        double lr = 1e-2 / (double)step, sum, gnorm, cnorm;
        int64_t n1;
        memset(cpu->grads, 0, n * sizeof(float));
        CHECK(dp_model_grad(ws, m, cpu, b, 1.0f / nt, seed + (uint64_t)step, &sum, &n1) == 0);
        cnorm = dp_adamw_step(cpu, mm, vv, &ac, lr, step);
        CHECK(dp_gpu_train_grad(t, b, 1.0f / nt, seed + (uint64_t)step, &sum, &n1) == 0);
        CHECK(dp_gpu_train_download(t, ref->params, ref->grads, em, ev) == 0);
        double enorm = dp_adamw_step(ref, em, ev, &ac, lr, step);
        CHECK(dp_gpu_train_adamw(t, &ac, lr, step, &gnorm) == 0);
        CHECK(dp_gpu_train_download(t, p, gz, gm, gv) == 0);
        fprintf(stderr, "  %-52s step %ld grad norm %.7f, CPU %.7f\n", what, step, gnorm, cnorm);
        CHECK(cnorm > ac.max_grad_norm); /* clipping is really exercised */
        CHECK_NEAR(enorm, gnorm, 0, 1e-12);
        if (!bf16) CHECK_NEAR(cnorm, gnorm, 0, step == 1 ? 1e-5 : 1e-4);
        for (size_t i = 0; i < n; i++) {
            double d = fmax(fabs((double)p[i] - ref->params[i]),
                            fmax(fabs((double)gm[i] - em[i]), fabs((double)gv[i] - ev[i])));
            worst = fmax(worst, d);
        }
        bool zero = true;
        for (size_t i = 0; i < n; i++) zero &= gz[i] == 0;
        CHECK(zero); /* the step clears the gradients */
    }
    fprintf(stderr,
            "  %-52s fused AdamW vs CPU AdamW on the same state: max|diff| %.3g (tol 1e-9)\n", what,
            worst);
    CHECK(worst <= 1e-9);
    double moved = 0, diff = 0;
    for (size_t i = 0; i < n; i++) {
        moved = fmax(moved, fabs(cpu->params[i] - init->params[i]));
        diff = fmax(diff, fabs((double)cpu->params[i] - p[i]));
    }
    fprintf(stderr,
            "  %-52s params after %ld steps vs all-CPU: max|diff| %.3g, largest move %.3g\n", what,
            steps, diff, moved);
    CHECK(moved > 1e-3);
    if (!bf16) CHECK(diff <= 5e-2 * moved);
    dp_grad_ws_free(ws);
    dp_lora_free(ref);
    free(mm), free(vv), free(p), free(gm), free(gv), free(gz), free(em), free(ev);
}

/* One combination: gradients, then 3 AdamW steps, then the peak device bytes. */
static void check_step(const dp_model *m, const char *name, bool nf4, bool bf16, float dropout,
                       bool adam) {
    char what[160];
    snprintf(what, sizeof what, "%s %s %s%s", name, nf4 ? "nf4" : "fp32",
             bf16 ? "bf16-act" : "f32-act", dropout > 0 ? " dropout 0.1" : "");
    dp_batch b = make_batch(m->cfg.V);
    int nt = 0;
    for (int i = 0; i < N; i++) nt += targets[i] >= 0;
    const uint64_t seed = dropout > 0 ? 0x5eed1234abcdULL : 0;
    dp_lora *cpu = make_lora(m, dropout), *init = make_lora(m, dropout);
    dp_grad_ws *ws = cpu ? dp_grad_ws_create(m, cpu, N, true, 5) : NULL;
    CHECK_REPORT(ws != NULL, "%s: %s", what, dp_last_error());
    if (!ws) {
        dp_lora_free(cpu), dp_lora_free(init);
        return;
    }
    double want = 0, have = 0;
    int64_t nw = 0, nh = 0;
    CHECK(dp_model_grad(ws, m, cpu, &b, 1.0f / nt, seed, &want, &nw) == 0);

    size_t live0 = live_bytes();
    reset_peak();
    dp_train_shape shape = dp_gpu_train_shape(m, init, N, bf16, 5); /* 5 rows: several chunks */
    dp_gpu_train *t;
    if (dp_gpu_train_create(&t, gpu, m, init, &shape)) {
        CHECK_REPORT(0, "%s: %s", what, dp_last_error());
        dp_grad_ws_free(ws), dp_lora_free(cpu), dp_lora_free(init);
        return;
    }
    CHECK_REPORT(dp_gpu_train_grad(t, &b, 1.0f / nt, seed, &have, &nh) == 0, "%s: %s", what,
                 dp_last_error());
    CHECK_EQ_INT(nw, nh);
    CHECK_EQ_INT((13 - 4) + (11 - 4), nh);
    /* fp32 activations differ from the CPU in summation order only; bf16 rounds every
     * activation, weight and activation gradient to 8 mantissa bits */
    double tol_loss = bf16 ? 1e-2 : 1e-5, tol_grad = bf16 ? 6e-2 : 1e-4;
    fprintf(stderr, "  %-52s loss %.6f, CPU %.6f (rel tol %.0e)\n", what, have / nh, want / nw,
            tol_loss);
    CHECK_NEAR(want, have, 0, tol_loss);
    float *g = malloc(cpu->n * sizeof(float));
    CHECK(dp_gpu_train_download(t, NULL, g, NULL, NULL) == 0);
    char w2[200];
    snprintf(w2, sizeof w2, "%s grads", what);
    compare_tensors(w2, cpu, cpu->grads, g, tol_grad);
    /* the forward-only loss (validation: no dropout, no gradient) against the CPU's */
    double vw = 0, vh = 0;
    int64_t nvw = 0, nvh = 0;
    CHECK(dp_model_loss(ws, m, cpu, &b, &vw, &nvw) == 0);
    CHECK(dp_gpu_train_loss(t, &b, &vh, &nvh) == 0);
    fprintf(stderr, "  %-52s validation loss %.6f, CPU %.6f\n", what, vh / nvh, vw / nvw);
    CHECK_EQ_INT(nvw, nvh);
    CHECK_NEAR(vw, vh, 0, tol_loss);
    if (dropout > 0) CHECK(fabs(vw - want) > 1e-4 * fabs(vw)); /* dropout was on in training */
    /* a second micro-batch accumulates (the forward-only pass added nothing): they double */
    CHECK(dp_gpu_train_grad(t, &b, 1.0f / nt, seed, &have, &nh) == 0);
    float *g2 = malloc(cpu->n * sizeof(float));
    CHECK(dp_gpu_train_download(t, NULL, g2, NULL, NULL) == 0);
    for (size_t i = 0; i < cpu->n; i++) g[i] *= 2;
    snprintf(w2, sizeof w2, "%s 2 micro-batches", what);
    compare_tensors(w2, cpu, g, g2, 1e-6);
    free(g2);

    size_t peak_before = 0;
    /* every layer's activations kept (no recomputation): the same gradients, and the plan's
     * "all L layers" rows checked by the peak the same way */
    if (!bf16 && !REDUCED && dropout == 0 && !strcmp(name, "tiny-qwen3")) {
        dp_train_shape kept = shape;
        kept.recompute = false;
        dp_gpu_train *t2 = t;
        size_t live1 = live_bytes();
        peak_before = peak_bytes() - live0; /* of the main run so far */
        reset_peak();
        if (dp_gpu_train_create(&t, gpu, m, init, &kept) == 0) {
            CHECK(dp_gpu_train_grad(t, &b, 1.0f / nt, seed, &have, &nh) == 0);
            CHECK(dp_gpu_train_download(t, NULL, g, NULL, NULL) == 0);
            snprintf(w2, sizeof w2, "%s stored activations grads", what);
            compare_tensors(w2, cpu, cpu->grads, g, tol_grad);
            const dp_memplan *kp = dp_gpu_train_plan(t);
            if (counts)
                CHECK_EQ_INT((long long)(kp->total - kp->by_category[DP_MEM_CONTEXT]),
                             (long long)(peak_bytes() - live1));
            dp_gpu_train_free(t);
        } else {
            CHECK_REPORT(0, "%s: %s", what, dp_last_error());
        }
        t = t2;
        reset_peak();
    }

    if (adam) check_adamw(t, m, cpu, init, &b, nt, seed, what, bf16);

    /* every device byte came from the plan, and the plan's items are exactly what was used */
    const dp_memplan *plan = dp_gpu_train_plan(t);
    size_t peak = peak_bytes() - live0;
    if (peak_before > peak) peak = peak_before;
    uint64_t alloc = plan->total - plan->by_category[DP_MEM_CONTEXT];
    if (counts) {
        fprintf(stderr, "  %-52s EMU peak device bytes %zu, planner %llu - context estimate %llu\n",
                what, peak, (unsigned long long)plan->total,
                (unsigned long long)plan->by_category[DP_MEM_CONTEXT]);
        CHECK_EQ_INT((long long)alloc, (long long)peak);
    } else {
        fprintf(stderr, "  %-52s planner %llu: peak not counted on a real device, SKIPPED\n", what,
                (unsigned long long)plan->total);
    }
    /* two rows by hand from the config: the LoRA parameters, the layer-input checkpoints */
    const dp_model_config *c = &m->cfg;
    long long es = bf16 ? 2 : 4, ck = (long long)(c->L + 1) * N * c->C * es;
    CHECK_EQ_INT((long long)(cpu->n * 4 + 255) / 256 * 256,
                 (long long)plan->by_category[DP_MEM_LORA_WEIGHTS]);
    for (int i = 0; i < plan->n; i++)
        if (!strcmp(plan->items[i].name, "layer-input checkpoints"))
            CHECK_EQ_INT((ck + 255) / 256 * 256, (long long)plan->items[i].bytes);
    dp_gpu_train_free(t);
    if (counts) CHECK_EQ_INT((long long)live0, (long long)live_bytes());

    /* bad input fails cleanly */
    if ((!bf16 && !nf4 && dropout == 0) || REDUCED) {
        dp_batch big = b;
        big.N = N + 1;
        CHECK(dp_gpu_train_create(&t, gpu, m, init, &shape) == 0);
        CHECK(dp_gpu_train_grad(t, &big, 1.0f, 0, &have, &nh) == -1);
        int32_t bad = c->V;
        dp_batch bt = b;
        bt.tokens = &bad, bt.N = 1, bt.nseq = 1;
        int32_t cu1[2] = {0, 1};
        bt.cu_seqlens = cu1;
        CHECK(dp_gpu_train_grad(t, &bt, 1.0f, 0, &have, &nh) == -1);
        /* both entry points sum a loss: a batch without targets is refused, not dereferenced */
        dp_batch nt_b = b;
        nt_b.targets = NULL;
        CHECK(dp_gpu_train_grad(t, &nt_b, 1.0f, 0, &have, &nh) == -1);
        CHECK(strstr(dp_last_error(), "without targets") != NULL);
        CHECK(dp_gpu_train_loss(t, &nt_b, &have, &nh) == -1);
        CHECK(strstr(dp_last_error(), "without targets") != NULL);
        /* decreasing offsets */
        int32_t cu_down[3] = {0, 20, N};
        dp_batch bd = b;
        bd.nseq = 2, bd.cu_seqlens = cu_down;
        cu_down[1] = N + 1; /* past the end, then back down to N */
        CHECK(dp_gpu_train_grad(t, &bd, 1.0f, 0, &have, &nh) == -1);
        CHECK(strstr(dp_last_error(), "decrease") != NULL);
        dp_gpu_train_free(t);
        dp_train_shape wrong = shape;
        wrong.base_dense = !shape.base_dense; /* the plan assumes the other storage */
        CHECK(dp_gpu_train_create(&t, gpu, m, init, &wrong) == -1);
        fprintf(stderr, "  refused as expected: %s\n", dp_last_error());
    }
    free(g);
    dp_grad_ws_free(ws);
    dp_lora_free(cpu), dp_lora_free(init);
}

int main(void) {
    gpu = test_gpu_backend_or_fail();
    if (!gpu) return check_done();
    counts = test_gpu_counts_bytes(gpu);
    if (REDUCED) fprintf(stderr, "  sanitizer build: reduced matrix (see REDUCED)\n");
    for (int i = 0; i < EMU_N_MODELS; i++)
        for (int nf4 = 0; nf4 < 2; nf4++) {
            dp_model *m = emu_tiny_model(EMU_MODELS[i], nf4);
            if (!m) continue;
            for (int bf16 = 0; bf16 < 2; bf16++) {
                /* dropout and the optimizer: once per model, fp32 activations */
                bool drop = nf4 == i % 2 && !bf16;
                if (REDUCED) { /* one combination through the most host code: biases, NF4,
                                * bf16 copies, dropout, AdamW */
                    if (i == 0 && nf4 && bf16) check_step(m, EMU_MODELS[i], true, true, 0.1f, true);
                    continue;
                }
                check_step(m, EMU_MODELS[i], nf4, bf16, 0.0f, !bf16 || (i == 0 && nf4));
                if (drop) check_step(m, EMU_MODELS[i], nf4, bf16, 0.1f, true);
            }
            dp_model_free(m);
        }
    return check_done();
}
