/* the evidence a run writes, end to end on a tiny model: evaluations during
 * a stage on the subset and at its end on the whole set, the mask-phase
 * scalars on every mask step in metrics.jsonl and TensorBoard, each stage's
 * training compute in summary.json (against the FLOP model), and the report's
 * goals, speedup and lineage sections, also printed by `tinyclip bench --run`. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "flops.h"
#include "json.h"
#include "metrics_log.h"
#include "tb_events.h"
#include "testutil.h"

/* a teacher, an auto stage with a mask phase, its architecture from scratch */
static const char *experiment_yaml =
    "name: evidence\n"
    "seed: 5\n"
    "threads: 1\n"
    "data:\n"
    "  train: {source: fmnist, batch: 8, workers: 1}\n"
    "  eval:\n"
    "    zero_shot: {dataset: fmnist, templates: fmnist, max_images: 48, subset: 16}\n"
    "teacher: {stage: teacher}\n"
    "stages:\n"
    "  - {name: teacher, kind: train_scratch_clip, model: tiny.json, steps: 4,\n"
    "     schedule: {warmup: 1}, eval_every: 2, checkpoint_every: 0, log_every: 1}\n"
    "  - name: auto\n"
    "    kind: distill\n"
    "    parent: teacher\n"
    "    inheritance: {kind: auto, target_sparsity: 0.5, sparsity_warmup: 2, prune_step: 3}\n"
    "    steps: 6\n"
    "    eval_every: 1\n"
    "    checkpoint_every: 0\n"
    "    log_every: 2\n"
    "  - {name: scratch, kind: train_scratch_clip, model: {stage: auto}, steps: 8,\n"
    "     schedule: {warmup: 1}, eval_every: 2, checkpoint_every: 0, log_every: 1}\n"
    "goals:\n"
    "  - {kind: top1_at_least, stage: teacher, top1: 0.0}\n"
    "  - {kind: top1_at_least, stage: teacher, top1: 1.0}\n"
    "  - {kind: reach_faster, stage: auto, baseline: scratch, at: 0.5, max_ratio: 100}\n"
    "  - {kind: wall_time, minutes: 1000}\n";

static int count_tag(void *user, const tc_tb_event *ev) {
    if (ev->has_scalar && !strcmp(ev->tag, "mask/expected_sparsity")) (*(int *)user)++;
    return 0;
}

/* mask/expected_sparsity events in the stage's TensorBoard file(s) */
static int tb_mask_events(const char *stage_dir) {
    char cmd[1300], *out = NULL;
    snprintf(cmd, sizeof cmd, "ls %s/events.out.tfevents.*", stage_dir);
    assert_int_equal(tc_run_capture(cmd, &out), 0);
    int n = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        size_t len;
        char *data = tc_read_file(line, &len);
        assert_non_null(data);
        assert_int_equal(tc_tb_parse((const uint8_t *)data, len, count_tag, &n), TC_OK);
        free(data);
    }
    free(out);
    return n;
}

