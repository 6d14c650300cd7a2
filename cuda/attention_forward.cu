/* fused attention forward, flash-style (online softmax over key tiles).
 *
 * algorithm: one block per (query tile of BT rows, head, batch). each query
 * row is owned by G = HSP/16 threads holding 16 dims of q (pre-multiplied by
 * the scale hs^-0.5) and of the output accumulator o in registers (hs, the
 * head size, padded to HSP: attention_common.h). for each
 * key tile (BT keys; for causal attention only the tiles up to the block's
 * last query): K and V of the tile are loaded into shared memory as fp32;
 * each row computes its BT scores s_j = q.k_j (16 FMAs + a butterfly over G
 * threads), masks j >= T and, when causal, j > i with -inf, and updates the
 * running max m and sum l:  m' = max(m, max_j s_j), o = o*e^(m-m') +
 * sum_j e^(s_j-m') v_j, l = l*e^(m-m') + sum_j e^(s_j-m'). after the last
 * tile, out = o / l and lse = m + log l (saved for the backward). no T x T
 * matrix exists anywhere; global traffic is q, k, v read once per query tile
 * and out written once.
 *
 * layout: qkv (B, T, 3A) packed [q heads | k heads | v heads], A = NH*hs,
 * read through the row stride 3A; out (B, T, A); lse (B, NH, T). bf16 or fp32
 * inputs, fp32 arithmetic (plain FMAs, no tensor cores in this version).
 * the first key tile always holds key 0, which no query masks, so m is finite
 * from the first tile on and no exp(-inf - -inf) can appear. */
#include <math.h>

#include "attention_common.h"
#include "attention_mma.cuh"

