/* What the CUDA runtime says about this machine. One binary holds both backends: without a
 * device (or without CUDA compiled in) everything runs on the CPU. */
#ifndef DOPPEL_DEVICE_H
#define DOPPEL_DEVICE_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    bool compiled;    /* CUDA backend built into this binary */
    int device_count; /* 0 when no device (or no driver) */
    char name[256];   /* device 0 */
    size_t total_mem, free_mem;
    int cc_major, cc_minor;
    int runtime_version, driver_version; /* e.g. 13000; 0 when unknown */
    char status[256];                    /* why there is no device, for people */
} dp_cuda_info;

void dp_cuda_query(dp_cuda_info *info);

#ifdef __cplusplus
}
#endif
#endif
