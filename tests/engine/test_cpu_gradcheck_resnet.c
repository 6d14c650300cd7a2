/* forward and finite-difference gradient checks of the CPU backend's ResNet
 * ops (the method: tests/gradcheck.h), each against a naive double-precision
 * reference written here: conv2d, BatchNorm (+ ReLU) with its running
 * statistics in the three modes, the residual ReLU, the average pool, the
 * attention pool's tokens and its one-query attention. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "gradcheck.h"
#include "testutil.h"

static tc_backend *be;

#define ACT(p) ((tc_act *)(p))

/* ---- conv2d ---- */

typedef struct {
    fd_case base;
    double *x, *w;
    int N, C, H, W, OC, K, S, P, Ho, Wo;
} conv_case;

static void conv_ref(const fd_case *c, double *out) {
    const conv_case *k = (const conv_case *)c;
    for (int n = 0; n < k->N; n++)
        for (int o = 0; o < k->OC; o++)
            for (int oy = 0; oy < k->Ho; oy++)
                for (int ox = 0; ox < k->Wo; ox++) {
                    double s = 0.0;
                    for (int ci = 0; ci < k->C; ci++)
                        for (int ky = 0; ky < k->K; ky++)
                            for (int kx = 0; kx < k->K; kx++) {
                                int iy = oy * k->S - k->P + ky, ix = ox * k->S - k->P + kx;
                                if (iy < 0 || iy >= k->H || ix < 0 || ix >= k->W) continue;
                                s += k->x[(((size_t)n * k->C + ci) * k->H + iy) * k->W + ix] *
                                     k->w[(((size_t)o * k->C + ci) * k->K + ky) * k->K + kx];
                            }
                    out[(((size_t)n * k->OC + o) * k->Ho + oy) * k->Wo + ox] = s;
                }
}

static void gradcheck_conv_one(int N, int C, int H, int W, int OC, int K, int S, int P) {
    const int Ho = (H + 2 * P - K) / S + 1, Wo = (W + 2 * P - K) / S + 1;
    const size_t nx = (size_t)N * C * H * W, nw = (size_t)OC * C * K * K;
    const size_t no = (size_t)N * OC * Ho * Wo;
    float *x = gc_rand(nx, 1.0f), *w = gc_rand(nw, 0.5f), *r = gc_rand(no, 1.0f);
    float *out = gc_const(no, GC_GARBAGE), *dx = gc_const(nx, GC_GARBAGE);
    float *dw = gc_rand(nw, 1.0f), *dw_pre = gc_copy(dw, nw);
    be->conv2d_forward(be, ACT(out), ACT(x), ACT(w), N, C, H, W, OC, K, S, P);
    be->conv2d_backward(be, ACT(dx), dw, ACT(r), ACT(x), ACT(w), N, C, H, W, OC, K, S, P);
    gc_sub_prefill(dw, dw_pre, nw);
    conv_case k = {{conv_ref, gc_to_double(r, no), no},
                   gc_to_double(x, nx),
                   gc_to_double(w, nw),
                   N,
                   C,
                   H,
                   W,
                   OC,
                   K,
                   S,
                   P,
                   Ho,
                   Wo};
    char what[96];
    snprintf(what, sizeof what, "conv N%d C%d %dx%d OC%d K%d S%d P%d", N, C, H, W, OC, K, S, P);
    gc_check_forward(&k.base, out, what);
    float *gx = gc_fd_grad(&k.base, k.x, nx), *gw = gc_fd_grad(&k.base, k.w, nw);
    gc_check_grad(dx, gx, nx, "conv dinp");
    gc_check_grad(dw, gw, nw, "conv dw +=");
    /* the NULL outputs are skipped */
    float *keep = gc_copy(dw_pre, nw);
    be->conv2d_backward(be, NULL, keep, ACT(r), ACT(x), ACT(w), N, C, H, W, OC, K, S, P);
    gc_sub_prefill(keep, dw_pre, nw);
    gc_check_grad(keep, gw, nw, "conv dw += (no dinp)");
    free(gx), free(gw), free(k.x), free(k.w), free((void *)k.base.r);
    gc_free(x), gc_free(w), gc_free(r), gc_free(out), gc_free(dx), gc_free(dw), gc_free(dw_pre);
    gc_free(keep);
}

