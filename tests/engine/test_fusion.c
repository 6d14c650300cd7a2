/* the decisions behind the CUDA fast paths, checked without a device:
 *   - which fused form each linear layer of a block takes (engine/fusion.h)
 *     for a GELU and a QuickGELU model, with and without masks, with and
 *     without the backend's fused ops;
 *   - when a training step is recorded as a graph, replayed or launched
 *     (engine/step_graph.h), rule by rule;
 *   - the trainer on a CPU backend given graph ops that refuse to record:
 *     it must notice, fall back to launches (with the lr read from
 *     the device scalar, as a replay would) and give the same bits as a
 *     trainer without graph ops, step after step. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "backend.h"
#include "fusion.h"
#include "model.h"
#include "step_graph.h"
#include "train.h"

static const tc_fusion_avail ALL = {1, 1, 1}, NONE = {0, 0, 0};

static void test_fusion_gelu_model(void **state) {
    (void)state;
    tc_linear_fusion f = tc_linear_fusion_for(ALL, TC_GELU, 0, TC_LIN_QKV);
    assert_int_equal(f.fwd, TC_FWD_BIAS);
    assert_false(f.act_kernel || f.add_kernel || f.dinp_dgelu);
    assert_true(f.bias_grad_gemm);
    f = tc_linear_fusion_for(ALL, TC_GELU, 0, TC_LIN_OUT);
    assert_int_equal(f.fwd, TC_FWD_BIAS_RESIDUAL);
    assert_false(f.add_kernel);
    f = tc_linear_fusion_for(ALL, TC_GELU, 0, TC_LIN_FC);
    assert_int_equal(f.fwd, TC_FWD_GELU_AUX_BIAS);
    assert_false(f.act_kernel);
    f = tc_linear_fusion_for(ALL, TC_GELU, 0, TC_LIN_PROJ);
    assert_int_equal(f.fwd, TC_FWD_BIAS_RESIDUAL);
    assert_true(f.dinp_dgelu);
    assert_true(f.bias_grad_gemm);
    /* the head projection and the patch embedding have no bias */
    f = tc_linear_fusion_for(ALL, TC_GELU, 0, TC_LIN_HEAD);
    assert_int_equal(f.fwd, TC_FWD_PLAIN);
    assert_false(f.bias_grad_gemm);
    f = tc_linear_fusion_for(ALL, TC_GELU, 0, TC_LIN_PATCH);
    assert_int_equal(f.fwd, TC_FWD_PLAIN);
}

static void test_fusion_quick_gelu_model(void **state) {
    (void)state;
    /* no QuickGELU epilogue: FC keeps bias + the activation kernel, PROJ's
     * input gradient stays a plain product; the residual adds still fuse */
    tc_linear_fusion f = tc_linear_fusion_for(ALL, TC_QUICK_GELU, 0, TC_LIN_FC);
    assert_int_equal(f.fwd, TC_FWD_BIAS);
    assert_true(f.act_kernel);
    f = tc_linear_fusion_for(ALL, TC_QUICK_GELU, 0, TC_LIN_PROJ);
    assert_int_equal(f.fwd, TC_FWD_BIAS_RESIDUAL);
    assert_false(f.dinp_dgelu);
    assert_true(f.bias_grad_gemm);
    f = tc_linear_fusion_for(ALL, TC_QUICK_GELU, 0, TC_LIN_OUT);
    assert_int_equal(f.fwd, TC_FWD_BIAS_RESIDUAL);
}

static void test_fusion_masked_and_unavailable(void **state) {
    (void)state;
    static const tc_linear_kind kinds[] = {TC_LIN_QKV, TC_LIN_OUT, TC_LIN_FC, TC_LIN_PROJ};
    for (int masked = 0; masked < 2; masked++)
        for (size_t i = 0; i < 4; i++) {
            /* masks (mask phase) or a backend without the fused ops: the
             * unfused sequence, a separate add and activation everywhere */
            const tc_fusion_avail avail = masked ? ALL : NONE;
            tc_linear_fusion f = tc_linear_fusion_for(avail, TC_GELU, masked, kinds[i]);
            assert_int_equal(f.fwd, TC_FWD_BIAS);
            assert_false(f.dinp_dgelu);
            assert_int_equal(f.add_kernel, kinds[i] == TC_LIN_OUT || kinds[i] == TC_LIN_PROJ);
            assert_int_equal(f.act_kernel, kinds[i] == TC_LIN_FC);
            /* the bias gradient goes into the GEMM whenever the backend does it */
            assert_int_equal(f.bias_grad_gemm, masked);
        }
    /* only the residual op: no GELU fusion, the residual fused */
    const tc_fusion_avail res_only = {1, 0, 0};
    tc_linear_fusion f = tc_linear_fusion_for(res_only, TC_GELU, 0, TC_LIN_FC);
    assert_int_equal(f.fwd, TC_FWD_BIAS);
    f = tc_linear_fusion_for(res_only, TC_GELU, 0, TC_LIN_PROJ);
    assert_int_equal(f.fwd, TC_FWD_BIAS_RESIDUAL);
    assert_false(f.dinp_dgelu || f.bias_grad_gemm);
    /* the CPU backend offers none of it */
    tc_backend *cpu = NULL;
    assert_int_equal(tc_backend_cpu_create(&cpu, NULL), TC_OK);
    tc_fusion_avail a = tc_fusion_avail_of(cpu);
    assert_false(a.residual || a.gelu || a.bias_grad);
    cpu->destroy(cpu);
}

