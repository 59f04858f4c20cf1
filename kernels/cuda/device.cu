/* dp_cuda_query: device detection through the CUDA runtime (a machine without a GPU or
 * driver answers "no device", and doppel runs on the CPU). */
#ifndef DOPPEL_EMU
#include "kernels/cuda/common.cuh"
#include "kernels/device.h"

#include <string.h>

extern "C" void dp_cuda_query(dp_cuda_info *info) {
    memset(info, 0, sizeof *info);
    info->compiled = true;
    cudaRuntimeGetVersion(&info->runtime_version);
    cudaDriverGetVersion(&info->driver_version); /* 0 when no driver is installed */
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess || n == 0) {
        snprintf(info->status, sizeof info->status, "no CUDA device: %s",
                 err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
        return;
    }
    info->device_count = n;
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
        snprintf(info->name, sizeof info->name, "%s", prop.name);
        info->total_mem = prop.totalGlobalMem;
        info->cc_major = prop.major;
        info->cc_minor = prop.minor;
    }
    cudaMemGetInfo(&info->free_mem, &info->total_mem);
    snprintf(info->status, sizeof info->status, "%d device(s)", n);
}
#endif
