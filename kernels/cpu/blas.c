/* The OpenBLAS kernel for this CPU (see blas.h). OpenBLAS (DYNAMIC_ARCH) picks its kernel once,
 * when it loads, from a table of CPU models it knows; a CPU newer than the library (Debian 12's
 * 0.3.21 on recent Xeons) gets its SSE3 "Prescott" kernels, 2-5x slower GEMMs. Its one documented
 * override is OPENBLAS_CORETYPE, read only at load time, so doppel sets it and re-executes itself
 * (measured against BLIS 0.9, Debian's other runtime-dispatch BLAS, which runs its generic
 * kernels on such a CPU too: see issue 17's report). */
#define _GNU_SOURCE /* setenv, strcasecmp */
#include "kernels/cpu/blas.h"

#include "kernels/status.h"
#include "kernels/cpu/simd.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* what doppel leaves in the environment of the process it re-executes (and its children) */
#define ENV_CORETYPE            "OPENBLAS_CORETYPE"
#define ENV_SET                 "DOPPEL_BLAS_SET" /* the OPENBLAS_CORETYPE value doppel put there */
#define ENV_DETECTED            "DOPPEL_BLAS_DETECTED" /* OpenBLAS's own choice before that */
#define ENV_FALLBACK            "DOPPEL_BLAS_FALLBACK" /* why doppel's choice was abandoned */
#define ENV_TEST_MISDETECT      "DOPPEL_TEST_OPENBLAS_MISDETECT"
#define ENV_TEST_SELFCHECK_FAIL "DOPPEL_TEST_BLAS_SELFCHECK_FAIL"

dp_isa dp_cpu_isa(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    /* OpenBLAS's SkylakeX kernels use F, CD, BW, DQ and VL; __builtin_cpu_supports also checks
     * that the OS saves the wider registers */
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl"))
        return DP_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return DP_ISA_AVX2;
    if (__builtin_cpu_supports("avx")) return DP_ISA_AVX;
    if (__builtin_cpu_supports("sse3")) return DP_ISA_SSE3;
#endif
    return DP_ISA_UNKNOWN;
}

/* The OpenBLAS kernel doppel asks for on this CPU; "" when there is nothing better to ask for.
 * Only names OpenBLAS has known since 0.3.11 (SapphireRapids is newer than Debian 12's). */
static const char *cpu_kernel(dp_isa isa) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (isa == DP_ISA_AVX512)
        return __builtin_cpu_supports("avx512bf16") ? "Cooperlake" : "SkylakeX";
#endif
    return isa == DP_ISA_AVX2 ? "Haswell" : isa == DP_ISA_AVX ? "Sandybridge" : "";
}

dp_isa dp_blas_kernel_isa(const char *name) {
    static const struct {
        const char *name;
        dp_isa isa;
    } known[] = {
        {"SkylakeX", DP_ISA_AVX512},
        {"Cooperlake", DP_ISA_AVX512},
        {"SapphireRapids", DP_ISA_AVX512},
        {"Haswell", DP_ISA_AVX2},
        {"Zen", DP_ISA_AVX2},
        {"Sandybridge", DP_ISA_AVX},
        {"Bulldozer", DP_ISA_AVX},
        {"Piledriver", DP_ISA_AVX},
        {"Steamroller", DP_ISA_AVX},
        {"Excavator", DP_ISA_AVX},
        {"Prescott", DP_ISA_SSE3},
        {"Core2", DP_ISA_SSE3},
        {"Penryn", DP_ISA_SSE3},
        {"Dunnington", DP_ISA_SSE3},
        {"Nehalem", DP_ISA_SSE3},
        {"Atom", DP_ISA_SSE3},
        {"Nano", DP_ISA_SSE3},
        {"Opteron_SSE3", DP_ISA_SSE3},
        {"Barcelona", DP_ISA_SSE3},
        {"Bobcat", DP_ISA_SSE3},
        {"Opteron", DP_ISA_SSE3},
        {"Katmai", DP_ISA_SSE3}, /* SSE only: below SSE3, */
        {"Coppermine", DP_ISA_SSE3},
        {"Northwood", DP_ISA_SSE3}, /* counted with it */
        {"Banias", DP_ISA_SSE3},
        {"Athlon", DP_ISA_SSE3},
    };
    for (size_t i = 0; name && i < sizeof known / sizeof known[0]; i++)
        if (!strcasecmp(name, known[i].name)) return known[i].isa;
    return DP_ISA_UNKNOWN;
}

const char *dp_isa_name(dp_isa isa) {
    switch (isa) {
    case DP_ISA_SSE3:
        return "SSE3";
    case DP_ISA_AVX:
        return "AVX";
    case DP_ISA_AVX2:
        return "AVX2";
    case DP_ISA_AVX512:
        return "AVX-512";
    default:
        return "unknown";
    }
}

const char *dp_blas_origin_name(dp_blas_origin o) {
    switch (o) {
    case DP_BLAS_USER:
        return "OPENBLAS_CORETYPE from the environment";
    case DP_BLAS_DOPPEL:
        return "chosen by doppel";
    case DP_BLAS_FALLBACK:
        return "doppel's choice failed the self-check: OpenBLAS's own";
    default:
        return "OpenBLAS's own choice";
    }
}

