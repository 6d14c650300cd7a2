/* elementwise ops, casts, fills and the GELU family in grid-stride loops (n
 * may exceed the grid). fp32 math throughout; a bf16 result is rounded once,
 * to nearest even.
 *
 * add, the GELU family (the per-layer ones) and the fp32 <-> bf16 casts move
 * 16 bytes per access (4 fp32 or 8 bf16; a cast reads or writes its fp32 side
 * as two) when every operand is 16-byte aligned, checked per call;
 * the last n mod V elements and unaligned operands take the scalar path.
 * both paths compute each element with the same operations, so they give
 * the same bits. copies are cudaMemcpyAsync (the driver's copy kernels
 * already move wide words). */
#include <math.h>

#include "cuda_internal.h"
#include "vec_io.cuh"

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

/* the 16-byte path for flat operands at these addresses */
static bool flat_vec(const void *a, const void *b, const void *c) {
    const void *ptrs[3] = {a, b, c};
    return tc_cuda_all_aligned16(ptrs, 3) != 0;
}

/* V consecutive elements between memory and f: 1, or TC_CAST_VEC (one
 * 16-byte access of bf16, two of fp32) */
#define TC_CAST_VEC 8
template <int V, typename T> __device__ __forceinline__ void cast_ld(float *f, const T *p) {
    if constexpr (V == 1 || sizeof(T) == 2)
        tc_ldv<V>(f, p);
    else {
        tc_ld16(f, p);
        tc_ld16(f + 4, p + 4);
    }
}
template <int V, typename T> __device__ __forceinline__ void cast_st(T *p, const float *f) {
    if constexpr (V == 1 || sizeof(T) == 2)
        tc_stv<V>(p, f);
    else {
        tc_st16(p, f);
        tc_st16(p + 4, f + 4);
    }
}

/* dst[i] = src[i] converted (bf16 rounded to nearest even, as tc_tof), V
 * elements per step; the last n mod V by the first threads */
template <typename TO, typename TI, int V>
__global__ void cast_kernel(TO *dst, const TI *src, size_t n) {
    const size_t nv = n / V;
    const size_t tid = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    for (size_t v = tid; v < nv; v += (size_t)gridDim.x * blockDim.x) {
        float f[V];
        cast_ld<V>(f, src + v * V);
        cast_st<V>(dst + v * V, f);
    }
    if (V > 1 && tid < n - nv * V) dst[nv * V + tid] = tc_tof<TO>(tc_ldf(src + nv * V + tid));
}

/* one cast launch, 16-byte accesses when both operands allow them */
template <typename TO, typename TI>
static void launch_cast(tc_cuda_backend *cu, TO *dst, const TI *src, size_t n, const char *what) {
    if (flat_vec(dst, src, NULL))
        cast_kernel<TO, TI, TC_CAST_VEC>
            <<<tc_cuda_grid(n / TC_CAST_VEC + 1, TC_EW_THREADS), TC_EW_THREADS, 0, cu->stream>>>(
                dst, src, n);
    else
        cast_kernel<TO, TI, 1>
            <<<tc_cuda_grid(n, TC_EW_THREADS), TC_EW_THREADS, 0, cu->stream>>>(dst, src, n);
    tc_cuda_launched(cu, what);
}

void tc_cuda_f32_to_act(tc_backend *b, tc_act *dst, const float *src, size_t n) {
    tc_cuda_backend *cu = tc_cu(b);
    if (n == 0) return;
    if (cu->fp32) {
        tc_cuda_copy(b, dst, src, n * sizeof(float));
        return;
    }
    launch_cast(cu, (__nv_bfloat16 *)dst, src, n, "f32_to_act");
}

void tc_cuda_act_to_f32(tc_backend *b, float *dst, const tc_act *src, size_t n) {
    tc_cuda_backend *cu = tc_cu(b);
    if (n == 0) return;
    if (cu->fp32) {
        tc_cuda_copy(b, dst, src, n * sizeof(float));
        return;
    }
    launch_cast(cu, dst, (const __nv_bfloat16 *)src, n, "act_to_f32");
}

