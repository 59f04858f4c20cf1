/* The data-parallel communicator (see dist.h): single / MPI / NCCL, the tcp:// and file://
 * rendezvous that hands rank 0's NCCL id to the others, and the polling waits with timeouts. */
#include "train/dist.h"
#include "data/base/error.h"
#include "data/base/progress.h"
#include "kernels/cuda/kernels.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef DOPPEL_HAVE_MPI
#include <mpi.h>
#endif
#ifdef DOPPEL_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

enum { KIND_SINGLE, KIND_MPI, KIND_NCCL };

/* after SIGTERM (mpirun's word that the job is ending, e.g. a rank died) a waiting collective
 * gives up this soon, so rank 0 can still write its checkpoint before mpirun's SIGKILL */
#define URGENT_GRACE_S 0.25
/* MPI counts are int: buffers go in chunks of at most this many elements */
#define MPI_CHUNK ((size_t)1 << 28)

struct dp_dist {
    int kind;
    int rank, world;
    bool failed;
    char why[1024]; /* the failure, repeated to later calls */
    bool nccl_on;   /* an NCCL communicator exists (kinds mpi+nccl and nccl) */
    double timeout_s;
    volatile sig_atomic_t *stop_flag;
    uint64_t bytes_reduced;
#ifdef DOPPEL_HAVE_MPI
    MPI_Comm comm;
    bool mpi_inited_here;
#endif
#ifdef DOPPEL_HAVE_NCCL
    ncclComm_t nccl;
    void *dscratch; /* device staging for host collectives of the nccl kind */
    size_t dscratch_bytes;
#endif
    float *hscratch; /* host staging of device buffers when MPI carries CUDA memory */
    size_t hscratch_n;
};

bool dp_dist_have_mpi(void) {
#ifdef DOPPEL_HAVE_MPI
    return true;
#else
    return false;
#endif
}

bool dp_dist_have_nccl(void) {
#ifdef DOPPEL_HAVE_NCCL
    return true;
#else
    return false;
#endif
}

/* an integer environment variable, or -1 */
static int env_int(const char *name) {
    const char *s = getenv(name);
    if (!s || !*s) return -1;
    char *end;
    long v = strtol(s, &end, 10);
    return *end || v < 0 || v > 1 << 24 ? -1 : (int)v;
}

static bool launched_by_mpirun(void) {
    return env_int("OMPI_COMM_WORLD_SIZE") >= 1 || env_int("PMI_SIZE") >= 1 ||
           env_int("PMIX_RANK") >= 0;
}

bool dp_dist_requested(const char *init) {
    return (init && *init) || launched_by_mpirun() || env_int("WORLD_SIZE") > 1;
}

int dp_dist_rank(const dp_dist *d) {
    return d ? d->rank : 0;
}
int dp_dist_world(const dp_dist *d) {
    return d ? d->world : 1;
}
bool dp_dist_failed(const dp_dist *d) {
    return d && d->failed;
}
uint64_t dp_dist_bytes_reduced(const dp_dist *d) {
    return d ? d->bytes_reduced : 0;
}
const char *dp_dist_kind(const dp_dist *d) {
    if (!d || d->kind == KIND_SINGLE) return "single";
    if (d->kind == KIND_MPI) return d->nccl_on ? "mpi+nccl" : "mpi";
    return "nccl";
}

/* ------------------------------------------------------------------ waiting */

#if defined(DOPPEL_HAVE_MPI) || defined(DOPPEL_HAVE_NCCL)
/* MPI's nonblocking collectives progress only inside MPI_Test, so a wait polls often: 50 us
 * sleeps for its first seconds (1 ms sleeps made a 154 MiB all-reduce take 7 s instead of
 * about 2; yielding instead of sleeping was slower on a loaded machine), 200 us after that (a
 * peer writing a checkpoint, or lost). */
static void nap(double waited_s) {
    struct timespec ts = {0, waited_s < 5 ? 50000 : 200000};
    nanosleep(&ts, NULL);
}

