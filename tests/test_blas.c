/* The BLAS kernel doppel runs on: never below the CPU's ISA without saying so (capability, not
 * timing), a wrong kernel caught by the GEMM self-check, and the fallback when it is. The
 * re-execution paths run the real binary (`doppel info --json`) with OpenBLAS's weak detection
 * simulated by DOPPEL_TEST_OPENBLAS_MISDETECT (OPENBLAS_CORETYPE then stands in for it). */
#include "check.h"
#include "data/base/error.h"
#include "kernels/cpu/blas.h"

#include <cblas.h>
#include <cjson/cJSON.h>

/* the ISA level from /proc/cpuinfo's flags: a reference independent of cpuid builtins */
static dp_isa cpuinfo_isa(void) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return DP_ISA_UNKNOWN;
    char line[8192];
    dp_isa isa = DP_ISA_UNKNOWN;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "flags", 5)) continue;
        char padded[8200];
        snprintf(padded, sizeof padded, " %s ", strchr(line, ':') ? strchr(line, ':') + 1 : line);
        for (char *p = padded; *p; p++)
            if (*p == '\n' || *p == '\t') *p = ' ';
#define HAS(flag) (strstr(padded, " " flag " ") != NULL)
        if (HAS("pni")) isa = DP_ISA_SSE3; /* /proc/cpuinfo calls SSE3 "pni" */
        if (HAS("avx")) isa = DP_ISA_AVX;
        if (HAS("avx2") && HAS("fma")) isa = DP_ISA_AVX2;
        if (HAS("avx512f") && HAS("avx512cd") && HAS("avx512bw") && HAS("avx512dq") &&
            HAS("avx512vl"))
            isa = DP_ISA_AVX512;
#undef HAS
        break;
    }
    fclose(f);
    return isa;
}

/* `doppel info --json` under an environment prefix; the JSON object (NULL if none) and whether
 * the combined output (stderr first, before any re-execution) contains `say` */
static cJSON *run_info(const char *env, const char *say, bool *said) {
    const char *bin = getenv("DOPPEL_BIN");
    char cmd[2048], buf[16384];
    snprintf(cmd, sizeof cmd,
             "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE -u DOPPEL_BLAS_SET -u "
             "DOPPEL_BLAS_DETECTED -u DOPPEL_BLAS_FALLBACK -u DOPPEL_TEST_OPENBLAS_MISDETECT -u "
             "DOPPEL_TEST_BLAS_SELFCHECK_FAIL %s '%s' info --json 2>&1",
             env, bin);
    FILE *p = popen(cmd, "r");
    size_t n = p ? fread(buf, 1, sizeof buf - 1, p) : 0;
    buf[n] = 0;
    int rc = p ? pclose(p) : -1;
    CHECK_REPORT(rc == 0, "%s: exit status %d\n%s", cmd, rc, buf);
    if (said) *said = say && strstr(buf, say);
    char *brace = strchr(buf, '{');
    cJSON *j = brace ? cJSON_Parse(brace) : NULL;
    CHECK_REPORT(j != NULL, "%s: no JSON in\n%s", cmd, buf);
    return j;
}

static const char *jstr(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static bool jtrue(const cJSON *j, const char *key) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, key));
}

/* the capability rule itself: below the CPU's ISA only with a note that says why */
static void check_said_if_below(const cJSON *j, const char *what) {
    dp_isa kernel = dp_blas_kernel_isa(jstr(j, "blas_kernel")), cpu = cpuinfo_isa();
    bool below = cpu > DP_ISA_UNKNOWN && kernel < cpu;
    CHECK_REPORT(jtrue(j, "blas_below_cpu") == below, "%s: blas_below_cpu says %d, kernel %s on %s",
                 what, jtrue(j, "blas_below_cpu"), jstr(j, "blas_kernel"), dp_isa_name(cpu));
    CHECK_REPORT(!below || jstr(j, "blas_note")[0],
                 "%s: BLAS kernel %s (%s) below this %s CPU and doppel did not say so", what,
                 jstr(j, "blas_kernel"), dp_isa_name(kernel), dp_isa_name(cpu));
    printf("  %-42s kernel %-11s (%s, %s) on %s%s%s\n", what, jstr(j, "blas_kernel"),
           dp_isa_name(kernel), jstr(j, "blas_kernel_origin"), dp_isa_name(cpu),
           below ? "; note: " : "", below ? jstr(j, "blas_note") : "");
}

