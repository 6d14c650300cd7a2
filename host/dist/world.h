/* the world of a run: this process's rank among the processes of a
 * data-parallel job, the comm between them, the backend it computes on and
 * the allocator of the loader's batches, made once at start-up from plain
 * parameters.
 *
 *   one process              the single comm, the backend named
 *   mpirun / srun, CPU       the MPI comm (host/dist/comm_mpi.h)
 *   mpirun / srun, CUDA      one GPU per rank (by the rank on its machine),
 *                            NCCL bootstrapped through MPI (cuda/comm_nccl.h)
 *
 * batches go in page-locked memory when the backend uploads from it
 * asynchronously (caps.pinned_host_batches); otherwise the loader mallocs. */
#ifndef TC_WORLD_H
#define TC_WORLD_H

#include "backend.h"
#include "comm.h"
#include "host_alloc.h"

typedef struct {
    const char *backend;   /* "cpu" or "cuda" */
    int fp32;              /* cuda: full fp32 instead of bf16 mixed precision */
    int threads;           /* CPU threads, 0 = every core */
    double comm_timeout_s; /* how long a collective may wait for a peer (> 0) */
} tc_world_options;

typedef struct {
    tc_comm *comm;       /* the collectives of the run */
    tc_backend *backend; /* NULL until made */
    int rank, world_size;
    tc_batch_allocator batch_allocator; /* all zero: the loader's malloc */
    tc_comm *mpi;                       /* the MPI comm when launched as several processes */
    /* what this rank computes on, for the record of a run (a resume is
     * bit-identical only on the same): CPU threads, the CPU model or the
     * GPU, the build (version, compiler, BLAS) */
    int threads;
    char device[160];
    char build[224];
} tc_world;

/* the first "model name" of /proc/cpuinfo, "unknown CPU" when there is none */
void tc_cpu_model(char *buf, size_t cap);

/* TINYCLIP_COMM_TIMEOUT: seconds, a whole number in 1..2^24; 45 when unset
 * or not such a number */
double tc_comm_timeout_from_env(void);

/* makes the comm, then the backend. on a failure before the comm exists
 * w->comm is NULL; after it, w->comm is kept so that the caller can stop
 * the other ranks (comm->abort). tc_world_destroy frees what was made in
 * every case. */
tc_status tc_world_create(tc_world *w, const tc_world_options *o);

/* the NCCL comm before the backend it runs on, the MPI comm last */
void tc_world_destroy(tc_world *w);

#endif
