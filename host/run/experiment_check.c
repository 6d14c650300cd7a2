/* the checks that span an experiment document, run once every field is
 * read: stage names unique, references to other stages (teacher, parent,
 * model: {stage: NAME}) resolved and earlier in the list, each stage kind
 * with the inheritance, model and parent it needs, and the defaults that
 * depend on other fields (batch, steps from epochs, lr and logit scale by
 * kind, warm-up by inheritance, start sparsity from the parent). they run
 * even after other errors, so one run shows every problem. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <libfyaml.h>

#include "experiment_internal.h"

/* a stage's name is unique; its parent and model: {stage: NAME} name earlier
 * stages. returns 1 when the stage has a model (a config or a stage's) */
static int check_references(tc_exp_ctx *c, int i, const char *sp) {
    tc_experiment *e = c->exp;
    tc_yaml *y = &c->y;
    tc_exp_stage *st = &e->stages[i];
    char p[256];
    for (int j = 0; j < i; j++)
        if (e->stages[j].name && !strcmp(e->stages[j].name, st->name)) {
            tc_yaml_join(p, sizeof p, sp, "name");
            tc_yaml_report_at(y, c->name_loc ? c->name_loc[i] : st->loc, p,
                              "stage name '%s' is already used by stages.%d", st->name, j);
        }
    /* parent */
    if (c->parent_name && c->parent_name[i]) {
        tc_yaml_join(p, sizeof p, sp, "parent");
        int k = tc_experiment_find_stage(e, c->parent_name[i]);
        if (k < 0)
            tc_yaml_report_at(y, c->parent_loc[i], p, "no stage is named '%s'", c->parent_name[i]);
        else if (k == i)
            tc_yaml_report_at(y, c->parent_loc[i], p, "a stage cannot be its own parent");
        else if (k > i)
            tc_yaml_report_at(
                y, c->parent_loc[i], p,
                "'%s' is stages.%d, after this one; a parent must come earlier in the list",
                c->parent_name[i], k);
        else if (e->stages[k].kind == TC_EXP_STAGE_TEACHER_CACHE)
            tc_yaml_report_at(y, c->parent_loc[i], p,
                              "'%s' is a teacher_cache stage: it has no weights to start from",
                              c->parent_name[i]);
        else
            st->parent = k;
    }
    int has_model = st->model != NULL;
    if (c->model_stage_name && c->model_stage_name[i]) {
        tc_yaml_join(p, sizeof p, sp, "model.stage");
        int k = tc_experiment_find_stage(e, c->model_stage_name[i]);
        has_model = 1;
        if (k < 0)
            tc_yaml_report_at(y, st->model_loc, p, "no stage is named '%s'",
                              c->model_stage_name[i]);
        else if (k >= i)
            tc_yaml_report_at(y, st->model_loc, p,
                              "'%s' is not an earlier stage; its architecture is not known yet",
                              c->model_stage_name[i]);
        else if (e->stages[k].kind == TC_EXP_STAGE_TEACHER_CACHE)
            tc_yaml_report_at(y, st->model_loc, p, "'%s' is a teacher_cache stage: it has no model",
                              c->model_stage_name[i]);
        else
            st->model_stage = k;
    }
    if (c->cache_stage_name && c->cache_stage_name[i]) {
        tc_yaml_join(p, sizeof p, sp, "teacher_cache");
        int k = tc_experiment_find_stage(e, c->cache_stage_name[i]);
        if (k < 0)
            tc_yaml_report_at(y, st->loc, p, "no stage is named '%s'", c->cache_stage_name[i]);
        else if (k >= i)
            tc_yaml_report_at(y, st->loc, p,
                              "'%s' is not an earlier stage: the cache must be built first",
                              c->cache_stage_name[i]);
        else if (e->stages[k].kind != TC_EXP_STAGE_TEACHER_CACHE)
            tc_yaml_report_at(y, st->loc, p, "'%s' is a %s stage, not a teacher_cache stage",
                              c->cache_stage_name[i], tc_exp_stage_kind_name(e->stages[k].kind));
        else
            st->cache_stage = k;
    }
    return has_model;
}

