/* shared by attention_forward_tma.cu and attention_backward_tma.cu: the PTX
 * of mbarriers, tensor copies (TMA) and named barriers, on top of the wgmma
 * helpers of attention_wgmma.cuh and the geometry / pipeline rules of
 * attention_tma_layout.h.
 *
 * ordering rules the kernels follow (PTX ISA: mbarrier, cp.async.bulk.tensor,
 * the async proxy):
 *   - the mbarriers are initialised by one thread, then
 *     fence.mbarrier_init and fence.proxy.async make them visible to the
 *     tensor copies, and a __syncthreads to every thread, before any use;
 *   - a tensor copy writes shared memory through the async proxy and
 *     completes bytes on an mbarrier; a thread that waits for the barrier's
 *     phase sees the bytes, and wgmma (async proxy too) may read them with
 *     no further fence;
 *   - a consumer arrives on a slot's "empty" barrier only after
 *     wgmma.wait_group has retired every product that read the slot; the
 *     producer waits for that phase before the next copy into the slot;
 *   - generic-proxy writes of shared memory (the producer lanes' lse and D)
 *     are released by the lane's mbarrier.arrive and acquired by the
 *     consumers' wait on the same phase. */
#ifndef TC_CUDA_ATTENTION_TMA_CUH
#define TC_CUDA_ATTENTION_TMA_CUH

#include "attention_tma_layout.h"
#include "attention_wgmma.cuh"
#include "tensor_map.h"

__device__ __forceinline__ void att_tma_bar_init(uint32_t bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
/* after every init by this thread, before the __syncthreads that publishes them */
__device__ __forceinline__ void att_tma_bar_init_fence() {
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ __forceinline__ void att_tma_arrive(uint32_t bar) {
    asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(bar)
                 : "memory");
}
/* arrive and add `bytes` to the phase's expected transaction count */
__device__ __forceinline__ void att_tma_arrive_expect(uint32_t bar, uint32_t bytes) {
    asm volatile(
        "{\n.reg .b64 st;\nmbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}\n" ::"r"(bar),
        "r"(bytes)
        : "memory");
}
/* until the phase of parity `parity` has completed */
__device__ __forceinline__ void att_tma_wait(uint32_t bar, uint32_t parity) {
    uint32_t done = 0;
    do {
        asm volatile("{\n.reg .pred p;\n"
                     "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                     "selp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(bar), "r"(parity)
                     : "memory");
    } while (!done);
}

/* the box at coordinates c of the map into shared memory at dst, its bytes
 * completed on bar */
__device__ __forceinline__ void att_tma_load5(uint32_t dst, const CUtensorMap *map, uint32_t bar,
                                              const int32_t (&c)[5]) {
    asm volatile("cp.async.bulk.tensor.5d.shared::cluster.global.mbarrier::complete_tx::bytes "
                 "[%0], [%1, {%2, %3, %4, %5, %6}], [%7];\n" ::"r"(dst),
                 "l"((uint64_t)(uintptr_t)map), "r"(c[0]), "r"(c[1]), "r"(c[2]), "r"(c[3]),
                 "r"(c[4]), "r"(bar)
                 : "memory");
}
__device__ __forceinline__ void att_tma_load4(uint32_t dst, const CUtensorMap *map, uint32_t bar,
                                              const int32_t (&c)[4]) {
    asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes "
                 "[%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(dst),
                 "l"((uint64_t)(uintptr_t)map), "r"(c[0]), "r"(c[1]), "r"(c[2]), "r"(c[3]), "r"(bar)
                 : "memory");
}
__device__ __forceinline__ void att_tma_prefetch_map(const CUtensorMap *map) {
    asm volatile("prefetch.tensormap [%0];\n" ::"l"((uint64_t)(uintptr_t)map) : "memory");
}

/* a 64-row tile of q (which 0), k (1) or v (2) of head h, batch b: its
 * HS / 8 panels, one box each, on bar */
template <int HS>
__device__ __forceinline__ void att_tma_qkv_tile(uint32_t dst, const CUtensorMap *map, uint32_t bar,
                                                 int h, int which, int row0, int b) {
#pragma unroll
    for (int p = 0; p < HS / 8; p++) {
        int32_t c[5];
        att_tma_qkv_coord(c, p, h, which, row0, b);
        att_tma_load5(dst + (uint32_t)(p * ATT_WG_PANEL), map, bar, c);
    }
}
/* the same for a tile of dout (B, T, NH, hs) */
template <int HS>
__device__ __forceinline__ void att_tma_rows_tile(uint32_t dst, const CUtensorMap *map,
                                                  uint32_t bar, int h, int row0, int b) {
#pragma unroll
    for (int p = 0; p < HS / 8; p++) {
        int32_t c[4];
        att_tma_rows_coord(c, p, h, row0, b);
        att_tma_load4(dst + (uint32_t)(p * ATT_WG_PANEL), map, bar, c);
    }
}

/* thread 0 of the CTA: the barriers of a kernel, then the fences that
 * publish them (a __syncthreads must follow). resident: the barrier of the
 * tiles loaded once (count 1); full / empty: ATT_TMA_STAGES barriers each */
__device__ __forceinline__ void att_tma_init_bars(uint32_t resident, uint32_t full, uint32_t empty,
                                                  uint32_t full_count, uint32_t empty_count) {
    att_tma_bar_init(resident, 1);
    for (int s = 0; s < ATT_TMA_STAGES; s++) {
        att_tma_bar_init(full + 8 * s, full_count);
        att_tma_bar_init(empty + 8 * s, empty_count);
    }
    att_tma_bar_init_fence();
}

/* the producer's lane 0 streaming the K and V tiles 0..nkt-1 of (h, b) through
 * the ring (forward, backward dq) */
template <int HS>
__device__ __forceinline__ void att_tma_stream_kv(uint32_t k_addr, uint32_t v_addr,
                                                  const CUtensorMap *map, uint32_t full,
                                                  uint32_t empty, int h, int b, int nkt) {
    constexpr int TB = ATT_WG_TILE_BYTES(HS);
    for (int kt = 0; kt < nkt; kt++) {
        const int s = att_tma_slot(kt), e = att_tma_empty_parity(kt);
        if (e >= 0) att_tma_wait(empty + 8 * s, (uint32_t)e);
        att_tma_arrive_expect(full + 8 * s, 2 * TB);
        att_tma_qkv_tile<HS>(k_addr + s * TB, map, full + 8 * s, h, 1, kt * ATT_WG_ROWS, b);
        att_tma_qkv_tile<HS>(v_addr + s * TB, map, full + 8 * s, h, 2, kt * ATT_WG_ROWS, b);
    }
}

/* named barriers of the ping-pong: wait for this warpgroup's turn (both
 * consumer warpgroups, 256 threads, count on it), hand the turn over */
__device__ __forceinline__ void att_tma_pp_wait(int id) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "n"(2 * ATT_WG_THREADS) : "memory");
}
__device__ __forceinline__ void att_tma_pp_pass(int id) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "n"(2 * ATT_WG_THREADS) : "memory");
}

#endif
