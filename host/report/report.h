/* the run report: report.md (a results table and the plots) and report.json
 * (the same numbers, machine-readable), written atomically into the run
 * folder, plus PNG plots made with gnuplot when it is installed:
 *   plots/loss.png          training loss against step, one line per stage
 *                           (from each stage's metrics.jsonl, key "loss")
 *   plots/acc_params.png    zero-shot top-1 against parameters, one point per model
 * without gnuplot (or when it fails) report.md says so instead of failing.
 * the numbers are inputs: this module measures nothing. */
#ifndef TC_REPORT_H
#define TC_REPORT_H

#include <stdint.h>

#include "status.h"

typedef struct {
    const char *name;             /* stage or model name */
    const char *kind;             /* e.g. "teacher (scratch)", "auto 50%", "manual", "scratch baseline" */
    int64_t params;               /* all parameters; < 0 unknown */
    int64_t params_no_token_emb;  /* the TinyCLIP naming convention; < 0 unknown */
    double gflops_image, gflops_text; /* per image / per caption; NaN unknown */
    double top1, top5;            /* zero-shot accuracy as fractions; NaN unknown */
    double images_per_sec;        /* inference throughput; NaN unknown */
    int64_t train_steps;          /* < 0 unknown */
    /* inheritance speedup: the steps this model needed to reach the
     * from-scratch baseline's final top-1 (-1: never reached, -2: not
     * applicable, e.g. the baseline itself) and scratch steps / those steps
     * (NaN: not applicable) */
    int64_t steps_to_match;
    double speedup;
    const char *metrics_path;     /* the stage's metrics.jsonl for the loss plot; NULL none */
    /* the training step's model FLOP rate: images/s of training times the
     * step's FLOPs per sample (engine/flops.h); NaN or 0 unknown */
    double train_gflops_per_s;
} tc_report_row;

typedef struct {
    const char *title;            /* NULL: "tinyclip run report" */
    const char *throughput_note;  /* e.g. "cpu, 2 threads, batch 256"; NULL none */
    const char *notes;            /* markdown appended at the end; NULL none */
    int plots;                    /* 1: make the PNG plots */
    const char *gnuplot;          /* the program; NULL: "gnuplot" from PATH */
} tc_report_options;

tc_status tc_report_write(const char *dir, const tc_report_row *rows, int n, const tc_report_options *opt);

/* speedup = scratch_steps / steps_to_match; NaN when either is not positive */
double tc_report_speedup(int64_t scratch_steps, int64_t steps_to_match);

#endif
