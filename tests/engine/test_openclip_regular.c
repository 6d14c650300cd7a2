/* an open_clip-regular pruned student (tied masks of automatic inheritance,
 * the prune the scheduler runs) leaves tinyclip by `tinyclip convert --to
 * open_clip` and `--to hf`, and open_clip 3.3.0 (local-dir:) and
 * transformers (CLIPModel.from_pretrained) load it with tinyclip's features.
 *
 * tests/fixtures/regular/ (scripts/fixtures_regular.py, through
 * scripts/make_fixtures.py) holds the two conversions of the student and the
 * features open_clip and transformers computed from them. here:
 *  - the student is made again and converted again: the same weights and
 *    configs as the committed conversions (the fixture is tinyclip's output
 *    of today);
 *  - `tinyclip embed` of each committed folder on the fixture's inputs gives
 *    open_clip's and transformers' features to 1e-5.
 *
 * TC_WRITE_REGULAR_STUDENT=DIR makes this program write the student's
 * checkpoint into DIR and exit (the generator's first step). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "safetensors.h"
#include "testutil.h"

static char fixture_dir[1024];

/* both loads give the same config and bit-identical parameters */
static void same_checkpoint(const char *a, const char *b) {
    tc_model_config ca, cb;
    tc_param_layout la, lb;
    float *pa, *pb;
    if (tc_checkpoint_load(a, NULL, &ca, &la, &pa) != TC_OK) fail_msg("%s", tc_last_error());
    if (tc_checkpoint_load(b, NULL, &cb, &lb, &pb) != TC_OK) fail_msg("%s", tc_last_error());
    char *ja, *jb;
    assert_int_equal(tc_model_config_to_json(&ca, &ja), TC_OK);
    assert_int_equal(tc_model_config_to_json(&cb, &jb), TC_OK);
    if (strcmp(ja, jb)) fail_msg("%s and %s: configs differ:\n%s\n%s", a, b, ja, jb);
    assert_int_equal(la.total, lb.total);
    if (memcmp(pa, pb, la.total * sizeof *pa))
        fail_msg("%s: the weights differ from a fresh conversion (regenerate the fixtures with "
                 "scripts/make_fixtures.py --only regular)",
                 b);
    assert_false(ca.irregular);
    free(ja);
    free(jb);
    free(pa);
    free(pb);
    tc_param_layout_free(&la);
    tc_param_layout_free(&lb);
}

static void test_fresh_conversion(void **state) {
    (void)state;
    char *work = tc_make_tempdir("regular-fixture");
    char student[1200], oc[1200], hf[1200], ref[1200], *out = NULL;
    snprintf(student, sizeof student, "%s/student", work);
    snprintf(oc, sizeof oc, "%s/open_clip", work);
    snprintf(hf, sizeof hf, "%s/hf", work);
    tc_model_config cfg;
    tc_test_pruned_student(student, 1, TC_GELU, &cfg);
    char args[4096];
    snprintf(args, sizeof args, "convert '%s' '%s' --to open_clip", student, oc);
    if (tc_run_cli(args, &out) != 0) fail_msg("%s", out);
    free(out);
    snprintf(args, sizeof args, "convert '%s' '%s' --to hf", student, hf);
    if (tc_run_cli(args, &out) != 0) fail_msg("%s", out);
    free(out);
    snprintf(ref, sizeof ref, "%s/open_clip", fixture_dir);
    same_checkpoint(oc, ref);
    snprintf(ref, sizeof ref, "%s/hf", fixture_dir);
    same_checkpoint(hf, ref);
    tc_rmtree(work);
    free(work);
}

static float *io_tensor(tc_safetensors *f, const char *name, int64_t *rows, int64_t *cols) {
    const tc_st_tensor *t = tc_st_find(f, name);
    if (!t) fail_msg("io.safetensors has no %s", name);
    *rows = t->shape[0];
    *cols = t->shape[1];
    float *x = malloc((size_t)(*rows * *cols) * sizeof *x);
    assert_int_equal(tc_st_read_f32(f, name, 2, t->shape, x), TC_OK);
    return x;
}

static void test_features(void **state) {
    (void)state;
    char io[1200], model[1200], outp[1200], args[8192], *out = NULL;
    char *work = tc_make_tempdir("regular-features");
    snprintf(io, sizeof io, "%s/io.safetensors", fixture_dir);
    snprintf(outp, sizeof outp, "%s/features.safetensors", work);
    const char *folders[2] = {"open_clip", "hf"};
    const char *prefix[2] = {"openclip", "hf"};
    for (int k = 0; k < 2; k++) {
        snprintf(model, sizeof model, "%s/%s", fixture_dir, folders[k]);
        /* the pixels and tokens of io.safetensors go in as they are */
        snprintf(args, sizeof args,
                 "embed '%s' --pixels '%s/pixels.safetensors' --tokens '%s/tokens.safetensors' "
                 "--out '%s'",
                 model, fixture_dir, fixture_dir, outp);
        int rc = tc_run_cli(args, &out);
        if (rc != 0) fail_msg("tinyclip %s: exit %d\n%s", args, rc, out);
        free(out);
        tc_safetensors *ref, *got;
        assert_int_equal(tc_st_open(&ref, io), TC_OK);
        assert_int_equal(tc_st_open(&got, outp), TC_OK);
        const char *tower[2] = {"image_features", "text_features"};
        for (int t = 0; t < 2; t++) {
            char name[64];
            snprintf(name, sizeof name, "%s_%s", prefix[k], tower[t]);
            int64_t r1, c1, r2, c2;
            float *a = io_tensor(ref, name, &r1, &c1), *b = io_tensor(got, tower[t], &r2, &c2);
            assert_true(r1 == r2 && c1 == c2);
            double d = tc_max_abs_diff(b, a, (size_t)(r1 * c1));
            print_message("%s loaded by %s: %s max |d| %.3g against tinyclip embed\n", folders[k],
                          k ? "transformers" : "open_clip", tower[t], d);
            if (!(d <= 1e-5)) fail_msg("%s: %s differ by %.3g", name, tower[t], d);
            free(a);
            free(b);
        }
        tc_st_close(ref);
        tc_st_close(got);
    }
    tc_rmtree(work);
    free(work);
}

int main(void) {
    const char *w = getenv("TC_WRITE_REGULAR_STUDENT");
    if (w && w[0]) {
        tc_model_config cfg;
        tc_test_pruned_student(w, 1, TC_GELU, &cfg);
        printf("wrote the regular student to %s\n", w);
        return 0;
    }
    tc_fixture("regular", fixture_dir, sizeof fixture_dir);
    char probe[1200];
    snprintf(probe, sizeof probe, "%s/io.safetensors", fixture_dir);
    if (!tc_file_exists(probe)) {
        fprintf(stderr, "%s is missing: scripts/make_fixtures.py --only regular writes it\n",
                probe);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fresh_conversion),
        cmocka_unit_test(test_features),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
