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
#include "attention_backward_wgmma.cuh"

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

    const int tid = threadIdx.x;
    const int kt = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int A = NH * hs;
    const size_t ld = 3 * (size_t)A;
    const att_bf16 *base = qkv + (size_t)b * Tn * ld + h * hs;
    const att_bf16 *dobase = dout + (size_t)b * Tn * A + h * hs;
    const float *lse_bh = lse + ((size_t)b * NH + h) * Tn;
    const float *D_bh = Dg + ((size_t)b * NH + h) * Tn;
    const int k0 = kt * BR;
    const att_wg_rows rows = att_wg_rows_of(tid, k0); /* this thread's two keys */
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
        att_wg_dkv_tile<HS>(dk, dv, k_addr, v_addr, qb, dob, lse_s + buf * BR, D_s + buf * BR, rows,
                            qt * BR, k0, Tn, causal, scale_log2);
    }
    att_wg_dkv_store(dqkv, dk, dv, rows, b, h, Tn, NH, hs, scale);
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

    const int tid = threadIdx.x;
    const int qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int A = NH * hs;
    const size_t ld = 3 * (size_t)A;
    const att_bf16 *base = qkv + (size_t)b * Tn * ld + h * hs;
    const int q0 = qt * BR;
    const att_wg_rows rows = att_wg_rows_of(tid, q0); /* this thread's two queries */
    const int nkt = att_key_tiles(Tn, q0, causal);

    att_wg_load_tile<HS>(Qs, base, ld, q0, Tn, hs, tid);
    att_wg_load_tile<HS>(dOs, dout + (size_t)b * Tn * A + h * hs, (size_t)A, q0, Tn, hs, tid);
    att_wg_load_tile<HS>(Ks, base + A, ld, 0, Tn, hs, tid);
    att_wg_load_tile<HS>(Vs, base + 2 * A, ld, 0, Tn, hs, tid);
    att_cp_async_commit();

    /* lse (times log2 e) and D of this thread's two rows */
    float lr[2], Dr[2];
    att_row_stats(lr, Dr, lse, Dg, ((size_t)b * NH + h) * Tn, rows.lo, rows.hi, Tn);

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
        att_wg_dq_tile<HS>(dq, q_addr, do_addr, kb, vb, lr, Dr, rows, q0, kt * BR, Tn, causal,
                           scale_log2);
    }
    att_wg_dq_store(dqkv, dq, rows, b, h, Tn, NH, hs, scale);
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
