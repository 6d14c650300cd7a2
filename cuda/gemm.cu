/* the GEMM engine of the CUDA backend: every product goes through
 * tc_cuda_matmul, on cuBLASLt with a plan per shape (gemm_plan.h), or on a
 * plain tiled kernel where cuBLASLt has no algorithm; and the fp32 GEMM op.
 * the linear layers that use it are in linear.cu.
 *
 * cuBLASLt is column-major; a row-major (r, c) matrix is the column-major
 * (c, r) matrix with leading dimension c, so every product is written as its
 * transpose (derivations at each call). compute type is always
 * CUBLAS_COMPUTE_32F with fp32 scale: bf16 inputs accumulate in fp32, and the
 * fp32 mode runs true fp32 (no TF32), so it matches the CPU to ~1e-6.
 *
 * plans: cuBLASLt wants a matmul descriptor, four layouts, a preference and
 * a heuristic query per product. with options.gemm_plans they are made once
 * per key (shape, transposes, leading dimensions, types, epilogue, pointer
 * alignments) and kept (gemm_plan.h says the policy); without, they are made
 * and destroyed around every call, as before. the pointers (and the bias and
 * aux pointers of the descriptor) are set on every call.
 *
 * cuBLASLt's heuristic assumes 256-byte aligned pointers unless told
 * otherwise; a pointer may sit at any element offset, so the real alignment
 * of every pointer is part of the key and of the preference (the parameter
 * arena puts every tensor on 256 bytes, engine/params.h, so only unusual
 * callers pass less). when no
 * cuBLASLt algorithm fits (odd alignment, odd leading dimension) a plain
 * tiled kernel with fp32 accumulation computes the same product, slowly:
 * each such call is counted in the backend's gemm_fallbacks, which tinyclip
 * bench prints. a fused epilogue without an algorithm is not run at all:
 * tc_cuda_matmul says so and the caller runs the unfused ops. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

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
static void launch_fallback(tc_cuda_backend *cu, const tc_cuda_gemm *g, const char *what) {
    dim3 block(16, 16);
    dim3 grid((unsigned)((g->n + 15) / 16), (unsigned)((g->m + 15) / 16));
    gemm_fallback_kernel<TA, TD><<<grid, block, 0, cu->stream>>>(
        g->m, g->n, g->k, g->alpha, (const TA *)g->A, g->lda, g->ta == CUBLAS_OP_T,
        (const TA *)g->B, g->ldb, g->tb == CUBLAS_OP_T, g->beta, (TD *)g->D, g->ldd,
        (const TD *)g->bias);
    tc_cuda_launched(cu, what);
}

static void run_fallback(tc_cuda_backend *cu, const tc_cuda_gemm *g, const char *what) {
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

/* ---- plans ---- */

struct tc_cuda_gemm_plan {
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc, ld;
    cublasLtMatmulAlgo_t algo;
    bool has_algo; /* false: the heuristic found none (cached all the same) */
};

static void plan_destroy(tc_cuda_gemm_plan *p) {
    if (!p) return;
    if (p->ld) cublasLtMatrixLayoutDestroy(p->ld);
    if (p->lc && p->lc != p->ld) cublasLtMatrixLayoutDestroy(p->lc);
    if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
    if (p->la) cublasLtMatrixLayoutDestroy(p->la);
    if (p->desc) cublasLtMatmulDescDestroy(p->desc);
    free(p);
}

static void plan_destroy_cb(void *plan, void *ctx) {
    (void)ctx;
    plan_destroy((tc_cuda_gemm_plan *)plan);
}

static cublasLtEpilogue_t lt_epilogue(tc_gemm_epilogue e) {
    switch (e) {
    case TC_EPI_BIAS: return CUBLASLT_EPILOGUE_BIAS;
    case TC_EPI_GELU_AUX_BIAS: return CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
    case TC_EPI_DGELU: return CUBLASLT_EPILOGUE_DGELU;
    case TC_EPI_BGRADA: return CUBLASLT_EPILOGUE_BGRADA;
    case TC_EPI_BGRADB: return CUBLASLT_EPILOGUE_BGRADB;
    default: return CUBLASLT_EPILOGUE_DEFAULT;
    }
}

