/* shared by attention_forward_mma.cu and attention_backward_mma.cu: the
 * tensor-core (mma.sync m16n8k16, bf16 in, fp32 accumulate) building blocks
 * of the FlashAttention-2 style kernels of the mixed (bf16) mode, and the
 * entry points the FMA launchers call to hand a call over to them.
 *
 * ---- fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with
 * floating point type"). lane = threadIdx.x % 32, g = lane >> 2 (groupID),
 * t = lane & 3 (threadID_in_group). a .b32 register holds two bf16, the
 * lower-indexed element in the low 16 bits.
 *   A (16 x 16, row-major, M x K), 4 registers a[0..3]:
 *     a[0] = A[g    ][2t, 2t+1]      a[1] = A[g + 8][2t, 2t+1]
 *     a[2] = A[g    ][2t+8, 2t+9]    a[3] = A[g + 8][2t+8, 2t+9]
 *   B (16 x 8, K x N, "col"), 2 registers b0, b1:
 *     b0 = B[2t, 2t+1][g]            b1 = B[2t+8, 2t+9][g]
 *   C, D (16 x 8, M x N, fp32), 4 registers c[0..3]:
 *     c[0], c[1] = C[g][2t], C[g][2t+1]      c[2], c[3] = C[g+8][2t], C[g+8][2t+1]
 * consequence used for P@V (FlashAttention-2): the C fragments of two
 * adjacent n-tiles (columns 16k..16k+7 and 16k+8..16k+15) are, element for
 * element, the A fragment of k-step k: a[0] = pack(c_lo[0], c_lo[1]),
 * a[1] = pack(c_lo[2], c_lo[3]), a[2] = pack(c_hi[0], c_hi[1]),
 * a[3] = pack(c_hi[2], c_hi[3]) (att_pack_a). no shuffles, no shared memory.
 *
 * ---- ldmatrix.m8n8.x4.b16: lanes 8m..8m+7 give the addresses of rows 0..7
 * of 8x8 matrix m (16 bytes each, 16-byte aligned); register m of lane L
 * receives matrix m's elements [L >> 2][2(L & 3), 2(L & 3)+1], or with .trans
 * the elements [2(L & 3)][L >> 2] and [2(L & 3)+1][L >> 2]. for a tile stored
 * row-major in shared memory X[row][col] (row stride STR elements):
 *   att_ldsm_a:      A fragment of rows r0..r0+15, cols c0..c0+15 of X;
 *                    lane L addresses X[r0 + (L & 15)][c0 + (L >> 4) * 8]
 *                    (matrices: rows lo/cols lo, rows hi/cols lo, rows lo/
 *                    cols hi, rows hi/cols hi = a[0], a[1], a[2], a[3]).
 *   att_ldsm_b:      B fragments for B[k][n] = X[n][k] (X holds B^T row-major,
 *                    e.g. K for S = Q K^T), k = c0..c0+15, two n-tiles
 *                    n = r0..r0+7 and r0+8..r0+15; lane L addresses
 *                    X[r0 + (L & 7) + (L >> 4) * 8][c0 + ((L >> 3) & 1) * 8];
 *                    r[0], r[1] = b0, b1 of n-tile r0; r[2], r[3] of r0+8.
 *   att_ldsm_b_trans: B fragments for B[k][n] = X[k][n] (X holds B row-major,
 *                    e.g. V for O = P V), k = r0..r0+15, two n-tiles
 *                    n = c0..c0+7 and c0+8..c0+15; lane L addresses
 *                    X[r0 + (L & 7) + ((L >> 3) & 1) * 8][c0 + (L >> 4) * 8];
 *                    r[0], r[1] = b0, b1 of n-tile c0; r[2], r[3] of c0+8.
 *
 * ---- shared-memory tiles: ATT_MMA_ROWS (64) rows of HS bf16, row stride
 * HS + 8 elements. the 8 elements of padding shift consecutive rows by 16
 * bytes modulo 128, so the 8 row addresses of one ldmatrix phase fall in 8
 * different 16-byte bank groups (no bank conflicts), and every row start
 * stays 16-byte aligned for cp.async and ldmatrix. tiles are filled with
 * cp.async (16 bytes per copy, L2 only); rows at or past T are zero-filled
 * by the copy itself (source size 0: nothing is read), so a partial tile
 * never reads out of bounds and contributes exact zeros. */
