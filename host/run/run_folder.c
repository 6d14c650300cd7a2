/* the run folder before the first stage (rank 0, holding the folder's lock,
 * after the whole experiment was validated):
 *
 *   1. every stage begun earlier (its <stage>/inputs.txt) is compared with
 *      this experiment. a change of what shapes its results (a 'result'
 *      line: the model, steps, lr, seed, data, its parent's or teacher's
 *      inputs, ...) is refused with the changed keys, before anything is
 *      written: the weights there were made from other inputs. a change of
 *      what cannot change them (intervals, workers, threads, evaluation) is
 *      allowed and recorded in changes.log. a stage folder of the earlier
 *      run that this experiment no longer has is refused too.
 *   2. --restart-from STAGE: that stage and every stage that depends on it
 *      (parent, teacher, model: {stage}) are moved aside, with the
 *      experiment.yaml that describes them, to replaced/N/, and run again.
 *   3. temporaries an interrupted run left (files ".NAME.tmp.PID.N",
 *      "*.png.tmp", checkpoint folders "step-N.tmp") are removed: with the
 *      lock held, no other process can own them.
 *   4. experiment.yaml is written: it describes the weights next to it.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fileio.h"
#include "json.h"
#include "scheduler_internal.h"

#define MAX_LINES_SHOWN 8 /* changed keys shown per stage in the error */

/* rm -rf in process: no fork (a forked child of an MPI rank upsets some
 * interconnects' registered memory) and no shell quoting of the path.
 * symbolic links are removed, never followed; depth is bounded. */
static int remove_tree_depth(const char *path, int depth) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode)) return unlink(path);
    if (depth > 16) return -1;
    DIR *d = opendir(path);
    if (!d) return -1;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        size_t n = strlen(path) + strlen(e->d_name) + 2;
        char *child = malloc(n);
        if (!child) {
            rc = -1;
            break;
        }
        snprintf(child, n, "%s/%s", path, e->d_name);
        if (remove_tree_depth(child, depth + 1) != 0) rc = -1;
        free(child);
    }
    closedir(d);
    return rc == 0 ? rmdir(path) : rc;
}

int remove_tree(const char *path) {
    return remove_tree_depth(path, 0);
}

static void inputs_path(const run_ctx *c, int i, char *buf) {
    stage_path(c, i, "inputs.txt", buf);
}

/* ---- 1. compare ---- */

typedef struct {
    tc_sbuf refused;           /* the error: stages whose results would not match */
    tc_sbuf free;              /* changes without effect on results, for changes.log */
    const char *stage, *first; /* the stage compared, the first refused */
    int refused_here, shown;
    uint64_t changed_free;
} diff_ctx;

static void on_diff(void *p, const char *key, const char *was, const char *now, int result) {
    diff_ctx *d = p;
    if (!result) {
        tc_sbuf_printf(&d->free, "  %s: %.200s -> %.200s\n", key, was, now);
        d->changed_free++;
        return;
    }
    if (!d->refused_here) tc_sbuf_printf(&d->refused, "  stage %s:\n", d->stage);
    d->refused_here++;
    if (d->shown++ >= MAX_LINES_SHOWN) return;
    size_t kl = strlen(key);
    if (!d->first) d->first = d->stage;
    char dep[80];
    /* "stage NAME, inputs HEX": a stage it depends on was changed */
    if (kl > 7 && strcmp(key + kl - 7, ".inputs") == 0 && sscanf(now, "stage %79[^,]", dep) == 1)
        tc_sbuf_printf(&d->refused, "    %.*s: stage %s, which it depends on, has other inputs\n",
                       (int)(kl - 7), key, dep);
    else
        tc_sbuf_printf(&d->refused, "    %s: %.120s -> %.120s\n", key, was, now);
}

/* 1 when stage j depends on stage k (directly) */
static int depends_on(const tc_experiment *e, int j, int k) {
    const tc_exp_stage *st = &e->stages[j];
    return st->parent == k || st->model_stage == k ||
           (st->kind == TC_EXP_STAGE_DISTILL && e->teacher.stage == k);
}

/* the stages --restart-from reruns: it and its dependants (later in the list) */
static void restart_set(const tc_experiment *e, int k, unsigned char *in) {
    memset(in, 0, (size_t)e->n_stages);
    if (k < 0) return;
    in[k] = 1;
    for (int j = k + 1; j < e->n_stages; j++)
        for (int m = k; m < j && !in[j]; m++)
            if (in[m] && depends_on(e, j, m)) in[j] = 1;
}

