/* hard-concrete mask math: P(z != 0) values of the method spec, prunable
 * sizes, the expected-parameter formula against counting the tensors of the
 * pruned architecture, finite-difference checks of every gradient, the
 * sampler, deterministic masks (with rounding), the sparsity ramp, the mask
 * AdamW, and the Lagrangian + mask optimizer driven alone toward a target. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "l0.h"
#include "model_config.h"
#include "params.h"
#include "testutil.h"

static double sig(double x) { return 1.0 / (1.0 + exp(-x)); }

static void test_scores(void **state) {
    (void)state;
    /* beta * log(-gamma/zeta) = 2/3 * log(0.1/1.1) */
    const double k = 2.0 / 3.0 * log(0.1 / 1.1);
    assert_true(fabs(k + 1.5985968485) < 1e-9);
    for (double a = -4.0; a <= 4.0; a += 0.5)
        assert_true(fabs(tc_l0_score((float)a) - sig(a - k)) < 1e-12);
    /* the table of the method spec */
    assert_true(fabs(tc_l0_score(10.0f) - 0.99999) < 5e-6);
    assert_true(fabs(tc_l0_score((float)TC_L0_LOGA_MAX) - 0.998) < 5e-4);
    assert_true(fabs(tc_l0_score(0.0f) - 0.832) < 5e-4);
    assert_true(fabs(tc_l0_score((float)TC_L0_LOGA_MIN) - 0.047) < 5e-4);
    assert_true(fabs(tc_l0_score(-10.0f) - 0.00022) < 5e-6);
    /* the original's clamp of cdf_qz to [eps, 1-eps] */
    assert_true(tc_l0_score(40.0f) == 1.0 - 1e-6);
    assert_true(fabs(tc_l0_score(-40.0f) - 1e-6) < 1e-15);
    assert_true(tc_l0_score_grad(40.0f) == 0.0);
    print_message("P(z!=0): 10 -> %.6f, 4.605 -> %.6f, 0 -> %.6f, -4.605 -> %.6f, -10 -> %.6f\n",
                  tc_l0_score(10.0f), tc_l0_score((float)TC_L0_LOGA_MAX), tc_l0_score(0.0f),
                  tc_l0_score((float)TC_L0_LOGA_MIN), tc_l0_score(-10.0f));
}

static void test_prunable_sizes(void **state) {
    (void)state;
    assert_int_equal(tc_l0_params_per_head(768, 12), 196864);
    assert_int_equal(tc_l0_params_per_head(512, 8), 131328);
    assert_true(tc_l0_prunable_size(12, 768, 12, 3072) == 85017600.0);
    assert_true(tc_l0_prunable_size(12, 512, 8, 2048) == 37804032.0);
}

static uint64_t rng_state = 42;
static double urand(void) { return (double)(tc_test_rand(&rng_state) >> 11) * 0x1.0p-53; }

/* binary masks -> the pruned architecture -> its tensors counted from the
 * layout, against the formula with scores 0/1 */
