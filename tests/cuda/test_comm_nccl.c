/* the NCCL comm (cuda/comm_nccl.cu) on device buffers of the CUDA backend,
 * every collective against exact expected values.
 *
 * the test binary is also the MPI program: launched with TC_NCCL_DRIVER set,
 * every rank creates the MPI comm, the CUDA backend (fp32 mode) on GPU
 * local_rank and the NCCL comm bootstrapped through MPI, and checks:
 *   all_reduce SUM and AVG at 1, 1000 and 2^20+3 elements; three
 *   all_reduce_start on different buffers in flight together, with compute
 *   work queued between the starts and the waits; all_gather;
 *   reduce_scatter SUM and AVG; reduce_scatter_v and all_gather_v with uneven
 *   counts (a zero count first, then last, when world >= 2; {n} in a world
 *   of one); broadcast from the last rank; barrier (a late rank holds the
 *   others back); the host_* calls of the bootstrap comm.
 * inputs are small integers, so every sum is exact in fp32 and the results
 * are compared bit for bit; averages divide by a world of 1 or 2 (exact).
 * outputs are poisoned before each call and the elements past a
 * reduce_scatter's block must stay poisoned. rank 0 prints "nccl-check: ok"
 * when every rank passed.
 *
 * TC_NCCL_FAULT=die (world >= 2): rank 1 raises SIGKILL before a collective;
 * the others must stop well within 60 s with a message naming the failure.
 * TC_NCCL_BOOT=single bootstraps one rank without MPI (tc_comm_single), for
 * a machine with a GPU but no usable mpirun: every NCCL call still runs.
 *
 * the cmocka side runs `mpirun -np W` with W = min(GPUs, 2) (NCCL cannot put
 * two ranks on one GPU; a world of one still runs every NCCL call), and the
 * fault case when W >= 2. it exits 77 with the reason when the build has no
 * CUDA or NCCL or there is no GPU; without MPI or a matching mpirun it runs
 * the one-rank world without MPI and says so. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#include "backend.h"
#include "comm.h"
#include "comm_mpi.h"
#include "status.h"
#include "world.h"

#if defined(TC_HAVE_CUDA) && defined(TC_HAVE_NCCL)
#ifdef TC_HAVE_MPI
#include <mpi.h> /* OPEN_MPI: which mpirun can launch this build */
#endif

#include "comm_nccl.h"
#include "tc_cuda.h"

typedef struct {
    tc_backend *be;
    tc_comm *comm;
    int rank, W;
    int bad; /* checks that failed on this rank */
} ctx;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* a failed call leaves the ranks out of step: stop the whole job */
static void must(ctx *x, tc_status s, const char *what) {
    if (s == TC_OK) return;
    fprintf(stderr, "nccl-check: rank %d stopped: %s: %s\n", x->rank, what, tc_last_error());
    fflush(stderr);
    fflush(stdout);
    x->comm->abort(x->comm, 3);
    exit(3);
}

static float *dev_alloc(ctx *x, size_t n, const char *what) {
    void *p = NULL;
    must(x, x->be->alloc(x->be, n * sizeof(float), &p), what);
    return p;
}

static void upload(ctx *x, float *dev, const float *host, size_t n) {
    must(x, x->be->upload(x->be, dev, host, n * sizeof(float)), "upload");
}

static void download(ctx *x, float *host, const float *dev, size_t n) {
    must(x, x->be->download(x->be, host, dev, n * sizeof(float)), "download");
}

/* exact comparison; names the first mismatch */
static void expect_equal(ctx *x, const char *what, const float *got, const float *want, size_t n) {
    size_t wrong = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i] && wrong++ == 0) first = i;
    if (wrong) {
        printf("rank %d: %s: %zu of %zu elements wrong, first [%zu] = %.9g, want %.9g\n", x->rank,
               what, wrong, n, first, (double)got[first], (double)want[first]);
        x->bad++;
    } else if (x->rank == 0) {
        printf("%s: %zu elements exact\n", what, n);
    }
}

static const char *op_name(tc_reduce_op op) {
    return op == TC_REDUCE_AVG ? "AVG" : "SUM";
}

/* sum over ranks r of a + b*r, averaged when asked (a world of 1 or 2 divides exactly) */
static float reduced(ctx *x, double a, double b, tc_reduce_op op) {
    double s = (double)x->W * a + b * (double)x->W * (x->W - 1) / 2.0;
    return (float)(op == TC_REDUCE_AVG ? s / x->W : s);
}

