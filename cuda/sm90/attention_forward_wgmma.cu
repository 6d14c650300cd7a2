/* fused attention forward for Hopper (sm_90a, mixed bf16 mode): the
 * FlashAttention-2 algorithm of ../attention_forward_mma.cu with the products
 * on warpgroup MMA (wgmma.mma_async m64nNk16, bf16 inputs, fp32
 * accumulators), as FlashAttention-3 computes them: S = Q K^T with both
 * operands read from shared memory by descriptor, O += P V with P in
 * registers (the D registers of S, packed to bf16: no shared memory round
 * trip) and V read from shared memory in its natural [key][dim] layout as an
 * MN-major operand (no transposed copy). layouts: attention_wgmma_layout.h.
 *
 * one CTA = one warpgroup (128 threads) per (64-query tile, head, batch);
 * warp w holds query rows 16w..16w+15 of the tile (the wgmma D layout). the
 * Q tile is copied once; K and V tiles (for causal attention only those up to
 * the CTA's last query) are double-buffered with cp.async: tile kt+1 is in
 * flight while tile kt is used. per key tile:
 *   S (64 x 64) = Q K^T        HS/16 wgmma m64n64k16 (one commit, one wait)
 *   mask: key j >= T, and j > i when causal, -> -inf
 *   online softmax in fp32 (exp2, scale log2 e folded in), rows reduced over
 *   the 4 threads of a quad, exactly as the mma kernel does
 *   O = O alpha + bf16(P) V    4 wgmma m64nHSk16 (k = 16 keys each)
 * at the end out = O / l (bf16) and lse = scale m + log l: the same lse as
 * the FMA and mma forwards, so every backward accepts it.
 *
 * not yet here (what FlashAttention-3 adds on top): TMA loads and a producer
 * warp with mbarriers instead of cp.async by all threads, two consumer
 * warpgroups ping-ponging softmax against the products, and the overlap of
 * the next S with the current softmax. this kernel waits for each batch of
 * wgmma before the softmax.
 *
 * head sizes: every multiple of 8 up to 128, run in HS = hs rounded up to a
 * multiple of 16 (the k of the instruction); the padded columns are
 * zero-filled by the copy and never stored. not covered (the caller runs the
 * mma or FMA kernels): a pointer not 16-byte aligned, the device refusing the
 * shared memory, or no sm_90a code for the device. */
#include "attention_wgmma.cuh"

template <int HS>
__global__ void __launch_bounds__(ATT_WG_THREADS)
    attention_forward_wgmma_kernel(att_bf16 *out, float *lse, const att_bf16 *qkv, int Tn, int NH,
                                   int hs, int causal, float scale, float scale_log2) {
#if ATT_WG_DEVICE_CODE
    constexpr int TB = ATT_WG_TILE_BYTES(HS), NO = HS / 2;
    extern __shared__ __align__(128) unsigned char att_wg_fwd_smem[];
    unsigned char *Qs = att_wg_fwd_smem;
    unsigned char *Ks = Qs + TB;     /* [2] tiles */
    unsigned char *Vs = Ks + 2 * TB; /* [2] tiles */
    const uint32_t q_addr = att_wg_addr(Qs), k_addr = att_wg_addr(Ks), v_addr = att_wg_addr(Vs);

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int A = NH * hs;
    const size_t ld = 3 * (size_t)A;
    const att_bf16 *base = qkv + (size_t)b * Tn * ld + h * hs;
    const int q0 = qt * ATT_WG_ROWS;
    const int row_lo = q0 + warp * 16 + g, row_hi = row_lo + 8; /* this thread's two rows */
    const int nkt = att_key_tiles(Tn, q0, causal);

    att_wg_load_tile<HS>(Qs, base, ld, q0, Tn, hs, tid);
    att_wg_load_tile<HS>(Ks, base + A, ld, 0, Tn, hs, tid);
    att_wg_load_tile<HS>(Vs, base + 2 * A, ld, 0, Tn, hs, tid);
    att_cp_async_commit();

    float o[NO];
    att_wg_zero(o);
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

    for (int kt = 0; kt < nkt; kt++) {
        /* tile kt has landed and is visible to wgmma; every warp has waited
         * for its products of tile kt-1, whose buffers the next copy reuses */
        att_wg_copies_landed();
        __syncthreads();
        if (kt + 1 < nkt) {
            const int nb = (kt + 1) & 1, r0 = (kt + 1) * ATT_WG_ROWS;
            att_wg_load_tile<HS>(Ks + nb * TB, base + A, ld, r0, Tn, hs, tid);
            att_wg_load_tile<HS>(Vs + nb * TB, base + 2 * A, ld, r0, Tn, hs, tid);
            att_cp_async_commit();
        }
        const uint32_t kb = k_addr + (kt & 1) * TB, vb = v_addr + (kt & 1) * TB;

        /* S = Q K^T; register i holds key k0 + att_wg_acc_col(tid, i) */
        float s[32];
        att_wg_zero(s);
        att_wg_fence_regs(s);
        att_wg_fence();
        att_wg_xyt<HS>(s, q_addr, kb);
        att_wg_commit();
        att_wg_wait_all();
        att_wg_fence_regs(s);

        float alpha[2];
        att_wg_softmax_tile(s, m, l, alpha, tid, kt * ATT_WG_ROWS, Tn, causal, q0 + warp * 16,
                            row_lo, row_hi, scale_log2);
#pragma unroll
        for (int i = 0; i < NO; i++)
            o[i] *= alpha[(i >> 1) & 1];

        /* O += bf16(P) V */
        uint32_t pa[4][4];
        att_wg_pack_a(pa, s);
        att_wg_fence_regs(o);
        att_wg_fence();
        att_wg_pv<HS>(o, pa, vb);
        att_wg_commit();
        att_wg_wait_all();
        att_wg_fence_regs(o);
    }

    att_wg_store_out(out, lse, o, m, l, b, h, Tn, NH, hs, row_lo, row_hi, t, scale);
#endif
}

