/* --device selection for train and chat, and dp_cuda_query for builds without the CUDA backend
 * (the CUDA one is kernels/cuda/device.cu). */
#include "kernels/device.h"
#include "kernels/cuda/kernels.h"

#include <stdio.h>
#include <string.h>

#ifndef DOPPEL_HAVE_CUDA
void dp_cuda_query(dp_cuda_info *info) {
    memset(info, 0, sizeof *info);
    snprintf(info->status, sizeof info->status,
             "CUDA backend not compiled in (nvcc was not found at build time)");
}
#endif

/* The EMU backend lives in libdoppel_emu, linked by tests: a weak reference, so libdoppel
 * links without it and `--device emu` says so. */
extern const dp_gpu_ops dp_emu_ops __attribute__((weak));

int dp_device_select(const char *name, bool allow_emu, dp_device *dev, bool *bad_name) {
    memset(dev, 0, sizeof *dev);
    *bad_name = false;
    if (!strcmp(name, "auto"))
        dev->asked = DP_DEVICE_AUTO;
    else if (!strcmp(name, "cpu"))
        dev->asked = DP_DEVICE_CPU;
    else if (!strcmp(name, "cuda"))
        dev->asked = DP_DEVICE_CUDA;
    else if (allow_emu && !strcmp(name, "emu"))
        dev->asked = DP_DEVICE_EMU;
    else {
        *bad_name = true;
        snprintf(dev->why, sizeof dev->why, "--device %s: choose auto, cpu or cuda", name);
        return -1;
    }
    if (dev->asked == DP_DEVICE_CPU) return 0;
    if (dev->asked == DP_DEVICE_EMU) {
        if (!&dp_emu_ops) {
            snprintf(dev->why, sizeof dev->why,
                     "--device emu: this binary was built without the EMU backend (it needs the "
                     "CUDA toolkit's headers)");
            return -1;
        }
        dev->gpu = &dp_emu_ops;
        return 0;
    }
    dp_cuda_query(&dev->cuda);
#ifdef DOPPEL_HAVE_CUDA
    if (dev->cuda.device_count > 0) dev->gpu = &dp_cuda_ops;
#endif
    if (dev->gpu) return 0;
    if (dev->asked == DP_DEVICE_CUDA) {
        snprintf(dev->why, sizeof dev->why, "--device cuda: %s (use --device cpu)",
                 dev->cuda.status);
        return -1;
    }
    dev->cpu_fallback = true;
    return 0;
}
