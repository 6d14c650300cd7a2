/* the ResNet towers' attention pool: its tokens, and the attention of the
 * mean token's query over all tokens.
 *
 * tokens: one thread per (sample, channel): the channel's HW pixels in order
 * (the mean token is their sum in that order, as the CPU's), written as
 * tokens (B, HW+1, D), adjacent threads on adjacent channels. the backward's
 * positional gradient: one thread per (token, channel), the samples in order.
 *
 * attention_query: one block of 4 warps per (sample, head); T is small
 * (image_size/32 squared + 1: 50 at 224 px). the T scores go to shared
 * memory, a warp per key: the lanes split the head's HS dims and a fixed
 * butterfly sums them. max and sum of the exponentials are fixed-pattern
 * block reductions; each output dim is one thread's sum over the keys in
 * order. the backward recomputes the probabilities from lse, forms
 * dS_j = P_j (dout.v_j - dout.out) / sqrt(HS) per key, then dv, dk (one
 * thread per element) and dq (one thread per dim, the keys in order). no
 * atomics: the same bits every run. */
#include <math.h>

#include "cuda_internal.h"

#define TOK_THREADS 256
#define AQ_THREADS 128
#define AQ_WARPS (AQ_THREADS / 32)

template <typename T>
__global__ void tokens_forward_kernel(T *x, const T *feat, const T *pos, int B, int D, int HW) {
    const size_t n = (size_t)B * D;
    const int Tn = HW + 1;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        const size_t bb = e / D;
        const int d = (int)(e % D);
        const T *plane = feat + e * HW;
        T *tok = x + bb * Tn * D + d;
        float s = 0.0f;
        for (int p = 0; p < HW; p++) {
            const float v = tc_ldf(plane + p);
            s += v;
            tok[(size_t)(p + 1) * D] = tc_tof<T>(v + tc_ldf(pos + (size_t)(p + 1) * D + d));
        }
        tok[0] = tc_tof<T>(s / (float)HW + tc_ldf(pos + d));
    }
}

template <typename T>
__global__ void tokens_backward_feat_kernel(T *dfeat, const T *dx, int B, int D, int HW) {
    const size_t n = (size_t)B * D;
    const int Tn = HW + 1;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        const size_t bb = e / D;
        const int d = (int)(e % D);
        const T *tok = dx + bb * Tn * D + d;
        const float m = tc_ldf(tok) / (float)HW;
        T *plane = dfeat + e * HW;
        for (int p = 0; p < HW; p++)
            plane[p] = tc_tof<T>(tc_ldf(tok + (size_t)(p + 1) * D) + m);
    }
}

template <typename T>
__global__ void tokens_backward_pos_kernel(float *dpos, const T *dx, int B, int D, int Tn) {
    const size_t n = (size_t)Tn * D;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        float s = dpos[e];
        for (int bb = 0; bb < B; bb++)
            s += tc_ldf(dx + (size_t)bb * n + e);
        dpos[e] = s;
    }
}

template <typename T>
static void launch_tokens_forward(tc_cuda_backend *cu, tc_act *x, const tc_act *feat,
                                  const tc_act *pos, int B, int D, int HW) {
    const size_t n = (size_t)B * D;
    tokens_forward_kernel<T><<<tc_cuda_grid(n, TOK_THREADS), TOK_THREADS, 0, cu->stream>>>(
        (T *)x, (const T *)feat, (const T *)pos, B, D, HW);
    tc_cuda_launched(cu, "attnpool_tokens_forward");
}

template <typename T>
static void launch_tokens_backward(tc_cuda_backend *cu, tc_act *dfeat, float *dpos,
                                   const tc_act *dx, int B, int D, int HW) {
    const size_t n = (size_t)B * D, np = (size_t)(HW + 1) * D;
    tokens_backward_feat_kernel<T><<<tc_cuda_grid(n, TOK_THREADS), TOK_THREADS, 0, cu->stream>>>(
        (T *)dfeat, (const T *)dx, B, D, HW);
    if (!tc_cuda_launched(cu, "attnpool_tokens_backward (feat)")) return;
    tokens_backward_pos_kernel<T><<<tc_cuda_grid(np, TOK_THREADS), TOK_THREADS, 0, cu->stream>>>(
        dpos, (const T *)dx, B, D, HW + 1);
    tc_cuda_launched(cu, "attnpool_tokens_backward (pos)");
}

void tc_cuda_attnpool_tokens_forward(tc_backend *b, tc_act *x, const tc_act *feat,
                                     const tc_act *pos, int B, int D, int HW) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, B >= 0 && D >= 0 && HW >= 1,
                  "cuda attnpool_tokens_forward: bad shape B=%d D=%d HW=%d", B, D, HW);
    if (B == 0 || D == 0) return;
    TC_ACT_DISPATCH(cu, launch_tokens_forward, cu, x, feat, pos, B, D, HW);
}

