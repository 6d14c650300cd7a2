/* the experiment schema, stages: name, kind, parent, model, inheritance
 * (manual towers, automatic masks), loss, batch, steps, optimizer, schedule,
 * intervals. names of other stages (parent, model: {stage: NAME}) are kept
 * as text here and resolved by tc_exp_check_document once every stage is
 * read. */
#include <ctype.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libfyaml.h>

#include "experiment_internal.h"

static const char *const stage_kind_names[] = {"train_scratch_clip", "distill", NULL};
static const char *const sched_names[] = {"cosine", "const", NULL};

/* ---- parent and model ---- */

static const tc_yaml_field ext_fields[] = {
    {.key = "checkpoint", .type = TC_YAML_PATH, .off = offsetof(tc_exp_external, checkpoint)},
    {.key = "model",
     .type = TC_YAML_PATH,
     .off = offsetof(tc_exp_external, model),
     .resolve = tc_exp_resolve_cfg},
};

static void parent_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    tc_exp_ctx *c = tc_exp_ctx_of(y);
    tc_exp_stage *st = obj;
    int i = c->cur_stage;
    if (tc_yaml_is_null(v)) return;
    if (v && fy_node_is_mapping(v)) {
        uint64_t seen =
            tc_yaml_parse_map(y, v, path, ext_fields, TC_YAML_NF(ext_fields), &st->parent_ext);
        if (!tc_yaml_seen(ext_fields, TC_YAML_NF(ext_fields), seen, "checkpoint"))
            tc_yaml_report(y, v, path, "missing key 'checkpoint'");
        if (!tc_yaml_seen(ext_fields, TC_YAML_NF(ext_fields), seen, "model"))
            tc_yaml_report(y, v, path, "missing key 'model': the architecture of the checkpoint");
        struct fy_node *m = tc_yaml_deref(fy_node_mapping_lookup_by_string(v, "model", FY_NT));
        st->parent_ext.model_loc = tc_yaml_node_loc(y, m ? m : v);
        struct fy_node *ck =
            tc_yaml_deref(fy_node_mapping_lookup_by_string(v, "checkpoint", FY_NT));
        st->parent_ext.checkpoint_loc = tc_yaml_node_loc(y, ck ? ck : v);
        return;
    }
    char buf[256];
    const char *s = tc_yaml_scalar_text(v, buf, sizeof buf);
    if (!s) {
        tc_yaml_report(y, v, path,
                       "expected a stage name or {checkpoint: PATH, model: CONFIG}, got %s",
                       tc_yaml_node_kind(v));
        return;
    }
    free(c->parent_name[i]);
    c->parent_name[i] = tc_yaml_strdup(s);
    c->parent_loc[i] = tc_yaml_node_loc(y, v);
}

static void model_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    tc_exp_ctx *c = tc_exp_ctx_of(y);
    tc_exp_stage *st = obj;
    if (v && fy_node_is_mapping(v)) {
        struct fy_node *sn = tc_yaml_deref(fy_node_mapping_lookup_by_string(v, "stage", FY_NT));
        char buf[256];
        const char *s = tc_yaml_scalar_text(sn, buf, sizeof buf);
        if (!s || tc_yaml_is_null(sn) || fy_node_mapping_item_count(v) != 1) {
            tc_yaml_report(y, v, path, "expected a model config or {stage: NAME}");
            return;
        }
        free(c->model_stage_name[c->cur_stage]);
        c->model_stage_name[c->cur_stage] = tc_yaml_strdup(s);
        st->model_loc = tc_yaml_node_loc(y, sn);
        return;
    }
    static const tc_yaml_field f = {.key = "model",
                                    .type = TC_YAML_PATH,
                                    .off = offsetof(tc_exp_stage, model),
                                    .resolve = tc_exp_resolve_cfg};
    tc_yaml_set_field(y, &f, v, path, st);
    st->model_loc = tc_yaml_node_loc(y, v);
}

/* ---- inheritance ---- */