/* deterministic values in [-1, 1) */
static float fill_value(uint32_t i) {
    uint32_t x = i * 2654435761u + 12345u;
    x ^= x >> 15;
    x *= 2246822519u;
    x ^= x >> 13;
    return (float)(x >> 8) / 8388608.0f - 1.0f;
}

int dp_blas_selfcheck(bool corrupt, double *worst) {
    /* sizes off the kernels' 4/8/16/32 blocks, every transpose pair, beta != 0 */
    static const int cases[][5] = {
        {0, 0, 37, 53, 71}, {0, 1, 64, 96, 200}, {1, 0, 45, 33, 129}, {1, 1, 19, 70, 40}};
    double err = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int ta = cases[c][0], tb = cases[c][1], M = cases[c][2], N = cases[c][3], K = cases[c][4];
        float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N),
              *C = malloc(sizeof(float) * M * N), *C0 = malloc(sizeof(float) * M * N);
        if (!A || !B || !C || !C0) {
            free(A), free(B), free(C), free(C0);
            return dp_fail("BLAS self-check: out of memory");
        }
        for (int i = 0; i < M * K; i++) A[i] = fill_value((uint32_t)i);
        for (int i = 0; i < K * N; i++) B[i] = fill_value((uint32_t)(i + 7919));
        for (int i = 0; i < M * N; i++) C[i] = C0[i] = fill_value((uint32_t)(i + 104729));
        int lda = ta ? M : K, ldb = tb ? K : N;
        const float alpha = 0.75f, beta = 0.5f;
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    M, N, K, alpha, A, lda, B, ldb, beta, C, N);
        if (corrupt) C[M * N / 2] += 0.5f;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double s = 0, mag = 0;
                for (int k = 0; k < K; k++) {
                    double a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                    double b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                    s += a * b;
                    mag += fabs(a * b);
                }
                double ref = alpha * s + beta * C0[i * N + j];
                /* fp32 accumulation: a few ulps of the magnitude summed */
                double tol = 1e-5 * (alpha * mag + beta * fabs(C0[i * N + j])) + 1e-6;
                double e = fabs(C[i * N + j] - ref) / tol;
                if (!(e <= err)) err = e; /* a NaN counts as the worst */
            }
        free(A), free(B), free(C), free(C0);
    }
    if (worst) *worst = err;
    if (!(err <= 1.0))
        return dp_fail("kernels/cpu/blas.c: OpenBLAS's %s kernel failed the GEMM self-check "
                       "(error %.3g times the fp32 tolerance); try another kernel with "
                       "OPENBLAS_CORETYPE=Haswell or Prescott",
                       openblas_get_corename(), err);
    return 0;
}

static void copy(char *dst, size_t cap, const char *src) {
    snprintf(dst, cap, "%s", src ? src : "");
}

static dp_blas_origin current_origin(void) {
    const char *ct = getenv(ENV_CORETYPE), *set = getenv(ENV_SET);
    if (ct && set && !strcasecmp(ct, set))
        return getenv(ENV_FALLBACK) ? DP_BLAS_FALLBACK : DP_BLAS_DOPPEL;
    if (ct && !getenv(ENV_TEST_MISDETECT)) return DP_BLAS_USER;
    return DP_BLAS_OWN;
}

static bool test_selfcheck_fail(dp_blas_origin o) {
    const char *e = getenv(ENV_TEST_SELFCHECK_FAIL);
    return o == DP_BLAS_DOPPEL && e && !strcmp(e, "1");
}

