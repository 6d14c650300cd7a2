/* tinyclip convert --to onnx, run in ONNX Runtime: the exported image and
 * text encoders give `tinyclip embed`'s features on the same inputs, for
 * batch 1 and 7, to 1e-5 (fp32) and 1e-2 relative (fp16, each feature row's
 * L2 error over its norm), for
 *   - an irregular pruned student (per-layer heads and MLP widths, a vision
 *     layer without attention, a text layer without MLP; GELU), at opset 17
 *     (LayerNormalization) and 13 (LayerNorm from its mean and variance), and
 *     at 21 with the weights as external data;
 *   - an open_clip-regular pruned student (QuickGELU);
 *   - the ResNet-tower fixture tiny_rn (tests/fixtures/breadth: stem,
 *     anti-aliased bottlenecks, BatchNorm on its running statistics,
 *     attention pool), at opsets 17, 13 and 21 (external data), fp32 and
 *     fp16: BatchNorm is the BatchNormalization operator, which ONNX Runtime
 *     folds into the convolutions, so the same 1e-5 covers that rounding;
 *   - open_clip's RN50 with the formula weights of tests/fixtures/breadth:
 *     the features equal those open_clip stored (1e-5 fp32, 1e-2 fp16);
 *   - the head-width fixtures tiny_hw80 (vision heads 80 wide) and tiny_hw104
 *     (vision heads 104 wide, text 80, QuickGELU);
 * with 0-padded (open_clip) and EOT-padded (Hugging Face) token rows.
 *
 * ONNX Runtime comes from the virtual environment scripts/setup makes in
 * .venv/ (or the Python named by TINYCLIP_ONNX_PYTHON); without it the test
 * prints SKIP and exits 77. scripts/onnx_run.py runs the graphs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "safetensors.h"
#include "testutil.h"

static char python[1024], runner[1024];

static const char *source_dir(void) {
    const char *s = getenv("TC_SOURCE_DIR");
    return s ? s : TC_SOURCE_DIR;
}

/* the Python with onnxruntime and numpy, or a skip */
static void find_runtime(void) {
    const char *env = getenv("TINYCLIP_ONNX_PYTHON");
    if (env && env[0])
        snprintf(python, sizeof python, "%s", env);
    else
        snprintf(python, sizeof python, "%s/.venv/bin/python", source_dir());
    snprintf(runner, sizeof runner, "%s/scripts/onnx_run.py", source_dir());
    char cmd[2200], *out = NULL;
    snprintf(cmd, sizeof cmd,
             "'%s' -c 'import onnxruntime, numpy; print(onnxruntime.__version__)' 2>&1", python);
    int rc = tc_run_capture(cmd, &out);
    if (rc != 0)
        tc_skip_test("ONNX Runtime is not available to %s (scripts/setup installs it into .venv/; "
                     "TINYCLIP_ONNX_PYTHON names another Python): %s",
                     python, out ? out : "");
    printf("ONNX Runtime %s", out);
    free(out);
}

/* dir/pixels.safetensors (B, 3, S, S) and dir/tokens.safetensors (B, T) of
 * type ids_type, the inputs of tinyclip embed and scripts/onnx_run.py */
static void save_inputs(const char *dir, const float *img, int B, int S, const void *ids,
                        tc_dtype ids_type, int T) {
    char path[1200];
    tc_st_write_tensor px = {"pixel_values", TC_DT_F32, 4, {B, 3, S, S}, img};
    snprintf(path, sizeof path, "%s/pixels.safetensors", dir);
    assert_int_equal(tc_st_write(path, &px, 1, NULL, NULL, 0), TC_OK);
    tc_st_write_tensor tk = {"input_ids", ids_type, 2, {B, T}, ids};
    snprintf(path, sizeof path, "%s/tokens.safetensors", dir);
    assert_int_equal(tc_st_write(path, &tk, 1, NULL, NULL, 0), TC_OK);
}

