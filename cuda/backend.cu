/* the CUDA backend handle: device selection, the stream every op runs on,
 * cuBLASLt handle and workspace, the reduction scratch, memory movement,
 * error reporting, and the table of ops (kernels live in the other files).
 *
 * upload() and download() return only when the host buffer may be reused or
 * read (both synchronize the stream); alloc() zero-fills on the stream. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

void tc_cuda_record(tc_cuda_backend *cu, tc_status code, const char *fmt, ...) {
    if (cu->err != TC_OK) return;
    cu->err = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cu->err_msg, sizeof cu->err_msg, fmt, ap);
    va_end(ap);
}

bool tc_cuda_ok(tc_cuda_backend *cu, cudaError_t e, const char *what) {
    if (e == cudaSuccess) return true;
    tc_cuda_record(cu, TC_ERR_BACKEND, "cuda: %s: %s", what, cudaGetErrorString(e));
    return false;
}

bool tc_cuda_launched(tc_cuda_backend *cu, const char *kernel) {
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) return true;
    tc_cuda_record(cu, TC_ERR_BACKEND, "cuda: launch of %s failed: %s", kernel,
                   cudaGetErrorString(e));
    return false;
}

extern "C" int tc_cuda_device_count(char *why, size_t cap) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        if (why && cap) snprintf(why, cap, "%s", cudaGetErrorString(e));
        (void)cudaGetLastError(); /* clear it so later calls start clean */
        return 0;
    }
    if (n == 0 && why && cap) snprintf(why, cap, "the CUDA runtime reports 0 devices");
    return n;
}

extern "C" void tc_cuda_device_name(int device, char *buf, size_t cap) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, device) != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(buf, cap, "cuda device %d (properties unavailable)", device);
        return;
    }
    snprintf(buf, cap, "%s sm_%d%d, %d SMs, %.1f GiB", p.name, p.major, p.minor,
             p.multiProcessorCount, (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
}

/* ---- memory ---- */

static tc_status cu_report(tc_cuda_backend *cu) {
    if (cu->err == TC_OK) return TC_OK;
    return tc_fail(cu->err, "%s", cu->err_msg);
}

tc_status tc_cuda_alloc(tc_backend *b, size_t bytes, void **ptr) {
    tc_cuda_backend *cu = tc_cu(b);
    *ptr = NULL;
    void *p = NULL;
    /* cudaMalloc aligns to 256 bytes, which cuBLASLt's fastest kernels want */
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return tc_fail(TC_ERR_OOM, "cuda: cannot allocate %zu bytes on device %d: %s", bytes,
                       cu->device, cudaGetErrorString(e));
    }
    if (bytes) {
        e = cudaMemsetAsync(p, 0, bytes, cu->stream);
        if (e != cudaSuccess) {
            cudaFree(p);
            return tc_fail(TC_ERR_BACKEND, "cuda: zero-fill of %zu bytes: %s", bytes,
                           cudaGetErrorString(e));
        }
    }
    *ptr = p;
    return TC_OK;
}

void tc_cuda_free(tc_backend *b, void *ptr) {
    tc_cuda_backend *cu = tc_cu(b);
    if (!ptr) return;
    /* queued kernels may still use the buffer; free is never on the hot path */
    tc_cuda_ok(cu, cudaStreamSynchronize(cu->stream), "free: synchronize");
    tc_cuda_ok(cu, cudaFree(ptr), "cudaFree");
}

tc_status tc_cuda_upload(tc_backend *b, void *dst, const void *host_src, size_t bytes) {
    tc_cuda_backend *cu = tc_cu(b);
    if (bytes == 0) return cu_report(cu);
    cudaError_t e = cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, cu->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(cu->stream);
    if (e != cudaSuccess) {
        tc_cuda_ok(cu, e, "upload");
        return tc_fail(TC_ERR_BACKEND, "cuda: upload of %zu bytes: %s", bytes,
                       cudaGetErrorString(e));
    }
    return cu_report(cu);
}

tc_status tc_cuda_download(tc_backend *b, void *host_dst, const void *src, size_t bytes) {
    tc_cuda_backend *cu = tc_cu(b);
    cudaError_t e = cudaSuccess;
    if (bytes) e = cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, cu->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(cu->stream);
    if (e != cudaSuccess) {
        tc_cuda_ok(cu, e, "download");
        return tc_fail(TC_ERR_BACKEND, "cuda: download of %zu bytes: %s", bytes,
                       cudaGetErrorString(e));
    }
    return cu_report(cu);
}

tc_status tc_cuda_synchronize(tc_backend *b) {
    tc_cuda_backend *cu = tc_cu(b);
    cudaError_t e = cudaStreamSynchronize(cu->stream);
    if (e != cudaSuccess) tc_cuda_ok(cu, e, "stream synchronize (an earlier kernel failed)");
    return cu_report(cu);
}

tc_status tc_cuda_upload_async(tc_backend *b, void *dst, const void *host_src, size_t bytes) {
    tc_cuda_backend *cu = tc_cu(b);
    if (bytes == 0) return cu_report(cu);
    cudaError_t e = cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, cu->stream);
    if (e != cudaSuccess) {
        tc_cuda_ok(cu, e, "upload_async");
        return tc_fail(TC_ERR_BACKEND, "cuda: upload of %zu bytes: %s", bytes,
                       cudaGetErrorString(e));
    }
    return cu_report(cu);
}