static void test_gradcheck_conv2d(void **state) {
    (void)state;
    gradcheck_conv_one(2, 3, 6, 5, 4, 3, 1, 1); /* 3x3, same size */
    gradcheck_conv_one(3, 3, 7, 8, 2, 3, 2, 1); /* the stem's strided conv, odd size */
    gradcheck_conv_one(1, 5, 4, 4, 6, 1, 1, 0); /* 1x1: no col, one sample (threaded sgemm) */
    gradcheck_conv_one(4, 6, 3, 3, 5, 1, 1, 0); /* 1x1, samples over threads */
    gradcheck_conv_one(1, 2, 5, 5, 3, 3, 1, 1); /* 3x3, one sample */
    gradcheck_conv_one(2, 2, 4, 6, 3, 3, 1, 0); /* no padding */
}

/* ---- batchnorm ---- */

typedef struct {
    fd_case base;
    double *x, *w, *b;
    const float *run; /* eval mode: running mean (C), var (C) */
    int N, C, HW, relu;
} bn_case;

static void bn_ref(const fd_case *c, double *out) {
    const bn_case *k = (const bn_case *)c;
    const double n = (double)k->N * k->HW;
    for (int ch = 0; ch < k->C; ch++) {
        double m = 0.0, v = 0.0;
        if (k->run) {
            m = k->run[ch];
            v = k->run[k->C + ch];
        } else {
            for (int i = 0; i < k->N; i++)
                for (int j = 0; j < k->HW; j++)
                    m += k->x[((size_t)i * k->C + ch) * k->HW + j];
            m /= n;
            for (int i = 0; i < k->N; i++)
                for (int j = 0; j < k->HW; j++) {
                    double d = k->x[((size_t)i * k->C + ch) * k->HW + j] - m;
                    v += d * d;
                }
            v /= n;
        }
        const double rs = 1.0 / sqrt(v + 1e-5);
        for (int i = 0; i < k->N; i++)
            for (int j = 0; j < k->HW; j++) {
                size_t o = ((size_t)i * k->C + ch) * k->HW + j;
                double y = (k->x[o] - m) * rs * k->w[ch] + k->b[ch];
                out[o] = k->relu && y < 0 ? 0.0 : y;
            }
    }
}