/* Records why the communicator is dead; -1. */
static int fail_peer(dp_dist *d, const char *fmt, ...) DP_PRINTF(2, 3);
static int fail_peer(dp_dist *d, const char *fmt, ...) {
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    d->failed = true;
    snprintf(d->why, sizeof d->why, "rank %d of %d: %s", d->rank, d->world, msg);
    return dp_fail("%s", d->why);
}

typedef struct {
    double t0, urgent_at;
} wait_clock;

/* One turn of a polling wait: 0 to poll again (after a nap), -1 when it is over. */
static int wait_turn(dp_dist *d, wait_clock *w, const char *what) {
    double now = dp_now_seconds();
    if (d->stop_flag && *d->stop_flag >= 2) {
        if (w->urgent_at == 0) w->urgent_at = now;
        if (now - w->urgent_at > URGENT_GRACE_S)
            return fail_peer(d,
                             "%s: terminated while waiting for the other ranks (the launcher is "
                             "ending the job: did a rank die?)",
                             what);
    }
    if (now - w->t0 > d->timeout_s)
        return fail_peer(d,
                         "%s: no answer from the other ranks in %.0f s (a rank died, hangs or "
                         "cannot reach this one; --dist-timeout sets the wait)",
                         what, d->timeout_s);
    nap(now - w->t0);
    return 0;
}
#endif

/* ------------------------------------------------------------------ MPI */

#ifdef DOPPEL_HAVE_MPI
static int mpi_wait(dp_dist *d, MPI_Request *req, const char *what) {
    wait_clock w = {.t0 = dp_now_seconds()};
    for (;;) {
        int done = 0;
        int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) {
            char s[MPI_MAX_ERROR_STRING];
            int len = 0;
            MPI_Error_string(rc, s, &len);
            return fail_peer(d, "%s: MPI: %.*s (a rank was lost)", what, len, s);
        }
        if (done) return 0;
        if (wait_turn(d, &w, what)) return -1;
    }
}

static int mpi_allreduce(dp_dist *d, void *buf, size_t n, MPI_Datatype type, size_t elem,
                         const char *what) {
    for (size_t off = 0; off < n; off += MPI_CHUNK) {
        size_t k = n - off < MPI_CHUNK ? n - off : MPI_CHUNK;
        MPI_Request req;
        if (MPI_Iallreduce(MPI_IN_PLACE, (char *)buf + off * elem, (int)k, type, MPI_SUM, d->comm,
                           &req) != MPI_SUCCESS)
            return fail_peer(d, "%s: MPI_Iallreduce refused the buffer", what);
        if (mpi_wait(d, &req, what)) return -1;
    }
    return 0;
}

static int mpi_bcast(dp_dist *d, void *buf, size_t bytes, int root) {
    for (size_t off = 0; off < bytes; off += MPI_CHUNK) {
        size_t k = bytes - off < MPI_CHUNK ? bytes - off : MPI_CHUNK;
        MPI_Request req;
        if (MPI_Ibcast((char *)buf + off, (int)k, MPI_BYTE, root, d->comm, &req) != MPI_SUCCESS)
            return fail_peer(d, "broadcast: MPI_Ibcast refused the buffer");
        if (mpi_wait(d, &req, "broadcast")) return -1;
    }
    return 0;
}

static int mpi_create(dp_dist *d, const dp_dist_opts *o) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        int provided;
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
            return dp_fail("MPI_Init failed (launch with mpirun -np N doppel train ...)");
        d->mpi_inited_here = true;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if (MPI_Comm_dup(MPI_COMM_WORLD, &d->comm) != MPI_SUCCESS)
        return dp_fail("MPI_Comm_dup failed");
    MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(d->comm, &d->rank);
    MPI_Comm_size(d->comm, &d->world);
    if ((o->rank >= 0 && o->rank != d->rank) || (o->world > 0 && o->world != d->world))
        return dp_fail("--rank %d / --world-size %d disagree with mpirun's rank %d of %d (leave "
                       "them out under mpirun)",
                       o->rank, o->world, d->rank, d->world);
    return 0;
}
#endif

/* ------------------------------------------------------------------ NCCL */