void tc_cuda_attnpool_tokens_backward(tc_backend *b, tc_act *dfeat, float *dpos, const tc_act *dx,
                                      int B, int D, int HW) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, B >= 0 && D >= 0 && HW >= 1,
                  "cuda attnpool_tokens_backward: bad shape B=%d D=%d HW=%d", B, D, HW);
    if (B == 0 || D == 0) return;
    TC_ACT_DISPATCH(cu, launch_tokens_backward, cu, dfeat, dpos, dx, B, D, HW);
}

/* ---- one-query attention ---- */

/* deterministic block max / sum over AQ_THREADS values; sh holds AQ_WARPS + 1 */
__device__ __forceinline__ float aq_block_max(float v, float *sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        float m = sh[0];
        for (int w = 1; w < AQ_WARPS; w++)
            m = fmaxf(m, sh[w]);
        sh[AQ_WARPS] = m;
    }
    __syncthreads();
    return sh[AQ_WARPS];
}

__device__ __forceinline__ float aq_block_sum(float v, float *sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = tc_warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0.0f;
        for (int w = 0; w < AQ_WARPS; w++)
            s += sh[w];
        sh[AQ_WARPS] = s;
    }
    __syncthreads();
    return sh[AQ_WARPS];
}

/* a . b over HS dims by one warp (the lanes split the dims, a fixed butterfly) */
template <typename T> __device__ __forceinline__ float aq_warp_dot(const T *a, const T *b, int HS) {
    float acc = 0.0f;
    for (int d = threadIdx.x & 31; d < HS; d += 32)
        acc += tc_ldf(a + d) * tc_ldf(b + d);
    return tc_warp_sum(acc);
}

/* s[j] = scale q.k_j for the block's (sample, head), a warp per key */
template <typename T>
__device__ void aq_scores(float *s, const T *q, const T *k, int Tn, int HS, size_t A, float scale) {
    const int warp = threadIdx.x >> 5;
    for (int j = warp; j < Tn; j += AQ_WARPS) {
        const float v = aq_warp_dot(q, k + (size_t)j * A, HS);
        if ((threadIdx.x & 31) == 0) s[j] = v * scale;
    }
    __syncthreads();
}

template <typename T>
__global__ void __launch_bounds__(AQ_THREADS)
    aq_forward_kernel(T *out, float *lse, const T *q, const T *k, const T *v, int Tn, int NH,
                      int HS, float scale) {
    extern __shared__ float s[]; /* Tn scores, then the reduction slots */
    float *sh = s + Tn;
    const int h = blockIdx.x, bb = blockIdx.y;
    const size_t A = (size_t)NH * HS;
    const T *qr = q + (size_t)bb * A + (size_t)h * HS;
    const T *kb = k + (size_t)bb * Tn * A + (size_t)h * HS,
            *vb = v + (size_t)bb * Tn * A + (size_t)h * HS;
    aq_scores(s, qr, kb, Tn, HS, A, scale);
    float m = -INFINITY;
    for (int j = threadIdx.x; j < Tn; j += AQ_THREADS)
        m = fmaxf(m, s[j]);
    m = aq_block_max(m, sh);
    float part = 0.0f;
    for (int j = threadIdx.x; j < Tn; j += AQ_THREADS)
        part += (s[j] = expf(s[j] - m));
    const float sum = aq_block_sum(part, sh);
    const float inv = 1.0f / sum;
    T *orow = out + (size_t)bb * A + (size_t)h * HS;
    for (int d = threadIdx.x; d < HS; d += AQ_THREADS) {
        float acc = 0.0f;
        for (int j = 0; j < Tn; j++)
            acc += s[j] * tc_ldf(vb + (size_t)j * A + d);
        orow[d] = tc_tof<T>(acc * inv);
    }
    if (threadIdx.x == 0) lse[(size_t)bb * NH + h] = m + logf(sum);
}

