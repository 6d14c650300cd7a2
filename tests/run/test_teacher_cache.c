/* teacher-feature caches through `tinyclip train` and `tinyclip cache`, on
 * 400 Fashion-MNIST samples in 4 webdataset shards and a tiny teacher:
 *   - exactness: a distill stage on an fp32 cache (K = 1, built at batch
 *     32, trained at batch 16) ends with final weights identical byte for
 *     byte to the same stage with the live teacher on the same fixed
 *     augmentations (`augmentations: 1`); the same with K = 3
 *   - the same on two processes (mpirun, batch 8 each): the stored features
 *     are gathered as a live teacher's
 *   - kill while building (after shard 1) and while training from the cache
 *     (after step 5): the same command again resumes, the shards and the
 *     final weights are those of the uninterrupted run
 *   - `tinyclip cache` builds the same shards as the stage (same teacher,
 *     data and seed), on one process and on two (mpirun), and --verify
 *     checks them
 *   - refusals through a run, one per rule (another teacher, data, image
 *     size, number of augmentations, dtype, a damaged shard, an unfinished
 *     cache): a clear message, a non-zero exit and nothing trained (no
 *     checkpoint, no final weights)
 *   - the experiment file's rules for teacher_cache stages and keys
 * skipped (77) without Fashion-MNIST; the kill cases say SKIP without
 * tinyclip_faults, the two-process case without mpirun. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "experiment.h"
#include "testutil.h"

static char *dir;

static const char *bin(void) {
    return getenv("TINYCLIP_BIN") ? getenv("TINYCLIP_BIN") : TC_BINARY_DIR "/tinyclip";
}

/* tinyclip ARGS in the test folder (fault: tinyclip_faults with TINYCLIP_FAULT) */
static int run_cli(const char *fault, const char *args, char **out) {
    char full[8192];
    snprintf(full, sizeof full, "cd '%s' && env OMP_NUM_THREADS=1 %s%s '%s' %s 2>&1", dir,
             fault ? "TINYCLIP_FAULT=" : "", fault ? fault : "", fault ? tc_faults_bin() : bin(),
             args);
    *out = NULL;
    int rc = tc_run_capture(full, out);
    assert_non_null(*out);
    return rc;
}

/* the fault-injecting build; says SKIP when there is none */
static int have_faults(void) {
    const char *b = getenv("TINYCLIP_FAULTS_BIN");
    if (b && b[0]) return 1;
    printf("SKIP: no tinyclip_faults in this build\n");
    return 0;
}

static void must_run(const char *args) {
    char *out;
    int rc = run_cli(NULL, args, &out);
    if (rc != 0) fail_msg("tinyclip %s: exit %d\n%s", args, rc, out);
    free(out);
}

static void put(const char *name, const char *text) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    assert_int_equal(tc_write_file(p, text, strlen(text)), 0);
}

static int same_file(const char *a, const char *b) {
    char pa[1024], pb[1024];
    snprintf(pa, sizeof pa, "%s/%s", dir, a);
    snprintf(pb, sizeof pb, "%s/%s", dir, b);
    size_t na, nb;
    char *da = tc_read_file(pa, &na), *db = tc_read_file(pb, &nb);
    if (!da || !db) fail_msg("missing %s or %s", pa, pb);
    int same = na == nb && memcmp(da, db, na) == 0;
    free(da);
    free(db);
    return same;
}

static void assert_same_final(const char *a, const char *b, const char *stage) {
    char pa[512], pb[512];
    snprintf(pa, sizeof pa, "%s/%s/final/open_clip_model.safetensors", a, stage);
    snprintf(pb, sizeof pb, "%s/%s/final/open_clip_model.safetensors", b, stage);
    if (!same_file(pa, pb)) fail_msg("stage %s: final weights of %s and %s differ", stage, a, b);
}

static void assert_same_shards(const char *a, const char *b) {
    for (int s = 0; s < 4; s++) {
        char pa[512], pb[512];
        snprintf(pa, sizeof pa, "%s/shard-%06d.safetensors", a, s);
        snprintf(pb, sizeof pb, "%s/shard-%06d.safetensors", b, s);
        if (!same_file(pa, pb)) fail_msg("cache shard %d of %s and %s differ", s, a, b);
    }
}

