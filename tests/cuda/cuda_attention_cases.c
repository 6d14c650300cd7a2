/* test_cuda_ops' cases for the fused attention: the FMA kernels, and the
 * tensor-core kernels chosen with TC_ATTENTION_MMA, TC_ATTENTION_WGMMA and
 * TC_ATTENTION_TMA, against the CPU backend (harness: cuda_harness.h) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_attention_cases.h"
#include "cuda_harness.h"

#ifdef TC_HAVE_CUDA
#include <cuda_runtime_api.h>

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

void test_attention(void **state) {
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
        {1, 66, 2, 88, 0},  /* ViT-g/14 */
        {2, 50, 2, 104, 1}, /* ViT-bigG/14 */
        {1, 40, 3, 40, 1},
        {1, 20, 2, 8, 1},
        {1, 33, 2, 256, 0},
    };
    static const att_case quick[] = {
        {1, 70, 2, 64, 1}, {1, 33, 1, 128, 0}, {1, 20, 2, 32, 0}, {1, 45, 2, 88, 1}};
    RUN_CASES(run_attention, full, quick);
}

/* the tensor-core attention kernels, selected with TINYCLIP_ATTENTION=mma
 * (cuda/attention_forward_mma.cu, attention_backward_mma.cu: mma.sync) or
 * =wgmma (cuda/sm90/: warpgroup MMA, compute capability 9 only) in the bf16
 * mode, against the CPU backend; the FMA kernels run on the same inputs in
 * the same test, so one run covers both paths. every call must have run the
 * kernels chosen (tc_cuda_attention_kernel_ran): wgmma on a compute
 * capability 9 device, mma elsewhere (the fallback), FMA in the fp32 mode.
 *
 * tolerance: TOL_BF16 (1e-2 of the tensor maximum) for out, dq, dk, dv and
 * TOL_F32_IN_MIXED (1e-4) for lse. both tensor-core paths multiply the same bf16
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
 * for T >= 32 the tensor-core forward's output must also differ from the FMA
 * forward's in at least one element (P is rounded to bf16; with one token
 * both give v). the tensor-core backward takes the FMA forward's lse and the
 * FMA backward the tensor-core forward's lse (the lse meaning is shared).
 * fp32 mode: the selection must leave the FMA kernels in place (checked on one
 * shape against the CPU with the fp32 tolerance). */
#define N_KERNELS 4
static tc_backend *g_gpu_tc[N_KERNELS]; /* the same device, attention kernels chosen */
static const char *const kernel_names[N_KERNELS] = {"fma", "mma", "wgmma", "tma"};

void attention_cases_teardown(void) {
    for (int i = 0; i < N_KERNELS; i++) {
        if (g_gpu_tc[i]) g_gpu_tc[i]->destroy(g_gpu_tc[i]);
        g_gpu_tc[i] = NULL;
    }
}

/* the backend whose attention ops run the chosen kernels: g_gpu (FMA), or a
 * second backend made with TC_ATTENTION_MMA or _WGMMA; they share the device
 * memory, and g_gpu's queue is drained before another one reads it */
static tc_backend *attention_backend(tc_attention_kernel kind) {
    bsync(g_gpu, "cuda (before switching the attention kernels)");
    if (kind == TC_ATTENTION_FMA) return g_gpu;
    if (!g_gpu_tc[kind]) {
        tc_backend_options o = {.fp32 = g_fp32, .attention = kind};
        if (tc_backend_cuda_create(&g_gpu_tc[kind], &o) != TC_OK)
            fail_msg("cuda backend with %s attention: %s", kernel_names[kind], tc_last_error());
    }
    return g_gpu_tc[kind];
}

static int device_cc_major(void) {
    int major = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return major;
}

/* the kernels a call must have run when `kind` is chosen */
static tc_attention_kernel expected_kernel(tc_attention_kernel kind) {
    if (g_fp32) return TC_ATTENTION_FMA;
    if ((kind == TC_ATTENTION_WGMMA || kind == TC_ATTENTION_TMA) && device_cc_major() != 9)
        return TC_ATTENTION_MMA;
    return kind;
}

