/* shared by attention_forward_wgmma.cu and attention_backward_wgmma.cu: the
 * PTX of warpgroup MMA (sm_90a) and the tile copy, on top of the layouts of
 * attention_wgmma_layout.h and the cp.async / packing helpers of
 * ../attention_mma.cuh.
 *
 * ordering rules the kernels follow (PTX ISA, wgmma.fence / commit_group /
 * wait_group and the async proxy):
 *   - shared memory written by cp.async (generic proxy) is read by wgmma
 *     (async proxy): every thread waits for its copies, issues
 *     fence.proxy.async.shared::cta, and a __syncthreads follows before any
 *     wgmma reads the tile;
 *   - wgmma.fence before the first wgmma of a batch: the accumulators and the
 *     A registers were written by ordinary instructions;
 *   - wgmma.commit_group, then wgmma.wait_group 0 before the accumulators or
 *     the A registers are touched again, and before the __syncthreads that
 *     lets another thread overwrite a tile the batch read;
 *   - att_wg_fence_regs after the wait (and before the fence) keeps the
 *     compiler from moving accumulator reads or writes across the asm
 *     statements (an empty asm that "redefines" each register).
 * the accumulate flag (scale-d) is always 1: the kernels zero accumulators
 * themselves, so no first-step special case can go wrong. */
#ifndef TC_CUDA_ATTENTION_WGMMA_CUH
#define TC_CUDA_ATTENTION_WGMMA_CUH

#include "../attention_mma.cuh"
#include "attention_wgmma_layout.h"

static_assert(ATT_WG_ROWS == ATT_MMA_ROWS, "the tile helpers of attention_mma.cuh assume 64 rows");

/* the kernels need sm_90a; compiled for anything else their bodies are empty
 * (the launchers only run them on a compute capability 9 device) */
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define ATT_WG_DEVICE_CODE 0
#else
#define ATT_WG_DEVICE_CODE 1
#endif

__device__ __forceinline__ void att_wg_fence() {
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void att_wg_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void att_wg_wait_all() {
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}
/* every batch but the most recent one has completed (batches complete in order) */
__device__ __forceinline__ void att_wg_wait_but_one() {
    asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
}
/* this thread's generic-proxy writes of shared memory (cp.async included)
 * become visible to the async proxy (wgmma operand reads) */
__device__ __forceinline__ void att_wg_proxy_fence() {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
template <int N> __device__ __forceinline__ void att_wg_fence_regs(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; i++)
        asm volatile("" : "+f"(d[i])::"memory");
}
template <int N> __device__ __forceinline__ void att_wg_zero(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; i++)
        d[i] = 0.0f;
}

#define ATT_WG_F8(d, i)                                                                            \
    "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]),    \
        "+f"(d[i + 6]), "+f"(d[i + 7])

/* d (64 x 64) += A B, A and B from shared memory, both K-major (imm-trans 0):
 * the S = Q K^T shape, descriptors from att_wg_desc_k */
__device__ __forceinline__ void att_wg_ss64(float (&d)[32], uint64_t da, uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, "
                 "%18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, "
                 "p, 1, 1, 0, 0;\n}\n"
                 : ATT_WG_F8(d, 0), ATT_WG_F8(d, 8), ATT_WG_F8(d, 16), ATT_WG_F8(d, 24)
                 : "l"(da), "l"(db), "r"(1)
                 : "memory");
}

/* d (64 x N) += A B, A (64 x 16) from registers (att_wg_a_from_acc), B from
 * shared memory MN-major (imm-trans-b 1, descriptors from att_wg_desc_mn):
 * the O = P V shape. one specialisation per padded head width. */