static void gradcheck_bn_one(int N, int C, int HW, int relu) {
    const size_t nx = (size_t)N * C * HW;
    float *x = gc_rand(nx, 1.5f), *w = gc_rand(C, 1.0f), *bias = gc_rand(C, 0.5f);
    /* shift each channel so that means are visible to the running update */
    for (size_t i = 0; i < nx; i++)
        x[i] += 0.3f * (float)((i / HW) % C);
    float *r = gc_rand(nx, 1.0f), *out = gc_const(nx, GC_GARBAGE), *dx = gc_const(nx, GC_GARBAGE);
    float *mean = gc_alloc(C), *rstd = gc_alloc(C), *run = gc_rand(2 * C + 1, 0.5f);
    for (int c = 0; c < C; c++)
        run[C + c] = 0.5f + fabsf(run[C + c]);
    run[2 * C] = 7.0f;
    float *run0 = gc_copy(run, 2 * C + 1);
    float *dw = gc_rand(C, 1.0f), *db = gc_rand(C, 1.0f), *dw0 = gc_copy(dw, C),
          *db0 = gc_copy(db, C);
    be->batchnorm_forward(be, ACT(out), mean, rstd, run, ACT(x), ACT(w), ACT(bias), N, C, HW,
                          TC_BN_TRAIN, relu);
    be->batchnorm_backward(be, ACT(dx), dw, db, ACT(r), ACT(x), ACT(out), ACT(w), mean, rstd, N, C,
                           HW, relu);
    gc_sub_prefill(dw, dw0, C);
    gc_sub_prefill(db, db0, C);
    bn_case k = {{bn_ref, gc_to_double(r, nx), nx},
                 gc_to_double(x, nx),
                 gc_to_double(w, C),
                 gc_to_double(bias, C),
                 NULL,
                 N,
                 C,
                 HW,
                 relu};
    char what[96];
    snprintf(what, sizeof what, "batchnorm N%d C%d HW%d relu%d", N, C, HW, relu);
    gc_check_forward(&k.base, out, what);
    /* the running statistics: momentum 0.1, unbiased variance, one more batch */
    const double n = (double)N * HW;
    for (int c = 0; c < C; c++) {
        double m = 0.0, v = 0.0;
        for (int i = 0; i < N; i++)
            for (int j = 0; j < HW; j++)
                m += x[((size_t)i * C + c) * HW + j];
        m /= n;
        for (int i = 0; i < N; i++)
            for (int j = 0; j < HW; j++) {
                double d = x[((size_t)i * C + c) * HW + j] - m;
                v += d * d;
            }
        double want_m = 0.9 * run0[c] + 0.1 * m, want_v = 0.9 * run0[C + c] + 0.1 * v / (n - 1);
        if (fabs(run[c] - want_m) > 1e-6 || fabs(run[C + c] - want_v) > 1e-6 * fmax(1, want_v))
            fail_msg("running stats of channel %d: %g %g, want %g %g", c, run[c], run[C + c],
                     want_m, want_v);
        if (fabs(mean[c] - m) > 1e-6 || fabs(rstd[c] - 1 / sqrt(v / n + 1e-5)) > 1e-5 * rstd[c])
            fail_msg("saved statistics of channel %d", c);
    }
    assert_true(run[2 * C] == 8.0f);
    float *gx = gc_fd_grad(&k.base, k.x, nx), *gw = gc_fd_grad(&k.base, k.w, C);
    float *gb = gc_fd_grad(&k.base, k.b, C);
    gc_check_grad(dx, gx, nx, "batchnorm dinp");
    gc_check_grad(dw, gw, C, "batchnorm dw +=");
    gc_check_grad(db, gb, C, "batchnorm dbias +=");

    /* replay: the same output, the running statistics untouched */
    float *run1 = gc_copy(run, 2 * C + 1), *out2 = gc_const(nx, GC_GARBAGE);
    be->batchnorm_forward(be, ACT(out2), mean, rstd, run, ACT(x), ACT(w), ACT(bias), N, C, HW,
                          TC_BN_REPLAY, relu);
    assert_memory_equal(out2, out, nx * sizeof(float));
    assert_memory_equal(run, run1, (2 * C + 1) * sizeof(float));
    /* eval: the running statistics normalise */
    be->batchnorm_forward(be, ACT(out2), mean, rstd, run, ACT(x), ACT(w), ACT(bias), N, C, HW,
                          TC_BN_EVAL, relu);
    assert_memory_equal(run, run1, (2 * C + 1) * sizeof(float));
    k.run = run;
    snprintf(what, sizeof what, "batchnorm eval N%d C%d HW%d relu%d", N, C, HW, relu);
    gc_check_forward(&k.base, out2, what);
    free(gx), free(gw), free(gb), free(k.x), free(k.w), free(k.b), free((void *)k.base.r);
    gc_free(x), gc_free(w), gc_free(bias), gc_free(r), gc_free(out), gc_free(dx), gc_free(mean);
    gc_free(rstd), gc_free(run), gc_free(run0), gc_free(dw), gc_free(db), gc_free(dw0);
    gc_free(db0), gc_free(run1), gc_free(out2);
}

