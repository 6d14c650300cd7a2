/* the evidence of a compression run (contract in evidence.h) */
#include "evidence.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* the index of the first counted evaluation; n when none */
static int first_counted(const tc_curve *c) {
    int k = 0;
    while (k < c->n && c->steps[k] < c->counted_from)
        k++;
    return k;
}

double tc_curve_at(const tc_curve *c, double step) {
    int k0 = first_counted(c);
    if (k0 >= c->n || step < (double)c->steps[k0] || step > (double)c->steps[c->n - 1]) return NAN;
    for (int k = k0; k < c->n; k++) {
        double s1 = (double)c->steps[k];
        if (step > s1) continue;
        if (step == s1 || k == k0) return c->acc[k];
        double s0 = (double)c->steps[k - 1];
        return c->acc[k - 1] + (c->acc[k] - c->acc[k - 1]) * (step - s0) / (s1 - s0);
    }
    return NAN;
}

double tc_curve_reach(const tc_curve *c, double target, int *at_first) {
    if (at_first) *at_first = 0;
    int k0 = first_counted(c);
    if (isnan(target)) return NAN;
    for (int k = k0; k < c->n; k++) {
        if (!(c->acc[k] >= target)) continue;
        if (k == k0) {
            if (at_first) *at_first = 1;
            return (double)c->steps[k];
        }
        /* acc[k-1] < target <= acc[k] */
        double s0 = (double)c->steps[k - 1], s1 = (double)c->steps[k];
        double a0 = c->acc[k - 1], a1 = c->acc[k];
        return s0 + (s1 - s0) * (target - a0) / (a1 - a0);
    }
    return NAN;
}

tc_status tc_speedup_compute(const tc_curve *student, int64_t student_steps,
                             const tc_curve *baseline, int64_t baseline_steps,
                             const double *fractions, int n, tc_speedup *out) {
    if (n < 0 || n > TC_MAX_TARGETS)
        return tc_fail(TC_ERR_ARG, "speedup: %d targets (at most %d)", n, TC_MAX_TARGETS);
    memset(out, 0, sizeof *out);
    out->n = n;
    for (int i = 0; i < n; i++) {
        tc_reach *r = &out->reach[i];
        if (!(fractions[i] > 0.0 && fractions[i] <= 1.0))
            return tc_fail(TC_ERR_ARG, "speedup: target fraction %g is not in (0, 1]",
                           fractions[i]);
        r->fraction = fractions[i];
        r->target = tc_curve_at(baseline, fractions[i] * (double)baseline_steps);
        r->baseline_steps = tc_curve_reach(baseline, r->target, &r->baseline_at_first);
        r->steps = tc_curve_reach(student, r->target, &r->at_first);
        r->speedup = r->steps > 0 && r->baseline_steps > 0 ? r->baseline_steps / r->steps : NAN;
    }
    out->equal_step = (double)student_steps;
    out->baseline_at_equal = tc_curve_at(baseline, (double)student_steps);
    out->student_final = tc_curve_at(student, (double)student_steps);
    out->margin = out->student_final - out->baseline_at_equal;
    return TC_OK;
}

tc_status tc_lineage_sum(const tc_lineage_node *nodes, int n, int i, tc_lineage *out) {
    memset(out, 0, sizeof *out);
    if (n < 1 || n > 64 || i < 0 || i >= n)
        return tc_fail(TC_ERR_ARG, "lineage: stage %d of %d (at most 64)", i, n);
    int stack[64], top = 0;
    stack[top++] = i;
    out->members = 1ull << i;
    while (top > 0) {
        const tc_lineage_node *s = &nodes[stack[--top]];
        out->gflop += s->gflop;
        out->seconds += s->seconds;
        out->external |= s->external;
        int next[2] = {s->parent, s->teacher};
        for (int k = 0; k < 2; k++) {
            int j = next[k];
            if (j < 0) continue;
            if (j >= n) return tc_fail(TC_ERR_ARG, "lineage: stage %d refers to %d of %d", i, j, n);
            if (out->members & (1ull << j)) continue;
            out->members |= 1ull << j;
            stack[top++] = j;
        }
    }
    return TC_OK;
}

/* ---- goals ---- */

static const tc_goal_stage *goal_stage(const tc_goal_stage *stages, int n, int i) {
    return i >= 0 && i < n ? &stages[i] : NULL;
}

static void steps_text(char *buf, size_t cap, double steps, int at_first) {
    if (isnan(steps))
        snprintf(buf, cap, "not reached");
    else
        snprintf(buf, cap, "%s%.0f", at_first ? "at " : "", steps);
}

