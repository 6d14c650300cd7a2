/* every op of the CUDA backend against the CPU reference backend (the ResNet
 * ops' cases in cuda_resnet_cases.c, compiled in), on fresh
 * random inputs at CLIP shapes, in the fp32 mode and in the mixed (bf16)
 * mode. '=' outputs are poisoned with NaN bit patterns on the GPU before each
 * run, so an element the kernel does not write fails the comparison; '+='
 * outputs start from the same random values on both backends, so an op that
 * overwrites instead of accumulating fails too. ops with reductions are run
 * twice and must give the same bits (no atomics).
 *
 * tolerances are relative to the largest magnitude of the reference tensor
 * (tc_rel_err):
 *   fp32 mode: both backends compute in fp32 (or double), and differ only in
 *     the order of summation. a K-term fp32 dot product carries a rounding
 *     error of about sqrt(K) 2^-24 of its terms, ~3e-6 for K = 3072, so the
 *     1e-5 bound holds with margin; TOL_FP32 = 1e-5.
 *   mixed mode: inputs are rounded to bf16 on the host before either backend
 *     sees them, so both multiply the same numbers, and products of bf16
 *     values are exact in fp32. what remains is the rounding of a bf16 result:
 *     bf16 keeps 8 significant bits, so rounding to nearest errs by at most
 *     2^-9 (~2e-3) of the value and hence of the tensor maximum. an op that
 *     rounds twice ('+=' into a bf16 buffer rounds the sum, which can be
 *     larger than either term) can reach ~4e-3; TOL_BF16 = 1e-2 leaves a 2.5x
 *     margin over that. fp32 outputs computed from bf16 inputs (dw, dbias,
 *     lse, features, losses) see only summation order and fp32-vs-double
 *     statistics: TOL_F32_IN_MIXED = 1e-4.
 *
 * TC_CUDA_TEST_QUICK=1 runs one small shape per op (for compute-sanitizer).
 * without a CUDA build or a device the test prints the reason and exits 77. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testutil.h"
#include "cuda_harness.h"
#include "cuda_resnet_cases.h"

#include "backend.h"
#include "status.h"
#ifdef TC_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "tc_cuda.h"
#endif

#ifdef TC_HAVE_CUDA

/* ============================== tests ============================== */

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
    g_gpu->linear_forward(g_gpu, g_out, g_inp, g_w, g_b, N, C, OC, k->w_trans);
    g_gpu->linear_backward(g_gpu, g_dinp, g_dw, g_db, g_dout, g_inp, g_w, N, C, OC, k->w_trans);
    bsync(g_gpu, "cuda linear");
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

