/* doppel prep on ../shared/data/dce/export-{small,hard}.csv (persona kaiaku, gap 300, no
 * validation split): the conversations must equal export-*.expected.jsonl exactly, streamed,
 * sorted in memory and newest first. Skipped when ../shared is absent (a user's clone). */
#include "prep_compare.h"

int main(void) {
    const char *shared = check_shared_dir();
    if (!shared) SKIP("../shared not found: the shared DCE exports cannot be compared");
    const char *names[] = {"small", "hard"};
    char a[4300], b[4300];
    for (int i = 0; i < 2; i++) {
        snprintf(a, sizeof a, "%s/data/dce/export-%s.csv", shared, names[i]);
        snprintf(b, sizeof b, "%s/data/dce/export-%s.expected.jsonl", shared, names[i]);
        if (access(a, R_OK) || access(b, R_OK)) SKIP("%s or its expected output is missing", a);
        check_export(a, b, "kaiaku");
    }
    return check_done();
}
