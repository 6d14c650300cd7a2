/* parity with open_clip 3.3.0 (fp32, CPU) on the tiny random CLIPs written by
 * scripts/fixtures_model.py: features (1e-5), logits, the ClipLoss value
 * (1e-5), every parameter gradient (1e-4), the losses of 10 AdamW steps with
 * warm-up + cosine, clipping and the logit-scale clamp (1e-5), the weights
 * after them, the Hugging Face layout of the same weights, and a lossless
 * open_clip -> engine -> HF export -> engine round trip. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "checkpoint.h"
#include "model.h"
#include "parity.h"
#include "safetensors.h"
#include "testutil.h"
#include "train.h"

static void check_features(parity *p, tc_model *m, const char *img_key, const char *txt_key) {
    size_t n;
    float *images = parity_f32(p, "images", NULL);
    int32_t *tokens = parity_i32(p, "tokens", NULL);
    float *want_img = parity_f32(p, img_key, &n);
    float *want_txt = parity_f32(p, txt_key, NULL);
    float *got = malloc(n * sizeof *got);
    assert_int_equal(tc_model_encode_image(m, images, p->B), TC_OK);
    assert_int_equal(tc_model_encode_text(m, tokens, p->B), TC_OK);
    assert_int_equal(p->be->download(p->be, got, tc_model_image_features(m), n * sizeof *got), TC_OK);
    TC_ASSERT_CLOSE(got, want_img, n, 1e-5, img_key);
    assert_int_equal(p->be->download(p->be, got, tc_model_text_features(m), n * sizeof *got), TC_OK);
    TC_ASSERT_CLOSE(got, want_txt, n, 1e-5, txt_key);
    free(got);
    free(want_txt);
    free(want_img);
    free(tokens);
    free(images);
}

static void features_and_logits(const char *name) {
    parity p;
    parity_setup(&p, "parity", name);
    check_features(&p, p.model, "image_features", "text_features");
    /* logits_per_image = exp(logit_scale) * img @ txt^T */
    size_t n;
    float *want = parity_f32(&p, "logits_per_image", &n);
    assert_int_equal(n, (size_t)p.B * p.B);
    int E = p.cfg.embed_dim;
    float *img = malloc((size_t)p.B * E * sizeof *img), *txt = malloc((size_t)p.B * E * sizeof *txt);
    p.be->download(p.be, img, tc_model_image_features(p.model), (size_t)p.B * E * sizeof *img);
    p.be->download(p.be, txt, tc_model_text_features(p.model), (size_t)p.B * E * sizeof *txt);
    float scale = expf(p.params[p.layout.logit_scale]);
    float *got = calloc(n, sizeof *got);
    for (int i = 0; i < p.B; i++)
        for (int j = 0; j < p.B; j++) {
            double s = 0;
            for (int e = 0; e < E; e++) s += (double)img[i * E + e] * txt[j * E + e];
            got[i * p.B + j] = (float)(scale * s);
        }
    TC_ASSERT_CLOSE(got, want, n, 1e-5, "logits_per_image");
    free(got);
    free(txt);
    free(img);
    free(want);
    parity_teardown(&p);
}

static void test_features_gelu(void **state) { features_and_logits("tiny_gelu"); }
static void test_features_quickgelu(void **state) { features_and_logits("tiny_quickgelu"); }


static void loss_and_gradients(const char *name) {
    parity p;
    parity_setup(&p, "parity", name);
    tc_optim_config o = tc_optim_default();
    tc_loss_config l = parity_clip_loss();
    tc_trainer *tr;
    assert_int_equal(tc_trainer_create(&tr, p.model, NULL, &o, &l), TC_OK);
    float *images = parity_f32(&p, "images", NULL);
    int32_t *tokens = parity_i32(&p, "tokens", NULL);
    float loss;
    assert_int_equal(tc_trainer_loss(tr, images, tokens, p.B, 1, &loss), TC_OK);
    float *want_loss = parity_f32(&p, "loss", NULL);
    TC_ASSERT_CLOSE(&loss, want_loss, 1, 1e-5, "loss");

    float *grads = malloc(p.layout.total * sizeof *grads);
    p.be->download(p.be, grads, tc_model_grads(p.model), p.layout.total * sizeof *grads);
    int checked = 0;
    for (int i = 0; i < p.layout.count; i++) {
        const tc_param_info *pi = &p.layout.params[i];
        char key[160];
        snprintf(key, sizeof key, "grad.%s", pi->name);
        size_t n;
        float *want = parity_f32(&p, key, &n);
        assert_int_equal(n, pi->count);
        TC_ASSERT_CLOSE(grads + pi->offset, want, n, 1e-4, pi->name);
        free(want);
        checked++;
    }
    assert_int_equal(checked, p.layout.count);
    free(grads);
    free(want_loss);
    free(tokens);
    free(images);
    tc_trainer_destroy(tr);
    parity_teardown(&p);
}

static void test_gradients_gelu(void **state) { loss_and_gradients("tiny_gelu"); }
static void test_gradients_quickgelu(void **state) { loss_and_gradients("tiny_quickgelu"); }


