/* the trainer's step on one process (CPU backend):
 *   - micro-batches: accum_steps 2 and 3 give the losses, gradients and
 *     weights of the whole batch in one piece (10 steps, 1e-5 relative)
 *   - no host synchronisation: steps without a result never read device
 *     memory back (every download is counted); reading the result is one
 *   - the device-side skip: a step with a non-finite loss leaves weights,
 *     moments and the update count alone and is counted, consecutive ones
 *     too, and the next finite step updates again
 *   - stored teacher features (a teacher cache): a trainer given the
 *     teacher's features, computed beforehand at another batch size, takes
 *     the steps of the trainer that runs the teacher live, bit for bit
 *     (10 steps, one piece and 2 micro-batches) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "model.h"
#include "testutil.h"
#include "train.h"

enum { BATCH = 6, STEPS = 10 };

static tc_backend *be;
static tc_model_config sc, tcfg;

typedef struct {
    tc_model *student, *teacher;
    tc_trainer *trainer;
} run;

/* stored: the trainer takes stored teacher features; the teacher (whole
 * batches) only computes them */
static void make_run_as(run *r, int accum, int stored) {
    int micro = BATCH / accum;
    tc_model_options so = {.max_batch = micro, .train = 1};
    tc_model_options to = {.max_batch = stored ? BATCH : micro, .train = 0};
    assert_int_equal(tc_model_create(&r->student, be, &sc, so), TC_OK);
    assert_int_equal(tc_model_init_random(r->student, 21), TC_OK);
    assert_int_equal(tc_model_create(&r->teacher, be, &tcfg, to), TC_OK);
    assert_int_equal(tc_model_init_random(r->teacher, 22), TC_OK);
    tc_optim_config o = tc_optim_default();
    o.lr = 2e-3f;
    o.warmup_steps = 2;
    o.total_steps = STEPS;
    o.grad_clip = 0.5f;
    tc_loss_config l = {0.5f, 0.5f, 0.0f, 50.0f};
    if (stored)
        assert_int_equal(tc_trainer_create_cached(&r->trainer, r->student, tcfg.embed_dim, &o, &l),
                         TC_OK);
    else
        assert_int_equal(tc_trainer_create(&r->trainer, r->student, r->teacher, &o, &l), TC_OK);
    tc_parallel_config p = {accum, 0, 0};
    assert_int_equal(tc_trainer_set_parallel(r->trainer, &p), TC_OK);
}

static void make_run(run *r, int accum) {
    make_run_as(r, accum, 0);
}

static void free_run(run *r) {
    tc_trainer_destroy(r->trainer);
    tc_model_destroy(r->student);
    tc_model_destroy(r->teacher);
}

static double rel(double a, double b) {
    return fabs(a - b) / fmax(fabs(b), 1e-12);
}

static float *images, *params_a, *params_b;
static int32_t *ids;

static void micro_batches_match(int accum) {
    run one, acc;
    make_run(&one, 1);
    make_run(&acc, accum);
    size_t P = tc_model_layout(one.student)->total;
    /* the gradient of one loss over the whole batch */
    tc_test_clip_batch(images, ids, BATCH, &sc, -1);
    float l1, l2;
    assert_int_equal(tc_trainer_loss(one.trainer, images, ids, BATCH, 1, &l1), TC_OK);
    assert_int_equal(tc_trainer_loss(acc.trainer, images, ids, BATCH, 1, &l2), TC_OK);
    be->download(be, params_a, tc_model_grads(one.student), P * sizeof(float));
    be->download(be, params_b, tc_model_grads(acc.student), P * sizeof(float));
    double ge = tc_rel_err(params_b, params_a, P);
    printf("accum_steps %d: loss %.8f vs %.8f, gradient rel err %.2e over %zu\n", accum, l2, l1, ge,
           P);
    assert_true(rel(l2, l1) <= 1e-6);
    assert_true(ge <= 1e-5);
    double worst = 0;
    for (int s = 0; s < STEPS; s++) {
        tc_test_clip_batch(images, ids, BATCH, &sc, s);
        tc_step_result r1, r2;
        assert_int_equal(tc_trainer_step(one.trainer, images, ids, BATCH, &r1), TC_OK);
        assert_int_equal(tc_trainer_step(acc.trainer, images, ids, BATCH, &r2), TC_OK);
        assert_false(r1.skipped);
        assert_false(r2.skipped);
        worst = fmax(worst, rel(r2.loss, r1.loss));
        assert_true(rel(r2.grad_norm, r1.grad_norm) <= 1e-4);
    }
    tc_model_get_params(one.student, params_a);
    tc_model_get_params(acc.student, params_b);
    double pe = tc_rel_err(params_b, params_a, P);
    printf("  %d steps: worst loss rel %.2e, final weights rel err %.2e\n", STEPS, worst, pe);
    assert_true(worst <= 1e-5);
    assert_true(pe <= 1e-5);
    free_run(&acc);
    free_run(&one);
}