#ifndef TC_CUDA_ATTENTION_MMA_CUH
#define TC_CUDA_ATTENTION_MMA_CUH

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cuda_internal.h"

typedef __nv_bfloat16 att_bf16;

#define ATT_MMA_ROWS 64     /* query and key tile rows */
#define ATT_MMA_THREADS 128 /* 4 warps x 16 rows */
#define ATT_LOG2E 1.4426950408889634f

/* the padded head size of the tensor-core kernels: hs (a multiple of 8)
 * rounded up to a multiple of 16, at least 32; 0 above 128 (not covered) */
static inline int att_mma_padded_head(int hs) {
    int p = (hs + 15) / 16 * 16;
    return p < 32 ? 32 : p > 128 ? 0 : p;
}

template <int HS> struct att_mma_cfg {
    static constexpr int STR = HS + 8;              /* shared row stride, elements */
    static constexpr int KS = HS / 16;              /* k-steps over the head dims */
    static constexpr int ND = HS / 8;               /* n-tiles over the head dims */
    static constexpr int NK = ATT_MMA_ROWS / 8;     /* n-tiles over a key/query tile */
    static constexpr int TILE = ATT_MMA_ROWS * STR; /* elements of one tile */
    static_assert(HS % 16 == 0 && HS >= 32 && HS <= 128, "attention mma head size");
    static_assert(ATT_MMA_THREADS == 4 * 32 && ATT_MMA_ROWS == 4 * 16, "4 warps x 16 rows");
};

/* ---- PTX wrappers ---- */

/* d += a b: m16n8k16, bf16 inputs, fp32 accumulator (layouts above) */
__device__ __forceinline__ void att_mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                        uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t att_smem_addr(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void att_ldsm_x4(uint32_t (&r)[4], const att_bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(att_smem_addr(p))
                 : "memory");
}

__device__ __forceinline__ void att_ldsm_x4_trans(uint32_t (&r)[4], const att_bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(att_smem_addr(p))
                 : "memory");
}

/* 16-byte global -> shared copy; valid == false writes 16 zero bytes and
 * reads nothing (source size 0), but src must still be a valid address */
__device__ __forceinline__ void att_cp_async16(att_bf16 *dst, const att_bf16 *src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(att_smem_addr(dst)),
                 "l"(src), "r"(valid ? 16 : 0)
                 : "memory");
}

__device__ __forceinline__ void att_cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

/* waits until this thread's copies are done (all groups); a __syncthreads
 * after it makes every thread's copies visible */
__device__ __forceinline__ void att_cp_async_wait_all() {
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

/* ---- fragment helpers ---- */

__device__ __forceinline__ uint32_t att_pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); /* .x = lo: the low 16 bits */
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}

/* the A fragment of k-step k from the C fragments of n-tiles 2k and 2k+1 */
__device__ __forceinline__ void att_pack_a(uint32_t (&a)[4], const float (&lo)[4],
                                           const float (&hi)[4]) {
    a[0] = att_pack(lo[0], lo[1]);
    a[1] = att_pack(lo[2], lo[3]);
    a[2] = att_pack(hi[0], hi[1]);
    a[3] = att_pack(hi[2], hi[3]);
}

/* A fragment: rows r0..r0+15, cols c0..c0+15 of X (row stride STR) */
template <int STR>
__device__ __forceinline__ void att_ldsm_a(uint32_t (&a)[4], const att_bf16 *X, int r0, int c0,
                                           int lane) {
    att_ldsm_x4(a, X + (r0 + (lane & 15)) * STR + c0 + (lane >> 4) * 8);
}

/* B fragments of two n-tiles (n = r0.., r0+8..) for B[k][n] = X[n][k], k = c0..c0+15 */
template <int STR>
__device__ __forceinline__ void att_ldsm_b(uint32_t (&r)[4], const att_bf16 *X, int r0, int c0,
                                           int lane) {
    att_ldsm_x4(r, X + (r0 + (lane & 7) + (lane >> 4) * 8) * STR + c0 + ((lane >> 3) & 1) * 8);
}

/* B fragments of two n-tiles (n = c0.., c0+8..) for B[k][n] = X[k][n], k = r0..r0+15 */
template <int STR>
__device__ __forceinline__ void att_ldsm_b_trans(uint32_t (&r)[4], const att_bf16 *X, int r0,
                                                 int c0, int lane) {
    att_ldsm_x4_trans(r,
                      X + (r0 + (lane & 7) + ((lane >> 3) & 1) * 8) * STR + c0 + (lane >> 4) * 8);
}

