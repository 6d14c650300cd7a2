/* layernorm forward and backward over the last dim C of N rows, eps 1e-5.
 *
 * forward: one warp per row; mean, then the variance as the mean of squared
 * deviations (two passes over the row, which stays in L1), both fp32; the
 * row statistics mean and rstd are saved for the backward.
 *
 * backward, three kernels, no atomics:
 *   dinp  one warp per row: dinp += rstd * (g - mean(g) - xhat * mean(g*xhat)),
 *         g = dout * w, xhat = (x - mean) * rstd
 *   dw/dbias partials: block (256 columns, one chunk of rows) sums
 *         dout*xhat and dout over its rows in order into scratch
 *   final: one thread per column adds the chunk partials in chunk order
 * so the result depends only on (N, C), never on scheduling. */
#include "cuda_internal.h"

#define LN_WARPS 8

template <typename T>
__global__ void ln_forward_kernel(T *out, float *mean, float *rstd, const T *inp, const T *w,
                                  const T *bias, int N, int C) {
    const int row = blockIdx.x * LN_WARPS + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return;
    const T *x = inp + (size_t)row * C;
    float s = 0.0f;
    for (int i = lane; i < C; i += 32)
        s += tc_ldf(x + i);
    const float m = tc_warp_sum(s) / (float)C;
    float v = 0.0f;
    for (int i = lane; i < C; i += 32) {
        float d = tc_ldf(x + i) - m;
        v += d * d;
    }
    const float r = 1.0f / sqrtf(tc_warp_sum(v) / (float)C + 1e-5f);
    T *o = out + (size_t)row * C;
    for (int i = lane; i < C; i += 32) {
        float y = (tc_ldf(x + i) - m) * r * tc_ldf(w + i);
        if (bias) y += tc_ldf(bias + i);
        o[i] = tc_tof<T>(y);
    }
    if (lane == 0) {
        if (mean) mean[row] = m;
        if (rstd) rstd[row] = r;
    }
}

template <typename T>
__global__ void ln_backward_dinp_kernel(T *dinp, const T *dout, const T *inp, const T *w,
                                        const float *mean, const float *rstd, int N, int C) {
    const int row = blockIdx.x * LN_WARPS + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return;
    const T *x = inp + (size_t)row * C;
    const T *dy = dout + (size_t)row * C;
    const float m = mean[row], r = rstd[row];
    float sg = 0.0f, sgx = 0.0f;
    for (int i = lane; i < C; i += 32) {
        float g = tc_ldf(dy + i) * tc_ldf(w + i);
        sg += g;
        sgx += g * (tc_ldf(x + i) - m) * r;
    }
    const float mg = tc_warp_sum(sg) / (float)C;
    const float mgx = tc_warp_sum(sgx) / (float)C;
    T *dx = dinp + (size_t)row * C;
    for (int i = lane; i < C; i += 32) {
        float g = tc_ldf(dy + i) * tc_ldf(w + i);
        float xhat = (tc_ldf(x + i) - m) * r;
        dx[i] = tc_tof<T>(tc_ldf(dx + i) + r * (g - mg - xhat * mgx));
    }
}

/* partial[k, c] = sum over rows of chunk k of dout * xhat (dw part) and, at
 * partial[nchunks + k, c], of dout (dbias part) */
template <typename T>
__global__ void ln_backward_params_partial_kernel(float *partial, const T *dout, const T *inp,
                                                  const float *mean, const float *rstd, int N,
                                                  int C, int rows_per_chunk, int nchunks) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const int r0 = blockIdx.y * rows_per_chunk;
    const int r1 = min(N, r0 + rows_per_chunk);
    float aw = 0.0f, ab = 0.0f;
    for (int r = r0; r < r1; r++) {
        float d = tc_ldf(dout + (size_t)r * C + c);
        aw += d * (tc_ldf(inp + (size_t)r * C + c) - mean[r]) * rstd[r];
        ab += d;
    }
    partial[(size_t)blockIdx.y * C + c] = aw;
    partial[(size_t)(nchunks + blockIdx.y) * C + c] = ab;
}

