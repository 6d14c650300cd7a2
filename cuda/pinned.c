/* pinned (page-locked) host memory for the data loader's batches: a
 * tc_batch_allocator on cudaHostAlloc / cudaFreeHost, so that uploading a
 * batch is a DMA from memory the driver need not stage first.
 *
 * the memory is allocated portable (pinned for every CUDA context of the
 * process), so the loader's worker threads may allocate and free it without
 * a current device. pinning is a scarce resource: a failed cudaHostAlloc
 * returns NULL, which the loader reports as out of memory for a batch. */
#include <cuda_runtime_api.h>

#include "tc_cuda.h"

static void *pinned_alloc(size_t bytes, void *ctx) {
    (void)ctx;
    void *p = NULL;
    if (cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocPortable) != cudaSuccess) {
        (void)cudaGetLastError(); /* not sticky: later calls start clean */
        return NULL;
    }
    return p;
}

static void pinned_free(void *p, void *ctx) {
    (void)ctx;
    if (p && cudaFreeHost(p) != cudaSuccess) (void)cudaGetLastError();
}

tc_status tc_cuda_pinned_allocator(tc_batch_allocator *out) {
    if (!out) return tc_fail(TC_ERR_ARG, "cuda pinned allocator: no allocator to fill");
    char why[256] = "";
    if (tc_cuda_device_count(why, sizeof why) <= 0)
        return tc_fail(TC_ERR_UNSUPPORTED, "no CUDA device for pinned host memory: %s", why);
    out->alloc = pinned_alloc;
    out->free = pinned_free;
    out->ctx = NULL;
    return TC_OK;
}
