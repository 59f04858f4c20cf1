/* The bf16 GEMM over NF4 weights (kernels/cpu/gemm_bf16.c) beside OpenBLAS sgemm on the same
 * dequantized weight, at the training step's shapes (SmolLM2-135M: N = 256 tokens, C = 576,
 * OC = 576 / 1536 / 192, forward x W^T and input gradient dout W), 1 and 2 threads split over the
 * rows as the training step splits them (each thread its share, the library single-threaded).
 * Prints GFLOP/s (medians) and the ratio; then the weight preparation (NF4 -> fp32 rows vs NF4 ->
 * bf16 panels). Usage: bench_gemm_bf16 [reps] */
#include "kernels/cpu/blas.h"
#include "kernels/nf4.h"
#include "kernels/ops.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(double *t, int n) {
    qsort(t, n, sizeof *t, cmp_d);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

typedef struct {
    int N, K, NO; /* out (N, NO) = a (N, K) . W, summed over K */
    bool nn;      /* input gradient: W (K, NO) as stored (OC = K rows); else W (NO, K) */
} shape;

/* rows [n0, n1) of thread t of nt, whole 12-row strips */
static void rows_of(int N, int t, int nt, int *n0, int *n1) {
    int s = (N + 11) / 12;
    *n0 = s * t / nt * 12, *n1 = s * (t + 1) / nt * 12;
    if (*n0 > N) *n0 = N;
    if (*n1 > N) *n1 = N;
}