static void write_inputs(const char *dir, const tc_model_config *c, int B, int eot_pad) {
    int S = c->vision.image_size, T = c->text.context_length;
    float *img = malloc((size_t)7 * 3 * S * S * sizeof *img);
    int32_t *ids = malloc((size_t)7 * T * sizeof *ids);
    assert_non_null(img);
    assert_non_null(ids);
    tc_test_clip_batch(img, ids, 7, c, B);
    int64_t *ids64 = malloc((size_t)B * T * sizeof *ids64);
    for (int b = 0; b < B; b++) {
        int after_eot = 0;
        for (int j = 0; j < T; j++) {
            int32_t v = ids[b * T + j];
            /* Hugging Face pads with the end-of-text id: the first one pools */
            if (after_eot && eot_pad && b % 2 == 0) v = c->text.vocab_size - 1;
            if (ids[b * T + j] == c->text.vocab_size - 1) after_eot = 1;
            ids64[b * T + j] = v;
        }
    }
    save_inputs(dir, img, B, S, ids64, TC_DT_I64, T);
    free(img);
    free(ids);
    free(ids64);
}

static float *read_features(const char *path, const char *name, int B, int E) {
    tc_safetensors *f;
    assert_int_equal(tc_st_open(&f, path), TC_OK);
    float *x = malloc((size_t)B * E * sizeof *x);
    int64_t shape[2] = {B, E};
    if (tc_st_read_f32(f, name, 2, shape, x) != TC_OK) fail_msg("%s: %s", path, tc_last_error());
    tc_st_close(f);
    return x;
}

/* largest per-row L2 error (rows are unit vectors) and largest element error */
static void compare(const float *a, const float *ref, int B, int E, double *row, double *elem) {
    *row = *elem = 0;
    for (int b = 0; b < B; b++) {
        double e2 = 0, r2 = 0;
        for (int j = 0; j < E; j++) {
            double d = (double)a[b * E + j] - ref[b * E + j];
            e2 += d * d;
            r2 += (double)ref[b * E + j] * ref[b * E + j];
            if (fabs(d) > *elem) *elem = fabs(d);
        }
        double r = sqrt(e2 / (r2 > 0 ? r2 : 1));
        if (r > *row) *row = r;
    }
}

/* tinyclip convert MODEL work/onnx-... --to onnx; the folder's name in onnx */
static void export_onnx(const char *work, const char *model, const char *hint,
                        const char *precision, int opset, int external, char *onnx, size_t cap) {
    char args[4096], *out = NULL;
    snprintf(onnx, cap, "%s/onnx-%s-%d-%d", work, precision, opset, external);
    snprintf(args, sizeof args, "convert '%s' '%s' --to onnx --precision %s --opset %d%s%s", model,
             onnx, precision, opset, external ? " --external-data" : "", hint);
    int rc = tc_run_cli(args, &out);
    if (rc != 0) fail_msg("tinyclip %s: exit %d\n%s", args, rc, out);
    free(out);
}

/* ONNX Runtime on work/pixels.safetensors and work/tokens.safetensors ->
 * work/ort.safetensors */
static void run_onnx(const char *work, const char *onnx) {
    char cmd[8192], *out = NULL;
    snprintf(cmd, sizeof cmd,
             "'%s' '%s' '%s' --pixels '%s/pixels.safetensors' --tokens "
             "'%s/tokens.safetensors' --out '%s/ort.safetensors' 2>&1",
             python, runner, onnx, work, work, work);
    int rc = tc_run_capture(cmd, &out);
    if (rc != 0) fail_msg("%s: exit %d\n%s", cmd, rc, out);
    free(out);
}

/* the ONNX features `name` (B, E) of work/ort.safetensors against the
 * reference file's: 1e-5 per element (fp32), 1e-2 of each row's norm (fp16) */
static void expect_features(const char *work, const char *ref_path, const char *name, int B, int E,
                            int fp16, const char *what) {
    char op[1200];
    snprintf(op, sizeof op, "%s/ort.safetensors", work);
    float *ref = read_features(ref_path, name, B, E), *got = read_features(op, name, B, E);
    double row, elem;
    compare(got, ref, B, E, &row, &elem);
    print_message("%s batch %d %s: max |d| %.3g, max row L2 error %.3g\n", what, B, name, elem,
                  row);
    if (fp16 ? !(row <= 1e-2) : !(elem <= 1e-5))
        fail_msg("%s batch %d: %s differ (max |d| %.3g, row error %.3g)", what, B, name, elem, row);
    free(ref);
    free(got);
}

