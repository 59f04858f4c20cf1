/* train/dist.h: the single communicator is a no-op; the tcp:// and file:// rendezvous hand rank
 * 0's id to every other rank (forked processes on loopback) and fail with a message, not a hang,
 * when a rank is missing or disagrees. Under mpirun (tests/cli_train_dist.sh runs
 * `mpirun -np 2 test_dist --mpi` and `--mpi-lost`) the MPI collectives against sums computed
 * here, and a silent peer turned into a timeout error. */
#include "check.h"
#include "train/dist.h"
#include "data/base/error.h"
#include "data/base/progress.h"

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef DOPPEL_HAVE_MPI
#include <mpi.h>
#endif

enum { ID_BYTES = 128 };

static void make_id(unsigned char *id) {
    for (int i = 0; i < ID_BYTES; i++) id[i] = (unsigned char)(i * 37 + 11);
}

/* a loopback port nobody listens on right now */
static int free_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) ||
        getsockname(s, (struct sockaddr *)&a, &len))
        return 29500 + (int)(getpid() % 1000);
    int port = ntohs(a.sin_port);
    close(s);
    return port;
}

/* ranks 1..world-1 in child processes (exit 0: they got rank 0's id), rank 0 here; 0 when every
 * rank succeeded */
static int rendezvous_world(const char *init, int world) {
    pid_t kids[8];
    for (int r = 1; r < world; r++) {
        kids[r] = fork();
        if (kids[r] == 0) {
            unsigned char id[ID_BYTES] = {0}, want[ID_BYTES];
            make_id(want);
            int rc = dp_dist_rendezvous(init, r, world, id, ID_BYTES, 20);
            if (rc) fprintf(stderr, "rank %d: %s\n", r, dp_last_error());
            _exit(rc || memcmp(id, want, ID_BYTES) ? 1 : 0);
        }
    }
    usleep(200 * 1000); /* the others first: they must wait for rank 0, not fail */
    unsigned char id[ID_BYTES];
    make_id(id);
    int bad = dp_dist_rendezvous(init, 0, world, id, ID_BYTES, 20);
    if (bad) fprintf(stderr, "rank 0: %s\n", dp_last_error());
    for (int r = 1; r < world; r++) {
        int st;
        waitpid(kids[r], &st, 0);
        bad |= !WIFEXITED(st) || WEXITSTATUS(st);
    }
    return bad;
}

static void test_single(void) {
    dp_dist *d;
    dp_dist_opts o = {.rank = -1, .world = -1};
    CHECK_EQ_INT(0, dp_dist_create(&d, &o));
    CHECK_EQ_STR("single", dp_dist_kind(d));
    CHECK_EQ_INT(0, dp_dist_rank(d));
    CHECK_EQ_INT(1, dp_dist_world(d));
    float x[3] = {1, 2, 3};
    double y = 5;
    CHECK_EQ_INT(0, dp_dist_allreduce_avg(d, x, 3));
    CHECK_EQ_INT(0, dp_dist_allreduce_sum_f64(d, &y, 1));
    CHECK_EQ_INT(0, dp_dist_broadcast(d, x, sizeof x, 0));
    CHECK_EQ_INT(0, dp_dist_barrier(d));
    CHECK(x[0] == 1 && x[1] == 2 && x[2] == 3 && y == 5);
    CHECK_EQ_INT(0, (long long)dp_dist_bytes_reduced(d));
    dp_dist_destroy(d);
    CHECK_EQ_INT(0, dp_dist_rank(NULL));
    CHECK_EQ_INT(1, dp_dist_world(NULL));
}

static void test_refusals(void) {
    dp_dist *d;
    char init[64];
    snprintf(init, sizeof init, "tcp://127.0.0.1:%d", free_port());
    /* the CPU backend has no collective transport but MPI */
    dp_dist_opts o = {.init = init, .rank = 0, .world = 2};
    CHECK_EQ_INT(-1, dp_dist_create(&d, &o));
    CHECK(d == NULL);
    CHECK_REPORT(strstr(dp_last_error(), "mpirun") != NULL, "CPU + tcp message: %s",
                 dp_last_error());
    o = (dp_dist_opts){.init = init, .rank = -1, .world = -1, .gpu = true};
    CHECK_EQ_INT(-1, dp_dist_create(&d, &o));
    CHECK_REPORT(strstr(dp_last_error(), "--world-size") != NULL, "no rank message: %s",
                 dp_last_error());
    o = (dp_dist_opts){.init = "udp://x:1", .rank = 0, .world = 2};
    CHECK_EQ_INT(-1, dp_dist_create(&d, &o));
    CHECK_REPORT(strstr(dp_last_error(), "tcp://HOST:PORT") != NULL, "bad scheme: %s",
                 dp_last_error());
    if (!dp_dist_have_mpi()) {
        o = (dp_dist_opts){.init = "mpi", .rank = -1, .world = -1};
        CHECK_EQ_INT(-1, dp_dist_create(&d, &o));
        CHECK_REPORT(strstr(dp_last_error(), "not compiled in") != NULL, "no MPI: %s",
                     dp_last_error());
    }
}

