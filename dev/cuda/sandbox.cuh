/* The kernel sandbox's harness (in the spirit of llm.c's dev/cuda): command line, random
 * inputs, validation of every variant against the CPU reference (kernels/cpu/) with the max
 * error and tolerance printed, and timing with cudaEvents after an L2 flush. Each
 * dev/cuda/<kernel>.cu is one program built by nvcc; its EMU twin (the same source built with
 * the host compiler against kernels/emu/) validates only. Never part of libdoppel. */
#ifndef DOPPEL_SANDBOX_CUH
#define DOPPEL_SANDBOX_CUH

#include "kernels/cuda/common.cuh"

extern "C" {
#include "data/base/error.h"
#include "infer/dtype.h"
#include "kernels/ops.h"
}

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef DOPPEL_EMU
#define SB_EMU 1
#else
#define SB_EMU 0
#endif

/* A sandbox is a program: a failed runtime call or launcher ends it with the reason. */
#define SB_CHECK(call)                                                                             \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: CUDA error: %s (%s)\n", __FILE__, __LINE__,                    \
                    cudaGetErrorString(e_), #call);                                                \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
#define SB_OK(call)                                                                                \
    do {                                                                                           \
        if ((call) != 0) {                                                                         \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, dp_last_error()); \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* ---------------------------------------------------------------- command line */
#define SB_MAX_SHAPE  8
#define SB_MAX_BLOCKS 16

struct sb_opts {
    int variant;             /* 0: every variant */
    int shape[SB_MAX_SHAPE]; /* the program's dimensions, in the order of its shape names */
    int nshape;
    int blocks[SB_MAX_BLOCKS]; /* block sizes every variant is validated (and timed) at */
    int nblocks;
    int reps;  /* timed repetitions per measurement */
    bool time; /* false: validate only (always so under EMU) */
};

struct sb_program {
    const char *name;        /* e.g. "rmsnorm_forward" */
    const char *shape_names; /* e.g. "N,C" */
    const char *shape_help;  /* what the dimensions mean */
    int nshape;
    const int *defaults;         /* nshape values: a realistic GPU shape */
    const int *emu_defaults;     /* nshape values: the EMU twin's default (small, ragged) */
    const char *const *variants; /* variant names, [0] is variant 1 */
    int nvariants;
};

static inline void sb_usage(const sb_program &p, FILE *f) {
    fprintf(f,
            "usage: sandbox_%s [variant] [--shape %s] [--blocks B1,B2,...] [--reps R] "
            "[--no-time]\n"
            "  variant   1..%d (default: all)\n",
            p.name, p.shape_names, p.nvariants);
    for (int v = 0; v < p.nvariants; v++) fprintf(f, "    %d  %s\n", v + 1, p.variants[v]);
    const int *def = SB_EMU ? p.emu_defaults : p.defaults;
    fprintf(f, "  --shape   %s (default", p.shape_help);
    for (int i = 0; i < p.nshape; i++) fprintf(f, "%c%d", i ? ',' : ' ', def[i]);
    fprintf(f, ")\n"
               "  --blocks  block sizes to validate and time each variant at (default "
               "32,64,128,256,512,1024;\n"
               "            a variant whose launcher fixes its block size runs once)\n"
               "  --reps    timed repetitions, each after an L2 flush (default 20)\n"
               "  --no-time validate only (always so under EMU)\n"
               "Every run is validated against the CPU reference (max |diff| and tolerance per\n"
               "output); the exit status is 1 when any comparison is out of tolerance.\n");
}

/* "a,b,c" -> up to max positive ints; the count, or -1 when malformed */
static inline int sb_parse_list(const char *s, int *out, int max) {
    int n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v <= 0 || v > 1 << 30 || n == max) return -1;
        out[n++] = (int)v;
        if (*end == ',')
            end++;
        else if (*end)
            return -1;
        s = end;
    }
    return n;
}

