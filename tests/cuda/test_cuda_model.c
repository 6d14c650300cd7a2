/* the whole model and the whole training step on the CUDA backend against the
 * CPU backend: features and every parameter gradient (fp32 mode 1e-5 / 1e-4,
 * bf16 mode within bf16 rounding), a masked model, and 20 steps of a
 * distillation stage (teacher + student, affinity loss) in fp32 mode with
 * losses within 1e-4 relative. the same again with every fast path on
 * (matmul plans, fused epilogues, the step recorded as a graph): the fused
 * forms must keep the same tolerances (bf16: the GELU epilogue's tanh form
 * is within 5e-4 of erf, inside bf16 rounding), and the distillation steps
 * must be recorded once and replayed. skipped, with the reason, without a
 * GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "model.h"
#include "testutil.h"
#include "train.h"

#ifdef TC_HAVE_CUDA
#include "tc_cuda.h"
#endif

static tc_backend *cpu, *gpu;

static void tiny(tc_model_config *c, int irregular) {
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "cuda-model-%d", irregular);
    c->embed_dim = 64;
    c->activation = TC_GELU;
    tc_tower_config *v = &c->vision, *t = &c->text;
    v->layers = 2;
    v->width = 128;
    v->head_width = t->head_width = 64;
    v->image_size = 32;
    v->patch_size = 8;
    v->pool = TC_POOL_TOKEN;
    t->layers = 2;
    t->width = 128;
    t->context_length = 12;
    t->vocab_size = 300;
    t->pool = TC_POOL_ARGMAX;
    for (int l = 0; l < 2; l++) {
        v->heads[l] = t->heads[l] = 2;
        v->mlp_width[l] = t->mlp_width[l] = 512;
    }
    if (irregular) {
        v->heads[1] = 1;
        v->mlp_width[0] = 200;
        t->mlp_width[1] = 0;
        c->irregular = 1;
    }
}

static void inputs(const tc_model_config *c, int B, float *img, int32_t *ids, uint64_t seed) {
    uint64_t r = seed;
    int S = c->vision.image_size, T = c->text.context_length, V = c->text.vocab_size;
    tc_fill_uniform(img, (size_t)B * 3 * S * S, &r, 2.0f);
    for (int b = 0; b < B; b++)
        for (int j = 0; j < T; j++) {
            int eot = 2 + b % (T - 2);
            ids[b * T + j] = j < eot    ? 1 + (int)(tc_test_rand(&r) % (uint64_t)(V - 2))
                             : j == eot ? V - 1
                                        : 0;
        }
}

static int setup(void **state) {
    if (tc_backend_cpu_create(&cpu, &(tc_backend_options){.threads = 1}) != TC_OK) return -1;
    return 0;
}

static int teardown(void **state) {
    if (cpu) cpu->destroy(cpu);
    return 0;
}

/* fast: every fast path on (options gemm_plans, gemm_epilogue, cuda_graph) */
static void open_gpu(int fp32, int fast) {
#ifdef TC_HAVE_CUDA
    /* no device: skip; a device the backend cannot use: a failure */
    char why[256] = "";
    if (tc_cuda_device_count(why, sizeof why) <= 0) tc_skip_test("no CUDA device: %s", why);
    tc_backend_options o = tc_backend_options_default();
    o.fp32 = fp32;
    o.gemm_plans = o.gemm_epilogue = o.cuda_graph = fast;
    if (tc_backend_cuda_create(&gpu, &o) != TC_OK)
        fail_msg("the CUDA backend: %s", tc_last_error());
#else
    (void)fp32;
    (void)fast;
    tc_skip_test("this build has no CUDA backend");
#endif
}

