/* test_cuda_ops' cases for GELU / QuickGELU, add, the reductions and the other elementwise ops
 * (cuda/elementwise.cu), compiled into that binary: the CUDA backend against the CPU reference
 * backend in the fp32 and the mixed (bf16) mode, with the harness and tolerances of
 * tests/cuda/cuda_harness.h */
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

/* GELU / QuickGELU forward and backward, and add */
void test_gelu_add(void **state) {
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

/* sum_squares, clip_coefficient, all_finite, clamp, fill, scale, zero, copy, casts */
void test_reductions_elementwise(void **state) {
    (void)state;
    const size_t n = g_quick ? 5000 : 3000017;
    float *g = rand_f32(n, 1.0f);
    float *cg = put_f32(g_cpu, g, n), *cs = balloc(g_cpu, 4), *cc = balloc(g_cpu, 4);
    tc_param_segment whole = {0, n, 0.0f};
    g_cpu->sum_squares(g_cpu, cs, cg, &whole, 1);
    g_cpu->clip_coefficient(g_cpu, cc, cs, 1.0f);
    float r_s, r_c;
    get_f32(g_cpu, &r_s, cs, 1);
    get_f32(g_cpu, &r_c, cc, 1);
    /* on the GPU the same sequence cut into segments of 1..4000 elements at
     * multiples of 128 with NaN between them: the padding between parameter
     * tensors, which the norm must never read */
    tc_param_segment *segs = malloc(n * sizeof *segs);
    size_t nseg = 0, cap = 0;
    uint64_t seg_rng = 5;
    for (size_t at = 0; at < n; nseg++) {
        size_t len = 1 + tc_test_rand(&seg_rng) % 4000;
        if (len > n - at) len = n - at;
        cap = (cap + 1 + 127) / 128 * 128;
        segs[nseg] = (tc_param_segment){cap, len, 0.0f};
        cap += len;
        at += len;
    }
    float *padded = malloc(cap * sizeof *padded);
    for (size_t i = 0; i < cap; i++)
        padded[i] = NAN;
    for (size_t k = 0, q = 0; k < nseg; q += segs[k].count, k++)
        memcpy(padded + segs[k].offset, g + q, segs[k].count * sizeof *g);
    float *gg = put_f32(g_gpu, g, n), *gp = put_f32(g_gpu, padded, cap);
    float *gs = gpu_out_f32(1), *gc = gpu_out_f32(1);
    g_gpu->sum_squares(g_gpu, gs, gp, segs, (int)nseg);
    g_gpu->clip_coefficient(g_gpu, gc, gs, 1.0f);
    bsync(g_gpu, "cuda sum_squares");
    float s, c, s2;
    get_f32(g_gpu, &s, gs, 1);
    get_f32(g_gpu, &c, gc, 1);
    printf("  reductions n=%zu (%zu segments)\n", n, nseg);
    expect_close("sum_squares", &s, &r_s, 1, TOL_FP32);
    expect_close("clip_coefficient", &c, &r_c, 1, TOL_FP32);
    g_gpu->sum_squares(g_gpu, gs, gp, segs, (int)nseg);
    get_f32(g_gpu, &s2, gs, 1);
    expect_same_bits("sum_squares", &s, &s2, 1);
    /* the sequence in one piece: the same partition, the same bits */
    g_gpu->sum_squares(g_gpu, gs, gg, &whole, 1);
    get_f32(g_gpu, &s2, gs, 1);
    expect_same_bits("sum_squares (one segment)", &s, &s2, 1);
    g_gpu->free(g_gpu, gp);
    free(padded);
    free(segs);

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

#endif
