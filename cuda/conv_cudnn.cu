/* the patch embedding (conv1 of the vision tower: 3 -> C channels, kernel =
 * stride = P, no bias) as one cuDNN convolution, forward and weight gradient
 * (the cuDNN plumbing, shared with conv2d_cudnn.cu, is in cudnn_api.h),
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
 * are skipped) and needs at most 256 MiB of workspace. not cudnnFind*: its
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

#include "cuda_internal.h"

#ifdef TC_HAVE_CUDNN

#include "cudnn_api.h"

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

/* the patch embedding as a convolution: NHWC, kernel = stride = P, no padding */
static tc_cudnn_shape patch_shape(int B, int H, int W, int P, int C) {
    tc_cudnn_shape s = {B, 3, H, W, C, P, P, 0, H / P, W / P, 1};
    return s;
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
    const tc_cudnn_shape sh = patch_shape(B, H, W, P, C);
    if (cu->err != TC_OK || !tc_cudnn_ready(cu, op) || !tc_cudnn_describe(cu, op, &sh)) return;
    tc_cuda_conv *cv = cu->conv;
    const dnn_api &d = cv->api;
    conv_plan *pl = conv_plan_for(cv, B, H, W, P, C);
    if (!pl->fwd.ready && !tc_cudnn_plan(cu, op, TC_CUDNN_FORWARD, &sh, &pl->fwd)) return;
    const float one = 1.0f, zero = 0.0f;
    if (!tc_cudnn_ok(cu, d.cudnnSetConvolutionMathType(cv->conv, pl->fwd.math), op, "math type"))
        return;
    tc_cudnn_ok(cu,
                d.cudnnConvolutionForward(cv->handle, &one, cv->x, image_act, cv->w, wt, cv->conv,
                                          (cudnnConvolutionFwdAlgo_t)pl->fwd.algo,
                                          pl->fwd.ws ? cv->workspace : NULL, pl->fwd.ws, &zero,
                                          cv->y, out),
                op, "cudnnConvolutionForward");
}

static void patch_embed_backward_weight(tc_backend *b, float *dw, const tc_act *dout,
                                        const tc_act *image_act, int B, int H, int W, int P,
                                        int C) {
    tc_cuda_backend *cu = tc_cu(b);
    const char *op = "patch_embed_backward_weight";
    if (!conv_check(cu, op, dout, image_act, B, H, W, P, C) || B == 0) return;
    const tc_cudnn_shape sh = patch_shape(B, H, W, P, C);
    if (cu->err != TC_OK || !tc_cudnn_ready(cu, op) || !tc_cudnn_describe(cu, op, &sh)) return;
    tc_cuda_conv *cv = cu->conv;
    const dnn_api &d = cv->api;
    void *dwt = cu->scratch;
    conv_plan *pl = conv_plan_for(cv, B, H, W, P, C);
    if (!pl->bwd.ready && !tc_cudnn_plan(cu, op, TC_CUDNN_FILTER, &sh, &pl->bwd)) return;
    const float one = 1.0f, zero = 0.0f;
    if (!tc_cudnn_ok(cu, d.cudnnSetConvolutionMathType(cv->conv, pl->bwd.math), op, "math type") ||
        !tc_cudnn_ok(cu,
                     d.cudnnConvolutionBackwardFilter(
                         cv->handle, &one, cv->x, image_act, cv->y, dout, cv->conv,
                         (cudnnConvolutionBwdFilterAlgo_t)pl->bwd.algo,
                         pl->bwd.ws ? cv->workspace : NULL, pl->bwd.ws, &zero, cv->w, dwt),
                     op, "cudnnConvolutionBackwardFilter"))
        return;
    TC_ACT_DISPATCH(cu, launch_dw_add, cu, dw, dwt, C, P * P);
}

tc_status tc_cuda_conv_init(tc_cuda_backend *cu) {
    const int use_cudnn = cu->opt.patch_embed == TC_PATCH_EMBED_CONV;
    cu->conv = (tc_cuda_conv *)calloc(1, sizeof *cu->conv);
    if (!cu->conv) return tc_fail(TC_ERR_OOM, "cuda: out of host memory for the cuDNN state");
    char why[512];
    if (!tc_cudnn_load(&cu->conv->api, why, sizeof why)) {
        /* the ops stay NULL: the GEMM path is the only one */
        if (use_cudnn)
            return tc_fail(TC_ERR_UNSUPPORTED,
                           "patch embedding by convolution: cannot load cuDNN: %s", why);
        return TC_OK;
    }
    cu->base.patch_embed_forward = patch_embed_forward;
    cu->base.patch_embed_backward_weight = patch_embed_backward_weight;
    cu->base.caps.patch_embed_conv = use_cudnn;
    cu->base.caps.conv2d = 1; /* conv2d_cudnn.cu: the ResNet towers' convolutions */
    return TC_OK;
}

void tc_cuda_conv_destroy(tc_cuda_backend *cu) {
    tc_cuda_conv *cv = cu->conv;
    if (!cv) return;
    const dnn_api &d = cv->api;
    if (d.cudnnCreate) { /* loaded: the handle and descriptors may exist */
        if (cv->conv) d.cudnnDestroyConvolutionDescriptor(cv->conv);
        if (cv->w) d.cudnnDestroyFilterDescriptor(cv->w);
        if (cv->y) d.cudnnDestroyTensorDescriptor(cv->y);
        if (cv->x) d.cudnnDestroyTensorDescriptor(cv->x);
        if (cv->handle) d.cudnnDestroy(cv->handle);
    }
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