static tc_gemm_type gemm_type(cudaDataType_t t) {
    return t == CUDA_R_32F ? TC_GEMM_F32 : TC_GEMM_BF16;
}

static tc_gemm_key gemm_key(const tc_cuda_gemm *g) {
    tc_gemm_shape s;
    s.m = g->m;
    s.n = g->n;
    s.k = g->k;
    s.trans_a = g->ta == CUBLAS_OP_T;
    s.trans_b = g->tb == CUBLAS_OP_T;
    s.lda = g->lda;
    s.ldb = g->ldb;
    s.ldc = g->C ? g->ldc : g->ldd;
    s.ldd = g->ldd;
    s.ld_aux = g->aux ? g->ld_aux : 0;
    s.ab_type = gemm_type(g->ab_type);
    s.cd_type = gemm_type(g->d_type);
    s.bias_type = gemm_type(g->d_type); /* bias and bias gradient: D's type */
    s.epilogue = g->epi;
    s.c_is_d = !g->C || g->C == g->D;
    s.align_a = tc_cuda_alignment((uintptr_t)g->A);
    s.align_b = tc_cuda_alignment((uintptr_t)g->B);
    s.align_c = tc_cuda_alignment((uintptr_t)(g->C ? g->C : g->D));
    s.align_d = tc_cuda_alignment((uintptr_t)g->D);
    s.align_bias = tc_cuda_alignment((uintptr_t)(g->bias ? g->bias : g->bgrad));
    s.align_aux = tc_cuda_alignment((uintptr_t)g->aux);
    return tc_gemm_key_make(&s);
}

#define LT_TRY(call, what)                                                                         \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                         \
            tc_cuda_record(cu, TC_ERR_BACKEND, "cuda %s: %s: %s", op_name, what,                   \
                           cublasLtGetStatusString(s_));                                           \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

/* descriptor, layouts and the heuristic's algorithm for g's key; NULL after
 * recording a cuBLASLt failure */
static tc_cuda_gemm_plan *plan_make(tc_cuda_backend *cu, const tc_cuda_gemm *g,
                                    const tc_gemm_key *key, const char *op_name) {
    tc_cuda_gemm_plan *p = (tc_cuda_gemm_plan *)calloc(1, sizeof *p);
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res;
    int nres = 0;
    int32_t ta = g->ta, tb = g->tb;
    uint32_t epi = lt_epilogue(g->epi);
    uint64_t ws = cu->lt_workspace_bytes;
    uint32_t al_a = key->align_a, al_b = key->align_b, al_c = key->align_c, al_d = key->align_d;
    const bool ta_n = g->ta == CUBLAS_OP_N, tb_n = g->tb == CUBLAS_OP_N;
    if (!p) {
        tc_cuda_record(cu, TC_ERR_OOM, "cuda %s: no host memory for a matmul plan", op_name);
        return NULL;
    }
    LT_TRY(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul desc");
    LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta),
           "transa");
    LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb),
           "transb");
    if (g->epi != TC_EPI_NONE) {
        LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
                                              sizeof epi),
               "epilogue");
        /* the heuristic reads the bias and aux pointers for their
         * alignment, which is part of the key */
        const void *bias = g->bias ? g->bias : g->bgrad;
        if (bias)
            LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                  sizeof bias),
                   "bias pointer");
        if (g->aux) {
            int64_t ld_aux = g->ld_aux;
            LT_TRY(cublasLtMatmulDescSetAttribute(
                       p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &g->aux, sizeof g->aux),
                   "aux pointer");
            LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD,
                                                  &ld_aux, sizeof ld_aux),
                   "aux leading dimension");
        }
    }
    /* stored (rows, cols) of A is (m, k) when not transposed, else (k, m) */
    LT_TRY(cublasLtMatrixLayoutCreate(&p->la, g->ab_type, ta_n ? g->m : g->k, ta_n ? g->k : g->m,
                                      g->lda),
           "layout A");
    LT_TRY(cublasLtMatrixLayoutCreate(&p->lb, g->ab_type, tb_n ? g->k : g->n, tb_n ? g->n : g->k,
                                      g->ldb),
           "layout B");
    LT_TRY(cublasLtMatrixLayoutCreate(&p->ld, g->d_type, g->m, g->n, g->ldd), "layout D");
    if (key->c_is_d || key->ldc == key->ldd)
        p->lc = p->ld;
    else
        LT_TRY(cublasLtMatrixLayoutCreate(&p->lc, g->d_type, g->m, g->n, key->ldc), "layout C");
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
                                                &al_c, sizeof al_c),
           "alignment C");
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                &al_d, sizeof al_d),
           "alignment D");
    {
        cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(cu->lt, p->desc, p->la, p->lb, p->lc,
                                                           p->ld, pref, 1, &res, &nres);
        p->has_algo = hs == CUBLAS_STATUS_SUCCESS && nres > 0 && res.state == CUBLAS_STATUS_SUCCESS;
        if (p->has_algo) p->algo = res.algo;
    }
    cublasLtMatmulPreferenceDestroy(pref);
    return p;
