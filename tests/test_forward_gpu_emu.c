/* The whole-model GPU forward pass (infer/forward_gpu.c) under EMU (or on the device:
 * DOPPEL_TEST_BACKEND=cuda) on the tiny reference models:
 * prefill logits of every position and a prefill + KV-cache decode, against the CPU forward
 * (infer/forward.c) and transformers' committed logits, fp32 and NF4 weights, fp32 and bf16
 * activations; and the run's peak "device" bytes against the allocation table (EMU only: it
 * counts every byte). Serve's slots: several sequences and LoRA adapters over one upload, advanced
 * in batched decode steps, against each sequence run alone and against the CPU. */
#include "check.h"
#include "fixture_emu.h"
#include "fixture_st.h"
#include "data/base/error.h"
#include "infer/forward.h"
#include "infer/forward_gpu.h"
#include "infer/model_load.h"
#include "infer/safetensors.h"
#include "kernels/cuda/kernels.h"
#include "kernels/emu/emu_api.h"
#include "infer/adapter.h"
#include "train/memplan.h"
#include "train/model_grad.h"

#include <math.h>
#include <stdlib.h>

static const dp_gpu_ops *gpu; /* dp_emu_ops, or dp_cuda_ops under DOPPEL_TEST_BACKEND=cuda */

/* Tolerances, relative to the largest reference logit: fp32 activations differ from the CPU
 * only in summation order; bf16 rounds every activation and weight to 8 mantissa bits. NF4:
 * see tests/test_forward.c (an absmax code may differ by one step from bitsandbytes'). */
static double tol_cpu(bool bf16) {
    return bf16 ? 3e-2 : 1e-5;
}
/* A sequence among others in batched steps against it alone: the same kernels over more rows,
 * so only the summation order differs; in bf16 a different GEMM split (cuBLAS picks per shape)
 * may round a few activations to the neighbouring bf16 value (2^-8 relative), hence a third of
 * the bound against the CPU. A row through the wrong adapter or cache is off by ~1x the scale. */
static double tol_slots(bool bf16) {
    return bf16 ? 1e-2 : 1e-5;
}
static double tol_ref(bool bf16, bool nf4) {
    return bf16 ? 3e-2 : nf4 ? 1e-3 : 1e-4;
}

/* Every position of the longest sequence in one prefill (and in chunks of 5) */
static void check_prefill(const dp_model *m, const dp_safetensors *ref, const char *name, bool nf4,
                          bool bf16) {
    const int V = m->cfg.V;
    int64_t T, n;
    int32_t *tok = fx_st_tensor(ref, "seq3.tokens", &T);
    float *want = fx_st_tensor(ref, nf4 ? "nf4.seq3.logits" : "seq3.logits", &n);
    if (!tok || !want || n != T * V) {
        CHECK_REPORT(0, "%s: bad reference shapes", name);
        free(tok), free(want);
        return;
    }
    float *cpu = calloc((size_t)n, 4), *got = calloc((size_t)n, 4);
    dp_forward f;
    CHECK(dp_forward_create(&f, m, 64, 0) == 0);
    CHECK(dp_forward_tokens(&f, tok, (int)T, cpu) == 0);
    dp_forward_free(&f);
    double scale = fx_max_abs(want, (size_t)n);
    for (int chunk = 0; chunk <= (REDUCED ? 0 : 5); chunk += 5) {
        dp_gpu_forward *g;
        if (dp_gpu_forward_create(&g, gpu, m, NULL, 64, chunk, bf16)) {
            CHECK_REPORT(0, "%s: %s", name, dp_last_error());
            break;
        }
        CHECK_REPORT(dp_gpu_forward_tokens(g, tok, (int)T, got) == 0, "%s", dp_last_error());
        char what[160];
        snprintf(what, sizeof what, "%s %s %s prefill T=%d%s vs CPU", name, nf4 ? "nf4" : "fp32",
                 bf16 ? "bf16-act" : "f32-act", (int)T, chunk ? " (chunks of 5)" : "");
        check_arrays_near(what, cpu, got, (size_t)n, tol_cpu(bf16) * scale, 0);
        snprintf(what, sizeof what, "%s %s %s prefill T=%d%s vs transformers", name,
                 nf4 ? "nf4" : "fp32", bf16 ? "bf16-act" : "f32-act", (int)T,
                 chunk ? " (chunks of 5)" : "");
        check_arrays_near(what, want, got, (size_t)n, tol_ref(bf16, nf4) * scale, 0);
        CHECK_NEAR(got[(T - 1) * V + 3], dp_gpu_forward_logits(g)[3], 0, 0);
        dp_gpu_forward_free(g);
    }
    free(tok), free(want), free(cpu), free(got);
}

