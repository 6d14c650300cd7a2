/* the experiment schema, top level and sections: name, seed, out, backend,
 * precision, threads, params, data (train, eval), teacher, distributed. each
 * mapping is a field table for yaml_table.h; the callbacks hold what a
 * table cannot say (which keys are required, defaults by source). data.train
 * lives in experiment_data.c, the stages in experiment_stages.c. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <libfyaml.h>

#include "experiment_internal.h"

_Static_assert(sizeof(tc_exp_backend) == sizeof(int), "enum fields are written as int");

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* a model config: a .json path, or a bare name looked up in the model folders */
char *tc_exp_resolve_cfg(tc_yaml *y, const char *p) {
    if (strchr(p, '/') || (strlen(p) > 5 && !strcmp(p + strlen(p) - 5, ".json")))
        return tc_yaml_resolve_path(y, p);
    char cand[2][1024];
    snprintf(cand[0], sizeof cand[0], "%s/../models/%s.json", y->base_dir ? y->base_dir : ".", p);
#ifdef TC_SOURCE_DIR
    snprintf(cand[1], sizeof cand[1], "%s/configs/models/%s.json", TC_SOURCE_DIR, p);
#else
    snprintf(cand[1], sizeof cand[1], "configs/models/%s.json", p);
#endif
    for (int i = 0; i < 2; i++)
        if (file_exists(cand[i])) return tc_yaml_strdup(cand[i]);
    /* not found: keep the source-tree name so the stage plan's message names it */
    return tc_yaml_strdup(cand[1]);
}

static const char *const backend_names[] = {"cpu", "cuda", NULL};
static const char *const precision_names[] = {"fp32", "bf16", NULL};
const char *const tc_exp_source_names[] = {"fmnist", "wds", "csv", NULL};
static const char *const zs_names[] = {"none", "fmnist", "folder", NULL};
/* ---- data (data.train: experiment_data.c) ---- */

static void templates_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    tc_exp_zeroshot *z = obj;
    char buf[1024];
    const char *t = tc_yaml_scalar_text(v, buf, sizeof buf);
    if (!t || tc_yaml_is_null(v)) {
        tc_yaml_report(y, v, path, "expected openai, simple, fmnist or a template file path");
        return;
    }
    if (!strcmp(t, "openai"))
        z->templates = TC_EXP_TEMPLATES_OPENAI;
    else if (!strcmp(t, "simple"))
        z->templates = TC_EXP_TEMPLATES_SIMPLE;
    else if (!strcmp(t, "fmnist"))
        z->templates = TC_EXP_TEMPLATES_FMNIST;
    else {
        char *s = tc_yaml_substitute(y, v, path, t);
        if (!s) return;
        free(z->templates_path);
        z->templates_path = tc_yaml_resolve_path(y, s);
        free(s);
        z->templates = TC_EXP_TEMPLATES_FILE;
    }
}

static const tc_yaml_field zs_fields[] = {
    {.key = "dataset",
     .type = TC_YAML_ENUM,
     .off = offsetof(tc_exp_zeroshot, dataset),
     .enums = zs_names},
    {.key = "path", .type = TC_YAML_PATH, .off = offsetof(tc_exp_zeroshot, path)},
    {.key = "classnames", .type = TC_YAML_PATH, .off = offsetof(tc_exp_zeroshot, classnames)},
    {.key = "templates", .type = TC_YAML_CUSTOM, .fn = templates_fn},
    {.key = "max_images",
     .type = TC_YAML_I64,
     .off = offsetof(tc_exp_zeroshot, max_images),
     .hi = TC_EXP_MAX_SAMPLES},
    {.key = "subset",
     .type = TC_YAML_I64,
     .off = offsetof(tc_exp_zeroshot, subset),
     .hi = TC_EXP_MAX_SAMPLES},
    {.key = "batch",
     .type = TC_YAML_INT,
     .off = offsetof(tc_exp_zeroshot, batch),
     .lo = 1,
     .hi = 1 << 20},
};

static const tc_yaml_field ret_fields[] = {
    {.key = "source",
     .type = TC_YAML_ENUM,
     .off = offsetof(tc_exp_retrieval, source),
     .enums = tc_exp_source_names},
    {.key = "path",
     .type = TC_YAML_PATH,
     .off = offsetof(tc_exp_retrieval, path),
     .resolve = tc_exp_resolve_spec},
    {.key = "num_samples",
     .type = TC_YAML_I64,
     .off = offsetof(tc_exp_retrieval, num_samples),
     .hi = TC_EXP_MAX_SAMPLES},
    {.key = "batch",
     .type = TC_YAML_INT,
     .off = offsetof(tc_exp_retrieval, batch),
     .lo = 1,
     .hi = 1 << 20},
};

