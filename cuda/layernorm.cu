/* layernorm forward and backward over the last dim C of N rows, eps 1e-5,
 * and the residual add fused with the layernorm that reads its sum.
 *
 * every kernel has a 16-byte vector path (4 fp32 or 8 bf16 per access; when
 * a row is a whole number of vectors and every operand is 16-byte aligned,
 * checked per call) and a scalar path, one template body for both.
 *
 * forward: one warp per row. the statistics take one pass over the row:
 * each lane folds its elements, a vector at a time, into (count, mean, M2)
 * (welford.h: the vector's own mean and squared deviations, then Chan's
 * merge; Welford's update on the scalar path), and the lanes merge in a
 * fixed tree to lane 0 (fp32; no sum / sum-of-squares cancellation when
 * |mean| >> std, as in the residual stream's outlier dimensions). a second
 * pass, over the row just read (in L1/L2), writes (x - mean) rstd w + bias.
 * mean and rstd are saved for the backward.
 *
 * residual + layernorm: res = x + y (rounded to the activation type, as the
 * add op stores it) is written in the first pass and its statistics folded
 * there; the second pass normalises the row this lane has just written, so
 * the result equals add followed by layernorm_forward.
 *
 * backward, three kernels, no atomics:
 *   dinp  one warp per row: dinp += rstd * (g - mean(g) - xhat * mean(g*xhat)),
 *         g = dout * w, xhat = (x - mean) * rstd (one pass for both sums,
 *         one to write)
 *   dw/dbias partials: a thread owns one vector of columns and sums
 *         dout*xhat and dout over the rows of one chunk, in order, into
 *         scratch
 *   final: one thread per column adds the chunk partials in chunk order
 * so the result depends only on (N, C) and the path, never on scheduling.
 * the dw/dbias partials are the same operations on both paths; the row
 * statistics and the dinp sums group their terms by lane and vector, so the
 * two paths differ there by rounding only. */
#include "cuda_internal.h"
#include "vec_io.cuh"
#include "welford.h"

#define LN_WARPS 8

/* merges every lane's statistics into lane 0 in a fixed tree, then gives
 * lane 0's to the whole warp (the merge is not symmetric in rounding, so a
 * butterfly would leave the lanes with different bits) */
__device__ __forceinline__ void welford_warp(float &n, float &mean, float &m2) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        const float nb = __shfl_down_sync(0xffffffffu, n, off);
        const float mb = __shfl_down_sync(0xffffffffu, mean, off);
        const float qb = __shfl_down_sync(0xffffffffu, m2, off);
        tc_welford_merge(&n, &mean, &m2, nb, mb, qb);
    }
    n = __shfl_sync(0xffffffffu, n, 0);
    mean = __shfl_sync(0xffffffffu, mean, 0);
    m2 = __shfl_sync(0xffffffffu, m2, 0);
}

/* out = (x - m) r w + bias over this lane's vectors of one row */
template <typename T, int V>
__device__ __forceinline__ void ln_write_row(T *out, const T *x, const T *w, const T *bias, float m,
                                             float r, int C, int lane) {
    for (int i = lane * V; i < C; i += 32 * V) {
        float xv[V], wv[V], bv[V] = {}, o[V];
        tc_ldv<V>(xv, x + i);
        tc_ldv<V>(wv, w + i);
        if (bias) tc_ldv<V>(bv, bias + i);
#pragma unroll
        for (int k = 0; k < V; k++) {
            float y = (xv[k] - m) * r * wv[k];
            if (bias) y += bv[k];
            o[k] = y;
        }
        tc_stv<V>(out + i, o);
    }
}

template <typename T, int V>
__global__ void ln_forward_kernel(T *out, float *mean, float *rstd, const T *inp, const T *w,
                                  const T *bias, int N, int C) {
    const int row = blockIdx.x * LN_WARPS + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return; /* the whole warp: row is the same for its lanes */
    const T *x = inp + (size_t)row * C;
    float n = 0.0f, m = 0.0f, m2 = 0.0f;
    for (int i = lane * V; i < C; i += 32 * V) {
        float f[V];
        tc_ldv<V>(f, x + i);
        tc_welford_add(&n, &m, &m2, f, V);
    }
    welford_warp(n, m, m2);
    const float r = 1.0f / sqrtf(m2 / (float)C + 1e-5f);
    ln_write_row<T, V>(out + (size_t)row * C, x, w, bias, m, r, C, lane);
    if (lane == 0) {
        if (mean) mean[row] = m;
        if (rstd) rstd[row] = r;
    }
}

/* res = x + y as stored, then out = layernorm(res); res may alias x or y
 * (each element is read before it is written, by the same lane) */