static void test_rendezvous(void) {
    char init[4200];
    snprintf(init, sizeof init, "tcp://127.0.0.1:%d", free_port());
    CHECK_REPORT(rendezvous_world(init, 3) == 0, "tcp rendezvous of 3 ranks on %s", init);
    char dir[] = "/tmp/doppel-test-dist.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    snprintf(init, sizeof init, "file://%s/id", dir);
    CHECK_REPORT(rendezvous_world(init, 3) == 0, "file rendezvous of 3 ranks on %s", init);
    char path[4200];
    snprintf(path, sizeof path, "%s/id", dir);
    CHECK_REPORT(access(path, F_OK) != 0, "rank 0 removed %s after the rendezvous", path);

    /* a missing rank: an error after the timeout, naming what is missing */
    unsigned char id[ID_BYTES] = {0};
    double t0 = dp_now_seconds();
    snprintf(init, sizeof init, "tcp://127.0.0.1:%d", free_port());
    CHECK_EQ_INT(-1, dp_dist_rendezvous(init, 1, 2, id, ID_BYTES, 1));
    CHECK_REPORT(strstr(dp_last_error(), "no rank 0 answered") != NULL, "peer alone: %s",
                 dp_last_error());
    CHECK_EQ_INT(-1, dp_dist_rendezvous(init, 0, 2, id, ID_BYTES, 1));
    CHECK_REPORT(strstr(dp_last_error(), "only 1 of 2 ranks") != NULL, "rank 0 alone: %s",
                 dp_last_error());
    snprintf(init, sizeof init, "file://%s/id2", dir);
    CHECK_EQ_INT(-1, dp_dist_rendezvous(init, 1, 2, id, ID_BYTES, 1));
    CHECK_REPORT(strstr(dp_last_error(), "rank 0 wrote no") != NULL, "file peer alone: %s",
                 dp_last_error());
    CHECK_EQ_INT(-1, dp_dist_rendezvous(init, 0, 2, id, ID_BYTES, 1));
    CHECK_REPORT(strstr(dp_last_error(), "only 1 of 2 ranks read") != NULL, "file rank 0: %s",
                 dp_last_error());
    double waited = dp_now_seconds() - t0;
    CHECK_REPORT(waited < 30, "four 1 s timeouts took %.1f s", waited);

    /* ranks that disagree on the world size: refused on both sides */
    snprintf(init, sizeof init, "tcp://127.0.0.1:%d", free_port());
    pid_t kid = fork();
    if (kid == 0) {
        unsigned char mine[ID_BYTES];
        int rc = dp_dist_rendezvous(init, 1, 3, mine, ID_BYTES, 10);
        _exit(rc && strstr(dp_last_error(), "refused") ? 0 : 1);
    }
    CHECK_EQ_INT(-1, dp_dist_rendezvous(init, 0, 2, id, ID_BYTES, 10));
    CHECK_REPORT(strstr(dp_last_error(), "--world-size 2") != NULL, "world mismatch: %s",
                 dp_last_error());
    int st;
    waitpid(kid, &st, 0);
    CHECK_REPORT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the peer of another world size was "
                                                        "refused with a message");
    rmdir(dir);
}

/* Under mpirun: every collective against the value computed here. */
static void test_mpi(void) {
    dp_dist *d;
    dp_dist_opts o = {.rank = -1, .world = -1, .timeout_s = 60};
    if (dp_dist_create(&d, &o)) {
        CHECK_REPORT(0, "dp_dist_create under mpirun: %s", dp_last_error());
        return;
    }
    CHECK_EQ_STR("mpi", dp_dist_kind(d));
    int rank = dp_dist_rank(d), world = dp_dist_world(d);
    CHECK_EQ_INT(atoi(getenv("OMPI_COMM_WORLD_SIZE")), world);
    CHECK_EQ_INT(atoi(getenv("OMPI_COMM_WORLD_RANK")), rank);
    size_t n = (1 << 20) + 3;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)(rank + 1) * (float)(i % 1000), y[i] = x[i];
    CHECK_EQ_INT(0, dp_dist_allreduce_sum(d, x, n));
    CHECK_EQ_INT(0, dp_dist_allreduce_avg(d, y, n));
    double tri = world * (world + 1) / 2.0; /* sum of rank + 1 */
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        bad += x[i] != (float)(tri * (double)(i % 1000));
        bad += fabsf(y[i] - (float)(tri / world * (double)(i % 1000))) > 1e-6f * y[i];
    }
    CHECK_REPORT(bad == 0, "%zu wrong elements in the float sum / average", bad);
    CHECK_EQ_INT(2 * n * sizeof(float), (long long)dp_dist_bytes_reduced(d));
    double s[2] = {rank, 1};
    CHECK_EQ_INT(0, dp_dist_allreduce_sum_f64(d, s, 2));
    CHECK(s[0] == world * (world - 1) / 2.0 && s[1] == world);
    int root = world - 1;
    char msg[32] = {0};
    if (rank == root) snprintf(msg, sizeof msg, "from rank %d", root);
    CHECK_EQ_INT(0, dp_dist_broadcast(d, msg, sizeof msg, root));
    char want[32];
    snprintf(want, sizeof want, "from rank %d", root);
    CHECK_EQ_STR(want, msg);
    CHECK_EQ_INT(0, dp_dist_barrier(d));
    free(x);
    free(y);
    dp_dist_destroy(d);
}