static inline void sb_parse(int argc, char **argv, const sb_program &p, sb_opts *o) {
    memset(o, 0, sizeof *o);
    o->nshape = p.nshape;
    memcpy(o->shape, SB_EMU ? p.emu_defaults : p.defaults, sizeof(int) * p.nshape);
    const int blocks[] = {32, 64, 128, 256, 512, 1024};
    o->nblocks = 6;
    memcpy(o->blocks, blocks, sizeof blocks);
    o->reps = 20;
    o->time = !SB_EMU;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            sb_usage(p, stdout);
            exit(0);
        } else if (!strcmp(a, "--shape") && more) {
            if (sb_parse_list(argv[++i], o->shape, SB_MAX_SHAPE) != p.nshape) {
                fprintf(stderr, "sandbox_%s: --shape takes %d positive integers %s, got \"%s\"\n",
                        p.name, p.nshape, p.shape_names, argv[i]);
                exit(2);
            }
        } else if (!strcmp(a, "--blocks") && more) {
            o->nblocks = sb_parse_list(argv[++i], o->blocks, SB_MAX_BLOCKS);
            bool ok = o->nblocks > 0;
            for (int b = 0; ok && b < o->nblocks; b++) ok = o->blocks[b] <= 1024;
            if (!ok) {
                fprintf(stderr, "sandbox_%s: --blocks takes block sizes in 1..1024, got \"%s\"\n",
                        p.name, argv[i]);
                exit(2);
            }
        } else if (!strcmp(a, "--reps") && more) {
            o->reps = atoi(argv[++i]);
            if (o->reps < 1) {
                fprintf(stderr, "sandbox_%s: --reps must be at least 1\n", p.name);
                exit(2);
            }
        } else if (!strcmp(a, "--no-time")) {
            o->time = false;
        } else if (a[0] >= '0' && a[0] <= '9' && !o->variant) {
            char *end;
            long v = strtol(a, &end, 10);
            o->variant = *end || v < 1 || v > p.nvariants ? -1 : (int)v;
            if (o->variant < 0) {
                fprintf(stderr, "sandbox_%s: variant %s does not exist (1..%d)\n", p.name, a,
                        p.nvariants);
                exit(2);
            }
        } else {
            fprintf(stderr, "sandbox_%s: unknown argument \"%s\"\n", p.name, a);
            sb_usage(p, stderr);
            exit(2);
        }
    }
#ifndef DOPPEL_EMU
    int ndev = 0;
    cudaError_t err = cudaGetDeviceCount(&ndev);
    if (err != cudaSuccess || ndev == 0) {
        fprintf(stderr,
                "sandbox_%s: no usable CUDA device (%s); its EMU twin sandbox_%s_emu validates "
                "the same kernels on the CPU\n",
                p.name, err != cudaSuccess ? cudaGetErrorString(err) : "none found", p.name);
        exit(1);
    }
#endif
    printf("sandbox_%s: shape %s =", p.name, p.shape_names);
    for (int i = 0; i < p.nshape; i++) printf("%c%d", i ? ',' : ' ', o->shape[i]);
    printf("%s\n", SB_EMU ? "  (EMU: timing skipped, validation only)" : "");
}

/* ---------------------------------------------------------------- host data */
static uint64_t sb_rng = 0x5eed;
static inline float sb_uniform(void) { /* [-1, 1) */
    sb_rng = sb_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((sb_rng >> 40) * (1.0 / (1 << 24))) * 2.0f - 1.0f;
}
static inline float *sb_host(size_t n) {
    float *p = (float *)calloc(n ? n : 1, sizeof(float));
    if (!p) {
        fprintf(stderr, "out of host memory for %zu floats\n", n);
        exit(1);
    }
    return p;
}
static inline float *sb_random(size_t n, float scale) {
    float *p = sb_host(n);
    for (size_t i = 0; i < n; i++) p[i] = scale * sb_uniform();
    return p;
}
/* x := bf16(x): the CPU reference then sees exactly the bf16 inputs the kernels see */
/* max |x|: the scale a gradient's tolerance is relative to */
static inline float sb_max_abs(const float *x, size_t n) {
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
    return m;
}

static inline void sb_round_bf16(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = dp_bf16_to_f32(dp_f32_to_bf16(x[i]));
}