/* out[i] = op(a[i], b[i]) for i < n, V elements per access; b may be NULL
 * for a one-operand op. the vectors cover n - n mod V elements, the threads
 * of the first block the rest */
template <typename T, int V, typename Op>
__global__ void map_kernel(T *out, const T *a, const T *b, size_t n, Op op) {
    const size_t nv = n / V;
    const size_t tid = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    for (size_t v = tid; v < nv; v += (size_t)gridDim.x * blockDim.x) {
        float fa[V], fb[V] = {}, fo[V];
        tc_ldv<V>(fa, a + v * V);
        if (b) tc_ldv<V>(fb, b + v * V);
#pragma unroll
        for (int k = 0; k < V; k++)
            fo[k] = op(fa[k], fb[k]);
        tc_stv<V>(out + v * V, fo);
    }
    if (V > 1 && tid < n - nv * V) { /* fewer than V <= blockDim.x elements */
        const size_t i = nv * V + tid;
        out[i] = tc_tof<T>(op(tc_ldf(a + i), b ? tc_ldf(b + i) : 0.0f));
    }
}

template <typename T, int V, typename Op>
static void launch_map(tc_cuda_backend *cu, tc_act *out, const tc_act *a, const tc_act *b, size_t n,
                       Op op, const char *what) {
    const size_t nv = n / V;
    map_kernel<T, V, Op><<<tc_cuda_grid(nv, TC_EW_THREADS), TC_EW_THREADS, 0, cu->stream>>>(
        (T *)out, (const T *)a, (const T *)b, n, op);
    tc_cuda_launched(cu, what);
}

struct add_op {
    __device__ float operator()(float x, float y) const { return x + y; }
};

template <typename T, int V>
static void launch_add(tc_cuda_backend *cu, tc_act *out, const tc_act *x, const tc_act *y,
                       size_t n) {
    launch_map<T, V>(cu, out, x, y, n, add_op{}, "add");
}

void tc_cuda_add(tc_backend *b, tc_act *out, const tc_act *x, const tc_act *y, size_t n) {
    tc_cuda_backend *cu = tc_cu(b);
    if (n == 0) return;
    TC_ACT_VEC_DISPATCH(cu, flat_vec(out, x, y), launch_add, cu, out, x, y, n);
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

/* out = act(inp) */
struct gelu_fwd_op {
    int quick;
    __device__ float operator()(float x, float) const { return gelu_f(x, quick); }
};

/* dinp = dout * act'(inp): a = inp, b = dout */
struct gelu_bwd_op {
    int quick;
    __device__ float operator()(float x, float dy) const { return dy * gelu_grad(x, quick); }
};

template <typename T, int V>
static void launch_gelu_fwd(tc_cuda_backend *cu, tc_act *out, const tc_act *inp, size_t n,
                            int quick) {
    launch_map<T, V>(cu, out, inp, NULL, n, gelu_fwd_op{quick}, "gelu_forward");
}

template <typename T, int V>
static void launch_gelu_bwd(tc_cuda_backend *cu, tc_act *dinp, const tc_act *inp,
                            const tc_act *dout, size_t n, int quick) {
    launch_map<T, V>(cu, dinp, inp, dout, n, gelu_bwd_op{quick}, "gelu_backward");
}

void tc_cuda_gelu_forward(tc_backend *b, tc_act *out, const tc_act *inp, size_t n,
                          tc_activation kind) {
    tc_cuda_backend *cu = tc_cu(b);
    if (n == 0) return;
    TC_ACT_VEC_DISPATCH(cu, flat_vec(out, inp, NULL), launch_gelu_fwd, cu, out, inp, n,
                        kind == TC_QUICK_GELU);
}

void tc_cuda_gelu_backward(tc_backend *b, tc_act *dinp, const tc_act *inp, const tc_act *dout,
                           size_t n, tc_activation kind) {
    tc_cuda_backend *cu = tc_cu(b);
    if (n == 0) return;
    TC_ACT_VEC_DISPATCH(cu, flat_vec(dinp, inp, dout), launch_gelu_bwd, cu, dinp, inp, dout, n,
                        kind == TC_QUICK_GELU);
}
