/* The weight products of one batched decode step, alone: SmolLM2-135M's 30 layers of NF4
 * linears (q/k/v and gate/up fused as the forward fuses them, o, down) and its 49152 x 576 Q8
 * head, on random codes, for R = 1, 2, 4, 8 input rows; the NF4 linears with the one-weight-row
 * kernel (dp_gemv_row_pairs = 0) and the row-pair one (= 1) alternating in the same process
 * (the head runs with both: two figures of the same kernel, a gauge of the noise), and the
 * int8-activation kernels (--decode int8: row pairs' driver, AVX512-VNNI; fp32 where the CPU
 * lacks it); medians over rounds. No model file needed.
 * usage: bench_serve_gemv [--rounds N=7] [--steps N=8] [--cpu-time]
 * --cpu-time: the process's CPU time instead of wall time (with OMP_NUM_THREADS=1, the kernels'
 * own cost on a machine shared with other work, which wall time would mix with waiting). */
#include "kernels/nf4.h"
#include "bench/random_nf4.h"
#include "kernels/q8.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { L = 30, C = 576, KVD = 192, F = 1536, V = 49152, MAX_R = 8, NV = 3 };

static int cpu_time;
static double now(void) {
    struct timespec ts;
    clock_gettime(cpu_time ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static uint32_t rng = 12345;
static uint32_t next(void) {
    return random_nf4_next(&rng);
}

static void fill_nf4(dp_nf4 *q, int rows, int cols) {
    random_nf4(q, rows, cols, &rng);
}

int main(int argc, char **argv) {
    int rounds = 7, steps = 8;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cpu-time"))
            cpu_time = 1;
    }
    if (rounds < 1 || rounds > 64 || steps < 1) {
        fprintf(stderr, "usage: bench_serve_gemv [--rounds N] [--steps N]\n");
        return 2;
    }
    static dp_nf4 w[L][7]; /* q k v o gate up down */
    const int rows[7] = {C, KVD, KVD, C, F, F, C}, cols[7] = {C, C, C, C, C, C, F};
    for (int l = 0; l < L; l++)
        for (int i = 0; i < 7; i++) fill_nf4(&w[l][i], rows[i], cols[i]);
    dp_q8 head = {.rows = V, .cols = C};
    head.q = malloc((size_t)V * C);
    head.d = malloc((size_t)V * C / DP_Q8_BLOCK * sizeof(float));
    float *x = malloc((size_t)MAX_R * F * sizeof(float)), *y = malloc((size_t)MAX_R * V * 4);
    float *ys[3];
    for (int i = 0; i < 3; i++) ys[i] = malloc((size_t)MAX_R * F * sizeof(float));
    if (!head.q || !head.d || !x || !y || !ys[2]) return 1;
    for (size_t i = 0; i < (size_t)V * C; i++) head.q[i] = (int8_t)(next() % 255 - 127);
    for (size_t i = 0; i < (size_t)V * C / DP_Q8_BLOCK; i++) head.d[i] = 1e-3f;
    for (int i = 0; i < MAX_R * F; i++) x[i] = (float)(next() % 2001) / 1000.0f - 1.0f;

    const int sizes[] = {1, 2, 4, 8};
    enum { NS = 4 };
    double lin[NS][NV][64], hd[NS][NV][64];
    for (int r = 0; r < rounds; r++)
        for (int si = 0; si < NS; si++)
            for (int vi = 0; vi < NV; vi++) {
                int vv = r % 2 ? NV - 1 - vi : vi; /* alternate which variant goes first */
                int R = sizes[si];
                dp_gemv_row_pairs = vv > 0;
                void (*gemv)(int, float *const *, const dp_nf4 *const *, const float *const *,
                             const float *, int, int) =
                    vv == 2 ? gemv_nf4_rows_multi_i8 : gemv_nf4_rows_multi;
                double t0 = now();
                for (int s = 0; s < steps; s++)
                    for (int l = 0; l < L; l++) {
                        const dp_nf4 *qkv[3] = {&w[l][0], &w[l][1], &w[l][2]};
                        const dp_nf4 *gu[2] = {&w[l][4], &w[l][5]}, *o = &w[l][3], *dn = &w[l][6];
                        const float *nb[3] = {0};
                        gemv(3, ys, qkv, nb, x, R, C);
                        gemv(1, ys, &o, nb, x, R, C);
                        gemv(2, ys, gu, nb, x, R, C);
                        gemv(1, ys, &dn, nb, x, R, F);
                    }
                double t1 = now();
                for (int s = 0; s < steps; s++)
                    if (vv == 2)
                        gemv_q8_rows_i8(y, x, &head, NULL, R, C, V);
                    else
                        gemv_q8_rows(y, x, &head, NULL, R, C, V);
                double t2 = now();
                lin[si][vv][r] = (t1 - t0) / steps * 1e3;
                hd[si][vv][r] = (t2 - t1) / steps * 1e3;
            }
    printf("bench_serve_gemv: SmolLM2-135M shapes (30 layers NF4 + Q8 head), %d threads, %d "
           "rounds of %d steps, medians (%s ms per step); NF4: one weight row vs row pairs vs int8 "
           "activations (%s)\n",
           omp_get_max_threads(), rounds, steps, cpu_time ? "CPU" : "wall",
           dp_gemv_i8_supported() ? "AVX512-VNNI" : "not on this CPU: fp32 again");
    for (int si = 0; si < NS; si++) {
        double m[NV][2];
        for (int vi = 0; vi < NV; vi++) {
            qsort(lin[si][vi], (size_t)rounds, sizeof(double), cmp_double);
            qsort(hd[si][vi], (size_t)rounds, sizeof(double), cmp_double);
            m[vi][0] = lin[si][vi][rounds / 2], m[vi][1] = hd[si][vi][rounds / 2];
        }
        printf("  R=%d  linears %6.2f -> %6.2f (x%.2f), int8 %6.2f (x%.2f of pairs)   head %6.2f / "
               "%6.2f, int8 %6.2f (x%.2f)\n",
               sizes[si], m[0][0], m[1][0], m[0][0] / m[1][0], m[2][0], m[1][0] / m[2][0], m[0][1],
               m[1][1], m[2][1], m[1][1] / m[2][1]);
    }
    return 0;
}
