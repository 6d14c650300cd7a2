/* an allocator of host memory for buffers that a backend uploads from, e.g.
 * the data loader's batches: plain malloc, or page-locked memory from the
 * CUDA backend (tc_cuda_pinned_allocator) so that an upload is a DMA with no
 * staging copy. it lives in the engine so that a backend can provide one
 * without depending on the program around it. */
#ifndef TC_HOST_ALLOC_H
#define TC_HOST_ALLOC_H

#include <stddef.h>

typedef struct {
    void *(*alloc)(size_t bytes, void *ctx); /* NULL on failure */
    void (*free)(void *p, void *ctx);
    void *ctx;
} tc_batch_allocator;

#endif
