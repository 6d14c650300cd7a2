/* the ResNet towers' BatchNorm (+ ReLU), residual ReLU and average pool, NCHW.
 *
 * batchnorm: one block per channel. the block reads the channel's N*HW
 * values (N planes of HW) three times: the sum, then the squared deviations
 * from the mean (two passes, in double: the statistics of a 12544-pixel
 * plane times a batch stay exact to fp32), then the normalised output. each
 * thread sums a fixed strided subset and the block sum has a fixed pattern
 * (tc_block_sum_d), so the bits do not depend on the run. thread 0 writes the
 * saved statistics and, in TC_BN_TRAIN, the running statistics (momentum
 * 0.1, unbiased variance); block 0 counts the batch. the backward is the same
 * shape: sums of g and g*xhat, then dx. one channel per block keeps a
 * channel's reduction in one place (no atomics, no second pass) at the cost
 * of fewer blocks than SMs for the 32-channel stem.
 *
 * the rest is elementwise: one thread per output element. */
#include <math.h>

#include "cuda_internal.h"

#define BN_THREADS 512
#define ELEM_THREADS 256
#define BN_EPS 1e-5
#define BN_MOMENTUM 0.1

/* deterministic block sum in double (the pattern of tc_block_sum); sh holds
 * 33 doubles; every thread gets the result */
__device__ __forceinline__ double block_sum_d(double v, double *sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = tc_warp_sum_d(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        double t = lane < nw ? sh[lane] : 0.0;
        t = tc_warp_sum_d(t);
        if (lane == 0) sh[32] = t;
    }
    __syncthreads();
    return sh[32];
}

/* element i of channel c's N*HW values */
__device__ __forceinline__ size_t bn_index(size_t i, int C, int HW, int c) {
    const size_t n = i / HW, j = i % HW;
    return (n * C + c) * HW + j;
}

template <typename T>
__global__ void __launch_bounds__(BN_THREADS)
    bn_forward_kernel(T *out, float *mean, float *rstd, float *running, const T *x, const T *w,
                      const T *bias, int N, int C, int HW, int mode, int relu) {
    __shared__ double sh[33];
    const int c = blockIdx.x;
    const size_t n = (size_t)N * HW;
    float m, r;
    if (mode == TC_BN_EVAL) {
        m = running[c];
        r = (float)(1.0 / sqrt((double)running[C + c] + BN_EPS));
    } else {
        double s = 0.0;
        for (size_t i = threadIdx.x; i < n; i += blockDim.x)
            s += tc_ldf(x + bn_index(i, C, HW, c));
        const double mu = block_sum_d(s, sh) / (double)n;
        double q = 0.0;
        for (size_t i = threadIdx.x; i < n; i += blockDim.x) {
            const double d = tc_ldf(x + bn_index(i, C, HW, c)) - mu;
            q += d * d;
        }
        q = block_sum_d(q, sh);
        const double var = q / (double)n;
        m = (float)mu;
        r = (float)(1.0 / sqrt(var + BN_EPS));
        if (mode == TC_BN_TRAIN && threadIdx.x == 0) {
            const double unbiased = n > 1 ? q / (double)(n - 1) : var;
            running[c] = (float)((1.0 - BN_MOMENTUM) * running[c] + BN_MOMENTUM * mu);
            running[C + c] = (float)((1.0 - BN_MOMENTUM) * running[C + c] + BN_MOMENTUM * unbiased);
            if (c == 0) running[2 * C] += 1.0f;
        }
    }
    if (threadIdx.x == 0) {
        mean[c] = m;
        rstd[c] = r;
    }
    const float scale = r * tc_ldf(w + c), shift = tc_ldf(bias + c);
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) {
        const size_t o = bn_index(i, C, HW, c);
        float v = (tc_ldf(x + o) - m) * scale + shift;
        if (relu) v = v > 0.0f ? v : 0.0f;
        out[o] = tc_tof<T>(v);
    }
}

/* dout where the ReLU passed (out > 0), or everywhere */
template <typename T>
__device__ __forceinline__ float bn_grad(const T *dout, const T *out, size_t o, int relu) {
    return relu && !(tc_ldf(out + o) > 0.0f) ? 0.0f : tc_ldf(dout + o);
}

