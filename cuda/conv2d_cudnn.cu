/* the ResNet towers' convolutions (no bias, square kernel, zero padding) as
 * cuDNN calls through the legacy API: cudnnConvolutionForward,
 * cudnnConvolutionBackwardData (dinp, written) and
 * cudnnConvolutionBackwardFilter (dw, +=). the plumbing (loading, handle,
 * workspace, the deterministic algorithm choice) is cudnn_api.h's.
 *
 * layout: NCHW tensors and KCRS filters, as the CPU backend and open_clip
 * hold them: no transposes. the descriptors are set per call (host-only,
 * microseconds); the algorithms are chosen once per shape at its first call
 * (a table of CONV2D_PLANS shapes: every convolution of a teacher and a
 * student tower, and a short last batch).
 *
 * the filters sit anywhere in the parameter buffers, and cuDNN's vectorised
 * kernels may count on 256-byte alignment: the filter is copied into the
 * backend's scratch, and the filter gradient is computed into the scratch
 * and then added to dw (OC*C*K*K elements each way, small beside the
 * convolution).
 *
 * precision: fp32 mode: fp32 tensors, CUDNN_FMA_MATH only (no TF32), to
 * match the CPU. mixed mode: bf16 tensors, fp32 accumulation
 * (CUDNN_TENSOR_OP_MATH); the filter gradient comes in the filter's type
 * (bf16), so its increment is rounded once before the fp32 +=, as a weight
 * gradient under autocast.
 *
 * without cuDNN (not built with it, or the library could not be loaded) the
 * ops record an error; caps.conv2d is 0 and the model refuses ResNet towers
 * at creation with that reason. */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cuda_internal.h"

#ifdef TC_HAVE_CUDNN

#include "cudnn_api.h"

static conv2d_plan *plan_for(tc_cuda_conv *cv, const tc_cudnn_shape *s) {
    for (int i = 0; i < CONV2D_PLANS; i++)
        if (memcmp(&cv->plan2d[i].shape, s, sizeof *s) == 0) return &cv->plan2d[i];
    int slot = -1;
    for (int i = 0; i < CONV2D_PLANS && slot < 0; i++)
        if (cv->plan2d[i].shape.N == 0) slot = i;
    if (slot < 0) {
        slot = cv->next_slot2d;
        cv->next_slot2d = (cv->next_slot2d + 1) % CONV2D_PLANS;
    }
    conv2d_plan *p = &cv->plan2d[slot];
    memset(p, 0, sizeof *p);
    p->shape = *s;
    return p;
}

/* shape, size and alignment checks, then the descriptors of the shape */
static bool describe(tc_cuda_backend *cu, const char *op, const tc_cudnn_shape *s, const void *a,
                     const void *b) {
    if (!cu->base.caps.conv2d) {
        tc_cuda_record(cu, TC_ERR_UNSUPPORTED,
                       "cuda %s: cuDNN (" DNN_SONAME ") could not be loaded, so this backend has "
                       "no convolutions (ResNet towers)",
                       op);
        return false;
    }
    if (!(s->N > 0 && s->C > 0 && s->OC > 0 && s->K > 0 && s->S > 0 && s->P >= 0 && s->Ho > 0 &&
          s->Wo > 0)) {
        tc_cuda_record(cu, TC_ERR_ARG, "cuda %s: bad shape N=%d C=%d %dx%d OC=%d K=%d S=%d P=%d",
                       op, s->N, s->C, s->H, s->W, s->OC, s->K, s->S, s->P);
        return false;
    }
    /* cuDNN's legacy tensors count elements in int */
    const size_t nx = (size_t)s->N * s->C * s->H * s->W, ny = (size_t)s->N * s->OC * s->Ho * s->Wo;
    if (nx > INT_MAX || ny > INT_MAX) {
        tc_cuda_record(cu, TC_ERR_UNSUPPORTED,
                       "cuda %s: N=%d C=%d %dx%d OC=%d exceeds 2^31 elements per tensor", op, s->N,
                       s->C, s->H, s->W, s->OC);
        return false;
    }
    /* the algorithms are chosen on whole allocations; cuDNN's vectorised
     * kernels may count on their alignment */
    if (tc_cuda_alignment((uintptr_t)a) < 256 || tc_cuda_alignment((uintptr_t)b) < 256) {
        tc_cuda_record(cu, TC_ERR_ARG,
                       "cuda %s: activations must be whole allocations (256-byte aligned)", op);
        return false;
    }
    return cu->err == TC_OK && tc_cudnn_ready(cu, op) && tc_cudnn_describe(cu, op, s);
}