static void formula_vs_count(int L, int C, int NH, int M, double keep) {
    double *sh = malloc(C * sizeof *sh), *sa = malloc((size_t)L * NH * sizeof *sa),
           *si = malloc((size_t)L * M * sizeof *si);
    tc_model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.embed_dim = 64;
    cfg.activation = TC_GELU;
    tc_tower_set_uniform(&cfg.vision, 1, 64, 1, 64);
    cfg.vision.image_size = 32;
    cfg.vision.patch_size = 32;
    cfg.text.context_length = 4;
    cfg.text.vocab_size = 8;
    cfg.text.pool = TC_POOL_ARGMAX;
    tc_tower_config *t = &cfg.text;
    t->head_width = C / NH;
    t->layers = L;
    int ck = 0;
    for (int d = 0; d < C; d++) ck += (sh[d] = urand() < keep || d == 0);
    t->width = ck;
    double bias_share = 0;
    for (int l = 0; l < L; l++) {
        int h = 0, m = 0;
        double kl = l == 1 ? 0.0 : keep; /* one layer loses everything */
        for (int i = 0; i < NH; i++) h += (sa[l * NH + i] = urand() < kl);
        for (int i = 0; i < M; i++) m += (si[(size_t)l * M + i] = urand() < kl);
        t->heads[l] = h;
        t->mlp_width[l] = m;
        /* the formula counts the 4C attention biases of a layer as 4C/NH per
         * head, scaled by the kept hidden fraction */
        bias_share += (double)h * 4.0 * ck / NH;
    }
    tc_param_layout lay;
    assert_int_equal(tc_param_layout_build(&lay, &cfg), TC_OK);
    double weights = 0;
    for (int l = 0; l < L; l++) {
        const tc_block_offsets *b = &lay.tblocks[l];
        const size_t offs[4] = {b->qkv_w, b->out_w, b->fc_w, b->proj_w};
        for (int k = 0; k < 4; k++) {
            if (offs[k] == TC_ABSENT) continue;
            for (int i = 0; i < lay.count; i++)
                if (lay.params[i].offset == offs[k]) weights += (double)lay.params[i].count;
        }
    }
    double counted = weights + bias_share;
    double E = tc_l0_expected_params_scores(L, C, NH, M, sh, sa, si);
    /* the original's report of a pruned model counts the same weights, no biases */
    tc_l0_masks shape;
    assert_int_equal(tc_l0_masks_create(&shape, L, C, NH, M), TC_OK);
    float *z = malloc(shape.n_loga * sizeof *z);
    for (int d = 0; d < C; d++) z[d] = (float)sh[d] * 0.9f;
    for (int i = 0; i < L * NH; i++) z[C + i] = (float)sa[i] * 0.8f;
    for (size_t i = 0; i < (size_t)L * M; i++) z[C + L * NH + i] = (float)si[i] * 0.7f;
    assert_true(tc_l0_remaining_params(&shape, z) == weights);
    free(z);
    tc_l0_masks_free(&shape);
    print_message("L=%d C=%d NH=%d M=%d keep %.2f: hidden %d, formula %.1f, counted %.1f\n", L, C,
                  NH, M, keep, ck, E, counted);
    assert_true(fabs(E - counted) <= 1e-9 * counted);
    /* all kept: the formula's full size is the prunable size less the MLP biases */
    for (int d = 0; d < C; d++) sh[d] = 1;
    for (int i = 0; i < L * NH; i++) sa[i] = 1;
    for (size_t i = 0; i < (size_t)L * M; i++) si[i] = 1;
    E = tc_l0_expected_params_scores(L, C, NH, M, sh, sa, si);
    assert_true(E == tc_l0_prunable_size(L, C, NH, M) - (double)L * (C + M));
    tc_param_layout_free(&lay);
    free(sh);
    free(sa);
    free(si);
}

static void test_expected_params_counting(void **state) {
    (void)state;
    formula_vs_count(12, 768, 12, 3072, 0.6);
    formula_vs_count(12, 512, 8, 2048, 0.3);
    formula_vs_count(4, 256, 4, 1024, 0.9);
    /* from log alpha: the same formula over P(z != 0) */
    tc_l0_masks m;
    assert_int_equal(tc_l0_masks_create(&m, 3, 128, 2, 512), TC_OK);
    for (size_t i = 0; i < m.n_loga; i++) m.data[i] = (float)(urand() * 9.0 - 4.5);
    double *sh = malloc(128 * sizeof *sh), *sa = malloc(6 * sizeof *sa),
           *si = malloc(1536 * sizeof *si);
    for (int i = 0; i < 128; i++) sh[i] = tc_l0_score(m.hidden_loga[i]);
    for (int i = 0; i < 6; i++) sa[i] = tc_l0_score(m.heads_loga[i]);
    for (int i = 0; i < 1536; i++) si[i] = tc_l0_score(m.intermediate_loga[i]);
    double a = tc_l0_expected_params(&m, NULL, 0), b = tc_l0_expected_params_scores(3, 128, 2, 512, sh, sa, si);
    assert_true(fabs(a - b) <= 1e-12 * b);
    free(sh);
    free(sa);
    free(si);
    tc_l0_masks_free(&m);
}