static tc_status cu_fence(tc_cuda_backend *cu, int slot, int wait) {
    if (slot < 0 || slot >= TC_FENCES) return tc_fail(TC_ERR_ARG, "cuda fence: slot %d", slot);
    cudaError_t e = wait ? cudaEventSynchronize(cu->fences[slot])
                         : cudaEventRecord(cu->fences[slot], cu->stream);
    if (e != cudaSuccess) {
        tc_cuda_ok(cu, e, wait ? "fence wait" : "fence record");
        return tc_fail(TC_ERR_BACKEND, "cuda: fence %s: %s", wait ? "wait" : "record",
                       cudaGetErrorString(e));
    }
    return cu_report(cu);
}

tc_status tc_cuda_fence_record(tc_backend *b, int slot) {
    return cu_fence(tc_cu(b), slot, 0);
}
tc_status tc_cuda_fence_wait(tc_backend *b, int slot) {
    return cu_fence(tc_cu(b), slot, 1);
}

size_t tc_cuda_memory_peak(tc_backend *b) {
    tc_cuda_backend *cu = tc_cu(b);
    size_t free_b = 0, total_b = 0;
    cudaSetDevice(cu->device);
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) return 0;
    return total_b - free_b;
}

void tc_cuda_destroy(tc_backend *b) {
    tc_cuda_backend *cu = tc_cu(b);
    if (!cu) return;
    if (cu->stream) cudaStreamSynchronize(cu->stream);
    tc_cuda_conv_destroy(cu);
    tc_cuda_gemm_plans_destroy(cu);
    for (int i = 0; i < TC_CUDA_SEG_SLOTS; i++) {
        cudaFree(cu->seg[i].dev);
        free(cu->seg[i].key.host);
    }
    cudaFree(cu->scratch);
    cudaFree(cu->lt_workspace);
    if (cu->lt) cublasLtDestroy(cu->lt);
    for (int k = 0; k < TC_FENCES; k++)
        if (cu->fences[k]) cudaEventDestroy(cu->fences[k]);
    if (cu->stream) cudaStreamDestroy(cu->stream);
    free(cu);
}

extern "C" tc_status tc_backend_cuda_create(tc_backend **out, const tc_backend_options *opt) {
    *out = NULL;
    const tc_backend_options o = opt ? *opt : tc_backend_options_default();
    const int device = o.device;
    char why[256] = "";
    int count = tc_cuda_device_count(why, sizeof why);
    if (count <= 0) return tc_fail(TC_ERR_UNSUPPORTED, "no CUDA device: %s", why);
    if (device < 0 || device >= count)
        return tc_fail(TC_ERR_ARG, "cuda: device %d does not exist (%d visible)", device, count);
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess)
        return tc_fail(TC_ERR_BACKEND, "cuda: cannot use device %d: %s", device,
                       cudaGetErrorString(e));

    tc_cuda_backend *cu = (tc_cuda_backend *)calloc(1, sizeof *cu);
    if (!cu) return tc_fail(TC_ERR_OOM, "cuda: out of host memory for the backend handle");
    cu->device = device;
    cu->fp32 = o.fp32 ? 1 : 0;
    cu->opt = o;
    /* the wgmma attention runs on compute capability 9 only (sm_90a code) */
    if (cudaDeviceGetAttribute(&cu->cc_major, cudaDevAttrComputeCapabilityMajor, device) !=
        cudaSuccess) {
        (void)cudaGetLastError();
        cu->cc_major = 0;
    }
    tc_status st = TC_OK;
    cublasStatus_t bs;

    e = cudaStreamCreateWithFlags(&cu->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        st = tc_fail(TC_ERR_BACKEND, "cuda: stream creation: %s", cudaGetErrorString(e));
        goto fail;
    }
    for (int k = 0; k < TC_FENCES && e == cudaSuccess; k++)
        e = cudaEventCreateWithFlags(&cu->fences[k], cudaEventDisableTiming);
    if (e != cudaSuccess) {
        st = tc_fail(TC_ERR_BACKEND, "cuda: event creation: %s", cudaGetErrorString(e));
        goto fail;
    }
    bs = cublasLtCreate(&cu->lt);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        cu->lt = NULL;
        st = tc_fail(TC_ERR_BACKEND, "cuda: cublasLtCreate: %s", cublasLtGetStatusString(bs));
        goto fail;
    }
    cu->lt_workspace_bytes = TC_CUDA_LT_WORKSPACE_BYTES;
    e = cudaMalloc(&cu->lt_workspace, cu->lt_workspace_bytes);
    if (e == cudaSuccess) {
        cu->scratch_bytes = TC_CUDA_SCRATCH_BYTES;
        e = cudaMalloc(&cu->scratch, cu->scratch_bytes);
    }
    if (e != cudaSuccess) {
        st = tc_fail(TC_ERR_OOM, "cuda: workspace allocation: %s", cudaGetErrorString(e));
        goto fail;
    }

    {
        tc_backend *t = &cu->base;
        t->name = "cuda";
        t->act_bytes = cu->fp32 ? sizeof(float) : sizeof(__nv_bfloat16);
        t->caps.separate_compute_weights = cu->fp32 ? 0 : 1;
        t->caps.pinned_host_batches = 1;
#define TC_OP(ret, name, params) t->name = tc_cuda_##name;
#define TC_OPTIONAL_OP(ret, name, params) t->name = NULL;
#include "backend_ops.h"
#undef TC_OPTIONAL_OP
#undef TC_OP
        t->residual_layernorm_forward = tc_cuda_residual_layernorm_forward;
    }
    tc_cuda_fast_paths(cu);
    st = tc_cuda_gemm_plans_init(cu);
    if (st != TC_OK) goto fail;
    st = tc_cuda_conv_init(cu);
    if (st != TC_OK) goto fail;
    *out = &cu->base;
    return TC_OK;

fail:
    tc_cuda_destroy(&cu->base);
    return st;
}