/* features and gradients of one CLIP-loss step on both backends */
static void compare_model(int irregular, int fp32, int fast) {
    open_gpu(fp32, fast);
    tc_model_config c;
    tiny(&c, irregular);
    int B = 6, S = c.vision.image_size, T = c.text.context_length, E = c.embed_dim;
    tc_model *mc, *mg;
    tc_model_options o = {.max_batch = B, .train = 1};
    assert_int_equal(tc_model_create(&mc, cpu, &c, o), TC_OK);
    assert_int_equal(tc_model_create(&mg, gpu, &c, o), TC_OK);
    assert_int_equal(tc_model_init_random(mc, 11), TC_OK);
    size_t P = tc_model_layout(mc)->total;
    float *p = malloc(P * sizeof *p), *gc = malloc(P * sizeof *gc), *gg = malloc(P * sizeof *gg);
    assert_int_equal(tc_model_get_params(mc, p), TC_OK);
    assert_int_equal(tc_model_set_params(mg, p), TC_OK);
    float *img = malloc((size_t)B * 3 * S * S * sizeof *img);
    int32_t *ids = malloc((size_t)B * T * sizeof *ids);
    inputs(&c, B, img, ids, 5);
    tc_optim_config opt = tc_optim_default();
    tc_loss_config l = {1.0f, 0.0f, 0.0f, 50.0f};
    tc_trainer *tc, *tg;
    assert_int_equal(tc_trainer_create(&tc, mc, NULL, &opt, &l), TC_OK);
    assert_int_equal(tc_trainer_create(&tg, mg, NULL, &opt, &l), TC_OK);
    float lc, lg;
    assert_int_equal(tc_trainer_loss(tc, img, ids, B, 1, &lc), TC_OK);
    assert_int_equal(tc_trainer_loss(tg, img, ids, B, 1, &lg), TC_OK);
    assert_int_equal(gpu->synchronize(gpu), TC_OK);
    double ftol = fp32 ? 1e-5 : 2e-2, gtol = fp32 ? 1e-4 : 5e-2;
    float fc[64 * 6], fg[64 * 6];
    cpu->download(cpu, fc, tc_model_image_features(mc), (size_t)B * E * sizeof(float));
    gpu->download(gpu, fg, tc_model_image_features(mg), (size_t)B * E * sizeof(float));
    TC_ASSERT_CLOSE(fg, fc, (size_t)B * E, ftol, "image features");
    cpu->download(cpu, fc, tc_model_text_features(mc), (size_t)B * E * sizeof(float));
    gpu->download(gpu, fg, tc_model_text_features(mg), (size_t)B * E * sizeof(float));
    TC_ASSERT_CLOSE(fg, fc, (size_t)B * E, ftol, "text features");
    TC_ASSERT_CLOSE(&lg, &lc, 1, ftol, "loss");
    cpu->download(cpu, gc, tc_model_grads(mc), P * sizeof(float));
    gpu->download(gpu, gg, tc_model_grads(mg), P * sizeof(float));
    const tc_param_layout *L = tc_model_layout(mc);
    for (int i = 0; i < L->count; i++) {
        const tc_param_info *pi = &L->params[i];
        for (size_t k = 0; k < pi->count; k++)
            if (isnan(gg[pi->offset + k])) fail_msg("%s: NaN in the CUDA gradient", pi->name);
        TC_ASSERT_CLOSE(gg + pi->offset, gc + pi->offset, pi->count, gtol, pi->name);
    }
    tc_trainer_destroy(tg);
    tc_trainer_destroy(tc);
    free(ids);
    free(img);
    free(gg);
    free(gc);
    free(p);
    tc_model_destroy(mg);
    tc_model_destroy(mc);
    gpu->destroy(gpu);
}

static void test_model_fp32(void **state) {
    compare_model(0, 1, 0);
}
static void test_model_irregular_fp32(void **state) {
    compare_model(1, 1, 0);
}
static void test_model_bf16(void **state) {
    compare_model(0, 0, 0);
}
/* the fast paths: fp32 (residual, bias gradient in the GEMM, plans; GELU
 * stays exact), bf16 (and the GELU epilogue), an irregular model (widths
 * that are not multiples of 8 take the unfused fallbacks) */
static void test_model_fast_fp32(void **state) {
    compare_model(0, 1, 1);
}
static void test_model_fast_irregular_fp32(void **state) {
    compare_model(1, 1, 1);
}
static void test_model_fast_bf16(void **state) {
    compare_model(0, 0, 1);
}

