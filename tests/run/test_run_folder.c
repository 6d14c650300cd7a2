/* the run folder cannot be corrupted or misread:
 *   - one writer: a second run on a locked folder fails at once naming the
 *     holder's pid and host; the kernel drops the lock of a killed holder;
 *   - nothing is written before the whole experiment is valid (a bad model
 *     config or teacher checkpoint leaves no folder), with --dry-run's
 *     messages and positions;
 *   - a rerun whose inputs changed is refused with the changed keys and
 *     leaves experiment.yaml as it was; --restart-from moves the stage and
 *     its dependants aside and runs them again; changes that cannot affect
 *     results are allowed, recorded, and the resumed weights stay
 *     bit-identical;
 *   - checkpoints: the newest K are kept, each with a manifest of checksums;
 *     a truncated train state or a flipped bit in the weights falls back to
 *     the newest intact checkpoint (bit-identical end), none intact fails;
 *   - temporaries a killed run left are removed on resume, other files kept;
 *   - a resume on another thread count warns that bits may differ. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "run_lock.h"
#include "testutil.h"

/* a scratch teacher (6 steps, a checkpoint every 2) and a student distilled from it */
static const char *experiment_yaml = "name: folder\n"
                                     "seed: 5\n"
                                     "threads: 1\n"
                                     "data:\n"
                                     "  train: {source: fmnist, batch: 8, workers: 1}\n"
                                     "teacher: {stage: teacher}\n"
                                     "stages:\n"
                                     "  - name: teacher\n"
                                     "    kind: train_scratch_clip\n"
                                     "    model: tiny.json\n"
                                     "    steps: 6\n"
                                     "    schedule: {warmup: 2}\n"
                                     "    checkpoint_every: 2\n"
                                     "    log_every: 1\n"
                                     "  - name: student\n"
                                     "    kind: distill\n"
                                     "    parent: teacher\n"
                                     "    model: tiny.json\n"
                                     "    inheritance: {kind: manual}\n"
                                     "    steps: 2\n"
                                     "    schedule: {warmup: 1}\n"
                                     "    log_every: 1\n";

static char *setup_dir(const char *tag) {
    char *dir = tc_test_run_dir(tag, experiment_yaml);
    assert_non_null(dir);
    return dir;
}

static int train(const char *dir, const char *run, const char *extra, const char *fault,
                 char **out) {
    return tc_test_train(dir, run, extra, fault, out);
}

static void train_ok(const char *dir, const char *run, const char *extra) {
    char *out = NULL;
    int rc = train(dir, run, extra, NULL, &out);
    if (rc != 0) fail_msg("train %s %s failed (%d):\n%s", run, extra ? extra : "", rc, out);
    free(out);
}

/* a run killed by the fault (the shell reports 128 + 9) */
static void train_killed(const char *dir, const char *run, const char *fault) {
    char *out = NULL;
    int rc = train(dir, run, NULL, fault, &out);
    if (rc == 0) fail_msg("run with %s was not killed:\n%s", fault, out);
    free(out);
}

static void expect_in(const char *out, const char *needle) {
    if (!strstr(out, needle)) fail_msg("'%s' not in:\n%s", needle, out);
}

static char *file_in(const char *dir, const char *rel, size_t *len) {
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    return tc_read_file(p, len);
}

static int exists_in(const char *dir, const char *rel) {
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    struct stat st;
    return lstat(p, &st) == 0;
}

static void assert_same_final(const char *dir, const char *a, const char *b, const char *stage) {
    char ra[512], rb[512];
    snprintf(ra, sizeof ra, "%s/%s/final/open_clip_model.safetensors", a, stage);
    snprintf(rb, sizeof rb, "%s/%s/final/open_clip_model.safetensors", b, stage);
    size_t na, nb;
    char *da = file_in(dir, ra, &na), *db = file_in(dir, rb, &nb);
    if (!da || !db) fail_msg("missing final weights %s or %s", ra, rb);
    if (na != nb || memcmp(da, db, na) != 0)
        fail_msg("stage %s: final weights differ between %s and %s", stage, a, b);
    free(da);
    free(db);
}

/* ---- one writer ---- */