/* an auto stage: no model of its own; start sparsity from an auto parent */
static void check_auto(tc_exp_ctx *c, int i, const char *sp, const char *p, int has_model,
                       int parent_known) {
    tc_experiment *e = c->exp;
    tc_yaml *y = &c->y;
    tc_exp_stage *st = &e->stages[i];
    tc_exp_auto *a = &st->inherit.autoc;
    if (!parent_known)
        tc_yaml_report_at(y, st->loc, p,
                          "auto inheritance needs a 'parent' (a stage or a checkpoint)");
    if (has_model)
        tc_yaml_report_at(y, st->model_loc, sp,
                          "an auto stage masks its parent's architecture: remove 'model'");
    if (isnan(a->start_sparsity)) {
        a->start_sparsity = 0.0f;
        if (st->parent >= 0 && e->stages[st->parent].inherit.kind == TC_EXP_INHERIT_AUTO &&
            !isnan(e->stages[st->parent].inherit.autoc.target_sparsity))
            a->start_sparsity = e->stages[st->parent].inherit.autoc.target_sparsity;
    }
    if (!isnan(a->target_sparsity) && a->start_sparsity > a->target_sparsity) {
        char q[256];
        tc_yaml_join(q, sizeof q, p, "start_sparsity");
        tc_yaml_report_at(y, st->loc, q, "start_sparsity %.3g is above target_sparsity %.3g",
                          (double)a->start_sparsity, (double)a->target_sparsity);
    }
}

/* fixed augmentations: K of a cache, a live pool, or none; a stage reading
 * a cache of this run asks for its K or nothing */
static void check_augmentations(tc_exp_ctx *c, int i, const char *sp) {
    tc_experiment *e = c->exp;
    tc_yaml *y = &c->y;
    tc_exp_stage *st = &e->stages[i];
    if (st->kind == TC_EXP_STAGE_TEACHER_CACHE) {
        if (st->augmentations < 0) st->augmentations = 1;
        if (st->augmentations < 1)
            tc_yaml_report_at(y, st->loc, sp,
                              "a teacher_cache stage stores at least 1 augmentation");
    } else if (st->augmentations < 0) {
        st->augmentations = 0;
    }
    if (st->cache_stage >= 0) {
        int K = e->stages[st->cache_stage].augmentations;
        if (st->augmentations != 0 && st->augmentations != K) {
            char q[256];
            tc_yaml_join(q, sizeof q, sp, "augmentations");
            tc_yaml_report_at(y, st->loc, q,
                              "the cache '%s' holds %d augmentations per sample, not %d",
                              e->stages[st->cache_stage].name, K, st->augmentations);
        }
    }
}

/* kinds, models and inheritance */
static void check_kind(tc_exp_ctx *c, int i, const char *sp, int has_model) {
    tc_experiment *e = c->exp;
    tc_yaml *y = &c->y;
    tc_exp_stage *st = &e->stages[i];
    int has_parent = st->parent >= 0 || st->parent_ext.checkpoint;
    int parent_known = has_parent || (c->parent_name && c->parent_name[i]);
    char p[256];
    tc_yaml_join(p, sizeof p, sp, "inheritance");
    if (st->kind == TC_EXP_STAGE_SCRATCH) {
        if (parent_known)
            tc_yaml_report_at(
                y, st->loc, sp,
                "a train_scratch_clip stage starts from random weights: remove 'parent'");
        if (st->inherit.kind != TC_EXP_INHERIT_NONE)
            tc_yaml_report_at(y, st->loc, p,
                              "a train_scratch_clip stage inherits nothing: use inheritance: none");
        if (!has_model)
            tc_yaml_report_at(y, st->loc, sp, "missing key 'model' (the architecture to train)");
        return;
    }
    const char *needs = st->kind == TC_EXP_STAGE_TEACHER_CACHE ? "a teacher_cache" : "a distill";
    if (!e->teacher.present)
        tc_yaml_report_at(y, st->loc, sp, "%s stage needs the top-level 'teacher'", needs);
    else if (e->teacher.stage >= 0 && e->teacher.stage >= i)
        tc_yaml_report_at(y, c->teacher_stage_loc, "teacher.stage",
                          "the teacher '%s' is stages.%d, but stages.%d ('%s') uses it: "
                          "the teacher stage must come first",
                          c->teacher_stage, e->teacher.stage, i, st->name);
    if (st->kind == TC_EXP_STAGE_TEACHER_CACHE) return;
    switch (st->inherit.kind) {
    case TC_EXP_INHERIT_NONE:
        if (!has_model && !parent_known)
            tc_yaml_report_at(y, st->loc, sp, "missing key 'model' (or a 'parent' to copy)");
        if (has_model && parent_known)
            tc_yaml_report_at(y, st->model_loc, sp,
                              "with inheritance: none and a parent the student is a copy of the "
                              "parent; remove 'model' or use inheritance: manual");
        break;
    case TC_EXP_INHERIT_MANUAL:
        if (!parent_known)
            tc_yaml_report_at(y, st->loc, p,
                              "manual inheritance needs a 'parent' (a stage or a checkpoint)");
        if (!has_model)
            tc_yaml_report_at(y, st->loc, sp,
                              "manual inheritance needs 'model', the student's shape");
        break;
    case TC_EXP_INHERIT_AUTO: check_auto(c, i, sp, p, has_model, parent_known); break;
    }
}

