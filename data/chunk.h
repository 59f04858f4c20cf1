/* The timeline of a DCE export and the conversations cut from it: messages in instant order
 * (streamed when the export is already in time order or newest-first, sorted in memory
 * otherwise), sessions on a silence gap, the reply rule of REFERENCE.md §2 (or multi-turn
 * windows), persona resolution by name and id, anonymization, the train/val split and stats. */
#ifndef DOPPEL_CHUNK_H
#define DOPPEL_CHUNK_H

#include "data/dataset.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum { DP_CHUNK_REPLY, DP_CHUNK_MULTI } dp_chunk_mode;

typedef struct {
    const char *persona; /* a name (every id that used it) or an author id */
    int64_t gap_seconds; /* a new session starts after this much silence (>= 1; default 300) */
    dp_chunk_mode mode;
    int max_turns;      /* multi: at most this many user+assistant turns a conversation (2..64) */
    const char *system; /* a system message first in every conversation, or NULL */
    bool anonymize;     /* other authors become user1, user2... (labels and @mentions) */
    bool keep_system;   /* keep DCE system messages as user lines */
    bool dedupe;        /* drop conversations equal to one already written */
    bool lenient;       /* skip malformed records (counted) instead of stopping */
    const char *const *exclude; /* names or ids whose messages are dropped (bots) */
    int n_exclude;
    int max_context_lines; /* keep the last N user lines (0: all) */
    int min_reply_chars;   /* drop samples whose assistant turn is shorter (code points) */
    double val_fraction;   /* share of sessions written to the validation set */
    uint64_t seed;
    bool force_sort; /* always collect and sort in memory (tests compare the paths) */
} dp_prep_opts;

void dp_prep_opts_default(dp_prep_opts *o);

typedef struct {
    int64_t rows, kept, dropped_empty, dropped_system, dropped_excluded, malformed;
    int64_t sessions, conv_train, conv_val, persona_messages, persona_runs_no_context,
        contexts_no_reply, dropped_short, dropped_duplicate;
    int64_t files, input_bytes, persona_ids;
    const char *order; /* how the timeline was built: "time order (streamed)", ... */
    int restarts;      /* 1 when a stream had to be re-read in the sorted mode */
    /* CPU seconds of the two threads (parsing; timeline + output): on two free cores the
     * larger one bounds the wall time */
    double reader_cpu_seconds, timeline_cpu_seconds;
    /* percentiles over written conversations: [p50, p90, p99, max] */
    double assistant_chars[4], user_chars[4], turns[4];
} dp_prep_stats;

typedef struct {
    uint64_t id;
    const char *const *names; /* in order of first use */
    int n_names;
    int64_t count;       /* rows (all kinds) */
    int64_t first, last; /* instants (DP_TICKS_PER_SECOND ticks) */
} dp_author_info;

/* Receives every conversation in timeline order; val: goes to the validation set. */
typedef int (*dp_conv_sink)(void *ctx, const dp_conversation *c, bool val);
/* Throws away what the sink holds (the stream turned out unordered and is read again). */
typedef int (*dp_conv_reset)(void *ctx);

typedef struct dp_prep dp_prep;
dp_prep *dp_prep_create(const dp_prep_opts *o);
void dp_prep_destroy(dp_prep *p);
/* Optional progress callback: bytes consumed across all inputs so far. */
void dp_prep_on_progress(dp_prep *p, void (*fn)(void *ctx, uint64_t bytes), void *ctx);
/* Reads the exports as one timeline and hands the conversations to sink. 0, or -1 with
 * dp_last_error() ("FILE:LINE: what is wrong"; persona not found lists the top authors). */
int dp_prep_run(dp_prep *p, const char *const *paths, int n, dp_conv_sink sink, dp_conv_reset reset,
                void *ctx);
/* Reads the exports only for their authors (for --list-authors). */
int dp_prep_scan_authors(dp_prep *p, const char *const *paths, int n);
/* The authors of the last run or scan, most active first (valid until the next run). */
int dp_prep_authors(dp_prep *p, const dp_author_info **list);
const dp_prep_stats *dp_prep_get_stats(const dp_prep *p);
/* In lenient mode: the first ten malformed records ("FILE:LINE: what"). */
int dp_prep_malformed_examples(const dp_prep *p, const char *const **list);

#endif
