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
    assert_int_equal(tc_metrics_read_series(path, "zero_shot_top1", "eval", &steps, &vals, &n), TC_OK);
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
    for (int s = 1; s <= 5; s++) tc_progress_update(&p, s, 1.0, 2.0);
    tc_progress_end(&p);
    fclose(f);
    int lines = 0;
    for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
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

static tc_report_row row(const char *name, const char *kind, int64_t params, double top1, const char *metrics) {
    tc_report_row r = {name,       kind,   params, params / 2, 0.25, 0.125,   top1,
                       top1 + 0.1, 1234.5, 1000,   -2,         NAN,  metrics, 56.5};
    return r;
}

static void test_report(void **state) {
    char *dir = tc_make_tempdir("report");
    char *m1 = join_path(dir, "teacher/metrics.jsonl"), *m2 = join_path(dir, "auto50/metrics.jsonl");
    write_metrics(m1, 20, 3.0);
    write_metrics(m2, 15, 2.0);
    tc_report_row rows[3] = {row("teacher", "teacher (scratch)", 8360000, 0.85, m1),
                             row("auto50", "auto | 50%", 7370000, 0.83, m2),
                             row("scratch25", "scratch baseline", 6830000, NAN, NULL)};
    rows[1].steps_to_match = 250;
    rows[1].speedup = tc_report_speedup(1400, 250);
    rows[2].steps_to_match = -1;
    assert_float_equal(rows[1].speedup, 5.6, 1e-12);
    assert_true(isnan(tc_report_speedup(0, 10)));

    /* without gnuplot: a note instead of a failure */
    tc_report_options opt = {"fmnist demo", "cpu, 2 threads", "extra notes", 1, "/nonexistent/gnuplot"};
    assert_int_equal(tc_report_write(dir, rows, 3, &opt), TC_OK);
    char *md_path = join_path(dir, "report.md"), *js_path = join_path(dir, "report.json");
    size_t len;
    char *md = tc_read_file(md_path, &len);
    assert_non_null(strstr(md, "# fmnist demo\n"));
    assert_non_null(strstr(md, "| model | kind | parameters |"));
    assert_non_null(strstr(md, "| teacher | teacher (scratch) | 8.36M | 4.18M | 0.250 | 0.125 | "
                               "85.00% | 95.00% | 1234.5 | 56.5 | 1000 | – | – |"));
    assert_non_null(strstr(md, "| auto50 | auto \\| 50% | 7.37M |"));
    assert_non_null(strstr(md, "| 250 | 5.60x |"));
    assert_non_null(strstr(md, "| – | – | 1234.5 | 56.5 | 1000 | not reached | – |"));
    assert_non_null(strstr(md, "No plots: /nonexistent/gnuplot was not found"));
    assert_non_null(strstr(md, "extra notes"));
    free(md);
    char *js = tc_read_file(js_path, &len);
    assert_non_null(strstr(js, "\"name\": \"auto50\", \"kind\": \"auto | 50%\", \"parameters\": 7370000"));
    assert_non_null(strstr(js, "\"zero_shot_top1\": null"));
    assert_non_null(strstr(js, "\"speedup\": 5.6"));
    assert_non_null(strstr(js, "\"training_gflops_per_second\": 56.5"));
    assert_non_null(strstr(js, "\"loss\": null"));
    free(js);

    /* with gnuplot: two PNGs */
    if (system("command -v gnuplot > /dev/null 2>&1") != 0) {
        print_message("gnuplot is not installed: plot check not run\n");
    } else {
        opt.gnuplot = NULL;
        assert_int_equal(tc_report_write(dir, rows, 3, &opt), TC_OK);
        md = tc_read_file(md_path, &len);
        assert_non_null(strstr(md, "![training loss per stage](plots/loss.png)"));
        assert_non_null(strstr(md, "![zero-shot top-1 against parameters](plots/acc_params.png)"));
        free(md);
        const char *pngs[2] = {"plots/loss.png", "plots/acc_params.png"};
        for (int i = 0; i < 2; i++) {
            char *p = join_path(dir, pngs[i]);
            char *png = tc_read_file(p, &len);
            assert_non_null(png);
            assert_true(len > 1000);
            assert_memory_equal(png, "\x89PNG\r\n\x1a\n", 8);
            free(png);
            free(p);
        }
        char *dat = join_path(dir, "plots/loss_auto50.dat");
        char *d = tc_read_file(dat, &len);
        assert_non_null(strstr(d, "\n15 0.133333333\n"));
        free(d);
        free(dat);
    }
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