static void layers_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    tc_exp_manual_tower *t = obj;
    char buf[64];
    if (v && fy_node_is_sequence(v)) {
        int n = fy_node_sequence_item_count(v);
        if (n < 1 || n > TC_EXP_MAX_LAYER_LIST) {
            tc_yaml_report(y, v, path, "a layer list needs 1..%d entries, got %d",
                           TC_EXP_MAX_LAYER_LIST, n);
            return;
        }
        void *it = NULL;
        struct fy_node *item;
        int k = 0;
        while ((item = fy_node_sequence_iterate(v, &it)) && k < n) {
            item = tc_yaml_deref(item);
            const char *s = tc_yaml_scalar_text(item, buf, sizeof buf);
            int64_t x;
            if (!s || tc_yaml_parse_i64(s, &x) != 1 || x < 0 || x >= 4096) {
                tc_yaml_report(y, item, path, "expected a teacher layer index >= 0");
                return;
            }
            if (k > 0 && x <= t->layer_list[k - 1]) {
                tc_yaml_report(y, item, path, "layer indices must increase");
                return;
            }
            t->layer_list[k++] = (int)x;
        }
        t->layers = TC_EXP_LAYERS_LIST;
        t->n_layers = k;
        return;
    }
    const char *s = tc_yaml_scalar_text(v, buf, sizeof buf);
    if (s && !strcmp(s, "interval_front")) {
        t->layers = TC_EXP_LAYERS_INTERVAL_FRONT;
        return;
    }
    tc_yaml_report(y, v, path, "expected interval_front or a list of teacher layer indices");
}

static void width_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    char buf[64];
    const char *s = tc_yaml_scalar_text(v, buf, sizeof buf);
    if (!s || strcmp(s, "leading"))
        tc_yaml_report(y, v, path,
                       "expected leading (the first channels, heads and MLP units are kept)");
}

static const tc_yaml_field tower_fields[] = {
    {.key = "layers", .type = TC_YAML_CUSTOM, .fn = layers_fn},
    {.key = "width", .type = TC_YAML_CUSTOM, .fn = width_fn},
};

static void manual_tower(tc_yaml *y, struct fy_node *v, const char *path, tc_exp_manual_tower *t) {
    char buf[32];
    const char *s = tc_yaml_scalar_text(v, buf, sizeof buf);
    if (s && (!strcmp(s, "none") || tc_yaml_is_null(v))) {
        t->inherit = 0;
        return;
    }
    tc_yaml_parse_map(y, v, path, tower_fields, TC_YAML_NF(tower_fields), t);
}

static void vision_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    manual_tower(y, v, path, &((tc_exp_inheritance *)obj)->vision);
}
static void text_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    manual_tower(y, v, path, &((tc_exp_inheritance *)obj)->text);
}
static void ignore_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {}

static const tc_yaml_field manual_fields[] = {
    {.key = "kind", .type = TC_YAML_CUSTOM, .fn = ignore_fn},
    {.key = "vision", .type = TC_YAML_CUSTOM, .fn = vision_fn},
    {.key = "text", .type = TC_YAML_CUSTOM, .fn = text_fn},
};

#define AOFF(f) (offsetof(tc_exp_inheritance, autoc) + offsetof(tc_exp_auto, f))
static void round_to_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    char buf[32];
    const char *s = tc_yaml_scalar_text(v, buf, sizeof buf);
    int64_t x;
    if (!s || tc_yaml_parse_i64(s, &x) != 1 || (x != 0 && x != 8 && x != 64)) {
        tc_yaml_report(y, v, path, "expected 0 (no rounding), 8 or 64");
        return;
    }
    ((tc_exp_inheritance *)obj)->autoc.round_to = (int)x;
}

static void shape_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    char buf[32];
    const char *s = tc_yaml_scalar_text(v, buf, sizeof buf);
    if (!s || (strcmp(s, "irregular") && strcmp(s, "regular"))) {
        tc_yaml_report(y, v, path,
                       "expected irregular (per-layer heads and MLP widths, the original) or "
                       "regular (a plain open_clip ViT)");
        return;
    }
    ((tc_exp_inheritance *)obj)->autoc.regular = !strcmp(s, "regular");
}

