/* linear layers on the GEMM engine (gemm.cu): forward with the bias in the
 * epilogue, backward (input gradient, weight gradient, bias gradient), the
 * fused forms of engine/backend_ops.h (residual through beta = 1, GELU with
 * its pre-activation kept, the GELU gradient in the backward GEMM, the bias
 * gradient in the weight-gradient GEMM), and the deterministic column sum
 * the unfused bias gradient uses.
 *
 * every fused form first asks for its fused product; where cuBLASLt has no
 * algorithm for it (tc_cuda_matmul returns false, nothing launched) it runs
 * the unfused ops, so a fused op is never wrong for want of a kernel. */
#include "cuda_internal.h"

static cudaDataType_t act_type(const tc_cuda_backend *cu) {
    return cu->fp32 ? CUDA_R_32F : CUDA_R_16BF;
}

/* ---- deterministic column sum: dst[c] += sum_r src[r, c] ----
 * pass 1: block (x: 256 columns, y: one chunk of rows) sums its chunk in row
 * order into partial[chunk, c]; pass 2: one thread per column adds the chunk
 * partials in chunk order. the partition depends only on (N, C). */

#define COLSUM_THREADS 256

template <typename T>
__global__ void colsum_partial_kernel(float *partial, const T *src, int N, int C,
                                      int rows_per_chunk) {
    const int c = blockIdx.x * COLSUM_THREADS + threadIdx.x;
    if (c >= C) return;
    const int r0 = blockIdx.y * rows_per_chunk;
    const int r1 = min(N, r0 + rows_per_chunk);
    float acc = 0.0f;
    for (int r = r0; r < r1; r++)
        acc += tc_ldf(src + (size_t)r * C + c);
    partial[(size_t)blockIdx.y * C + c] = acc;
}

__global__ void colsum_final_kernel(float *dst, const float *partial, int nchunks, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float acc = 0.0f;
    for (int k = 0; k < nchunks; k++)
        acc += partial[(size_t)k * C + c];
    dst[c] += acc;
}

template <typename T>
static void launch_colsum(tc_cuda_backend *cu, float *dst, const void *src, int N, int C) {
    int rpc = tc_cuda_rows_per_chunk(cu, N, C, 1);
    TC_CU_REQUIRE(cu, rpc > 0, "cuda column sum: C=%d too wide for the scratch", C);
    const int nchunks = tc_cuda_chunks(N, rpc);
    TC_CU_REQUIRE(cu, nchunks <= 65535, "cuda column sum: N=%d too many rows", N);
    float *partial = (float *)cu->scratch;
    dim3 grid((unsigned)((C + COLSUM_THREADS - 1) / COLSUM_THREADS), (unsigned)nchunks);
    colsum_partial_kernel<T>
        <<<grid, COLSUM_THREADS, 0, cu->stream>>>(partial, (const T *)src, N, C, rpc);
    if (!tc_cuda_launched(cu, "colsum_partial")) return;
    colsum_final_kernel<<<(C + 255) / 256, 256, 0, cu->stream>>>(dst, partial, nchunks, C);
    tc_cuda_launched(cu, "colsum_final");
}

void tc_cuda_column_sum_add(tc_cuda_backend *cu, float *dst, const void *src, int N, int C) {
    if (N <= 0 || C <= 0) return;
    TC_ACT_DISPATCH(cu, launch_colsum, cu, dst, src, N, C);
}

/* dst[i] += src[i]: the epilogue writes a bias gradient, the op adds it */
__global__ void vector_add_kernel(float *dst, const float *src, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] += src[i];
}

/* ---- products ---- */

/* out^T (OC, N) = op(w) (OC, C) . inp^T (C, N) [+ bias] [+ res^T].
 * w (OC, C) row-major is column-major (C, OC), ld C: transposed.
 * w (C, OC) row-major (w_trans) is column-major (OC, C), ld OC: as is.
 * inp (N, C) row-major is column-major (C, N), ld C. */
static tc_cuda_gemm forward_gemm(tc_cuda_backend *cu, tc_act *out, const tc_act *inp,
                                 const tc_act *w, const tc_act *bias, int N, int C, int OC,
                                 int w_trans) {
    const cudaDataType_t t = act_type(cu);
    tc_cuda_gemm g = tc_cuda_gemm_of(w_trans ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, w,
                                     w_trans ? OC : C, inp, C, out, OC, t, t);
    g.bias = bias;
    g.epi = bias ? TC_EPI_BIAS : TC_EPI_NONE;
    return g;
}

