/* libFuzzer target: the GGUF reader (header, KVs, tensor infos) and dequantization of every
 * accepted tensor of a supported type. */
#include "infer/config.h"
#include "infer/gguf.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dp_gguf *g = dp_gguf_open_memory(data, size, "fuzz");
    if (!g) return 0;
    for (uint64_t k = 0; k < g->n_tensors; k++) {
        const dp_gguf_tensor *t = &g->tensors[k];
        if (t->numel > (1 << 20)) continue;
        float *out = malloc((size_t)t->numel * sizeof(float) + 1);
        if (out) (void)dp_gguf_tensor_f32(t, out);
        free(out);
    }
    for (uint64_t k = 0; k < g->n_kv; k++) {
        const char *key = g->kv[k].key;
        int64_t i, *ia = NULL;
        double f;
        const char *s;
        char *const *sa;
        const uint64_t *lens;
        float *fa = NULL;
        uint64_t n;
        (void)dp_gguf_get_int(g, key, &i);
        (void)dp_gguf_get_num(g, key, &f);
        (void)dp_gguf_get_str(g, key, &s);
        (void)dp_gguf_get_str_array(g, key, &sa, &lens, &n);
        if (dp_gguf_get_int_array(g, key, &ia, &n) == 0) free(ia);
        if (dp_gguf_get_f32_array(g, key, &fa, &n) == 0) free(fa);
    }
    dp_model_config cfg;
    (void)dp_config_from_gguf(&cfg, g);
    dp_gguf_close(g);
    return 0;
}
