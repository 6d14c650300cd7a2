/* regular (open_clip-regular) masks of automatic inheritance: the tied
 * layout (expand and reduce are transposes), the expected-size formula
 * against the untied formula on the expanded scores and its gradient by
 * finite differences, deterministic masks that leave a plain open_clip tower
 * sized as asked, and the mask phase of the demo's two auto stages
 * (configs/experiments/fmnist.yaml: the fmnist-teacher shapes, 120 mask
 * steps, the target ramped over 60, mask lr 0.1, lambda lr -0.1) ending
 * within 2 points of the target sparsity, by the L0 formula and by counting
 * the pruned model's attention and MLP parameters. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "l0.h"
#include "model_config.h"
#include "params.h"
#include "prune.h"
#include "testutil.h"

static uint64_t rng_state = 7;
static double urand(void) {
    return (double)(tc_test_rand(&rng_state) >> 11) * 0x1.0p-53;
}

static void random_loga(tc_l0_masks *m, double lo, double hi) {
    for (size_t i = 0; i < m->n_loga; i++)
        m->data[i] = (float)(lo + (hi - lo) * urand());
}

static void test_layout(void **state) {
    (void)state;
    enum { L = 3, C = 128, NH = 2, M = 96 };
    tc_l0_masks m;
    assert_int_equal(tc_l0_masks_create_shaped(&m, TC_L0_REGULAR, L, C, NH, M), TC_OK);
    assert_int_equal(m.n_loga, NH + M);
    assert_int_equal(m.n_z, C + L * NH + L * M);
    assert_int_equal(m.count, NH + M + 2);
    assert_null(m.hidden_loga);
    assert_int_equal(m.rows, 1);
    assert_true(m.lambda == m.data + NH + M);
    assert_int_equal(m.head_size, C / NH);
    /* a width that is not a whole number of heads has no uniform (masked) form */
    tc_l0_masks bad;
    assert_int_equal(tc_l0_masks_create_shaped(&bad, TC_L0_REGULAR, L, 101, 2, M), TC_ERR_ARG);
    /* head size 50: one regular unit per head of 50 hidden channels */
    tc_l0_masks hs50;
    assert_int_equal(tc_l0_masks_create_shaped(&hs50, TC_L0_REGULAR, L, 100, 2, M), TC_OK);
    assert_int_equal(hs50.head_size, 50);
    tc_l0_masks_free(&hs50);

    float zg[NH + M], z[C + L * NH + L * M], dz[C + L * NH + L * M], dg[NH + M];
    for (int i = 0; i < NH + M; i++)
        zg[i] = (float)urand();
    tc_l0_expand_z(&m, zg, z);
    for (int d = 0; d < C; d++)
        assert_true(z[d] == zg[d / (C / NH)]);
    for (int l = 0; l < L; l++) {
        for (int h = 0; h < NH; h++)
            assert_true(z[C + l * NH + h] == zg[h]);
        for (int i = 0; i < M; i++)
            assert_true(z[C + L * NH + l * M + i] == zg[NH + i]);
    }
    /* <expand(a), b> == <a, reduce(b)> */
    for (size_t i = 0; i < m.n_z; i++)
        dz[i] = (float)(urand() - 0.5);
    tc_l0_reduce_dz(&m, dz, dg);
    double lhs = 0, rhs = 0;
    for (size_t i = 0; i < m.n_z; i++)
        lhs += (double)z[i] * dz[i];
    for (size_t i = 0; i < m.n_loga; i++)
        rhs += (double)zg[i] * dg[i];
    assert_true(fabs(lhs - rhs) <= 1e-5 * (fabs(lhs) + 1));
    tc_l0_masks_free(&m);
}

/* the regular formula is the untied formula on the scores each tied gate
 * writes to every place it gates; its gradient agrees with differences */
