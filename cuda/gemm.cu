/* linear layers and the fp32 GEMM through cuBLASLt, plus the deterministic
 * column sum used for bias gradients.
 *
 * cuBLASLt is column-major; a row-major (r, c) matrix is the column-major
 * (c, r) matrix with leading dimension c, so every product below is written
 * as its transpose (derivations at each call). compute type is always
 * CUBLAS_COMPUTE_32F with fp32 scale: bf16 inputs accumulate in fp32, and the
 * fp32 mode runs true fp32 (no TF32), so it matches the CPU to ~1e-6.
 *
 * cuBLASLt's heuristic assumes 256-byte aligned pointers unless told
 * otherwise; parameter views sit at arbitrary element offsets, so the real
 * alignment of every pointer is passed in the preference (the parameter
 * arena puts every tensor on 256 bytes, engine/params.h, so only unusual
 * callers pass less). when no cuBLASLt algorithm fits (odd alignment, odd
 * leading dimension) a plain tiled kernel with fp32 accumulation computes
 * the same product, slowly: each such call is counted in the backend's
 * gemm_fallbacks, which tinyclip bench prints. */
#include <stdio.h>

#include "cuda_internal.h"

typedef struct {
    cublasOperation_t ta, tb;
    int m, n, k; /* D (m, n) = alpha op(A)(m, k) op(B)(k, n) + beta D [+ bias (m)] */
    const void *A;
    int lda;
    const void *B;
    int ldb;
    void *D;
    int ldd;
    cudaDataType_t ab_type; /* A and B */
    cudaDataType_t d_type;  /* C = D, and bias */
    float alpha, beta;
    const void *bias; /* epilogue bias over rows of D (NULL: none) */
} lt_gemm;

static uint32_t ptr_alignment(const void *p) {
    return tc_cuda_alignment((uintptr_t)p);
}

/* ---- fallback: 16x16 shared-memory tiles, column-major, fp32 accumulate ---- */

template <typename TA, typename TD>
__global__ void gemm_fallback_kernel(int m, int n, int k, float alpha, const TA *A, int lda, int ta,
                                     const TA *B, int ldb, int tb, float beta, TD *D, int ldd,
                                     const TD *bias) {
    __shared__ float As[16][17];
    __shared__ float Bs[16][17];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int row = blockIdx.y * 16 + ty;  /* row of D this thread loads A for */
    const int col = blockIdx.x * 16 + tx;  /* column of D */
    const int arow = blockIdx.y * 16 + tx; /* row of D whose A element (arow, p0+ty) we load */
    float acc = 0.0f;
    for (int p0 = 0; p0 < k; p0 += 16) {
        {
            int p = p0 + ty;
            float v = 0.0f;
            if (arow < m && p < k)
                v = tc_ldf(ta ? A + (size_t)arow * lda + p : A + (size_t)p * lda + arow);
            As[tx][ty] = v; /* As[r][p] */
        }
        {
            int p = p0 + ty;
            float v = 0.0f;
            if (col < n && p < k)
                v = tc_ldf(tb ? B + (size_t)p * ldb + col : B + (size_t)col * ldb + p);
            Bs[ty][tx] = v; /* Bs[p][c] */
        }
        __syncthreads();
#pragma unroll
        for (int q = 0; q < 16; q++)
            acc += As[ty][q] * Bs[q][tx];
        __syncthreads();
    }
    if (row < m && col < n) {
        float r = alpha * acc;
        if (beta != 0.0f) r += beta * tc_ldf(D + (size_t)col * ldd + row);
        if (bias) r += tc_ldf(bias + row);
        D[(size_t)col * ldd + row] = tc_tof<TD>(r);
    }
}

