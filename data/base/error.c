/* Per-thread last-error message and checked allocation. */
#include "data/base/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char last_error[1024];

int dp_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return -1;
}

int dp_fail_context(const char *fmt, ...) {
    char prefix[512], old[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_error, sizeof old);
    size_t n = strlen(prefix);
    memcpy(last_error, prefix, n);
    memcpy(last_error + n, ": ", 2);
    size_t room = sizeof last_error - n - 3, m = strlen(old);
    if (m > room) m = room; /* a long message keeps its beginning */
    memcpy(last_error + n + 2, old, m);
    last_error[n + 2 + m] = 0;
    return -1;
}

const char *dp_last_error(void) {
    return last_error;
}
void dp_clear_error(void) {
    last_error[0] = 0;
}

void *dp_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) dp_fail("out of memory (allocating %zu bytes)", n);
    return p;
}

void *dp_calloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) dp_fail("out of memory (allocating %zu x %zu bytes)", count, size);
    return p;
}

void *dp_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) dp_fail("out of memory (growing a buffer to %zu bytes)", n);
    return q;
}

char *dp_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = dp_malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}
