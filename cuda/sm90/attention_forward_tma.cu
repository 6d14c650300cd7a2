/* fused attention forward for Hopper (sm_90a, mixed bf16 mode), warp
 * specialised as FlashAttention-3 describes: the algorithm and the products
 * of attention_forward_wgmma.cu (wgmma m64nNk16: S = Q K^T from shared
 * memory, O += P V with P in registers), with
 *   - TMA loads: one producer warp (its lane 0) issues every copy as tensor
 *     copies (cp.async.bulk.tensor) that complete on mbarriers; the consumer
 *     threads issue no load;
 *   - a K/V ring of ATT_TMA_STAGES slots with full/empty mbarriers (the
 *     protocol of attention_tma_layout.h), so the copies of the next tiles
 *     run under the products of this one;
 *   - two consumer warpgroups per CTA (128 query rows) when T > 64, one
 *     otherwise; each takes its 64 rows through every key tile of the CTA
 *     (tiles past its causal diagonal are fully masked, P = 0, so the two
 *     keep the same pipeline);
 *   - the softmax overlapped with the products: at tile i a warpgroup issues
 *     S_i = Q K_i^T and O += P_{i-1} V_{i-1} as two wgmma batches, waits for
 *     the first only, and runs the softmax of S_i while P V still runs; then
 *     it waits for P V, releases slot i-1 and rescales O;
 *   - ping-pong between the two warpgroups (named barriers: one issues its
 *     products while the other does its softmax).
 * registers are not rebalanced between producer and consumers (setmaxnreg):
 * the counts depend on what the compiler allocates, and a wrong pair would
 * block the CTA; the producer warp is one warp, not a warpgroup, to keep its
 * share small.
 *
 * the output, lse and their layout are those of the other forwards (the
 * same lse, so every backward accepts it). head sizes: multiples of 8 up to
 * 128 (padded to 16: the padded columns arrive as zeros, out of bounds of the
 * tensor map). not covered (the caller runs the cp.async wgmma kernel, then
 * mma): the tensor map refused (alignment, the driver), the shared memory
 * refused, or no sm_90a code for the device. */
#include "attention_tma.cuh"

/* issue point k of a consumer warpgroup: wait for its turn (ping-pong with
 * two warpgroups), and after the issue hand it to the other */
template <int NC> __device__ __forceinline__ void att_tma_turn_begin(int c) {
    if (NC == 2) att_tma_pp_wait(ATT_TMA_PP_BAR0 + c);
}
template <int NC> __device__ __forceinline__ void att_tma_turn_end(int c, int k, int n) {
    if (NC == 2 && att_tma_pp_arrives(c, k, n)) att_tma_pp_pass(ATT_TMA_PP_BAR0 + (c ^ 1));
}

