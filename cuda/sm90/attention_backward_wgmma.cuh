/* the per-tile work of the Hopper attention backward, shared by the cp.async
 * kernels (attention_backward_wgmma.cu) and the TMA-fed ones
 * (attention_backward_tma.cu): they differ only in how the tiles reach
 * shared memory. the algorithm and the masking are described in
 * attention_backward_wgmma.cu; layouts in attention_wgmma_layout.h. */
#ifndef TC_CUDA_ATTENTION_BACKWARD_WGMMA_CUH
#define TC_CUDA_ATTENTION_BACKWARD_WGMMA_CUH

#include "attention_wgmma.cuh"

/* 0 for the registers of a masked (key, query) pair, else exp2(x) */
__device__ __forceinline__ float att_wg_p(float s, float scale_log2, float lse_log2, bool valid) {
    return valid ? exp2f(fmaf(s, scale_log2, -lse_log2)) : 0.0f;
}

/* where a backward thread is: its warp, its two rows (keys for dkv, queries
 * for dq), the quad column t */
typedef struct {
    int tid, warp, lo, hi, t;
} att_wg_rows;

__device__ __forceinline__ att_wg_rows att_wg_rows_of(int tid, int row0) {
    att_wg_rows r;
    r.tid = tid;
    r.warp = tid >> 5;
    r.lo = row0 + r.warp * 16 + ((tid & 31) >> 2);
    r.hi = r.lo + 8;
    r.t = tid & 3;
    return r;
}

/* dkv, one query tile i0.. against the keys k0.. of this CTA:
 *   S^T = K Q^T, dP^T = V dO^T (SS, both K-major, one batch);
 *   P^T = exp2(scale log2e S^T - log2e lse), 0 where masked; dS^T = P^T (dP^T - D);
 *   dV += bf16(P^T) dO, dK += bf16(dS^T) Q (RS, dO and Q MN-major).
 * lb and Db: lse (times log2 e) and D of the tile's 64 queries, in shared
 * memory. returns with every product retired (the tiles may be released). */
template <int HS>
__device__ __forceinline__ void
att_wg_dkv_tile(float (&dk)[HS / 2], float (&dv)[HS / 2], uint32_t k_addr, uint32_t v_addr,
                uint32_t qb, uint32_t dob, const float *lb, const float *Db, const att_wg_rows &r,
                int i0, int k0, int Tn, int causal, float scale_log2) {
    constexpr int BR = ATT_WG_ROWS;
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

    /* register i: key (i & 2 ? hi : lo), query column att_wg_acc_col(tid, i) */
    const bool edge = i0 + BR > Tn || k0 + BR > Tn || (causal && k0 + r.warp * 16 + 15 > i0);
#pragma unroll
    for (int i = 0; i < 32; i++) {
        const int q = att_wg_acc_col(r.tid, i), qi = i0 + q;
        const int j = (i & 2) ? r.hi : r.lo;
        const bool valid = !edge || (qi < Tn && j < Tn && (!causal || j <= qi));
        st[i] = att_wg_p(st[i], scale_log2, lb[q], valid);
        dpt[i] = st[i] * (dpt[i] - Db[q]);
    }

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

/* dK * scale and dV into dqkv columns A + h hs and 2A + h hs of this
 * thread's keys below Tn; registers i, i+1: dims 8 (i / 4) + 2t, +1 */
template <int NO>
__device__ __forceinline__ void att_wg_dkv_store(att_bf16 *dqkv, const float (&dk)[NO],
                                                 const float (&dv)[NO], const att_wg_rows &r, int b,
                                                 int h, int Tn, int NH, int hs, float scale) {
    const int A = NH * hs;
    const size_t ld = 3 * (size_t)A;
    att_bf16 *dbase = dqkv + (size_t)b * Tn * ld + A + h * hs + 2 * r.t;
#pragma unroll
    for (int i = 0; i < NO; i += 2) {
        const int n = i >> 2, key = (i & 2) ? r.hi : r.lo;
        if (key >= Tn || n * 8 >= hs) continue;
        att_bf16 *d = dbase + (size_t)key * ld + n * 8;
        att_store2(d, dk[i] * scale, dk[i + 1] * scale);
        att_store2(d + A, dv[i], dv[i + 1]);
    }
}

/* dq, one key tile k0.. against the queries q0.. of this CTA:
 *   S = Q K^T, dP = dO V^T (SS); P, dS = P (dP - D); dQ += bf16(dS) K (RS, K
 *   MN-major). lr, Dr: lse (times log2 e) and D of this thread's two rows.
 * returns with every product retired. */
template <int HS>
__device__ __forceinline__ void
att_wg_dq_tile(float (&dq)[HS / 2], uint32_t q_addr, uint32_t do_addr, uint32_t kb, uint32_t vb,
               const float (&lr)[2], const float (&Dr)[2], const att_wg_rows &r, int q0, int k0,
               int Tn, int causal, float scale_log2) {
    constexpr int BR = ATT_WG_ROWS;
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

    const bool edge = q0 + BR > Tn || k0 + BR > Tn || (causal && k0 + BR - 1 > q0 + r.warp * 16);
#pragma unroll
    for (int i = 0; i < 32; i++) {
        const int j = k0 + att_wg_acc_col(r.tid, i), hi = (i >> 1) & 1;
        const int row = hi ? r.hi : r.lo;
        const bool valid = !edge || (row < Tn && j < Tn && (!causal || j <= row));
        s[i] = att_wg_p(s[i], scale_log2, lr[hi], valid);
        dp[i] = s[i] * (dp[i] - Dr[hi]);
    }

    uint32_t da[4][4];
    att_wg_pack_a(da, dp);
    att_wg_fence_regs(dq);
    att_wg_fence();
    att_wg_pv<HS>(dq, da, kb);
    att_wg_commit();
    att_wg_wait_all();
    att_wg_fence_regs(dq);
}

/* dQ * scale into dqkv columns h hs of this thread's queries below Tn */
template <int NO>
__device__ __forceinline__ void att_wg_dq_store(att_bf16 *dqkv, const float (&dq)[NO],
                                                const att_wg_rows &r, int b, int h, int Tn, int NH,
                                                int hs, float scale) {
    const size_t ld = 3 * (size_t)NH * hs;
    att_bf16 *dbase = dqkv + (size_t)b * Tn * ld + h * hs + 2 * r.t;
#pragma unroll
    for (int i = 0; i < NO; i += 2) {
        const int n = i >> 2, hi = (i >> 1) & 1, row = hi ? r.hi : r.lo;
        if (row < Tn && n * 8 < hs)
            att_store2(dbase + (size_t)row * ld + n * 8, dq[i] * scale, dq[i + 1] * scale);
    }
}

#endif