template <typename T>
__global__ void __launch_bounds__(BN_THREADS)
    bn_backward_kernel(T *dinp, float *dw, float *dbias, const T *dout, const T *x, const T *out,
                       const T *w, const float *mean, const float *rstd, int N, int C, int HW,
                       int relu) {
    __shared__ double sh[33];
    const int c = blockIdx.x;
    const size_t n = (size_t)N * HW;
    const float m = mean[c], r = rstd[c];
    double sg = 0.0, sgx = 0.0;
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) {
        const size_t o = bn_index(i, C, HW, c);
        const float g = bn_grad(dout, out, o, relu);
        sg += g;
        sgx += (double)g * ((tc_ldf(x + o) - m) * r);
    }
    sg = block_sum_d(sg, sh);
    sgx = block_sum_d(sgx, sh);
    if (threadIdx.x == 0) {
        dbias[c] += (float)sg;
        dw[c] += (float)sgx;
    }
    const float k = r * tc_ldf(w + c), mg = (float)(sg / (double)n), mgx = (float)(sgx / (double)n);
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) {
        const size_t o = bn_index(i, C, HW, c);
        const float g = bn_grad(dout, out, o, relu), xh = (tc_ldf(x + o) - m) * r;
        dinp[o] = tc_tof<T>(k * (g - mg - xh * mgx));
    }
}

template <typename T>
static void launch_bn_forward(tc_cuda_backend *cu, tc_act *out, float *mean, float *rstd,
                              float *running, const tc_act *inp, const tc_act *w,
                              const tc_act *bias, int N, int C, int HW, int mode, int relu) {
    bn_forward_kernel<T><<<C, BN_THREADS, 0, cu->stream>>>((T *)out, mean, rstd, running,
                                                           (const T *)inp, (const T *)w,
                                                           (const T *)bias, N, C, HW, mode, relu);
    tc_cuda_launched(cu, "batchnorm_forward");
}

template <typename T>
static void launch_bn_backward(tc_cuda_backend *cu, tc_act *dinp, float *dw, float *dbias,
                               const tc_act *dout, const tc_act *inp, const tc_act *out,
                               const tc_act *w, const float *mean, const float *rstd, int N, int C,
                               int HW, int relu) {
    bn_backward_kernel<T><<<C, BN_THREADS, 0, cu->stream>>>(
        (T *)dinp, dw, dbias, (const T *)dout, (const T *)inp, (const T *)out, (const T *)w, mean,
        rstd, N, C, HW, relu);
    tc_cuda_launched(cu, "batchnorm_backward");
}

void tc_cuda_batchnorm_forward(tc_backend *b, tc_act *out, float *mean, float *rstd, float *running,
                               const tc_act *inp, const tc_act *w, const tc_act *bias, int N, int C,
                               int HW, tc_bn_mode mode, int relu) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, N >= 0 && C >= 0 && HW >= 0 && C <= 2147483647,
                  "cuda batchnorm_forward: bad shape N=%d C=%d HW=%d", N, C, HW);
    TC_CU_REQUIRE(cu, mode == TC_BN_EVAL || mode == TC_BN_TRAIN || mode == TC_BN_REPLAY,
                  "cuda batchnorm_forward: unknown mode %d", (int)mode);
    if (N == 0 || C == 0 || HW == 0) return;
    TC_ACT_DISPATCH(cu, launch_bn_forward, cu, out, mean, rstd, running, inp, w, bias, N, C, HW,
                    (int)mode, relu);
}

void tc_cuda_batchnorm_backward(tc_backend *b, tc_act *dinp, float *dw, float *dbias,
                                const tc_act *dout, const tc_act *inp, const tc_act *out,
                                const tc_act *w, const float *mean, const float *rstd, int N, int C,
                                int HW, int relu) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, N >= 0 && C >= 0 && HW >= 0,
                  "cuda batchnorm_backward: bad shape N=%d C=%d HW=%d", N, C, HW);
    if (N == 0 || C == 0 || HW == 0) return;
    TC_ACT_DISPATCH(cu, launch_bn_backward, cu, dinp, dw, dbias, dout, inp, out, w, mean, rstd, N,
                    C, HW, relu);
}

/* ---- residual ReLU ---- */

template <typename T> __global__ void add_relu_kernel(T *out, const T *x, const T *y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float v = tc_ldf(x + i) + tc_ldf(y + i);
        out[i] = tc_tof<T>(v > 0.0f ? v : 0.0f);
    }
}

template <typename T>
__global__ void relu_backward_kernel(T *dx, const T *out, const T *dout, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dx[i] = tc_ldf(out + i) > 0.0f ? dout[i] : tc_tof<T>(0.0f);
}

template <typename T>
static void launch_add_relu(tc_cuda_backend *cu, tc_act *out, const tc_act *x, const tc_act *y,
                            size_t n) {
    add_relu_kernel<T><<<tc_cuda_grid(n, ELEM_THREADS), ELEM_THREADS, 0, cu->stream>>>(
        (T *)out, (const T *)x, (const T *)y, n);
    tc_cuda_launched(cu, "add_relu_forward");
}