int main(int argc, char **argv) {
    dp_blas_setup(argv);
    char blas[1024];
    dp_blas_describe(blas, sizeof blas);
    printf("BLAS: %s\n", blas);
    printf("bf16 kernel: %s\n", dp_bf16_kernel_name() ? dp_bf16_kernel_name()
                                                      : "NONE (scalar loop; figures meaningless)");
    int reps = argc > 1 ? atoi(argv[1]) : 21;
    if (reps < 3) reps = 3;
    openblas_set_num_threads(1);
    const int N = 256;
    shape shapes[] = {{N, 576, 576, false},  {N, 576, 1536, false}, {N, 576, 192, false},
                      {N, 1536, 576, false}, {N, 576, 576, true},   {N, 1536, 576, true},
                      {N, 192, 576, true},   {N, 576, 1536, true}};
    int nshapes = sizeof shapes / sizeof *shapes;
    double *ts = malloc(reps * sizeof(double)), *tb = malloc(reps * sizeof(double));
    double sum_s[3] = {0}, sum_b[3] = {0};
    printf("GEMM only (weight already fp32 / packed bf16), medians of %d, machine shared\n", reps);
    printf("%-7s %-22s %3s %12s %12s %7s\n", "op", "N x K -> NO", "thr", "sgemm GF/s", "bf16 GF/s",
           "ratio");
    for (int threads = 1; threads <= 2; threads++) {
        for (int si = 0; si < nshapes; si++) {
            shape s = shapes[si];
            int OC = s.nn ? s.K : s.NO, C = s.nn ? s.NO : s.K; /* W (OC, C) */
            float *w = malloc((size_t)OC * C * 4), *a = malloc((size_t)N * s.K * 4);
            float *o1 = calloc((size_t)N * s.NO, 4), *o2 = calloc((size_t)N * s.NO, 4);
            srand(1);
            for (size_t i = 0; i < (size_t)OC * C; i++) w[i] = rand() / (float)RAND_MAX - 0.5f;
            for (size_t i = 0; i < (size_t)N * s.K; i++) a[i] = rand() / (float)RAND_MAX - 0.5f;
            uint16_t *wp = malloc(dp_bf16_panel_size(s.K, s.NO) * 2);
            uint16_t *ab = malloc((size_t)N * ((s.K + 1) & ~1) * 2);
            if (s.nn)
                dp_bf16_pack_nn(wp, w, OC, C, 0, OC);
            else
                dp_bf16_pack_nt(wp, w, OC, C, 0, OC);
            int Kp = (s.K + 1) & ~1;
            for (int r = 0; r < reps; r++) {
                double t0 = now();
#pragma omp parallel num_threads(threads)
                {
                    int n0, n1;
                    rows_of(N, omp_get_thread_num(), threads, &n0, &n1);
                    if (s.nn)
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n1 - n0, s.NO, s.K,
                                    1.0f, a + (size_t)n0 * s.K, s.K, w, C, 1.0f,
                                    o1 + (size_t)n0 * s.NO, s.NO);
                    else
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n1 - n0, s.NO, s.K,
                                    1.0f, a + (size_t)n0 * s.K, s.K, w, C, 0.0f,
                                    o1 + (size_t)n0 * s.NO, s.NO);
                }
                double t1 = now();
#pragma omp parallel num_threads(threads)
                {
                    int n0, n1;
                    rows_of(N, omp_get_thread_num(), threads, &n0, &n1);
                    /* the activations' rounding is part of each GEMM */
                    dp_bf16_round(ab + (size_t)n0 * Kp, a + (size_t)n0 * s.K, n1 - n0, s.K);
                    gemm_bf16_packed(o2 + (size_t)n0 * s.NO, s.NO, ab + (size_t)n0 * Kp, wp,
                                     n1 - n0, s.K, s.NO, s.nn);
                }
                double t2 = now();
                ts[r] = t1 - t0, tb[r] = t2 - t1;
            }
            double gf = 2.0 * N * s.K * s.NO * 1e-9, ms = median(ts, reps), mb = median(tb, reps);
            char sh[32];
            snprintf(sh, sizeof sh, "%d x %d -> %d", N, s.K, s.NO);
            printf("%-7s %-22s %3d %12.1f %12.1f %6.2fx\n", s.nn ? "dinp" : "fwd", sh, threads,
                   gf / ms, gf / mb, ms / mb);
            sum_s[threads] += ms, sum_b[threads] += mb;
            free(w), free(a), free(o1), free(o2), free(wp), free(ab);
        }
        printf("%-30s %3d %12s %12s %6.2fx (time of all eight shapes)\n", "all", threads, "", "",
               sum_s[threads] / sum_b[threads]);
    }

    /* weight preparation, one thread: the step dequantizes each layer's weights before its GEMMs */
    printf("\nweight preparation, 1 thread, medians of %d: NF4 -> fp32 rows vs NF4 -> bf16 panels\n",
           reps);
    printf("%-16s %14s %14s %14s\n", "W (OC, C)", "fp32 rows ms", "bf16 nt ms", "bf16 nn ms");
    int ws[][2] = {{576, 576}, {1536, 576}, {192, 576}, {576, 1536}};
    for (int i = 0; i < 4; i++) {
        int OC = ws[i][0], C = ws[i][1];
        float *w = malloc((size_t)OC * C * 4), *dq = malloc((size_t)OC * C * 4);
        for (size_t j = 0; j < (size_t)OC * C; j++) w[j] = rand() / (float)RAND_MAX - 0.5f;
        dp_nf4 q;
        if (dp_nf4_quantize(&q, w, OC, C, 64)) return 1;
        uint16_t *wp = malloc(dp_bf16_panel_size(C, OC) * 2 + dp_bf16_panel_size(OC, C) * 2);
        double *tn = malloc(reps * sizeof(double));
        for (int r = 0; r < reps; r++) {
            double t0 = now();
            dp_nf4_dequantize(&q, dq);
            double t1 = now();
            dp_nf4_pack_bf16_nt(wp, &q, 0, OC);
            double t2 = now();
            dp_nf4_pack_bf16_nn(wp, &q, 0, OC);
            double t3 = now();
            ts[r] = t1 - t0, tb[r] = t2 - t1, tn[r] = t3 - t2;
        }
        char sh[32];
        snprintf(sh, sizeof sh, "(%d, %d)", OC, C);
        printf("%-16s %14.3f %14.3f %14.3f\n", sh, 1e3 * median(ts, reps), 1e3 * median(tb, reps),
               1e3 * median(tn, reps));
        free(w), free(dq), free(wp), free(tn);
        dp_nf4_free(&q);
    }
    free(ts), free(tb);
    return 0;
}