static void check_all_reduce(ctx *x, size_t n, tc_reduce_op op) {
    float *h = malloc(n * sizeof *h), *want = malloc(n * sizeof *want);
    float *d = dev_alloc(x, n, "all_reduce buffer");
    for (size_t i = 0; i < n; i++) {
        h[i] = (float)(i % 1000 + 1 + 7 * x->rank);
        want[i] = reduced(x, (double)(i % 1000 + 1), 7, op);
    }
    upload(x, d, h, n);
    must(x, x->comm->all_reduce_f32(x->comm, d, n, op), "all_reduce");
    download(x, h, d, n);
    char what[96];
    snprintf(what, sizeof what, "all_reduce %s n=%zu", op_name(op), n);
    expect_equal(x, what, h, want, n);
    x->be->free(x->be, d);
    free(h);
    free(want);
}

/* three started all-reduces in flight at once, compute work queued between
 * the starts and the waits, the waits in another order than the starts */
static void check_started(ctx *x) {
    enum { R = 3 };
    const size_t n[R] = {(1u << 18) + 1, 12345, 1};
    const tc_reduce_op op[R] = {TC_REDUCE_SUM, TC_REDUCE_AVG, TC_REDUCE_SUM};
    float *d[R], *h[R], *want[R];
    tc_comm_request req[R];
    memset(req, 0, sizeof req);
    for (int k = 0; k < R; k++) {
        d[k] = dev_alloc(x, n[k], "started all_reduce buffer");
        h[k] = malloc(n[k] * sizeof(float));
        want[k] = malloc(n[k] * sizeof(float));
        for (size_t i = 0; i < n[k]; i++) {
            h[k][i] = (float)(i % 333 + (size_t)k + 11 * (size_t)x->rank);
            want[k][i] = reduced(x, (double)(i % 333 + (size_t)k), 11, op[k]);
        }
        upload(x, d[k], h[k], n[k]);
    }
    size_t busy_n = (size_t)1 << 22;
    float *busy = dev_alloc(x, busy_n, "compute buffer");
    for (int k = 0; k < R; k++)
        must(x, x->comm->all_reduce_start(x->comm, d[k], n[k], op[k], &req[k]), "all_reduce_start");
    for (int k = 0; k < R; k++)
        if (!req[k].active) {
            printf("rank %d: started all_reduce %d is not active\n", x->rank, k);
            x->bad++;
        }
    /* the other tower's backward, in the real run */
    for (int rep = 0; rep < 4; rep++)
        x->be->fill_f32(x->be, busy, (float)rep, busy_n);
    const int order[R] = {1, 2, 0};
    for (int j = 0; j < R; j++)
        must(x, x->comm->wait(x->comm, &req[order[j]]), "wait");
    must(x, x->comm->wait(x->comm, &req[0]), "wait on a finished request");
    /* later compute-stream work reads the reduced buffer: a copy, then the download */
    float *copy = dev_alloc(x, n[0], "copy of a reduced buffer");
    x->be->copy(x->be, copy, d[0], n[0] * sizeof(float));
    for (int k = 0; k < R; k++) {
        download(x, h[k], k == 0 ? copy : d[k], n[k]);
        char what[96];
        snprintf(what, sizeof what, "all_reduce_start/wait #%d %s n=%zu", k, op_name(op[k]), n[k]);
        expect_equal(x, what, h[k], want[k], n[k]);
        x->be->free(x->be, d[k]);
        free(h[k]);
        free(want[k]);
    }
    x->be->free(x->be, copy);
    x->be->free(x->be, busy);
}

static void check_all_gather(ctx *x) {
    const size_t c = 4097, total = c * (size_t)x->W;
    float *h = malloc(total * sizeof *h), *want = malloc(total * sizeof *want);
    float *send = dev_alloc(x, c, "all_gather send"),
          *recv = dev_alloc(x, total, "all_gather recv");
    for (size_t i = 0; i < c; i++)
        h[i] = (float)((size_t)x->rank * 8192 + i);
    for (size_t j = 0; j < total; j++)
        want[j] = (float)(j / c * 8192 + j % c);
    upload(x, send, h, c);
    x->be->fill_f32(x->be, recv, -1.0f, total);
    must(x, x->comm->all_gather_f32(x->comm, send, recv, c), "all_gather");
    download(x, h, recv, total);
    expect_equal(x, "all_gather count=4097", h, want, total);
    x->be->free(x->be, send);
    x->be->free(x->be, recv);
    free(h);
    free(want);
}

