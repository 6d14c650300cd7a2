/* the patch embedding (conv1 of the vision tower: 3 -> C channels, kernel =
 * stride = P, no bias) as one cuDNN convolution, forward and weight gradient,
 * through the legacy API (cudnnConvolutionForward,
 * cudnnConvolutionBackwardFilter). it is the alternative to patchify + the
 * linear GEMM (embed.cu, gemm.cu), which compute the same thing; which one the
 * model uses is chosen at backend creation by TINYCLIP_PATCH_EMBED=cudnn|gemm
 * (default gemm; the ops themselves are always in the table when cuDNN is
 * linked, for tests and benchmarks).
 *
 * layout: every cuDNN tensor is NHWC, the layout of cuDNN's tensor-core
 * kernels, and the output needs no transpose:
 *   x  (B, H, W, 3)      the image, converted to tc_act and interleaved by our
 *                        kernel into the caller's image_act (the size of
 *                        patchify's patches), kept for the weight gradient
 *   w  (C, P, P, 3)      KRSC: conv1.weight (C,3,P,P) transposed into scratch
 *   y  (B, gh, gw, C)    = out (B*gh*gw, C), row (b, gy, gx): exactly the
 *                        GEMM path's layout
 *   dw (C, P, P, 3)      into scratch, then added (fp32, +=) into the
 *                        gradient, transposed back to (C,3,P,P)
 * the two transposes touch C*3*P*P elements (2.4 M for ViT-B/32), the
 * interleave B*3*H*W (the same traffic as patchify).
 *
 * precision: mixed mode: bf16 tensors, fp32 accumulation
 * (CUDNN_TENSOR_OP_MATH). the legacy API gives the filter gradient in the
 * input type, so its increment is rounded to bf16 once before the fp32 +=
 * (as a weight gradient under torch autocast). fp32 mode: fp32 tensors and
 * CUDNN_FMA_MATH (no TF32), to match the CPU.
 *
 * algorithms: once per shape (B, H, W, P, C), at its first call, the first
 * candidate of cudnnGet*Algorithm_v7 (cuDNN's heuristics, best first) that
 * reports CUDNN_DETERMINISTIC (the filter-gradient algorithms with atomics
 * are skipped), needs at most 256 MiB of workspace and, in fp32 mode, uses
 * CUDNN_FMA_MATH (conv_pick.h). not cudnnFind*: its
 * choice by timing can differ from run to run, and with it the bits. the
 * workspace grows once to what the chosen algorithms need; the plan table
 * holds 8 shapes (teacher and student towers, a short last batch); after the
 * first step nothing is allocated. the handle runs on the backend's stream.
 *
 * linking: the headers are needed at build time only. the library
 * (libcudnn.so.<major>) is opened at backend creation with dlopen, so a
 * binary runs where cuDNN is not installed: the two ops are then NULL and
 * TINYCLIP_PATCH_EMBED=cudnn is refused with the loader's reason. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conv_pick.h"
#include "cuda_internal.h"

#ifdef TC_HAVE_CUDNN

#include <cudnn.h>
#include <dlfcn.h>

#define CONV_THREADS 256
#define CONV_PLANS 8
#define CONV_MAX_ALGOS 16
#define CONV_WORKSPACE_CAP ((size_t)256 << 20)

typedef struct {
    int B, H, W, P, C; /* the shape; B = 0: free slot */
    int fwd_ready, bwd_ready;
    cudnnConvolutionFwdAlgo_t fwd_algo;
    cudnnMathType_t fwd_math;
    size_t fwd_ws;
    cudnnConvolutionBwdFilterAlgo_t bwd_algo;
    cudnnMathType_t bwd_math;
    size_t bwd_ws;
} conv_plan;

