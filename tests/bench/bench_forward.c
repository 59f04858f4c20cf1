/* Prefill and decode speed and peak memory of doppel's CPU forward pass (NF4 weights, Q8 decode
 * lm_head, as `doppel chat` runs) side by side with llama.cpp (llama-cpp-python) on the same
 * GGUF with the same thread count, for each model given. Repetitions alternate doppel and
 * llama.cpp runs, each in its own process (so peak RSS is its own), and the table shows medians;
 * quote ratios from one run, the machine may be shared.
 * usage: bench_forward [--threads N=2] [--prompt N=128] [--gen N=64] [--reps N=3] [--fp32]
 *                      [--int8] MODEL.gguf...
 * NF4: each model is quantized once into ~/.cache/doppel/bench/ (the measured runs load that
 * file, as chat does after `doppel quantize`); --fp32 adds doppel's fp32 path, --int8 its decode
 * with int8 activations (--decode int8: AVX512-VNNI, as llama.cpp rounds them). */
#include "bench/read_bandwidth.h"
#include "kernels/cpu/blas.h"
#include "kernels/cpu/simd.h"
#include "data/base/error.h"
#include "infer/forward.h"
#include "infer/model_load.h"

#include <cblas.h>
#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_REPS 15

typedef struct {
    double prefill_tps, decode_tps, prefill_cpu_tps, decode_cpu_tps, peak_rss, weights;
    /* bytes one decode step reads: the weights it streams (all linears, the head, norms, one
     * embedding row) and the KV cache per cached position (k and v of every layer) */
    double step_bytes, kv_bytes_per_pos;
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

static double linear_bytes(const dp_linear *lin) {
    double b = lin->bias ? lin->out * 4.0 : 0;
    if (lin->q8) return b + (double)dp_q8_bytes(lin->q8); /* decode takes the compact copy */
    if (lin->nf4) return b + (double)dp_nf4_bytes(lin->nf4);
    return b + (double)lin->out * lin->in * 4.0;
}

/* what one decode step of m reads (result.step_bytes, kv_bytes_per_pos) */
static void decode_bytes(const dp_model *m, result *r) {
    const dp_model_config *c = &m->cfg;
    double b = c->C * 4.0 * 3; /* one embedding row, the final norm, the residual */
    for (int l = 0; l < c->L; l++) {
        const dp_layer *ly = &m->layers[l];
        for (int i = 0; i < DP_N_LINEAR; i++) b += linear_bytes(&ly->lin[i]);
        b += c->C * 4.0 * 2 + (ly->q_norm ? c->D * 4.0 * 2 : 0);
    }
    b += linear_bytes(&m->lm_head);
    r->step_bytes = b;
    r->kv_bytes_per_pos = (double)c->L * 2 * c->KVH * c->D * 4; /* fp32 k and v */
}

/* one measured run: load, warm up, prefill n_prompt tokens, decode n_gen */
static void run_doppel(const char *path, const char *nf4_file, int n_prompt, int n_gen, bool i8,
                       result *r) {
    dp_load_opts o = {.nf4 = nf4_file != NULL,
                      .nf4_file = nf4_file,
                      .quiet = true,
                      .lm_head_q8 = nf4_file != NULL,
                      .decode = i8 ? DP_DECODE_INT8 : DP_DECODE_FP32};
    dp_model *m = dp_model_load(path, &o);
    if (!m) {
        fprintf(stderr, "bench: %s\n", dp_last_error());
        return;
    }
    r->weights = (double)dp_model_weight_bytes(m);
    decode_bytes(m, r);
    int32_t *prompt = malloc((size_t)n_prompt * sizeof *prompt);
    for (int i = 0; i < n_prompt; i++) prompt[i] = (1000 + 37 * i) % 40000 + 100;
    dp_forward f;
    if (dp_forward_create(&f, m, n_prompt + n_gen + 8, 512)) {
        fprintf(stderr, "bench: %s\n", dp_last_error());
        return;
    }
    int32_t tok = 1234;
    if (dp_forward_tokens(&f, prompt, n_prompt < 8 ? n_prompt : 8, NULL) || /* warm-up */
        dp_forward_tokens(&f, &tok, 1, NULL))
        return;
    dp_forward_truncate(&f, 0);
    double a = now(), ca = cpu_now();
    if (dp_forward_tokens(&f, prompt, n_prompt, NULL)) return;
    double b = now(), cb = cpu_now();
    for (int i = 0; i < n_gen; i++) {
        if (dp_forward_tokens(&f, &tok, 1, NULL)) return;
        tok = (tok * 7 + 13) % 40000 + 100;
    }
    double c = now(), cc = cpu_now();
    r->prefill_tps = n_prompt / (b - a);
    r->decode_tps = n_gen / (c - b);
    r->prefill_cpu_tps = n_prompt / (cb - ca);
    r->decode_cpu_tps = n_gen / (cc - cb);
    dp_forward_free(&f);
    free(prompt);
    dp_model_free(m);
    r->ok = 1;
}

/* runs one doppel configuration in a child; peak RSS from wait4 */
static result child(const char *path, const char *nf4_file, int n_prompt, int n_gen, bool i8) {
    result r = {0};
    int fd[2];
    if (pipe(fd)) return r;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        result cr = {0};
        run_doppel(path, nf4_file, n_prompt, n_gen, i8, &cr);
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

/* the read bandwidth at `threads` threads, measured in a child: an OpenMP team in this process
 * would not survive the fork of the next doppel child (libgomp is not fork-safe) */
static double bandwidth_child(int threads, double *best) {
    int fd[2];
    double bw[2] = {0, 0};
    *best = 0;
    if (pipe(fd)) return 0;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        double b[2];
        b[0] = rb_read_bandwidth((size_t)512 << 20, threads, 5, &b[1]);
        if (write(fd[1], b, sizeof b) != (ssize_t)sizeof b) _exit(1);
        _exit(0);
    }
    close(fd[1]);
    if (read(fd[0], bw, sizeof bw) != (ssize_t)sizeof bw) bw[0] = bw[1] = 0;
    close(fd[0]);
    waitpid(pid, NULL, 0);
    *best = bw[1];
    return bw[0];
}

/* quantizes the model once into the bench cache (in a child: its memory is not the runs') */
static int make_nf4(const char *path, char *out, size_t cap) {
    const char *home = getenv("HOME");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/.cache/doppel/bench", home ? home : "/tmp");
    mkdir(dir, 0755); /* parent ~/.cache/doppel exists when the models live there */
    const char *base = strrchr(path, '/');
    if (snprintf(out, cap, "%s/%s.nf4.safetensors", dir, base ? base + 1 : path) >= (int)cap)
        return -1;
    struct stat sb, sm;
    if (stat(out, &sb) == 0 && stat(path, &sm) == 0 && sb.st_mtime >= sm.st_mtime) {
        /* reused only when the loader accepts it (it records which weights it came from) */
        pid_t pid = fork();
        if (pid == 0) {
            dp_load_opts o = {.nf4 = true, .nf4_file = out, .quiet = true};
            dp_model *m = dp_model_load(path, &o);
            _exit(m ? 0 : 1);
        }
        int st;
        waitpid(pid, &st, 0);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 0;
        printf("the cached %s does not match %s\n", out, path);
    }
    printf("quantizing %s to NF4 once: %s\n", path, out);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dp_load_opts o = {.nf4 = true, .nf4_fresh = true, .quiet = true};
        dp_model *m = dp_model_load(path, &o);
        int rc = m ? dp_model_save_nf4(m, out) : -1;
        if (rc) fprintf(stderr, "bench: %s\n", dp_last_error());
        _exit(rc ? 1 : 0);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static result llamacpp(const char *path, int threads, int n_prompt, int n_gen, char *version,
                       size_t vlen) {
    result r = {0};
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "python3 %s/tests/bench/llamacpp_bench.py '%s' %d %d %d",
             DOPPEL_SOURCE_DIR, path, threads, n_prompt, n_gen);
    fflush(stdout);
    FILE *p = popen(cmd, "r");
    if (!p) return r;
    char line[4096] = "";
    if (!fgets(line, sizeof line, p)) line[0] = 0;
    pclose(p);
    const char *sb = strstr(line, "\"step_bytes\": "), *kb = strstr(line, "\"kv_bytes_per_pos\": ");
    if (sb && kb) { /* absent when the gguf package is not importable */
        r.step_bytes = atof(sb + 14);
        r.kv_bytes_per_pos = atof(kb + 20);
    }
    if (strstr(line, "\"error\"")) { /* not ok, but its bytes per token may be known */
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

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* the median of each field over the successful runs */
static result median(const result *rs, int n) {
    result m = {0};
    double v[MAX_REPS];
    size_t off[] = {offsetof(result, prefill_tps),     offsetof(result, decode_tps),
                    offsetof(result, prefill_cpu_tps), offsetof(result, decode_cpu_tps),
                    offsetof(result, peak_rss),        offsetof(result, weights),
                    offsetof(result, step_bytes),      offsetof(result, kv_bytes_per_pos)};
    for (size_t f = 0; f < sizeof off / sizeof off[0]; f++) {
        int k = 0;
        for (int i = 0; i < n; i++)
            if (rs[i].ok) v[k++] = *(const double *)((const char *)&rs[i] + off[f]);
        if (!k) return m;
        qsort(v, (size_t)k, sizeof v[0], cmp_double);
        *(double *)((char *)&m + off[f]) = k % 2 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2;
        m.ok = k;
    }
    return m;
}

static void row(const char *name, const result *r) {
    if (!r->ok) {
        printf("  %-22s %13s\n", name, "not available");
        return;
    }
    printf("  %-22s %13.1f %12.1f %17.1f %16.1f %13.1f", name, r->prefill_tps, r->decode_tps,
           r->prefill_cpu_tps, r->decode_cpu_tps, r->peak_rss / 1048576.0);
    if (r->weights > 0) printf("   (weights %.1f MiB)", r->weights / 1048576.0);
    printf("\n");
}

/* how close decode comes to the memory-bandwidth limit: bytes read per token at the mean
 * decoded position / read bandwidth (measured in this run) vs the measured time per token */
static void bandwidth_row(const char *name, const result *r, double mean_pos, double bw) {
    if (r->step_bytes <= 0 || bw <= 0) {
        printf("  %-22s %13s\n", name, "bytes per token unknown");
        return;
    }
    double bytes = r->step_bytes + r->kv_bytes_per_pos * mean_pos, floor_ms = bytes / bw * 1e3;
    if (!r->ok || r->decode_tps <= 0) {
        printf("  %-22s %9.1f MiB/token (KV %5.1f) %9.2f ms   (speed not measured)\n", name,
               bytes / 1048576.0, r->kv_bytes_per_pos * mean_pos / 1048576.0, floor_ms);
        return;
    }
    double ms = 1e3 / r->decode_tps;
    printf("  %-22s %9.1f MiB/token (KV %5.1f) %9.2f ms %9.2f ms %8.0f%% %9.2f GB/s\n", name,
           bytes / 1048576.0, r->kv_bytes_per_pos * mean_pos / 1048576.0, floor_ms, ms,
           100 * floor_ms / ms, bytes / ms * 1e3 / 1e9);
}

static void ratio(const char *name, const result *d, const result *l) {
    if (d->ok && l->ok)
        printf("  ratio %s / llama.cpp: prefill %.2fx (per cpu-s %.2fx), decode %.2fx (per cpu-s "
               "%.2fx), peak RSS %.2fx\n",
               name, d->prefill_tps / l->prefill_tps, d->prefill_cpu_tps / l->prefill_cpu_tps,
               d->decode_tps / l->decode_tps, d->decode_cpu_tps / l->decode_cpu_tps,
               d->peak_rss / l->peak_rss);
}

int main(int argc, char **argv) {
    dp_blas_setup(argv); /* the OpenBLAS kernel for this CPU, as doppel's commands get it */
    char blas[1024];
    dp_blas_describe(blas, sizeof blas);
    printf("BLAS: %s\n", blas);
    int simd = dp_simd_level();
    printf("decode kernels: NF4 GEMV %s%s, Q8 head %s, cached attention %s (%s); prefill: "
           "NF4 tiles dequantized for the BLAS above\n",
           dp_simd_name(simd), simd == SIMD_AVX512 ? " (two rows per pass)" : "",
           dp_simd_name(simd), simd == SIMD_AVX512 ? "avx512" : "avx2/baseline clone",
           simd == SIMD_AVX512 ? "head size 64 or 128; up to 3 heads per kv head" : "any head size");
    printf("int8-activation decode (--int8): %s\n",
           dp_gemv_i8_supported() ? "AVX512-VNNI vpdpbusd" : "not on this CPU (runs fp32)");
    int threads = 2, n_prompt = 128, n_gen = 64, reps = 3, fp32 = 0, int8 = 0, first = 1;
    for (; first < argc && argv[first][0] == '-'; first++) {
        const char *a = argv[first];
        int *dst = !strcmp(a, "--threads")  ? &threads
                   : !strcmp(a, "--prompt") ? &n_prompt
                   : !strcmp(a, "--gen")    ? &n_gen
                   : !strcmp(a, "--reps")   ? &reps
                                            : NULL;
        if (!strcmp(a, "--fp32")) {
            fp32 = 1;
        } else if (!strcmp(a, "--int8")) {
            int8 = 1;
        } else if (dst && first + 1 < argc) {
            *dst = atoi(argv[++first]);
        } else {
            fprintf(stderr, "bench_forward: unknown option %s\n", a);
            return 2;
        }
    }
    if (first >= argc || threads < 1 || n_prompt < 1 || n_gen < 1 || reps < 1 || reps > MAX_REPS) {
        fprintf(stderr,
                "usage: %s [--threads N=2] [--prompt N=128] [--gen N=64] [--reps N=3 (<= %d)] "
                "[--fp32] [--int8] MODEL.gguf...\n",
                argv[0], MAX_REPS);
        return 2;
    }
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    char ver[64] = "?";
    for (int mi = first; mi < argc; mi++) {
        const char *path = argv[mi];
        char nf4[4096];
        if (make_nf4(path, nf4, sizeof nf4)) {
            fprintf(stderr, "bench: cannot quantize %s; skipped\n", path);
            continue;
        }
        printf("\nmodel %s\n  %d threads each, prompt %d tokens, %d decoded tokens, median of %d "
               "alternating runs\n",
               path, threads, n_prompt, n_gen, reps);
        result d4[MAX_REPS], d32[MAX_REPS], d8[MAX_REPS], lc[MAX_REPS];
        double bw[MAX_REPS], best_bw = 0;
        for (int r = 0; r < reps; r++) {
            /* the read bandwidth at this thread count, between the runs, as loaded as they are */
            double b = 0;
            bw[r] = bandwidth_child(threads, &b);
            best_bw = b > best_bw ? b : best_bw;
            d4[r] = child(path, nf4, n_prompt, n_gen, false);
            lc[r] = llamacpp(path, threads, n_prompt, n_gen, ver, sizeof ver);
            d32[r] = fp32 ? child(path, NULL, n_prompt, n_gen, false) : (result){0};
            d8[r] = int8 ? child(path, nf4, n_prompt, n_gen, true) : (result){0};
            printf("  run %d: decode tok/s doppel %.1f, llama.cpp %.1f", r + 1, d4[r].decode_tps,
                   lc[r].decode_tps);
            if (int8) printf(", doppel int8 activations %.1f", d8[r].decode_tps);
            printf("\n");
        }
        result m4 = median(d4, reps), ml = median(lc, reps), m32 = median(d32, reps),
               m8 = median(d8, reps);
        if (!ml.ok && reps > 0) /* llama.cpp did not run: its bytes per token from the GGUF */
            ml.step_bytes = lc[0].step_bytes, ml.kv_bytes_per_pos = lc[0].kv_bytes_per_pos;
        printf("  %-22s %13s %12s %17s %16s %13s\n", "", "prefill tok/s", "decode tok/s",
               "prefill tok/cpu-s", "decode tok/cpu-s", "peak RSS MiB");
        row("doppel NF4 (Q8 head)", &m4);
        if (int8) row("doppel NF4 int8 act", &m8);
        if (fp32) row("doppel fp32", &m32);
        row("llama.cpp (file as is)", &ml);
        ratio("doppel NF4", &m4, &ml);
        if (int8) ratio("doppel NF4 int8 act", &m8, &ml);
        if (fp32) ratio("doppel fp32", &m32, &ml);
        qsort(bw, (size_t)reps, sizeof bw[0], cmp_double);
        double mbw = reps % 2 ? bw[reps / 2] : (bw[reps / 2 - 1] + bw[reps / 2]) / 2,
               mean_pos = n_prompt + (n_gen - 1) / 2.0;
        printf("  bandwidth limit: read bandwidth %.2f GB/s at %d threads (bench_bandwidth's "
               "probe, 512 MiB, median between the runs; best pass %.2f GB/s); position %.1f on "
               "average\n",
               mbw / 1e9, threads, best_bw / 1e9, mean_pos);
        printf("  %-22s %13s %17s %12s %12s %9s %14s\n", "", "read/token", "", "limit/token",
               "measured", "of limit", "achieved");
        bandwidth_row("doppel NF4 (Q8 head)", &m4, mean_pos, mbw);
        if (int8) bandwidth_row("doppel NF4 int8 act", &m8, mean_pos, mbw);
        if (fp32) bandwidth_row("doppel fp32", &m32, mean_pos, mbw);
        bandwidth_row("llama.cpp (file as is)", &ml, mean_pos, mbw);
        printf("  at the best pass's bandwidth:\n");
        bandwidth_row("doppel NF4 (Q8 head)", &m4, mean_pos, best_bw);
        bandwidth_row("llama.cpp (file as is)", &ml, mean_pos, best_bw);
    }
    printf("\nllama-cpp-python %s (its peak RSS includes the Python interpreter)\n", ver);
    return 0;
}
