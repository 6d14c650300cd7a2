/* tinyclip convert --to onnx, run in ONNX Runtime: the exported image and
 * text encoders give `tinyclip embed`'s features on the same inputs, for
 * batch 1 and 7, to 1e-5 (fp32) and 1e-2 relative (fp16, each feature row's
 * L2 error over its norm), for
 *   - an irregular pruned student (per-layer heads and MLP widths, a vision
 *     layer without attention, a text layer without MLP; GELU), at opset 17
 *     (LayerNormalization) and 13 (LayerNorm from its mean and variance), and
 *     at 21 with the weights as external data;
 *   - an open_clip-regular pruned student (QuickGELU);
 * with 0-padded (open_clip) and EOT-padded (Hugging Face) token rows.
 *
 * ONNX Runtime comes from the virtual environment scripts/setup makes in
 * .venv/ (or the Python named by TINYCLIP_ONNX_PYTHON); without it the test
 * prints SKIP and exits 77. scripts/onnx_run.py runs the graphs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    char path[1200];
    tc_st_write_tensor px = {"pixel_values", TC_DT_F32, 4, {B, 3, S, S}, img};
    snprintf(path, sizeof path, "%s/pixels.safetensors", dir);
    assert_int_equal(tc_st_write(path, &px, 1, NULL, NULL, 0), TC_OK);
    tc_st_write_tensor tk = {"input_ids", TC_DT_I64, 2, {B, T}, ids64};
    snprintf(path, sizeof path, "%s/tokens.safetensors", dir);
    assert_int_equal(tc_st_write(path, &tk, 1, NULL, NULL, 0), TC_OK);
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

/* exports model_dir and checks both encoders against tinyclip embed */
static void check_export(const char *work, const char *model_dir, const tc_model_config *c,
                         const char *precision, int opset, int external) {
    char onnx[1200], args[4096], *out = NULL;
    snprintf(onnx, sizeof onnx, "%s/onnx-%s-%d-%d", work, precision, opset, external);
    snprintf(args, sizeof args, "convert '%s' '%s' --to onnx --precision %s --opset %d%s",
             model_dir, onnx, precision, opset, external ? " --external-data" : "");
    int rc = tc_run_cli(args, &out);
    if (rc != 0) fail_msg("tinyclip %s: exit %d\n%s", args, rc, out);
    free(out);
    int fp16 = !strcmp(precision, "fp16");
    const int batches[2] = {1, 7};
    for (int k = 0; k < 2; k++) {
        int B = batches[k], E = c->embed_dim;
        write_inputs(work, c, B, 1);
        snprintf(args, sizeof args,
                 "embed '%s' --pixels '%s/pixels.safetensors' --tokens '%s/tokens.safetensors' "
                 "--out '%s/embed.safetensors'",
                 model_dir, work, work, work);
        rc = tc_run_cli(args, &out);
        if (rc != 0) fail_msg("tinyclip %s: exit %d\n%s", args, rc, out);
        free(out);
        char cmd[8192];
        snprintf(cmd, sizeof cmd,
                 "'%s' '%s' '%s' --pixels '%s/pixels.safetensors' --tokens "
                 "'%s/tokens.safetensors' --out '%s/ort.safetensors' 2>&1",
                 python, runner, onnx, work, work, work);
        rc = tc_run_capture(cmd, &out);
        if (rc != 0) fail_msg("%s: exit %d\n%s", cmd, rc, out);
        free(out);
        char ep[1200], op[1200];
        snprintf(ep, sizeof ep, "%s/embed.safetensors", work);
        snprintf(op, sizeof op, "%s/ort.safetensors", work);
        const char *names[2] = {"image_features", "text_features"};
        for (int t = 0; t < 2; t++) {
            float *ref = read_features(ep, names[t], B, E),
                  *got = read_features(op, names[t], B, E);
            double row, elem;
            compare(got, ref, B, E, &row, &elem);
            print_message("%-17s %s opset %d%s batch %d %s: max |d| %.3g, max row L2 error "
                          "%.3g\n",
                          c->name, precision, opset, external ? " external data" : "", B, names[t],
                          elem, row);
            if (fp16 ? !(row <= 1e-2) : !(elem <= 1e-5))
                fail_msg("%s %s opset %d batch %d: %s differ from tinyclip embed (max |d| %.3g, "
                         "row error %.3g)",
                         c->name, precision, opset, B, names[t], elem, row);
            free(ref);
            free(got);
        }
    }
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
    check_export(work, model_dir, &c, "fp32", 17, 0);
    check_export(work, model_dir, &c, "fp16", 17, 0);
    if (!regular) {
        check_export(work, model_dir, &c, "fp32", 13, 0);
        check_export(work, model_dir, &c, "fp32", 21, 1);
    }
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

int main(void) {
    find_runtime();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_irregular),
        cmocka_unit_test(test_regular),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
