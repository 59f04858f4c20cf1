/* Test helper for the suites that run CUDA code under EMU: the backend switch (the same suites on
 * a real GPU), the sanitizer switch (EMU fibers run ~50x slower under ASan, so those suites run
 * a reduced matrix), the tiny reference models of tests/fixtures/ loaded fp32 or NF4, and a
 * fixed non-trivial LoRA adapter. */
#ifndef DOPPEL_FIXTURE_EMU_H
#define DOPPEL_FIXTURE_EMU_H

#include "data/base/error.h"
#include "infer/model_load.h"
#include "infer/adapter.h"
#include "kernels/cuda/kernels.h"
#include "kernels/device.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* DOPPEL_TEST_BACKEND picks where a *_emu suite runs its CUDA code: "emu" (or unset) on CPU
 * fibers, "cuda" on the real device (tests/gpu/check.sh). NULL, with dp_last_error saying why
 * and what to do, when the backend asked for is not there: asking for cuda and silently getting
 * EMU would report a GPU check that never ran. */
static inline const dp_gpu_ops *test_gpu_backend(void) {
    const char *name = getenv("DOPPEL_TEST_BACKEND");
    if (!name || !*name || !strcmp(name, "emu")) return &dp_emu_ops;
    if (strcmp(name, "cuda")) {
        dp_fail("DOPPEL_TEST_BACKEND=%s: choose emu (the default) or cuda", name);
        return NULL;
    }
#ifdef DOPPEL_HAVE_CUDA
    dp_cuda_info info;
    dp_cuda_query(&info);
    if (info.device_count > 0) return &dp_cuda_ops;
    dp_fail("DOPPEL_TEST_BACKEND=cuda: %s (unset it to run under EMU)", info.status);
#else
    dp_fail("DOPPEL_TEST_BACKEND=cuda: this suite was built without the CUDA backend (configure "
            "where nvcc is found, e.g. cmake --preset portable, or unset it to run under EMU)");
#endif
    return NULL;
}

/* EMU records every device byte (dp_emu_device_bytes): the exact accounting checks run there.
 * A real device has no such counter; tests/gpu/check.sh measures its peak with cudaMemGetInfo. */
static inline bool test_gpu_counts_bytes(const dp_gpu_ops *gpu) {
    return gpu == &dp_emu_ops;
}

/* The suite's backend, announced on stderr; NULL (and one failed check) when it is not there. */
static inline const dp_gpu_ops *test_gpu_backend_or_fail(void) {
    const dp_gpu_ops *gpu = test_gpu_backend();
    if (gpu)
        fprintf(stderr, "backend: %s (DOPPEL_TEST_BACKEND)\n", gpu->backend);
    else
        CHECK_REPORT(0, "%s", dp_last_error());
    return gpu;
}

#if defined(__SANITIZE_ADDRESS__)
#define REDUCED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define REDUCED 1
#endif
#endif
#ifndef REDUCED
#define REDUCED 0
#endif

static const char *const EMU_MODELS[] = {"tiny-qwen2", "tiny-llama", "tiny-qwen3"};
#define EMU_N_MODELS 3

/* The checkout whose tests/fixtures the suite reads: the one it was built from, or
 * DOPPEL_TEST_SOURCE_DIR (a build copied to another machine, as tests/gpu/check.sh does). */
static inline const char *test_source_dir(void) {
    const char *dir = getenv("DOPPEL_TEST_SOURCE_DIR");
    return dir && *dir ? dir : DOPPEL_SOURCE_DIR;
}

/* tests/fixtures/NAME loaded (quantized to NF4, blocksize 64, lm_head kept, when nf4); NULL
 * after a failed check. */
static inline dp_model *emu_tiny_model(const char *name, bool nf4) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/%s", test_source_dir(), name);
    dp_load_opts opts = {.quiet = true};
    dp_model *m = dp_model_load(dir, &opts);
    if (!m || (nf4 && dp_model_quantize_nf4(m, 64, false))) {
        CHECK_REPORT(0, "%s: %s", name, dp_last_error());
        dp_model_free(m);
        return NULL;
    }
    return m;
}

/* Every A and B uniform in [-0.2, 0.2) from an LCG seeded with seed (PEFT's init leaves B = 0,
 * which would make the adapter a no-op and every dA zero). */
static inline void emu_fill_lora(dp_lora *lora, uint64_t seed) {
    uint64_t st = seed;
    for (size_t i = 0; i < lora->n; i++) {
        st = st * 6364136223846793005ULL + 1442695040888963407ULL;
        lora->params[i] = (float)((double)(st >> 40) / (1 << 24) - 0.5) * 0.4f;
    }
}

#endif
