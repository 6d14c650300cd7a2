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

#include "gemm_plan.h"
#include "launch_math.h"
#include "seg_slots.h"
#include "tc_cuda.h"

/* one segment of sum_squares and AdamW as the kernels see it: start is the
 * prefix sum of the counts (its first element's index in the sequence) */
typedef struct {
    size_t offset, count, start;
    float weight_decay;
} tc_cuda_segment;

/* a segment list on the device: its key (the list as given), the table the
 * kernels read, its capacity, the non-empty segments and their total */
typedef struct {
    tc_seg_key key;
    tc_cuda_segment *dev;
    int dev_cap;
    int dev_count;
    size_t total;
} tc_cuda_seg_table;

typedef struct {
    tc_backend base; /* first member: a tc_backend * is a tc_cuda_backend * */
    int device;
    int fp32;               /* 1: tc_act is float; 0: tc_act is bf16 */
    tc_backend_options opt; /* as created (kernel choices) */
    int cc_major;           /* the device's compute capability (major) */
    /* the attention kernels the last forward [0] and backward [1] ran
     * (tc_cuda_attention_kernel_ran) */
    tc_attention_kernel attention_ran[2];
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
    /* the segment tables of sum_squares and AdamW (seg_slots.h): each list
     * uploaded once, kept while it is in use */
    tc_cuda_seg_table seg[TC_CUDA_SEG_SLOTS];
    unsigned long long seg_clock;
    /* cuDNN patch embedding state (conv_cudnn.cu); NULL without cuDNN */
    struct tc_cuda_conv *conv;
    /* matmul plans (gemm.cu); NULL unless options.gemm_plans */
    tc_gemm_plan_cache *plans;
    /* graph capture (graph.cu): 1 between graph_begin and graph_end */
    int capturing;
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
 * ops: the cuDNN patch embedding is filled by tc_cuda_conv_init; the fused
 * residual + layernorm (layernorm.cu) always; the fused linear layers
 * (linear.cu) and graphs (graph.cu) by tc_cuda_fast_paths when the options
 * ask for them. */
#define TC_OP(ret, name, params) ret tc_cuda_##name params;
#define TC_OPTIONAL_OP(ret, name, params)
#include "backend_ops.h"
#undef TC_OPTIONAL_OP
#undef TC_OP
void tc_cuda_residual_layernorm_forward(tc_backend *b, tc_act *res, tc_act *out, float *mean,
                                        float *rstd, const tc_act *x, const tc_act *y,
                                        const tc_act *w, const tc_act *bias, int N, int C);

void tc_cuda_linear_residual_forward(tc_backend *b, tc_act *out, const tc_act *res,
                                     const tc_act *inp, const tc_act *w, const tc_act *bias, int N,
                                     int C, int OC);
void tc_cuda_linear_gelu_forward(tc_backend *b, tc_act *out, tc_act *pre, const tc_act *inp,
                                 const tc_act *w, const tc_act *bias, int N, int C, int OC);
void tc_cuda_linear_gelu_backward(tc_backend *b, tc_act *dpre, float *dw, float *dbias,
                                  const tc_act *dout, const tc_act *act, const tc_act *pre,
                                  const tc_act *w, int N, int M, int OC);
tc_status tc_cuda_graph_begin(tc_backend *b);
tc_status tc_cuda_graph_end(tc_backend *b, tc_graph **out);
tc_status tc_cuda_graph_launch(tc_backend *b, tc_graph *g);
void tc_cuda_graph_free(tc_backend *b, tc_graph *g);
/* fills the fast paths' optional ops and caps the options ask for (graph.cu) */
void tc_cuda_fast_paths(tc_cuda_backend *cu);

/* one product D = alpha op(A) op(B) + beta C [epilogue], column-major
 * (gemm.cu). C NULL means C = D. bias (m, D's type) for BIAS and
 * GELU_AUX_BIAS; bgrad (fp32 when D is, else D's type) receives the bias
 * gradient of BGRADA (m) / BGRADB (n), 16-byte aligned; aux (ld_aux, D's
 * type) is GELU_AUX_BIAS's output and DGELU's input. */
typedef struct {
    cublasOperation_t ta, tb;
    int m, n, k;
    const void *A;
    int lda;
    const void *B;
    int ldb;
    const void *C;
    int ldc;
    void *D;
    int ldd;
    cudaDataType_t ab_type; /* A and B */
    cudaDataType_t d_type;  /* C, D, bias, aux */
    float alpha, beta;
    tc_gemm_epilogue epi;
    const void *bias;
    void *bgrad;
    void *aux;
    int ld_aux;
} tc_cuda_gemm;

/* D (m, n) = op(A) op(B): alpha 1, beta 0 (C is D), no epilogue */
tc_cuda_gemm tc_cuda_gemm_of(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                             const void *A, int lda, const void *B, int ldb, void *D, int ldd,
                             cudaDataType_t ab_type, cudaDataType_t d_type);
/* runs g: cuBLASLt, or the tiled fallback kernel (counted in
 * gemm_fallbacks) for a plain or bias product. false, with nothing
 * launched, when cuBLASLt has no algorithm for a fused epilogue or a
 * separate C: the caller then runs the unfused ops. errors are recorded
 * (and return true) */
bool tc_cuda_matmul(tc_cuda_backend *cu, const tc_cuda_gemm *g, const char *op_name);
/* the plan cache when options.gemm_plans asks for it; freed by destroy */
tc_status tc_cuda_gemm_plans_init(tc_cuda_backend *cu);
void tc_cuda_gemm_plans_destroy(tc_cuda_backend *cu);

/* dst[c] += sum over N rows of src (N, C): deterministic two-pass column sum
 * (linear.cu; used for linear dbias) */
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