/* A prefill, then decode steps one token at a time through the device KV cache; the table's
 * total equals the peak device bytes the EMU recorded over the whole run. */
static void check_decode(const dp_model *m, const dp_safetensors *ref, const char *name, bool nf4,
                         bool bf16) {
    const int V = m->cfg.V;
    int64_t P, S, n;
    int32_t *prefix = fx_st_tensor(ref, "decode.prefix", &P);
    int32_t *steps = fx_st_tensor(ref, "decode.tokens", &S);
    float *want = fx_st_tensor(ref, "decode.logits", &n);
    if (!prefix || !steps || !want || n != (S + 1) * V) {
        CHECK_REPORT(0, "%s: bad decode reference", name);
        free(prefix), free(steps), free(want);
        return;
    }
    float *cpu = calloc((size_t)n, 4), *got = calloc((size_t)n, 4);
    dp_forward f;
    CHECK(dp_forward_create(&f, m, 32, 0) == 0);
    CHECK(dp_forward_tokens(&f, prefix, (int)P, NULL) == 0);
    memcpy(cpu, f.logits, (size_t)V * 4);
    for (int i = 0; i < S; i++) {
        CHECK(dp_forward_tokens(&f, &steps[i], 1, NULL) == 0);
        memcpy(cpu + (size_t)(i + 1) * V, f.logits, (size_t)V * 4);
    }
    dp_forward_free(&f);

    bool counts = test_gpu_counts_bytes(gpu);
    size_t live0 = counts ? dp_emu_device_bytes() : 0;
    if (counts) dp_emu_reset_peak();
    dp_gpu_forward *g;
    if (dp_gpu_forward_create(&g, gpu, m, NULL, 32, 0, bf16)) {
        CHECK_REPORT(0, "%s: %s", name, dp_last_error());
        goto out;
    }
    CHECK_REPORT(dp_gpu_forward_tokens(g, prefix, (int)P, NULL) == 0, "%s", dp_last_error());
    memcpy(got, dp_gpu_forward_logits(g), (size_t)V * 4);
    for (int i = 0; i < S; i++) {
        CHECK_REPORT(dp_gpu_forward_tokens(g, &steps[i], 1, NULL) == 0, "%s", dp_last_error());
        memcpy(got + (size_t)(i + 1) * V, dp_gpu_forward_logits(g), (size_t)V * 4);
    }
    CHECK_EQ_INT(P + S, dp_gpu_forward_positions(g));
    double scale = fx_max_abs(want, (size_t)n);
    char what[160];
    snprintf(what, sizeof what, "%s %s %s prefill %d + decode %d vs CPU", name,
             nf4 ? "nf4" : "fp32", bf16 ? "bf16-act" : "f32-act", (int)P, (int)S);
    check_arrays_near(what, cpu, got, (size_t)n, tol_cpu(bf16) * scale, 0);
    if (!nf4) { /* transformers' decode reference is for the fp32 weights only */
        snprintf(what, sizeof what, "%s fp32 %s prefill %d + decode %d vs transformers", name,
                 bf16 ? "bf16-act" : "f32-act", (int)P, (int)S);
        check_arrays_near(what, want, got, (size_t)n, tol_ref(bf16, false) * scale, 0);
    }
    /* overflow and bad ids fail cleanly and append nothing */
    int T = dp_gpu_forward_positions(g);
    int32_t big[40] = {0}, bad = V;
    CHECK(dp_gpu_forward_tokens(g, big, 40, NULL) == -1);
    CHECK(dp_gpu_forward_tokens(g, &bad, 1, NULL) == -1);
    CHECK_EQ_INT(T, dp_gpu_forward_positions(g));

    size_t peak = counts ? dp_emu_device_peak_bytes() - live0 : 0;
    fprintf(stderr, "  %s %s %s: %s peak device bytes %zu, table total %llu (", name,
            nf4 ? "nf4" : "fp32", bf16 ? "bf16-act" : "f32-act", gpu->backend, peak,
            (unsigned long long)dp_gpu_forward_table(g)->total);
    for (int c = 0; c < DP_GF_N_CATEGORIES; c++)
        fprintf(stderr, "%s%s %llu", c ? ", " : "", dp_gf_category_names[c],
                (unsigned long long)dp_gpu_forward_table(g)->bytes[c]);
    fprintf(stderr, ")%s\n", counts ? "" : ": peak not counted on a real device, SKIPPED");
    if (counts) CHECK_EQ_INT((long long)dp_gpu_forward_table(g)->total, (long long)peak);
    /* two table rows from the config by hand: the cache holds k and v of every layer and
     * position; the dequantize scratch one (F, C) matrix (the largest NF4 linear here) */
    const dp_model_config *c = &m->cfg;
    long long es = bf16 ? 2 : 4, kv = 2LL * c->L * 32 * c->KVH * c->D * es;
    CHECK_EQ_INT((kv / 2 + 255) / 256 * 256 * 2,
                 (long long)dp_gpu_forward_table(g)->bytes[DP_GF_KV_CACHE]);
    CHECK_EQ_INT(nf4 ? ((long long)c->F * c->C * es + 255) / 256 * 256 : 0,
                 (long long)dp_gpu_forward_table(g)->bytes[DP_GF_DEQUANT]);
    if (nf4) { /* the training planner (train/memplan.c) sizes the same NF4 weights and bf16
                * dequantize scratch from the config alone */
        dp_train_shape shape = dp_train_shape_default();
        dp_memplan tp;
        CHECK(dp_memplan_build(&tp, c, &shape) == 0);
        const dp_gf_plan *ip = dp_gpu_forward_table(g);
        /* ours: each of 3 buffers per linear starts 256-aligned, plus the 272-float maps */
        uint64_t pad = (uint64_t)c->L * DP_N_LINEAR * 3 * 256 + 2048;
        fprintf(stderr, "  %s NF4 weights: table %llu, training planner %llu (+ alignment)\n", name,
                (unsigned long long)ip->bytes[DP_GF_WEIGHTS_NF4],
                (unsigned long long)tp.by_category[DP_MEM_BASE_NF4]);
        CHECK(ip->bytes[DP_GF_WEIGHTS_NF4] >= tp.by_category[DP_MEM_BASE_NF4] &&
              ip->bytes[DP_GF_WEIGHTS_NF4] <= tp.by_category[DP_MEM_BASE_NF4] + pad);
        if (bf16)
            CHECK_EQ_INT((long long)tp.by_category[DP_MEM_DEQUANT],
                         (long long)ip->bytes[DP_GF_DEQUANT]);
        dp_memplan_free(&tp);
    }
    dp_gpu_forward_free(g);
    if (counts) CHECK_EQ_INT((long long)live0, (long long)dp_emu_device_bytes());
out:
    free(prefix), free(steps), free(want), free(cpu), free(got);
}

