/* tinyclip train EXP.yaml [--out DIR] [--set key=value]... [--restart-from STAGE] [--dry-run] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "experiment.h"
#include "scheduler.h"
#include "stage_plan.h"

#define MAX_SETS 128

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: tinyclip train EXPERIMENT.yaml [--out DIR] [--set key=value]... [--restart-from "
        "STAGE] [--dry-run]\n"
        "  --out DIR        run folder (default: the experiment's out, runs/<name>)\n"
        "  --set key=value  override a value of the file, e.g. stages.0.steps=100\n"
        "  --restart-from STAGE\n"
        "                   train STAGE and the stages that depend on it again; their earlier\n"
        "                   folders are moved to OUT/replaced/N/\n"
        "  --dry-run        validate, print the stage plan, parameters and memory; train nothing\n"
        "  --plain          plain progress lines even on a terminal\n"
        "running the same command again resumes an interrupted run; a stage whose inputs\n"
        "changed since it ran is refused (use --restart-from or another --out).\n");
}

int tc_cmd_train(int argc, char **argv) {
    const char *path = NULL, *sets[MAX_SETS], *restart_from = NULL;
    char *owned[MAX_SETS];
    int n_sets = 0, n_owned = 0, dry = 0, plain = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (strcmp(o, "--help") == 0 || strcmp(o, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(o, "--dry-run") == 0) {
            dry = 1;
        } else if (strcmp(o, "--plain") == 0) {
            plain = 1;
        } else if (strcmp(o, "--restart-from") == 0 && i + 1 < argc) {
            restart_from = argv[++i];
        } else if ((strcmp(o, "--set") == 0 || strcmp(o, "--out") == 0) && i + 1 < argc) {
            if (n_sets == MAX_SETS) {
                fprintf(stderr, "tinyclip train: at most %d overrides\n", MAX_SETS);
                return 2;
            }
            if (strcmp(o, "--out") == 0) {
                size_t n = strlen(argv[i + 1]) + 5;
                char *s = malloc(n);
                if (!s) return 1;
                snprintf(s, n, "out=%s", argv[i + 1]);
                owned[n_owned++] = s;
                sets[n_sets++] = s;
            } else {
                sets[n_sets++] = argv[i + 1];
            }
            i++;
        } else if (o[0] != '-' && !path) {
            path = o;
        } else {
            fprintf(stderr, "tinyclip train: unexpected argument %s\n", o);
            usage(stderr);
            return 2;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    tc_experiment *exp = NULL;
    int rc = 0;
    if (tc_experiment_load(path, sets, n_sets, &exp) != TC_OK) {
        fprintf(stderr, "%s\n", tc_last_error());
        rc = 1;
    } else if (dry) {
        /* the plan, then the rest of what the run checks before its first write */
        tc_stage_plan *plan;
        if (tc_stage_plan_build(exp, &plan) != TC_OK) {
            rc = tc_cli_report("train --dry-run");
        } else {
            tc_stage_plan_print(stdout, plan);
            fflush(stdout);
            if (tc_run_validate(exp, restart_from) != TC_OK) rc = tc_cli_report("train --dry-run");
            tc_stage_plan_free(plan);
        }
    } else {
        tc_run_options o = {
            .log = stdout, .force_tty = plain ? 0 : -1, .restart_from = restart_from};
        if (tc_run_experiment(exp, &o) != TC_OK) rc = tc_cli_report("train");
    }
    tc_experiment_free(exp);
    for (int i = 0; i < n_owned; i++) free(owned[i]);
    return rc;
}
