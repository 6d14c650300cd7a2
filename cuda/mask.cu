/* structured masks of automatic inheritance (docs/method.md §3.3), the CUDA
 * twins of engine/cpu/cpu_mask.c: column masks (hidden dims and MLP units
 * with group 1, whole heads with group HS) and the "compressed" LayerNorm
 * whose statistics cover the kept columns (mask != 0) only.
 *
 *   mask_cols_forward   out = x * z[c / group], elementwise (out may alias x)
 *   mask_cols_backward  dz[g] += sum over rows and the group's columns of
 *                       dout * x, then dx = dout * z[c / group]. the dz
 *                       kernels are queued before the dx kernel, so dx may
 *                       alias dout. dz, two passes, no atomics: (1) block
 *                       (256 columns, one chunk of rows) sums dout * x over
 *                       its rows in order into scratch; (2) one warp per
 *                       group: lane l takes the group's columns l, l+32, ...,
 *                       adds each column's chunk partials in chunk order, and
 *                       a fixed butterfly joins the lanes.
 *   layernorm_masked_forward   one warp per row: kept count, mean and
 *                       variance over the kept columns (fp32, two passes),
 *                       out = 0 in the other columns; mean/rstd saved.
 *   layernorm_masked_backward  dinp += rstd (g - mean(g) - xhat mean(g xhat))
 *                       on kept columns (means over the kept ones), one warp
 *                       per row; dw, dbias += per kept column, two passes as
 *                       layernorm.cu (chunk partials, then chunks in order).
 *                       an all-zero mask leaves every output untouched.
 * every partition depends only on (N, C, group), so the same inputs give the
 * same bits. the mask z is fp32 on the device. */
#include "cuda_internal.h"

#define MASK_THREADS 256
#define MASK_WARPS 8 /* rows (or groups) per block in the warp-per-row kernels */

__device__ __forceinline__ int warp_sum_int(int v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

/* ---- column masks ---- */

/* out (n = N*C elements) = x * z[c / group]; used for dx = dout * z too */
template <typename T>
__global__ void mask_cols_kernel(T *out, const T *x, const float *z, size_t n, int C, int group) {
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        const int c = (int)(e % (size_t)C);
        out[e] = tc_tof<T>(tc_ldf(x + e) * z[c / group]);
    }
}

/* partial[k, c] = sum over the rows of chunk k, in order, of dout * x */
template <typename T>
__global__ void mask_dz_partial_kernel(float *partial, const T *dout, const T *x, int N, int C,
                                       int rows_per_chunk) {
    const int c = blockIdx.x * MASK_THREADS + threadIdx.x;
    if (c >= C) return;
    const int r0 = blockIdx.y * rows_per_chunk;
    const int r1 = min(N, r0 + rows_per_chunk);
    float acc = 0.0f;
    for (int r = r0; r < r1; r++) {
        const size_t i = (size_t)r * C + c;
        acc += tc_ldf(dout + i) * tc_ldf(x + i);
    }
    partial[(size_t)blockIdx.y * C + c] = acc;
}

/* one warp per group: dz[g] += the group's columns' partials. the warp-wide
 * early return keeps every shuffle below on a full warp. */
__global__ void mask_dz_final_kernel(float *dz, const float *partial, int nchunks, int C,
                                     int group) {
    const int g = blockIdx.x * MASK_WARPS + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (g >= C / group) return;
    const int c0 = g * group, c1 = c0 + group;
    float acc = 0.0f;
    for (int c = c0 + lane; c < c1; c += 32)
        for (int k = 0; k < nchunks; k++)
            acc += partial[(size_t)k * C + c];
    acc = tc_warp_sum(acc);
    if (lane == 0) dz[g] += acc;
}

template <typename T>
static void launch_mask_cols_fwd(tc_cuda_backend *cu, tc_act *out, const tc_act *x, const float *z,
                                 int N, int C, int group) {
    const size_t n = (size_t)N * C;
    mask_cols_kernel<T><<<tc_cuda_grid(n, MASK_THREADS), MASK_THREADS, 0, cu->stream>>>(
        (T *)out, (const T *)x, z, n, C, group);
    tc_cuda_launched(cu, "mask_cols_forward");
}