/* central difference of f over a float input, in steps exactly representable */
static void random_loga(tc_l0_masks *m, double lo, double hi) {
    for (size_t i = 0; i < m->n_loga; i++) m->data[i] = (float)(lo + (hi - lo) * urand());
}

static void check_close(double analytic, double numeric, double scale, const char *what, size_t i) {
    double err = fabs(analytic - numeric) / (fabs(numeric) + scale);
    if (!(err < 2e-3))
        fail_msg("%s[%zu]: analytic %.8g, numeric %.8g (rel err %.3g)", what, i, analytic, numeric,
                 err);
}

static void test_gradients(void **state) {
    (void)state;
    const float h = 0x1.0p-9f;
    /* score */
    for (float a = -4.5f; a <= 4.5f; a += 0.25f) {
        double num = (tc_l0_score(a + h) - tc_l0_score(a - h)) / (2.0 * h);
        check_close(tc_l0_score_grad(a), num, 1e-6, "dP/dloga", 0);
    }
    /* sampled z through the hard concrete, for fixed u */
    for (int k = 0; k < 400; k++) {
        float a = (float)(urand() * 9.0 - 4.5);
        double u = 1e-6 + (1 - 2e-6) * urand();
        float dz;
        float z = tc_l0_sample_one(a, u, &dz);
        float zp = tc_l0_sample_one(a + h, u, NULL), zm = tc_l0_sample_one(a - h, u, NULL);
        if (z <= 0.0f || z >= 1.0f) {
            assert_true(dz == 0.0f);
            continue;
        }
        if (zp <= 0.0f || zp >= 1.0f || zm <= 0.0f || zm >= 1.0f) continue; /* at the kink */
        check_close(dz, ((double)zp - zm) / (2.0 * h), 1e-3, "dz/dloga", (size_t)k);
    }
    /* expected parameters */
    tc_l0_masks m;
    assert_int_equal(tc_l0_masks_create(&m, 2, 128, 2, 256), TC_OK);
    random_loga(&m, -4.0, 4.0);
    float *g = calloc(m.count, sizeof *g);
    double E = tc_l0_expected_params(&m, g, 1.0);
    for (size_t i = 0; i < m.n_loga; i += 7) {
        float a = m.data[i];
        m.data[i] = a + h;
        double ep = tc_l0_expected_params(&m, NULL, 0);
        m.data[i] = a - h;
        double em = tc_l0_expected_params(&m, NULL, 0);
        m.data[i] = a;
        check_close(g[i], (ep - em) / (2.0 * h), 1e-3 * E / m.n_loga, "dE/dloga", i);
    }
    /* the pooled Lagrangian over two towers: every log alpha and both lambdas */
    tc_l0_masks m2;
    assert_int_equal(tc_l0_masks_create(&m2, 3, 64, 1, 128), TC_OK);
    random_loga(&m2, -2.0, 4.0);
    m.lambda[0] = 3.0f;
    m.lambda[1] = 7.0f;
    m2.lambda[0] = 11.0f;
    m2.lambda[1] = 5.0f;
    float *g2 = calloc(m2.count, sizeof *g2);
    memset(g, 0, m.count * sizeof *g);
    tc_l0_masks *towers[2] = {&m, &m2};
    float *grads[2] = {g, g2};
    tc_l0_lagrangian_result r;
    const double target = 0.8;
    assert_int_equal(tc_l0_lagrangian(towers, grads, 2, target, &r), TC_OK);
    assert_true(r.expected_sparsity < target); /* the hinge is active */
    for (int k = 0; k < 2; k++) {
        tc_l0_masks *mk = towers[k];
        for (size_t i = 0; i < mk->count; i += (i < mk->n_loga ? 5 : 1)) {
            float a = mk->data[i];
            float hh = i < mk->n_loga ? h : 0x1.0p-4f;
            tc_l0_lagrangian_result rp, rm;
            mk->data[i] = a + hh;
            tc_l0_lagrangian(towers, NULL, 2, target, &rp);
            mk->data[i] = a - hh;
            tc_l0_lagrangian(towers, NULL, 2, target, &rm);
            mk->data[i] = a;
            double num = (rp.lagrangian - rm.lagrangian) / (2.0 * hh);
            check_close(grads[k][i], num, 1e-3 * fabs(r.lagrangian) / mk->n_loga,
                        i < mk->n_loga ? "dL/dloga" : "dL/dlambda", i);
        }
    }
    /* the gradient w.r.t. lambda is the hinge (mean over the towers): ascent raises lambda */
    double hinge = target - r.expected_sparsity;
    assert_true(fabs(g[m.n_loga] - hinge / 2) < 1e-6);
    assert_true(fabs(g[m.n_loga + 1] - hinge * hinge / 2) < 1e-6);
    /* beyond the target: no loss, no gradient */
    memset(g, 0, m.count * sizeof *g);
    assert_int_equal(tc_l0_lagrangian(towers, grads, 2, 0.0, &r), TC_OK);
    assert_true(r.lagrangian == 0.0);
    for (size_t i = 0; i < m.count; i++) assert_true(g[i] == 0.0f);
    free(g);
    free(g2);
    tc_l0_masks_free(&m);
    tc_l0_masks_free(&m2);
}

