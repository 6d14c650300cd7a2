/* fused attention backward, flash-style with recomputation, deterministic.
 *
 * with P_ij = exp(scale q_i.k_j - lse_i) (recomputed from the saved lse),
 * D_i = dO_i . O_i, dS_ij = P_ij (dO_i.v_j - D_i):
 *   dV_j = sum_i P_ij dO_i,  dK_j = scale sum_i dS_ij q_i,  dQ_i = scale sum_j dS_ij k_j
 *
 * two kernels, each output element written by exactly one thread (no atomics,
 * fixed summation order, so the same inputs give the same bits):
 *   dkv: one block per (key tile, head, batch); each key row j is owned by G
 *        threads holding 16 dims of k_j, v_j, dK_j, dV_j (a head of hs dims
 *        padded to HSP, attention_common.h). it walks the query
 *        tiles (for causal attention only those with i >= the tile's first
 *        key), loading Q and dO of the tile into shared memory with lse_i and
 *        D_i (computed on load from dO and O), and accumulates over queries
 *        in order.
 *   dq:  one block per (query tile, head, batch); each query row holds q_i,
 *        dO_i, D_i, lse_i and dQ_i and walks the key tiles (up to the tile's
 *        last query when causal) with K and V in shared memory.
 * scores are recomputed in both kernels, which costs FLOPs but no T x T
 * buffer in global memory and no cross-block reduction.
 *
 * layouts as the forward: qkv and dqkv (B, T, 3A) with dq, dk, dv at column
 * offsets 0, A, 2A; dout and out (B, T, A); lse (B, NH, T). every element of
 * dqkv with t < T is written. */
#include <math.h>

#include "attention_common.h"
#include "attention_mma.cuh"

template <typename T, int HSP>
__global__ void __launch_bounds__(att_cfg<HSP>::THREADS)
    attention_backward_dkv_kernel(T *dqkv, const T *dout, const T *qkv, const T *out,
                                  const float *lse, int Tn, int NH, int hs, int causal,
                                  float scale) {
    constexpr int G = att_cfg<HSP>::G, BT = att_cfg<HSP>::BT;
    __shared__ __align__(16) float Qs[BT][HSP];
    __shared__ __align__(16) float dOs[BT][HSP];
    __shared__ float lse_s[BT];
    __shared__ float D_s[BT];

    const int tid = threadIdx.x, row = tid / G, part = tid % G;
    const int kt = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int A = NH * hs, nv = att_valid16(hs, part);
    const size_t ld = 3 * (size_t)A;
    const T *base = qkv + (size_t)b * Tn * ld;
    const T *obase = out + (size_t)b * Tn * A;
    const T *dobase = dout + (size_t)b * Tn * A;
    const float *lse_bh = lse + ((size_t)b * NH + h) * Tn;
    const int j = kt * BT + row; /* the key this thread's group owns */

    float k[ATT_DPT], v[ATT_DPT], dk[ATT_DPT], dv[ATT_DPT];
    if (j < Tn) {
        const T *kr = base + (size_t)j * ld + A + h * hs + part * ATT_DPT;
        att_load16(k, kr, nv);
        att_load16(v, kr + A, nv);
    } else {
#pragma unroll
        for (int d = 0; d < ATT_DPT; d++)
            k[d] = v[d] = 0.0f;
    }
#pragma unroll
    for (int d = 0; d < ATT_DPT; d++)
        dk[d] = dv[d] = 0.0f;

    const int nqt = (Tn + BT - 1) / BT;
    for (int qt = causal ? kt : 0; qt < nqt; qt++) {
        /* load the query tile: this thread's group owns query row qt*BT + row */
        {
            const int i = qt * BT + row;
            float qv[ATT_DPT], dov[ATT_DPT], ov[ATT_DPT];
            float dpart = 0.0f;
            if (i < Tn) {
                att_load16(qv, base + (size_t)i * ld + h * hs + part * ATT_DPT, nv);
                att_load16(dov, dobase + (size_t)i * A + h * hs + part * ATT_DPT, nv);
                att_load16(ov, obase + (size_t)i * A + h * hs + part * ATT_DPT, nv);
#pragma unroll
                for (int d = 0; d < ATT_DPT; d++)
                    dpart += dov[d] * ov[d];
            } else {
#pragma unroll
                for (int d = 0; d < ATT_DPT; d++)
                    qv[d] = dov[d] = 0.0f;
            }
            const float D = att_group_sum<G>(dpart);
#pragma unroll
            for (int d = 0; d < ATT_DPT; d++) {
                Qs[row][part * ATT_DPT + d] = qv[d];
                dOs[row][part * ATT_DPT + d] = dov[d];
            }
            if (part == 0) {
                D_s[row] = D;
                lse_s[row] = i < Tn ? lse_bh[i] : 0.0f;
            }
        }
        __syncthreads();
        for (int ii = 0; ii < BT; ii++) {
            const int i = qt * BT + ii;
            const float s = att_group_sum<G>(att_dot16(k, &Qs[ii][part * ATT_DPT]));
            const bool valid = i < Tn && j < Tn && (!causal || j <= i);
            const float p = valid ? expf(s * scale - lse_s[ii]) : 0.0f;
            att_axpy16(dv, p, &dOs[ii][part * ATT_DPT]);
            const float dp = att_group_sum<G>(att_dot16(v, &dOs[ii][part * ATT_DPT]));
            const float ds = p * (dp - D_s[ii]);
            att_axpy16(dk, ds, &Qs[ii][part * ATT_DPT]);
        }
        __syncthreads();
    }
    if (j < Tn) {
        T *dst = dqkv + ((size_t)b * Tn + j) * ld + A + h * hs + part * ATT_DPT;
#pragma unroll
        for (int d = 0; d < ATT_DPT; d++) {
            if (d >= nv) continue;
            dst[d] = tc_tof<T>(dk[d] * scale);
            dst[d + A] = tc_tof<T>(dv[d]);
        }
    }
}

