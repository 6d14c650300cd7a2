/* the world of a run (world.h) */
#include "world.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_select.h"
#include "comm_mpi.h"
#if defined(TC_HAVE_CUDA) && defined(TC_HAVE_NCCL) && defined(TC_HAVE_MPI)
#include "comm_nccl.h"
#endif
#ifdef TC_HAVE_CUDA
#include "tc_cuda.h"
#endif

#define DEFAULT_COMM_TIMEOUT_S 45.0

double tc_comm_timeout_from_env(void) {
    const char *v = getenv("TINYCLIP_COMM_TIMEOUT");
    if (!v || !*v) return DEFAULT_COMM_TIMEOUT_S;
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x <= 0 || x > 1 << 24) return DEFAULT_COMM_TIMEOUT_S;
    return (double)x;
}

/* several processes on the CUDA backend: one GPU per rank, NCCL */
static tc_status open_cuda_ranks(tc_world *w, const char *name, const tc_world_options *o) {
#if defined(TC_HAVE_CUDA) && defined(TC_HAVE_NCCL) && defined(TC_HAVE_MPI)
    /* one GPU per rank, by the rank on its machine; NCCL for the collectives */
    int ndev = tc_cuda_device_count(NULL, 0);
    if (ndev <= 0) return tc_fail(TC_ERR_UNSUPPORTED, "rank %d: no CUDA device", w->rank);
    tc_backend_options bo;
    TC_TRY(tc_backend_options_from_env(&bo));
    bo.device = w->mpi->local_rank % ndev;
    TC_TRY(tc_backend_open_with(name, &bo, &w->backend));
    /* w->comm stays the MPI comm until NCCL is up: a failure still aborts the job through it */
    tc_comm *nccl;
    TC_TRY(tc_comm_nccl_create(&nccl, w->mpi, w->backend, o->comm_timeout_s));
    w->comm = nccl;
    return TC_OK;
#else
    (void)name;
    (void)o;
    return tc_fail(TC_ERR_UNSUPPORTED,
                   "%d processes on the CUDA backend need NCCL and MPI in the build",
                   w->world_size);
#endif
}

void tc_cpu_model(char *buf, size_t cap) {
    snprintf(buf, cap, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        const char *v = strchr(line, ':');
        if (!v) break;
        v++;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t n = strcspn(v, "\n");
        snprintf(buf, cap, "%.*s", (int)n, v);
        break;
    }
    fclose(f);
}

static void describe(tc_world *w, int cuda, int device, int threads) {
    w->threads = threads > 0 ? threads : omp_get_max_threads();
    if (!cuda) {
        tc_cpu_model(w->device, sizeof w->device);
    } else {
#ifdef TC_HAVE_CUDA
        int ndev = tc_cuda_device_count(NULL, 0);
        if (ndev > 0) device %= ndev; /* as open_cuda_ranks picks it */
        tc_cuda_device_name(device, w->device, sizeof w->device);
#else
        snprintf(w->device, sizeof w->device, "cuda device %d", device);
#endif
    }
#ifdef __VERSION__
    const char *cc = __VERSION__;
#else
    const char *cc = "unknown compiler";
#endif
    snprintf(w->build, sizeof w->build, "tinyclip %s, cc %.60s, %.120s", TC_VERSION, cc,
             openblas_get_config());
}

tc_status tc_world_create(tc_world *w, const tc_world_options *o) {
    memset(w, 0, sizeof *w);
    /* launched by mpirun or srun: one rank of a data-parallel run */
    tc_comm *comm = tc_comm_single();
    if (tc_comm_launched_world() > 1) {
        TC_TRY(tc_comm_mpi_create(&w->mpi, o->comm_timeout_s));
        comm = w->mpi;
    }
    w->comm = comm;
    w->rank = comm->rank;
    w->world_size = comm->world_size;
    int cuda = strcmp(o->backend, "cuda") == 0;
    const char *name = cuda ? (o->fp32 ? "cuda-fp32" : "cuda") : o->backend;
    if (w->world_size > 1 && cuda)
        TC_TRY(open_cuda_ranks(w, name, o));
    else
        TC_TRY(tc_backend_open(name, o->threads, &w->backend));
    describe(w, cuda, w->world_size > 1 && cuda && w->mpi ? w->mpi->local_rank : 0, o->threads);
#ifdef TC_HAVE_CUDA
    /* batches in page-locked memory: uploads to the GPU without a staging copy */
    if (w->backend->caps.pinned_host_batches &&
        tc_cuda_pinned_allocator(&w->batch_allocator) != TC_OK)
        memset(&w->batch_allocator, 0, sizeof w->batch_allocator);
#endif
    return TC_OK;
}

void tc_world_destroy(tc_world *w) {
    if (w->comm && w->comm != w->mpi) w->comm->destroy(w->comm); /* NCCL before its bootstrap */
    if (w->backend) w->backend->destroy(w->backend);
    if (w->mpi) w->mpi->destroy(w->mpi);
    memset(w, 0, sizeof *w);
}