static const tc_yaml_field auto_fields[] = {
    {.key = "kind", .type = TC_YAML_CUSTOM, .fn = ignore_fn},
    {.key = "start_sparsity", .type = TC_YAML_F32, .off = AOFF(start_sparsity), .hi = 0.999},
    {.key = "target_sparsity",
     .type = TC_YAML_F32,
     .off = AOFF(target_sparsity),
     .hi = 0.999,
     .excl_lo = 1},
    {.key = "sparsity_warmup",
     .type = TC_YAML_I64,
     .off = AOFF(sparsity_warmup),
     .hi = TC_EXP_MAX_STEPS},
    {.key = "prune_step",
     .type = TC_YAML_I64,
     .off = AOFF(prune_step),
     .lo = 1,
     .hi = TC_EXP_MAX_STEPS},
    {.key = "lambda_init", .type = TC_YAML_F32, .off = AOFF(lambda_init), .lo = -1e6, .hi = 1e6},
    {.key = "mask_lr", .type = TC_YAML_F32, .off = AOFF(mask_lr), .hi = 100, .excl_lo = 1},
    {.key = "lambda_lr", .type = TC_YAML_F32, .off = AOFF(lambda_lr), .lo = -100, .hi = 100},
    {.key = "round_to", .type = TC_YAML_CUSTOM, .fn = round_to_fn},
    {.key = "shape", .type = TC_YAML_CUSTOM, .fn = shape_fn},
    {.key = "vision", .type = TC_YAML_BOOL, .off = AOFF(vision)},
    {.key = "text", .type = TC_YAML_BOOL, .off = AOFF(text)},
};

static void inheritance_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    tc_exp_inheritance *inh = &((tc_exp_stage *)obj)->inherit;
    char buf[64];
    if (tc_yaml_is_null(v)) return;
    const char *s = tc_yaml_scalar_text(v, buf, sizeof buf);
    if (s) {
        if (!strcmp(s, "none"))
            inh->kind = TC_EXP_INHERIT_NONE;
        else
            tc_yaml_report(y, v, path,
                           "expected none or a mapping with kind: manual or kind: auto, got '%s'",
                           s);
        return;
    }
    if (!v || !fy_node_is_mapping(v)) {
        tc_yaml_report(y, v, path,
                       "expected none or a mapping with kind: manual or kind: auto, got %s",
                       tc_yaml_node_kind(v));
        return;
    }
    struct fy_node *k = tc_yaml_deref(fy_node_mapping_lookup_by_string(v, "kind", FY_NT));
    const char *kind = tc_yaml_scalar_text(k, buf, sizeof buf);
    char kp[256];
    tc_yaml_join(kp, sizeof kp, path, "kind");
    if (!kind) {
        tc_yaml_report(y, v, path, "missing key 'kind' (none, manual or auto)");
        return;
    }
    if (!strcmp(kind, "none")) {
        inh->kind = TC_EXP_INHERIT_NONE;
        if (fy_node_mapping_item_count(v) > 1)
            tc_yaml_report(y, v, path, "kind: none takes no other keys");
    } else if (!strcmp(kind, "manual")) {
        inh->kind = TC_EXP_INHERIT_MANUAL;
        tc_yaml_parse_map(y, v, path, manual_fields, TC_YAML_NF(manual_fields), inh);
        if (!inh->vision.inherit && !inh->text.inherit)
            tc_yaml_report(y, v, path,
                           "manual inheritance with both towers 'none' inherits nothing; use "
                           "inheritance: none");
    } else if (!strcmp(kind, "auto")) {
        inh->kind = TC_EXP_INHERIT_AUTO;
        uint64_t seen = tc_yaml_parse_map(y, v, path, auto_fields, TC_YAML_NF(auto_fields), inh);
        if (!tc_yaml_seen(auto_fields, TC_YAML_NF(auto_fields), seen, "target_sparsity"))
            tc_yaml_report(y, v, path,
                           "missing key 'target_sparsity' (fraction of prunable parameters to "
                           "remove, e.g. 0.5)");
        if (!tc_yaml_seen(auto_fields, TC_YAML_NF(auto_fields), seen, "prune_step"))
            tc_yaml_report(y, v, path,
                           "missing key 'prune_step' (mask-learning steps before pruning; "
                           "3000/5000/8000 in the original)");
        if (!inh->autoc.vision && !inh->autoc.text)
            tc_yaml_report(y, v, path,
                           "auto inheritance with vision: false and text: false masks nothing");
    } else {
        tc_yaml_report(y, k, kp, "'%s' is not one of: none, manual, auto", kind);
    }
}

