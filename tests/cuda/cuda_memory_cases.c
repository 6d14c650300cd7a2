/* test_cuda_ops' cases for pinned host memory, asynchronous uploads and error reporting
 * (cuda/backend.cu, cuda/pinned.c), compiled into that binary: the CUDA backend against the CPU
 * reference backend in the fp32 and the mixed (bf16) mode, with the harness and tolerances of
 * tests/cuda/cuda_harness.h */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_cases.h"
#include "cuda_harness.h"
#include "testutil.h"

#include "backend.h"
#include "status.h"

#ifdef TC_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "tc_cuda.h"

/* the data loader's pinned allocator: page-locked host memory that moves
 * through the backend's upload and download unchanged */
void test_pinned_allocator(void **state) {
    (void)state;
    tc_batch_allocator a = {NULL, NULL, NULL};
    if (tc_cuda_pinned_allocator(&a) != TC_OK) fail_msg("pinned allocator: %s", tc_last_error());
    const size_t n = (size_t)3 * 224 * 224 * 8 + 5; /* a small image batch, odd size */
    float *h = a.alloc(n * sizeof(float), a.ctx), *back = a.alloc(n * sizeof(float), a.ctx);
    if (!h || !back) fail_msg("cudaHostAlloc of %zu bytes failed", n * sizeof(float));
    struct cudaPointerAttributes attr;
    const int pinned =
        cudaPointerGetAttributes(&attr, h) == cudaSuccess && attr.type == cudaMemoryTypeHost;
    tc_fill_uniform(h, n, &g_rng, 1.0f);
    memset(back, 0, n * sizeof(float));
    float *g = balloc(g_gpu, n * sizeof(float));
    const int up = g_gpu->upload(g_gpu, g, h, n * sizeof(float)) == TC_OK;
    const int down = up && g_gpu->download(g_gpu, back, g, n * sizeof(float)) == TC_OK;
    const int same = down && memcmp(h, back, n * sizeof(float)) == 0;
    a.free(h, a.ctx);
    a.free(back, a.ctx);
    a.free(NULL, a.ctx); /* as free(NULL) */
    printf("  pinned allocator: %zu floats, page-locked %d, round trip %s\n", n, pinned,
           same ? "exact" : "wrong");
    if (!pinned) fail_msg("pinned allocator: memory is not page-locked host memory");
    if (!up || !down) fail_msg("pinned allocator: transfer failed: %s", tc_last_error());
    if (!same) fail_msg("pinned allocator: round trip through the device changed the data");
}

/* upload_async from page-locked memory behind queued work, fences, and
 * memory_peak: the trainer's inputs path (no stream synchronisation) */
void test_upload_async_fences(void **state) {
    (void)state;
    tc_batch_allocator a = {NULL, NULL, NULL};
    if (tc_cuda_pinned_allocator(&a) != TC_OK) fail_msg("pinned allocator: %s", tc_last_error());
    const size_t n = (size_t)3 * 224 * 224 * 16 + 7;
    float *h[2] = {a.alloc(n * 4, a.ctx), a.alloc(n * 4, a.ctx)}, *back = a.alloc(n * 4, a.ctx);
    if (!h[0] || !h[1] || !back) fail_msg("cudaHostAlloc of %zu bytes failed", n * 4);
    float *g = balloc(g_gpu, n * 4), *busy = balloc(g_gpu, n * 4);
    uint64_t sum = 0;
    for (int k = 0; k < 6; k++) {
        /* queued work first (a fill the upload must wait for), then the
         * upload of buffer k % 2, a fence; before reusing a host buffer the
         * fence of its last upload is waited for, as the scheduler does */
        float *src = h[k % 2];
        if (k >= 2 && g_gpu->fence_wait(g_gpu, (k - 2) % TC_FENCES) != TC_OK)
            fail_msg("fence_wait: %s", tc_last_error());
        for (size_t i = 0; i < n; i++)
            src[i] = (float)(k * 1000 + (int)(i % 997));
        g_gpu->fill_f32(g_gpu, busy, (float)k, n);
        if (g_gpu->upload_async(g_gpu, g, src, n * 4) != TC_OK ||
            g_gpu->fence_record(g_gpu, k % TC_FENCES) != TC_OK)
            fail_msg("upload_async / fence_record: %s", tc_last_error());
        if (g_gpu->download(g_gpu, back, g, n * 4) != TC_OK) fail_msg("download");
        if (memcmp(back, src, n * 4) != 0) fail_msg("upload_async %d: the device copy differs", k);
        sum += (uint64_t)back[n - 1];
    }
    if (g_gpu->fence_wait(g_gpu, TC_FENCES) != TC_ERR_ARG)
        fail_msg("fence_wait of slot %d (out of range) was accepted", TC_FENCES);
    size_t peak = g_gpu->memory_peak(g_gpu);
    printf("  upload_async: 6 uploads of %zu floats behind queued fills, fences on 2 buffers "
           "(checksum %llu); memory_peak %.1f MiB\n",
           n, (unsigned long long)sum, peak / 1048576.0);
    if (peak < 2 * n * 4) fail_msg("memory_peak %zu is below what this test allocated", peak);
    a.free(h[0], a.ctx);
    a.free(h[1], a.ctx);
    a.free(back, a.ctx);
}

/* an op with a bad shape is reported by synchronize, not silently skipped */
void test_error_reporting(void **state) {
    (void)state;
    tc_backend *b = NULL;
    if (tc_backend_cuda_create(&b, &(tc_backend_options){.fp32 = g_fp32}) != TC_OK)
        fail_msg("create: %s", tc_last_error());
    void *x = NULL;
    if (b->alloc(b, 1024, &x) != TC_OK) fail_msg("alloc: %s", tc_last_error());
    b->attention_forward(b, x, x, x, 1, 4, 1, 44, 0); /* not a multiple of 8: unsupported */
    tc_status s = b->synchronize(b);
    printf("  unsupported head size reported as: %s\n", tc_last_error());
    b->free(b, x);
    b->destroy(b);
    assert_int_not_equal(s, TC_OK);
}

#endif