template <int HS>
static bool launch_attention_forward_wgmma(tc_cuda_backend *cu, att_bf16 *out, float *lse,
                                           const att_bf16 *qkv, int B, int Tn, int NH, int hs,
                                           int causal) {
    const size_t smem = ATT_WG_FWD_SMEM(HS);
    if (!att_wg_kernel_present(attention_forward_wgmma_kernel<HS>) ||
        !att_mma_smem_opt_in(attention_forward_wgmma_kernel<HS>, smem))
        return false;
    const float scale = 1.0f / sqrtf((float)hs);
    dim3 grid((unsigned)((Tn + ATT_WG_ROWS - 1) / ATT_WG_ROWS), (unsigned)NH, (unsigned)B);
    attention_forward_wgmma_kernel<HS><<<grid, ATT_WG_THREADS, smem, cu->stream>>>(
        out, lse, qkv, Tn, NH, hs, causal, scale, scale * ATT_LOG2E);
    tc_cuda_launched(cu, "attention_forward wgmma");
    return true;
}

bool tc_cuda_attention_forward_wgmma(tc_cuda_backend *cu, tc_act *out, float *lse,
                                     const tc_act *qkv, int B, int T, int NH, int HS, int causal) {
    if (cu->fp32 || cu->cc_major != 9) return false;
    /* 16-byte copies: the row stride 3A and the head offset are multiples of
     * 8 elements (head sizes are), so the base pointers decide */
    if (((uintptr_t)qkv | (uintptr_t)out) % 16 != 0 || HS % 8 != 0) return false;
    att_bf16 *o = (att_bf16 *)out;
    const att_bf16 *q = (const att_bf16 *)qkv;
#define TC_ATT_FWD_WG(P) launch_attention_forward_wgmma<P>(cu, o, lse, q, B, T, NH, HS, causal)
    switch (att_wg_padded_head(HS)) {
    case 16: return TC_ATT_FWD_WG(16);
    case 32: return TC_ATT_FWD_WG(32);
    case 48: return TC_ATT_FWD_WG(48);
    case 64: return TC_ATT_FWD_WG(64);
    case 80: return TC_ATT_FWD_WG(80);
    case 96: return TC_ATT_FWD_WG(96);
    case 112: return TC_ATT_FWD_WG(112);
    case 128: return TC_ATT_FWD_WG(128);
    default: return false;
    }
#undef TC_ATT_FWD_WG
}
