/* Progress display for long work: a bar with count, rate and ETA on a terminal, plain
 * periodic lines when stderr is not a terminal (CI logs), nothing when quiet.
 * Lives beside the library code (not in cmd/) because prep and train loops report to it. */
#ifndef DOPPEL_PROGRESS_H
#define DOPPEL_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dp_progress dp_progress;

enum { DP_PROGRESS_AUTO = 0, DP_PROGRESS_PLAIN = 1, DP_PROGRESS_BAR = 2 };

typedef struct {
    FILE *out;             /* default stderr */
    bool quiet;            /* print nothing at all */
    int style;             /* DP_PROGRESS_AUTO (isatty decides), _PLAIN or _BAR */
    double plain_interval; /* seconds between plain lines (default 10) */
    double (*clock)(void); /* seconds; default CLOCK_MONOTONIC (tests inject a fake) */
} dp_progress_opts;

/* total <= 0: unknown total (no percentage, no ETA). unit: "msg", "tok", "step"... */
dp_progress *dp_progress_start(const char *label, int64_t total, const char *unit,
                               const dp_progress_opts *opts);
void dp_progress_update(dp_progress *p, int64_t done);      /* absolute count */
void dp_progress_note(dp_progress *p, const char *fmt, ...) /* text after the figures */
    __attribute__((format(printf, 2, 3)));
void dp_progress_finish(dp_progress *p); /* prints the final line and frees p */

/* "1:02:03", "4:05" or "--:--" for a negative value. */
void dp_format_duration(char *out, size_t cap, double seconds);
double dp_now_seconds(void);

#ifdef __cplusplus
}
#endif
#endif