#ifdef DOPPEL_HAVE_NCCL
/* Waits for the communicator's pending work (init, or a collective on the legacy stream). */
static int nccl_wait(dp_dist *d, bool stream, const char *what) {
    wait_clock w = {.t0 = dp_now_seconds()};
    for (;;) {
        ncclResult_t st = ncclSuccess;
        if (ncclCommGetAsyncError(d->nccl, &st) != ncclSuccess ||
            (st != ncclSuccess && st != ncclInProgress)) {
            ncclCommAbort(d->nccl);
            d->nccl_on = false;
            return fail_peer(d, "%s: NCCL: %s (a rank was lost)", what, ncclGetErrorString(st));
        }
        if (st == ncclSuccess) {
            if (!stream) return 0;
            cudaError_t e = cudaStreamQuery(0);
            if (e == cudaSuccess) return 0;
            if (e != cudaErrorNotReady)
                return fail_peer(d, "%s: CUDA: %s", what, cudaGetErrorString(e));
        }
        if (wait_turn(d, &w, what)) {
            ncclCommAbort(d->nccl);
            d->nccl_on = false;
            return -1;
        }
    }
}

static int nccl_init(dp_dist *d, const ncclUniqueId *id) {
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0; /* returns at once; nccl_wait polls with the timeout */
    ncclResult_t r = ncclCommInitRankConfig(&d->nccl, d->world, *id, d->rank, &cfg);
    if (r != ncclSuccess && r != ncclInProgress)
        return dp_fail("ncclCommInitRank (rank %d of %d): %s", d->rank, d->world,
                       ncclGetErrorString(r));
    d->nccl_on = true;
    return nccl_wait(d, false, "NCCL initialisation");
}

static int nccl_allreduce(dp_dist *d, void *dev, size_t n, ncclDataType_t type, const char *what) {
    ncclResult_t r = ncclAllReduce(dev, dev, n, type, ncclSum, d->nccl, 0);
    if (r != ncclSuccess && r != ncclInProgress)
        return fail_peer(d, "%s: ncclAllReduce: %s", what, ncclGetErrorString(r));
    return nccl_wait(d, true, what);
}

/* A device buffer of at least `bytes` for host collectives of the nccl kind. */
static void *nccl_scratch(dp_dist *d, size_t bytes) {
    if (d->dscratch_bytes >= bytes) return d->dscratch;
    cudaFree(d->dscratch);
    d->dscratch = NULL, d->dscratch_bytes = 0;
    if (cudaMalloc(&d->dscratch, bytes) != cudaSuccess) {
        dp_fail("cannot allocate %zu bytes of GPU memory for a collective", bytes);
        return NULL;
    }
    d->dscratch_bytes = bytes;
    return d->dscratch;
}

/* A host collective of the nccl kind: staged through the device. */
static int nccl_host_allreduce(dp_dist *d, void *buf, size_t n, ncclDataType_t type, size_t elem) {
    void *dev = nccl_scratch(d, n * elem);
    if (!dev || cudaMemcpy(dev, buf, n * elem, cudaMemcpyHostToDevice) != cudaSuccess ||
        nccl_allreduce(d, dev, n, type, "all-reduce") ||
        cudaMemcpy(buf, dev, n * elem, cudaMemcpyDeviceToHost) != cudaSuccess)
        return d->failed ? -1 : fail_peer(d, "all-reduce: staging through the GPU failed");
    return 0;
}

static int nccl_host_bcast(dp_dist *d, void *buf, size_t bytes, int root) {
    void *dev = nccl_scratch(d, bytes ? bytes : 1);
    if (!dev || cudaMemcpy(dev, buf, bytes, cudaMemcpyHostToDevice) != cudaSuccess)
        return fail_peer(d, "broadcast: staging through the GPU failed");
    ncclResult_t r = ncclBroadcast(dev, dev, bytes, ncclUint8, root, d->nccl, 0);
    if (r != ncclSuccess && r != ncclInProgress)
        return fail_peer(d, "broadcast: ncclBroadcast: %s", ncclGetErrorString(r));
    if (nccl_wait(d, true, "broadcast")) return -1;
    if (cudaMemcpy(buf, dev, bytes, cudaMemcpyDeviceToHost) != cudaSuccess)
        return fail_peer(d, "broadcast: staging through the GPU failed");
    return 0;
}

