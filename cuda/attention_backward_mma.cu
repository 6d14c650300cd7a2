/* fused attention backward on tensor cores (mixed bf16 mode), FlashAttention-2
 * style with recomputation, deterministic (no atomics).
 *
 * with scale = HS^-0.5, P_ij = exp(scale q_i.k_j - lse_i) recomputed from the
 * saved lse (either forward's: both save the same log-sum-exp), D_i = dO_i.O_i,
 * dP_ij = dO_i.v_j, dS_ij = P_ij (dP_ij - D_i):
 *   dV_j = sum_i P_ij dO_i,  dK_j = scale sum_i dS_ij q_i,  dQ_i = scale sum_j dS_ij k_j
 *
 * three kernels on the stream, each output element written by exactly one
 * thread and every sum taken in a fixed order (same inputs, same bits):
 *   D:   one thread per (b, t, head): D = dO.O over HS in fp32 (16-byte
 *        loads), into the backend's scratch as (B, NH, T).
 *   dkv: one CTA of 4 warps per (64-key tile, head, batch); warp w owns keys
 *        16w..16w+15 and accumulates dK, dV (16 x HS each, fp32 C fragments)
 *        in registers. K and V of the tile sit in shared memory for the whole
 *        kernel; the CTA walks the query tiles (for causal attention from the
 *        diagonal tile on), Q and dO tiles (and lse, D of the 64 queries)
 *        double-buffered through cp.async. per warp and query tile, with the
 *        query index as the mma n (and k) dimension:
 *          S^T  (16 x 64) = K Q^T           P^T = exp2(scale log2e S^T - log2e lse)
 *          dV  += bf16(P^T) dO              dP^T (16 x 64) = V dO^T
 *          dS^T = P^T (dP^T - D)            dK  += bf16(dS^T) Q
 *        at the end dK *= scale; dK and dV go to dqkv columns A + h HS and
 *        2A + h HS as bf16.
 *   dq:  one CTA per (64-query tile, head, batch); warp w owns queries
 *        16w..16w+15, Q and dO in shared memory for the whole kernel, lse and
 *        D of its two rows per thread in registers; K and V tiles (for causal
 *        attention up to the diagonal) double-buffered:
 *          S = Q K^T, P = exp2(scale log2e S - log2e lse), dP = dO V^T,
 *          dS = P (dP - D), dQ += bf16(dS) K
 *        at the end dQ *= scale, to dqkv columns h HS.
 * S and dP are computed in both kernels (the price of no cross-CTA reduction):
 * 5 + 2 = 7 (16 x 64 x HS) products per tile pair against the nominal 5.
 * P and dS are rounded to bf16 only as mma operands; the softmax, D, dS and
 * all accumulators are fp32.
 *
 * masking: P = 0 (exactly, not exp of a large negative number) for keys or
 * queries at or past T and, when causal, for j > i, hence dS = 0 there;
 * tiles are zero-filled past T (never read out of bounds) and only rows below
 * T are written, so every element of dqkv with t < T is written once.
 *
 * head sizes: every multiple of 8 up to 128, padded to a multiple of 16 (at
 * least 32) as the forward does (attention_forward_mma.cu) (128: dkv holds
 * 2 x 64 accumulator registers per
 * thread plus S^T and dP^T; see docs/cuda.md for the register counts).
 * shared memory per CTA: K, V + 2 x (Q, dO) tiles of 64 x (HS + 8) bf16 (+ 1 KiB
 * of lse and D for dkv) = 31 744 / 56 320 / 105 472 bytes (HS 32 / 64 / 128),
 * dynamic with the opt-in above 48 KiB. not covered (the caller falls back to
 * the FMA kernels): a pointer not 16-byte aligned, D not fitting the scratch,
 * or the device refusing the shared memory size. */
#include "attention_mma.cuh"