template <typename TA, typename TD>
static void launch_fallback(tc_cuda_backend *cu, const lt_gemm *g, const char *what) {
    dim3 block(16, 16);
    dim3 grid((unsigned)((g->n + 15) / 16), (unsigned)((g->m + 15) / 16));
    gemm_fallback_kernel<TA, TD><<<grid, block, 0, cu->stream>>>(
        g->m, g->n, g->k, g->alpha, (const TA *)g->A, g->lda, g->ta == CUBLAS_OP_T,
        (const TA *)g->B, g->ldb, g->tb == CUBLAS_OP_T, g->beta, (TD *)g->D, g->ldd,
        (const TD *)g->bias);
    tc_cuda_launched(cu, what);
}

static void run_fallback(tc_cuda_backend *cu, const lt_gemm *g, const char *what) {
    cu->base.gemm_fallbacks++; /* never silent: tinyclip bench prints the count */
    if (g->m > 65535 * 16) {
        tc_cuda_record(cu, TC_ERR_UNSUPPORTED, "cuda %s: fallback gemm with m=%d rows", what, g->m);
        return;
    }
    if (g->ab_type == CUDA_R_32F)
        launch_fallback<float, float>(cu, g, what);
    else if (g->d_type == CUDA_R_32F)
        launch_fallback<__nv_bfloat16, float>(cu, g, what);
    else
        launch_fallback<__nv_bfloat16, __nv_bfloat16>(cu, g, what);
}

#define LT_TRY(call, what)                                                                         \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                         \
            tc_cuda_record(cu, TC_ERR_BACKEND, "cuda %s: %s: %s", op_name, what,                   \
                           cublasLtGetStatusString(s_));                                           \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

static void lt_matmul(tc_cuda_backend *cu, const lt_gemm *g, const char *op_name) {
    if (g->m <= 0 || g->n <= 0 || g->k <= 0) {
        tc_cuda_record(cu, TC_ERR_ARG, "cuda %s: empty gemm m=%d n=%d k=%d", op_name, g->m, g->n,
                       g->k);
        return;
    }
    cublasLtMatmulDesc_t desc = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res;
    int nres = 0;
    int32_t ta = g->ta, tb = g->tb;
    uint64_t ws = cu->lt_workspace_bytes;
    uint32_t al_a = ptr_alignment(g->A), al_b = ptr_alignment(g->B), al_d = ptr_alignment(g->D);
    const bool ta_n = g->ta == CUBLAS_OP_N, tb_n = g->tb == CUBLAS_OP_N;

    LT_TRY(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul desc");
    LT_TRY(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta),
           "transa");
    LT_TRY(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb),
           "transb");
    if (g->bias) {
        uint32_t epi = CUBLASLT_EPILOGUE_BIAS;
        int32_t bt = g->d_type;
        /* the alignment preferences do not cover the bias, and the epilogue
         * kernels read it with 16-byte loads (a pruned bias view faults with
         * "misaligned address"): an under-aligned bias is copied to the
         * 256-byte aligned scratch first, on the stream (m elements) */
        const void *bias = g->bias;
        if (ptr_alignment(bias) < TC_CUDA_BIAS_ALIGNMENT) {
            const size_t bytes = (size_t)g->m * (g->d_type == CUDA_R_32F ? 4 : 2);
            if (bytes > cu->scratch_bytes) {
                tc_cuda_record(cu, TC_ERR_UNSUPPORTED, "cuda %s: bias of %d elements", op_name,
                               g->m);
                goto done;
            }
            if (!tc_cuda_ok(
                    cu,
                    cudaMemcpyAsync(cu->scratch, bias, bytes, cudaMemcpyDeviceToDevice, cu->stream),
                    "aligned bias copy"))
                goto done;
            bias = cu->scratch;
        }
        LT_TRY(
            cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi),
            "epilogue");
        LT_TRY(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                              sizeof bias),
               "bias pointer");
        LT_TRY(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt,
                                              sizeof bt),
               "bias type");
    }
    /* stored (rows, cols) of A is (m, k) when not transposed, else (k, m) */
    LT_TRY(
        cublasLtMatrixLayoutCreate(&la, g->ab_type, ta_n ? g->m : g->k, ta_n ? g->k : g->m, g->lda),
        "layout A");
    LT_TRY(
        cublasLtMatrixLayoutCreate(&lb, g->ab_type, tb_n ? g->k : g->n, tb_n ? g->n : g->k, g->ldb),
        "layout B");
    LT_TRY(cublasLtMatrixLayoutCreate(&ld, g->d_type, g->m, g->n, g->ldd), "layout D");
    LT_TRY(cublasLtMatmulPreferenceCreate(&pref), "preference");
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                sizeof ws),
           "workspace preference");
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                &al_a, sizeof al_a),
           "alignment A");
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                &al_b, sizeof al_b),
           "alignment B");
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                &al_d, sizeof al_d),
           "alignment C");
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                &al_d, sizeof al_d),
           "alignment D");
    {
        cublasStatus_t hs =
            cublasLtMatmulAlgoGetHeuristic(cu->lt, desc, la, lb, ld, ld, pref, 1, &res, &nres);
        if (hs != CUBLAS_STATUS_SUCCESS || nres == 0 || res.state != CUBLAS_STATUS_SUCCESS) {
            run_fallback(cu, g, op_name);
            goto done;
        }
    }
    LT_TRY(cublasLtMatmul(cu->lt, desc, &g->alpha, g->A, la, g->B, lb, &g->beta, g->D, ld, g->D, ld,
                          &res.algo, cu->lt_workspace, cu->lt_workspace_bytes, cu->stream),
           "matmul");
done:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (ld) cublasLtMatrixLayoutDestroy(ld);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (desc) cublasLtMatmulDescDestroy(desc);
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

/* ---- backend ops ---- */

void tc_cuda_linear_forward(tc_backend *b, tc_act *out, const tc_act *inp, const tc_act *w,
                            const tc_act *bias, int N, int C, int OC, int w_trans) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, N >= 0 && C > 0 && OC > 0, "cuda linear_forward: bad shape N=%d C=%d OC=%d",
                  N, C, OC);
    if (N == 0) return;
    const cudaDataType_t t = cu->fp32 ? CUDA_R_32F : CUDA_R_16BF;
    /* out^T (OC, N) = op(w) (OC, C) . inp^T (C, N).
     * w (OC, C) row-major is column-major (C, OC), ld C: transposed.
     * w (C, OC) row-major (w_trans) is column-major (OC, C), ld OC: as is.
     * inp (N, C) row-major is column-major (C, N), ld C. */
    lt_gemm g;
    g.ta = w_trans ? CUBLAS_OP_N : CUBLAS_OP_T;
    g.tb = CUBLAS_OP_N;
    g.m = OC;
    g.n = N;
    g.k = C;
    g.A = w;
    g.lda = w_trans ? OC : C;
    g.B = inp;
    g.ldb = C;
    g.D = out;
    g.ldd = OC;
    g.ab_type = t;
    g.d_type = t;
    g.alpha = 1.0f;
    g.beta = 0.0f;
    g.bias = bias;
    lt_matmul(cu, &g, "linear_forward");
}