static void compare_stage(run_ctx *c, int i, diff_ctx *d) {
    char path[PATH_CAP];
    inputs_path(c, i, path);
    if (!tc_path_is_file(path)) {
        char dir[PATH_CAP];
        stage_path(c, i, NULL, dir);
        if (tc_path_is_dir(dir))
            logf_run(c,
                     "stage %s: %s has no record of its inputs (an older run folder); recorded now",
                     c->exp->stages[i].name, dir);
        return;
    }
    stage_inputs old;
    if (stage_inputs_read(path, &old) != TC_OK) {
        tc_sbuf_printf(&d->refused, "  stage %s: %s\n", c->exp->stages[i].name, tc_last_error());
        return;
    }
    d->stage = c->exp->stages[i].name;
    d->refused_here = d->shown = 0;
    stage_inputs_diff(&old, &c->inputs[i], on_diff, d);
    if (d->shown > MAX_LINES_SHOWN)
        tc_sbuf_printf(&d->refused, "    (and %d more)\n", d->shown - MAX_LINES_SHOWN);
    stage_inputs_free(&old);
}

/* folders of stages the experiment no longer has */
static void find_orphans(run_ctx *c, diff_ctx *d) {
    DIR *dir = opendir(c->exp->out_dir);
    if (!dir) return;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (e->d_name[0] == '.' || tc_experiment_find_stage(c->exp, e->d_name) >= 0) continue;
        char p[PATH_CAP + 300];
        snprintf(p, sizeof p, "%s/%s/inputs.txt", c->exp->out_dir, e->d_name);
        if (tc_path_is_file(p))
            tc_sbuf_printf(&d->refused,
                           "  %s/%s: a stage of the earlier run that this experiment does not "
                           "have; experiment.yaml would no longer describe it (move it away)\n",
                           c->exp->out_dir, e->d_name);
    }
    closedir(dir);
}

/* ---- 2. restart ---- */

/* replaced/N/ with the experiment.yaml that described the stages moved there */
static tc_status move_aside(run_ctx *c, const unsigned char *restart) {
    const tc_experiment *e = c->exp;
    char base[PATH_CAP], to[PATH_CAP + 32];
    snprintf(base, sizeof base, "%s/replaced", e->out_dir);
    int any = 0;
    for (int i = 0; i < e->n_stages; i++) {
        char dir[PATH_CAP];
        stage_path(c, i, NULL, dir);
        any |= restart[i] && tc_path_is_dir(dir);
    }
    if (!any) return TC_OK;
    int n = 1;
    for (; n < 100000; n++) {
        snprintf(to, sizeof to, "%s/%d", base, n);
        if (!tc_path_is_dir(to)) break;
    }
    TC_TRY(tc_mkdir_p(to));
    char yaml[PATH_CAP], dst[PATH_CAP + 64];
    snprintf(yaml, sizeof yaml, "%s/experiment.yaml", e->out_dir);
    char *text;
    size_t len;
    if (tc_read_file_bounded(yaml, 1u << 24, &text, &len) == TC_OK) {
        snprintf(dst, sizeof dst, "%s/experiment.yaml", to);
        tc_status s = tc_write_file_atomic(dst, text, len);
        free(text);
        TC_TRY(s);
    }
    for (int i = 0; i < e->n_stages; i++) {
        char dir[PATH_CAP];
        stage_path(c, i, NULL, dir);
        if (!restart[i] || !tc_path_is_dir(dir)) continue;
        snprintf(dst, sizeof dst, "%s/%s", to, e->stages[i].name);
        if (rename(dir, dst) != 0)
            return tc_fail(TC_ERR_IO, "%s: cannot move to %s: %s", dir, dst, strerror(errno));
        logf_run(c, "stage %s: restarted; the earlier results are in %s", e->stages[i].name, dst);
    }
    return TC_OK;
}

/* ---- 3. temporaries ---- */

/* ".NAME.tmp.PID.N" (engine/fileio.h), "NAME.png.tmp" (the report's plots) */
static int is_temporary(const char *name) {
    const char *t = strstr(name, ".tmp.");
    if (name[0] == '.' && t) {
        unsigned long pid, n;
        char end;
        return sscanf(t, ".tmp.%lu.%lu%c", &pid, &n, &end) == 2;
    }
    size_t l = strlen(name);
    return l > 8 && strcmp(name + l - 8, ".png.tmp") == 0;
}

/* files of one folder; checkpoint folders "step-N.tmp" too when ckpt */
static int clean_folder(const char *dir, int ckpt) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char p[PATH_CAP + 300];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        long long step;
        char tail[8];
        int step_tmp = ckpt && sscanf(e->d_name, "step-%lld%7s", &step, tail) == 2 &&
                       strcmp(tail, ".tmp") == 0;
        struct stat st;
        if (lstat(p, &st) != 0) continue;
        if (S_ISREG(st.st_mode) && is_temporary(e->d_name) && unlink(p) == 0) removed++;
        if (S_ISDIR(st.st_mode) && step_tmp && remove_tree(p) == 0) removed++;
        if (S_ISDIR(st.st_mode) && ckpt && !step_tmp && e->d_name[0] != '.')
            removed += clean_folder(p, 0); /* inside a checkpoint */
    }
    closedir(d);
    return removed;
}

