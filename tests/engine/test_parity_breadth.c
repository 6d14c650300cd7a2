/* parity with open_clip 3.3.0 (fp32, CPU) on the model-breadth fixtures
 * (scripts/fixtures_breadth.py, tests/fixtures/breadth/README.md):
 *   tiny_rn     a ResNet image tower: eval-mode features (running
 *               statistics) and train-mode features (batch statistics),
 *               the loss and every gradient in train mode, the BatchNorm
 *               running statistics after that forward, the 10-step AdamW
 *               trace's losses and the running statistics after it
 *   tiny_hw80   heads 80 wide (vision) and 32 (text)
 *   tiny_hw104  heads 104 wide (vision) and 80 (text)
 * features 1e-5, loss 1e-5, gradients 1e-4, losses of the trace 1e-5,
 * running statistics 1e-5 (all relative to the tensor's largest value). and
 * an RN50-shaped model with formula weights: its features against open_clip's
 * (1e-5), exported in open_clip layout (every key, shape and dtype of
 * open_clip's RN50 state_dict), read back losslessly, and embedded by
 * `tinyclip embed` from the export; the Hugging Face export refused with the
 * reason; the Hugging Face layout of a model with heads of 80 read back
 * losslessly. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "json.h"
#include "parity.h"
#include "testutil.h"

#define DIR "breadth"

/* the formula images of the io batch or of training step s (s < 0: the io batch) */
static float *images_of(const parity *p, int step) {
    const tc_tower_config *v = &p->cfg.vision;
    const int S = v->image_size, block = v->resnet ? 32 : v->patch_size;
    float *x = malloc((size_t)p->B * 3 * S * S * sizeof *x);
    assert_non_null(x);
    char name[64];
    if (step < 0)
        snprintf(name, sizeof name, "images");
    else
        snprintf(name, sizeof name, "train_images.%d", step);
    tc_test_formula_images(name, x, p->B, S, block);
    return x;
}

static void compare_device(parity *p, const float *dev, const char *key, double tol) {
    size_t n;
    float *want = parity_f32(p, key, &n), *got = malloc(n * sizeof *got);
    assert_int_equal(p->be->download(p->be, got, dev, n * sizeof *got), TC_OK);
    double e = tc_rel_err(got, want, n);
    print_message("  %s %-24s rel err %.2e\n", p->name, key, e);
    TC_ASSERT_CLOSE(got, want, n, tol, key);
    free(got);
    free(want);
}

/* every BatchNorm buffer of the model against "<prefix>.<name>" */
static void compare_buffers(parity *p, const char *prefix) {
    float *params = malloc(p->layout.total * sizeof *params);
    assert_int_equal(tc_model_get_params(p->model, params), TC_OK);
    int n = 0;
    for (int i = 0; i < p->layout.count; i++) {
        const tc_param_info *pi = &p->layout.params[i];
        if (!pi->buffer) continue;
        char key[160];
        snprintf(key, sizeof key, "%s.%s", prefix, pi->name);
        size_t cnt;
        float *want = parity_f32(p, key, &cnt);
        assert_int_equal(cnt, pi->count);
        TC_ASSERT_CLOSE(params + pi->offset, want, cnt, 1e-5, key);
        free(want);
        n++;
    }
    print_message("  %s %d BatchNorm buffers (%s) within 1e-5\n", p->name, n, prefix);
    assert_true(n > 0);
    free(params);
}

