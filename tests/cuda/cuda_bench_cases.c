/* test_cuda_ops' cases for the kernel benchmarks of test_cuda_ops --bench (attention, linear, patch
 * embedding) (cuda/attention_*.cu, cuda/gemm.cu, cuda/conv_cudnn.cu), compiled into that binary:
 * the CUDA backend against the CPU reference backend in the fp32 and the mixed
 * (bf16) mode, with the harness and tolerances of tests/cuda/cuda_harness.h */
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

/* ============================== benchmarks ==============================
 * test_cuda_ops --bench: kernel timings in the mixed (bf16) mode, read by
 * scripts/gpu_check.sh. host clock around synchronize(), after two warm-up
 * runs; each figure is the median of 5 repeats of `iters` launches. lines:
 *   BENCH|<name>|<ms per call>|<TFLOP/s>
 * each attention shape is timed on the FMA kernels and, names ending in
 * " [mma]", on the tensor-core kernels (TINYCLIP_ATTENTION=mma) and, on a
 * compute capability 9 device, " [wgmma]" (TINYCLIP_ATTENTION=wgmma) and
 * " [tma]" (TINYCLIP_ATTENTION=tma: TMA-fed, warp specialised).
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

int run_bench(void) {
    tc_backend *b = NULL, *bm = NULL, *bw = NULL, *btma = NULL;
    if (tc_backend_cuda_create(&b, NULL) != TC_OK ||
        tc_backend_cuda_create(&bm, &(tc_backend_options){.attention = TC_ATTENTION_MMA}) !=
            TC_OK ||
        tc_backend_cuda_create(&bw, &(tc_backend_options){.attention = TC_ATTENTION_WGMMA}) !=
            TC_OK ||
        tc_backend_cuda_create(&btma, &(tc_backend_options){.attention = TC_ATTENTION_TMA}) !=
            TC_OK) {
        printf("bench: %s\n", tc_last_error());
        if (bw) bw->destroy(bw);
        if (bm) bm->destroy(bm);
        if (b) b->destroy(b);
        return 1;
    }
    int cc_major = 0;
    (void)cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, 0);
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
        /* the FMA kernels, then the tensor-core kernels (backends made with
         * TC_ATTENTION_MMA and, on compute capability 9, _WGMMA and _TMA;
         * lines tagged " [mma]", " [wgmma]", " [tma]") on the same shape and
         * buffers */
        tc_backend *const kernels[4] = {b, bm, bw, btma};
        static const char *const tags[4] = {"", " [mma]", " [wgmma]", " [tma]"};
        for (int mma = 0; mma < (cc_major == 9 ? 4 : 2); mma++) {
            a.b = kernels[mma];
            b->synchronize(b);
            const char *tag = tags[mma];
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
    btma->destroy(btma);
    bw->destroy(bw);
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

int run_patch_embed_bench(void) {
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

#endif