/* dinp^T (C, N) = op(w) (C, OC) . dout^T (OC, N)
 * w_trans 0: w (OC, C) row-major = column-major (C, OC) ld C: as is.
 * w_trans 1: w (C, OC) row-major = column-major (OC, C) ld OC: transposed. */
static tc_cuda_gemm dinp_gemm(tc_cuda_backend *cu, tc_act *dinp, const tc_act *dout,
                              const tc_act *w, int N, int C, int OC, int w_trans) {
    const cudaDataType_t t = act_type(cu);
    return tc_cuda_gemm_of(w_trans ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, w,
                           w_trans ? OC : C, dout, OC, dinp, C, t, t);
}

/* dw += dout^T inp, and with bgrad the bias gradient in the epilogue.
 * w_trans 0: dw (OC, C) += dout^T inp <=> dw^T (C, OC) += inp^T (C, N) .
 *   dout (N, OC): inp column-major (C, N) ld C as is; dout column-major
 *   (OC, N) ld OC, transposed. the bias gradient sums op(B) over k: BGRADB.
 * w_trans 1: dw (C, OC) += inp^T dout <=> dw^T (OC, C) += dout^T (OC, N) .
 *   inp (N, C): the bias gradient sums op(A) over k: BGRADA. */
static tc_cuda_gemm dw_gemm(tc_cuda_backend *cu, float *dw, const tc_act *dout, const tc_act *inp,
                            int N, int C, int OC, int w_trans, float *bgrad) {
    const cudaDataType_t t = act_type(cu);
    tc_cuda_gemm g = !w_trans ? tc_cuda_gemm_of(CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, inp, C, dout,
                                                OC, dw, C, t, CUDA_R_32F)
                              : tc_cuda_gemm_of(CUBLAS_OP_N, CUBLAS_OP_T, OC, C, N, dout, OC, inp,
                                                C, dw, OC, t, CUDA_R_32F);
    g.beta = 1.0f;
    g.bgrad = bgrad;
    g.epi = bgrad ? (w_trans ? TC_EPI_BGRADA : TC_EPI_BGRADB) : TC_EPI_NONE;
    return g;
}

/* ---- backend ops ---- */

void tc_cuda_linear_forward(tc_backend *b, tc_act *out, const tc_act *inp, const tc_act *w,
                            const tc_act *bias, int N, int C, int OC, int w_trans) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, N >= 0 && C > 0 && OC > 0, "cuda linear_forward: bad shape N=%d C=%d OC=%d",
                  N, C, OC);
    if (N == 0) return;
    const tc_cuda_gemm g = forward_gemm(cu, out, inp, w, bias, N, C, OC, w_trans);
    tc_cuda_matmul(cu, &g, "linear_forward");
}

/* dw and dbias: the bias gradient in the weight-gradient GEMM's epilogue
 * when the options ask for it and cuBLASLt has an algorithm (written to the
 * scratch, then added), else the two-pass column sum */
static void weight_grads(tc_cuda_backend *cu, float *dw, float *dbias, const tc_act *dout,
                         const tc_act *inp, int N, int C, int OC, int w_trans) {
    if (dw && dbias && cu->base.caps.gemm_bias_grad_epilogue) {
        float *bgrad = (float *)cu->scratch; /* OC floats, 256-byte aligned */
        const tc_cuda_gemm g = dw_gemm(cu, dw, dout, inp, N, C, OC, w_trans, bgrad);
        if (tc_cuda_matmul(cu, &g, "linear_backward dw+dbias")) {
            vector_add_kernel<<<(OC + 255) / 256, 256, 0, cu->stream>>>(dbias, bgrad, OC);
            tc_cuda_launched(cu, "bias gradient add");
            return;
        }
    }
    if (dw) {
        const tc_cuda_gemm g = dw_gemm(cu, dw, dout, inp, N, C, OC, w_trans, NULL);
        tc_cuda_matmul(cu, &g, "linear_backward dw");
    }
    if (dbias) tc_cuda_column_sum_add(cu, dbias, dout, N, OC);
}

