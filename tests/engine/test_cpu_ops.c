/* CPU backend: the ops without a backward (memory, elementwise, gemm,
 * patchify, argmax, optimizer) against naive double references, and
 * determinism: every op run twice gives the same bits, and the ops that do not
 * call BLAS give the same bits with 1 and 2 threads. the forward and gradient
 * checks of the differentiable ops are in test_cpu_gradcheck.c. */
#include <cblas.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "testutil.h"

static tc_backend *be;
static uint64_t rng = 0xC0FFEE;

static float *dalloc_on(tc_backend *b, size_t n) {
    void *p = NULL;
    assert_int_equal(b->alloc(b, n * sizeof(float), &p), TC_OK);
    return p;
}
static float *dalloc(size_t n) {
    return dalloc_on(be, n);
}
static float *drand(size_t n, float scale) {
    float *p = dalloc(n);
    tc_fill_uniform(p, n, &rng, scale);
    return p;
}
static float *dcopy(const float *x, size_t n) {
    float *p = dalloc(n);
    memcpy(p, x, n * sizeof(float));
    return p;
}
static void dfree(void *p) {
    be->free(be, p);
}

/* ---- memory ---- */

/* a DYNAMIC_ARCH OpenBLAS must not be left on its SSE3 fallback kernels on a
 * CPU that has AVX2 (cpu_blas.c re-selects them when the library does not
 * know the CPU model) */
extern void gotoblas_dynamic_init(void) __attribute__((weak));

static void test_blas_kernels(void **state) {
    (void)state;
    const char *core = openblas_get_corename();
    printf("  OpenBLAS core: %s\n", core ? core : "?");
    __builtin_cpu_init();
    if (!gotoblas_dynamic_init || getenv("OPENBLAS_CORETYPE") || !__builtin_cpu_supports("avx2") ||
        !__builtin_cpu_supports("fma"))
        return; /* nothing to re-select: a fixed-target build, or the user's choice */
    const char *old[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom"};
    for (size_t i = 0; i < sizeof old / sizeof old[0]; i++)
        if (core && strcmp(core, old[i]) == 0) fail_msg("OpenBLAS left on %s kernels", core);
}

static void test_backend_fields_and_memory(void **state) {
    (void)state;
    assert_string_equal(be->name, "cpu");
    assert_int_equal(be->act_bytes, sizeof(float));
    assert_int_equal(be->caps.separate_compute_weights, 0);
    const size_t sizes[] = {0, 1, 63, 64, 1000, 1 << 20};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        unsigned char *p = NULL;
        assert_int_equal(be->alloc(be, sizes[s], (void **)&p), TC_OK);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 64, 0);
        for (size_t i = 0; i < sizes[s]; i++)
            if (p[i] != 0) fail_msg("alloc(%zu) byte %zu not zero", sizes[s], i);
        be->free(be, p);
    }
    /* every op of engine/backend_ops.h is implemented */
    const char *missing = tc_test_backend_missing_op(be);
    if (missing) fail_msg("the CPU backend leaves op %s NULL", missing);
    /* upload / download round trip through a backend buffer */
    float host[37], back[37];
    tc_fill_uniform(host, 37, &rng, 3.0f);
    float *d = dalloc(37);
    assert_int_equal(be->upload(be, d, host, sizeof host), TC_OK);
    assert_int_equal(be->synchronize(be), TC_OK);
    assert_int_equal(be->download(be, back, d, sizeof back), TC_OK);
    assert_memory_equal(host, back, sizeof host);
    dfree(d);
    /* a NULL output pointer is an argument error, not a crash */
    assert_int_equal(be->alloc(be, 16, NULL), TC_ERR_ARG);
    void *huge = NULL;
    assert_int_equal(be->alloc(be, SIZE_MAX - 8, &huge), TC_ERR_OOM);
    assert_null(huge);
}

/* ---- elementwise ---- */

