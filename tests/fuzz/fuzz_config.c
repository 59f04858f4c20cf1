/* libFuzzer target: config.json and generation_config.json parsing with range checks. */
#include "infer/config.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dp_model_config cfg;
    if (dp_config_from_json(&cfg, (const char *)data, size, "fuzz") == 0) {
        /* accepted configs satisfy what the loader relies on */
        if (cfg.D <= 0 || cfg.H % cfg.KVH || cfg.L <= 0 || cfg.V <= 0) __builtin_trap();
        (void)dp_config_add_generation(&cfg, (const char *)data, size, "fuzz");
        if (cfg.n_eos > 8) __builtin_trap();
    }
    return 0;
}