static void test_run_evidence(void **state) {
    char *dir = tc_test_run_dir("evidence", experiment_yaml);
    assert_non_null(dir);
    char args[2048], path[1200], *out = NULL;
    int rc = tc_test_train(dir, "run", NULL, NULL, &out);
    if (rc != 0) fail_msg("run failed (%d):\n%s", rc, out);
    free(out);

    /* evaluations: every step on the 16-image subset, the end on all 48 */
    snprintf(path, sizeof path, "%s/run/auto/metrics.jsonl", dir);
    int64_t *steps;
    double *v;
    int n;
    assert_int_equal(tc_metrics_read_series(path, "images", "eval", &steps, &v, &n), TC_OK);
    assert_int_equal(n, 6);
    for (int k = 0; k < n; k++) {
        assert_int_equal(steps[k], k + 1);
        assert_float_equal(v[k], 16.0, 0);
    }
    free(steps);
    free(v);
    assert_int_equal(tc_metrics_read_series(path, "images", "eval_full", &steps, &v, &n), TC_OK);
    assert_int_equal(n, 1);
    assert_int_equal(steps[0], 6);
    assert_float_equal(v[0], 48.0, 0);
    free(steps);
    free(v);
    /* the mask phase's scalars on each of its 3 steps, none after */
    const char *keys[5] = {"expected_sparsity", "target_sparsity", "lambda1", "lambda2",
                           "lagrangian"};
    for (int k = 0; k < 5; k++) {
        assert_int_equal(tc_metrics_read_series(path, keys[k], "mask", &steps, &v, &n), TC_OK);
        assert_int_equal(n, 3);
        for (int i = 0; i < n; i++) {
            assert_int_equal(steps[i], i + 1);
            assert_true(isfinite(v[i]));
        }
        if (k == 1) { /* the target ramps 0 -> 0.5 over 2 steps, counted from step 0 */
            assert_float_equal(v[0], 0.0, 1e-9);
            assert_float_equal(v[1], 0.25, 1e-9);
            assert_float_equal(v[2], 0.5, 1e-9);
        }
        if (k == 2) assert_float_equal(v[0], 10.0, 1e-6); /* lambda_init */
        free(steps);
        free(v);
    }
    snprintf(path, sizeof path, "%s/run/auto", dir);
    assert_int_equal(tb_mask_events(path), 3);

    /* summary.json: the stage's training compute from the one FLOP model */
    tc_model_config full, pruned, teacher;
    tc_param_layout l;
    float *p;
    snprintf(path, sizeof path, "%s/run/teacher/final", dir);
    assert_int_equal(tc_checkpoint_load(path, NULL, &teacher, &l, &p), TC_OK);
    free(p);
    tc_param_layout_free(&l);
    full = teacher;
    snprintf(path, sizeof path, "%s/run/auto/final", dir);
    assert_int_equal(tc_checkpoint_load(path, NULL, &pruned, &l, &p), TC_OK);
    free(p);
    tc_param_layout_free(&l);
    snprintf(path, sizeof path, "%s/run/auto/summary.json", dir);
    tc_json *j = tc_test_read_json(path);
    double want = 8.0 * (3 * tc_step_gflops(TC_STEP_DISTILL, &full, &teacher) +
                         3 * tc_step_gflops(TC_STEP_DISTILL, &pruned, &teacher));
    assert_float_equal(tc_test_json_num(j, "train_gflop"), want, 1e-9 * want);
    assert_float_equal(tc_test_json_num(j, "mask_steps"), 3, 0);
    assert_float_equal(tc_test_json_num(j, "images_per_step"), 8, 0);
    assert_float_equal(tc_test_json_num(j, "zeroshot_images"), 48, 0);
    assert_float_equal(tc_test_json_num(j, "resumed_at_step"), 0, 0);
    assert_true(tc_test_json_num(j, "train_seconds") > 0 &&
                tc_test_json_num(j, "train_seconds") <= tc_test_json_num(j, "stage_seconds"));
    assert_non_null(tc_json_get(j, "blas_core"));
    tc_json_free(j);

    /* the report: goals, the speedup of auto against scratch, the lineages */
    snprintf(path, sizeof path, "%s/run/report.md", dir);
    size_t len;
    char *md = tc_read_file(path, &len);
    assert_non_null(md);
    assert_non_null(strstr(md, "| teacher zero-shot top-1 >= 0.00% |"));
    assert_non_null(strstr(md, "| met |"));
    assert_non_null(strstr(md, "| teacher zero-shot top-1 >= 100.00% |"));
    assert_non_null(strstr(md, "| **not met** |"));
    assert_non_null(strstr(md, "## Inheritance speedup: auto against scratch"));
    assert_non_null(strstr(md, "auto's evaluations count from step 3 on"));
    assert_non_null(strstr(md, "| 75% of scratch's steps (6) |"));
    assert_non_null(strstr(md, "| auto | 6 | 48 | "));
    assert_non_null(strstr(md, " | teacher + auto | "));
    assert_non_null(strstr(md, "Curves: zero-shot top-1 on the first 16 images"));
    free(md);
    snprintf(path, sizeof path, "%s/run/report.json", dir);
    j = tc_test_read_json(path);
    const tc_json *goals = tc_json_get(j, "goals");
    assert_non_null(goals);
    assert_int_equal(goals->count, 4);
    assert_int_equal(tc_json_get(&goals->items[0], "met")->type, TC_JSON_BOOL);
    assert_int_equal(tc_json_get(&goals->items[0], "met")->boolean, 1);
    assert_int_equal(tc_json_get(&goals->items[1], "met")->boolean, 0);
    assert_int_equal(tc_json_get(&goals->items[3], "met")->boolean, 1);
    const tc_json *sp = tc_json_get(j, "speedups");
    assert_int_equal(sp->count, 1);
    assert_int_equal(tc_json_get(&sp->items[0], "targets")->count, 4);
    const tc_json *models = tc_json_get(j, "models");
    assert_int_equal(models->count, 3);
    /* the teacher's lineage is itself; auto's adds its own stage */
    double t_flop = tc_json_get(&models->items[0], "train_gflop")->number;
    double a_flop = tc_json_get(&models->items[1], "train_gflop")->number;
    assert_float_equal(tc_json_get(&models->items[1], "lineage_gflop")->number, t_flop + a_flop,
                       1e-9 * (t_flop + a_flop));
    tc_json_free(j);

    /* bench --run prints the same sections after its measurements */
    snprintf(args, sizeof args, "bench --run %s/run --mode infer --steps 1 --warmup 0 --batch 4",
             dir);
    rc = tc_run_cli(args, &out);
    if (rc != 0) fail_msg("bench --run failed (%d):\n%s", rc, out);
    assert_non_null(strstr(out, "## Inheritance speedup: auto against scratch"));
    assert_non_null(strstr(out, "## Goals"));
    assert_non_null(strstr(out, "## Training compute"));
    free(out);
    tc_rmtree(dir);
    free(dir);
}

/* --attention: the kernel names (all four, both, all) are accepted, anything
 * else is refused with the list; the CPU backend has one attention, so it is
 * measured once whatever is asked */
static void test_bench_attention_choice(void **state) {
    (void)state;
    char args[1024], *out = NULL;
    snprintf(args, sizeof args, "bench --attention wgmma2 --model %s/configs/models/RN50.json",
             TC_SOURCE_DIR);
    int rc = tc_run_cli(args, &out);
    if (rc != 2 || !strstr(out, "fma, mma, wgmma, tma, both or all"))
        fail_msg("bench --attention wgmma2: exit %d, output:\n%s", rc, out);
    free(out);
    static const char *const kinds[] = {"fma", "mma", "wgmma", "tma", "both", "all"};
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
        snprintf(args, sizeof args,
                 "bench --backend cpu --threads 1 --attention %s --mode infer --steps 1 --warmup 0 "
                 "--batch 2 --json --model %s/configs/models/fmnist-teacher.json",
                 kinds[i], TC_SOURCE_DIR);
        rc = tc_run_cli(args, &out);
        if (rc != 0) fail_msg("bench --attention %s failed (%d):\n%s", kinds[i], rc, out);
        int lines = 0;
        for (const char *p = out; (p = strstr(p, "\"images_per_s\"")) != NULL; p++)
            lines++;
        if (lines != 1)
            fail_msg("bench --backend cpu --attention %s: %d measurements, expected 1:\n%s",
                     kinds[i], lines, out);
        free(out);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_evidence),
        cmocka_unit_test(test_bench_attention_choice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