static void remove_temporaries(run_ctx *c) {
    char p[PATH_CAP + 32];
    int n = clean_folder(c->exp->out_dir, 0);
    snprintf(p, sizeof p, "%s/plots", c->exp->out_dir);
    n += clean_folder(p, 0);
    for (int i = 0; i < c->exp->n_stages; i++) {
        stage_path(c, i, NULL, p);
        n += clean_folder(p, 0);
        stage_path(c, i, "final", p);
        n += clean_folder(p, 0);
        stage_path(c, i, "checkpoints", p);
        n += clean_folder(p, 1);
    }
    if (n)
        logf_run(c, "run %s: removed %d temporary file(s) an interrupted run left", c->exp->name,
                 n);
}

/* ---- 4. the record ---- */

static tc_status record_changes(run_ctx *c, const char *text) {
    char path[PATH_CAP], when[64] = "";
    snprintf(path, sizeof path, "%s/changes.log", c->exp->out_dir);
    time_t now = time(NULL);
    struct tm tm;
    if (gmtime_r(&now, &tm)) strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    char *old = NULL;
    size_t len = 0;
    if (tc_path_is_file(path)) TC_TRY(tc_read_file_bounded(path, 1u << 26, &old, &len));
    tc_sbuf b = {0};
    if (old) tc_sbuf_append(&b, old, len);
    free(old);
    tc_sbuf_printf(&b, "%s: changed without effect on the results:\n%s", when, text);
    char *all;
    TC_TRY(tc_sbuf_finish(&b, &all));
    tc_status s = tc_write_file_atomic(path, all, strlen(all));
    free(all);
    logf_run(
        c,
        "run %s: changed since the last run, without effect on the results (recorded in %s):\n%s",
        c->exp->name, path, text);
    return s;
}

tc_status run_folder_prepare(run_ctx *c) {
    const tc_experiment *e = c->exp;
    int n = e->n_stages, k = c->restart_from ? tc_experiment_find_stage(e, c->restart_from) : -1;
    if (c->restart_from && k < 0)
        return tc_fail(TC_ERR_ARG, "--restart-from %s: the experiment has no such stage",
                       c->restart_from);
    unsigned char *restart = calloc((size_t)n, 1);
    if (!restart) return tc_fail(TC_ERR_OOM, "run: out of memory");
    restart_set(e, k, restart);
    diff_ctx d;
    memset(&d, 0, sizeof d);
    for (int i = 0; i < n; i++)
        if (!restart[i]) compare_stage(c, i, &d);
    find_orphans(c, &d);
    tc_status s = TC_OK;
    char *why = NULL;
    if (d.refused.len) {
        tc_sbuf_finish(&d.refused, &why);
        s = tc_fail(TC_ERR_CONFIG,
                    "%s: this run folder holds results made from other inputs; experiment.yaml "
                    "and the weights there would no longer match:\n%s"
                    "to train %s again with these inputs: --restart-from %s (moves it and the "
                    "stages that depend on it to %s/replaced/); or give another --out",
                    e->out_dir, why ? why : "", d.first ? d.first : "a stage",
                    d.first ? d.first : "STAGE", e->out_dir);
    }
    if (s == TC_OK) s = move_aside(c, restart);
    if (s == TC_OK) remove_temporaries(c);
    char path[PATH_CAP];
    snprintf(path, sizeof path, "%s/experiment.yaml", e->out_dir);
    if (s == TC_OK && e->resolved_yaml)
        s = tc_write_file_atomic(path, e->resolved_yaml, strlen(e->resolved_yaml));
    char *changes = NULL;
    if (s == TC_OK && d.free.len && tc_sbuf_finish(&d.free, &changes) == TC_OK)
        s = record_changes(c, changes);
    /* the records of the stages begun before now hold the new free values
     * (and a stage of an older run folder, without one, gets it) */
    for (int i = 0; i < n && s == TC_OK; i++) {
        char dir[PATH_CAP];
        stage_path(c, i, NULL, dir);
        if (tc_path_is_dir(dir)) s = write_stage_inputs(c, i);
    }
    free(changes);
    free(why);
    tc_sbuf_free(&d.refused);
    tc_sbuf_free(&d.free);
    free(restart);
    return s;
}

tc_status run_inputs_build(run_ctx *c) {
    int n = c->exp->n_stages;
    c->inputs = calloc((size_t)n, sizeof *c->inputs);
    uint64_t *fps = calloc((size_t)n, sizeof *fps);
    tc_status s = c->inputs && fps ? TC_OK : tc_fail(TC_ERR_OOM, "run: out of memory");
    for (int i = 0; i < n && s == TC_OK; i++) {
        s = stage_inputs_build(c->exp, i, fps, &c->inputs[i]);
        if (s == TC_OK) fps[i] = c->inputs[i].fingerprint;
    }
    free(fps);
    return s;
}

void run_inputs_free(run_ctx *c) {
    if (c->inputs)
        for (int i = 0; i < c->exp->n_stages; i++)
            stage_inputs_free(&c->inputs[i]);
    free(c->inputs);
    c->inputs = NULL;
}

tc_status write_stage_inputs(run_ctx *c, int i) {
    char path[PATH_CAP];
    inputs_path(c, i, path);
    return stage_inputs_write(&c->inputs[i], c->exp->stages[i].name, path);
}
