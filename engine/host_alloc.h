/* an allocator of host memory for buffers a backend reads from: the data
 * loader's batches are made with it, so a backend that uploads
 * asynchronously can hand out page-locked memory (cuda/pinned.c) while the
 * loader itself stays independent of any backend. */
#ifndef TC_HOST_ALLOC_H
#define TC_HOST_ALLOC_H

#include <stddef.h>

typedef struct {
    void *(*alloc)(size_t bytes, void *ctx); /* NULL on failure */
    void (*free)(void *p, void *ctx);
    void *ctx;
} tc_batch_allocator;

#endif