template <typename T, int V>
__global__ void residual_ln_forward_kernel(T *res, T *out, float *mean, float *rstd, const T *x,
                                           const T *y, const T *w, const T *bias, int N, int C) {
    const int row = blockIdx.x * LN_WARPS + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return;
    const size_t off = (size_t)row * C;
    float n = 0.0f, m = 0.0f, m2 = 0.0f;
    for (int i = lane * V; i < C; i += 32 * V) {
        float a[V], b[V];
        tc_ldv<V>(a, x + off + i);
        tc_ldv<V>(b, y + off + i);
#pragma unroll
        for (int k = 0; k < V; k++)
            a[k] = tc_round_act<T>(a[k] + b[k]);
        tc_stv<V>(res + off + i, a);
        tc_welford_add(&n, &m, &m2, a, V);
    }
    welford_warp(n, m, m2);
    const float r = 1.0f / sqrtf(m2 / (float)C + 1e-5f);
    /* reads back the elements this lane wrote above: its own stores */
    ln_write_row<T, V>(out + off, res + off, w, bias, m, r, C, lane);
    if (lane == 0) {
        if (mean) mean[row] = m;
        if (rstd) rstd[row] = r;
    }
}

/* g = dout w and xhat = (x - m) r of the V columns at i of one row */
template <typename T, int V>
__device__ __forceinline__ void ln_g_xhat(float *g, float *xhat, const T *dy, const T *x,
                                          const T *w, int i, float m, float r) {
    float dyv[V], xv[V], wv[V];
    tc_ldv<V>(dyv, dy + i);
    tc_ldv<V>(xv, x + i);
    tc_ldv<V>(wv, w + i);
#pragma unroll
    for (int k = 0; k < V; k++) {
        g[k] = dyv[k] * wv[k];
        xhat[k] = (xv[k] - m) * r;
    }
}

template <typename T, int V>
__global__ void ln_backward_dinp_kernel(T *dinp, const T *dout, const T *inp, const T *w,
                                        const float *mean, const float *rstd, int N, int C) {
    const int row = blockIdx.x * LN_WARPS + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return;
    const T *x = inp + (size_t)row * C;
    const T *dy = dout + (size_t)row * C;
    T *dx = dinp + (size_t)row * C;
    const float m = mean[row], r = rstd[row];
    float sg = 0.0f, sgx = 0.0f;
    for (int i = lane * V; i < C; i += 32 * V) {
        float g[V], xhat[V];
        ln_g_xhat<T, V>(g, xhat, dy, x, w, i, m, r);
#pragma unroll
        for (int k = 0; k < V; k++) {
            sg += g[k];
            sgx += g[k] * xhat[k];
        }
    }
    const float mg = tc_warp_sum(sg) / (float)C;
    const float mgx = tc_warp_sum(sgx) / (float)C;
    for (int i = lane * V; i < C; i += 32 * V) {
        float g[V], xhat[V], dxv[V];
        ln_g_xhat<T, V>(g, xhat, dy, x, w, i, m, r);
        tc_ldv<V>(dxv, dx + i);
#pragma unroll
        for (int k = 0; k < V; k++)
            dxv[k] = dxv[k] + r * (g[k] - mg - xhat[k] * mgx);
        tc_stv<V>(dx + i, dxv);
    }
}

/* partial[k, c] = sum over rows of chunk k of dout * xhat (dw part) and, at
 * partial[nchunks + k, c], of dout (dbias part); a thread owns columns
 * c..c+V-1 */
