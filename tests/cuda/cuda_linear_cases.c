/* test_cuda_ops' cases for linear layers and gemm_f32 (cuda/gemm.cu, cuda/linear.cu), compiled into
 * that binary: the CUDA backend against the CPU reference backend in the fp32 and the mixed (bf16)
 * mode, with the harness and tolerances of tests/cuda/cuda_harness.h */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_cases.h"
#include "cuda_harness.h"
#include "testutil.h"

#include "backend.h"
#include "status.h"

#ifdef TC_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "tc_cuda.h"

/* linear forward and backward: dinp '=', dw and dbias '+=' */
typedef struct {
    int N, C, OC, w_trans, misalign;
} linear_case;

static void run_linear(const linear_case *k) {
    const int N = k->N, C = k->C, OC = k->OC;
    char what[96];
    const size_t nw = (size_t)C * OC;
    float *inp = rand_act((size_t)N * C, 1.0f);
    float *w = rand_act(nw, 1.0f / sqrtf((float)C));
    float *bias = rand_act(OC, 0.5f);
    float *dout = rand_act((size_t)N * OC, 1.0f);
    float *dw0 = rand_f32(nw, 1.0f), *db0 = rand_f32(OC, 1.0f);

    /* cpu */
    tc_act *c_inp = put_act(g_cpu, inp, (size_t)N * C), *c_w = put_act(g_cpu, w, nw);
    tc_act *c_b = put_act(g_cpu, bias, OC), *c_dout = put_act(g_cpu, dout, (size_t)N * OC);
    tc_act *c_out = balloc(g_cpu, (size_t)N * OC * 4), *c_dinp = balloc(g_cpu, (size_t)N * C * 4);
    float *c_dw = put_f32(g_cpu, dw0, nw), *c_db = put_f32(g_cpu, db0, OC);
    g_cpu->linear_forward(g_cpu, c_out, c_inp, c_w, c_b, N, C, OC, k->w_trans);
    g_cpu->linear_backward(g_cpu, c_dinp, c_dw, c_db, c_dout, c_inp, c_w, N, C, OC, k->w_trans);
    bsync(g_cpu, "cpu linear");
    float *r_out = hmalloc((size_t)N * OC * 4), *r_dinp = hmalloc((size_t)N * C * 4);
    float *r_dw = hmalloc(nw * 4), *r_db = hmalloc(OC * 4);
    get_act(g_cpu, r_out, c_out, (size_t)N * OC);
    get_act(g_cpu, r_dinp, c_dinp, (size_t)N * C);
    get_f32(g_cpu, r_dw, c_dw, nw);
    get_f32(g_cpu, r_db, c_db, OC);

    /* gpu; misalign shifts the weight by one element off cudaMalloc's 256-byte alignment */
    tc_act *g_inp = put_act(g_gpu, inp, (size_t)N * C);
    tc_act *g_wbuf = balloc(g_gpu, (nw + 1) * g_gpu->act_bytes);
    tc_act *g_w = tc_act_offset(g_gpu, g_wbuf, k->misalign ? 1 : 0);
    {
        float *tmp = put_f32(g_gpu, w, nw);
        g_gpu->f32_to_act(g_gpu, g_w, tmp, nw);
    }
    /* misaligned: the bias (read by cuBLASLt's epilogue), dw and dbias are
     * one element off too, as views into pruned parameter buffers are */
    const size_t sh = k->misalign ? 1 : 0;
    tc_act *g_bbuf = balloc(g_gpu, (OC + 1) * g_gpu->act_bytes);
    tc_act *g_b = tc_act_offset(g_gpu, g_bbuf, sh);
    {
        float *tmp = put_f32(g_gpu, bias, OC);
        g_gpu->f32_to_act(g_gpu, g_b, tmp, OC);
    }
    tc_act *g_dout = put_act(g_gpu, dout, (size_t)N * OC);
    tc_act *g_out = gpu_out_act((size_t)N * OC), *g_dinp = gpu_out_act((size_t)N * C);
    float *g_dw = (float *)balloc(g_gpu, (nw + 1) * 4) + sh;
    float *g_db = (float *)balloc(g_gpu, (size_t)(OC + 1) * 4) + sh;
    if (g_gpu->upload(g_gpu, g_dw, dw0, nw * 4) != TC_OK ||
        g_gpu->upload(g_gpu, g_db, db0, (size_t)OC * 4) != TC_OK)
        fail_msg("upload");
    const long long fallbacks = g_gpu->gemm_fallbacks;
    g_gpu->linear_forward(g_gpu, g_out, g_inp, g_w, g_b, N, C, OC, k->w_trans);
    g_gpu->linear_backward(g_gpu, g_dinp, g_dw, g_db, g_dout, g_inp, g_w, N, C, OC, k->w_trans);
    bsync(g_gpu, "cuda linear");
    /* the aligned CLIP shapes (the parameter arena's case) must get cuBLASLt
     * kernels for all three products, never the slow fallback */
    const long long fell = g_gpu->gemm_fallbacks - fallbacks;
    if (fell) printf("  %lld of 3 GEMMs ran on the fallback kernel\n", fell);
    if (fell && !k->misalign && C % 64 == 0 && OC % 64 == 0)
        fail_msg("linear N=%d C=%d OC=%d: %lld GEMMs fell back with aligned operands", N, C, OC,
                 fell);
    float *o = hmalloc((size_t)N * OC * 4), *di = hmalloc((size_t)N * C * 4);
    float *dwh = hmalloc(nw * 4), *dbh = hmalloc(OC * 4);
    get_act(g_gpu, o, g_out, (size_t)N * OC);
    get_act(g_gpu, di, g_dinp, (size_t)N * C);
    get_f32(g_gpu, dwh, g_dw, nw);
    get_f32(g_gpu, dbh, g_db, OC);
    snprintf(what, sizeof what, "linear N=%d C=%d OC=%d wt=%d%s", N, C, OC, k->w_trans,
             k->misalign ? " misaligned w, bias, dw, dbias" : "");
    printf("  %s\n", what);
    expect_close("out", o, r_out, (size_t)N * OC, tol_act());
    expect_close("dinp", di, r_dinp, (size_t)N * C, tol_act());
    expect_close("dw (+=)", dwh, r_dw, nw, tol_f32());
    expect_close("dbias (+=)", dbh, r_db, OC, tol_f32());

    /* the bias gradient is a two-pass column sum: same bits on a second run */
    float *dbh2 = hmalloc(OC * 4);
    if (g_gpu->upload(g_gpu, g_db, db0, OC * 4) != TC_OK) fail_msg("upload");
    g_gpu->linear_backward(g_gpu, NULL, NULL, g_db, g_dout, g_inp, g_w, N, C, OC, k->w_trans);
    get_f32(g_gpu, dbh2, g_db, OC);
    expect_same_bits("linear dbias", dbh, dbh2, OC);
}