/* ---------------------------------------------------------------- device buffers */
template <class T> static T *sb_dev(size_t n) {
    void *p = NULL;
    SB_CHECK(cudaMalloc(&p, (n ? n : 1) * sizeof(T)));
    return (T *)p;
}
static inline float *sb_upload_f32(const float *h, size_t n) {
    float *d = sb_dev<float>(n);
    SB_CHECK(cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice));
    return d;
}
static inline __nv_bfloat16 *sb_upload_bf16(const float *h, size_t n) {
    uint16_t *tmp = (uint16_t *)malloc((n ? n : 1) * 2);
    for (size_t i = 0; i < n; i++) tmp[i] = dp_f32_to_bf16(h[i]);
    __nv_bfloat16 *d = sb_dev<__nv_bfloat16>(n);
    SB_CHECK(cudaMemcpy(d, tmp, n * 2, cudaMemcpyHostToDevice));
    free(tmp);
    return d;
}
static inline void sb_download_f32(float *h, const float *d, size_t n) {
    SB_CHECK(cudaMemcpy(h, d, n * sizeof(float), cudaMemcpyDeviceToHost));
}
static inline void sb_download_bf16(float *h, const __nv_bfloat16 *d, size_t n) {
    uint16_t *tmp = (uint16_t *)malloc((n ? n : 1) * 2);
    SB_CHECK(cudaMemcpy(tmp, d, n * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) h[i] = dp_bf16_to_f32(tmp[i]);
    free(tmp);
}
/* all-ones bytes are NaN in fp32 and bf16: an output a variant forgets to write fails */
static inline void sb_poison(void *d, size_t bytes) {
    SB_CHECK(cudaMemset(d, 0xff, bytes));
}

/* ---------------------------------------------------------------- 128-bit loads and stores
 * One 16-byte transaction on the GPU; memcpy under EMU (no type punning for the host
 * compiler's aliasing rules). p must be 16-byte aligned. */
template <class T> __device__ static __forceinline__ T sb_load128(const void *p) {
    static_assert(sizeof(T) == 16, "a 128-bit pack");
    T r;
#ifdef DOPPEL_EMU
    memcpy((void *)&r, p, 16);
#else
    *reinterpret_cast<int4 *>(&r) = *reinterpret_cast<const int4 *>(p);
#endif
    return r;
}
template <class T> __device__ static __forceinline__ void sb_store128(void *p, const T &v) {
    static_assert(sizeof(T) == 16, "a 128-bit pack");
#ifdef DOPPEL_EMU
    memcpy(p, (const void *)&v, 16);
#else
    *reinterpret_cast<int4 *>(p) = *reinterpret_cast<const int4 *>(&v);
#endif
}
struct alignas(16) sb_bf16x8 {
    __nv_bfloat16 v[8];
};
struct alignas(16) sb_f32x4 {
    float v[4];
};

/* ---------------------------------------------------------------- validation */
static int sb_checks, sb_failures;

/* |got - ref| <= abs_tol + rel_tol * |ref| elementwise; appends one "name max|diff| (tol)"
 * field to the current line. abs_tol = rel_tol = 0 asks for bit equality. */
static inline bool sb_compare(const char *what, const float *ref, const float *got, size_t n,
                              double abs_tol, double rel_tol) {
    double max_diff = 0;
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)ref[i] - (double)got[i]);
        if (!(d <= abs_tol + rel_tol * fabs((double)ref[i]))) {
            if (!bad) first_bad = i;
            bad++;
        }
        if (d > max_diff || d != d) max_diff = d;
    }
    sb_checks++;
    printf("  %s max|diff| %.2e (tol %.0e+%.0e|ref|)", what, max_diff, abs_tol, rel_tol);
    if (bad) {
        sb_failures++;
        printf(" FAIL: %zu of %zu, first [%zu] ref %.7g got %.7g", bad, n, first_bad,
               (double)ref[first_bad], (double)got[first_bad]);
    }
    return bad == 0;
}

/* ---------------------------------------------------------------- timing */
#ifdef DOPPEL_EMU
static inline size_t sb_l2_bytes(void) {
    return 0; /* never timed */
}
#else
static inline size_t sb_l2_bytes(void) {
    int dev = 0, l2 = 0;
    SB_CHECK(cudaGetDevice(&dev));
    SB_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
    return (size_t)l2;
}
#endif

/* Mean milliseconds of one run() over `reps` repetitions, each preceded by a write of a buffer
 * twice the L2 size so that no repetition finds its inputs in L2 (as in a real step, where
 * other kernels ran in between). Only the kernel is inside the events. A variant slower than
 * 2 s per `reps` runs gets fewer repetitions. */
