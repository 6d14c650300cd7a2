/* run report (report.md, report.json, gnuplot plots or the note saying why
 * there are none), metrics.jsonl (write, read back, truncate after a resume
 * step, torn last line) and the console progress line. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "metrics_log.h"
#include "progress.h"
#include "report.h"
#include "testutil.h"

static char *join_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static void write_metrics(const char *path, int steps, double scale) {
    tc_metrics_log *m;
    assert_int_equal(tc_metrics_open(&m, path), TC_OK);
    for (int s = 1; s <= steps; s++) {
        const char *keys[2] = {"loss", "lr"};
        double vals[2] = {scale / s, 1e-4};
        assert_int_equal(tc_metrics_write(m, s, NULL, 2, keys, vals), TC_OK);
        if (s % 5 == 0) {
            const char *k[1] = {"zero_shot_top1"};
            double v[1] = {0.1 * s};
            assert_int_equal(tc_metrics_write(m, s, "eval", 1, k, v), TC_OK);
        }
    }
    assert_int_equal(tc_metrics_close(m), TC_OK);
}

static void test_metrics_log(void **state) {
    char *dir = tc_make_tempdir("metrics");
    char *path = join_path(dir, "stage/metrics.jsonl");
    write_metrics(path, 10, 2.0);
    int64_t *steps;
    double *vals;
    int n;
    assert_int_equal(tc_metrics_read_series(path, "loss", NULL, &steps, &vals, &n), TC_OK);
    assert_int_equal(n, 10);
    assert_int_equal(steps[3], 4);
    assert_float_equal(vals[3], 0.5, 1e-9);
    free(steps);
    free(vals);
    assert_int_equal(tc_metrics_read_series(path, "zero_shot_top1", "eval", &steps, &vals, &n),
                     TC_OK);
    assert_int_equal(n, 2);
    assert_int_equal(steps[1], 10);
    assert_float_equal(vals[1], 1.0, 1e-9);
    free(steps);
    free(vals);

    /* NaN is written as null (JSON has no NaN); odd key names are refused */
    tc_metrics_log *m;
    assert_int_equal(tc_metrics_open(&m, path), TC_OK);
    const char *k[1] = {"loss"};
    double v[1] = {NAN};
    assert_int_equal(tc_metrics_write(m, 11, "skip", 1, k, v), TC_OK);
    const char *badk[1] = {"a\"b"};
    assert_int_equal(tc_metrics_write(m, 11, NULL, 1, badk, v), TC_ERR_ARG);
    assert_int_equal(tc_metrics_sync(m), TC_OK);
    assert_int_equal(tc_metrics_close(m), TC_OK);
    size_t len;
    char *text = tc_read_file(path, &len);
    assert_non_null(strstr(text, "{\"step\": 11, \"time\": "));
    assert_non_null(strstr(text, "\"event\": \"skip\", \"loss\": null}\n"));
    free(text);

    /* resume from step 6: later lines go; a torn last line goes too */
    FILE *f = fopen(path, "a");
    fputs("{\"step\": 12, \"loss\": 0.1", f);
    fclose(f);
    assert_int_equal(tc_metrics_truncate_after(path, 6), TC_OK);
    assert_int_equal(tc_metrics_read_series(path, "loss", NULL, &steps, &vals, &n), TC_OK);
    assert_int_equal(n, 6);
    assert_int_equal(steps[5], 6);
    free(steps);
    free(vals);
    text = tc_read_file(path, &len);
    assert_null(strstr(text, "\"step\": 7,"));
    assert_int_equal(text[len - 1], '\n');
    free(text);
    char *missing = join_path(dir, "none.jsonl");
    assert_int_equal(tc_metrics_truncate_after(missing, 3), TC_OK);
    free(missing);
    free(path);
    tc_rmtree(dir);
    free(dir);
}

