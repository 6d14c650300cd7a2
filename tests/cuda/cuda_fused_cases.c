/* test_cuda_ops' cases for the CUDA fast paths against the CPU backend, on a
 * second CUDA backend of the same mode made with every fast path on
 * (options gemm_plans, gemm_epilogue, cuda_graph); inputs are made and read
 * through g_gpu, whose queue is drained before the other backend reads them.
 *
 * tolerances, as test_cuda_ops.c explains them (relative to the largest
 * magnitude of the reference), plus the GELU epilogue's: cuBLASLt's GELU is
 * the tanh form, within 4.8e-4 of the exact erf GELU the CPU computes, and
 * its derivative within 8.7e-4 of the exact one (both over all reals); the
 * mixed mode's 1e-2 covers that with room, and only the mixed mode offers
 * the GELU ops (the fp32 mode's 1e-5 would not). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_fused_cases.h"
#include "cuda_harness.h"

#ifdef TC_HAVE_CUDA

static tc_backend *g_fast;

static tc_backend *fast_backend(void) {
    bsync(g_gpu, "cuda (before the fast-path backend)");
    if (!g_fast) {
        tc_backend_options o = tc_backend_options_default();
        o.fp32 = g_fp32;
        o.gemm_plans = o.gemm_epilogue = o.cuda_graph = 1;
        if (tc_backend_cuda_create(&g_fast, &o) != TC_OK)
            fail_msg("cuda backend with the fast paths: %s", tc_last_error());
    }
    return g_fast;
}

void fused_cases_teardown(void) {
    if (g_fast) g_fast->destroy(g_fast);
    g_fast = NULL;
}

typedef struct {
    int N, C, OC; /* OC: the output width; for the GELU cases the MLP width */
} fused_case;

/* out = res + inp w^T + bias, against linear_forward + add on the CPU */
static void run_residual(const fused_case *k) {
    const int N = k->N, C = k->C, OC = k->OC;
    const size_t nw = (size_t)OC * C, no = (size_t)N * OC;
    float *inp = rand_act((size_t)N * C, 1.0f), *w = rand_act(nw, 1.0f / sqrtf((float)C));
    float *bias = rand_act(OC, 0.5f), *res = rand_act(no, 2.0f);
    tc_act *c_inp = put_act(g_cpu, inp, (size_t)N * C), *c_w = put_act(g_cpu, w, nw);
    tc_act *c_b = put_act(g_cpu, bias, OC), *c_res = put_act(g_cpu, res, no);
    tc_act *c_out = balloc(g_cpu, no * 4);
    g_cpu->linear_forward(g_cpu, c_out, c_inp, c_w, c_b, N, C, OC, 0);
    g_cpu->add(g_cpu, c_out, c_res, c_out, no);
    float *r_out = hmalloc(no * 4);
    get_act(g_cpu, r_out, c_out, no);

    tc_act *g_inp = put_act(g_gpu, inp, (size_t)N * C), *g_w = put_act(g_gpu, w, nw);
    tc_act *g_b = put_act(g_gpu, bias, OC), *g_res = put_act(g_gpu, res, no);
    tc_act *g_out = gpu_out_act(no);
    tc_backend *f = fast_backend();
    assert_non_null(f->linear_residual_forward);
    f->linear_residual_forward(f, g_out, g_res, g_inp, g_w, g_b, N, C, OC);
    bsync(f, "cuda linear_residual_forward");
    float *o = hmalloc(no * 4);
    get_act(g_gpu, o, g_out, no);
    printf("  linear_residual_forward N=%d C=%d OC=%d\n", N, C, OC);
    expect_close("res + linear", o, r_out, no, tol_act());
}

/* dw, dbias (+=) with the bias gradient in the weight-gradient GEMM, and
 * dinp, against the CPU's linear_backward; dbias the same bits twice */