/* Under mpirun -np 2: rank 1 never joins the all-reduce; rank 0 fails after its 1 s timeout with
 * a message (prints "lost-peer: ok"), rather than hanging. */
static void test_mpi_lost(void) {
    dp_dist *d;
    dp_dist_opts o = {.rank = -1, .world = -1, .timeout_s = 1};
    if (dp_dist_create(&d, &o)) {
        CHECK_REPORT(0, "dp_dist_create under mpirun: %s", dp_last_error());
        return;
    }
    if (dp_dist_rank(d) == 1) {
        sleep(4);
        CHECK(1);
        return; /* no finalize: rank 0 left the collective unfinished */
    }
    float x[4] = {1, 2, 3, 4};
    double t0 = dp_now_seconds();
    int rc = dp_dist_allreduce_sum(d, x, 4);
    double waited = dp_now_seconds() - t0;
    CHECK_EQ_INT(-1, rc);
    CHECK(dp_dist_failed(d));
    CHECK_REPORT(strstr(dp_last_error(), "no answer from the other ranks") != NULL, "message: %s",
                 dp_last_error());
    CHECK_REPORT(waited >= 0.9 && waited < 3.5, "gave up after %.2f s (timeout 1 s)", waited);
    CHECK_EQ_INT(-1, dp_dist_barrier(d)); /* nothing more is asked of a dead communicator */
    if (!check_failures) printf("lost-peer: ok (%s)\n", dp_last_error());
    fflush(stdout);
    dp_dist_destroy(d);
}

/* Under mpirun, for tests/bench/bench_dist.sh: the median time of one training step's
 * collectives (3 doubles of statistics + n floats of gradients) over 3 rounds of up to 200
 * (fewer for big buffers: about 64 MiB a round). */
static void bench_mpi(size_t n) {
    dp_dist *d;
    dp_dist_opts o = {.rank = -1, .world = -1, .timeout_s = 60};
    if (dp_dist_create(&d, &o)) {
        CHECK_REPORT(0, "dp_dist_create under mpirun: %s", dp_last_error());
        return;
    }
    float *x = calloc(n, sizeof(float));
    double stats[3] = {0}, ms[3], peer[3] = {0};
    size_t reps = ((size_t)64 << 20) / (n * sizeof(float) + 1);
    reps = reps < 2 ? 2 : reps > 200 ? 200 : reps;
    for (int k = 0; k < 3; k++) {
        double t0 = dp_now_seconds();
        for (size_t i = 0; i < reps; i++)
            CHECK(!dp_dist_allreduce_sum_f64(d, stats, 3) && !dp_dist_allreduce_sum(d, x, n));
        ms[k] = (dp_now_seconds() - t0) / (double)reps * 1e3;
#ifdef DOPPEL_HAVE_MPI
        /* the peer, same run: MPI's own blocking calls (no timeout, MPI's progress loop) */
        t0 = dp_now_seconds();
        for (size_t i = 0; i < reps; i++) {
            MPI_Allreduce(MPI_IN_PLACE, stats, 3, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
            MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        }
        peer[k] = (dp_now_seconds() - t0) / (double)reps * 1e3;
#endif
    }
    double lo = fmin(ms[0], fmin(ms[1], ms[2])), hi = fmax(ms[0], fmax(ms[1], ms[2]));
    double plo = fmin(peer[0], fmin(peer[1], peer[2])), phi = fmax(peer[0], fmax(peer[1], peer[2]));
    double med = ms[0] + ms[1] + ms[2] - lo - hi, pmed = peer[0] + peer[1] + peer[2] - plo - phi;
    if (dp_dist_rank(d) == 0)
        printf("collectives of one step (%zu gradient bytes + 24 bytes of statistics), %d ranks: "
               "%.3f ms; blocking MPI_Allreduce (peer, same run) %.3f ms; ratio %.2f (medians of "
               "3 rounds of %zu)\n",
               n * sizeof(float), dp_dist_world(d), med, pmed, pmed > 0 ? med / pmed : 0, reps);
    free(x);
    dp_dist_destroy(d);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--mpi")) {
        if (!dp_dist_have_mpi()) SKIP("MPI is not compiled in");
        test_mpi();
    } else if (argc > 2 && !strcmp(argv[1], "--bench")) {
        if (!dp_dist_have_mpi()) SKIP("MPI is not compiled in");
        bench_mpi((size_t)atol(argv[2]));
    } else if (argc > 1 && !strcmp(argv[1], "--mpi-lost")) {
        if (!dp_dist_have_mpi()) SKIP("MPI is not compiled in");
        test_mpi_lost();
    } else {
        test_single();
        test_refusals();
        test_rendezvous();
    }
    return check_done();
}
