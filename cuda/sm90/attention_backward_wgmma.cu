/* fused attention backward for Hopper (sm_90a, mixed bf16 mode),
 * deterministic: the algorithm of ../attention_backward_mma.cu (P recomputed
 * from the saved lse, D = rowsum(dO * O), dS = P (dP - D); each dqkv element
 * written by one thread, every sum in a fixed order, no atomics) with the
 * products on warpgroup MMA (wgmma.mma_async m64nNk16, bf16 inputs, fp32
 * accumulators). layouts: attention_wgmma_layout.h; ordering rules:
 * attention_wgmma.cuh.
 *
 * three kernels on the stream:
 *   D:   the mma path's kernel (tc_cuda_attention_backward_d), into the
 *        backend's scratch as (B, NH, T).
 *   dkv: one warpgroup per (64-key tile, head, batch); warp w owns keys
 *        16w..16w+15 (the D layout); dK, dV (64 x HS) accumulate in
 *        registers. K and V stay in shared memory; Q, dO (and lse, D of the
 *        64 queries) are double-buffered over the query tiles (causal: from
 *        the diagonal tile on). per query tile:
 *          S^T  = K Q^T,  dP^T = V dO^T    SS wgmma, both K-major (one batch)
 *          P^T  = exp2(scale log2e S^T - log2e lse), 0 where masked
 *          dS^T = P^T (dP^T - D)
 *          dV  += bf16(P^T) dO,  dK += bf16(dS^T) Q
 *                                         RS wgmma, dO and Q MN-major
 *        at the end dK *= scale; dK, dV to dqkv columns A + h hs, 2A + h hs.
 *   dq:  one warpgroup per (64-query tile, head, batch); Q and dO resident,
 *        K and V double-buffered (causal: up to the diagonal):
 *          S = Q K^T,  dP = dO V^T   (SS);  P, dS;  dQ += bf16(dS) K (RS, K
 *          MN-major); at the end dQ *= scale, to dqkv columns h hs.
 * masking: P = 0 exactly for keys or queries at or past T and, when causal,
 * for j > i; tiles are zero-filled past T and only rows below T are written.
 * not covered (the caller runs the mma or FMA kernels): a pointer not 16-byte
 * aligned, D not fitting the scratch, the device refusing the shared memory,
 * or no sm_90a code for the device. */
#include "attention_wgmma.cuh"

/* 0 for the registers of a masked (key, query) pair, else exp2(x) */
__device__ __forceinline__ float att_wg_p(float s, float scale_log2, float lse_log2, bool valid) {
    return valid ? exp2f(fmaf(s, scale_log2, -lse_log2)) : 0.0f;
}