/* An adapter with random A and B (PEFT's init leaves B = 0, which would test nothing): the
 * prefill and decode logits of the GPU forward with the adapter unmerged against the CPU
 * forward with dp_lora_hook; the table (now with the LoRA row) against the EMU peak. */
static void check_lora(const dp_model *m, const dp_safetensors *ref, const char *name, bool nf4,
                       bool bf16) {
    const int V = m->cfg.V;
    dp_lora_config lc = {.r = 4, .alpha = 8, .targets = DP_LORA_ALL_TARGETS};
    dp_lora *lora = dp_lora_create(&m->cfg, &lc);
    CHECK_REPORT(lora != NULL, "%s", dp_last_error());
    if (!lora) return;
    emu_fill_lora(lora, 12345);
    int64_t T, S;
    int32_t *tok = fx_st_tensor(ref, "seq3.tokens", &T);
    int32_t *steps = fx_st_tensor(ref, "decode.tokens", &S);
    if (!tok || !steps) goto out;
    size_t n = (size_t)(T + S) * V;
    float *cpu = calloc(n, 4), *got = calloc(n, 4);
    dp_forward f;
    CHECK(dp_forward_create(&f, m, 64, 0) == 0);
    dp_forward_set_hook(&f, dp_lora_hook, lora);
    CHECK(dp_forward_tokens(&f, tok, (int)T, cpu) == 0);
    for (int i = 0; i < S; i++) {
        CHECK(dp_forward_tokens(&f, &steps[i], 1, NULL) == 0);
        memcpy(cpu + (size_t)(T + i) * V, f.logits, (size_t)V * 4);
    }
    dp_forward_free(&f);
    bool counts = test_gpu_counts_bytes(gpu);
    size_t live0 = counts ? dp_emu_device_bytes() : 0;
    if (counts) dp_emu_reset_peak();
    dp_gpu_forward *g;
    if (dp_gpu_forward_create(&g, gpu, m, lora, 64, 0, bf16)) {
        CHECK_REPORT(0, "%s: %s", name, dp_last_error());
    } else {
        CHECK_REPORT(dp_gpu_forward_tokens(g, tok, (int)T, got) == 0, "%s", dp_last_error());
        for (int i = 0; i < S; i++) {
            CHECK(dp_gpu_forward_tokens(g, &steps[i], 1, NULL) == 0);
            memcpy(got + (size_t)(T + i) * V, dp_gpu_forward_logits(g), (size_t)V * 4);
        }
        char what[160];
        snprintf(what, sizeof what, "%s %s %s LoRA r=4 prefill %d + decode %d vs CPU hook", name,
                 nf4 ? "nf4" : "fp32", bf16 ? "bf16-act" : "f32-act", (int)T, (int)S);
        check_arrays_near(what, cpu, got, n, tol_cpu(bf16) * fx_max_abs(cpu, n), 0);
        size_t peak = counts ? dp_emu_device_peak_bytes() - live0 : 0;
        const dp_gf_plan *ip = dp_gpu_forward_table(g);
        fprintf(stderr, "  %s: %s peak device bytes %zu, table total %llu (LoRA %llu)%s\n", what,
                gpu->backend, peak, (unsigned long long)ip->total,
                (unsigned long long)ip->bytes[DP_GF_LORA],
                counts ? "" : ": peak not counted on a real device, SKIPPED");
        if (counts) CHECK_EQ_INT((long long)ip->total, (long long)peak);
        CHECK_EQ_INT((long long)ip->bytes[DP_GF_LORA], (long long)(lora->n * 4)); /* all aligned */
        dp_gpu_forward_free(g);
    }
    /* the loss of the sequence (next-token targets, the first 5 rows not counted) with the
     * adapter: chunks of 16 rows of logits on the device vs train/model_grad.c's CPU loss */
    int N = (int)T - 1;
    int32_t *tg = malloc((size_t)N * 4), *pos = malloc((size_t)N * 4), cu[2] = {0, N};
    for (int i = 0; i < N; i++) tg[i] = i < 5 ? -1 : tok[i + 1], pos[i] = i;
    dp_batch b = {.N = N, .nseq = 1, .tokens = tok, .targets = tg, .pos = pos, .cu_seqlens = cu};
    dp_grad_ws *ws = dp_grad_ws_create(m, lora, N, false, 0);
    double want = 0, have = 0;
    int64_t nw = 0, nh = 0;
    CHECK(ws && dp_model_loss(ws, m, lora, &b, &want, &nw) == 0);
    dp_grad_ws_free(ws);
    if (dp_gpu_forward_create(&g, gpu, m, lora, 64, 16, bf16) == 0) {
        CHECK_REPORT(dp_gpu_forward_loss(g, tok, tg, N, &have, &nh) == 0, "%s", dp_last_error());
        fprintf(stderr, "  %s %s %s LoRA loss sum: %s %.6f, CPU %.6f over %lld rows\n", name,
                nf4 ? "nf4" : "fp32", bf16 ? "bf16-act" : "f32-act", gpu->backend, have, want,
                (long long)nw);
        CHECK_NEAR(want, have, 0, bf16 ? 2e-3 : 1e-5);
        CHECK_EQ_INT(nw, nh);
        CHECK_EQ_INT(N - 5, nh);
        dp_gpu_forward_free(g);
    } else {
        CHECK_REPORT(0, "%s: %s", name, dp_last_error());
    }
    free(tg), free(pos);
    free(cpu), free(got);
out:
    free(tok), free(steps);
    dp_lora_free(lora);
}

