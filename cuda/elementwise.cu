/* elementwise ops, casts, fills and the GELU family: one thread per element
 * in grid-stride loops (n may exceed the grid). fp32 math throughout; a bf16
 * result is rounded once, to nearest even. */
#include <math.h>

#include "cuda_internal.h"

#define TC_EW_THREADS 256

__global__ void fill_kernel(float *x, float value, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] = value;
}

void tc_cuda_fill_f32(tc_backend *b, float *x, float value, size_t n) {
    tc_cuda_backend *cu = tc_cu(b);
    if (n == 0) return;
    fill_kernel<<<tc_cuda_grid(n, TC_EW_THREADS), TC_EW_THREADS, 0, cu->stream>>>(x, value, n);
    tc_cuda_launched(cu, "fill_f32");
}

void tc_cuda_zero(tc_backend *b, void *x, size_t bytes) {
    tc_cuda_backend *cu = tc_cu(b);
    if (bytes == 0) return;
    tc_cuda_ok(cu, cudaMemsetAsync(x, 0, bytes, cu->stream), "zero (cudaMemsetAsync)");
}

void tc_cuda_copy(tc_backend *b, void *dst, const void *src, size_t bytes) {
    tc_cuda_backend *cu = tc_cu(b);
    if (bytes == 0 || dst == src) return;
    tc_cuda_ok(cu, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cu->stream),
               "copy (cudaMemcpyAsync)");
}

template <typename TO, typename TI> __global__ void cast_kernel(TO *dst, const TI *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = tc_tof<TO>(tc_ldf(src + i));
}

void tc_cuda_f32_to_act(tc_backend *b, tc_act *dst, const float *src, size_t n) {
    tc_cuda_backend *cu = tc_cu(b);
    if (n == 0) return;
    if (cu->fp32) {
        tc_cuda_copy(b, dst, src, n * sizeof(float));
        return;
    }
    cast_kernel<__nv_bfloat16, float>
        <<<tc_cuda_grid(n, TC_EW_THREADS), TC_EW_THREADS, 0, cu->stream>>>((__nv_bfloat16 *)dst,
                                                                           src, n);
    tc_cuda_launched(cu, "f32_to_act");
}

void tc_cuda_act_to_f32(tc_backend *b, float *dst, const tc_act *src, size_t n) {
    tc_cuda_backend *cu = tc_cu(b);
    if (n == 0) return;
    if (cu->fp32) {
        tc_cuda_copy(b, dst, src, n * sizeof(float));
        return;
    }
    cast_kernel<float, __nv_bfloat16>
        <<<tc_cuda_grid(n, TC_EW_THREADS), TC_EW_THREADS, 0, cu->stream>>>(
            dst, (const __nv_bfloat16 *)src, n);
    tc_cuda_launched(cu, "act_to_f32");
}

template <typename T> __global__ void add_kernel(T *out, const T *x, const T *y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = tc_tof<T>(tc_ldf(x + i) + tc_ldf(y + i));
}

template <typename T>
static void launch_add(tc_cuda_backend *cu, tc_act *out, const tc_act *x, const tc_act *y,
                       size_t n) {
    add_kernel<T><<<tc_cuda_grid(n, TC_EW_THREADS), TC_EW_THREADS, 0, cu->stream>>>(
        (T *)out, (const T *)x, (const T *)y, n);
    tc_cuda_launched(cu, "add");
}

void tc_cuda_add(tc_backend *b, tc_act *out, const tc_act *x, const tc_act *y, size_t n) {
    tc_cuda_backend *cu = tc_cu(b);
    if (n == 0) return;
    TC_ACT_DISPATCH(cu, launch_add, cu, out, x, y, n);
}

__global__ void scale_kernel(float *x, const float *scale, size_t n) {
    const float s = scale[0];
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] *= s;
}

void tc_cuda_scale_f32(tc_backend *b, float *x, const float *scale, size_t n) {
    tc_cuda_backend *cu = tc_cu(b);
    if (n == 0) return;
    TC_CU_REQUIRE(cu, scale != NULL, "cuda scale_f32: scale is NULL");
    scale_kernel<<<tc_cuda_grid(n, TC_EW_THREADS), TC_EW_THREADS, 0, cu->stream>>>(x, scale, n);
    tc_cuda_launched(cu, "scale_f32");
}