template <typename T>
static void launch_relu_backward(tc_cuda_backend *cu, tc_act *dx, const tc_act *out,
                                 const tc_act *dout, size_t n) {
    relu_backward_kernel<T><<<tc_cuda_grid(n, ELEM_THREADS), ELEM_THREADS, 0, cu->stream>>>(
        (T *)dx, (const T *)out, (const T *)dout, n);
    tc_cuda_launched(cu, "relu_backward");
}

void tc_cuda_add_relu_forward(tc_backend *b, tc_act *out, const tc_act *x, const tc_act *y,
                              size_t n) {
    tc_cuda_backend *cu = tc_cu(b);
    if (n == 0) return;
    TC_ACT_DISPATCH(cu, launch_add_relu, cu, out, x, y, n);
}

void tc_cuda_relu_backward(tc_backend *b, tc_act *dx, const tc_act *out, const tc_act *dout,
                           size_t n) {
    tc_cuda_backend *cu = tc_cu(b);
    if (n == 0) return;
    TC_ACT_DISPATCH(cu, launch_relu_backward, cu, dx, out, dout, n);
}

/* ---- average pool (kernel = stride = k) ---- */

template <typename T>
__global__ void avgpool_forward_kernel(T *out, const T *x, size_t NC, int H, int W, int k) {
    const int Ho = H / k, Wo = W / k;
    const size_t n = NC * Ho * Wo;
    const float inv = 1.0f / (float)(k * k);
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        const size_t p = e / ((size_t)Ho * Wo);
        const int oy = (int)(e / Wo % Ho), ox = (int)(e % Wo);
        const T *plane = x + p * H * W;
        float s = 0.0f;
        for (int dy = 0; dy < k; dy++)
            for (int dx = 0; dx < k; dx++)
                s += tc_ldf(plane + (size_t)(oy * k + dy) * W + ox * k + dx);
        out[e] = tc_tof<T>(s * inv);
    }
}

template <typename T>
__global__ void avgpool_backward_kernel(T *dx, const T *dout, size_t NC, int H, int W, int k) {
    const int Ho = H / k, Wo = W / k;
    const size_t n = NC * H * W;
    const float inv = 1.0f / (float)(k * k);
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        const size_t p = e / ((size_t)H * W);
        const int y = (int)(e / W % H), x = (int)(e % W);
        dx[e] = tc_tof<T>(tc_ldf(dout + (p * Ho + y / k) * Wo + x / k) * inv);
    }
}

template <typename T>
static void launch_avgpool_forward(tc_cuda_backend *cu, tc_act *out, const tc_act *inp, int NC,
                                   int H, int W, int k) {
    const size_t n = (size_t)NC * (H / k) * (W / k);
    avgpool_forward_kernel<T><<<tc_cuda_grid(n, ELEM_THREADS), ELEM_THREADS, 0, cu->stream>>>(
        (T *)out, (const T *)inp, (size_t)NC, H, W, k);
    tc_cuda_launched(cu, "avgpool_forward");
}

template <typename T>
static void launch_avgpool_backward(tc_cuda_backend *cu, tc_act *dinp, const tc_act *dout, int NC,
                                    int H, int W, int k) {
    const size_t n = (size_t)NC * H * W;
    avgpool_backward_kernel<T><<<tc_cuda_grid(n, ELEM_THREADS), ELEM_THREADS, 0, cu->stream>>>(
        (T *)dinp, (const T *)dout, (size_t)NC, H, W, k);
    tc_cuda_launched(cu, "avgpool_backward");
}

void tc_cuda_avgpool_forward(tc_backend *b, tc_act *out, const tc_act *inp, int NC, int H, int W,
                             int k) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, NC >= 0 && k > 0 && H >= k && W >= k && H % k == 0 && W % k == 0,
                  "cuda avgpool_forward: bad shape NC=%d %dx%d k=%d", NC, H, W, k);
    if (NC == 0) return;
    TC_ACT_DISPATCH(cu, launch_avgpool_forward, cu, out, inp, NC, H, W, k);
}

void tc_cuda_avgpool_backward(tc_backend *b, tc_act *dinp, const tc_act *dout, int NC, int H, int W,
                              int k) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, NC >= 0 && k > 0 && H >= k && W >= k && H % k == 0 && W % k == 0,
                  "cuda avgpool_backward: bad shape NC=%d %dx%d k=%d", NC, H, W, k);
    if (NC == 0) return;
    TC_ACT_DISPATCH(cu, launch_avgpool_backward, cu, dinp, dout, NC, H, W, k);
}
