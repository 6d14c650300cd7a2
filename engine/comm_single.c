/* the comm of a single process: world size 1, every collective copies its
 * input to its output (or does nothing in place). */
#include "comm.h"

#include <string.h>

static tc_status single_all_reduce(tc_comm *c, float *buf, size_t count, tc_reduce_op op) {
    return TC_OK;
}

static tc_status single_all_reduce_start(tc_comm *c, float *buf, size_t count, tc_reduce_op op,
                                         tc_comm_request *req) {
    req->active = 0;
    return TC_OK;
}

static tc_status single_wait(tc_comm *c, tc_comm_request *req) {
    return TC_OK;
}

static tc_status single_all_gather(tc_comm *c, const float *send, float *recv, size_t count) {
    /* host memory only: the single comm is used with the CPU backend, and the
     * trainer never calls collectives when world_size == 1 */
    if (send != recv) memmove(recv, send, count * sizeof(float));
    return TC_OK;
}

static tc_status single_reduce_scatter(tc_comm *c, const float *send, float *recv, size_t count,
                                       tc_reduce_op op) {
    if (send != recv) memmove(recv, send, count * sizeof(float));
    return TC_OK;
}

static tc_status single_reduce_scatter_v(tc_comm *c, const float *send, float *recv,
                                         const size_t *counts, tc_reduce_op op) {
    return single_reduce_scatter(c, send, recv, counts[0], op);
}

static tc_status single_all_gather_v(tc_comm *c, float *buf, const size_t *counts) {
    return TC_OK;
}

static tc_status single_broadcast(tc_comm *c, void *buf, size_t bytes, int root) {
    if (root != 0)
        return tc_fail(TC_ERR_ARG, "comm: broadcast from rank %d of a 1-process run", root);
    return TC_OK;
}

static tc_status single_barrier(tc_comm *c) {
    return TC_OK;
}

static tc_status single_host_all_reduce(tc_comm *c, double *buf, size_t count, tc_reduce_op op) {
    return TC_OK;
}

static void single_abort(tc_comm *c, int code) {}
static void single_destroy(tc_comm *c) {}

static tc_comm single_comm = {
    .name = "single",
    .rank = 0,
    .world_size = 1,
    .local_rank = 0,
    .local_size = 1,
    .all_reduce_f32 = single_all_reduce,
    .all_reduce_start = single_all_reduce_start,
    .wait = single_wait,
    .all_gather_f32 = single_all_gather,
    .reduce_scatter_f32 = single_reduce_scatter,
    .reduce_scatter_v_f32 = single_reduce_scatter_v,
    .all_gather_v_f32 = single_all_gather_v,
    .broadcast = single_broadcast,
    .barrier = single_barrier,
    .host_all_reduce_f64 = single_host_all_reduce,
    .host_broadcast = single_broadcast,
    .abort = single_abort,
    .destroy = single_destroy,
};

tc_comm *tc_comm_single(void) {
    return &single_comm;
}
