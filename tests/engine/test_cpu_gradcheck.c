/* forward and finite-difference gradient checks of every CPU backend op of
 * the ViT and text towers that has a backward (the method: tests/gradcheck.h;
 * the ResNet ops: test_cpu_gradcheck_resnet.c), each against a naive
 * double-precision reference written here. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "gradcheck.h"
#include "testutil.h"

static tc_backend *be;

/* ---- linear ---- */

typedef struct {
    fd_case base;
    double *inp, *w, *bias;
    int N, C, OC, w_trans;
} linear_case;

static void linear_ref(const fd_case *c, double *out) {
    const linear_case *k = (const linear_case *)c;
    for (int n = 0; n < k->N; n++)
        for (int o = 0; o < k->OC; o++) {
            double s = k->bias ? k->bias[o] : 0.0;
            for (int i = 0; i < k->C; i++) {
                double wv = k->w_trans ? k->w[(size_t)i * k->OC + o] : k->w[(size_t)o * k->C + i];
                s += k->inp[(size_t)n * k->C + i] * wv;
            }
            out[(size_t)n * k->OC + o] = s;
        }
}

static void gradcheck_linear_one(int N, int C, int OC, int w_trans, int with_bias) {
    float *inp = gc_rand((size_t)N * C, 1.0f), *w = gc_rand((size_t)C * OC, 0.5f);
    float *bias = with_bias ? gc_rand(OC, 0.5f) : NULL;
    float *r = gc_rand((size_t)N * OC, 1.0f);
    float *dinp = gc_const((size_t)N * C, GC_GARBAGE);
    float *dw = gc_rand((size_t)C * OC, 1.0f), *dw_pre = gc_copy(dw, (size_t)C * OC);
    float *dbias = gc_rand(OC, 1.0f), *db_pre = gc_copy(dbias, OC);
    be->linear_backward(be, (tc_act *)dinp, dw, with_bias ? dbias : NULL, (tc_act *)r,
                        (tc_act *)inp, (tc_act *)w, N, C, OC, w_trans);
    gc_sub_prefill(dw, dw_pre, (size_t)C * OC);

    linear_case k = {{linear_ref, gc_to_double(r, (size_t)N * OC), (size_t)N * OC},
                     gc_to_double(inp, (size_t)N * C),
                     gc_to_double(w, (size_t)C * OC),
                     with_bias ? gc_to_double(bias, OC) : NULL,
                     N,
                     C,
                     OC,
                     w_trans};
    char what[64];
    float *out = gc_const((size_t)N * OC, GC_GARBAGE);
    be->linear_forward(be, (tc_act *)out, (tc_act *)inp, (tc_act *)w, (tc_act *)bias, N, C, OC,
                       w_trans);
    snprintf(what, sizeof what, "linear forward (w_trans %d, bias %d)", w_trans, with_bias);
    gc_check_forward(&k.base, out, what);
    gc_free(out);
    float *g_inp = gc_fd_grad(&k.base, k.inp, (size_t)N * C);
    float *g_w = gc_fd_grad(&k.base, k.w, (size_t)C * OC);
    snprintf(what, sizeof what, "linear dinp (w_trans %d)", w_trans);
    gc_check_grad(dinp, g_inp, (size_t)N * C, what);
    snprintf(what, sizeof what, "linear dw += (w_trans %d)", w_trans);
    gc_check_grad(dw, g_w, (size_t)C * OC, what);
    if (with_bias) {
        gc_sub_prefill(dbias, db_pre, OC);
        float *g_b = gc_fd_grad(&k.base, k.bias, OC);
        gc_check_grad(dbias, g_b, OC, "linear dbias +=");
        free(g_b);
    } else {
        /* a NULL dbias is skipped: the buffer we did not pass stays untouched */
        assert_memory_equal(dbias, db_pre, OC * sizeof(float));
    }
    free(g_inp), free(g_w), free(k.inp), free(k.w), free(k.bias), free((void *)k.base.r);
    gc_free(inp), gc_free(w), gc_free(bias), gc_free(r), gc_free(dinp), gc_free(dw), gc_free(dw_pre);
    gc_free(dbias), gc_free(db_pre);
}