template <typename T>
__global__ void __launch_bounds__(AQ_THREADS)
    aq_backward_kernel(T *dq, T *dk, T *dv, const T *dout, const T *q, const T *k, const T *v,
                       const T *out, const float *lse, int Tn, int NH, int HS, float scale) {
    extern __shared__ float s[]; /* Tn probabilities, Tn dS, then the reduction slots */
    float *ds = s + Tn, *sh = ds + Tn;
    const int h = blockIdx.x, bb = blockIdx.y, warp = threadIdx.x >> 5;
    const size_t A = (size_t)NH * HS, qo = (size_t)bb * A + (size_t)h * HS;
    const size_t ko = (size_t)bb * Tn * A + (size_t)h * HS;
    const T *qr = q + qo, *g = dout + qo, *orow = out + qo;
    aq_scores(s, qr, k + ko, Tn, HS, A, scale);
    const float l = lse[(size_t)bb * NH + h];
    float part = 0.0f;
    for (int d = threadIdx.x; d < HS; d += AQ_THREADS)
        part += tc_ldf(g + d) * tc_ldf(orow + d);
    const float D = aq_block_sum(part, sh);
    for (int j = warp; j < Tn; j += AQ_WARPS) {
        const float dp = aq_warp_dot(g, v + ko + (size_t)j * A, HS);
        if ((threadIdx.x & 31) == 0) {
            const float p = expf(s[j] - l);
            s[j] = p;
            ds[j] = p * (dp - D) * scale;
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < Tn * HS; e += AQ_THREADS) {
        const int j = e / HS, d = e % HS;
        const size_t o = ko + (size_t)j * A + d;
        dv[o] = tc_tof<T>(s[j] * tc_ldf(g + d));
        dk[o] = tc_tof<T>(ds[j] * tc_ldf(qr + d));
    }
    for (int d = threadIdx.x; d < HS; d += AQ_THREADS) {
        float acc = 0.0f;
        for (int j = 0; j < Tn; j++)
            acc += ds[j] * tc_ldf(k + ko + (size_t)j * A + d);
        dq[qo + d] = tc_tof<T>(acc);
    }
}

template <typename T>
static void launch_aq_forward(tc_cuda_backend *cu, tc_act *out, float *lse, const tc_act *q,
                              const tc_act *k, const tc_act *v, int B, int Tn, int NH, int HS) {
    const size_t smem = ((size_t)Tn + AQ_WARPS + 1) * sizeof(float);
    aq_forward_kernel<T><<<dim3((unsigned)NH, (unsigned)B), AQ_THREADS, smem, cu->stream>>>(
        (T *)out, lse, (const T *)q, (const T *)k, (const T *)v, Tn, NH, HS,
        1.0f / sqrtf((float)HS));
    tc_cuda_launched(cu, "attention_query_forward");
}

template <typename T>
static void launch_aq_backward(tc_cuda_backend *cu, tc_act *dq, tc_act *dk, tc_act *dv,
                               const tc_act *dout, const tc_act *q, const tc_act *k,
                               const tc_act *v, const tc_act *out, const float *lse, int B, int Tn,
                               int NH, int HS) {
    const size_t smem = (2 * (size_t)Tn + AQ_WARPS + 1) * sizeof(float);
    aq_backward_kernel<T><<<dim3((unsigned)NH, (unsigned)B), AQ_THREADS, smem, cu->stream>>>(
        (T *)dq, (T *)dk, (T *)dv, (const T *)dout, (const T *)q, (const T *)k, (const T *)v,
        (const T *)out, lse, Tn, NH, HS, 1.0f / sqrtf((float)HS));
    tc_cuda_launched(cu, "attention_query_backward");
}

/* the scores (and dS) live in the 48 KiB of shared memory a launch gets */
#define AQ_MAX_T ((48 * 1024 / (int)sizeof(float) - AQ_WARPS - 1) / 2)

void tc_cuda_attention_query_forward(tc_backend *b, tc_act *out, float *lse, const tc_act *q,
                                     const tc_act *k, const tc_act *v, int B, int T, int NH,
                                     int HS) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(
        cu, B >= 0 && T >= 1 && T <= AQ_MAX_T && NH >= 0 && HS >= 1 && NH <= 65535 && B <= 65535,
        "cuda attention_query_forward: bad shape B=%d T=%d (at most %d) NH=%d HS=%d", B, T,
        AQ_MAX_T, NH, HS);
    if (B == 0 || NH == 0) return;
    TC_ACT_DISPATCH(cu, launch_aq_forward, cu, out, lse, q, k, v, B, T, NH, HS);
}

void tc_cuda_attention_query_backward(tc_backend *b, tc_act *dq, tc_act *dk, tc_act *dv,
                                      const tc_act *dout, const tc_act *q, const tc_act *k,
                                      const tc_act *v, const tc_act *out, const float *lse, int B,
                                      int T, int NH, int HS) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(
        cu, B >= 0 && T >= 1 && T <= AQ_MAX_T && NH >= 0 && HS >= 1 && NH <= 65535 && B <= 65535,
        "cuda attention_query_backward: bad shape B=%d T=%d (at most %d) NH=%d HS=%d", B, T,
        AQ_MAX_T, NH, HS);
    if (B == 0 || NH == 0) return;
    TC_ACT_DISPATCH(cu, launch_aq_backward, cu, dq, dk, dv, dout, q, k, v, out, lse, B, T, NH, HS);
}
