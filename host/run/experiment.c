/* experiment files: YAML (libfyaml) -> validated tc_experiment.
 * the schema is written out in experiment.h and docs/experiments.md.
 *
 * the parser is table driven (yaml_table.h): each mapping of the schema is
 * a list of fields (key, type, offset, range) in experiment_schema.c and
 * experiment_stages.c; a pass over the mapping reports unknown keys, wrong
 * types and out-of-range values, each at the node's line:column. defaults
 * that depend on other fields (lr by stage kind, warm-up by inheritance,
 * start sparsity from the parent) and the checks that span the document
 * (parents, teacher reference) run afterwards (experiment_check.c). this
 * file holds the entry points: reading, overrides, the passes in order. */
#include <libfyaml.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiment_internal.h"

#define MAX_FILE_BYTES (1u << 20)

static void set_defaults(tc_experiment *e) {
    e->seed = 0;
    e->backend = TC_EXP_BACKEND_CPU;
    e->precision = TC_EXP_PREC_FP32;
    e->threads = 0;
    e->bucket_mb = 25.0;
    e->train.source = TC_EXP_DATA_FMNIST;
    e->train.workers = 4;
    e->train.batch = 1024;
    e->train.csv_separator = '\t';
    e->train.shuffle_buffer = 1000;
    e->train.pipe_retries = 3;
    e->train.pipe_backoff = 1.0;
    e->train.pipe_timeout = 300.0;
    e->zero_shot.dataset = TC_EXP_ZS_NONE;
    e->zero_shot.templates = TC_EXP_TEMPLATES_OPENAI;
    e->zero_shot.batch = 256;
    e->retrieval.batch = 256;
    e->retrieval.source = TC_EXP_DATA_WDS;
    e->teacher.stage = -1;
    e->teacher.logit_scale = 50.0f;
}

static char *stem_of(const char *source) {
    const char *b = strrchr(source, '/');
    b = b ? b + 1 : source;
    size_t n = strlen(b);
    const char *dot = strrchr(b, '.');
    if (dot && dot != b) n = (size_t)(dot - b);
    char *s = malloc(n + 1);
    if (!s) return NULL;
    memcpy(s, b, n);
    s[n] = 0;
    return s;
}

/* --set overrides edit the tree; the nodes they make are named by them */
static void apply_overrides(tc_exp_ctx *c, const char *const *overrides, int n_overrides) {
    for (int i = 0; i < n_overrides; i++) {
        struct fy_node *t[64];
        char why[400];
        int n = tc_exp_apply_set(c->y.fyd, overrides[i], t, 64, why, sizeof why);
        if (n < 0) {
            tc_exp_loc l = {0, 0, i + 1};
            char kp[160];
            const char *eq = strchr(overrides[i], '=');
            snprintf(kp, sizeof kp, "%.*s", eq ? (int)(eq - overrides[i]) : 0, overrides[i]);
            tc_yaml_report_at(&c->y, l, kp, "%s", why);
            continue;
        }
        for (int j = 0; j < n; j++)
            tc_yaml_touch(&c->y, t[j], i);
    }
}

/* the passes over a loaded document: overrides, params, the tables, the
 * defaults that need the file's values, the checks across the document */