/* ---- loss, optimizer, schedule ---- */

static void logit_scale_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    tc_exp_loss *l = obj;
    char buf[64];
    const char *s = tc_yaml_scalar_text(v, buf, sizeof buf);
    double d;
    if (s && !strcmp(s, "learned")) {
        l->learned_logit_scale = 1;
        return;
    }
    if (!s || tc_yaml_parse_f64(s, &d) != 1 || !(d > 0) || d > 100) {
        tc_yaml_report(y, v, path,
                       "expected learned or a fixed scale in (0, 100] (the original fixes 50)");
        return;
    }
    l->learned_logit_scale = 0;
    l->logit_scale = (float)d;
}

static const tc_yaml_field loss_fields[] = {
    {.key = "distill_weight",
     .type = TC_YAML_F32,
     .off = offsetof(tc_exp_loss, distill_weight),
     .hi = 1e6},
    {.key = "alpha", .type = TC_YAML_F32, .off = offsetof(tc_exp_loss, alpha), .hi = 1},
    {.key = "logit_scale", .type = TC_YAML_CUSTOM, .fn = logit_scale_fn},
    {.key = "teacher_logit_scale",
     .type = TC_YAML_F32,
     .off = offsetof(tc_exp_loss, teacher_logit_scale),
     .hi = 100,
     .excl_lo = 1},
};

static void loss_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    tc_yaml_parse_map(y, v, path, loss_fields, TC_YAML_NF(loss_fields),
                      &((tc_exp_stage *)obj)->loss);
}

static const tc_yaml_field opt_fields[] = {
    {.key = "lr",
     .type = TC_YAML_F32,
     .off = offsetof(tc_exp_optimizer, lr),
     .hi = 10,
     .excl_lo = 1},
    {.key = "wd", .type = TC_YAML_F32, .off = offsetof(tc_exp_optimizer, wd), .hi = 10},
    {.key = "beta1", .type = TC_YAML_F32, .off = offsetof(tc_exp_optimizer, beta1), .hi = 0.999999},
    {.key = "beta2", .type = TC_YAML_F32, .off = offsetof(tc_exp_optimizer, beta2), .hi = 0.999999},
    {.key = "eps",
     .type = TC_YAML_F32,
     .off = offsetof(tc_exp_optimizer, eps),
     .hi = 1,
     .excl_lo = 1},
    {.key = "grad_clip",
     .type = TC_YAML_F32,
     .off = offsetof(tc_exp_optimizer, grad_clip),
     .hi = 1e9},
};

static void opt_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    tc_yaml_parse_map(y, v, path, opt_fields, TC_YAML_NF(opt_fields), &((tc_exp_stage *)obj)->opt);
}

static const tc_yaml_field sched_fields[] = {
    {.key = "kind",
     .type = TC_YAML_ENUM,
     .off = offsetof(tc_exp_schedule, kind),
     .enums = sched_names},
    {.key = "warmup",
     .type = TC_YAML_I64,
     .off = offsetof(tc_exp_schedule, warmup),
     .hi = TC_EXP_MAX_STEPS},
};

static void sched_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    tc_yaml_parse_map(y, v, path, sched_fields, TC_YAML_NF(sched_fields),
                      &((tc_exp_stage *)obj)->sched);
}

/* ---- one stage, the list ---- */

