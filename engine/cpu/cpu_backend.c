/* the CPU backend handle: memory (host malloc, 256-byte aligned as the CUDA
 * runtime's, zero-filled: the parameter layout's alignment, engine/params.h),
 * trivial upload/download/synchronize, and the op table. */
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "cpu_internal.h"

#define CPU_ALIGN 256

static tc_status cpu_alloc(tc_backend *b, size_t bytes, void **ptr) {
    (void)b;
    if (!ptr) return tc_fail(TC_ERR_ARG, "cpu alloc: NULL output pointer");
    *ptr = NULL;
    if (bytes > SIZE_MAX - CPU_ALIGN)
        return tc_fail(TC_ERR_OOM, "cpu alloc: %zu bytes is too large", bytes);
    /* aligned_alloc wants a multiple of the alignment; 0 bytes still gets a
     * unique pointer so that free() pairs with every successful alloc() */
    size_t rounded = (bytes + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN;
    if (rounded == 0) rounded = CPU_ALIGN;
    void *p = aligned_alloc(CPU_ALIGN, rounded);
    if (!p) return tc_fail(TC_ERR_OOM, "cpu alloc: out of memory allocating %zu bytes", bytes);
    memset(p, 0, rounded);
    *ptr = p;
    return TC_OK;
}

static void cpu_free(tc_backend *b, void *ptr) {
    (void)b;
    free(ptr);
}

static tc_status cpu_upload(tc_backend *b, void *dst, const void *host_src, size_t bytes) {
    (void)b;
    if (bytes == 0) return TC_OK;
    if (!dst || !host_src)
        return tc_fail(TC_ERR_ARG, "cpu upload: NULL pointer (%zu bytes)", bytes);
    memmove(dst, host_src, bytes);
    return TC_OK;
}

static tc_status cpu_download(tc_backend *b, void *host_dst, const void *src, size_t bytes) {
    (void)b;
    if (bytes == 0) return TC_OK;
    if (!host_dst || !src)
        return tc_fail(TC_ERR_ARG, "cpu download: NULL pointer (%zu bytes)", bytes);
    memmove(host_dst, src, bytes);
    return TC_OK;
}

static tc_status cpu_synchronize(tc_backend *b) {
    (void)b;
    return TC_OK; /* every op has finished when it returns */
}

static tc_status cpu_fence(tc_backend *b, int slot) {
    (void)b;
    if (slot < 0 || slot >= TC_FENCES) return tc_fail(TC_ERR_ARG, "cpu fence: slot %d", slot);
    return TC_OK; /* every op has finished when it returns */
}

static size_t cpu_memory_peak(tc_backend *b) {
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

static void cpu_destroy(tc_backend *b) {
    free(b);
}

tc_status tc_backend_cpu_create(tc_backend **out, int threads) {
    if (!out) return tc_fail(TC_ERR_ARG, "cpu backend: NULL output pointer");
    *out = NULL;
    tc_cpu_backend *cb = calloc(1, sizeof *cb);
    if (!cb) return tc_fail(TC_ERR_OOM, "cpu backend: out of memory");
    if (threads <= 0) threads = omp_get_max_threads();
    if (threads < 1) threads = 1;
    cb->threads = threads;
    tc_cpu_blas_init(threads);

    tc_backend *b = &cb->base;
    b->name = "cpu";
    b->act_bytes = sizeof(float);
    b->separate_compute_weights = 0;

    b->alloc = cpu_alloc;
    b->free = cpu_free;
    b->upload = cpu_upload;
    b->download = cpu_download;
    b->synchronize = cpu_synchronize;
    b->upload_async = cpu_upload;
    b->fence_record = cpu_fence;
    b->fence_wait = cpu_fence;
    b->memory_peak = cpu_memory_peak;
    b->destroy = cpu_destroy;

    b->fill_f32 = tc_cpu_fill_f32;
    b->zero = tc_cpu_zero;
    b->copy = tc_cpu_copy;
    b->f32_to_act = tc_cpu_f32_to_act;
    b->act_to_f32 = tc_cpu_act_to_f32;
    b->add = tc_cpu_add;
    b->scale_f32 = tc_cpu_scale_f32;

    b->linear_forward = tc_cpu_linear_forward;
    b->linear_backward = tc_cpu_linear_backward;
    b->gemm_f32 = tc_cpu_gemm_f32;

    b->layernorm_forward = tc_cpu_layernorm_forward;
    b->layernorm_backward = tc_cpu_layernorm_backward;

    b->gelu_forward = tc_cpu_gelu_forward;
    b->gelu_backward = tc_cpu_gelu_backward;

    b->attention_forward = tc_cpu_attention_forward;
    b->attention_backward = tc_cpu_attention_backward;

    b->patchify = tc_cpu_patchify;
    b->vision_embed_forward = tc_cpu_vision_embed_forward;
    b->vision_embed_backward = tc_cpu_vision_embed_backward;
    b->token_embed_forward = tc_cpu_token_embed_forward;
    b->token_embed_backward = tc_cpu_token_embed_backward;

    b->argmax_rows = tc_cpu_argmax_rows;
    b->pool_gather_forward = tc_cpu_pool_gather_forward;
    b->pool_gather_backward = tc_cpu_pool_gather_backward;
    b->pool_mean_forward = tc_cpu_pool_mean_forward;
    b->pool_mean_backward = tc_cpu_pool_mean_backward;

    b->l2norm_forward = tc_cpu_l2norm_forward;
    b->l2norm_backward = tc_cpu_l2norm_backward;
    b->softmax_xent_rows = tc_cpu_softmax_xent_rows;

    b->sum_squares = tc_cpu_sum_squares;
    b->clip_coefficient = tc_cpu_clip_coefficient;
    b->adamw_update = tc_cpu_adamw_update;
    b->clamp_f32 = tc_cpu_clamp_f32;
    b->all_finite = tc_cpu_all_finite;
    b->step_gate = tc_cpu_step_gate;

    b->mask_cols_forward = tc_cpu_mask_cols_forward;
    b->mask_cols_backward = tc_cpu_mask_cols_backward;
    b->layernorm_masked_forward = tc_cpu_layernorm_masked_forward;
    b->layernorm_masked_backward = tc_cpu_layernorm_masked_backward;

    *out = b;
    return TC_OK;
}