static void test_sampler(void **state) {
    (void)state;
    tc_l0_rng r1, r2;
    tc_l0_rng_init(&r1, 7);
    tc_l0_rng_init(&r2, 7);
    for (int i = 0; i < 1000; i++) {
        double u = tc_l0_rng_uniform(&r1);
        assert_true(u == tc_l0_rng_uniform(&r2));
        assert_true(u >= 1e-6 && u < 1.0 - 1e-6);
    }
    /* P(z != 0) of the sampler is the score */
    const float alphas[4] = {-3.0f, 0.0f, 1.0f, 4.0f};
    for (int k = 0; k < 4; k++) {
        int n = 200000, nz = 0, ones = 0;
        double mean = 0;
        for (int i = 0; i < n; i++) {
            float z = tc_l0_sample_one(alphas[k], tc_l0_rng_uniform(&r1), NULL);
            nz += z != 0.0f;
            ones += z == 1.0f;
            mean += z;
        }
        double p = (double)nz / n, want = tc_l0_score(alphas[k]);
        print_message("log alpha %.1f: P(z!=0) sampled %.4f, formula %.4f; P(z=1) %.4f; E z %.4f\n",
                      alphas[k], p, want, (double)ones / n, mean / n);
        assert_true(fabs(p - want) < 4.0 * sqrt(want * (1 - want) / n) + 1e-4);
    }
    /* a mask vector: z in [0,1], dz consistent */
    tc_l0_masks m;
    assert_int_equal(tc_l0_masks_create(&m, 2, 64, 1, 128), TC_OK);
    random_loga(&m, -4.6, 4.6);
    float *z = malloc(m.n_loga * sizeof *z), *dz = malloc(m.n_loga * sizeof *dz);
    tc_l0_sample(&m, &r1, z, dz);
    for (size_t i = 0; i < m.n_loga; i++) {
        assert_true(z[i] >= 0.0f && z[i] <= 1.0f);
        if (z[i] == 0.0f || z[i] == 1.0f) assert_true(dz[i] == 0.0f);
        else assert_true(dz[i] > 0.0f);
    }
    float *grad = calloc(m.count, sizeof *grad), *up = malloc(m.n_loga * sizeof *up);
    for (size_t i = 0; i < m.n_loga; i++) up[i] = 2.0f;
    tc_l0_backward_z(grad, up, dz, m.n_loga);
    for (size_t i = 0; i < m.n_loga; i++) assert_true(grad[i] == 2.0f * dz[i]);
    free(grad);
    free(up);
    free(z);
    free(dz);
    tc_l0_masks_free(&m);
}