static void features(const char *name) {
    parity p;
    parity_setup(&p, DIR, name);
    float *images = images_of(&p, -1);
    int32_t *tokens = parity_i32(&p, "tokens", NULL);
    assert_int_equal(tc_model_encode_image(p.model, images, p.B), TC_OK);
    assert_int_equal(tc_model_encode_text(p.model, tokens, p.B), TC_OK);
    compare_device(&p, tc_model_image_features(p.model), "image_features", 1e-5);
    compare_device(&p, tc_model_text_features(p.model), "text_features", 1e-5);
    if (p.cfg.vision.resnet) {
        /* batch statistics, without moving the running ones */
        tc_model_set_bn_mode(p.model, TC_BN_REPLAY);
        assert_int_equal(tc_model_encode_image(p.model, images, p.B), TC_OK);
        tc_model_set_bn_mode(p.model, TC_BN_EVAL);
        compare_device(&p, tc_model_image_features(p.model), "image_features_train", 1e-5);
        float *now = malloc(p.layout.total * sizeof *now);
        assert_int_equal(tc_model_get_params(p.model, now), TC_OK);
        assert_memory_equal(now, p.params, p.layout.total * sizeof *now);
        free(now);
    }
    free(tokens);
    free(images);
    parity_teardown(&p);
}

static void loss_and_gradients(const char *name) {
    parity p;
    parity_setup(&p, DIR, name);
    tc_optim_config o = tc_optim_default();
    tc_loss_config l = parity_clip_loss();
    tc_trainer *tr;
    assert_int_equal(tc_trainer_create(&tr, p.model, NULL, &o, &l), TC_OK);
    float *images = images_of(&p, -1);
    int32_t *tokens = parity_i32(&p, "tokens", NULL);
    float loss, *want_loss = parity_f32(&p, "loss", NULL);
    assert_int_equal(tc_trainer_loss(tr, images, tokens, p.B, 1, &loss), TC_OK);
    print_message("  %s loss %.7f, open_clip %.7f\n", name, loss, want_loss[0]);
    TC_ASSERT_CLOSE(&loss, want_loss, 1, 1e-5, "loss");
    compare_device(&p, tc_model_image_features(p.model),
                   p.cfg.vision.resnet ? "image_features_train" : "image_features", 1e-5);
    float *grads = malloc(p.layout.total * sizeof *grads);
    assert_int_equal(
        p.be->download(p.be, grads, tc_model_grads(p.model), p.layout.total * sizeof *grads),
        TC_OK);
    /* the largest reference gradient of the model */
    double gmax = 0;
    for (int i = 0; i < p.layout.count; i++) {
        if (p.layout.params[i].buffer) continue;
        char key[160];
        snprintf(key, sizeof key, "grad.%s", p.layout.params[i].name);
        size_t n;
        float *want = parity_f32(&p, key, &n);
        for (size_t k = 0; k < n; k++)
            gmax = fabs(want[k]) > gmax ? fabs(want[k]) : gmax;
        free(want);
    }
    int checked = 0;
    double worst = 0;
    for (int i = 0; i < p.layout.count; i++) {
        const tc_param_info *pi = &p.layout.params[i];
        if (pi->buffer) continue;
        char key[160];
        snprintf(key, sizeof key, "grad.%s", pi->name);
        size_t n;
        float *want = parity_f32(&p, key, &n);
        assert_int_equal(n, pi->count);
        /* relative to the tensor's largest value, or to a thousandth of the
         * model's largest gradient for a gradient that is zero in exact
         * arithmetic: the attention pool's key bias shifts every score of a
         * row alike, which the softmax cancels (open_clip's and ours hold
         * rounding noise of 1e-8 against gradients up to 19) */
        double scale = 0, diff = 0;
        for (size_t k = 0; k < n; k++) {
            scale = fabs(want[k]) > scale ? fabs(want[k]) : scale;
            double d = fabs((double)grads[pi->offset + k] - want[k]);
            diff = d > diff ? d : diff;
        }
        if (scale < 1e-3 * gmax) scale = 1e-3 * gmax;
        double e = scale > 0 ? diff / scale : diff;
        worst = e > worst ? e : worst;
        if (!(e <= 1e-4)) fail_msg("%s: relative error %.3g > 1e-4", pi->name, e);
        free(want);
        checked++;
    }
    print_message("  %s %d gradients, worst rel err %.2e\n", name, checked, worst);
    if (p.cfg.vision.resnet) compare_buffers(&p, "after1");
    free(grads);
    free(want_loss);
    free(tokens);
    free(images);
    tc_trainer_destroy(tr);
    parity_teardown(&p);
}

