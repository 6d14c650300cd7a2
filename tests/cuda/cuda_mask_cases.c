/* test_cuda_ops' cases for the structured masks of automatic inheritance and the masked LayerNorm
 * (cuda/mask.cu), compiled into that binary: the CUDA backend against the CPU reference backend in
 * the fp32 and the mixed (bf16) mode, with the harness and tolerances of tests/cuda/cuda_harness.h
 */
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

void test_mask_cols(void **state) {
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

void test_layernorm_masked(void **state) {
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

#endif
