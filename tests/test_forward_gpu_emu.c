/* The whole-model GPU forward pass (infer/forward_gpu.c) under EMU (or on the device:
 * DOPPEL_TEST_BACKEND=cuda) on the tiny reference models:
 * prefill logits of every position and a prefill + KV-cache decode, against the CPU forward
 * (infer/forward.c) and transformers' committed logits, fp32 and NF4 weights, fp32 and bf16
 * activations; and the run's peak "device" bytes against the allocation table (EMU only: it
 * counts every byte). */
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
                /* reduced: qwen2 fp32/f32, llama nf4/bf16, qwen3 nf4/f32 and fp32/bf16 */
                if (REDUCED && !((i == 0 && !nf4 && !bf16) || (i == 1 && nf4 && bf16) ||
                                 (i == 2 && nf4 != bf16)))
                    continue;
                check_prefill(m, ref, EMU_MODELS[i], nf4, bf16);
                check_decode(m, ref, EMU_MODELS[i], nf4, bf16);
                check_lora(m, ref, EMU_MODELS[i], nf4, bf16);
            }
            dp_model_free(m);
        }
        dp_safetensors_close(ref);
    }
    return check_done();
}