/* the cuDNN functions used here, resolved from the library at creation */
#define DNN_FUNCS(X)                                                                               \
    X(cudnnCreate)                                                                                 \
    X(cudnnDestroy)                                                                                \
    X(cudnnSetStream)                                                                              \
    X(cudnnGetErrorString)                                                                         \
    X(cudnnGetLastErrorString)                                                                     \
    X(cudnnCreateTensorDescriptor)                                                                 \
    X(cudnnDestroyTensorDescriptor)                                                                \
    X(cudnnSetTensor4dDescriptor)                                                                  \
    X(cudnnCreateFilterDescriptor)                                                                 \
    X(cudnnDestroyFilterDescriptor)                                                                \
    X(cudnnSetFilter4dDescriptor)                                                                  \
    X(cudnnCreateConvolutionDescriptor)                                                            \
    X(cudnnDestroyConvolutionDescriptor)                                                           \
    X(cudnnSetConvolution2dDescriptor)                                                             \
    X(cudnnSetConvolutionMathType)                                                                 \
    X(cudnnGetConvolution2dForwardOutputDim)                                                       \
    X(cudnnGetConvolutionForwardAlgorithm_v7)                                                      \
    X(cudnnGetConvolutionForwardWorkspaceSize)                                                     \
    X(cudnnConvolutionForward)                                                                     \
    X(cudnnGetConvolutionBackwardFilterAlgorithm_v7)                                               \
    X(cudnnGetConvolutionBackwardFilterWorkspaceSize)                                              \
    X(cudnnConvolutionBackwardFilter)

typedef struct {
#define DNN_MEMBER(f) decltype(&::f) f;
    DNN_FUNCS(DNN_MEMBER)
#undef DNN_MEMBER
} dnn_api;

#define DNN_STR2(x) #x
#define DNN_STR(x) DNN_STR2(x)
/* the soname of the major version the headers describe */
#define DNN_SONAME "libcudnn.so." DNN_STR(CUDNN_MAJOR)

struct tc_cuda_conv {
    dnn_api api;
    cudnnHandle_t handle; /* created at the first call: cudnnCreate loads the libraries */
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    void *workspace;
    size_t workspace_bytes;
    conv_plan plan[CONV_PLANS];
    int next_slot; /* round-robin replacement when all slots are taken */
};

/* ---- kernels ---- */

/* image (B,3,H,W) fp32 -> x (B,H,W,3): one thread per pixel, three coalesced
 * plane reads and three adjacent writes */
template <typename T>
__global__ void image_to_nhwc_kernel(T *x, const float *image, int B, int H, int W) {
    const size_t hw = (size_t)H * W, n = (size_t)B * hw;
    for (size_t p = blockIdx.x * (size_t)blockDim.x + threadIdx.x; p < n;
         p += (size_t)gridDim.x * blockDim.x) {
        const size_t bb = p / hw, s = p % hw;
        const float *src = image + bb * 3 * hw + s;
        T *dst = x + p * 3;
        dst[0] = tc_tof<T>(src[0]);
        dst[1] = tc_tof<T>(src[hw]);
        dst[2] = tc_tof<T>(src[2 * hw]);
    }
}

/* w (C,3,PP) -> wt (C,PP,3), PP = P*P: one thread per (k, r*P+s) */
template <typename T> __global__ void weight_to_krsc_kernel(T *wt, const T *w, int C, int PP) {
    const size_t n = (size_t)C * PP;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        const size_t k = e / PP, rs = e % PP;
        const T *src = w + k * 3 * PP + rs;
        T *dst = wt + e * 3;
        dst[0] = src[0];
        dst[1] = src[PP];
        dst[2] = src[2 * PP];
    }
}

/* dw (C,3,PP) += dwt (C,PP,3): one thread per dw element */
template <typename T> __global__ void dw_add_kernel(float *dw, const T *dwt, int C, int PP) {
    const size_t n = (size_t)C * 3 * PP;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        const size_t rs = e % PP, c = (e / PP) % 3, k = e / (3 * (size_t)PP);
        dw[e] += tc_ldf(dwt + (k * PP + rs) * 3 + c);
    }
}

