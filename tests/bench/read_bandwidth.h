/* A STREAM-like read-bandwidth probe shared by bench_bandwidth and bench_forward: threads sum
 * disjoint parts of one buffer much larger than the last-level cache with wide loads, the way a
 * decode step streams its weights once. Header-only (static functions), for benchmarks only. */
#ifndef DOPPEL_BENCH_READ_BANDWIDTH_H
#define DOPPEL_BENCH_READ_BANDWIDTH_H

#include "kernels/cpu/simd.h"

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double rb_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* the sum of n floats (n % 64 == 0), four independent accumulators so loads, not adds, bound it */
#ifdef DP_X86
__attribute__((target("avx512f"))) static float rb_sum_avx512(const float *p, size_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < n; i += 64) {
        a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
        a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}
__attribute__((target("avx2"))) static float rb_sum_avx2(const float *p, size_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < n; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
        a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    float t[8];
    _mm256_storeu_ps(t, s);
    return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}
#endif
static float rb_sum_scalar(const float *p, size_t n) {
    float a[8] = {0};
    for (size_t i = 0; i < n; i += 8)
        for (int k = 0; k < 8; k++) a[k] += p[i + k];
    return a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
}

static float rb_sum(const float *p, size_t n, int simd) {
#ifdef DP_X86
    if (simd == SIMD_AVX512) return rb_sum_avx512(p, n);
    if (simd == SIMD_AVX2) return rb_sum_avx2(p, n);
#endif
    (void)simd;
    return rb_sum_scalar(p, n);
}

static int rb_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Read bandwidth in bytes/s with `threads` threads over a buffer of `bytes` (rounded down to a
 * multiple of 256 per thread): median (and best, when best != NULL) of `reps` full passes after
 * one untimed pass that faults the pages in. Returns 0 when the buffer cannot be allocated. */
static double rb_read_bandwidth(size_t bytes, int threads, int reps, double *best) {
    size_t per = bytes / (size_t)threads / 256 * 256, n = per * (size_t)threads / sizeof(float);
    float *buf = aligned_alloc(64, per * (size_t)threads);
    if (!buf || reps < 1) {
        free(buf);
        return 0;
    }
    /* values that keep the sums finite; written by the threads that will read them (first touch) */
#pragma omp parallel for num_threads(threads) schedule(static)
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 255) * (1.0f / 256);
    int simd = dp_simd_level();
    double *t = malloc((size_t)(reps + 1) * sizeof *t);
    volatile float sink = 0;
    for (int r = 0; r <= reps; r++) {
        double t0 = 0;
#pragma omp parallel num_threads(threads)
        {
#pragma omp barrier
#pragma omp single
            t0 = rb_now();
            /* the implicit barrier of single: every thread starts after t0 */
            int me = omp_get_thread_num();
            float s = rb_sum(buf + (size_t)me * (per / sizeof(float)), per / sizeof(float), simd);
#pragma omp atomic
            sink += s;
        } /* the end of the region waits for the slowest thread */
        t[r] = rb_now() - t0;
    }
    (void)sink;
    qsort(t + 1, (size_t)reps, sizeof *t, rb_cmp); /* t[0]: the untimed warm pass */
    double total = (double)per * threads;
    if (best) *best = total / t[1];
    double med = reps % 2 ? t[1 + reps / 2] : (t[reps / 2] + t[1 + reps / 2]) / 2;
    free(t);
    free(buf);
    return total / med;
}

#endif
