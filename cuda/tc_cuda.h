/* the C-visible extras of the CUDA backend (the backend itself is created
 * with tc_backend_cuda_create, declared in backend.h): device queries and,
 * for C callers, the pinned-memory allocator of the data loader. */
#ifndef TC_CUDA_H
#define TC_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "host_alloc.h"
#include "status.h"

/* number of CUDA devices visible to this process; 0 when there are none or
 * the runtime cannot talk to a driver, with the reason (the CUDA runtime's
 * error string) written to why */
int tc_cuda_device_count(char *why, size_t cap);

/* name and compute capability of a device, for logs ("NVIDIA H100 ... sm_90") */
void tc_cuda_device_name(int device, char *buf, size_t cap);

/* fills *out with an allocator of pinned host memory (cudaHostAlloc,
 * portable; cudaFreeHost) for the data loader's batches;
 * TC_ERR_UNSUPPORTED without a CUDA device (pinned.c) */
tc_status tc_cuda_pinned_allocator(tc_batch_allocator *out);

/* the matmul plan cache of a CUDA backend made with options.gemm_plans:
 * lookups that found a plan, that made one, and plans replaced; all 0
 * without the cache (gemm.cu) */
struct tc_backend;
void tc_cuda_gemm_plan_counts(struct tc_backend *b, long long *hits, long long *misses,
                              long long *evictions);

#ifdef __cplusplus
}
#endif

#endif