static void test_gradcheck_linear(void **state) {
    (void)state;
    gradcheck_linear_one(5, 7, 6, 0, 1);
    gradcheck_linear_one(5, 7, 6, 1, 1);
    gradcheck_linear_one(3, 9, 4, 0, 0);
    gradcheck_linear_one(1, 4, 11, 1, 0);
}

/* ---- layernorm ---- */

typedef struct {
    fd_case base;
    double *inp, *w, *bias;
    int N, C;
} ln_case;

static void ln_ref(const fd_case *c, double *out) {
    const ln_case *k = (const ln_case *)c;
    for (int n = 0; n < k->N; n++) {
        const double *x = k->inp + (size_t)n * k->C;
        double mu = 0.0, var = 0.0;
        for (int i = 0; i < k->C; i++)
            mu += x[i];
        mu /= k->C;
        for (int i = 0; i < k->C; i++)
            var += (x[i] - mu) * (x[i] - mu);
        var /= k->C;
        double rs = 1.0 / sqrt(var + 1e-5);
        for (int i = 0; i < k->C; i++)
            out[(size_t)n * k->C + i] = (x[i] - mu) * rs * k->w[i] + k->bias[i];
    }
}

static void test_gradcheck_layernorm(void **state) {
    (void)state;
    const int N = 4, C = 13;
    const size_t NC = (size_t)N * C;
    float *inp = gc_rand(NC, 2.0f), *w = gc_rand(C, 0.5f), *bias = gc_rand(C, 0.5f);
    for (int i = 0; i < C; i++)
        w[i] += 1.0f;
    float *out = gc_alloc(NC), *mean = gc_alloc(N), *rstd = gc_alloc(N), *r = gc_rand(NC, 1.0f);
    be->layernorm_forward(be, (tc_act *)out, mean, rstd, (tc_act *)inp, (tc_act *)w, (tc_act *)bias,
                          N, C);
    float *dinp = gc_rand(NC, 1.0f), *dinp_pre = gc_copy(dinp, NC);
    float *dw = gc_rand(C, 1.0f), *dw_pre = gc_copy(dw, C);
    float *db = gc_rand(C, 1.0f), *db_pre = gc_copy(db, C);
    be->layernorm_backward(be, (tc_act *)dinp, dw, db, (tc_act *)r, (tc_act *)inp, (tc_act *)w,
                           mean, rstd, N, C);
    gc_sub_prefill(dinp, dinp_pre, NC), gc_sub_prefill(dw, dw_pre, C), gc_sub_prefill(db, db_pre, C);

    ln_case k = {{ln_ref, gc_to_double(r, NC), NC},
                 gc_to_double(inp, NC),
                 gc_to_double(w, C),
                 gc_to_double(bias, C),
                 N,
                 C};
    gc_check_forward(&k.base, out, "layernorm forward");
    for (int n = 0; n < N; n++) { /* saved statistics */
        double mu = 0.0, var = 0.0;
        for (int i = 0; i < C; i++)
            mu += k.inp[(size_t)n * C + i];
        mu /= C;
        for (int i = 0; i < C; i++)
            var += pow(k.inp[(size_t)n * C + i] - mu, 2);
        double rs = 1.0 / sqrt(var / C + 1e-5);
        assert_true(fabs(mean[n] - mu) <= 1e-6 * fmax(1.0, fabs(mu)));
        assert_true(fabs(rstd[n] - rs) <= 1e-6 * rs);
    }
    float *g_inp = gc_fd_grad(&k.base, k.inp, NC), *g_w = gc_fd_grad(&k.base, k.w, C);
    float *g_b = gc_fd_grad(&k.base, k.bias, C);
    gc_check_grad(dinp, g_inp, NC, "layernorm dinp +=");
    gc_check_grad(dw, g_w, C, "layernorm dw +=");
    gc_check_grad(db, g_b, C, "layernorm dbias +=");
    free(g_inp), free(g_w), free(g_b), free(k.inp), free(k.w), free(k.bias);
    free((void *)k.base.r);
    gc_free(inp), gc_free(w), gc_free(bias), gc_free(out), gc_free(mean), gc_free(rstd), gc_free(r);
    gc_free(dinp), gc_free(dinp_pre), gc_free(dw), gc_free(dw_pre), gc_free(db), gc_free(db_pre);
}