/* teacher, cache (K, built at batch 32), distill from it (batch 16), and a
 * from-scratch baseline of distill's architecture */
static const char *exp_yaml =
    "name: cached\n"
    "seed: 3\n"
    "threads: 1\n"
    "data:\n"
    "  train: {source: wds, path: \"shards/{000000..000003}.tar\", num_samples: 400, batch: 16,"
    " workers: 2}\n"
    "teacher: {stage: teacher}\n"
    "stages:\n"
    "  - name: teacher\n"
    "    kind: train_scratch_clip\n"
    "    model: tiny.json\n"
    "    steps: 6\n"
    "    schedule: {warmup: 2}\n"
    "    log_every: 2\n"
    "  - name: cache\n"
    "    kind: teacher_cache\n"
    "    augmentations: 1\n"
    "    batch: 32\n"
    "  - name: distill\n"
    "    kind: distill\n"
    "    parent: teacher\n"
    "    inheritance: {kind: auto, target_sparsity: 0.3, sparsity_warmup: 2, prune_step: 4}\n"
    "    teacher_cache: cache\n"
    "    steps: 8\n"
    "    checkpoint_every: 4\n"
    "    log_every: 2\n"
    "  - name: scratch\n"
    "    kind: train_scratch_clip\n"
    "    model: {stage: distill}\n"
    "    steps: 4\n"
    "    schedule: {warmup: 1}\n"
    "    log_every: 2\n"
    "goals:\n"
    "  - {kind: wall_time, minutes: 60}\n";

static const char *live =
    "--set stages.distill.teacher_cache=null --set stages.distill.augmentations=";

static int setup(void **state) {
    (void)state;
    if (!tc_file_exists("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz"))
        tc_skip_test("Fashion-MNIST is not installed (scripts/setup installs it)");
    dir = tc_make_tempdir("tcache-run");
    put("tiny.json", tc_test_tiny_model_json);
    put("exp.yaml", exp_yaml);
    must_run("shards --from fmnist --split train --limit 400 --per-shard 100 --out shards");
    must_run("train exp.yaml --out a --plain");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tc_rmtree(dir);
    free(dir);
    return 0;
}

static void test_exact_k1(void **state) {
    char args[512];
    snprintf(args, sizeof args, "train exp.yaml --out live1 --plain %s1", live);
    must_run(args);
    assert_same_final("a", "live1", "teacher");
    assert_same_final("a", "live1", "distill");
    printf("K = 1, fp32: the distill stage on the cache ends with the live teacher's weights, "
           "byte for byte\n");
}

/* the run's time in the wall_time goal counts the cache's build (its shards'
 * seconds) with the stages' own */
static void check_run_seconds(void) {
    char p[1024];
    double want = 0.0;
    static const char *const stages[] = {"teacher", "distill", "scratch"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/a/%s/summary.json", dir, stages[i]);
        tc_json *j = tc_test_read_json(p);
        want += tc_test_json_num(j, "stage_seconds");
        tc_json_free(j);
    }
    snprintf(p, sizeof p, "%s/a/cache/summary.json", dir);
    tc_json *c = tc_test_read_json(p);
    const double cache_s =
        tc_test_json_num(c, "process_seconds") / tc_test_json_num(c, "processes");
    tc_json_free(c);
    want += cache_s;
    snprintf(p, sizeof p, "%s/a/report.json", dir);
    tc_json *r = tc_test_read_json(p);
    const tc_json *goals = tc_json_get(r, "goals");
    assert_non_null(goals);
    assert_int_equal(goals->count, 1);
    const tc_json *res = tc_json_get(&goals->items[0], "result");
    assert_non_null(res);
    double got = -1;
    if (sscanf(res->string, "%lf s", &got) != 1) fail_msg("wall goal result '%s'", res->string);
    if (got < cache_s || got < want - 0.6 || got > want + 0.6)
        fail_msg("the run's %s against the stages' %.3f s with the cache's %.3f s", res->string,
                 want, cache_s);
    tc_json_free(r);
}

