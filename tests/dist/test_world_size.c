/* a run's sample order does not depend on its number of processes
 * (host/data/loader.h, training order): `tinyclip train` with one process of
 * batch 16, two of 8 and four of 4 (mpirun, CPU backend) takes the same
 * global batches, so every step's loss agrees to 1e-5 relative and the final
 * weights to 1e-5 in norm (|a - b| / |b| over all parameters; the sums are
 * split differently, so not bit for bit, and AdamW's first steps magnify
 * rounding in weights whose gradient is near zero, so one tensor's largest
 * element can differ by ~1e-3 of that tensor's magnitude); and a run of two
 * processes killed after step 4 and started again on one process (same
 * command, batch 8 in the file) keeps the global batch of 16, continues the
 * same sequence of global batches and ends with the weights of the
 * uninterrupted runs within the same tolerance.
 * skipped (77) when mpirun or MPI is missing, or without Fashion-MNIST; the
 * resume part says SKIP without tinyclip_faults (TC_FAULT_INJECTION=OFF). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm_mpi.h"
#include "safetensors.h"
#include "testutil.h"

static const char *experiment_yaml = "name: worlds\n"
                                     "seed: 11\n"
                                     "threads: 1\n"
                                     "data:\n"
                                     "  train: {source: fmnist, batch: 8, workers: 1}\n"
                                     "stages:\n"
                                     "  - name: clip\n"
                                     "    kind: train_scratch_clip\n"
                                     "    model: tiny.json\n"
                                     "    steps: 8\n"
                                     "    schedule: {warmup: 2}\n"
                                     "    checkpoint_every: 3\n"
                                     "    log_every: 1\n";

static char *dir;
static const char *mpirun_flags = "";

static void need_mpirun(void) {
    if (!tc_comm_mpi_available()) tc_skip_test("this build has no MPI");
    if (system("command -v mpirun >/dev/null 2>&1") != 0) tc_skip_test("mpirun not found");
    if (!tc_file_exists("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz"))
        tc_skip_test("Fashion-MNIST is not installed (scripts/setup installs it)");
    if (system("mpirun --version 2>&1 | grep -q 'Open MPI'") == 0)
        mpirun_flags = "--oversubscribe --allow-run-as-root";
}

/* `tinyclip train` on np processes with `batch` per process (0: the file's);
 * fault: tinyclip_faults with TINYCLIP_FAULT=fault */
static int train(int np, int batch, const char *out, const char *fault, char **log) {
    const char *bin = fault ? tc_faults_bin() : getenv("TINYCLIP_BIN");
    char cmd[4096], set[64] = "";
    if (batch > 0) snprintf(set, sizeof set, "--set data.train.batch=%d", batch);
    snprintf(cmd, sizeof cmd,
             "cd '%s' && env OMP_NUM_THREADS=1 %s%s timeout 300 mpirun %s -np %d '%s' train "
             "exp.yaml --out %s %s --plain 2>&1",
             dir, fault ? "TINYCLIP_FAULT=" : "", fault ? fault : "", mpirun_flags, np,
             bin ? bin : TC_BINARY_DIR "/tinyclip", out, set);
    *log = NULL;
    int rc = tc_run_capture(cmd, log);
    assert_non_null(*log);
    return rc;
}

/* the "loss" of the line of metrics.jsonl whose step is `step` */
static double loss_at(const char *run, int step) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s/clip/metrics.jsonl", dir, run);
    size_t n;
    char *text = tc_read_file(p, &n);
    if (!text) fail_msg("%s: missing", p);
    char want[64];
    snprintf(want, sizeof want, "{\"step\": %d,", step);
    char *line = strstr(text, want);
    double v = NAN;
    char *k = line ? strstr(line, "\"loss\": ") : NULL;
    if (k) v = strtod(k + 8, NULL);
    free(text);
    if (!isfinite(v)) fail_msg("%s: no loss at step %d", p, step);
    return v;
}

