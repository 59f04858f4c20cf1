/* CPU attention (kernels/cpu/attention.c) against a peer built on OpenBLAS: per sequence and
 * head, S = Q K^T by sgemm, causal mask, softmax, O = P V by sgemm (the textbook formulation,
 * which materializes the T x T scores). Prints milliseconds and the ratio for a few shapes of
 * Qwen2.5-0.5B (14 heads, 2 kv heads, D = 64). Usage: bench_attention [T ...] */
#include "kernels/cpu/blas.h"
#include "kernels/ops.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* the peer: one sequence of T rows; q (T, H, D), k/v (T, KVH, D), out (T, H, D) */
static void attention_blas(float *out, const float *q, const float *k, const float *v, int T, int H,
                           int KVH, int D, float *S) {
    float scale = 1.0f / sqrtf((float)D);
    for (int h = 0; h < H; h++) {
        int kvh = h / (H / KVH);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, D, scale, q + h * D, H * D,
                    k + kvh * D, KVH * D, 0.0f, S, T);
        for (int i = 0; i < T; i++) {
            float *s = S + (size_t)i * T, mx = -INFINITY, sum = 0;
            for (int j = 0; j <= i; j++) mx = s[j] > mx ? s[j] : mx;
            for (int j = 0; j <= i; j++) sum += (s[j] = expf(s[j] - mx));
            for (int j = 0; j <= i; j++) s[j] /= sum;
            for (int j = i + 1; j < T; j++) s[j] = 0;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, D, T, 1.0f, S, T, v + kvh * D,
                    KVH * D, 0.0f, out + h * D, H * D);
    }
}

int main(int argc, char **argv) {
    dp_blas_setup(argv); /* the OpenBLAS kernel for this CPU, as doppel's commands get it */
    char blas[1024];
    dp_blas_describe(blas, sizeof blas);
    printf("BLAS: %s\n", blas);
    int Ts[8] = {256, 1024}, nT = 2;
    if (argc > 1) {
        nT = 0;
        for (int i = 1; i < argc && nT < 8; i++) Ts[nT++] = atoi(argv[i]);
    }
    const int H = 14, KVH = 2, D = 64;
    printf("attention forward, causal, one sequence, H=%d KVH=%d D=%d\n", H, KVH, D);
    printf("%8s %14s %14s %8s %16s\n", "T", "doppel ms", "sgemm peer ms", "ratio", "max |diff|");
    for (int t = 0; t < nT; t++) {
        int T = Ts[t];
        size_t nq = (size_t)T * H * D, nk = (size_t)T * KVH * D;
        float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4);
        float *o1 = malloc(nq * 4), *o2 = malloc(nq * 4), *lse = malloc((size_t)T * H * 4);
        float *S = malloc((size_t)T * T * 4);
        srand(1);
        for (size_t i = 0; i < nq; i++) q[i] = rand() / (float)RAND_MAX - 0.5f;
        for (size_t i = 0; i < nk; i++) k[i] = rand() / (float)RAND_MAX - 0.5f;
        for (size_t i = 0; i < nk; i++) v[i] = rand() / (float)RAND_MAX - 0.5f;
        int32_t cu[2] = {0, T};
        int reps = T <= 256 ? 10 : 3;
        attention_forward(o1, lse, q, k, v, cu, 1, H, KVH, D); /* warm-up */
        double t0 = now();
        for (int r = 0; r < reps; r++) attention_forward(o1, lse, q, k, v, cu, 1, H, KVH, D);
        double ta = (now() - t0) / reps;
        attention_blas(o2, q, k, v, T, H, KVH, D, S);
        t0 = now();
        for (int r = 0; r < reps; r++) attention_blas(o2, q, k, v, T, H, KVH, D, S);
        double tb = (now() - t0) / reps;
        double md = 0;
        for (size_t i = 0; i < nq; i++) md = fmax(md, fabs(o1[i] - o2[i]));
        printf("%8d %14.2f %14.2f %8.2f %16.3g\n", T, ta * 1e3, tb * 1e3, ta / tb, md);
        free(q), free(k), free(v), free(o1), free(o2), free(lse), free(S);
    }
    return 0;
}