static void test_lock_one_writer(void **state) {
    char *dir = setup_dir("lock");
    char run[1024], *out = NULL;
    snprintf(run, sizeof run, "%s/run", dir);
    /* this process holds the folder: the run must stop at once, naming it */
    tc_run_lock held;
    assert_int_equal(tc_run_lock_acquire(&held, run), TC_OK);
    int rc = train(dir, "run", NULL, NULL, &out);
    assert_int_not_equal(rc, 0);
    char pid[64], host[256] = "";
    snprintf(pid, sizeof pid, "pid %ld host ", (long)getpid());
    gethostname(host, sizeof host);
    expect_in(out, "another run is writing to this run folder");
    expect_in(out, pid);
    expect_in(out, host);
    assert_false(exists_in(dir, "run/experiment.yaml"));
    assert_false(exists_in(dir, "run/teacher"));
    free(out);
    tc_run_lock_release(&held);

    /* a holder that is killed: the kernel drops its lock */
    pid_t child = fork();
    if (child == 0) {
        tc_run_lock l;
        if (tc_run_lock_acquire(&l, run) != TC_OK) _exit(3);
        raise(SIGKILL);
        _exit(4);
    }
    int st;
    assert_int_equal(waitpid(child, &st, 0), child);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    assert_int_equal(tc_run_lock_acquire(&held, run), TC_OK);
    tc_run_lock_release(&held);
    train_ok(dir, "run", NULL);
    tc_rmtree(dir);
    free(dir);
}

/* two real runs started together on one folder: one runs, the other stops
 * at once; the winner's metrics are complete */
static void test_two_runs_one_folder(void **state) {
    char *dir = setup_dir("tworuns");
    char cmd[4096], *out = NULL;
    const char *bin = getenv("TINYCLIP_BIN");
    if (!bin) bin = TC_BINARY_DIR "/tinyclip";
    snprintf(cmd, sizeof cmd,
             "cd %s && { (%s train exp.yaml --out run --plain > a.log 2>&1; echo $? > a.rc) & "
             "(%s train exp.yaml --out run --plain > b.log 2>&1; echo $? > b.rc); wait; "
             "cat a.rc b.rc a.log b.log; }",
             dir, bin, bin);
    tc_run_capture(cmd, &out);
    char *a = file_in(dir, "a.rc", NULL), *b = file_in(dir, "b.rc", NULL);
    assert_non_null(a);
    assert_non_null(b);
    int ra = atoi(a), rb = atoi(b);
    if (!((ra == 0) ^ (rb == 0))) fail_msg("exit codes %d and %d:\n%s", ra, rb, out);
    expect_in(out, "another run is writing to this run folder");
    /* the winner logged every step of the teacher once */
    char *m = file_in(dir, "run/teacher/metrics.jsonl", NULL);
    assert_non_null(m);
    int lines = 0;
    for (char *p = m; (p = strstr(p, "\"step\": ")); p++)
        lines++;
    assert_int_equal(lines, 6);
    free(m);
    free(a);
    free(b);
    free(out);
    tc_rmtree(dir);
    free(dir);
}

/* ---- validation before the first write ---- */

static void test_nothing_written_before_validation(void **state) {
    char *dir = setup_dir("validate");
    char path[1024], *out = NULL, *dry = NULL;
    /* the student's model config is broken: the teacher must not even start */
    snprintf(path, sizeof path, "%s/bad.json", dir);
    const char *bad = "{\"embed_dim\": 32, \"vision_cfg\": {\"width\": -5}}";
    assert_int_equal(tc_write_file(path, bad, strlen(bad)), 0);
    char *yaml = strdup(experiment_yaml);
    char *second = strstr(strstr(yaml, "name: student"), "tiny.json");
    memcpy(second, "bad.json ", 9); /* line 18, "    model: bad.json" */
    snprintf(path, sizeof path, "%s/exp.yaml", dir);
    assert_int_equal(tc_write_file(path, yaml, strlen(yaml)), 0);
    free(yaml);
    int rc = train(dir, "run", NULL, NULL, &out);
    assert_int_not_equal(rc, 0);
    assert_false(exists_in(dir, "run"));
    char args[2048];
    snprintf(args, sizeof args, "train %s/exp.yaml --dry-run", dir);
    assert_int_not_equal(tc_run_cli(args, &dry), 0);
    /* the same message, with the position of the key, in both */
    const char *m = strstr(out, "exp.yaml:18:12: stages.1 (student).model: ");
    if (!m) fail_msg("no position in:\n%s", out);
    expect_in(dry, m);
    free(out);
    free(dry);

    /* a teacher checkpoint whose file is cut short */
    const char *ext =
        "name: ext\nthreads: 1\ndata:\n  train: {source: fmnist, batch: 8, workers: 1}\n"
        "teacher:\n  checkpoint: teacher.safetensors\n  model: tiny.json\n"
        "stages:\n  - {name: s, kind: distill, model: tiny.json, steps: 2, "
        "schedule: {warmup: 1}}\n";
    snprintf(path, sizeof path, "%s/exp.yaml", dir);
    assert_int_equal(tc_write_file(path, ext, strlen(ext)), 0);
    snprintf(path, sizeof path, "%s/teacher.safetensors", dir);
    const char trunc[] =
        "\x40\0\0\0\0\0\0\0{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
    assert_int_equal(tc_write_file(path, trunc, sizeof trunc - 1), 0);
    rc = train(dir, "run", NULL, NULL, &out);
    assert_int_not_equal(rc, 0);
    assert_false(exists_in(dir, "run"));
    expect_in(out, "exp.yaml:6:15: teacher.checkpoint: ");
    snprintf(args, sizeof args, "train %s/exp.yaml --dry-run", dir);
    assert_int_not_equal(tc_run_cli(args, &dry), 0);
    expect_in(dry, strstr(out, "exp.yaml:6:15: teacher.checkpoint: "));
    free(out);
    free(dry);
    tc_rmtree(dir);
    free(dir);
}

