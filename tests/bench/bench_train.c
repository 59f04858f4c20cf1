/* Training speed and memory: doppel's LoRA step (forward + backward + AdamW) on SmolLM2-135M
 * (fp32 base and NF4 base, the NF4 base's products in fp32 or bf16), side by side with transformers + PEFT on the CPU (fp32, same batch,
 * same threads, tests/bench/bench_train_peft.py), with the ratio. Each configuration runs in
 * its own process so peak RSS is its own. tokens/s is from the median step time; each doppel
 * configuration also prints where its time went (dp_grad_ws_times), per step.
 * usage: bench_train [MODEL.gguf|HF_DIR] [--seq 256] [--r 16] [--steps 3] [--no-peer]
 *                    [--only fp32|nf4|bf16] [--no-recompute-row]
 * MODEL defaults to the SmolLM2 GGUF that .ci/fetch-smollm2 caches. */
#include "kernels/cpu/blas.h"
#include "kernels/ops.h"
#include "data/base/error.h"
#include "infer/model_load.h"
#include "train/model_grad.h"
#include "train/optim.h"
#include "data/base/rng.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
    double tok_s, rss_mib, loss0;
    dp_grad_times t; /* per timed step */
    int ok;
} result;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One configuration in this (child) process. */
static result run_doppel(const char *path, bool nf4, bool bf16, bool recompute, int seq, int r,
                         int steps) {
    result res = {0};
    dp_load_opts lo = {.nf4 = nf4, .quiet = true};
    dp_model *m = dp_model_load(path, &lo);
    if (!m) {
        fprintf(stderr, "bench_train: %s\n", dp_last_error());
        return res;
    }
    dp_lora_config lc = {.r = r, .alpha = 2.0f * r, .targets = DP_LORA_ALL_TARGETS};
    dp_lora *lora = dp_lora_create(&m->cfg, &lc);
    dp_lora_init(lora, 1);
    /* PEFT's init (B = 0) as the peer has, so the first losses must agree: a check that both
     * run the same model; the LoRA path costs the same whatever B holds */
    int32_t *tok = malloc(sizeof(int32_t) * seq), *tgt = malloc(sizeof(int32_t) * seq),
            *pos = malloc(sizeof(int32_t) * seq), cu[2] = {0, seq};
    for (int i = 0; i < seq; i++) {
        tok[i] = (int32_t)(dp_rng_bits(5, 0, (uint64_t)i) % 49152);
        pos[i] = i;
    }
    for (int i = 0; i < seq; i++) tgt[i] = i + 1 < seq ? tok[i + 1] : -1;
    dp_batch b = {.N = seq, .nseq = 1, .tokens = tok, .targets = tgt, .pos = pos, .cu_seqlens = cu};
    dp_grad_ws *ws = dp_grad_ws_create(m, lora, seq, recompute, 0);
    if (!ws || (bf16 && (dp_grad_ws_set_bf16(ws, m, true) || !dp_grad_ws_bf16(ws)))) {
        fprintf(stderr, "bench_train: no bf16 products here (AVX512_BF16 needed)\n");
        return res;
    }
    float *mm = calloc(lora->n, sizeof(float)), *vv = calloc(lora->n, sizeof(float));
    dp_adamw_config ac = {0.9f, 0.999f, 1e-8f, 0.0f, 1.0f};
    double *dt = calloc((size_t)steps + 1, sizeof(double));
    dp_grad_times w0 = {0};
    for (int s = 0; s <= steps; s++) { /* step 0 warms up */
        if (s == 1) dp_grad_ws_times(ws, &w0);
        double t0 = now();
        memset(lora->grads, 0, lora->n * sizeof(float));
        double sum;
        int64_t nt;
        if (dp_model_grad(ws, m, lora, &b, 1.0f / (seq - 1), 0, &sum, &nt)) {
            fprintf(stderr, "bench_train: %s\n", dp_last_error());
            return res;
        }
        if (s == 0) res.loss0 = sum / (double)nt;
        dp_adamw_step(lora, mm, vv, &ac, 1e-4, s + 1);
        dt[s] = now() - t0;
    }
    qsort(dt + 1, (size_t)steps, sizeof(double), cmp_double);
    res.tok_s = seq / dt[1 + steps / 2];
    dp_grad_ws_times(ws, &res.t);
    double *a = &res.t.dequant, *b0 = &w0.dequant;
    for (size_t i = 0; i < sizeof res.t / sizeof(double); i++) a[i] = (a[i] - b0[i]) / steps;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    res.rss_mib = ru.ru_maxrss / 1024.0;
    res.ok = 1;
    return res;
}

static result in_child(const char *path, bool nf4, bool bf16, bool recompute, int seq, int r,
                       int steps) {
    int fd[2];
    result res = {0};
    if (pipe(fd)) return res;
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        result x = run_doppel(path, nf4, bf16, recompute, seq, r, steps);
        ssize_t w = write(fd[1], &x, sizeof x);
        (void)w;
        _exit(0);
    }
    close(fd[1]);
    if (read(fd[0], &res, sizeof res) != (ssize_t)sizeof res) res.ok = 0;
    close(fd[0]);
    waitpid(pid, NULL, 0);
    return res;
}