/* Each rank of a box on its own GPU: the local rank's device, before any context exists. */
static void pick_local_device(void) {
    int local = env_int("OMPI_COMM_WORLD_LOCAL_RANK");
    if (local < 0) local = env_int("LOCAL_RANK");
    int count = 0;
    if (local > 0 && cudaGetDeviceCount(&count) == cudaSuccess && count > 0)
        cudaSetDevice(local % count);
}
#endif

/* ------------------------------------------------------------------ rendezvous */

#define RDV_MAGIC 0x31545344504f44ull /* "DOPDST1" */

typedef struct {
    uint64_t magic;
    uint32_t rank, world;
} rdv_hello;

typedef struct {
    uint64_t magic;
    uint32_t status; /* 0 ok, else a refusal (the id does not follow) */
    uint32_t id_bytes;
} rdv_reply;

static int fail_rdv(const char *init, int rank, int world, const char *fmt, ...) DP_PRINTF(4, 5);
static int fail_rdv(const char *init, int rank, int world, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return dp_fail("--dist-init %s (rank %d of %d): %s", init, rank, world, msg);
}

/* all of buf over fd before the deadline; 0 or -1 */
static int io_all(int fd, void *buf, size_t n, bool sending, double deadline) {
    char *p = buf;
    while (n > 0) {
        double left = deadline - dp_now_seconds();
        if (left <= 0) return -1;
        struct pollfd pf = {.fd = fd, .events = sending ? POLLOUT : POLLIN};
        int pr = poll(&pf, 1, (int)(left * 1000) + 1);
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) return -1;
        ssize_t k = sending ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
        if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (k <= 0) return -1;
        p += k, n -= (size_t)k;
    }
    return 0;
}

/* "HOST:PORT" (HOST may be [v6]) into getaddrinfo results; 0 or -1 */
static int parse_host_port(const char *init, const char *hp, bool passive, struct addrinfo **res,
                           int rank, int world) {
    char host[256];
    const char *colon = strrchr(hp, ':');
    if (!colon || colon == hp || !colon[1] || (size_t)(colon - hp) >= sizeof host)
        return fail_rdv(init, rank, world, "expected tcp://HOST:PORT, e.g. tcp://10.0.0.1:29500");
    memcpy(host, hp, (size_t)(colon - hp));
    host[colon - hp] = 0;
    char *h = host;
    if (h[0] == '[' && h[strlen(h) - 1] == ']') h[strlen(h) - 1] = 0, h++;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    if (passive) hints.ai_flags = AI_PASSIVE;
    int e = getaddrinfo(h, colon + 1, &hints, res);
    if (e) return fail_rdv(init, rank, world, "%s: %s", hp, gai_strerror(e));
    return 0;
}