static void test_accum_2(void **state) {
    micro_batches_match(2);
}
static void test_accum_3(void **state) {
    micro_batches_match(3);
}

/* the live teacher's trainer and one on the same teacher's stored
 * features, computed beforehand over the whole batch at once */
static void stored_features_match(int accum) {
    run live, st;
    make_run(&live, accum);
    make_run_as(&st, accum, 1);
    tc_model *student = st.student, *teacher = st.teacher;
    tc_trainer *cached = st.trainer;
    size_t E = (size_t)tcfg.embed_dim, P = tc_model_layout(student)->total;
    float *timg = malloc(BATCH * E * sizeof(float)), *ttxt = malloc(BATCH * E * sizeof(float));
    assert_non_null(timg);
    assert_non_null(ttxt);
    for (int s = 0; s < STEPS; s++) {
        tc_test_clip_batch(images, ids, BATCH, &sc, s);
        /* what a cache stores: the teacher's features, read back */
        assert_int_equal(tc_model_encode_image(teacher, images, BATCH), TC_OK);
        assert_int_equal(be->download(be, timg, tc_model_image_features(teacher), BATCH * E * 4),
                         TC_OK);
        assert_int_equal(tc_model_encode_text(teacher, ids, BATCH), TC_OK);
        assert_int_equal(be->download(be, ttxt, tc_model_text_features(teacher), BATCH * E * 4),
                         TC_OK);
        tc_trainer_set_teacher_features(cached, timg, ttxt);
        tc_step_result r1, r2;
        assert_int_equal(tc_trainer_step(live.trainer, images, ids, BATCH, &r1), TC_OK);
        assert_int_equal(tc_trainer_step(cached, images, ids, BATCH, &r2), TC_OK);
        if (r1.loss != r2.loss)
            fail_msg("step %d: loss %.9g live, %.9g stored", s, r1.loss, r2.loss);
    }
    tc_model_get_params(live.student, params_a);
    tc_model_get_params(student, params_b);
    printf("stored teacher features, accum_steps %d: %d steps, final weights %s\n", accum, STEPS,
           memcmp(params_a, params_b, P * sizeof(float)) ? "differ" : "bit-identical");
    assert_memory_equal(params_a, params_b, P * sizeof(float));
    /* a stored-feature trainer refuses a step without features */
    tc_trainer_set_teacher_features(cached, NULL, NULL);
    assert_int_equal(tc_trainer_step(cached, images, ids, BATCH, NULL), TC_ERR_ARG);
    free(timg);
    free(ttxt);
    free_run(&st);
    free_run(&live);
}

static void test_stored_features(void **state) {
    stored_features_match(1);
}
static void test_stored_features_accum(void **state) {
    stored_features_match(2);
}

static void test_bad_accum(void **state) {
    run r;
    make_run(&r, 2);
    tc_test_clip_batch(images, ids, BATCH, &sc, 0);
    float l;
    /* 5 samples do not split into 2 micro-batches */
    assert_int_equal(tc_trainer_loss(r.trainer, images, ids, 5, 0, &l), TC_ERR_ARG);
    assert_non_null(strstr(tc_last_error(), "accum_steps"));
    /* 8 samples are micro-batches of 4, above the models' 3 */
    assert_int_equal(tc_trainer_loss(r.trainer, images, ids, 8, 0, &l), TC_ERR_ARG);
    tc_parallel_config p = {0, 0, 0};
    assert_int_equal(tc_trainer_set_parallel(r.trainer, &p), TC_ERR_ARG);
    free_run(&r);
}

/* every download of the backend, counted */
static int downloads;
static tc_status (*real_download)(tc_backend *, void *, const void *, size_t);
static tc_status counting_download(tc_backend *b, void *dst, const void *src, size_t bytes) {
    downloads++;
    return real_download(b, dst, src, bytes);
}