template <typename T, int V>
__global__ void ln_backward_params_partial_kernel(float *partial, const T *dout, const T *inp,
                                                  const float *mean, const float *rstd, int N,
                                                  int C, int rows_per_chunk, int nchunks) {
    const int c = (blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (c >= C) return;
    const int r0 = blockIdx.y * rows_per_chunk;
    const int r1 = min(N, r0 + rows_per_chunk);
    float aw[V], ab[V];
#pragma unroll
    for (int k = 0; k < V; k++)
        aw[k] = ab[k] = 0.0f;
    for (int r = r0; r < r1; r++) {
        float d[V], xv[V];
        tc_ldv<V>(d, dout + (size_t)r * C + c);
        tc_ldv<V>(xv, inp + (size_t)r * C + c);
        const float m = mean[r], rs = rstd[r];
#pragma unroll
        for (int k = 0; k < V; k++) {
            aw[k] += d[k] * (xv[k] - m) * rs;
            ab[k] += d[k];
        }
    }
#pragma unroll
    for (int k = 0; k < V; k++) {
        partial[(size_t)blockIdx.y * C + c + k] = aw[k];
        partial[(size_t)(nchunks + blockIdx.y) * C + c + k] = ab[k];
    }
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

static unsigned ln_row_grid(int N) {
    return (unsigned)((N + LN_WARPS - 1) / LN_WARPS);
}

template <typename T, int V>
static void launch_ln_forward(tc_cuda_backend *cu, tc_act *out, float *mean, float *rstd,
                              const tc_act *inp, const tc_act *w, const tc_act *bias, int N,
                              int C) {
    ln_forward_kernel<T, V><<<ln_row_grid(N), LN_WARPS * 32, 0, cu->stream>>>(
        (T *)out, mean, rstd, (const T *)inp, (const T *)w, (const T *)bias, N, C);
    tc_cuda_launched(cu, "layernorm_forward");
}

template <typename T, int V>
static void launch_residual_ln_forward(tc_cuda_backend *cu, tc_act *res, tc_act *out, float *mean,
                                       float *rstd, const tc_act *x, const tc_act *y,
                                       const tc_act *w, const tc_act *bias, int N, int C) {
    residual_ln_forward_kernel<T, V><<<ln_row_grid(N), LN_WARPS * 32, 0, cu->stream>>>(
        (T *)res, (T *)out, mean, rstd, (const T *)x, (const T *)y, (const T *)w, (const T *)bias,
        N, C);
    tc_cuda_launched(cu, "residual_layernorm_forward");
}

template <typename T, int V>
static void launch_ln_backward(tc_cuda_backend *cu, tc_act *dinp, float *dw, float *dbias,
                               const tc_act *dout, const tc_act *inp, const tc_act *w,
                               const float *mean, const float *rstd, int N, int C) {
    if (dinp) {
        ln_backward_dinp_kernel<T, V><<<ln_row_grid(N), LN_WARPS * 32, 0, cu->stream>>>(
            (T *)dinp, (const T *)dout, (const T *)inp, (const T *)w, mean, rstd, N, C);
        if (!tc_cuda_launched(cu, "layernorm_backward dinp")) return;
    }
    if (!dw && !dbias) return;
    const int rpc = tc_cuda_rows_per_chunk(cu, N, C, 2);
    TC_CU_REQUIRE(cu, rpc > 0, "cuda layernorm_backward: C=%d too wide for the scratch", C);
    const int nchunks = tc_cuda_chunks(N, rpc);
    TC_CU_REQUIRE(cu, nchunks <= 65535, "cuda layernorm_backward: N=%d too many rows", N);
    float *partial = (float *)cu->scratch;
    const int units = C / V; /* V divides C on the vector path */
    const int threads = tc_cuda_col_threads(units);
    dim3 grid((unsigned)((units + threads - 1) / threads), (unsigned)nchunks);
    ln_backward_params_partial_kernel<T, V><<<grid, threads, 0, cu->stream>>>(
        partial, (const T *)dout, (const T *)inp, mean, rstd, N, C, rpc, nchunks);
    if (!tc_cuda_launched(cu, "layernorm_backward partials")) return;
    ln_backward_params_final_kernel<<<(C + 255) / 256, 256, 0, cu->stream>>>(dw, dbias, partial,
                                                                             nchunks, C);
    tc_cuda_launched(cu, "layernorm_backward final");
}

/* the 16-byte path for rows of C activations at these addresses */
static bool ln_vec(const tc_cuda_backend *cu, int C, const void *a, const void *b, const void *c,
                   const void *d, const void *e = NULL, const void *f = NULL) {
    const void *ptrs[6] = {a, b, c, d, e, f};
    return tc_cuda_rows_vectorizable(C, cu->base.act_bytes, ptrs, 6) != 0;
}

void tc_cuda_layernorm_forward(tc_backend *b, tc_act *out, float *mean, float *rstd,
                               const tc_act *inp, const tc_act *w, const tc_act *bias, int N,
                               int C) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, N >= 0 && C > 0, "cuda layernorm_forward: bad shape N=%d C=%d", N, C);
    TC_CU_REQUIRE(cu, w != NULL, "cuda layernorm_forward: weight is NULL");
    if (N == 0) return;
    const bool vec = ln_vec(cu, C, out, inp, w, bias);
    TC_ACT_VEC_DISPATCH(cu, vec, launch_ln_forward, cu, out, mean, rstd, inp, w, bias, N, C);
}

void tc_cuda_residual_layernorm_forward(tc_backend *b, tc_act *res, tc_act *out, float *mean,
                                        float *rstd, const tc_act *x, const tc_act *y,
                                        const tc_act *w, const tc_act *bias, int N, int C) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, N >= 0 && C > 0, "cuda residual_layernorm_forward: bad shape N=%d C=%d", N,
                  C);
    TC_CU_REQUIRE(cu, w != NULL, "cuda residual_layernorm_forward: weight is NULL");
    if (N == 0) return;
    const bool vec = ln_vec(cu, C, res, out, x, y, w, bias);
    TC_ACT_VEC_DISPATCH(cu, vec, launch_residual_ln_forward, cu, res, out, mean, rstd, x, y, w,
                        bias, N, C);
}

void tc_cuda_layernorm_backward(tc_backend *b, tc_act *dinp, float *dw, float *dbias,
                                const tc_act *dout, const tc_act *inp, const tc_act *w,
                                const float *mean, const float *rstd, int N, int C) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, N >= 0 && C > 0, "cuda layernorm_backward: bad shape N=%d C=%d", N, C);
    TC_CU_REQUIRE(cu, w != NULL && mean != NULL && rstd != NULL,
                  "cuda layernorm_backward: weight, mean and rstd are required");
    if (N == 0) return;
    const bool vec = ln_vec(cu, C, dinp, dout, inp, w);
    TC_ACT_VEC_DISPATCH(cu, vec, launch_ln_backward, cu, dinp, dw, dbias, dout, inp, w, mean, rstd,
                        N, C);
}