static void expect_ran(tc_backend *b, int backward, tc_attention_kernel kind) {
    const tc_attention_kernel ran = tc_cuda_attention_kernel_ran(b, backward),
                              want = expected_kernel(kind);
    if (ran != want)
        fail_msg("attention %s with %s chosen ran the %s kernels, expected %s",
                 backward ? "backward" : "forward", kernel_names[kind], kernel_names[ran],
                 kernel_names[want]);
}

static void run_attention_tc(const att_case *k, tc_attention_kernel kind) {
    const int B = k->B, T = k->T, NH = k->NH, HS = k->HS, A = NH * HS;
    const size_t nqkv = (size_t)B * T * 3 * A, no = (size_t)B * T * A, nl = (size_t)B * NH * T;
    float *qkv = rand_act(nqkv, 2.0f), *dout = rand_act(no, 1.0f);
    att_reference ref = attention_reference(k, qkv, dout);
    float *r_o = ref.r_o, *r_l = ref.r_l, *r_dq = ref.r_dq, *o_in = ref.o_in;

    tc_act *gq = put_act(g_gpu, qkv, nqkv), *gdo = put_act(g_gpu, dout, no);
    tc_act *go2 = put_act(g_gpu, o_in, no);
    /* FMA forward (its output and lse) */
    tc_backend *fma = attention_backend(TC_ATTENTION_FMA);
    tc_act *go_f = gpu_out_act(no);
    float *gl_f = gpu_out_f32(nl);
    fma->attention_forward(fma, go_f, gl_f, gq, B, T, NH, HS, k->causal);
    bsync(fma, "cuda attention_forward (fma)");
    /* tensor-core forward, and its backward from the FMA forward's lse */
    tc_act *go = gpu_out_act(no), *gdq = gpu_out_act(nqkv);
    float *gl = gpu_out_f32(nl);
    const char *name = kernel_names[kind];
    tc_backend *mma = attention_backend(kind);
    mma->attention_forward(mma, go, gl, gq, B, T, NH, HS, k->causal);
    bsync(mma, "cuda attention_forward (tensor cores)");
    expect_ran(mma, 0, kind);
    mma->attention_backward(mma, gdq, gdo, gq, go2, gl_f, B, T, NH, HS, k->causal);
    bsync(mma, "cuda attention_backward (tensor cores)");
    expect_ran(mma, 1, kind);
    float *o = hmalloc(no * 4), *o_f = hmalloc(no * 4), *l = hmalloc(nl * 4);
    float *dq = hmalloc(nqkv * 4);
    get_act(g_gpu, o, go, no);
    get_act(g_gpu, o_f, go_f, no);
    get_f32(g_gpu, l, gl, nl);
    get_act(g_gpu, dq, gdq, nqkv);
    printf("  attention %s (ran %s) B=%d T=%d NH=%d HS=%d causal=%d\n", name,
           kernel_names[expected_kernel(kind)], B, T, NH, HS, k->causal);
    expect_close("out (tensor cores)", o, r_o, no, tol_act());
    expect_close("lse (tensor cores)", l, r_l, nl, tol_f32());
    expect_dqkv(" (tensor cores, fma lse)", dq, r_dq, B * T, A);
    if (!g_fp32 && T >= 32 && memcmp(o, o_f, no * 4) == 0)
        fail_msg("attention %s: output identical to the FMA kernel's", name);

    /* deterministic: a second mma backward gives the same bits */
    float *dq2 = hmalloc(nqkv * 4);
    poison(g_gpu, gdq, nqkv * g_gpu->act_bytes);
    mma = attention_backend(kind);
    mma->attention_backward(mma, gdq, gdo, gq, go2, gl_f, B, T, NH, HS, k->causal);
    bsync(mma, "cuda attention_backward (tensor cores, again)");
    get_act(g_gpu, dq2, gdq, nqkv);
    expect_same_bits("attention dqkv (tensor cores)", dq, dq2, nqkv);

    /* the TMA-fed kernels do the wgmma kernels' operations in the same order
     * (the forward's overlap moves when O is rescaled, not what it is
     * multiplied by): out, lse and dqkv must be the same bits */
    if (kind == TC_ATTENTION_TMA && expected_kernel(kind) == TC_ATTENTION_TMA) {
        tc_backend *wg = attention_backend(TC_ATTENTION_WGMMA);
        float *o_w = hmalloc(no * 4), *l_w = hmalloc(nl * 4);
        poison(g_gpu, go, no * g_gpu->act_bytes);
        poison(g_gpu, gdq, nqkv * g_gpu->act_bytes);
        wg->attention_forward(wg, go, gl, gq, B, T, NH, HS, k->causal);
        wg->attention_backward(wg, gdq, gdo, gq, go2, gl_f, B, T, NH, HS, k->causal);
        bsync(wg, "cuda attention (wgmma, against tma)");
        expect_ran(wg, 0, TC_ATTENTION_WGMMA);
        expect_ran(wg, 1, TC_ATTENTION_WGMMA);
        get_act(g_gpu, o_w, go, no);
        get_f32(g_gpu, l_w, gl, nl);
        get_act(g_gpu, dq2, gdq, nqkv);
        expect_same_bits("attention out (tma against wgmma)", o, o_w, no);
        expect_same_bits("attention lse (tma against wgmma)", l, l_w, nl);
        expect_same_bits("attention dqkv (tma against wgmma)", dq, dq2, nqkv);
    }

    /* the FMA backward from the mma forward's lse */
    poison(g_gpu, gdq, nqkv * g_gpu->act_bytes);
    fma = attention_backend(TC_ATTENTION_FMA);
    fma->attention_backward(fma, gdq, gdo, gq, go2, gl, B, T, NH, HS, k->causal);
    bsync(fma, "cuda attention_backward (fma, tensor-core lse)");
    get_act(g_gpu, dq2, gdq, nqkv);
    expect_close("dqkv (fma, tensor-core lse)", dq2, r_dq, nqkv, tol_act());
}