/* the plan shows the cache stage and who reads it; the report its cost */
static void test_plan_and_report(void **state) {
    char *out;
    assert_int_equal(run_cli(NULL, "train exp.yaml --dry-run", &out), 0);
    assert_non_null(strstr(out, "[1] cache  teacher_cache"));
    assert_non_null(strstr(out, "builds       1 augmentation per training sample, fp32 features"));
    assert_non_null(strstr(out, "(289 bytes per sample; 400 samples)"));
    assert_non_null(strstr(out, "features from the cache"));
    free(out);
    char p[1024];
    snprintf(p, sizeof p, "%s/a/report.md", dir);
    size_t n;
    char *r = tc_read_file(p, &n);
    assert_non_null(r);
    assert_non_null(
        strstr(r, "- teacher-feature cache (stage cache): 400 samples x 1 augmentation, fp32"));
    assert_non_null(strstr(r, "- distill trained on the cache's teacher features at"));
    assert_non_null(strstr(r, "with the teacher run live about"));
    assert_null(strstr(r, "| cache |")); /* a note, not a model row */
    /* nor among the curves' evaluation intervals: it evaluates nothing */
    const char *every = strstr(r, "every N steps (");
    assert_non_null(every);
    const char *close = strchr(every, ')');
    assert_non_null(close);
    for (const char *q = every; q < close; q++)
        if (strncmp(q, "cache ", 6) == 0) fail_msg("the cache stage is listed with an interval");
    /* the speedup of distill against its baseline names report rows, which
     * leave the cache stage out */
    assert_non_null(strstr(r, "## Inheritance speedup: distill against scratch"));
    free(r);
    check_run_seconds();
}

static void test_exact_k3(void **state) {
    char args[512];
    must_run("train exp.yaml --out c3 --plain --set stages.cache.augmentations=3");
    snprintf(args, sizeof args,
             "train exp.yaml --out live3 --plain --set stages.cache.augmentations=3 %s3", live);
    must_run(args);
    assert_same_final("c3", "live3", "distill");
    assert_false(same_file("c3/distill/final/open_clip_model.safetensors",
                           "a/distill/final/open_clip_model.safetensors"));
    printf("K = 3, fp32: identical to the live teacher on the same pool of 3 (and not to K = 1)\n");
}

static void test_kill_while_building(void **state) {
    if (!have_faults()) return;
    char *out;
    int rc = run_cli("kill_after_cache_shard:1@cache", "train exp.yaml --out kb --plain", &out);
    if (rc == 0) fail_msg("the build was not killed:\n%s", out);
    free(out);
    assert_false(tc_file_exists("kb/cache/manifest.json"));
    rc = run_cli(NULL, "train exp.yaml --out kb --plain", &out);
    if (rc != 0) fail_msg("the rerun failed (%d):\n%s", rc, out);
    assert_non_null(strstr(out, "2 shards done before, kept; 2 built now"));
    free(out);
    assert_same_shards("a/cache", "kb/cache");
    assert_same_final("a", "kb", "distill");
    printf("killed after shard 1 of 4: the rerun kept 2, built 2; shards and final weights "
           "identical\n");
}

static void test_kill_while_training(void **state) {
    if (!have_faults()) return;
    char *out;
    int rc = run_cli("kill_at_step:5@distill", "train exp.yaml --out kt --plain", &out);
    if (rc == 0) fail_msg("the stage was not killed:\n%s", out);
    free(out);
    rc = run_cli(NULL, "train exp.yaml --out kt --plain", &out);
    if (rc != 0) fail_msg("the rerun failed (%d):\n%s", rc, out);
    assert_non_null(strstr(out, "resumed from"));
    free(out);
    assert_same_final("a", "kt", "distill");
    printf("killed after step 5 of the distill stage (mask phase over, checkpoint at 4): "
           "resumed, identical\n");
}

