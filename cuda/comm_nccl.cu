/* NCCL collectives for the CUDA backend; contract in comm_nccl.h. compiled
 * only when NCCL was found (TC_HAVE_NCCL); without it the file is empty. */
#ifdef TC_HAVE_NCCL

#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm_nccl.h"
#include "cuda_internal.h"

namespace {

struct nccl_comm {
    tc_comm base;
    tc_comm *boot;
    ncclComm_t nccl;
    cudaStream_t stream;
    cudaEvent_t last; /* completion of the last queued collective */
    /* started all-reduces: their own stream, events to order it against the
     * compute stream (no host synchronisation) */
    cudaStream_t side;
    cudaEvent_t ready[8], done[8];
    int next_event;
    int pending;
    double timeout;
    unsigned long long seq;
};

double now_seconds() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

__global__ void scale_kernel(float *x, size_t n, float s) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] *= s;
}

/* x *= s on a stream (the average of a sum over ranks); a refused launch is
 * reported, never left for a later call to trip over */
tc_status scale_async(nccl_comm *m, cudaStream_t stream, float *x, size_t n, float s,
                      const char *what) {
    if (n == 0) return TC_OK;
    scale_kernel<<<tc_cuda_grid(n, 256), 256, 0, stream>>>(x, n, s);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return tc_fail(TC_ERR_BACKEND, "rank %d: %s: averaging kernel: %s", m->base.rank, what,
                       cudaGetErrorString(e));
    return TC_OK;
}

/* the collective's completion marker on a stream */
tc_status record(nccl_comm *m, cudaEvent_t ev, cudaStream_t stream, const char *what) {
    cudaError_t e = cudaEventRecord(ev, stream);
    if (e != cudaSuccess)
        return tc_fail(TC_ERR_BACKEND, "rank %d: %s: cudaEventRecord: %s", m->base.rank, what,
                       cudaGetErrorString(e));
    return TC_OK;
}

/* the previous collective finished, or the peers are lost */
tc_status settle(nccl_comm *m, const char *what) {
    if (!m->pending) return TC_OK;
    double t0 = now_seconds();
    for (;;) {
        cudaError_t e = cudaEventQuery(m->last);
        if (e == cudaSuccess) break;
        if (e != cudaErrorNotReady)
            return tc_fail(TC_ERR_BACKEND, "rank %d: %s: %s", m->base.rank, what,
                           cudaGetErrorString(e));
        ncclResult_t async = ncclSuccess;
        ncclCommGetAsyncError(m->nccl, &async);
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 14, 0)
        if (async == ncclInProgress) async = ncclSuccess;
#endif
        if (async != ncclSuccess) {
            ncclCommAbort(m->nccl);
            m->nccl = NULL;
            return tc_fail(TC_ERR_INTERRUPTED, "rank %d: %s (collective #%llu): NCCL error: %s",
                           m->base.rank, what, m->seq, ncclGetErrorString(async));
        }
        if (now_seconds() - t0 > m->timeout) {
            ncclCommAbort(m->nccl);
            m->nccl = NULL;
            return tc_fail(TC_ERR_INTERRUPTED,
                           "rank %d: %s (collective #%llu) got no answer from the other ranks in "
                           "%.0f s: a rank died or hangs (TINYCLIP_COMM_TIMEOUT); stopping",
                           m->base.rank, what, m->seq, m->timeout);
        }
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    m->pending = 0;
    return TC_OK;
}

tc_status begin(nccl_comm *m, const char *what) {
    if (!m->nccl)
        return tc_fail(TC_ERR_INTERRUPTED, "rank %d: %s after the NCCL communicator was aborted",
                       m->base.rank, what);
    return settle(m, what);
}

/* after the collective (r) and its averaging (avg, when it was queued) */
tc_status finish(nccl_comm *m, ncclResult_t r, tc_status avg, const char *what) {
    m->seq++;
    if (r != ncclSuccess)
        return tc_fail(TC_ERR_INTERRUPTED, "rank %d: %s (collective #%llu): %s", m->base.rank, what,
                       m->seq, ncclGetErrorString(r));
    TC_TRY(avg);
    TC_TRY(record(m, m->last, m->stream, what));
    m->pending = 1;
    return TC_OK;
}

/* the average of a sum just queued on stream, when op asks for it */
tc_status average(nccl_comm *m, ncclResult_t r, tc_reduce_op op, cudaStream_t stream, float *x,
                  size_t n, const char *what) {
    if (r != ncclSuccess || op != TC_REDUCE_AVG) return TC_OK;
    return scale_async(m, stream, x, n, 1.0f / m->base.world_size, what);
}

tc_status nccl_all_reduce(tc_comm *c, float *buf, size_t count, tc_reduce_op op) {
    nccl_comm *m = (nccl_comm *)c;
    TC_TRY(begin(m, "all_reduce"));
    ncclResult_t r = ncclAllReduce(buf, buf, count, ncclFloat, ncclSum, m->nccl, m->stream);
    tc_status a = average(m, r, op, m->stream, buf, count, "all_reduce");
    return finish(m, r, a, "all_reduce");
}

