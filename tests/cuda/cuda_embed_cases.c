/* test_cuda_ops' cases for patchify and the vision embedding, the patch embedding (GEMM and cuDNN),
 * the token embedding, pooling (cuda/embed.cu, cuda/conv_cudnn.cu), compiled into that binary: the
 * CUDA backend against the CPU reference backend in the fp32 and the mixed (bf16) mode, with the
 * harness and tolerances of tests/cuda/cuda_harness.h */
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

/* patchify and the vision embedding */
void test_vision_embed(void **state) {
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

void test_patch_embed(void **state) {
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
void test_patch_embed_choice(void **state) {
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
void test_token_embed(void **state) {
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
void test_pooling(void **state) {
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

#endif