static void name_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    tc_exp_ctx *c = tc_exp_ctx_of(y);
    tc_exp_stage *st = obj;
    char buf[256];
    const char *s = tc_yaml_scalar_text(v, buf, sizeof buf);
    if (!s || tc_yaml_is_null(v) || !s[0]) {
        tc_yaml_report(y, v, path, "expected a stage name");
        return;
    }
    if (strlen(s) > 64) {
        tc_yaml_report(y, v, path, "a stage name has at most 64 characters");
        return;
    }
    for (const char *p = s; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_' || *p == '-' || *p == '.')) {
            tc_yaml_report(y, v, path,
                           "'%s': a stage name is a folder name: letters, digits, '_', '-', '.'",
                           s);
            return;
        }
    /* the run folder's own entries */
    static const char *const reserved[] = {"plots",          "replaced",  "run.lock",
                                           "changes.log",    "report.md", "report.json",
                                           "experiment.yaml"};
    for (size_t k = 0; k < sizeof reserved / sizeof *reserved; k++)
        if (!strcmp(s, reserved[k])) {
            tc_yaml_report(y, v, path,
                           "'%s' is a name the run folder uses for itself; choose another", s);
            return;
        }
    if (!strcmp(s, ".") || !strcmp(s, "..") ||
        (s[0] >= '0' && s[0] <= '9' && strspn(s, "0123456789") == strlen(s))) {
        tc_yaml_report(
            y, v, path,
            "'%s' cannot be a stage name (all digits would be read as a list index by --set)", s);
        return;
    }
    free(st->name);
    st->name = tc_yaml_strdup(s);
    c->name_loc[c->cur_stage] = tc_yaml_node_loc(y, v);
}

static const tc_yaml_field stage_fields[] = {
    {.key = "name", .type = TC_YAML_CUSTOM, .fn = name_fn},
    {.key = "kind",
     .type = TC_YAML_ENUM,
     .off = offsetof(tc_exp_stage, kind),
     .enums = stage_kind_names},
    {.key = "parent", .type = TC_YAML_CUSTOM, .fn = parent_fn},
    {.key = "model", .type = TC_YAML_CUSTOM, .fn = model_fn},
    {.key = "inheritance", .type = TC_YAML_CUSTOM, .fn = inheritance_fn},
    {.key = "loss", .type = TC_YAML_CUSTOM, .fn = loss_fn},
    {.key = "batch",
     .type = TC_YAML_INT,
     .off = offsetof(tc_exp_stage, batch),
     .lo = 1,
     .hi = 1 << 20},
    {.key = "accum_steps",
     .type = TC_YAML_INT,
     .off = offsetof(tc_exp_stage, accum_steps),
     .lo = 1,
     .hi = 4096},
    {.key = "steps",
     .type = TC_YAML_I64,
     .off = offsetof(tc_exp_stage, steps),
     .lo = 1,
     .hi = TC_EXP_MAX_STEPS},
    {.key = "epochs",
     .type = TC_YAML_F64,
     .off = offsetof(tc_exp_stage, epochs),
     .hi = 1e6,
     .excl_lo = 1},
    {.key = "optimizer", .type = TC_YAML_CUSTOM, .fn = opt_fn},
    {.key = "schedule", .type = TC_YAML_CUSTOM, .fn = sched_fn},
    {.key = "eval_every",
     .type = TC_YAML_I64,
     .off = offsetof(tc_exp_stage, eval_every),
     .hi = TC_EXP_MAX_STEPS},
    {.key = "checkpoint_every",
     .type = TC_YAML_I64,
     .off = offsetof(tc_exp_stage, checkpoint_every),
     .hi = TC_EXP_MAX_STEPS},
    {.key = "log_every",
     .type = TC_YAML_I64,
     .off = offsetof(tc_exp_stage, log_every),
     .lo = 1,
     .hi = TC_EXP_MAX_STEPS},
    {.key = "keep_checkpoints",
     .type = TC_YAML_INT,
     .off = offsetof(tc_exp_stage, keep_checkpoints),
     .lo = 1,
     .hi = 1000},
    {.key = "max_nonfinite_skips",
     .type = TC_YAML_INT,
     .off = offsetof(tc_exp_stage, max_nonfinite_skips),
     .hi = 1 << 30},
};