/* ------------------------------------------------------------------ serve: slots */

/* Four sequences over one upload, through adapters {lora1, NULL (the base), lora2}: slot s reads
 * the reference text from SLOT_START[s], prefills SLOT_PROMPT[s] tokens, then advances in the
 * batched decode steps of SCHEDULE (rows in mixed order, one adapter's rows not adjacent). Slot 1
 * is prefilled through the NULL entry and decodes through -1 on even steps, 1 on odd ones. */
#define N_SLOTS     4
#define SLOTS_MAX_T 32
static const int SLOT_ADAPTER[N_SLOTS] = {2, 1, 0, 0};
static const int SLOT_START[N_SLOTS] = {0, 3, 1, 5};
static const int SLOT_PROMPT[N_SLOTS] = {6, 4, 7, 3};
static const struct {
    int n, slots[N_SLOTS];
} SCHEDULE[] = {{4, {2, 0, 3, 1}}, {4, {1, 3, 0, 2}}, {2, {0, 2}}, {3, {3, 1, 2}}};
#define N_STEPS ((int)(sizeof SCHEDULE / sizeof SCHEDULE[0]))

static int decode_adapter(int slot, int step) {
    return slot == 1 && step % 2 == 0 ? -1 : SLOT_ADAPTER[slot];
}