template <int HS>
__global__ void __launch_bounds__(ATT_WG_THREADS)
    attention_backward_wgmma_dkv_kernel(att_bf16 *dqkv, const att_bf16 *dout, const att_bf16 *qkv,
                                        const float *lse, const float *Dg, int Tn, int NH, int hs,
                                        int causal, float scale, float scale_log2) {
#if ATT_WG_DEVICE_CODE
    constexpr int TB = ATT_WG_TILE_BYTES(HS), NO = HS / 2, BR = ATT_WG_ROWS;
    extern __shared__ __align__(128) unsigned char att_wg_dkv_smem[];
    unsigned char *Ks = att_wg_dkv_smem, *Vs = Ks + TB;
    unsigned char *Qs = Vs + TB;            /* [2] tiles */
    unsigned char *dOs = Qs + 2 * TB;       /* [2] tiles */
    float *lse_s = (float *)(dOs + 2 * TB); /* [2][BR], times log2 e */
    float *D_s = lse_s + 2 * BR;            /* [2][BR] */
    const uint32_t k_addr = att_wg_addr(Ks), v_addr = att_wg_addr(Vs);
    const uint32_t q_addr = att_wg_addr(Qs), do_addr = att_wg_addr(dOs);

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int kt = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int A = NH * hs;
    const size_t ld = 3 * (size_t)A;
    const att_bf16 *base = qkv + (size_t)b * Tn * ld + h * hs;
    const att_bf16 *dobase = dout + (size_t)b * Tn * A + h * hs;
    const float *lse_bh = lse + ((size_t)b * NH + h) * Tn;
    const float *D_bh = Dg + ((size_t)b * NH + h) * Tn;
    const int k0 = kt * BR;
    const int key_lo = k0 + warp * 16 + g, key_hi = key_lo + 8; /* this thread's two keys */
    const int nqt = (Tn + BR - 1) / BR;
    const int qt0 = causal ? kt : 0; /* earlier query tiles see none of these keys */

    att_wg_load_tile<HS>(Ks, base + A, ld, k0, Tn, hs, tid);
    att_wg_load_tile<HS>(Vs, base + 2 * A, ld, k0, Tn, hs, tid);
    att_wg_load_tile<HS>(Qs, base, ld, qt0 * BR, Tn, hs, tid);
    att_wg_load_tile<HS>(dOs, dobase, (size_t)A, qt0 * BR, Tn, hs, tid);
    att_cp_async_commit();
    if (tid < BR) {
        const int i = qt0 * BR + tid;
        lse_s[tid] = i < Tn ? lse_bh[i] * ATT_LOG2E : 0.0f;
        D_s[tid] = i < Tn ? D_bh[i] : 0.0f;
    }

    float dk[NO], dv[NO];
    att_wg_zero(dk);
    att_wg_zero(dv);

    for (int qt = qt0; qt < nqt; qt++) {
        const int buf = (qt - qt0) & 1;
        att_wg_copies_landed();
        __syncthreads(); /* tile qt visible (to wgmma too); tile qt-1's buffers free */
        if (qt + 1 < nqt) {
            const int nb = buf ^ 1;
            att_wg_load_tile<HS>(Qs + nb * TB, base, ld, (qt + 1) * BR, Tn, hs, tid);
            att_wg_load_tile<HS>(dOs + nb * TB, dobase, (size_t)A, (qt + 1) * BR, Tn, hs, tid);
            att_cp_async_commit();
            if (tid < BR) {
                const int i = (qt + 1) * BR + tid;
                lse_s[nb * BR + tid] = i < Tn ? lse_bh[i] * ATT_LOG2E : 0.0f;
                D_s[nb * BR + tid] = i < Tn ? D_bh[i] : 0.0f;
            }
        }
        const uint32_t qb = q_addr + buf * TB, dob = do_addr + buf * TB;
        const float *lb = lse_s + buf * BR, *Db = D_s + buf * BR;
        const int i0 = qt * BR;

        /* S^T = K Q^T and dP^T = V dO^T: rows keys, columns the 64 queries */
        float st[32], dpt[32];
        att_wg_zero(st);
        att_wg_zero(dpt);
        att_wg_fence_regs(st);
        att_wg_fence_regs(dpt);
        att_wg_fence();
        att_wg_xyt<HS>(st, k_addr, qb);
        att_wg_xyt<HS>(dpt, v_addr, dob);
        att_wg_commit();
        att_wg_wait_all();
        att_wg_fence_regs(st);
        att_wg_fence_regs(dpt);

        /* P^T and dS^T; register i: key (i & 2 ? key_hi : key_lo), query
         * column att_wg_acc_col(tid, i) */
        const bool edge = i0 + BR > Tn || k0 + BR > Tn || (causal && k0 + warp * 16 + 15 > i0);
#pragma unroll
        for (int i = 0; i < 32; i++) {
            const int q = att_wg_acc_col(tid, i), qi = i0 + q;
            const int j = (i & 2) ? key_hi : key_lo;
            const bool valid = !edge || (qi < Tn && j < Tn && (!causal || j <= qi));
            st[i] = att_wg_p(st[i], scale_log2, lb[q], valid);
            dpt[i] = st[i] * (dpt[i] - Db[q]);
        }

        /* dV += bf16(P^T) dO, dK += bf16(dS^T) Q (k = queries) */
        uint32_t pa[4][4], da[4][4];
        att_wg_pack_a(pa, st);
        att_wg_pack_a(da, dpt);
        att_wg_fence_regs(dv);
        att_wg_fence_regs(dk);
        att_wg_fence();
        att_wg_pv<HS>(dv, pa, dob);
        att_wg_pv<HS>(dk, da, qb);
        att_wg_commit();
        att_wg_wait_all();
        att_wg_fence_regs(dv);
        att_wg_fence_regs(dk);
    }

    /* registers i, i+1: key (i & 2 ? key_hi : key_lo), dims 8 (i / 4) + 2t, +1 */
    att_bf16 *dbase = dqkv + (size_t)b * Tn * ld + A + h * hs + 2 * t;
#pragma unroll
    for (int i = 0; i < NO; i += 2) {
        const int n = i >> 2, key = (i & 2) ? key_hi : key_lo;
        if (key >= Tn || n * 8 >= hs) continue;
        att_bf16 *d = dbase + (size_t)key * ld + n * 8;
        att_store2(d, dk[i] * scale, dk[i + 1] * scale);
        att_store2(d + A, dv[i], dv[i + 1]);
    }
#endif
}