static void test_elementwise(void **state) {
    (void)state;
    const size_t n = 100003; /* above the parallel threshold, odd */
    float *x = drand(n, 2.0f), *y = drand(n, 2.0f), *o = dalloc(n);
    be->add(be, (tc_act *)o, (tc_act *)x, (tc_act *)y, n);
    for (size_t i = 0; i < n; i++)
        assert_true(o[i] == x[i] + y[i]);

    /* scale by a device scalar that is itself an element of x */
    float *xs = dcopy(x, n);
    be->scale_f32(be, xs, xs + 5, n);
    for (size_t i = 0; i < n; i++)
        assert_true(xs[i] == x[i] * x[5]);

    be->fill_f32(be, o, -1.25f, n);
    for (size_t i = 0; i < n; i++)
        assert_true(o[i] == -1.25f);
    be->zero(be, o, n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        assert_true(o[i] == 0.0f);
    be->copy(be, o, x, n * sizeof(float));
    assert_memory_equal(o, x, n * sizeof(float));
    float *a = dalloc(n), *f = dalloc(n);
    be->f32_to_act(be, (tc_act *)a, x, n);
    be->act_to_f32(be, f, (tc_act *)a, n);
    assert_memory_equal(f, x, n * sizeof(float));

    /* clamp keeps NaN (torch.clamp) */
    float c[6] = {-3.0f, -1.0f, 0.5f, 1.0f, 7.0f, NAN};
    float *dc = dcopy(c, 6);
    be->clamp_f32(be, dc, -1.0f, 2.0f, 6);
    const float want[5] = {-1.0f, -1.0f, 0.5f, 1.0f, 2.0f};
    assert_memory_equal(dc, want, sizeof want);
    assert_true(isnan(dc[5]));

    float *flag = dalloc(1);
    be->all_finite(be, flag, x, n);
    assert_true(flag[0] == 1.0f);
    x[n - 1] = INFINITY;
    be->all_finite(be, flag, x, n);
    assert_true(flag[0] == 0.0f);
    x[n - 1] = 0.0f, x[17] = NAN;
    be->all_finite(be, flag, x, n);
    assert_true(flag[0] == 0.0f);
    x[17] = -INFINITY;
    be->all_finite(be, flag, x, 20);
    assert_true(flag[0] == 0.0f);
    be->all_finite(be, flag, x, 0);
    assert_true(flag[0] == 1.0f);
    dfree(x), dfree(y), dfree(o), dfree(xs), dfree(a), dfree(f), dfree(dc), dfree(flag);
}

/* ---- gemm_f32 ---- */

static void gemm_one(int ta, int tb, int M, int N, int K, float alpha, float beta) {
    float *A = drand((size_t)M * K, 1.0f), *B = drand((size_t)K * N, 1.0f);
    float *C = drand((size_t)M * N, 1.0f), *C0 = dcopy(C, (size_t)M * N);
    if (beta == 0.0f) /* beta 0 overwrites: stale NaN must not leak through */
        for (size_t i = 0; i < (size_t)M * N; i++)
            C[i] = NAN;
    be->gemm_f32(be, ta, tb, M, N, K, alpha, A, B, beta, C);
    float *ref = dalloc((size_t)M * N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++) {
                double a = ta ? A[(size_t)k * M + i] : A[(size_t)i * K + k];
                double bb = tb ? B[(size_t)j * K + k] : B[(size_t)k * N + j];
                s += a * bb;
            }
            ref[(size_t)i * N + j] =
                (float)(alpha * s + (beta == 0.0f ? 0.0 : beta * (double)C0[(size_t)i * N + j]));
        }
    char what[64];
    snprintf(what, sizeof what, "gemm ta%d tb%d %dx%dx%d", ta, tb, M, N, K);
    TC_ASSERT_CLOSE(C, ref, (size_t)M * N, 1e-5, what);
    dfree(A), dfree(B), dfree(C), dfree(C0), dfree(ref);
}

/* the optional fused residual + layernorm is present, and is add followed
 * by layernorm_forward to the bit (the model uses it on every layer) */