/* ---- activations ---- */

typedef struct {
    fd_case base;
    double *x;
    size_t n;
    tc_activation kind;
} act_case;

static void act_ref(const fd_case *c, double *out) {
    const act_case *k = (const act_case *)c;
    for (size_t i = 0; i < k->n; i++) {
        double v = k->x[i];
        out[i] = k->kind == TC_GELU ? 0.5 * v * erfc(-v / sqrt(2.0)) : v / (1.0 + exp(-1.702 * v));
    }
}

static void test_gradcheck_gelu(void **state) {
    (void)state;
    const size_t n = 37;
    for (int kind = 0; kind < 2; kind++) {
        float *x = gc_rand(n, 4.0f), *r = gc_rand(n, 1.0f);
        float *dinp = gc_const(n, GC_GARBAGE);
        be->gelu_backward(be, (tc_act *)dinp, (tc_act *)x, (tc_act *)r, n, (tc_activation)kind);
        act_case k = {{act_ref, gc_to_double(r, n), n}, gc_to_double(x, n), n, (tc_activation)kind};
        float *y = gc_const(n, GC_GARBAGE);
        be->gelu_forward(be, (tc_act *)y, (tc_act *)x, n, (tc_activation)kind);
        gc_check_forward(&k.base, y, kind == TC_GELU ? "gelu forward" : "quick_gelu forward");
        gc_free(y);
        float *g = gc_fd_grad(&k.base, k.x, n);
        gc_check_grad(dinp, g, n, kind == TC_GELU ? "gelu dinp" : "quick_gelu dinp");
        /* in place: dinp aliases dout */
        float *inplace = gc_copy(r, n);
        be->gelu_backward(be, (tc_act *)inplace, (tc_act *)x, (tc_act *)inplace, n,
                          (tc_activation)kind);
        assert_memory_equal(inplace, dinp, n * sizeof(float));
        free(g), free(k.x), free((void *)k.base.r);
        gc_free(x), gc_free(r), gc_free(dinp), gc_free(inplace);
    }
}

/* ---- attention ---- */

typedef struct {
    fd_case base;
    double *qkv;
    int B, T, NH, HS, causal;
} attn_case;

static void attn_ref(const fd_case *c, double *out) {
    const attn_case *k = (const attn_case *)c;
    const int A = k->NH * k->HS, T = k->T, HS = k->HS;
    const double scale = 1.0 / sqrt((double)HS);
    double *s = malloc((size_t)T * sizeof(double));
    for (int b = 0; b < k->B; b++)
        for (int h = 0; h < k->NH; h++)
            for (int i = 0; i < T; i++) {
                const double *q = k->qkv + ((size_t)b * T + i) * 3 * A + h * HS;
                double mx = -INFINITY;
                for (int j = 0; j < T; j++) {
                    const double *kk = k->qkv + ((size_t)b * T + j) * 3 * A + A + h * HS;
                    double d = 0.0;
                    for (int e = 0; e < HS; e++)
                        d += q[e] * kk[e];
                    s[j] = (k->causal && j > i) ? -INFINITY : d * scale;
                    if (s[j] > mx) mx = s[j];
                }
                double sum = 0.0;
                for (int j = 0; j < T; j++)
                    sum += (s[j] = exp(s[j] - mx));
                for (int e = 0; e < HS; e++) {
                    double acc = 0.0;
                    for (int j = 0; j < T; j++)
                        acc += s[j] * k->qkv[((size_t)b * T + j) * 3 * A + 2 * A + h * HS + e];
                    out[((size_t)b * T + i) * A + h * HS + e] = acc / sum;
                }
            }
    free(s);
}