/* ---- graph eligibility ---- */

static tc_step_key key_of(int batch) {
    tc_step_key k = {batch, 1, 1, 1, 1, 0};
    return k;
}

static void test_graph_rules(void **state) {
    (void)state;
    tc_step_graph_state s;
    memset(&s, 0, sizeof s);
    tc_step_env env = {1, 0, 0};
    tc_step_key k = key_of(256);
    const char *why = NULL;
    /* first step: launches */
    assert_int_equal(tc_step_graph_decide(&s, &env, &k, &why), TC_STEP_LAUNCH);
    assert_non_null(strstr(why, "first step"));
    tc_step_graph_note(&s, TC_STEP_LAUNCH, &k, 1);
    /* the same step again: recorded, then replayed */
    assert_int_equal(tc_step_graph_decide(&s, &env, &k, &why), TC_STEP_CAPTURE);
    tc_step_graph_note(&s, TC_STEP_CAPTURE, &k, 1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tc_step_graph_decide(&s, &env, &k, &why), TC_STEP_REPLAY);
        tc_step_graph_note(&s, TC_STEP_REPLAY, &k, 1);
    }
    assert_int_equal(s.launched, 1);
    assert_int_equal(s.captured, 1);
    assert_int_equal(s.replayed, 3);
    /* a smaller last batch: launches once, then records its own graph */
    tc_step_key small = key_of(100);
    assert_int_equal(tc_step_graph_decide(&s, &env, &small, &why), TC_STEP_LAUNCH);
    assert_non_null(strstr(why, "changed"));
    tc_step_graph_note(&s, TC_STEP_LAUNCH, &small, 1);
    assert_int_equal(tc_step_graph_decide(&s, &env, &small, &why), TC_STEP_CAPTURE);
    tc_step_graph_note(&s, TC_STEP_CAPTURE, &small, 1);
    /* back to 256: the held graph is of 100, so launch once and record again */
    assert_int_equal(tc_step_graph_decide(&s, &env, &k, &why), TC_STEP_LAUNCH);
    tc_step_graph_note(&s, TC_STEP_LAUNCH, &k, 1);
    assert_int_equal(tc_step_graph_decide(&s, &env, &k, &why), TC_STEP_CAPTURE);
    /* every other field of the key counts too */
    for (int f = 0; f < 6; f++) {
        tc_step_key o = k;
        int *fields[5] = {&o.batch, &o.accum_steps, &o.distill, &o.clip, &o.fixed_scale};
        if (f < 5)
            (*fields[f])++;
        else
            o.config_epoch++;
        assert_false(tc_step_key_equal(&o, &k));
    }
    /* what forbids a recording, whatever the history */
    tc_step_env no_backend = {0, 0, 0}, dist = {1, 1, 0}, masked = {1, 0, 1};
    assert_int_equal(tc_step_graph_decide(&s, &no_backend, &k, &why), TC_STEP_LAUNCH);
    assert_non_null(strstr(why, "no graphs"));
    assert_int_equal(tc_step_graph_decide(&s, &dist, &k, &why), TC_STEP_LAUNCH);
    assert_non_null(strstr(why, "collectives"));
    assert_int_equal(tc_step_graph_decide(&s, &masked, &k, &why), TC_STEP_LAUNCH);
    assert_non_null(strstr(why, "mask"));
    /* a failed recording turns graphs off for good */
    tc_step_graph_note(&s, TC_STEP_CAPTURE, &k, 0);
    assert_true(s.disabled);
    assert_false(s.have_graph);
    assert_int_equal(tc_step_graph_decide(&s, &env, &k, &why), TC_STEP_LAUNCH);
    assert_non_null(strstr(why, "failed"));
}

