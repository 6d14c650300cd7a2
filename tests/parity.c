/* the helpers of tests/parity.h */
#include "parity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "testutil.h"

float *parity_f32(parity *p, const char *name, size_t *numel) {
    const tc_st_tensor *t = tc_st_find(p->io, name);
    if (!t) fail_msg("%s_io.safetensors: tensor %s missing", p->name, name);
    float *x = malloc(t->numel * sizeof *x + 1);
    assert_non_null(x);
    if (tc_st_tensor_to_f32(p->io, t, x) != TC_OK) fail_msg("%s", tc_last_error());
    if (numel) *numel = t->numel;
    return x;
}

int32_t *parity_i32(parity *p, const char *name, size_t *numel) {
    const tc_st_tensor *t = tc_st_find(p->io, name);
    if (!t) fail_msg("%s_io.safetensors: tensor %s missing", p->name, name);
    assert_int_equal(t->dtype, TC_DT_I32);
    int32_t *x = malloc(t->numel * sizeof *x + 1);
    assert_non_null(x);
    memcpy(x, t->data, t->numel * sizeof *x);
    if (numel) *numel = t->numel;
    return x;
}

int parity_has(parity *p, const char *name) {
    return tc_st_find(p->io, name) != NULL;
}

float parity_meta_float(parity *p, const char *key) {
    const char *v = tc_st_metadata(p->io, key);
    if (!v) fail_msg("%s_io.safetensors: metadata %s missing", p->name, key);
    return strtof(v, NULL);
}

void parity_setup(parity *p, const char *dir, const char *name) {
    char path[1024], cfgpath[1024];
    memset(p, 0, sizeof *p);
    p->name = name;
    snprintf(cfgpath, sizeof cfgpath, "%s/%s/%s.json", TC_FIXTURES, dir, name);
    snprintf(path, sizeof path, "%s/%s/%s_model.safetensors", TC_FIXTURES, dir, name);
    if (!tc_file_exists(path)) fail_msg("fixture %s missing: run scripts/make_fixtures.py", path);
    tc_model_config hint;
    if (tc_model_config_load(&hint, cfgpath) != TC_OK) fail_msg("%s", tc_last_error());
    if (tc_checkpoint_load(path, &hint, &p->cfg, &p->layout, &p->params) != TC_OK)
        fail_msg("%s", tc_last_error());
    assert_int_equal(p->cfg.activation, hint.activation);
    snprintf(path, sizeof path, "%s/%s/%s_io.safetensors", TC_FIXTURES, dir, name);
    if (tc_st_open(&p->io, path) != TC_OK) fail_msg("%s", tc_last_error());
    const tc_st_tensor *tok = tc_st_find(p->io, "tokens");
    assert_non_null(tok);
    p->B = (int)tok->shape[0];
    if (tc_backend_cpu_create(&p->be, &(tc_backend_options){.threads = 1}) != TC_OK)
        fail_msg("%s", tc_last_error());
    tc_model_options opt = {.max_batch = p->B, .train = 1};
    if (tc_model_create(&p->model, p->be, &p->cfg, opt) != TC_OK) fail_msg("%s", tc_last_error());
    if (tc_model_set_params(p->model, p->params) != TC_OK) fail_msg("%s", tc_last_error());
}

void parity_teardown(parity *p) {
    tc_model_destroy(p->model);
    p->be->destroy(p->be);
    tc_st_close(p->io);
    free(p->params);
    tc_param_layout_free(&p->layout);
}

tc_optim_config parity_recipe(parity *p) {
    tc_optim_config o = {
        .lr = parity_meta_float(p, "lr"),
        .weight_decay = parity_meta_float(p, "wd"),
        .beta1 = parity_meta_float(p, "beta1"),
        .beta2 = parity_meta_float(p, "beta2"),
        .eps = parity_meta_float(p, "eps"),
        .warmup_steps = (int)parity_meta_float(p, "warmup"),
        .total_steps = (int)parity_meta_float(p, "steps"),
        .schedule = TC_SCHEDULE_COSINE,
        .grad_clip = parity_meta_float(p, "grad_clip"),
    };
    return o;
}

tc_loss_config parity_clip_loss(void) {
    tc_loss_config l = {1.0f, 0.0f, 0.0f, 50.0f};
    return l;
}
