/* The decode thread pool: jobs published through a generation counter, pieces claimed with one
 * compare-and-swap on (generation, first unclaimed index), workers that spin for a short while
 * and then sleep on a futex. Only the caller waits, and only for pieces a worker has actually
 * claimed. */
#include "kernels/pool.h"

#include <limits.h>
#include <linux/futex.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

#define MAX_WORKERS 63
#define SPIN_ITERS  2000 /* ~ 100 us of pause (~140 cycles each) before a worker sleeps */

typedef struct {
    _Atomic(dp_pool_fn) fn;
    _Atomic(void *) ctx;
    _Atomic int64_t n, chunk, split; /* split: twice the threads taking part */
} job;

static struct {
    atomic_uint gen;           /* generation of the current job (futex word) */
    atomic_uint_fast64_t next; /* (gen << 32) | first unclaimed index */
    atomic_int_fast64_t done;  /* indices finished in the current job */
    atomic_int sleepers;
    job slot[2]; /* the current and the previous job: a late reader checks gen by its CAS */
    int workers;
    pthread_mutex_t caller; /* one job at a time */
    pthread_once_t once;
} P = {.caller = PTHREAD_MUTEX_INITIALIZER, .once = PTHREAD_ONCE_INIT};

static long futex(atomic_uint *addr, int op, unsigned val) {
    return syscall(SYS_futex, (unsigned *)addr, op, val, NULL, NULL, 0);
}

/* claims and runs pieces of job g until none are left or the job has moved on */
static void run_chunks(unsigned g) {
    const job *j = &P.slot[g & 1];
    dp_pool_fn fn = atomic_load_explicit(&j->fn, memory_order_relaxed);
    void *ctx = atomic_load_explicit(&j->ctx, memory_order_relaxed);
    int64_t n = atomic_load_explicit(&j->n, memory_order_relaxed),
            chunk = atomic_load_explicit(&j->chunk, memory_order_relaxed),
            split = atomic_load_explicit(&j->split, memory_order_relaxed);
    uint64_t cur = atomic_load(&P.next);
    for (;;) {
        int64_t b = (int64_t)(uint32_t)cur;
        if ((unsigned)(cur >> 32) != g || b >= n) return;
        /* half a thread's share of what is left, in whole chunks: large pieces first, small
         * ones last, so the threads finish together (5% off a 4-row serve step against fixed
         * chunks of an eighth of a thread's share, bench_serve_step A/B) */
        int64_t size = (n - b) / split;
        size = size > chunk ? (size + chunk - 1) / chunk * chunk : chunk;
        int64_t e = b + size < n ? b + size : n;
        /* success proves job g is still current, so the fields read above were its own */
        if (!atomic_compare_exchange_weak(&P.next, &cur, ((uint64_t)g << 32) | (uint64_t)e))
            continue;
        fn(ctx, b, e);
        atomic_fetch_add(&P.done, e - b);
        cur = atomic_load(&P.next);
    }
}

static void *worker(void *arg) {
    (void)arg;
    unsigned seen = atomic_load(&P.gen);
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&P.gen, memory_order_acquire)) == seen) {
            if (++spins < SPIN_ITERS) {
                cpu_relax();
                continue;
            }
            atomic_fetch_add(&P.sleepers, 1);
            if (atomic_load(&P.gen) == seen) futex(&P.gen, FUTEX_WAIT_PRIVATE, seen);
            atomic_fetch_sub(&P.sleepers, 1);
            spins = 0;
        }
        seen = g;
        run_chunks(g);
    }
    return NULL;
}

static void start_workers(void) {
    int want = omp_get_max_threads() - 1;
    if (want > MAX_WORKERS) want = MAX_WORKERS;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    for (int i = 0; i < want; i++) {
        pthread_t t;
        if (pthread_create(&t, &a, worker, NULL)) break; /* fewer workers: still correct */
        P.workers++;
    }
    pthread_attr_destroy(&a);
}

void dp_pool_for(int64_t n, int64_t chunk, dp_pool_fn fn, void *ctx) {
    if (n <= 0) return;
    if (chunk <= 0) chunk = 1;
    if (n <= chunk || n > UINT32_MAX || omp_get_max_threads() < 2 || omp_in_parallel() ||
        pthread_mutex_trylock(&P.caller)) {
        fn(ctx, 0, n);
        return;
    }
    pthread_once(&P.once, start_workers);
    unsigned g = atomic_load(&P.gen) + 1;
    job *j = &P.slot[g & 1];
    atomic_store_explicit(&j->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&j->ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&j->n, n, memory_order_relaxed);
    atomic_store_explicit(&j->chunk, chunk, memory_order_relaxed);
    atomic_store_explicit(&j->split, 2 * (int64_t)(P.workers + 1), memory_order_relaxed);
    atomic_store(&P.done, 0);
    atomic_store(&P.next, (uint64_t)g << 32);
    atomic_store_explicit(&P.gen, g, memory_order_release);
    if (atomic_load(&P.sleepers) > 0) futex(&P.gen, FUTEX_WAKE_PRIVATE, INT_MAX);
    run_chunks(g);
    /* wait only for pieces that workers claimed and are still running */
    for (int spins = 0; atomic_load(&P.done) < n; spins++) {
        if (spins < SPIN_ITERS)
            cpu_relax();
        else
            sched_yield();
    }
    pthread_mutex_unlock(&P.caller);
}

void dp_pool_rows(int64_t rows, dp_pool_fn fn, void *ctx) {
    dp_pool_for(rows, 16, fn, ctx);
}