static void run_bias_grad(const fused_case *k) {
    const int N = k->N, C = k->C, OC = k->OC;
    const size_t nw = (size_t)OC * C;
    float *inp = rand_act((size_t)N * C, 1.0f), *w = rand_act(nw, 1.0f / sqrtf((float)C));
    float *dout = rand_act((size_t)N * OC, 1.0f);
    float *dw0 = rand_f32(nw, 1.0f), *db0 = rand_f32(OC, 1.0f);
    tc_act *c_inp = put_act(g_cpu, inp, (size_t)N * C), *c_w = put_act(g_cpu, w, nw);
    tc_act *c_dout = put_act(g_cpu, dout, (size_t)N * OC);
    tc_act *c_dinp = balloc(g_cpu, (size_t)N * C * 4);
    float *c_dw = put_f32(g_cpu, dw0, nw), *c_db = put_f32(g_cpu, db0, OC);
    g_cpu->linear_backward(g_cpu, c_dinp, c_dw, c_db, c_dout, c_inp, c_w, N, C, OC, 0);
    float *r_dinp = hmalloc((size_t)N * C * 4), *r_dw = hmalloc(nw * 4), *r_db = hmalloc(OC * 4);
    get_act(g_cpu, r_dinp, c_dinp, (size_t)N * C);
    get_f32(g_cpu, r_dw, c_dw, nw);
    get_f32(g_cpu, r_db, c_db, OC);

    tc_act *g_inp = put_act(g_gpu, inp, (size_t)N * C), *g_w = put_act(g_gpu, w, nw);
    tc_act *g_dout = put_act(g_gpu, dout, (size_t)N * OC), *g_dinp = gpu_out_act((size_t)N * C);
    float *g_dw = put_f32(g_gpu, dw0, nw), *g_db = put_f32(g_gpu, db0, OC);
    tc_backend *f = fast_backend();
    assert_true(f->caps.gemm_bias_grad_epilogue);
    f->linear_backward(f, g_dinp, g_dw, g_db, g_dout, g_inp, g_w, N, C, OC, 0);
    bsync(f, "cuda linear_backward (bias gradient epilogue)");
    float *di = hmalloc((size_t)N * C * 4), *dwh = hmalloc(nw * 4), *dbh = hmalloc(OC * 4);
    get_act(g_gpu, di, g_dinp, (size_t)N * C);
    get_f32(g_gpu, dwh, g_dw, nw);
    get_f32(g_gpu, dbh, g_db, OC);
    printf("  linear_backward, bias gradient in the dw GEMM, N=%d C=%d OC=%d\n", N, C, OC);
    expect_close("dinp", di, r_dinp, (size_t)N * C, tol_act());
    expect_close("dw (+=)", dwh, r_dw, nw, tol_f32());
    expect_close("dbias (+=)", dbh, r_db, OC, tol_f32());
    float *dbh2 = hmalloc(OC * 4);
    if (g_gpu->upload(g_gpu, g_db, db0, OC * 4) != TC_OK ||
        g_gpu->upload(g_gpu, g_dw, dw0, nw * 4) != TC_OK)
        fail_msg("upload");
    f = fast_backend();
    f->linear_backward(f, NULL, g_dw, g_db, g_dout, g_inp, g_w, N, C, OC, 0);
    bsync(f, "cuda linear_backward (again)");
    get_f32(g_gpu, dbh2, g_db, OC);
    expect_same_bits("dbias from the epilogue, twice", dbh, dbh2, OC);
}

/* fc with GELU (pre kept) and the backward of proj through GELU', against
 * linear_forward + gelu_forward and linear_backward + gelu_backward: C is
 * the block width, OC = M the MLP width, proj (C, M) back to C */
