/* kill a training run at any moment, run the same command again: it resumes
 * from the last complete checkpoint and ends with weights bit-identical to a
 * run that never stopped. covers a kill between steps, a kill in the middle
 * of a checkpoint write, and a kill inside the mask phase of an automatic-
 * inheritance stage; plus --dry-run of the shipped recipes and a non-finite
 * loss stopping the run with a clear message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* teacher from scratch, an auto stage with its mask phase, a manual stage */
static const char *experiment_yaml =
    "name: resume\n"
    "seed: 3\n"
    "threads: 1\n"
    "data:\n"
    "  train: {source: fmnist, batch: 8, workers: 1}\n"
    "  eval:\n"
    "    zero_shot: {dataset: fmnist, templates: fmnist, max_images: 64}\n"
    "teacher: {stage: teacher}\n"
    "stages:\n"
    "  - name: teacher\n"
    "    kind: train_scratch_clip\n"
    "    model: tiny.json\n"
    "    steps: 6\n"
    "    schedule: {warmup: 2}\n"
    "    eval_every: 3\n"
    "    checkpoint_every: 2\n"
    "    log_every: 1\n"
    "  - name: auto\n"
    "    kind: distill\n"
    "    parent: teacher\n"
    "    inheritance: {kind: auto, target_sparsity: 0.5, sparsity_warmup: 2, prune_step: 4}\n"
    "    steps: 8\n"
    "    eval_every: 4\n"
    "    checkpoint_every: 2\n"
    "    log_every: 1\n"
    "  - name: manual\n"
    "    kind: distill\n"
    "    parent: teacher\n"
    "    model: tiny.json\n"
    "    inheritance: {kind: manual}\n"
    "    steps: 4\n"
    "    schedule: {warmup: 1}\n"
    "    checkpoint_every: 2\n"
    "    log_every: 1\n";

static char *setup_dir(const char *tag) {
    char *dir = tc_test_run_dir(tag, experiment_yaml);
    assert_non_null(dir);
    return dir;
}

/* fault: run tinyclip_faults with TINYCLIP_FAULT=fault; NULL: the released tinyclip */
static int train(const char *dir, const char *run, const char *fault, char **out) {
    return tc_test_train(dir, run, NULL, fault, out);
}

static void kill_and_resume(const char *fault) {
    char *dir = setup_dir("resume");
    char *out = NULL;
    int rc = train(dir, "straight", NULL, &out);
    if (rc != 0) fail_msg("uninterrupted run failed (%d):\n%s", rc, out);
    free(out);
    rc = train(dir, "killed", fault, &out);
    /* the shell reports a SIGKILLed child as 128 + 9 */
    if (rc == 0) fail_msg("run with %s was not killed:\n%s", fault, out);
    free(out);
    rc = train(dir, "killed", NULL, &out);
    if (rc != 0) fail_msg("resumed run failed (%d):\n%s", rc, out);
    assert_non_null(strstr(out, "resumed from"));
    free(out);
    tc_test_assert_same_final(dir, "straight", "killed", "teacher");
    tc_test_assert_same_final(dir, "straight", "killed", "auto");
    tc_test_assert_same_final(dir, "straight", "killed", "manual");
    char report[1024];
    snprintf(report, sizeof report, "%s/killed/report.md", dir);
    assert_true(tc_file_exists(report));
    tc_rmtree(dir);
    free(dir);
}

/* teacher stage: killed after step 5, the last checkpoint is step 4 */
static void test_kill_between_steps(void **state) {
    kill_and_resume("kill_at_step:5");
}
/* killed after the weights of the step-4 checkpoint were written, before its state */
static void test_kill_in_checkpoint(void **state) {
    kill_and_resume("kill_in_checkpoint:4");
}
/* the auto stage, inside its mask phase (prune at step 4) */
static void test_kill_in_mask_phase(void **state) {
    kill_and_resume("kill_at_step:3@auto");
}

