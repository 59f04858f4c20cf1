/* Training speed and memory: doppel's LoRA step (forward + backward + AdamW) on SmolLM2-135M
 * (fp32 base and NF4 base), side by side with transformers + PEFT on the CPU (fp32, same batch,
 * same threads, tests/bench/bench_train_peft.py), with the ratio. Each configuration runs in
 * its own process so peak RSS is its own.
 * usage: bench_train [MODEL.gguf|HF_DIR] [--seq 256] [--r 16] [--steps 3] [--no-peer]
 * MODEL defaults to the SmolLM2 GGUF that .ci/fetch-smollm2 caches. */
#include "data/error.h"
#include "infer/model_load.h"
#include "train/model_grad.h"
#include "train/optim.h"
#include "train/rng.h"

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
    int ok;
} result;

/* One configuration in this (child) process. */
static result run_doppel(const char *path, bool nf4, int seq, int r, int steps) {
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
    dp_grad_ws *ws = dp_grad_ws_create(m, lora, seq, true, 0);
    float *mm = calloc(lora->n, sizeof(float)), *vv = calloc(lora->n, sizeof(float));
    dp_adamw_config ac = {0.9f, 0.999f, 1e-8f, 0.0f, 1.0f};
    double t0 = 0;
    for (int s = 0; s <= steps; s++) { /* step 0 warms up */
        if (s == 1) t0 = now();
        memset(lora->grads, 0, lora->n * sizeof(float));
        double sum;
        int64_t nt;
        if (dp_model_grad(ws, m, lora, &b, 1.0f / (seq - 1), 0, &sum, &nt)) {
            fprintf(stderr, "bench_train: %s\n", dp_last_error());
            return res;
        }
        if (s == 0) res.loss0 = sum / (double)nt;
        dp_adamw_step(lora, mm, vv, &ac, 1e-4, s + 1);
    }
    double dt = now() - t0;
    res.tok_s = (double)seq * steps / dt;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    res.rss_mib = ru.ru_maxrss / 1024.0;
    res.ok = 1;
    return res;
}

static result in_child(const char *path, bool nf4, int seq, int r, int steps) {
    int fd[2];
    result res = {0};
    if (pipe(fd)) return res;
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        result x = run_doppel(path, nf4, seq, r, steps);
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
    bool peer = true;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seq") && i + 1 < argc)
            seq = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--r") && i + 1 < argc)
            r = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-peer"))
            peer = false;
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
    result d32 = in_child(path, false, seq, r, steps);
    result d4 = in_child(path, true, seq, r, steps);
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
    printf("%-34s %12s %14s %12s\n", "", "tokens/s", "peak RSS MiB", "first loss");
    if (d32.ok)
        printf("%-34s %12.1f %14.0f %12.4f\n", "doppel (fp32 base, recompute)", d32.tok_s,
               d32.rss_mib, d32.loss0);
    if (d4.ok)
        printf("%-34s %12.1f %14.0f %12.4f\n", "doppel (NF4 base, recompute)", d4.tok_s, d4.rss_mib,
               d4.loss0);
    if (pt.ok)
        printf("%-34s %12.1f %14.0f %12.4f\n", "transformers + peft (fp32)", pt.tok_s, pt.rss_mib,
               pt.loss0);
    else if (peer)
        printf("transformers + peft: not run (python3 with torch, transformers, peft, gguf "
               "needed)\n");
    if (pt.ok && d32.ok && d4.ok)
        printf("\nratio vs PyTorch: fp32 base %.2fx tokens/s, %.2fx memory; NF4 base %.2fx "
               "tokens/s, %.2fx memory\n",
               d32.tok_s / pt.tok_s, d32.rss_mib / pt.rss_mib, d4.tok_s / pt.tok_s,
               d4.rss_mib / pt.rss_mib);
    return d32.ok && d4.ok ? 0 : 1;
}
