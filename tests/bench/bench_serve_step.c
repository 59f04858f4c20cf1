/* What one decode step of doppel serve costs by the number of conversations it advances: the
 * forward of B = 1, 2, 4, 8 sequences of one row each (dp_forward_batch over B caches, as the
 * scheduler runs it; B = 1 also through dp_forward_tokens, the one-row path) on a model loaded
 * as serve loads it (NF4, Q8 head), alternating the sizes over rounds, medians. The ratio
 * "step(B) / step(1)" is what the batch pays: B when nothing is shared, 1 when weights are all.
 * usage: bench_serve_step [--rounds N=5] [--steps N=16] [--context N=64] [--only B]
 *                         [--decode M1,M2,...] MODEL
 * (--only B: that batch size alone, for a profiler; --decode: each round runs every mode in turn,
 * dp_model_set_decode on the one model, default fp32) */
#include "data/base/error.h"
#include "infer/forward.h"
#include "infer/model_load.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_B     8
#define MAX_MODES 3

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int modes[MAX_MODES] = {DP_DECODE_FP32}, n_modes = 1;
    int rounds = 5, steps = 16, context = 64, only = -1;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--context") && i + 1 < argc)
            context = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--decode") && i + 1 < argc) {
            n_modes = 0;
            for (char *t = strtok(argv[++i], ","); t && n_modes < MAX_MODES; t = strtok(NULL, ","))
                if ((modes[n_modes++] = dp_decode_mode_parse(t)) < 0) n_modes = -99;
        } else
            path = argv[i];
    }
    if (!path || rounds < 1 || rounds > 64 || steps < 1 || context < 1 || only > MAX_B ||
        n_modes < 1) {
        fprintf(stderr, "usage: bench_serve_step [--rounds N] [--steps N] [--context N] [--only B] "
                        "[--decode fp32,int8-head,int8] MODEL\n");
        return 2;
    }
    dp_load_opts lo = {.nf4 = true, .quiet = true, .lm_head_q8 = true};
    dp_model *m = dp_model_load(path, &lo);
    if (!m) {
        fprintf(stderr, "bench_serve_step: %s\n", dp_last_error());
        return 1;
    }
    const int V = m->cfg.V,
              max_T = context + 5 * rounds * steps * n_modes + 8; /* every size advances kv[0] */
    dp_forward batch, one;
    dp_kv kv[MAX_B], *kvp[MAX_B];
    float *logits = malloc((size_t)MAX_B * V * sizeof(float));
    if (!logits || dp_forward_create(&batch, m, max_T, MAX_B) ||
        dp_forward_create(&one, m, max_T, 0))
        return fprintf(stderr, "bench_serve_step: %s\n", dp_last_error()), 1;
    int32_t prompt[4096];
    for (int i = 0; i < context && i < 4096; i++) prompt[i] = (1000 + 37 * i) % 40000 + 100;
    double prefill_ms[MAX_B];
    for (int b = 0; b < MAX_B; b++) { /* each cache holds `context` positions, as a chat would */
        double t0 = now();
        if (dp_kv_create(&kv[b], m, max_T) || dp_forward_tokens(&one, prompt, context, NULL))
            return fprintf(stderr, "bench_serve_step: %s\n", dp_last_error()), 1;
        prefill_ms[b] = (now() - t0) * 1e3;
        size_t per = (size_t)m->cfg.L * max_T * m->cfg.KVH * m->cfg.D;
        memcpy(kv[b].k, one.k_cache, per * sizeof(float));
        memcpy(kv[b].v, one.v_cache, per * sizeof(float));
        kv[b].T = context;
        kvp[b] = &kv[b];
        dp_forward_truncate(&one, 0);
    }
    if (dp_forward_tokens(&one, prompt, context, NULL)) return 1;
    const int sizes[] = {0, 1, 2, 4, 8}; /* 0: the one-row path */
    enum { NS = 5 };
    static double ms[MAX_MODES][NS][64];
    for (int r = 0; r < rounds; r++)
        for (int mi = 0; mi < n_modes; mi++)
            for (int si = 0; si < NS; si++) {
                if (si == 0) dp_model_set_decode(m, (dp_decode_mode)modes[mi]);
                int B = sizes[si];
                if (only >= 0 && B != only) continue;
                int32_t tok[MAX_B], pos[MAX_B], cu[MAX_B + 1];
                double t0 = now();
                for (int s = 0; s < steps; s++) {
                    if (B == 0) {
                        int32_t t = (1234 + 7 * s) % 40000 + 100;
                        if (dp_forward_tokens(&one, &t, 1, NULL)) return 1;
                        continue;
                    }
                    for (int b = 0; b < B; b++) {
                        tok[b] = (1234 + 7 * s + 11 * b) % 40000 + 100;
                        pos[b] = kv[b].T;
                        cu[b] = b;
                    }
                    cu[B] = B;
                    dp_batch bt = {.N = B, .nseq = B, .tokens = tok, .pos = pos, .cu_seqlens = cu};
                    if (dp_forward_batch(&batch, kvp, &bt, logits, false))
                        return fprintf(stderr, "bench_serve_step: %s\n", dp_last_error()), 1;
                }
                ms[mi][si][r] = (now() - t0) / steps * 1e3;
            }
    printf("bench_serve_step: %s, %d threads, %d rounds of %d steps, %d cached positions a "
           "sequence; medians\n",
           path, omp_get_max_threads(), rounds, steps, context);
    qsort(prefill_ms, MAX_B, sizeof(double), cmp_double);
    printf("  prefill of %d tokens (one sequence, %d times): median %.1f ms\n", context, MAX_B,
           prefill_ms[MAX_B / 2]);
    static const char *const mode_names[] = {"fp32", "int8-head", "int8"};
    double first[NS] = {0};
    for (int mi = 0; mi < n_modes; mi++) {
        printf(" --decode %s\n", mode_names[modes[mi]]);
        double base = 0;
        for (int si = 0; si < NS; si++) {
            if (only >= 0 && sizes[si] != only) continue;
            qsort(ms[mi][si], (size_t)rounds, sizeof(double), cmp_double);
            double med = ms[mi][si][rounds / 2];
            if (si == 1) base = med;
            if (mi == 0) first[si] = med;
            char vs[48] = "";
            if (mi > 0)
                snprintf(vs, sizeof vs, ", %.2fx the speed of %s", first[si] / med,
                         mode_names[modes[0]]);
            if (sizes[si] == 0)
                printf("  1 sequence, one-row path: %6.2f ms/step, %6.1f tok/s%s\n", med, 1e3 / med,
                       vs);
            else
                printf("  %d sequence%s batched:     %6.2f ms/step, %6.1f tok/s, step / step(1) "
                       "%.2f%s\n",
                       sizes[si], sizes[si] > 1 ? "s" : " ", med, sizes[si] * 1e3 / med,
                       base > 0 ? med / base : 1.0, vs);
        }
    }
    for (int b = 0; b < MAX_B; b++) dp_kv_free(&kv[b]);
    dp_forward_free(&one);
    dp_forward_free(&batch);
    free(logits);
    dp_model_free(m);
    return 0;
}
