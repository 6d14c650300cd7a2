/* launch arithmetic of the CUDA backend, in plain C so that it can be tested
 * on a machine without a GPU (tests/cuda/test_cuda_launch.c): grid sizes, the row
 * partition of the two-pass column reductions, pointer alignment, the bits a
 * radix sort needs. pure functions of their arguments; no CUDA headers.
 *
 * hardware limits they respect: gridDim.x <= 2^31 - 1, gridDim.y and
 * gridDim.z <= 65535. */
#ifndef TC_CUDA_LAUNCH_MATH_H
#define TC_CUDA_LAUNCH_MATH_H

#include <stddef.h>
#include <stdint.h>

#define TC_CUDA_MAX_GRID_Y 65535
/* blocks of a grid-stride loop: enough to fill any current GPU many times */
#define TC_CUDA_MAX_STRIDE_GRID (65536u * 16u)

/* grid for a grid-stride loop over n elements (at least one block) */
static inline unsigned tc_cuda_grid(size_t n, int threads) {
    size_t g = (n + (size_t)threads - 1) / (size_t)threads;
    if (g > TC_CUDA_MAX_STRIDE_GRID) g = TC_CUDA_MAX_STRIDE_GRID;
    if (g == 0) g = 1;
    return (unsigned)g;
}

/* rows per chunk of a two-pass column reduction over (N, C) that keeps
 * `arrays` partial arrays of nchunks * C floats: the smallest power-of-two
 * multiple of 32 rows such that the partials fit scratch_bytes and nchunks
 * (gridDim.y of the partial kernel) stays <= 65535. -1 when even one chunk
 * per array does not fit (C too wide). the result depends on (N, C) and the
 * scratch size only, so the summation order is fixed for a shape. */
static inline int tc_cuda_chunk_rows(size_t scratch_bytes, int N, int C, int arrays) {
    if (N < 0 || C <= 0 || arrays <= 0) return -1;
    const size_t cap = scratch_bytes / sizeof(float) / ((size_t)C * (size_t)arrays);
    if (cap == 0) return -1;
    const size_t max_chunks = cap < TC_CUDA_MAX_GRID_Y ? cap : TC_CUDA_MAX_GRID_Y;
    int64_t rpc = 32;
    while (((int64_t)N + rpc - 1) / rpc > (int64_t)max_chunks)
        rpc *= 2;
    return rpc > INT32_MAX ? -1 : (int)rpc;
}

/* number of chunks of rpc rows covering N rows */
static inline int tc_cuda_chunks(int N, int rpc) {
    return (int)(((int64_t)N + rpc - 1) / rpc);
}

/* largest power of two <= 256 dividing the address (cuBLASLt's alignment
 * preferences, vector-load decisions) */
static inline uint32_t tc_cuda_alignment(uintptr_t address) {
    uint32_t al = 256;
    while (al > 1 && (address % al) != 0)
        al >>= 1;
    return al;
}

/* cuBLASLt's bias epilogue reads the bias vector with 16-byte loads whatever
 * the alignment preferences say (they cover A, B, C and D only) */
#define TC_CUDA_BIAS_ALIGNMENT 16

/* end bit of a radix sort of keys in [0, V): the bits V - 1 needs, at least 1 */
static inline int tc_cuda_radix_end_bit(int V) {
    int end_bit = 1;
    while (end_bit < 31 && ((int64_t)1 << end_bit) < (int64_t)V)
        end_bit++;
    return end_bit;
}

#endif
