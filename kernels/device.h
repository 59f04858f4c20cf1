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

/* --device for every command that runs the model (train, chat): one set of names. */
typedef enum { DP_DEVICE_AUTO, DP_DEVICE_CPU, DP_DEVICE_CUDA, DP_DEVICE_EMU } dp_device_kind;

typedef struct {
    dp_device_kind asked;         /* what the name said */
    const struct dp_gpu_ops *gpu; /* dp_cuda_ops or dp_emu_ops; NULL: run on the CPU */
    dp_cuda_info cuda;            /* what the runtime said (queried unless asked was cpu/emu) */
    bool cpu_fallback;            /* auto found no CUDA device: the CPU, say so once */
    char why[320];                /* on failure: what went wrong and what to do, for people */
} dp_device;

/* The backend for --device NAME: "auto" (CUDA when the runtime finds a device, else the CPU),
 * "cpu", "cuda", and with allow_emu the hidden "emu" (the CUDA kernels on CPU fibers, for
 * tests; only in binaries that link the EMU backend). Returns 0, or -1 with dev->why set for an
 * unknown name (usage) or a backend that is not there; *bad_name tells the two apart. */
int dp_device_select(const char *name, bool allow_emu, dp_device *dev, bool *bad_name);

#ifdef __cplusplus
}
#endif
#endif