/* exports model (a checkpoint; config: its config file, or NULL when it
 * carries one) and checks both encoders against tinyclip embed */
static void check_export(const char *work, const char *model_dir, const char *config,
                         const tc_model_config *c, const char *precision, int opset, int external) {
    char onnx[1200], args[4096], hint[1300] = "", what[1400], *out = NULL;
    if (config) snprintf(hint, sizeof hint, " --model '%s'", config);
    export_onnx(work, model_dir, hint, precision, opset, external, onnx, sizeof onnx);
    snprintf(what, sizeof what, "%-17s %s opset %d%s", c->name, precision, opset,
             external ? " external data" : "");
    const int batches[2] = {1, 7};
    for (int k = 0; k < 2; k++) {
        int B = batches[k];
        write_inputs(work, c, B, 1);
        snprintf(args, sizeof args,
                 "embed '%s'%s --pixels '%s/pixels.safetensors' --tokens "
                 "'%s/tokens.safetensors' --out '%s/embed.safetensors'",
                 model_dir, hint, work, work, work);
        int rc = tc_run_cli(args, &out);
        if (rc != 0) fail_msg("tinyclip %s: exit %d\n%s", args, rc, out);
        free(out);
        run_onnx(work, onnx);
        char ep[1200];
        snprintf(ep, sizeof ep, "%s/embed.safetensors", work);
        expect_features(work, ep, "image_features", B, c->embed_dim, !strcmp(precision, "fp16"),
                        what);
        expect_features(work, ep, "text_features", B, c->embed_dim, !strcmp(precision, "fp16"),
                        what);
    }
}

/* the precisions, opsets and weight placements a model is checked at */
typedef struct {
    const char *precision;
    int opset, external;
} export_case;

static const export_case every_case[] = {
    {.precision = "fp32", .opset = 17, .external = 0},
    {.precision = "fp16", .opset = 17, .external = 0},
    {.precision = "fp32", .opset = 13, .external = 0},
    {.precision = "fp16", .opset = 13, .external = 0},
    {.precision = "fp32", .opset = 21, .external = 1},
};
#define DEFAULT_OPSET_CASES 2 /* the first two: fp32 and fp16 at the default opset */
#define ALL_CASES ((int)(sizeof every_case / sizeof every_case[0]))

static void check_cases(const char *work, const char *model, const char *config,
                        const tc_model_config *c, int n_cases) {
    for (int i = 0; i < n_cases; i++)
        check_export(work, model, config, c, every_case[i].precision, every_case[i].opset,
                     every_case[i].external);
}

static void run_student(int regular, tc_activation act) {
    char *work = tc_make_tempdir(regular ? "onnx-regular" : "onnx-irregular");
    assert_non_null(work);
    char model_dir[1200];
    snprintf(model_dir, sizeof model_dir, "%s/model", work);
    tc_model_config c;
    tc_test_pruned_student(model_dir, regular, act, &c);
    print_message("%s: vision width %d heads [%d %d %d] mlp [%d %d %d]; text width %d heads "
                  "[%d %d %d] mlp [%d %d %d]\n",
                  c.name, c.vision.width, c.vision.heads[0], c.vision.heads[1], c.vision.heads[2],
                  c.vision.mlp_width[0], c.vision.mlp_width[1], c.vision.mlp_width[2], c.text.width,
                  c.text.heads[0], c.text.heads[1], c.text.heads[2], c.text.mlp_width[0],
                  c.text.mlp_width[1], c.text.mlp_width[2]);
    check_cases(work, model_dir, NULL, &c, regular ? DEFAULT_OPSET_CASES : ALL_CASES);
    tc_rmtree(work);
    free(work);
}

static void test_irregular(void **state) {
    (void)state;
    run_student(0, TC_GELU);
}

static void test_regular(void **state) {
    (void)state;
    run_student(1, TC_QUICK_GELU);
}