static void test_progress(void **state) {
    char buf[256];
    tc_progress_format(buf, sizeof buf, "auto50", 350, 700, 1.23456, 812.34, 67);
    assert_string_equal(buf, "stage auto50 [350/700] loss 1.2346  img/s 812.3  ETA 01:07");
    tc_progress_format(buf, sizeof buf, "t", 5, 1000, 0.5, 10, 3661);
    assert_string_equal(buf, "stage t [   5/1000] loss 0.5000  img/s 10.0  ETA 1:01:01");
    tc_progress_format(buf, sizeof buf, "t", 0, 10, NAN, 0, -1);
    assert_string_equal(buf, "stage t [ 0/10] loss nan  img/s 0.0  ETA --:--");

    /* plain output: every 2 steps and the last */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    tc_progress p;
    tc_progress_begin(&p, f, "s", 0, 5, 2, 0);
    for (int s = 1; s <= 5; s++)
        tc_progress_update(&p, s, 1.0, 2.0);
    tc_progress_end(&p);
    fclose(f);
    int lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    assert_int_equal(lines, 3);
    assert_non_null(strstr(text, "stage s [2/5]"));
    assert_non_null(strstr(text, "stage s [4/5]"));
    assert_non_null(strstr(text, "stage s [5/5]"));
    assert_null(strchr(text, '\r'));
    free(text);

    /* terminal: one line rewritten in place, a newline at the end, messages on their own line */
    f = open_memstream(&text, &len);
    tc_progress_begin(&p, f, "s", 0, 3, 1, 1);
    tc_progress_update(&p, 1, 1.0, 2.0);
    tc_progress_message(&p, "eval: top-1 0.5");
    tc_progress_update(&p, 3, 1.0, 2.0);
    tc_progress_end(&p);
    fclose(f);
    assert_int_equal(strncmp(text, "\rstage s [1/3]", 14), 0);
    assert_non_null(strstr(text, "\033[K\r\033[Keval: top-1 0.5\n\rstage s [3/3]"));
    assert_int_equal(text[len - 1], '\n');
    free(text);
}

static tc_report_row row(const char *name, const char *kind, int64_t params, double top1,
                         const char *metrics) {
    tc_report_row r = {.name = name,
                       .kind = kind,
                       .params = params,
                       .params_no_token_emb = params / 2,
                       .gflops_image = 0.25,
                       .gflops_text = 0.125,
                       .top1 = top1,
                       .top5 = top1 + 0.1,
                       .images_per_sec = 1234.5,
                       .train_steps = 1000,
                       .images_per_step = 128,
                       .train_gflop = NAN,
                       .train_seconds = NAN,
                       .lineage_gflop = NAN,
                       .lineage_seconds = NAN,
                       .metrics_path = metrics};
    return r;
}

/* mask-phase lines (event "mask") and a Lagrangian on the log lines */
static void write_mask_metrics(const char *path, int steps) {
    tc_metrics_log *m;
    assert_int_equal(tc_metrics_open(&m, path), TC_OK);
    for (int s = 1; s <= steps; s++) {
        const char *k[5] = {"expected_sparsity", "target_sparsity", "lambda1", "lambda2",
                            "lagrangian"};
        double v[5] = {0.01 * s, 0.5, 10.0 + 0.1 * s, 10.0 - 0.1 * s, 0.25};
        assert_int_equal(tc_metrics_write(m, s, "mask", 5, k, v), TC_OK);
        const char *kl[2] = {"loss", "lagrangian"};
        double vl[2] = {2.0, 0.25};
        assert_int_equal(tc_metrics_write(m, s, NULL, 2, kl, vl), TC_OK);
    }
    assert_int_equal(tc_metrics_close(m), TC_OK);
}