/* D = rowsum(dO * O) per (b, t, head), written (B, NH, T) */
__global__ void attention_backward_mma_d_kernel(float *D, const att_bf16 *dout, const att_bf16 *out,
                                                int Tn, int NH, int hs, size_t rows) {
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= rows) return;
    const int h = (int)(idx % NH);
    const size_t bt = idx / NH; /* b * Tn + t */
    const size_t off = bt * (size_t)NH * hs + (size_t)h * hs;
    const uint4 *o4 = (const uint4 *)(out + off), *d4 = (const uint4 *)(dout + off);
    float acc = 0.0f;
    for (int c = 0; c < hs / 8; c++) {
        uint4 ov = o4[c], dv = d4[c];
        const __nv_bfloat162 *op = (const __nv_bfloat162 *)&ov, *dp = (const __nv_bfloat162 *)&dv;
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float2 a = __bfloat1622float2(op[e]), d = __bfloat1622float2(dp[e]);
            acc += a.x * d.x;
            acc += a.y * d.y;
        }
    }
    const size_t b = bt / Tn, t = bt % Tn;
    D[(b * NH + h) * Tn + t] = acc;
}

template <int HS>
__global__ void __launch_bounds__(ATT_MMA_THREADS)
    attention_backward_mma_dkv_kernel(att_bf16 *dqkv, const att_bf16 *dout, const att_bf16 *qkv,
                                      const float *lse, const float *Dg, int Tn, int NH, int hs,
                                      int causal, float scale, float scale_log2) {
    using cfg = att_mma_cfg<HS>;
    constexpr int ND = cfg::ND, NK = cfg::NK, TILE = cfg::TILE;
    constexpr int BR = ATT_MMA_ROWS;
    extern __shared__ uint4 att_dkv_smem[];
    att_bf16 *Ks = (att_bf16 *)att_dkv_smem;
    att_bf16 *Vs = Ks + TILE;
    att_bf16 *Qs = Vs + TILE;                 /* [2][BR][STR] */
    att_bf16 *dOs = Qs + 2 * TILE;            /* [2][BR][STR] */
    float *lse_s = (float *)(dOs + 2 * TILE); /* [2][BR], times log2 e */
    float *D_s = lse_s + 2 * BR;              /* [2][BR] */

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

    att_load_tile<HS>(Ks, base + A, ld, k0, Tn, hs, tid);
    att_load_tile<HS>(Vs, base + 2 * A, ld, k0, Tn, hs, tid);
    att_load_tile<HS>(Qs, base, ld, qt0 * BR, Tn, hs, tid);
    att_load_tile<HS>(dOs, dobase, (size_t)A, qt0 * BR, Tn, hs, tid);
    att_cp_async_commit();
    if (tid < BR) {
        const int i = qt0 * BR + tid;
        lse_s[tid] = i < Tn ? lse_bh[i] * ATT_LOG2E : 0.0f;
        D_s[tid] = i < Tn ? D_bh[i] : 0.0f;
    }

    float dk[ND][4], dv[ND][4];
#pragma unroll
    for (int n = 0; n < ND; n++) {
        dk[n][0] = dk[n][1] = dk[n][2] = dk[n][3] = 0.0f;
        dv[n][0] = dv[n][1] = dv[n][2] = dv[n][3] = 0.0f;
    }

    for (int qt = qt0; qt < nqt; qt++) {
        const int buf = (qt - qt0) & 1;
        att_cp_async_wait_all();
        __syncthreads(); /* tile qt visible; tile qt-1's buffers free */
        if (qt + 1 < nqt) {
            const int nb = buf ^ 1;
            att_load_tile<HS>(Qs + nb * TILE, base, ld, (qt + 1) * BR, Tn, hs, tid);
            att_load_tile<HS>(dOs + nb * TILE, dobase, (size_t)A, (qt + 1) * BR, Tn, hs, tid);
            att_cp_async_commit();
            if (tid < BR) {
                const int i = (qt + 1) * BR + tid;
                lse_s[nb * BR + tid] = i < Tn ? lse_bh[i] * ATT_LOG2E : 0.0f;
                D_s[nb * BR + tid] = i < Tn ? D_bh[i] : 0.0f;
            }
        }
        const att_bf16 *Qb = Qs + buf * TILE, *dOb = dOs + buf * TILE;
        const float *lb = lse_s + buf * BR, *Db = D_s + buf * BR;
        const int i0 = qt * BR;

        /* S^T = K Q^T: rows keys (this warp's 16), columns the tile's 64 queries */
        float st[NK][4];
#pragma unroll
        for (int n = 0; n < NK; n++)
            st[n][0] = st[n][1] = st[n][2] = st[n][3] = 0.0f;
        att_mma_abt<HS, NK>(st, Ks, warp * 16, Qb, lane);

        /* P^T; c = 0, 1: key_lo, c = 2, 3: key_hi; column q = 8n + 2t + (c & 1) */
        const bool edge = i0 + BR > Tn || k0 + BR > Tn || (causal && k0 + warp * 16 + 15 > i0);
#pragma unroll
        for (int n = 0; n < NK; n++) {
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const int q = n * 8 + 2 * t + (c & 1), i = i0 + q;
                const int j = c < 2 ? key_lo : key_hi;
                const bool valid = !edge || (i < Tn && j < Tn && (!causal || j <= i));
                st[n][c] = valid ? exp2f(fmaf(st[n][c], scale_log2, -lb[q])) : 0.0f;
            }
        }

        /* dV += P^T dO (k = queries) */
        att_mma_pv<HS, NK>(dv, st, dOb, lane);

        /* dP^T = V dO^T */
        float dpt[NK][4];
#pragma unroll
        for (int n = 0; n < NK; n++)
            dpt[n][0] = dpt[n][1] = dpt[n][2] = dpt[n][3] = 0.0f;
        att_mma_abt<HS, NK>(dpt, Vs, warp * 16, dOb, lane);

        /* dS^T = P^T (dP^T - D), into dpt */
#pragma unroll
        for (int n = 0; n < NK; n++) {
#pragma unroll
            for (int c = 0; c < 4; c++)
                dpt[n][c] = st[n][c] * (dpt[n][c] - Db[n * 8 + 2 * t + (c & 1)]);
        }

        /* dK += dS^T Q (k = queries) */
        att_mma_pv<HS, NK>(dk, dpt, Qb, lane);
    }

    /* n-tiles at or past hs are the padding: not stored */
    att_bf16 *drow = dqkv + (size_t)b * Tn * ld + A + h * hs + 2 * t;
    if (key_lo < Tn) {
        att_bf16 *d = drow + (size_t)key_lo * ld;
#pragma unroll
        for (int n = 0; n < ND; n++) {
            if (n * 8 >= hs) continue;
            att_store2(d + n * 8, dk[n][0] * scale, dk[n][1] * scale);
            att_store2(d + A + n * 8, dv[n][0], dv[n][1]);
        }
    }
    if (key_hi < Tn) {
        att_bf16 *d = drow + (size_t)key_hi * ld;
#pragma unroll
        for (int n = 0; n < ND; n++) {
            if (n * 8 >= hs) continue;
            att_store2(d + n * 8, dk[n][2] * scale, dk[n][3] * scale);
            att_store2(d + A + n * 8, dv[n][2], dv[n][3]);
        }
    }
}

