/* The data-parallel communicator of `doppel train`: which rank this process is, how many there
 * are, and the collectives the training loop needs (sum/average of float buffers on the host or
 * the GPU, broadcast, barrier), each with a timeout that turns a lost peer into an error.
 *
 * Implementations, chosen by dp_dist_create:
 *   single: one process, every collective a no-op (world 1).
 *   mpi:    launched by mpirun (or --dist-init mpi): MPI for everything on the host; the GPU
 *           backend's device buffers go through NCCL when compiled in (the NCCL id broadcast
 *           over MPI, as llm.c does), else through MPI (EMU: its "device" memory is host memory,
 *           handed to MPI as is).
 *   nccl:   tcp://HOST:PORT or file://PATH rendezvous for clusters without MPI: rank 0 makes the
 *           NCCL unique id and sends it to the others; every collective, host ones included, is
 *           an NCCL call (host buffers staged through the device). GPU backend only: the CPU
 *           backend needs MPI for its collectives (there is no home-made transport). */
#ifndef DOPPEL_DIST_H
#define DOPPEL_DIST_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dp_gpu_ops;
typedef struct dp_dist dp_dist;

typedef struct {
    const char *init; /* NULL or "": mpi when launched by mpirun, else single; "mpi";
                       * "tcp://HOST:PORT"; "file://PATH" */
    int rank, world;  /* < 0: from the environment (OMPI_COMM_WORLD_RANK/SIZE, RANK/WORLD_SIZE) */
    bool gpu;         /* the run's gradients live on a GPU backend (tcp/file need it) */
    bool emulated;    /* that backend is EMU: its "device" buffers are host memory, carried by
                       * MPI as the CI path asks (NCCL would need a real GPU) */
    double timeout_s; /* a rendezvous or collective that waits longer fails (<= 0: 300) */
    /* set asynchronously (SIGINT/SIGTERM): a collective still waiting a few seconds after it
     * was set gives up (mpirun signals the survivors when a rank dies), or NULL */
    volatile sig_atomic_t *stop_flag;
} dp_dist_opts;

/* Which implementations this build has. */
bool dp_dist_have_mpi(void);
bool dp_dist_have_nccl(void);

/* True when this process was started by a launcher that asks for several ranks (mpirun's
 * environment, or WORLD_SIZE > 1) or init names a rendezvous: the caller should create one. */
bool dp_dist_requested(const char *init);

/* 0 or -1 (dp_last_error: what is missing and how to launch). *d is NULL on failure. */
int dp_dist_create(dp_dist **d, const dp_dist_opts *o);
/* Ends MPI / NCCL (a NULL d is fine). After a failed collective the peers are not waited for. */
void dp_dist_destroy(dp_dist *d);

int dp_dist_rank(const dp_dist *d);         /* 0 for NULL */
int dp_dist_world(const dp_dist *d);        /* 1 for NULL */
const char *dp_dist_kind(const dp_dist *d); /* "single", "mpi", "mpi+nccl", "nccl" */
/* True after a collective failed (timeout, lost peer): nothing more may be asked of it. */
bool dp_dist_failed(const dp_dist *d);
/* Float bytes carried by dp_dist_allreduce_* since creation (what this rank contributed). */
uint64_t dp_dist_bytes_reduced(const dp_dist *d);

/* In place, every rank gets the elementwise sum / average of buf (n) over the ranks. */
int dp_dist_allreduce_sum(dp_dist *d, float *buf, size_t n);
int dp_dist_allreduce_avg(dp_dist *d, float *buf, size_t n);
/* Doubles, summed (small statistics: loss sums, counts, flags). */
int dp_dist_allreduce_sum_f64(dp_dist *d, double *buf, size_t n);
/* dev (n floats) in the memory of the GPU backend ops, summed over the ranks in place: NCCL on
 * CUDA when compiled in; else MPI (EMU buffers directly, CUDA ones staged through the host). */
int dp_dist_allreduce_sum_device(dp_dist *d, const struct dp_gpu_ops *ops, float *dev, size_t n);
/* bytes of root's buf to every rank. */
int dp_dist_broadcast(dp_dist *d, void *buf, size_t bytes, int root);
int dp_dist_barrier(dp_dist *d);

/* The rendezvous of the nccl kind, on its own (tests): rank 0 sends id (id_bytes) to every other
 * rank over tcp://HOST:PORT (rank 0 listens) or file://PATH (rank 0 writes it, the others read
 * it and acknowledge); the others receive it into id. Fails after timeout_s with what was
 * missing. */
int dp_dist_rendezvous(const char *init, int rank, int world, void *id, size_t id_bytes,
                       double timeout_s);

#endif