fail:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    plan_destroy(p);
    return NULL;
}

tc_status tc_cuda_gemm_plans_init(tc_cuda_backend *cu) {
    if (!cu->opt.gemm_plans) return TC_OK;
    cu->plans = (tc_gemm_plan_cache *)malloc(sizeof *cu->plans);
    if (!cu->plans) return tc_fail(TC_ERR_OOM, "cuda: no host memory for the matmul plan cache");
    tc_gemm_plan_cache_init(cu->plans);
    return TC_OK;
}

void tc_cuda_gemm_plans_destroy(tc_cuda_backend *cu) {
    if (!cu->plans) return;
    tc_gemm_plan_cache_clear(cu->plans, plan_destroy_cb, NULL);
    free(cu->plans);
    cu->plans = NULL;
}

extern "C" void tc_cuda_gemm_plan_counts(tc_backend *b, long long *hits, long long *misses,
                                         long long *evictions) {
    const tc_gemm_plan_cache *c = tc_cu(b)->plans;
    *hits = c ? c->hits : 0;
    *misses = c ? c->misses : 0;
    *evictions = c ? c->evictions : 0;
}

/* g's plan: from the cache (*owned false) or made for this call alone */
static tc_cuda_gemm_plan *plan_for(tc_cuda_backend *cu, const tc_cuda_gemm *g, bool *owned,
                                   const char *op_name) {
    const tc_gemm_key key = gemm_key(g);
    *owned = cu->plans == NULL;
    if (!cu->plans) return plan_make(cu, g, &key, op_name);
    int slot = -1;
    void *evicted = NULL;
    tc_cuda_gemm_plan *p =
        (tc_cuda_gemm_plan *)tc_gemm_plan_lookup(cu->plans, &key, &slot, &evicted);
    if (p) return p;
    plan_destroy((tc_cuda_gemm_plan *)evicted);
    p = plan_make(cu, g, &key, op_name);
    if (p) tc_gemm_plan_store(cu->plans, slot, &key, p);
    return p;
}

/* ---- one product ---- */

/* the epilogue reads the bias with 16-byte loads: an under-aligned bias is
 * copied (m elements, on the stream) to the 256-byte aligned scratch. the
 * parameter arena aligns every tensor, so only unusual callers pay this */
