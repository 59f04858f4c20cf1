/* libFuzzer target: the safetensors header parser and its checks, over arbitrary bytes. */
#include "infer/safetensors.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dp_safetensors *st = dp_safetensors_open_memory(data, size, "fuzz");
    if (st) {
        /* touch every accepted tensor's bytes: they must lie inside the buffer */
        volatile uint8_t sink = 0;
        for (int i = 0; i < st->n_tensors; i++) {
            const dp_st_tensor *t = &st->tensors[i];
            if (t->nbytes)
                sink ^= ((const uint8_t *)t->data)[0] ^ ((const uint8_t *)t->data)[t->nbytes - 1];
            (void)dp_safetensors_find(st, t->name);
        }
        (void)sink;
        (void)dp_safetensors_meta(st, "format");
    }
    dp_safetensors_close(st);
    return 0;
}
