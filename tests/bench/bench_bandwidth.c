/* Memory read bandwidth of this machine at 1 and 2 threads (STREAM-like: sums over a buffer far
 * larger than the last-level cache), the ceiling a decode step that streams its weights can reach.
 * bench_forward measures the same in its own run and divides bytes read per token by it.
 * usage: bench_bandwidth [--mib N=1024] [--reps N=9] [--threads N=2 (measures 1..N)] */
#include "bench/read_bandwidth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    int mib = 1024, reps = 9, max_threads = 2;
    for (int i = 1; i < argc; i++) {
        int *dst = !strcmp(argv[i], "--mib")       ? &mib
                   : !strcmp(argv[i], "--reps")    ? &reps
                   : !strcmp(argv[i], "--threads") ? &max_threads
                                                   : NULL;
        if (!dst || i + 1 >= argc || (*dst = atoi(argv[++i])) < 1) {
            fprintf(stderr, "usage: %s [--mib N=1024] [--reps N=9] [--threads N=2]\n", argv[0]);
            return 2;
        }
    }
    printf("read bandwidth: %d MiB buffer (last-level cache: see lscpu), %s loads, median and best "
           "of %d passes\n",
           mib, dp_simd_name(dp_simd_level()), reps);
    printf("%8s %14s %12s\n", "threads", "median GB/s", "best GB/s");
    for (int t = 1; t <= max_threads; t++) {
        double best = 0, med = rb_read_bandwidth((size_t)mib << 20, t, reps, &best);
        if (med <= 0) {
            fprintf(stderr, "bench_bandwidth: cannot allocate %d MiB; pass a smaller --mib\n", mib);
            return 1;
        }
        printf("%8d %14.2f %12.2f\n", t, med / 1e9, best / 1e9);
    }
    return 0;
}
