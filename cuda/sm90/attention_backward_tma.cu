/* fused attention backward for Hopper (sm_90a, mixed bf16 mode) fed by
 * TMA: the algorithm, the products and the order of every sum of
 * attention_backward_wgmma.cu (the per-tile work is the same functions,
 * attention_backward_wgmma.cuh), so the result is deterministic and equal to
 * that kernel's bit for bit; what changes is how the tiles arrive:
 *   - one producer warp per CTA: its lane 0 issues the tensor copies of the
 *     resident tiles (dkv: K, V; dq: Q, dO) and of the streamed ones (dkv:
 *     Q, dO per query tile; dq: K, V per key tile) into a ring of
 *     ATT_TMA_STAGES slots with full/empty mbarriers (attention_tma_layout.h);
 *     for dkv every producer lane also copies lse (times log2 e) and D of
 *     the slot's 64 queries into shared memory and arrives on the slot's full
 *     barrier (32 arrivals, lane 0's with the expected bytes);
 *   - one consumer warpgroup does the products of attention_backward_wgmma.cuh
 *     and releases a slot once its products have retired.
 * the D kernel (rowsum(dO * O)) runs first, as for the wgmma kernels.
 * not covered (the caller runs the cp.async wgmma kernels, then mma): a
 * tensor map refused, D not fitting the scratch, the shared memory refused,
 * or no sm_90a code for the device. */
#include "attention_backward_wgmma.cuh"
#include "attention_tma.cuh"

template <int HS>
__global__ void __launch_bounds__(ATT_WG_THREADS + ATT_TMA_PRODUCER)
    attention_backward_tma_dkv_kernel(const __grid_constant__ CUtensorMap qkv_map,
                                      const __grid_constant__ CUtensorMap dout_map, att_bf16 *dqkv,
                                      const float *lse, const float *Dg, int Tn, int NH, int hs,
                                      int causal, float scale, float scale_log2) {
#if ATT_WG_DEVICE_CODE
    constexpr int TB = ATT_WG_TILE_BYTES(HS), NO = HS / 2, BR = ATT_WG_ROWS;
    constexpr int S = ATT_TMA_STAGES;
    extern __shared__ __align__(128) unsigned char att_tma_dkv_smem[];
    const uint32_t k_addr = att_wg_addr(att_tma_dkv_smem), v_addr = k_addr + TB;
    const uint32_t q_addr = v_addr + TB;                           /* [S] tiles */
    const uint32_t do_addr = q_addr + S * TB;                      /* [S] tiles */
    float *lse_s = (float *)(att_tma_dkv_smem + (2 + 2 * S) * TB); /* [S][BR], times log2 e */
    float *D_s = lse_s + S * BR;                                   /* [S][BR] */
    const uint32_t kv_full = att_wg_addr((const unsigned char *)(D_s + S * BR));
    const uint32_t full = kv_full + 8, empty = full + 8 * S; /* [S] each */

    const int kt = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int k0 = kt * BR;
    const int qt0 = causal ? kt : 0;        /* earlier query tiles see none of these keys */
    const int n = (Tn + BR - 1) / BR - qt0; /* query tiles streamed */

    if (threadIdx.x == 0) att_tma_init_bars(kv_full, full, empty, ATT_TMA_PRODUCER, ATT_WG_THREADS);
    __syncthreads();

    if (threadIdx.x >= ATT_WG_THREADS) {
        const int lane = threadIdx.x - ATT_WG_THREADS;
        const float *lse_bh = lse + ((size_t)b * NH + h) * Tn;
        const float *D_bh = Dg + ((size_t)b * NH + h) * Tn;
        if (lane == 0) {
            att_tma_prefetch_map(&qkv_map);
            att_tma_prefetch_map(&dout_map);
            att_tma_arrive_expect(kv_full, 2 * TB);
            att_tma_qkv_tile<HS>(k_addr, &qkv_map, kv_full, h, 1, k0, b);
            att_tma_qkv_tile<HS>(v_addr, &qkv_map, kv_full, h, 2, k0, b);
        }
        for (int i = 0; i < n; i++) {
            const int s = att_tma_slot(i), e = att_tma_empty_parity(i), i0 = (qt0 + i) * BR;
            if (e >= 0) att_tma_wait(empty + 8 * s, (uint32_t)e);
            for (int r = lane; r < BR; r += ATT_TMA_PRODUCER) {
                const int q = i0 + r;
                lse_s[s * BR + r] = q < Tn ? lse_bh[q] * ATT_LOG2E : 0.0f;
                D_s[s * BR + r] = q < Tn ? D_bh[q] : 0.0f;
            }
            if (lane == 0) {
                att_tma_arrive_expect(full + 8 * s, 2 * TB);
                att_tma_qkv_tile<HS>(q_addr + s * TB, &qkv_map, full + 8 * s, h, 0, i0, b);
                att_tma_rows_tile<HS>(do_addr + s * TB, &dout_map, full + 8 * s, h, i0, b);
            } else {
                att_tma_arrive(full + 8 * s);
            }
        }
        return;
    }

    const att_wg_rows rows = att_wg_rows_of(threadIdx.x, k0); /* this thread's two keys */
    float dk[NO], dv[NO];
    att_wg_zero(dk);
    att_wg_zero(dv);
    att_tma_wait(kv_full, 0);
    for (int i = 0; i < n; i++) {
        const int s = att_tma_slot(i);
        att_tma_wait(full + 8 * s, att_tma_full_parity(i));
        att_wg_dkv_tile<HS>(dk, dv, k_addr, v_addr, q_addr + s * TB, do_addr + s * TB,
                            lse_s + s * BR, D_s + s * BR, rows, (qt0 + i) * BR, k0, Tn, causal,
                            scale_log2);
        att_tma_arrive(empty + 8 * s);
    }
    att_wg_dkv_store(dqkv, dk, dv, rows, b, h, Tn, NH, hs, scale);
#endif
}