static void ten_steps(const char *name) {
    parity p;
    parity_setup(&p, "parity", name);
    tc_optim_config o = parity_recipe(&p);
    tc_loss_config l = parity_clip_loss();
    tc_trainer *tr;
    assert_int_equal(tc_trainer_create(&tr, p.model, NULL, &o, &l), TC_OK);
    size_t n_img, n_tok, n_loss;
    float *images = parity_f32(&p, "train_images", &n_img);
    int32_t *tokens = parity_i32(&p, "train_tokens", &n_tok);
    float *want = parity_f32(&p, "train_losses", &n_loss);
    assert_int_equal((int)n_loss, o.total_steps);
    size_t img_per = n_img / n_loss, tok_per = n_tok / n_loss;
    float *got = calloc(n_loss, sizeof *got);
    for (size_t s = 0; s < n_loss; s++) {
        tc_step_result r;
        assert_int_equal(tc_trainer_step(tr, images + s * img_per, tokens + s * tok_per, p.B, &r),
                         TC_OK);
        assert_false(r.skipped);
        got[s] = r.loss;
    }
    for (size_t s = 0; s < n_loss; s++)
        if (fabsf(got[s] - want[s]) > 1e-5f * fabsf(want[s]))
            fail_msg("%s: step %zu loss %.8f, open_clip %.8f", name, s, got[s], want[s]);
    /* and the weights they lead to. Adam divides by sqrt(v) + 1e-6, so an
     * element whose gradients stay near 1e-6 turns fp32 rounding noise into
     * visible update differences: the weights are held to 1e-3, the losses
     * above to 1e-5 */
    float *params = malloc(p.layout.total * sizeof *params);
    assert_int_equal(tc_model_get_params(p.model, params), TC_OK);
    for (int i = 0; i < p.layout.count; i++) {
        const tc_param_info *pi = &p.layout.params[i];
        char key[160];
        snprintf(key, sizeof key, "final.%s", pi->name);
        size_t n;
        float *w = parity_f32(&p, key, &n);
        assert_int_equal(n, pi->count);
        TC_ASSERT_CLOSE(params + pi->offset, w, n, 1e-3, key);
        free(w);
    }
    free(params);
    free(got);
    free(want);
    free(tokens);
    free(images);
    tc_trainer_destroy(tr);
    parity_teardown(&p);
}

static void test_ten_steps_gelu(void **state) { ten_steps("tiny_gelu"); }
static void test_ten_steps_quickgelu(void **state) { ten_steps("tiny_quickgelu"); }

/* the same weights saved by transformers in its CLIPModel layout */
static void hf_import(const char *name) {
    parity p;
    parity_setup(&p, "parity", name);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/parity/%s_hf", TC_FIXTURES, name);
    tc_model_config cfg;
    tc_param_layout layout;
    float *params;
    if (tc_checkpoint_load(dir, NULL, &cfg, &layout, &params) != TC_OK) fail_msg("%s", tc_last_error());
    assert_int_equal(cfg.activation, p.cfg.activation);
    assert_int_equal(layout.total, p.layout.total);
    tc_model *m;
    tc_model_options opt = {.max_batch = p.B, .train = 0};
    assert_int_equal(tc_model_create(&m, p.be, &cfg, opt), TC_OK);
    assert_int_equal(tc_model_set_params(m, params), TC_OK);
    check_features(&p, m, "hf_image_features", "hf_text_features");
    tc_model_destroy(m);
    free(params);
    tc_param_layout_free(&layout);
    parity_teardown(&p);
}

static void test_hf_import_gelu(void **state) { hf_import("tiny_gelu"); }
static void test_hf_import_quickgelu(void **state) { hf_import("tiny_quickgelu"); }

/* open_clip -> engine -> HF export -> engine: bit-identical weights */
static void test_round_trip_hf(void **state) {
    parity p;
    parity_setup(&p, "parity", "tiny_gelu");
    char *dir = tc_make_tempdir("parity-hf");
    assert_non_null(dir);
    assert_int_equal(tc_checkpoint_save(dir, TC_FORMAT_HF, &p.cfg, &p.layout, p.params), TC_OK);
    tc_model_config cfg;
    tc_param_layout layout;
    float *params;
    if (tc_checkpoint_load(dir, NULL, &cfg, &layout, &params) != TC_OK) fail_msg("%s", tc_last_error());
    assert_int_equal(layout.total, p.layout.total);
    assert_memory_equal(params, p.params, p.layout.total * sizeof(float));
    assert_int_equal(cfg.activation, p.cfg.activation);
    free(params);
    tc_param_layout_free(&layout);
    tc_rmtree(dir);
    free(dir);
    parity_teardown(&p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_features_gelu),     cmocka_unit_test(test_features_quickgelu),
        cmocka_unit_test(test_gradients_gelu),    cmocka_unit_test(test_gradients_quickgelu),
        cmocka_unit_test(test_ten_steps_gelu),    cmocka_unit_test(test_ten_steps_quickgelu),
        cmocka_unit_test(test_hf_import_gelu),    cmocka_unit_test(test_hf_import_quickgelu),
        cmocka_unit_test(test_round_trip_hf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
