/* the MPI comm: host-memory collectives over MPI_COMM_WORLD (CPU backend, CI)
 * and the host side of the NCCL comm's bootstrap. every collective is the
 * non-blocking MPI call polled against a deadline (the timeout given at
 * creation, TINYCLIP_COMM_TIMEOUT through host/dist/world.h), so a lost peer
 * never hangs a rank silently: the collective fails with TC_ERR_INTERRUPTED
 * and the caller aborts the job. */
#include "comm_mpi.h"

#include <stdlib.h>
#include <string.h>

static int env_int(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < 0 || x > 1 << 24) return 0;
    return (int)x;
}

int tc_comm_launched_world(void) {
    /* Open MPI, MPICH/Hydra and Intel MPI, PMIx launchers, Slurm's srun */
    /* SLURM_STEP_NUM_TASKS, not SLURM_NTASKS: the latter is also set in an
     * sbatch script or salloc shell that did not start the tasks */
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS",
                          "SLURM_STEP_NUM_TASKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        int n = env_int(vars[i]);
        if (n > 0) return n;
    }
    return 1;
}

#ifndef TC_HAVE_MPI

int tc_comm_mpi_available(void) {
    return 0;
}

tc_status tc_comm_mpi_create(tc_comm **out, double timeout_s) {
    *out = NULL;
    (void)timeout_s;
    return tc_fail(TC_ERR_UNSUPPORTED,
                   "launched as %d processes, but this build has no MPI (install an MPI "
                   "development package, e.g. libopenmpi-dev, and rebuild)",
                   tc_comm_launched_world());
}

#else

#include <mpi.h>
#include <stdio.h>
#include <time.h>

typedef struct {
    tc_comm base;
    MPI_Comm world;
    MPI_Comm side;          /* a duplicate of world for the lost-rank inquiry */
    double timeout;         /* seconds a collective may wait */
    unsigned long long seq; /* collectives issued, for the messages */
    int we_initialised;
} mpi_comm;