/* a model of tests/fixtures/breadth (F16 weights, config beside them) */
static void run_fixture(const char *name, int all_opsets) {
    char *work = tc_make_tempdir("onnx-fixture");
    assert_non_null(work);
    char model[1200], config[1200];
    snprintf(model, sizeof model, "%s/breadth/%s_model.safetensors", TC_FIXTURES, name);
    snprintf(config, sizeof config, "%s/breadth/%s.json", TC_FIXTURES, name);
    tc_model_config c;
    if (tc_model_config_load(&c, config) != TC_OK) fail_msg("%s", tc_last_error());
    check_cases(work, model, config, &c, all_opsets ? ALL_CASES : DEFAULT_OPSET_CASES);
    tc_rmtree(work);
    free(work);
}

static void test_resnet(void **state) {
    (void)state;
    run_fixture("tiny_rn", 1);
}

static void test_head_width_80(void **state) {
    (void)state;
    run_fixture("tiny_hw80", 0);
}

static void test_head_width_104(void **state) {
    (void)state;
    run_fixture("tiny_hw104", 0);
}

/* open_clip's RN50 with the formula weights of tests/fixtures/breadth
 * (computed here bit for bit): the ONNX image and text encoders against the
 * features open_clip 3.3.0 stored, not only against tinyclip's */
static void test_rn50_open_clip(void **state) {
    (void)state;
    char *work = tc_make_tempdir("onnx-rn50");
    assert_non_null(work);
    char path[1300], model[1300], what[64];
    snprintf(path, sizeof path, "%s/configs/models/RN50.json", source_dir());
    tc_model_config cfg;
    tc_param_layout l;
    if (tc_model_config_load(&cfg, path) != TC_OK) fail_msg("%s", tc_last_error());
    assert_int_equal(tc_param_layout_build(&l, &cfg), TC_OK);
    float *params = malloc(l.total * sizeof *params);
    assert_non_null(params);
    assert_int_equal(tc_test_formula_params(&l, params), 0);
    snprintf(model, sizeof model, "%s/rn50", work);
    assert_int_equal(tc_checkpoint_save(model, TC_FORMAT_OPENCLIP, &cfg, &l, params), TC_OK);
    free(params);
    tc_param_layout_free(&l);
    /* the fixture's images (formula) and tokens */
    const int B = 2, S = cfg.vision.image_size, T = cfg.text.context_length;
    float *images = malloc((size_t)B * 3 * S * S * sizeof *images);
    int32_t *tokens = malloc((size_t)B * T * sizeof *tokens);
    assert_non_null(images);
    assert_non_null(tokens);
    tc_test_formula_images("image", images, B, S, 32);
    char ref[1300];
    snprintf(ref, sizeof ref, "%s/breadth/rn50_formula.safetensors", TC_FIXTURES);
    tc_safetensors *f;
    if (tc_st_open(&f, ref) != TC_OK) fail_msg("%s", tc_last_error());
    const int64_t ts[2] = {B, T};
    assert_int_equal(tc_st_read_i32(f, "tokens", 2, ts, tokens), TC_OK);
    tc_st_close(f);
    save_inputs(work, images, B, S, tokens, TC_DT_I32, T);
    free(images);
    free(tokens);
    const char *precisions[2] = {"fp32", "fp16"};
    for (int k = 0; k < 2; k++) {
        char onnx[1200];
        export_onnx(work, model, "", precisions[k], 17, 0, onnx, sizeof onnx);
        run_onnx(work, onnx);
        snprintf(what, sizeof what, "RN50 vs open_clip %s", precisions[k]);
        expect_features(work, ref, "image_features", B, cfg.embed_dim, k == 1, what);
        expect_features(work, ref, "text_features", B, cfg.embed_dim, k == 1, what);
        tc_rmtree(onnx);
    }
    tc_rmtree(work);
    free(work);
}

int main(void) {
    find_runtime();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_irregular),      cmocka_unit_test(test_regular),
        cmocka_unit_test(test_resnet),         cmocka_unit_test(test_head_width_80),
        cmocka_unit_test(test_head_width_104), cmocka_unit_test(test_rn50_open_clip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
