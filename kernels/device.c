/* dp_cuda_query for builds without the CUDA backend (the CUDA one is kernels/cuda/device.cu). */
#include "kernels/device.h"

#include <stdio.h>
#include <string.h>

#ifndef DOPPEL_HAVE_CUDA
void dp_cuda_query(dp_cuda_info *info) {
    memset(info, 0, sizeof *info);
    snprintf(info->status, sizeof info->status,
             "CUDA backend not compiled in (nvcc was not found at build time)");
}
#endif
