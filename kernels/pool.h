/* A small thread pool for the decode step's parallel loops (kernels/cpu/pool.c). */
#ifndef DOPPEL_POOL_H
#define DOPPEL_POOL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* fn(ctx, begin, end) over [0, n), by the calling thread and up to omp_get_max_threads() - 1
 * pool workers, each claiming the next unclaimed piece: half a thread's share of what is left,
 * in whole chunks of `chunk` (guided: big pieces first, the last ones one chunk, so the threads
 * finish together; piece bounds depend on timing). Returns when every piece is done. A worker that has not woken up yet holds no work, so the caller never
 * waits on a thread the OS has not scheduled (OpenMP's static split and barrier do); workers
 * spin briefly, then sleep on a futex, so they do not burn a shared machine's CPU between
 * steps. Runs inline when called from inside an OpenMP region or from a second thread. */
typedef void (*dp_pool_fn)(void *ctx, int64_t begin, int64_t end);
void dp_pool_for(int64_t n, int64_t chunk, dp_pool_fn fn, void *ctx);
/* dp_pool_for over the rows of a GEMV (each row computed alone, so any split gives the same
 * bits), in chunks of 16 rows */
void dp_pool_rows(int64_t rows, dp_pool_fn fn, void *ctx);

#ifdef __cplusplus
}
#endif
#endif
