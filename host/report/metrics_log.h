/* metrics.jsonl: one JSON object per line, appended and flushed as it is
 * written, one file per stage:
 *   {"step": 120, "time": 1764300000.123, "loss": 1.234, "lr": 0.0005, ...}
 * values are numbers written with %.9g; NaN and infinities become null (JSON
 * has no NaN). an optional "event" string marks special lines ("eval",
 * "prune", "skip"). after a resume the lines past the checkpoint's step are
 * dropped with tc_metrics_truncate_after, so the file matches an
 * uninterrupted run's. */
#ifndef TC_METRICS_LOG_H
#define TC_METRICS_LOG_H

#include <stdint.h>

#include "status.h"

typedef struct tc_metrics_log tc_metrics_log;

/* opens (creating the folder) for appending */
tc_status tc_metrics_open(tc_metrics_log **out, const char *path);
/* one line: step, wall time, the n (key, value) pairs; event may be NULL.
 * keys are plain names ([A-Za-z0-9_./-]); others are refused */
tc_status tc_metrics_write(tc_metrics_log *m, int64_t step, const char *event, int n,
                           const char *const *keys, const double *values);
/* fsync (called at checkpoints) */
tc_status tc_metrics_sync(tc_metrics_log *m);
tc_status tc_metrics_close(tc_metrics_log *m);

/* rewrites path atomically keeping only lines whose "step" is <= step;
 * a missing file is fine */
tc_status tc_metrics_truncate_after(const char *path, int64_t step);

/* reads the numeric `key` of every line of a metrics.jsonl that has it (and
 * whose event matches `event`, NULL = lines without an event); *steps and
 * *values are malloc'd. unparsable lines are skipped. */
tc_status tc_metrics_read_series(const char *path, const char *key, const char *event,
                                 int64_t **steps, double **values, int *n);

#endif