template <typename T>
static void launch_mask_cols_bwd(tc_cuda_backend *cu, tc_act *dx, float *dz, const tc_act *dout,
                                 const tc_act *x, const float *z, int N, int C, int group) {
    if (dz) {
        /* before dx is written: dx may alias dout */
        const int rpc = tc_cuda_rows_per_chunk(cu, N, C, 1);
        TC_CU_REQUIRE(cu, rpc > 0, "cuda mask_cols_backward: C=%d too wide for the scratch", C);
        const int nchunks = tc_cuda_chunks(N, rpc);
        TC_CU_REQUIRE(cu, nchunks <= TC_CUDA_MAX_GRID_Y, "cuda mask_cols_backward: N=%d rows", N);
        float *partial = (float *)cu->scratch;
        dim3 grid((unsigned)((C + MASK_THREADS - 1) / MASK_THREADS), (unsigned)nchunks);
        mask_dz_partial_kernel<T><<<grid, MASK_THREADS, 0, cu->stream>>>(partial, (const T *)dout,
                                                                         (const T *)x, N, C, rpc);
        if (!tc_cuda_launched(cu, "mask_cols_backward dz partials")) return;
        const int groups = C / group;
        mask_dz_final_kernel<<<(groups + MASK_WARPS - 1) / MASK_WARPS, MASK_WARPS * 32, 0,
                               cu->stream>>>(dz, partial, nchunks, C, group);
        if (!tc_cuda_launched(cu, "mask_cols_backward dz final")) return;
    }
    if (!dx) return;
    const size_t n = (size_t)N * C;
    mask_cols_kernel<T><<<tc_cuda_grid(n, MASK_THREADS), MASK_THREADS, 0, cu->stream>>>(
        (T *)dx, (const T *)dout, z, n, C, group);
    tc_cuda_launched(cu, "mask_cols_backward dx");
}

void tc_cuda_mask_cols_forward(tc_backend *b, tc_act *out, const tc_act *x, const float *z, int N,
                               int C, int group) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, N >= 0 && C > 0 && group > 0 && C % group == 0,
                  "cuda mask_cols_forward: bad shape N=%d C=%d group=%d", N, C, group);
    TC_CU_REQUIRE(cu, z != NULL, "cuda mask_cols_forward: mask is NULL");
    if (N == 0) return;
    TC_ACT_DISPATCH(cu, launch_mask_cols_fwd, cu, out, x, z, N, C, group);
}

void tc_cuda_mask_cols_backward(tc_backend *b, tc_act *dx, float *dz, const tc_act *dout,
                                const tc_act *x, const float *z, int N, int C, int group) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, N >= 0 && C > 0 && group > 0 && C % group == 0,
                  "cuda mask_cols_backward: bad shape N=%d C=%d group=%d", N, C, group);
    TC_CU_REQUIRE(cu, z != NULL, "cuda mask_cols_backward: mask is NULL");
    if (N == 0) return;
    TC_ACT_DISPATCH(cu, launch_mask_cols_bwd, cu, dx, dz, dout, x, z, N, C, group);
}

/* ---- masked ("compressed") layernorm ---- */

/* kept columns of the mask, every lane of the warp gets the count */
__device__ __forceinline__ int kept_columns(const float *mask, int C, int lane) {
    int k = 0;
    for (int i = lane; i < C; i += 32)
        k += mask[i] != 0.0f;
    return warp_sum_int(k);
}