/* stage reaches other's accuracy at `at` of other's steps in at most
 * value x the steps other needed; met stays -1 when the target is unknown */
static void check_reach(const tc_goal *g, const tc_goal_stage *s, const tc_goal_stage *o,
                        tc_goal_result *out) {
    snprintf(out->goal, sizeof out->goal,
             "%s reaches %s's top-1 at %.0f%% of its steps in at most %.2gx the steps %s needed "
             "(counted from %s's final architecture)",
             s->name, o->name, 100.0 * g->at, g->value, o->name, s->name);
    double frac = g->at;
    tc_speedup sp;
    if (tc_speedup_compute(&s->curve, s->steps, &o->curve, o->steps, &frac, 1, &sp) != TC_OK) {
        snprintf(out->result, sizeof out->result, "invalid fraction %g", g->at);
        return;
    }
    const tc_reach *r = &sp.reach[0];
    char a[48], b[48];
    steps_text(a, sizeof a, r->steps, r->at_first);
    steps_text(b, sizeof b, r->baseline_steps, 0);
    if (isnan(r->target) || isnan(r->baseline_steps)) {
        snprintf(out->result, sizeof out->result, "the target is not known (%s: %s)", o->name, b);
        return;
    }
    snprintf(out->result, sizeof out->result,
             "target %.2f%%: %s needed %s steps, %s %s (at most %.1f allowed)", 100.0 * r->target,
             o->name, b, s->name, a, g->value * r->baseline_steps);
    out->met = !isnan(r->steps) && r->steps <= g->value * r->baseline_steps;
}

void tc_goal_check(const tc_goal *g, const tc_goal_stage *stages, int n, double run_seconds,
                   tc_goal_result *out) {
    memset(out, 0, sizeof *out);
    out->met = -1;
    const tc_goal_stage *s = goal_stage(stages, n, g->stage), *o = goal_stage(stages, n, g->other);
    int needs_other = g->kind != TC_GOAL_TOP1_AT_LEAST && g->kind != TC_GOAL_WALL_TIME;
    if (g->kind != TC_GOAL_WALL_TIME && (!s || (needs_other && !o))) {
        snprintf(out->goal, sizeof out->goal, "goal of kind %d", (int)g->kind);
        snprintf(out->result, sizeof out->result, "names a stage that is not in the run");
        return;
    }
    switch (g->kind) {
    case TC_GOAL_TOP1_AT_LEAST:
        snprintf(out->goal, sizeof out->goal, "%s zero-shot top-1 >= %.2f%%", s->name,
                 100.0 * g->value);
        if (isnan(s->top1)) break;
        snprintf(out->result, sizeof out->result, "%.2f%%", 100.0 * s->top1);
        out->met = s->top1 >= g->value;
        return;
    case TC_GOAL_TOP1_WITHIN: {
        snprintf(out->goal, sizeof out->goal, "%s within %.3g points of %s", s->name, g->value,
                 o->name);
        if (isnan(s->top1) || isnan(o->top1)) break;
        double d = 100.0 * (o->top1 - s->top1);
        snprintf(out->result, sizeof out->result, "%s %.2f%%, %s %.2f%%: %.2f points %s", s->name,
                 100.0 * s->top1, o->name, 100.0 * o->top1, fabs(d), d >= 0 ? "below" : "above");
        out->met = d <= g->value;
        return;
    }
    case TC_GOAL_REACH_FASTER: check_reach(g, s, o, out); return;
    case TC_GOAL_AHEAD_AT_EQUAL_STEPS: {
        snprintf(out->goal, sizeof out->goal,
                 "%s at least %.3g points above %s at equal steps (%s's last step)", s->name,
                 g->value, o->name, s->name);
        double b = tc_curve_at(&o->curve, (double)s->steps);
        double a = tc_curve_at(&s->curve, (double)s->steps);
        if (isnan(a) || isnan(b)) break;
        double d = 100.0 * (a - b);
        snprintf(out->result, sizeof out->result, "step %lld: %s %.2f%%, %s %.2f%%: %+.2f points",
                 (long long)s->steps, s->name, 100.0 * a, o->name, 100.0 * b, d);
        out->met = d >= g->value;
        return;
    }
    case TC_GOAL_WALL_TIME:
        snprintf(out->goal, sizeof out->goal, "the run within %.3g minutes", g->value);
        if (isnan(run_seconds)) break;
        snprintf(out->result, sizeof out->result, "%.0f s (%.1f min)", run_seconds,
                 run_seconds / 60.0);
        out->met = run_seconds <= 60.0 * g->value;
        return;
    }
    if (!out->result[0]) snprintf(out->result, sizeof out->result, "a number it needs is missing");
}
