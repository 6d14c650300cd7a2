/* feature L2 normalisation and the fused softmax cross-entropy rows of the
 * CLIP / affinity losses. fp32 in and out; sums inside a row run in double
 * (the rows are short next to the GEMMs, and the loss is a difference of
 * log-sum-exps near 100 that fp32 would round visibly).
 *
 * softmax_xent_rows, one fused kernel per call (one block per row, nothing
 * but dsim and two scalars per row reaches global memory):
 *   pass 1  online max / sum over the row for the student logits
 *           z = exp(log_scale) sim and, when soft targets are on, for the
 *           teacher logits; per-thread (m, s) pairs are merged in a fixed
 *           shuffle tree, then across warps in order: lse, teacher lse.
 *   pass 2  recompute p_j = exp(z_j - lse) and t_j = exp(zt_j - tlse), write
 *           dsim_j = exp(log_scale) dz_j with
 *           dz_j = (w_hard (p_j - [j = label]) + w_soft (p_j sum(t) - t_j)) / n,
 *           and sum the row's soft CE -sum t_j log p_j, sum(t) and sum dz_j z_j.
 *   the row writes its loss and dlog_scale terms to the scratch; a second
 *   one-block kernel sums the rows in row order and adds to loss[0] and
 *   dlog_scale[0]. no atomics: the same inputs give the same bits. */
#include <math.h>

#include "cuda_internal.h"

#define L2_EPS 1e-12f
#define XENT_THREADS 256

/* ---- l2norm: one warp per row ---- */
template <typename T>
__global__ void l2norm_fwd_kernel(float *out, float *norm, const T *inp, int N, int C) {
    const int row = blockIdx.x * 8 + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return;
    const T *x = inp + (size_t)row * C;
    double ss = 0.0;
    for (int c = lane; c < C; c += 32) {
        double v = tc_ldf(x + c);
        ss += v * v;
    }
    ss = tc_warp_sum_d(ss);
    const float nr = (float)sqrt(ss);
    const float den = nr > L2_EPS ? nr : L2_EPS;
    float *o = out + (size_t)row * C;
    for (int c = lane; c < C; c += 32)
        o[c] = tc_ldf(x + c) / den;
    if (lane == 0 && norm) norm[row] = nr;
}

template <typename T>
__global__ void l2norm_bwd_kernel(T *dinp, const float *dout, const float *out, const float *norm,
                                  int N, int C) {
    const int row = blockIdx.x * 8 + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return;
    const float *dy = dout + (size_t)row * C, *o = out + (size_t)row * C;
    T *dx = dinp + (size_t)row * C;
    const float nr = norm[row];
    if (nr < L2_EPS) { /* the clamp is active: the denominator is the constant eps */
        for (int c = lane; c < C; c += 32)
            dx[c] = tc_tof<T>(dy[c] / L2_EPS);
        return;
    }
    double dot = 0.0;
    for (int c = lane; c < C; c += 32)
        dot += (double)o[c] * dy[c];
    const float d = (float)tc_warp_sum_d(dot);
    for (int c = lane; c < C; c += 32)
        dx[c] = tc_tof<T>((dy[c] - o[c] * d) / nr);
}

template <typename T>
static void launch_l2norm_fwd(tc_cuda_backend *cu, float *out, float *norm, const tc_act *inp,
                              int N, int C) {
    l2norm_fwd_kernel<T><<<(N + 7) / 8, 256, 0, cu->stream>>>(out, norm, (const T *)inp, N, C);
    tc_cuda_launched(cu, "l2norm_forward");
}

template <typename T>
static void launch_l2norm_bwd(tc_cuda_backend *cu, tc_act *dinp, const float *dout,
                              const float *out, const float *norm, int N, int C) {
    l2norm_bwd_kernel<T><<<(N + 7) / 8, 256, 0, cu->stream>>>((T *)dinp, dout, out, norm, N, C);
    tc_cuda_launched(cu, "l2norm_backward");
}

void tc_cuda_l2norm_forward(tc_backend *b, float *out, float *norm, const tc_act *inp, int N,
                            int C) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, N >= 0 && C > 0, "cuda l2norm_forward: bad shape N=%d C=%d", N, C);
    if (N == 0) return;
    TC_ACT_DISPATCH(cu, launch_l2norm_fwd, cu, out, norm, inp, N, C);
}