static void ten_steps(const char *name) {
    parity p;
    parity_setup(&p, DIR, name);
    tc_optim_config o = parity_recipe(&p);
    tc_loss_config l = parity_clip_loss();
    tc_trainer *tr;
    assert_int_equal(tc_trainer_create(&tr, p.model, NULL, &o, &l), TC_OK);
    size_t n_tok, n_loss;
    int32_t *tokens = parity_i32(&p, "train_tokens", &n_tok);
    float *want = parity_f32(&p, "train_losses", &n_loss);
    assert_int_equal((int)n_loss, o.total_steps);
    double worst = 0;
    for (size_t s = 0; s < n_loss; s++) {
        float *images = images_of(&p, (int)s);
        tc_step_result r;
        assert_int_equal(tc_trainer_step(tr, images, tokens + s * (n_tok / n_loss), p.B, &r),
                         TC_OK);
        assert_false(r.skipped);
        free(images);
        double e = fabs(r.loss - want[s]) / fabs(want[s]);
        worst = e > worst ? e : worst;
        if (!(e <= 1e-5))
            fail_msg("%s: step %zu loss %.8f, open_clip %.8f", name, s, r.loss, want[s]);
    }
    print_message("  %s %zu steps, worst relative loss difference %.2e\n", name, n_loss, worst);
    if (p.cfg.vision.resnet) compare_buffers(&p, "final");
    free(want);
    free(tokens);
    tc_trainer_destroy(tr);
    parity_teardown(&p);
}

static void test_resnet(void **state) {
    (void)state;
    features("tiny_rn");
    loss_and_gradients("tiny_rn");
    ten_steps("tiny_rn");
}

/* heads that are not 64 wide survive the Hugging Face layout (CLIPConfig
 * counts heads; their size is hidden_size / num_attention_heads) */
static void hf_round_trip(const char *name) {
    parity p;
    parity_setup(&p, DIR, name);
    char *dir = tc_make_tempdir("breadth-hf");
    assert_non_null(dir);
    assert_int_equal(tc_checkpoint_save(dir, TC_FORMAT_HF, &p.cfg, &p.layout, p.params), TC_OK);
    tc_model_config cfg;
    tc_param_layout layout;
    float *params;
    if (tc_checkpoint_load(dir, NULL, &cfg, &layout, &params) != TC_OK)
        fail_msg("%s", tc_last_error());
    assert_int_equal(cfg.vision.head_width, p.cfg.vision.head_width);
    assert_int_equal(cfg.text.head_width, p.cfg.text.head_width);
    assert_int_equal(layout.total, p.layout.total);
    assert_memory_equal(params, p.params, p.layout.total * sizeof *params);
    free(params);
    tc_param_layout_free(&layout);
    tc_rmtree(dir);
    free(dir);
    parity_teardown(&p);
}

static void test_head_width_80(void **state) {
    (void)state;
    features("tiny_hw80");
    loss_and_gradients("tiny_hw80");
    ten_steps("tiny_hw80");
    hf_round_trip("tiny_hw80");
}

static void test_head_width_104(void **state) {
    (void)state;
    features("tiny_hw104");
    loss_and_gradients("tiny_hw104");
    ten_steps("tiny_hw104");
}

/* ---- RN50 with formula weights ---- */

/* the export's header against open_clip's state_dict: same keys in the same
 * order, same shapes and dtypes */
