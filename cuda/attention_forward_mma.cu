/* fused attention forward on tensor cores (mixed bf16 mode), FlashAttention-2
 * style: online softmax over key tiles with S = Q K^T and O += P V on
 * mma.sync m16n8k16 (bf16 inputs, fp32 accumulators; attention_mma.cuh).
 *
 * algorithm: one CTA of 4 warps per (64-query tile, head, batch); warp w owns
 * query rows 16w..16w+15 of the tile for the whole kernel. the Q tile is
 * copied to shared memory once and each warp keeps its (16, HS) A fragments
 * in registers. for each key tile of 64 keys (for causal attention only the
 * tiles up to the CTA's last query) K and V are copied to shared memory with
 * cp.async, double-buffered: tile kt+1 is in flight while tile kt is used.
 * per warp and key tile:
 *   S (16 x 64) = Q K^T                     HS/16 x 8 mma, fp32 in registers
 *   mask: key j >= T, and j > i when causal, -> -inf
 *   m' = max(m, rowmax S) (4-thread quad shuffle); alpha = e^(scale (m - m'))
 *   P = e^(scale S - scale m') (exp2 with scale log2 e folded in), in fp32;
 *   l = l alpha + rowsum P (per-thread partial sums, reduced over the quad
 *   once at the end); O = O alpha + bf16(P) V   4 x HS/16 x 2 mma
 * P's C fragments are reused as the A fragments of P V (no shared memory
 * round trip). at the end out = O / l (bf16) and lse = scale m + log l, the
 * log-sum-exp of the scaled scores exactly as the FMA kernel defines it, so
 * either backward accepts either forward's lse.
 *
 * masking: every row's first key tile holds key 0, which no query masks, so
 * m is finite after the first tile; the -inf guard in the max step keeps a
 * fully masked row (none occurs today) from producing inf - inf. rows at or
 * past T and keys at or past T are zero-filled by the copy (never read) and
 * only rows below T are written.
 *
 * layout as the FMA kernel: qkv (B, T, 3A) packed [q | k | v], read through
 * the row stride 3A; out (B, T, A); lse (B, NH, T). head sizes hs: every
 * multiple of 8 up to 128, computed in HS = hs rounded up to a multiple of
 * 16 (at least 32: the m16n8k16 shape's k); the padded columns are
 * zero-filled by the copy and never stored (hs 88 runs as 96, 104 as 112).
 * shared memory: Q tile + 2 x (K, V) tiles of 64 x (HS + 8) bf16 =
 * 25 600 / 46 080 / 87 040 bytes for HS 32 / 64 / 128 (dynamic; above 64 it
 * needs the opt-in above 48 KiB). rows of HS + 8 elements are an odd number
 * of 16-byte units for every HS here, so ldmatrix stays conflict-free. not covered (the caller
 * falls back to the FMA kernel): qkv or out not 16-byte aligned, or the device refusing the shared
 * memory size. */
#include "attention_mma.cuh"

#include <stdlib.h>
#include <string.h>