static void test_dry_run_recipes(void **state) {
    /* needs: a real checkpoint the recipe reads (teacher, parent); where it is
     * not installed, the dry run prints the plan, then fails as the run
     * would, at the position of the key that names it */
    static const char *const vitb32 =
        "/data/checkpoints/ViT-B-32-laion2b_e16/open_clip_model.safetensors";
    static const char *const rn50 = "/data/checkpoints/RN50-openai/open_clip_model.safetensors";
    static const struct {
        const char *name, *needs, *needs2;
    } recipes[] = {
        {.name = "fmnist.yaml"},
        {.name = "fmnist-live.yaml"},
        {.name = "fmnist-rn.yaml"},
        {.name = "vit-b32-auto.yaml", .needs = vitb32},
        {.name = "vit-b32-manual.yaml", .needs = vitb32},
        {.name = "rn50-to-resnet30m.yaml", .needs = vitb32, .needs2 = rn50},
        {.name = "gpu-check.yaml"},
    };
    /* gpu-check.yaml takes its data folder from ${FMNIST_DIR} (gpu_check.sh sets it) */
    setenv("FMNIST_DIR", "/usr/share/datasets/fashion-mnist", 0);
    for (size_t i = 0; i < sizeof recipes / sizeof *recipes; i++) {
        char args[1024], *out = NULL;
        snprintf(args, sizeof args, "train %s/configs/experiments/%s --dry-run", TC_SOURCE_DIR,
                 recipes[i].name);
        int rc = tc_run_cli(args, &out);
        if (!strstr(out, "parameters"))
            fail_msg("%s --dry-run printed no plan:\n%s", recipes[i].name, out);
        int absent = (recipes[i].needs && !tc_file_exists(recipes[i].needs)) ||
                     (recipes[i].needs2 && !tc_file_exists(recipes[i].needs2));
        if (rc != 0 && !(absent && strstr(out, "checkpoint: /data/checkpoints/") &&
                         strstr(out, "no such file or directory") && strstr(out, ".yaml:")))
            fail_msg("%s --dry-run failed:\n%s", recipes[i].name, out);
        printf("%s --dry-run: %s\n", recipes[i].name,
               rc == 0 ? "ok" : "plan printed; fails on the absent checkpoint, as the run would");
        free(out);
    }
}

static void test_bad_experiment_names_line(void **state) {
    char *dir = setup_dir("badexp");
    char path[1024], args[1200], *out = NULL;
    snprintf(path, sizeof path, "%s/bad.yaml", dir);
    const char *bad = "name: bad\nstages:\n  - name: a\n    kind: train_scratch_clip\n    model: "
                      "tiny.json\n    steps: -3\n";
    assert_int_equal(tc_write_file(path, bad, strlen(bad)), 0);
    snprintf(args, sizeof args, "train %s", path);
    int rc = tc_run_cli(args, &out);
    assert_int_not_equal(rc, 0);
    if (!strstr(out, "bad.yaml:6:")) fail_msg("no line:column in:\n%s", out);
    free(out);
    tc_rmtree(dir);
    free(dir);
}

/* from step 5 on every batch is NaN: the loss turns non-finite, the steps
 * are skipped (no update), and after max_nonfinite_skips in a row the run
 * stops with a message naming the problem */
static void test_nonfinite_stops(void **state) {
    char *dir = setup_dir("nonfinite");
    char path[1024], args[1200], *out = NULL;
    snprintf(path, sizeof path, "%s/nan.yaml", dir);
    const char *yaml =
        "name: nan\nthreads: 1\ndata:\n  train: {source: fmnist, batch: 8, workers: 1}\n"
        "stages:\n  - name: a\n    kind: train_scratch_clip\n    model: tiny.json\n"
        "    steps: 40\n    schedule: {warmup: 1}\n"
        "    max_nonfinite_skips: 3\n    checkpoint_every: 0\n    log_every: 1\n";
    assert_int_equal(tc_write_file(path, yaml, strlen(yaml)), 0);
    snprintf(args, sizeof args, "train %s --out %s/run --plain", path, dir);
    int rc = tc_run_cli_fault("nan_from_step:5", args, &out);
    assert_int_not_equal(rc, 0);
    if (!strstr(out, "non-finite")) fail_msg("no non-finite message in:\n%s", out);
    /* the stage is named once, not "stage a: stage a:" */
    if (!strstr(out, "stage a: 4 consecutive steps") || strstr(out, "stage a: stage a:"))
        fail_msg("the stage is not named once in:\n%s", out);
    snprintf(path, sizeof path, "%s/run/a/metrics.jsonl", dir);
    char *metrics = tc_read_file(path, NULL);
    assert_non_null(metrics);
    assert_non_null(strstr(metrics, "\"event\": \"skip\""));
    free(metrics);
    free(out);
    tc_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_between_steps),        cmocka_unit_test(test_kill_in_checkpoint),
        cmocka_unit_test(test_kill_in_mask_phase),        cmocka_unit_test(test_dry_run_recipes),
        cmocka_unit_test(test_bad_experiment_names_line), cmocka_unit_test(test_nonfinite_stops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