template <typename T, int HSP>
__global__ void __launch_bounds__(att_cfg<HSP>::THREADS)
    attention_backward_dq_kernel(T *dqkv, const T *dout, const T *qkv, const T *out,
                                 const float *lse, int Tn, int NH, int hs, int causal,
                                 float scale) {
    constexpr int G = att_cfg<HSP>::G, BT = att_cfg<HSP>::BT, NT = att_cfg<HSP>::THREADS;
    __shared__ __align__(16) float Ks[BT][HSP];
    __shared__ __align__(16) float Vs[BT][HSP];

    const int tid = threadIdx.x, row = tid / G, part = tid % G;
    const int qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int A = NH * hs, nv = att_valid16(hs, part);
    const size_t ld = 3 * (size_t)A;
    const T *base = qkv + (size_t)b * Tn * ld;
    const int i = qt * BT + row;

    float q[ATT_DPT], dov[ATT_DPT], dq[ATT_DPT];
    float dpart = 0.0f, lse_i = 0.0f;
    if (i < Tn) {
        float ov[ATT_DPT];
        att_load16(q, base + (size_t)i * ld + h * hs + part * ATT_DPT, nv);
        att_load16(dov, dout + ((size_t)b * Tn + i) * A + h * hs + part * ATT_DPT, nv);
        att_load16(ov, out + ((size_t)b * Tn + i) * A + h * hs + part * ATT_DPT, nv);
#pragma unroll
        for (int d = 0; d < ATT_DPT; d++)
            dpart += dov[d] * ov[d];
        lse_i = lse[((size_t)b * NH + h) * Tn + i];
    } else {
#pragma unroll
        for (int d = 0; d < ATT_DPT; d++)
            q[d] = dov[d] = 0.0f;
    }
    const float D = att_group_sum<G>(dpart);
#pragma unroll
    for (int d = 0; d < ATT_DPT; d++)
        dq[d] = 0.0f;

    const int last_key = causal ? min(Tn - 1, qt * BT + BT - 1) : Tn - 1;
    const int ntiles = last_key / BT + 1;
    for (int kt = 0; kt < ntiles; kt++) {
        for (int idx = tid; idx < BT * HSP; idx += NT) {
            const int r = idx / HSP, d = idx % HSP, jj = kt * BT + r;
            float kv = 0.0f, vv = 0.0f;
            if (jj < Tn && d < hs) {
                const T *kr = base + (size_t)jj * ld + A + h * hs + d;
                kv = tc_ldf(kr);
                vv = tc_ldf(kr + A);
            }
            Ks[r][d] = kv;
            Vs[r][d] = vv;
        }
        __syncthreads();
        for (int jj = 0; jj < BT; jj++) {
            const int j = kt * BT + jj;
            const float s = att_group_sum<G>(att_dot16(q, &Ks[jj][part * ATT_DPT]));
            const bool valid = i < Tn && j < Tn && (!causal || j <= i);
            const float p = valid ? expf(s * scale - lse_i) : 0.0f;
            const float dp = att_group_sum<G>(att_dot16(dov, &Vs[jj][part * ATT_DPT]));
            att_axpy16(dq, p * (dp - D), &Ks[jj][part * ATT_DPT]);
        }
        __syncthreads();
    }
    if (i < Tn) {
        T *dst = dqkv + ((size_t)b * Tn + i) * ld + h * hs + part * ATT_DPT;
#pragma unroll
        for (int d = 0; d < ATT_DPT; d++)
            if (d < nv) dst[d] = tc_tof<T>(dq[d] * scale);
    }
}