/* lse (B,NH,T) against log sum_j exp(scale q_i.k_j) in double */
static void check_lse(const attn_case *k, const float *lse) {
    const int A = k->NH * k->HS;
    for (int b = 0; b < k->B; b++)
        for (int h = 0; h < k->NH; h++)
            for (int i = 0; i < k->T; i++) {
                double se = 0.0;
                const int jn = k->causal ? i + 1 : k->T;
                for (int j = 0; j < jn; j++) {
                    double d = 0.0;
                    for (int e = 0; e < k->HS; e++)
                        d += k->qkv[((size_t)b * k->T + i) * 3 * A + h * k->HS + e] *
                             k->qkv[((size_t)b * k->T + j) * 3 * A + A + h * k->HS + e];
                    se += exp(d / sqrt((double)k->HS));
                }
                double want = log(se), got = lse[((size_t)b * k->NH + h) * k->T + i];
                if (!(fabs(got - want) <= 1e-5 * fmax(1.0, fabs(want))))
                    fail_msg("attention lse b%d h%d i%d: %.8g vs %.8g", b, h, i, got, want);
            }
}

static void gradcheck_attention_one(int B, int T, int NH, int HS, int causal) {
    const size_t A = (size_t)NH * HS, n3 = (size_t)B * T * 3 * A, no = (size_t)B * T * A;
    float *qkv = gc_rand(n3, 1.5f), *out = gc_alloc(no), *lse = gc_alloc((size_t)B * NH * T);
    float *r = gc_rand(no, 1.0f), *dqkv = gc_const(n3, GC_GARBAGE);
    be->attention_forward(be, (tc_act *)out, lse, (tc_act *)qkv, B, T, NH, HS, causal);
    be->attention_backward(be, (tc_act *)dqkv, (tc_act *)r, (tc_act *)qkv, (tc_act *)out, lse, B, T,
                           NH, HS, causal);
    attn_case k = {{attn_ref, gc_to_double(r, no), no}, gc_to_double(qkv, n3), B, T, NH, HS, causal};
    char what[80];
    snprintf(what, sizeof what, "attention out B%d T%d NH%d HS%d c%d", B, T, NH, HS, causal);
    gc_check_forward(&k.base, out, what);
    check_lse(&k, lse);
    float *g = gc_fd_grad(&k.base, k.qkv, n3);
    snprintf(what, sizeof what, "attention dqkv B%d T%d NH%d HS%d c%d", B, T, NH, HS, causal);
    gc_check_grad(dqkv, g, n3, what);
    free(g), free(k.qkv), free((void *)k.base.r);
    gc_free(qkv), gc_free(out), gc_free(lse), gc_free(r), gc_free(dqkv);
}

static void test_gradcheck_attention(void **state) {
    (void)state;
    gradcheck_attention_one(2, 5, 1, 4, 0);
    gradcheck_attention_one(1, 7, 3, 8, 1);
    gradcheck_attention_one(2, 6, 2, 5, 1);
    gradcheck_attention_one(1, 9, 2, 3, 0);
    gradcheck_attention_one(1, 1, 2, 4, 1);
    /* head sizes that take the register-blocked path (multiples of 16) */
    gradcheck_attention_one(1, 7, 2, 16, 1);
    gradcheck_attention_one(2, 19, 1, 32, 0);
    gradcheck_attention_one(1, 5, 1, 64, 1);
    /* the big teachers' head sizes (ViT-H 80, ViT-g 88, ViT-bigG 104): 80 is
     * a multiple of 16, 88 and 104 take the general path */
    gradcheck_attention_one(1, 9, 2, 80, 1);
    gradcheck_attention_one(1, 6, 2, 88, 0);
    gradcheck_attention_one(1, 5, 2, 104, 1);
}

/* ---- vision embedding ---- */

typedef struct {
    fd_case base;
    double *pe, *cls, *pos;
    int B, T, C;
} vemb_case;

static void vemb_ref(const fd_case *c, double *out) {
    const vemb_case *k = (const vemb_case *)c;
    for (int b = 0; b < k->B; b++)
        for (int t = 0; t < k->T; t++)
            for (int i = 0; i < k->C; i++)
                out[((size_t)b * k->T + t) * k->C + i] =
                    (t == 0 ? k->cls[i] : k->pe[((size_t)b * (k->T - 1) + t - 1) * k->C + i]) +
                    k->pos[(size_t)t * k->C + i];
}

