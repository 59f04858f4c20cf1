/* doppel prep on the bundled sample export against its independent expected output
 * (tests/reference/prep_reference.py, Python's csv module): streamed, sorted in memory, newest
 * first, as DCE JSON (.json.zst) and with the persona given by id. */
#include "prep_compare.h"

int main(void) {
    char a[700], b[700];
    snprintf(a, sizeof a, "%s/tests/fixtures/sample-export.csv", DOPPEL_SOURCE_DIR);
    snprintf(b, sizeof b, "%s/tests/fixtures/sample-export.expected.jsonl", DOPPEL_SOURCE_DIR);
    check_export(a, b, "mossy");
    snprintf(a, sizeof a, "%s/tests/fixtures/sample-export.json.zst", DOPPEL_SOURCE_DIR);
    conv_list want = load_expected(b), got = run(a, "mossy", false, NULL);
    compare("sample-export.json.zst (DCE JSON, zstd)", &got, &want);
    list_free(&got);
    /* by id: the persona renames herself to mossy.exe halfway; the id covers both names */
    got = run(a, "829104736521048064", false, NULL);
    compare("sample-export.json.zst (persona by id)", &got, &want);
    list_free(&got);
    list_free(&want);
    return check_done();
}