template <int HS, int NC>
__global__ void __launch_bounds__(NC *ATT_WG_THREADS + ATT_TMA_PRODUCER)
    attention_forward_tma_kernel(const __grid_constant__ CUtensorMap qkv_map, att_bf16 *out,
                                 float *lse, int Tn, int NH, int hs, int causal, float scale,
                                 float scale_log2) {
#if ATT_WG_DEVICE_CODE
    constexpr int TB = ATT_WG_TILE_BYTES(HS), NO = HS / 2, BR = ATT_WG_ROWS;
    extern __shared__ __align__(128) unsigned char att_tma_fwd_smem[];
    const uint32_t q_addr = att_wg_addr(att_tma_fwd_smem);  /* [NC] tiles */
    const uint32_t k_addr = q_addr + NC * TB;               /* [STAGES] tiles */
    const uint32_t v_addr = k_addr + ATT_TMA_STAGES * TB;   /* [STAGES] tiles */
    const uint32_t q_full = v_addr + ATT_TMA_STAGES * TB;   /* mbarriers, 8 bytes each */
    const uint32_t kv_full = q_full + 8;                    /* [STAGES] */
    const uint32_t kv_empty = kv_full + 8 * ATT_TMA_STAGES; /* [STAGES] */

    const int h = blockIdx.y, b = blockIdx.z;
    const int q0 = blockIdx.x * NC * BR;
    const int nkt = att_key_tiles(Tn, q0 + (NC - 1) * BR, causal); /* the CTA's key tiles */

    if (threadIdx.x == 0) att_tma_init_bars(q_full, kv_full, kv_empty, 1, NC * ATT_WG_THREADS);
    __syncthreads();

    if (threadIdx.x >= NC * ATT_WG_THREADS) {
        /* the producer warp: lane 0 issues the copies, the others are done */
        if (threadIdx.x == NC * ATT_WG_THREADS) {
            att_tma_prefetch_map(&qkv_map);
            att_tma_arrive_expect(q_full, NC * TB);
            for (int c = 0; c < NC; c++)
                att_tma_qkv_tile<HS>(q_addr + c * TB, &qkv_map, q_full, h, 0, q0 + c * BR, b);
            att_tma_stream_kv<HS>(k_addr, v_addr, &qkv_map, kv_full, kv_empty, h, b, nkt);
        }
        return;
    }

    /* a consumer warpgroup: rows qc .. qc + 63; warp w rows qc + 16w .. (the D layout) */
    const int c = threadIdx.x / ATT_WG_THREADS, tid = threadIdx.x % ATT_WG_THREADS;
    const int warp = tid >> 5, g = (tid & 31) >> 2, t = tid & 3;
    const int qc = q0 + c * BR, wq0 = qc + warp * 16;
    const int row_lo = wq0 + g, row_hi = row_lo + 8;
    const uint32_t qa = q_addr + c * TB;
    const int npoints = nkt + 1; /* S_0; S_i with P_{i-1} V_{i-1}; P V of the last */
    if (NC == 2 && c == 1) att_tma_pp_pass(ATT_TMA_PP_BAR0); /* warpgroup 0 issues first */

    float o[NO], s[32], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, alpha[2];
    uint32_t pa[4][4];
    att_wg_zero(o);
    att_tma_wait(q_full, 0);

    /* S_0, its softmax (O is zero: nothing to rescale) */
    att_tma_wait(kv_full, att_tma_full_parity(0));
    att_tma_turn_begin<NC>(c);
    att_wg_zero(s);
    att_wg_fence_regs(s);
    att_wg_fence();
    att_wg_xyt<HS>(s, qa, k_addr);
    att_wg_commit();
    att_tma_turn_end<NC>(c, 0, npoints);
    att_wg_wait_all();
    att_wg_fence_regs(s);
    att_wg_softmax_tile(s, m, l, alpha, tid, 0, Tn, causal, wq0, row_lo, row_hi, scale_log2);
    att_wg_pack_a(pa, s);

    for (int kt = 1; kt < nkt; kt++) {
        const int slot = att_tma_slot(kt), prev = att_tma_slot(kt - 1);
        att_tma_wait(kv_full + 8 * slot, att_tma_full_parity(kt));
        att_tma_turn_begin<NC>(c);
        att_wg_zero(s);
        att_wg_fence_regs(s);
        att_wg_fence_regs(o);
        att_wg_fence();
        att_wg_xyt<HS>(s, qa, k_addr + slot * TB); /* batch 1: S_kt */
        att_wg_commit();
        att_wg_pv<HS>(o, pa, v_addr + prev * TB); /* batch 2: O += P_{kt-1} V_{kt-1} */
        att_wg_commit();
        att_tma_turn_end<NC>(c, kt, npoints);
        /* S_kt is done; P V may still run: its A registers (pa) and O are
         * not touched until the next wait */
        att_wg_wait_but_one();
        att_wg_fence_regs(s);
        att_wg_softmax_tile(s, m, l, alpha, tid, kt * BR, Tn, causal, wq0, row_lo, row_hi,
                            scale_log2);
        att_wg_wait_all();
        att_wg_fence_regs(o);
        att_tma_arrive(kv_empty + 8 * prev); /* nothing reads tile kt-1 any more */
#pragma unroll
        for (int i = 0; i < NO; i++)
            o[i] *= alpha[(i >> 1) & 1];
        att_wg_pack_a(pa, s);
    }

    /* O += P V of the last tile */
    const int last = att_tma_slot(nkt - 1);
    att_tma_turn_begin<NC>(c);
    att_wg_fence_regs(o);
    att_wg_fence();
    att_wg_pv<HS>(o, pa, v_addr + last * TB);
    att_wg_commit();
    att_tma_turn_end<NC>(c, nkt, npoints);
    att_wg_wait_all();
    att_wg_fence_regs(o);
    att_tma_arrive(kv_empty + 8 * last);

    att_wg_store_out(out, lse, o, m, l, b, h, Tn, NH, hs, row_lo, row_hi, t, scale);
#endif
}