template <int HS>
__global__ void __launch_bounds__(ATT_MMA_THREADS)
    attention_forward_mma_kernel(att_bf16 *out, float *lse, const att_bf16 *qkv, int Tn, int NH,
                                 int hs, int causal, float scale, float scale_log2) {
    using cfg = att_mma_cfg<HS>;
    constexpr int STR = cfg::STR, KS = cfg::KS, ND = cfg::ND, NK = cfg::NK, TILE = cfg::TILE;
    constexpr int BR = ATT_MMA_ROWS;
    extern __shared__ uint4 att_fwd_smem[];
    att_bf16 *Qs = (att_bf16 *)att_fwd_smem;
    att_bf16 *Ks = Qs + TILE;     /* [2][BR][STR] */
    att_bf16 *Vs = Ks + 2 * TILE; /* [2][BR][STR] */

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int A = NH * hs;
    const size_t ld = 3 * (size_t)A;
    const att_bf16 *base = qkv + (size_t)b * Tn * ld + h * hs;
    const int q0 = qt * BR;
    const int row_lo = q0 + warp * 16 + g, row_hi = row_lo + 8; /* this thread's two rows */

    const int nkt = att_key_tiles(Tn, q0, causal);

    att_load_tile<HS>(Qs, base, ld, q0, Tn, hs, tid);
    att_load_tile<HS>(Ks, base + A, ld, 0, Tn, hs, tid);
    att_load_tile<HS>(Vs, base + 2 * A, ld, 0, Tn, hs, tid);
    att_cp_async_commit();

    uint32_t qa[KS][4];
    float o[ND][4];
#pragma unroll
    for (int n = 0; n < ND; n++)
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

    for (int kt = 0; kt < nkt; kt++) {
        /* tile kt has landed, and every warp is done with tile kt-1, whose
         * buffer the next copy overwrites */
        att_cp_async_wait_all();
        __syncthreads();
        if (kt + 1 < nkt) {
            const int nb = (kt + 1) & 1;
            att_load_tile<HS>(Ks + nb * TILE, base + A, ld, (kt + 1) * BR, Tn, hs, tid);
            att_load_tile<HS>(Vs + nb * TILE, base + 2 * A, ld, (kt + 1) * BR, Tn, hs, tid);
            att_cp_async_commit();
        }
        if (kt == 0) {
#pragma unroll
            for (int kk = 0; kk < KS; kk++)
                att_ldsm_a<STR>(qa[kk], Qs, warp * 16, kk * 16, lane);
        }
        const att_bf16 *Kb = Ks + (kt & 1) * TILE, *Vb = Vs + (kt & 1) * TILE;

        /* S = Q K^T: s[n] covers keys kt*64 + 8n .. 8n+7 */
        float s[NK][4];
#pragma unroll
        for (int n = 0; n < NK; n++)
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
#pragma unroll
            for (int np = 0; np < NK / 2; np++) {
                uint32_t bk[4];
                att_ldsm_b<STR>(bk, Kb, np * 16, kk * 16, lane);
                att_mma(s[2 * np], qa[kk], bk[0], bk[1]);
                att_mma(s[2 * np + 1], qa[kk], bk[2], bk[3]);
            }
        }

        /* mask: only the last tile (keys past T) and, when causal, a tile
         * reaching past the warp's first row need it (warp-uniform test) */
        const int k0 = kt * BR;
        if (k0 + BR > Tn || (causal && k0 + BR - 1 > q0 + warp * 16)) {
#pragma unroll
            for (int n = 0; n < NK; n++) {
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    const int j = k0 + n * 8 + 2 * t + (c & 1);
                    const int i = c < 2 ? row_lo : row_hi;
                    if (j >= Tn || (causal && j > i)) s[n][c] = -INFINITY;
                }
            }
        }

        /* online softmax: c = 0, 1 belong to row_lo, c = 2, 3 to row_hi */
        float mx[2] = {m[0], m[1]};
#pragma unroll
        for (int n = 0; n < NK; n++) {
            mx[0] = fmaxf(mx[0], fmaxf(s[n][0], s[n][1]));
            mx[1] = fmaxf(mx[1], fmaxf(s[n][2], s[n][3]));
        }
        float alpha[2], msc[2];
        att_online_max(mx, m, alpha, msc, scale_log2);
        float ps[2] = {0.0f, 0.0f};
#pragma unroll
        for (int n = 0; n < NK; n++) {
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const float p = exp2f(fmaf(s[n][c], scale_log2, -msc[c >> 1]));
                s[n][c] = p;
                ps[c >> 1] += p;
            }
        }
#pragma unroll
        for (int r = 0; r < 2; r++)
            l[r] = l[r] * alpha[r] + ps[r];
