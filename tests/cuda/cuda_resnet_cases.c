/* test_cuda_ops' cases for the ResNet ops (compiled into that binary, which
 * scripts/gpu_check.sh runs): the CUDA backend against the CPU reference
 * backend, in the fp32 mode and the mixed (bf16) mode (tolerances:
 * tests/cuda/cuda_harness.h):
 * conv2d forward / data / filter gradients (cuDNN) at the shapes of RN50's
 * stem and bottlenecks, BatchNorm (+ ReLU) forward in the three modes with
 * its running statistics and the backward, the residual ReLU, the average
 * pool, the attention pool's tokens and its one-query attention; and a
 * whole ResNet CLIP's features and gradients on both backends. '=' outputs
 * are poisoned first; '+=' outputs start from the same random values on both
 * backends; ops with reductions run twice and must give the same bits. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_harness.h"
#include "cuda_resnet_cases.h"
#include "model.h"
#include "testutil.h"

#ifdef TC_HAVE_CUDA

/* ---- conv2d ---- */

typedef struct {
    int N, C, H, OC, K, S, P;
} conv_case;

static void run_conv(const conv_case *k) {
    const int N = k->N, C = k->C, H = k->H, OC = k->OC, K = k->K, S = k->S, P = k->P;
    const int Ho = (H + 2 * P - K) / S + 1;
    const size_t nx = (size_t)N * C * H * H, nw = (size_t)OC * C * K * K;
    const size_t ny = (size_t)N * OC * Ho * Ho;
    float *x = rand_act(nx, 1.0f), *w = rand_act(nw, 1.0f / sqrtf((float)C * K * K));
    float *dy = rand_act(ny, 1.0f), *dw0 = rand_f32(nw, 0.5f);
    /* cpu */
    tc_act *cx = put_act(g_cpu, x, nx), *cw = put_act(g_cpu, w, nw), *cdy = put_act(g_cpu, dy, ny);
    tc_act *cy = balloc(g_cpu, ny * 4), *cdx = balloc(g_cpu, nx * 4);
    float *cdw = put_f32(g_cpu, dw0, nw);
    g_cpu->conv2d_forward(g_cpu, cy, cx, cw, N, C, H, H, OC, K, S, P);
    g_cpu->conv2d_backward(g_cpu, cdx, cdw, cdy, cx, cw, N, C, H, H, OC, K, S, P);
    float *r_y = hmalloc(ny * 4), *r_dx = hmalloc(nx * 4), *r_dw = hmalloc(nw * 4);
    get_act(g_cpu, r_y, cy, ny);
    get_act(g_cpu, r_dx, cdx, nx);
    get_f32(g_cpu, r_dw, cdw, nw);
    /* gpu: the filter one element into its allocation, as parameter views are */
    tc_act *gx = put_act(g_gpu, x, nx), *gdy = put_act(g_gpu, dy, ny);
    tc_act *gwbuf = balloc(g_gpu, (nw + 1) * g_gpu->act_bytes);
    tc_act *gw = tc_act_offset(g_gpu, gwbuf, 1);
    {
        float *tmp = put_f32(g_gpu, w, nw);
        g_gpu->f32_to_act(g_gpu, gw, tmp, nw);
    }
    tc_act *gy = gpu_out_act(ny), *gdx = gpu_out_act(nx);
    float *gdw = (float *)balloc(g_gpu, (nw + 1) * 4) + 1;
    if (g_gpu->upload(g_gpu, gdw, dw0, nw * 4) != TC_OK) fail_msg("upload");
    g_gpu->conv2d_forward(g_gpu, gy, gx, gw, N, C, H, H, OC, K, S, P);
    g_gpu->conv2d_backward(g_gpu, gdx, gdw, gdy, gx, gw, N, C, H, H, OC, K, S, P);
    bsync(g_gpu, "cuda conv2d");
    float *y = hmalloc(ny * 4), *dx = hmalloc(nx * 4), *dwh = hmalloc(nw * 4);
    get_act(g_gpu, y, gy, ny);
    get_act(g_gpu, dx, gdx, nx);
    get_f32(g_gpu, dwh, gdw, nw);
    printf("  conv2d N=%d C=%d %dx%d OC=%d K=%d S=%d P=%d\n", N, C, H, H, OC, K, S, P);
    expect_close("out", y, r_y, ny, tol_act());
    expect_close("dinp", dx, r_dx, nx, tol_act());
    expect_close("dw (+=)", dwh, r_dw, nw, tol_f32());
    /* deterministic algorithms: the same bits again; NULL dinp is skipped */
    float *dw2 = hmalloc(nw * 4);
    if (g_gpu->upload(g_gpu, gdw, dw0, nw * 4) != TC_OK) fail_msg("upload");
    g_gpu->conv2d_backward(g_gpu, NULL, gdw, gdy, gx, gw, N, C, H, H, OC, K, S, P);
    get_f32(g_gpu, dw2, gdw, nw);
    expect_same_bits("conv2d dw", dwh, dw2, nw);
}