void test_linear(void **state) {
    (void)state;
    static const linear_case full[] = {
        {100, 768, 2304, 0, 0}, /* ViT-B/32 qkv, T=50 */
        {154, 512, 2048, 0, 0}, /* text mlp, T=77 */
        {394, 768, 3072, 0, 0}, /* ViT-B/16 mlp, T=197 */
        {394, 3072, 768, 0, 0}, /* ViT-B/16 c_proj */
        {154, 700, 1234, 0, 1}, /* pruned, misaligned weight */
        {154, 1234, 700, 0, 0}, /* pruned c_proj */
        {154, 700, 1344, 0, 0}, /* pruned qkv (7 heads) */
        {8, 768, 512, 1, 0},    /* visual.proj */
        {8, 700, 512, 1, 1},    /* pruned projection, misaligned */
    };
    static const linear_case quick[] = {{50, 64, 96, 0, 0}, {6, 70, 48, 1, 1}};
    RUN_CASES(run_linear, full, quick);
}

/* gemm_f32: every transpose combination, alpha and beta */
void test_gemm_f32(void **state) {
    (void)state;
    const int M = g_quick ? 13 : 77, N = g_quick ? 17 : 130, K = g_quick ? 9 : 512;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            float *A = rand_f32((size_t)M * K, 1.0f), *B = rand_f32((size_t)K * N, 1.0f);
            float *C0 = rand_f32((size_t)M * N, 1.0f);
            float *ca = put_f32(g_cpu, A, (size_t)M * K), *cb = put_f32(g_cpu, B, (size_t)K * N);
            float *cc = put_f32(g_cpu, C0, (size_t)M * N);
            g_cpu->gemm_f32(g_cpu, ta, tb, M, N, K, 0.75f, ca, cb, 0.5f, cc);
            float *ref = hmalloc((size_t)M * N * 4), *got = hmalloc((size_t)M * N * 4);
            get_f32(g_cpu, ref, cc, (size_t)M * N);
            float *ga = put_f32(g_gpu, A, (size_t)M * K), *gb = put_f32(g_gpu, B, (size_t)K * N);
            float *gc = put_f32(g_gpu, C0, (size_t)M * N);
            g_gpu->gemm_f32(g_gpu, ta, tb, M, N, K, 0.75f, ga, gb, 0.5f, gc);
            bsync(g_gpu, "cuda gemm_f32");
            get_f32(g_gpu, got, gc, (size_t)M * N);
            char what[64];
            snprintf(what, sizeof what, "gemm_f32 %dx%dx%d ta=%d tb=%d beta=0.5", M, N, K, ta, tb);
            /* gemm_f32 is fp32 in both modes */
            expect_close(what, got, ref, (size_t)M * N, TOL_FP32);
            /* beta = 0 must not read C (poisoned) */
            float *gd = gpu_out_f32((size_t)M * N);
            g_gpu->gemm_f32(g_gpu, ta, tb, M, N, K, 1.0f, ga, gb, 0.0f, gd);
            float *cd = balloc(g_cpu, (size_t)M * N * 4);
            g_cpu->gemm_f32(g_cpu, ta, tb, M, N, K, 1.0f, ca, cb, 0.0f, cd);
            get_f32(g_cpu, ref, cd, (size_t)M * N);
            get_f32(g_gpu, got, gd, (size_t)M * N);
            snprintf(what, sizeof what, "gemm_f32 %dx%dx%d ta=%d tb=%d beta=0", M, N, K, ta, tb);
            expect_close(what, got, ref, (size_t)M * N, TOL_FP32);
            free_all();
        }
    /* K = 0: no product, C = beta C (beta 0 overwrites the poison) */
    for (int bi = 0; bi < 2; bi++) {
        const float beta = bi ? 0.5f : 0.0f;
        float *C0 = rand_f32((size_t)M * N, 1.0f), *ref = hmalloc((size_t)M * N * 4);
        float *got = hmalloc((size_t)M * N * 4);
        float *cc = put_f32(g_cpu, C0, (size_t)M * N);
        float *gc = bi ? put_f32(g_gpu, C0, (size_t)M * N) : gpu_out_f32((size_t)M * N);
        float *dummy_c = balloc(g_cpu, 4), *dummy_g = balloc(g_gpu, 4);
        g_cpu->gemm_f32(g_cpu, 0, 0, M, N, 0, 1.0f, dummy_c, dummy_c, beta, cc);
        g_gpu->gemm_f32(g_gpu, 0, 0, M, N, 0, 1.0f, dummy_g, dummy_g, beta, gc);
        get_f32(g_cpu, ref, cc, (size_t)M * N);
        get_f32(g_gpu, got, gc, (size_t)M * N);
        expect_close(bi ? "gemm_f32 K=0 beta=0.5" : "gemm_f32 K=0 beta=0", got, ref, (size_t)M * N,
                     TOL_FP32);
        free_all();
    }
}

#endif