static void zero_shot_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    tc_exp_zeroshot *z = &((tc_experiment *)obj)->zero_shot;
    if (tc_yaml_is_null(v)) {
        z->dataset = TC_EXP_ZS_NONE;
        return;
    }
    uint64_t seen = tc_yaml_parse_map(y, v, path, zs_fields, TC_YAML_NF(zs_fields), z);
    if (!tc_yaml_seen(zs_fields, TC_YAML_NF(zs_fields), seen, "dataset")) {
        if (v && fy_node_is_mapping(v))
            tc_yaml_report(y, v, path, "missing key 'dataset' (fmnist or folder)");
        return;
    }
    char p[256];
    if (z->dataset == TC_EXP_ZS_FOLDER) {
        tc_yaml_join(p, sizeof p, path, "path");
        if (!z->path) tc_yaml_report(y, v, p, "an image-folder evaluation needs a path");
        tc_yaml_join(p, sizeof p, path, "classnames");
        if (!z->classnames)
            tc_yaml_report(y, v, p, "an image-folder evaluation needs a class-name file");
    }
    if (z->dataset == TC_EXP_ZS_FMNIST &&
        !tc_yaml_seen(zs_fields, TC_YAML_NF(zs_fields), seen, "templates"))
        z->templates = TC_EXP_TEMPLATES_FMNIST;
}

static void retrieval_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    tc_exp_retrieval *r = &((tc_experiment *)obj)->retrieval;
    if (tc_yaml_is_null(v)) return;
    uint64_t seen = tc_yaml_parse_map(y, v, path, ret_fields, TC_YAML_NF(ret_fields), r);
    if (!v || !fy_node_is_mapping(v)) return;
    r->enabled = 1;
    char p[256];
    if (!tc_yaml_seen(ret_fields, TC_YAML_NF(ret_fields), seen, "source"))
        tc_yaml_report(y, v, path, "missing key 'source' (wds or csv)");
    else if (r->source == TC_EXP_DATA_FMNIST) {
        tc_yaml_join(p, sizeof p, path, "source");
        tc_yaml_report(y, v, p, "retrieval needs captioned images: wds or csv");
    }
    tc_yaml_join(p, sizeof p, path, "path");
    if (!r->path) tc_yaml_report(y, v, p, "missing key 'path'");
}

static const tc_yaml_field eval_fields[] = {
    {.key = "zero_shot", .type = TC_YAML_CUSTOM, .fn = zero_shot_fn},
    {.key = "retrieval", .type = TC_YAML_CUSTOM, .fn = retrieval_fn},
};

static void eval_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    if (tc_yaml_is_null(v)) return;
    tc_yaml_parse_map(y, v, path, eval_fields, TC_YAML_NF(eval_fields), obj);
}

static const tc_yaml_field data_fields[] = {
    {.key = "train", .type = TC_YAML_CUSTOM, .fn = tc_exp_train_fn},
    {.key = "eval", .type = TC_YAML_CUSTOM, .fn = eval_fn},
};

static void data_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    uint64_t seen = tc_yaml_parse_map(y, v, path, data_fields, TC_YAML_NF(data_fields), obj);
    if (v && fy_node_is_mapping(v) &&
        !tc_yaml_seen(data_fields, TC_YAML_NF(data_fields), seen, "train"))
        tc_yaml_report(y, v, path, "missing key 'train'");
}

/* ---- teacher ---- */

static void teacher_stage_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    tc_exp_ctx *c = tc_exp_ctx_of(y);
    char buf[256];
    const char *s = tc_yaml_scalar_text(v, buf, sizeof buf);
    if (!s || tc_yaml_is_null(v)) {
        tc_yaml_report(y, v, path, "expected a stage name");
        return;
    }
    free(c->teacher_stage);
    c->teacher_stage = tc_yaml_strdup(s);
    c->teacher_stage_loc = tc_yaml_node_loc(y, v);
}

static void teacher_ckpt_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    static const tc_yaml_field f = {
        .key = "checkpoint", .type = TC_YAML_PATH, .off = offsetof(tc_exp_external, checkpoint)};
    tc_yaml_set_field(y, &f, v, path, &((tc_exp_teacher *)obj)->ext);
    ((tc_exp_teacher *)obj)->ext.checkpoint_loc = tc_yaml_node_loc(y, v);
}

static void teacher_model_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    tc_exp_teacher *t = obj;
    static const tc_yaml_field f = {.key = "model",
                                    .type = TC_YAML_PATH,
                                    .off = offsetof(tc_exp_external, model),
                                    .resolve = tc_exp_resolve_cfg};
    tc_yaml_set_field(y, &f, v, path, &t->ext);
    t->ext.model_loc = tc_yaml_node_loc(y, v);
}