static tc_cudnn_shape shape_of(int N, int C, int H, int W, int OC, int K, int S, int P) {
    tc_cudnn_shape s = {N, C, H, W, OC, K, S, P, 0, 0, 0};
    if (S > 0) {
        s.Ho = (H + 2 * P - K) / S + 1;
        s.Wo = (W + 2 * P - K) / S + 1;
    }
    return s;
}

/* dw (fp32) += dwt (the filter gradient in the activation type), one thread per element */
template <typename T> __global__ void dw_accumulate_kernel(float *dw, const T *dwt, size_t n) {
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x)
        dw[e] += tc_ldf(dwt + e);
}

template <typename T>
static void launch_dw_accumulate(tc_cuda_backend *cu, float *dw, const void *dwt, size_t n) {
    dw_accumulate_kernel<T>
        <<<tc_cuda_grid(n, CONV_THREADS), CONV_THREADS, 0, cu->stream>>>(dw, (const T *)dwt, n);
    tc_cuda_launched(cu, "conv2d dw accumulate");
}

/* the scratch holds the filter copy at 0 and the filter gradient after it */
static size_t filter_bytes(const tc_cuda_backend *cu, const tc_cudnn_shape *s) {
    const size_t bytes = (size_t)s->OC * s->C * s->K * s->K * cu->base.act_bytes;
    return (bytes + 255) / 256 * 256;
}

/* copies w into the aligned scratch; false (recorded) when it does not fit */
static bool stage_filter(tc_cuda_backend *cu, const char *op, const tc_cudnn_shape *s,
                         const tc_act *w) {
    const size_t fb = filter_bytes(cu, s);
    if (2 * fb > cu->scratch_bytes) {
        tc_cuda_record(cu, TC_ERR_UNSUPPORTED,
                       "cuda %s: a %dx%dx%dx%d filter and its gradient do not fit the %zu-byte "
                       "scratch",
                       op, s->OC, s->C, s->K, s->K, cu->scratch_bytes);
        return false;
    }
    return tc_cuda_ok(cu,
                      cudaMemcpyAsync(cu->scratch, w,
                                      (size_t)s->OC * s->C * s->K * s->K * cu->base.act_bytes,
                                      cudaMemcpyDeviceToDevice, cu->stream),
                      "conv2d filter copy");
}

void tc_cuda_conv2d_forward(tc_backend *b, tc_act *out, const tc_act *inp, const tc_act *w, int N,
                            int C, int H, int W, int OC, int K, int stride, int pad) {
    tc_cuda_backend *cu = tc_cu(b);
    const char *op = "conv2d_forward";
    const tc_cudnn_shape s = shape_of(N, C, H, W, OC, K, stride, pad);
    if (N == 0 || !describe(cu, op, &s, out, inp) || !stage_filter(cu, op, &s, w)) return;
    tc_cuda_conv *cv = cu->conv;
    const dnn_api &d = cv->api;
    conv2d_plan *pl = plan_for(cv, &s);
    if (!pl->fwd.ready && !tc_cudnn_plan(cu, op, TC_CUDNN_FORWARD, &s, &pl->fwd)) return;
    const float one = 1.0f, zero = 0.0f;
    if (!tc_cudnn_ok(cu, d.cudnnSetConvolutionMathType(cv->conv, pl->fwd.math), op, "math type"))
        return;
    tc_cudnn_ok(cu,
                d.cudnnConvolutionForward(cv->handle, &one, cv->x, inp, cv->w, cu->scratch,
                                          cv->conv, (cudnnConvolutionFwdAlgo_t)pl->fwd.algo,
                                          pl->fwd.ws ? cv->workspace : NULL, pl->fwd.ws, &zero,
                                          cv->y, out),
                op, "cudnnConvolutionForward");
}

