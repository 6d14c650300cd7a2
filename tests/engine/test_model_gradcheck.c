/* finite-difference check of the whole model: the CLIP loss of a tiny random
 * model on the CPU backend, its analytic gradient for every tensor against
 * central differences on sampled elements. irregular layers (no attention, no
 * MLP), mean pooling and a missing ln_pre are covered by the second config;
 * the third runs with structured masks (soft values and zeros) and checks the
 * mask gradients too. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "model.h"
#include "testutil.h"
#include "train.h"

static void tiny_config(tc_model_config *c, int variant) {
    if (variant == 2) variant = 0;
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "gradcheck-%d", variant);
    c->embed_dim = 16;
    c->activation = variant ? TC_QUICK_GELU : TC_GELU;
    tc_tower_config *v = &c->vision, *t = &c->text;
    v->layers = 2;
    v->width = 64;
    v->image_size = 12;
    v->patch_size = 4;
    /* the irregular variant's heads are not 64 wide (A = 40, 24: the general
     * attention paths) */
    v->head_width = variant ? 40 : 64;
    t->head_width = variant ? 24 : 64;
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

/* both towers' masks: host values and the device copies the model reads */
typedef struct {
    int n[2];          /* floats per tower: hidden + heads + inter */
    float *host[2];    /* values */
    float *dev[2], *grad[2];
    tc_tower_masks tm[2];
} masks;

static void install_masks(masks *mk, tc_model *m, tc_backend *be) {
    const tc_model_config *c = tc_model_cfg(m);
    const tc_tower_config *tw[2] = {&c->vision, &c->text};
    uint64_t rng = 99;
    for (int k = 0; k < 2; k++) {
        int L = tw[k]->layers, H = 0, M = 0;
        for (int l = 0; l < L; l++) {
            if (tw[k]->heads[l] > H) H = tw[k]->heads[l];
            if (tw[k]->mlp_width[l] > M) M = tw[k]->mlp_width[l];
        }
        int C = tw[k]->width;
        mk->n[k] = C + L * H + L * M;
        mk->host[k] = malloc((size_t)mk->n[k] * sizeof(float));
        /* soft values in [0.3, 1], about one in eight exactly zero */
        for (int i = 0; i < mk->n[k]; i++) {
            uint64_t r = tc_test_rand(&rng);
            mk->host[k][i] = (r % 8 == 0) ? 0.0f : 0.3f + 0.7f * (float)((r >> 8) % 1000) / 1000.0f;
        }
        assert_int_equal(be->alloc(be, (size_t)mk->n[k] * sizeof(float), (void **)&mk->dev[k]), TC_OK);
        assert_int_equal(be->alloc(be, (size_t)mk->n[k] * sizeof(float), (void **)&mk->grad[k]), TC_OK);
        assert_int_equal(be->upload(be, mk->dev[k], mk->host[k], (size_t)mk->n[k] * sizeof(float)), TC_OK);
        tc_tower_masks *t = &mk->tm[k];
        t->hidden = mk->dev[k];
        t->heads = mk->dev[k] + C;
        t->inter = mk->dev[k] + C + L * H;
        t->dhidden = mk->grad[k];
        t->dheads = mk->grad[k] + C;
        t->dinter = mk->grad[k] + C + L * H;
        t->heads_stride = H;
        t->inter_stride = M;
    }
    assert_int_equal(tc_model_set_masks(m, &mk->tm[0], &mk->tm[1]), TC_OK);
}

static void free_masks(masks *mk, tc_backend *be) {
    for (int k = 0; k < 2; k++) {
        be->free(be, mk->grad[k]);
        be->free(be, mk->dev[k]);
        free(mk->host[k]);
    }
}

/* analytic mask gradients against central differences on non-zero entries
 * (a zero changes which dims the compressed LayerNorm covers) */
static void check_mask_gradients(masks *mk, tc_model *m, tc_backend *be, tc_trainer *tr,
                                 const float *images, const int32_t *ids, int B) {
    float loss;
    for (int k = 0; k < 2; k++) be->zero(be, mk->grad[k], (size_t)mk->n[k] * sizeof(float));
    assert_int_equal(tc_trainer_loss(tr, images, ids, B, 1, &loss), TC_OK);
    const float eps = 1e-3f;
    int checked = 0;
    for (int k = 0; k < 2; k++) {
        float *g = malloc((size_t)mk->n[k] * sizeof *g);
        be->download(be, g, mk->grad[k], (size_t)mk->n[k] * sizeof *g);
        for (int i = 0; i < mk->n[k]; i += 1 + mk->n[k] / 40) {
            float keep = mk->host[k][i];
            if (keep == 0.0f) continue;
            float lp, lm;
            mk->host[k][i] = keep + eps;
            be->upload(be, mk->dev[k], mk->host[k], (size_t)mk->n[k] * sizeof(float));
            assert_int_equal(tc_trainer_loss(tr, images, ids, B, 0, &lp), TC_OK);
            mk->host[k][i] = keep - eps;
            be->upload(be, mk->dev[k], mk->host[k], (size_t)mk->n[k] * sizeof(float));
            assert_int_equal(tc_trainer_loss(tr, images, ids, B, 0, &lm), TC_OK);
            mk->host[k][i] = keep;
            be->upload(be, mk->dev[k], mk->host[k], (size_t)mk->n[k] * sizeof(float));
            double fd = ((double)lp - (double)lm) / (2.0 * eps), an = g[i];
            double err = fabs(fd - an) / fmax(fmax(fabs(fd), fabs(an)), 1e-2);
            if (err > 3e-2)
                fail_msg("%s mask entry %d: analytic %.6g, finite difference %.6g",
                         k ? "text" : "vision", i, an, fd);
            checked++;
        }
        free(g);
    }
    assert_true(checked > 20);
    printf("masks: %d entries checked\n", checked);
}

static void gradcheck(int variant) {
    tc_model_config cfg;
    tiny_config(&cfg, variant);
    tc_backend *be;
    assert_int_equal(tc_backend_cpu_create(&be, &(tc_backend_options){.threads = 1}), TC_OK);
    int B = 3;
    tc_model *m;
    tc_model_options opt = {.max_batch = B, .train = 1, .masked = variant == 2};
    if (tc_model_create(&m, be, &cfg, opt) != TC_OK) fail_msg("%s", tc_last_error());
    masks mk;
    if (variant == 2) install_masks(&mk, m, be);
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
    if (variant == 2) {
        check_mask_gradients(&mk, m, be, tr, images, ids, B);
        free_masks(&mk, be);
    }
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
static void test_gradcheck_masked(void **state) { gradcheck(2); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradcheck_regular),
        cmocka_unit_test(test_gradcheck_irregular),
        cmocka_unit_test(test_gradcheck_masked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
