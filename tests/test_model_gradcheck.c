/* finite-difference check of the whole model: the CLIP loss of a tiny random
 * model on the CPU backend, its analytic gradient for every tensor against
 * central differences on sampled elements. irregular layers (no attention, no
 * MLP), mean pooling and a missing ln_pre are covered by the second config. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "model.h"
#include "testutil.h"
#include "train.h"

static void tiny_config(tc_model_config *c, int variant) {
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "gradcheck-%d", variant);
    c->embed_dim = 16;
    c->activation = variant ? TC_QUICK_GELU : TC_GELU;
    tc_tower_config *v = &c->vision, *t = &c->text;
    v->layers = 2;
    v->width = 64;
    v->image_size = 12;
    v->patch_size = 4;
    v->heads[0] = 1;
    v->heads[1] = variant ? 0 : 2;
    v->mlp_width[0] = 96;
    v->mlp_width[1] = 80;
    v->pool = variant ? TC_POOL_MEAN : TC_POOL_TOKEN;
    v->no_ln_pre = variant;
    t->layers = 2;
    t->width = 64;
    t->context_length = 7;
    t->vocab_size = 40;
    t->heads[0] = 1;
    t->heads[1] = 1;
    t->mlp_width[0] = variant ? 0 : 128;
    t->mlp_width[1] = 72;
    t->pool = TC_POOL_ARGMAX;
    c->irregular = 1;
}

static void make_inputs(float *images, int32_t *ids, int B, const tc_model_config *c,
                        uint64_t *rng) {
    int S = c->vision.image_size, T = c->text.context_length, V = c->text.vocab_size;
    tc_fill_uniform(images, (size_t)B * 3 * S * S, rng, 1.5f);
    for (int b = 0; b < B; b++) {
        int eot = 2 + b % (T - 2);
        for (int j = 0; j < T; j++) {
            if (j < eot) ids[b * T + j] = 1 + (int)(tc_test_rand(rng) % (uint64_t)(V - 2));
            else if (j == eot) ids[b * T + j] = V - 1;
            else ids[b * T + j] = 0;
        }
    }
}

static void gradcheck(int variant) {
    tc_model_config cfg;
    tiny_config(&cfg, variant);
    tc_backend *be;
    assert_int_equal(tc_backend_cpu_create(&be, 1), TC_OK);
    int B = 3;
    tc_model *m;
    tc_model_options opt = {B, 1};
    if (tc_model_create(&m, be, &cfg, opt) != TC_OK) fail_msg("%s", tc_last_error());
    assert_int_equal(tc_model_init_random(m, 7 + variant), TC_OK);
    const tc_param_layout *L = tc_model_layout(m);
    size_t P = L->total;
    float *params = malloc(P * sizeof *params), *grads = malloc(P * sizeof *grads);
    assert_int_equal(tc_model_get_params(m, params), TC_OK);
    /* move LayerNorm weights and biases off 1/0 so their gradients are generic */
    uint64_t rng = 1234 + variant;
    for (size_t i = 0; i < P; i++) params[i] += 0.05f * ((float)(tc_test_rand(&rng) % 2001) / 1000.0f - 1.0f);
    params[L->logit_scale] = 1.0f;
    assert_int_equal(tc_model_set_params(m, params), TC_OK);

    int S = cfg.vision.image_size, T = cfg.text.context_length;
    float *images = malloc((size_t)B * 3 * S * S * sizeof *images);
    int32_t *ids = malloc((size_t)B * T * sizeof *ids);
    make_inputs(images, ids, B, &cfg, &rng);

    tc_optim_config o = tc_optim_default();
    tc_loss_config l = {1.0f, 0.0f, 0.0f, 50.0f};
    tc_trainer *tr;
    assert_int_equal(tc_trainer_create(&tr, m, NULL, &o, &l), TC_OK);
    float loss;
    assert_int_equal(tc_trainer_loss(tr, images, ids, B, 1, &loss), TC_OK);
    assert_int_equal(be->download(be, grads, tc_model_grads(m), P * sizeof *grads), TC_OK);

    const float eps = 2e-3f;
    int checked = 0, worst_i = -1;
    double worst = 0;
    for (int i = 0; i < L->count; i++) {
        const tc_param_info *pi = &L->params[i];
        /* the element with the largest gradient, and two others */
        size_t pick[3] = {0, 0, 0};
        for (size_t k = 0; k < pi->count; k++)
            if (fabsf(grads[pi->offset + k]) > fabsf(grads[pi->offset + pick[0]])) pick[0] = k;
        pick[1] = tc_test_rand(&rng) % pi->count;
        pick[2] = tc_test_rand(&rng) % pi->count;
        for (int k = 0; k < 3; k++) {
            size_t at = pi->offset + pick[k];
            float keep = params[at], lp, lm;
            params[at] = keep + eps;
            assert_int_equal(tc_model_set_params(m, params), TC_OK);
            assert_int_equal(tc_trainer_loss(tr, images, ids, B, 0, &lp), TC_OK);
            params[at] = keep - eps;
            assert_int_equal(tc_model_set_params(m, params), TC_OK);
            assert_int_equal(tc_trainer_loss(tr, images, ids, B, 0, &lm), TC_OK);
            params[at] = keep;
            double fd = ((double)lp - (double)lm) / (2.0 * eps), an = grads[at];
            double denom = fmax(fmax(fabs(fd), fabs(an)), 1e-2);
            double err = fabs(fd - an) / denom;
            if (err > worst) {
                worst = err;
                worst_i = i;
            }
            if (err > 3e-2)
                fail_msg("%s[%zu]: analytic %.6g, finite difference %.6g", pi->name, pick[k], an, fd);
            checked++;
        }
    }
    assert_int_equal(tc_model_set_params(m, params), TC_OK);
    printf("variant %d: %d elements over %d tensors, worst relative error %.2e (%s)\n", variant,
           checked, L->count, worst, worst_i >= 0 ? L->params[worst_i].name : "-");
    tc_trainer_destroy(tr);
    free(ids);
    free(images);
    free(grads);
    free(params);
    tc_model_destroy(m);
    be->destroy(be);
}

static void test_gradcheck_regular(void **state) { gradcheck(0); }
static void test_gradcheck_irregular(void **state) { gradcheck(1); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradcheck_regular),
        cmocka_unit_test(test_gradcheck_irregular),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