__global__ void ln_backward_params_final_kernel(float *dw, float *dbias, const float *partial,
                                                int nchunks, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float aw = 0.0f, ab = 0.0f;
    for (int k = 0; k < nchunks; k++) {
        aw += partial[(size_t)k * C + c];
        ab += partial[(size_t)(nchunks + k) * C + c];
    }
    if (dw) dw[c] += aw;
    if (dbias) dbias[c] += ab;
}

template <typename T>
static void launch_ln_forward(tc_cuda_backend *cu, tc_act *out, float *mean, float *rstd,
                              const tc_act *inp, const tc_act *w, const tc_act *bias, int N,
                              int C) {
    const unsigned grid = (unsigned)((N + LN_WARPS - 1) / LN_WARPS);
    ln_forward_kernel<T><<<grid, LN_WARPS * 32, 0, cu->stream>>>(
        (T *)out, mean, rstd, (const T *)inp, (const T *)w, (const T *)bias, N, C);
    tc_cuda_launched(cu, "layernorm_forward");
}

template <typename T>
static void launch_ln_backward(tc_cuda_backend *cu, tc_act *dinp, float *dw, float *dbias,
                               const tc_act *dout, const tc_act *inp, const tc_act *w,
                               const float *mean, const float *rstd, int N, int C) {
    if (dinp) {
        const unsigned grid = (unsigned)((N + LN_WARPS - 1) / LN_WARPS);
        ln_backward_dinp_kernel<T><<<grid, LN_WARPS * 32, 0, cu->stream>>>(
            (T *)dinp, (const T *)dout, (const T *)inp, (const T *)w, mean, rstd, N, C);
        if (!tc_cuda_launched(cu, "layernorm_backward dinp")) return;
    }
    if (!dw && !dbias) return;
    const int rpc = tc_cuda_rows_per_chunk(cu, N, C, 2);
    TC_CU_REQUIRE(cu, rpc > 0, "cuda layernorm_backward: C=%d too wide for the scratch", C);
    const int nchunks = tc_cuda_chunks(N, rpc);
    TC_CU_REQUIRE(cu, nchunks <= 65535, "cuda layernorm_backward: N=%d too many rows", N);
    float *partial = (float *)cu->scratch;
    dim3 grid((unsigned)((C + 255) / 256), (unsigned)nchunks);
    ln_backward_params_partial_kernel<T><<<grid, 256, 0, cu->stream>>>(
        partial, (const T *)dout, (const T *)inp, mean, rstd, N, C, rpc, nchunks);
    if (!tc_cuda_launched(cu, "layernorm_backward partials")) return;
    ln_backward_params_final_kernel<<<(C + 255) / 256, 256, 0, cu->stream>>>(dw, dbias, partial,
                                                                             nchunks, C);
    tc_cuda_launched(cu, "layernorm_backward final");
}

void tc_cuda_layernorm_forward(tc_backend *b, tc_act *out, float *mean, float *rstd,
                               const tc_act *inp, const tc_act *w, const tc_act *bias, int N,
                               int C) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, N >= 0 && C > 0, "cuda layernorm_forward: bad shape N=%d C=%d", N, C);
    TC_CU_REQUIRE(cu, w != NULL, "cuda layernorm_forward: weight is NULL");
    if (N == 0) return;
    TC_ACT_DISPATCH(cu, launch_ln_forward, cu, out, mean, rstd, inp, w, bias, N, C);
}

void tc_cuda_layernorm_backward(tc_backend *b, tc_act *dinp, float *dw, float *dbias,
                                const tc_act *dout, const tc_act *inp, const tc_act *w,
                                const float *mean, const float *rstd, int N, int C) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, N >= 0 && C > 0, "cuda layernorm_backward: bad shape N=%d C=%d", N, C);
    TC_CU_REQUIRE(cu, w != NULL && mean != NULL && rstd != NULL,
                  "cuda layernorm_backward: weight, mean and rstd are required");
    if (N == 0) return;
    TC_ACT_DISPATCH(cu, launch_ln_backward, cu, dinp, dw, dbias, dout, inp, w, mean, rstd, N, C);
}