enum { GUARD = 16 }; /* poisoned elements past a reduce_scatter's block */
#define POISON (-7.0f)

static void check_guard(ctx *x, const char *what, const float *h, size_t at) {
    for (size_t i = at; i < at + GUARD; i++)
        if (h[i] != POISON) {
            printf("rank %d: %s wrote past its block at [%zu] (%.9g)\n", x->rank, what, i,
                   (double)h[i]);
            x->bad++;
            return;
        }
}

static void check_reduce_scatter(ctx *x, tc_reduce_op op) {
    const size_t c = 3001, total = c * (size_t)x->W;
    /* h holds the send buffer, then the block and its guard (longer in a world of one) */
    float *h = malloc((total + GUARD) * sizeof *h), *want = malloc(c * sizeof *want);
    float *send = dev_alloc(x, total, "reduce_scatter send");
    float *recv = dev_alloc(x, c + GUARD, "reduce_scatter recv");
    for (size_t j = 0; j < total; j++)
        h[j] = (float)(j % 97 + 5 * (size_t)x->rank);
    for (size_t i = 0; i < c; i++)
        want[i] = reduced(x, (double)(((size_t)x->rank * c + i) % 97), 5, op);
    upload(x, send, h, total);
    x->be->fill_f32(x->be, recv, POISON, c + GUARD);
    must(x, x->comm->reduce_scatter_f32(x->comm, send, recv, c, op), "reduce_scatter");
    download(x, h, recv, c + GUARD);
    char what[96];
    snprintf(what, sizeof what, "reduce_scatter %s count=3001", op_name(op));
    expect_equal(x, what, h, want, c);
    check_guard(x, what, h, c);
    x->be->free(x->be, send);
    x->be->free(x->be, recv);
    free(h);
    free(want);
}

/* uneven per-rank blocks; pattern 0 gives rank 0 nothing, pattern 1 the last rank */
static void check_v(ctx *x, int pattern) {
    int W = x->W, me = x->rank;
    size_t *counts = malloc((size_t)W * sizeof *counts), *disp = malloc((size_t)W * sizeof *disp);
    size_t total = 0;
    for (int k = 0; k < W; k++) {
        int empty = W > 1 && k == (pattern == 0 ? 0 : W - 1);
        counts[k] = empty          ? 0
                    : pattern == 0 ? 513 * (size_t)(k + 1) + (size_t)k
                                   : 300 + 777 * (size_t)k;
        disp[k] = total;
        total += counts[k];
    }
    size_t mine = counts[me];
    float *h = malloc((total + GUARD) * sizeof *h), *want = malloc(total * sizeof *want);
    float *send = dev_alloc(x, total, "reduce_scatter_v send");
    float *recv = dev_alloc(x, mine + GUARD, "reduce_scatter_v recv");
    char what[128], shape[64];
    if (W == 1)
        snprintf(shape, sizeof shape, "counts {%zu}", counts[0]);
    else
        snprintf(shape, sizeof shape, "counts {%zu, %zu%s}", counts[0], counts[1],
                 W > 2 ? ", ..." : "");
    for (int o = 0; o < 2; o++) {
        tc_reduce_op op = o ? TC_REDUCE_AVG : TC_REDUCE_SUM;
        for (size_t j = 0; j < total; j++)
            h[j] = (float)(j % 89 + 3 * (size_t)me);
        for (size_t i = 0; i < mine; i++)
            want[i] = reduced(x, (double)((disp[me] + i) % 89), 3, op);
        upload(x, send, h, total);
        x->be->fill_f32(x->be, recv, POISON, mine + GUARD);
        must(x, x->comm->reduce_scatter_v_f32(x->comm, send, recv, counts, op), "reduce_scatter_v");
        download(x, h, recv, mine + GUARD);
        snprintf(what, sizeof what, "reduce_scatter_v %s %s, rank %d's block", op_name(op), shape,
                 me);
        expect_equal(x, what, h, want, mine);
        check_guard(x, what, h, mine);
    }
    /* all_gather_v in place: the other blocks start poisoned */
    float *buf = dev_alloc(x, total, "all_gather_v buffer");
    for (int k = 0; k < W; k++)
        for (size_t i = 0; i < counts[k]; i++) {
            float v = (float)((size_t)k * 4096 + i % 4096);
            want[disp[k] + i] = v;
            h[disp[k] + i] = k == me ? v : POISON;
        }
    upload(x, buf, h, total);
    must(x, x->comm->all_gather_v_f32(x->comm, buf, counts), "all_gather_v");
    download(x, h, buf, total);
    snprintf(what, sizeof what, "all_gather_v %s, total %zu", shape, total);
    expect_equal(x, what, h, want, total);
    x->be->free(x->be, buf);
    x->be->free(x->be, send);
    x->be->free(x->be, recv);
    free(h);
    free(want);
    free(counts);
    free(disp);
}

