/* the checkpoint folders of a stage, <stage>/checkpoints/step-NNNNNNNNNN/:
 * publishing a complete one (rename from step-N.tmp, then fsync of the
 * folder), keeping the newest keep_checkpoints of them, and finding the
 * newest intact one on resume: each is verified against its manifest
 * (manifest.h) and a damaged one (a truncated train state, a flipped bit) is
 * renamed step-N.damaged and the next older one tried, saying so. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fileio.h"
#include "manifest.h"
#include "scheduler_internal.h"

#define MAX_CHECKPOINTS 4096

/* the steps of the complete checkpoint folders (step-N, not step-N.tmp nor
 * step-N.damaged), newest first; returns how many (at most cap) */
static int list_steps(const char *dir, long long *steps, int cap) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < cap) {
        long long step;
        char tail[8];
        if (sscanf(e->d_name, "step-%lld%7s", &step, tail) == 1 && step >= 0) steps[n++] = step;
    }
    closedir(d);
    /* newest first */
    for (int a = 1; a < n; a++)
        for (int b = a; b > 0 && steps[b] > steps[b - 1]; b--) {
            long long t = steps[b];
            steps[b] = steps[b - 1];
            steps[b - 1] = t;
        }
    return n;
}

static void step_dir(const char *dir, long long step, char *out, size_t cap) {
    snprintf(out, cap, "%s/step-%010lld", dir, step);
}

/* a renamed folder survives a crash only once its parent is synced */
static void sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    (void)fsync(fd);
    close(fd);
}

tc_status publish_checkpoint(run_ctx *c, int i, const char *tmp, const char *name) {
    char dir[PATH_CAP], final[PATH_CAP + 128];
    stage_path(c, i, "checkpoints", dir);
    snprintf(final, sizeof final, "%s/%s", dir, name);
    /* the same step again (after a fall-back past a damaged one that could
     * not be renamed): the new folder replaces it */
    if (tc_path_is_dir(final) && remove_tree(final) != 0)
        return tc_fail(TC_ERR_IO, "%s: cannot replace an older folder of the same step", final);
    if (rename(tmp, final) != 0)
        return tc_fail(TC_ERR_IO, "%s: cannot rename to %s: %s", tmp, final, strerror(errno));
    sync_dir(dir);
    /* keep the newest keep_checkpoints */
    long long steps[MAX_CHECKPOINTS];
    int n = list_steps(dir, steps, MAX_CHECKPOINTS);
    for (int k = c->exp->stages[i].keep_checkpoints; k < n; k++) {
        char old[PATH_CAP + 64];
        step_dir(dir, steps[k], old, sizeof old);
        if (remove_tree(old) != 0) logf_run(c, "warning: could not remove %s", old);
    }
    return TC_OK;
}

/* step-N -> step-N.damaged (or .damaged-2, ...), kept for a look */
static void set_aside(run_ctx *c, const char *path) {
    char to[CKPT_CAP + 32];
    for (int k = 1; k < 100; k++) {
        if (k == 1)
            snprintf(to, sizeof to, "%s.damaged", path);
        else
            snprintf(to, sizeof to, "%s.damaged-%d", path, k);
        if (tc_path_not_regular(to) && !tc_path_is_dir(to)) break;
    }
    if (rename(path, to) != 0)
        logf_run(c, "warning: could not rename the damaged %s: %s", path, strerror(errno));
}

tc_status latest_checkpoint(run_ctx *c, int i, char *out) {
    const char *name = c->exp->stages[i].name;
    char dir[PATH_CAP];
    stage_path(c, i, "checkpoints", dir);
    out[0] = 0;
    long long steps[MAX_CHECKPOINTS];
    int n = list_steps(dir, steps, MAX_CHECKPOINTS), damaged = 0;
    char first_damage[600] = "";
    for (int k = 0; k < n; k++) {
        char path[CKPT_CAP], why[512];
        step_dir(dir, steps[k], path, sizeof path);
        int v = tc_manifest_verify(path, why, sizeof why);
        if (v < 0) {
            /* written before checkpoints had manifests: used as it is */
            logf_run(c, "warning: stage %s: %s has no manifest (an older tinyclip); not verified",
                     name, path);
            v = 1;
        }
        if (v == 1) {
            snprintf(out, CKPT_CAP, "%s", path);
            break;
        }
        logf_run(c, "warning: stage %s: checkpoint %s is damaged: %s", name, path, why);
        if (!damaged++)
            snprintf(first_damage, sizeof first_damage, "step %lld: %.500s", steps[k], why);
    }
    if (out[0] && damaged) {
        /* the newer, damaged ones go aside (kept for a look), so that the
         * steps the run takes again publish their checkpoints afresh */
        for (int k = 0; k < damaged; k++) {
            char path[CKPT_CAP];
            step_dir(dir, steps[k], path, sizeof path);
            set_aside(c, path);
        }
        logf_run(c,
                 "stage %s: falling back to %s, the newest intact checkpoint (the damaged ones are "
                 "renamed *.damaged)",
                 name, out);
    }
    if (!out[0] && damaged)
        return tc_fail(TC_ERR_FORMAT,
                       "no intact checkpoint in %s (%s); to train the stage from its start: "
                       "--restart-from %s",
                       dir, first_damage, name);
    return TC_OK;
}