static void test_expected_size(void **state) {
    (void)state;
    enum { L = 4, C = 192, NH = 3, M = 200 };
    tc_l0_masks m;
    assert_int_equal(tc_l0_masks_create_shaped(&m, TC_L0_REGULAR, L, C, NH, M), TC_OK);
    random_loga(&m, -4.5, 4.5);
    double sh[C], sa[L * NH], si[L * M];
    for (int d = 0; d < C; d++)
        sh[d] = tc_l0_score(m.heads_loga[d / 64]);
    for (int l = 0; l < L; l++) {
        for (int h = 0; h < NH; h++)
            sa[l * NH + h] = tc_l0_score(m.heads_loga[h]);
        for (int i = 0; i < M; i++)
            si[l * M + i] = tc_l0_score(m.intermediate_loga[i]);
    }
    double E = tc_l0_expected_params(&m, NULL, 0);
    double ref = tc_l0_expected_params_scores(L, C, NH, M, sh, sa, si);
    print_message("regular expected size %.3f, untied formula on the tied scores %.3f\n", E, ref);
    assert_true(fabs(E - ref) <= 1e-9 * ref);

    float *g = calloc(m.count, sizeof *g);
    tc_l0_expected_params(&m, g, 1.0);
    const float h = 1e-2f;
    for (size_t i = 0; i < m.n_loga; i += (i < NH ? 1 : 7)) {
        float x = m.data[i];
        m.data[i] = x + h;
        double ep = tc_l0_expected_params(&m, NULL, 0);
        m.data[i] = x - h;
        double em = tc_l0_expected_params(&m, NULL, 0);
        m.data[i] = x;
        double num = (ep - em) / (2.0 * h);
        if (fabs(g[i] - num) > 1e-3 * fabs(num) + 1e-2)
            fail_msg("dE/dloga[%zu]: %.6g, differences %.6g", i, (double)g[i], num);
    }
    /* and through the pooled Lagrangian */
    tc_l0_masks *towers[1] = {&m};
    float *grads[1] = {g};
    memset(g, 0, m.count * sizeof *g);
    tc_l0_lagrangian_result r;
    assert_int_equal(tc_l0_lagrangian(towers, grads, 1, 0.9, &r), TC_OK);
    for (size_t i = 0; i < m.n_loga; i += 5) {
        float x = m.data[i];
        tc_l0_lagrangian_result rp, rm;
        m.data[i] = x + h;
        tc_l0_lagrangian(towers, NULL, 1, 0.9, &rp);
        m.data[i] = x - h;
        tc_l0_lagrangian(towers, NULL, 1, 0.9, &rm);
        m.data[i] = x;
        double num = (rp.lagrangian - rm.lagrangian) / (2.0 * h);
        if (fabs(g[i] - num) > 1e-3 * fabs(num) + 1e-4)
            fail_msg("dL/dloga[%zu]: %.6g, differences %.6g", i, (double)g[i], num);
    }
    free(g);
    tc_l0_masks_free(&m);
}

/* a z of a regular tower: whole units of 64 hidden dims, the same heads and
 * MLP units in every layer, kept values the soft masks */
static void check_regular_z(const tc_l0_masks *m, const float *z, int *units, int *mlp) {
    int C = m->hidden, NH = m->heads, M = m->inter, L = m->layers;
    const float *zh = z + C, *zi = zh + (size_t)L * NH;
    *units = *mlp = 0;
    for (int u = 0; u < NH; u++) {
        int on = zh[u] != 0.0f;
        *units += on;
        for (int l = 0; l < L; l++)
            assert_true((zh[(size_t)l * NH + u] != 0.0f) == on);
        for (int e = 0; e < 64; e++)
            assert_true((z[u * 64 + e] != 0.0f) == on);
        if (on) {
            float soft = 1.0f / (1.0f + expf(-(m->heads_loga[u] / (2.0f / 3.0f) * 0.8f)));
            assert_true(fabs(zh[u] - soft) < 1e-6);
        }
    }
    for (int i = 0; i < M; i++) {
        int on = zi[i] != 0.0f;
        *mlp += on;
        for (int l = 0; l < L; l++)
            assert_true((zi[(size_t)l * M + i] != 0.0f) == on);
    }
}