void test_conv2d(void **state) {
    (void)state;
    static const conv_case full[] = {
        {4, 3, 224, 32, 3, 2, 1},   /* RN50's first stem conv */
        {4, 32, 112, 32, 3, 1, 1},  /* the second */
        {4, 64, 56, 64, 1, 1, 0},   /* layer1 conv1 */
        {4, 64, 56, 64, 3, 1, 1},   /* layer1 conv2 */
        {4, 512, 7, 2048, 1, 1, 0}, /* layer4 conv3 */
        {2, 22, 28, 22, 3, 1, 1},   /* TinyCLIP-ResNet-19M's stem width / 2 */
        {3, 5, 9, 7, 3, 2, 1},      /* odd sizes */
    };
    static const conv_case quick[] = {{2, 3, 32, 4, 3, 2, 1}, {2, 8, 8, 16, 1, 1, 0}};
    RUN_CASES(run_conv, full, quick);
}

/* ---- batchnorm ---- */

typedef struct {
    int N, C, HW, relu;
} bn_case;

static void run_bn(const bn_case *k) {
    const int N = k->N, C = k->C, HW = k->HW;
    const size_t n = (size_t)N * C * HW;
    float *x = rand_act(n, 2.0f), *w = rand_act(C, 1.0f), *b = rand_act(C, 0.5f);
    float *dy = rand_act(n, 1.0f), *run0 = rand_f32(2 * (size_t)C + 1, 0.5f);
    for (int c = 0; c < C; c++)
        run0[C + c] = 0.5f + fabsf(run0[C + c]);
    run0[2 * C] = 3.0f;
    float *dw0 = rand_f32(C, 1.0f), *db0 = rand_f32(C, 1.0f);
    printf("  batchnorm N=%d C=%d HW=%d relu=%d\n", N, C, HW, k->relu);
    for (int mode = 0; mode < 3; mode++) {
        const tc_bn_mode m = mode == 0 ? TC_BN_TRAIN : mode == 1 ? TC_BN_REPLAY : TC_BN_EVAL;
        const char *mn = mode == 0 ? "train" : mode == 1 ? "replay" : "eval";
        /* cpu */
        tc_act *cx = put_act(g_cpu, x, n), *cw = put_act(g_cpu, w, C), *cb = put_act(g_cpu, b, C);
        tc_act *cy = balloc(g_cpu, n * 4), *cdy = put_act(g_cpu, dy, n),
               *cdx = balloc(g_cpu, n * 4);
        float *cst = balloc(g_cpu, 2 * (size_t)C * 4),
              *crun = put_f32(g_cpu, run0, 2 * (size_t)C + 1);
        float *cdw = put_f32(g_cpu, dw0, C), *cdb = put_f32(g_cpu, db0, C);
        g_cpu->batchnorm_forward(g_cpu, cy, cst, cst + C, crun, cx, cw, cb, N, C, HW, m, k->relu);
        float *r_y = hmalloc(n * 4), *r_run = hmalloc((2 * (size_t)C + 1) * 4);
        float *r_st = hmalloc(2 * (size_t)C * 4);
        get_act(g_cpu, r_y, cy, n);
        get_f32(g_cpu, r_run, crun, 2 * (size_t)C + 1);
        get_f32(g_cpu, r_st, cst, 2 * (size_t)C);
        /* gpu */
        tc_act *gx = put_act(g_gpu, x, n), *gw = put_act(g_gpu, w, C), *gb = put_act(g_gpu, b, C);
        tc_act *gy = gpu_out_act(n), *gdy = put_act(g_gpu, dy, n), *gdx = gpu_out_act(n);
        float *gst = gpu_out_f32(2 * (size_t)C), *grun = put_f32(g_gpu, run0, 2 * (size_t)C + 1);
        float *gdw = put_f32(g_gpu, dw0, C), *gdb = put_f32(g_gpu, db0, C);
        g_gpu->batchnorm_forward(g_gpu, gy, gst, gst + C, grun, gx, gw, gb, N, C, HW, m, k->relu);
        bsync(g_gpu, "cuda batchnorm_forward");
        float *y = hmalloc(n * 4), *runh = hmalloc((2 * (size_t)C + 1) * 4);
        float *st = hmalloc(2 * (size_t)C * 4);
        get_act(g_gpu, y, gy, n);
        get_f32(g_gpu, runh, grun, 2 * (size_t)C + 1);
        get_f32(g_gpu, st, gst, 2 * (size_t)C);
        char what[64];
        snprintf(what, sizeof what, "forward (%s)", mn);
        expect_close(what, y, r_y, n, tol_act());
        snprintf(what, sizeof what, "mean, rstd (%s)", mn);
        expect_close(what, st, r_st, 2 * (size_t)C, tol_f32());
        snprintf(what, sizeof what, "running statistics (%s)", mn);
        expect_close(what, runh, r_run, 2 * (size_t)C + 1, tol_f32());
        if (m != TC_BN_TRAIN) continue;
        /* the backward of the batch-statistics forward */
        g_cpu->batchnorm_backward(g_cpu, cdx, cdw, cdb, cdy, cx, cy, cw, cst, cst + C, N, C, HW,
                                  k->relu);
        float *r_dx = hmalloc(n * 4), *r_dw = hmalloc(C * 4), *r_db = hmalloc(C * 4);
        get_act(g_cpu, r_dx, cdx, n);
        get_f32(g_cpu, r_dw, cdw, C);
        get_f32(g_cpu, r_db, cdb, C);
        /* from the CPU's forward output, rounded as the GPU holds it (the
         * ReLU mask must be the same), and the GPU's statistics */
        tc_act *gy_ref = put_act(g_gpu, r_y, n);
        g_gpu->batchnorm_backward(g_gpu, gdx, gdw, gdb, gdy, gx, gy_ref, gw, gst, gst + C, N, C, HW,
                                  k->relu);
        bsync(g_gpu, "cuda batchnorm_backward");
        float *dx = hmalloc(n * 4), *dw = hmalloc(C * 4), *db = hmalloc(C * 4);
        get_act(g_gpu, dx, gdx, n);
        get_f32(g_gpu, dw, gdw, C);
        get_f32(g_gpu, db, gdb, C);
        expect_close("dinp", dx, r_dx, n, tol_act());
        expect_close("dw (+=)", dw, r_dw, C, tol_f32());
        expect_close("dbias (+=)", db, r_db, C, tol_f32());
        float *dw2 = hmalloc(C * 4);
        if (g_gpu->upload(g_gpu, gdw, dw0, C * 4) != TC_OK) fail_msg("upload");
        g_gpu->batchnorm_backward(g_gpu, gdx, gdw, gdb, gdy, gx, gy_ref, gw, gst, gst + C, N, C, HW,
                                  k->relu);
        get_f32(g_gpu, dw2, gdw, C);
        expect_same_bits("batchnorm dw", dw, dw2, C);
    }
}

