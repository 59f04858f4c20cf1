/* Test helper for the suites that run CUDA code under EMU: the sanitizer switch (EMU fibers run
 * ~50x slower under ASan, so those suites run a reduced matrix), the tiny reference models of
 * tests/fixtures/ loaded fp32 or NF4, and a fixed non-trivial LoRA adapter. */
#ifndef DOPPEL_FIXTURE_EMU_H
#define DOPPEL_FIXTURE_EMU_H

#include "data/base/error.h"
#include "infer/model_load.h"
#include "infer/adapter.h"

#include <stdbool.h>
#include <stdio.h>

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

/* tests/fixtures/NAME loaded (quantized to NF4, blocksize 64, lm_head kept, when nf4); NULL
 * after a failed check. */
static inline dp_model *emu_tiny_model(const char *name, bool nf4) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/%s", DOPPEL_SOURCE_DIR, name);
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
