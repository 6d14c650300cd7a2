/* the shared-memory tile layout, the wgmma matrix descriptors and the register
 * fragments of the Hopper attention kernels (attention_forward_wgmma.cu,
 * attention_backward_wgmma.cu). plain C as well as CUDA, so that
 * tests/cuda/test_wgmma_layout.c checks these very functions, on the CPU,
 * against a model of wgmma written from the PTX ISA ("Asynchronous
 * Warpgroup Level Matrix" sections: register fragments, shared memory matrix
 * layout, matrix descriptor).
 *
 * ---- tiles. a tile is 64 rows (queries or keys) of HS bf16 (HS a multiple
 * of 16). it is stored as HS/8 column panels of 8 elements; a panel is the
 * 64 rows x 16 bytes one after the other (1024 bytes):
 *     byte offset of (r, c) = (c / 8) * 1024 + r * 16 + (c % 8) * 2
 * so any 8 consecutive rows (from a multiple of 8) of one panel are 128
 * contiguous bytes: a "core matrix" of wgmma's no-swizzle mode (8 rows of 16
 * bytes), whichever way the tile is read:
 *   K-major (the tile's rows are M or N, its columns K: Q, K and dO in
 *   S = Q K^T, dP = dO V^T, and K, V in S^T = K Q^T, dP^T = V dO^T):
 *     core matrix = 8 rows x 8 k; the next one along K is the next panel
 *     (leading byte offset 1024), along M/N the next 8 rows (stride byte
 *     offset 128).
 *   MN-major (the tile's rows are K, its columns N: V in O = P V, dO in
 *   dV = P^T dO, Q in dK = dS^T Q, K in dQ = dS K; imm-trans-b = 1):
 *     core matrix = 8 k x 8 n; the next one along K is the next 8 rows
 *     (leading byte offset 128), along N the next panel (stride 1024).
 * one storage serves both: no transposed copy. swizzle mode 0 (none), base
 * offset 0: descriptors only need 16-byte aligned starts.
 *
 * ---- copies. a tile is filled with 16-byte copies, chunk idx of 64 * HS/8:
 * 8 consecutive chunks are rows 8o..8o+7 of one panel (one core matrix, 128
 * contiguous bytes of shared memory; 8 rows x 16 bytes of global memory, each
 * a full 32-byte sector pair with its neighbour panel in the same warp).
 *
 * ---- register fragments (warpgroup of 128 threads, tid = threadIdx.x % 128,
 * warp w = tid / 32, g = (tid % 32) / 4, t = tid % 4):
 *   D (m64nNk16, fp32), register i of N/2:
 *     row 16w + g + 8 ((i / 2) % 2), column 8 (i / 4) + 2t + (i % 2)
 *   A (m64k16, bf16, from registers), register j of 4, half h (h = 0: the
 *   low 16 bits):   row 16w + g + 8 (j % 2), column 8 (j / 2) + 2t + h
 * so the D registers 8k .. 8k+7 of a 64 x N product, packed in pairs, are the
 * A fragment of its columns 16k .. 16k+15: P and dS go from one product into
 * the next without shared memory (FlashAttention-3, as FlashAttention-2 does
 * with mma.sync). */
#ifndef TC_CUDA_ATTENTION_WGMMA_LAYOUT_H
#define TC_CUDA_ATTENTION_WGMMA_LAYOUT_H

#include <stdint.h>

#ifdef __CUDACC__
#define ATT_WG_FN static inline __host__ __device__
#else
#define ATT_WG_FN static inline
#endif

#define ATT_WG_ROWS 64                  /* tile rows: the M of m64nNk16 */
#define ATT_WG_THREADS 128              /* one warpgroup */
#define ATT_WG_PANEL (ATT_WG_ROWS * 16) /* bytes of one 8-column panel */
#define ATT_WG_CORE 128                 /* bytes of one 8 x 16-byte core matrix */
#define ATT_WG_MAX_HS 128               /* widest padded head */

/* bytes of a tile, and the dynamic shared memory of the kernels: forward
 * Q + 2 x (K, V) tiles; backward dkv K, V + 2 x (Q, dO) tiles + lse and D of
 * 2 x 64 queries (fp32); backward dq Q, dO + 2 x (K, V) tiles. at HS 128:
 * 80, 97 and 96 KiB (the opt-in above 48 KiB; Hopper allows 227 KiB), and
 * every tile address stays below the descriptors' 2^18 */