static void run_gelu(const fused_case *k) {
    const int N = k->N, C = k->C, M = k->OC;
    const size_t nfc = (size_t)M * C, nh = (size_t)N * M;
    float *inp = rand_act((size_t)N * C, 1.0f), *wfc = rand_act(nfc, 2.0f / sqrtf((float)C));
    float *bfc = rand_act(M, 0.5f), *wpr = rand_act(nfc, 1.0f / sqrtf((float)M));
    float *dout = rand_act((size_t)N * C, 1.0f);
    float *dw0 = rand_f32(nfc, 1.0f), *db0 = rand_f32(C, 1.0f);
    /* cpu: pre, act, then proj's backward and GELU' */
    tc_act *c_inp = put_act(g_cpu, inp, (size_t)N * C), *c_wfc = put_act(g_cpu, wfc, nfc);
    tc_act *c_bfc = put_act(g_cpu, bfc, M), *c_wpr = put_act(g_cpu, wpr, nfc);
    tc_act *c_dout = put_act(g_cpu, dout, (size_t)N * C);
    tc_act *c_pre = balloc(g_cpu, nh * 4), *c_act = balloc(g_cpu, nh * 4);
    tc_act *c_dact = balloc(g_cpu, nh * 4), *c_dpre = balloc(g_cpu, nh * 4);
    float *c_dw = put_f32(g_cpu, dw0, nfc), *c_db = put_f32(g_cpu, db0, C);
    g_cpu->linear_forward(g_cpu, c_pre, c_inp, c_wfc, c_bfc, N, C, M, 0);
    g_cpu->gelu_forward(g_cpu, c_act, c_pre, nh, TC_GELU);
    g_cpu->linear_backward(g_cpu, c_dact, c_dw, c_db, c_dout, c_act, c_wpr, N, M, C, 0);
    g_cpu->gelu_backward(g_cpu, c_dpre, c_pre, c_dact, nh, TC_GELU);
    float *r_pre = hmalloc(nh * 4), *r_act = hmalloc(nh * 4), *r_dpre = hmalloc(nh * 4);
    float *r_dw = hmalloc(nfc * 4), *r_db = hmalloc(C * 4);
    get_act(g_cpu, r_pre, c_pre, nh);
    get_act(g_cpu, r_act, c_act, nh);
    get_act(g_cpu, r_dpre, c_dpre, nh);
    get_f32(g_cpu, r_dw, c_dw, nfc);
    get_f32(g_cpu, r_db, c_db, C);

    tc_act *g_inp = put_act(g_gpu, inp, (size_t)N * C), *g_wfc = put_act(g_gpu, wfc, nfc);
    tc_act *g_bfc = put_act(g_gpu, bfc, M), *g_wpr = put_act(g_gpu, wpr, nfc);
    tc_act *g_dout = put_act(g_gpu, dout, (size_t)N * C);
    tc_act *g_pre = gpu_out_act(nh), *g_act = gpu_out_act(nh), *g_dpre = gpu_out_act(nh);
    float *g_dw = put_f32(g_gpu, dw0, nfc), *g_db = put_f32(g_gpu, db0, C);
    tc_backend *f = fast_backend();
    f->linear_gelu_forward(f, g_act, g_pre, g_inp, g_wfc, g_bfc, N, C, M);
    bsync(f, "cuda linear_gelu_forward");
    float *pre = hmalloc(nh * 4), *act = hmalloc(nh * 4);
    get_act(g_gpu, pre, g_pre, nh);
    get_act(g_gpu, act, g_act, nh);
    /* the backward reads the CPU's pre and act, so it is checked alone */
    tc_act *g_pre_ref = put_act(g_gpu, r_pre, nh), *g_act_ref = put_act(g_gpu, r_act, nh);
    f = fast_backend();
    f->linear_gelu_backward(f, g_dpre, g_dw, g_db, g_dout, g_act_ref, g_pre_ref, g_wpr, N, M, C);
    bsync(f, "cuda linear_gelu_backward");
    float *dpre = hmalloc(nh * 4), *dwh = hmalloc(nfc * 4), *dbh = hmalloc(C * 4);
    get_act(g_gpu, dpre, g_dpre, nh);
    get_f32(g_gpu, dwh, g_dw, nfc);
    get_f32(g_gpu, dbh, g_db, C);
    printf("  linear_gelu_forward / _backward N=%d C=%d M=%d%s\n", N, C, M,
           M % 8 ? " (M not a multiple of 8: the unfused ops)" : "");
    expect_close("pre (aux)", pre, r_pre, nh, tol_act());
    expect_close("GELU (tanh form) vs erf", act, r_act, nh, tol_act());
    expect_close("dpre (GELU' tanh form)", dpre, r_dpre, nh, tol_act());
    expect_close("proj dw (+=)", dwh, r_dw, nfc, tol_f32());
    expect_close("proj dbias (+=)", dbh, r_db, C, tol_f32());
}

void test_fused_linear(void **state) {
    (void)state;
    static const fused_case full[] = {
        {100, 768, 3072}, /* ViT-B/32 mlp, T=50 */
        {154, 512, 2048}, /* text mlp, T=77 */
        {394, 768, 768},  /* out_proj shape, T=197 */
        {154, 700, 1234}, /* pruned: M % 8 != 0, the unfused fallback */
        {8, 768, 512},    /* a small batch */
    };
    static const fused_case quick[] = {{16, 64, 128}};
    RUN_CASES(run_residual, full, quick);
    RUN_CASES(run_bias_grad, full, quick);
    if (g_fp32) {
        /* the exact GELU is the fp32 mode's: no GELU epilogue there */
        tc_backend *f = fast_backend();
        assert_null(f->linear_gelu_forward);
        assert_null(f->linear_gelu_backward);
        return;
    }
    RUN_CASES(run_gelu, full, quick);
}

/* the same products twice through the cache: the second time every lookup
 * hits and nothing is made; results bit-identical to the uncached backend */