template <typename T, int HSP>
__global__ void __launch_bounds__(att_cfg<HSP>::THREADS)
    attention_forward_kernel(T *out, float *lse, const T *qkv, int Tn, int NH, int hs, int causal,
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

    float q[ATT_DPT], o[ATT_DPT];
    if (i < Tn) {
        att_load16(q, base + (size_t)i * ld + h * hs + part * ATT_DPT, nv);
    } else {
#pragma unroll
        for (int d = 0; d < ATT_DPT; d++)
            q[d] = 0.0f;
    }
#pragma unroll
    for (int d = 0; d < ATT_DPT; d++) {
        q[d] *= scale;
        o[d] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;

    const int last_key = causal ? min(Tn - 1, qt * BT + BT - 1) : Tn - 1;
    const int ntiles = last_key / BT + 1;
    for (int kt = 0; kt < ntiles; kt++) {
        for (int idx = tid; idx < BT * HSP; idx += NT) {
            const int r = idx / HSP, d = idx % HSP, j = kt * BT + r;
            float kv = 0.0f, vv = 0.0f;
            if (j < Tn && d < hs) {
                const T *kr = base + (size_t)j * ld + A + h * hs + d;
                kv = tc_ldf(kr);
                vv = tc_ldf(kr + A);
            }
            Ks[r][d] = kv;
            Vs[r][d] = vv;
        }
        __syncthreads();

        float s[BT];
        float mt = m;
#pragma unroll
        for (int jj = 0; jj < BT; jj++) {
            float acc = att_group_sum<G>(att_dot16(q, &Ks[jj][part * ATT_DPT]));
            const int j = kt * BT + jj;
            const bool valid = j < Tn && (!causal || j <= i);
            s[jj] = valid ? acc : -INFINITY;
            mt = fmaxf(mt, s[jj]);
        }
        const float alpha = expf(m - mt); /* m = -inf on the first tile: 0 */
        float psum = 0.0f;
#pragma unroll
        for (int d = 0; d < ATT_DPT; d++)
            o[d] *= alpha;
#pragma unroll
        for (int jj = 0; jj < BT; jj++) {
            const float p = expf(s[jj] - mt);
            psum += p;
            att_axpy16(o, p, &Vs[jj][part * ATT_DPT]);
        }
        l = l * alpha + psum;
        m = mt;
        __syncthreads(); /* the tiles are overwritten next iteration */
    }

    if (i < Tn) {
        const float inv = 1.0f / l;
        T *dst = out + ((size_t)b * Tn + i) * A + h * hs + part * ATT_DPT;
#pragma unroll
        for (int d = 0; d < ATT_DPT; d++)
            if (d < nv) dst[d] = tc_tof<T>(o[d] * inv);
        if (part == 0) lse[((size_t)b * NH + h) * Tn + i] = m + logf(l);
    }
}

template <typename T, int HSP>
static void launch_attention_forward_hs(tc_cuda_backend *cu, tc_act *out, float *lse,
                                        const tc_act *qkv, int B, int Tn, int NH, int hs,
                                        int causal) {
    constexpr int BT = att_cfg<HSP>::BT;
    dim3 grid((unsigned)((Tn + BT - 1) / BT), (unsigned)NH, (unsigned)B);
    attention_forward_kernel<T, HSP><<<grid, att_cfg<HSP>::THREADS, 0, cu->stream>>>(
        (T *)out, lse, (const T *)qkv, Tn, NH, hs, causal, 1.0f / sqrtf((float)hs));
    tc_cuda_launched(cu, "attention_forward");
}

template <typename T>
static void launch_attention_forward(tc_cuda_backend *cu, tc_act *out, float *lse,
                                     const tc_act *qkv, int B, int Tn, int NH, int HS, int causal) {
    switch (att_padded_head(HS)) {
    case 16: launch_attention_forward_hs<T, 16>(cu, out, lse, qkv, B, Tn, NH, HS, causal); break;
    case 32: launch_attention_forward_hs<T, 32>(cu, out, lse, qkv, B, Tn, NH, HS, causal); break;
    case 64: launch_attention_forward_hs<T, 64>(cu, out, lse, qkv, B, Tn, NH, HS, causal); break;
    case 128: launch_attention_forward_hs<T, 128>(cu, out, lse, qkv, B, Tn, NH, HS, causal); break;
    default: launch_attention_forward_hs<T, 256>(cu, out, lse, qkv, B, Tn, NH, HS, causal); break;
    }
}

extern "C" tc_attention_kernel tc_cuda_attention_kernel_ran(const tc_backend *b, int backward) {
    return ((const tc_cuda_backend *)b)->attention_ran[backward ? 1 : 0];
}

void tc_cuda_attention_forward(tc_backend *b, tc_act *out, float *lse, const tc_act *qkv, int B,
                               int T, int NH, int HS, int causal) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, B >= 0 && T >= 0 && NH >= 0,
                  "cuda attention_forward: bad shape B=%d T=%d NH=%d", B, T, NH);
    if (B == 0 || T == 0 || NH == 0) return;
    TC_CU_REQUIRE(cu, HS >= 8 && HS <= 256 && HS % 8 == 0,
                  "cuda attention_forward: head size %d unsupported (multiples of 8 to 256)", HS);
    TC_CU_REQUIRE(cu, B <= 65535 && NH <= 65535, "cuda attention_forward: B=%d NH=%d over the grid",
                  B, NH);
    TC_CU_REQUIRE(cu, lse != NULL, "cuda attention_forward: lse is NULL");
    /* tensor cores (bf16 mode, TINYCLIP_ATTENTION=tma, wgmma or mma) where
     * they cover the call: on compute capability 9 the TMA pipeline (tma),
     * the cp.async wgmma kernel (tma, wgmma), else mma.sync */
    tc_attention_kernel *ran = &cu->attention_ran[0];
    *ran = TC_ATTENTION_TMA;
    if (cu->opt.attention == TC_ATTENTION_TMA &&
        tc_cuda_attention_forward_tma(cu, out, lse, qkv, B, T, NH, HS, causal))
        return;
    *ran = TC_ATTENTION_WGMMA;
    if ((cu->opt.attention == TC_ATTENTION_WGMMA || cu->opt.attention == TC_ATTENTION_TMA) &&
        tc_cuda_attention_forward_wgmma(cu, out, lse, qkv, B, T, NH, HS, causal))
        return;
    *ran = TC_ATTENTION_MMA;
    if (tc_cuda_attention_mma_selected(cu) &&
        tc_cuda_attention_forward_mma(cu, out, lse, qkv, B, T, NH, HS, causal))
        return;
    *ran = TC_ATTENTION_FMA;
    TC_ACT_DISPATCH(cu, launch_attention_forward, cu, out, lse, qkv, B, T, NH, HS, causal);
}