template <int N> struct att_wg_rs;
template <> struct att_wg_rs<16> {
    static __device__ __forceinline__ void run(float (&d)[8], const uint32_t (&a)[4], uint64_t db) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 "
                     "{%0, %1, %2, %3, %4, %5, %6, %7}, {%8, %9, %10, %11}, %12, p, 1, 1, 1;\n}\n"
                     : ATT_WG_F8(d, 0)
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1)
                     : "memory");
    }
};
template <> struct att_wg_rs<32> {
    static __device__ __forceinline__ void run(float (&d)[16], const uint32_t (&a)[4],
                                               uint64_t db) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
                     "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "
                     "{%16, %17, %18, %19}, %20, p, 1, 1, 1;\n}\n"
                     : ATT_WG_F8(d, 0), ATT_WG_F8(d, 8)
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1)
                     : "memory");
    }
};
template <> struct att_wg_rs<48> {
    static __device__ __forceinline__ void run(float (&d)[24], const uint32_t (&a)[4],
                                               uint64_t db) {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %29, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n48k16.f32.bf16.bf16 "
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, "
            "%19, %20, %21, %22, %23}, {%24, %25, %26, %27}, %28, p, 1, 1, 1;\n}\n"
            : ATT_WG_F8(d, 0), ATT_WG_F8(d, 8), ATT_WG_F8(d, 16)
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1)
            : "memory");
    }
};
template <> struct att_wg_rs<64> {
    static __device__ __forceinline__ void run(float (&d)[32], const uint32_t (&a)[4],
                                               uint64_t db) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
                     "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, "
                     "%17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
                     "{%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
                     : ATT_WG_F8(d, 0), ATT_WG_F8(d, 8), ATT_WG_F8(d, 16), ATT_WG_F8(d, 24)
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1)
                     : "memory");
    }
};
template <> struct att_wg_rs<80> {
    static __device__ __forceinline__ void run(float (&d)[40], const uint32_t (&a)[4],
                                               uint64_t db) {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %45, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n80k16.f32.bf16.bf16 "
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, "
            "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, "
            "%36, %37, %38, %39}, {%40, %41, %42, %43}, %44, p, 1, 1, 1;\n}\n"
            : ATT_WG_F8(d, 0), ATT_WG_F8(d, 8), ATT_WG_F8(d, 16), ATT_WG_F8(d, 24), ATT_WG_F8(d, 32)
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1)
            : "memory");
    }
};
template <> struct att_wg_rs<96> {
    static __device__ __forceinline__ void run(float (&d)[48], const uint32_t (&a)[4],
                                               uint64_t db) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %53, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n96k16.f32.bf16.bf16 "
                     "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, "
                     "%17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                     "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, "
                     "%47}, {%48, %49, %50, %51}, %52, p, 1, 1, 1;\n}\n"
                     : ATT_WG_F8(d, 0), ATT_WG_F8(d, 8), ATT_WG_F8(d, 16), ATT_WG_F8(d, 24),
                       ATT_WG_F8(d, 32), ATT_WG_F8(d, 40)
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1)
                     : "memory");
    }
};
template <> struct att_wg_rs<112> {
    static __device__ __forceinline__ void run(float (&d)[56], const uint32_t (&a)[4],
                                               uint64_t db) {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %61, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n112k16.f32.bf16.bf16 "
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, "
            "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, "
            "%36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, "
            "%53, %54, %55}, {%56, %57, %58, %59}, %60, p, 1, 1, 1;\n}\n"
            : ATT_WG_F8(d, 0), ATT_WG_F8(d, 8), ATT_WG_F8(d, 16), ATT_WG_F8(d, 24),
              ATT_WG_F8(d, 32), ATT_WG_F8(d, 40), ATT_WG_F8(d, 48)
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1)
            : "memory");
    }
};
template <> struct att_wg_rs<128> {
    static __device__ __forceinline__ void run(float (&d)[64], const uint32_t (&a)[4],
                                               uint64_t db) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
                     "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, "
                     "%17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                     "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, "
                     "%47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, "
                     "%62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
                     : ATT_WG_F8(d, 0), ATT_WG_F8(d, 8), ATT_WG_F8(d, 16), ATT_WG_F8(d, 24),
                       ATT_WG_F8(d, 32), ATT_WG_F8(d, 40), ATT_WG_F8(d, 48), ATT_WG_F8(d, 56)
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1)
                     : "memory");
    }
};

/* ---- tiles ---- */

/* the shared (32-bit) address of a byte of a tile */
__device__ __forceinline__ uint32_t att_wg_addr(const unsigned char *p) {
    return att_smem_addr(p);
}

/* queues the copy of rows row0..row0+63 (columns 0..HS) of a bf16 matrix
 * with row stride ld elements starting at src (row 0) into a tile (layout:
 * attention_wgmma_layout.h); rows at or past Tn and the columns at or past hs
 * are zero-filled without a read. all 128 threads call it. */
template <int HS>
__device__ __forceinline__ void att_wg_load_tile(unsigned char *tile, const att_bf16 *src,
                                                 size_t ld, int row0, int Tn, int hs, int tid) {
    constexpr int CH = HS / 8;
#pragma unroll
    for (int idx = tid; idx < ATT_WG_ROWS * CH; idx += ATT_WG_THREADS) {
        int r, p;
        att_wg_chunk(idx, CH, &r, &p);
        const bool valid = att_wg_chunk_valid(row0, r, p, Tn, hs);
        /* an invalid chunk points at row 0's first (T >= 1): a valid address, never read */
        att_cp_async16((att_bf16 *)(tile + att_wg_offset(r, 8 * p)),
                       src + (valid ? (size_t)(row0 + r) * ld + 8 * p : 0), valid);
    }
}

/* the copies of this thread are done and, after the __syncthreads that must
 * follow, every thread's are visible to wgmma */
__device__ __forceinline__ void att_wg_copies_landed() {
    att_cp_async_wait_all();
    att_wg_proxy_fence();
}

/* A fragments of the four k-steps of a 64 x 64 product (keys or queries as
 * k) from its D registers, rounded to bf16 */
