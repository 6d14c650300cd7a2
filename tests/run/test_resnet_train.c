/* a ResNet CLIP trained through `tinyclip train`: a teacher from scratch and
 * a manual-inheritance student (the fmnist-rn model configs, a few steps),
 * killed in the middle of the student stage and run again: it resumes from
 * its last checkpoint and ends with weights bit-identical to a run that
 * never stopped. the BatchNorm running statistics are tensors of the
 * checkpoint it resumes from and of the final weights, moved away from their
 * initial values by training (a resume that lost them would end with other
 * bits). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "testutil.h"

/* fmnist-rn.yaml cut down: batch 16, 4 + 4 steps, no evaluation */
static const char *experiment_yaml =
    "name: rn\n"
    "seed: 2\n"
    "threads: 1\n"
    "data:\n"
    "  train: {source: fmnist, batch: 16, workers: 1}\n"
    "teacher: {stage: teacher, logit_scale: 50}\n"
    "stages:\n"
    "  - name: teacher\n"
    "    kind: train_scratch_clip\n"
    "    model: " TC_SOURCE_DIR "/configs/models/fmnist-rn-teacher.json\n"
    "    steps: 4\n"
    "    optimizer: {lr: 1.0e-3, beta2: 0.999, eps: 1.0e-8}\n"
    "    schedule: {warmup: 1}\n"
    "    checkpoint_every: 2\n"
    "    log_every: 1\n"
    "  - name: manual_rn\n"
    "    kind: distill\n"
    "    parent: teacher\n"
    "    model: " TC_SOURCE_DIR "/configs/models/fmnist-rn-student.json\n"
    "    inheritance:\n"
    "      kind: manual\n"
    "      vision: {layers: interval_front, width: leading}\n"
    "      text: {layers: interval_front, width: leading}\n"
    "    steps: 4\n"
    "    optimizer: {lr: 5.0e-4, beta2: 0.999, eps: 1.0e-8}\n"
    "    schedule: {warmup: 1}\n"
    "    checkpoint_every: 2\n"
    "    log_every: 1\n";

/* the running statistics of a BatchNorm in a weights file: present, finite,
 * and no longer the initial 0 / 1 */
static void assert_bn_trained(const char *path, const char *bn) {
    tc_safetensors *f = NULL;
    if (tc_st_open(&f, path) != TC_OK) fail_msg("%s: %s", path, tc_last_error());
    char name[256];
    double moved = 0;
    for (int k = 0; k < 2; k++) {
        snprintf(name, sizeof name, "%s.%s", bn, k ? "running_var" : "running_mean");
        const tc_st_tensor *t = tc_st_find(f, name);
        if (!t) fail_msg("%s: no tensor %s", path, name);
        float *v = malloc(sizeof(float) * t->numel);
        assert_int_equal(tc_st_tensor_to_f32(f, t, v), TC_OK);
        for (uint64_t i = 0; i < t->numel; i++) {
            assert_true(isfinite(v[i]));
            moved += fabs(v[i] - (k ? 1.0 : 0.0));
        }
        free(v);
    }
    snprintf(name, sizeof name, "%s.num_batches_tracked", bn);
    if (!tc_st_find(f, name)) fail_msg("%s: no tensor %s", path, name);
    if (!(moved > 1e-6)) fail_msg("%s: %s still has its initial running statistics", path, bn);
    tc_st_close(f);
}

static void test_resnet_kill_and_resume(void **state) {
    (void)state;
    tc_faults_bin(); /* skips (before anything is written) in a build without it */
    char *dir = tc_test_run_dir("rntrain", experiment_yaml);
    assert_non_null(dir);
    char *out = NULL, path[1024];
    int rc = tc_test_train(dir, "straight", NULL, NULL, &out);
    if (rc != 0) fail_msg("uninterrupted run failed (%d):\n%s", rc, out);
    free(out);
    /* the student stage, after step 3: its last checkpoint is step 2 */
    rc = tc_test_train(dir, "killed", NULL, "kill_at_step:3@manual_rn", &out);
    if (rc == 0) fail_msg("the run was not killed:\n%s", out);
    free(out);
    /* killed mid-stage: the step-2 checkpoint holds the running statistics */
    snprintf(path, sizeof path, "%s/killed/manual_rn/final", dir);
    assert_false(tc_file_exists(path));
    snprintf(path, sizeof path,
             "%s/killed/manual_rn/checkpoints/step-0000000002/open_clip_model.safetensors", dir);
    assert_bn_trained(path, "visual.layer1.0.bn1");
    rc = tc_test_train(dir, "killed", NULL, NULL, &out);
    if (rc != 0) fail_msg("resumed run failed (%d):\n%s", rc, out);
    if (!strstr(out, "stage manual_rn: resumed from")) fail_msg("no resume in:\n%s", out);
    free(out);
    tc_test_assert_same_final(dir, "straight", "killed", "teacher");
    tc_test_assert_same_final(dir, "straight", "killed", "manual_rn");
    const char *stages[] = {"teacher", "manual_rn"};
    for (int s = 0; s < 2; s++) {
        snprintf(path, sizeof path, "%s/killed/%s/final/open_clip_model.safetensors", dir,
                 stages[s]);
        assert_bn_trained(path, "visual.bn1");
        assert_bn_trained(path, "visual.layer4.0.bn3");
    }
    tc_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resnet_kill_and_resume),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