static void test_residual_layernorm(void **state) {
    (void)state;
    assert_non_null(be->residual_layernorm_forward);
    const int N = 37, C = 70;
    const size_t n = (size_t)N * C;
    float *x = drand(n, 3.0f), *y = drand(n, 1.0f), *w = drand(C, 1.0f), *bias = drand(C, 1.0f);
    float *res = dalloc(n), *out = dalloc(n), *mean = dalloc(N), *rstd = dalloc(N);
    float *res2 = dalloc(n), *out2 = dalloc(n), *mean2 = dalloc(N), *rstd2 = dalloc(N);
    be->residual_layernorm_forward(be, (tc_act *)res, (tc_act *)out, mean, rstd, (tc_act *)x,
                                   (tc_act *)y, (tc_act *)w, (tc_act *)bias, N, C);
    be->add(be, (tc_act *)res2, (tc_act *)x, (tc_act *)y, n);
    be->layernorm_forward(be, (tc_act *)out2, mean2, rstd2, (tc_act *)res2, (tc_act *)w,
                          (tc_act *)bias, N, C);
    assert_int_equal(be->synchronize(be), TC_OK);
    assert_memory_equal(res, res2, n * sizeof(float));
    assert_memory_equal(out, out2, n * sizeof(float));
    assert_memory_equal(mean, mean2, N * sizeof(float));
    assert_memory_equal(rstd, rstd2, N * sizeof(float));
    float *bufs[] = {x, y, w, bias, res, out, mean, rstd, res2, out2, mean2, rstd2};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        dfree(bufs[i]);
}

static void test_gemm_f32(void **state) {
    (void)state;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            gemm_one(ta, tb, 7, 5, 9, 0.7f, 0.3f);
            gemm_one(ta, tb, 13, 3, 17, 1.0f, 0.0f);
        }
}

/* ---- patchify ---- */

/* patches . conv1^T must equal Conv2d(3, OC, P, stride P, bias=False) */
static void patchify_one(int B, int H, int W, int P, int OC) {
    const int gh = H / P, gw = W / P, K = 3 * P * P;
    const size_t np = (size_t)B * gh * gw;
    float *img = drand((size_t)B * 3 * H * W, 1.0f), *conv = drand((size_t)OC * K, 0.5f);
    float *patches = dalloc(np * K), *emb = dalloc(np * OC);
    be->patchify(be, (tc_act *)patches, img, B, H, W, P);
    be->linear_forward(be, (tc_act *)emb, (tc_act *)patches, (tc_act *)conv, NULL, (int)np, K, OC,
                       0);
    float *ref = dalloc(np * OC);
    for (int b = 0; b < B; b++)
        for (int gy = 0; gy < gh; gy++)
            for (int gx = 0; gx < gw; gx++)
                for (int o = 0; o < OC; o++) {
                    double s = 0.0;
                    for (int c = 0; c < 3; c++)
                        for (int ky = 0; ky < P; ky++)
                            for (int kx = 0; kx < P; kx++)
                                s += (double)img[(((size_t)b * 3 + c) * H + gy * P + ky) * W +
                                                 gx * P + kx] *
                                     conv[(((size_t)o * 3 + c) * P + ky) * P + kx];
                    ref[(((size_t)b * gh + gy) * gw + gx) * OC + o] = (float)s;
                }
    TC_ASSERT_CLOSE(emb, ref, np * OC, 1e-5, "patchify . conv1^T vs conv2d");
    dfree(img), dfree(conv), dfree(patches), dfree(emb), dfree(ref);
}

static void test_patchify(void **state) {
    (void)state;
    patchify_one(2, 8, 8, 4, 5);
    patchify_one(1, 9, 9, 3, 7);
    patchify_one(3, 10, 10, 4, 2); /* a remainder row/column is dropped, as the conv does */
}

/* ---- argmax ---- */

static void test_argmax_rows(void **state) {
    (void)state;
    const int32_t ids_h[4][5] = {
        {49406, 320, 49407, 0, 0}, {3, 7, 7, 1, 7}, {-5, -2, -2, -9, -3}, {4, 4, 4, 4, 4}};
    const int32_t want[4] = {2, 1, 1, 0};
    int32_t *ids = NULL, *idx = NULL;
    assert_int_equal(be->alloc(be, sizeof ids_h, (void **)&ids), TC_OK);
    assert_int_equal(be->alloc(be, sizeof want, (void **)&idx), TC_OK);
    memcpy(ids, ids_h, sizeof ids_h);
    be->argmax_rows(be, idx, ids, 4, 5);
    assert_memory_equal(idx, want, sizeof want);
    be->free(be, ids), be->free(be, idx);
}

/* ---- out-of-range indices never reach memory ---- */