template <int HS>
__global__ void __launch_bounds__(ATT_MMA_THREADS)
    attention_backward_mma_dq_kernel(att_bf16 *dqkv, const att_bf16 *dout, const att_bf16 *qkv,
                                     const float *lse, const float *Dg, int Tn, int NH, int hs,
                                     int causal, float scale, float scale_log2) {
    using cfg = att_mma_cfg<HS>;
    constexpr int ND = cfg::ND, NK = cfg::NK, TILE = cfg::TILE;
    constexpr int BR = ATT_MMA_ROWS;
    extern __shared__ uint4 att_dq_smem[];
    att_bf16 *Qs = (att_bf16 *)att_dq_smem;
    att_bf16 *dOs = Qs + TILE;
    att_bf16 *Ks = dOs + TILE;    /* [2][BR][STR] */
    att_bf16 *Vs = Ks + 2 * TILE; /* [2][BR][STR] */

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int A = NH * hs;
    const size_t ld = 3 * (size_t)A;
    const att_bf16 *base = qkv + (size_t)b * Tn * ld + h * hs;
    const int q0 = qt * BR;
    const int row_lo = q0 + warp * 16 + g, row_hi = row_lo + 8;
    const int last_key = causal ? min(Tn - 1, q0 + BR - 1) : Tn - 1;
    const int nkt = last_key / BR + 1;

    att_load_tile<HS>(Qs, base, ld, q0, Tn, hs, tid);
    att_load_tile<HS>(dOs, dout + (size_t)b * Tn * A + h * hs, (size_t)A, q0, Tn, hs, tid);
    att_load_tile<HS>(Ks, base + A, ld, 0, Tn, hs, tid);
    att_load_tile<HS>(Vs, base + 2 * A, ld, 0, Tn, hs, tid);
    att_cp_async_commit();

    /* lse (times log2 e) and D of this thread's two rows */
    float lr[2] = {0.0f, 0.0f}, Dr[2] = {0.0f, 0.0f};
    {
        const size_t bh = ((size_t)b * NH + h) * Tn;
        if (row_lo < Tn) {
            lr[0] = lse[bh + row_lo] * ATT_LOG2E;
            Dr[0] = Dg[bh + row_lo];
        }
        if (row_hi < Tn) {
            lr[1] = lse[bh + row_hi] * ATT_LOG2E;
            Dr[1] = Dg[bh + row_hi];
        }
    }

    float dq[ND][4];
#pragma unroll
    for (int n = 0; n < ND; n++)
        dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;

    for (int kt = 0; kt < nkt; kt++) {
        att_cp_async_wait_all();
        __syncthreads(); /* tile kt visible; tile kt-1's buffers free */
        if (kt + 1 < nkt) {
            const int nb = (kt + 1) & 1;
            att_load_tile<HS>(Ks + nb * TILE, base + A, ld, (kt + 1) * BR, Tn, hs, tid);
            att_load_tile<HS>(Vs + nb * TILE, base + 2 * A, ld, (kt + 1) * BR, Tn, hs, tid);
            att_cp_async_commit();
        }
        const att_bf16 *Kb = Ks + (kt & 1) * TILE, *Vb = Vs + (kt & 1) * TILE;
        const int k0 = kt * BR;

        /* S = Q K^T (this warp's 16 queries x 64 keys) */
        float s[NK][4];
#pragma unroll
        for (int n = 0; n < NK; n++)
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
        att_mma_abt<HS, NK>(s, Qs, warp * 16, Kb, lane);

        const bool edge = q0 + BR > Tn || k0 + BR > Tn || (causal && k0 + BR - 1 > q0 + warp * 16);
#pragma unroll
        for (int n = 0; n < NK; n++) {
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const int j = k0 + n * 8 + 2 * t + (c & 1);
                const int i = c < 2 ? row_lo : row_hi;
                const bool valid = !edge || (i < Tn && j < Tn && (!causal || j <= i));
                s[n][c] = valid ? exp2f(fmaf(s[n][c], scale_log2, -lr[c >> 1])) : 0.0f;
            }
        }

        /* dP = dO V^T */
        float dp[NK][4];
#pragma unroll
        for (int n = 0; n < NK; n++)
            dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.0f;
        att_mma_abt<HS, NK>(dp, dOs, warp * 16, Vb, lane);

        /* dS = P (dP - D), into dp */
#pragma unroll
        for (int n = 0; n < NK; n++) {
#pragma unroll
            for (int c = 0; c < 4; c++)
                dp[n][c] = s[n][c] * (dp[n][c] - Dr[c >> 1]);
        }

        /* dQ += dS K (k = keys) */
        att_mma_pv<HS, NK>(dq, dp, Kb, lane);
    }

    att_bf16 *drow = dqkv + (size_t)b * Tn * ld + h * hs + 2 * t;
    if (row_lo < Tn) {
#pragma unroll
        for (int n = 0; n < ND; n++)
            if (n * 8 < hs)
                att_store2(drow + (size_t)row_lo * ld + n * 8, dq[n][0] * scale, dq[n][1] * scale);
    }
    if (row_hi < Tn) {
#pragma unroll
        for (int n = 0; n < ND; n++)
            if (n * 8 < hs)
                att_store2(drow + (size_t)row_hi * ld + n * 8, dq[n][2] * scale, dq[n][3] * scale);
    }
}