template <typename T, int HSP>
static void launch_attention_backward_hs(tc_cuda_backend *cu, tc_act *dqkv, const tc_act *dout,
                                         const tc_act *qkv, const tc_act *out, const float *lse,
                                         int B, int Tn, int NH, int hs, int causal) {
    constexpr int BT = att_cfg<HSP>::BT;
    dim3 grid((unsigned)((Tn + BT - 1) / BT), (unsigned)NH, (unsigned)B);
    const float scale = 1.0f / sqrtf((float)hs);
    attention_backward_dkv_kernel<T, HSP><<<grid, att_cfg<HSP>::THREADS, 0, cu->stream>>>(
        (T *)dqkv, (const T *)dout, (const T *)qkv, (const T *)out, lse, Tn, NH, hs, causal, scale);
    if (!tc_cuda_launched(cu, "attention_backward dkv")) return;
    attention_backward_dq_kernel<T, HSP><<<grid, att_cfg<HSP>::THREADS, 0, cu->stream>>>(
        (T *)dqkv, (const T *)dout, (const T *)qkv, (const T *)out, lse, Tn, NH, hs, causal, scale);
    tc_cuda_launched(cu, "attention_backward dq");
}

template <typename T>
static void launch_attention_backward(tc_cuda_backend *cu, tc_act *dqkv, const tc_act *dout,
                                      const tc_act *qkv, const tc_act *out, const float *lse, int B,
                                      int Tn, int NH, int HS, int causal) {
#define TC_ATT_BWD(P)                                                                              \
    launch_attention_backward_hs<T, P>(cu, dqkv, dout, qkv, out, lse, B, Tn, NH, HS, causal)
    switch (att_padded_head(HS)) {
    case 16: TC_ATT_BWD(16); break;
    case 32: TC_ATT_BWD(32); break;
    case 64: TC_ATT_BWD(64); break;
    case 128: TC_ATT_BWD(128); break;
    default: TC_ATT_BWD(256); break;
    }
#undef TC_ATT_BWD
}

void tc_cuda_attention_backward(tc_backend *b, tc_act *dqkv, const tc_act *dout, const tc_act *qkv,
                                const tc_act *out, const float *lse, int B, int T, int NH, int HS,
                                int causal) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, B >= 0 && T >= 0 && NH >= 0,
                  "cuda attention_backward: bad shape B=%d T=%d NH=%d", B, T, NH);
    if (B == 0 || T == 0 || NH == 0) return;
    TC_CU_REQUIRE(cu, HS >= 8 && HS <= 256 && HS % 8 == 0,
                  "cuda attention_backward: head size %d unsupported (multiples of 8 to 256)", HS);
    TC_CU_REQUIRE(cu, B <= 65535 && NH <= 65535,
                  "cuda attention_backward: B=%d NH=%d over the grid", B, NH);
    TC_CU_REQUIRE(cu, lse != NULL, "cuda attention_backward: lse is NULL");
    /* tensor cores (bf16 mode, TINYCLIP_ATTENTION=tma, wgmma or mma) where
     * they cover the call: on compute capability 9 the TMA pipeline (tma),
     * the cp.async wgmma kernels (tma, wgmma), else mma.sync */
    tc_attention_kernel *ran = &cu->attention_ran[1];
    *ran = TC_ATTENTION_TMA;
    if (cu->opt.attention == TC_ATTENTION_TMA &&
        tc_cuda_attention_backward_tma(cu, dqkv, dout, qkv, out, lse, B, T, NH, HS, causal))
        return;
    *ran = TC_ATTENTION_WGMMA;
    if ((cu->opt.attention == TC_ATTENTION_WGMMA || cu->opt.attention == TC_ATTENTION_TMA) &&
        tc_cuda_attention_backward_wgmma(cu, dqkv, dout, qkv, out, lse, B, T, NH, HS, causal))
        return;
    *ran = TC_ATTENTION_MMA;
    if (tc_cuda_attention_mma_selected(cu) &&
        tc_cuda_attention_backward_mma(cu, dqkv, dout, qkv, out, lse, B, T, NH, HS, causal))
        return;
    *ran = TC_ATTENTION_FMA;
    TC_ACT_DISPATCH(cu, launch_attention_backward, cu, dqkv, dout, qkv, out, lse, B, T, NH, HS,
                    causal);
}