static void test_gradcheck_vision_embed(void **state) {
    (void)state;
    const int B = 2, T = 5, C = 6;
    const size_t np = (size_t)B * (T - 1) * C, nx = (size_t)B * T * C;
    float *pe = gc_rand(np, 1.0f), *cls = gc_rand(C, 1.0f), *pos = gc_rand((size_t)T * C, 1.0f);
    float *r = gc_rand(nx, 1.0f), *dpe = gc_const(np, GC_GARBAGE);
    float *dcls = gc_rand(C, 1.0f), *dcls_pre = gc_copy(dcls, C);
    float *dpos = gc_rand((size_t)T * C, 1.0f), *dpos_pre = gc_copy(dpos, (size_t)T * C);
    be->vision_embed_backward(be, (tc_act *)dpe, dcls, dpos, (tc_act *)r, B, T, C);
    gc_sub_prefill(dcls, dcls_pre, C), gc_sub_prefill(dpos, dpos_pre, (size_t)T * C);
    vemb_case k = {{vemb_ref, gc_to_double(r, nx), nx},
                   gc_to_double(pe, np),
                   gc_to_double(cls, C),
                   gc_to_double(pos, (size_t)T * C),
                   B,
                   T,
                   C};
    float *x = gc_const(nx, GC_GARBAGE);
    be->vision_embed_forward(be, (tc_act *)x, (tc_act *)pe, (tc_act *)cls, (tc_act *)pos, B, T, C);
    gc_check_forward(&k.base, x, "vision_embed forward");
    gc_free(x);
    float *g_pe = gc_fd_grad(&k.base, k.pe, np), *g_cls = gc_fd_grad(&k.base, k.cls, C);
    float *g_pos = gc_fd_grad(&k.base, k.pos, (size_t)T * C);
    gc_check_grad(dpe, g_pe, np, "vision_embed dpatch_emb");
    gc_check_grad(dcls, g_cls, C, "vision_embed dcls +=");
    gc_check_grad(dpos, g_pos, (size_t)T * C, "vision_embed dpos +=");
    free(g_pe), free(g_cls), free(g_pos), free(k.pe), free(k.cls), free(k.pos);
    free((void *)k.base.r);
    gc_free(pe), gc_free(cls), gc_free(pos), gc_free(r), gc_free(dpe), gc_free(dcls), gc_free(dcls_pre);
    gc_free(dpos), gc_free(dpos_pre);
}

/* ---- token embedding ---- */

typedef struct {
    fd_case base;
    double *wte, *wpe;
    const int32_t *ids;
    int B, T, C;
} temb_case;

static void temb_ref(const fd_case *c, double *out) {
    const temb_case *k = (const temb_case *)c;
    for (int b = 0; b < k->B; b++)
        for (int t = 0; t < k->T; t++)
            for (int i = 0; i < k->C; i++)
                out[((size_t)b * k->T + t) * k->C + i] =
                    k->wte[(size_t)k->ids[b * k->T + t] * k->C + i] + k->wpe[(size_t)t * k->C + i];
}