/* ---- resume only what was asked ---- */

static void test_changed_inputs_refused(void **state) {
    char *dir = setup_dir("changed");
    char *out = NULL;
    train_ok(dir, "run", NULL);
    size_t n0;
    char *yaml0 = file_in(dir, "run/experiment.yaml", &n0);
    assert_non_null(yaml0);
    /* a finished run with another learning rate: refused, not "done earlier" */
    assert_int_not_equal(train(dir, "run", "--set stages.teacher.optimizer.lr=1e-3", NULL, &out),
                         0);
    expect_in(out, "stages.teacher.optimizer.lr: 0.0005 -> 0.001");
    expect_in(out, "stages.student.parent: stage teacher, which it depends on, has other inputs");
    expect_in(out, "--restart-from teacher");
    free(out);
    size_t n1;
    char *yaml1 = file_in(dir, "run/experiment.yaml", &n1);
    assert_true(n0 == n1 && memcmp(yaml0, yaml1, n0) == 0); /* still describes the weights */
    free(yaml1);

    /* a killed run rerun with another architecture and length: refused */
    train_killed(dir, "killed", "kill_at_step:3@teacher");
    char extra[1024];
    snprintf(extra, sizeof extra,
             "--set stages.teacher.model=%s/configs/models/fmnist-student-half.json "
             "--set stages.teacher.steps=8",
             TC_SOURCE_DIR);
    assert_int_not_equal(train(dir, "killed", extra, NULL, &out), 0);
    expect_in(out, "stages.teacher.model: tiny.json (xxh3 ");
    expect_in(out, "-> fmnist-student-half.json (xxh3 ");
    expect_in(out, "stages.teacher.steps: 6 -> 8");
    free(out);

    /* asked for: the stage and its dependant are moved aside and run again */
    const char *lr = "--set stages.teacher.optimizer.lr=1e-3 --restart-from teacher";
    assert_int_equal(train(dir, "run", lr, NULL, &out), 0);
    expect_in(out, "stage teacher: restarted; the earlier results are in");
    expect_in(out, "stage student: restarted");
    assert_true(exists_in(dir, "run/replaced/1/teacher/final/open_clip_model.safetensors"));
    assert_true(exists_in(dir, "run/replaced/1/student/summary.json"));
    char *old = file_in(dir, "run/replaced/1/experiment.yaml", &n1);
    assert_true(old && n0 == n1 && memcmp(yaml0, old, n0) == 0);
    free(old);
    char *now = file_in(dir, "run/experiment.yaml", NULL);
    expect_in(now, "lr: 1e-3");
    free(now);
    free(out);
    /* the same command again: nothing changed, nothing refused */
    assert_int_equal(train(dir, "run", "--set stages.teacher.optimizer.lr=1e-3", NULL, &out), 0);
    expect_in(out, "stage teacher: done earlier, skipped");
    free(out);
    /* a stage the experiment no longer has */
    assert_int_not_equal(train(dir, "run",
                               "--set stages.teacher.optimizer.lr=1e-3 --set "
                               "stages.student.name=other",
                               NULL, &out),
                         0);
    expect_in(out, "/student: a stage of the earlier run that this experiment does not have");
    free(out);
    free(yaml0);
    tc_rmtree(dir);
    free(dir);
}

