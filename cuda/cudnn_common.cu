/* the cuDNN plumbing both convolution files share (cudnn_api.h). */
#ifdef TC_HAVE_CUDNN

#include <stdio.h>
#include <string.h>

#include "cudnn_api.h"

bool tc_cudnn_ok(tc_cuda_backend *cu, cudnnStatus_t s, const char *op, const char *what) {
    if (s == CUDNN_STATUS_SUCCESS) return true;
    const dnn_api &d = cu->conv->api;
    char detail[256] = "";
    d.cudnnGetLastErrorString(detail, sizeof detail);
    tc_cuda_record(cu, s == CUDNN_STATUS_NOT_SUPPORTED ? TC_ERR_UNSUPPORTED : TC_ERR_BACKEND,
                   "cuda %s: cuDNN %s: %s%s%s%s", op, what, d.cudnnGetErrorString(s),
                   detail[0] ? " (" : "", detail, detail[0] ? ")" : "");
    return false;
}

bool tc_cudnn_ready(tc_cuda_backend *cu, const char *op) {
    tc_cuda_conv *cv = cu->conv;
    const dnn_api &d = cv->api;
    if (cv->handle) return true;
    cudnnHandle_t h = NULL;
    if (!tc_cudnn_ok(cu, d.cudnnCreate(&h), op, "cudnnCreate")) return false;
    if (!tc_cudnn_ok(cu, d.cudnnSetStream(h, cu->stream), op, "cudnnSetStream") ||
        !tc_cudnn_ok(cu, d.cudnnCreateTensorDescriptor(&cv->x), op, "tensor descriptor") ||
        !tc_cudnn_ok(cu, d.cudnnCreateTensorDescriptor(&cv->y), op, "tensor descriptor") ||
        !tc_cudnn_ok(cu, d.cudnnCreateFilterDescriptor(&cv->w), op, "filter descriptor") ||
        !tc_cudnn_ok(cu, d.cudnnCreateConvolutionDescriptor(&cv->conv), op,
                     "convolution descriptor")) {
        d.cudnnDestroy(h);
        return false;
    }
    cv->handle = h;
    return true;
}

bool tc_cudnn_workspace_reserve(tc_cuda_backend *cu, const char *op, size_t bytes) {
    tc_cuda_conv *cv = cu->conv;
    if (bytes <= cv->workspace_bytes) return true;
    /* queued convolutions may still use the old one */
    if (!tc_cuda_ok(cu, cudaStreamSynchronize(cu->stream), "cuDNN workspace: synchronize"))
        return false;
    cudaFree(cv->workspace);
    cv->workspace = NULL;
    cv->workspace_bytes = 0;
    cudaError_t e = cudaMalloc(&cv->workspace, bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        cv->workspace = NULL;
        tc_cuda_record(cu, TC_ERR_OOM, "cuda %s: cuDNN workspace of %zu bytes: %s", op, bytes,
                       cudaGetErrorString(e));
        return false;
    }
    cv->workspace_bytes = bytes;
    return true;
}

bool tc_cudnn_load(dnn_api *a, char *why, size_t cap) {
    void *lib = dlopen(DNN_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *e = dlerror();
        snprintf(why, cap, "%s", e ? e : DNN_SONAME " not found");
        return false;
    }
#define DNN_RESOLVE(f)                                                                             \
    a->f = (decltype(a->f))dlsym(lib, #f);                                                         \
    if (!a->f) {                                                                                   \
        snprintf(why, cap, "%s has no %s", DNN_SONAME, #f);                                        \
        dlclose(lib);                                                                              \
        memset(a, 0, sizeof *a);                                                                   \
        return false;                                                                              \
    }
    DNN_FUNCS(DNN_RESOLVE)
#undef DNN_RESOLVE
    /* never closed: cuDNN's sub-libraries keep state with the CUDA context,
     * and the loader counts the references of later backends */
    return true;
}

#endif