/* |a - b| / |b| over every parameter of the final weights (2-norms) */
static double weights_err(const char *run_a, const char *run_b) {
    char pa[1024], pb[1024];
    snprintf(pa, sizeof pa, "%s/%s/clip/final/open_clip_model.safetensors", dir, run_a);
    snprintf(pb, sizeof pb, "%s/%s/clip/final/open_clip_model.safetensors", dir, run_b);
    tc_safetensors *a, *b;
    if (tc_st_open(&a, pa) != TC_OK || tc_st_open(&b, pb) != TC_OK) fail_msg("%s", tc_last_error());
    assert_int_equal(tc_st_count(a), tc_st_count(b));
    double diff = 0, norm = 0;
    for (int i = 0; i < tc_st_count(a); i++) {
        const tc_st_tensor *ta = tc_st_tensor_at(a, i), *tb = tc_st_tensor_at(b, i);
        assert_string_equal(ta->name, tb->name);
        assert_int_equal(ta->numel, tb->numel);
        float *x = malloc(ta->numel * sizeof(float)), *y = malloc(tb->numel * sizeof(float));
        assert_int_equal(tc_st_tensor_to_f32(a, ta, x), TC_OK);
        assert_int_equal(tc_st_tensor_to_f32(b, tb, y), TC_OK);
        for (size_t k = 0; k < ta->numel; k++) {
            diff += ((double)x[k] - y[k]) * ((double)x[k] - y[k]);
            norm += (double)y[k] * y[k];
        }
        free(x);
        free(y);
    }
    tc_st_close(a);
    tc_st_close(b);
    return sqrt(diff / norm);
}

/* every step's loss of run a against run b, from step `from` on */
static void same_losses(const char *a, const char *b, int from) {
    for (int step = from; step <= 8; step++) {
        double x = loss_at(a, step), y = loss_at(b, step);
        if (!(fabs(x - y) <= 1e-5 * fabs(y)))
            fail_msg("step %d: loss %.7f (%s) against %.7f (%s)", step, x, a, y, b);
    }
}

static void test_same_run_on_1_2_4_processes(void **state) {
    (void)state;
    need_mpirun();
    dir = tc_make_tempdir("worlds");
    char p[1024];
    snprintf(p, sizeof p, "%s/tiny.json", dir);
    assert_int_equal(tc_write_file(p, tc_test_tiny_model_json, strlen(tc_test_tiny_model_json)), 0);
    snprintf(p, sizeof p, "%s/exp.yaml", dir);
    assert_int_equal(tc_write_file(p, experiment_yaml, strlen(experiment_yaml)), 0);
    const int np[3] = {1, 2, 4};
    const char *runs[3] = {"np1", "np2", "np4"};
    for (int k = 0; k < 3; k++) {
        char *log;
        int rc = train(np[k], 16 / np[k], runs[k], NULL, &log);
        printf("np %d x %d: exit %d\n", np[k], 16 / np[k], rc);
        if (rc != 0) printf("%s", log);
        assert_int_equal(rc, 0);
        free(log);
    }
    for (int k = 1; k < 3; k++) {
        double e = weights_err(runs[k], "np1");
        printf("%s: first loss %.7f (np1 %.7f), last %.7f (np1 %.7f), final weights |a-b|/|b| "
               "%.2e\n",
               runs[k], loss_at(runs[k], 1), loss_at("np1", 1), loss_at(runs[k], 8),
               loss_at("np1", 8), e);
        same_losses(runs[k], "np1", 1);
        assert_true(e <= 1e-5);
    }
    /* two processes, killed after step 4 (checkpoint at 3), then one process;
     * the kill needs the test build with fault injection */
    const char *faults = getenv("TINYCLIP_FAULTS_BIN");
    if (!faults || !faults[0]) {
        printf("SKIP: resume from 2 processes onto 1: no tinyclip_faults in this build\n");
        tc_rmtree(dir);
        free(dir);
        return;
    }
    char *log;
    int rc = train(2, 0, "cut", "kill_at_step:4@clip", &log);
    printf("np 2 killed after step 4: exit %d\n", rc);
    assert_int_not_equal(rc, 0);
    free(log);
    rc = train(1, 0, "cut", NULL, &log);
    printf("np 1 resumed: exit %d\n%s", rc, log);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(log, "resuming 2 processes' run on 1: global batch 16 kept, 16 per "
                                "process"));
    assert_non_null(strstr(log, "the same sequence of global batches continues"));
    free(log);
    double e1 = weights_err("cut", "np1"), e2 = weights_err("cut", "np2");
    printf("np 2 -> 1: final weights |a-b|/|b| %.2e against np1, %.2e against np2\n", e1, e2);
    assert_true(e1 <= 1e-5);
    assert_true(e2 <= 1e-5);
    /* every step, before the kill and after the resume, as uninterrupted */
    same_losses("cut", "np1", 1);
    tc_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_run_on_1_2_4_processes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