#define ATT_WG_TILE_BYTES(HS) (ATT_WG_ROWS * (HS)*2)
#define ATT_WG_FWD_SMEM(HS) (5 * ATT_WG_TILE_BYTES(HS))
#define ATT_WG_DKV_SMEM(HS) (6 * ATT_WG_TILE_BYTES(HS) + 4 * ATT_WG_ROWS * 4)
#define ATT_WG_DQ_SMEM(HS) (6 * ATT_WG_TILE_BYTES(HS))

/* byte offset of element (r, c) in a tile */
ATT_WG_FN uint32_t att_wg_offset(int r, int c) {
    return (uint32_t)((c >> 3) * ATT_WG_PANEL + r * 16 + (c & 7) * 2);
}

/* the padded head width: hs (a multiple of 8) rounded up to a multiple of
 * 16 (the k of m64nNk16); 0 above ATT_WG_MAX_HS (not covered) */
ATT_WG_FN int att_wg_padded_head(int hs) {
    int p = (hs + 15) / 16 * 16;
    return p > ATT_WG_MAX_HS ? 0 : p;
}

/* chunk idx of a tile copy (chunks_per_row = HS / 8): its row and panel */
ATT_WG_FN void att_wg_chunk(int idx, int chunks_per_row, int *row, int *panel) {
    const int octet = idx >> 3;
    *panel = octet % chunks_per_row;
    *row = (octet / chunks_per_row) * 8 + (idx & 7);
}

/* does the chunk at (tile row r, panel p) hold data? rows at or past Tn and
 * panels at or past the head's hs columns are zero-filled without a read */
ATT_WG_FN int att_wg_chunk_valid(int row0, int r, int p, int Tn, int hs) {
    return row0 + r < Tn && p * 8 < hs;
}

/* a shared memory matrix descriptor: start address, leading and stride byte
 * offsets (each a multiple of 16, below 2^18), base offset 0, no swizzle:
 *   bits 0-13 start >> 4, 16-29 leading >> 4, 32-45 stride >> 4,
 *   49-51 base offset, 62-63 swizzle mode */
ATT_WG_FN uint64_t att_wg_desc(uint32_t start, uint32_t lead, uint32_t stride) {
    return (uint64_t)((start >> 4) & 0x3FFFu) | ((uint64_t)((lead >> 4) & 0x3FFFu) << 16) |
           ((uint64_t)((stride >> 4) & 0x3FFFu) << 32);
}

/* K-major operand of k-step ks (tile columns 16 ks .. 16 ks + 15), its M/N
 * rows from tile row r0 (a multiple of 8) on; tile = the tile's shared address */
ATT_WG_FN uint64_t att_wg_desc_k(uint32_t tile, int r0, int ks) {
    return att_wg_desc(tile + att_wg_offset(r0, 16 * ks), ATT_WG_PANEL, ATT_WG_CORE);
}

/* MN-major operand of k-step ks (tile rows 16 ks .. 16 ks + 15), N from column 0 */
ATT_WG_FN uint64_t att_wg_desc_mn(uint32_t tile, int ks) {
    return att_wg_desc(tile + att_wg_offset(16 * ks, 0), ATT_WG_CORE, ATT_WG_PANEL);
}

/* D fragment: row and column of accumulator register i of thread tid */
ATT_WG_FN int att_wg_acc_row(int tid, int i) {
    return 16 * (tid >> 5) + ((tid & 31) >> 2) + 8 * ((i >> 1) & 1);
}
ATT_WG_FN int att_wg_acc_col(int tid, int i) {
    return 8 * (i >> 2) + 2 * (tid & 3) + (i & 1);
}

/* A fragment: row and column (within the k-step) of register j, half h */
ATT_WG_FN int att_wg_a_row(int tid, int j) {
    return 16 * (tid >> 5) + ((tid & 31) >> 2) + 8 * (j & 1);
}
ATT_WG_FN int att_wg_a_col(int tid, int j, int h) {
    return 8 * (j >> 1) + 2 * (tid & 3) + h;
}

/* the D register that goes into the low half of A register j of k-step ks
 * (the high half is the next register) */
ATT_WG_FN int att_wg_a_from_acc(int ks, int j) {
    return 8 * ks + 2 * j;
}

#endif