void test_batchnorm(void **state) {
    (void)state;
    static const bn_case full[] = {
        {8, 32, 112 * 112, 1}, /* RN50's stem */
        {8, 256, 56 * 56, 0},  /* a layer1 bn3 */
        {16, 2048, 49, 0},     /* layer4 */
        {3, 7, 1, 1},          /* 1x1 maps */
    };
    static const bn_case quick[] = {{4, 16, 64, 1}};
    RUN_CASES(run_bn, full, quick);
}

/* ---- residual ReLU, average pool ---- */

void test_relu_avgpool(void **state) {
    (void)state;
    const int shapes[][4] = {{8 * 64, 56, 56, 2}, {2 * 3, 14, 14, 2}, {5, 7, 7, 1}};
    const int nshapes = g_quick ? 1 : 3;
    for (int i = 0; i < nshapes; i++) {
        const int NC = shapes[i][0], H = shapes[i][1], W = shapes[i][2], k = shapes[i][3];
        const size_t n = (size_t)NC * H * W, no = (size_t)NC * (H / k) * (W / k);
        float *a = rand_act(n, 1.0f), *b = rand_act(n, 1.0f), *g = rand_act(n, 1.0f);
        float *gp = rand_act(no, 1.0f);
        tc_act *ca = put_act(g_cpu, a, n), *cb = put_act(g_cpu, b, n), *cg = put_act(g_cpu, g, n);
        tc_act *cs = balloc(g_cpu, n * 4), *cd = balloc(g_cpu, n * 4), *cp = balloc(g_cpu, no * 4);
        tc_act *cgp = put_act(g_cpu, gp, no), *cdp = balloc(g_cpu, n * 4);
        g_cpu->add_relu_forward(g_cpu, cs, ca, cb, n);
        g_cpu->relu_backward(g_cpu, cd, cs, cg, n);
        g_cpu->avgpool_forward(g_cpu, cp, ca, NC, H, W, k);
        g_cpu->avgpool_backward(g_cpu, cdp, cgp, NC, H, W, k);
        float *r_s = hmalloc(n * 4), *r_d = hmalloc(n * 4), *r_p = hmalloc(no * 4);
        float *r_dp = hmalloc(n * 4);
        get_act(g_cpu, r_s, cs, n), get_act(g_cpu, r_d, cd, n), get_act(g_cpu, r_p, cp, no);
        get_act(g_cpu, r_dp, cdp, n);
        tc_act *ga = put_act(g_gpu, a, n), *gb = put_act(g_gpu, b, n), *gg = put_act(g_gpu, g, n);
        tc_act *gs = gpu_out_act(n), *gd = gpu_out_act(n), *gpool = gpu_out_act(no);
        tc_act *ggp = put_act(g_gpu, gp, no), *gdp = gpu_out_act(n);
        /* the backward's ReLU mask from the CPU's sum, as the GPU rounds it */
        tc_act *gs_ref = put_act(g_gpu, r_s, n);
        g_gpu->add_relu_forward(g_gpu, gs, ga, gb, n);
        g_gpu->relu_backward(g_gpu, gd, gs_ref, gg, n);
        g_gpu->avgpool_forward(g_gpu, gpool, ga, NC, H, W, k);
        g_gpu->avgpool_backward(g_gpu, gdp, ggp, NC, H, W, k);
        bsync(g_gpu, "cuda relu / avgpool");
        float *s = hmalloc(n * 4), *d = hmalloc(n * 4), *p = hmalloc(no * 4), *dp = hmalloc(n * 4);
        get_act(g_gpu, s, gs, n), get_act(g_gpu, d, gd, n), get_act(g_gpu, p, gpool, no);
        get_act(g_gpu, dp, gdp, n);
        printf("  relu / avgpool NC=%d %dx%d k=%d\n", NC, H, W, k);
        expect_close("add_relu", s, r_s, n, tol_act());
        expect_close("relu_backward", d, r_d, n, tol_act());
        expect_close("avgpool forward", p, r_p, no, tol_act());
        expect_close("avgpool backward", dp, r_dp, n, tol_act());
        free_all();
    }
}

