/* libFuzzer target: the DCE CSV reader (libcsv, line tracking, field checks) on arbitrary bytes. */
#include "fuzz_dce.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fuzz_dce_reader("fuzz.csv", data, size);
}