/* ---- the trainer with graph ops that cannot record ---- */

/* the recording is refused at its start (the CPU runs ops at once, so a
 * refusal at graph_end, after the ops ran, cannot be faked here) */
static int g_begins, g_ends;
static tc_status fake_begin(tc_backend *b) {
    (void)b;
    g_begins++;
    return tc_fail(TC_ERR_UNSUPPORTED, "fake backend: no recording");
}
static tc_status fake_end(tc_backend *b, tc_graph **out) {
    (void)b;
    g_ends++;
    *out = NULL;
    return TC_ERR_UNSUPPORTED;
}
static tc_status fake_launch(tc_backend *b, tc_graph *g) {
    (void)b;
    (void)g;
    fail_msg("a graph that was never made was launched");
    return TC_ERR_BACKEND;
}
static void fake_free(tc_backend *b, tc_graph *g) {
    (void)b;
    (void)g;
}

static void test_trainer_capture_failure(void **state) {
    (void)state;
    tc_model_config c;
    tc_test_tiny_clip(&c, "graph-fallback", 16, 8);
    const int B = 4, steps = 6;
    tc_backend *be[2];
    tc_model *m[2];
    tc_trainer *t[2];
    tc_optim_config o = tc_optim_default();
    o.lr = 1e-3f;
    o.warmup_steps = 3; /* the lr changes every step: a baked lr would show */
    o.total_steps = steps;
    o.grad_clip = 1.0f;
    tc_loss_config l = {1.0f, 0.0f, 0.0f, 50.0f};
    for (int k = 0; k < 2; k++) {
        assert_int_equal(tc_backend_cpu_create(&be[k], &(tc_backend_options){.threads = 1}), TC_OK);
        tc_model_options mo = {.max_batch = B, .train = 1};
        assert_int_equal(tc_model_create(&m[k], be[k], &c, mo), TC_OK);
        assert_int_equal(tc_model_init_random(m[k], 7), TC_OK);
        assert_int_equal(tc_trainer_create(&t[k], m[k], NULL, &o, &l), TC_OK);
    }
    be[1]->graph_begin = fake_begin;
    be[1]->graph_end = fake_end;
    be[1]->graph_launch = fake_launch;
    be[1]->graph_free = fake_free;
    const int S = c.vision.image_size, T = c.text.context_length;
    float *img = malloc((size_t)B * 3 * S * S * sizeof *img);
    int32_t *ids = malloc((size_t)B * T * sizeof *ids);
    const size_t P = tc_model_layout(m[0])->total;
    float *p0 = malloc(P * sizeof *p0), *p1 = malloc(P * sizeof *p1);
    for (int s = 0; s < steps; s++) {
        tc_test_clip_batch(img, ids, B, &c, s);
        tc_step_result r[2];
        for (int k = 0; k < 2; k++)
            assert_int_equal(tc_trainer_step(t[k], img, ids, B, &r[k]), TC_OK);
        if (memcmp(&r[0].loss, &r[1].loss, sizeof(float)) != 0)
            fail_msg("step %d: loss %.9g and %.9g", s, r[0].loss, r[1].loss);
        assert_memory_equal(&r[0].lr, &r[1].lr, sizeof(float));
        assert_int_equal(tc_model_get_params(m[0], p0), TC_OK);
        assert_int_equal(tc_model_get_params(m[1], p1), TC_OK);
        if (memcmp(p0, p1, P * sizeof *p0) != 0) fail_msg("step %d: the parameters differ", s);
    }
    /* one launch, one refused recording, then launches for good */
    const tc_step_graph_state *gs = tc_trainer_graph_state(t[1]);
    assert_int_equal(g_begins, 1);
    assert_int_equal(g_ends, 0);
    assert_true(gs->disabled);
    assert_int_equal(gs->launched, steps);
    assert_int_equal(gs->captured + gs->replayed, 0);
    assert_int_equal(tc_trainer_step_index(t[1]), steps);
    free(p1);
    free(p0);
    free(ids);
    free(img);
    for (int k = 0; k < 2; k++) {
        tc_trainer_destroy(t[k]);
        tc_model_destroy(m[k]);
        be[k]->destroy(be[k]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fusion_gelu_model),
        cmocka_unit_test(test_fusion_quick_gelu_model),
        cmocka_unit_test(test_fusion_masked_and_unavailable),
        cmocka_unit_test(test_graph_rules),
        cmocka_unit_test(test_trainer_capture_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