template <typename T>
static void launch_image_to_nhwc(tc_cuda_backend *cu, tc_act *x, const float *image, int B, int H,
                                 int W) {
    const size_t n = (size_t)B * H * W;
    image_to_nhwc_kernel<T>
        <<<tc_cuda_grid(n, CONV_THREADS), CONV_THREADS, 0, cu->stream>>>((T *)x, image, B, H, W);
    tc_cuda_launched(cu, "patch_embed image to NHWC");
}

template <typename T>
static void launch_weight_to_krsc(tc_cuda_backend *cu, void *wt, const tc_act *w, int C, int PP) {
    const size_t n = (size_t)C * PP;
    weight_to_krsc_kernel<T><<<tc_cuda_grid(n, CONV_THREADS), CONV_THREADS, 0, cu->stream>>>(
        (T *)wt, (const T *)w, C, PP);
    tc_cuda_launched(cu, "patch_embed weight to KRSC");
}

template <typename T>
static void launch_dw_add(tc_cuda_backend *cu, float *dw, const void *dwt, int C, int PP) {
    const size_t n = (size_t)C * 3 * PP;
    dw_add_kernel<T>
        <<<tc_cuda_grid(n, CONV_THREADS), CONV_THREADS, 0, cu->stream>>>(dw, (const T *)dwt, C, PP);
    tc_cuda_launched(cu, "patch_embed dw add");
}

/* ---- cuDNN plumbing ---- */

/* true on success; otherwise records "<op>: <what>: <status> (<cuDNN's last message>)" */
static bool dnn_ok(tc_cuda_backend *cu, cudnnStatus_t s, const char *op, const char *what) {
    if (s == CUDNN_STATUS_SUCCESS) return true;
    const dnn_api &d = cu->conv->api;
    char detail[256] = "";
    d.cudnnGetLastErrorString(detail, sizeof detail);
    tc_cuda_record(cu, s == CUDNN_STATUS_NOT_SUPPORTED ? TC_ERR_UNSUPPORTED : TC_ERR_BACKEND,
                   "cuda %s: cuDNN %s: %s%s%s%s", op, what, d.cudnnGetErrorString(s),
                   detail[0] ? " (" : "", detail, detail[0] ? ")" : "");
    return false;
}

/* destroys whichever of the handle and descriptors exist (NULL: not made) */
static void release(const dnn_api &d, cudnnHandle_t h, cudnnTensorDescriptor_t x,
                    cudnnTensorDescriptor_t y, cudnnFilterDescriptor_t w,
                    cudnnConvolutionDescriptor_t conv) {
    if (conv) d.cudnnDestroyConvolutionDescriptor(conv);
    if (w) d.cudnnDestroyFilterDescriptor(w);
    if (y) d.cudnnDestroyTensorDescriptor(y);
    if (x) d.cudnnDestroyTensorDescriptor(x);
    if (h) d.cudnnDestroy(h);
}

/* the handle and descriptors, created at the first call. all or nothing:
 * what was created before a failure is destroyed, so a later call starts
 * clean and nothing leaks */
static bool conv_ready(tc_cuda_backend *cu, const char *op) {
    tc_cuda_conv *cv = cu->conv;
    const dnn_api &d = cv->api;
    if (cv->handle) return true;
    cudnnHandle_t h = NULL;
    cudnnTensorDescriptor_t x = NULL, y = NULL;
    cudnnFilterDescriptor_t w = NULL;
    cudnnConvolutionDescriptor_t conv = NULL;
    if (dnn_ok(cu, d.cudnnCreate(&h), op, "cudnnCreate") &&
        dnn_ok(cu, d.cudnnSetStream(h, cu->stream), op, "cudnnSetStream") &&
        dnn_ok(cu, d.cudnnCreateTensorDescriptor(&x), op, "tensor descriptor") &&
        dnn_ok(cu, d.cudnnCreateTensorDescriptor(&y), op, "tensor descriptor") &&
        dnn_ok(cu, d.cudnnCreateFilterDescriptor(&w), op, "filter descriptor") &&
        dnn_ok(cu, d.cudnnCreateConvolutionDescriptor(&conv), op, "convolution descriptor")) {
        cv->handle = h;
        cv->x = x;
        cv->y = y;
        cv->w = w;
        cv->conv = conv;
        return true;
    }
    release(d, h, x, y, w, conv);
    return false;
}