static void check_broadcast(ctx *x) {
    const size_t bytes = 12345; /* not a multiple of 4 */
    int root = x->W - 1;
    unsigned char *h = malloc(bytes), *want = malloc(bytes);
    void *d = NULL;
    must(x, x->be->alloc(x->be, bytes, &d), "broadcast buffer");
    for (size_t i = 0; i < bytes; i++) {
        want[i] = (unsigned char)(i * 31 + 7);
        h[i] = x->rank == root ? want[i] : 0xAB;
    }
    must(x, x->be->upload(x->be, d, h, bytes), "upload");
    must(x, x->comm->broadcast(x->comm, d, bytes, root), "broadcast");
    must(x, x->be->download(x->be, h, d, bytes), "download");
    size_t i = 0;
    while (i < bytes && h[i] == want[i])
        i++;
    if (i < bytes) {
        printf("rank %d: broadcast from rank %d: byte %zu is 0x%02x, want 0x%02x\n", x->rank, root,
               i, h[i], want[i]);
        x->bad++;
    } else if (x->rank == 0) {
        printf("broadcast of %zu bytes from rank %d: exact\n", bytes, root);
    }
    /* a root outside the world is refused before any communication */
    if (x->comm->broadcast(x->comm, d, bytes, x->W) == TC_OK) {
        printf("rank %d: broadcast from rank %d of %d was accepted\n", x->rank, x->W, x->W);
        x->bad++;
    }
    x->be->free(x->be, d);
    free(h);
    free(want);
}

/* the last rank arrives 0.3 s late: nobody may leave the barrier before it */
static void check_barrier(ctx *x) {
    int late = x->W > 1 && x->rank == x->W - 1;
    if (late) {
        struct timespec ts = {0, 300000000};
        nanosleep(&ts, NULL);
    }
    double t0 = now_s();
    must(x, x->comm->barrier(x->comm), "barrier");
    double dt = now_s() - t0;
    if (x->W > 1 && !late && dt < 0.25) {
        printf("rank %d: left the barrier after %.3f s, before the late rank arrived\n", x->rank,
               dt);
        x->bad++;
    } else if (x->rank == 0) {
        printf("barrier: rank 0 waited %.3f s%s\n", dt, x->W > 1 ? " for the late rank" : "");
    }
}

static void check_host_calls(ctx *x) {
    double v[2] = {x->rank + 1.0, 1099511627776.0 + x->rank};
    double w0 = x->W * (x->W + 1) / 2.0, w1 = 1099511627776.0 * x->W + x->W * (x->W - 1) / 2.0;
    must(x, x->comm->host_all_reduce_f64(x->comm, v, 2, TC_REDUCE_SUM), "host_all_reduce_f64");
    int token = x->rank == x->W - 1 ? 4242 : -1;
    must(x, x->comm->host_broadcast(x->comm, &token, sizeof token, x->W - 1), "host_broadcast");
    if (v[0] != w0 || v[1] != w1 || token != 4242) {
        printf("rank %d: host calls: sum %.17g %.17g (want %.17g %.17g), broadcast %d\n", x->rank,
               v[0], v[1], w0, w1, token);
        x->bad++;
    } else if (x->rank == 0) {
        printf("host_all_reduce_f64 and host_broadcast: exact\n");
    }
}

