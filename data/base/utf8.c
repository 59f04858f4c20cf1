/* UTF-8 validation (utf8proc decodes; ASCII runs are skipped 8 bytes at a time). */
#include "data/base/utf8.h"

#include <stdint.h>
#include <string.h>
#include <utf8proc.h>

size_t dp_utf8_valid_prefix(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        /* ASCII runs 8 bytes at a time: most chat text is ASCII */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ULL) break;
            i += 8;
        }
        if (i >= n) break;
        if ((unsigned char)s[i] < 0x80) {
            i++;
            continue;
        }
        utf8proc_int32_t cp;
        utf8proc_ssize_t k =
            utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0 || !utf8proc_codepoint_valid(cp)) return i;
        i += (size_t)k;
    }
    return n;
}