static void test_cache_command(void **state) {
    const char *args = "cache --teacher a/teacher/final --data 'shards/{000000..000003}.tar' "
                       "--out cmd1 --seed 3 --batch 24 --threads 1";
    must_run(args);
    assert_same_shards("a/cache", "cmd1");
    char *out;
    assert_int_equal(run_cli(NULL, "cache --verify cmd1", &out), 0);
    assert_non_null(strstr(out, "every shard's checksum matches"));
    free(out);
    /* a second run finds it complete */
    assert_int_equal(run_cli(NULL, args, &out), 0);
    assert_non_null(strstr(out, "is complete, nothing to build"));
    free(out);
    printf("tinyclip cache: the stage's shards, byte for byte; --verify passes\n");
    if (system("command -v mpirun >/dev/null 2>&1") != 0) {
        printf("SKIP: two processes: mpirun not found\n");
        return;
    }
    const char *flags = system("mpirun --version 2>&1 | grep -q 'Open MPI'") == 0
                            ? "--oversubscribe --allow-run-as-root"
                            : "";
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && env OMP_NUM_THREADS=1 timeout 300 mpirun %s -np 2 '%s' cache --teacher "
             "a/teacher/final --data 'shards/{000000..000003}.tar' --out cmd2 --seed 3 --batch 24 "
             "--threads 1 2>&1",
             dir, flags, bin());
    int rc = tc_run_capture(cmd, &out);
    if (rc != 0) fail_msg("mpirun -np 2 tinyclip cache: exit %d\n%s", rc, out);
    free(out);
    assert_same_shards("a/cache", "cmd2");
    printf("two processes (2 shards each): the same shards\n");
}

/* two processes of batch 8: the stored features go through the gather of a
 * live teacher's, so the stage on the cache still equals the live one */
static void test_two_processes(void **state) {
    if (system("command -v mpirun >/dev/null 2>&1") != 0) {
        printf("SKIP: mpirun not found\n");
        return;
    }
    const char *flags = system("mpirun --version 2>&1 | grep -q 'Open MPI'") == 0
                            ? "--oversubscribe --allow-run-as-root"
                            : "";
    for (int live_run = 0; live_run < 2; live_run++) {
        char cmd[4096], *out;
        snprintf(cmd, sizeof cmd,
                 "cd '%s' && env OMP_NUM_THREADS=1 timeout 300 mpirun %s -np 2 '%s' train exp.yaml "
                 "--out %s --plain --set data.train.batch=8 %s%s 2>&1",
                 dir, flags, bin(), live_run ? "np2-live" : "np2-cache", live_run ? live : "",
                 live_run ? "1" : "");
        int rc = tc_run_capture(cmd, &out);
        if (rc != 0) fail_msg("mpirun -np 2 tinyclip train: exit %d\n%s", rc, out);
        free(out);
    }
    assert_same_final("np2-cache", "np2-live", "distill");
    printf("two processes of batch 8: the stage on the cache ends with the live teacher's "
           "weights, byte for byte\n");
}

/* one distill stage from the run's teacher with its cache; nothing trained */
static void refused(const char *tag, const char *teacher, const char *model, const char *cache,
                    const char *extra, const char *message, int before_first_write) {
    char yaml[2048], name[64], args[512];
    snprintf(yaml, sizeof yaml,
             "name: %s\n"
             "seed: 3\n"
             "threads: 1\n"
             "data:\n"
             "  train: {source: wds, path: \"%s\", num_samples: 400, batch: 16, workers: 1}\n"
             "teacher: {checkpoint: %s, model: %s}\n"
             "stages:\n"
             "  - name: distill\n"
             "    kind: distill\n"
             "    model: %s\n"
             "    teacher_cache: %s\n"
             "    steps: 4\n"
             "    schedule: {warmup: 1}\n"
             "%s",
             tag,
             strstr(tag, "data") ? "shards/{000000..000001}.tar" : "shards/{000000..000003}.tar",
             teacher, model, model, cache, extra);
    snprintf(name, sizeof name, "%s.yaml", tag);
    put(name, yaml);
    snprintf(args, sizeof args, "train %s --out r-%s --plain", name, tag);
    char *out;
    int rc = run_cli(NULL, args, &out);
    const char *m = strstr(out, "tinyclip:");
    printf("%s: exit %d: %.600s\n", tag, rc, m ? m : out);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, message));
    free(out);
    char p[512];
    snprintf(p, sizeof p, "%s/r-%s/distill/final", dir, tag);
    assert_false(tc_file_exists(p));
    snprintf(p, sizeof p, "%s/r-%s/distill/checkpoints", dir, tag);
    assert_false(tc_file_exists(p));
    /* what the plan can see (the cache's manifest against the stage) is
     * refused before the run folder is made */
    snprintf(p, sizeof p, "%s/r-%s", dir, tag);
    if (before_first_write) assert_false(tc_file_exists(p));
}