template <int HS>
__global__ void __launch_bounds__(ATT_WG_THREADS + ATT_TMA_PRODUCER)
    attention_backward_tma_dq_kernel(const __grid_constant__ CUtensorMap qkv_map,
                                     const __grid_constant__ CUtensorMap dout_map, att_bf16 *dqkv,
                                     const float *lse, const float *Dg, int Tn, int NH, int hs,
                                     int causal, float scale, float scale_log2) {
#if ATT_WG_DEVICE_CODE
    constexpr int TB = ATT_WG_TILE_BYTES(HS), NO = HS / 2, BR = ATT_WG_ROWS;
    constexpr int S = ATT_TMA_STAGES;
    extern __shared__ __align__(128) unsigned char att_tma_dq_smem[];
    const uint32_t q_addr = att_wg_addr(att_tma_dq_smem), do_addr = q_addr + TB;
    const uint32_t k_addr = do_addr + TB;    /* [S] tiles */
    const uint32_t v_addr = k_addr + S * TB; /* [S] tiles */
    const uint32_t q_full = v_addr + S * TB;
    const uint32_t full = q_full + 8, empty = full + 8 * S; /* [S] each */

    const int qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int q0 = qt * BR;
    const int nkt = att_key_tiles(Tn, q0, causal);

    if (threadIdx.x == 0) att_tma_init_bars(q_full, full, empty, 1, ATT_WG_THREADS);
    __syncthreads();

    if (threadIdx.x >= ATT_WG_THREADS) {
        if (threadIdx.x == ATT_WG_THREADS) {
            att_tma_prefetch_map(&qkv_map);
            att_tma_prefetch_map(&dout_map);
            att_tma_arrive_expect(q_full, 2 * TB);
            att_tma_qkv_tile<HS>(q_addr, &qkv_map, q_full, h, 0, q0, b);
            att_tma_rows_tile<HS>(do_addr, &dout_map, q_full, h, q0, b);
            att_tma_stream_kv<HS>(k_addr, v_addr, &qkv_map, full, empty, h, b, nkt);
        }
        return;
    }

    const att_wg_rows rows = att_wg_rows_of(threadIdx.x, q0); /* this thread's two queries */
    float lr[2], Dr[2]; /* lse (times log2 e) and D of the two rows */
    att_row_stats(lr, Dr, lse, Dg, ((size_t)b * NH + h) * Tn, rows.lo, rows.hi, Tn);
    float dq[NO];
    att_wg_zero(dq);
    att_tma_wait(q_full, 0);
    for (int kt = 0; kt < nkt; kt++) {
        const int s = att_tma_slot(kt);
        att_tma_wait(full + 8 * s, att_tma_full_parity(kt));
        att_wg_dq_tile<HS>(dq, q_addr, do_addr, k_addr + s * TB, v_addr + s * TB, lr, Dr, rows, q0,
                           kt * BR, Tn, causal, scale_log2);
        att_tma_arrive(empty + 8 * s);
    }
    att_wg_dq_store(dqkv, dq, rows, b, h, Tn, NH, hs, scale);
#endif
}