static void check_keys(const char *weights) {
    char path[1024];
    snprintf(path, sizeof path, "%s/" DIR "/rn50_keys.json", TC_FIXTURES);
    size_t len;
    char *text = tc_read_file(path, &len);
    assert_non_null(text);
    tc_json *keys;
    assert_int_equal(tc_json_parse(text, len, path, &keys), TC_OK);
    tc_safetensors *st;
    if (tc_st_open(&st, weights) != TC_OK) fail_msg("%s", tc_last_error());
    assert_int_equal((size_t)tc_st_count(st), keys->count);
    for (size_t i = 0; i < keys->count; i++) {
        const tc_json *k = &keys->items[i];
        const char *name = tc_json_get(k, "name")->string;
        const tc_json *shape = tc_json_get(k, "shape");
        const char *dtype = tc_json_get(k, "dtype")->string;
        const tc_st_tensor *t = tc_st_tensor_at(st, (int)i);
        if (strcmp(t->name, name) != 0)
            fail_msg("tensor %zu is %s, open_clip's %s", i, t->name, name);
        assert_int_equal((size_t)t->ndim, shape->count);
        for (size_t d = 0; d < shape->count; d++)
            assert_int_equal(t->shape[d], shape->items[d].integer);
        const char *want = strcmp(dtype, "int64") == 0 ? "I64" : "F32";
        if (strcmp(tc_dtype_name(t->dtype), want) != 0)
            fail_msg("%s: dtype %s, open_clip's %s", name, tc_dtype_name(t->dtype), dtype);
    }
    print_message("  export: %zu tensors, keys, shapes and dtypes as open_clip's RN50\n",
                  keys->count);
    tc_st_close(st);
    tc_json_free(keys);
    free(text);
}

