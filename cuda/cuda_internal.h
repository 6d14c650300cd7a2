/* internals of the CUDA backend (C++ / CUDA only): the backend handle, error
 * recording, the activation-type dispatch and small device helpers shared by
 * the kernel files.
 *
 * errors: ops return void (backend.h), so a launcher that finds a bad shape or
 * a failing CUDA/cuBLASLt call records the first failure in the handle and
 * returns without launching; synchronize() and download() report it. the
 * record is sticky: after a failure every later synchronize() fails too.
 *
 * tc_act is float in the fp32 mode and __nv_bfloat16 in the mixed mode; every
 * kernel that touches activations is a template over that type and the table
 * entry dispatches on cu->fp32. all work goes to cu->stream. */
#ifndef TC_CUDA_INTERNAL_H
#define TC_CUDA_INTERNAL_H

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "backend.h"
#include "status.h"
}

#include "launch_math.h"
#include "tc_cuda.h"

/* one segment of sum_squares and AdamW as the kernels see it: start is the
 * prefix sum of the counts (its first element's index in the sequence) */
typedef struct {
    size_t offset, count, start;
    float weight_decay;
} tc_cuda_segment;

typedef struct {
    tc_backend base; /* first member: a tc_backend * is a tc_cuda_backend * */
    int device;
    int fp32; /* 1: tc_act is float; 0: tc_act is bf16 */
    tc_backend_options opt; /* as created (kernel choices) */
    cudaStream_t stream;
    cudaEvent_t fences[TC_FENCES]; /* fence_record / fence_wait */
    cublasLtHandle_t lt;
    void *lt_workspace;
    size_t lt_workspace_bytes;
    /* scratch for two-pass reductions (partials), sort buffers and the like.
     * fixed size, allocated once: launchers size their partitions from it so
     * that no op allocates. */
    void *scratch;
    size_t scratch_bytes;
    /* the segment table of sum_squares and AdamW, uploaded when the segments
     * change (once per trainer: both ops get the same segments) */
    tc_param_segment *seg_host;
    int seg_count;
    tc_cuda_segment *seg_dev;
    int seg_dev_cap;
    size_t seg_total;
    int seg_dev_count;
    /* cuDNN patch embedding state (conv_cudnn.cu); NULL without cuDNN */
    struct tc_cuda_conv *conv;
    /* first recorded failure */
    tc_status err;
    char err_msg[512];
} tc_cuda_backend;

#define TC_CUDA_SCRATCH_BYTES ((size_t)64 << 20)
#define TC_CUDA_LT_WORKSPACE_BYTES ((size_t)32 << 20)

static inline tc_cuda_backend *tc_cu(tc_backend *b) {
    return (tc_cuda_backend *)b;
}

/* records the first failure (later ones are dropped: the first is the cause) */
void tc_cuda_record(tc_cuda_backend *cu, tc_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* true when e == cudaSuccess; otherwise records "<what>: <cuda error>" */
bool tc_cuda_ok(tc_cuda_backend *cu, cudaError_t e, const char *what);
/* checks the launch that was just queued (cudaGetLastError) */
bool tc_cuda_launched(tc_cuda_backend *cu, const char *kernel);

/* shape guard for launchers: records TC_ERR_ARG naming the op and returns */
#define TC_CU_REQUIRE(cu, cond, ...)                                                               \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            tc_cuda_record((cu), TC_ERR_ARG, __VA_ARGS__);                                         \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* calls FN<act type>(args...) for the backend's activation type */
#define TC_ACT_DISPATCH(cu, FN, ...)                                                               \
    do {                                                                                           \
        if ((cu)->fp32)                                                                            \
            FN<float>(__VA_ARGS__);                                                                \
        else                                                                                       \
            FN<__nv_bfloat16>(__VA_ARGS__);                                                        \
    } while (0)

/* ---- device helpers ---- */
__device__ __forceinline__ float tc_ldf(const float *p) {
    return *p;
}
__device__ __forceinline__ float tc_ldf(const __nv_bfloat16 *p) {
    return __bfloat162float(*p);
}

template <typename T> __device__ __forceinline__ T tc_tof(float x);
template <> __device__ __forceinline__ float tc_tof<float>(float x) {
    return x;
}
template <> __device__ __forceinline__ __nv_bfloat16 tc_tof<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

__device__ __forceinline__ float tc_warp_sum(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

__device__ __forceinline__ double tc_warp_sum_d(double v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

/* deterministic block sum (fixed shuffle pattern, then warp 0 sums the warp
 * totals in order); every thread gets the result. blockDim.x must be a
 * multiple of 32 and at most 1024; sh holds 33 floats. */
__device__ __forceinline__ float tc_block_sum(float v, float *sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = tc_warp_sum(v);
    __syncthreads(); /* sh may still be read from a previous call */
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = lane < nw ? sh[lane] : 0.0f;
        t = tc_warp_sum(t);
        if (lane == 0) sh[32] = t;
    }
    __syncthreads();
    return sh[32];
}

/* ---- op entry points: the ops of engine/backend_ops.h, tc_cuda_<name>.
 * memory in backend.cu, kernels by family in the other files. the optional
 * ops (the cuDNN patch embedding) are filled by tc_cuda_conv_init. */
#define TC_OP(ret, name, params) ret tc_cuda_##name params;
#define TC_OPTIONAL_OP(ret, name, params)
#include "backend_ops.h"
#undef TC_OPTIONAL_OP
#undef TC_OP

/* dst[c] += sum over N rows of src (N, C): deterministic two-pass column sum
 * (gemm.cu; used for linear dbias) */
void tc_cuda_column_sum_add(tc_cuda_backend *cu, float *dst, const void *src, int N, int C);
/* rows per chunk of a two-pass column reduction over (N, C) with `arrays`
 * partial arrays in the scratch (launch_math.h); -1 when C is too wide */
static inline int tc_cuda_rows_per_chunk(tc_cuda_backend *cu, int N, int C, int arrays) {
    return tc_cuda_chunk_rows(cu->scratch_bytes, N, C, arrays);
}

/* conv_cudnn.cu: when the options ask for the convolution patch embedding,
 * loads cuDNN, fills the optional patch_embed slots and sets
 * caps.patch_embed_conv (or fails with the loader's reason); destroy frees
 * its state */
typedef struct tc_cuda_conv tc_cuda_conv;
tc_status tc_cuda_conv_init(tc_cuda_backend *cu);
void tc_cuda_conv_destroy(tc_cuda_backend *cu);

#endif