static void test_hostile_indices(void **state) {
    (void)state;
    const int B = 2, T = 3, C = 4, V = 5;
    float *x = drand((size_t)B * T * C, 1.0f), *out = drand((size_t)B * C, 1.0f);
    float *dx = drand((size_t)B * T * C, 1.0f), *dx0 = dcopy(dx, (size_t)B * T * C);
    int32_t *idx = NULL, *ids = NULL;
    assert_int_equal(be->alloc(be, 2 * sizeof(int32_t), (void **)&idx), TC_OK);
    assert_int_equal(be->alloc(be, (size_t)B * T * sizeof(int32_t), (void **)&ids), TC_OK);
    idx[0] = T, idx[1] = -1; /* both outside [0, T) */
    be->pool_gather_forward(be, (tc_act *)out, (tc_act *)x, idx, B, T, C);
    for (int i = 0; i < B * C; i++)
        assert_true(out[i] == 0.0f);
    be->pool_gather_backward(be, (tc_act *)dx, (tc_act *)out, idx, B, T, C);
    assert_memory_equal(dx, dx0, (size_t)B * T * C * sizeof(float));
    /* token ids outside [0, V) add nothing to dwte; valid ones still do */
    const int32_t ids_h[6] = {V, -3, 2, 1 << 30, 2, -2147483647 - 1};
    memcpy(ids, ids_h, sizeof ids_h);
    float *dwte = dalloc((size_t)V * C), *dwpe = dalloc((size_t)T * C);
    be->token_embed_backward(be, dwte, dwpe, (tc_act *)x, ids, B, T, C, V);
    for (int v = 0; v < V; v++)
        for (int c = 0; c < C; c++) {
            float want = v == 2 ? x[2 * C + c] + x[(T + 1) * C + c] : 0.0f;
            assert_true(dwte[v * C + c] == want);
        }
    be->free(be, idx), be->free(be, ids);
    dfree(x), dfree(out), dfree(dx), dfree(dx0), dfree(dwte), dfree(dwpe);
}

/* ---- optimizer ---- */

/* the reduction of a contiguous buffer as it was before parameter tensors
 * were padded apart: 64 chunks of ceil(n/64), each over 8 lanes by position
 * (the remainder of a chunk into lane 0), lanes then chunks in order */
static float sum_squares_contiguous(const float *x, size_t n) {
    const size_t per = (n + 63) / 64;
    double s = 0.0;
    for (size_t k = 0; k < 64; k++) {
        size_t lo = k * per < n ? k * per : n, hi = lo + per < n ? lo + per : n, i = lo;
        double lane[8] = {0}, c = 0.0;
        for (; i + 8 <= hi; i += 8)
            for (int j = 0; j < 8; j++)
                lane[j] += (double)x[i + j] * x[i + j];
        for (; i < hi; i++)
            lane[0] += (double)x[i] * x[i];
        for (int j = 0; j < 8; j++)
            c += lane[j];
        s += c;
    }
    return (float)s;
}

/* a sequence cut into segments at arbitrary points, the segments spread
 * over a buffer with NaN between them (as padding between parameter
 * tensors, which must never be read): the bits of the contiguous reduction
 * of the same sequence, for lengths around the chunk and lane boundaries */
static void test_sum_squares_segments(void **state) {
    (void)state;
    const size_t sizes[] = {1, 7, 8, 9, 64 * 8 + 3, 65537, 1000003};
    uint64_t r = 99;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        const size_t n = sizes[si];
        float *seq = drand(n, 1.0f), *out = dalloc(1);
        const float want = sum_squares_contiguous(seq, n);
        /* segments of 1..300 elements (often not a multiple of 8), each at a
         * multiple of 128 elements with at least one NaN before it */
        tc_param_segment *segs = calloc(n, sizeof *segs);
        size_t nseg = 0, at = 0, cap = 0;
        while (at < n) {
            size_t len = 1 + tc_test_rand(&r) % 300;
            if (len > n - at) len = n - at;
            cap = (cap + 1 + 127) / 128 * 128;
            segs[nseg++] = (tc_param_segment){cap, len, 0.0f};
            cap += len;
            at += len;
        }
        float *buf = dalloc(cap);
        for (size_t i = 0; i < cap; i++)
            buf[i] = NAN;
        for (size_t k = 0, q = 0; k < nseg; q += segs[k].count, k++)
            memcpy(buf + segs[k].offset, seq + q, segs[k].count * sizeof(float));
        be->sum_squares(be, out, buf, segs, (int)nseg);
        if (memcmp(out, &want, sizeof want) != 0)
            fail_msg("n=%zu in %zu segments: %.9g, contiguous %.9g", n, nseg, out[0], want);
        tc_param_segment whole = {0, n, 0.0f};
        be->sum_squares(be, out, seq, &whole, 1);
        if (memcmp(out, &want, sizeof want) != 0)
            fail_msg("n=%zu in one segment: %.9g, contiguous %.9g", n, out[0], want);
        free(segs);
        dfree(buf), dfree(seq), dfree(out);
    }
}

