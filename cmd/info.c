/* doppel info: what this build and this machine can do. */
#include "cmd/commands.h"
#include "kernels/cpu/blas.h"
#include "kernels/device.h"
#include "kernels/ops.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <csv.h>
#include <hdf5.h>
#include <microhttpd.h>
#include <omp.h>
#include <pcre2.h>
#include <stdio.h>
#include <utf8proc.h>
#include <zstd.h>

typedef struct {
    bool json_out;
} info_options;

static const dp_opt opts[] = {
    {"json", DP_OPT_FLAG, DP_FIELD(info_options, json_out), NULL,
     "print the same facts as one JSON object"},
    {0},
};

const dp_command_spec dp_info_spec = {
    .name = "info",
    .usage = "[--json]",
    .summary = "show the build, the CUDA device (if any), the BLAS kernel, SIMD paths and library "
               "versions",
    .opts = opts,
    .min_args = 0,
    .max_args = 0,
};

int dp_cmd_info(int argc, char **argv) {
    info_options o = {0};
    dp_cli cli;
    int rc = dp_cli_parse(&dp_info_spec, argc, argv, &o, &cli);
    if (rc) return rc < 0 ? DP_EXIT_OK : rc;
    dp_cli_free(&cli); /* no strings kept */
    const bool json_out = o.json_out;

    dp_cuda_info cu;
    dp_cuda_query(&cu);
    char pcre2_version[64] = "?";
    pcre2_config(PCRE2_CONFIG_VERSION, pcre2_version);
    unsigned h5maj = 0, h5min = 0, h5rel = 0;
    H5get_libversion(&h5maj, &h5min, &h5rel);
    char h5[32], csvv[32];
    snprintf(h5, sizeof h5, "%u.%u.%u", h5maj, h5min, h5rel);
    snprintf(csvv, sizeof csvv, "%d.%d.%d", CSV_MAJOR, CSV_MINOR, CSV_RELEASE);
    const char *backend = cu.device_count > 0 ? "cuda" : "cpu";
    dp_blas_info bl;
    dp_blas_query(&bl);

    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "version", DOPPEL_VERSION);
    cJSON_AddStringToObject(j, "build_type", DOPPEL_BUILD_TYPE);
    cJSON_AddBoolToObject(j, "cuda_compiled", cu.compiled);
    cJSON_AddNumberToObject(j, "cuda_devices", cu.device_count);
    cJSON_AddStringToObject(j, "cuda_status", cu.status);
    if (cu.device_count > 0) {
        cJSON_AddStringToObject(j, "cuda_device", cu.name);
        cJSON_AddNumberToObject(j, "cuda_memory_bytes", (double)cu.total_mem);
    }
    cJSON_AddStringToObject(j, "default_backend", backend);
    cJSON_AddStringToObject(j, "gpu_speed", "not yet measured on a real GPU");
    cJSON_AddStringToObject(j, "blas", openblas_get_config());
    cJSON_AddStringToObject(j, "blas_kernel", bl.kernel);
    cJSON_AddStringToObject(j, "blas_kernel_isa", dp_isa_name(bl.kernel_isa));
    cJSON_AddStringToObject(j, "blas_kernel_origin", dp_blas_origin_name(bl.origin));
    if (bl.detected[0]) cJSON_AddStringToObject(j, "blas_kernel_detected", bl.detected);
    cJSON_AddStringToObject(j, "cpu_isa", dp_isa_name(bl.cpu_isa));
    cJSON_AddStringToObject(j, "cpu_blas_kernel", bl.cpu_kernel);
    cJSON_AddBoolToObject(j, "blas_below_cpu", bl.below_cpu);
    cJSON_AddBoolToObject(j, "blas_selfcheck_ok", bl.selfcheck_ok);
    cJSON_AddStringToObject(j, "blas_note", bl.note);
    cJSON_AddStringToObject(j, "simd", bl.simd);
    cJSON_AddBoolToObject(j, "int8_decode", dp_gemv_i8_supported());
    cJSON_AddNumberToObject(j, "blas_threads", openblas_get_num_threads());
    cJSON_AddNumberToObject(j, "omp_threads", omp_get_max_threads());
    cJSON *libs = cJSON_AddObjectToObject(j, "libraries");
    cJSON_AddStringToObject(libs, "zstd", ZSTD_versionString());
    cJSON_AddStringToObject(libs, "hdf5", h5);
    cJSON_AddStringToObject(libs, "pcre2", pcre2_version);
    cJSON_AddStringToObject(libs, "cjson", cJSON_Version());
    cJSON_AddStringToObject(libs, "utf8proc", utf8proc_version());
    cJSON_AddStringToObject(libs, "libcsv", csvv);
    cJSON_AddStringToObject(libs, "libmicrohttpd", MHD_get_version());

    if (json_out) {
        char *s = cJSON_Print(j);
        puts(s);
        cJSON_free(s);
    } else {
        printf("doppel %s (%s build)\n", DOPPEL_VERSION, DOPPEL_BUILD_TYPE);
        printf("CUDA backend:  %s\n",
               cu.compiled ? "compiled in (sm_80, sm_86, sm_89, sm_90)" : "not compiled in");
        if (cu.compiled)
            printf("CUDA runtime:  %d.%d, driver %s\n", cu.runtime_version / 1000,
                   (cu.runtime_version % 1000) / 10, cu.driver_version ? "present" : "not found");
        if (cu.device_count > 0)
            printf("CUDA device:   %s, %.1f GiB, compute capability %d.%d\n", cu.name,
                   (double)cu.total_mem / (1 << 30), cu.cc_major, cu.cc_minor);
        else
            printf("CUDA device:   none (%s)\n", cu.status);
        printf("backend:       %s (--device auto)%s\n", backend,
               cu.device_count > 0 ? "" : ": everything runs on the CPU");
        printf("GPU speed:     not yet measured on a real GPU (kernels are tested under EMU)\n");
        printf("BLAS:          %s, %d threads; OpenMP %d threads\n", openblas_get_config(),
               openblas_get_num_threads(), omp_get_max_threads());
        printf("BLAS kernel:   %s (%s; %s%s%s) on an %s CPU; GEMM self-check %s\n", bl.kernel,
               dp_isa_name(bl.kernel_isa), dp_blas_origin_name(bl.origin),
               bl.detected[0] ? ", OpenBLAS picked " : "", bl.detected, dp_isa_name(bl.cpu_isa),
               bl.selfcheck_ok ? "ok" : "FAILED");
        if (bl.note[0]) printf("BLAS note:     %s\n", bl.note);
        printf("CPU kernels:   doppel's own SIMD path %s (DOPPEL_SIMD=scalar|avx2 narrows it)\n",
               bl.simd);
        const char *bk = dp_bf16_kernel_name();
        printf("bf16 products: %s%s\n", bk ? bk : "none (train's NF4 base products run in fp32)",
               bk ? " (train's NF4 base products by default)" : "");
        printf("int8 decode:   %s\n", dp_gemv_i8_supported()
                                          ? "AVX512-VNNI vpdpbusd (chat/serve --decode int8)"
                                          : "not on this CPU (--decode int8 runs fp32)");
        printf("libraries:     zstd %s, HDF5 %s, PCRE2 %s, cJSON %s, utf8proc %s, libcsv %s, "
               "libmicrohttpd %s\n",
               ZSTD_versionString(), h5, pcre2_version, cJSON_Version(), utf8proc_version(), csvv,
               MHD_get_version());
    }
    cJSON_Delete(j);
    return DP_EXIT_OK;
}