template <int HS>
__global__ void __launch_bounds__(ATT_WG_THREADS)
    attention_backward_wgmma_dq_kernel(att_bf16 *dqkv, const att_bf16 *dout, const att_bf16 *qkv,
                                       const float *lse, const float *Dg, int Tn, int NH, int hs,
                                       int causal, float scale, float scale_log2) {
#if ATT_WG_DEVICE_CODE
    constexpr int TB = ATT_WG_TILE_BYTES(HS), NO = HS / 2, BR = ATT_WG_ROWS;
    extern __shared__ __align__(128) unsigned char att_wg_dq_smem[];
    unsigned char *Qs = att_wg_dq_smem, *dOs = Qs + TB;
    unsigned char *Ks = dOs + TB;    /* [2] tiles */
    unsigned char *Vs = Ks + 2 * TB; /* [2] tiles */
    const uint32_t q_addr = att_wg_addr(Qs), do_addr = att_wg_addr(dOs);
    const uint32_t k_addr = att_wg_addr(Ks), v_addr = att_wg_addr(Vs);

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int A = NH * hs;
    const size_t ld = 3 * (size_t)A;
    const att_bf16 *base = qkv + (size_t)b * Tn * ld + h * hs;
    const int q0 = qt * BR;
    const int row_lo = q0 + warp * 16 + g, row_hi = row_lo + 8;
    const int nkt = att_key_tiles(Tn, q0, causal);

    att_wg_load_tile<HS>(Qs, base, ld, q0, Tn, hs, tid);
    att_wg_load_tile<HS>(dOs, dout + (size_t)b * Tn * A + h * hs, (size_t)A, q0, Tn, hs, tid);
    att_wg_load_tile<HS>(Ks, base + A, ld, 0, Tn, hs, tid);
    att_wg_load_tile<HS>(Vs, base + 2 * A, ld, 0, Tn, hs, tid);
    att_cp_async_commit();

    /* lse (times log2 e) and D of this thread's two rows */
    float lr[2], Dr[2];
    att_row_stats(lr, Dr, lse, Dg, ((size_t)b * NH + h) * Tn, row_lo, row_hi, Tn);

    float dq[NO];
    att_wg_zero(dq);

    for (int kt = 0; kt < nkt; kt++) {
        att_wg_copies_landed();
        __syncthreads(); /* tile kt visible (to wgmma too); tile kt-1's buffers free */
        if (kt + 1 < nkt) {
            const int nb = (kt + 1) & 1;
            att_wg_load_tile<HS>(Ks + nb * TB, base + A, ld, (kt + 1) * BR, Tn, hs, tid);
            att_wg_load_tile<HS>(Vs + nb * TB, base + 2 * A, ld, (kt + 1) * BR, Tn, hs, tid);
            att_cp_async_commit();
        }
        const uint32_t kb = k_addr + (kt & 1) * TB, vb = v_addr + (kt & 1) * TB;
        const int k0 = kt * BR;

        /* S = Q K^T and dP = dO V^T (64 queries x 64 keys) */
        float s[32], dp[32];
        att_wg_zero(s);
        att_wg_zero(dp);
        att_wg_fence_regs(s);
        att_wg_fence_regs(dp);
        att_wg_fence();
        att_wg_xyt<HS>(s, q_addr, kb);
        att_wg_xyt<HS>(dp, do_addr, vb);
        att_wg_commit();
        att_wg_wait_all();
        att_wg_fence_regs(s);
        att_wg_fence_regs(dp);

        const bool edge = q0 + BR > Tn || k0 + BR > Tn || (causal && k0 + BR - 1 > q0 + warp * 16);
#pragma unroll
        for (int i = 0; i < 32; i++) {
            const int j = k0 + att_wg_acc_col(tid, i), r = (i >> 1) & 1;
            const int row = r ? row_hi : row_lo;
            const bool valid = !edge || (row < Tn && j < Tn && (!causal || j <= row));
            s[i] = att_wg_p(s[i], scale_log2, lr[r], valid);
            dp[i] = s[i] * (dp[i] - Dr[r]);
        }

        /* dQ += bf16(dS) K (k = keys) */
        uint32_t da[4][4];
        att_wg_pack_a(da, dp);
        att_wg_fence_regs(dq);
        att_wg_fence();
        att_wg_pv<HS>(dq, da, kb);
        att_wg_commit();
        att_wg_wait_all();
        att_wg_fence_regs(dq);
    }

    att_bf16 *dbase = dqkv + (size_t)b * Tn * ld + h * hs + 2 * t;
#pragma unroll
    for (int i = 0; i < NO; i += 2) {
        const int n = i >> 2, r = (i >> 1) & 1, row = r ? row_hi : row_lo;
        if (row < Tn && n * 8 < hs)
            att_store2(dbase + (size_t)row * ld + n * 8, dq[i] * scale, dq[i + 1] * scale);
    }
#endif
}