static void test_gradcheck_batchnorm(void **state) {
    (void)state;
    gradcheck_bn_one(3, 4, 6, 0);
    gradcheck_bn_one(2, 5, 9, 1);
    gradcheck_bn_one(4, 3, 1, 1); /* 1x1 maps: statistics over the batch only */
}

/* ---- residual ReLU ---- */

typedef struct {
    fd_case base;
    double *x, *y;
} addrelu_case;

static void addrelu_ref(const fd_case *c, double *out) {
    const addrelu_case *k = (const addrelu_case *)c;
    for (size_t i = 0; i < c->nout; i++) {
        double v = k->x[i] + k->y[i];
        out[i] = v > 0 ? v : 0;
    }
}

static void test_gradcheck_add_relu(void **state) {
    (void)state;
    const size_t n = 300;
    float *x = gc_rand(n, 1.0f), *y = gc_rand(n, 1.0f), *r = gc_rand(n, 1.0f);
    float *out = gc_const(n, GC_GARBAGE), *d = gc_const(n, GC_GARBAGE);
    be->add_relu_forward(be, ACT(out), ACT(x), ACT(y), n);
    be->relu_backward(be, ACT(d), ACT(out), ACT(r), n);
    addrelu_case k = {{addrelu_ref, gc_to_double(r, n), n}, gc_to_double(x, n), gc_to_double(y, n)};
    gc_check_forward(&k.base, out, "add_relu");
    float *gx = gc_fd_grad(&k.base, k.x, n), *gy = gc_fd_grad(&k.base, k.y, n);
    gc_check_grad(d, gx, n, "relu_backward (x)");
    gc_check_grad(d, gy, n, "relu_backward (y)");
    /* in place: dx may alias dout */
    be->relu_backward(be, ACT(r), ACT(out), ACT(r), n);
    assert_memory_equal(r, d, n * sizeof(float));
    free(gx), free(gy), free(k.x), free(k.y), free((void *)k.base.r);
    gc_free(x), gc_free(y), gc_free(r), gc_free(out), gc_free(d);
}

/* ---- average pool ---- */

typedef struct {
    fd_case base;
    double *x;
    int NC, H, W, k;
} pool_case;

static void pool_ref(const fd_case *c, double *out) {
    const pool_case *p = (const pool_case *)c;
    const int Ho = p->H / p->k, Wo = p->W / p->k;
    for (int q = 0; q < p->NC; q++)
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                double s = 0.0;
                for (int dy = 0; dy < p->k; dy++)
                    for (int dx = 0; dx < p->k; dx++)
                        s += p->x[((size_t)q * p->H + oy * p->k + dy) * p->W + ox * p->k + dx];
                out[((size_t)q * Ho + oy) * Wo + ox] = s / (p->k * p->k);
            }
}