static void test_deterministic(void **state) {
    (void)state;
    enum { L = 4, C = 256, NH = 4, M = 512 };
    tc_l0_masks m;
    assert_int_equal(tc_l0_masks_create_shaped(&m, TC_L0_REGULAR, L, C, NH, M), TC_OK);
    float *z = malloc(m.n_z * sizeof *z);
    double P = tc_l0_prunable_size(L, C, NH, M);
    for (int trial = 0; trial < 20; trial++) {
        random_loga(&m, -4.6, 4.6);
        double want = P * (0.1 + 0.8 * urand());
        assert_int_equal(tc_l0_deterministic_sized(&m, 0, want, z), TC_OK);
        int h, mw;
        check_regular_z(&m, z, &h, &mw);
        assert_true(h >= 1 && mw >= 1);
        double got = tc_l0_pruned_params(&m, z);
        /* one MLP unit more or less is 2 * 64h * L parameters */
        double step = 2.0 * 64 * h * L;
        if (mw > 1 && mw < M && fabs(got - want) > step / 2 + 1e-6)
            fail_msg("trial %d: %d units, mlp %d: size %.0f for %.0f", trial, h, mw, got, want);
        /* the kept MLP units are the highest soft values */
        float lo_kept = 1e9f, hi_dropped = -1e9f;
        for (int i = 0; i < M; i++) {
            float a = m.intermediate_loga[i];
            if (z[C + L * NH + i] != 0.0f)
                lo_kept = fminf(lo_kept, a);
            else
                hi_dropped = fmaxf(hi_dropped, a);
        }
        assert_true(lo_kept >= hi_dropped);
    }
    /* the expected size when none is given; rounding the MLP width */
    random_loga(&m, -3, 3);
    assert_int_equal(tc_l0_deterministic(&m, 64, z), TC_OK);
    int h, mw;
    check_regular_z(&m, z, &h, &mw);
    assert_true(mw % 64 == 0 || mw == M);
    /* all units off in expectation still leaves one unit and one MLP unit */
    for (size_t i = 0; i < m.n_loga; i++)
        m.data[i] = -10.0f;
    assert_int_equal(tc_l0_deterministic(&m, 0, z), TC_OK);
    check_regular_z(&m, z, &h, &mw);
    assert_int_equal(h, 1);
    assert_int_equal(mw, 1);
    /* a size the learned width cannot reach with any MLP: the next width */
    for (size_t i = 0; i < m.n_loga; i++)
        m.data[i] = 10.0f;
    assert_int_equal(tc_l0_deterministic_sized(&m, 0, 0.05 * P, z), TC_OK);
    check_regular_z(&m, z, &h, &mw);
    assert_true(h < NH);
    free(z);
    tc_l0_masks_free(&m);
}

/* ---- the demo's mask phases ---- */

typedef struct {
    tc_model_config cfg; /* fmnist-teacher */
    tc_l0_masks m[2];
    tc_l0_adamw o[2];
    float *imp[2]; /* a stand-in for the data loss: per-gate importance */
} demo;

static void load_teacher(tc_model_config *cfg) {
    char path[1024];
    const char *src = getenv("TC_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/configs/models/fmnist-teacher.json", src ? src : TC_SOURCE_DIR);
    assert_int_equal(tc_model_config_load(cfg, path), TC_OK);
}

/* one auto stage: `steps` mask steps, the target ramped from start to target
 * over `warmup`, the Lagrangian plus a loss that resists pruning (per gate
 * importance times the gate's score); then the regular prune of the
 * scheduler: the towers sized to the target together. returns the pooled
 * sparsity by the formula, and by counting the pruned model's attention and
 * MLP tensors (LayerNorms excluded, as in the prunable size). */