static void test_no_host_sync(void **state) {
    run r;
    make_run(&r, 1);
    real_download = be->download;
    be->download = counting_download;
    downloads = 0;
    for (int s = 0; s < STEPS; s++) {
        tc_test_clip_batch(images, ids, BATCH, &sc, s);
        assert_int_equal(tc_trainer_step(r.trainer, images, ids, BATCH, NULL), TC_OK);
    }
    int during = downloads;
    tc_step_result res;
    assert_int_equal(tc_trainer_read_result(r.trainer, &res), TC_OK);
    int reading = downloads - during;
    be->download = real_download;
    printf("%d steps: %d reads of device memory; reading the result: %d\n", STEPS, during, reading);
    assert_int_equal(during, 0);
    assert_int_equal(reading, 1);
    assert_true(isfinite(res.loss) && res.loss > 0);
    assert_int_equal(res.skipped_total, 0);
    assert_int_equal(tc_trainer_adam_step(r.trainer), STEPS);
    free_run(&r);
}

static void test_device_skip(void **state) {
    run r;
    make_run(&r, 1);
    size_t P = tc_model_layout(r.student)->total, PP = tc_model_layout(r.student)->packed_total;
    float *m0 = malloc(2 * PP * sizeof *m0), *m1 = malloc(2 * PP * sizeof *m1);
    tc_step_result res;
    for (int s = 0; s < 3; s++) {
        tc_test_clip_batch(images, ids, BATCH, &sc, s);
        assert_int_equal(tc_trainer_step(r.trainer, images, ids, BATCH, NULL), TC_OK);
    }
    tc_model_get_params(r.student, params_a);
    assert_int_equal(tc_trainer_get_moments(r.trainer, m0, m0 + PP), TC_OK);
    /* two steps on a batch with a NaN pixel */
    for (int s = 3; s < 5; s++) {
        tc_test_clip_batch(images, ids, BATCH, &sc, s);
        images[17] = NAN;
        assert_int_equal(tc_trainer_step(r.trainer, images, ids, BATCH, &res), TC_OK);
        assert_true(res.skipped);
        assert_int_equal(res.skipped_in_a_row, s - 2);
    }
    tc_model_get_params(r.student, params_b);
    assert_int_equal(tc_trainer_get_moments(r.trainer, m1, m1 + PP), TC_OK);
    assert_memory_equal(params_a, params_b, P * sizeof(float));
    assert_memory_equal(m0, m1, 2 * PP * sizeof(float));
    assert_int_equal(tc_trainer_adam_step(r.trainer), 3);
    assert_int_equal(res.skipped_total, 2);
    /* a finite step updates again, the run of skips ends */
    tc_test_clip_batch(images, ids, BATCH, &sc, 5);
    assert_int_equal(tc_trainer_step(r.trainer, images, ids, BATCH, &res), TC_OK);
    assert_false(res.skipped);
    assert_int_equal(res.skipped_in_a_row, 0);
    assert_int_equal(res.skipped_total, 2);
    assert_int_equal(tc_trainer_adam_step(r.trainer), 4);
    tc_model_get_params(r.student, params_b);
    assert_true(tc_rel_err(params_b, params_a, P) > 0);
    printf("2 non-finite steps skipped on the device: weights and moments unchanged, "
           "updates 3 -> 4 after the next finite step\n");
    free(m0);
    free(m1);
    free_run(&r);
}

static int setup(void **state) {
    if (tc_backend_cpu_create(&be, &(tc_backend_options){.threads = 1}) != TC_OK) return -1;
    tc_test_tiny_clip(&sc, "step-student", 64, 16);
    tc_test_tiny_clip(&tcfg, "step-teacher", 128, 24);
    int S = sc.vision.image_size, T = sc.text.context_length;
    images = malloc((size_t)8 * 3 * S * S * sizeof *images);
    ids = malloc((size_t)8 * T * sizeof *ids);
    tc_param_layout L;
    if (tc_param_layout_build(&L, &sc) != TC_OK) return -1;
    params_a = malloc(L.total * sizeof(float));
    params_b = malloc(L.total * sizeof(float));
    tc_param_layout_free(&L);
    return images && ids && params_a && params_b ? 0 : -1;
}

static int teardown(void **state) {
    free(images);
    free(ids);
    free(params_a);
    free(params_b);
    be->destroy(be);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accum_2),
        cmocka_unit_test(test_accum_3),
        cmocka_unit_test(test_bad_accum),
        cmocka_unit_test(test_no_host_sync),
        cmocka_unit_test(test_device_skip),
        cmocka_unit_test(test_stored_features),
        cmocka_unit_test(test_stored_features_accum),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