static void test_refuse_teacher(void **state) {
    refused("teacher", "a/distill/final", "a/distill/final/open_clip_config.json",
            "{path: a/cache}", "", "teacher: built with", 0);
}
static void test_refuse_data(void **state) {
    refused("data", "a/teacher/final", "tiny.json", "{path: a/cache}", "", "data: built from wds",
            0);
}
static void test_refuse_image_size(void **state) {
    /* a 32px teacher and student against a cache of 28px images */
    put("tiny32.json",
        "{\"embed_dim\": 32, \"quick_gelu\": false,\n"
        " \"vision_cfg\": {\"image_size\": 32, \"patch_size\": 8, \"layers\": 2, \"width\": 64, "
        "\"head_width\": 64},\n"
        " \"text_cfg\": {\"context_length\": 16, \"vocab_size\": 49408, \"width\": 64, \"heads\": "
        "1, "
        "\"layers\": 2}}\n");
    must_run("cache --teacher a/teacher/final --data 'shards/{000000..000003}.tar' --out cmd-size "
             "--seed 3 --threads 1");
    /* the teacher of the run: tiny32 weights made by a 1-step run */
    put("t32.yaml", "name: t32\nseed: 3\nthreads: 1\ndata:\n  train: {source: wds, path: "
                    "\"shards/{000000..000003}.tar\", num_samples: 400, batch: 16, workers: 1}\n"
                    "stages:\n  - {name: t, kind: train_scratch_clip, model: tiny32.json, steps: "
                    "1, schedule: {warmup: 1}}\n");
    must_run("train t32.yaml --out t32 --plain");
    refused("size", "t32/t/final", "tiny32.json", "{path: cmd-size}", "",
            "image size: built for 28px images, the student takes 32px", 1);
}
static void test_refuse_augmentations(void **state) {
    refused("augmentations", "a/teacher/final", "tiny.json", "{path: a/cache}",
            "    augmentations: 2\n",
            "augmentations: the cache holds 1 per sample, the stage asks for 2", 1);
}
static void test_refuse_dtype(void **state) {
    refused("dtype", "a/teacher/final", "tiny.json", "{path: a/cache, dtype: bf16}", "",
            "dtype: the cache stores fp32 features, the stage asks for bf16", 1);
}
static void test_refuse_damaged_shard(void **state) {
    must_run("cache --teacher a/teacher/final --data 'shards/{000000..000003}.tar' --out damaged "
             "--seed 3 --threads 1");
    char p[1024];
    snprintf(p, sizeof p, "%s/damaged/shard-000002.safetensors", dir);
    size_t n;
    char *d = tc_read_file(p, &n);
    d[n - 64] ^= 0x01;
    assert_int_equal(tc_write_file(p, d, n), 0);
    free(d);
    refused("damaged", "a/teacher/final", "tiny.json", "{path: damaged}", "",
            "shard shard-000002.safetensors is damaged", 0);
}
static void test_refuse_unfinished(void **state) {
    if (!have_faults()) return;
    char *out;
    int rc = run_cli("kill_after_cache_shard:0@cache",
                     "cache --teacher a/teacher/final --data 'shards/{000000..000003}.tar' --out "
                     "unfinished --seed 3 --threads 1",
                     &out);
    assert_int_not_equal(rc, 0);
    free(out);
    refused("unfinished", "a/teacher/final", "tiny.json", "{path: unfinished}", "",
            "the cache is not complete", 1);
}

