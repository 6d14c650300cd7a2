/* the report of a finished run: one row per stage from its summary.json,
 * the inheritance speedup from the eval series in metrics.jsonl, written by
 * host/report into the run folder. */
#ifndef TC_RUN_REPORT_H
#define TC_RUN_REPORT_H

#include "experiment.h"

tc_status tc_run_report_write(const tc_experiment *exp);

#endif