static void mask_phase(demo *d, double start, double target, int steps, int warmup, double *formula,
                       double *counted, tc_model_config *pruned) {
    tc_l0_adamw_hparams hp = tc_l0_adamw_defaults();
    hp.lr_loga = 0.1f;
    hp.lr_lambda = -0.1f;
    tc_l0_masks *towers[2] = {&d->m[0], &d->m[1]};
    float *g[2];
    for (int k = 0; k < 2; k++) {
        assert_int_equal(tc_l0_adamw_create(&d->o[k], &d->m[k]), TC_OK);
        g[k] = malloc(d->m[k].count * sizeof *g[k]);
        d->imp[k] = malloc(d->m[k].n_loga * sizeof *d->imp[k]);
        for (size_t i = 0; i < d->m[k].n_loga; i++)
            d->imp[k][i] = (float)(0.02 * urand());
    }
    tc_l0_lagrangian_result r = {0};
    for (int step = 0; step < steps; step++) {
        for (int k = 0; k < 2; k++)
            memset(g[k], 0, d->m[k].count * sizeof *g[k]);
        double tgt = tc_l0_target_sparsity(start, target, step, warmup);
        assert_int_equal(tc_l0_lagrangian(towers, g, 2, tgt, &r), TC_OK);
        for (int k = 0; k < 2; k++) {
            for (size_t i = 0; i < d->m[k].n_loga; i++)
                g[k][i] -= d->imp[k][i] * (float)tc_l0_score_grad(d->m[k].data[i]);
            assert_int_equal(tc_l0_adamw_step(&d->o[k], &d->m[k], g[k], &hp, 1.0f), TC_OK);
            tc_l0_constrain(&d->m[k]);
        }
    }
    /* the prune */
    double sizes[2];
    tc_l0_target_sizes(towers, 2, tc_l0_target_sparsity(start, target, steps, warmup), sizes);
    float *z[2];
    double kept = 0, P = 0;
    for (int k = 0; k < 2; k++) {
        z[k] = malloc(d->m[k].n_z * sizeof *z[k]);
        assert_int_equal(tc_l0_deterministic_sized(&d->m[k], 0, sizes[k], z[k]), TC_OK);
        kept += tc_l0_pruned_params(&d->m[k], z[k]);
        P += tc_l0_prunable_size(d->m[k].layers, d->m[k].hidden, d->m[k].heads, d->m[k].inter);
    }
    *formula = 1.0 - kept / P;
    print_message("target %.2f: expected sparsity at the end of the mask phase %.4f, lambda1 "
                  "%.2f\n",
                  target, r.expected_sparsity, (d->m[0].lambda[0] + d->m[1].lambda[0]) / 2);
    tc_param_layout l, pl;
    assert_int_equal(tc_param_layout_build(&l, &d->cfg), TC_OK);
    float *p = calloc(l.total, sizeof *p), *pp = NULL;
    assert_int_equal(tc_prune_z(&d->cfg, &l, p, z[0], z[1], TC_PRUNE_EXACT, pruned, &pl, &pp),
                     TC_OK);
    assert_false(pruned->irregular);
    assert_true(tc_tower_is_uniform(&pruned->vision) && tc_tower_is_uniform(&pruned->text));
    /* attention and MLP tensors of every block, before and after */
    double before = 0, after = 0;
    const tc_param_layout *ls[2] = {&l, &pl};
    double *acc[2] = {&before, &after};
    for (int j = 0; j < 2; j++)
        for (int i = 0; i < ls[j]->count; i++) {
            const char *n = ls[j]->params[i].name;
            if (strstr(n, "resblocks.") && (strstr(n, ".attn.") || strstr(n, ".mlp.")))
                *acc[j] += (double)ls[j]->params[i].count;
        }
    *counted = 1.0 - after / before;
    free(p);
    free(pp);
    tc_param_layout_free(&l);
    tc_param_layout_free(&pl);
    for (int k = 0; k < 2; k++) {
        free(g[k]);
        free(z[k]);
        free(d->imp[k]);
        tc_l0_adamw_free(&d->o[k]);
    }
}

static void print_tower(const char *what, const tc_tower_config *t) {
    print_message("  %s: width %d, %d heads, mlp %d in each of %d layers\n", what, t->width,
                  t->heads[0], t->mlp_width[0], t->layers);
}

static void test_demo_sparsity(void **state) {
    (void)state;
    demo d;
    memset(&d, 0, sizeof d);
    load_teacher(&d.cfg);
    /* auto50: from the teacher, 0 -> 0.5 */
    assert_int_equal(tc_l0_masks_for_tower_shaped(&d.m[0], &d.cfg.vision, TC_L0_REGULAR, "vision"),
                     TC_OK);
    assert_int_equal(tc_l0_masks_for_tower_shaped(&d.m[1], &d.cfg.text, TC_L0_REGULAR, "text"),
                     TC_OK);
    double f50, c50, f25, c25;
    tc_model_config p50, p25;
    mask_phase(&d, 0.0, 0.5, 120, 60, &f50, &c50, &p50);
    print_message("auto50 (regular): sparsity %.4f by the formula, %.4f by counting\n", f50, c50);
    print_tower("vision", &p50.vision);
    print_tower("text", &p50.text);
    /* auto25: auto50's pruned model re-expanded, masks 10 / -10, 0.5 -> 0.75 */
    for (int k = 0; k < 2; k++)
        tc_l0_masks_free(&d.m[k]);
    assert_int_equal(tc_expand_masks(&d.m[0], &p50.vision, &d.cfg.vision, TC_L0_REGULAR, "vision"),
                     TC_OK);
    assert_int_equal(tc_expand_masks(&d.m[1], &p50.text, &d.cfg.text, TC_L0_REGULAR, "text"),
                     TC_OK);
    mask_phase(&d, 0.5, 0.75, 120, 60, &f25, &c25, &p25);
    print_message("auto25 (regular): sparsity %.4f by the formula, %.4f by counting\n", f25, c25);
    print_tower("vision", &p25.vision);
    print_tower("text", &p25.text);
    assert_true(fabs(f50 - 0.5) <= 0.02 && fabs(c50 - 0.5) <= 0.02);
    assert_true(fabs(f25 - 0.75) <= 0.02 && fabs(c25 - 0.75) <= 0.02);
    for (int k = 0; k < 2; k++)
        tc_l0_masks_free(&d.m[k]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_expected_size),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_demo_sparsity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