static const void *aligned_bias(tc_cuda_backend *cu, const tc_cuda_gemm *g, const char *op_name) {
    if (tc_cuda_alignment((uintptr_t)g->bias) >= TC_CUDA_BIAS_ALIGNMENT) return g->bias;
    const size_t bytes = (size_t)g->m * (g->d_type == CUDA_R_32F ? 4 : 2);
    if (bytes > cu->scratch_bytes) {
        tc_cuda_record(cu, TC_ERR_UNSUPPORTED, "cuda %s: bias of %d elements", op_name, g->m);
        return NULL;
    }
    if (!tc_cuda_ok(
            cu, cudaMemcpyAsync(cu->scratch, g->bias, bytes, cudaMemcpyDeviceToDevice, cu->stream),
            "aligned bias copy"))
        return NULL;
    return cu->scratch;
}

/* whether the tiled kernel can stand in: a plain product or a bias, C = D */
static bool fallback_fits(const tc_cuda_gemm *g) {
    return (g->epi == TC_EPI_NONE || g->epi == TC_EPI_BIAS) && (!g->C || g->C == g->D);
}

bool tc_cuda_matmul(tc_cuda_backend *cu, const tc_cuda_gemm *g, const char *op_name) {
    if (g->m <= 0 || g->n <= 0 || g->k <= 0) {
        tc_cuda_record(cu, TC_ERR_ARG, "cuda %s: empty gemm m=%d n=%d k=%d", op_name, g->m, g->n,
                       g->k);
        return true;
    }
    /* cuBLASLt's aux matrix: 16-byte aligned, ld a multiple of 8 elements */
    if (g->aux && (tc_cuda_alignment((uintptr_t)g->aux) < 16 || g->ld_aux % 8 != 0)) return false;
    tc_cuda_gemm gg = *g;
    if (gg.bias) {
        gg.bias = aligned_bias(cu, g, op_name);
        if (!gg.bias) return true;
    }
    bool owned = false;
    tc_cuda_gemm_plan *p = plan_for(cu, &gg, &owned, op_name);
    if (!p) return true;
    bool ran = true;
    if (!p->has_algo) {
        if (fallback_fits(&gg))
            run_fallback(cu, &gg, op_name);
        else
            ran = false;
    } else {
        const void *bias = gg.bias ? gg.bias : gg.bgrad;
        const void *C = gg.C ? gg.C : gg.D;
        if (bias)
            LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                  sizeof bias),
                   "bias pointer");
        if (gg.aux)
            LT_TRY(cublasLtMatmulDescSetAttribute(
                       p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &gg.aux, sizeof gg.aux),
                   "aux pointer");
        LT_TRY(cublasLtMatmul(cu->lt, p->desc, &gg.alpha, gg.A, p->la, gg.B, p->lb, &gg.beta, C,
                              p->lc, gg.D, p->ld, &p->algo, cu->lt_workspace,
                              cu->lt_workspace_bytes, cu->stream),
               "matmul");
    }
fail:
    if (owned) plan_destroy(p);
    return ran;
}

tc_cuda_gemm tc_cuda_gemm_of(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                             const void *A, int lda, const void *B, int ldb, void *D, int ldd,
                             cudaDataType_t ab_type, cudaDataType_t d_type) {
    tc_cuda_gemm g;
    memset(&g, 0, sizeof g);
    g.ta = ta;
    g.tb = tb;
    g.m = m;
    g.n = n;
    g.k = k;
    g.A = A;
    g.lda = lda;
    g.B = B;
    g.ldb = ldb;
    g.D = D;
    g.ldd = ldd;
    g.ab_type = ab_type;
    g.d_type = d_type;
    g.alpha = 1.0f;
    return g;
}

/* ---- the fp32 GEMM op ---- */

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
    tc_cuda_gemm g =
        tc_cuda_gemm_of(trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, N,
                        M, K, B, trans_b ? K : N, A, trans_a ? M : K, C, N, CUDA_R_32F, CUDA_R_32F);
    g.alpha = alpha;
    g.beta = beta;
    tc_cuda_matmul(cu, &g, "gemm_f32");
}