template <int HS, int NC>
static bool launch_attention_forward_tma(tc_cuda_backend *cu, const CUtensorMap *map, att_bf16 *out,
                                         float *lse, int B, int Tn, int NH, int hs, int causal) {
    const size_t smem = ATT_TMA_FWD_SMEM(HS, NC);
    if (!att_wg_kernel_present(attention_forward_tma_kernel<HS, NC>) ||
        !att_mma_smem_opt_in(attention_forward_tma_kernel<HS, NC>, smem))
        return false;
    const float scale = 1.0f / sqrtf((float)hs);
    const int rows = NC * ATT_WG_ROWS;
    dim3 grid((unsigned)((Tn + rows - 1) / rows), (unsigned)NH, (unsigned)B);
    attention_forward_tma_kernel<HS, NC>
        <<<grid, NC * ATT_WG_THREADS + ATT_TMA_PRODUCER, smem, cu->stream>>>(
            *map, out, lse, Tn, NH, hs, causal, scale, scale * ATT_LOG2E);
    tc_cuda_launched(cu, "attention_forward tma");
    return true;
}

template <int HS>
static bool launch_attention_forward_tma_nc(tc_cuda_backend *cu, const CUtensorMap *map,
                                            att_bf16 *out, float *lse, int B, int Tn, int NH,
                                            int hs, int causal) {
    if (att_tma_consumers(Tn) == 2)
        return launch_attention_forward_tma<HS, 2>(cu, map, out, lse, B, Tn, NH, hs, causal);
    return launch_attention_forward_tma<HS, 1>(cu, map, out, lse, B, Tn, NH, hs, causal);
}

bool tc_cuda_attention_forward_tma(tc_cuda_backend *cu, tc_act *out, float *lse, const tc_act *qkv,
                                   int B, int T, int NH, int HS, int causal) {
    if (cu->fp32 || cu->cc_major != 9 || HS % 8 != 0) return false;
    att_tma_geom geom;
    att_tma_qkv_geom(&geom, B, T, NH, HS);
    CUtensorMap map;
    if (!att_tma_encode(&map, &geom, qkv)) return false;
    att_bf16 *o = (att_bf16 *)out;
#define TC_ATT_FWD_TMA(P) launch_attention_forward_tma_nc<P>(cu, &map, o, lse, B, T, NH, HS, causal)
    switch (att_wg_padded_head(HS)) {
    case 16: return TC_ATT_FWD_TMA(16);
    case 32: return TC_ATT_FWD_TMA(32);
    case 48: return TC_ATT_FWD_TMA(48);
    case 64: return TC_ATT_FWD_TMA(64);
    case 80: return TC_ATT_FWD_TMA(80);
    case 96: return TC_ATT_FWD_TMA(96);
    case 112: return TC_ATT_FWD_TMA(112);
    case 128: return TC_ATT_FWD_TMA(128);
    default: return false;
    }
#undef TC_ATT_FWD_TMA
}