void dp_blas_query(dp_blas_info *q) {
    memset(q, 0, sizeof *q);
    copy(q->config, sizeof q->config, openblas_get_config());
    copy(q->kernel, sizeof q->kernel, openblas_get_corename());
    q->kernel_isa = dp_blas_kernel_isa(q->kernel);
    q->cpu_isa = dp_cpu_isa();
    copy(q->cpu_kernel, sizeof q->cpu_kernel, cpu_kernel(q->cpu_isa));
    q->origin = current_origin();
    if (q->origin == DP_BLAS_DOPPEL || q->origin == DP_BLAS_FALLBACK)
        copy(q->detected, sizeof q->detected, getenv(ENV_DETECTED));
    q->selfcheck_ok = dp_blas_selfcheck(test_selfcheck_fail(q->origin), &q->selfcheck_err) == 0;
    if (!q->selfcheck_ok) dp_clear_error();
    /* an unknown kernel name is counted as below: it is said, never silently trusted */
    q->below_cpu = q->cpu_isa > DP_ISA_UNKNOWN && q->kernel_isa < q->cpu_isa;
    q->simd = dp_simd_name(dp_simd_level());

    char *n = q->note;
    size_t cap = sizeof q->note;
    if (q->below_cpu) {
        const char *k = q->kernel, *ki = dp_isa_name(q->kernel_isa), *ci = dp_isa_name(q->cpu_isa);
        switch (q->origin) {
        case DP_BLAS_USER:
            snprintf(
                n, cap,
                "GEMMs run OpenBLAS's %s kernel (%s) on this %s CPU because OPENBLAS_CORETYPE=%s "
                "is set (the user's choice wins); unset it for the %s kernel",
                k, ki, ci, getenv(ENV_CORETYPE), q->cpu_kernel);
            break;
        case DP_BLAS_DOPPEL:
            snprintf(n, cap,
                     "doppel asked OpenBLAS for its %s kernel, but this OpenBLAS runs %s (%s) on "
                     "this %s CPU: a newer OpenBLAS would be faster",
                     q->cpu_kernel, k, ki, ci);
            break;
        case DP_BLAS_FALLBACK:
            snprintf(n, cap, "%s; GEMMs run OpenBLAS's own choice %s (%s) on this %s CPU",
                     getenv(ENV_FALLBACK), k, ki, ci);
            break;
        default:
            snprintf(n, cap,
                     "OpenBLAS chose its %s kernel (%s) on this %s CPU and it was not replaced "
                     "(doppel's commands do that; here set OPENBLAS_CORETYPE=%s)",
                     k, ki, ci, q->cpu_kernel[0] ? q->cpu_kernel : "?");
        }
    } else if (q->origin == DP_BLAS_FALLBACK) {
        snprintf(n, cap, "%s", getenv(ENV_FALLBACK));
    }
    if (!q->selfcheck_ok) {
        size_t len = strlen(n);
        snprintf(n + len, cap - len,
                 "%sthe %s kernel FAILED the GEMM self-check (error %.3g times "
                 "the tolerance)",
                 len ? "; " : "", q->kernel, q->selfcheck_err);
    }
}

void dp_blas_describe(char *buf, size_t cap) {
    dp_blas_info q;
    dp_blas_query(&q);
    char detected[64] = "";
    if (q.detected[0]) snprintf(detected, sizeof detected, ", OpenBLAS picked %s", q.detected);
    snprintf(buf, cap, "%s; kernel %s (%s; %s%s) on an %s CPU; self-check %s; doppel SIMD %s%s%s",
             q.config, q.kernel, dp_isa_name(q.kernel_isa), dp_blas_origin_name(q.origin), detected,
             dp_isa_name(q.cpu_isa), q.selfcheck_ok ? "ok" : "FAILED", q.simd,
             q.note[0] ? "; NOTE: " : "", q.note);
}

/* Re-executes this program with the environment changed as set above; returns on failure. */
static void reexec(char **argv) {
    fflush(stdout);
    fflush(stderr);
#ifdef __linux__
    execv("/proc/self/exe", argv);
#endif
    fprintf(stderr, "doppel: could not re-execute itself to change the BLAS kernel (%s)\n",
            strerror(errno));
}

void dp_blas_setup(char **argv) {
    if (!argv || !argv[0]) return;
    dp_blas_origin origin = current_origin();
    const char *kernel = openblas_get_corename();
    dp_isa cpu = dp_cpu_isa(), have = dp_blas_kernel_isa(kernel);
    const char *want = cpu_kernel(cpu);

    /* OpenBLAS's own choice is below this CPU (a known kernel name only: an unknown one is left
     * alone and reported by dp_blas_query) */
    if (origin == DP_BLAS_OWN && have != DP_ISA_UNKNOWN && have < cpu && want[0]) {
        setenv(ENV_CORETYPE, want, 1);
        setenv(ENV_SET, want, 1);
        setenv(ENV_DETECTED, kernel, 1);
        unsetenv(ENV_FALLBACK);
        reexec(argv);
        unsetenv(ENV_SET); /* not re-executed: the environment as it was, less the test hook */
        unsetenv(ENV_DETECTED);
        if (getenv(ENV_TEST_MISDETECT))
            setenv(ENV_CORETYPE, kernel, 1);
        else
            unsetenv(ENV_CORETYPE);
        return;
    }

    double worst = 0;
    if (dp_blas_selfcheck(test_selfcheck_fail(origin), &worst) == 0) return;
    dp_clear_error();
    const char *detected = getenv(ENV_DETECTED);
    if (origin == DP_BLAS_DOPPEL && detected && detected[0]) {
        char why[192];
        snprintf(why, sizeof why,
                 "OpenBLAS's %s kernel, chosen by doppel for this %s CPU, failed the GEMM "
                 "self-check (error %.3g times the tolerance)",
                 kernel, dp_isa_name(cpu), worst);
        fprintf(stderr, "doppel: %s; falling back to OpenBLAS's own choice, %s\n", why, detected);
        setenv(ENV_FALLBACK, why, 1);
        setenv(ENV_SET, detected, 1);
        setenv(ENV_CORETYPE, detected, 1);
        reexec(argv);
        return;
    }
    fprintf(stderr,
            "doppel: WARNING: OpenBLAS's %s kernel failed the GEMM self-check (error %.3g times "
            "the tolerance): results may be wrong; try OPENBLAS_CORETYPE=Haswell or Prescott\n",
            kernel, worst);
}