static void *sb_flush;
static size_t sb_flush_bytes;
template <class F> static float sb_time_ms(int reps, F &&run) {
    if (!sb_flush) {
        sb_flush_bytes = 2 * sb_l2_bytes();
        if (sb_flush_bytes < ((size_t)8 << 20)) sb_flush_bytes = (size_t)8 << 20;
        SB_CHECK(cudaMalloc(&sb_flush, sb_flush_bytes));
    }
    cudaEvent_t start, stop;
    SB_CHECK(cudaEventCreate(&start));
    SB_CHECK(cudaEventCreate(&stop));
    SB_CHECK(cudaEventRecord(start));
    run(); /* warm-up: first-launch costs are not the kernel's */
    SB_CHECK(cudaEventRecord(stop));
    SB_CHECK(cudaEventSynchronize(stop));
    SB_CHECK(cudaGetLastError());
    float warm = 0.0f;
    SB_CHECK(cudaEventElapsedTime(&warm, start, stop));
    if (warm * reps > 2000.0f) reps = warm > 2000.0f ? 1 : (int)(2000.0f / warm); /* slow ones */
    float total = 0.0f;
    for (int r = 0; r < reps; r++) {
        SB_CHECK(cudaMemset(sb_flush, r & 0xff, sb_flush_bytes));
        SB_CHECK(cudaEventRecord(start));
        run();
        SB_CHECK(cudaEventRecord(stop));
        SB_CHECK(cudaEventSynchronize(stop));
        SB_CHECK(cudaGetLastError());
        float ms = 0.0f;
        SB_CHECK(cudaEventElapsedTime(&ms, start, stop));
        total += ms;
    }
    SB_CHECK(cudaEventDestroy(start));
    SB_CHECK(cudaEventDestroy(stop));
    return total / reps;
}

/* What one run moves and computes, for GB/s and TFLOPS. */
struct sb_cost {
    double bytes; /* DRAM bytes an ideal kernel moves (each input read once, outputs written) */
    double flops; /* 0 for memory-bound kernels (GB/s printed), else TFLOPS printed too */
};

static inline void sb_print_time(float ms, sb_cost c, float peer_ms) {
    printf(" | %8.4f ms %7.1f GB/s", ms, c.bytes / (ms * 1e-3) / 1e9);
    if (c.flops > 0) printf(" %6.2f TFLOPS", c.flops / (ms * 1e-3) / 1e12);
    if (peer_ms > 0) printf("  %.2fx cuBLAS speed", peer_ms / ms); /* > 1: faster than the peer */
}

/* ---------------------------------------------------------------- the sweep
 * For every chosen variant and block size: reset() the outputs (poisoned) and in-place state,
 * run(variant, block) once, check() it against the reference (appending its fields), then
 * time run() when timing. run() returns false when the variant cannot take that block size
 * or shape; block = 0 asks a variant whose launcher fixes its block size to run once. */
template <class Reset, class Run, class Check>
static inline void sb_sweep(const sb_program &p, const sb_opts &o, const bool *fixed_block,
                            sb_cost cost, float peer_ms, Reset reset, Run run, Check check) {
    for (int v = 1; v <= p.nvariants; v++) {
        if (o.variant && o.variant != v) continue;
        int nb = fixed_block[v - 1] ? 1 : o.nblocks;
        for (int b = 0; b < nb; b++) {
            int block = fixed_block[v - 1] ? 0 : o.blocks[b];
            reset();
            printf("variant %d %-34s ", v, p.variants[v - 1]);
            if (block)
                printf("block %4d:", block);
            else
                printf("(launcher):");
            if (!run(v, block)) {
                printf("  not supported at this block size or shape\n");
                continue;
            }
            SB_CHECK(cudaGetLastError());
            SB_CHECK(cudaDeviceSynchronize());
            check();
            if (o.time) sb_print_time(sb_time_ms(o.reps, [&] { run(v, block); }), cost, peer_ms);
            printf("\n");
            fflush(stdout);
        }
    }
}

/* A GEMM-like kernel's peer: the same shape through cuBLAS, validated, then timed once. */
template <class Reset, class Run, class Check>
static inline float sb_peer(const char *name, const sb_opts &o, sb_cost cost, Reset reset, Run run,
                            Check check) {
    reset();
    printf("peer      %-34s           ", name);
    run();
    SB_CHECK(cudaGetLastError());
    SB_CHECK(cudaDeviceSynchronize());
    check();
    if (SB_EMU) printf("  (EMU: the gemm launcher runs OpenBLAS)");
    float ms = -1.0f;
    if (o.time) {
        ms = sb_time_ms(o.reps, run);
        sb_print_time(ms, cost, 0.0f);
    }
    printf("\n");
    fflush(stdout);
    return ms;
}

/* The exit status: 0 when every comparison passed. */
static inline int sb_finish(const sb_program &p) {
    if (sb_flush) SB_CHECK(cudaFree(sb_flush));
    sb_flush = NULL;
    printf("sandbox_%s: %d of %d comparisons within tolerance%s\n", p.name, sb_checks - sb_failures,
           sb_checks, sb_failures ? "  FAILED" : "");
    return sb_failures ? 1 : 0;
}

#endif