/* intervals, workers: allowed on a resume, recorded, and the weights are
 * those of a run that never stopped */
static void test_free_changes_recorded(void **state) {
    char *dir = setup_dir("free");
    char *out = NULL;
    train_ok(dir, "straight", NULL);
    train_killed(dir, "killed", "kill_at_step:4@teacher");
    const char *extra = "--set stages.teacher.log_every=2 --set stages.teacher.checkpoint_every=3 "
                        "--set stages.teacher.eval_every=5 --set data.train.workers=2";
    assert_int_equal(train(dir, "killed", extra, NULL, &out), 0);
    expect_in(out, "without effect on the results");
    free(out);
    char *log = file_in(dir, "killed/changes.log", NULL);
    assert_non_null(log);
    expect_in(log, "stages.teacher.log_every: 1 -> 2");
    expect_in(log, "stages.teacher.checkpoint_every: 2 -> 3");
    expect_in(log, "data.train.workers: 1 -> 2");
    free(log);
    char *yaml = file_in(dir, "killed/experiment.yaml", NULL);
    expect_in(yaml, "log_every: 2");
    free(yaml);
    assert_same_final(dir, "straight", "killed", "teacher");
    assert_same_final(dir, "straight", "killed", "student");
    tc_rmtree(dir);
    free(dir);
}

/* ---- checkpoints ---- */

static int count_checkpoints(const char *dir, const char *run) {
    char cmd[2048], *out = NULL;
    snprintf(cmd, sizeof cmd, "ls %s/%s/teacher/checkpoints | grep -c '^step-[0-9]*$'", dir, run);
    tc_run_capture(cmd, &out);
    int n = out ? atoi(out) : -1;
    free(out);
    return n;
}

/* a checkpoint damaged on disk: the newest intact one is used, saying so,
 * and the run still ends with the weights of one that never stopped */
static void damaged_newest(const char *how) {
    char *dir = setup_dir("damaged");
    char *out = NULL;
    train_ok(dir, "straight", NULL);
    /* killed after step 5: the checkpoints of steps 2 and 4 */
    train_killed(dir, "killed", "kill_at_step:5@teacher");
    assert_int_equal(count_checkpoints(dir, "killed"), 2);
    assert_true(exists_in(dir, "killed/teacher/checkpoints/step-0000000004/manifest.txt"));
    assert_true(exists_in(dir, "killed/teacher/checkpoints/step-0000000002/manifest.txt"));
    char path[1024];
    if (!strcmp(how, "truncate")) {
        snprintf(path, sizeof path,
                 "%s/killed/teacher/checkpoints/step-0000000004/train_state.safetensors", dir);
        assert_int_equal(truncate(path, 4000), 0);
    } else {
        /* one bit of a weight, far from the header */
        snprintf(path, sizeof path,
                 "%s/killed/teacher/checkpoints/step-0000000004/open_clip_model.safetensors", dir);
        FILE *f = fopen(path, "r+b");
        assert_non_null(f);
        fseek(f, -1000, SEEK_END);
        int c = fgetc(f);
        fseek(f, -1000, SEEK_END);
        fputc(c ^ 0x10, f);
        fclose(f);
    }
    assert_int_equal(train(dir, "killed", NULL, NULL, &out), 0);
    expect_in(out, "step-0000000004 is damaged");
    expect_in(out, !strcmp(how, "truncate")
                       ? "train_state.safetensors: 4000 bytes, the manifest says"
                       : "open_clip_model.safetensors: checksum ");
    expect_in(out, "falling back to");
    expect_in(out, "step-0000000002, the newest intact checkpoint");
    free(out);
    assert_true(exists_in(dir, "killed/teacher/checkpoints/step-0000000004.damaged"));
    assert_same_final(dir, "straight", "killed", "teacher");
    assert_same_final(dir, "straight", "killed", "student");
    tc_rmtree(dir);
    free(dir);
}

static void test_truncated_train_state(void **state) {
    damaged_newest("truncate");
}
static void test_bit_flip_in_weights(void **state) {
    damaged_newest("flip");
}