/* rank 1 dies before a collective; the others must notice and stop */
static int fault_case(ctx *x) {
    check_all_reduce(x, 1000, TC_REDUCE_SUM); /* every rank is up */
    size_t n = (size_t)1 << 20;
    float *d = dev_alloc(x, n, "fault buffer");
    if (x->rank == 1) {
        fprintf(stderr, "rank 1: dying (fault injection) before an all_reduce\n");
        fflush(stderr);
        raise(SIGKILL);
    }
    double t0 = now_s();
    /* each call first settles the previous one: the second notices the loss */
    for (int k = 0; k < 4; k++)
        must(x, x->comm->all_reduce_f32(x->comm, d, n, TC_REDUCE_SUM),
             "all_reduce after rank 1 died");
    must(x, x->comm->barrier(x->comm), "barrier after rank 1 died");
    printf("nccl-check: FAILED: rank %d did not notice the lost rank 1 in %.1f s\n", x->rank,
           now_s() - t0);
    fflush(stdout);
    x->comm->abort(x->comm, 4);
    return 4;
}

/* the MPI program; returns the process exit status */
static int driver(void) {
    const char *boot_kind = getenv("TC_NCCL_BOOT");
    int single = boot_kind && strcmp(boot_kind, "single") == 0;
    tc_comm *boot = NULL;
    if (single) {
        boot = tc_comm_single();
    } else if (tc_comm_mpi_create(&boot, tc_comm_timeout_from_env()) != TC_OK) {
        fprintf(stderr, "nccl-check: MPI: %s\n", tc_last_error());
        return 2;
    }
    ctx x = {.rank = boot->rank, .W = boot->world_size};
    char why[256] = "";
    int ndev = tc_cuda_device_count(why, sizeof why);
    if (ndev <= 0) {
        fprintf(stderr, "nccl-check: rank %d: no CUDA device: %s\n", x.rank, why);
        boot->abort(boot, 2);
        return 2;
    }
    if (boot->local_size > ndev) {
        fprintf(stderr,
                "nccl-check: rank %d: %d ranks on this machine but %d GPU(s): NCCL needs one GPU "
                "per rank\n",
                x.rank, boot->local_size, ndev);
        boot->abort(boot, 2);
        return 2;
    }
    int device = boot->local_rank;
    x.comm = boot; /* until the NCCL comm exists, failures abort through MPI */
    must(&x, tc_backend_cuda_create(&x.be, &(tc_backend_options){.device = device, .fp32 = 1}),
         "CUDA backend");
    tc_comm *nccl = NULL;
    must(&x, tc_comm_nccl_create(&nccl, boot, x.be, tc_comm_timeout_from_env()), "NCCL comm");
    x.comm = nccl;
    char name[256];
    tc_cuda_device_name(device, name, sizeof name);
    printf("rank %d of %d (%s bootstrap): device %d, %s, comm %s\n", x.rank, x.W,
           single ? "no-MPI" : "MPI", device, name, x.comm->name);
    fflush(stdout);

    const char *fault = getenv("TC_NCCL_FAULT");
    if (fault && strcmp(fault, "die") == 0) {
        if (x.W >= 2) return fault_case(&x);
        printf("TC_NCCL_FAULT=die needs a world of 2 or more: ignored\n");
    }

    double t0 = now_s();
    const size_t sizes[] = {1, 1000, ((size_t)1 << 20) + 3};
    for (int s = 0; s < 3; s++) {
        check_all_reduce(&x, sizes[s], TC_REDUCE_SUM);
        check_all_reduce(&x, sizes[s], TC_REDUCE_AVG);
    }
    check_started(&x);
    check_all_gather(&x);
    check_reduce_scatter(&x, TC_REDUCE_SUM);
    check_reduce_scatter(&x, TC_REDUCE_AVG);
    check_v(&x, 0);
    check_v(&x, 1);
    check_broadcast(&x);
    check_barrier(&x);
    check_host_calls(&x);

    double flag = x.bad;
    must(&x, x.comm->host_all_reduce_f64(x.comm, &flag, 1, TC_REDUCE_SUM), "final vote");
    if (x.rank == 0) {
        printf("world %d: %.0f failed check(s) over all ranks, %.2f s\n", x.W, flag, now_s() - t0);
        printf(flag == 0 ? "nccl-check: ok\n" : "nccl-check: FAILED\n");
    }
    fflush(stdout);
    x.comm->destroy(x.comm);
    x.be->destroy(x.be);
    boot->destroy(boot);
    return flag == 0 ? 0 : 1;
}

/* ---- the cmocka side: launches the driver ---- */

static int g_world;                     /* ranks to launch: min(GPUs, 2) */
static const char *g_mpirun_flags = ""; /* Open MPI: oversubscribe, root allowed (CI, containers) */
static char g_no_mpirun[256];           /* why mpirun is not used; "" when it is */