static void stage_defaults(tc_exp_stage *st) {
    memset(st, 0, sizeof *st);
    st->parent = -1;
    st->model_stage = -1;
    st->kind = TC_EXP_STAGE_DISTILL;
    st->inherit.kind = TC_EXP_INHERIT_NONE;
    st->inherit.vision.inherit = st->inherit.text.inherit = 1;
    tc_exp_auto *a = &st->inherit.autoc;
    a->start_sparsity = NAN;
    a->target_sparsity = NAN;
    a->sparsity_warmup = 1000;
    a->prune_step = -1;
    a->lambda_init = 10.0f;
    a->mask_lr = 0.02f;
    a->lambda_lr = -0.02f;
    a->round_to = 0;
    a->vision = a->text = 1;
    st->loss.distill_weight = 1.0f;
    st->loss.alpha = 1.0f;
    st->loss.learned_logit_scale = -1; /* by kind */
    st->loss.logit_scale = NAN;
    st->loss.teacher_logit_scale = NAN;
    st->batch = 0;
    st->accum_steps = 1;
    st->steps = -1;
    st->epochs = 0;
    st->opt.lr = NAN;
    st->opt.wd = 0.2f;
    st->opt.beta1 = 0.9f;
    st->opt.beta2 = 0.98f;
    st->opt.eps = 1e-6f;
    st->opt.grad_clip = 5.0f;
    st->sched.kind = TC_EXP_SCHED_COSINE;
    st->sched.warmup = -1;
    st->eval_every = 1000;
    st->checkpoint_every = 1000;
    st->log_every = 100;
    st->keep_checkpoints = 2;
    st->max_nonfinite_skips = 100;
}

void tc_exp_stages_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    tc_exp_ctx *c = tc_exp_ctx_of(y);
    tc_experiment *e = obj;
    if (!v || !fy_node_is_sequence(v)) {
        tc_yaml_report(y, v, path, "expected a list of stages, got %s", tc_yaml_node_kind(v));
        return;
    }
    int n = fy_node_sequence_item_count(v);
    if (n < 1) {
        tc_yaml_report(y, v, path, "at least one stage is needed");
        return;
    }
    if (n > TC_EXP_MAX_STAGES) {
        tc_yaml_report(y, v, path, "at most %d stages, got %d", TC_EXP_MAX_STAGES, n);
        return;
    }
    if (e->stages) return; /* duplicate key cannot happen; be safe */
    e->stages = calloc((size_t)n, sizeof *e->stages);
    c->parent_name = calloc((size_t)n, sizeof *c->parent_name);
    c->parent_loc = calloc((size_t)n, sizeof *c->parent_loc);
    c->model_stage_name = calloc((size_t)n, sizeof *c->model_stage_name);
    c->name_loc = calloc((size_t)n, sizeof *c->name_loc);
    if (!e->stages || !c->parent_name || !c->parent_loc || !c->model_stage_name || !c->name_loc) {
        tc_yaml_report(y, v, path, "out of memory");
        return;
    }
    e->n_stages = n;
    void *it = NULL;
    struct fy_node *item;
    int i = 0;
    while ((item = fy_node_sequence_iterate(v, &it)) && i < n) {
        tc_exp_stage *st = &e->stages[i];
        stage_defaults(st);
        char sp[64];
        snprintf(sp, sizeof sp, "%s.%d", path, i);
        item = tc_yaml_deref(item);
        st->loc = tc_yaml_node_loc(y, item);
        c->cur_stage = i;
        uint64_t seen = tc_yaml_parse_map(y, item, sp, stage_fields, TC_YAML_NF(stage_fields), st);
        if (item && fy_node_is_mapping(item)) {
            if (!tc_yaml_seen(stage_fields, TC_YAML_NF(stage_fields), seen, "name"))
                tc_yaml_report(y, item, sp, "missing key 'name'");
            if (!tc_yaml_seen(stage_fields, TC_YAML_NF(stage_fields), seen, "kind"))
                tc_yaml_report(y, item, sp, "missing key 'kind' (train_scratch_clip or distill)");
            int has_steps = tc_yaml_seen(stage_fields, TC_YAML_NF(stage_fields), seen, "steps");
            int has_epochs = tc_yaml_seen(stage_fields, TC_YAML_NF(stage_fields), seen, "epochs");
            if (has_steps && has_epochs)
                tc_yaml_report(y, item, sp, "give either 'steps' or 'epochs', not both");
            else if (!has_steps && !has_epochs)
                tc_yaml_report(y, item, sp, "missing 'steps' (or 'epochs')");
        }
        i++;
    }
}
const char *tc_exp_stage_kind_name(tc_exp_stage_kind k) {
    return (unsigned)k < 2 ? stage_kind_names[k] : "?";
}

const char *tc_exp_inherit_kind_name(tc_exp_inherit_kind k) {
    static const char *const n[] = {"none", "manual", "auto"};
    return (unsigned)k < 3 ? n[k] : "?";
}