static void test_deterministic(void **state) {
    (void)state;
    tc_l0_masks m;
    /* hidden 8, one layer of 4 heads and 8 MLP units */
    assert_int_equal(tc_l0_masks_create(&m, 1, 8, 4, 8), TC_OK);
    const float hid[8] = {4.6f, -4.6f, 2.0f, -1.0f, 4.6f, 0.5f, -4.6f, 3.0f};
    memcpy(m.hidden_loga, hid, sizeof hid);
    /* all heads equal: ties zero the higher index first */
    for (int i = 0; i < 4; i++) m.heads_loga[i] = -1.3f;
    for (int i = 0; i < 8; i++) m.intermediate_loga[i] = 4.6f;
    float z[8 + 4 + 8];
    assert_int_equal(tc_l0_deterministic(&m, 0, z), TC_OK);
    double sum = 0;
    for (int i = 0; i < 8; i++) sum += tc_l0_score(hid[i]);
    int nz = (int)rint(8 - sum);
    print_message("hidden: sum P %.4f -> %d zeros\n", sum, nz);
    assert_int_equal(nz, 2); /* P: .998 .047 .973 .645 .998 .891 .047 .989 */
    for (int i = 0; i < 8; i++) {
        float soft = (float)(1.0 / (1.0 + exp(-hid[i] / (2.0 / 3.0) * 0.8)));
        if (i == 1 || i == 6) assert_true(z[i] == 0.0f);
        else assert_true(fabs(z[i] - soft) < 1e-6);
    }
    /* heads: 4 * P(-1.3) = 4 * 0.574 = 2.30 -> round(1.70) = 2 zeros: heads 3 and 2 */
    assert_true(z[8] > 0 && z[9] > 0 && z[10] == 0.0f && z[11] == 0.0f);
    /* intermediate all kept, at their soft value sigmoid(1.2 * 4.6) */
    for (int i = 0; i < 8; i++) assert_true(fabs(z[12 + i] - 0.99601f) < 1e-4);
    tc_l0_masks_free(&m);

    /* round half to even, as Python's round(): 2.5 -> 2 */
    assert_true(rint(2.5) == 2.0 && rint(3.5) == 4.0);

    /* rounding kept units up to a multiple of 8: the best pruned units come back */
    assert_int_equal(tc_l0_masks_create(&m, 2, 100, 2, 64), TC_OK);
    for (int d = 0; d < 100; d++) m.hidden_loga[d] = d < 37 ? 4.6f : -4.6f + 0.01f * d;
    for (int i = 0; i < 128; i++) m.intermediate_loga[i] = (i % 64) < 20 ? 4.6f : -4.6f;
    /* layer 1: nothing (at the clamp -4.6, P = 0.047 would still keep 3 of 64) */
    for (int i = 0; i < 64; i++) m.intermediate_loga[64 + i] = -10.0f;
    float *z0 = malloc(m.n_loga * sizeof *z0), *z8 = malloc(m.n_loga * sizeof *z8);
    assert_int_equal(tc_l0_deterministic(&m, 0, z0), TC_OK);
    assert_int_equal(tc_l0_deterministic(&m, 8, z8), TC_OK);
    int k0 = 0, k8 = 0;
    for (int d = 0; d < 100; d++) {
        k0 += z0[d] != 0;
        k8 += z8[d] != 0;
    }
    print_message("hidden kept: %d, rounded to 8: %d\n", k0, k8);
    /* 37 at 0.998 + 63 at ~0.05 sum to about 40: round(100 - 40) zeros */
    assert_true(k8 % 8 == 0 && k8 >= k0 && k8 < k0 + 8);
    for (int d = 0; d < 100; d++) {
        if (z0[d] != 0) assert_true(z8[d] == z0[d]);
        /* the kept set is the top of the scores: 37 at 4.6, then the last indices */
        if (z8[d] != 0 && d >= 37) assert_true(d >= 100 - (k8 - 37));
    }
    const float *i0 = z0 + 100 + 4, *i8 = z8 + 100 + 4;
    int r0 = 0, r8 = 0, r1 = 0;
    for (int i = 0; i < 64; i++) {
        r0 += i0[i] != 0;
        r8 += i8[i] != 0;
        r1 += i8[64 + i] != 0;
    }
    print_message("mlp row kept: %d, rounded: %d; empty row rounded: %d\n", r0, r8, r1);
    assert_int_equal(r8 % 8, 0);
    assert_true(r8 >= r0 && r8 < r0 + 8);
    assert_int_equal(r1, 0); /* an empty row stays empty */
    free(z0);
    free(z8);
    tc_l0_masks_free(&m);
}