/* with gnuplot: the five PNGs, the plot data and the script's labels */
static void check_plots(const char *dir, const tc_report_row *rows, tc_report_options *opt,
                        const char *md_path) {
    size_t len;
    char *md;
    if (system("command -v gnuplot > /dev/null 2>&1") != 0) {
        print_message("gnuplot is not installed: plot check not run\n");
    } else {
        opt->gnuplot = NULL;
        assert_int_equal(tc_report_write(dir, rows, 3, opt), TC_OK);
        md = tc_read_file(md_path, &len);
        assert_non_null(strstr(md, "![training loss per stage](plots/loss.png)"));
        assert_non_null(
            strstr(md, "![zero-shot top-1 against training steps](plots/acc_steps.png)"));
        assert_non_null(strstr(md, "![mask phases](plots/masks.png)"));
        assert_non_null(
            strstr(md, "![zero-shot top-1 against inference speed](plots/acc_speed.png)"));
        assert_non_null(strstr(md, "![zero-shot top-1 against parameters](plots/acc_params.png)"));
        free(md);
        const char *pngs[5] = {"plots/loss.png", "plots/acc_params.png", "plots/acc_steps.png",
                               "plots/acc_speed.png", "plots/masks.png"};
        for (int i = 0; i < 5; i++) {
            char *p = join_path(dir, pngs[i]);
            char *png = tc_read_file(p, &len);
            assert_non_null(png);
            assert_true(len > 1000);
            assert_memory_equal(png, "\x89PNG\r\n\x1a\n", 8);
            free(png);
            free(p);
        }
        /* the distillation loss without the Lagrangian: 2.0 - 0.25 */
        char *dat = join_path(dir, "plots/loss_auto50.dat");
        char *d = tc_read_file(dat, &len);
        assert_non_null(strstr(d, "\n15 1.75\n"));
        free(d);
        free(dat);
        dat = join_path(dir, "plots/masks_auto50.dat");
        d = tc_read_file(dat, &len);
        assert_non_null(strstr(d, "\n15 0.15 0.5 11.5 8.5 0.25\n"));
        free(d);
        free(dat);
        /* the curve in two blocks: up to the first counted evaluation, then from it */
        dat = join_path(dir, "plots/acc_steps_auto50.dat");
        d = tc_read_file(dat, &len);
        assert_non_null(strstr(d, "\n5 84.0000\n10 80.0000\n\n\n10 80.0000\n15 83.0000\n"));
        free(d);
        free(dat);
        /* labels placed apart: no two label boxes at the same position */
        dat = join_path(dir, "plots/report.gp");
        d = tc_read_file(dat, &len);
        assert_non_null(strstr(d, "set label 1 'teacher' at graph "));
        assert_non_null(strstr(d, "set arrow from 10.00,60.0000 to 20.00,60.0000 nohead"));
        free(d);
        free(dat);
    }
}