template <typename T>
__global__ void ln_masked_fwd_kernel(T *out, float *mean, float *rstd, const T *inp, const T *w,
                                     const T *bias, const float *mask, int N, int C) {
    const int row = blockIdx.x * MASK_WARPS + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return; /* whole warps: row is warp-uniform */
    const int kept = kept_columns(mask, C, lane);
    const T *x = inp + (size_t)row * C;
    float s = 0.0f;
    for (int i = lane; i < C; i += 32)
        if (mask[i] != 0.0f) s += tc_ldf(x + i);
    s = tc_warp_sum(s);
    const float m = kept ? s / (float)kept : 0.0f;
    float v = 0.0f;
    for (int i = lane; i < C; i += 32)
        if (mask[i] != 0.0f) {
            const float d = tc_ldf(x + i) - m;
            v += d * d;
        }
    v = tc_warp_sum(v);
    const float r = 1.0f / sqrtf((kept ? v / (float)kept : 0.0f) + 1e-5f);
    T *o = out + (size_t)row * C;
    for (int i = lane; i < C; i += 32) {
        float y = 0.0f;
        if (mask[i] != 0.0f) {
            y = (tc_ldf(x + i) - m) * r * tc_ldf(w + i);
            if (bias) y += tc_ldf(bias + i);
        }
        o[i] = tc_tof<T>(y);
    }
    if (lane == 0) {
        if (mean) mean[row] = m;
        if (rstd) rstd[row] = r;
    }
}

template <typename T>
__global__ void ln_masked_bwd_dinp_kernel(T *dinp, const T *dout, const T *inp, const T *w,
                                          const float *mean, const float *rstd, const float *mask,
                                          int N, int C) {
    const int row = blockIdx.x * MASK_WARPS + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return;
    const int kept = kept_columns(mask, C, lane);
    if (kept == 0) return; /* warp-uniform */
    const T *x = inp + (size_t)row * C;
    const T *dy = dout + (size_t)row * C;
    const float m = mean[row], r = rstd[row];
    float sg = 0.0f, sgx = 0.0f;
    for (int i = lane; i < C; i += 32) {
        if (mask[i] == 0.0f) continue;
        const float g = tc_ldf(dy + i) * tc_ldf(w + i);
        sg += g;
        sgx += g * ((tc_ldf(x + i) - m) * r);
    }
    const float mg = tc_warp_sum(sg) / (float)kept;
    const float mgx = tc_warp_sum(sgx) / (float)kept;
    T *dx = dinp + (size_t)row * C;
    for (int i = lane; i < C; i += 32) {
        if (mask[i] == 0.0f) continue;
        const float g = tc_ldf(dy + i) * tc_ldf(w + i);
        const float xhat = (tc_ldf(x + i) - m) * r;
        dx[i] = tc_tof<T>(tc_ldf(dx + i) + r * (g - mg - xhat * mgx));
    }
}

/* partial[k, c] = sum over the rows of chunk k of dout * xhat, and at
 * partial[nchunks + k, c] of dout; masked columns are skipped (never read) */
template <typename T>
__global__ void ln_masked_params_partial_kernel(float *partial, const T *dout, const T *inp,
                                                const float *mean, const float *rstd,
                                                const float *mask, int N, int C, int rows_per_chunk,
                                                int nchunks) {
    const int c = blockIdx.x * MASK_THREADS + threadIdx.x;
    if (c >= C || mask[c] == 0.0f) return;
    const int r0 = blockIdx.y * rows_per_chunk;
    const int r1 = min(N, r0 + rows_per_chunk);
    float aw = 0.0f, ab = 0.0f;
    for (int r = r0; r < r1; r++) {
        const float d = tc_ldf(dout + (size_t)r * C + c);
        aw += d * ((tc_ldf(inp + (size_t)r * C + c) - mean[r]) * rstd[r]);
        ab += d;
    }
    partial[(size_t)blockIdx.y * C + c] = aw;
    partial[(size_t)(nchunks + blockIdx.y) * C + c] = ab;
}

__global__ void ln_masked_params_final_kernel(float *dw, float *dbias, const float *partial,
                                              const float *mask, int nchunks, int C) {
    const int c = blockIdx.x * MASK_THREADS + threadIdx.x;
    if (c >= C || mask[c] == 0.0f) return;
    float aw = 0.0f, ab = 0.0f;
    for (int k = 0; k < nchunks; k++) {
        aw += partial[(size_t)k * C + c];
        ab += partial[(size_t)(nchunks + k) * C + c];
    }
    if (dw) dw[c] += aw;
    if (dbias) dbias[c] += ab;
}