static void test_ramp(void **state) {
    (void)state;
    assert_true(tc_l0_target_sparsity(0.0, 0.25, 0, 1000) == 0.0);
    assert_true(fabs(tc_l0_target_sparsity(0.0, 0.25, 500, 1000) - 0.125) < 1e-15);
    assert_true(tc_l0_target_sparsity(0.0, 0.25, 1000, 1000) == 0.25);
    assert_true(tc_l0_target_sparsity(0.25, 0.5, 4000, 1000) == 0.5);
    assert_true(fabs(tc_l0_target_sparsity(0.5, 0.75, 100, 1000) - 0.525) < 1e-15);
    assert_true(tc_l0_target_sparsity(0.0, 0.5, 3, 0) == 0.5);
}

static void test_adamw(void **state) {
    (void)state;
    tc_l0_masks m;
    assert_int_equal(tc_l0_masks_create(&m, 1, 4, 1, 4), TC_OK);
    tc_l0_adamw o;
    assert_int_equal(tc_l0_adamw_create(&o, &m), TC_OK);
    tc_l0_adamw_hparams hp = tc_l0_adamw_defaults();
    assert_true(hp.lr_loga == 0.02f && hp.lr_lambda == -0.02f && hp.beta1 == 0.9f &&
                hp.beta2 == 0.999f && hp.eps == 1e-8f && hp.weight_decay == 0.0f);
    float *g = calloc(m.count, sizeof *g);
    for (size_t i = 0; i < m.count; i++) g[i] = 0.3f;
    assert_int_equal(tc_l0_adamw_step(&o, &m, g, &hp, 1.0f), TC_OK);
    /* first Adam step is lr * sign(g): log alpha down, lambda up (ascent) */
    for (size_t i = 0; i < m.n_loga; i++) assert_true(fabs(m.data[i] - (10.0f - 0.02f)) < 1e-5);
    assert_true(fabs(m.lambda[0] - 10.02f) < 1e-5 && fabs(m.lambda[1] - 10.02f) < 1e-5);
    tc_l0_constrain(&m);
    for (size_t i = 0; i < m.n_loga; i++) assert_true(m.data[i] == (float)TC_L0_LOGA_MAX);
    assert_true(m.lambda[0] > 10.0f); /* lambda is not clamped */
    /* step 2 by hand, torch formulas */
    float p = m.data[0], m1 = o.m[0], v1 = o.v[0], gg = -0.1f;
    for (size_t i = 0; i < m.count; i++) g[i] = gg;
    assert_int_equal(tc_l0_adamw_step(&o, &m, g, &hp, 1.0f), TC_OK);
    double mm = 0.9 * m1 + 0.1 * gg, vv = 0.999 * v1 + 0.001 * gg * gg;
    double want = p - 0.02 / (1 - 0.81) * mm / (sqrt(vv) / sqrt(1 - 0.998001) + 1e-8);
    assert_true(fabs(m.data[0] - want) < 1e-5);
    free(g);
    tc_l0_adamw_free(&o);
    tc_l0_masks_free(&m);
}

/* the Lagrangian and the mask optimizer on the ViT-B/32 vision and text mask
 * shapes, pooled, the target ramped over 1000 steps. keep > 0 adds a stand-in
 * for the distillation loss, keep * expected_sparsity: a loss that grows as
 * units go, which is what pulls log alpha back when the hinge is inactive. */
