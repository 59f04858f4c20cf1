/* The body shared by the DCE reader fuzz targets: every record must end as a message, a BAD
 * record or a FATAL stop; never a crash, a hang or a leak. The file name picks the reader. */
#ifndef DOPPEL_FUZZ_DCE_H
#define DOPPEL_FUZZ_DCE_H

#include "data/dce.h"
#include "data/base/error.h"

#include <stdint.h>
#include <string.h>

static int fuzz_dce_reader(const char *name, const uint8_t *data, size_t size) {
    dp_dce_reader *r = dp_dce_open_mem(name, data, size);
    if (!r) return 0;
    dp_dce_msg m;
    volatile size_t sink = 0;
    for (int i = 0; i < 20000; i++) { /* a reader that never ends would show as a timeout */
        int rc = dp_dce_next(r, &m);
        if (rc == DP_DCE_END || rc == DP_DCE_FATAL) break;
        if (rc == DP_DCE_MSG) {
            /* touch every byte the reader hands out */
            for (size_t k = 0; k < m.content_len; k++) sink += (unsigned char)m.content[k];
            for (size_t k = 0; k < m.author_len; k++) sink += (unsigned char)m.author[k];
            char iso[48];
            dp_dce_format_instant(m.t, iso);
            sink += strlen(iso);
        }
    }
    dp_dce_close(r);
    (void)sink; /* a volatile read: the bytes were really touched */
    return 0;
}

#endif
