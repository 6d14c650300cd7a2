/* automatic inheritance with shape: regular through `tinyclip train`: a
 * teacher, an auto stage pruned with tied masks, and a second one re-expanded
 * from it; every pruned stage's final/ is open_clip-regular (tinyclip inspect
 * says so, --to open_clip takes it), the log reports the sparsity reached,
 * and a run killed in the second stage's mask phase resumes to the same
 * final weights, byte for byte. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "testutil.h"

static const char *model_json = "{\"embed_dim\": 32, \"quick_gelu\": false,\n"
                                " \"vision_cfg\": {\"image_size\": 28, \"patch_size\": 7, "
                                "\"layers\": 2, \"width\": 128, \"head_width\": 64},\n"
                                " \"text_cfg\": {\"context_length\": 16, \"vocab_size\": 49408, "
                                "\"width\": 128, \"heads\": 2, \"layers\": 2}}\n";

static const char *experiment_yaml =
    "name: regular\n"
    "seed: 5\n"
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
    "    steps: 4\n"
    "    schedule: {warmup: 1}\n"
    "    checkpoint_every: 2\n"
    "    log_every: 1\n"
    "  - name: half\n"
    "    kind: distill\n"
    "    parent: teacher\n"
    "    inheritance: {kind: auto, shape: regular, target_sparsity: 0.5, sparsity_warmup: 2,\n"
    "                  prune_step: 4, mask_lr: 0.5, lambda_lr: -0.5}\n"
    "    steps: 6\n"
    "    eval_every: 0\n"
    "    checkpoint_every: 2\n"
    "    log_every: 1\n"
    "  - name: quarter\n"
    "    kind: distill\n"
    "    parent: half\n"
    "    inheritance: {kind: auto, shape: regular, target_sparsity: 0.75, sparsity_warmup: 2,\n"
    "                  prune_step: 4, mask_lr: 0.5, lambda_lr: -0.5}\n"
    "    steps: 6\n"
    "    eval_every: 0\n"
    "    checkpoint_every: 2\n"
    "    log_every: 1\n";

static char *dir;

/* fault: on tinyclip_faults (the released tinyclip has no fault injection) */
static int train(const char *run, const char *fault, char **out) {
    return tc_test_train(dir, run, NULL, fault, out);
}

static void test_regular_stages(void **state) {
    (void)state;
    char *out = NULL, path[1200], args[2600];
    int rc = train("straight", NULL, &out);
    if (rc != 0) fail_msg("run failed (%d):\n%s", rc, out);
    const char *line = strstr(out, "stage quarter: pruned");
    if (!line || !strstr(line, "sparsity")) fail_msg("no pruning line with the sparsity:\n%s", out);
    const char *eol = strchr(line, '\n');
    print_message("%.*s\n", (int)(eol ? eol - line : 200), line);
    free(out);
    const char *stages[2] = {"half", "quarter"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/straight/%s/final", dir, stages[i]);
        tc_model_config cfg;
        tc_param_layout l;
        float *p;
        if (tc_checkpoint_load(path, NULL, &cfg, &l, &p) != TC_OK) fail_msg("%s", tc_last_error());
        print_message("%s: vision width %d, %d heads, mlp %d; text width %d, %d heads, mlp %d\n",
                      stages[i], cfg.vision.width, cfg.vision.heads[0], cfg.vision.mlp_width[0],
                      cfg.text.width, cfg.text.heads[0], cfg.text.mlp_width[0]);
        assert_false(cfg.irregular);
        assert_true(tc_tower_is_uniform(&cfg.vision) && tc_tower_is_uniform(&cfg.text));
        assert_true(cfg.vision.mlp_width[0] < 512 || cfg.vision.width < 128);
        free(p);
        tc_param_layout_free(&l);
        snprintf(args, sizeof args, "inspect '%s'", path);
        assert_int_equal(tc_run_cli(args, &out), 0);
        assert_non_null(strstr(out, "open_clip-regular: yes"));
        free(out);
        snprintf(args, sizeof args, "convert '%s' '%s/oc-%s' --to open_clip", path, dir, stages[i]);
        rc = tc_run_cli(args, &out);
        if (rc != 0) fail_msg("%s: %s", args, out);
        free(out);
    }
}

/* killed inside the second stage's mask phase (regular masks re-expanded
 * from the first stage's pruned model), then resumed */
static void test_kill_in_regular_mask_phase(void **state) {
    (void)state;
    char *out = NULL;
    int rc = train("killed", "kill_at_step:3@quarter", &out);
    if (rc == 0) fail_msg("the run was not killed:\n%s", out);
    free(out);
    rc = train("killed", NULL, &out);
    if (rc != 0) fail_msg("resumed run failed (%d):\n%s", rc, out);
    assert_non_null(strstr(out, "resumed from"));
    free(out);
    char pa[1200], pb[1200];
    snprintf(pa, sizeof pa, "%s/straight/quarter/final/open_clip_model.safetensors", dir);
    snprintf(pb, sizeof pb, "%s/killed/quarter/final/open_clip_model.safetensors", dir);
    size_t na, nb;
    char *da = tc_read_file(pa, &na), *db = tc_read_file(pb, &nb);
    if (!da || !db) fail_msg("missing %s or %s", pa, pb);
    assert_int_equal(na, nb);
    if (memcmp(da, db, na)) fail_msg("the resumed run's final weights differ");
    free(da);
    free(db);
}

static int setup(void **state) {
    (void)state;
    dir = tc_make_tempdir("regular-train");
    char path[1200];
    snprintf(path, sizeof path, "%s/tiny.json", dir);
    assert_int_equal(tc_write_file(path, model_json, strlen(model_json)), 0);
    snprintf(path, sizeof path, "%s/exp.yaml", dir);
    assert_int_equal(tc_write_file(path, experiment_yaml, strlen(experiment_yaml)), 0);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tc_rmtree(dir);
    free(dir);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_regular_stages),
        cmocka_unit_test(test_kill_in_regular_mask_phase),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