int main(void) {
    /* OpenBLAS's kernel names and the ISA each is written for */
    CHECK_EQ_INT(DP_ISA_SSE3, dp_blas_kernel_isa("Prescott"));
    CHECK_EQ_INT(DP_ISA_AVX, dp_blas_kernel_isa("Sandybridge"));
    CHECK_EQ_INT(DP_ISA_AVX2, dp_blas_kernel_isa("haswell"));
    CHECK_EQ_INT(DP_ISA_AVX2, dp_blas_kernel_isa("Zen"));
    CHECK_EQ_INT(DP_ISA_AVX512, dp_blas_kernel_isa("SkylakeX"));
    CHECK_EQ_INT(DP_ISA_AVX512, dp_blas_kernel_isa("Cooperlake"));
    CHECK_EQ_INT(DP_ISA_UNKNOWN, dp_blas_kernel_isa("NoSuchCore"));

    /* cpuid agrees with the kernel's own view of the CPU */
    dp_isa cpu = cpuinfo_isa();
    CHECK_EQ_INT(cpu, dp_cpu_isa());

    /* the self-check passes on the library as loaded, and catches a wrong output */
    double worst = -1;
    CHECK_EQ_INT(0, dp_blas_selfcheck(false, &worst));
    CHECK_REPORT(worst >= 0 && worst <= 1, "self-check error %.3g of the tolerance", worst);
    printf("self-check on OpenBLAS %s: largest error %.3g of the tolerance\n",
           openblas_get_corename(), worst);
    CHECK_EQ_INT(-1, dp_blas_selfcheck(true, &worst));
    CHECK_REPORT(worst > 1, "a corrupted output passed the self-check (error %.3g)", worst);
    CHECK(strstr(dp_last_error(), "self-check") != NULL);
    dp_clear_error();

    /* this process: whatever the environment gave it, below the CPU only when said */
    dp_blas_info q;
    dp_blas_query(&q);
    CHECK(q.selfcheck_ok);
    CHECK_REPORT(!q.below_cpu || q.note[0], "this test runs %s below the %s CPU without a note",
                 q.kernel, dp_isa_name(q.cpu_isa));
    char line[1024];
    dp_blas_describe(line, sizeof line);
    printf("this process: %s\n", line);
    CHECK(strstr(line, q.kernel) != NULL && strstr(line, q.simd) != NULL);

    if (!getenv("DOPPEL_BIN")) {
        fprintf(stderr, "DOPPEL_BIN not set: the doppel binary's paths were not run\n");
        return check_done();
    }
    printf("doppel info --json:\n");

    /* a user's machine: no OPENBLAS_* variables */
    cJSON *j = run_info("", NULL, NULL);
    if (j) check_said_if_below(j, "default environment");
    cJSON_Delete(j);

    /* the user's OPENBLAS_CORETYPE wins, and is named */
    j = run_info("OPENBLAS_CORETYPE=Prescott", NULL, NULL);
    if (j) {
        check_said_if_below(j, "OPENBLAS_CORETYPE=Prescott (the user's)");
        CHECK_EQ_STR("Prescott", jstr(j, "blas_kernel"));
        CHECK(cpu <= DP_ISA_SSE3 || strstr(jstr(j, "blas_note"), "OPENBLAS_CORETYPE") != NULL);
    }
    cJSON_Delete(j);

    if (cpu <= DP_ISA_SSE3) {
        printf("this CPU has nothing above OpenBLAS's Prescott kernel: re-execution not run\n");
        return check_done();
    }
    /* OpenBLAS detected Prescott by itself: doppel re-executes on the kernel for this CPU */
    j = run_info("OPENBLAS_CORETYPE=Prescott DOPPEL_TEST_OPENBLAS_MISDETECT=1", NULL, NULL);
    if (j) {
        check_said_if_below(j, "OpenBLAS detected Prescott");
        CHECK_REPORT(dp_blas_kernel_isa(jstr(j, "blas_kernel")) == cpu,
                     "kernel %s is not the %s CPU's (doppel should have re-executed on %s)",
                     jstr(j, "blas_kernel"), dp_isa_name(cpu), jstr(j, "cpu_blas_kernel"));
        CHECK_EQ_STR(dp_blas_origin_name(DP_BLAS_DOPPEL), jstr(j, "blas_kernel_origin"));
        CHECK_EQ_STR("Prescott", jstr(j, "blas_kernel_detected"));
        CHECK(jtrue(j, "blas_selfcheck_ok"));
    }
    cJSON_Delete(j);

    /* ... and that kernel fails the self-check: back on Prescott, said on stderr and in info */
    bool said = false;
    j = run_info("OPENBLAS_CORETYPE=Prescott DOPPEL_TEST_OPENBLAS_MISDETECT=1 "
                 "DOPPEL_TEST_BLAS_SELFCHECK_FAIL=1",
                 "falling back to OpenBLAS's own choice, Prescott", &said);
    if (j) {
        check_said_if_below(j, "doppel's kernel fails the self-check");
        CHECK_EQ_STR("Prescott", jstr(j, "blas_kernel"));
        CHECK_EQ_STR(dp_blas_origin_name(DP_BLAS_FALLBACK), jstr(j, "blas_kernel_origin"));
        CHECK(strstr(jstr(j, "blas_note"), "failed the GEMM self-check") != NULL);
        CHECK(jtrue(j, "blas_selfcheck_ok")); /* Prescott's own GEMMs are right */
        CHECK_REPORT(said, "the fallback was not said on stderr");
    }
    cJSON_Delete(j);
    return check_done();
}