static void test_keep_and_none_intact(void **state) {
    char *dir = setup_dir("keep");
    char *out = NULL, path[1024];
    train_killed(dir, "three", "kill_at_step:5@teacher"); /* checkpoints 2 and 4 */
    snprintf(path, sizeof path,
             "--set stages.teacher.keep_checkpoints=3 --set stages.teacher.checkpoint_every=1");
    /* K set in the experiment: 3 kept of the checkpoints of steps 1 to 4 */
    char args[2048];
    snprintf(args, sizeof args, "train %s/exp.yaml --out %s/k3 --plain %s", dir, dir, path);
    assert_int_not_equal(tc_run_cli_fault("kill_at_step:5@teacher", args, &out), 0);
    free(out);
    assert_int_equal(count_checkpoints(dir, "k3"), 3);
    /* every checkpoint damaged: no silent restart from step 0 */
    for (int s = 2; s <= 4; s += 2) {
        snprintf(path, sizeof path,
                 "%s/three/teacher/checkpoints/step-%010d/train_state.safetensors", dir, s);
        assert_int_equal(truncate(path, 100), 0);
    }
    assert_int_not_equal(train(dir, "three", NULL, NULL, &out), 0);
    expect_in(out, "no intact checkpoint in");
    expect_in(out, "--restart-from teacher");
    free(out);
    assert_int_equal(count_checkpoints(dir, "three"), 2); /* left for a look */
    assert_int_equal(train(dir, "three", "--restart-from teacher", NULL, &out), 0);
    free(out);
    tc_rmtree(dir);
    free(dir);
}

/* ---- temporaries ---- */

static void test_stale_temporaries(void **state) {
    char *dir = setup_dir("stale");
    char *out = NULL;
    train_killed(dir, "run", "kill_at_step:3@teacher");
    const char *stale[] = {
        "run/teacher/final/.open_clip_model.safetensors.tmp.999999.0",
        "run/plots/.report.gp.tmp.999999.3",
        "run/plots/loss.png.tmp",
        "run/.experiment.yaml.tmp.999999.1",
        "run/teacher/.metrics.jsonl.tmp.999999.7",
        "run/teacher/checkpoints/step-0000000005.tmp/open_clip_model.safetensors"};
    const char *keep[] = {"run/notes.tmp", "run/teacher/my.tmp.file", "run/plots/.hidden"};
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "cd %s && mkdir -p run/teacher/final run/plots "
             "run/teacher/checkpoints/step-0000000005.tmp && touch",
             dir);
    for (size_t i = 0; i < sizeof stale / sizeof *stale; i++)
        snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), " %s", stale[i]);
    for (size_t i = 0; i < sizeof keep / sizeof *keep; i++)
        snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), " %s", keep[i]);
    assert_int_equal(tc_run_capture(cmd, NULL), 0);
    assert_int_equal(train(dir, "run", NULL, NULL, &out), 0);
    expect_in(out, "temporary file(s) an interrupted run left");
    free(out);
    for (size_t i = 0; i < sizeof stale / sizeof *stale; i++)
        if (exists_in(dir, stale[i])) fail_msg("%s was not removed", stale[i]);
    assert_false(exists_in(dir, "run/teacher/checkpoints/step-0000000005.tmp"));
    for (size_t i = 0; i < sizeof keep / sizeof *keep; i++)
        if (!exists_in(dir, keep[i])) fail_msg("%s was removed", keep[i]);
    tc_rmtree(dir);
    free(dir);
}

/* ---- the environment of a resume ---- */

static void test_other_threads_warn(void **state) {
    char *dir = setup_dir("threads");
    char *out = NULL;
    train_killed(dir, "run", "kill_at_step:3@teacher");
    assert_int_equal(train(dir, "run", "--set threads=2", NULL, &out), 0);
    expect_in(out, "threads '1' then, '2' now");
    expect_in(out,
              "a resume is bit-identical only with the same thread count, CPU or GPU and build");
    free(out);
    tc_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lock_one_writer),
        cmocka_unit_test(test_two_runs_one_folder),
        cmocka_unit_test(test_nothing_written_before_validation),
        cmocka_unit_test(test_changed_inputs_refused),
        cmocka_unit_test(test_free_changes_recorded),
        cmocka_unit_test(test_truncated_train_state),
        cmocka_unit_test(test_bit_flip_in_weights),
        cmocka_unit_test(test_keep_and_none_intact),
        cmocka_unit_test(test_stale_temporaries),
        cmocka_unit_test(test_other_threads_warn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