static int tcp_rank0(const char *init, const char *hp, int world, const void *id, size_t id_bytes,
                     double timeout_s) {
    struct addrinfo *ai;
    if (parse_host_port(init, hp, true, &ai, 0, world)) return -1;
    int ls = -1;
    for (struct addrinfo *a = ai; a && ls < 0; a = a->ai_next) {
        ls = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        int one = 1;
        if (ls >= 0) setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (ls >= 0 && (bind(ls, a->ai_addr, a->ai_addrlen) || listen(ls, world))) {
            close(ls);
            ls = -1;
        }
    }
    freeaddrinfo(ai);
    if (ls < 0)
        return fail_rdv(init, 0, world,
                        "rank 0 cannot listen on %s (%s): is the port in use, "
                        "or the address not this machine's?",
                        hp, strerror(errno));
    double deadline = dp_now_seconds() + timeout_s;
    unsigned char *seen = calloc((size_t)world, 1);
    int joined = 1, rc = 0;
    while (!rc && joined < world) {
        double left = deadline - dp_now_seconds();
        struct pollfd pf = {.fd = ls, .events = POLLIN};
        int pr = left > 0 ? poll(&pf, 1, (int)(left * 1000) + 1) : 0;
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) {
            rc = fail_rdv(init, 0, world,
                          "only %d of %d ranks arrived in %.0f s (start every rank with the same "
                          "--dist-init and --world-size %d, ranks 1..%d)",
                          joined, world, timeout_s, world, world - 1);
            break;
        }
        int c = accept(ls, NULL, NULL);
        if (c < 0) continue;
        rdv_hello h;
        rdv_reply r = {.magic = RDV_MAGIC, .status = 0, .id_bytes = (uint32_t)id_bytes};
        if (io_all(c, &h, sizeof h, false, dp_now_seconds() + 5) || h.magic != RDV_MAGIC) {
            close(c); /* not one of ours (a port scan, a stale client): ignore it */
            continue;
        }
        if (h.world != (uint32_t)world || h.rank == 0 || h.rank >= (uint32_t)world ||
            seen[h.rank]) {
            r.status = 1;
            io_all(c, &r, sizeof r, true, dp_now_seconds() + 5);
            close(c);
            rc = fail_rdv(init, 0, world,
                          "a rank said it is rank %u of %u: every rank needs --world-size %d "
                          "and its own rank 1..%d",
                          h.rank, h.world, world, world - 1);
            break;
        }
        if (io_all(c, &r, sizeof r, true, deadline) ||
            io_all(c, (void *)id, id_bytes, true, deadline)) {
            close(c);
            continue; /* it went away; it may come back */
        }
        seen[h.rank] = 1;
        joined++;
        close(c);
    }
    free(seen);
    close(ls);
    return rc;
}