__device__ __forceinline__ void att_wg_pack_a(uint32_t (&a)[4][4], const float (&d)[32]) {
#pragma unroll
    for (int ks = 0; ks < 4; ks++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int i = att_wg_a_from_acc(ks, j);
            a[ks][j] = att_pack(d[i], d[i + 1]);
        }
}

/* d (64 x HS) += P V for a 64-key P in D registers and V a tile (rows = k) */
template <int HS>
__device__ __forceinline__ void att_wg_pv(float (&d)[HS / 2], const uint32_t (&a)[4][4],
                                          uint32_t vtile) {
#pragma unroll
    for (int ks = 0; ks < 4; ks++)
        att_wg_rs<HS>::run(d, a[ks], att_wg_desc_mn(vtile, ks));
}

/* d (64 x 64) += X Y^T over HS/16 k-steps, X and Y tiles (rows = M, N) */
template <int HS>
__device__ __forceinline__ void att_wg_xyt(float (&d)[32], uint32_t xtile, uint32_t ytile) {
#pragma unroll
    for (int ks = 0; ks < HS / 16; ks++)
        att_wg_ss64(d, att_wg_desc_k(xtile, 0, ks), att_wg_desc_k(ytile, 0, ks));
}

/* one 64-key tile of the online softmax for this thread's rows row_lo and
 * row_hi (wq0: the first row of its warp): keys at or past Tn and, when
 * causal, keys after the row are masked (only the last tile and tiles
 * reaching past the warp's first row need the test: warp-uniform); m and l
 * are updated, s becomes P (fp32, exp2 with scale log2 e folded in) and alpha
 * the factor the output accumulated so far is to be multiplied by. registers
 * with (i & 2) == 0 belong to row_lo; rows are reduced over the 4 threads of
 * a quad, as the mma kernel does. */
__device__ __forceinline__ void att_wg_softmax_tile(float (&s)[32], float (&m)[2], float (&l)[2],
                                                    float (&alpha)[2], int tid, int k0, int Tn,
                                                    int causal, int wq0, int row_lo, int row_hi,
                                                    float scale_log2) {
    if (k0 + ATT_WG_ROWS > Tn || (causal && k0 + ATT_WG_ROWS - 1 > wq0)) {
#pragma unroll
        for (int i = 0; i < 32; i++) {
            const int j = k0 + att_wg_acc_col(tid, i);
            const int row = (i & 2) ? row_hi : row_lo;
            if (j >= Tn || (causal && j > row)) s[i] = -INFINITY;
        }
    }
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int i = 0; i < 32; i++)
        mx[(i >> 1) & 1] = fmaxf(mx[(i >> 1) & 1], s[i]);
    float msc[2];
    att_online_max(mx, m, alpha, msc, scale_log2);
    float ps[2] = {0.0f, 0.0f};
#pragma unroll
    for (int i = 0; i < 32; i++) {
        const float p = exp2f(fmaf(s[i], scale_log2, -msc[(i >> 1) & 1]));
        s[i] = p;
        ps[(i >> 1) & 1] += p;
    }
#pragma unroll
    for (int r = 0; r < 2; r++)
        l[r] = l[r] * alpha[r] + ps[r];
}

/* out = O / l (bf16) for this thread's rows below Tn and columns below hs,
 * lse = scale m + log l (the lse of every forward, so every backward accepts
 * it); l is summed over the quad first. registers i, i+1 (i % 4 == 0 for
 * row_lo, 2 for row_hi) are columns 8 (i / 4) + 2t, +1 */
template <int NO>
__device__ __forceinline__ void att_wg_store_out(att_bf16 *out, float *lse, const float (&o)[NO],
                                                 const float (&m)[2], float (&l)[2], int b, int h,
                                                 int Tn, int NH, int hs, int row_lo, int row_hi,
                                                 int t, float scale) {
    const int A = NH * hs;
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] = att_quad_sum(l[r]);
        inv[r] = 1.0f / l[r];
    }
    att_bf16 *obase = out + ((size_t)b * Tn) * A + h * hs + 2 * t;
#pragma unroll
    for (int i = 0; i < NO; i += 2) {
        const int n = i >> 2, r = (i >> 1) & 1, row = r ? row_hi : row_lo;
        if (row < Tn && n * 8 < hs)
            att_store2(obase + (size_t)row * A + n * 8, o[i] * inv[r], o[i + 1] * inv[r]);
    }
    if (t == 0) {
        float *lrow = lse + ((size_t)b * NH + h) * Tn;
        if (row_lo < Tn) lrow[row_lo] = m[0] * scale + logf(l[0]);
        if (row_hi < Tn) lrow[row_hi] = m[1] * scale + logf(l[1]);
    }
}

/* ---- host side ---- */

/* true when a kernel has code for the current device (sm_90a image): the
 * launchers hand the call back otherwise */
template <typename K> static inline bool att_wg_kernel_present(K kernel) {
    cudaFuncAttributes a;
    if (cudaFuncGetAttributes(&a, kernel) == cudaSuccess) return true;
    (void)cudaGetLastError();
    return false;
}

#endif