void test_plan_cache(void **state) {
    (void)state;
    const int N = 154, C = 512, OC = 2048;
    float *inp = rand_act((size_t)N * C, 1.0f), *w = rand_act((size_t)OC * C, 0.05f);
    float *bias = rand_act(OC, 0.5f);
    tc_act *g_inp = put_act(g_gpu, inp, (size_t)N * C), *g_w = put_act(g_gpu, w, (size_t)OC * C);
    tc_act *g_b = put_act(g_gpu, bias, OC);
    tc_act *o_ref = gpu_out_act((size_t)N * OC), *o_fast = gpu_out_act((size_t)N * OC);
    g_gpu->linear_forward(g_gpu, o_ref, g_inp, g_w, g_b, N, C, OC, 0);
    tc_backend *f = fast_backend();
    long long h0, m0, e0, h1, m1, e1, h2, m2, e2;
    tc_cuda_gemm_plan_counts(f, &h0, &m0, &e0);
    f->linear_forward(f, o_fast, g_inp, g_w, g_b, N, C, OC, 0);
    tc_cuda_gemm_plan_counts(f, &h1, &m1, &e1);
    f->linear_forward(f, o_fast, g_inp, g_w, g_b, N, C, OC, 0);
    tc_cuda_gemm_plan_counts(f, &h2, &m2, &e2);
    bsync(f, "cuda linear_forward through the plan cache");
    printf("  plan cache: %lld hits, %lld misses before; then +%lld/+%lld, +%lld/+%lld\n", h0, m0,
           h1 - h0, m1 - m0, h2 - h1, m2 - m1);
    assert_int_equal(h1 + m1, h0 + m0 + 1); /* one lookup per product */
    assert_int_equal(h2 - h1, 1);           /* the second: a hit */
    assert_int_equal(m2, m1);
    assert_int_equal(e2, e0);
    float *a = hmalloc((size_t)N * OC * 4), *b = hmalloc((size_t)N * OC * 4);
    get_act(g_gpu, a, o_ref, (size_t)N * OC);
    get_act(g_gpu, b, o_fast, (size_t)N * OC);
    expect_same_bits("cached plan vs a plan made per call", b, a, (size_t)N * OC);
}

/* a few ops recorded once and replayed: the replay reads the buffers as
 * they are at replay time; a recording broken by a host wait fails at
 * graph_end and leaves the backend usable */
void test_graph_ops(void **state) {
    (void)state;
    const int N = 100, C = 256, OC = 512;
    const size_t ni = (size_t)N * C, no = (size_t)N * OC;
    float *inp = rand_act(ni, 1.0f), *inp2 = rand_act(ni, 1.0f);
    float *w = rand_act((size_t)OC * C, 0.06f), *bias = rand_act(OC, 0.5f);
    tc_act *g_inp = put_act(g_gpu, inp, ni), *g_w = put_act(g_gpu, w, (size_t)OC * C);
    tc_act *g_b = put_act(g_gpu, bias, OC);
    tc_act *g_pre = gpu_out_act(no), *g_out = gpu_out_act(no), *g_ref = gpu_out_act(no);
    float *tmp = put_f32(g_gpu, inp2, ni);
    tc_backend *f = fast_backend();
    assert_non_null(f->graph_begin);
    tc_graph *g = NULL;
    assert_int_equal(f->graph_begin(f), TC_OK);
    f->linear_forward(f, g_pre, g_inp, g_w, g_b, N, C, OC, 0);
    f->gelu_forward(f, g_out, g_pre, no, TC_QUICK_GELU);
    if (f->graph_end(f, &g) != TC_OK) fail_msg("graph_end: %s", tc_last_error());
    /* nothing ran yet: the outputs still hold the poison */
    bsync(f, "cuda (after recording)");
    float *o = hmalloc(no * 4), *r = hmalloc(no * 4);
    get_act(g_gpu, o, g_out, no);
    assert_true(isnan(o[0]));
    for (int round = 0; round < 2; round++) {
        if (round == 1) { /* new input values in the same buffer */
            g_gpu->f32_to_act(g_gpu, g_inp, tmp, ni);
            bsync(g_gpu, "cuda (new input)");
        }
        assert_int_equal(f->graph_launch(f, g), TC_OK);
        bsync(f, "cuda graph replay");
        g_gpu->linear_forward(g_gpu, g_ref, g_inp, g_w, g_b, N, C, OC, 0);
        g_gpu->gelu_forward(g_gpu, g_ref, g_ref, no, TC_QUICK_GELU);
        get_act(g_gpu, r, g_ref, no);
        get_act(g_gpu, o, g_out, no);
        expect_same_bits(round ? "replay on new input" : "replay", o, r, no);
    }
    f->graph_free(f, g);
    /* a host wait inside a recording: refused at graph_end, backend fine */
    float host = 0.0f;
    assert_int_equal(f->graph_begin(f), TC_OK);
    f->fill_f32(f, tmp, 3.0f, 1);
    (void)f->download(f, &host, tmp, sizeof host);
    g = NULL;
    assert_int_not_equal(f->graph_end(f, &g), TC_OK);
    assert_null(g);
    printf("  a recording with a download was refused: %s\n", tc_last_error());
    f->fill_f32(f, tmp, 5.0f, 1);
    assert_int_equal(f->download(f, &host, tmp, sizeof host), TC_OK);
    assert_true(host == 5.0f);
}

#else

void fused_cases_teardown(void) {}

#endif
