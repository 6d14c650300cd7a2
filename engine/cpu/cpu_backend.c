/* the CPU backend handle: memory (host malloc, 64-byte aligned, zero-filled),
 * upload/download/synchronize (which report the first recorded op failure),
 * and the op table. */
#include <omp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "cpu_internal.h"

tc_status tc_cpu_alloc(tc_backend *b, size_t bytes, void **ptr) {
    (void)b;
    if (!ptr) return tc_fail(TC_ERR_ARG, "cpu alloc: NULL output pointer");
    *ptr = NULL;
    if (bytes > SIZE_MAX - 64)
        return tc_fail(TC_ERR_OOM, "cpu alloc: %zu bytes is too large", bytes);
    /* aligned_alloc wants a multiple of the alignment; 0 bytes still gets a
     * unique pointer so that free() pairs with every successful alloc() */
    size_t rounded = (bytes + 63) / 64 * 64;
    if (rounded == 0) rounded = 64;
    void *p = aligned_alloc(64, rounded);
    if (!p) return tc_fail(TC_ERR_OOM, "cpu alloc: out of memory allocating %zu bytes", bytes);
    memset(p, 0, rounded);
    *ptr = p;
    return TC_OK;
}

void tc_cpu_free(tc_backend *b, void *ptr) {
    (void)b;
    free(ptr);
}

tc_status tc_cpu_upload(tc_backend *b, void *dst, const void *host_src, size_t bytes) {
    (void)b;
    if (bytes == 0) return TC_OK;
    if (!dst || !host_src)
        return tc_fail(TC_ERR_ARG, "cpu upload: NULL pointer (%zu bytes)", bytes);
    memmove(dst, host_src, bytes);
    return TC_OK;
}

void tc_cpu_record(tc_backend *b, tc_status code, const char *fmt, ...) {
    tc_cpu_backend *cb = (tc_cpu_backend *)b;
#pragma omp critical(tc_cpu_record)
    if (cb->err == TC_OK) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cb->err_msg, sizeof cb->err_msg, fmt, ap);
        va_end(ap);
        cb->err = code;
    }
}

int tc_cpu_dims(tc_backend *b, const char *op, const int *dims, int n) {
    int empty = 0;
    for (int i = 0; i < n; i++) {
        if (dims[i] < 0) {
            tc_cpu_record(b, TC_ERR_ARG, "%s: size %d (argument %d of the shape) is negative", op,
                          dims[i], i + 1);
            return 0;
        }
        empty |= dims[i] == 0;
    }
    return !empty;
}

/* the recorded failure as this thread's error, or TC_OK */
static tc_status cpu_report(tc_backend *b) {
    const tc_cpu_backend *cb = (const tc_cpu_backend *)b;
    if (cb->err == TC_OK) return TC_OK;
    return tc_fail(cb->err, "cpu: %s", cb->err_msg);
}

tc_status tc_cpu_download(tc_backend *b, void *host_dst, const void *src, size_t bytes) {
    TC_TRY(cpu_report(b)); /* what an earlier op wrote is not to be trusted */
    if (bytes == 0) return TC_OK;
    if (!host_dst || !src)
        return tc_fail(TC_ERR_ARG, "cpu download: NULL pointer (%zu bytes)", bytes);
    memmove(host_dst, src, bytes);
    return TC_OK;
}

tc_status tc_cpu_synchronize(tc_backend *b) {
    return cpu_report(b); /* every op has finished when it returns */
}

static tc_status cpu_fence(tc_backend *b, int slot) {
    (void)b;
    if (slot < 0 || slot >= TC_FENCES) return tc_fail(TC_ERR_ARG, "cpu fence: slot %d", slot);
    return TC_OK; /* every op has finished when it returns */
}

tc_status tc_cpu_fence_record(tc_backend *b, int slot) {
    return cpu_fence(b, slot);
}

tc_status tc_cpu_fence_wait(tc_backend *b, int slot) {
    return cpu_fence(b, slot);
}

/* nothing is ever queued: a plain copy */
tc_status tc_cpu_upload_async(tc_backend *b, void *dst, const void *host_src, size_t bytes) {
    return tc_cpu_upload(b, dst, host_src, bytes);
}

size_t tc_cpu_memory_peak(tc_backend *b) {
    (void)b;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %llu kB", &kb) == 1) break;
    fclose(f);
    return (size_t)kb * 1024;
}

void tc_cpu_destroy(tc_backend *b) {
    free(b);
}

tc_status tc_backend_cpu_create(tc_backend **out, const tc_backend_options *opt) {
    if (!out) return tc_fail(TC_ERR_ARG, "cpu backend: NULL output pointer");
    *out = NULL;
    tc_backend_options o = opt ? *opt : tc_backend_options_default();
    tc_cpu_backend *cb = calloc(1, sizeof *cb);
    if (!cb) return tc_fail(TC_ERR_OOM, "cpu backend: out of memory");
    int threads = o.threads;
    if (threads <= 0) threads = omp_get_max_threads();
    if (threads < 1) threads = 1;
    cb->threads = threads;
    tc_cpu_blas_init(threads);

    tc_backend *b = &cb->base;
    b->name = "cpu";
    b->act_bytes = sizeof(float);
    /* fp32 compute on the masters themselves, no conv patch embedding, and
     * batches in plain memory; the convolutions of ResNet towers are here */
    b->caps = (tc_backend_caps){0};
    b->caps.conv2d = 1;
#define TC_OP(ret, name, params) b->name = tc_cpu_##name;
#define TC_OPTIONAL_OP(ret, name, params) b->name = NULL;
#include "backend_ops.h"
#undef TC_OPTIONAL_OP
#undef TC_OP
    *out = b;
    return TC_OK;
}