/* The logits after the prompt (P tokens of seq) and after each of the n - P further tokens, of
 * the sequence alone: on the CPU with dp_lora_hook into cpu, and through a one-slot GPU forward
 * with the adapter into gpu_out; ((n - P + 1), V) each. */
static void slot_reference(const dp_model *m, const dp_lora *lora, const int32_t *seq, int P, int n,
                           bool bf16, float *cpu, float *gpu_out) {
    const int V = m->cfg.V;
    dp_forward f;
    CHECK(dp_forward_create(&f, m, SLOTS_MAX_T, 0) == 0);
    if (lora) dp_forward_set_hook(&f, dp_lora_hook, (void *)lora);
    CHECK(dp_forward_tokens(&f, seq, P, NULL) == 0);
    memcpy(cpu, f.logits, (size_t)V * 4);
    for (int i = P; i < n; i++) {
        CHECK(dp_forward_tokens(&f, &seq[i], 1, NULL) == 0);
        memcpy(cpu + (size_t)(i - P + 1) * V, f.logits, (size_t)V * 4);
    }
    dp_forward_free(&f);
    dp_gpu_forward *g;
    if (dp_gpu_forward_create(&g, gpu, m, lora, SLOTS_MAX_T, 0, bf16)) {
        CHECK_REPORT(0, "%s", dp_last_error());
        return;
    }
    CHECK_REPORT(dp_gpu_forward_tokens(g, seq, P, NULL) == 0, "%s", dp_last_error());
    memcpy(gpu_out, dp_gpu_forward_logits(g), (size_t)V * 4);
    for (int i = P; i < n; i++) {
        CHECK_REPORT(dp_gpu_forward_tokens(g, &seq[i], 1, NULL) == 0, "%s", dp_last_error());
        memcpy(gpu_out + (size_t)(i - P + 1) * V, dp_gpu_forward_logits(g), (size_t)V * 4);
    }
    dp_gpu_forward_free(g);
}