static void test_sum_squares_and_clip(void **state) {
    (void)state;
    const size_t sizes[] = {0, 1, 5, 63, 1000003};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const size_t n = sizes[s];
        float *g = drand(n ? n : 1, 1.0f), *out = dalloc(1);
        double ref = 0.0;
        for (size_t i = 0; i < n; i++)
            ref += (double)g[i] * g[i];
        tc_param_segment whole = {0, n, 0.0f};
        be->sum_squares(be, out, g, &whole, 1);
        if (!(fabs(out[0] - ref) <= 1e-6 * fmax(ref, 1e-30)))
            fail_msg("sum_squares n=%zu: %.9g vs %.9g", n, out[0], ref);
        dfree(g), dfree(out);
    }
    float *sq = dalloc(1), *scale = dalloc(1);
    sq[0] = 16.0f; /* norm 4 */
    be->clip_coefficient(be, scale, sq, 1.0f);
    assert_true(scale[0] == 1.0f / (4.0f + 1e-6f));
    be->clip_coefficient(be, scale, sq, 10.0f);
    assert_true(scale[0] == 1.0f);
    sq[0] = NAN;
    be->clip_coefficient(be, scale, sq, 1.0f);
    assert_true(isnan(scale[0]));
    dfree(sq), dfree(scale);
}

/* torch.optim.AdamW in double: decoupled decay, bias-corrected moments */
static void adamw_ref(double *p, double *m, double *v, const float *g, double gs, size_t n,
                      double wd, tc_adamw_hparams hp) {
    const double bc1 = 1.0 - pow(hp.beta1, hp.step), bc2 = 1.0 - pow(hp.beta2, hp.step);
    for (size_t i = 0; i < n; i++) {
        const double gi = (double)g[i] * gs;
        p[i] *= 1.0 - (double)hp.lr * wd;
        m[i] = hp.beta1 * m[i] + (1.0 - hp.beta1) * gi;
        v[i] = hp.beta2 * v[i] + (1.0 - hp.beta2) * gi * gi;
        p[i] -= (double)hp.lr / bc1 * m[i] / (sqrt(v[i]) / sqrt(bc2) + hp.eps);
    }
}

static void test_adamw(void **state) {
    (void)state;
    const size_t n = 40000; /* segments large enough to run in parallel */
    const tc_param_segment segs[3] = {{0, 15000, 0.1f}, {15000, 20000, 0.0f}, {36000, 4000, 0.2f}};
    /* [35000, 36000) belongs to no segment and must not change */
    float *p = drand(n, 1.0f), *g = dalloc(n), *m = dalloc(n), *v = dalloc(n);
    float *compute = dalloc(n), *gs = dalloc(1);
    float *p0 = dcopy(p, n);
    double *rp = malloc(n * sizeof(double)), *rm = calloc(n, sizeof(double));
    double *rv = calloc(n, sizeof(double));
    assert_non_null(rp), assert_non_null(rm), assert_non_null(rv);
    for (size_t i = 0; i < n; i++)
        rp[i] = p[i];
    tc_adamw_hparams hp = {1e-2f, 0.9f, 0.98f, 1e-6f, 0, NULL, NULL};
    for (int step = 1; step <= 6; step++) {
        tc_fill_uniform(g, n, &rng, 0.5f);
        gs[0] = step % 2 ? 0.5f : 1.0f; /* clip coefficient on odd steps */
        hp.step = step;
        be->adamw_update(be, p, g, m, v, step == 6 ? (tc_act *)compute : NULL, segs, 3, hp,
                         step == 4 ? NULL : gs);
        const double gsv = step == 4 ? 1.0 : gs[0];
        for (int s = 0; s < 3; s++)
            adamw_ref(rp + segs[s].offset, rm + segs[s].offset, rv + segs[s].offset,
                      g + segs[s].offset, gsv, segs[s].count, segs[s].weight_decay, hp);
    }
    float *fp = malloc(n * sizeof(float)), *fm = malloc(n * sizeof(float));
    float *fv = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        fp[i] = (float)rp[i], fm[i] = (float)rm[i], fv[i] = (float)rv[i];
    for (size_t i = 35000; i < 36000; i++)
        fp[i] = p0[i]; /* outside every segment */
    TC_ASSERT_CLOSE(p, fp, n, 1e-6, "adamw params after 6 steps");
    TC_ASSERT_CLOSE(m, fm, n, 1e-5, "adamw m");
    TC_ASSERT_CLOSE(v, fv, n, 1e-5, "adamw v");
    assert_memory_equal(p + 35000, p0 + 35000, 1000 * sizeof(float));
    assert_memory_equal(m + 35000, fm + 35000, 1000 * sizeof(float)); /* zero */
    /* the compute copy equals the updated master weights inside segments */
    assert_memory_equal(compute, p, 35000 * sizeof(float));
    assert_memory_equal(compute + 36000, p + 36000, 4000 * sizeof(float));
    free(rp), free(rm), free(rv), free(fp), free(fm), free(fv);
    dfree(p), dfree(g), dfree(m), dfree(v), dfree(compute), dfree(gs), dfree(p0);
}