void tc_cuda_l2norm_backward(tc_backend *b, tc_act *dinp, const float *dout, const float *out,
                             const float *norm, int N, int C) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, N >= 0 && C > 0, "cuda l2norm_backward: bad shape N=%d C=%d", N, C);
    TC_CU_REQUIRE(cu, norm != NULL, "cuda l2norm_backward: norm is NULL");
    if (N == 0) return;
    TC_ACT_DISPATCH(cu, launch_l2norm_bwd, cu, dinp, dout, out, norm, N, C);
}

/* ---- softmax cross-entropy rows ---- */

/* merges the log-sum-exp state (m2, s2) into (m, s): s holds sum exp(z - m) */
__device__ __forceinline__ void lse_merge(double &m, double &s, double m2, double s2) {
    if (m2 == -INFINITY) return;
    if (m == -INFINITY) {
        m = m2;
        s = s2;
        return;
    }
    const double M = fmax(m, m2);
    s = s * exp(m - M) + s2 * exp(m2 - M);
    m = M;
}

/* block-wide merge in a fixed order; every thread gets the result */
__device__ void block_lse(double &m, double &s, double *sh_m, double *sh_s) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        double m2 = __shfl_xor_sync(0xffffffffu, m, off);
        double s2 = __shfl_xor_sync(0xffffffffu, s, off);
        lse_merge(m, s, m2, s2);
    }
    __syncthreads();
    if (lane == 0) {
        sh_m[warp] = m;
        sh_s[warp] = s;
    }
    __syncthreads();
    double M = -INFINITY, S = 0.0;
    for (int w = 0; w < nw; w++)
        lse_merge(M, S, sh_m[w], sh_s[w]);
    m = M;
    s = S;
}

__device__ double block_sum_d(double v, double *sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = tc_warp_sum_d(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    double t = 0.0;
    for (int w = 0; w < nw; w++)
        t += sh[w];
    return t;
}

/* row_terms[2 i] = loss term of row i (divided by n in the finish kernel),
 * row_terms[2 i + 1] = sum_j dz_j z_j (dz already carries the 1/n) */
__global__ void __launch_bounds__(XENT_THREADS)
    softmax_xent_rows_kernel(double *row_terms, float *dsim, const float *sim,
                             const float *teacher_sim, const float *log_scale,
                             const float *teacher_log_scale, int n, int Ncols, int label_offset,
                             float w_hard, float w_soft, int soft) {
    __shared__ double sh_a[32], sh_b[32];
    const int i = blockIdx.x;
    /* exp in double, rounded once: the correctly rounded scale, as glibc's expf
     * gives the CPU backend (CUDA's expf may differ by an ulp, which moves
     * every logit near 100 by ~4e-6) */
    const float s = (float)exp((double)log_scale[0]);
    const float ts = soft ? (float)exp((double)teacher_log_scale[0]) : 0.0f;
    const float *sr = sim + (size_t)i * Ncols;
    const float *tr = soft ? teacher_sim + (size_t)i * Ncols : NULL;
    float *dr = dsim + (size_t)i * Ncols;
    const int label = label_offset + i;
    const int hard = w_hard != 0.0f && label >= 0 && label < Ncols;
    const double inv_n = 1.0 / n;

    /* pass 1: student and teacher log-sum-exp */
    double m = -INFINITY, se = 0.0, tm = -INFINITY, tse = 0.0;
    for (int j = threadIdx.x; j < Ncols; j += XENT_THREADS) {
        const double z = (double)(s * sr[j]);
        if (z > m) {
            se = se * exp(m - z) + 1.0;
            m = z;
        } else {
            se += exp(z - m);
        }
        if (soft) {
            const double zt = (double)(ts * tr[j]);
            if (zt > tm) {
                tse = tse * exp(tm - zt) + 1.0;
                tm = zt;
            } else {
                tse += exp(zt - tm);
            }
        }
    }
    /* the hard-label logit is read before the barriers of block_lse, so before
     * any thread writes dsim: dsim may alias sim (as the CPU backend allows),
     * and a store to dr[label] would otherwise change this row's loss */
    const double z_label = hard ? (double)(s * sr[label]) : 0.0;
    block_lse(m, se, sh_a, sh_b);
    const double lse = m + log(se);
    double tlse = 0.0;
    if (soft) {
        block_lse(tm, tse, sh_a, sh_b);
        tlse = tm + log(tse);
    }

    /* pass 2: teacher mass sum(t) first (it scales p in dz), then the gradient */
    double tsum = 0.0;
    if (soft) {
        double acc = 0.0;
        for (int j = threadIdx.x; j < Ncols; j += XENT_THREADS)
            acc += exp((double)(ts * tr[j]) - tlse);
        tsum = block_sum_d(acc, sh_a);
    }
    double soft_ce = 0.0, dls = 0.0;
    for (int j = threadIdx.x; j < Ncols; j += XENT_THREADS) {
        const double z = (double)(s * sr[j]);
        const double logp = z - lse, p = exp(logp);
        double dz = 0.0;
        if (hard) dz += w_hard * (p - (j == label ? 1.0 : 0.0));
        if (soft) {
            const double t = exp((double)(ts * tr[j]) - tlse);
            soft_ce -= t * logp;
            dz += w_soft * (p * tsum - t);
        }
        dz *= inv_n;
        dr[j] = (float)(s * dz);
        dls += dz * z;
    }
    soft_ce = block_sum_d(soft_ce, sh_a);
    dls = block_sum_d(dls, sh_b);
    if (threadIdx.x == 0) {
        double row_loss = 0.0;
        if (hard) row_loss += w_hard * (lse - z_label);
        if (soft) row_loss += w_soft * soft_ce;
        row_terms[2 * (size_t)i] = row_loss;
        row_terms[2 * (size_t)i + 1] = dls;
    }
}

/* one block: thread t sums rows t, t+256, ... in order, then a fixed tree */
__global__ void softmax_xent_finish_kernel(float *loss, float *dlog_scale, const double *row_terms,
                                           int n) {
    __shared__ double sh[32];
    double a = 0.0, d = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        a += row_terms[2 * (size_t)i];
        d += row_terms[2 * (size_t)i + 1];
    }
    a = block_sum_d(a, sh);
    d = block_sum_d(d, sh);
    if (threadIdx.x == 0) {
        if (loss) loss[0] += (float)(a / n);
        if (dlog_scale) dlog_scale[0] += (float)d;
    }
}