/* ---- the attention pool ---- */

typedef struct {
    int B, D, HW, NH;
} pool_case;

static void run_attnpool(const pool_case *k) {
    const int B = k->B, D = k->D, HW = k->HW, T = HW + 1, NH = k->NH, HS = D / NH;
    const size_t nf = (size_t)B * D * HW, nt = (size_t)B * T * D, np = (size_t)T * D;
    const size_t nq = (size_t)B * D, nl = (size_t)B * NH;
    float *feat = rand_act(nf, 1.0f), *pos = rand_act(np, 0.5f), *dtok = rand_act(nt, 1.0f);
    float *dpos0 = rand_f32(np, 1.0f);
    float *q = rand_act(nq, 1.5f), *kk = rand_act(nt, 1.5f), *v = rand_act(nt, 1.0f);
    float *dout = rand_act(nq, 1.0f);
    /* cpu */
    tc_act *cf = put_act(g_cpu, feat, nf), *cp = put_act(g_cpu, pos, np),
           *cdt = put_act(g_cpu, dtok, nt);
    tc_act *ctok = balloc(g_cpu, nt * 4), *cdf = balloc(g_cpu, nf * 4);
    float *cdp = put_f32(g_cpu, dpos0, np);
    g_cpu->attnpool_tokens_forward(g_cpu, ctok, cf, cp, B, D, HW);
    g_cpu->attnpool_tokens_backward(g_cpu, cdf, cdp, cdt, B, D, HW);
    tc_act *cq = put_act(g_cpu, q, nq), *ck = put_act(g_cpu, kk, nt), *cv = put_act(g_cpu, v, nt);
    tc_act *co = balloc(g_cpu, nq * 4), *cdo = put_act(g_cpu, dout, nq);
    tc_act *cdq = balloc(g_cpu, nq * 4), *cdk = balloc(g_cpu, nt * 4), *cdv = balloc(g_cpu, nt * 4);
    float *cl = balloc(g_cpu, nl * 4);
    g_cpu->attention_query_forward(g_cpu, co, cl, cq, ck, cv, B, T, NH, HS);
    float *r_tok = hmalloc(nt * 4), *r_df = hmalloc(nf * 4), *r_dp = hmalloc(np * 4);
    float *r_o = hmalloc(nq * 4), *r_l = hmalloc(nl * 4);
    get_act(g_cpu, r_tok, ctok, nt), get_act(g_cpu, r_df, cdf, nf), get_f32(g_cpu, r_dp, cdp, np);
    get_act(g_cpu, r_o, co, nq), get_f32(g_cpu, r_l, cl, nl);
    /* both backwards from the forward's output as the GPU rounds it */
    float *o_in = hmalloc(nq * 4);
    for (size_t i = 0; i < nq; i++)
        o_in[i] = g_fp32 ? r_o[i] : bf16_round(r_o[i]);
    tc_act *co2 = put_act(g_cpu, o_in, nq);
    g_cpu->attention_query_backward(g_cpu, cdq, cdk, cdv, cdo, cq, ck, cv, co2, cl, B, T, NH, HS);
    float *r_dq = hmalloc(nq * 4), *r_dk = hmalloc(nt * 4), *r_dv = hmalloc(nt * 4);
    get_act(g_cpu, r_dq, cdq, nq), get_act(g_cpu, r_dk, cdk, nt), get_act(g_cpu, r_dv, cdv, nt);
    /* gpu */
    tc_act *gf = put_act(g_gpu, feat, nf), *gp = put_act(g_gpu, pos, np),
           *gdt = put_act(g_gpu, dtok, nt);
    tc_act *gtok = gpu_out_act(nt), *gdf = gpu_out_act(nf);
    float *gdp = put_f32(g_gpu, dpos0, np);
    g_gpu->attnpool_tokens_forward(g_gpu, gtok, gf, gp, B, D, HW);
    g_gpu->attnpool_tokens_backward(g_gpu, gdf, gdp, gdt, B, D, HW);
    tc_act *gq = put_act(g_gpu, q, nq), *gk = put_act(g_gpu, kk, nt), *gv = put_act(g_gpu, v, nt);
    tc_act *go = gpu_out_act(nq), *gdo = put_act(g_gpu, dout, nq), *go2 = put_act(g_gpu, o_in, nq);
    tc_act *gdq = gpu_out_act(nq), *gdk = gpu_out_act(nt), *gdv = gpu_out_act(nt);
    float *gl = gpu_out_f32(nl), *gl2 = put_f32(g_gpu, r_l, nl);
    g_gpu->attention_query_forward(g_gpu, go, gl, gq, gk, gv, B, T, NH, HS);
    g_gpu->attention_query_backward(g_gpu, gdq, gdk, gdv, gdo, gq, gk, gv, go2, gl2, B, T, NH, HS);
    bsync(g_gpu, "cuda attention pool");
    float *tok = hmalloc(nt * 4), *df = hmalloc(nf * 4), *dp = hmalloc(np * 4);
    float *o = hmalloc(nq * 4), *l = hmalloc(nl * 4), *dq = hmalloc(nq * 4);
    float *dk = hmalloc(nt * 4), *dv = hmalloc(nt * 4);
    get_act(g_gpu, tok, gtok, nt), get_act(g_gpu, df, gdf, nf), get_f32(g_gpu, dp, gdp, np);
    get_act(g_gpu, o, go, nq), get_f32(g_gpu, l, gl, nl);
    get_act(g_gpu, dq, gdq, nq), get_act(g_gpu, dk, gdk, nt), get_act(g_gpu, dv, gdv, nt);
    printf("  attention pool B=%d D=%d HW=%d NH=%d (HS %d)\n", B, D, HW, NH, HS);
    expect_close("tokens", tok, r_tok, nt, tol_act());
    expect_close("tokens dfeat", df, r_df, nf, tol_act());
    expect_close("tokens dpos (+=)", dp, r_dp, np, tol_f32());
    expect_close("attention_query out", o, r_o, nq, tol_act());
    expect_close("attention_query lse", l, r_l, nl, tol_f32());
    expect_close("attention_query dq", dq, r_dq, nq, tol_act());
    expect_close("attention_query dk", dk, r_dk, nt, tol_act());
    expect_close("attention_query dv", dv, r_dv, nt, tol_act());
}