int main(int argc, char **argv) {
    dp_blas_setup(argv); /* the OpenBLAS kernel for this CPU, as doppel's commands get it */
    char blas[1024];
    dp_blas_describe(blas, sizeof blas);
    printf("BLAS: %s\n", blas);
    printf("bf16 products (NF4 bf16 rows): %s%s\n",
           dp_bf16_kernel_name() ? dp_bf16_kernel_name()
                                 : "none on this CPU (those rows are not run)",
           dp_bf16_kernel_name() ? ", kernels/cpu/gemm_bf16.c" : "");
    char def[1024];
    const char *home = getenv("HOME");
    const char *cache = getenv("DOPPEL_CACHE");
    if (cache)
        snprintf(def, sizeof def, "%s/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", cache);
    else
        snprintf(def, sizeof def, "%s/.cache/doppel/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                 home ? home : ".");
    const char *path = def;
    int seq = 256, r = 16, steps = 3;
    bool peer = true, norecomp = true;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seq") && i + 1 < argc)
            seq = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--r") && i + 1 < argc)
            r = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-peer"))
            peer = false;
        else if (!strcmp(argv[i], "--no-recompute-row"))
            norecomp = false;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else
            path = argv[i];
    }
    if (access(path, R_OK)) {
        fprintf(stderr, "bench_train: %s not found (run .ci/fetch-smollm2 or pass a model)\n",
                path);
        return 1;
    }
    int threads = omp_get_max_threads();
    printf("training step (forward + backward + AdamW), %s\n", path);
    printf("seq %d, batch 1, LoRA r %d on all seven modules, %d threads, %d timed steps\n\n", seq,
           r, threads, steps);
#define NCF 5
    struct {
        const char *name;
        bool nf4, bf16, recompute, on;
        result r;
    } cf[NCF] = {{.name = "doppel (fp32 base, recompute)", .recompute = true},
                 {.name = "doppel (NF4 base, recompute)", .nf4 = true, .recompute = true},
                 {.name = "doppel (NF4 base, no recompute)", .nf4 = true},
                 {.name = "doppel (NF4 bf16, recompute)", .nf4 = true, .bf16 = true,
                  .recompute = true},
                 {.name = "doppel (NF4 bf16, no recompute)", .nf4 = true, .bf16 = true}};
    for (int i = 0; i < NCF; i++)
        cf[i].on = (!only || !strcmp(only, cf[i].bf16 ? "bf16" : cf[i].nf4 ? "nf4" : "fp32")) &&
                   (cf[i].recompute || norecomp);
    for (int i = 0; i < NCF; i++)
        if (cf[i].on)
            cf[i].r = in_child(path, cf[i].nf4, cf[i].bf16, cf[i].recompute, seq, r, steps);
    result pt = {0};
    if (peer) {
        char cmd[4096], line[512];
        snprintf(cmd, sizeof cmd,
                 "python3 %s/tests/bench/bench_train_peft.py %s %d %d %d %d 2>/dev/null",
                 DOPPEL_SOURCE_DIR, path, seq, r, steps, threads);
        FILE *p = popen(cmd, "r");
        while (p && fgets(line, sizeof line, p))
            if (sscanf(line, "RESULT %lf %lf %lf", &pt.tok_s, &pt.rss_mib, &pt.loss0) == 3)
                pt.ok = 1;
        if (p) pclose(p);
    }
    printf("%-34s %12s %14s %12s %10s %10s\n", "", "tokens/s", "peak RSS MiB", "first loss",
           "x PyTorch", "x memory");
    for (int i = 0; i < NCF; i++) {
        result *x = &cf[i].r;
        if (!x->ok) continue;
        printf("%-34s %12.1f %14.0f %12.4f", cf[i].name, x->tok_s, x->rss_mib, x->loss0);
        if (pt.ok) printf(" %9.2fx %9.2fx", x->tok_s / pt.tok_s, x->rss_mib / pt.rss_mib);
        printf("\n");
    }
    if (pt.ok)
        printf("%-34s %12.1f %14.0f %12.4f\n", "transformers + peft (fp32)", pt.tok_s, pt.rss_mib,
               pt.loss0);
    else if (peer)
        printf("transformers + peft: not run (python3 with torch, transformers, peft, gguf "
               "needed)\n");
    /* where the time of one step went (the phases inside recompute are also in their rows) */
    printf("\nms per step        ");
    for (int i = 0; i < NCF; i++)
        if (cf[i].r.ok)
            printf(" %11s%s%s", cf[i].bf16 ? "bf16" : cf[i].nf4 ? "NF4" : "fp32",
                   cf[i].recompute ? "+rc" : "", cf[i].recompute ? "" : "   ");
    printf("\n");
    static const char *rows[] = {"dequantize NF4", "base GEMM fwd", "base GEMM bwd", "LoRA fwd",
                                 "LoRA bwd",       "attention fwd", "attention bwd", "lm_head + CE",
                                 "(recompute)",    "total"};
    for (int k = 0; k < 10; k++) {
        printf("%-18s", rows[k]);
        for (int i = 0; i < NCF; i++)
            if (cf[i].r.ok) printf(" %14.0f", 1e3 * (&cf[i].r.t.dequant)[k]);
        printf("\n");
    }
    printf("%-18s", "other");
    for (int i = 0; i < NCF; i++) {
        const dp_grad_times *t = &cf[i].r.t;
        if (cf[i].r.ok)
            printf(" %14.0f",
                   1e3 * (t->total - t->dequant - t->base_fwd - t->base_bwd - t->lora_fwd -
                          t->lora_bwd - t->att_fwd - t->att_bwd - t->head));
    }
    printf("\n");
    int ok = 1;
    for (int i = 0; i < NCF; i++) ok &= !cf[i].on || cf[i].r.ok;
    return ok ? 0 : 1;
}