static void test_report(void **state) {
    char *dir = tc_make_tempdir("report");
    char *m1 = join_path(dir, "teacher/metrics.jsonl"),
         *m2 = join_path(dir, "auto50/metrics.jsonl");
    write_metrics(m1, 20, 3.0);
    write_mask_metrics(m2, 15);
    int64_t s_auto[] = {5, 10, 15}, s_base[] = {10, 20, 30, 40};
    double a_auto[] = {0.84, 0.80, 0.83}, a_base[] = {0.5, 0.6, 0.7, 0.8};
    tc_report_row rows[3] = {row("teacher", "teacher (scratch)", 8360000, 0.85, m1),
                             row("auto50", "auto | 50%", 7370000, 0.83, m2),
                             row("scratch25", "scratch baseline", 6830000, NAN, NULL)};
    rows[1].distill = rows[1].masks = 1;
    rows[1].train_steps = 15;
    rows[1].curve = (tc_curve){s_auto, a_auto, 3, 10};
    rows[2].curve = (tc_curve){s_base, a_base, 4, 0};
    rows[2].train_steps = 40;
    rows[0].train_gflop = 2.5e6;
    rows[0].train_seconds = 100;
    rows[0].lineage_gflop = 2.5e6;
    rows[0].lineage_seconds = 100;
    rows[0].lineage_names = "teacher";
    rows[1].train_gflop = 1.5e3;
    rows[1].lineage_gflop = 2.5015e6;
    rows[1].lineage_names = "teacher + auto50";
    tc_report_speedup sp = {.student = 1, .baseline = 2};
    double fr[] = {0.5, 1.0};
    assert_int_equal(tc_speedup_compute(&rows[1].curve, 15, &rows[2].curve, 40, fr, 2, &sp.sp),
                     TC_OK);
    tc_goal_result goals[2] = {{1, "teacher zero-shot top-1 >= 80.00%", "85.00%"},
                               {0, "a goal | with a pipe", "missed"}};

    /* without gnuplot: a note instead of a failure */
    tc_report_options opt = {.title = "fmnist demo",
                             .throughput_note = "cpu, 2 threads",
                             .machine = "Test CPU, 2 threads, OpenBLAS kernels X",
                             .eval_note = "Curves: on 200 images.",
                             .notes = "extra notes",
                             .speedups = &sp,
                             .n_speedups = 1,
                             .goals = goals,
                             .n_goals = 2,
                             .plots = 1,
                             .gnuplot = "/nonexistent/gnuplot"};
    assert_int_equal(tc_report_write(dir, rows, 3, &opt), TC_OK);
    char *md_path = join_path(dir, "report.md"), *js_path = join_path(dir, "report.json");
    size_t len;
    char *md = tc_read_file(md_path, &len);
    assert_non_null(strstr(md, "# fmnist demo\n"));
    assert_non_null(strstr(md, "Machine: Test CPU, 2 threads, OpenBLAS kernels X."));
    assert_non_null(strstr(md, "| model | kind | parameters |"));
    assert_non_null(strstr(md, "| teacher | teacher (scratch) | 8.36M | 4.18M | 0.250 | 0.125 | "
                               "85.00% | 95.00% | 1234.5 | 1000 | 128.0k |"));
    assert_non_null(strstr(md, "| auto50 | auto \\| 50% | 7.37M |"));
    assert_non_null(strstr(md, "| – | – | 1234.5 | 40 | 5.1k |"));
    /* goals */
    assert_non_null(strstr(md, "| teacher zero-shot top-1 >= 80.00% | 85.00% | met |"));
    assert_non_null(strstr(md, "| a goal \\| with a pipe | missed | **not met** |"));
    /* speedup: targets 0.6 (at step 20) and 0.8 (at 40); auto50 counted from 10 */
    assert_non_null(strstr(md, "## Inheritance speedup: auto50 against scratch25"));
    assert_non_null(strstr(md, "auto50's evaluations count from step 10 on"));
    assert_non_null(strstr(md, "Curves: on 200 images."));
    assert_non_null(strstr(md, "| 50% of scratch25's steps (20) | 60.00% | 20.0 | 2.6k | 10 "
                               "(first counted evaluation) | 1.3k | 2.00x |"));
    assert_non_null(strstr(md, "| 100% of scratch25's steps (40) | 80.00% | 40.0 | 5.1k | 10 "
                               "(first counted evaluation) | 1.3k | 4.00x |"));
    assert_non_null(strstr(md, "At equal steps (15): auto50 83.00%, scratch25 55.00% "
                               "(interpolated): +28.00 points."));
    /* compute */
    assert_non_null(strstr(md, "| teacher | 1000 | 128.0k | 2.5 PFLOP | 100 | teacher | 2.5 PFLOP "
                               "| 100 |"));
    assert_non_null(strstr(md,
                           "| auto50 | 15 | 1.9k | 1.5 TFLOP | – | teacher + auto50 | 2.5 PFLOP "
                           "| – |"));
    assert_non_null(strstr(md, "No plots: /nonexistent/gnuplot was not found"));
    assert_non_null(strstr(md, "extra notes"));
    free(md);
    char *js = tc_read_file(js_path, &len);
    assert_non_null(
        strstr(js, "\"name\": \"auto50\", \"kind\": \"auto | 50%\", \"parameters\": 7370000"));
    assert_non_null(strstr(js, "\"zero_shot_top1\": null"));
    assert_non_null(strstr(js, "\"eval_steps\": [5, 10, 15], \"eval_top1\": [0.84, 0.8, 0.83], "
                               "\"counted_from\": 10"));
    assert_non_null(strstr(js, "{\"fraction\": 0.5, \"top1\": 0.6, \"baseline_steps\": 20, "
                               "\"baseline_images\": 2560, \"student_steps\": 10, "
                               "\"student_images\": 1280, \"speedup\": 2, "
                               "\"baseline_at_first_evaluation\": false, "
                               "\"student_at_first_counted_evaluation\": true}"));
    assert_non_null(strstr(js, "\"goal\": \"a goal | with a pipe\", \"result\": \"missed\", "
                               "\"met\": false"));
    assert_non_null(strstr(js, "\"loss\": null"));
    free(js);
    /* a speedup naming a row that is not there */
    sp.baseline = 3;
    assert_int_equal(tc_report_write(dir, rows, 3, &opt), TC_ERR_ARG);
    sp.baseline = 2;

    check_plots(dir, rows, &opt, md_path);
    free(md_path);
    free(js_path);
    free(m1);
    free(m2);
    tc_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_log),
        cmocka_unit_test(test_progress),
        cmocka_unit_test(test_report),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
