/* inside the experiment parser (experiment.c, experiment_schema.c,
 * experiment_stages.c, experiment_check.c); not for other callers.
 *
 * the parse runs in three passes over one context: the table layer
 * (yaml_table.h) walks the document through the field tables of the schema
 * (top level, data, eval, teacher in experiment_schema.c; data.train in
 * experiment_data.c; stages in experiment_stages.c), names that refer to other stages are kept as
 * text, then tc_exp_check_document resolves them and fills the defaults that depend on other
 * fields. */
#ifndef TC_EXPERIMENT_INTERNAL_H
#define TC_EXPERIMENT_INTERNAL_H

#include "experiment.h"
#include "yaml_table.h"

/* upper bounds of the counts (every integer field has one, so that no value
 * reaches a cast or a product that overflows): steps and intervals fit the
 * trainer's int step counters; sample counts stay far below 2^53, where the
 * loader's cursor (kept in doubles across ranks) would lose exactness */
#define TC_EXP_MAX_STEPS 1e9
#define TC_EXP_MAX_SAMPLES 1e12

typedef struct {
    tc_yaml y; /* first: the table layer's callbacks get &y and cast it back */
    tc_experiment *exp;
    /* names resolved after all stages are read (one entry per stage) */
    char **parent_name;
    char **model_stage_name;
    char **cache_stage_name; /* teacher_cache: NAME */
    tc_exp_loc *parent_loc, *name_loc;
    char *teacher_stage;
    tc_exp_loc teacher_stage_loc;
    tc_exp_loc teacher_loc;
    int cur_stage; /* the stage whose fields are being read */
} tc_exp_ctx;

static inline tc_exp_ctx *tc_exp_ctx_of(tc_yaml *y) {
    return (tc_exp_ctx *)y;
}

/* the table of the top level (experiment_schema.c) */
extern const tc_yaml_field *const tc_exp_top_fields;
extern const int tc_exp_n_top_fields;

/* data.train (experiment_data.c); the source names, by tc_exp_data_source */
void tc_exp_train_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj);
/* a path key that may be a webdataset spec: each "::" part resolved against
 * the file's folder on its own; pipe: commands and URLs left as they are */
char *tc_exp_resolve_spec(tc_yaml *y, const char *spec);
extern const char *const tc_exp_source_names[];

/* stages: the list (experiment_stages.c) */
void tc_exp_stages_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj);

/* goals: the list, the stage names resolved, freed (experiment_goals.c) */
void tc_exp_goals_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj);
void tc_exp_check_goals(tc_exp_ctx *c);
void tc_exp_goals_free(tc_experiment *e);

/* a model config: a .json path, or a bare name looked up in the model folders */
char *tc_exp_resolve_cfg(tc_yaml *y, const char *p);

/* the checks that span the document and the defaults that depend on other
 * fields (experiment_check.c) */
void tc_exp_check_document(tc_exp_ctx *c);

#endif