void tc_cuda_softmax_xent_rows(tc_backend *b, float *loss, float *dsim, float *dlog_scale,
                               const float *sim, const float *teacher_sim, const float *log_scale,
                               const float *teacher_log_scale, int n, int Ncols, int label_offset,
                               float w_hard, float w_soft) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, n >= 0 && Ncols >= 0, "cuda softmax_xent_rows: bad shape n=%d Ncols=%d", n,
                  Ncols);
    if (n == 0 || Ncols == 0) return;
    TC_CU_REQUIRE(cu, log_scale != NULL && dsim != NULL && sim != NULL,
                  "cuda softmax_xent_rows: sim, dsim and log_scale are required");
    TC_CU_REQUIRE(cu, w_hard == 0.0f || (label_offset >= 0 && (int64_t)label_offset + n <= Ncols),
                  "cuda softmax_xent_rows: labels %d..%d outside %d columns", label_offset,
                  label_offset + n - 1, Ncols);
    TC_CU_REQUIRE(cu, (size_t)n * 2 * sizeof(double) <= cu->scratch_bytes,
                  "cuda softmax_xent_rows: %d rows do not fit the scratch", n);
    const int soft = teacher_sim != NULL && teacher_log_scale != NULL && w_soft != 0.0f;
    double *row_terms = (double *)cu->scratch;
    softmax_xent_rows_kernel<<<(unsigned)n, XENT_THREADS, 0, cu->stream>>>(
        row_terms, dsim, sim, teacher_sim, log_scale, teacher_log_scale, n, Ncols, label_offset,
        w_hard, w_soft, soft);
    if (!tc_cuda_launched(cu, "softmax_xent_rows")) return;
    softmax_xent_finish_kernel<<<1, 256, 0, cu->stream>>>(loss, dlog_scale, row_terms, n);
    tc_cuda_launched(cu, "softmax_xent_rows finish");
}