void test_attnpool(void **state) {
    (void)state;
    static const pool_case full[] = {
        {8, 2048, 49, 32}, /* RN50: 7x7 map, 32 heads of 64 */
        {4, 1408, 49, 22}, /* TinyCLIP-ResNet-19M */
        {2, 160, 4, 2},    /* heads of 80 */
        {3, 64, 1, 8},     /* a 1x1 map, heads of 8 */
    };
    static const pool_case quick[] = {{2, 128, 4, 2}};
    RUN_CASES(run_attnpool, full, quick);
}

/* ---- a whole ResNet CLIP ---- */

/* features and every parameter gradient of a small ResNet CLIP (the stem, a
 * strided stage with a downsample branch, identity blocks, the attention
 * pool) on both backends from the same weights and batch, batch statistics */
void test_resnet_model(void **state) {
    (void)state;
    const char *json =
        "{\"embed_dim\": 48, \"vision_cfg\": {\"image_size\": 64, \"layers\": [1, 2, 1, 1], "
        "\"width\": 8, \"head_width\": 32, \"patch_size\": null}, \"text_cfg\": "
        "{\"context_length\": 8, \"vocab_size\": 40, \"width\": 64, \"heads\": 2, \"layers\": 1}}";
    tc_model_config cfg;
    if (tc_model_config_parse(&cfg, json, strlen(json), "resnet") != TC_OK)
        fail_msg("%s", tc_last_error());
    const int B = g_quick ? 2 : 6, S = 64;
    tc_backend *bes[2] = {g_cpu, g_gpu};
    tc_model *m[2];
    tc_model_options opt = {.max_batch = B, .train = 1};
    for (int i = 0; i < 2; i++)
        if (tc_model_create(&m[i], bes[i], &cfg, opt) != TC_OK) fail_msg("%s", tc_last_error());
    const size_t P = tc_model_layout(m[0])->total, E = (size_t)B * cfg.embed_dim;
    float *params = hmalloc(P * 4);
    assert_int_equal(tc_model_init_random(m[0], 7), TC_OK);
    assert_int_equal(tc_model_get_params(m[0], params), TC_OK);
    /* bn3 starts at 0 in open_clip: give the residual branches a gain */
    for (size_t i = 0; i < P; i++)
        if (params[i] == 0.0f) params[i] = 0.25f;
    float *images = rand_f32((size_t)B * 3 * S * S, 1.0f), *dfeat = rand_f32(E, 1.0f);
    float *feat[2], *grads[2], *run[2];
    for (int i = 0; i < 2; i++) {
        tc_backend *b = bes[i];
        assert_int_equal(tc_model_set_params(m[i], params), TC_OK);
        tc_model_zero_grads(m[i]);
        tc_model_set_bn_mode(m[i], TC_BN_TRAIN);
        assert_int_equal(tc_model_encode_image(m[i], images, B), TC_OK);
        float *df = put_f32(b, dfeat, E);
        assert_int_equal(tc_model_backward_image(m[i], df), TC_OK);
        bsync(b, "resnet model");
        feat[i] = hmalloc(E * 4), grads[i] = hmalloc(P * 4), run[i] = hmalloc(P * 4);
        get_f32(b, feat[i], tc_model_image_features(m[i]), E);
        get_f32(b, grads[i], tc_model_grads(m[i]), P);
        assert_int_equal(tc_model_get_params(m[i], run[i]), TC_OK);
    }
    printf("  resnet CLIP stages [1,2,1,1] width 8 at 64 px, batch %d\n", B);
    /* bf16 through 17 convolutions and BatchNorms: 1e-2 of the tensor maximum
     * for features and weight gradients (each tensor on its own) */
    const double tol = g_fp32 ? 1e-4 : 5e-2;
    expect_close("image features", feat[1], feat[0], E, tol);
    const tc_param_layout *L = tc_model_layout(m[0]);
    for (int i = 0; i < L->count; i++) {
        const tc_param_info *p = &L->params[i];
        if (p->tower != TC_TOWER_VISION) continue;
        const float *a = p->buffer ? run[1] : grads[1], *r = p->buffer ? run[0] : grads[0];
        /* the attention pool's key bias has no gradient (the softmax cancels it) */
        if (strstr(p->name, "k_proj.bias")) continue;
        expect_close(p->name, a + p->offset, r + p->offset, p->count, p->buffer ? tol_f32() : tol);
    }
    for (int i = 0; i < 2; i++)
        tc_model_destroy(m[i]);
}

#endif
