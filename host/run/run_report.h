/* the report of a finished run: one row per stage from its summary.json and
 * metrics.jsonl, the inheritance speedups, the training compute of every
 * model's lineage and the experiment's goals, written by host/report into
 * the run folder (report.md, report.json, plots/). */
#ifndef TC_RUN_REPORT_H
#define TC_RUN_REPORT_H

#include <stdio.h>

#include "experiment.h"

tc_status tc_run_report_write(const tc_experiment *exp);

/* the speedup, compute and goals sections of a finished run's report, from
 * its folder (RUN/experiment.yaml and the stages' files), printed to f */
tc_status tc_run_report_print(FILE *f, const char *run_dir);

#endif