/* acc (16 x 8*NT, C fragments) += A (16 x HS, rows r0.. of X) B, B[k][n] = Y[n][k]
 * with n over 8*NT rows of Y starting at 0: the S = Q K^T shape */
template <int HS, int NT>
__device__ __forceinline__ void att_mma_abt(float (&acc)[NT][4], const att_bf16 *X, int r0,
                                            const att_bf16 *Y, int lane) {
    constexpr int STR = att_mma_cfg<HS>::STR;
#pragma unroll
    for (int kk = 0; kk < HS / 16; kk++) {
        uint32_t a[4];
        att_ldsm_a<STR>(a, X, r0, kk * 16, lane);
#pragma unroll
        for (int np = 0; np < NT / 2; np++) {
            uint32_t b[4];
            att_ldsm_b<STR>(b, Y, np * 16, kk * 16, lane);
            att_mma(acc[2 * np], a, b[0], b[1]);
            att_mma(acc[2 * np + 1], a, b[2], b[3]);
        }
    }
}

/* acc (16 x HS, C fragments) += P (16 x 8*NK, C fragments, rounded to bf16) Y,
 * Y (8*NK rows x HS) row-major: the O = P V shape */
template <int HS, int NK>
__device__ __forceinline__ void att_mma_pv(float (&acc)[HS / 8][4], const float (&p)[NK][4],
                                           const att_bf16 *Y, int lane) {
    constexpr int STR = att_mma_cfg<HS>::STR;
#pragma unroll
    for (int kk = 0; kk < NK / 2; kk++) {
        uint32_t a[4];
        att_pack_a(a, p[2 * kk], p[2 * kk + 1]);
#pragma unroll
        for (int dp = 0; dp < HS / 16; dp++) {
            uint32_t b[4];
            att_ldsm_b_trans<STR>(b, Y, kk * 16, dp * 16, lane);
            att_mma(acc[2 * dp], a, b[0], b[1]);
            att_mma(acc[2 * dp + 1], a, b[2], b[3]);
        }
    }
}

/* queues the copy of rows row0..row0+63 (columns 0..HS) of a bf16 matrix with
 * row stride ld elements starting at src (row 0) into a shared tile; rows at
 * or past Tn, and the columns at or past hs of a head padded to HS, are
 * zero-filled without a read. all ATT_MMA_THREADS threads call it. */
template <int HS>
__device__ __forceinline__ void att_load_tile(att_bf16 *tile, const att_bf16 *src, size_t ld,
                                              int row0, int Tn, int hs, int tid) {
    constexpr int CH = HS / 8; /* 16-byte chunks per row */
    constexpr int STR = att_mma_cfg<HS>::STR;
#pragma unroll
    for (int idx = tid; idx < ATT_MMA_ROWS * CH; idx += ATT_MMA_THREADS) {
        const int r = idx / CH, c = idx % CH, row = row0 + r;
        const bool valid = row < Tn && c * 8 < hs;
        /* an invalid chunk points at row 0's first (T >= 1): a valid address, never read */
        att_cp_async16(tile + r * STR + c * 8, src + (valid ? (size_t)row * ld + c * 8 : 0), valid);
    }
}

/* row max / row sum of a C fragment row over the 4 threads (t = 0..3) that
 * hold it: xor 1 and 2 stay inside the quad */
__device__ __forceinline__ float att_quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float att_quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

/* the online softmax's new row maxima: mx holds this thread's maxima of the
 * two rows (the old m included), reduced here over the quad; msc is the new
 * maximum times scale log2 e (0 for a row with no key yet), alpha the factor
 * of what was accumulated (0 when m was -inf), and m takes the new maxima */
__device__ __forceinline__ void att_online_max(float (&mx)[2], float (&m)[2], float (&alpha)[2],
                                               float (&msc)[2], float scale_log2) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
        mx[r] = att_quad_max(mx[r]);
        msc[r] = mx[r] == -INFINITY ? 0.0f : mx[r] * scale_log2;
        alpha[r] = exp2f(m[r] * scale_log2 - msc[r]); /* m = -inf: 0 */
        m[r] = mx[r];
    }
}

/* the key tiles a query tile from q0 visits: every tile holding a key up to
 * its last query when causal, all of them otherwise */
