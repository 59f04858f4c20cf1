/* libFuzzer target: the DCE JSON reader (object cutting, cJSON, surrogates) on arbitrary bytes. */
#include "fuzz_dce.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fuzz_dce_reader("fuzz.json", data, size);
}