static void parse_document(tc_exp_ctx *c, const char *const *overrides, int n_overrides) {
    tc_yaml *y = &c->y;
    tc_experiment *e = c->exp;
    tc_exp_loc top = {1, 1, 0};
    struct fy_node *root = tc_yaml_root(y);
    if (!root || tc_yaml_is_null(root)) {
        tc_yaml_report_at(y, top, "", "the file is empty; an experiment needs at least 'stages'");
        return;
    }
    if (!fy_node_is_mapping(root)) {
        tc_yaml_report(y, root, "",
                       "the top level must be a mapping of keys (name, data, teacher, stages, "
                       "...), got %s",
                       tc_yaml_node_kind(root));
        return;
    }
    apply_overrides(c, overrides, n_overrides);
    if (y->errs->count) return;
    root = tc_yaml_root(y);

    tc_yaml_read_params(y, root);
    uint64_t seen = tc_yaml_parse_map(y, root, "", tc_exp_top_fields, tc_exp_n_top_fields, e);
    if (!tc_yaml_seen(tc_exp_top_fields, tc_exp_n_top_fields, seen, "stages"))
        tc_yaml_report_at(y, top, "stages", "missing key 'stages'");
    if (!tc_yaml_seen(tc_exp_top_fields, tc_exp_n_top_fields, seen, "data"))
        tc_yaml_report_at(y, top, "data", "missing key 'data'");
    if (!tc_yaml_seen(tc_exp_top_fields, tc_exp_n_top_fields, seen, "precision"))
        e->precision = e->backend == TC_EXP_BACKEND_CUDA ? TC_EXP_PREC_BF16 : TC_EXP_PREC_FP32;
    if (!e->name) e->name = stem_of(y->source);
    if (!e->out_dir && e->name) {
        size_t n = strlen(e->name) + 6;
        e->out_dir = malloc(n);
        if (e->out_dir) snprintf(e->out_dir, n, "runs/%s", e->name);
    }
    if (!e->train.csv_img_key) e->train.csv_img_key = tc_yaml_strdup("filepath");
    if (!e->train.csv_caption_key) e->train.csv_caption_key = tc_yaml_strdup("title");
    /* cross-references are checked even after other errors, so one run shows them all */
    tc_exp_check_document(c);
}

static void ctx_free(tc_exp_ctx *c) {
    tc_experiment *e = c->exp;
    tc_yaml_free(&c->y);
    if (c->parent_name)
        for (int i = 0; i < e->n_stages; i++)
            free(c->parent_name[i]);
    free(c->parent_name);
    if (c->model_stage_name)
        for (int i = 0; i < e->n_stages; i++)
            free(c->model_stage_name[i]);
    free(c->model_stage_name);
    if (c->cache_stage_name)
        for (int i = 0; i < e->n_stages; i++)
            free(c->cache_stage_name[i]);
    free(c->cache_stage_name);
    free(c->parent_loc);
    free(c->name_loc);
    free(c->teacher_stage);
}

tc_status tc_experiment_parse(const char *yaml, size_t len, const char *source,
                              const char *base_dir, const char *const *overrides, int n_overrides,
                              tc_experiment **out, tc_exp_errors *errors) {
    tc_exp_errors local;
    tc_exp_ctx c;
    memset(&c, 0, sizeof c);
    if (!errors) errors = &local;
    memset(errors, 0, sizeof *errors);
    *out = NULL;
    source = source ? source : "<experiment>";
    base_dir = base_dir ? base_dir : ".";
    tc_exp_loc top = {1, 1, 0};

    tc_experiment *e = calloc(1, sizeof *e);
    if (!e) return tc_fail(TC_ERR_OOM, "%s: out of memory", source);
    set_defaults(e);
    e->source = tc_yaml_strdup(source);
    e->base_dir = tc_yaml_strdup(base_dir);
    c.exp = e;
    if (tc_yaml_init(&c.y, source, base_dir, overrides, errors) != TC_OK) {
        tc_experiment_free(e);
        return TC_ERR_OOM;
    }

    if (len > MAX_FILE_BYTES)
        tc_yaml_report_at(&c.y, top, "", "the file is %zu bytes; an experiment file is at most %u",
                          len, MAX_FILE_BYTES);
    else if (tc_yaml_load(&c.y, yaml, len))
        parse_document(&c, overrides, n_overrides);
    if (errors->count == 0) e->resolved_yaml = fy_emit_document_to_string(c.y.fyd, FYECF_DEFAULT);
    ctx_free(&c);
    if (errors->count != 0) {
        tc_experiment_free(e);
        return tc_yaml_fail(errors);
    }
    *out = e;
    return TC_OK;
}

tc_status tc_experiment_load(const char *path, const char *const *overrides, int n_overrides,
                             tc_experiment **out) {
    return tc_experiment_load_diag(path, overrides, n_overrides, out, NULL);
}