static int tcp_peer(const char *init, const char *hp, int rank, int world, void *id,
                    size_t id_bytes, double timeout_s) {
    struct addrinfo *ai;
    if (parse_host_port(init, hp, false, &ai, rank, world)) return -1;
    double deadline = dp_now_seconds() + timeout_s;
    int last_errno = 0;
    for (;;) {
        for (struct addrinfo *a = ai; a; a = a->ai_next) {
            int s = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
            if (s < 0) continue;
            if (connect(s, a->ai_addr, a->ai_addrlen)) {
                last_errno = errno;
                close(s);
                continue;
            }
            rdv_hello h = {.magic = RDV_MAGIC, .rank = (uint32_t)rank, .world = (uint32_t)world};
            rdv_reply r;
            int bad = io_all(s, &h, sizeof h, true, deadline) ||
                      io_all(s, &r, sizeof r, false, deadline) || r.magic != RDV_MAGIC;
            if (!bad && r.status) {
                close(s);
                freeaddrinfo(ai);
                return fail_rdv(init, rank, world,
                                "rank 0 refused this rank: another --world-size, or rank %d taken "
                                "twice",
                                rank);
            }
            bad = bad || r.id_bytes != id_bytes || io_all(s, id, id_bytes, false, deadline);
            close(s);
            if (!bad) {
                freeaddrinfo(ai);
                return 0;
            }
        }
        if (dp_now_seconds() > deadline) break;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    freeaddrinfo(ai);
    return fail_rdv(init, rank, world,
                    "no rank 0 answered at %s in %.0f s (%s): start rank 0 with the same "
                    "--dist-init, and check the address and firewall",
                    hp, timeout_s, last_errno ? strerror(last_errno) : "no reply");
}

typedef struct {
    uint64_t magic;
    uint32_t world, id_bytes;
} rdv_file_head;

static bool file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static int file_rank0(const char *init, const char *path, int world, const void *id,
                      size_t id_bytes, double timeout_s) {
    char tmp[4200], ack[4200];
    for (int r = 1; r < world; r++) { /* a crashed earlier rendezvous's leftovers */
        snprintf(ack, sizeof ack, "%s.ack.%d", path, r);
        unlink(ack);
    }
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    rdv_file_head h = {RDV_MAGIC, (uint32_t)world, (uint32_t)id_bytes};
    if (!f || fwrite(&h, sizeof h, 1, f) != 1 || fwrite(id, 1, id_bytes, f) != id_bytes ||
        fclose(f) || rename(tmp, path)) {
        unlink(tmp);
        return fail_rdv(init, 0, world,
                        "cannot write %s (%s): the path must be on a file "
                        "system every rank sees",
                        path, strerror(errno));
    }
    double deadline = dp_now_seconds() + timeout_s;
    int joined = 1;
    for (;;) {
        joined = 1;
        for (int r = 1; r < world; r++) {
            snprintf(ack, sizeof ack, "%s.ack.%d", path, r);
            joined += file_exists(ack);
        }
        if (joined == world || dp_now_seconds() > deadline) break;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    for (int r = 1; r < world; r++) {
        snprintf(ack, sizeof ack, "%s.ack.%d", path, r);
        unlink(ack);
    }
    unlink(path);
    if (joined < world)
        return fail_rdv(init, 0, world,
                        "only %d of %d ranks read %s in %.0f s (start every rank with the same "
                        "--dist-init and --world-size %d)",
                        joined, world, path, timeout_s, world);
    return 0;
}

static int file_peer(const char *init, const char *path, int rank, int world, void *id,
                     size_t id_bytes, double timeout_s) {
    double deadline = dp_now_seconds() + timeout_s;
    char ack[4200];
    snprintf(ack, sizeof ack, "%s.ack.%d", path, rank);
    for (;;) {
        FILE *f = fopen(path, "rb");
        rdv_file_head h;
        if (f) {
            bool ok = fread(&h, sizeof h, 1, f) == 1 && h.magic == RDV_MAGIC &&
                      h.id_bytes == id_bytes && fread(id, 1, id_bytes, f) == id_bytes;
            fclose(f);
            if (ok && h.world != (uint32_t)world)
                return fail_rdv(init, rank, world,
                                "rank 0 wrote %s for %u ranks: every rank needs --world-size %u",
                                path, h.world, h.world);
            if (ok) {
                int fd = open(ack, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (fd < 0)
                    return fail_rdv(init, rank, world, "cannot write %s (%s)", ack,
                                    strerror(errno));
                close(fd);
                return 0;
            }
        }
        if (dp_now_seconds() > deadline) break;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return fail_rdv(init, rank, world,
                    "rank 0 wrote no %s in %.0f s: start rank 0 with the same --dist-init (the "
                    "path must be on a file system every rank sees)",
                    path, timeout_s);
}

int dp_dist_rendezvous(const char *init, int rank, int world, void *id, size_t id_bytes,
                       double timeout_s) {
    if (timeout_s <= 0) timeout_s = 300;
    if (world < 1 || rank < 0 || rank >= world)
        return fail_rdv(init, rank, world, "the rank must be 0..world size - 1");
    if (world == 1) return 0;
    if (!strncmp(init, "tcp://", 6))
        return rank == 0 ? tcp_rank0(init, init + 6, world, id, id_bytes, timeout_s)
                         : tcp_peer(init, init + 6, rank, world, id, id_bytes, timeout_s);
    if (!strncmp(init, "file://", 7) && init[7])
        return rank == 0 ? file_rank0(init, init + 7, world, id, id_bytes, timeout_s)
                         : file_peer(init, init + 7, rank, world, id, id_bytes, timeout_s);
    return fail_rdv(init, rank, world, "expected mpi, tcp://HOST:PORT or file://PATH");
}

/* ------------------------------------------------------------------ create / destroy */

int dp_dist_create(dp_dist **out, const dp_dist_opts *o) {
    *out = NULL;
    const char *init = o->init && *o->init ? o->init : NULL;
    bool rdv = init && (!strncmp(init, "tcp://", 6) || !strncmp(init, "file://", 7));
    if (init && !rdv && strcmp(init, "mpi"))
        return dp_fail("--dist-init %s: expected mpi, tcp://HOST:PORT or file://PATH", init);
    dp_dist *d = dp_calloc(1, sizeof *d);
    if (!d) return -1;
    d->timeout_s = o->timeout_s > 0 ? o->timeout_s : 300;
    d->stop_flag = o->stop_flag;
    d->world = 1;

    if (rdv) {
        /* rank and world from the flags, else the usual environment variables */
        d->rank = o->rank >= 0 ? o->rank : env_int("RANK");
        d->world = o->world > 0 ? o->world : env_int("WORLD_SIZE");
        d->kind = KIND_NCCL;
        if (d->rank < 0 || d->world < 1 || d->rank >= d->world) {
            free(d);
            return dp_fail("--dist-init %s needs --rank R and --world-size N (or RANK and "
                           "WORLD_SIZE in the environment), 0 <= R < N",
                           init);
        }
        if (!o->gpu || o->emulated) {
            int world = d->world;
            free(d);
            return dp_fail("--dist-init %s: the %s backend's collectives need MPI; launch with "
                           "`mpirun -np %d doppel train ...` instead (tcp:// and file:// only "
                           "bootstrap NCCL for --device cuda)",
                           init, o->gpu ? "EMU" : "CPU", world);
        }
#ifdef DOPPEL_HAVE_NCCL
        pick_local_device();
        ncclUniqueId id;
        memset(&id, 0, sizeof id);
        if (d->rank == 0 && ncclGetUniqueId(&id) != ncclSuccess) {
            free(d);
            return dp_fail("ncclGetUniqueId failed: is a GPU visible to rank 0?");
        }
        if (dp_dist_rendezvous(init, d->rank, d->world, &id, sizeof id, d->timeout_s) ||
            nccl_init(d, &id)) {
            d->failed = true;
            dp_dist_destroy(d);
            return -1;
        }
        *out = d;
        return 0;
#else
        free(d);
        return dp_fail("--dist-init %s: this build has no NCCL (it needs the CUDA backend and "
                       "libnccl; rebuild with -DDOPPEL_CUDA=ON), or launch with mpirun",
                       init);
#endif
    }

    if (init || launched_by_mpirun()) {
#ifdef DOPPEL_HAVE_MPI
        d->kind = KIND_MPI;
        if (mpi_create(d, o)) {
            dp_dist_destroy(d);
            return -1;
        }
#ifdef DOPPEL_HAVE_NCCL
        if (o->gpu && !o->emulated && d->world > 1) {
            pick_local_device();
            ncclUniqueId id;
            memset(&id, 0, sizeof id);
            /* the id from rank 0 to all over MPI, as llm.c bootstraps its NCCL */
            if (d->rank == 0 && ncclGetUniqueId(&id) != ncclSuccess) {
                dp_fail("ncclGetUniqueId failed: is a GPU visible to rank 0?");
                d->failed = true; /* the others time out in the broadcast */
                dp_dist_destroy(d);
                return -1;
            }
            if (mpi_bcast(d, &id, sizeof id, 0) || nccl_init(d, &id)) {
                dp_dist_destroy(d);
                return -1;
            }
        }
#endif
        *out = d;
        return 0;
#else
        free(d);
        return dp_fail("distributed training over MPI is not compiled in (install "
                       "libopenmpi-dev and rebuild: cmake -DDOPPEL_MPI=ON)");
#endif
    }
    if (env_int("WORLD_SIZE") > 1) {
        int w = env_int("WORLD_SIZE");
        free(d);
        return dp_fail("WORLD_SIZE=%d is set but no --dist-init: give --dist-init "
                       "tcp://HOST:PORT or file://PATH (GPU), or launch with mpirun",
                       w);
    }
    d->kind = KIND_SINGLE;
    *out = d;
    return 0;
}

void dp_dist_destroy(dp_dist *d) {
    if (!d) return;
#ifdef DOPPEL_HAVE_NCCL
    if (d->nccl_on) {
        if (d->failed)
            ncclCommAbort(d->nccl);
        else
            ncclCommDestroy(d->nccl);
    }
    cudaFree(d->dscratch);
#endif
#ifdef DOPPEL_HAVE_MPI
    if (d->kind == KIND_MPI && d->comm != MPI_COMM_NULL && d->comm) {
        /* after a lost peer, Finalize would wait for it: leave and let the launcher clean up */
        if (!d->failed) {
            MPI_Comm_free(&d->comm);
            int fin = 0;
            MPI_Finalized(&fin);
            if (d->mpi_inited_here && !fin) MPI_Finalize();
        }
    }
#endif
    free(d->hscratch);
    free(d);
}

/* ------------------------------------------------------------------ collectives */

int dp_dist_allreduce_sum(dp_dist *d, float *buf, size_t n) {
    if (!d || d->world == 1) return 0;
    if (d->failed) return dp_fail("the communicator failed earlier: %s", d->why);
    d->bytes_reduced += n * sizeof(float);
#ifdef DOPPEL_HAVE_MPI
    if (d->kind == KIND_MPI)
        return mpi_allreduce(d, buf, n, MPI_FLOAT, sizeof(float), "all-reduce");
#endif
#ifdef DOPPEL_HAVE_NCCL
    if (d->kind == KIND_NCCL) return nccl_host_allreduce(d, buf, n, ncclFloat, sizeof(float));
#endif
    (void)buf;
    return dp_fail("all-reduce: no transport compiled in");
}

int dp_dist_allreduce_avg(dp_dist *d, float *buf, size_t n) {
    if (dp_dist_allreduce_sum(d, buf, n)) return -1;
    const float inv = 1.0f / (float)dp_dist_world(d);
    if (dp_dist_world(d) > 1)
        for (size_t i = 0; i < n; i++) buf[i] *= inv;
    return 0;
}

int dp_dist_allreduce_sum_f64(dp_dist *d, double *buf, size_t n) {
    if (!d || d->world == 1) return 0;
    if (d->failed) return dp_fail("the communicator failed earlier: %s", d->why);
#ifdef DOPPEL_HAVE_MPI
    if (d->kind == KIND_MPI)
        return mpi_allreduce(d, buf, n, MPI_DOUBLE, sizeof(double), "all-reduce");
#endif
#ifdef DOPPEL_HAVE_NCCL
    if (d->kind == KIND_NCCL) return nccl_host_allreduce(d, buf, n, ncclDouble, sizeof(double));
#endif
    (void)buf, (void)n;
    return dp_fail("all-reduce: no transport compiled in");
}

int dp_dist_allreduce_sum_device(dp_dist *d, const dp_gpu_ops *ops, float *dev, size_t n) {
    if (!d || d->world == 1) return 0;
    if (d->failed) return dp_fail("the communicator failed earlier: %s", d->why);
#ifdef DOPPEL_HAVE_NCCL
    if (d->nccl_on && !strcmp(ops->backend, "cuda")) {
        d->bytes_reduced += n * sizeof(float);
        return nccl_allreduce(d, dev, n, ncclFloat, "gradient all-reduce");
    }
#endif
    /* EMU's device memory is host memory: MPI carries it as it is */
    if (!strcmp(ops->backend, "emu")) return dp_dist_allreduce_sum(d, dev, n);
    if (d->hscratch_n < n) { /* CUDA memory through MPI: staged through the host */
        free(d->hscratch);
        d->hscratch_n = 0;
        if (!(d->hscratch = dp_malloc(n * sizeof(float)))) return -1;
        d->hscratch_n = n;
    }
    if (ops->download(d->hscratch, dev, n * sizeof(float)) ||
        dp_dist_allreduce_sum(d, d->hscratch, n) ||
        ops->upload(dev, d->hscratch, n * sizeof(float)))
        return -1;
    return 0;
}

int dp_dist_broadcast(dp_dist *d, void *buf, size_t bytes, int root) {
    if (!d || d->world == 1) return 0;
    if (d->failed) return dp_fail("the communicator failed earlier: %s", d->why);
#ifdef DOPPEL_HAVE_MPI
    if (d->kind == KIND_MPI) return mpi_bcast(d, buf, bytes, root);
#endif
#ifdef DOPPEL_HAVE_NCCL
    if (d->kind == KIND_NCCL) return nccl_host_bcast(d, buf, bytes, root);
#endif
    (void)buf, (void)bytes, (void)root;
    return dp_fail("broadcast: no transport compiled in");
}

int dp_dist_barrier(dp_dist *d) {
    double one = 1;
    return dp_dist_allreduce_sum_f64(d, &one, 1);
}