static void test_linear(void **state) {
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
static void test_gemm_f32(void **state) {
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

/* layernorm forward; backward with dinp, dw, dbias all '+=' */
static void run_layernorm(int N, int C) {
    float *x = rand_act((size_t)N * C, 2.0f);
    for (int r = 0; r < N; r++) /* rows with an offset, as the residual stream has */
        for (int c = 0; c < C; c++) {
            float v = x[(size_t)r * C + c] + (float)(r % 5) - 2.0f;
            x[(size_t)r * C + c] = g_fp32 ? v : bf16_round(v);
        }
    float *w = rand_act(C, 1.0f), *bias = rand_act(C, 1.0f), *dout = rand_act((size_t)N * C, 1.0f);
    float *dinp0 = rand_act((size_t)N * C, 1.0f), *dw0 = rand_f32(C, 1.0f),
          *db0 = rand_f32(C, 1.0f);
    const size_t n = (size_t)N * C;

    tc_act *cx = put_act(g_cpu, x, n), *cw = put_act(g_cpu, w, C), *cb = put_act(g_cpu, bias, C);
    tc_act *cdo = put_act(g_cpu, dout, n), *cdi = put_act(g_cpu, dinp0, n);
    tc_act *co = balloc(g_cpu, n * 4);
    float *cm = balloc(g_cpu, N * 4), *cr = balloc(g_cpu, N * 4);
    float *cdw = put_f32(g_cpu, dw0, C), *cdb = put_f32(g_cpu, db0, C);
    g_cpu->layernorm_forward(g_cpu, co, cm, cr, cx, cw, cb, N, C);
    g_cpu->layernorm_backward(g_cpu, cdi, cdw, cdb, cdo, cx, cw, cm, cr, N, C);
    float *r_o = hmalloc(n * 4), *r_m = hmalloc(N * 4), *r_r = hmalloc(N * 4);
    float *r_di = hmalloc(n * 4), *r_dw = hmalloc(C * 4), *r_db = hmalloc(C * 4);
    get_act(g_cpu, r_o, co, n);
    get_f32(g_cpu, r_m, cm, N);
    get_f32(g_cpu, r_r, cr, N);
    get_act(g_cpu, r_di, cdi, n);
    get_f32(g_cpu, r_dw, cdw, C);
    get_f32(g_cpu, r_db, cdb, C);

    tc_act *gx = put_act(g_gpu, x, n), *gw = put_act(g_gpu, w, C), *gb = put_act(g_gpu, bias, C);
    tc_act *gdo = put_act(g_gpu, dout, n), *gdi = put_act(g_gpu, dinp0, n);
    tc_act *go = gpu_out_act(n);
    float *gm = gpu_out_f32(N), *gr = gpu_out_f32(N);
    float *gdw = put_f32(g_gpu, dw0, C), *gdb = put_f32(g_gpu, db0, C);
    g_gpu->layernorm_forward(g_gpu, go, gm, gr, gx, gw, gb, N, C);
    g_gpu->layernorm_backward(g_gpu, gdi, gdw, gdb, gdo, gx, gw, gm, gr, N, C);
    bsync(g_gpu, "cuda layernorm");
    float *o = hmalloc(n * 4), *m = hmalloc(N * 4), *r = hmalloc(N * 4);
    float *di = hmalloc(n * 4), *dw = hmalloc(C * 4), *db = hmalloc(C * 4);
    get_act(g_gpu, o, go, n);
    get_f32(g_gpu, m, gm, N);
    get_f32(g_gpu, r, gr, N);
    get_act(g_gpu, di, gdi, n);
    get_f32(g_gpu, dw, gdw, C);
    get_f32(g_gpu, db, gdb, C);
    printf("  layernorm N=%d C=%d\n", N, C);
    expect_close("out", o, r_o, n, tol_act());
    expect_close("mean", m, r_m, N, tol_f32());
    expect_close("rstd", r, r_r, N, tol_f32());
    expect_close("dinp (+=)", di, r_di, n, tol_act());
    expect_close("dw (+=)", dw, r_dw, C, tol_f32());
    expect_close("dbias (+=)", db, r_db, C, tol_f32());

    /* determinism of the two-pass parameter gradients */
    float *dw2 = hmalloc(C * 4), *db2 = hmalloc(C * 4);
    if (g_gpu->upload(g_gpu, gdw, dw0, C * 4) != TC_OK ||
        g_gpu->upload(g_gpu, gdb, db0, C * 4) != TC_OK)
        fail_msg("upload");
    g_gpu->layernorm_backward(g_gpu, NULL, gdw, gdb, gdo, gx, gw, gm, gr, N, C);
    get_f32(g_gpu, dw2, gdw, C);
    get_f32(g_gpu, db2, gdb, C);
    expect_same_bits("layernorm dw", dw, dw2, C);
    expect_same_bits("layernorm dbias", db, db2, C);
}

static void test_layernorm(void **state) {
    (void)state;
    static const int full[][2] = {{100, 768}, {154, 512}, {394, 768}, {154, 700}, {3, 33}};
    static const int quick[][2] = {{10, 96}, {3, 33}};
    const int(*cs)[2] = g_quick ? quick : full;
    size_t n = g_quick ? 2 : sizeof full / sizeof *full;
    for (size_t i = 0; i < n; i++) {
        run_layernorm(cs[i][0], cs[i][1]);
        free_all();
    }
}

/* ---- structured masks (automatic inheritance) ---- */

/* a mask of n values: exact zeros (pruned), ones, and soft values in (0, 1)
 * (L0 gates during the mask phase); at least one of each */
static float *rand_mask(size_t n) {
    float *z = hmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        uint64_t r = tc_test_rand(&g_rng);
        switch (r % 4) {
        case 0: z[i] = 0.0f; break;
        case 1: z[i] = 1.0f; break;
        default: z[i] = 0.05f + 0.9f * (float)((r >> 16) % 1000) / 1000.0f; break;
        }
    }
    if (n >= 3) {
        z[0] = 0.0f;
        z[1] = 1.0f;
        z[2] = 0.375f;
    }
    return z;
}

/* mask_cols forward (out '=', also in place) and backward (dx '=', dz '+='),
 * with dx aliasing dout when alias is set */
static void run_mask_cols(int N, int C, int group, int alias) {
    const size_t n = (size_t)N * C;
    const int groups = C / group;
    float *x = rand_act(n, 1.0f), *dout = rand_act(n, 1.0f), *z = rand_mask(groups);
    float *dz0 = rand_f32(groups, 1.0f);

    tc_act *cx = put_act(g_cpu, x, n), *cdo = put_act(g_cpu, dout, n);
    float *cz = put_f32(g_cpu, z, groups), *cdz = put_f32(g_cpu, dz0, groups);
    tc_act *co = balloc(g_cpu, n * 4), *cdx = alias ? cdo : balloc(g_cpu, n * 4);
    g_cpu->mask_cols_forward(g_cpu, co, cx, cz, N, C, group);
    g_cpu->mask_cols_backward(g_cpu, cdx, cdz, cdo, cx, cz, N, C, group);
    float *r_o = hmalloc(n * 4), *r_dx = hmalloc(n * 4), *r_dz = hmalloc(groups * 4);
    get_act(g_cpu, r_o, co, n);
    get_act(g_cpu, r_dx, cdx, n);
    get_f32(g_cpu, r_dz, cdz, groups);

    tc_act *gx = put_act(g_gpu, x, n), *gdo = put_act(g_gpu, dout, n);
    float *gz = put_f32(g_gpu, z, groups), *gdz = put_f32(g_gpu, dz0, groups);
    tc_act *go = gpu_out_act(n), *gdx = alias ? gdo : gpu_out_act(n);
    tc_act *gxx = put_act(g_gpu, x, n); /* forward in place: out aliases x */
    g_gpu->mask_cols_forward(g_gpu, go, gx, gz, N, C, group);
    g_gpu->mask_cols_forward(g_gpu, gxx, gxx, gz, N, C, group);
    g_gpu->mask_cols_backward(g_gpu, gdx, gdz, gdo, gx, gz, N, C, group);
    bsync(g_gpu, "cuda mask_cols");
    float *o = hmalloc(n * 4), *oi = hmalloc(n * 4), *dx = hmalloc(n * 4);
    float *dz = hmalloc(groups * 4);
    get_act(g_gpu, o, go, n);
    get_act(g_gpu, oi, gxx, n);
    get_act(g_gpu, dx, gdx, n);
    get_f32(g_gpu, dz, gdz, groups);
    printf("  mask_cols N=%d C=%d group=%d%s\n", N, C, group, alias ? " (dx aliases dout)" : "");
    expect_close("out", o, r_o, n, tol_act());
    expect_same_bits("out in place", o, oi, n);
    expect_close(alias ? "dx (in place over dout)" : "dx", dx, r_dx, n, tol_act());
    expect_close("dz (+=)", dz, r_dz, groups, tol_f32());
    /* pruned columns: exactly zero forward output and input gradient */
    for (size_t i = 0; i < n; i++)
        if (z[(i % (size_t)C) / (size_t)group] == 0.0f && (o[i] != 0.0f || dx[i] != 0.0f))
            fail_msg("mask_cols: element %zu of a zero-masked column is %g / %g", i, o[i], dx[i]);

    /* the dz reduction gives the same bits twice (dout intact only without aliasing) */
    if (!alias) {
        float *dz2 = hmalloc(groups * 4);
        if (g_gpu->upload(g_gpu, gdz, dz0, groups * 4) != TC_OK) fail_msg("upload");
        g_gpu->mask_cols_backward(g_gpu, NULL, gdz, gdo, gx, gz, N, C, group);
        get_f32(g_gpu, dz2, gdz, groups);
        expect_same_bits("mask_cols dz", dz, dz2, groups);
    }
}

static void test_mask_cols(void **state) {
    (void)state;
    static const int full[][4] = {
        {154, 512, 1, 0},  /* text hidden dims, T=77 */
        {394, 768, 64, 1}, /* ViT-B/16 heads (A = 12 x 64), in place as model.c calls it */
        {154, 700, 1, 1},  /* pruned width, in place */
        {100, 1234, 1, 0}, /* pruned MLP units */
        {154, 448, 64, 0}, /* 7 heads */
        {1, 64, 64, 1},    /* one row, one head */
    };
    static const int quick[][4] = {{10, 96, 1, 0}, {6, 128, 64, 1}};
    const int(*cs)[4] = g_quick ? quick : full;
    size_t n = g_quick ? sizeof quick / sizeof *quick : sizeof full / sizeof *full;
    for (size_t i = 0; i < n; i++) {
        run_mask_cols(cs[i][0], cs[i][1], cs[i][2], cs[i][3]);
        free_all();
    }
}

/* masked layernorm: forward (out, mean, rstd '='), backward (dinp, dw, dbias
 * '+='); mask_kind 0: zeros and soft values, 1: all kept (plain layernorm),
 * 2: all zero (every output 0, the backward touches nothing) */
static void run_layernorm_masked(int N, int C, int mask_kind) {
    const size_t n = (size_t)N * C;
    float *x = rand_act(n, 2.0f);
    for (int r = 0; r < N; r++)
        for (int c = 0; c < C; c++) {
            float v = x[(size_t)r * C + c] + (float)(r % 5) - 2.0f;
            x[(size_t)r * C + c] = g_fp32 ? v : bf16_round(v);
        }
    float *mask = rand_mask(C);
    for (int c = 0; c < C && mask_kind; c++)
        mask[c] = mask_kind == 1 ? 1.0f : 0.0f;
    float *w = rand_act(C, 1.0f), *bias = rand_act(C, 1.0f), *dout = rand_act(n, 1.0f);
    float *dinp0 = rand_act(n, 1.0f), *dw0 = rand_f32(C, 1.0f), *db0 = rand_f32(C, 1.0f);

    tc_act *cx = put_act(g_cpu, x, n), *cw = put_act(g_cpu, w, C), *cb = put_act(g_cpu, bias, C);
    tc_act *cdo = put_act(g_cpu, dout, n), *cdi = put_act(g_cpu, dinp0, n);
    float *cmask = put_f32(g_cpu, mask, C);
    tc_act *co = balloc(g_cpu, n * 4);
    float *cm = balloc(g_cpu, N * 4), *cr = balloc(g_cpu, N * 4);
    float *cdw = put_f32(g_cpu, dw0, C), *cdb = put_f32(g_cpu, db0, C);
    g_cpu->layernorm_masked_forward(g_cpu, co, cm, cr, cx, cw, cb, cmask, N, C);
    g_cpu->layernorm_masked_backward(g_cpu, cdi, cdw, cdb, cdo, cx, cw, cm, cr, cmask, N, C);
    float *r_o = hmalloc(n * 4), *r_m = hmalloc(N * 4), *r_r = hmalloc(N * 4);
    float *r_di = hmalloc(n * 4), *r_dw = hmalloc(C * 4), *r_db = hmalloc(C * 4);
    get_act(g_cpu, r_o, co, n);
    get_f32(g_cpu, r_m, cm, N);
    get_f32(g_cpu, r_r, cr, N);
    get_act(g_cpu, r_di, cdi, n);
    get_f32(g_cpu, r_dw, cdw, C);
    get_f32(g_cpu, r_db, cdb, C);

    tc_act *gx = put_act(g_gpu, x, n), *gw = put_act(g_gpu, w, C), *gb = put_act(g_gpu, bias, C);
    tc_act *gdo = put_act(g_gpu, dout, n), *gdi = put_act(g_gpu, dinp0, n);
    float *gmask = put_f32(g_gpu, mask, C);
    tc_act *go = gpu_out_act(n);
    float *gm = gpu_out_f32(N), *gr = gpu_out_f32(N);
    float *gdw = put_f32(g_gpu, dw0, C), *gdb = put_f32(g_gpu, db0, C);
    g_gpu->layernorm_masked_forward(g_gpu, go, gm, gr, gx, gw, gb, gmask, N, C);
    g_gpu->layernorm_masked_backward(g_gpu, gdi, gdw, gdb, gdo, gx, gw, gm, gr, gmask, N, C);
    bsync(g_gpu, "cuda layernorm_masked");
    float *o = hmalloc(n * 4), *m = hmalloc(N * 4), *r = hmalloc(N * 4);
    float *di = hmalloc(n * 4), *dw = hmalloc(C * 4), *db = hmalloc(C * 4);
    get_act(g_gpu, o, go, n);
    get_f32(g_gpu, m, gm, N);
    get_f32(g_gpu, r, gr, N);
    get_act(g_gpu, di, gdi, n);
    get_f32(g_gpu, dw, gdw, C);
    get_f32(g_gpu, db, gdb, C);
    static const char *kinds[3] = {"zeros and soft values", "all kept", "all zero"};
    printf("  layernorm_masked N=%d C=%d mask %s\n", N, C, kinds[mask_kind]);
    expect_close("out", o, r_o, n, tol_act());
    expect_close("mean", m, r_m, N, tol_f32());
    expect_close("rstd", r, r_r, N, tol_f32());
    expect_close("dinp (+=)", di, r_di, n, tol_act());
    expect_close("dw (+=)", dw, r_dw, C, tol_f32());
    expect_close("dbias (+=)", db, r_db, C, tol_f32());
    /* masked columns: output exactly 0; dinp, dw and dbias keep their start values */
    for (int c = 0; c < C; c++) {
        if (mask[c] != 0.0f) continue;
        if (dw[c] != dw0[c] || db[c] != db0[c])
            fail_msg("layernorm_masked: dw/dbias of masked column %d changed", c);
        for (int rr = 0; rr < N; rr++) {
            const size_t i = (size_t)rr * C + c;
            if (o[i] != 0.0f) fail_msg("layernorm_masked: out[%d, %d] = %g", rr, c, o[i]);
            if (di[i] != dinp0[i]) fail_msg("layernorm_masked: dinp[%d, %d] changed", rr, c);
        }
    }

    /* determinism of the two-pass parameter gradients */
    float *dw2 = hmalloc(C * 4), *db2 = hmalloc(C * 4);
    if (g_gpu->upload(g_gpu, gdw, dw0, C * 4) != TC_OK ||
        g_gpu->upload(g_gpu, gdb, db0, C * 4) != TC_OK)
        fail_msg("upload");
    g_gpu->layernorm_masked_backward(g_gpu, NULL, gdw, gdb, gdo, gx, gw, gm, gr, gmask, N, C);
    get_f32(g_gpu, dw2, gdw, C);
    get_f32(g_gpu, db2, gdb, C);
    expect_same_bits("layernorm_masked dw", dw, dw2, C);
    expect_same_bits("layernorm_masked dbias", db, db2, C);
}

static void test_layernorm_masked(void **state) {
    (void)state;
    static const int full[][3] = {{100, 768, 0}, {154, 512, 0}, {394, 768, 0}, {154, 700, 0},
                                  {3, 33, 0},    {50, 768, 1},  {50, 768, 2}};
    static const int quick[][3] = {{10, 96, 0}, {3, 33, 2}};
    const int(*cs)[3] = g_quick ? quick : full;
    size_t n = g_quick ? sizeof quick / sizeof *quick : sizeof full / sizeof *full;
    for (size_t i = 0; i < n; i++) {
        run_layernorm_masked(cs[i][0], cs[i][1], cs[i][2]);
        free_all();
    }
}

/* GELU / QuickGELU forward and backward, and add */
static void test_gelu_add(void **state) {
    (void)state;
    const size_t n = g_quick ? 1000 : (size_t)154 * 1234 + 3;
    for (int kind = 0; kind < 2; kind++) {
        float *x = rand_act(n, 4.0f), *y = rand_act(n, 4.0f), *dout = rand_act(n, 1.0f);
        tc_act *cx = put_act(g_cpu, x, n), *cy = put_act(g_cpu, y, n),
               *cd = put_act(g_cpu, dout, n);
        tc_act *co = balloc(g_cpu, n * 4), *cdi = balloc(g_cpu, n * 4), *cs = balloc(g_cpu, n * 4);
        g_cpu->gelu_forward(g_cpu, co, cx, n, (tc_activation)kind);
        g_cpu->gelu_backward(g_cpu, cdi, cx, cd, n, (tc_activation)kind);
        g_cpu->add(g_cpu, cs, cx, cy, n);
        float *r_o = hmalloc(n * 4), *r_di = hmalloc(n * 4), *r_s = hmalloc(n * 4);
        get_act(g_cpu, r_o, co, n);
        get_act(g_cpu, r_di, cdi, n);
        get_act(g_cpu, r_s, cs, n);
        tc_act *gx = put_act(g_gpu, x, n), *gy = put_act(g_gpu, y, n),
               *gd = put_act(g_gpu, dout, n);
        tc_act *go = gpu_out_act(n), *gdi = gpu_out_act(n), *gs = gpu_out_act(n);
        g_gpu->gelu_forward(g_gpu, go, gx, n, (tc_activation)kind);
        g_gpu->gelu_backward(g_gpu, gdi, gx, gd, n, (tc_activation)kind);
        g_gpu->add(g_gpu, gs, gx, gy, n);
        bsync(g_gpu, "cuda gelu");
        float *o = hmalloc(n * 4), *di = hmalloc(n * 4), *s = hmalloc(n * 4);
        get_act(g_gpu, o, go, n);
        get_act(g_gpu, di, gdi, n);
        get_act(g_gpu, s, gs, n);
        printf("  %s n=%zu\n", kind ? "quick_gelu" : "gelu", n);
        expect_close("forward", o, r_o, n, tol_act());
        expect_close("backward", di, r_di, n, tol_act());
        expect_close("add", s, r_s, n, tol_act());
        free_all();
    }
}

/* fused attention forward and backward */
typedef struct {
    int B, T, NH, HS, causal;
} att_case;

/* the CPU reference of a case: forward output and lse, then the backward
 * from the forward's output rounded as the GPU stores it (o_in), so both
 * backends' backwards start from the same input */
typedef struct {
    float *r_o, *r_l, *r_dq, *o_in;
} att_reference;

static att_reference attention_reference(const att_case *k, const float *qkv, const float *dout) {
    const int B = k->B, T = k->T, NH = k->NH, HS = k->HS, A = NH * HS;
    const size_t nqkv = (size_t)B * T * 3 * A, no = (size_t)B * T * A, nl = (size_t)B * NH * T;
    att_reference r;
    tc_act *cq = put_act(g_cpu, qkv, nqkv), *cdo = put_act(g_cpu, dout, no);
    tc_act *co = balloc(g_cpu, no * 4), *cdq = balloc(g_cpu, nqkv * 4);
    float *cl = balloc(g_cpu, nl * 4);
    g_cpu->attention_forward(g_cpu, co, cl, cq, B, T, NH, HS, k->causal);
    r.r_o = hmalloc(no * 4);
    r.r_l = hmalloc(nl * 4);
    r.r_dq = hmalloc(nqkv * 4);
    get_act(g_cpu, r.r_o, co, no);
    get_f32(g_cpu, r.r_l, cl, nl);
    r.o_in = hmalloc(no * 4);
    for (size_t i = 0; i < no; i++)
        r.o_in[i] = g_fp32 ? r.r_o[i] : bf16_round(r.r_o[i]);
    tc_act *co2 = put_act(g_cpu, r.o_in, no);
    g_cpu->attention_backward(g_cpu, cdq, cdo, cq, co2, cl, B, T, NH, HS, k->causal);
    get_act(g_cpu, r.r_dq, cdq, nqkv);
    return r;
}

/* dq, dk and dv of packed (rows, 3A) gradients compared part by part:
 * their magnitudes differ */
static void expect_dqkv(const char *tag, const float *dq, const float *r_dq, int rows, int A) {
    const size_t n = (size_t)rows * A;
    float *gp = hmalloc(n * 4), *rp = hmalloc(n * 4);
    static const char *parts[3] = {"dq", "dk", "dv"};
    for (int part = 0; part < 3; part++) {
        for (size_t bt = 0; bt < (size_t)rows; bt++) {
            memcpy(gp + bt * A, dq + bt * 3 * A + (size_t)part * A, (size_t)A * 4);
            memcpy(rp + bt * A, r_dq + bt * 3 * A + (size_t)part * A, (size_t)A * 4);
        }
        char name[64];
        snprintf(name, sizeof name, "%s%s", parts[part], tag);
        expect_close(name, gp, rp, n, tol_act());
    }
}

static void run_attention(const att_case *k) {
    const int B = k->B, T = k->T, NH = k->NH, HS = k->HS, A = NH * HS;
    const size_t nqkv = (size_t)B * T * 3 * A, no = (size_t)B * T * A, nl = (size_t)B * NH * T;
    float *qkv = rand_act(nqkv, 2.0f), *dout = rand_act(no, 1.0f);
    att_reference ref = attention_reference(k, qkv, dout);
    float *r_o = ref.r_o, *r_l = ref.r_l, *r_dq = ref.r_dq, *o_in = ref.o_in;

    tc_act *gq = put_act(g_gpu, qkv, nqkv), *gdo = put_act(g_gpu, dout, no);
    tc_act *go = gpu_out_act(no), *gdq = gpu_out_act(nqkv);
    float *gl = gpu_out_f32(nl);
    g_gpu->attention_forward(g_gpu, go, gl, gq, B, T, NH, HS, k->causal);
    bsync(g_gpu, "cuda attention_forward");
    float *o = hmalloc(no * 4), *l = hmalloc(nl * 4), *dq = hmalloc(nqkv * 4);
    get_act(g_gpu, o, go, no);
    get_f32(g_gpu, l, gl, nl);
    tc_act *go2 = put_act(g_gpu, o_in, no);
    float *gl2 = put_f32(g_gpu, r_l, nl);
    g_gpu->attention_backward(g_gpu, gdq, gdo, gq, go2, gl2, B, T, NH, HS, k->causal);
    bsync(g_gpu, "cuda attention_backward");
    get_act(g_gpu, dq, gdq, nqkv);
    printf("  attention B=%d T=%d NH=%d HS=%d causal=%d\n", B, T, NH, HS, k->causal);
    expect_close("out", o, r_o, no, tol_act());
    expect_close("lse", l, r_l, nl, tol_f32());
    expect_dqkv("", dq, r_dq, B * T, A);
    /* deterministic: a second backward gives the same bits */
    float *dq2 = hmalloc(nqkv * 4);
    poison(g_gpu, gdq, nqkv * g_gpu->act_bytes);
    g_gpu->attention_backward(g_gpu, gdq, gdo, gq, go2, gl2, B, T, NH, HS, k->causal);
    get_act(g_gpu, dq2, gdq, nqkv);
    expect_same_bits("attention dqkv", dq, dq2, nqkv);
}

static void test_attention(void **state) {
    (void)state;
    static const att_case full[] = {
        {2, 50, 12, 64, 0},  /* ViT-B/32 */
        {2, 77, 8, 64, 1},   /* text */
        {2, 197, 12, 64, 0}, /* ViT-B/16 */
        {1, 257, 7, 64, 1},  /* longest supported context, pruned heads */
        {2, 77, 7, 64, 1},   /* pruned text tower */
        {2, 77, 4, 32, 1},   /* head size 32 */
        {1, 130, 2, 128, 0}, /* head size 128 */
        {1, 1, 3, 64, 1},    /* one token */
        /* heads padded inside the kernels (attention_common.h): ViT-H 80,
         * ViT-g 88, ViT-bigG 104, and the ends of the range, 8 and 256 */
        {1, 257, 16, 80, 0}, /* ViT-H/14 */
        {2, 77, 2, 80, 1},
        {1, 66, 2, 88, 0},   /* ViT-g/14 */
        {2, 50, 2, 104, 1},  /* ViT-bigG/14 */
        {1, 40, 3, 40, 1},
        {1, 20, 2, 8, 1},
        {1, 33, 2, 256, 0},
    };
    static const att_case quick[] = {{1, 70, 2, 64, 1}, {1, 33, 1, 128, 0}, {1, 20, 2, 32, 0},
                                     {1, 45, 2, 88, 1}};
    RUN_CASES(run_attention, full, quick);
}

/* the tensor-core attention kernels (cuda/attention_forward_mma.cu,
 * attention_backward_mma.cu), selected with TINYCLIP_ATTENTION=mma in the
 * bf16 mode, against the CPU backend; the FMA kernels run on the same inputs
 * in the same test, so one run covers both paths.
 *
 * tolerance: TOL_BF16 (1e-2 of the tensor maximum) for out, dq, dk, dv and
 * TOL_F32_IN_MIXED (1e-4) for lse. the mma kernels multiply the same bf16
 * inputs exactly (bf16 x bf16 products are exact in fp32, accumulated in
 * fp32), so S, dP, D, lse and the softmax statistics differ from the CPU only
 * in summation order (lse: 1e-4 as for the FMA kernels). on top of the FMA
 * kernels' error they round P (forward, dV) and dS (dK, dQ) to bf16 as mma
 * operands: a relative error of at most 2^-9 per term. for out this is
 * bounded by 2^-9 sum_j P_ij |v_j| <= 2^-9 max|v| (P sums to 1), i.e. <= 2e-3
 * of max|v| (~4e-3 of max|out| here, where averaging makes max|out| about half of
 * max|v|), plus the final bf16 rounding (2^-9, 2e-3): <= 6e-3 in the worst
 * case. for dV, dK, dQ the per-term errors have random signs, so they add
 * as sqrt of the sum of squares: about 2^-9 / sqrt(3) ~ 1e-3 of a typical
 * element, a few 1e-3 of the maximum with the final rounding. 1e-2 leaves
 * margin over both; an indexing fault (a wrong row, column, or fragment
 * element) gives errors of order 1.
 *
 * for T >= 32 the mma forward's output must differ from the FMA forward's in
 * at least one element: with P rounded to bf16 identical tensors would mean
 * the mma path did not run (a silent fallback; with one token both give v).
 * the mma backward takes the FMA forward's lse and the FMA backward the mma
 * forward's lse (the lse meaning is shared).
 * fp32 mode: the selection must leave the FMA kernels in place (checked on one
 * shape against the CPU with the fp32 tolerance). */
static tc_backend *g_gpu_mma; /* the same device, tensor-core attention chosen */

/* the backend whose attention ops run the chosen kernels: g_gpu (FMA), or a
 * second backend made with TC_ATTENTION_MMA; both share the device memory,
 * and g_gpu's queue is drained before the other one reads it */
static tc_backend *attention_backend(int mma) {
    bsync(g_gpu, "cuda (before switching the attention kernels)");
    if (!mma) return g_gpu;
    if (!g_gpu_mma) {
        tc_backend_options o = {.fp32 = g_fp32, .attention = TC_ATTENTION_MMA};
        if (tc_backend_cuda_create(&g_gpu_mma, &o) != TC_OK)
            fail_msg("cuda backend with mma attention: %s", tc_last_error());
    }
    return g_gpu_mma;
}

static void run_attention_mma(const att_case *k) {
    const int B = k->B, T = k->T, NH = k->NH, HS = k->HS, A = NH * HS;
    const size_t nqkv = (size_t)B * T * 3 * A, no = (size_t)B * T * A, nl = (size_t)B * NH * T;
    float *qkv = rand_act(nqkv, 2.0f), *dout = rand_act(no, 1.0f);
    att_reference ref = attention_reference(k, qkv, dout);
    float *r_o = ref.r_o, *r_l = ref.r_l, *r_dq = ref.r_dq, *o_in = ref.o_in;

    tc_act *gq = put_act(g_gpu, qkv, nqkv), *gdo = put_act(g_gpu, dout, no);
    tc_act *go2 = put_act(g_gpu, o_in, no);
    /* FMA forward (its output and lse) */
    tc_backend *fma = attention_backend(0);
    tc_act *go_f = gpu_out_act(no);
    float *gl_f = gpu_out_f32(nl);
    fma->attention_forward(fma, go_f, gl_f, gq, B, T, NH, HS, k->causal);
    bsync(fma, "cuda attention_forward (fma)");
    /* mma forward, and the mma backward from the FMA forward's lse */
    tc_act *go = gpu_out_act(no), *gdq = gpu_out_act(nqkv);
    float *gl = gpu_out_f32(nl);
    tc_backend *mma = attention_backend(1);
    mma->attention_forward(mma, go, gl, gq, B, T, NH, HS, k->causal);
    bsync(mma, "cuda attention_forward (mma)");
    mma->attention_backward(mma, gdq, gdo, gq, go2, gl_f, B, T, NH, HS, k->causal);
    bsync(mma, "cuda attention_backward (mma)");
    float *o = hmalloc(no * 4), *o_f = hmalloc(no * 4), *l = hmalloc(nl * 4);
    float *dq = hmalloc(nqkv * 4);
    get_act(g_gpu, o, go, no);
    get_act(g_gpu, o_f, go_f, no);
    get_f32(g_gpu, l, gl, nl);
    get_act(g_gpu, dq, gdq, nqkv);
    printf("  attention mma B=%d T=%d NH=%d HS=%d causal=%d\n", B, T, NH, HS, k->causal);
    expect_close("out (mma)", o, r_o, no, tol_act());
    expect_close("lse (mma)", l, r_l, nl, tol_f32());
    expect_dqkv(" (mma, fma lse)", dq, r_dq, B * T, A);
    if (!g_fp32 && T >= 32 && memcmp(o, o_f, no * 4) == 0)
        fail_msg("attention mma: output identical to the FMA kernel's: the mma path did not run");

    /* deterministic: a second mma backward gives the same bits */
    float *dq2 = hmalloc(nqkv * 4);
    poison(g_gpu, gdq, nqkv * g_gpu->act_bytes);
    mma = attention_backend(1);
    mma->attention_backward(mma, gdq, gdo, gq, go2, gl_f, B, T, NH, HS, k->causal);
    bsync(mma, "cuda attention_backward (mma, again)");
    get_act(g_gpu, dq2, gdq, nqkv);
    expect_same_bits("attention dqkv (mma)", dq, dq2, nqkv);

    /* the FMA backward from the mma forward's lse */
    poison(g_gpu, gdq, nqkv * g_gpu->act_bytes);
    fma = attention_backend(0);
    fma->attention_backward(fma, gdq, gdo, gq, go2, gl, B, T, NH, HS, k->causal);
    bsync(fma, "cuda attention_backward (fma, mma lse)");
    get_act(g_gpu, dq2, gdq, nqkv);
    expect_close("dqkv (fma, mma lse)", dq2, r_dq, nqkv, tol_act());
}

static void test_attention_mma(void **state) {
    (void)state;
    static const att_case fp32_case = {1, 77, 2, 64, 1};
    static const att_case extra[] = {
        {2, 77, 7, 64, 1},   /* pruned heads */
        {2, 77, 8, 32, 1},   /* head size 32 */
        {2, 197, 12, 32, 0}, /* head size 32 */
        {1, 257, 8, 128, 1}, /* head size 128 */
        {2, 77, 8, 128, 0},  /* head size 128 */
        {1, 1, 3, 64, 1},    /* one token */
        /* heads padded to a multiple of 16 inside the kernels: 80 (ViT-H),
         * 88 -> 96 (ViT-g), 104 -> 112 (ViT-bigG), 40 -> 48, 8 -> 32 */
        {1, 257, 16, 80, 0},
        {2, 77, 2, 88, 1},
        {2, 50, 2, 104, 0},
        {1, 130, 2, 104, 1},
        {1, 70, 2, 40, 0},
        {1, 40, 2, 8, 1},
    };
    /* quick (sanitizer) cases: three tiles, so every double buffer is refilled after use */
    static const att_case quick[] = {{1, 150, 2, 64, 1}, {1, 130, 1, 128, 0}, {1, 20, 2, 32, 0}};
    if (g_fp32) {
        printf("  fp32 mode: choosing the mma attention must leave the FMA kernels in place\n");
        run_attention_mma(&fp32_case);
        free_all();
    } else if (g_quick) {
        for (size_t i = 0; i < sizeof quick / sizeof *quick; i++) {
            run_attention_mma(&quick[i]);
            free_all();
        }
    } else {
        /* T = 50 (ViT-B/32), 77 (text), 197 (ViT-B/16), 257 (the longest):
         * last tiles of 50, 13, 5 and 1 rows; heads 8 and 12; full and causal */
        static const int Ts[] = {50, 77, 197, 257};
        for (int ti = 0; ti < 4; ti++)
            for (int nh = 8; nh <= 12; nh += 4)
                for (int causal = 0; causal <= 1; causal++) {
                    att_case c = {Ts[ti] > 200 ? 1 : 2, Ts[ti], nh, 64, causal};
                    run_attention_mma(&c);
                    free_all();
                }
        for (size_t i = 0; i < sizeof extra / sizeof *extra; i++) {
            run_attention_mma(&extra[i]);
            free_all();
        }
    }
}

/* patchify and the vision embedding */
static void test_vision_embed(void **state) {
    (void)state;
    static const int full[][3] = {{2, 224, 32}, {2, 224, 16}, {1, 64, 16}};
    static const int quick[][3] = {{1, 64, 16}};
    const int(*cs)[3] = g_quick ? quick : full;
    size_t nc = g_quick ? 1 : sizeof full / sizeof *full;
    for (size_t ci = 0; ci < nc; ci++) {
        const int B = cs[ci][0], H = cs[ci][1], P = cs[ci][2], g = H / P;
        const int T = g * g + 1, C = g_quick ? 64 : 768, K = 3 * P * P;
        const size_t nimg = (size_t)B * 3 * H * H, npat = (size_t)B * g * g * K;
        float *img = rand_f32(nimg, 2.0f);
        float *pe = rand_act((size_t)B * (T - 1) * C, 1.0f), *cls = rand_act(C, 1.0f);
        float *pos = rand_act((size_t)T * C, 1.0f), *dx = rand_act((size_t)B * T * C, 1.0f);
        float *dcls0 = rand_f32(C, 1.0f), *dpos0 = rand_f32((size_t)T * C, 1.0f);
        const size_t nx = (size_t)B * T * C, npe = (size_t)B * (T - 1) * C;

        float *cimg = put_f32(g_cpu, img, nimg);
        tc_act *cpat = balloc(g_cpu, npat * 4), *cx = balloc(g_cpu, nx * 4);
        tc_act *cpe = put_act(g_cpu, pe, npe), *ccls = put_act(g_cpu, cls, C);
        tc_act *cpos = put_act(g_cpu, pos, (size_t)T * C), *cdx = put_act(g_cpu, dx, nx);
        tc_act *cdpe = balloc(g_cpu, npe * 4);
        float *cdcls = put_f32(g_cpu, dcls0, C), *cdpos = put_f32(g_cpu, dpos0, (size_t)T * C);
        g_cpu->patchify(g_cpu, cpat, cimg, B, H, H, P);
        g_cpu->vision_embed_forward(g_cpu, cx, cpe, ccls, cpos, B, T, C);
        g_cpu->vision_embed_backward(g_cpu, cdpe, cdcls, cdpos, cdx, B, T, C);
        float *r_pat = hmalloc(npat * 4), *r_x = hmalloc(nx * 4), *r_dpe = hmalloc(npe * 4);
        float *r_dcls = hmalloc(C * 4), *r_dpos = hmalloc((size_t)T * C * 4);
        get_act(g_cpu, r_pat, cpat, npat);
        get_act(g_cpu, r_x, cx, nx);
        get_act(g_cpu, r_dpe, cdpe, npe);
        get_f32(g_cpu, r_dcls, cdcls, C);
        get_f32(g_cpu, r_dpos, cdpos, (size_t)T * C);

        float *gimg = put_f32(g_gpu, img, nimg);
        tc_act *gpat = gpu_out_act(npat), *gx = gpu_out_act(nx);
        tc_act *gpe = put_act(g_gpu, pe, npe), *gcls = put_act(g_gpu, cls, C);
        tc_act *gpos = put_act(g_gpu, pos, (size_t)T * C), *gdx = put_act(g_gpu, dx, nx);
        tc_act *gdpe = gpu_out_act(npe);
        float *gdcls = put_f32(g_gpu, dcls0, C), *gdpos = put_f32(g_gpu, dpos0, (size_t)T * C);
        g_gpu->patchify(g_gpu, gpat, gimg, B, H, H, P);
        g_gpu->vision_embed_forward(g_gpu, gx, gpe, gcls, gpos, B, T, C);
        g_gpu->vision_embed_backward(g_gpu, gdpe, gdcls, gdpos, gdx, B, T, C);
        bsync(g_gpu, "cuda vision embed");
        float *pat = hmalloc(npat * 4), *x = hmalloc(nx * 4), *dpe = hmalloc(npe * 4);
        float *dcls = hmalloc(C * 4), *dpos = hmalloc((size_t)T * C * 4);
        get_act(g_gpu, pat, gpat, npat);
        get_act(g_gpu, x, gx, nx);
        get_act(g_gpu, dpe, gdpe, npe);
        get_f32(g_gpu, dcls, gdcls, C);
        get_f32(g_gpu, dpos, gdpos, (size_t)T * C);
        printf("  patchify + vision embed B=%d H=%d P=%d T=%d C=%d\n", B, H, P, T, C);
        expect_close("patchify", pat, r_pat, npat, tol_act());
        expect_close("embed forward", x, r_x, nx, tol_act());
        expect_close("dpatch_emb", dpe, r_dpe, npe, tol_act());
        expect_close("dcls (+=)", dcls, r_dcls, C, tol_f32());
        expect_close("dpos (+=)", dpos, r_dpos, (size_t)T * C, tol_f32());
        free_all();
    }
}

/* the cuDNN patch embedding (patch_embed_forward, patch_embed_backward_weight)
 * against the CPU's patchify + linear_forward and linear_backward's dw. out
 * is poisoned; dw starts from random values (+=). in the mixed mode the dw
 * increment comes out of cuDNN in bf16 (the legacy API gives the filter
 * gradient in the input type) and is rounded once before the fp32 +=, so dw
 * is held to TOL_BF16 there, not to the GEMM path's TOL_F32_IN_MIXED. both
 * ops run twice on the same inputs and must give the same bits. */
typedef struct {
    const char *name;
    int B, H, W, P, C, misalign;
} patch_case;

static void run_patch_embed(const patch_case *k) {
    const int B = k->B, H = k->H, W = k->W, P = k->P, C = k->C;
    const int N = B * (H / P) * (W / P), K = 3 * P * P;
    const size_t nimg = (size_t)B * 3 * H * W, nout = (size_t)N * C, nw = (size_t)C * K;
    const size_t ab = g_gpu->act_bytes, sh = k->misalign ? 1 : 0;
    /* the image in bf16 values in the mixed mode: both paths then multiply the same numbers */
    float *img = rand_act(nimg, 2.0f);
    float *w = rand_act(nw, 1.0f / sqrtf((float)K));
    float *dout = rand_act(nout, 1.0f);
    float *dw0 = rand_f32(nw, 1.0f);

    float *cimg = put_f32(g_cpu, img, nimg);
    tc_act *cpat = balloc(g_cpu, nimg * 4), *cout = balloc(g_cpu, nout * 4);
    tc_act *cw = put_act(g_cpu, w, nw), *cdout = put_act(g_cpu, dout, nout);
    float *cdw = put_f32(g_cpu, dw0, nw);
    g_cpu->patchify(g_cpu, cpat, cimg, B, H, W, P);
    g_cpu->linear_forward(g_cpu, cout, cpat, cw, NULL, N, K, C, 0);
    g_cpu->linear_backward(g_cpu, NULL, cdw, NULL, cdout, cpat, cw, N, K, C, 0);
    bsync(g_cpu, "cpu patchify + linear");
    float *r_out = hmalloc(nout * 4), *r_dw = hmalloc(nw * 4);
    get_act(g_cpu, r_out, cout, nout);
    get_f32(g_cpu, r_dw, cdw, nw);

    /* misalign: the weight and dw one element off, as views into pruned parameters */
    float *gimg = put_f32(g_gpu, img, nimg);
    tc_act *gimg_act = gpu_out_act(nimg), *gout = gpu_out_act(nout);
    tc_act *gw = tc_act_offset(g_gpu, balloc(g_gpu, (nw + 1) * ab), sh);
    {
        float *tmp = put_f32(g_gpu, w, nw);
        g_gpu->f32_to_act(g_gpu, gw, tmp, nw);
    }
    tc_act *gdout = put_act(g_gpu, dout, nout);
    float *gdw = (float *)balloc(g_gpu, (nw + 1) * 4) + sh;
    float *o[2] = {hmalloc(nout * 4), hmalloc(nout * 4)};
    float *dwh[2] = {hmalloc(nw * 4), hmalloc(nw * 4)};
    for (int run = 0; run < 2; run++) {
        if (run) poison(g_gpu, gout, nout * ab);
        if (g_gpu->upload(g_gpu, gdw, dw0, nw * 4) != TC_OK) fail_msg("upload");
        g_gpu->patch_embed_forward(g_gpu, gout, gimg_act, gimg, gw, B, H, W, P, C);
        g_gpu->patch_embed_backward_weight(g_gpu, gdw, gdout, gimg_act, B, H, W, P, C);
        bsync(g_gpu, "cuda patch_embed");
        get_act(g_gpu, o[run], gout, nout);
        get_f32(g_gpu, dwh[run], gdw, nw);
    }
    printf("  patch_embed (cuDNN) %s B=%d H=%d W=%d P=%d C=%d%s\n", k->name, B, H, W, P, C,
           k->misalign ? " misaligned w, dw" : "");
    expect_close("out", o[0], r_out, nout, tol_act());
    expect_close("dw (+=)", dwh[0], r_dw, nw, g_fp32 ? TOL_FP32 : TOL_BF16);
    expect_same_bits("patch_embed out", o[0], o[1], nout);
    expect_same_bits("patch_embed dw", dwh[0], dwh[1], nw);
}

static void test_patch_embed(void **state) {
    (void)state;
    if (!g_gpu->patch_embed_forward || !g_gpu->patch_embed_backward_weight) {
        printf("  patch_embed: not in this build (no cuDNN)\n");
        skip();
    }
    static const patch_case full[] = {
        {"ViT-B/32", 2, 224, 224, 32, 768, 0},
        {"ViT-B/16", 2, 224, 224, 16, 768, 0},
        {"irregular", 3, 48, 80, 16, 700, 1}, /* pruned width, H != W */
    };
    static const patch_case quick[] = {{"irregular", 1, 32, 48, 16, 72, 1}};
    RUN_CASES(run_patch_embed, full, quick);
}

/* the options pick the path at creation: the convolution sets
 * caps.patch_embed_conv, or is refused with cuDNN's loader reason when cuDNN
 * cannot be loaded; the GEMM path (the default) never is */
static void test_patch_embed_choice(void **state) {
    (void)state;
    const int have = g_gpu->patch_embed_forward != NULL;
    for (int conv = 0; conv <= 1; conv++) {
        tc_backend_options o = {.fp32 = g_fp32,
                                .patch_embed = conv ? TC_PATCH_EMBED_CONV : TC_PATCH_EMBED_GEMM};
        tc_backend *b = NULL;
        tc_status s = tc_backend_cuda_create(&b, &o);
        printf("  patch embedding by %s: %s%s\n", conv ? "convolution" : "gemm",
               s == TC_OK ? "created" : "refused: ", s == TC_OK ? "" : tc_last_error());
        if (!conv || have) {
            if (s != TC_OK) fail_msg("patch embedding choice %d: %s", conv, tc_last_error());
            assert_int_equal(b->caps.patch_embed_conv, conv);
            b->destroy(b);
        } else {
            assert_int_not_equal(s, TC_OK);
            assert_non_null(strstr(tc_last_error(), "cuDNN"));
        }
    }
}

/* token embedding forward, scatter-add backward with repeated ids */
static void test_token_embed(void **state) {
    (void)state;
    const int B = g_quick ? 2 : 4, T = g_quick ? 16 : 77, C = g_quick ? 64 : 512;
    const int V = g_quick ? 100 : 49408;
    const size_t nx = (size_t)B * T * C, nv = (size_t)V * C;
    int32_t *ids = hmalloc((size_t)B * T * 4);
    for (int i = 0; i < B * T; i++) {
        uint64_t r = tc_test_rand(&g_rng);
        /* mostly a few common ids (padding-like runs), some rare, the last id (EOT) once a row */
        ids[i] = (r & 3) == 0 ? (int32_t)((r >> 8) % (uint64_t)V) : (int32_t)((r >> 8) % 7);
    }
    for (int bb = 0; bb < B; bb++)
        ids[bb * T + (bb * 5) % T] = V - 1;
    float *wte = rand_act(nv, 1.0f), *wpe = rand_act((size_t)T * C, 1.0f);
    float *dx = rand_act(nx, 1.0f);
    float *dwte0 = rand_f32(nv, 1.0f), *dwpe0 = rand_f32((size_t)T * C, 1.0f);

    int32_t *cid = balloc(g_cpu, (size_t)B * T * 4);
    if (g_cpu->upload(g_cpu, cid, ids, (size_t)B * T * 4) != TC_OK) fail_msg("upload");
    tc_act *cwte = put_act(g_cpu, wte, nv), *cwpe = put_act(g_cpu, wpe, (size_t)T * C);
    tc_act *cx = balloc(g_cpu, nx * 4), *cdx = put_act(g_cpu, dx, nx);
    float *cdwte = put_f32(g_cpu, dwte0, nv), *cdwpe = put_f32(g_cpu, dwpe0, (size_t)T * C);
    g_cpu->token_embed_forward(g_cpu, cx, cid, cwte, cwpe, B, T, C);
    g_cpu->token_embed_backward(g_cpu, cdwte, cdwpe, cdx, cid, B, T, C, V);
    float *r_x = hmalloc(nx * 4), *r_dwte = hmalloc(nv * 4), *r_dwpe = hmalloc((size_t)T * C * 4);
    get_act(g_cpu, r_x, cx, nx);
    get_f32(g_cpu, r_dwte, cdwte, nv);
    get_f32(g_cpu, r_dwpe, cdwpe, (size_t)T * C);

    int32_t *gid = balloc(g_gpu, (size_t)B * T * 4);
    if (g_gpu->upload(g_gpu, gid, ids, (size_t)B * T * 4) != TC_OK) fail_msg("upload");
    tc_act *gwte = put_act(g_gpu, wte, nv), *gwpe = put_act(g_gpu, wpe, (size_t)T * C);
    tc_act *gx = gpu_out_act(nx), *gdx = put_act(g_gpu, dx, nx);
    float *gdwte = put_f32(g_gpu, dwte0, nv), *gdwpe = put_f32(g_gpu, dwpe0, (size_t)T * C);
    g_gpu->token_embed_forward(g_gpu, gx, gid, gwte, gwpe, B, T, C);
    g_gpu->token_embed_backward(g_gpu, gdwte, gdwpe, gdx, gid, B, T, C, V);
    bsync(g_gpu, "cuda token embed");
    float *x = hmalloc(nx * 4), *dwte = hmalloc(nv * 4), *dwpe = hmalloc((size_t)T * C * 4);
    get_act(g_gpu, x, gx, nx);
    get_f32(g_gpu, dwte, gdwte, nv);
    get_f32(g_gpu, dwpe, gdwpe, (size_t)T * C);
    printf("  token embed B=%d T=%d C=%d V=%d\n", B, T, C, V);
    expect_close("forward", x, r_x, nx, tol_act());
    expect_close("dwte (+=)", dwte, r_dwte, nv, tol_f32());
    expect_close("dwpe (+=)", dwpe, r_dwpe, (size_t)T * C, tol_f32());
    /* the sorted scatter is deterministic */
    float *dwte2 = hmalloc(nv * 4);
    if (g_gpu->upload(g_gpu, gdwte, dwte0, nv * 4) != TC_OK) fail_msg("upload");
    g_gpu->token_embed_backward(g_gpu, gdwte, NULL, gdx, gid, B, T, C, V);
    get_f32(g_gpu, dwte2, gdwte, nv);
    expect_same_bits("token embed dwte", dwte, dwte2, nv);
}

/* argmax_rows, pool gather (class token and EOT) and pool mean, fwd and bwd */
static void test_pooling(void **state) {
    (void)state;
    const int B = g_quick ? 3 : 8, T = g_quick ? 12 : 77, C = g_quick ? 40 : 512;
    const size_t nx = (size_t)B * T * C, no = (size_t)B * C;
    int32_t *ids = hmalloc((size_t)B * T * 4);
    for (int i = 0; i < B * T; i++)
        ids[i] = (int32_t)(tc_test_rand(&g_rng) % 1000);
    for (int bb = 0; bb < B; bb++) { /* EOT id twice: the first position wins */
        int p = (int)(tc_test_rand(&g_rng) % (uint64_t)(T - 1));
        ids[bb * T + p] = 49407;
        if (bb % 2) ids[bb * T + T - 1] = 49407;
    }
    float *x = rand_act(nx, 1.0f), *dout = rand_act(no, 1.0f), *dx0 = rand_act(nx, 1.0f);

    int32_t *cid = balloc(g_cpu, (size_t)B * T * 4), *cidx = balloc(g_cpu, (size_t)B * 4);
    if (g_cpu->upload(g_cpu, cid, ids, (size_t)B * T * 4) != TC_OK) fail_msg("upload");
    tc_act *cx = put_act(g_cpu, x, nx), *cdo = put_act(g_cpu, dout, no);
    tc_act *co1 = balloc(g_cpu, no * 4), *co2 = balloc(g_cpu, no * 4), *co3 = balloc(g_cpu, no * 4);
    tc_act *cdx = put_act(g_cpu, dx0, nx);
    g_cpu->argmax_rows(g_cpu, cidx, cid, B, T);
    g_cpu->pool_gather_forward(g_cpu, co1, cx, NULL, B, T, C);
    g_cpu->pool_gather_forward(g_cpu, co2, cx, cidx, B, T, C);
    g_cpu->pool_mean_forward(g_cpu, co3, cx, B, T, C);
    g_cpu->pool_gather_backward(g_cpu, cdx, cdo, NULL, B, T, C);
    g_cpu->pool_gather_backward(g_cpu, cdx, cdo, cidx, B, T, C);
    g_cpu->pool_mean_backward(g_cpu, cdx, cdo, B, T, C);
    int32_t *r_idx = hmalloc((size_t)B * 4);
    float *r1 = hmalloc(no * 4), *r2 = hmalloc(no * 4), *r3 = hmalloc(no * 4),
          *rdx = hmalloc(nx * 4);
    if (g_cpu->download(g_cpu, r_idx, cidx, (size_t)B * 4) != TC_OK) fail_msg("download");
    get_act(g_cpu, r1, co1, no);
    get_act(g_cpu, r2, co2, no);
    get_act(g_cpu, r3, co3, no);
    get_act(g_cpu, rdx, cdx, nx);

    int32_t *gid = balloc(g_gpu, (size_t)B * T * 4), *gidx = balloc(g_gpu, (size_t)B * 4);
    poison(g_gpu, gidx, (size_t)B * 4);
    if (g_gpu->upload(g_gpu, gid, ids, (size_t)B * T * 4) != TC_OK) fail_msg("upload");
    tc_act *gx = put_act(g_gpu, x, nx), *gdo = put_act(g_gpu, dout, no);
    tc_act *go1 = gpu_out_act(no), *go2 = gpu_out_act(no), *go3 = gpu_out_act(no);
    tc_act *gdx = put_act(g_gpu, dx0, nx);
    g_gpu->argmax_rows(g_gpu, gidx, gid, B, T);
    g_gpu->pool_gather_forward(g_gpu, go1, gx, NULL, B, T, C);
    g_gpu->pool_gather_forward(g_gpu, go2, gx, gidx, B, T, C);
    g_gpu->pool_mean_forward(g_gpu, go3, gx, B, T, C);
    g_gpu->pool_gather_backward(g_gpu, gdx, gdo, NULL, B, T, C);
    g_gpu->pool_gather_backward(g_gpu, gdx, gdo, gidx, B, T, C);
    g_gpu->pool_mean_backward(g_gpu, gdx, gdo, B, T, C);
    bsync(g_gpu, "cuda pooling");
    int32_t *idx = hmalloc((size_t)B * 4);
    float *o1 = hmalloc(no * 4), *o2 = hmalloc(no * 4), *o3 = hmalloc(no * 4),
          *dx = hmalloc(nx * 4);
    if (g_gpu->download(g_gpu, idx, gidx, (size_t)B * 4) != TC_OK) fail_msg("download");
    get_act(g_gpu, o1, go1, no);
    get_act(g_gpu, o2, go2, no);
    get_act(g_gpu, o3, go3, no);
    get_act(g_gpu, dx, gdx, nx);
    printf("  pooling B=%d T=%d C=%d\n", B, T, C);
    for (int bb = 0; bb < B; bb++)
        if (idx[bb] != r_idx[bb])
            fail_msg("argmax_rows row %d: %d, cpu %d", bb, idx[bb], r_idx[bb]);
    expect_close("gather class token", o1, r1, no, tol_act());
    expect_close("gather eot", o2, r2, no, tol_act());
    expect_close("mean", o3, r3, no, tol_act());
    expect_close("dx (three += passes)", dx, rdx, nx, tol_act());
}

/* l2norm forward and backward, with an all-zero row (clamped norm) */
static void test_l2norm(void **state) {
    (void)state;
    const int N = g_quick ? 5 : 64, C = g_quick ? 40 : 512;
    const size_t n = (size_t)N * C;
    float *x = rand_act(n, 1.0f), *dout = rand_f32(n, 1.0f);
    memset(x + (size_t)2 * C, 0, (size_t)C * 4);
    tc_act *cx = put_act(g_cpu, x, n);
    float *cd = put_f32(g_cpu, dout, n), *co = balloc(g_cpu, n * 4), *cn = balloc(g_cpu, N * 4);
    tc_act *cdi = balloc(g_cpu, n * 4);
    g_cpu->l2norm_forward(g_cpu, co, cn, cx, N, C);
    g_cpu->l2norm_backward(g_cpu, cdi, cd, co, cn, N, C);
    float *r_o = hmalloc(n * 4), *r_n = hmalloc(N * 4), *r_di = hmalloc(n * 4);
    get_f32(g_cpu, r_o, co, n);
    get_f32(g_cpu, r_n, cn, N);
    get_act(g_cpu, r_di, cdi, n);
    tc_act *gx = put_act(g_gpu, x, n);
    float *gd = put_f32(g_gpu, dout, n), *go = gpu_out_f32(n), *gn = gpu_out_f32(N);
    tc_act *gdi = gpu_out_act(n);
    g_gpu->l2norm_forward(g_gpu, go, gn, gx, N, C);
    g_gpu->l2norm_backward(g_gpu, gdi, gd, go, gn, N, C);
    bsync(g_gpu, "cuda l2norm");
    float *o = hmalloc(n * 4), *nr = hmalloc(N * 4), *di = hmalloc(n * 4);
    get_f32(g_gpu, o, go, n);
    get_f32(g_gpu, nr, gn, N);
    get_act(g_gpu, di, gdi, n);
    printf("  l2norm N=%d C=%d (row 2 all zero)\n", N, C);
    expect_close("out", o, r_o, n, tol_f32());
    expect_close("norm", nr, r_n, N, tol_f32());
    /* row 2's gradient is dout / 1e-12: compare the other rows at their scale */
    expect_close("dinp rows 0-1", di, r_di, (size_t)2 * C, tol_act());
    expect_close("dinp rows 3-", di + 3 * (size_t)C, r_di + 3 * (size_t)C, (size_t)(N - 3) * C,
                 tol_act());
    expect_close("dinp row 2 (clamped)", di + 2 * (size_t)C, r_di + 2 * (size_t)C, (size_t)C,
                 tol_act());
}

/* softmax cross-entropy rows: hard, soft, both; loss and dlog_scale '+=' */
static void run_xent(int n, int Ncols, int label_offset, float w_hard, float w_soft, int teacher,
                     int alias) {
    const size_t ns = (size_t)n * Ncols;
    float *sim = rand_f32(ns, 1.0f), *tsim = rand_f32(ns, 1.0f);
    float ls = logf(100.0f) * 0.9f, tls = logf(100.0f), loss0 = 0.25f, dls0 = -0.5f;
    float *csim = put_f32(g_cpu, sim, ns), *ctsim = put_f32(g_cpu, tsim, ns);
    float *cls = put_f32(g_cpu, &ls, 1), *ctls = put_f32(g_cpu, &tls, 1);
    float *closs = put_f32(g_cpu, &loss0, 1), *cdls = put_f32(g_cpu, &dls0, 1);
    float *cds = alias ? csim : balloc(g_cpu, ns * 4); /* alias: dsim written over sim */
    g_cpu->softmax_xent_rows(g_cpu, closs, cds, cdls, csim, teacher ? ctsim : NULL, cls, ctls, n,
                             Ncols, label_offset, w_hard, w_soft);
    float r_loss, r_dls, *r_ds = hmalloc(ns * 4);
    get_f32(g_cpu, &r_loss, closs, 1);
    get_f32(g_cpu, &r_dls, cdls, 1);
    get_f32(g_cpu, r_ds, cds, ns);
    float *gsim = put_f32(g_gpu, sim, ns), *gtsim = put_f32(g_gpu, tsim, ns);
    float *gls = put_f32(g_gpu, &ls, 1), *gtls = put_f32(g_gpu, &tls, 1);
    float *gloss = put_f32(g_gpu, &loss0, 1), *gdls = put_f32(g_gpu, &dls0, 1);
    float *gds = alias ? gsim : gpu_out_f32(ns);
    g_gpu->softmax_xent_rows(g_gpu, gloss, gds, gdls, gsim, teacher ? gtsim : NULL, gls, gtls, n,
                             Ncols, label_offset, w_hard, w_soft);
    bsync(g_gpu, "cuda softmax_xent_rows");
    float loss, dls, *ds = hmalloc(ns * 4);
    get_f32(g_gpu, &loss, gloss, 1);
    get_f32(g_gpu, &dls, gdls, 1);
    get_f32(g_gpu, ds, gds, ns);
    printf("  softmax_xent_rows n=%d Ncols=%d offset=%d w_hard=%g w_soft=%g teacher=%d%s\n", n,
           Ncols, label_offset, w_hard, w_soft, teacher, alias ? " (dsim aliases sim)" : "");
    /* all fp32 on both backends, double inside a row */
    expect_close("dsim", ds, r_ds, ns, TOL_FP32);
    expect_close("loss (+=)", &loss, &r_loss, 1, TOL_FP32);
    expect_close("dlog_scale (+=)", &dls, &r_dls, 1, TOL_FP32);
    if (alias) return; /* sim was overwritten */
    /* deterministic */
    float loss2, dls2;
    if (g_gpu->upload(g_gpu, gloss, &loss0, 4) != TC_OK ||
        g_gpu->upload(g_gpu, gdls, &dls0, 4) != TC_OK)
        fail_msg("upload");
    g_gpu->softmax_xent_rows(g_gpu, gloss, gds, gdls, gsim, teacher ? gtsim : NULL, gls, gtls, n,
                             Ncols, label_offset, w_hard, w_soft);
    get_f32(g_gpu, &loss2, gloss, 1);
    get_f32(g_gpu, &dls2, gdls, 1);
    expect_same_bits("softmax_xent loss", &loss, &loss2, 1);
    expect_same_bits("softmax_xent dlog_scale", &dls, &dls2, 1);
}

static void test_softmax_xent(void **state) {
    (void)state;
    run_xent(8, 32, 8, 1.0f, 1.0f, 1, 0);
    run_xent(8, 32, 0, 1.0f, 0.0f, 0, 0);
    run_xent(5, 300, 17, 0.0f, 1.0f, 1, 0);
    run_xent(8, 600, 8, 1.0f, 1.0f, 1, 1);
    if (!g_quick) {
        run_xent(256, 1024, 256, 1.0f, 0.5f, 1, 0);
        run_xent(64, 4096, 64 * 7, 0.5f, 1.0f, 1, 0);
        run_xent(64, 4096, 64 * 3, 1.0f, 0.0f, 0, 1);
    }
}

/* sum_squares, clip_coefficient, all_finite, clamp, fill, scale, zero, copy, casts */
static void test_reductions_elementwise(void **state) {
    (void)state;
    const size_t n = g_quick ? 5000 : 3000017;
    float *g = rand_f32(n, 1.0f);
    float *cg = put_f32(g_cpu, g, n), *cs = balloc(g_cpu, 4), *cc = balloc(g_cpu, 4);
    g_cpu->sum_squares(g_cpu, cs, cg, n);
    g_cpu->clip_coefficient(g_cpu, cc, cs, 1.0f);
    float r_s, r_c;
    get_f32(g_cpu, &r_s, cs, 1);
    get_f32(g_cpu, &r_c, cc, 1);
    float *gg = put_f32(g_gpu, g, n), *gs = gpu_out_f32(1), *gc = gpu_out_f32(1);
    g_gpu->sum_squares(g_gpu, gs, gg, n);
    g_gpu->clip_coefficient(g_gpu, gc, gs, 1.0f);
    bsync(g_gpu, "cuda sum_squares");
    float s, c, s2;
    get_f32(g_gpu, &s, gs, 1);
    get_f32(g_gpu, &c, gc, 1);
    printf("  reductions n=%zu\n", n);
    expect_close("sum_squares", &s, &r_s, 1, TOL_FP32);
    expect_close("clip_coefficient", &c, &r_c, 1, TOL_FP32);
    g_gpu->sum_squares(g_gpu, gs, gg, n);
    get_f32(g_gpu, &s2, gs, 1);
    expect_same_bits("sum_squares", &s, &s2, 1);

    /* all_finite: finite, then one NaN and one Inf near the end */
    float f;
    float *gf = gpu_out_f32(1);
    g_gpu->all_finite(g_gpu, gf, gg, n);
    get_f32(g_gpu, &f, gf, 1);
    if (f != 1.0f) fail_msg("all_finite on finite data gave %g", f);
    float nanv = NAN, infv = INFINITY;
    if (g_gpu->upload(g_gpu, gg + n - 3, &nanv, 4) != TC_OK) fail_msg("upload");
    g_gpu->all_finite(g_gpu, gf, gg, n);
    get_f32(g_gpu, &f, gf, 1);
    if (f != 0.0f) fail_msg("all_finite missed a NaN: %g", f);
    if (g_gpu->upload(g_gpu, gg + n - 3, &g[n - 3], 4) != TC_OK) fail_msg("upload");
    if (g_gpu->upload(g_gpu, gg + 1, &infv, 4) != TC_OK) fail_msg("upload");
    g_gpu->all_finite(g_gpu, gf, gg, n);
    get_f32(g_gpu, &f, gf, 1);
    if (f != 0.0f) fail_msg("all_finite missed an Inf: %g", f);
    if (g_gpu->upload(g_gpu, gg + 1, &g[1], 4) != TC_OK) fail_msg("upload");

    /* clamp, scale, fill, zero, copy */
    float sc = -1.5f;
    float *gsc = put_f32(g_gpu, &sc, 1), *csc = put_f32(g_cpu, &sc, 1);
    g_cpu->clamp_f32(g_cpu, cg, -0.25f, 0.5f, n);
    g_cpu->scale_f32(g_cpu, cg, csc, n);
    g_gpu->clamp_f32(g_gpu, gg, -0.25f, 0.5f, n);
    g_gpu->scale_f32(g_gpu, gg, gsc, n);
    float *r = hmalloc(n * 4), *o = hmalloc(n * 4);
    get_f32(g_cpu, r, cg, n);
    get_f32(g_gpu, o, gg, n);
    expect_close("clamp + scale", o, r, n, TOL_FP32);
    float *gcopy = gpu_out_f32(n);
    g_gpu->copy(g_gpu, gcopy, gg, n * 4);
    get_f32(g_gpu, r, gcopy, n);
    expect_same_bits("copy", o, r, n);
    g_gpu->fill_f32(g_gpu, gcopy, 3.25f, n - 1);
    g_gpu->zero(g_gpu, gcopy + n - 1, 4);
    get_f32(g_gpu, r, gcopy, n);
    for (size_t i = 0; i < n; i++)
        if (r[i] != (i + 1 < n ? 3.25f : 0.0f)) fail_msg("fill/zero wrong at %zu: %g", i, r[i]);

    /* casts: f32 -> act rounds to nearest even in bf16, act -> f32 is exact */
    const size_t m = 4099;
    float *h = rand_f32(m, 3.0f), *back = hmalloc(m * 4);
    float *gh = put_f32(g_gpu, h, m);
    tc_act *ga = gpu_out_act(m);
    float *gb = gpu_out_f32(m);
    g_gpu->f32_to_act(g_gpu, ga, gh, m);
    g_gpu->act_to_f32(g_gpu, gb, ga, m);
    get_f32(g_gpu, back, gb, m);
    for (size_t i = 0; i < m; i++) {
        float want = g_fp32 ? h[i] : bf16_round(h[i]);
        if (back[i] != want) fail_msg("cast round trip at %zu: %.9g, want %.9g", i, back[i], want);
    }
}

/* the device-side step: step_gate's counts and AdamW gated by them (skips a
 * non-finite step, bias correction from the device's count), as the CPU */
static void test_step_gate_adamw(void **state) {
    (void)state;
    const size_t total = g_quick ? 2000 : 300007;
    tc_param_segment segs[2] = {{0, total / 2, 0.1f}, {total / 2, total - total / 2, 0.0f}};
    float *p = rand_f32(total, 1.0f), *gr = rand_f32(total, 1.0f);
    float zeros4[4] = {0, 0, 0, 0};
    float *cp = put_f32(g_cpu, p, total), *cgr = put_f32(g_cpu, gr, total);
    float *cm = balloc(g_cpu, total * 4), *cv = balloc(g_cpu, total * 4);
    float *gp = put_f32(g_gpu, p, total), *ggr = put_f32(g_gpu, gr, total);
    float *gm = balloc(g_gpu, total * 4), *gv = balloc(g_gpu, total * 4);
    g_gpu->zero(g_gpu, gm, total * 4);
    g_gpu->zero(g_gpu, gv, total * 4);
    g_cpu->zero(g_cpu, cm, total * 4);
    g_cpu->zero(g_cpu, cv, total * 4);
    float *cst = put_f32(g_cpu, zeros4, 4), *gst = put_f32(g_gpu, zeros4, 4);
    tc_act *gcomp = balloc(g_gpu, total * g_gpu->act_bytes);
    /* finite, finite, not finite (skipped), finite */
    const float finite[4] = {1.0f, 1.0f, 0.0f, 1.0f};
    for (int k = 0; k < 4; k++) {
        g_cpu->fill_f32(g_cpu, cst, finite[k], 1);
        g_gpu->fill_f32(g_gpu, gst, finite[k], 1);
        g_cpu->step_gate(g_cpu, cst);
        g_gpu->step_gate(g_gpu, gst);
        tc_adamw_hparams hp = {1e-3f, 0.9f, 0.98f, 1e-6f, 99, NULL};
        hp.gate = cst;
        g_cpu->adamw_update(g_cpu, cp, cgr, cm, cv, NULL, segs, 2, hp, NULL);
        hp.gate = gst;
        g_gpu->adamw_update(g_gpu, gp, ggr, gm, gv, gcomp, segs, 2, hp, NULL);
    }
    bsync(g_gpu, "cuda step_gate + gated adamw");
    float st[4], r_st[4];
    get_f32(g_gpu, st, gst, 4);
    get_f32(g_cpu, r_st, cst, 4);
    printf("  step gate: device state {%g, %g, %g, %g}, cpu {%g, %g, %g, %g}\n", st[0], st[1],
           st[2], st[3], r_st[0], r_st[1], r_st[2], r_st[3]);
    /* {finite, updates, skipped, skipped in a row} after the four steps */
    const float expect[4] = {1.0f, 3.0f, 1.0f, 0.0f};
    for (int i = 0; i < 4; i++)
        if (st[i] != expect[i] || r_st[i] != expect[i])
            fail_msg("step_gate state[%d]: cuda %g, cpu %g, expected %g", i, st[i], r_st[i],
                     expect[i]);
    float *r = hmalloc(total * 4), *o = hmalloc(total * 4);
    get_f32(g_cpu, r, cp, total);
    get_f32(g_gpu, o, gp, total);
    expect_close("params after 3 gated updates and a skip", o, r, total, TOL_FP32);
    get_f32(g_cpu, r, cv, total);
    get_f32(g_gpu, o, gv, total);
    expect_close("v", o, r, total, TOL_FP32);
}

/* AdamW on three segments (one without decay, one gap), grad scale, compute copy */
static void test_adamw(void **state) {
    (void)state;
    const size_t total = g_quick ? 3000 : 1000003;
    tc_param_segment segs[3] = {{0, total / 3, 0.1f},
                                {total / 3 + 5, total / 3, 0.0f},
                                {2 * (total / 3) + 5, total - 2 * (total / 3) - 5, 0.2f}};
    float *p = rand_f32(total, 1.0f), *gr = rand_f32(total, 1.0f), *m = rand_f32(total, 0.1f);
    float *v = rand_f32(total, 0.1f);
    for (size_t i = 0; i < total; i++)
        v[i] = fabsf(v[i]);
    float gsc = 0.7f;
    float *cp = put_f32(g_cpu, p, total), *cgr = put_f32(g_cpu, gr, total);
    float *cm = put_f32(g_cpu, m, total), *cv = put_f32(g_cpu, v, total);
    float *cgs = put_f32(g_cpu, &gsc, 1);
    tc_act *ccomp = balloc(g_cpu, total * 4);
    float *gp = put_f32(g_gpu, p, total), *ggr = put_f32(g_gpu, gr, total);
    float *gm = put_f32(g_gpu, m, total), *gv = put_f32(g_gpu, v, total);
    float *ggs = put_f32(g_gpu, &gsc, 1);
    tc_act *gcomp = balloc(g_gpu, total * g_gpu->act_bytes);
    tc_adamw_hparams hp = {1e-3f, 0.9f, 0.98f, 1e-6f, 1, NULL};
    for (int step = 1; step <= 3; step++) {
        hp.step = step;
        /* step 2 without grad scale; the segment table is cached across steps */
        const float *cs = step == 2 ? NULL : cgs, *gs = step == 2 ? NULL : ggs;
        g_cpu->adamw_update(g_cpu, cp, cgr, cm, cv, ccomp, segs, 3, hp, cs);
        g_gpu->adamw_update(g_gpu, gp, ggr, gm, gv, gcomp, segs, 3, hp, gs);
    }
    bsync(g_gpu, "cuda adamw");
    float *r = hmalloc(total * 4), *o = hmalloc(total * 4);
    printf("  adamw n=%zu, 3 segments, 3 steps\n", total);
    get_f32(g_cpu, r, cp, total);
    get_f32(g_gpu, o, gp, total);
    expect_close("params", o, r, total, TOL_FP32);
    /* the gap between segments 0 and 1 is untouched */
    for (size_t i = total / 3; i < total / 3 + 5; i++)
        if (o[i] != p[i]) fail_msg("adamw wrote element %zu outside every segment", i);
    get_f32(g_cpu, r, cm, total);
    get_f32(g_gpu, o, gm, total);
    expect_close("m", o, r, total, TOL_FP32);
    get_f32(g_cpu, r, cv, total);
    get_f32(g_gpu, o, gv, total);
    expect_close("v", o, r, total, TOL_FP32);
    get_act(g_cpu, r, ccomp, total);
    get_act(g_gpu, o, gcomp, total);
    expect_close("compute copy", o, r, total, tol_act());
}

/* the data loader's pinned allocator: page-locked host memory that moves
 * through the backend's upload and download unchanged */
static void test_pinned_allocator(void **state) {
    (void)state;
    tc_batch_allocator a = {NULL, NULL, NULL};
    if (tc_cuda_pinned_allocator(&a) != TC_OK) fail_msg("pinned allocator: %s", tc_last_error());
    const size_t n = (size_t)3 * 224 * 224 * 8 + 5; /* a small image batch, odd size */
    float *h = a.alloc(n * sizeof(float), a.ctx), *back = a.alloc(n * sizeof(float), a.ctx);
    if (!h || !back) fail_msg("cudaHostAlloc of %zu bytes failed", n * sizeof(float));
    struct cudaPointerAttributes attr;
    const int pinned =
        cudaPointerGetAttributes(&attr, h) == cudaSuccess && attr.type == cudaMemoryTypeHost;
    tc_fill_uniform(h, n, &g_rng, 1.0f);
    memset(back, 0, n * sizeof(float));
    float *g = balloc(g_gpu, n * sizeof(float));
    const int up = g_gpu->upload(g_gpu, g, h, n * sizeof(float)) == TC_OK;
    const int down = up && g_gpu->download(g_gpu, back, g, n * sizeof(float)) == TC_OK;
    const int same = down && memcmp(h, back, n * sizeof(float)) == 0;
    a.free(h, a.ctx);
    a.free(back, a.ctx);
    a.free(NULL, a.ctx); /* as free(NULL) */
    printf("  pinned allocator: %zu floats, page-locked %d, round trip %s\n", n, pinned,
           same ? "exact" : "wrong");
    if (!pinned) fail_msg("pinned allocator: memory is not page-locked host memory");
    if (!up || !down) fail_msg("pinned allocator: transfer failed: %s", tc_last_error());
    if (!same) fail_msg("pinned allocator: round trip through the device changed the data");
}

/* upload_async from page-locked memory behind queued work, fences, and
 * memory_peak: the trainer's inputs path (no stream synchronisation) */
static void test_upload_async_fences(void **state) {
    (void)state;
    tc_batch_allocator a = {NULL, NULL, NULL};
    if (tc_cuda_pinned_allocator(&a) != TC_OK) fail_msg("pinned allocator: %s", tc_last_error());
    const size_t n = (size_t)3 * 224 * 224 * 16 + 7;
    float *h[2] = {a.alloc(n * 4, a.ctx), a.alloc(n * 4, a.ctx)}, *back = a.alloc(n * 4, a.ctx);
    if (!h[0] || !h[1] || !back) fail_msg("cudaHostAlloc of %zu bytes failed", n * 4);
    float *g = balloc(g_gpu, n * 4), *busy = balloc(g_gpu, n * 4);
    uint64_t sum = 0;
    for (int k = 0; k < 6; k++) {
        /* queued work first (a fill the upload must wait for), then the
         * upload of buffer k % 2, a fence; before reusing a host buffer the
         * fence of its last upload is waited for, as the scheduler does */
        float *src = h[k % 2];
        if (k >= 2 && g_gpu->fence_wait(g_gpu, (k - 2) % TC_FENCES) != TC_OK)
            fail_msg("fence_wait: %s", tc_last_error());
        for (size_t i = 0; i < n; i++) src[i] = (float)(k * 1000 + (int)(i % 997));
        g_gpu->fill_f32(g_gpu, busy, (float)k, n);
        if (g_gpu->upload_async(g_gpu, g, src, n * 4) != TC_OK ||
            g_gpu->fence_record(g_gpu, k % TC_FENCES) != TC_OK)
            fail_msg("upload_async / fence_record: %s", tc_last_error());
        if (g_gpu->download(g_gpu, back, g, n * 4) != TC_OK) fail_msg("download");
        if (memcmp(back, src, n * 4) != 0) fail_msg("upload_async %d: the device copy differs", k);
        sum += (uint64_t)back[n - 1];
    }
    if (g_gpu->fence_wait(g_gpu, TC_FENCES) != TC_ERR_ARG)
        fail_msg("fence_wait of slot %d (out of range) was accepted", TC_FENCES);
    size_t peak = g_gpu->memory_peak(g_gpu);
    printf("  upload_async: 6 uploads of %zu floats behind queued fills, fences on 2 buffers "
           "(checksum %llu); memory_peak %.1f MiB\n",
           n, (unsigned long long)sum, peak / 1048576.0);
    if (peak < 2 * n * 4) fail_msg("memory_peak %zu is below what this test allocated", peak);
    a.free(h[0], a.ctx);
    a.free(h[1], a.ctx);
    a.free(back, a.ctx);
}

/* an op with a bad shape is reported by synchronize, not silently skipped */
static void test_error_reporting(void **state) {
    (void)state;
    tc_backend *b = NULL;
    if (tc_backend_cuda_create(&b, &(tc_backend_options){.fp32 = g_fp32}) != TC_OK)
        fail_msg("create: %s", tc_last_error());
    void *x = NULL;
    if (b->alloc(b, 1024, &x) != TC_OK) fail_msg("alloc: %s", tc_last_error());
    b->attention_forward(b, x, x, x, 1, 4, 1, 44, 0); /* not a multiple of 8: unsupported */
    tc_status s = b->synchronize(b);
    printf("  unsupported head size reported as: %s\n", tc_last_error());
    b->free(b, x);
    b->destroy(b);
    assert_int_not_equal(s, TC_OK);
}

/* ============================== benchmarks ==============================
 * test_cuda_ops --bench: kernel timings in the mixed (bf16) mode, read by
 * scripts/gpu_check.sh. host clock around synchronize(), after two warm-up
 * runs; each figure is the median of 5 repeats of `iters` launches. lines:
 *   BENCH|<name>|<ms per call>|<TFLOP/s>
 * each attention shape is timed on the FMA kernels and, names ending in
 * " [mma]", on the tensor-core kernels (TINYCLIP_ATTENTION=mma).
 * FLOP counts: attention forward 4 B NH T^2 HS (QK^T and PV), halved when
 * causal; backward 2.5x the forward (five T x T products instead of two, the
 * FlashAttention convention; our recomputation of the scores is not counted);
 * linear forward 2 N C OC, backward (dinp + dw) 4 N C OC. */
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef void (*bench_fn)(void *ctx);

/* median seconds per call of fn over 5 repeats of iters calls */
static double time_median(tc_backend *b, bench_fn fn, void *ctx, int iters) {
    double t[5];
    fn(ctx);
    fn(ctx);
    if (b->synchronize(b) != TC_OK) return -1.0;
    for (int r = 0; r < 5; r++) {
        double t0 = now_s();
        for (int i = 0; i < iters; i++)
            fn(ctx);
        if (b->synchronize(b) != TC_OK) return -1.0;
        t[r] = (now_s() - t0) / iters;
    }
    qsort(t, 5, sizeof t[0], cmp_double);
    return t[2];
}

static void bench_report(const char *name, double sec, double flops) {
    if (sec <= 0) {
        printf("BENCH|%s|failed|%s\n", name, tc_last_error());
        return;
    }
    printf("BENCH|%s|%.4f|%.1f\n", name, sec * 1e3, flops / sec * 1e-12);
    fflush(stdout);
}

typedef struct {
    tc_backend *b;
    tc_act *qkv, *out, *dout, *dqkv;
    float *lse;
    int B, T, NH, HS, causal;
} att_bench;

static void att_fwd(void *p) {
    att_bench *a = p;
    a->b->attention_forward(a->b, a->out, a->lse, a->qkv, a->B, a->T, a->NH, a->HS, a->causal);
}

static void att_fwd_bwd(void *p) {
    att_bench *a = p;
    att_fwd(p);
    a->b->attention_backward(a->b, a->dqkv, a->dout, a->qkv, a->out, a->lse, a->B, a->T, a->NH,
                             a->HS, a->causal);
}

typedef struct {
    tc_backend *b;
    tc_act *inp, *w, *bias, *out, *dout, *dinp;
    float *dw, *dbias;
    int N, C, OC;
} lin_bench;

static void lin_fwd(void *p) {
    lin_bench *l = p;
    l->b->linear_forward(l->b, l->out, l->inp, l->w, l->bias, l->N, l->C, l->OC, 0);
}

static void lin_bwd(void *p) {
    lin_bench *l = p;
    l->b->linear_backward(l->b, l->dinp, l->dw, l->dbias, l->dout, l->inp, l->w, l->N, l->C, l->OC,
                          0);
}

static tc_act *bench_rand_act(tc_backend *b, size_t n, float scale) {
    float *h = malloc(n * sizeof(float));
    if (!h) return NULL;
    tc_fill_uniform(h, n, &g_rng, scale);
    float *tmp = NULL;
    tc_act *p = NULL;
    if (b->alloc(b, n * sizeof(float), (void **)&tmp) != TC_OK ||
        b->alloc(b, n * b->act_bytes, (void **)&p) != TC_OK ||
        b->upload(b, tmp, h, n * sizeof(float)) != TC_OK) {
        free(h);
        return NULL;
    }
    b->f32_to_act(b, p, tmp, n);
    b->synchronize(b);
    b->free(b, tmp);
    free(h);
    return p;
}

static int run_bench(void) {
    tc_backend *b = NULL, *bm = NULL;
    if (tc_backend_cuda_create(&b, NULL) != TC_OK ||
        tc_backend_cuda_create(&bm, &(tc_backend_options){.attention = TC_ATTENTION_MMA}) != TC_OK) {
        printf("bench: %s\n", tc_last_error());
        if (b) b->destroy(b);
        return 1;
    }
    static const struct {
        const char *name;
        int B, T, NH, causal;
    } att[] = {
        {"vit-b32", 256, 50, 12, 0},
        {"vit-b16", 128, 197, 12, 0},
        {"text", 256, 77, 8, 1},
        {"pruned-text", 256, 77, 7, 1},
    };
    for (size_t i = 0; i < sizeof att / sizeof *att; i++) {
        att_bench a = {b,        NULL,     NULL,      NULL, NULL,         NULL,
                       att[i].B, att[i].T, att[i].NH, 64,   att[i].causal};
        const size_t A = (size_t)a.NH * a.HS, bt = (size_t)a.B * a.T;
        a.qkv = bench_rand_act(b, bt * 3 * A, 2.0f);
        a.dout = bench_rand_act(b, bt * A, 1.0f);
        a.out = bench_rand_act(b, bt * A, 1.0f);
        a.dqkv = bench_rand_act(b, bt * 3 * A, 1.0f);
        if (!a.qkv || !a.dout || !a.out || !a.dqkv ||
            b->alloc(b, (size_t)a.B * a.NH * a.T * sizeof(float), (void **)&a.lse) != TC_OK) {
            printf("bench: allocation failed: %s\n", tc_last_error());
            b->destroy(b);
            return 1;
        }
        double fwd_flops = 4.0 * a.B * a.NH * (double)a.T * a.T * a.HS * (a.causal ? 0.5 : 1.0);
        char name[96];
        /* the FMA kernels, then the tensor-core kernels (a second backend
         * made with TC_ATTENTION_MMA, lines tagged " [mma]") on the same
         * shape and buffers */
        for (int mma = 0; mma < 2; mma++) {
            a.b = mma ? bm : b;
            b->synchronize(b);
            const char *tag = mma ? " [mma]" : "";
            snprintf(name, sizeof name, "attention_fwd %s B=%d T=%d NH=%d%s%s", att[i].name, a.B,
                     a.T, a.NH, a.causal ? " causal" : "", tag);
            bench_report(name, time_median(a.b, att_fwd, &a, 10), fwd_flops);
            snprintf(name, sizeof name, "attention_fwd+bwd %s B=%d T=%d NH=%d%s%s", att[i].name,
                     a.B, a.T, a.NH, a.causal ? " causal" : "", tag);
            bench_report(name, time_median(a.b, att_fwd_bwd, &a, 5), 3.5 * fwd_flops);
            a.b->synchronize(a.b);
        }
        a.b = b;
        b->free(b, a.qkv);
        b->free(b, a.dout);
        b->free(b, a.out);
        b->free(b, a.dqkv);
        b->free(b, a.lse);
    }
    static const struct {
        const char *name;
        int N, C, OC;
    } lin[] = {
        {"vit-b16 c_fc", 128 * 197, 768, 3072},
        {"vit-b16 qkv", 128 * 197, 768, 2304},
        {"text c_fc", 256 * 77, 512, 2048},
        {"pruned c_fc", 256 * 77, 700, 1234},
    };
    for (size_t i = 0; i < sizeof lin / sizeof *lin; i++) {
        lin_bench l = {b,    NULL, NULL, NULL,     NULL,     NULL,
                       NULL, NULL, NULL, lin[i].N, lin[i].C, lin[i].OC};
        l.inp = bench_rand_act(b, (size_t)l.N * l.C, 1.0f);
        l.w = bench_rand_act(b, (size_t)l.OC * l.C, 0.05f);
        l.bias = bench_rand_act(b, (size_t)l.OC, 0.1f);
        l.out = bench_rand_act(b, (size_t)l.N * l.OC, 1.0f);
        l.dout = bench_rand_act(b, (size_t)l.N * l.OC, 1.0f);
        l.dinp = bench_rand_act(b, (size_t)l.N * l.C, 1.0f);
        if (!l.inp || !l.w || !l.bias || !l.out || !l.dout || !l.dinp ||
            b->alloc(b, (size_t)l.OC * l.C * sizeof(float), (void **)&l.dw) != TC_OK ||
            b->alloc(b, (size_t)l.OC * sizeof(float), (void **)&l.dbias) != TC_OK) {
            printf("bench: allocation failed: %s\n", tc_last_error());
            b->destroy(b);
            return 1;
        }
        const double flops = 2.0 * l.N * (double)l.C * l.OC;
        char name[96];
        snprintf(name, sizeof name, "linear_fwd %s N=%d C=%d OC=%d", lin[i].name, l.N, l.C, l.OC);
        bench_report(name, time_median(b, lin_fwd, &l, 20), flops);
        snprintf(name, sizeof name, "linear_bwd %s N=%d C=%d OC=%d", lin[i].name, l.N, l.C, l.OC);
        bench_report(name, time_median(b, lin_bwd, &l, 10), 2.0 * flops);
        b->free(b, l.inp);
        b->free(b, l.w);
        b->free(b, l.bias);
        b->free(b, l.out);
        b->free(b, l.dout);
        b->free(b, l.dinp);
        b->free(b, l.dw);
        b->free(b, l.dbias);
    }
    tc_status s = b->synchronize(b);
    bm->destroy(bm);
    b->destroy(b);
    return s == TC_OK ? 0 : 1;
}

/* the patch embedding both ways at batch 256, each on a backend of its own (a
 * failure is sticky and must not spoil the other path): patchify + GEMM
 * (linear_forward; linear_backward's dw) against the cuDNN convolution
 * (patch_embed_forward; patch_embed_backward_weight). FLOPs 2 N K C forward
 * and as many for dw, N = B (S/P)^2, K = 3 P^2. the first call of a cuDNN
 * shape searches its algorithms; time_median's warm-up runs absorb that. */
typedef struct {
    tc_backend *b;
    float *img, *dw;
    tc_act *pat, *w, *out, *dout;
    int B, S, P, C, N, K;
} pe_bench;

static void pe_gemm_fwd(void *p) {
    pe_bench *e = p;
    e->b->patchify(e->b, e->pat, e->img, e->B, e->S, e->S, e->P);
    e->b->linear_forward(e->b, e->out, e->pat, e->w, NULL, e->N, e->K, e->C, 0);
}

static void pe_gemm_fwd_dw(void *p) {
    pe_bench *e = p;
    pe_gemm_fwd(p);
    e->b->linear_backward(e->b, NULL, e->dw, NULL, e->dout, e->pat, e->w, e->N, e->K, e->C, 0);
}

static void pe_cudnn_fwd(void *p) {
    pe_bench *e = p;
    e->b->patch_embed_forward(e->b, e->out, e->pat, e->img, e->w, e->B, e->S, e->S, e->P, e->C);
}

static void pe_cudnn_fwd_dw(void *p) {
    pe_bench *e = p;
    pe_cudnn_fwd(p);
    e->b->patch_embed_backward_weight(e->b, e->dw, e->dout, e->pat, e->B, e->S, e->S, e->P, e->C);
}

/* one shape, one path; 0 when it ran (a failed timing prints a 'failed' line) */
static int bench_patch_embed_one(const char *shape, int B, int S, int P, int C, int cudnn) {
    const char *path = cudnn ? "cudnn" : "gemm";
    char name[96];
    pe_bench e;
    memset(&e, 0, sizeof e);
    tc_backend_options po = {.patch_embed = cudnn ? TC_PATCH_EMBED_CONV : TC_PATCH_EMBED_GEMM};
    if (tc_backend_cuda_create(&e.b, &po) != TC_OK) {
        printf("bench: %s\n", tc_last_error());
        return 1;
    }
    e.B = B, e.S = S, e.P = P, e.C = C;
    e.N = B * (S / P) * (S / P), e.K = 3 * P * P;
    const double flops = 2.0 * e.N * (double)e.K * C;
    if (cudnn && !e.b->patch_embed_forward) {
        snprintf(name, sizeof name, "patch_embed_fwd+dw cudnn %s B=%d", shape, B);
        printf("BENCH|%s|failed|not in this build (no cuDNN)\n", name);
        e.b->destroy(e.b);
        return 0;
    }
    const size_t nimg = (size_t)B * 3 * S * S, nout = (size_t)e.N * C, nw = (size_t)C * e.K;
    int rc = 1;
    float *h = malloc(nimg * sizeof(float));
    if (h && e.b->alloc(e.b, nimg * sizeof(float), (void **)&e.img) == TC_OK &&
        e.b->alloc(e.b, nimg * e.b->act_bytes, (void **)&e.pat) == TC_OK &&
        e.b->alloc(e.b, nout * e.b->act_bytes, (void **)&e.out) == TC_OK &&
        e.b->alloc(e.b, nw * sizeof(float), (void **)&e.dw) == TC_OK) {
        tc_fill_uniform(h, nimg, &g_rng, 2.0f);
        e.w = bench_rand_act(e.b, nw, 0.02f);
        e.dout = bench_rand_act(e.b, nout, 1.0f);
        if (e.w && e.dout && e.b->upload(e.b, e.img, h, nimg * sizeof(float)) == TC_OK) {
            snprintf(name, sizeof name, "patch_embed_fwd %s %s B=%d", path, shape, B);
            bench_report(name, time_median(e.b, cudnn ? pe_cudnn_fwd : pe_gemm_fwd, &e, 20), flops);
            snprintf(name, sizeof name, "patch_embed_fwd+dw %s %s B=%d", path, shape, B);
            bench_report(name, time_median(e.b, cudnn ? pe_cudnn_fwd_dw : pe_gemm_fwd_dw, &e, 10),
                         2.0 * flops);
            rc = 0;
        }
    }
    if (rc)
        printf("bench: patch_embed %s %s: allocation failed: %s\n", path, shape, tc_last_error());
    free(h);
    e.b->free(e.b, e.img);
    e.b->free(e.b, e.pat);
    e.b->free(e.b, e.out);
    e.b->free(e.b, e.dw);
    e.b->free(e.b, e.w);
    e.b->free(e.b, e.dout);
    e.b->destroy(e.b);
    return rc;
}

static int run_patch_embed_bench(void) {
    static const struct {
        const char *name;
        int B, S, P, C;
    } pe[] = {{"vit-b32", 256, 224, 32, 768}, {"vit-b16", 256, 224, 16, 768}};
    int rc = 0;
    for (size_t i = 0; i < sizeof pe / sizeof *pe; i++)
        for (int cudnn = 0; cudnn < 2; cudnn++)
            rc |= bench_patch_embed_one(pe[i].name, pe[i].B, pe[i].S, pe[i].P, pe[i].C, cudnn);
    return rc;
}

static int setup_fp32(void **state) {
    (void)state;
    return setup_backends(1);
}

static int setup_mixed(void **state) {
    (void)state;
    return setup_backends(0);
}

static int teardown_mode(void **state) {
    if (g_gpu_mma) g_gpu_mma->destroy(g_gpu_mma);
    g_gpu_mma = NULL;
    return teardown_backends(state);
}

#define TC_T(fn) cmocka_unit_test_teardown(fn, teardown_test)

int main(int argc, char **argv) {
    char why[256] = "";
    if (tc_cuda_device_count(why, sizeof why) <= 0) tc_skip_test("no CUDA device: %s", why);
    harness_quick_from_env();
    char name[256];
    tc_cuda_device_name(0, name, sizeof name);
    printf("device 0: %s%s\n", name, g_quick ? " (quick mode)" : "");
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) return run_bench() | run_patch_embed_bench();
    const struct CMUnitTest tests[] = {
        TC_T(test_linear),
        TC_T(test_gemm_f32),
        TC_T(test_layernorm),
        TC_T(test_mask_cols),
        TC_T(test_layernorm_masked),
        TC_T(test_gelu_add),
        TC_T(test_attention),
        TC_T(test_attention_mma),
        TC_T(test_vision_embed),
        TC_T(test_patch_embed),
        TC_T(test_patch_embed_choice),
        TC_T(test_token_embed),
        TC_T(test_pooling),
        TC_T(test_l2norm),
        TC_T(test_softmax_xent),
        TC_T(test_reductions_elementwise),
        TC_T(test_adamw),
        TC_T(test_step_gate_adamw),
        TC_T(test_pinned_allocator),
        TC_T(test_upload_async_fences),
        TC_T(test_error_reporting),
        /* the ResNet ops (cuda_resnet_cases.c) */
        TC_T(test_conv2d),
        TC_T(test_batchnorm),
        TC_T(test_relu_avgpool),
        TC_T(test_attnpool),
        TC_T(test_resnet_model),
    };
    int failed =
        cmocka_run_group_tests_name("cuda ops, fp32 mode", tests, setup_fp32, teardown_mode);
    failed +=
        cmocka_run_group_tests_name("cuda ops, mixed bf16 mode", tests, setup_mixed, teardown_mode);
    return failed ? 1 : 0;
}

#else /* no CUDA backend in this build */

int main(void) {
    tc_skip_test(
        "no CUDA device: the CUDA backend is not built (nvcc was not found or TC_ENABLE_CUDA=OFF)");
}

#endif
