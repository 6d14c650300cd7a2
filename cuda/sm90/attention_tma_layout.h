/* the TMA geometry and the pipeline bookkeeping of the warp-specialised
 * Hopper attention (attention_forward_tma.cu, attention_backward_tma.cu).
 * plain C as well as CUDA, so that tests/cuda/test_tma_layout.c checks these
 * very functions on the CPU: a model of the tensor copy (the box semantics of
 * cuTensorMapEncodeTiled / cp.async.bulk.tensor) must write exactly the tiles
 * of attention_wgmma_layout.h, and a model of mbarriers and named barriers
 * must run the producer/consumer protocol below to its end, under any
 * interleaving, without a slot overwritten before it was released.
 *
 * ---- tensor maps. qkv is (B, T, 3, NH, hs) bf16; the map describes it as a
 * 5-d tensor, fastest dimension first, every stride (bytes) at least the
 * previous stride times its extent, as the encoder requires:
 *     dim   0: d (hs)   1: head (NH)   2: q/k/v (3)   3: row (T)   4: batch (B)
 *     stride     2        2 hs           2 NH hs        6 NH hs      6 NH hs T
 * out and dout are (B, T, NH, hs): the 4-d map (d, head, row, batch).
 * lse and D, (B, NH, T) fp32, have no map: a row stride of 4 T bytes is not a
 * multiple of 16 for the CLIP lengths; the producer warp copies them.
 * a tile (64 rows of a head) is loaded as HS/8 boxes of 8 d x 64 rows, one per
 * 8-column panel: the box's elements land in shared memory in box order (d
 * fastest, then rows), so box p is panel p of the tile layout, 64 rows of 16
 * bytes, 1024 bytes, byte for byte (no swizzle: the descriptors of
 * attention_wgmma_layout.h read it unchanged). rows at or past T and columns
 * at or past hs are out of bounds and arrive as zeros; the transaction count
 * of a box is always its full size.
 *
 * ---- pipeline. K/V (forward) or Q/dO (backward) tiles stream through
 * ATT_TMA_STAGES slots. use n of slot s is tile i = n STAGES + s; an mbarrier
 * "full" per slot (count 1: the producer's arrive.expect_tx, completed by the
 * copies' bytes) and "empty" per slot (count: every consumer thread). the
 * consumers wait on full[s] with parity n & 1 (the backward's dkv kernel
 * counts 32 arrivals on full: every producer lane copies lse and D of the
 * tile, then arrives, lane 0 with the expect_tx); the producer, before use n >= 1,
 * waits on empty[s] with parity (n - 1) & 1 (the previous use released).
 *
 * ---- ping-pong (forward, two consumer warpgroups). the products of one
 * warpgroup are issued while the other does its softmax: two named barriers,
 * one per warpgroup ("my turn to issue"); each warpgroup has the same number
 * of issue points (nkt + 1: S of tile 0, then S of tile i with P V of tile
 * i - 1, then P V of the last tile). at each issue point warpgroup c waits on
 * its barrier (bar.sync, 256 threads), issues, and arrives on the other's
 * (bar.arrive); warpgroup 1 first arrives once on warpgroup 0's so that 0
 * begins, and leaves out its arrival after its last issue point, so that both
 * barriers end with no arrival pending. */
#ifndef TC_CUDA_ATTENTION_TMA_LAYOUT_H
#define TC_CUDA_ATTENTION_TMA_LAYOUT_H

#include "attention_wgmma_layout.h"

#define ATT_TMA_STAGES 2     /* slots of the streamed tiles */
#define ATT_TMA_BOX_D 8      /* d elements of a box: one panel, 16 bytes */
#define ATT_TMA_MAX_RANK 5   /* the encoder's limit */
#define ATT_TMA_PRODUCER 32  /* threads of the producer warp */
#define ATT_TMA_BAR_BYTES 64 /* the mbarriers at the end of shared memory */
#define ATT_TMA_PP_BAR0 1    /* named barriers of the ping-pong (0 is __syncthreads) */

/* a tensor map's arguments: extents, byte strides of dims 1.., box */
typedef struct {
    int rank;
    uint64_t dim[ATT_TMA_MAX_RANK];
    uint64_t stride[ATT_TMA_MAX_RANK - 1];
    uint32_t box[ATT_TMA_MAX_RANK];
    int elem_bytes;
} att_tma_geom;

/* qkv (B, T, 3, NH, hs) bf16 */
ATT_WG_FN void att_tma_qkv_geom(att_tma_geom *g, int B, int T, int NH, int hs) {
    const uint64_t A2 = 2u * (uint64_t)NH * (uint64_t)hs;
    g->rank = 5;
    g->elem_bytes = 2;
    g->dim[0] = (uint64_t)hs;
    g->dim[1] = (uint64_t)NH;
    g->dim[2] = 3;
    g->dim[3] = (uint64_t)T;
    g->dim[4] = (uint64_t)B;
    g->stride[0] = 2u * (uint64_t)hs;
    g->stride[1] = A2;
    g->stride[2] = 3 * A2;
    g->stride[3] = 3 * A2 * (uint64_t)T;
    g->box[0] = ATT_TMA_BOX_D;
    g->box[1] = 1;
    g->box[2] = 1;
    g->box[3] = ATT_WG_ROWS;
    g->box[4] = 1;
}