void tc_cuda_linear_backward(tc_backend *b, tc_act *dinp, float *dw, float *dbias,
                             const tc_act *dout, const tc_act *inp, const tc_act *w, int N, int C,
                             int OC, int w_trans) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, N >= 0 && C > 0 && OC > 0, "cuda linear_backward: bad shape N=%d C=%d OC=%d",
                  N, C, OC);
    if (N == 0) return;
    const cudaDataType_t t = cu->fp32 ? CUDA_R_32F : CUDA_R_16BF;
    if (dinp) {
        /* dinp^T (C, N) = op(w) (C, OC) . dout^T (OC, N)
         * w_trans 0: w (OC, C) row-major = column-major (C, OC) ld C: as is.
         * w_trans 1: w (C, OC) row-major = column-major (OC, C) ld OC: transposed. */
        lt_gemm g;
        g.ta = w_trans ? CUBLAS_OP_T : CUBLAS_OP_N;
        g.tb = CUBLAS_OP_N;
        g.m = C;
        g.n = N;
        g.k = OC;
        g.A = w;
        g.lda = w_trans ? OC : C;
        g.B = dout;
        g.ldb = OC;
        g.D = dinp;
        g.ldd = C;
        g.ab_type = t;
        g.d_type = t;
        g.alpha = 1.0f;
        g.beta = 0.0f;
        g.bias = NULL;
        lt_matmul(cu, &g, "linear_backward dinp");
    }
    if (dw) {
        lt_gemm g;
        if (!w_trans) {
            /* dw (OC, C) += dout^T inp  <=>  dw^T (C, OC) += inp^T (C, N) . dout (N, OC)
             * inp: column-major (C, N) ld C as is; dout: column-major (OC, N) ld OC,
             * transposed. */
            g.ta = CUBLAS_OP_N;
            g.tb = CUBLAS_OP_T;
            g.m = C;
            g.n = OC;
            g.k = N;
            g.A = inp;
            g.lda = C;
            g.B = dout;
            g.ldb = OC;
            g.ldd = C;
        } else {
            /* dw (C, OC) += inp^T dout  <=>  dw^T (OC, C) += dout^T (OC, N) . inp (N, C) */
            g.ta = CUBLAS_OP_N;
            g.tb = CUBLAS_OP_T;
            g.m = OC;
            g.n = C;
            g.k = N;
            g.A = dout;
            g.lda = OC;
            g.B = inp;
            g.ldb = C;
            g.ldd = OC;
        }
        g.D = dw;
        g.ab_type = t;
        g.d_type = CUDA_R_32F;
        g.alpha = 1.0f;
        g.beta = 1.0f;
        g.bias = NULL;
        lt_matmul(cu, &g, "linear_backward dw");
    }
    if (dbias) tc_cuda_column_sum_add(cu, dbias, dout, N, OC);
}

/* C = beta C (beta 0 overwrites, NaN included, as BLAS): the K = 0 product */
__global__ void gemm_scale_kernel(float *C, float beta, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        C[i] = beta == 0.0f ? 0.0f : beta * C[i];
}

void tc_cuda_gemm_f32(tc_backend *b, int trans_a, int trans_b, int M, int N, int K, float alpha,
                      const float *A, const float *B, float beta, float *C) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, M >= 0 && N >= 0 && K >= 0, "cuda gemm_f32: bad shape M=%d N=%d K=%d", M, N,
                  K);
    if (M == 0 || N == 0) return;
    if (K == 0) { /* no product (cuBLASLt refuses k = 0): as the CPU backend */
        const size_t n = (size_t)M * N;
        gemm_scale_kernel<<<tc_cuda_grid(n, 256), 256, 0, cu->stream>>>(C, beta, n);
        tc_cuda_launched(cu, "gemm_f32 (K = 0)");
        return;
    }
    /* C (M, N) row-major = column-major (N, M) ld N:
     * C^T (N, M) = op(B)^T (N, K) . op(A)^T (K, M).
     * B stored (K, N) row-major = column-major (N, K) ld N: as is; stored
     * (N, K) when trans_b = column-major (K, N) ld K: transposed.
     * A stored (M, K) row-major = column-major (K, M) ld K: as is; stored
     * (K, M) when trans_a = column-major (M, K) ld M: transposed. */
    lt_gemm g;
    g.ta = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    g.tb = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    g.m = N;
    g.n = M;
    g.k = K;
    g.A = B;
    g.lda = trans_b ? K : N;
    g.B = A;
    g.ldb = trans_a ? M : K;
    g.D = C;
    g.ldd = N;
    g.ab_type = CUDA_R_32F;
    g.d_type = CUDA_R_32F;
    g.alpha = alpha;
    g.beta = beta;
    g.bias = NULL;
    lt_matmul(cu, &g, "gemm_f32");
}