static void test_gradcheck_token_embed(void **state) {
    (void)state;
    const int B = 2, T = 4, C = 5, V = 3;
    const size_t nx = (size_t)B * T * C;
    /* repeated ids, and id 1 never used (its gradient must stay the pre-fill) */
    int32_t ids_h[8] = {0, 2, 2, 0, 2, 2, 0, 2};
    int32_t *ids = NULL;
    assert_int_equal(be->alloc(be, sizeof ids_h, (void **)&ids), TC_OK);
    assert_int_equal(be->upload(be, ids, ids_h, sizeof ids_h), TC_OK);
    float *wte = gc_rand((size_t)V * C, 1.0f), *wpe = gc_rand((size_t)T * C, 1.0f);
    float *r = gc_rand(nx, 1.0f);
    float *dwte = gc_rand((size_t)V * C, 1.0f), *dwte_pre = gc_copy(dwte, (size_t)V * C);
    float *dwpe = gc_rand((size_t)T * C, 1.0f), *dwpe_pre = gc_copy(dwpe, (size_t)T * C);
    be->token_embed_backward(be, dwte, dwpe, (tc_act *)r, ids, B, T, C, V);
    for (int i = 0; i < C; i++)
        assert_true(dwte[C + i] == dwte_pre[C + i]);
    gc_sub_prefill(dwte, dwte_pre, (size_t)V * C), gc_sub_prefill(dwpe, dwpe_pre, (size_t)T * C);
    temb_case k = {{temb_ref, gc_to_double(r, nx), nx},
                   gc_to_double(wte, (size_t)V * C),
                   gc_to_double(wpe, (size_t)T * C),
                   ids,
                   B,
                   T,
                   C};
    float *x = gc_const(nx, GC_GARBAGE);
    be->token_embed_forward(be, (tc_act *)x, ids, (tc_act *)wte, (tc_act *)wpe, B, T, C);
    gc_check_forward(&k.base, x, "token_embed forward");
    gc_free(x);
    float *g_wte = gc_fd_grad(&k.base, k.wte, (size_t)V * C);
    float *g_wpe = gc_fd_grad(&k.base, k.wpe, (size_t)T * C);
    gc_check_grad(dwte, g_wte, (size_t)V * C, "token_embed dwte +=");
    gc_check_grad(dwpe, g_wpe, (size_t)T * C, "token_embed dwpe +=");
    free(g_wte), free(g_wpe), free(k.wte), free(k.wpe), free((void *)k.base.r);
    be->free(be, ids);
    gc_free(wte), gc_free(wpe), gc_free(r), gc_free(dwte), gc_free(dwte_pre), gc_free(dwpe), gc_free(dwpe_pre);
}

/* ---- pooling ---- */

typedef struct {
    fd_case base;
    double *x;
    const int32_t *idx; /* NULL: position 0 */
    int mean, B, T, C;
} pool_case;

static void pool_ref(const fd_case *c, double *out) {
    const pool_case *k = (const pool_case *)c;
    for (int b = 0; b < k->B; b++)
        for (int i = 0; i < k->C; i++) {
            double v = 0.0;
            if (k->mean) {
                for (int t = 1; t < k->T; t++)
                    v += k->x[((size_t)b * k->T + t) * k->C + i];
                v /= (k->T - 1);
            } else {
                int t = k->idx ? k->idx[b] : 0;
                v = k->x[((size_t)b * k->T + t) * k->C + i];
            }
            out[(size_t)b * k->C + i] = v;
        }
}

static void gradcheck_pool_one(int mean, const int32_t *idx, const char *what) {
    const int B = 3, T = 5, C = 4;
    const size_t nx = (size_t)B * T * C, no = (size_t)B * C;
    float *x = gc_rand(nx, 1.0f), *r = gc_rand(no, 1.0f);
    float *dx = gc_rand(nx, 1.0f), *dx_pre = gc_copy(dx, nx);
    if (mean)
        be->pool_mean_backward(be, (tc_act *)dx, (tc_act *)r, B, T, C);
    else
        be->pool_gather_backward(be, (tc_act *)dx, (tc_act *)r, idx, B, T, C);
    gc_sub_prefill(dx, dx_pre, nx);
    pool_case k = {{pool_ref, gc_to_double(r, no), no}, gc_to_double(x, nx), idx, mean, B, T, C};
    float *out = gc_const(no, GC_GARBAGE);
    if (mean)
        be->pool_mean_forward(be, (tc_act *)out, (tc_act *)x, B, T, C);
    else
        be->pool_gather_forward(be, (tc_act *)out, (tc_act *)x, idx, B, T, C);
    gc_check_forward(&k.base, out, mean ? "pool_mean forward" : "pool_gather forward");
    gc_free(out);
    float *g = gc_fd_grad(&k.base, k.x, nx);
    gc_check_grad(dx, g, nx, what);
    free(g), free(k.x), free((void *)k.base.r);
    gc_free(x), gc_free(r), gc_free(dx), gc_free(dx_pre);
}