/* ---- a ResNet teacher ---- */

/* a ModifiedResNet teacher (conv, BatchNorm with running statistics,
 * attention pooling) and a ResNet student by manual inheritance: the cache
 * holds what the live ResNet teacher computes, so K = 2 on the cache equals
 * the live teacher on the same pool of 2, byte for byte */
static void test_resnet_teacher(void **state) {
    put("rn.json", "{\"embed_dim\": 32, \"quick_gelu\": false,\n"
                   " \"vision_cfg\": {\"image_size\": 32, \"layers\": [1, 1, 1, 1], \"width\": 8, "
                   "\"patch_size\": null},\n"
                   " \"text_cfg\": {\"context_length\": 16, \"vocab_size\": 49408, \"width\": 64, "
                   "\"heads\": 1, \"layers\": 2}}\n");
    put("rns.json", "{\"embed_dim\": 32, \"quick_gelu\": false,\n"
                    " \"vision_cfg\": {\"image_size\": 32, \"layers\": [1, 1, 1, 1], \"width\": 4, "
                    "\"patch_size\": null},\n"
                    " \"text_cfg\": {\"context_length\": 16, \"vocab_size\": 49408, \"width\": 64, "
                    "\"heads\": 1, \"layers\": 1}}\n");
    put("rn.yaml",
        "name: rn\nseed: 3\nthreads: 1\ndata:\n  train: {source: wds, path: "
        "\"shards/{000000..000003}.tar\", num_samples: 400, batch: 16, workers: 2}\n"
        "teacher: {stage: teacher}\nstages:\n"
        "  - {name: teacher, kind: train_scratch_clip, model: rn.json, steps: 4, "
        "schedule: {warmup: 2}}\n"
        "  - {name: cache, kind: teacher_cache, augmentations: 2, batch: 24}\n"
        "  - name: distill\n    kind: distill\n    parent: teacher\n    model: rns.json\n"
        "    inheritance: {kind: manual, vision: {layers: interval_front, width: "
        "leading}, text: {layers: interval_front, width: leading}}\n"
        "    teacher_cache: cache\n    steps: 6\n    schedule: {warmup: 1}\n");
    char *out;
    int rc = run_cli(NULL, "train rn.yaml --out rn-cache --plain", &out);
    if (rc != 0) fail_msg("the ResNet run on its cache failed (%d):\n%s", rc, out);
    assert_non_null(strstr(out, "the teacher is not loaded"));
    free(out);
    must_run("train rn.yaml --out rn-live --plain --set stages.distill.teacher_cache=null "
             "--set stages.distill.augmentations=2");
    assert_same_final("rn-cache", "rn-live", "distill");
    printf("ResNet teacher, K = 2, fp32: the stage on the cache ends with the live teacher's "
           "weights, byte for byte\n");
}

/* ---- the run folder's rules ---- */

/* a cache's inputs are part of the fingerprints: a rerun that changes what
 * the cache holds is refused, naming the cache stage and the distill stage
 * that reads it; the teacher's forward batch is a free change; --restart-from
 * the cache moves it and its readers aside and builds it again */