tc_status nccl_all_reduce_start(tc_comm *c, float *buf, size_t count, tc_reduce_op op,
                                tc_comm_request *req) {
    nccl_comm *m = (nccl_comm *)c;
    TC_TRY(begin(m, "all_reduce"));
    int k = m->next_event;
    m->next_event = (k + 1) % 8;
    /* the side stream starts after everything queued so far (the gradients) */
    if (cudaEventRecord(m->ready[k], m->stream) != cudaSuccess ||
        cudaStreamWaitEvent(m->side, m->ready[k], 0) != cudaSuccess)
        return tc_fail(TC_ERR_BACKEND, "rank %d: all_reduce: cannot order the streams",
                       m->base.rank);
    m->seq++;
    ncclResult_t r = ncclAllReduce(buf, buf, count, ncclFloat, ncclSum, m->nccl, m->side);
    if (r != ncclSuccess)
        return tc_fail(TC_ERR_INTERRUPTED, "rank %d: all_reduce (collective #%llu): %s",
                       m->base.rank, m->seq, ncclGetErrorString(r));
    TC_TRY(average(m, r, op, m->side, buf, count, "all_reduce"));
    TC_TRY(record(m, m->done[k], m->side, "all_reduce"));
    memcpy(req->handle, &k, sizeof k);
    req->buf = buf;
    req->count = count;
    req->op = op;
    req->active = 1;
    return TC_OK;
}

tc_status nccl_wait(tc_comm *c, tc_comm_request *req) {
    nccl_comm *m = (nccl_comm *)c;
    if (!req->active) return TC_OK;
    int k;
    memcpy(&k, req->handle, sizeof k);
    req->active = 0;
    /* later work on the compute stream waits for the reduced buffer */
    if (cudaStreamWaitEvent(m->stream, m->done[k], 0) != cudaSuccess)
        return tc_fail(TC_ERR_BACKEND, "rank %d: all_reduce: cannot order the streams",
                       m->base.rank);
    TC_TRY(record(m, m->last, m->stream, "all_reduce wait"));
    m->pending = 1;
    return TC_OK;
}

tc_status nccl_all_gather(tc_comm *c, const float *send, float *recv, size_t count) {
    nccl_comm *m = (nccl_comm *)c;
    TC_TRY(begin(m, "all_gather"));
    return finish(m, ncclAllGather(send, recv, count, ncclFloat, m->nccl, m->stream), TC_OK,
                  "all_gather");
}

tc_status nccl_reduce_scatter(tc_comm *c, const float *send, float *recv, size_t count,
                              tc_reduce_op op) {
    nccl_comm *m = (nccl_comm *)c;
    TC_TRY(begin(m, "reduce_scatter"));
    ncclResult_t r = ncclReduceScatter(send, recv, count, ncclFloat, ncclSum, m->nccl, m->stream);
    tc_status a = average(m, r, op, m->stream, recv, count, "reduce_scatter");
    return finish(m, r, a, "reduce_scatter");
}

/* NCCL has no v-collectives: a group of one rooted call per rank (a reduce
 * to each block's owner, a broadcast from it), which NCCL runs as one */
tc_status nccl_reduce_scatter_v(tc_comm *c, const float *send, float *recv, const size_t *counts,
                                tc_reduce_op op) {
    nccl_comm *m = (nccl_comm *)c;
    TC_TRY(begin(m, "reduce_scatter_v"));
    ncclResult_t r = ncclGroupStart();
    size_t at = 0;
    for (int k = 0; k < c->world_size && r == ncclSuccess; k++) {
        if (counts[k] > 0)
            r = ncclReduce(send + at, recv, counts[k], ncclFloat, ncclSum, k, m->nccl, m->stream);
        at += counts[k];
    }
    ncclResult_t e = ncclGroupEnd();
    if (r == ncclSuccess) r = e;
    tc_status a = average(m, r, op, m->stream, recv, counts[c->rank], "reduce_scatter_v");
    return finish(m, r, a, "reduce_scatter_v");
}

tc_status nccl_all_gather_v(tc_comm *c, float *buf, const size_t *counts) {
    nccl_comm *m = (nccl_comm *)c;
    TC_TRY(begin(m, "all_gather_v"));
    ncclResult_t r = ncclGroupStart();
    size_t at = 0;
    for (int k = 0; k < c->world_size && r == ncclSuccess; k++) {
        if (counts[k] > 0)
            r = ncclBroadcast(buf + at, buf + at, counts[k], ncclFloat, k, m->nccl, m->stream);
        at += counts[k];
    }
    ncclResult_t e = ncclGroupEnd();
    if (r == ncclSuccess) r = e;
    return finish(m, r, TC_OK, "all_gather_v");
}

tc_status nccl_broadcast(tc_comm *c, void *buf, size_t bytes, int root) {
    nccl_comm *m = (nccl_comm *)c;
    if (root < 0 || root >= c->world_size)
        return tc_fail(TC_ERR_ARG, "comm: broadcast from rank %d of %d", root, c->world_size);
    TC_TRY(begin(m, "broadcast"));
    return finish(m, ncclBroadcast(buf, buf, bytes, ncclChar, root, m->nccl, m->stream), TC_OK,
                  "broadcast");
}

