/* shared by attention_forward.cu and attention_backward.cu: the thread layout
 * of the fused attention kernels.
 *
 * a head of hs dims (any multiple of 8 up to 256) is computed in the padded
 * size HSP, the power of two from 16 to 256 at or above it: the dims from hs
 * to HSP are zeros in registers and shared memory, so they add nothing to a
 * dot product, and they are never stored. addresses use hs (A = NH*hs).
 * a tile is BT rows (queries or keys); each row is owned by G = HSP/16
 * consecutive threads of one warp, each thread holding 16 of the HSP dims in
 * registers. a dot product is 16 FMAs per thread followed by a butterfly
 * over the G threads (__shfl_xor with offsets < G stays inside the group
 * because G divides 32). tiles are BT = 64 rows up to HSP 64, 32 rows for
 * 128 and 16 for 256, so that two fp32 (BT, HSP) tiles take 32 KB of shared
 * memory at most and a block has BT*G <= 256 threads. */
#ifndef TC_CUDA_ATTENTION_COMMON_H
#define TC_CUDA_ATTENTION_COMMON_H

#include "cuda_internal.h"

#define ATT_DPT 16 /* head dims per thread */

template <int HS> struct att_cfg {
    static constexpr int G = HS / ATT_DPT;
    static constexpr int BT = HS > 128 ? 16 : HS > 64 ? 32 : 64;
    static constexpr int THREADS = BT * G;
    /* the butterfly of att_group_sum stays inside a row's group only when G
     * divides the warp; full warps keep every shuffle mask 0xffffffff valid */
    static_assert(32 % G == 0 && THREADS % 32 == 0 && THREADS <= 1024, "attention thread layout");
    /* the largest static shared memory of the three kernels (two fp32 tiles
     * plus lse and D of a tile) stays under the 48 KiB a launch gets without
     * the opt-in attribute */
    static_assert(2 * BT * HS * sizeof(float) + 2 * BT * sizeof(float) <= 48 * 1024,
                  "attention tiles over the 48 KiB static shared memory limit");
};

/* sum over the G threads that own one row; every one of them gets the sum */
template <int G> __device__ __forceinline__ float att_group_sum(float v) {
#pragma unroll
    for (int off = G / 2; off > 0; off >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

/* dot of a thread's 16 register values with 16 floats of a shared-memory row */
__device__ __forceinline__ float att_dot16(const float *r, const float *sm) {
    const float4 *s4 = (const float4 *)sm;
    float acc = 0.0f;
#pragma unroll
    for (int d = 0; d < ATT_DPT / 4; d++) {
        float4 v = s4[d];
        acc += r[4 * d] * v.x + r[4 * d + 1] * v.y + r[4 * d + 2] * v.z + r[4 * d + 3] * v.w;
    }
    return acc;
}

/* acc[0..16) += p * sm[0..16) */
__device__ __forceinline__ void att_axpy16(float *acc, float p, const float *sm) {
    const float4 *s4 = (const float4 *)sm;
#pragma unroll
    for (int d = 0; d < ATT_DPT / 4; d++) {
        float4 v = s4[d];
        acc[4 * d] += p * v.x;
        acc[4 * d + 1] += p * v.y;
        acc[4 * d + 2] += p * v.z;
        acc[4 * d + 3] += p * v.w;
    }
}

/* loads 16 dims of one row (T elements) into registers as fp32; the dims
 * at or past n (a padded head's tail: n is 0, 8 or 16, head sizes being
 * multiples of 8) are zeros and not read */
template <typename T> __device__ __forceinline__ void att_load16(float *r, const T *src, int n) {
#pragma unroll
    for (int d = 0; d < ATT_DPT / 2; d++) {
        r[d] = n > 0 ? tc_ldf(src + d) : 0.0f;
        r[d + ATT_DPT / 2] = n > ATT_DPT / 2 ? tc_ldf(src + d + ATT_DPT / 2) : 0.0f;
    }
}

/* the dims of a thread's 16 that lie inside a head of hs dims */
__device__ __forceinline__ int att_valid16(int hs, int part) {
    return min(max(hs - part * ATT_DPT, 0), ATT_DPT);
}

/* the padded head size the kernels are instantiated for: 16 .. 256 */
static inline int att_padded_head(int hs) {
    int p = 16;
    while (p < hs)
        p *= 2;
    return p;
}

#endif
