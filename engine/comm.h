/* collectives between the processes of a data-parallel run (docs/design.md §3),
 * a table of function pointers like the backend, so the engine never sees
 * MPI or NCCL. three implementations:
 *   single process   engine/comm_single.c   (every collective is the identity)
 *   MPI              host/dist/comm_mpi.c   (CPU backend: buffers are host memory)
 *   NCCL             cuda/comm_nccl.cu      (CUDA backend, bootstrapped through MPI)
 *
 * buffers of all_reduce / all_gather / reduce_scatter / broadcast live where
 * the backend the comm was made for keeps its tensors (device memory for
 * NCCL); the host_* calls always take host memory. every rank must call the
 * same collectives in the same order with the same counts.
 *
 * rank order: all_gather writes rank r's count elements at recv + r*count;
 * reduce_scatter reduces (world*count) elements and leaves rank r the block
 * [r*count, (r+1)*count). a collective that fails (a lost rank, a timeout)
 * returns TC_ERR_IO with a message that names the rank when it is known. */
#ifndef TC_COMM_H
#define TC_COMM_H

#include <stddef.h>

#include "status.h"

typedef enum { TC_REDUCE_SUM = 0, TC_REDUCE_AVG = 1 } tc_reduce_op;

/* a started all-reduce (all_reduce_start): finish it with wait before the
 * buffer is read or written again; the handle is the implementation's */
typedef struct {
    float *buf;
    size_t count;
    int op, active;
    unsigned char handle[64];
} tc_comm_request;

typedef struct tc_comm tc_comm;
struct tc_comm {
    const char *name; /* "single", "mpi", "nccl" */
    int rank, world_size;
    int local_rank, local_size; /* on this machine: picks the GPU */

    tc_status (*all_reduce_f32)(tc_comm *c, float *buf, size_t count, tc_reduce_op op);
    /* the same, started now and finished by wait: on the GPU it runs on a
     * stream of its own after the work queued so far, and wait makes later
     * work wait for it (events, no host synchronisation), so it overlaps
     * whatever is queued in between (the other tower's backward) */
    tc_status (*all_reduce_start)(tc_comm *c, float *buf, size_t count, tc_reduce_op op,
                                  tc_comm_request *req);
    tc_status (*wait)(tc_comm *c, tc_comm_request *req);
    /* send (count) -> recv (world*count); send may not alias recv */
    tc_status (*all_gather_f32)(tc_comm *c, const float *send, float *recv, size_t count);
    /* send (world*count) -> recv (count), summed or averaged over ranks */
    tc_status (*reduce_scatter_f32)(tc_comm *c, const float *send, float *recv, size_t count,
                                    tc_reduce_op op);
    /* per-rank counts (blocks in rank order, block r at displacement
     * counts[0] + ... + counts[r-1]): the sharded optimizer's collectives.
     * reduce_scatter_v: send (sum of counts) -> recv (counts[rank]), this
     * rank's block reduced over ranks; send may not alias recv.
     * all_gather_v: in place; buf (sum of counts) holds this rank's block at
     * its displacement and receives every other rank's block at theirs. */
    tc_status (*reduce_scatter_v_f32)(tc_comm *c, const float *send, float *recv,
                                      const size_t *counts, tc_reduce_op op);
    tc_status (*all_gather_v_f32)(tc_comm *c, float *buf, const size_t *counts);
    tc_status (*broadcast)(tc_comm *c, void *buf, size_t bytes, int root);
    tc_status (*barrier)(tc_comm *c);
    /* host memory, whatever the backend */
    tc_status (*host_all_reduce_f64)(tc_comm *c, double *buf, size_t count, tc_reduce_op op);
    tc_status (*host_broadcast)(tc_comm *c, void *buf, size_t bytes, int root);
    /* aborts every rank of the job (after a fatal error on this one) */
    void (*abort)(tc_comm *c, int code);
    void (*destroy)(tc_comm *c);
    void *impl;
};

/* the one-process comm (a static object: destroy is a no-op) */
tc_comm *tc_comm_single(void);

#endif