/* 20 distillation steps (teacher forward, affinity loss, AdamW) on both;
 * fast: with the CUDA fast paths, the step recorded once and replayed */
static void distill_steps_fp32(int fast) {
    open_gpu(1, fast);
    tc_model_config sc, tcfg;
    tiny(&sc, 1);
    tiny(&tcfg, 0);
    tcfg.vision.layers = tcfg.text.layers = 3;
    for (int k = 0; k < 2; k++) {
        tc_tower_config *t = k ? &tcfg.text : &tcfg.vision;
        t->heads[2] = 2;
        t->mlp_width[2] = 512;
    }
    snprintf(tcfg.name, sizeof tcfg.name, "teacher");
    int B = 8, S = sc.vision.image_size, T = sc.text.context_length;
    tc_model *st[2], *te[2];
    tc_backend *be[2] = {cpu, gpu};
    tc_trainer *tr[2];
    tc_optim_config opt = tc_optim_default();
    opt.lr = 1e-3f;
    opt.warmup_steps = 5;
    opt.total_steps = 20;
    opt.grad_clip = 5.0f;
    tc_loss_config l = {0.0f, 1.0f, 50.0f, 50.0f};
    float *tp = NULL, *sp = NULL;
    for (int k = 0; k < 2; k++) {
        tc_model_options so = {.max_batch = B, .train = 1}, to = {.max_batch = B, .train = 0};
        assert_int_equal(tc_model_create(&st[k], be[k], &sc, so), TC_OK);
        assert_int_equal(tc_model_create(&te[k], be[k], &tcfg, to), TC_OK);
        if (k == 0) {
            assert_int_equal(tc_model_init_random(st[0], 3), TC_OK);
            assert_int_equal(tc_model_init_random(te[0], 4), TC_OK);
            sp = malloc(tc_model_layout(st[0])->total * sizeof *sp);
            tp = malloc(tc_model_layout(te[0])->total * sizeof *tp);
            tc_model_get_params(st[0], sp);
            tc_model_get_params(te[0], tp);
        } else {
            assert_int_equal(tc_model_set_params(st[1], sp), TC_OK);
            assert_int_equal(tc_model_set_params(te[1], tp), TC_OK);
        }
        assert_int_equal(tc_trainer_create(&tr[k], st[k], te[k], &opt, &l), TC_OK);
    }
    float *img = malloc((size_t)B * 3 * S * S * sizeof *img);
    int32_t *ids = malloc((size_t)B * T * sizeof *ids);
    for (int s = 0; s < 20; s++) {
        inputs(&sc, B, img, ids, 100 + (uint64_t)s);
        tc_step_result r[2];
        for (int k = 0; k < 2; k++)
            assert_int_equal(tc_trainer_step(tr[k], img, ids, B, &r[k]), TC_OK);
        if (fabsf(r[1].loss - r[0].loss) > 1e-4f * fabsf(r[0].loss))
            fail_msg("step %d: CUDA loss %.8f, CPU loss %.8f", s, r[1].loss, r[0].loss);
        if (r[1].lr != r[0].lr)
            fail_msg("step %d: lr %g on CUDA, %g on the CPU", s, r[1].lr, r[0].lr);
    }
    const tc_step_graph_state *gs = tc_trainer_graph_state(tr[1]);
    printf("  %s: %lld steps launched, %lld recorded, %lld replayed\n",
           fast ? "fast paths" : "plain", gs->launched, gs->captured, gs->replayed);
    if (fast && (gs->launched != 1 || gs->captured != 1 || gs->replayed != 18))
        fail_msg("the distillation steps were not recorded once and replayed");
    for (int k = 0; k < 2; k++) {
        tc_trainer_destroy(tr[k]);
        tc_model_destroy(te[k]);
        tc_model_destroy(st[k]);
    }
    free(ids);
    free(img);
    free(tp);
    free(sp);
    gpu->destroy(gpu);
}

static void test_distill_steps_fp32(void **state) {
    distill_steps_fp32(0);
}
static void test_distill_steps_graph_fp32(void **state) {
    distill_steps_fp32(1);
}