static void test_rn50_formula(void **state) {
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/configs/models/RN50.json", TC_SOURCE_DIR);
    tc_model_config cfg;
    if (tc_model_config_load(&cfg, path) != TC_OK) fail_msg("%s", tc_last_error());
    tc_param_layout layout;
    assert_int_equal(tc_param_layout_build(&layout, &cfg), TC_OK);
    float *params = malloc(layout.total * sizeof *params);
    assert_int_equal(tc_test_formula_params(&layout, params), 0);
    tc_safetensors *ref;
    snprintf(path, sizeof path, "%s/" DIR "/rn50_formula.safetensors", TC_FIXTURES);
    if (tc_st_open(&ref, path) != TC_OK) fail_msg("%s", tc_last_error());
    const int B = 2, S = 224, E = cfg.embed_dim, T = cfg.text.context_length;
    float *images = malloc((size_t)B * 3 * S * S * sizeof *images);
    tc_test_formula_images("image", images, B, S, 32);
    int32_t *tokens = malloc((size_t)B * T * sizeof *tokens);
    float *want_img = malloc((size_t)B * E * sizeof(float)), *want_txt = malloc((size_t)B * E * 4);
    const int64_t tshape[2] = {B, T}, fshape[2] = {B, E};
    assert_int_equal(tc_st_read_i32(ref, "tokens", 2, tshape, tokens), TC_OK);
    assert_int_equal(tc_st_read_f32(ref, "image_features", 2, fshape, want_img), TC_OK);
    assert_int_equal(tc_st_read_f32(ref, "text_features", 2, fshape, want_txt), TC_OK);

    /* the engine's forward, eval mode */
    tc_backend *be;
    assert_int_equal(tc_backend_cpu_create(&be, &(tc_backend_options){.threads = 2}), TC_OK);
    tc_model *m;
    tc_model_options opt = {.max_batch = B};
    assert_int_equal(tc_model_create(&m, be, &cfg, opt), TC_OK);
    assert_int_equal(tc_model_set_params(m, params), TC_OK);
    assert_int_equal(tc_model_encode_image(m, images, B), TC_OK);
    assert_int_equal(tc_model_encode_text(m, tokens, B), TC_OK);
    float *got = malloc((size_t)B * E * sizeof *got);
    be->download(be, got, tc_model_image_features(m), (size_t)B * E * sizeof *got);
    print_message("  RN50 formula image features rel err %.2e\n",
                  tc_rel_err(got, want_img, (size_t)B * E));
    TC_ASSERT_CLOSE(got, want_img, (size_t)B * E, 1e-5, "RN50 image features");
    be->download(be, got, tc_model_text_features(m), (size_t)B * E * sizeof *got);
    TC_ASSERT_CLOSE(got, want_txt, (size_t)B * E, 1e-5, "RN50 text features");
    tc_model_destroy(m);
    be->destroy(be);

    /* exported in open_clip layout: open_clip's keys, read back losslessly.
     * TC_RN50_EXPORT_DIR keeps a copy there, for open_clip itself to load
     * (scripts/fixtures_breadth.py --check-export DIR) */
    char *dir = tc_make_tempdir("rn50");
    assert_int_equal(tc_checkpoint_save(dir, TC_FORMAT_OPENCLIP, &cfg, &layout, params), TC_OK);
    const char *keep = getenv("TC_RN50_EXPORT_DIR");
    if (keep && keep[0])
        assert_int_equal(tc_checkpoint_save(keep, TC_FORMAT_OPENCLIP, &cfg, &layout, params),
                         TC_OK);
    snprintf(path, sizeof path, "%s/open_clip_model.safetensors", dir);
    check_keys(path);
    tc_model_config back_cfg;
    tc_param_layout back_layout;
    float *back;
    if (tc_checkpoint_load(dir, NULL, &back_cfg, &back_layout, &back) != TC_OK)
        fail_msg("%s", tc_last_error());
    assert_true(back_cfg.vision.resnet);
    assert_int_equal(back_layout.total, layout.total);
    assert_memory_equal(back, params, layout.total * sizeof *params);
    /* Hugging Face has no ResNet CLIP: refused, nothing half-written */
    char hf[1100];
    snprintf(hf, sizeof hf, "%s/hf", dir);
    assert_int_equal(tc_checkpoint_save(hf, TC_FORMAT_HF, &cfg, &layout, params),
                     TC_ERR_UNSUPPORTED);
    assert_non_null(strstr(tc_last_error(), "no ResNet image tower"));

    /* tinyclip embed on the export */
    char px[1100], tk[1100], out[1100], cmd[4000], *log = NULL;
    snprintf(px, sizeof px, "%s/pixels.safetensors", dir);
    snprintf(tk, sizeof tk, "%s/tokens.safetensors", dir);
    snprintf(out, sizeof out, "%s/features.safetensors", dir);
    tc_st_write_tensor wp = {"pixels", TC_DT_F32, 4, {B, 3, S, S}, images};
    tc_st_write_tensor wt = {"tokens", TC_DT_I32, 2, {B, T}, tokens};
    assert_int_equal(tc_st_write(px, &wp, 1, NULL, NULL, 0), TC_OK);
    assert_int_equal(tc_st_write(tk, &wt, 1, NULL, NULL, 0), TC_OK);
    snprintf(cmd, sizeof cmd, "embed %s --pixels %s --tokens %s --out %s", dir, px, tk, out);
    if (tc_run_cli(cmd, &log) != 0) fail_msg("tinyclip %s:\n%s", cmd, log);
    free(log);
    tc_safetensors *emb;
    if (tc_st_open(&emb, out) != TC_OK) fail_msg("%s", tc_last_error());
    assert_int_equal(tc_st_read_f32(emb, "image_features", 2, fshape, got), TC_OK);
    TC_ASSERT_CLOSE(got, want_img, (size_t)B * E, 1e-5, "tinyclip embed RN50 image features");
    assert_int_equal(tc_st_read_f32(emb, "text_features", 2, fshape, got), TC_OK);
    TC_ASSERT_CLOSE(got, want_txt, (size_t)B * E, 1e-5, "tinyclip embed RN50 text features");
    print_message("  tinyclip embed of the export: open_clip's features within 1e-5\n");
    tc_st_close(emb);

    tc_rmtree(dir);
    free(dir);
    free(back);
    tc_param_layout_free(&back_layout);
    free(got), free(want_img), free(want_txt), free(tokens), free(images), free(params);
    tc_st_close(ref);
    tc_param_layout_free(&layout);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resnet),
        cmocka_unit_test(test_head_width_80),
        cmocka_unit_test(test_head_width_104),
        cmocka_unit_test(test_rn50_formula),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