void tc_cuda_conv2d_backward(tc_backend *b, tc_act *dinp, float *dw, const tc_act *dout,
                             const tc_act *inp, const tc_act *w, int N, int C, int H, int W, int OC,
                             int K, int stride, int pad) {
    tc_cuda_backend *cu = tc_cu(b);
    const char *op = "conv2d_backward";
    const tc_cudnn_shape s = shape_of(N, C, H, W, OC, K, stride, pad);
    if (N == 0 || !describe(cu, op, &s, dout, inp) || !stage_filter(cu, op, &s, w)) return;
    tc_cuda_conv *cv = cu->conv;
    const dnn_api &d = cv->api;
    conv2d_plan *pl = plan_for(cv, &s);
    const float one = 1.0f, zero = 0.0f;
    if (dw) {
        void *dwt = (char *)cu->scratch + filter_bytes(cu, &s);
        if (!pl->filter.ready && !tc_cudnn_plan(cu, op, TC_CUDNN_FILTER, &s, &pl->filter)) return;
        if (!tc_cudnn_ok(cu, d.cudnnSetConvolutionMathType(cv->conv, pl->filter.math), op,
                         "math") ||
            !tc_cudnn_ok(cu,
                         d.cudnnConvolutionBackwardFilter(
                             cv->handle, &one, cv->x, inp, cv->y, dout, cv->conv,
                             (cudnnConvolutionBwdFilterAlgo_t)pl->filter.algo,
                             pl->filter.ws ? cv->workspace : NULL, pl->filter.ws, &zero, cv->w,
                             dwt),
                         op, "cudnnConvolutionBackwardFilter"))
            return;
        TC_ACT_DISPATCH(cu, launch_dw_accumulate, cu, dw, dwt, (size_t)OC * C * K * K);
    }
    if (!dinp) return;
    if (!pl->data.ready && !tc_cudnn_plan(cu, op, TC_CUDNN_DATA, &s, &pl->data)) return;
    if (!tc_cudnn_ok(cu, d.cudnnSetConvolutionMathType(cv->conv, pl->data.math), op, "math type"))
        return;
    tc_cudnn_ok(cu,
                d.cudnnConvolutionBackwardData(
                    cv->handle, &one, cv->w, cu->scratch, cv->y, dout, cv->conv,
                    (cudnnConvolutionBwdDataAlgo_t)pl->data.algo,
                    pl->data.ws ? cv->workspace : NULL, pl->data.ws, &zero, cv->x, dinp),
                op, "cudnnConvolutionBackwardData");
}

#else /* built without cuDNN */

static void no_cudnn(tc_backend *b, const char *op) {
    tc_cuda_record(tc_cu(b), TC_ERR_UNSUPPORTED,
                   "cuda %s: this build has no cuDNN (libcudnn was not found when it was "
                   "configured), so it has no convolutions (ResNet towers)",
                   op);
}

void tc_cuda_conv2d_forward(tc_backend *b, tc_act *out, const tc_act *inp, const tc_act *w, int N,
                            int C, int H, int W, int OC, int K, int stride, int pad) {
    no_cudnn(b, "conv2d_forward");
}

void tc_cuda_conv2d_backward(tc_backend *b, tc_act *dinp, float *dw, const tc_act *dout,
                             const tc_act *inp, const tc_act *w, int N, int C, int H, int W, int OC,
                             int K, int stride, int pad) {
    no_cudnn(b, "conv2d_backward");
}

#endif