/* out / dout (B, T, NH, hs) bf16 */
ATT_WG_FN void att_tma_rows_geom(att_tma_geom *g, int B, int T, int NH, int hs) {
    const uint64_t A2 = 2u * (uint64_t)NH * (uint64_t)hs;
    g->rank = 4;
    g->elem_bytes = 2;
    g->dim[0] = (uint64_t)hs;
    g->dim[1] = (uint64_t)NH;
    g->dim[2] = (uint64_t)T;
    g->dim[3] = (uint64_t)B;
    g->dim[4] = 1;
    g->stride[0] = 2u * (uint64_t)hs;
    g->stride[1] = A2;
    g->stride[2] = A2 * (uint64_t)T;
    g->stride[3] = 0;
    g->box[0] = ATT_TMA_BOX_D;
    g->box[1] = 1;
    g->box[2] = ATT_WG_ROWS;
    g->box[3] = 1;
    g->box[4] = 1;
}

/* the first element of panel p of the tile of rows row0.. of head h,
 * which (0 q, 1 k, 2 v) of batch b: the coordinates of its box */
ATT_WG_FN void att_tma_qkv_coord(int32_t c[5], int p, int h, int which, int row0, int b) {
    c[0] = ATT_TMA_BOX_D * p;
    c[1] = h;
    c[2] = which;
    c[3] = row0;
    c[4] = b;
}
ATT_WG_FN void att_tma_rows_coord(int32_t c[4], int p, int h, int row0, int b) {
    c[0] = ATT_TMA_BOX_D * p;
    c[1] = h;
    c[2] = row0;
    c[3] = b;
}

/* the checks cuTensorMapEncodeTiled makes (its documentation), for a map
 * whose base address is `base` and with no interleave or swizzle: 0 if the
 * encoder would accept it, else the number of the broken rule (1 base
 * alignment, 2 extent, 3 stride multiple of 16, 4 stride order, 5 box size,
 * 6 box bytes of dim 0) */
ATT_WG_FN int att_tma_geom_check(const att_tma_geom *g, uint64_t base) {
    if (base % 16 != 0) return 1;
    for (int i = 0; i < g->rank; i++)
        if (g->dim[i] == 0 || g->dim[i] > ((uint64_t)1 << 32)) return 2;
    uint64_t prev = g->dim[0] * (uint64_t)g->elem_bytes;
    for (int i = 0; i + 1 < g->rank; i++) {
        if (g->stride[i] % 16 != 0 || g->stride[i] >= ((uint64_t)1 << 40)) return 3;
        if (g->stride[i] < prev) return 4;
        prev = g->stride[i] * g->dim[i + 1];
    }
    for (int i = 0; i < g->rank; i++)
        if (g->box[i] == 0 || g->box[i] > 256) return 5;
    if ((g->box[0] * (uint32_t)g->elem_bytes) % 16 != 0) return 6;
    return 0;
}

/* bytes of one box (its transaction count, out-of-bounds parts included) */
ATT_WG_FN uint32_t att_tma_box_bytes(const att_tma_geom *g) {
    uint32_t n = (uint32_t)g->elem_bytes;
    for (int i = 0; i < g->rank; i++)
        n *= g->box[i];
    return n;
}

/* the slot, and the parity to wait for, of streamed tile i */
ATT_WG_FN int att_tma_slot(int i) {
    return i % ATT_TMA_STAGES;
}
ATT_WG_FN uint32_t att_tma_full_parity(int i) {
    return (uint32_t)((i / ATT_TMA_STAGES) & 1);
}
/* the producer, before loading tile i (i >= ATT_TMA_STAGES): the parity of
 * the release of tile i - ATT_TMA_STAGES; -1 when the slot was never used */
ATT_WG_FN int att_tma_empty_parity(int i) {
    return i < ATT_TMA_STAGES ? -1 : (int)(((i / ATT_TMA_STAGES) - 1) & 1);
}

/* ping-pong: does warpgroup c arrive on the other's barrier after issue
 * point k of n? (warpgroup 1 leaves out its last; see above) */
ATT_WG_FN int att_tma_pp_arrives(int c, int k, int n) {
    return !(c == 1 && k == n - 1);
}

/* the query rows of one forward CTA: 64 per consumer warpgroup; a sequence
 * of at most 64 tokens takes one warpgroup (a second would have no row) */
ATT_WG_FN int att_tma_consumers(int T) {
    return T > ATT_WG_ROWS ? 2 : 1;
}

/* dynamic shared memory of the forward (nc Q tiles, STAGES x (K, V)), and of
 * the backward's dkv kernel (K, V resident; STAGES x (Q, dO, lse, D)) and dq
 * kernel (Q, dO resident; STAGES x (K, V)), the barriers at the end */
#define ATT_TMA_FWD_SMEM(HS, NC)                                                                   \
    (((NC) + 2 * ATT_TMA_STAGES) * ATT_WG_TILE_BYTES(HS) + ATT_TMA_BAR_BYTES)
#define ATT_TMA_DKV_SMEM(HS)                                                                       \
    ((2 + 2 * ATT_TMA_STAGES) * ATT_WG_TILE_BYTES(HS) + ATT_TMA_STAGES * 2 * ATT_WG_ROWS * 4 +     \
     ATT_TMA_BAR_BYTES)
#define ATT_TMA_DQ_SMEM(HS) ((2 + 2 * ATT_TMA_STAGES) * ATT_WG_TILE_BYTES(HS) + ATT_TMA_BAR_BYTES)

#endif
