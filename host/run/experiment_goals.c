/* the experiment's `goals:` list: thresholds the run report checks at the
 * end of a run (host/report/evidence.h evaluates them). each goal is a
 * mapping with a kind and the keys of that kind:
 *
 *   {kind: top1_at_least, stage: S, top1: F}            S's top-1 >= F
 *   {kind: top1_within, stage: S, of: R, points: P}     S at most P points below R
 *   {kind: reach_faster, stage: S, baseline: B, at: F, max_ratio: X}
 *       S reaches B's top-1 at F of B's steps in at most X times the steps B needed
 *   {kind: ahead_at_equal_steps, stage: S, baseline: B, points: P}
 *       S at least P points above B at S's last step
 *   {kind: wall_time, minutes: M}                       the run within M minutes
 *
 * stage names are kept as text here and resolved by tc_exp_check_goals once
 * every stage is read. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libfyaml.h>

#include "experiment_internal.h"

static const char *const goal_kinds[] = {"top1_at_least",        "top1_within", "reach_faster",
                                         "ahead_at_equal_steps", "wall_time",   NULL};

typedef struct {
    int kind;
    char *stage, *of, *baseline;
    double top1, points, at, max_ratio, minutes;
} goal_text;

static const tc_yaml_field goal_fields[] = {
    {.key = "kind", .type = TC_YAML_ENUM, .off = offsetof(goal_text, kind), .enums = goal_kinds},
    {.key = "stage", .type = TC_YAML_STR, .off = offsetof(goal_text, stage)},
    {.key = "of", .type = TC_YAML_STR, .off = offsetof(goal_text, of)},
    {.key = "baseline", .type = TC_YAML_STR, .off = offsetof(goal_text, baseline)},
    {.key = "top1", .type = TC_YAML_F64, .off = offsetof(goal_text, top1), .hi = 1},
    {.key = "points",
     .type = TC_YAML_F64,
     .off = offsetof(goal_text, points),
     .lo = -100,
     .hi = 100},
    {.key = "at", .type = TC_YAML_F64, .off = offsetof(goal_text, at), .hi = 1, .excl_lo = 1},
    {.key = "max_ratio",
     .type = TC_YAML_F64,
     .off = offsetof(goal_text, max_ratio),
     .hi = 1e6,
     .excl_lo = 1},
    {.key = "minutes",
     .type = TC_YAML_F64,
     .off = offsetof(goal_text, minutes),
     .hi = 1e9,
     .excl_lo = 1},
};

/* the keys each kind needs; the others are not allowed with it */
static const char *const kind_keys[5][4] = {
    {"stage", "top1"},
    {"stage", "of", "points"},
    {"stage", "baseline", "at", "max_ratio"},
    {"stage", "baseline", "points"},
    {"minutes"},
};

static int kind_has(int kind, const char *key) {
    for (int k = 0; k < 4 && kind_keys[kind][k]; k++)
        if (!strcmp(kind_keys[kind][k], key)) return 1;
    return 0;
}

static void goal_item(tc_yaml *y, struct fy_node *item, const char *gp, tc_exp_goal *g) {
    goal_text t = {.kind = -1};
    uint64_t seen = tc_yaml_parse_map(y, item, gp, goal_fields, TC_YAML_NF(goal_fields), &t);
    if (item && fy_node_is_mapping(item)) {
        if (!tc_yaml_seen(goal_fields, TC_YAML_NF(goal_fields), seen, "kind")) {
            tc_yaml_report(y, item, gp,
                           "missing key 'kind' (one of: top1_at_least, top1_within, "
                           "reach_faster, ahead_at_equal_steps, wall_time)");
        } else if (t.kind >= 0) { /* a bad kind is reported already */
            for (int f = 1; f < TC_YAML_NF(goal_fields); f++) {
                const char *key = goal_fields[f].key;
                int has = tc_yaml_seen(goal_fields, TC_YAML_NF(goal_fields), seen, key);
                char p[256];
                tc_yaml_join(p, sizeof p, gp, key);
                if (has && !kind_has(t.kind, key))
                    tc_yaml_report(y, item, p, "a goal of kind %s takes no '%s'",
                                   goal_kinds[t.kind], key);
                else if (!has && kind_has(t.kind, key))
                    tc_yaml_report(y, item, p, "a goal of kind %s needs '%s'", goal_kinds[t.kind],
                                   key);
            }
        }
    }
    g->goal.kind = t.kind >= 0 ? (tc_goal_kind)t.kind : TC_GOAL_TOP1_AT_LEAST;
    g->goal.stage = g->goal.other = -1;
    g->stage_name = t.stage;
    g->other_name = t.of ? t.of : t.baseline;
    if (t.of && t.baseline) free(t.baseline);
    g->goal.at = t.at;
    switch (g->goal.kind) {
    case TC_GOAL_TOP1_AT_LEAST: g->goal.value = t.top1; break;
    case TC_GOAL_REACH_FASTER: g->goal.value = t.max_ratio; break;
    case TC_GOAL_WALL_TIME: g->goal.value = t.minutes; break;
    default: g->goal.value = t.points; break;
    }
}

void tc_exp_goals_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    tc_experiment *e = obj;
    if (tc_yaml_is_null(v)) return;
    if (!v || !fy_node_is_sequence(v)) {
        tc_yaml_report(y, v, path, "expected a list of goals, got %s", tc_yaml_node_kind(v));
        return;
    }
    int n = fy_node_sequence_item_count(v);
    if (n > TC_EXP_MAX_GOALS) {
        tc_yaml_report(y, v, path, "at most %d goals, got %d", TC_EXP_MAX_GOALS, n);
        return;
    }
    if (e->goals || n == 0) return;
    e->goals = calloc((size_t)n, sizeof *e->goals);
    if (!e->goals) {
        tc_yaml_report(y, v, path, "out of memory");
        return;
    }
    e->n_goals = n;
    void *it = NULL;
    struct fy_node *item;
    for (int i = 0; i < n && (item = fy_node_sequence_iterate(v, &it)); i++) {
        char gp[64];
        snprintf(gp, sizeof gp, "%s.%d", path, i);
        item = tc_yaml_deref(item);
        e->goals[i].loc = tc_yaml_node_loc(y, item);
        goal_item(y, item, gp, &e->goals[i]);
    }
}

void tc_exp_check_goals(tc_exp_ctx *c) {
    tc_experiment *e = c->exp;
    for (int i = 0; i < e->n_goals; i++) {
        tc_exp_goal *g = &e->goals[i];
        const char *names[2] = {g->stage_name, g->other_name};
        int *idx[2] = {&g->goal.stage, &g->goal.other};
        for (int k = 0; k < 2; k++) {
            if (!names[k]) continue;
            *idx[k] = tc_experiment_find_stage(e, names[k]);
            char p[64];
            snprintf(p, sizeof p, "goals.%d", i);
            if (*idx[k] < 0)
                tc_yaml_report_at(&c->y, g->loc, p, "no stage is named '%s'", names[k]);
        }
    }
}

void tc_exp_goals_free(tc_experiment *e) {
    for (int i = 0; i < e->n_goals; i++) {
        free(e->goals[i].stage_name);
        free(e->goals[i].other_name);
    }
    free(e->goals);
}
