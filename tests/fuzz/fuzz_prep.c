/* libFuzzer target: the whole of doppel prep (reader, timeline, sessions, reply/multi rules,
 * anonymization, split) on arbitrary bytes, with the options taken from the first byte. The
 * input goes through a file because dp_prep_run reads paths. */
#include "data/chunk.h"
#include "data/base/error.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int sink(void *ctx, const dp_conversation *c, bool val) {
    (void)val;
    size_t *n = ctx;
    for (int i = 0; i < c->n; i++) *n += c->msgs[i].len;
    return 0;
}

static char path[64];
static void remove_input(void) {
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    if (!path[0]) {
        snprintf(path, sizeof path, "/tmp/fuzz-prep-%d.csv", (int)getpid());
        atexit(remove_input);
    }
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data + 1, 1, size - 1, f);
    fclose(f);
    uint8_t k = data[0];
    dp_prep_opts o;
    dp_prep_opts_default(&o);
    o.persona = k & 1 ? "me" : "9";
    o.gap_seconds = k & 2 ? 300 : 1;
    o.mode = k & 4 ? DP_CHUNK_MULTI : DP_CHUNK_REPLY;
    o.max_turns = k & 8 ? 2 : 32;
    o.anonymize = k & 16;
    o.keep_system = k & 32;
    o.dedupe = k & 64;
    o.lenient = k & 128;
    o.max_context_lines = k & 8 ? 2 : 0;
    o.min_reply_chars = k & 64 ? 3 : 0;
    o.val_fraction = k & 32 ? 0.3 : 0;
    const char *exclude[] = {"bot"};
    o.exclude = exclude;
    o.n_exclude = k & 2 ? 1 : 0;
    dp_prep *p = dp_prep_create(&o);
    size_t n = 0;
    const char *paths[1] = {path};
    dp_prep_run(p, paths, 1, sink, NULL, &n);
    dp_prep_destroy(p);
    return 0;
}