template <typename T>
static void launch_ln_masked_fwd(tc_cuda_backend *cu, tc_act *out, float *mean, float *rstd,
                                 const tc_act *inp, const tc_act *w, const tc_act *bias,
                                 const float *mask, int N, int C) {
    const unsigned grid = (unsigned)((N + MASK_WARPS - 1) / MASK_WARPS);
    ln_masked_fwd_kernel<T><<<grid, MASK_WARPS * 32, 0, cu->stream>>>(
        (T *)out, mean, rstd, (const T *)inp, (const T *)w, (const T *)bias, mask, N, C);
    tc_cuda_launched(cu, "layernorm_masked_forward");
}

template <typename T>
static void launch_ln_masked_bwd(tc_cuda_backend *cu, tc_act *dinp, float *dw, float *dbias,
                                 const tc_act *dout, const tc_act *inp, const tc_act *w,
                                 const float *mean, const float *rstd, const float *mask, int N,
                                 int C) {
    if (dinp) {
        const unsigned grid = (unsigned)((N + MASK_WARPS - 1) / MASK_WARPS);
        ln_masked_bwd_dinp_kernel<T><<<grid, MASK_WARPS * 32, 0, cu->stream>>>(
            (T *)dinp, (const T *)dout, (const T *)inp, (const T *)w, mean, rstd, mask, N, C);
        if (!tc_cuda_launched(cu, "layernorm_masked_backward dinp")) return;
    }
    if (!dw && !dbias) return;
    const int rpc = tc_cuda_rows_per_chunk(cu, N, C, 2);
    TC_CU_REQUIRE(cu, rpc > 0, "cuda layernorm_masked_backward: C=%d too wide for the scratch", C);
    const int nchunks = tc_cuda_chunks(N, rpc);
    TC_CU_REQUIRE(cu, nchunks <= TC_CUDA_MAX_GRID_Y, "cuda layernorm_masked_backward: N=%d rows",
                  N);
    float *partial = (float *)cu->scratch;
    dim3 grid((unsigned)((C + MASK_THREADS - 1) / MASK_THREADS), (unsigned)nchunks);
    ln_masked_params_partial_kernel<T><<<grid, MASK_THREADS, 0, cu->stream>>>(
        partial, (const T *)dout, (const T *)inp, mean, rstd, mask, N, C, rpc, nchunks);
    if (!tc_cuda_launched(cu, "layernorm_masked_backward partials")) return;
    ln_masked_params_final_kernel<<<(C + MASK_THREADS - 1) / MASK_THREADS, MASK_THREADS, 0,
                                    cu->stream>>>(dw, dbias, partial, mask, nchunks, C);
    tc_cuda_launched(cu, "layernorm_masked_backward final");
}

void tc_cuda_layernorm_masked_forward(tc_backend *b, tc_act *out, float *mean, float *rstd,
                                      const tc_act *inp, const tc_act *w, const tc_act *bias,
                                      const float *mask, int N, int C) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, N >= 0 && C > 0, "cuda layernorm_masked_forward: bad shape N=%d C=%d", N, C);
    TC_CU_REQUIRE(cu, w != NULL && mask != NULL,
                  "cuda layernorm_masked_forward: weight and mask are required");
    if (N == 0) return;
    TC_ACT_DISPATCH(cu, launch_ln_masked_fwd, cu, out, mean, rstd, inp, w, bias, mask, N, C);
}

void tc_cuda_layernorm_masked_backward(tc_backend *b, tc_act *dinp, float *dw, float *dbias,
                                       const tc_act *dout, const tc_act *inp, const tc_act *w,
                                       const float *mean, const float *rstd, const float *mask,
                                       int N, int C) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, N >= 0 && C > 0, "cuda layernorm_masked_backward: bad shape N=%d C=%d", N, C);
    TC_CU_REQUIRE(cu, w != NULL && mean != NULL && rstd != NULL && mask != NULL,
                  "cuda layernorm_masked_backward: weight, mean, rstd and mask are required");
    if (N == 0) return;
    TC_ACT_DISPATCH(cu, launch_ln_masked_bwd, cu, dinp, dw, dbias, dout, inp, w, mean, rstd, mask,
                    N, C);
}
