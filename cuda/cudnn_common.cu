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

/* a candidate a plan may keep: it ran, gives the same bits every time, and
 * (fp32 mode) does not use tensor cores, i.e. no TF32 */
template <typename Perf> static bool usable(const tc_cuda_backend *cu, const Perf &p) {
    if (p.status != CUDNN_STATUS_SUCCESS || p.determinism != CUDNN_DETERMINISTIC) return false;
    if (cu->fp32 &&
        (p.mathType == CUDNN_TENSOR_OP_MATH || p.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION))
        return false;
    return true;
}

/* the first usable candidate in the heuristics' order whose workspace is
 * within the cap, else -1. the heuristics are a function of the shape, the
 * GPU and the cuDNN version only, so every run picks the same algorithm */
template <typename Perf>
static int pick_candidate(const tc_cuda_backend *cu, const Perf *c, int n) {
    for (int i = 0; i < n; i++)
        if (usable(cu, c[i]) && c[i].memory <= CONV_WORKSPACE_CAP) return i;
    return -1;
}

bool tc_cudnn_describe(tc_cuda_backend *cu, const char *op, const tc_cudnn_shape *s) {
    tc_cuda_conv *cv = cu->conv;
    const dnn_api &d = cv->api;
    const cudnnDataType_t dt = cu->fp32 ? CUDNN_DATA_FLOAT : CUDNN_DATA_BFLOAT16;
    const cudnnTensorFormat_t f = s->nhwc ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
    if (!tc_cudnn_ok(cu, d.cudnnSetTensor4dDescriptor(cv->x, f, dt, s->N, s->C, s->H, s->W), op,
                     "x descriptor") ||
        !tc_cudnn_ok(cu, d.cudnnSetTensor4dDescriptor(cv->y, f, dt, s->N, s->OC, s->Ho, s->Wo), op,
                     "y descriptor") ||
        !tc_cudnn_ok(cu, d.cudnnSetFilter4dDescriptor(cv->w, dt, f, s->OC, s->C, s->K, s->K), op,
                     "w descriptor") ||
        !tc_cudnn_ok(cu,
                     d.cudnnSetConvolution2dDescriptor(cv->conv, s->P, s->P, s->S, s->S, 1, 1,
                                                       CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
                     op, "convolution descriptor") ||
        !tc_cudnn_ok(cu,
                     d.cudnnSetConvolutionMathType(cv->conv, cu->fp32 ? CUDNN_FMA_MATH
                                                                      : CUDNN_TENSOR_OP_MATH),
                     op, "math type"))
        return false;
    int n = 0, c = 0, h = 0, w = 0;
    if (!tc_cudnn_ok(
            cu, d.cudnnGetConvolution2dForwardOutputDim(cv->conv, cv->x, cv->w, &n, &c, &h, &w), op,
            "output dimensions"))
        return false;
    if (n != s->N || c != s->OC || h != s->Ho || w != s->Wo) {
        tc_cuda_record(cu, TC_ERR_BACKEND, "cuda %s: cuDNN output (%d,%d,%d,%d) != (%d,%d,%d,%d)",
                       op, n, c, h, w, s->N, s->OC, s->Ho, s->Wo);
        return false;
    }
    return true;
}

/* the chosen candidate's math type, its workspace reserved; or no candidate, recorded */
template <typename Perf, typename WsFn>
static bool plan_pick(tc_cuda_backend *cu, const char *op, const char *what,
                      const tc_cudnn_shape *s, const Perf *cand, int n, WsFn workspace,
                      tc_cudnn_algo *out) {
    const dnn_api &d = cu->conv->api;
    const int i = pick_candidate(cu, cand, n);
    if (i < 0) {
        tc_cuda_record(cu, TC_ERR_UNSUPPORTED,
                       "cuda %s: cuDNN offers no deterministic %s algorithm for N=%d C=%d %dx%d "
                       "OC=%d K=%d S=%d P=%d (%d candidates)",
                       op, what, s->N, s->C, s->H, s->W, s->OC, s->K, s->S, s->P, n);
        return false;
    }
    size_t ws = 0;
    if (!tc_cudnn_ok(cu, d.cudnnSetConvolutionMathType(cu->conv->conv, cand[i].mathType), op,
                     "math type") ||
        !tc_cudnn_ok(cu, workspace(cand[i].algo, &ws), op, "workspace size") ||
        !tc_cudnn_workspace_reserve(cu, op, ws))
        return false;
    out->algo = (int)cand[i].algo;
    out->math = cand[i].mathType;
    out->ws = ws;
    out->ready = 1;
    return true;
}

bool tc_cudnn_plan(tc_cuda_backend *cu, const char *op, tc_cudnn_direction dir,
                   const tc_cudnn_shape *s, tc_cudnn_algo *out) {
    tc_cuda_conv *cv = cu->conv;
    const dnn_api &d = cv->api;
    int n = 0;
    if (dir == TC_CUDNN_FORWARD) {
        cudnnConvolutionFwdAlgoPerf_t cand[CONV_MAX_ALGOS];
        if (!tc_cudnn_ok(cu,
                         d.cudnnGetConvolutionForwardAlgorithm_v7(
                             cv->handle, cv->x, cv->w, cv->conv, cv->y, CONV_MAX_ALGOS, &n, cand),
                         op, "algorithm heuristics"))
            return false;
        return plan_pick(
            cu, op, "forward", s, cand, n,
            [&](cudnnConvolutionFwdAlgo_t a, size_t *ws) {
                return d.cudnnGetConvolutionForwardWorkspaceSize(cv->handle, cv->x, cv->w, cv->conv,
                                                                 cv->y, a, ws);
            },
            out);
    }
    if (dir == TC_CUDNN_DATA) {
        cudnnConvolutionBwdDataAlgoPerf_t cand[CONV_MAX_ALGOS];
        if (!tc_cudnn_ok(cu,
                         d.cudnnGetConvolutionBackwardDataAlgorithm_v7(
                             cv->handle, cv->w, cv->y, cv->conv, cv->x, CONV_MAX_ALGOS, &n, cand),
                         op, "algorithm heuristics"))
            return false;
        return plan_pick(
            cu, op, "data-gradient", s, cand, n,
            [&](cudnnConvolutionBwdDataAlgo_t a, size_t *ws) {
                return d.cudnnGetConvolutionBackwardDataWorkspaceSize(cv->handle, cv->w, cv->y,
                                                                      cv->conv, cv->x, a, ws);
            },
            out);
    }
    cudnnConvolutionBwdFilterAlgoPerf_t cand[CONV_MAX_ALGOS];
    if (!tc_cudnn_ok(cu,
                     d.cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                         cv->handle, cv->x, cv->y, cv->conv, cv->w, CONV_MAX_ALGOS, &n, cand),
                     op, "algorithm heuristics"))
        return false;
    return plan_pick(
        cu, op, "filter-gradient", s, cand, n,
        [&](cudnnConvolutionBwdFilterAlgo_t a, size_t *ws) {
            return d.cudnnGetConvolutionBackwardFilterWorkspaceSize(cv->handle, cv->x, cv->y,
                                                                    cv->conv, cv->w, a, ws);
        },
        out);
}

#endif