/* the call failed, its message names `what`, and no slot's positions moved */
static void check_refused(int rc, const dp_gpu_forward *g, const int *T, const char *what) {
    CHECK_REPORT(rc == -1 && strstr(dp_last_error(), what),
                 "expected a failure naming \"%s\", got %d (%s)", what, rc, dp_last_error());
    for (int s = 0; s < N_SLOTS; s++) CHECK_EQ_INT(T[s], dp_gpu_forward_slot_positions(g, s));
}

static void check_slots(const dp_model *m, const dp_safetensors *ref, const char *name, bool nf4,
                        bool bf16) {
    const int V = m->cfg.V;
    dp_lora_config lc1 = {.r = 4, .alpha = 8, .targets = DP_LORA_ALL_TARGETS};
    dp_lora_config lc2 = {
        .r = 8, .alpha = 4, .targets = (1u << DP_Q) | (1u << DP_V) | (1u << DP_DOWN)};
    dp_lora *lora1 = dp_lora_create(&m->cfg, &lc1), *lora2 = dp_lora_create(&m->cfg, &lc2);
    int64_t T;
    int32_t *tok = fx_st_tensor(ref, "seq3.tokens", &T);
    CHECK_REPORT(lora1 && lora2 && tok, "%s", dp_last_error());
    if (!lora1 || !lora2 || !tok) goto out_lora;
    emu_fill_lora(lora1, 777), emu_fill_lora(lora2, 4242);
    const dp_lora *adapters[3] = {lora1, NULL, lora2};
    char what[160];
    snprintf(what, sizeof what, "%s %s %s", name, nf4 ? "nf4" : "fp32",
             bf16 ? "bf16-act" : "f32-act");

    /* each slot's sequence, and where its logits go in the (rows, V) arrays */
    int steps[N_SLOTS] = {0}, off[N_SLOTS + 1] = {0};
    for (int k = 0; k < N_STEPS; k++)
        for (int i = 0; i < SCHEDULE[k].n; i++) steps[SCHEDULE[k].slots[i]]++;
    int32_t seq[N_SLOTS][SLOTS_MAX_T];
    for (int s = 0; s < N_SLOTS; s++) {
        for (int i = 0; i < SLOT_PROMPT[s] + steps[s]; i++)
            seq[s][i] = tok[(SLOT_START[s] + i) % T];
        off[s + 1] = off[s] + 1 + steps[s];
    }
    size_t n = (size_t)off[N_SLOTS] * V;
    float *cpu = calloc(n, 4), *alone = calloc(n, 4), *got = calloc(n, 4);
    float *rows = calloc((size_t)N_SLOTS * V, 4);
    for (int s = 0; s < N_SLOTS; s++)
        slot_reference(m, adapters[SLOT_ADAPTER[s]], seq[s], SLOT_PROMPT[s],
                       SLOT_PROMPT[s] + steps[s], bf16, cpu + (size_t)off[s] * V,
                       alone + (size_t)off[s] * V);

    bool counts = test_gpu_counts_bytes(gpu);
    size_t live0 = counts ? dp_emu_device_bytes() : 0;
    if (counts) dp_emu_reset_peak();
    dp_gpu_forward *g;
    if (dp_gpu_forward_create_slots(&g, gpu, m, adapters, 3, N_SLOTS, SLOTS_MAX_T, 0, bf16)) {
        CHECK_REPORT(0, "%s: %s", what, dp_last_error());
        goto out;
    }
    /* prefill every slot; slot 1 then forgets its last 2 positions and feeds them again (the
     * others untouched: their later logits still match) */
    for (int s = 0; s < N_SLOTS; s++)
        CHECK_REPORT(dp_gpu_forward_slot_tokens(g, s, SLOT_ADAPTER[s], seq[s], SLOT_PROMPT[s],
                                                got + (size_t)off[s] * V) == 0,
                     "%s", dp_last_error());
    int P1 = SLOT_PROMPT[1];
    dp_gpu_forward_slot_truncate(g, 1, P1 - 2);
    for (int s = 0; s < N_SLOTS; s++)
        CHECK_EQ_INT(s == 1 ? P1 - 2 : SLOT_PROMPT[s], dp_gpu_forward_slot_positions(g, s));
    CHECK_REPORT(
        dp_gpu_forward_slot_tokens(g, 1, -1, seq[1] + P1 - 2, 2, got + (size_t)off[1] * V) == 0,
        "%s", dp_last_error());
    /* the batched decode steps */
    int done[N_SLOTS] = {0};
    for (int k = 0; k < N_STEPS; k++) {
        int nr = SCHEDULE[k].n, ad[N_SLOTS];
        int32_t tk[N_SLOTS];
        const int *sl = SCHEDULE[k].slots;
        for (int i = 0; i < nr; i++)
            ad[i] = decode_adapter(sl[i], k), tk[i] = seq[sl[i]][SLOT_PROMPT[sl[i]] + done[sl[i]]];
        if (dp_gpu_forward_decode(g, nr, sl, ad, tk, rows)) {
            CHECK_REPORT(0, "%s decode step %d: %s", what, k, dp_last_error());
            break;
        }
        for (int i = 0; i < nr; i++) {
            int s = sl[i];
            memcpy(got + (size_t)(off[s] + 1 + done[s]++) * V, rows + (size_t)i * V, (size_t)V * 4);
        }
    }
    int Ts[N_SLOTS];
    for (int s = 0; s < N_SLOTS; s++) {
        Ts[s] = SLOT_PROMPT[s] + steps[s];
        CHECK_EQ_INT(Ts[s], dp_gpu_forward_slot_positions(g, s));
    }
    char line[256];
    double scale = fx_max_abs(cpu, n);
    snprintf(line, sizeof line, "%s %d slots, 3 adapters: %d decode steps vs each alone", what,
             N_SLOTS, N_STEPS);
    check_arrays_near(line, alone, got, n, tol_slots(bf16) * scale, 0);
    snprintf(line, sizeof line, "%s %d slots, 3 adapters: %d decode steps vs CPU hook", what,
             N_SLOTS, N_STEPS);
    check_arrays_near(line, cpu, got, n, tol_cpu(bf16) * scale, 0);

    /* refusals name the bad value and move no slot */
    int32_t bad_tok = V, zeros[SLOTS_MAX_T] = {0};
    int two[2] = {0, 3}, ad2[2] = {2, 0}, dup[2] = {1, 1}, wrong_slot[2] = {0, N_SLOTS};
    int wrong_ad[2] = {2, -2};
    check_refused(dp_gpu_forward_slot_tokens(g, N_SLOTS, 0, tok, 1, NULL), g, Ts, "slot 4");
    check_refused(dp_gpu_forward_slot_tokens(g, 0, 3, tok, 1, NULL), g, Ts, "adapter 3");
    CHECK_EQ_INT(-1, dp_gpu_forward_slot_positions(g, -1));
    check_refused(dp_gpu_forward_decode(g, 2, wrong_slot, ad2, tok, rows), g, Ts, "slot 4");
    check_refused(dp_gpu_forward_decode(g, 2, two, wrong_ad, tok, rows), g, Ts, "adapter -2");
    check_refused(dp_gpu_forward_decode(g, 2, dup, ad2, tok, rows), g, Ts, "slot 1");
    int32_t tk2[2] = {tok[0], bad_tok};
    char bad_id[32];
    snprintf(bad_id, sizeof bad_id, "token id %d", bad_tok);
    check_refused(dp_gpu_forward_decode(g, 2, two, ad2, tk2, rows), g, Ts, bad_id);
    /* slot 3 filled to the last position: a step with it fails and appends nothing to slot 0 */
    CHECK_REPORT(dp_gpu_forward_slot_tokens(g, 3, 0, zeros, SLOTS_MAX_T - Ts[3], NULL) == 0, "%s",
                 dp_last_error());
    Ts[3] = SLOTS_MAX_T;
    check_refused(dp_gpu_forward_decode(g, 2, two, ad2, tok, rows), g, Ts, "slot 3 is full");
    check_refused(dp_gpu_forward_slot_tokens(g, 3, 0, tok, 1, NULL), g, Ts, "slot 3");

    /* the table: every slot's cache and both adapters' A and B, as measured */
    const dp_gf_plan *ip = dp_gpu_forward_table(g);
    size_t peak = counts ? dp_emu_device_peak_bytes() - live0 : 0;
    fprintf(stderr,
            "  %s %d slots: %s peak device bytes %zu, table total %llu (KV %llu, LoRA %llu)%s\n",
            what, N_SLOTS, gpu->backend, peak, (unsigned long long)ip->total,
            (unsigned long long)ip->bytes[DP_GF_KV_CACHE],
            (unsigned long long)ip->bytes[DP_GF_LORA],
            counts ? "" : ": peak not counted on a real device, SKIPPED");
    if (counts) CHECK_EQ_INT((long long)ip->total, (long long)peak);
    const dp_model_config *c = &m->cfg;
    long long kv = (long long)N_SLOTS * c->L * SLOTS_MAX_T * c->KVH * c->D * (bf16 ? 2 : 4);
    CHECK_EQ_INT((kv + 255) / 256 * 256 * 2, (long long)ip->bytes[DP_GF_KV_CACHE]);
    CHECK_EQ_INT((long long)(lora1->n + lora2->n) * 4, (long long)ip->bytes[DP_GF_LORA]);
    dp_gf_plan plan;
    CHECK(dp_gpu_forward_plan_slots(&plan, m, adapters, 3, N_SLOTS, SLOTS_MAX_T, 0, bf16) == 0);
    CHECK_EQ_INT((long long)ip->total, (long long)plan.total);
    dp_gpu_forward_free(g);
    if (counts) CHECK_EQ_INT((long long)live0, (long long)dp_emu_device_bytes());
    /* bad arguments to the plan: no slot; an adapter of another depth */
    CHECK(dp_gpu_forward_plan_slots(&plan, m, adapters, 3, 0, SLOTS_MAX_T, 0, bf16) == -1);
    dp_model_config deeper = m->cfg;
    deeper.L++;
    dp_lora *other = dp_lora_create(&deeper, &lc1);
    const dp_lora *mixed[2] = {lora1, other};
    CHECK_REPORT(other && dp_gpu_forward_plan_slots(&plan, m, mixed, 2, 1, 0, 0, bf16) == -1 &&
                     strstr(dp_last_error(), "adapter 1"),
                 "%s", dp_last_error());
    dp_lora_free(other);
out:
    free(cpu), free(alone), free(got), free(rows);
out_lora:
    free(tok);
    dp_lora_free(lora1), dp_lora_free(lora2);
}