/* the descriptors of one shape (host-only calls, microseconds) */
static bool conv_describe(tc_cuda_backend *cu, const char *op, int B, int H, int W, int P, int C) {
    tc_cuda_conv *cv = cu->conv;
    const dnn_api &d = cv->api;
    const cudnnDataType_t dt = cu->fp32 ? CUDNN_DATA_FLOAT : CUDNN_DATA_BFLOAT16;
    const int gh = H / P, gw = W / P;
    if (!dnn_ok(cu, d.cudnnSetTensor4dDescriptor(cv->x, CUDNN_TENSOR_NHWC, dt, B, 3, H, W), op,
                "x descriptor") ||
        !dnn_ok(cu, d.cudnnSetTensor4dDescriptor(cv->y, CUDNN_TENSOR_NHWC, dt, B, C, gh, gw), op,
                "y descriptor") ||
        !dnn_ok(cu, d.cudnnSetFilter4dDescriptor(cv->w, dt, CUDNN_TENSOR_NHWC, C, 3, P, P), op,
                "w descriptor") ||
        !dnn_ok(cu,
                d.cudnnSetConvolution2dDescriptor(cv->conv, 0, 0, P, P, 1, 1,
                                                  CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
                op, "convolution descriptor") ||
        !dnn_ok(cu,
                d.cudnnSetConvolutionMathType(cv->conv,
                                              cu->fp32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH),
                op, "math type"))
        return false;
    int n = 0, c = 0, h = 0, w = 0;
    if (!dnn_ok(cu, d.cudnnGetConvolution2dForwardOutputDim(cv->conv, cv->x, cv->w, &n, &c, &h, &w),
                op, "output dimensions"))
        return false;
    if (n != B || c != C || h != gh || w != gw) {
        tc_cuda_record(cu, TC_ERR_BACKEND, "cuda %s: cuDNN output (%d,%d,%d,%d) != (%d,%d,%d,%d)",
                       op, n, c, h, w, B, C, gh, gw);
        return false;
    }
    return true;
}

static conv_plan *conv_plan_for(tc_cuda_conv *cv, int B, int H, int W, int P, int C) {
    for (int i = 0; i < CONV_PLANS; i++) {
        conv_plan *p = &cv->plan[i];
        if (p->B == B && p->H == H && p->W == W && p->P == P && p->C == C) return p;
    }
    int slot = -1;
    for (int i = 0; i < CONV_PLANS && slot < 0; i++)
        if (cv->plan[i].B == 0) slot = i;
    if (slot < 0) {
        slot = cv->next_slot;
        cv->next_slot = (cv->next_slot + 1) % CONV_PLANS;
    }
    conv_plan *p = &cv->plan[slot];
    memset(p, 0, sizeof *p);
    p->B = B;
    p->H = H;
    p->W = W;
    p->P = P;
    p->C = C;
    return p;
}

/* grows the workspace to at least bytes (only while planning a new shape) */
static bool workspace_reserve(tc_cuda_backend *cu, const char *op, size_t bytes) {
    tc_cuda_conv *cv = cu->conv;
    if (bytes <= cv->workspace_bytes) return true;
    /* queued convolutions may still use the old one */
    if (!tc_cuda_ok(cu, cudaStreamSynchronize(cu->stream), "patch_embed workspace: synchronize"))
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

/* the first usable candidate in the heuristics' order (conv_pick.h), else
 * -1. the heuristics are a function of the shape, the GPU and the cuDNN
 * version only, so every run picks the same algorithm and gets the same
 * bits; cudnnFind* would pick by timing, which can differ from run to run
 * (and break bit-identical resumes) */
template <typename Perf>
static int pick_candidate(const tc_cuda_backend *cu, const Perf *c, int n) {
    tc_conv_candidate k[CONV_MAX_ALGOS];
    if (n > CONV_MAX_ALGOS) n = CONV_MAX_ALGOS;
    for (int i = 0; i < n; i++) {
        k[i].ran = c[i].status == CUDNN_STATUS_SUCCESS;
        k[i].deterministic = c[i].determinism == CUDNN_DETERMINISTIC;
        k[i].fma_math = c[i].mathType == CUDNN_FMA_MATH;
        k[i].workspace = c[i].memory;
    }
    return tc_conv_pick(k, n, cu->fp32, CONV_WORKSPACE_CAP);
}

static bool plan_forward(tc_cuda_backend *cu, conv_plan *pl) {
    const char *op = "patch_embed_forward";
    tc_cuda_conv *cv = cu->conv;
    const dnn_api &d = cv->api;
    cudnnConvolutionFwdAlgoPerf_t cand[CONV_MAX_ALGOS];
    int ncand = 0;
    if (!dnn_ok(cu,
                d.cudnnGetConvolutionForwardAlgorithm_v7(cv->handle, cv->x, cv->w, cv->conv, cv->y,
                                                         CONV_MAX_ALGOS, &ncand, cand),
                op, "algorithm heuristics"))
        return false;
    const int i = pick_candidate(cu, cand, ncand);
    if (i < 0) {
        tc_cuda_record(cu, TC_ERR_UNSUPPORTED,
                       "cuda %s: cuDNN offers no deterministic forward algorithm for B=%d H=%d "
                       "W=%d P=%d C=%d (%d candidates)",
                       op, pl->B, pl->H, pl->W, pl->P, pl->C, ncand);
        return false;
    }
    size_t ws = 0;
    if (!dnn_ok(cu, d.cudnnSetConvolutionMathType(cv->conv, cand[i].mathType), op, "math type") ||
        !dnn_ok(cu,
                d.cudnnGetConvolutionForwardWorkspaceSize(cv->handle, cv->x, cv->w, cv->conv, cv->y,
                                                          cand[i].algo, &ws),
                op, "workspace size") ||
        !workspace_reserve(cu, op, ws))
        return false;
    pl->fwd_algo = cand[i].algo;
    pl->fwd_math = cand[i].mathType;
    pl->fwd_ws = ws;
    pl->fwd_ready = 1;
    return true;
}

static bool plan_backward(tc_cuda_backend *cu, conv_plan *pl) {
    const char *op = "patch_embed_backward_weight";
    tc_cuda_conv *cv = cu->conv;
    const dnn_api &d = cv->api;
    cudnnConvolutionBwdFilterAlgoPerf_t cand[CONV_MAX_ALGOS];
    int ncand = 0;
    if (!dnn_ok(cu,
                d.cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                    cv->handle, cv->x, cv->y, cv->conv, cv->w, CONV_MAX_ALGOS, &ncand, cand),
                op, "algorithm heuristics"))
        return false;
    const int i = pick_candidate(cu, cand, ncand);
    if (i < 0) {
        tc_cuda_record(cu, TC_ERR_UNSUPPORTED,
                       "cuda %s: cuDNN offers no deterministic filter-gradient algorithm for B=%d "
                       "H=%d W=%d P=%d C=%d (%d candidates)",
                       op, pl->B, pl->H, pl->W, pl->P, pl->C, ncand);
        return false;
    }
    size_t ws = 0;
    if (!dnn_ok(cu, d.cudnnSetConvolutionMathType(cv->conv, cand[i].mathType), op, "math type") ||
        !dnn_ok(cu,
                d.cudnnGetConvolutionBackwardFilterWorkspaceSize(cv->handle, cv->x, cv->y, cv->conv,
                                                                 cv->w, cand[i].algo, &ws),
                op, "workspace size") ||
        !workspace_reserve(cu, op, ws))
        return false;
    pl->bwd_algo = cand[i].algo;
    pl->bwd_math = cand[i].mathType;
    pl->bwd_ws = ws;
    pl->bwd_ready = 1;
    return true;
}

/* shape and buffer checks shared by both ops; records and returns false */
static bool conv_check(tc_cuda_backend *cu, const char *op, const void *act_a, const void *act_b,
                       int B, int H, int W, int P, int C) {
    if (!(B >= 0 && P > 0 && C > 0 && H >= P && W >= P && H % P == 0 && W % P == 0)) {
        tc_cuda_record(cu, TC_ERR_ARG,
                       "cuda %s: bad shape B=%d H=%d W=%d P=%d C=%d (H and W must be whole "
                       "numbers of P-pixel patches)",
                       op, B, H, W, P, C);
        return false;
    }
    /* cuDNN's legacy tensors count elements in int */
    const size_t nx = (size_t)B * H * W * 3, ny = (size_t)B * (H / P) * (W / P) * C;
    const size_t nw = (size_t)C * 3 * P * P;
    if (nx > INT_MAX || ny > INT_MAX || nw > INT_MAX) {
        tc_cuda_record(cu, TC_ERR_UNSUPPORTED,
                       "cuda %s: B=%d H=%d W=%d P=%d C=%d exceeds 2^31 elements per tensor", op, B,
                       H, W, P, C);
        return false;
    }
    if (nw * cu->base.act_bytes > cu->scratch_bytes) {
        tc_cuda_record(cu, TC_ERR_UNSUPPORTED,
                       "cuda %s: a %zu-element weight does not fit the %zu-byte scratch", op, nw,
                       cu->scratch_bytes);
        return false;
    }
    /* the algorithms are chosen on these buffers once per shape, and cuDNN's
     * vectorised kernels may count on their alignment: whole allocations only */
    if (tc_cuda_alignment((uintptr_t)act_a) < 256 || tc_cuda_alignment((uintptr_t)act_b) < 256) {
        tc_cuda_record(cu, TC_ERR_ARG,
                       "cuda %s: image_act, out and dout must be whole allocations (256-byte "
                       "aligned)",
                       op);
        return false;
    }
    return true;
}

/* ---- ops ---- */

static void patch_embed_forward(tc_backend *b, tc_act *out, tc_act *image_act, const float *image,
                                const tc_act *w, int B, int H, int W, int P, int C) {
    tc_cuda_backend *cu = tc_cu(b);
    const char *op = "patch_embed_forward";
    if (!conv_check(cu, op, out, image_act, B, H, W, P, C) || B == 0) return;
    void *wt = cu->scratch;
    TC_ACT_DISPATCH(cu, launch_image_to_nhwc, cu, image_act, image, B, H, W);
    TC_ACT_DISPATCH(cu, launch_weight_to_krsc, cu, wt, w, C, P * P);
    /* after a failure nothing more is queued (a search would time garbage) */
    if (cu->err != TC_OK || !conv_ready(cu, op) || !conv_describe(cu, op, B, H, W, P, C)) return;
    tc_cuda_conv *cv = cu->conv;
    const dnn_api &d = cv->api;
    conv_plan *pl = conv_plan_for(cv, B, H, W, P, C);
    if (!pl->fwd_ready && !plan_forward(cu, pl)) return;
    const float one = 1.0f, zero = 0.0f;
    if (!dnn_ok(cu, d.cudnnSetConvolutionMathType(cv->conv, pl->fwd_math), op, "math type")) return;
    dnn_ok(cu,
           d.cudnnConvolutionForward(cv->handle, &one, cv->x, image_act, cv->w, wt, cv->conv,
                                     pl->fwd_algo, pl->fwd_ws ? cv->workspace : NULL, pl->fwd_ws,
                                     &zero, cv->y, out),
           op, "cudnnConvolutionForward");
}

static void patch_embed_backward_weight(tc_backend *b, float *dw, const tc_act *dout,
                                        const tc_act *image_act, int B, int H, int W, int P,
                                        int C) {
    tc_cuda_backend *cu = tc_cu(b);
    const char *op = "patch_embed_backward_weight";
    if (!conv_check(cu, op, dout, image_act, B, H, W, P, C) || B == 0) return;
    if (cu->err != TC_OK || !conv_ready(cu, op) || !conv_describe(cu, op, B, H, W, P, C)) return;
    tc_cuda_conv *cv = cu->conv;
    const dnn_api &d = cv->api;
    void *dwt = cu->scratch;
    conv_plan *pl = conv_plan_for(cv, B, H, W, P, C);
    if (!pl->bwd_ready && !plan_backward(cu, pl)) return;
    const float one = 1.0f, zero = 0.0f;
    if (!dnn_ok(cu, d.cudnnSetConvolutionMathType(cv->conv, pl->bwd_math), op, "math type") ||
        !dnn_ok(cu,
                d.cudnnConvolutionBackwardFilter(
                    cv->handle, &one, cv->x, image_act, cv->y, dout, cv->conv, pl->bwd_algo,
                    pl->bwd_ws ? cv->workspace : NULL, pl->bwd_ws, &zero, cv->w, dwt),
                op, "cudnnConvolutionBackwardFilter"))
        return;
    TC_ACT_DISPATCH(cu, launch_dw_add, cu, dw, dwt, C, P * P);
}

/* resolves every function of DNN_FUNCS; false with the reason otherwise */
static bool dnn_load(dnn_api *a, char *why, size_t cap) {
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

tc_status tc_cuda_conv_init(tc_cuda_backend *cu) {
    const int use_cudnn = cu->opt.patch_embed == TC_PATCH_EMBED_CONV;
    cu->conv = (tc_cuda_conv *)calloc(1, sizeof *cu->conv);
    if (!cu->conv) return tc_fail(TC_ERR_OOM, "cuda: out of host memory for the cuDNN state");
    char why[512];
    if (!dnn_load(&cu->conv->api, why, sizeof why)) {
        /* the ops stay NULL: the GEMM path is the only one */
        if (use_cudnn)
            return tc_fail(TC_ERR_UNSUPPORTED,
                           "patch embedding by convolution: cannot load cuDNN: %s", why);
        return TC_OK;
    }
    cu->base.patch_embed_forward = patch_embed_forward;
    cu->base.patch_embed_backward_weight = patch_embed_backward_weight;
    cu->base.caps.patch_embed_conv = use_cudnn;
    return TC_OK;
}

void tc_cuda_conv_destroy(tc_cuda_backend *cu) {
    tc_cuda_conv *cv = cu->conv;
    if (!cv) return;
    const dnn_api &d = cv->api;
    if (d.cudnnCreate) /* loaded: the handle and descriptors may exist */
        release(d, cv->handle, cv->x, cv->y, cv->w, cv->conv);
    cudaFree(cv->workspace);
    free(cv);
    cu->conv = NULL;
}

#else /* built without cuDNN: the GEMM path only */

tc_status tc_cuda_conv_init(tc_cuda_backend *cu) {
    if (cu->opt.patch_embed == TC_PATCH_EMBED_CONV)
        return tc_fail(TC_ERR_UNSUPPORTED,
                       "patch embedding by convolution: this build has no cuDNN (libcudnn was "
                       "not found when it was configured)");
    return TC_OK;
}

void tc_cuda_conv_destroy(tc_cuda_backend *cu) {}

#endif
