/* Private to the DCE readers (data/dce*.c): the shared input buffer and the two format states. */
#ifndef DOPPEL_DCE_IMPL_H
#define DOPPEL_DCE_IMPL_H

#include "data/dce.h"
#include "data/base/io.h"

typedef struct dce_csv dce_csv;
typedef struct dce_json dce_json;

struct dp_dce_reader {
    char *name;
    dp_reader *rd;            /* file input, or NULL for memory input */
    const unsigned char *mem; /* memory input */
    size_t mem_len;
    unsigned char *buf; /* current window of the input */
    size_t len, pos, cap;
    bool eof;
    int64_t line; /* line number at buf[pos] */
    bool json;
    dce_csv *csv;
    dce_json *js;
};

/* Refills the window when pos == len; returns 1 when bytes are available, 0 at end, -1 error. */
int dce_fill(dp_dce_reader *r);

int dce_csv_init(dp_dce_reader *r);
int dce_csv_next(dp_dce_reader *r, dp_dce_msg *m);
void dce_csv_free(dp_dce_reader *r);
int dce_json_init(dp_dce_reader *r);
int dce_json_next(dp_dce_reader *r, dp_dce_msg *m);
void dce_json_free(dp_dce_reader *r);

#endif
