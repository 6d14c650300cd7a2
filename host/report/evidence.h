/* the evidence of a compression run, computed from numbers only (no files):
 *
 *   curves    zero-shot top-1 against training steps, one per stage; the
 *             value at a step and the first step a target is reached, by
 *             linear interpolation between evaluations
 *   speedup   an inherited student against the from-scratch baseline of the
 *             same architecture: the baseline's accuracy at fractions of its
 *             steps as targets below its plateau, the steps each needs to
 *             reach them, and the accuracy of both at equal steps
 *   lineage   the training compute of a model and of every stage it
 *             inherits from or is distilled by
 *   goals     thresholds an experiment states on the above, met or not
 *
 * a student's evaluations count as "reached" only from counted_from on (for
 * automatic inheritance its pruning step: before it the model is the larger
 * masked one), while its steps are counted from the start of its stage. */
#ifndef TC_EVIDENCE_H
#define TC_EVIDENCE_H

#include <stdint.h>

#include "status.h"

#define TC_MAX_TARGETS 8

typedef struct {
    const int64_t *steps; /* (n) ascending */
    const double *acc;    /* (n) fractions */
    int n;
    int64_t counted_from; /* evaluations at earlier steps are not counted */
} tc_curve;

/* the curve at `step`, interpolated between the counted evaluations around
 * it; NaN outside the counted evaluations */
double tc_curve_at(const tc_curve *c, double step);

/* the first step at which the counted evaluations reach `target`: the
 * crossing between the last evaluation below it and the first at or above
 * it, by linear interpolation. NaN when never reached. *at_first (may be
 * NULL) is set when the first counted evaluation already reaches it: then
 * the step returned is that evaluation's (the crossing itself is not seen) */
double tc_curve_reach(const tc_curve *c, double target, int *at_first);

typedef struct {
    double fraction;       /* of the baseline's steps */
    double target;         /* the baseline's accuracy at fraction * its steps; NaN unknown */
    double baseline_steps; /* its first crossing of the target; NaN never */
    int baseline_at_first;
    double steps; /* the student's first counted crossing; NaN never */
    int at_first;
    double speedup; /* baseline_steps / steps; NaN when either is unknown */
} tc_reach;

typedef struct {
    int n;
    tc_reach reach[TC_MAX_TARGETS];
    double equal_step;        /* the student's last step */
    double baseline_at_equal; /* the baseline there; NaN when it was not trained that far */
    double student_final;     /* the student's last evaluation */
    double margin;            /* student_final - baseline_at_equal (fraction) */
} tc_speedup;

/* fractions: (n <= TC_MAX_TARGETS) of the baseline's steps, in (0, 1] */
tc_status tc_speedup_compute(const tc_curve *student, int64_t student_steps,
                             const tc_curve *baseline, int64_t baseline_steps,
                             const double *fractions, int n, tc_speedup *out);

/* ---- compute of a lineage ---- */

typedef struct {
    int parent;     /* the stage whose weights it starts from; -1 none */
    int teacher;    /* the stage that distils it; -1 none */
    int external;   /* it starts from or is distilled by a checkpoint from outside the run */
    double gflop;   /* its own stage's training compute; NaN unknown */
    double seconds; /* its own stage's training wall time; NaN unknown (e.g. resumed) */
} tc_lineage_node;

typedef struct {
    double gflop, seconds; /* sums over the members; NaN when a member's is unknown */
    uint64_t members;      /* bit i: stage i is in the lineage (itself included) */
    int external;          /* a member came from outside the run: its cost is not in the sums */
} tc_lineage;

/* stage i and every stage reached through parents and teachers, each once
 * (n <= 64) */
tc_status tc_lineage_sum(const tc_lineage_node *nodes, int n, int i, tc_lineage *out);

/* ---- goals ---- */

typedef enum {
    TC_GOAL_TOP1_AT_LEAST = 0,        /* stage's top-1 >= value */
    TC_GOAL_TOP1_WITHIN = 1,          /* stage's top-1 >= other's - value points */
    TC_GOAL_REACH_FASTER = 2,         /* stage reaches other's accuracy at `at` of its steps
                                         in <= value x the steps other needed */
    TC_GOAL_AHEAD_AT_EQUAL_STEPS = 3, /* stage - other at stage's last step >= value points */
    TC_GOAL_WALL_TIME = 4,            /* the run's wall time <= value minutes */
} tc_goal_kind;

typedef struct {
    tc_goal_kind kind;
    int stage, other; /* stage indices; -1 where the kind has none */
    double value, at;
} tc_goal;

/* what a goal is checked on, per stage */
typedef struct {
    const char *name;
    double top1;    /* final zero-shot top-1 on the full evaluation set; NaN unknown */
    tc_curve curve; /* the evaluations during the stage */
    int64_t steps;
} tc_goal_stage;

typedef struct {
    int met; /* 1 met, 0 not met, -1 cannot be told (a number is missing) */
    char goal[200], result[400];
} tc_goal_result;

/* run_seconds: NaN when not known */
void tc_goal_check(const tc_goal *g, const tc_goal_stage *stages, int n, double run_seconds,
                   tc_goal_result *out);

#endif