int tc_comm_mpi_available(void) {
    return 1;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *mpi_message(int err, char *buf) {
    int len = 0;
    if (MPI_Error_string(err, buf, &len) != MPI_SUCCESS) snprintf(buf, 64, "MPI error %d", err);
    return buf;
}

enum { TAG_REPORT = 7, TAG_VERDICT = 8, GRACE_SECONDS = 5 };

/* polls req for up to seconds; 1 when it completed */
static int test_for(MPI_Request *req, double seconds) {
    double t0 = now_seconds();
    for (;;) {
        int done = 0;
        if (MPI_Test(req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return 0;
        if (done) return 1;
        if (now_seconds() - t0 > seconds) return 0;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

/* after a timeout: who is missing? every waiting rank reports the
 * collective it waits in to rank 0, which names the ranks that did not
 * report within the grace period and tells the others. writes the names
 * ("1, 3") into lost; returns 0 when rank 0 did not answer (rank 0 lost). */
static int inquire_lost(mpi_comm *m, unsigned long long seq, char *lost, size_t cap) {
    int W = m->base.world_size, me = m->base.rank;
    long long mine = (long long)seq;
    lost[0] = 0;
    if (me != 0) {
        MPI_Request sreq, rreq;
        char verdict[256] = {0};
        MPI_Isend(&mine, 1, MPI_LONG_LONG, 0, TAG_REPORT, m->side, &sreq);
        MPI_Irecv(verdict, (int)sizeof verdict - 1, MPI_CHAR, 0, TAG_VERDICT, m->side, &rreq);
        if (!test_for(&rreq, GRACE_SECONDS + 2)) return 0;
        snprintf(lost, cap, "%s", verdict);
        return 1;
    }
    char *seen = calloc((size_t)W, 1);
    if (!seen) return 1;
    seen[0] = 1;
    double t0 = now_seconds();
    int got = 1;
    while (got < W && now_seconds() - t0 < GRACE_SECONDS) {
        int flag = 0;
        MPI_Status st;
        MPI_Iprobe(MPI_ANY_SOURCE, TAG_REPORT, m->side, &flag, &st);
        if (!flag) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
            continue;
        }
        long long theirs;
        MPI_Recv(&theirs, 1, MPI_LONG_LONG, st.MPI_SOURCE, TAG_REPORT, m->side, MPI_STATUS_IGNORE);
        /* a rank waiting in another collective is behind or ahead: not here */
        if (theirs == mine && !seen[st.MPI_SOURCE]) {
            seen[st.MPI_SOURCE] = 1;
            got++;
        }
    }
    size_t n = 0;
    int listed = 0;
    for (int r = 0; r < W && n + 16 < cap; r++) {
        if (seen[r]) continue;
        if (listed == 8) {
            n += (size_t)snprintf(lost + n, cap - n, ", ...");
            break;
        }
        n += (size_t)snprintf(lost + n, cap - n, listed ? ", %d" : "%d", r);
        listed++;
    }
    for (int r = 1; r < W; r++)
        if (seen[r]) {
            MPI_Request q;
            MPI_Isend(lost, (int)strlen(lost) + 1, MPI_CHAR, r, TAG_VERDICT, m->side, &q);
            MPI_Request_free(&q);
        }
    free(seen);
    return 1;
}

/* waits for req until the deadline; polls gently after the first spins so
 * that oversubscribed ranks leave the cores to the ones still computing */
static tc_status wait_request(mpi_comm *m, MPI_Request *req, const char *what) {
    double t0 = now_seconds();
    unsigned long long seq = ++m->seq;
    for (long spins = 0;; spins++) {
        int done = 0;
        MPI_Status st;
        int err = MPI_Test(req, &done, &st);
        if (err != MPI_SUCCESS) {
            char buf[MPI_MAX_ERROR_STRING + 64];
            return tc_fail(TC_ERR_INTERRUPTED, "rank %d: %s (collective #%llu) failed: %s",
                           m->base.rank, what, seq, mpi_message(err, buf));
        }
        if (done) return TC_OK;
        if (spins > 2000) {
            struct timespec ts = {0, 100000}; /* 0.1 ms */
            nanosleep(&ts, NULL);
            if ((spins & 255) == 0 && now_seconds() - t0 > m->timeout) {
                char lost[256];
                if (!inquire_lost(m, seq, lost, sizeof lost))
                    snprintf(lost, sizeof lost, "0 (it does not answer)");
                return tc_fail(TC_ERR_INTERRUPTED,
                               "rank %d: %s (collective #%llu) got no answer in %.0f s: lost "
                               "rank(s) %s (dead or hung; TINYCLIP_COMM_TIMEOUT); stopping",
                               m->base.rank, what, seq, m->timeout, lost[0] ? lost : "unknown");
            }
        }
    }
}

static tc_status check(mpi_comm *m, int err, const char *what) {
    if (err == MPI_SUCCESS) return TC_OK;
    char buf[MPI_MAX_ERROR_STRING + 64];
    return tc_fail(TC_ERR_INTERRUPTED, "rank %d: %s failed: %s", m->base.rank, what,
                   mpi_message(err, buf));
}

static tc_status check_count(mpi_comm *m, size_t count, const char *what) {
    if (count > (size_t)(1u << 30))
        return tc_fail(TC_ERR_ARG, "rank %d: %s of %zu elements: more than 2^30 in one call",
                       m->base.rank, what, count);
    return TC_OK;
}

static void scale(float *x, size_t n, float s) {
    for (size_t i = 0; i < n; i++)
        x[i] *= s;
}

static tc_status mpi_all_reduce(tc_comm *c, float *buf, size_t count, tc_reduce_op op) {
    mpi_comm *m = (mpi_comm *)c;
    TC_TRY(check_count(m, count, "all_reduce"));
    MPI_Request req;
    TC_TRY(check(m,
                 MPI_Iallreduce(MPI_IN_PLACE, buf, (int)count, MPI_FLOAT, MPI_SUM, m->world, &req),
                 "all_reduce"));
    TC_TRY(wait_request(m, &req, "all_reduce"));
    if (op == TC_REDUCE_AVG) scale(buf, count, 1.0f / (float)c->world_size);
    return TC_OK;
}

static tc_status mpi_all_reduce_start(tc_comm *c, float *buf, size_t count, tc_reduce_op op,
                                      tc_comm_request *req) {
    mpi_comm *m = (mpi_comm *)c;
    _Static_assert(sizeof(MPI_Request) <= sizeof req->handle, "MPI_Request fits the handle");
    TC_TRY(check_count(m, count, "all_reduce"));
    MPI_Request r;
    TC_TRY(check(m, MPI_Iallreduce(MPI_IN_PLACE, buf, (int)count, MPI_FLOAT, MPI_SUM, m->world, &r),
                 "all_reduce"));
    memcpy(req->handle, &r, sizeof r);
    req->buf = buf;
    req->count = count;
    req->op = op;
    req->active = 1;
    return TC_OK;
}

static tc_status mpi_wait(tc_comm *c, tc_comm_request *req) {
    mpi_comm *m = (mpi_comm *)c;
    if (!req->active) return TC_OK;
    MPI_Request r;
    memcpy(&r, req->handle, sizeof r);
    req->active = 0;
    TC_TRY(wait_request(m, &r, "all_reduce"));
    if (req->op == TC_REDUCE_AVG) scale(req->buf, req->count, 1.0f / (float)c->world_size);
    return TC_OK;
}

static tc_status mpi_all_gather(tc_comm *c, const float *send, float *recv, size_t count) {
    mpi_comm *m = (mpi_comm *)c;
    TC_TRY(check_count(m, count * (size_t)c->world_size, "all_gather"));
    MPI_Request req;
    TC_TRY(check(
        m, MPI_Iallgather(send, (int)count, MPI_FLOAT, recv, (int)count, MPI_FLOAT, m->world, &req),
        "all_gather"));
    return wait_request(m, &req, "all_gather");
}

static tc_status mpi_reduce_scatter(tc_comm *c, const float *send, float *recv, size_t count,
                                    tc_reduce_op op) {
    mpi_comm *m = (mpi_comm *)c;
    TC_TRY(check_count(m, count * (size_t)c->world_size, "reduce_scatter"));
    MPI_Request req;
    TC_TRY(check(
        m, MPI_Ireduce_scatter_block(send, recv, (int)count, MPI_FLOAT, MPI_SUM, m->world, &req),
        "reduce_scatter"));
    TC_TRY(wait_request(m, &req, "reduce_scatter"));
    if (op == TC_REDUCE_AVG) scale(recv, count, 1.0f / (float)c->world_size);
    return TC_OK;
}

/* int counts (*n) and displacements (*n + W) of a v-collective; an error
 * when a block or the sum does not fit MPI's int */
static tc_status int_counts(mpi_comm *m, const size_t *counts, int **n, const char *what) {
    int W = m->base.world_size;
    int *v = malloc(2 * (size_t)W * sizeof *v);
    if (!v) return tc_fail(TC_ERR_OOM, "rank %d: %s: out of memory", m->base.rank, what);
    size_t at = 0;
    for (int r = 0; r < W; r++) {
        tc_status s = check_count(m, at + counts[r], what);
        if (s != TC_OK) {
            free(v);
            return s;
        }
        v[r] = (int)counts[r];
        v[W + r] = (int)at;
        at += counts[r];
    }
    *n = v;
    return TC_OK;
}

static tc_status mpi_reduce_scatter_v(tc_comm *c, const float *send, float *recv,
                                      const size_t *counts, tc_reduce_op op) {
    mpi_comm *m = (mpi_comm *)c;
    int *n;
    TC_TRY(int_counts(m, counts, &n, "reduce_scatter_v"));
    MPI_Request req;
    tc_status s = check(m, MPI_Ireduce_scatter(send, recv, n, MPI_FLOAT, MPI_SUM, m->world, &req),
                        "reduce_scatter_v");
    free(n);
    TC_TRY(s);
    TC_TRY(wait_request(m, &req, "reduce_scatter_v"));
    if (op == TC_REDUCE_AVG) scale(recv, counts[c->rank], 1.0f / (float)c->world_size);
    return TC_OK;
}

static tc_status mpi_all_gather_v(tc_comm *c, float *buf, const size_t *counts) {
    mpi_comm *m = (mpi_comm *)c;
    int *n;
    TC_TRY(int_counts(m, counts, &n, "all_gather_v"));
    MPI_Request req;
    tc_status s = check(m,
                        MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, n,
                                        n + c->world_size, MPI_FLOAT, m->world, &req),
                        "all_gather_v");
    free(n);
    TC_TRY(s);
    return wait_request(m, &req, "all_gather_v");
}

static tc_status mpi_broadcast(tc_comm *c, void *buf, size_t bytes, int root) {
    mpi_comm *m = (mpi_comm *)c;
    if (root < 0 || root >= c->world_size)
        return tc_fail(TC_ERR_ARG, "comm: broadcast from rank %d of %d", root, c->world_size);
    TC_TRY(check_count(m, bytes, "broadcast"));
    MPI_Request req;
    TC_TRY(check(m, MPI_Ibcast(buf, (int)bytes, MPI_BYTE, root, m->world, &req), "broadcast"));
    return wait_request(m, &req, "broadcast");
}

static tc_status mpi_barrier(tc_comm *c) {
    mpi_comm *m = (mpi_comm *)c;
    MPI_Request req;
    TC_TRY(check(m, MPI_Ibarrier(m->world, &req), "barrier"));
    return wait_request(m, &req, "barrier");
}

static tc_status mpi_host_all_reduce(tc_comm *c, double *buf, size_t count, tc_reduce_op op) {
    mpi_comm *m = (mpi_comm *)c;
    TC_TRY(check_count(m, count, "all_reduce"));
    MPI_Request req;
    TC_TRY(check(m,
                 MPI_Iallreduce(MPI_IN_PLACE, buf, (int)count, MPI_DOUBLE, MPI_SUM, m->world, &req),
                 "all_reduce"));
    TC_TRY(wait_request(m, &req, "all_reduce"));
    if (op == TC_REDUCE_AVG)
        for (size_t i = 0; i < count; i++)
            buf[i] /= (double)c->world_size;
    return TC_OK;
}

static void mpi_abort(tc_comm *c, int code) {
    mpi_comm *m = (mpi_comm *)c;
    MPI_Abort(m->world, code);
}

static void mpi_destroy(tc_comm *c) {
    mpi_comm *m = (mpi_comm *)c;
    if (!m) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&m->side);
    if (m->we_initialised && !finalized) MPI_Finalize();
    free(m);
}

tc_status tc_comm_mpi_create(tc_comm **out, double timeout_s) {
    *out = NULL;
    int inited = 0, provided = 0, we = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
            return tc_fail(TC_ERR_INTERRUPTED, "MPI_Init failed");
        we = 1;
    }
    mpi_comm *m = calloc(1, sizeof *m);
    if (!m) return tc_fail(TC_ERR_OOM, "comm: out of memory");
    m->we_initialised = we;
    m->world = MPI_COMM_WORLD;
    /* errors come back as codes (with a message), never as an abort inside MPI */
    MPI_Comm_set_errhandler(m->world, MPI_ERRORS_RETURN);
    if (MPI_Comm_dup(m->world, &m->side) != MPI_SUCCESS) {
        free(m);
        return tc_fail(TC_ERR_INTERRUPTED, "MPI: cannot duplicate the world communicator");
    }
    MPI_Comm_rank(m->world, &m->base.rank);
    MPI_Comm_size(m->world, &m->base.world_size);
    MPI_Comm local;
    if (MPI_Comm_split_type(m->world, MPI_COMM_TYPE_SHARED, m->base.rank, MPI_INFO_NULL, &local) ==
        MPI_SUCCESS) {
        MPI_Comm_rank(local, &m->base.local_rank);
        MPI_Comm_size(local, &m->base.local_size);
        MPI_Comm_free(&local);
    } else {
        m->base.local_rank = 0;
        m->base.local_size = 1;
    }
    m->timeout = timeout_s;
    m->base.name = "mpi";
    m->base.all_reduce_f32 = mpi_all_reduce;
    m->base.all_reduce_start = mpi_all_reduce_start;
    m->base.wait = mpi_wait;
    m->base.all_gather_f32 = mpi_all_gather;
    m->base.reduce_scatter_f32 = mpi_reduce_scatter;
    m->base.reduce_scatter_v_f32 = mpi_reduce_scatter_v;
    m->base.all_gather_v_f32 = mpi_all_gather_v;
    m->base.broadcast = mpi_broadcast;
    m->base.barrier = mpi_barrier;
    m->base.host_all_reduce_f64 = mpi_host_all_reduce;
    m->base.host_broadcast = mpi_broadcast;
    m->base.abort = mpi_abort;
    m->base.destroy = mpi_destroy;
    m->base.impl = m;
    *out = &m->base;
    return TC_OK;
}

#endif