/* a ResNet CLIP trained with the CLIP loss, 12 steps on both backends (fp32)
 * with every fast path on: the losses agree, and the CUDA steps are
 * recorded once and replayed. the gradient norm and AdamW of a ResNet take
 * two different segment lists; the backend keeps both tables
 * (cuda/seg_slots.h), so no step uploads one and waits for the device, which
 * a recording refuses */
static void test_resnet_steps_graph_fp32(void **state) {
    (void)state;
    open_gpu(1, 1);
    const char *json =
        "{\"embed_dim\": 48, \"vision_cfg\": {\"image_size\": 64, \"layers\": [1, 2, 1, 1], "
        "\"width\": 8, \"head_width\": 32, \"patch_size\": null}, \"text_cfg\": "
        "{\"context_length\": 8, \"vocab_size\": 40, \"width\": 64, \"heads\": 2, \"layers\": 1}}";
    tc_model_config c;
    if (tc_model_config_parse(&c, json, strlen(json), "resnet") != TC_OK)
        fail_msg("%s", tc_last_error());
    const int B = 6, S = c.vision.image_size, T = c.text.context_length, steps = 12;
    tc_backend *be[2] = {cpu, gpu};
    tc_model *m[2];
    tc_trainer *tr[2];
    tc_optim_config opt = tc_optim_default();
    opt.lr = 1e-3f;
    opt.warmup_steps = 3;
    opt.total_steps = steps;
    opt.grad_clip = 5.0f;
    tc_loss_config l = {1.0f, 0.0f, 0.0f, 50.0f};
    float *p = NULL;
    for (int k = 0; k < 2; k++) {
        tc_model_options o = {.max_batch = B, .train = 1};
        assert_int_equal(tc_model_create(&m[k], be[k], &c, o), TC_OK);
        if (k == 0) {
            assert_int_equal(tc_model_init_random(m[0], 5), TC_OK);
            p = malloc(tc_model_layout(m[0])->total * sizeof *p);
            tc_model_get_params(m[0], p);
        } else {
            assert_int_equal(tc_model_set_params(m[1], p), TC_OK);
        }
        assert_int_equal(tc_trainer_create(&tr[k], m[k], NULL, &opt, &l), TC_OK);
    }
    float *img = malloc((size_t)B * 3 * S * S * sizeof *img);
    int32_t *ids = malloc((size_t)B * T * sizeof *ids);
    for (int s = 0; s < steps; s++) {
        inputs(&c, B, img, ids, 300 + (uint64_t)s);
        tc_step_result r[2];
        for (int k = 0; k < 2; k++)
            assert_int_equal(tc_trainer_step(tr[k], img, ids, B, &r[k]), TC_OK);
        if (fabsf(r[1].loss - r[0].loss) > 1e-4f * fabsf(r[0].loss))
            fail_msg("step %d: CUDA loss %.8f, CPU loss %.8f", s, r[1].loss, r[0].loss);
    }
    const tc_step_graph_state *gs = tc_trainer_graph_state(tr[1]);
    printf("  resnet: %lld steps launched, %lld recorded, %lld replayed\n", gs->launched,
           gs->captured, gs->replayed);
    if (gs->launched != 1 || gs->captured != 1 || gs->replayed != steps - 2)
        fail_msg("the ResNet steps were not recorded once and replayed");
    for (int k = 0; k < 2; k++) {
        tc_trainer_destroy(tr[k]);
        tc_model_destroy(m[k]);
    }
    free(ids);
    free(img);
    free(p);
    gpu->destroy(gpu);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_fp32),
        cmocka_unit_test(test_model_irregular_fp32),
        cmocka_unit_test(test_model_bf16),
        cmocka_unit_test(test_distill_steps_fp32),
        cmocka_unit_test(test_model_fast_fp32),
        cmocka_unit_test(test_model_fast_irregular_fp32),
        cmocka_unit_test(test_model_fast_bf16),
        cmocka_unit_test(test_distill_steps_graph_fp32),
        cmocka_unit_test(test_resnet_steps_graph_fp32),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