static void find_mpirun(void) {
    if (!tc_comm_mpi_available()) {
        snprintf(g_no_mpirun, sizeof g_no_mpirun, "this build has no MPI");
        return;
    }
    if (system("command -v mpirun >/dev/null 2>&1") != 0) {
        snprintf(g_no_mpirun, sizeof g_no_mpirun, "mpirun not found");
        return;
    }
    int open_mpi = system("mpirun --version 2>&1 | grep -q 'Open MPI'") == 0;
#ifdef OPEN_MPI
    /* another MPI's launcher would start independent Open MPI singletons */
    if (!open_mpi) {
        snprintf(g_no_mpirun, sizeof g_no_mpirun,
                 "this build uses Open MPI but mpirun is another MPI's");
        return;
    }
#endif
    if (open_mpi) g_mpirun_flags = "--oversubscribe --allow-run-as-root";
}

static int launch(const char *fault, char **out, double *seconds) {
    char self[1024];
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(k > 0);
    self[k] = 0;
    char how[1400];
    if (g_no_mpirun[0])
        snprintf(how, sizeof how, "env TC_NCCL_BOOT=single '%s'", self);
    else
        snprintf(how, sizeof how, "mpirun %s -np %d '%s'", g_mpirun_flags, g_world, self);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "env OMP_NUM_THREADS=1 TC_NCCL_DRIVER=1 TC_NCCL_FAULT=%s TINYCLIP_COMM_TIMEOUT=10 "
             "NCCL_DEBUG=${NCCL_DEBUG:-WARN} timeout 90 %s 2>&1",
             fault ? fault : "", how);
    printf("$ %s\n", cmd);
    fflush(stdout);
    double t0 = now_s();
    *out = NULL;
    int rc = tc_run_capture(cmd, out);
    *seconds = now_s() - t0;
    assert_non_null(*out);
    return rc;
}

static void test_collectives(void **state) {
    if (g_no_mpirun[0])
        printf("NOTE: %s: one rank bootstrapped without MPI (every NCCL call still runs)\n",
               g_no_mpirun);
    char *out;
    double sec;
    int rc = launch(NULL, &out, &sec);
    printf("world %d, exit %d, %.1f s:\n%s", g_no_mpirun[0] ? 1 : g_world, rc, sec, out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "nccl-check: ok"));
    free(out);
}

static void test_rank_dies(void **state) {
    if (g_no_mpirun[0] || g_world < 2) {
        printf("SKIP (lost rank): needs 2 ranks on 2 GPUs under mpirun; here %s\n",
               g_no_mpirun[0] ? g_no_mpirun : "there is 1 GPU");
        skip();
    }
    char *out;
    double sec;
    int rc = launch("die", &out, &sec);
    printf("world %d, rank 1 dies (exit %d, %.1f s):\n%s", g_world, rc, sec, out);
    assert_int_not_equal(rc, 0);
    assert_int_not_equal(rc, 124); /* not the outer timeout: the job stopped itself */
    assert_true(sec < 60.0);
    assert_null(strstr(out, "nccl-check: ok"));
    assert_null(strstr(out, "nccl-check: FAILED"));
    /* the survivor's own message, or Open MPI's report of the killed rank */
    if (!strstr(out, "nccl-check: rank 0 stopped") &&
        !(strstr(out, "rank 1") && strstr(out, "signal 9")))
        fail_msg("the output names neither rank 0's stop nor rank 1's death");
    free(out);
}

int main(void) {
    if (getenv("TC_NCCL_DRIVER")) return driver();
    char why[256] = "";
    int ndev = tc_cuda_device_count(why, sizeof why);
    if (ndev <= 0) tc_skip_test("no CUDA device: %s", why);
    g_world = ndev >= 2 ? 2 : 1;
    find_mpirun();
    printf("%d GPU(s): world %d%s%s\n", ndev, g_world, g_no_mpirun[0] ? ", no mpirun: " : "",
           g_no_mpirun);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_collectives),
        cmocka_unit_test(test_rank_dies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#elif defined(TC_HAVE_CUDA) /* CUDA without NCCL */

int main(void) {
    tc_skip_test("no NCCL: the CUDA backend was built without NCCL (libnccl not found)");
}

#else /* no CUDA backend in this build */

int main(void) {
    tc_skip_test(
        "no CUDA device: the CUDA backend is not built (nvcc was not found or TC_ENABLE_CUDA=OFF)");
}

#endif