/* ---- determinism ---- */

/* appends op outputs to one buffer for a bitwise comparison */
typedef struct {
    float *res;
    size_t total, cap;
} keeper;

static void keep(keeper *k, const float *x, size_t n) {
    assert_true(k->total + n <= k->cap);
    memcpy(k->res + k->total, x, n * sizeof(float));
    k->total += n;
}

/* runs every op of a small training step on backend b and writes its outputs
 * into a freshly allocated concatenation (count in *n); use_blas = 0 leaves
 * out the ops built on sgemm */
static float *run_all_ops(tc_backend *b, int use_blas, size_t *n_out) {
    uint64_t s = 7;
    const int B = 3, T = 77, NH = 3, HS = 16, A = NH * HS, C = 160, V = 50, N = B * T;
    const size_t n3 = (size_t)N * 3 * A, nc = (size_t)N * C;
    keeper kp = {NULL, 0, 4 * n3 + 12 * nc + (size_t)V * C + 4096};
    kp.res = malloc(kp.cap * sizeof(float));
    assert_non_null(kp.res);
    float *qkv = dalloc_on(b, n3), *out = dalloc_on(b, (size_t)N * A);
    float *lse = dalloc_on(b, (size_t)B * NH * T), *dout = dalloc_on(b, (size_t)N * A);
    float *dqkv = dalloc_on(b, n3);
    tc_fill_uniform(qkv, n3, &s, 2.0f), tc_fill_uniform(dout, (size_t)N * A, &s, 1.0f);
    for (int causal = 0; causal < 2; causal++) {
        b->attention_forward(b, (tc_act *)out, lse, (tc_act *)qkv, B, T, NH, HS, causal);
        b->attention_backward(b, (tc_act *)dqkv, (tc_act *)dout, (tc_act *)qkv, (tc_act *)out, lse,
                              B, T, NH, HS, causal);
        keep(&kp, out, (size_t)N * A), keep(&kp, lse, (size_t)B * NH * T), keep(&kp, dqkv, n3);
    }
    float *x = dalloc_on(b, nc), *w = dalloc_on(b, C), *bias = dalloc_on(b, C);
    float *y = dalloc_on(b, nc), *mean = dalloc_on(b, N), *rstd = dalloc_on(b, N);
    float *dy = dalloc_on(b, nc), *dx = dalloc_on(b, nc), *dw = dalloc_on(b, C);
    float *db = dalloc_on(b, C);
    tc_fill_uniform(x, nc, &s, 3.0f), tc_fill_uniform(w, C, &s, 1.0f);
    tc_fill_uniform(bias, C, &s, 1.0f), tc_fill_uniform(dy, nc, &s, 1.0f);
    b->layernorm_forward(b, (tc_act *)y, mean, rstd, (tc_act *)x, (tc_act *)w, (tc_act *)bias, N,
                         C);
    b->layernorm_backward(b, (tc_act *)dx, dw, db, (tc_act *)dy, (tc_act *)x, (tc_act *)w, mean,
                          rstd, N, C);
    keep(&kp, y, nc), keep(&kp, mean, N), keep(&kp, rstd, N), keep(&kp, dx, nc), keep(&kp, dw, C),
        keep(&kp, db, C);
    for (int kind = 0; kind < 2; kind++) {
        b->gelu_forward(b, (tc_act *)y, (tc_act *)x, nc, (tc_activation)kind);
        b->gelu_backward(b, (tc_act *)dx, (tc_act *)x, (tc_act *)dy, nc, (tc_activation)kind);
        keep(&kp, y, nc), keep(&kp, dx, nc);
    }
    /* token embedding backward with many repeated ids */
    int32_t *ids = NULL;
    assert_int_equal(b->alloc(b, (size_t)N * sizeof(int32_t), (void **)&ids), TC_OK);
    for (int i = 0; i < N; i++)
        ids[i] = (int32_t)(tc_test_rand(&s) % 7) * 7;
    float *dwte = dalloc_on(b, (size_t)V * C), *dwpe = dalloc_on(b, (size_t)T * C);
    b->token_embed_backward(b, dwte, dwpe, (tc_act *)dy, ids, B, T, C, V);
    b->token_embed_backward(b, dwte, dwpe, (tc_act *)dx, ids, B, T, C, V);
    keep(&kp, dwte, (size_t)V * C), keep(&kp, dwpe, (size_t)T * C);
    float *dcls = dalloc_on(b, C);
    b->vision_embed_backward(b, (tc_act *)dx, dcls, dwpe, (tc_act *)dy, B, T, C);
    keep(&kp, dx, nc - (size_t)B * C), keep(&kp, dcls, C), keep(&kp, dwpe, (size_t)T * C);
    b->pool_mean_forward(b, (tc_act *)y, (tc_act *)x, B, T, C);
    keep(&kp, y, (size_t)B * C);
    /* features and loss */
    const int nr = 64, nf = 96;
    float *feat = dalloc_on(b, (size_t)nf * C), *fo = dalloc_on(b, (size_t)nf * C);
    float *norm = dalloc_on(b, nf), *sim = dalloc_on(b, (size_t)nr * nf);
    float *tsim = dalloc_on(b, (size_t)nr * nf), *dsim = dalloc_on(b, (size_t)nr * nf);
    float *sc = dalloc_on(b, 4);
    tc_fill_uniform(feat, (size_t)nf * C, &s, 1.0f),
        tc_fill_uniform(sim, (size_t)nr * nf, &s, 1.0f);
    tc_fill_uniform(tsim, (size_t)nr * nf, &s, 1.0f);
    sc[0] = 2.6592f, sc[1] = 3.5f;
    b->l2norm_forward(b, fo, norm, (tc_act *)feat, nf, C);
    b->l2norm_backward(b, (tc_act *)feat, fo, fo, norm, nf, C);
    b->softmax_xent_rows(b, sc + 2, dsim, sc + 3, sim, tsim, sc, sc + 1, nr, nf, 8, 1.0f, 0.5f);
    keep(&kp, fo, (size_t)nf * C), keep(&kp, norm, nf), keep(&kp, feat, (size_t)nf * C);
    keep(&kp, dsim, (size_t)nr * nf), keep(&kp, sc, 4);
    tc_param_segment xs = {0, (size_t)nc, 0.0f};
    b->sum_squares(b, sc, x, &xs, 1);
    keep(&kp, sc, 1);
    if (use_blas) {
        const int OC = 3 * A;
        float *lw = dalloc_on(b, (size_t)OC * C), *lb = dalloc_on(b, OC);
        float *lo = dalloc_on(b, (size_t)N * OC), *ldw = dalloc_on(b, (size_t)OC * C);
        float *ldb = dalloc_on(b, OC);
        tc_fill_uniform(lw, (size_t)OC * C, &s, 0.2f), tc_fill_uniform(lb, OC, &s, 0.2f);
        b->linear_forward(b, (tc_act *)lo, (tc_act *)x, (tc_act *)lw, (tc_act *)lb, N, C, OC, 0);
        b->linear_backward(b, (tc_act *)dx, ldw, ldb, (tc_act *)qkv, (tc_act *)x, (tc_act *)lw, N,
                           C, OC, 0);
        keep(&kp, lo, (size_t)N * OC), keep(&kp, dx, nc), keep(&kp, ldw, (size_t)OC * C),
            keep(&kp, ldb, OC);
        b->free(b, lw), b->free(b, lb), b->free(b, lo), b->free(b, ldw), b->free(b, ldb);
    }
    void *bufs[] = {qkv, out, lse, dout, dqkv, x,    w,    bias, y,    mean, rstd, dy,   dx,
                    dw,  db,  ids, dwte, dwpe, dcls, feat, fo,   norm, sim,  tsim, dsim, sc};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        b->free(b, bufs[i]);
    *n_out = kp.total;
    return kp.res;
}