static void test_gradcheck_pool(void **state) {
    (void)state;
    int32_t *idx = NULL;
    const int32_t idx_h[3] = {4, 0, 2};
    assert_int_equal(be->alloc(be, sizeof idx_h, (void **)&idx), TC_OK);
    memcpy(idx, idx_h, sizeof idx_h);
    gradcheck_pool_one(0, idx, "pool_gather dx += (idx)");
    gradcheck_pool_one(0, NULL, "pool_gather dx += (class token)");
    gradcheck_pool_one(1, NULL, "pool_mean dx +=");
    be->free(be, idx);
}

/* ---- l2 normalisation ---- */

typedef struct {
    fd_case base;
    double *x;
    int N, C;
} l2_case;

static void l2_ref(const fd_case *c, double *out) {
    const l2_case *k = (const l2_case *)c;
    for (int n = 0; n < k->N; n++) {
        const double *x = k->x + (size_t)n * k->C;
        double ss = 0.0;
        for (int i = 0; i < k->C; i++)
            ss += x[i] * x[i];
        double den = fmax(sqrt(ss), 1e-12);
        for (int i = 0; i < k->C; i++)
            out[(size_t)n * k->C + i] = x[i] / den;
    }
}

static void test_gradcheck_l2norm(void **state) {
    (void)state;
    const int N = 4, C = 7;
    const size_t nx = (size_t)N * C;
    float *x = gc_rand(nx, 1.0f), *out = gc_alloc(nx), *norm = gc_alloc(N), *r = gc_rand(nx, 1.0f);
    float *dx = gc_const(nx, GC_GARBAGE);
    be->l2norm_forward(be, out, norm, (tc_act *)x, N, C);
    be->l2norm_backward(be, (tc_act *)dx, r, out, norm, N, C);
    l2_case k = {{l2_ref, gc_to_double(r, nx), nx}, gc_to_double(x, nx), N, C};
    gc_check_forward(&k.base, out, "l2norm forward");
    for (int n = 0; n < N; n++) {
        double ss = 0.0;
        for (int i = 0; i < C; i++)
            ss += k.x[(size_t)n * C + i] * k.x[(size_t)n * C + i];
        assert_true(fabs(norm[n] - sqrt(ss)) <= 1e-6 * sqrt(ss));
    }
    float *g = gc_fd_grad(&k.base, k.x, nx);
    gc_check_grad(dx, g, nx, "l2norm dinp");
    free(g), free(k.x), free((void *)k.base.r);

    /* clamp active: a zero row and a tiny row have gradient dout / 1e-12 */
    for (int i = 0; i < C; i++)
        x[i] = 0.0f, x[C + i] = 1e-14f;
    be->l2norm_forward(be, out, norm, (tc_act *)x, N, C);
    be->l2norm_backward(be, (tc_act *)dx, r, out, norm, N, C);
    for (int i = 0; i < 2 * C; i++) {
        double want = (double)r[i] / 1e-12;
        assert_true(fabs(dx[i] - want) <= 1e-6 * fabs(want));
    }
    gc_free(x), gc_free(out), gc_free(norm), gc_free(r), gc_free(dx);
}

/* ---- softmax cross-entropy rows ---- */

typedef struct {
    fd_case base;
    double *sim, *tsim, *ls;
    double tls;
    int n, Ncols, off;
    double wh, ws;
} xent_case;

/* loss = (1/n) sum_i [wh CE(z_i, off + i) + ws softCE(z_i, softmax(tz_i))] */
static void xent_ref(const fd_case *c, double *out) {
    const xent_case *k = (const xent_case *)c;
    const double s = exp(k->ls[0]), ts = exp(k->tls);
    double total = 0.0;
    for (int i = 0; i < k->n; i++) {
        const double *sr = k->sim + (size_t)i * k->Ncols;
        double m = -INFINITY, se = 0.0;
        for (int j = 0; j < k->Ncols; j++)
            m = fmax(m, s * sr[j]);
        for (int j = 0; j < k->Ncols; j++)
            se += exp(s * sr[j] - m);
        double lse = m + log(se);
        if (k->wh != 0.0) total += k->wh * (lse - s * sr[k->off + i]);
        if (k->tsim && k->ws != 0.0) {
            const double *tr = k->tsim + (size_t)i * k->Ncols;
            double tm = -INFINITY, tse = 0.0;
            for (int j = 0; j < k->Ncols; j++)
                tm = fmax(tm, ts * tr[j]);
            for (int j = 0; j < k->Ncols; j++)
                tse += exp(ts * tr[j] - tm);
            for (int j = 0; j < k->Ncols; j++) {
                double t = exp(ts * tr[j] - tm) / tse;
                total -= k->ws * t * (s * sr[j] - lse);
            }
        }
    }
    out[0] = total / k->n;
}