template <int HS>
static bool launch_attention_backward_mma(tc_cuda_backend *cu, att_bf16 *dqkv, const att_bf16 *dout,
                                          const att_bf16 *qkv, const att_bf16 *out,
                                          const float *lse, int B, int Tn, int NH, int hs,
                                          int causal) {
    const size_t tile_bytes = (size_t)att_mma_cfg<HS>::TILE * sizeof(att_bf16);
    const size_t smem_dkv = 6 * tile_bytes + 4 * ATT_MMA_ROWS * sizeof(float);
    const size_t smem_dq = 6 * tile_bytes;
    const size_t rows = (size_t)B * Tn * NH;
    if (rows * sizeof(float) > cu->scratch_bytes) return false;
    if (!att_mma_smem_opt_in(attention_backward_mma_dkv_kernel<HS>, smem_dkv) ||
        !att_mma_smem_opt_in(attention_backward_mma_dq_kernel<HS>, smem_dq))
        return false;
    float *D = (float *)cu->scratch;
    const float scale = 1.0f / sqrtf((float)hs);

    const unsigned dblocks = (unsigned)((rows + 255) / 256);
    attention_backward_mma_d_kernel<<<dblocks, 256, 0, cu->stream>>>(D, dout, out, Tn, NH, hs,
                                                                     rows);
    if (!tc_cuda_launched(cu, "attention_backward mma D")) return true;

    dim3 grid((unsigned)((Tn + ATT_MMA_ROWS - 1) / ATT_MMA_ROWS), (unsigned)NH, (unsigned)B);
    attention_backward_mma_dkv_kernel<HS><<<grid, ATT_MMA_THREADS, smem_dkv, cu->stream>>>(
        dqkv, dout, qkv, lse, D, Tn, NH, hs, causal, scale, scale * ATT_LOG2E);
    if (!tc_cuda_launched(cu, "attention_backward mma dkv")) return true;
    attention_backward_mma_dq_kernel<HS><<<grid, ATT_MMA_THREADS, smem_dq, cu->stream>>>(
        dqkv, dout, qkv, lse, D, Tn, NH, hs, causal, scale, scale * ATT_LOG2E);
    tc_cuda_launched(cu, "attention_backward mma dq");
    return true;
}