static void test_determinism_run_to_run(void **state) {
    (void)state;
    size_t n1 = 0, n2 = 0;
    float *r1 = run_all_ops(be, 1, &n1), *r2 = run_all_ops(be, 1, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(r1, r2, n1 * sizeof(float));
    float *flag = dalloc(1);
    be->all_finite(be, flag, r1, n1);
    assert_true(flag[0] == 1.0f);
    printf("  %zu output values, identical bits on two runs\n", n1);
    free(r1), free(r2), dfree(flag);
}

static void test_determinism_thread_count(void **state) {
    (void)state;
    tc_backend *b1 = NULL, *b2 = NULL;
    assert_int_equal(tc_backend_cpu_create(&b1, &(tc_backend_options){.threads = 1}), TC_OK);
    size_t n1 = 0, n2 = 0;
    float *r1 = run_all_ops(b1, 0, &n1);
    assert_int_equal(tc_backend_cpu_create(&b2, &(tc_backend_options){.threads = 2}), TC_OK);
    float *r2 = run_all_ops(b2, 0, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(r1, r2, n1 * sizeof(float));
    printf("  %zu output values, identical bits with 1 and 2 threads\n", n1);
    free(r1), free(r2);
    b1->destroy(b1), b2->destroy(b2);
}

/* an op with a bad shape records the failure in its backend (ops return
 * void): synchronize and download report it, it stays recorded, and an
 * empty shape is no failure */
static void test_error_recording(void **state) {
    (void)state;
    tc_backend *b = NULL;
    assert_int_equal(tc_backend_cpu_create(&b, &(tc_backend_options){.threads = 1}), TC_OK);
    float x[4] = {1, 2, 3, 4}, back[4];
    b->layernorm_forward(b, NULL, NULL, NULL, NULL, NULL, NULL, 0, 8); /* empty: fine */
    assert_int_equal(b->synchronize(b), TC_OK);
    b->layernorm_forward(b, NULL, NULL, NULL, NULL, NULL, NULL, -3, 8);
    b->attention_forward(b, NULL, NULL, NULL, 1, -1, 1, 64, 0); /* a second failure is dropped */
    assert_int_equal(b->synchronize(b), TC_ERR_ARG);
    printf("  reported as: %s\n", tc_last_error());
    assert_non_null(strstr(tc_last_error(), "layernorm_forward"));
    assert_non_null(strstr(tc_last_error(), "-3"));
    assert_int_equal(b->download(b, back, x, sizeof x), TC_ERR_ARG); /* sticky */
    assert_int_equal(b->synchronize(b), TC_ERR_ARG);
    b->destroy(b);
}

int main(void) {
    if (tc_backend_cpu_create(&be, &(tc_backend_options){.threads = 2}) != TC_OK) {
        fprintf(stderr, "cpu backend: %s\n", tc_last_error());
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backend_fields_and_memory),
        cmocka_unit_test(test_error_recording),
        cmocka_unit_test(test_blas_kernels),
        cmocka_unit_test(test_elementwise),
        cmocka_unit_test(test_residual_layernorm),
        cmocka_unit_test(test_gemm_f32),
        cmocka_unit_test(test_patchify),
        cmocka_unit_test(test_argmax_rows),
        cmocka_unit_test(test_hostile_indices),
        cmocka_unit_test(test_sum_squares_and_clip),
        cmocka_unit_test(test_sum_squares_segments),
        cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_determinism_run_to_run),
        cmocka_unit_test(test_determinism_thread_count),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    be->destroy(be);
    return rc;
}
