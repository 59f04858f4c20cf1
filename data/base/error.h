/* Error reporting for the whole library: a failing call records one human-readable message
 * (per thread) and returns -1 or NULL; the command prints it. */
#ifndef DOPPEL_ERROR_H
#define DOPPEL_ERROR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define DP_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define DP_PRINTF(a, b)
#endif

/* Records the message and returns -1, so `return dp_fail("x.csv:%d: bad", line);` reads well. */
int dp_fail(const char *fmt, ...) DP_PRINTF(1, 2);
/* Prefixes the recorded message ("context: old message"); returns -1. */
int dp_fail_context(const char *fmt, ...) DP_PRINTF(1, 2);
/* The last recorded message ("" if none). */
const char *dp_last_error(void);
void dp_clear_error(void);

/* Allocation that reports failure through dp_fail instead of returning silently. */
void *dp_malloc(size_t n);
void *dp_calloc(size_t count, size_t size);
void *dp_realloc(void *p, size_t n);
char *dp_strdup(const char *s);

#ifdef __cplusplus
}
#endif
#endif