__device__ __forceinline__ int att_key_tiles(int Tn, int q0, int causal) {
    const int last_key = causal ? min(Tn - 1, q0 + ATT_MMA_ROWS - 1) : Tn - 1;
    return last_key / ATT_MMA_ROWS + 1;
}

/* lse (times log2 e) and D of rows lo and hi of the (b, h) slice from bh on
 * ((B, NH, T) layout); 0 for a row at or past Tn */
__device__ __forceinline__ void att_row_stats(float (&lr)[2], float (&Dr)[2], const float *lse,
                                              const float *Dg, size_t bh, int lo, int hi, int Tn) {
    const int rows[2] = {lo, hi};
#pragma unroll
    for (int r = 0; r < 2; r++) {
        lr[r] = rows[r] < Tn ? lse[bh + rows[r]] * ATT_LOG2E : 0.0f;
        Dr[r] = rows[r] < Tn ? Dg[bh + rows[r]] : 0.0f;
    }
}

/* stores two fp32 values as one bf16x2 (4-byte aligned: even column) */
__device__ __forceinline__ void att_store2(att_bf16 *dst, float lo, float hi) {
    *(__nv_bfloat162 *)dst = __floats2bfloat162_rn(lo, hi);
}

/* ---- host side ---- */

/* raises a kernel's dynamic shared-memory limit when it needs more than the
 * default 48 KiB; false (the error cleared, so the next launch check is
 * clean) when the device refuses, and the caller falls back to FMA */
template <typename K> static inline bool att_mma_smem_opt_in(K kernel, size_t bytes) {
    if (bytes <= 48 * 1024) return true;
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes) ==
        cudaSuccess)
        return true;
    (void)cudaGetLastError();
    return false;
}

/* what the FMA launchers call: */

/* true when the tensor-core kernels are selected: the mixed (bf16) mode and
 * options.attention TC_ATTENTION_MMA, or TC_ATTENTION_WGMMA / _TMA (which
 * run them where the Hopper kernels do not cover the call or the device) */
bool tc_cuda_attention_mma_selected(const tc_cuda_backend *cu);

/* the tensor-core forward/backward. they return false, having queued nothing
 * and recorded nothing, when the call is outside what they cover (see the
 * file headers: head size, pointer alignment, shared memory, scratch); the
 * caller then runs the FMA kernels. true: the work is queued (or a launch
 * failure is recorded in the handle). shapes are already validated. */
bool tc_cuda_attention_forward_mma(tc_cuda_backend *cu, tc_act *out, float *lse, const tc_act *qkv,
                                   int B, int T, int NH, int HS, int causal);
bool tc_cuda_attention_backward_mma(tc_cuda_backend *cu, tc_act *dqkv, const tc_act *dout,
                                    const tc_act *qkv, const tc_act *out, const float *lse, int B,
                                    int T, int NH, int HS, int causal);

/* the same for the Hopper kernels (sm90/attention_*_wgmma.cu): false, nothing
 * queued, outside the mixed mode, off compute capability 9, or outside what
 * they cover; the caller then tries the mma kernels */
bool tc_cuda_attention_forward_wgmma(tc_cuda_backend *cu, tc_act *out, float *lse,
                                     const tc_act *qkv, int B, int T, int NH, int HS, int causal);
bool tc_cuda_attention_backward_wgmma(tc_cuda_backend *cu, tc_act *dqkv, const tc_act *dout,
                                      const tc_act *qkv, const tc_act *out, const float *lse, int B,
                                      int T, int NH, int HS, int causal);
/* and for the warp-specialised TMA kernels (sm90/attention_*_tma.cu): false,
 * nothing queued, in the same cases or when a tensor map is refused; the
 * caller then tries the wgmma kernels above */
bool tc_cuda_attention_forward_tma(tc_cuda_backend *cu, tc_act *out, float *lse, const tc_act *qkv,
                                   int B, int T, int NH, int HS, int causal);
bool tc_cuda_attention_backward_tma(tc_cuda_backend *cu, tc_act *dqkv, const tc_act *dout,
                                    const tc_act *qkv, const tc_act *out, const float *lse, int B,
                                    int T, int NH, int HS, int causal);

/* queues D = rowsum(dO * O) into D (B, NH, T) (fp32; dout, out 16-byte
 * aligned, hs a multiple of 8); false when the launch failed (recorded) */
bool tc_cuda_attention_backward_d(tc_cuda_backend *cu, float *D, const att_bf16 *dout,
                                  const att_bf16 *out, int B, int Tn, int NH, int hs);

#endif
