/* test_cuda_ops' cases for L2 normalisation and the softmax cross-entropy rows (cuda/loss.cu),
 * compiled into that binary: the CUDA backend against the CPU reference backend in the fp32 and the
 * mixed (bf16) mode, with the harness and tolerances of tests/cuda/cuda_harness.h */
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

/* l2norm forward and backward, with an all-zero row (clamped norm) */
void test_l2norm(void **state) {
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

void test_softmax_xent(void **state) {
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

#endif