tc_status tc_experiment_load_diag(const char *path, const char *const *overrides, int n_overrides,
                                  tc_experiment **out, tc_exp_errors *errors) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return tc_fail(TC_ERR_IO, "%s: cannot open the experiment file", path);
    char *buf = malloc(MAX_FILE_BYTES + 1);
    if (!buf) {
        fclose(f);
        return tc_fail(TC_ERR_OOM, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, MAX_FILE_BYTES + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return tc_fail(TC_ERR_IO, "%s: read error", path);
    }
    /* base dir: the file's folder */
    char dir[1024];
    const char *slash = strrchr(path, '/');
    if (slash) {
        size_t dl = (size_t)(slash - path);
        if (dl == 0) dl = 1;
        if (dl >= sizeof dir) dl = sizeof dir - 1;
        memcpy(dir, path, dl);
        dir[dl] = 0;
    } else {
        strcpy(dir, ".");
    }
    tc_status s = tc_experiment_parse(buf, n, path, dir, overrides, n_overrides, out, errors);
    free(buf);
    return s;
}

static void free_ext(tc_exp_external *x) {
    free(x->checkpoint);
    free(x->model);
}

void tc_experiment_free(tc_experiment *e) {
    if (!e) return;
    free(e->source);
    free(e->base_dir);
    free(e->name);
    free(e->out_dir);
    free(e->train.path);
    free(e->train.csv_img_key);
    free(e->train.csv_caption_key);
    free(e->train.upsampling);
    free(e->zero_shot.path);
    free(e->zero_shot.classnames);
    free(e->zero_shot.templates_path);
    free(e->retrieval.path);
    free_ext(&e->teacher.ext);
    for (int i = 0; i < e->n_stages; i++) {
        free(e->stages[i].name);
        free(e->stages[i].model);
        free(e->stages[i].cache_path);
        free(e->stages[i].cache_dir);
        free_ext(&e->stages[i].parent_ext);
    }
    free(e->stages);
    tc_exp_goals_free(e);
    free(e->resolved_yaml);
    free(e);
}

void tc_exp_cache_dir(const tc_experiment *e, int i, char *buf, size_t cap) {
    const tc_exp_stage *st = &e->stages[i];
    if (st->kind == TC_EXP_STAGE_DISTILL && st->cache_dir) {
        snprintf(buf, cap, "%s", st->cache_dir);
        return;
    }
    if (st->kind == TC_EXP_STAGE_DISTILL && st->cache_stage >= 0) st = &e->stages[st->cache_stage];
    if (st->kind != TC_EXP_STAGE_TEACHER_CACHE)
        snprintf(buf, cap, "%s", "");
    else if (st->cache_path)
        snprintf(buf, cap, "%s", st->cache_path);
    else
        snprintf(buf, cap, "%s/%s", e->out_dir, st->name);
}

int tc_experiment_find_stage(const tc_experiment *e, const char *name) {
    if (!e || !name) return -1;
    for (int i = 0; i < e->n_stages; i++)
        if (e->stages[i].name && !strcmp(e->stages[i].name, name)) return i;
    return -1;
}

double tc_exp_stage_lr(const tc_exp_stage *st, int64_t step) {
    double base = st->opt.lr;
    int64_t total = st->steps;
    int is_auto = st->kind == TC_EXP_STAGE_DISTILL && st->inherit.kind == TC_EXP_INHERIT_AUTO;
    if (is_auto && step >= st->inherit.autoc.prune_step) {
        /* cosine_lr_start_nowarmup after pruning */
        int64_t e = step - st->inherit.autoc.prune_step, es = total - st->inherit.autoc.prune_step;
        if (st->sched.kind == TC_EXP_SCHED_CONST) return base;
        if (es <= 0) return 0.0;
        return 0.5 * (1.0 + cos(M_PI * (double)e / (double)es)) * base;
    }
    int64_t warmup = st->sched.warmup;
    if (step < warmup) return base * (double)(step + 1) / (double)warmup;
    if (st->sched.kind == TC_EXP_SCHED_CONST) return base;
    int64_t e = step - warmup, es = total - warmup;
    if (es <= 0) return 0.0;
    return 0.5 * (1.0 + cos(M_PI * (double)e / (double)es)) * base;
}