/* batch, steps, schedule */
static void check_steps(tc_exp_ctx *c, int i, const char *sp) {
    tc_experiment *e = c->exp;
    tc_yaml *y = &c->y;
    tc_exp_stage *st = &e->stages[i];
    char p[256];
    if (st->batch == 0) st->batch = e->train.batch;
    if (st->batch % st->accum_steps != 0)
        tc_yaml_report_at(y, st->loc, sp, "batch %d is not a multiple of accum_steps %d", st->batch,
                          st->accum_steps);
    if (st->epochs > 0) {
        if (e->train.num_samples <= 0)
            tc_yaml_report_at(y, st->loc, sp,
                              "'epochs' needs data.train.num_samples; give 'steps' instead");
        else {
            int64_t per_epoch = e->train.num_samples / st->batch;
            double steps = floor(st->epochs * (double)per_epoch);
            st->steps = steps > TC_EXP_MAX_STEPS ? -1 : (int64_t)steps;
            if (steps > TC_EXP_MAX_STEPS)
                tc_yaml_report_at(y, st->loc, sp,
                                  "%g epochs of %lld samples at batch %d is %.0f steps; at most "
                                  "%.0f",
                                  st->epochs, (long long)e->train.num_samples, st->batch, steps,
                                  TC_EXP_MAX_STEPS);
            else if (st->steps < 1)
                tc_yaml_report_at(y, st->loc, sp,
                                  "%g epochs of %lld samples at batch %d is less than one step",
                                  st->epochs, (long long)e->train.num_samples, st->batch);
        }
    }
    if (isnan(st->opt.lr)) st->opt.lr = st->kind == TC_EXP_STAGE_SCRATCH ? 5e-4f : 1e-4f;
    if (st->loss.learned_logit_scale < 0)
        st->loss.learned_logit_scale = st->kind == TC_EXP_STAGE_SCRATCH;
    if (isnan(st->loss.logit_scale)) st->loss.logit_scale = 50.0f;
    if (isnan(st->loss.teacher_logit_scale)) st->loss.teacher_logit_scale = e->teacher.logit_scale;
    int is_auto = st->kind == TC_EXP_STAGE_DISTILL && st->inherit.kind == TC_EXP_INHERIT_AUTO;
    if (st->sched.warmup < 0)
        st->sched.warmup =
            is_auto && st->inherit.autoc.prune_step > 0 ? st->inherit.autoc.prune_step : 2000;
    if (st->steps > 0) {
        if (st->sched.warmup > st->steps) {
            tc_yaml_join(p, sizeof p, sp, "schedule.warmup");
            tc_yaml_report_at(
                y, st->loc, p,
                "warm-up of %lld steps is longer than the stage (%lld steps); set schedule.warmup",
                (long long)st->sched.warmup, (long long)st->steps);
        }
        if (is_auto && st->inherit.autoc.prune_step > st->steps) {
            tc_yaml_join(p, sizeof p, sp, "inheritance.prune_step");
            tc_yaml_report_at(y, st->loc, p, "prune_step %lld is after the last step (%lld)",
                              (long long)st->inherit.autoc.prune_step, (long long)st->steps);
        }
    }
}

void tc_exp_check_document(tc_exp_ctx *c) {
    tc_experiment *e = c->exp;
    tc_yaml *y = &c->y;

    if (e->backend == TC_EXP_BACKEND_CPU && e->precision == TC_EXP_PREC_BF16) {
        /* at the precision key's value (or the --set that gave it) */
        struct fy_node *root = tc_yaml_root(y);
        struct fy_node *p =
            root ? tc_yaml_deref(fy_node_mapping_lookup_by_string(root, "precision", FY_NT)) : NULL;
        tc_yaml_report(y, p, "precision",
                       "the cpu backend computes in fp32; bf16 needs backend: cuda");
    }

    /* teacher stage reference */
    if (c->teacher_stage) {
        int t = tc_experiment_find_stage(e, c->teacher_stage);
        if (t < 0)
            tc_yaml_report_at(y, c->teacher_stage_loc, "teacher.stage", "no stage is named '%s'",
                              c->teacher_stage);
        else if (e->stages[t].kind == TC_EXP_STAGE_TEACHER_CACHE)
            tc_yaml_report_at(y, c->teacher_stage_loc, "teacher.stage",
                              "'%s' is a teacher_cache stage, not a model", c->teacher_stage);
        e->teacher.stage = t;
    }

    for (int i = 0; i < e->n_stages; i++) {
        char sp[64];
        snprintf(sp, sizeof sp, "stages.%d", i);
        if (!e->stages[i].name) continue; /* already reported */
        int has_model = check_references(c, i, sp);
        check_augmentations(c, i, sp);
        check_kind(c, i, sp, has_model);
        check_steps(c, i, sp);
    }
    tc_exp_check_goals(c);
}
