/* kernels/pool.h: every index of every job is visited exactly once, whatever the chunking, from
 * back-to-back jobs (workers late for one job must not touch the next), and inline when called
 * inside an OpenMP region. */
#include "check.h"
#include "kernels/pool.h"

#include <omp.h>
#include <stdatomic.h>
#include <stdlib.h>

typedef struct {
    atomic_int *hits;
    int job;
} ctx;

static void mark(void *p, int64_t b, int64_t e) {
    ctx *c = p;
    for (int64_t i = b; i < e; i++) atomic_fetch_add(&c->hits[i], c->job);
}

static int run(int64_t n, int64_t chunk, int job) {
    atomic_int *hits = calloc((size_t)n, sizeof *hits);
    ctx c = {hits, job};
    dp_pool_for(n, chunk, mark, &c);
    int bad = 0;
    for (int64_t i = 0; i < n; i++) bad += atomic_load(&hits[i]) != job;
    free(hits);
    return bad;
}

int main(void) {
    omp_set_num_threads(2);
    CHECK_EQ_INT(0, run(1000, 7, 1));
    CHECK_EQ_INT(0, run(1, 16, 2));
    CHECK_EQ_INT(0, run(4097, 16, 3));
    dp_pool_for(0, 16, mark, NULL); /* nothing to do: fn never called */
    int bad = 0;
    for (int j = 0; j < 2000; j++) bad += run(64 + j % 50, 1 + j % 9, 1 + j % 5); /* back to back */
    CHECK_EQ_INT(0, bad);
    bad = 0;
#pragma omp parallel reduction(+ : bad)
    bad += run(300, 10, 4); /* nested: runs inline on each OpenMP thread */
    CHECK_EQ_INT(0, bad);
    return check_done();
}