static void test_inputs_and_restart(void **state) {
    char cmd[2048], *out;
    snprintf(cmd, sizeof cmd, "cp -r '%s/a' '%s/fp'", dir, dir);
    assert_int_equal(system(cmd), 0);
    int rc =
        run_cli(NULL, "train exp.yaml --out fp --plain --set stages.cache.augmentations=3", &out);
    printf("%s\n", out);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "stages.cache.augmentations: 1 -> 3"));
    assert_non_null(strstr(out, "stages.distill.teacher_cache: stage cache, which it depends on, "
                                "has other inputs"));
    assert_non_null(strstr(out, "--restart-from cache"));
    free(out);
    rc = run_cli(NULL, "train exp.yaml --out fp --plain --set stages.cache.batch=8", &out);
    if (rc != 0) fail_msg("a free change was refused (%d):\n%s", rc, out);
    assert_non_null(strstr(out, "stages.cache.batch: 32 -> 8"));
    assert_non_null(strstr(out, "stage cache: done earlier, skipped"));
    free(out);
    rc = run_cli(NULL,
                 "train exp.yaml --out fp --plain --set stages.cache.augmentations=3 "
                 "--restart-from cache",
                 &out);
    if (rc != 0) fail_msg("--restart-from cache failed (%d):\n%s", rc, out);
    assert_null(strstr(out, "stage teacher: restarted"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s/fp/replaced/1/cache/manifest.json", dir);
    assert_true(tc_file_exists(cmd));
    snprintf(cmd, sizeof cmd, "%s/fp/replaced/1/distill/final", dir);
    assert_true(tc_file_exists(cmd));
    assert_same_final("fp", "c3", "distill");
    printf("a changed cache is refused with its dependants; a changed build batch recorded; "
           "--restart-from cache rebuilt it (K = 3) and its reader ends as the K = 3 run\n");

    /* a cache built by the stage outside its folder goes aside with it */
    must_run("train exp.yaml --out op --plain --set stages.cache.path=op-cache");
    rc = run_cli(NULL,
                 "train exp.yaml --out op --plain --set stages.cache.path=op-cache "
                 "--set stages.cache.augmentations=3 --restart-from cache",
                 &out);
    if (rc != 0) fail_msg("--restart-from cache (outside path) failed (%d):\n%s", rc, out);
    assert_non_null(strstr(out, "the earlier cache is in"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s/op/replaced/1/cache.cache/manifest.json", dir);
    assert_true(tc_file_exists(cmd));
    assert_same_shards("c3/cache", "op-cache");
    assert_same_final("op", "c3", "distill");
    printf("with path: outside the run folder: the old cache moved to replaced/1/cache.cache, "
           "the new one built in its place\n");
}

/* a cache built elsewhere is named in the stage's inputs by what it holds:
 * built again with another seed (other crops) at the same path, a rerun of
 * the stage that read it is refused */
static void test_outside_cache_identity(void **state) {
    const char *build = "cache --teacher a/teacher/final --data 'shards/{000000..000003}.tar' "
                        "--out moved --threads 1 --seed ";
    char args[1024], *out;
    snprintf(args, sizeof args, "%s3", build);
    must_run(args);
    put("ext.yaml", "name: ext\nseed: 3\nthreads: 1\ndata:\n  train: {source: wds, path: "
                    "\"shards/{000000..000003}.tar\", num_samples: 400, batch: 16, workers: 1}\n"
                    "teacher: {checkpoint: a/teacher/final, model: tiny.json}\nstages:\n"
                    "  - {name: distill, kind: distill, model: tiny.json, teacher_cache: {path: "
                    "moved}, steps: 2, schedule: {warmup: 1}}\n");
    must_run("train ext.yaml --out ext --plain");
    char p[1024];
    snprintf(p, sizeof p, "%s/moved", dir);
    tc_rmtree(p);
    snprintf(args, sizeof args, "%s4", build);
    must_run(args);
    int rc = run_cli(NULL, "train ext.yaml --out ext --plain", &out);
    printf("%s\n", out);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "stages.distill.teacher_cache: "));
    assert_non_null(strstr(out, "(cache "));
    free(out);
    printf("the same path holding another cache: the rerun is refused\n");
}

/* ---- the experiment file ---- */

static void bad_experiment(const char *stages, const char *message) {
    char yaml[4096];
    snprintf(yaml, sizeof yaml,
             "name: x\ndata:\n  train: {source: fmnist}\nteacher: {stage: teacher}\nstages:\n"
             "  - {name: teacher, kind: train_scratch_clip, model: ViT-B-32, steps: 10, schedule: "
             "{warmup: 1}}\n%s",
             stages);
    tc_experiment *e = NULL;
    tc_status s = tc_experiment_parse(yaml, strlen(yaml), "x.yaml", ".", NULL, 0, &e, NULL);
    printf("refused: %s\n", tc_last_error());
    assert_int_not_equal(s, TC_OK);
    assert_null(e);
    assert_non_null(strstr(tc_last_error(), message));
}

static void test_experiment_rules(void **state) {
    bad_experiment("  - {name: c, kind: teacher_cache, steps: 5}\n",
                   "stages.1.steps: a teacher_cache stage builds the cache and trains nothing");
    bad_experiment("  - {name: d, kind: distill, parent: teacher, steps: 5, schedule: {warmup: 1}, "
                   "dtype: bf16}\n",
                   "stages.1.dtype: 'dtype' belongs to a teacher_cache stage");
    bad_experiment("  - {name: d, kind: distill, parent: teacher, steps: 5, schedule: {warmup: 1}, "
                   "teacher_cache: teacher}\n",
                   "'teacher' is a train_scratch_clip stage, not a teacher_cache stage");
    bad_experiment("  - {name: d, kind: distill, parent: teacher, steps: 5, schedule: {warmup: 1}, "
                   "teacher_cache: c}\n"
                   "  - {name: c, kind: teacher_cache}\n",
                   "'c' is not an earlier stage: the cache must be built first");
    bad_experiment("  - {name: c, kind: teacher_cache, augmentations: 4}\n"
                   "  - {name: d, kind: distill, parent: teacher, steps: 5, schedule: {warmup: 1}, "
                   "teacher_cache: c, augmentations: 2}\n",
                   "the cache 'c' holds 4 augmentations per sample, not 2");
    bad_experiment("  - {name: c, kind: teacher_cache}\n"
                   "  - {name: d, kind: distill, parent: c, steps: 5, schedule: {warmup: 1}}\n",
                   "'c' is a teacher_cache stage: it has no weights to start from");
    bad_experiment("  - {name: s, kind: train_scratch_clip, model: ViT-B-32, steps: 5, "
                   "schedule: {warmup: 1}, teacher_cache: {path: somewhere}}\n",
                   "only a distill stage reads teacher features from a cache");
    /* a good one: defaults filled */
    const char *ok =
        "name: x\ndata:\n  train: {source: fmnist}\nteacher: {stage: teacher}\nstages:\n"
        "  - {name: teacher, kind: train_scratch_clip, model: ViT-B-32, steps: 10, schedule: "
        "{warmup: 1}}\n"
        "  - {name: c, kind: teacher_cache, dtype: bf16}\n"
        "  - {name: d, kind: distill, parent: teacher, steps: 5, schedule: {warmup: 1}, "
        "teacher_cache: c}\n";
    tc_experiment *e = NULL;
    assert_int_equal(tc_experiment_parse(ok, strlen(ok), "ok.yaml", ".", NULL, 0, &e, NULL), TC_OK);
    assert_int_equal(e->stages[1].augmentations, 1);
    assert_int_equal(e->stages[1].cache_dtype, 2);
    assert_int_equal(e->stages[1].shard_samples, 8192);
    assert_int_equal(e->stages[2].cache_stage, 1);
    assert_int_equal(e->stages[2].augmentations, 0);
    assert_true(tc_exp_stage_uses_cache(&e->stages[2]));
    char d[256];
    tc_exp_cache_dir(e, 2, d, sizeof d);
    assert_string_equal(d, "runs/x/c");
    tc_experiment_free(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_experiment_rules),    cmocka_unit_test(test_exact_k1),
        cmocka_unit_test(test_plan_and_report),     cmocka_unit_test(test_exact_k3),
        cmocka_unit_test(test_kill_while_building), cmocka_unit_test(test_kill_while_training),
        cmocka_unit_test(test_cache_command),       cmocka_unit_test(test_two_processes),
        cmocka_unit_test(test_refuse_teacher),      cmocka_unit_test(test_refuse_data),
        cmocka_unit_test(test_refuse_image_size),   cmocka_unit_test(test_refuse_augmentations),
        cmocka_unit_test(test_refuse_dtype),        cmocka_unit_test(test_refuse_damaged_shard),
        cmocka_unit_test(test_refuse_unfinished),   cmocka_unit_test(test_resnet_teacher),
        cmocka_unit_test(test_inputs_and_restart),  cmocka_unit_test(test_outside_cache_identity),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
