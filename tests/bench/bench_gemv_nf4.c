/* Single-token linear layers: doppel's fused NF4 GEMV against OpenBLAS's fp32 sgemv over the
 * same (dequantized) matrix, for SmolLM2-135M and Qwen2.5-0.5B shapes. Prints the fastest of
 * the iterations (the machine may be shared), effective weight bandwidth and the ratio.
 * Usage: bench_gemv_nf4 [iterations]; DOPPEL_SIMD=scalar|avx2 picks a narrower path. */
#include "kernels/cpu/blas.h"
#include "kernels/nf4.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    dp_blas_setup(argv); /* the OpenBLAS kernel for this CPU, as doppel's commands get it */
    char blas[1024];
    dp_blas_describe(blas, sizeof blas);
    printf("BLAS: %s\n", blas);
    int iters = argc > 1 ? atoi(argv[1]) : 50;
    const struct {
        const char *name;
        int C, OC;
    } shapes[] = {{"smollm2 q/o (576x576)", 576, 576},
                  {"smollm2 gate (1536x576)", 576, 1536},
                  {"smollm2 down (576x1536)", 1536, 576},
                  {"qwen0.5b gate (4864x896)", 896, 4864},
                  {"qwen0.5b down (896x4864)", 4864, 896}};
    printf("threads: OpenMP %d, OpenBLAS %d; %d iterations\n", omp_get_max_threads(),
           openblas_get_num_threads(), iters);
    printf("%-26s %12s %12s %10s %10s %7s\n", "shape", "nf4 us", "sgemv us", "nf4 GB/s", "f32 GB/s",
           "ratio");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int C = shapes[s].C, OC = shapes[s].OC;
        float *w = malloc((size_t)C * OC * 4), *x = malloc((size_t)C * 4),
              *y = malloc((size_t)OC * 4);
        srand(1);
        for (size_t i = 0; i < (size_t)C * OC; i++) w[i] = rand() / (float)RAND_MAX - 0.5f;
        for (int i = 0; i < C; i++) x[i] = rand() / (float)RAND_MAX - 0.5f;
        dp_nf4 q;
        dp_nf4_quantize(&q, w, OC, C, 64);
        dp_nf4_dequantize(&q, w);
        gemv_nf4(y, x, &q, NULL, C, OC);
        double tn = 1e9, tf = 1e9;
        cblas_sgemv(CblasRowMajor, CblasNoTrans, OC, C, 1.0f, w, C, x, 1, 0.0f, y, 1);
        for (int i = 0; i < iters; i++) {
            double t0 = now();
            gemv_nf4(y, x, &q, NULL, C, OC);
            double t1 = now();
            cblas_sgemv(CblasRowMajor, CblasNoTrans, OC, C, 1.0f, w, C, x, 1, 0.0f, y, 1);
            double t2 = now();
            if (t1 - t0 < tn) tn = t1 - t0;
            if (t2 - t1 < tf) tf = t2 - t1;
        }
        printf("%-26s %12.1f %12.1f %10.2f %10.2f %6.2fx\n", shapes[s].name, tn * 1e6, tf * 1e6,
               dp_nf4_bytes(&q) / tn / 1e9, (double)C * OC * 4 / tf / 1e9, tf / tn);
        dp_nf4_free(&q);
        free(w), free(x), free(y);
    }
    return 0;
}