tc_status nccl_barrier(tc_comm *c) {
    nccl_comm *m = (nccl_comm *)c;
    TC_TRY(begin(m, "barrier"));
    return m->boot->barrier(m->boot);
}

tc_status nccl_host_all_reduce(tc_comm *c, double *buf, size_t count, tc_reduce_op op) {
    nccl_comm *m = (nccl_comm *)c;
    return m->boot->host_all_reduce_f64(m->boot, buf, count, op);
}

tc_status nccl_host_broadcast(tc_comm *c, void *buf, size_t bytes, int root) {
    nccl_comm *m = (nccl_comm *)c;
    return m->boot->host_broadcast(m->boot, buf, bytes, root);
}

void nccl_abort(tc_comm *c, int code) {
    nccl_comm *m = (nccl_comm *)c;
    if (m->nccl) ncclCommAbort(m->nccl);
    m->nccl = NULL;
    m->boot->abort(m->boot, code);
}

void nccl_destroy(tc_comm *c) {
    nccl_comm *m = (nccl_comm *)c;
    if (!m) return;
    if (m->nccl) {
        settle(m, "destroy");
        if (m->nccl) ncclCommDestroy(m->nccl);
    }
    if (m->last) cudaEventDestroy(m->last);
    for (int k = 0; k < 8; k++) {
        if (m->ready[k]) cudaEventDestroy(m->ready[k]);
        if (m->done[k]) cudaEventDestroy(m->done[k]);
    }
    if (m->side) cudaStreamDestroy(m->side);
    free(m);
}

} // namespace

extern "C" tc_status tc_comm_nccl_create(tc_comm **out, tc_comm *boot, tc_backend *be,
                                         double timeout_s) {
    *out = NULL;
    tc_cuda_backend *cu = (tc_cuda_backend *)be;
    if (!be || !be->name || be->name[0] != 'c' || be->name[1] != 'u')
        return tc_fail(TC_ERR_ARG, "comm: NCCL needs the CUDA backend");
    ncclUniqueId id;
    if (boot->rank == 0) {
        ncclResult_t r = ncclGetUniqueId(&id);
        if (r != ncclSuccess)
            return tc_fail(TC_ERR_BACKEND, "NCCL: ncclGetUniqueId: %s", ncclGetErrorString(r));
    }
    TC_TRY(boot->host_broadcast(boot, &id, sizeof id, 0));
    nccl_comm *m = (nccl_comm *)calloc(1, sizeof *m);
    if (!m) return tc_fail(TC_ERR_OOM, "comm: out of memory");
    cudaError_t de = cudaSetDevice(cu->device);
    if (de != cudaSuccess) {
        free(m);
        return tc_fail(TC_ERR_BACKEND, "NCCL: cudaSetDevice(%d): %s", cu->device,
                       cudaGetErrorString(de));
    }
    ncclResult_t r = ncclCommInitRank(&m->nccl, boot->world_size, id, boot->rank);
    if (r != ncclSuccess) {
        free(m);
        return tc_fail(TC_ERR_BACKEND, "NCCL: init of rank %d of %d on device %d: %s", boot->rank,
                       boot->world_size, cu->device, ncclGetErrorString(r));
    }
    bool ok = cudaEventCreateWithFlags(&m->last, cudaEventDisableTiming) == cudaSuccess &&
              cudaStreamCreateWithFlags(&m->side, cudaStreamNonBlocking) == cudaSuccess;
    for (int k = 0; k < 8 && ok; k++)
        ok = cudaEventCreateWithFlags(&m->ready[k], cudaEventDisableTiming) == cudaSuccess &&
             cudaEventCreateWithFlags(&m->done[k], cudaEventDisableTiming) == cudaSuccess;
    if (!ok) {
        nccl_destroy(&m->base);
        return tc_fail(TC_ERR_BACKEND, "NCCL: cannot create the side stream and its events");
    }
    m->timeout = timeout_s;
    m->boot = boot;
    m->stream = cu->stream;
    m->base.name = "nccl";
    m->base.rank = boot->rank;
    m->base.world_size = boot->world_size;
    m->base.local_rank = boot->local_rank;
    m->base.local_size = boot->local_size;
    m->base.all_reduce_f32 = nccl_all_reduce;
    m->base.all_reduce_start = nccl_all_reduce_start;
    m->base.wait = nccl_wait;
    m->base.all_gather_f32 = nccl_all_gather;
    m->base.reduce_scatter_f32 = nccl_reduce_scatter;
    m->base.reduce_scatter_v_f32 = nccl_reduce_scatter_v;
    m->base.all_gather_v_f32 = nccl_all_gather_v;
    m->base.broadcast = nccl_broadcast;
    m->base.barrier = nccl_barrier;
    m->base.host_all_reduce_f64 = nccl_host_all_reduce;
    m->base.host_broadcast = nccl_host_broadcast;
    m->base.abort = nccl_abort;
    m->base.destroy = nccl_destroy;
    m->base.impl = m;
    *out = &m->base;
    return TC_OK;
}

#endif