static void drive(double target, int steps, double keep, double *reached, double *tail_mean,
                  double *max_over, double *lam) {
    tc_l0_masks v, t;
    assert_int_equal(tc_l0_masks_create(&v, 12, 768, 12, 3072), TC_OK);
    assert_int_equal(tc_l0_masks_create(&t, 12, 512, 8, 2048), TC_OK);
    tc_l0_adamw ov, ot;
    assert_int_equal(tc_l0_adamw_create(&ov, &v), TC_OK);
    assert_int_equal(tc_l0_adamw_create(&ot, &t), TC_OK);
    tc_l0_adamw_hparams hp = tc_l0_adamw_defaults();
    float *gv = malloc(v.count * sizeof *gv), *gt = malloc(t.count * sizeof *gt);
    tc_l0_masks *towers[2] = {&v, &t};
    float *grads[2] = {gv, gt};
    tc_l0_lagrangian_result r = {0};
    *max_over = 0;
    *tail_mean = 0;
    for (int step = 0; step < steps; step++) {
        memset(gv, 0, v.count * sizeof *gv);
        memset(gt, 0, t.count * sizeof *gt);
        double tgt = tc_l0_target_sparsity(0.0, target, step, 1000);
        assert_int_equal(tc_l0_lagrangian(towers, grads, 2, tgt, &r), TC_OK);
        if (keep > 0) {
            /* d(keep * s)/dE_k = -keep / (P_vision + P_text) */
            tc_l0_expected_params(&v, gv, -keep / r.prunable_size);
            tc_l0_expected_params(&t, gt, -keep / r.prunable_size);
        }
        if (step >= steps - 500) *tail_mean += r.expected_sparsity / 500;
        assert_int_equal(tc_l0_adamw_step(&ov, &v, gv, &hp, 1.0f), TC_OK);
        assert_int_equal(tc_l0_adamw_step(&ot, &t, gt, &hp, 1.0f), TC_OK);
        tc_l0_constrain(&v);
        tc_l0_constrain(&t);
        if (step >= 1000 && r.expected_sparsity - target > *max_over)
            *max_over = r.expected_sparsity - target;
        if (step % 500 == 0 || step == steps - 1 || step == 1000)
            print_message("step %5d: target %.4f expected sparsity %.4f lambda1 %.3f lambda2 %.3f "
                          "L %.5f\n",
                          step, tgt, r.expected_sparsity, (v.lambda[0] + t.lambda[0]) / 2,
                          (v.lambda[1] + t.lambda[1]) / 2, r.lagrangian);
    }
    tc_l0_lagrangian(towers, NULL, 2, target, &r);
    *reached = r.expected_sparsity;
    *lam = (v.lambda[0] + t.lambda[0]) / 2;
    free(gv);
    free(gt);
    tc_l0_adamw_free(&ov);
    tc_l0_adamw_free(&ot);
    tc_l0_masks_free(&v);
    tc_l0_masks_free(&t);
}

static void test_lagrangian_dynamics(void **state) {
    (void)state;
    const double targets[2] = {0.25, 0.5};
    for (int k = 0; k < 2; k++) {
        double reached, tail, over, lam;
        /* the Lagrangian alone: the one-sided hinge has no force once the
         * model is sparser than the target, so Adam's momentum carries the
         * masks past it and nothing brings them back */
        drive(targets[k], 1500, 0.0, &reached, &tail, &over, &lam);
        print_message("alone, target %.2f: reached %.4f (%+.2f%% of the target), lambda1 %.3f\n",
                      targets[k], reached, 100 * (reached - targets[k]) / targets[k], lam);
        assert_true(reached >= targets[k] && reached < targets[k] + 0.03);
        assert_true(lam > 10.0f); /* ascent only ever raises lambda */
        /* with a loss that resists pruning, the target is where they settle */
        drive(targets[k], 2500, 1.0, &reached, &tail, &over, &lam);
        print_message("with keep pressure, target %.2f: reached %.4f (%+.2f%%), mean of the "
                      "last 500 steps %.4f, lambda1 %.3f\n",
                      targets[k], reached, 100 * (reached - targets[k]) / targets[k], tail, lam);
        assert_true(fabs(reached - targets[k]) <= 0.01 * targets[k]);
        assert_true(fabs(tail - targets[k]) <= 0.01 * targets[k]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scores),
        cmocka_unit_test(test_prunable_sizes),
        cmocka_unit_test(test_expected_params_counting),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_sampler),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_ramp),
        cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_lagrangian_dynamics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