/* the shapes of both tensor-core paths */
static void run_attention_tc_cases(tc_attention_kernel kind) {
    static const att_case fp32_case = {1, 77, 2, 64, 1};
    static const att_case extra[] = {
        {2, 77, 7, 64, 1},   /* pruned heads */
        {2, 77, 8, 32, 1},   /* head size 32 */
        {2, 197, 12, 32, 0}, /* head size 32 */
        {1, 257, 8, 128, 1}, /* head size 128 */
        {2, 77, 8, 128, 0},  /* head size 128 */
        {1, 1, 3, 64, 1},    /* one token */
        /* heads padded to a multiple of 16 inside the kernels: 80 (ViT-H),
         * 88 -> 96 (ViT-g), 104 -> 112 (ViT-bigG), 40 -> 48, 8 -> 32 (mma)
         * or 16 (wgmma) */
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
        printf("  fp32 mode: choosing the %s attention must leave the FMA kernels in place\n",
               kernel_names[kind]);
        run_attention_tc(&fp32_case, kind);
        free_all();
    } else if (g_quick) {
        for (size_t i = 0; i < sizeof quick / sizeof *quick; i++) {
            run_attention_tc(&quick[i], kind);
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
                    run_attention_tc(&c, kind);
                    free_all();
                }
        for (size_t i = 0; i < sizeof extra / sizeof *extra; i++) {
            run_attention_tc(&extra[i], kind);
            free_all();
        }
    }
}

void test_attention_mma(void **state) {
    (void)state;
    run_attention_tc_cases(TC_ATTENTION_MMA);
}

/* on a device of another compute capability the cases still run (choosing
 * wgmma or tma must run the mma kernels there, correctly), and the test then
 * reports itself skipped: the Hopper kernels were not exercised */
static void run_hopper_cases(tc_attention_kernel kind) {
    run_attention_tc_cases(kind);
    if (!g_fp32 && device_cc_major() != 9) {
        printf("SKIP: the %s attention needs compute capability 9 (device 0: %d.x); the "
               "fallback to mma was checked\n",
               kernel_names[kind], device_cc_major());
        skip();
    }
}

void test_attention_wgmma(void **state) {
    (void)state;
    run_hopper_cases(TC_ATTENTION_WGMMA);
}

/* the TMA-fed, warp-specialised kernels (cuda/sm90/attention_*_tma.cu): the
 * same cases against the CPU backend, and bit for bit against the wgmma
 * kernels (run_attention_tc) */
void test_attention_tma(void **state) {
    (void)state;
    run_hopper_cases(TC_ATTENTION_TMA);
}

#endif