/* The sanitizer build's matrix (REDUCED), and the slots check's in every build: each of the four
 * weight / activation kinds once, each model at least once. */
static bool reduced_config(int model, bool nf4, bool bf16) {
    return (model == 0 && !nf4 && !bf16) || (model == 1 && nf4 && bf16) ||
           (model == 2 && nf4 != bf16);
}

int main(void) {
    gpu = test_gpu_backend_or_fail();
    if (!gpu) return check_done();
    if (REDUCED) fprintf(stderr, "  sanitizer build: reduced matrix (see REDUCED)\n");
    for (int i = 0; i < EMU_N_MODELS; i++) {
        char refpath[4200];
        snprintf(refpath, sizeof refpath, "%s/tests/fixtures/%s/reference.safetensors",
                 test_source_dir(), EMU_MODELS[i]);
        dp_safetensors *ref = dp_safetensors_open(refpath);
        CHECK_REPORT(ref != NULL, "%s", dp_last_error());
        if (!ref) continue;
        for (int nf4 = 0; nf4 < 2; nf4++) {
            dp_model *m = emu_tiny_model(EMU_MODELS[i], nf4);
            if (!m) continue;
            for (int bf16 = 0; bf16 < 2; bf16++) {
                if (REDUCED && !reduced_config(i, nf4, bf16)) continue;
                check_prefill(m, ref, EMU_MODELS[i], nf4, bf16);
                check_decode(m, ref, EMU_MODELS[i], nf4, bf16);
                check_lora(m, ref, EMU_MODELS[i], nf4, bf16);
                if (reduced_config(i, nf4, bf16)) check_slots(m, ref, EMU_MODELS[i], nf4, bf16);
            }
            dp_model_free(m);
        }
        dp_safetensors_close(ref);
    }
    return check_done();
}
