/* run report: report.md (the models, the inheritance speedup, the training
 * compute of each model's lineage, the goals and the plots) and report.json
 * (the same numbers, machine-readable), written atomically into the run
 * folder, plus PNG plots made with gnuplot when it is installed
 * (report_plots.c):
 *   plots/loss.png          training loss against step: CLIP-loss stages and
 *                           distillation stages on separate panels (the mask
 *                           phase's Lagrangian is taken out of the latter)
 *   plots/acc_steps.png     zero-shot top-1 against training steps, every stage
 *   plots/acc_speed.png     zero-shot top-1 against inference images/s
 *   plots/acc_params.png    zero-shot top-1 against parameters
 *   plots/masks.png         mask phases: expected and target sparsity,
 *                           lambda1 and lambda2, the Lagrangian
 * without gnuplot (or when it fails) report.md says so instead of failing.
 * the numbers are inputs: this module measures nothing. */
#ifndef TC_REPORT_H
#define TC_REPORT_H

#include <stdint.h>

#include "evidence.h"
#include "json.h"
#include "status.h"

typedef struct {
    const char *name; /* stage or model name */
    const char *kind; /* e.g. "teacher (scratch)", "auto 50%", "manual", "scratch baseline" */
    int64_t params;   /* all parameters; < 0 unknown */
    int64_t params_no_token_emb;      /* the TinyCLIP naming convention; < 0 unknown */
    double gflops_image, gflops_text; /* per image / per caption; NaN unknown */
    double top1, top5;                /* zero-shot accuracy as fractions; NaN unknown */
    double images_per_sec;            /* inference throughput; NaN unknown */
    int64_t train_steps;              /* < 0 unknown */
    double images_per_step;           /* global batch; NaN unknown */
    /* training compute: the stage's own, and its lineage's (lineage_names:
     * the stages summed, e.g. "teacher + auto50 + auto25"); NaN unknown */
    double train_gflop, train_seconds;
    double lineage_gflop, lineage_seconds;
    const char *lineage_names;
    int lineage_external; /* a checkpoint from outside the run is in the lineage */
    /* the evaluations during the stage (curve.counted_from: its final
     * architecture from there), for the accuracy-against-steps plot */
    tc_curve curve;
    int distill;              /* 1: distillation loss, 0: CLIP loss (the loss panel) */
    int masks;                /* 1: the metrics hold mask-phase lines (event "mask") */
    const char *metrics_path; /* the stage's metrics.jsonl for the plots; NULL none */
} tc_report_row;

/* an inherited student against the from-scratch baseline of its architecture */
typedef struct {
    int student, baseline; /* row indices */
    tc_speedup sp;
} tc_report_speedup;

typedef struct {
    const char *title;           /* NULL: "tinyclip run report" */
    const char *throughput_note; /* e.g. "cpu, 2 threads, batch 256"; NULL none */
    const char *machine;         /* e.g. "AMD EPYC, 2 threads, OpenBLAS Cooperlake"; NULL none */
    const char *eval_note;       /* what the evaluations during a stage ran on; NULL none */
    const char *notes;           /* markdown appended at the end; NULL none */
    const tc_report_speedup *speedups;
    int n_speedups;
    const tc_goal_result *goals;
    int n_goals;
    int plots;           /* 1: make the PNG plots */
    const char *gnuplot; /* the program; NULL: "gnuplot" from PATH */
} tc_report_options;

tc_status tc_report_write(const char *dir, const tc_report_row *rows, int n,
                          const tc_report_options *opt);

/* the speedup, compute and goals sections of report.md, for a caller that
 * prints them elsewhere (tinyclip bench --run) */
void tc_report_evidence_md(tc_sbuf *b, const tc_report_row *rows, int n,
                           const tc_report_options *opt);

/* ---- plots (report_plots.c) ---- */

typedef struct {
    int loss, acc_steps, acc_speed, acc_params, masks; /* 1: made */
    char why[1400];                                    /* when none could be made */
} tc_report_plots;

/* makes the plots under dir/plots (opt: the speedups drawn on the
 * accuracy plot, the gnuplot program); 0, or -1 with plots->why filled */
int tc_report_make_plots(const char *dir, const tc_report_row *rows, int n,
                         const tc_report_options *opt, tc_report_plots *plots);

#endif