static void gradcheck_xent_one(int n, int Ncols, int off, float wh, float ws, int with_teacher) {
    const size_t ns = (size_t)n * Ncols;
    float *sim = gc_rand(ns, 1.0f), *tsim = with_teacher ? gc_rand(ns, 1.0f) : NULL;
    float *ls = gc_const(1, 2.6592f), *tls = gc_const(1, 3.0f);
    float *loss = gc_const(1, 0.25f), *dls = gc_const(1, -0.5f), *dsim = gc_const(ns, GC_GARBAGE);
    be->softmax_xent_rows(be, loss, dsim, dls, sim, tsim, ls, tls, n, Ncols, off, wh, ws);
    double one = 1.0;
    xent_case k = {{xent_ref, &one, 1},
                   gc_to_double(sim, ns),
                   tsim ? gc_to_double(tsim, ns) : NULL,
                   gc_to_double(ls, 1),
                   3.0,
                   n,
                   Ncols,
                   off,
                   wh,
                   ws};
    k.tls = tls[0];
    double ref_loss = gc_fd_loss(&k.base);
    char what[96];
    snprintf(what, sizeof what, "xent loss n%d N%d off%d wh%g ws%g t%d", n, Ncols, off, wh, ws,
             with_teacher);
    float got = loss[0] - 0.25f, want = (float)ref_loss;
    printf("  %-34s %.7g vs %.7g\n", what, got, want);
    assert_true(fabs(got - want) <= 1e-5 * fmax(1.0, fabs(want)));
    float *g_sim = gc_fd_grad(&k.base, k.sim, ns);
    float *g_ls = gc_fd_grad(&k.base, k.ls, 1);
    gc_check_grad(dsim, g_sim, ns, "xent dsim");
    float dls_got = dls[0] + 0.5f;
    printf("  %-34s %.7g vs %.7g\n", "xent dlog_scale += (value)", dls_got, g_ls[0]);
    gc_check_grad(&dls_got, g_ls, 1, "xent dlog_scale +=");
    free(g_sim), free(g_ls), free(k.sim), free(k.tsim), free(k.ls);
    gc_free(sim), gc_free(tsim), gc_free(ls), gc_free(tls), gc_free(loss), gc_free(dls), gc_free(dsim);
}

static void test_gradcheck_softmax_xent(void **state) {
    (void)state;
    gradcheck_xent_one(4, 4, 0, 1.0f, 0.0f, 0); /* hard only, square */
    gradcheck_xent_one(3, 8, 2, 1.0f, 0.0f, 0); /* hard only, local rows of a larger batch */
    gradcheck_xent_one(3, 8, 5, 0.0f, 1.0f, 1); /* soft only */
    gradcheck_xent_one(5, 7, 1, 0.7f, 0.3f, 1); /* both */
    gradcheck_xent_one(2, 6, 4, 1.0f, 0.5f, 0); /* w_soft without a teacher: hard only */
}

int main(void) {
    if (!(be = tc_gradcheck_backend())) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradcheck_linear),       cmocka_unit_test(test_gradcheck_layernorm),
        cmocka_unit_test(test_gradcheck_gelu),         cmocka_unit_test(test_gradcheck_attention),
        cmocka_unit_test(test_gradcheck_vision_embed), cmocka_unit_test(test_gradcheck_token_embed),
        cmocka_unit_test(test_gradcheck_pool),         cmocka_unit_test(test_gradcheck_l2norm),
        cmocka_unit_test(test_gradcheck_softmax_xent),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    be->destroy(be);
    return rc;
}
