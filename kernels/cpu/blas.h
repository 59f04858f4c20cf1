/* Which OpenBLAS kernel runs doppel's GEMMs: chosen from what the CPU can do (cpuid), not from
 * what the installed OpenBLAS recognises, checked against a plain GEMM at start-up, and described
 * for `doppel info` and the benchmarks so that every figure says what produced it. */
#ifndef DOPPEL_CPU_BLAS_H
#define DOPPEL_CPU_BLAS_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Instruction-set levels, in the order OpenBLAS's x86-64 kernels use them. */
typedef enum {
    DP_ISA_UNKNOWN = -1,
    DP_ISA_SSE3 = 0, /* Prescott, Core2, Nehalem, Opteron, ... */
    DP_ISA_AVX,      /* Sandybridge, Bulldozer family */
    DP_ISA_AVX2,     /* Haswell, Zen (AVX2 + FMA) */
    DP_ISA_AVX512,   /* SkylakeX, Cooperlake, SapphireRapids (AVX-512 F/CD/BW/DQ/VL) */
} dp_isa;

/* Why the running kernel is the one it is. */
typedef enum {
    DP_BLAS_OWN,      /* OpenBLAS's own detection, left as it was */
    DP_BLAS_USER,     /* OPENBLAS_CORETYPE from the user's environment (always wins) */
    DP_BLAS_DOPPEL,   /* doppel set OPENBLAS_CORETYPE for this CPU and re-executed */
    DP_BLAS_FALLBACK, /* doppel's choice failed the self-check: back on OpenBLAS's own kernel */
} dp_blas_origin;

typedef struct {
    char config[192];    /* openblas_get_config() */
    char kernel[32];     /* openblas_get_corename(): the kernel running now */
    dp_isa kernel_isa;   /* the ISA that kernel is written for */
    dp_isa cpu_isa;      /* the widest level this CPU supports */
    char cpu_kernel[32]; /* the OpenBLAS kernel doppel picks for this CPU ("" if none) */
    dp_blas_origin origin;
    char detected[32];    /* OpenBLAS's own choice when doppel replaced it, else "" */
    bool selfcheck_ok;    /* a small GEMM matched the plain reference */
    double selfcheck_err; /* its largest error relative to the tolerance (<= 1 passes) */
    bool below_cpu;       /* kernel_isa < cpu_isa: GEMMs slower than this CPU allows */
    char note[320];       /* for people: why the kernel is below the CPU, or "" */
    const char *simd;     /* doppel's own kernels' SIMD path (kernels/cpu/simd.h) */
} dp_blas_info;

/* Call first in main, with main's argv. When OpenBLAS picked a kernel below this CPU's ISA by
 * itself and the user has not set OPENBLAS_CORETYPE, this re-executes the program
 * (/proc/self/exe) with OPENBLAS_CORETYPE set to the right kernel, since OpenBLAS reads it only
 * when it loads; the new process checks that kernel with a small GEMM and, if it is wrong,
 * re-executes once more on OpenBLAS's own choice and says so on stderr. Returns when the process
 * keeps its kernel. Test hooks: DOPPEL_TEST_OPENBLAS_MISDETECT=1 makes OPENBLAS_CORETYPE stand in
 * for OpenBLAS's own (weak) detection; DOPPEL_TEST_BLAS_SELFCHECK_FAIL=1 makes the self-check of a
 * kernel doppel chose fail. */
void dp_blas_setup(char **argv);

/* The state of the BLAS in this process (runs the self-check again; about a millisecond). */
void dp_blas_query(dp_blas_info *out);

/* A few small GEMMs (every transpose pair, sizes off the kernels' block multiples) against a
 * double-precision loop. Returns 0 when all agree within the fp32 tolerance, else -1 through
 * dp_fail; *worst gets the largest error / tolerance. corrupt perturbs one output first (tests). */
int dp_blas_selfcheck(bool corrupt, double *worst);

/* One line: "OpenBLAS 0.3.21 ..., kernel SkylakeX (AVX-512; chosen by doppel, OpenBLAS picked
 * Prescott), self-check ok; doppel SIMD avx512" plus the note when there is one. */
void dp_blas_describe(char *buf, size_t cap);

dp_isa dp_cpu_isa(void);
dp_isa dp_blas_kernel_isa(const char *corename); /* DP_ISA_UNKNOWN for a name it does not know */
const char *dp_isa_name(dp_isa isa);
const char *dp_blas_origin_name(dp_blas_origin origin);

#ifdef __cplusplus
}
#endif
#endif