void tc_cuda_linear_backward(tc_backend *b, tc_act *dinp, float *dw, float *dbias,
                             const tc_act *dout, const tc_act *inp, const tc_act *w, int N, int C,
                             int OC, int w_trans) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, N >= 0 && C > 0 && OC > 0, "cuda linear_backward: bad shape N=%d C=%d OC=%d",
                  N, C, OC);
    if (N == 0) return;
    if (dinp) {
        const tc_cuda_gemm g = dinp_gemm(cu, dinp, dout, w, N, C, OC, w_trans);
        tc_cuda_matmul(cu, &g, "linear_backward dinp");
    }
    weight_grads(cu, dw, dbias, dout, inp, N, C, OC, w_trans);
}

void tc_cuda_linear_residual_forward(tc_backend *b, tc_act *out, const tc_act *res,
                                     const tc_act *inp, const tc_act *w, const tc_act *bias, int N,
                                     int C, int OC) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, N >= 0 && C > 0 && OC > 0,
                  "cuda linear_residual_forward: bad shape N=%d C=%d OC=%d", N, C, OC);
    if (N == 0) return;
    /* out^T = w . inp^T + bias + 1 * res^T: res (N, OC) is column-major
     * (OC, N) ld OC, the C matrix of the product */
    tc_cuda_gemm g = forward_gemm(cu, out, inp, w, bias, N, C, OC, 0);
    g.C = res;
    g.ldc = OC;
    g.beta = 1.0f;
    if (tc_cuda_matmul(cu, &g, "linear_residual_forward")) return;
    tc_cuda_linear_forward(b, out, inp, w, bias, N, C, OC, 0);
    tc_cuda_add(b, out, res, out, (size_t)N * OC);
}

void tc_cuda_linear_gelu_forward(tc_backend *b, tc_act *out, tc_act *pre, const tc_act *inp,
                                 const tc_act *w, const tc_act *bias, int N, int C, int OC) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, N >= 0 && C > 0 && OC > 0 && bias,
                  "cuda linear_gelu_forward: bad shape N=%d C=%d OC=%d (or no bias)", N, C, OC);
    if (N == 0) return;
    /* out^T = GELU(w . inp^T + bias), the pre-activation (N, OC) = column-major
     * (OC, N) ld OC to aux */
    tc_cuda_gemm g = forward_gemm(cu, out, inp, w, bias, N, C, OC, 0);
    g.epi = TC_EPI_GELU_AUX_BIAS;
    g.aux = pre;
    g.ld_aux = OC;
    if (tc_cuda_matmul(cu, &g, "linear_gelu_forward")) return;
    tc_cuda_linear_forward(b, pre, inp, w, bias, N, C, OC, 0);
    tc_cuda_gelu_forward(b, out, pre, (size_t)N * OC, TC_GELU);
}

void tc_cuda_linear_gelu_backward(tc_backend *b, tc_act *dpre, float *dw, float *dbias,
                                  const tc_act *dout, const tc_act *act, const tc_act *pre,
                                  const tc_act *w, int N, int M, int OC) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, N >= 0 && M > 0 && OC > 0,
                  "cuda linear_gelu_backward: bad shape N=%d M=%d OC=%d", N, M, OC);
    if (N == 0) return;
    /* dpre^T (M, N) = GELU'(pre^T) * (w . dout^T): the input gradient's
     * product with the GELU gradient of aux = pre (column-major (M, N) ld M) */
    tc_cuda_gemm g = dinp_gemm(cu, dpre, dout, w, N, M, OC, 0);
    g.epi = TC_EPI_DGELU;
    g.aux = (void *)pre;
    g.ld_aux = M;
    if (!tc_cuda_matmul(cu, &g, "linear_gelu_backward")) {
        /* unfused: the product into dpre, then the GELU gradient in place
         * (element by element, so dinp may be dout) */
        g.epi = TC_EPI_NONE;
        g.aux = NULL;
        g.ld_aux = 0;
        tc_cuda_matmul(cu, &g, "linear_gelu_backward dinp");
        tc_cuda_gelu_backward(b, dpre, pre, dpre, (size_t)N * M, TC_GELU);
    }
    weight_grads(cu, dw, dbias, dout, act, N, M, OC, 0);
}