static void test_gradcheck_avgpool(void **state) {
    (void)state;
    const int cases[][4] = {{6, 4, 6, 2}, {3, 6, 6, 3}, {2, 2, 2, 2}, {4, 5, 3, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int NC = cases[i][0], H = cases[i][1], W = cases[i][2], kk = cases[i][3];
        const size_t nx = (size_t)NC * H * W, no = (size_t)NC * (H / kk) * (W / kk);
        float *x = gc_rand(nx, 1.0f), *r = gc_rand(no, 1.0f), *out = gc_const(no, GC_GARBAGE);
        float *dx = gc_const(nx, GC_GARBAGE);
        be->avgpool_forward(be, ACT(out), ACT(x), NC, H, W, kk);
        be->avgpool_backward(be, ACT(dx), ACT(r), NC, H, W, kk);
        pool_case k = {{pool_ref, gc_to_double(r, no), no}, gc_to_double(x, nx), NC, H, W, kk};
        char what[64];
        snprintf(what, sizeof what, "avgpool %dx%d k%d", H, W, kk);
        gc_check_forward(&k.base, out, what);
        float *g = gc_fd_grad(&k.base, k.x, nx);
        gc_check_grad(dx, g, nx, "avgpool dinp");
        free(g), free(k.x), free((void *)k.base.r);
        gc_free(x), gc_free(r), gc_free(out), gc_free(dx);
    }
}

/* ---- attention-pool tokens ---- */

typedef struct {
    fd_case base;
    double *feat, *pos;
    int B, D, HW;
} tok_case;

static void tok_ref(const fd_case *c, double *out) {
    const tok_case *k = (const tok_case *)c;
    const int T = k->HW + 1;
    for (int b = 0; b < k->B; b++)
        for (int d = 0; d < k->D; d++) {
            double s = 0.0;
            for (int p = 0; p < k->HW; p++) {
                double v = k->feat[((size_t)b * k->D + d) * k->HW + p];
                s += v;
                out[((size_t)b * T + p + 1) * k->D + d] = v + k->pos[(size_t)(p + 1) * k->D + d];
            }
            out[(size_t)b * T * k->D + d] = s / k->HW + k->pos[d];
        }
}

static void test_gradcheck_attnpool_tokens(void **state) {
    (void)state;
    const int B = 3, D = 5, HW = 4, T = HW + 1;
    const size_t nf = (size_t)B * D * HW, np = (size_t)T * D, nx = (size_t)B * T * D;
    float *feat = gc_rand(nf, 1.0f), *pos = gc_rand(np, 1.0f), *r = gc_rand(nx, 1.0f);
    float *x = gc_const(nx, GC_GARBAGE), *df = gc_const(nf, GC_GARBAGE);
    float *dpos = gc_rand(np, 1.0f), *dpos0 = gc_copy(dpos, np);
    be->attnpool_tokens_forward(be, ACT(x), ACT(feat), ACT(pos), B, D, HW);
    be->attnpool_tokens_backward(be, ACT(df), dpos, ACT(r), B, D, HW);
    gc_sub_prefill(dpos, dpos0, np);
    tok_case k = {{tok_ref, gc_to_double(r, nx), nx},
                  gc_to_double(feat, nf),
                  gc_to_double(pos, np),
                  B,
                  D,
                  HW};
    gc_check_forward(&k.base, x, "attnpool tokens");
    float *gf = gc_fd_grad(&k.base, k.feat, nf), *gp = gc_fd_grad(&k.base, k.pos, np);
    gc_check_grad(df, gf, nf, "attnpool tokens dfeat");
    gc_check_grad(dpos, gp, np, "attnpool tokens dpos +=");
    free(gf), free(gp), free(k.feat), free(k.pos), free((void *)k.base.r);
    gc_free(feat), gc_free(pos), gc_free(r), gc_free(x), gc_free(df), gc_free(dpos), gc_free(dpos0);
}

/* ---- one-query attention ---- */

typedef struct {
    fd_case base;
    double *q, *k, *v;
    int B, T, NH, HS;
} aq_case;

static void aq_ref(const fd_case *c, double *out) {
    const aq_case *a = (const aq_case *)c;
    const int A = a->NH * a->HS;
    double *s = malloc((size_t)a->T * sizeof *s);
    for (int b = 0; b < a->B; b++)
        for (int h = 0; h < a->NH; h++) {
            const double *q = a->q + (size_t)b * A + h * a->HS;
            double mx = -INFINITY, sum = 0.0;
            for (int j = 0; j < a->T; j++) {
                const double *kj = a->k + ((size_t)b * a->T + j) * A + h * a->HS;
                double d = 0.0;
                for (int e = 0; e < a->HS; e++)
                    d += q[e] * kj[e];
                s[j] = d / sqrt((double)a->HS);
                mx = s[j] > mx ? s[j] : mx;
            }
            for (int j = 0; j < a->T; j++)
                sum += (s[j] = exp(s[j] - mx));
            for (int e = 0; e < a->HS; e++) {
                double acc = 0.0;
                for (int j = 0; j < a->T; j++)
                    acc += s[j] * a->v[((size_t)b * a->T + j) * A + h * a->HS + e];
                out[(size_t)b * A + h * a->HS + e] = acc / sum;
            }
        }
    free(s);
}

static void gradcheck_aq_one(int B, int T, int NH, int HS) {
    const size_t A = (size_t)NH * HS, nq = (size_t)B * A, nk = (size_t)B * T * A;
    float *q = gc_rand(nq, 1.5f), *k = gc_rand(nk, 1.5f), *v = gc_rand(nk, 1.0f);
    float *out = gc_const(nq, GC_GARBAGE), *lse = gc_alloc((size_t)B * NH), *r = gc_rand(nq, 1.0f);
    float *dq = gc_const(nq, GC_GARBAGE), *dk = gc_const(nk, GC_GARBAGE),
          *dv = gc_const(nk, GC_GARBAGE);
    be->attention_query_forward(be, ACT(out), lse, ACT(q), ACT(k), ACT(v), B, T, NH, HS);
    be->attention_query_backward(be, ACT(dq), ACT(dk), ACT(dv), ACT(r), ACT(q), ACT(k), ACT(v),
                                 ACT(out), lse, B, T, NH, HS);
    aq_case c = {{aq_ref, gc_to_double(r, nq), nq},
                 gc_to_double(q, nq),
                 gc_to_double(k, nk),
                 gc_to_double(v, nk),
                 B,
                 T,
                 NH,
                 HS};
    char what[80];
    snprintf(what, sizeof what, "attention_query B%d T%d NH%d HS%d", B, T, NH, HS);
    gc_check_forward(&c.base, out, what);
    /* lse = log sum_j exp(q.k_j / sqrt(HS)) */
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            double se = 0.0;
            for (int j = 0; j < T; j++) {
                double d = 0.0;
                for (int e = 0; e < HS; e++)
                    d +=
                        c.q[(size_t)b * A + h * HS + e] * c.k[((size_t)b * T + j) * A + h * HS + e];
                se += exp(d / sqrt((double)HS));
            }
            if (fabs(lse[b * NH + h] - log(se)) > 1e-5 * fmax(1.0, fabs(log(se))))
                fail_msg("attention_query lse b%d h%d: %g vs %g", b, h, lse[b * NH + h], log(se));
        }
    float *gq = gc_fd_grad(&c.base, c.q, nq), *gk = gc_fd_grad(&c.base, c.k, nk);
    float *gv = gc_fd_grad(&c.base, c.v, nk);
    gc_check_grad(dq, gq, nq, "attention_query dq");
    gc_check_grad(dk, gk, nk, "attention_query dk");
    gc_check_grad(dv, gv, nk, "attention_query dv");
    free(gq), free(gk), free(gv), free(c.q), free(c.k), free(c.v), free((void *)c.base.r);
    gc_free(q), gc_free(k), gc_free(v), gc_free(out), gc_free(lse), gc_free(r), gc_free(dq);
    gc_free(dk), gc_free(dv);
}

static void test_gradcheck_attention_query(void **state) {
    (void)state;
    gradcheck_aq_one(2, 5, 2, 8);
    gradcheck_aq_one(1, 2, 1, 16); /* a 1x1 map: the mean token and one pixel */
    gradcheck_aq_one(3, 10, 3, 24);
    gradcheck_aq_one(1, 50, 2, 64); /* RN50's 7x7 map + the mean token */
}

int main(void) {
    if (!(be = tc_gradcheck_backend())) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradcheck_conv2d),
        cmocka_unit_test(test_gradcheck_batchnorm),
        cmocka_unit_test(test_gradcheck_add_relu),
        cmocka_unit_test(test_gradcheck_avgpool),
        cmocka_unit_test(test_gradcheck_attnpool_tokens),
        cmocka_unit_test(test_gradcheck_attention_query),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    be->destroy(be);
    return rc;
}