bool tc_cuda_attention_backward_mma(tc_cuda_backend *cu, tc_act *dqkv, const tc_act *dout,
                                    const tc_act *qkv, const tc_act *out, const float *lse, int B,
                                    int T, int NH, int HS, int causal) {
    if (cu->fp32) return false;
    /* 16-byte copies (cp.async, the D kernel's uint4 loads): row strides and
     * head offsets are multiples of 8 elements (head sizes are) */
    if (((uintptr_t)dqkv | (uintptr_t)dout | (uintptr_t)qkv | (uintptr_t)out) % 16 != 0 ||
        HS % 8 != 0)
        return false;
    att_bf16 *dq = (att_bf16 *)dqkv;
    const att_bf16 *d = (const att_bf16 *)dout, *q = (const att_bf16 *)qkv,
                   *o = (const att_bf16 *)out;
#define TC_ATT_BWD_MMA(P)                                                                          \
    launch_attention_backward_mma<P>(cu, dq, d, q, o, lse, B, T, NH, HS, causal)
    switch (att_mma_padded_head(HS)) {
    case 32: return TC_ATT_BWD_MMA(32);
    case 48: return TC_ATT_BWD_MMA(48);
    case 64: return TC_ATT_BWD_MMA(64);
    case 80: return TC_ATT_BWD_MMA(80);
    case 96: return TC_ATT_BWD_MMA(96);
    case 112: return TC_ATT_BWD_MMA(112);
    case 128: return TC_ATT_BWD_MMA(128);
    default: return false;
    }
#undef TC_ATT_BWD_MMA
}