template <int HS>
static bool launch_attention_backward_tma(tc_cuda_backend *cu, const CUtensorMap *qkv_map,
                                          const CUtensorMap *dout_map, att_bf16 *dqkv,
                                          const att_bf16 *dout, const att_bf16 *out,
                                          const float *lse, int B, int Tn, int NH, int hs,
                                          int causal) {
    const size_t smem_dkv = ATT_TMA_DKV_SMEM(HS), smem_dq = ATT_TMA_DQ_SMEM(HS);
    if ((size_t)B * Tn * NH * sizeof(float) > cu->scratch_bytes) return false;
    if (!att_wg_kernel_present(attention_backward_tma_dkv_kernel<HS>) ||
        !att_wg_kernel_present(attention_backward_tma_dq_kernel<HS>) ||
        !att_mma_smem_opt_in(attention_backward_tma_dkv_kernel<HS>, smem_dkv) ||
        !att_mma_smem_opt_in(attention_backward_tma_dq_kernel<HS>, smem_dq))
        return false;
    float *D = (float *)cu->scratch;
    const float scale = 1.0f / sqrtf((float)hs);
    if (!tc_cuda_attention_backward_d(cu, D, dout, out, B, Tn, NH, hs)) return true;

    const unsigned threads = ATT_WG_THREADS + ATT_TMA_PRODUCER;
    dim3 grid((unsigned)((Tn + ATT_WG_ROWS - 1) / ATT_WG_ROWS), (unsigned)NH, (unsigned)B);
    attention_backward_tma_dkv_kernel<HS><<<grid, threads, smem_dkv, cu->stream>>>(
        *qkv_map, *dout_map, dqkv, lse, D, Tn, NH, hs, causal, scale, scale * ATT_LOG2E);
    if (!tc_cuda_launched(cu, "attention_backward tma dkv")) return true;
    attention_backward_tma_dq_kernel<HS><<<grid, threads, smem_dq, cu->stream>>>(
        *qkv_map, *dout_map, dqkv, lse, D, Tn, NH, hs, causal, scale, scale * ATT_LOG2E);
    tc_cuda_launched(cu, "attention_backward tma dq");
    return true;
}

bool tc_cuda_attention_backward_tma(tc_cuda_backend *cu, tc_act *dqkv, const tc_act *dout,
                                    const tc_act *qkv, const tc_act *out, const float *lse, int B,
                                    int T, int NH, int HS, int causal) {
    if (cu->fp32 || cu->cc_major != 9 || HS % 8 != 0) return false;
    /* the D kernel's 16-byte loads, the stores of dqkv in pairs */
    if (((uintptr_t)dqkv | (uintptr_t)dout | (uintptr_t)out) % 16 != 0) return false;
    att_tma_geom gq, gd;
    att_tma_qkv_geom(&gq, B, T, NH, HS);
    att_tma_rows_geom(&gd, B, T, NH, HS);
    CUtensorMap qkv_map, dout_map;
    if (!att_tma_encode(&qkv_map, &gq, qkv) || !att_tma_encode(&dout_map, &gd, dout)) return false;
    att_bf16 *dq = (att_bf16 *)dqkv;
    const att_bf16 *d = (const att_bf16 *)dout, *o = (const att_bf16 *)out;
#define TC_ATT_BWD_TMA(P)                                                                          \
    launch_attention_backward_tma<P>(cu, &qkv_map, &dout_map, dq, d, o, lse, B, T, NH, HS, causal)
    switch (att_wg_padded_head(HS)) {
    case 16: return TC_ATT_BWD_TMA(16);
    case 32: return TC_ATT_BWD_TMA(32);
    case 48: return TC_ATT_BWD_TMA(48);
    case 64: return TC_ATT_BWD_TMA(64);
    case 80: return TC_ATT_BWD_TMA(80);
    case 96: return TC_ATT_BWD_TMA(96);
    case 112: return TC_ATT_BWD_TMA(112);
    case 128: return TC_ATT_BWD_TMA(128);
    default: return false;
    }
#undef TC_ATT_BWD_TMA
}