__global__ void clamp_kernel(float *x, float lo, float hi, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] = fminf(fmaxf(x[i], lo), hi);
}

void tc_cuda_clamp_f32(tc_backend *b, float *x, float lo, float hi, size_t n) {
    tc_cuda_backend *cu = tc_cu(b);
    if (n == 0) return;
    clamp_kernel<<<tc_cuda_grid(n, TC_EW_THREADS), TC_EW_THREADS, 0, cu->stream>>>(x, lo, hi, n);
    tc_cuda_launched(cu, "clamp_f32");
}

/* out[0] is set to 1, then every thread that sees a non-finite value stores 0.
 * all stores write the same value, so the result does not depend on order. */
__global__ void all_finite_kernel(float *out, const float *x, size_t n) {
    int bad = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        bad |= !isfinite(x[i]);
    if (__syncthreads_or(bad) && threadIdx.x == 0) out[0] = 0.0f;
}

void tc_cuda_all_finite(tc_backend *b, float *out, const float *x, size_t n) {
    tc_cuda_backend *cu = tc_cu(b);
    tc_cuda_fill_f32(b, out, 1.0f, 1);
    if (n == 0) return;
    all_finite_kernel<<<tc_cuda_grid(n, TC_EW_THREADS), TC_EW_THREADS, 0, cu->stream>>>(out, x, n);
    tc_cuda_launched(cu, "all_finite");
}

/* ---- GELU (exact, erf) and QuickGELU (x * sigmoid(1.702 x)) ---- */

__device__ __forceinline__ float gelu_f(float x, int quick) {
    if (quick) return x / (1.0f + expf(-1.702f * x));
    /* 1 + erf(z) = erfc(-z): keeps its relative accuracy in the negative tail */
    return 0.5f * x * erfcf(-x * 0.70710678118654752f);
}

__device__ __forceinline__ float gelu_grad(float x, int quick) {
    if (quick) {
        float s = 1.0f / (1.0f + expf(-1.702f * x));
        return s + 1.702f * x * s * (1.0f - s);
    }
    float cdf = 0.5f * erfcf(-x * 0.70710678118654752f);
    float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
    return cdf + x * pdf;
}

template <typename T> __global__ void gelu_fwd_kernel(T *out, const T *inp, size_t n, int quick) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = tc_tof<T>(gelu_f(tc_ldf(inp + i), quick));
}

template <typename T>
__global__ void gelu_bwd_kernel(T *dinp, const T *inp, const T *dout, size_t n, int quick) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dinp[i] = tc_tof<T>(tc_ldf(dout + i) * gelu_grad(tc_ldf(inp + i), quick));
}

template <typename T>
static void launch_gelu_fwd(tc_cuda_backend *cu, tc_act *out, const tc_act *inp, size_t n,
                            int quick) {
    gelu_fwd_kernel<T><<<tc_cuda_grid(n, TC_EW_THREADS), TC_EW_THREADS, 0, cu->stream>>>(
        (T *)out, (const T *)inp, n, quick);
    tc_cuda_launched(cu, "gelu_forward");
}

template <typename T>
static void launch_gelu_bwd(tc_cuda_backend *cu, tc_act *dinp, const tc_act *inp,
                            const tc_act *dout, size_t n, int quick) {
    gelu_bwd_kernel<T><<<tc_cuda_grid(n, TC_EW_THREADS), TC_EW_THREADS, 0, cu->stream>>>(
        (T *)dinp, (const T *)inp, (const T *)dout, n, quick);
    tc_cuda_launched(cu, "gelu_backward");
}

void tc_cuda_gelu_forward(tc_backend *b, tc_act *out, const tc_act *inp, size_t n,
                          tc_activation kind) {
    tc_cuda_backend *cu = tc_cu(b);
    if (n == 0) return;
    TC_ACT_DISPATCH(cu, launch_gelu_fwd, cu, out, inp, n, kind == TC_QUICK_GELU);
}

void tc_cuda_gelu_backward(tc_backend *b, tc_act *dinp, const tc_act *inp, const tc_act *dout,
                           size_t n, tc_activation kind) {
    tc_cuda_backend *cu = tc_cu(b);
    if (n == 0) return;
    TC_ACT_DISPATCH(cu, launch_gelu_bwd, cu, dinp, inp, dout, n, kind == TC_QUICK_GELU);
}
