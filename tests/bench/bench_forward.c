/* Prefill and decode speed and peak memory of doppel's CPU forward pass (fp32 and NF4 weights),
 * side by side with llama.cpp (llama-cpp-python) on the same GGUF with the same thread count.
 * usage: bench_forward MODEL.gguf [THREADS=2] [PROMPT_TOKENS=128] [GEN_TOKENS=64]
 * Each configuration runs in a child process so peak RSS is its own; best of two runs. */
#include "data/error.h"
#include "infer/forward.h"
#include "infer/model_load.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Rates per wall-clock second, and per CPU-second of the process (all its threads): on a
 * shared, overloaded machine the second is what a dedicated core would give (1 thread). */
typedef struct {
    double prefill_tps, decode_tps, prefill_cpu_tps, decode_cpu_tps, load_s, peak_rss;
    int ok;
} result;

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void run_doppel(const char *path, bool nf4, int n_prompt, int n_gen, result *r) {
    /* NF4: quantized while loading, with the Q8 decode copy of the lm_head, as chat does */
    dp_load_opts o = {.nf4 = nf4, .quiet = true, .lm_head_q8 = nf4};
    double t0 = now();
    dp_model *m = dp_model_load(path, &o);
    if (!m) {
        fprintf(stderr, "bench: %s\n", dp_last_error());
        return;
    }
    r->load_s = now() - t0;
    int32_t *prompt = malloc((size_t)n_prompt * sizeof *prompt);
    for (int i = 0; i < n_prompt; i++) prompt[i] = (1000 + 37 * i) % 40000 + 100;
    dp_forward f;
    if (dp_forward_create(&f, m, n_prompt + n_gen + 8, 512)) {
        fprintf(stderr, "bench: %s\n", dp_last_error());
        return;
    }
    for (int rep = 0; rep < 2; rep++) {
        dp_forward_truncate(&f, 0);
        double a = now(), ca = cpu_now();
        if (dp_forward_tokens(&f, prompt, n_prompt, NULL)) break;
        double b = now(), cb = cpu_now();
        int32_t tok = 1234;
        for (int i = 0; i < n_gen; i++) {
            if (dp_forward_tokens(&f, &tok, 1, NULL)) break;
            tok = (tok * 7 + 13) % 40000 + 100;
        }
        double c = now(), cc = cpu_now();
        if (n_prompt / (b - a) > r->prefill_tps) r->prefill_tps = n_prompt / (b - a);
        if (n_gen / (c - b) > r->decode_tps) r->decode_tps = n_gen / (c - b);
        if (n_prompt / (cb - ca) > r->prefill_cpu_tps) r->prefill_cpu_tps = n_prompt / (cb - ca);
        if (n_gen / (cc - cb) > r->decode_cpu_tps) r->decode_cpu_tps = n_gen / (cc - cb);
    }
    dp_forward_free(&f);
    free(prompt);
    dp_model_free(m);
    r->ok = 1;
}

/* runs one doppel configuration in a child; peak RSS from wait4 */
static result child(const char *path, bool nf4, int n_prompt, int n_gen) {
    result r = {0};
    int fd[2];
    if (pipe(fd)) return r;
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        result cr = {0};
        run_doppel(path, nf4, n_prompt, n_gen, &cr);
        if (write(fd[1], &cr, sizeof cr) != (ssize_t)sizeof cr) _exit(1);
        _exit(0);
    }
    close(fd[1]);
    if (read(fd[0], &r, sizeof r) != (ssize_t)sizeof r) r.ok = 0;
    close(fd[0]);
    struct rusage ru;
    int st;
    wait4(pid, &st, 0, &ru);
    r.peak_rss = ru.ru_maxrss * 1024.0;
    return r;
}

static result llamacpp(const char *path, int threads, int n_prompt, int n_gen, char *version,
                       size_t vlen) {
    result r = {0};
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "python3 %s/tests/bench/llamacpp_bench.py '%s' %d %d %d",
             DOPPEL_SOURCE_DIR, path, threads, n_prompt, n_gen);
    FILE *p = popen(cmd, "r");
    if (!p) return r;
    char line[4096] = "";
    if (!fgets(line, sizeof line, p)) line[0] = 0;
    pclose(p);
    const char *e = strstr(line, "\"error\"");
    if (e) {
        fprintf(stderr, "llama.cpp: %s", line);
        return r;
    }
    const char *a = strstr(line, "\"prefill_tps\": "), *b = strstr(line, "\"decode_tps\": "),
               *c = strstr(line, "\"peak_rss\": "), *v = strstr(line, "\"version\": \""),
               *pc = strstr(line, "\"prefill_cpu_tps\": "),
               *dc = strstr(line, "\"decode_cpu_tps\": ");
    if (!a || !b || !c || !pc || !dc) return r;
    r.prefill_tps = atof(a + 15);
    r.decode_tps = atof(b + 14);
    r.prefill_cpu_tps = atof(pc + 19);
    r.decode_cpu_tps = atof(dc + 18);
    r.peak_rss = atof(c + 12);
    if (v) snprintf(version, vlen, "%.*s", (int)strcspn(v + 12, "\""), v + 12);
    r.ok = 1;
    return r;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [THREADS=2] [PROMPT_TOKENS=128] [GEN_TOKENS=64]\n",
                argv[0]);
        return 2;
    }
    const char *path = argv[1];
    int threads = argc > 2 ? atoi(argv[2]) : 2, n_prompt = argc > 3 ? atoi(argv[3]) : 128,
        n_gen = argc > 4 ? atoi(argv[4]) : 64;
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    printf("model %s, %d threads, prompt %d tokens, %d decoded tokens (best of 2)\n", path, threads,
           n_prompt, n_gen);
    fflush(stdout);
    result d32 = child(path, false, n_prompt, n_gen);
    result d4 = child(path, true, n_prompt, n_gen);
    char ver[64] = "?";
    result lc = llamacpp(path, threads, n_prompt, n_gen, ver, sizeof ver);
    printf("%-24s %14s %13s %17s %16s %13s\n", "", "prefill tok/s", "decode tok/s",
           "prefill tok/cpu-s", "decode tok/cpu-s", "peak RSS MiB");
    const char *names[] = {"doppel fp32", "doppel NF4", "llama.cpp (Q4_1 as is)"};
    result *rs[] = {&d32, &d4, &lc};
    for (int i = 0; i < 3; i++) {
        if (!rs[i]->ok)
            printf("%-24s %14s\n", names[i], "not available");
        else
            printf("%-24s %14.1f %13.1f %17.1f %16.1f %13.1f\n", names[i], rs[i]->prefill_tps,
                   rs[i]->decode_tps, rs[i]->prefill_cpu_tps, rs[i]->decode_cpu_tps,
                   rs[i]->peak_rss / 1048576.0);
    }
    if (lc.ok) {
        printf("llama-cpp-python %s\n", ver);
        for (int i = 0; i < 2; i++)
            if (rs[i]->ok)
                printf("ratio %s / llama.cpp: prefill %.2fx (per cpu-s %.2fx), decode %.2fx (per "
                       "cpu-s %.2fx), peak RSS %.2fx\n",
                       names[i], rs[i]->prefill_tps / lc.prefill_tps,
                       rs[i]->prefill_cpu_tps / lc.prefill_cpu_tps,
                       rs[i]->decode_tps / lc.decode_tps, rs[i]->decode_cpu_tps / lc.decode_cpu_tps,
                       rs[i]->peak_rss / lc.peak_rss);
    }
    return 0;
}
