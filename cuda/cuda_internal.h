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

/* ---- op entry points (one per backend.h table slot) ---- */
void tc_cuda_fill_f32(tc_backend *b, float *x, float value, size_t n);
void tc_cuda_zero(tc_backend *b, void *x, size_t bytes);
void tc_cuda_copy(tc_backend *b, void *dst, const void *src, size_t bytes);
void tc_cuda_f32_to_act(tc_backend *b, tc_act *dst, const float *src, size_t n);
void tc_cuda_act_to_f32(tc_backend *b, float *dst, const tc_act *src, size_t n);
void tc_cuda_add(tc_backend *b, tc_act *out, const tc_act *x, const tc_act *y, size_t n);
void tc_cuda_scale_f32(tc_backend *b, float *x, const float *scale, size_t n);
void tc_cuda_clamp_f32(tc_backend *b, float *x, float lo, float hi, size_t n);
void tc_cuda_all_finite(tc_backend *b, float *out, const float *x, size_t n);
void tc_cuda_gelu_forward(tc_backend *b, tc_act *out, const tc_act *inp, size_t n,
                          tc_activation kind);
void tc_cuda_gelu_backward(tc_backend *b, tc_act *dinp, const tc_act *inp, const tc_act *dout,
                           size_t n, tc_activation kind);

void tc_cuda_linear_forward(tc_backend *b, tc_act *out, const tc_act *inp, const tc_act *w,
                            const tc_act *bias, int N, int C, int OC, int w_trans);
void tc_cuda_linear_backward(tc_backend *b, tc_act *dinp, float *dw, float *dbias,
                             const tc_act *dout, const tc_act *inp, const tc_act *w, int N, int C,
                             int OC, int w_trans);
void tc_cuda_gemm_f32(tc_backend *b, int trans_a, int trans_b, int M, int N, int K, float alpha,
                      const float *A, const float *B, float beta, float *C);

void tc_cuda_layernorm_forward(tc_backend *b, tc_act *out, float *mean, float *rstd,
                               const tc_act *inp, const tc_act *w, const tc_act *bias, int N,
                               int C);
void tc_cuda_layernorm_backward(tc_backend *b, tc_act *dinp, float *dw, float *dbias,
                                const tc_act *dout, const tc_act *inp, const tc_act *w,
                                const float *mean, const float *rstd, int N, int C);
/* dst[c] += sum over N rows of src (N, C): deterministic two-pass column sum
 * (gemm.cu; used for linear dbias) */
void tc_cuda_column_sum_add(tc_cuda_backend *cu, float *dst, const void *src, int N, int C);
/* rows per chunk of a two-pass column reduction over (N, C) with `arrays`
 * partial arrays in the scratch (launch_math.h); -1 when C is too wide */
static inline int tc_cuda_rows_per_chunk(tc_cuda_backend *cu, int N, int C, int arrays) {
    return tc_cuda_chunk_rows(cu->scratch_bytes, N, C, arrays);
}

void tc_cuda_attention_forward(tc_backend *b, tc_act *out, float *lse, const tc_act *qkv, int B,
                               int T, int NH, int HS, int causal);
void tc_cuda_attention_backward(tc_backend *b, tc_act *dqkv, const tc_act *dout, const tc_act *qkv,
                                const tc_act *out, const float *lse, int B, int T, int NH, int HS,
                                int causal);

void tc_cuda_patchify(tc_backend *b, tc_act *patches, const float *image, int B, int H, int W,
                      int P);
void tc_cuda_vision_embed_forward(tc_backend *b, tc_act *x, const tc_act *patch_emb,
                                  const tc_act *cls, const tc_act *pos, int B, int T, int C);
void tc_cuda_vision_embed_backward(tc_backend *b, tc_act *dpatch_emb, float *dcls, float *dpos,
                                   const tc_act *dx, int B, int T, int C);
void tc_cuda_token_embed_forward(tc_backend *b, tc_act *x, const int32_t *ids, const tc_act *wte,
                                 const tc_act *wpe, int B, int T, int C);
void tc_cuda_token_embed_backward(tc_backend *b, float *dwte, float *dwpe, const tc_act *dx,
                                  const int32_t *ids, int B, int T, int C, int V);
void tc_cuda_argmax_rows(tc_backend *b, int32_t *idx, const int32_t *ids, int B, int T);
void tc_cuda_pool_gather_forward(tc_backend *b, tc_act *out, const tc_act *x, const int32_t *idx,
                                 int B, int T, int C);
void tc_cuda_pool_gather_backward(tc_backend *b, tc_act *dx, const tc_act *dout, const int32_t *idx,
                                  int B, int T, int C);
void tc_cuda_pool_mean_forward(tc_backend *b, tc_act *out, const tc_act *x, int B, int T, int C);
void tc_cuda_pool_mean_backward(tc_backend *b, tc_act *dx, const tc_act *dout, int B, int T, int C);

void tc_cuda_l2norm_forward(tc_backend *b, float *out, float *norm, const tc_act *inp, int N,
                            int C);
void tc_cuda_l2norm_backward(tc_backend *b, tc_act *dinp, const float *dout, const float *out,
                             const float *norm, int N, int C);
void tc_cuda_softmax_xent_rows(tc_backend *b, float *loss, float *dsim, float *dlog_scale,
                               const float *sim, const float *teacher_sim, const float *log_scale,
                               const float *teacher_log_scale, int n, int Ncols, int label_offset,
                               float w_hard, float w_soft);

void tc_cuda_sum_squares(tc_backend *b, float *out, const float *g, const tc_param_segment *segs,
                         int nseg);
void tc_cuda_clip_coefficient(tc_backend *b, float *scale, const float *sum_sq, float max_norm);
void tc_cuda_adamw_update(tc_backend *b, float *params, const float *grads, float *m, float *v,
                          tc_act *compute, const tc_param_segment *segs, int nseg,
                          tc_adamw_hparams hp, const float *grad_scale);
void tc_cuda_step_gate(tc_backend *b, float *state);

void tc_cuda_mask_cols_forward(tc_backend *b, tc_act *out, const tc_act *x, const float *z, int N,
                               int C, int group);
void tc_cuda_mask_cols_backward(tc_backend *b, tc_act *dx, float *dz, const tc_act *dout,
                                const tc_act *x, const float *z, int N, int C, int group);
void tc_cuda_layernorm_masked_forward(tc_backend *b, tc_act *out, float *mean, float *rstd,
                                      const tc_act *inp, const tc_act *w, const tc_act *bias,
                                      const float *mask, int N, int C);
void tc_cuda_layernorm_masked_backward(tc_backend *b, tc_act *dinp, float *dw, float *dbias,
                                       const tc_act *dout, const tc_act *inp, const tc_act *w,
                                       const float *mean, const float *rstd, const float *mask,
                                       int N, int C);

/* conv_cudnn.cu: reads TINYCLIP_PATCH_EMBED (cudnn|gemm), fills the optional
 * patch_embed slots when cuDNN is linked; destroy frees its state */
typedef struct tc_cuda_conv tc_cuda_conv;
tc_status tc_cuda_conv_init(tc_cuda_backend *cu);
void tc_cuda_conv_destroy(tc_cuda_backend *cu);

#endif