#pragma unroll
        for (int n = 0; n < ND; n++) {
            o[n][0] *= alpha[0];
            o[n][1] *= alpha[0];
            o[n][2] *= alpha[1];
            o[n][3] *= alpha[1];
        }

        /* O += P V */
        att_mma_pv<HS, NK>(o, s, Vb, lane);
    }

    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] = att_quad_sum(l[r]);
        inv[r] = 1.0f / l[r];
    }
    /* n-tiles at or past hs are the padding: not stored */
    att_bf16 *orow = out + ((size_t)b * Tn) * A + h * hs + 2 * t;
    if (row_lo < Tn) {
#pragma unroll
        for (int n = 0; n < ND; n++)
            if (n * 8 < hs)
                att_store2(orow + (size_t)row_lo * A + n * 8, o[n][0] * inv[0], o[n][1] * inv[0]);
    }
    if (row_hi < Tn) {
#pragma unroll
        for (int n = 0; n < ND; n++)
            if (n * 8 < hs)
                att_store2(orow + (size_t)row_hi * A + n * 8, o[n][2] * inv[1], o[n][3] * inv[1]);
    }
    if (t == 0) {
        float *lrow = lse + ((size_t)b * NH + h) * Tn;
        if (row_lo < Tn) lrow[row_lo] = m[0] * scale + logf(l[0]);
        if (row_hi < Tn) lrow[row_hi] = m[1] * scale + logf(l[1]);
    }
}

bool tc_cuda_attention_mma_selected(const tc_cuda_backend *cu) {
    return !cu->fp32 && cu->opt.attention != TC_ATTENTION_FMA;
}

template <int HS>
static bool launch_attention_forward_mma(tc_cuda_backend *cu, att_bf16 *out, float *lse,
                                         const att_bf16 *qkv, int B, int Tn, int NH, int hs,
                                         int causal) {
    const size_t smem = 5 * (size_t)att_mma_cfg<HS>::TILE * sizeof(att_bf16);
    if (!att_mma_smem_opt_in(attention_forward_mma_kernel<HS>, smem)) return false;
    const float scale = 1.0f / sqrtf((float)hs);
    dim3 grid((unsigned)((Tn + ATT_MMA_ROWS - 1) / ATT_MMA_ROWS), (unsigned)NH, (unsigned)B);
    attention_forward_mma_kernel<HS><<<grid, ATT_MMA_THREADS, smem, cu->stream>>>(
        out, lse, qkv, Tn, NH, hs, causal, scale, scale * ATT_LOG2E);
    tc_cuda_launched(cu, "attention_forward mma");
    return true;
}

bool tc_cuda_attention_forward_mma(tc_cuda_backend *cu, tc_act *out, float *lse, const tc_act *qkv,
                                   int B, int T, int NH, int HS, int causal) {
    if (cu->fp32) return false;
    /* cp.async copies 16 bytes: the row stride 3A and the head offset are
     * multiples of 8 elements (head sizes are), so the base pointer decides */
    if (((uintptr_t)qkv | (uintptr_t)out) % 16 != 0 || HS % 8 != 0) return false;
    att_bf16 *o = (att_bf16 *)out;
    const att_bf16 *q = (const att_bf16 *)qkv;
#define TC_ATT_FWD_MMA(P) launch_attention_forward_mma<P>(cu, o, lse, q, B, T, NH, HS, causal)
    switch (att_mma_padded_head(HS)) {
    case 32: return TC_ATT_FWD_MMA(32);
    case 48: return TC_ATT_FWD_MMA(48);
    case 64: return TC_ATT_FWD_MMA(64);
    case 80: return TC_ATT_FWD_MMA(80);
    case 96: return TC_ATT_FWD_MMA(96);
    case 112: return TC_ATT_FWD_MMA(112);
    case 128: return TC_ATT_FWD_MMA(128);
    default: return false;
    }
#undef TC_ATT_FWD_MMA
}
