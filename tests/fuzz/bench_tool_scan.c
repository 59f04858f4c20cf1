/* How long the tool-call scanner takes on hostile replies, the old scanner (tool_scan_ref.h)
 * against the linear one: CPU milliseconds per reply, whole and fed in 4-byte pieces. Not built
 * by CMake; in a Release build directory (build/), linked like test_tools:
 *   cc -O2 -I.. ../tests/fuzz/bench_tool_scan.c -o bench_tool_scan -fopenmp -lstdc++ -lm \
 *      $(sed 's/"//g' CMakeFiles/test_tools.dir/linkLibs.rsp) -L/usr/local/cuda/lib64/stubs \
 *      -L/usr/local/cuda/lib64 */
#include "infer/tools.h"
#include "tests/fuzz/tool_scan_ref.h"

#include <stdio.h>
#include <time.h>

static const char *names[] = {"LOAD_FILE", "FETCH_URL"};

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); /* CPU time: the machine is shared */
    return 1e3 * (double)t.tv_sec + 1e-6 * (double)t.tv_nsec;
}

static int ignore_text(void *ctx, const char *s, size_t n) {
    (void)ctx, (void)s, (void)n;
    return 0;
}
static int count_call(void *ctx, const dp_tool_call *c) {
    (void)c;
    ++*(int *)ctx;
    return 0;
}

/* ms per reply, best of a few runs; piece 0: whole */
static double time_scan(bool ref, const char *t, size_t n, size_t piece, int *calls) {
    double best = 1e30;
    for (int rep = 0; rep < (ref && n > 4096 ? 1 : 5); rep++) {
        *calls = 0;
        dp_tool_sink sink = {ignore_text, count_call, calls};
        double t0 = now_ms();
        size_t k = piece ? piece : n;
        if (ref) {
            ref_scanner *s = ref_scanner_create(names, 2, sink);
            for (size_t i = 0; i < n; i += k) ref_scanner_feed(s, t + i, n - i < k ? n - i : k);
            ref_scanner_finish(s);
            ref_scanner_destroy(s);
        } else {
            dp_tool_scanner *s = dp_tool_scanner_create(names, 2, sink);
            for (size_t i = 0; i < n; i += k) dp_tool_scanner_feed(s, t + i, n - i < k ? n - i : k);
            dp_tool_scanner_finish(s);
            dp_tool_scanner_destroy(s);
        }
        double ms = now_ms() - t0;
        if (ms < best) best = ms;
    }
    return best;
}

int main(void) {
    const char *units[] = {"[LOAD_FILE ", "[LOAD_FILE \"", "[AA \"[BB '", "[LOAD_FILE x](",
                           "LOAD_FILE_LOAD_FILE"};
    const char *heads[] = {"", "", "", "", "["};
    size_t sizes[] = {4096, 65536};
    printf("%-22s %6s %6s %12s %12s %12s %12s\n", "reply", "KiB", "calls", "old ms", "new ms",
           "old ms (4B)", "new ms (4B)");
    for (size_t u = 0; u < sizeof units / sizeof *units; u++)
        for (size_t z = 0; z < 2; z++) {
            size_t n = sizes[z], hl = strlen(heads[u]), ul = strlen(units[u]);
            char *t = malloc(n);
            memcpy(t, heads[u], hl);
            for (size_t i = hl; i < n; i++) t[i] = units[u][(i - hl) % ul];
            int c_old, c_new, c4_old, c4_new;
            double a = time_scan(true, t, n, 0, &c_old), b = time_scan(false, t, n, 0, &c_new);
            double a4 = time_scan(true, t, n, 4, &c4_old), b4 = time_scan(false, t, n, 4, &c4_new);
            if (c_old != c_new || c4_old != c4_new || c_old != c4_old) {
                fprintf(stderr, "%s: calls differ (%d %d %d %d)\n", units[u], c_old, c_new, c4_old,
                        c4_new);
                return 1;
            }
            char label[32];
            snprintf(label, sizeof label, "%s%s...", heads[u], units[u]);
            printf("%-22s %6zu %6d %12.3f %12.3f %12.3f %12.3f\n", label, n / 1024, c_old, a, b, a4,
                   b4);
            free(t);
        }
    return 0;
}
