/* File content hashing through XXH3's streaming state (see hash.h). */
#include "data/base/hash.h"
#include "data/base/error.h"
#include "data/base/io.h"

#include <stdlib.h>

int dp_hash_file(const char *path, uint64_t *hash) {
    dp_reader *r = dp_reader_open(path);
    if (!r) return -1;
    static const size_t cap = 1 << 20;
    char *buf = dp_malloc(cap);
    XXH3_state_t *st = XXH3_createState();
    int rc = -1;
    if (!buf || !st || XXH3_64bits_reset(st) != XXH_OK) {
        if (buf && !st) dp_fail("%s: out of memory for the hash state", path);
        goto done;
    }
    int64_t n;
    while ((n = dp_reader_read(r, buf, cap)) > 0) XXH3_64bits_update(st, buf, (size_t)n);
    if (n < 0) goto done;
    *hash = XXH3_64bits_digest(st);
    rc = 0;
done:
    XXH3_freeState(st);
    free(buf);
    dp_reader_close(r);
    return rc;
}
