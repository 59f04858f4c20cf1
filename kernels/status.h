/* How a kernel reports a failure: it records one short message for people (the op and the bad
 * shape, the CUDA error, the EMU deadlock) and returns -1; the caller adds its own context with
 * dp_fail_context. This declaration is all that kernels see of error reporting, so they know
 * no files, text formats or I/O. The message lands in the program's one per-thread error slot
 * (the ground floor's, data/base/error.c, read by dp_last_error), so it reaches the user through
 * every layer above unchanged. tests/test_base.c includes this header and data/base/error.h
 * together, so the two declarations cannot drift apart. */
#ifndef DOPPEL_KERNELS_STATUS_H
#define DOPPEL_KERNELS_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

/* Records the message (printf format) for the calling thread and returns -1. */
#if defined(__GNUC__)
int dp_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#else
int dp_fail(const char *fmt, ...);
#endif

/* Forgets the calling thread's message (a failure the kernel handled itself, e.g. the BLAS
 * self-check's fallback). */
void dp_clear_error(void);

#ifdef __cplusplus
}
#endif
#endif