template <int HS>
static bool launch_attention_backward_wgmma(tc_cuda_backend *cu, att_bf16 *dqkv,
                                            const att_bf16 *dout, const att_bf16 *qkv,
                                            const att_bf16 *out, const float *lse, int B, int Tn,
                                            int NH, int hs, int causal) {
    const size_t smem_dkv = ATT_WG_DKV_SMEM(HS), smem_dq = ATT_WG_DQ_SMEM(HS);
    const size_t rows = (size_t)B * Tn * NH;
    if (rows * sizeof(float) > cu->scratch_bytes) return false;
    if (!att_wg_kernel_present(attention_backward_wgmma_dkv_kernel<HS>) ||
        !att_wg_kernel_present(attention_backward_wgmma_dq_kernel<HS>) ||
        !att_mma_smem_opt_in(attention_backward_wgmma_dkv_kernel<HS>, smem_dkv) ||
        !att_mma_smem_opt_in(attention_backward_wgmma_dq_kernel<HS>, smem_dq))
        return false;
    float *D = (float *)cu->scratch;
    const float scale = 1.0f / sqrtf((float)hs);
    if (!tc_cuda_attention_backward_d(cu, D, dout, out, B, Tn, NH, hs)) return true;

    dim3 grid((unsigned)((Tn + ATT_WG_ROWS - 1) / ATT_WG_ROWS), (unsigned)NH, (unsigned)B);
    attention_backward_wgmma_dkv_kernel<HS><<<grid, ATT_WG_THREADS, smem_dkv, cu->stream>>>(
        dqkv, dout, qkv, lse, D, Tn, NH, hs, causal, scale, scale * ATT_LOG2E);
    if (!tc_cuda_launched(cu, "attention_backward wgmma dkv")) return true;
    attention_backward_wgmma_dq_kernel<HS><<<grid, ATT_WG_THREADS, smem_dq, cu->stream>>>(
        dqkv, dout, qkv, lse, D, Tn, NH, hs, causal, scale, scale * ATT_LOG2E);
    tc_cuda_launched(cu, "attention_backward wgmma dq");
    return true;
}

bool tc_cuda_attention_backward_wgmma(tc_cuda_backend *cu, tc_act *dqkv, const tc_act *dout,
                                      const tc_act *qkv, const tc_act *out, const float *lse, int B,
                                      int T, int NH, int HS, int causal) {
    if (cu->fp32 || cu->cc_major != 9) return false;
    /* 16-byte copies (cp.async, the D kernel's uint4 loads) */
    if (((uintptr_t)dqkv | (uintptr_t)dout | (uintptr_t)qkv | (uintptr_t)out) % 16 != 0 ||
        HS % 8 != 0)
        return false;
    att_bf16 *dq = (att_bf16 *)dqkv;
    const att_bf16 *d = (const att_bf16 *)dout, *q = (const att_bf16 *)qkv,
                   *o = (const att_bf16 *)out;
#define TC_ATT_BWD_WG(P)                                                                           \
    launch_attention_backward_wgmma<P>(cu, dq, d, q, o, lse, B, T, NH, HS, causal)
    switch (att_wg_padded_head(HS)) {
    case 16: return TC_ATT_BWD_WG(16);
    case 32: return TC_ATT_BWD_WG(32);
    case 48: return TC_ATT_BWD_WG(48);
    case 64: return TC_ATT_BWD_WG(64);
    case 80: return TC_ATT_BWD_WG(80);
    case 96: return TC_ATT_BWD_WG(96);
    case 112: return TC_ATT_BWD_WG(112);
    case 128: return TC_ATT_BWD_WG(128);
    default: return false;
    }
#undef TC_ATT_BWD_WG
}