static const tc_yaml_field teacher_fields[] = {
    {.key = "stage", .type = TC_YAML_CUSTOM, .fn = teacher_stage_fn},
    {.key = "checkpoint", .type = TC_YAML_CUSTOM, .fn = teacher_ckpt_fn},
    {.key = "model", .type = TC_YAML_CUSTOM, .fn = teacher_model_fn},
    {.key = "logit_scale",
     .type = TC_YAML_F32,
     .off = offsetof(tc_exp_teacher, logit_scale),
     .hi = 100,
     .excl_lo = 1},
};

static void teacher_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    tc_exp_ctx *c = tc_exp_ctx_of(y);
    tc_exp_teacher *t = &((tc_experiment *)obj)->teacher;
    if (tc_yaml_is_null(v)) return;
    c->teacher_loc = tc_yaml_node_loc(y, v);
    uint64_t seen = tc_yaml_parse_map(y, v, path, teacher_fields, TC_YAML_NF(teacher_fields), t);
    if (!v || !fy_node_is_mapping(v)) return;
    t->present = 1;
    int has_stage = tc_yaml_seen(teacher_fields, TC_YAML_NF(teacher_fields), seen, "stage");
    int has_ckpt = tc_yaml_seen(teacher_fields, TC_YAML_NF(teacher_fields), seen, "checkpoint");
    int has_model = tc_yaml_seen(teacher_fields, TC_YAML_NF(teacher_fields), seen, "model");
    if (has_stage && (has_ckpt || has_model))
        tc_yaml_report(
            y, v, path,
            "give either 'stage' (a stage of this run) or 'checkpoint' + 'model', not both");
    else if (!has_stage && !has_ckpt)
        tc_yaml_report(y, v, path,
                       "missing 'stage' (a stage of this run) or 'checkpoint' + 'model'");
    else if (has_ckpt && !has_model)
        tc_yaml_report(y, v, path,
                       "missing 'model': the teacher's architecture (model config) must be given "
                       "with its checkpoint");
}

/* ---- the top level ---- */

static void params_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    /* read first, by tc_experiment_parse, so that ${NAME} works everywhere */
}

static void name_top_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    static const tc_yaml_field f = {
        .key = "name", .type = TC_YAML_STR, .off = offsetof(tc_experiment, name)};
    tc_yaml_set_field(y, &f, v, path, obj);
}

static void out_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    /* relative to the working directory, as open_clip's --logs */
    static const tc_yaml_field f = {
        .key = "out", .type = TC_YAML_STR, .off = offsetof(tc_experiment, out_dir)};
    tc_yaml_set_field(y, &f, v, path, obj);
}

static const tc_yaml_field distributed_fields[] = {
    {.key = "zero1", .type = TC_YAML_BOOL, .off = offsetof(tc_experiment, zero1)},
    {.key = "bucket_mb",
     .type = TC_YAML_F64,
     .off = offsetof(tc_experiment, bucket_mb),
     .lo = 0.001,
     .hi = 1024},
};

static void distributed_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    if (tc_yaml_is_null(v)) return;
    tc_yaml_parse_map(y, v, path, distributed_fields, TC_YAML_NF(distributed_fields), obj);
}

static const tc_yaml_field top_fields[] = {
    {.key = "name", .type = TC_YAML_CUSTOM, .fn = name_top_fn},
    {.key = "seed", .type = TC_YAML_I64, .off = offsetof(tc_experiment, seed), .hi = 4294967295.0},
    {.key = "out", .type = TC_YAML_CUSTOM, .fn = out_fn},
    {.key = "backend",
     .type = TC_YAML_ENUM,
     .off = offsetof(tc_experiment, backend),
     .enums = backend_names},
    {.key = "precision",
     .type = TC_YAML_ENUM,
     .off = offsetof(tc_experiment, precision),
     .enums = precision_names},
    {.key = "threads", .type = TC_YAML_INT, .off = offsetof(tc_experiment, threads), .hi = 4096},
    {.key = "params", .type = TC_YAML_CUSTOM, .fn = params_fn},
    {.key = "data", .type = TC_YAML_CUSTOM, .fn = data_fn},
    {.key = "teacher", .type = TC_YAML_CUSTOM, .fn = teacher_fn},
    {.key = "distributed", .type = TC_YAML_CUSTOM, .fn = distributed_fn},
    {.key = "stages", .type = TC_YAML_CUSTOM, .fn = tc_exp_stages_fn},
    {.key = "goals", .type = TC_YAML_CUSTOM, .fn = tc_exp_goals_fn},
};

const tc_yaml_field *const tc_exp_top_fields = top_fields;
const int tc_exp_n_top_fields = TC_YAML_NF(top_fields);

const char *tc_exp_data_source_name(tc_exp_data_source s) {
    return (unsigned)s < 3 ? tc_exp_source_names[s] : "?";
}
