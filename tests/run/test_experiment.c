/* experiment files: the three shipped experiments parse, validate and plan;
 * defaults are the original's; bad files give errors at the right
 * line:column with the key path; --set overrides apply and fail clearly;
 * the stage plan counts parameters and estimates memory by its formula. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiment.h"
#include "stage_plan.h"
#include "testutil.h"

static const char *src_dir(void) {
    const char *d = getenv("TC_SOURCE_DIR");
    return d && d[0] ? d : TC_SOURCE_DIR;
}

static tc_experiment *load_shipped(const char *name, const char *const *ov, int n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/configs/experiments/%s", src_dir(), name);
    tc_experiment *e = NULL;
    tc_status s = tc_experiment_load(path, ov, n, &e);
    if (s != TC_OK) fail_msg("%s: %s", name, tc_last_error());
    return e;
}

static tc_experiment *parse_ok(const char *yaml, const char *const *ov, int n) {
    tc_experiment *e = NULL;
    tc_exp_errors errs;
    tc_status s = tc_experiment_parse(yaml, strlen(yaml), "t.yaml", ".", ov, n, &e, &errs);
    if (s != TC_OK) fail_msg("expected success, got: %s", tc_last_error());
    return e;
}

/* parses yaml expecting failure; returns the error list */
static void parse_bad(const char *yaml, const char *const *ov, int n, tc_exp_errors *errs) {
    tc_experiment *e = NULL;
    tc_status s = tc_experiment_parse(yaml, strlen(yaml), "t.yaml", ".", ov, n, &e, errs);
    assert_int_equal(s, TC_ERR_CONFIG);
    assert_null(e);
    assert_true(errs->count > 0);
}

/* some error is at line:col, names key_path and contains `text` */
static void expect_error(const tc_exp_errors *errs, int line, int col, const char *key_path,
                         const char *text) {
    for (int i = 0; i < errs->count; i++) {
        const tc_exp_error *e = &errs->items[i];
        if (e->line == line && e->column == col && !strcmp(e->key_path, key_path) &&
            strstr(e->text, text))
            return;
    }
    for (int i = 0; i < errs->count; i++)
        print_message("  got: %s\n", errs->items[i].text);
    fail_msg("no error at %d:%d for '%s' containing '%s'", line, col, key_path, text);
}

static const char *MINIMAL =
    "data:\n"
    "  train: {source: fmnist}\n"
    "teacher: {stage: t}\n"
    "stages:\n"
    "  - name: t\n"
    "    kind: train_scratch_clip\n"
    "    model: m.json\n"
    "    steps: 5000\n"
    "  - name: s\n"
    "    kind: distill\n"
    "    parent: t\n"
    "    inheritance: {kind: auto, target_sparsity: 0.5, prune_step: 3000}\n"
    "    steps: 5000\n"
    "  - name: u\n"
    "    kind: distill\n"
    "    parent: s\n"
    "    inheritance: {kind: auto, target_sparsity: 0.75, prune_step: 4000}\n"
    "    steps: 5000\n";

static void test_shipped_parse(void **state) {
    tc_experiment *e = load_shipped("fmnist.yaml", NULL, 0);
    assert_string_equal(e->name, "fmnist");
    assert_int_equal(e->n_stages, 6);
    assert_int_equal(e->train.source, TC_EXP_DATA_FMNIST);
    assert_int_equal(e->train.num_samples, 60000);
    assert_int_equal(e->zero_shot.dataset, TC_EXP_ZS_FMNIST);
    assert_int_equal(e->teacher.stage, 0);
    int a50 = tc_experiment_find_stage(e, "auto50"), a25 = tc_experiment_find_stage(e, "auto25");
    int m25 = tc_experiment_find_stage(e, "manual25"),
        s25 = tc_experiment_find_stage(e, "scratch25");
    assert_true(a50 > 0 && a25 > a50 && m25 > 0 && s25 > 0);
    assert_int_equal(e->stages[0].kind, TC_EXP_STAGE_SCRATCH);
    assert_int_equal(e->stages[a25].parent, a50);
    assert_int_equal(e->stages[a25].inherit.kind, TC_EXP_INHERIT_AUTO);
    /* start sparsity defaults to the auto parent's target */
    assert_float_equal(e->stages[a25].inherit.autoc.start_sparsity, 0.5, 1e-7);
    assert_float_equal(e->stages[a25].inherit.autoc.target_sparsity, 0.75, 1e-7);
    assert_int_equal(e->stages[m25].inherit.kind, TC_EXP_INHERIT_MANUAL);
    assert_int_equal(e->stages[s25].kind, TC_EXP_STAGE_SCRATCH);
    /* the default builds the teacher's features once; the three distillation
     * stages read them, the baseline trains without a teacher */
    int cache = tc_experiment_find_stage(e, "cache");
    assert_int_equal(e->stages[cache].kind, TC_EXP_STAGE_TEACHER_CACHE);
    assert_int_equal(e->stages[a50].cache_stage, cache);
    assert_int_equal(e->stages[a25].cache_stage, cache);
    assert_int_equal(e->stages[m25].cache_stage, cache);
    assert_int_equal(e->stages[s25].cache_stage, -1);
    assert_non_null(strstr(e->stages[m25].model, "fmnist-student-quarter.json"));
    assert_non_null(e->resolved_yaml);
    tc_experiment_free(e);

    e = load_shipped("vit-b32-auto.yaml", NULL, 0);
    assert_int_equal(e->n_stages, 3);
    assert_int_equal(e->backend, TC_EXP_BACKEND_CUDA);
    assert_int_equal(e->precision, TC_EXP_PREC_BF16);
    assert_int_equal(e->train.source, TC_EXP_DATA_WDS);
    assert_int_equal(e->teacher.stage, -1);
    assert_string_equal(e->teacher.ext.checkpoint,
                        "/data/checkpoints/ViT-B-32-laion2b_e16/open_clip_model.safetensors");
    const int64_t prune[3] = {3000, 5000, 8000};
    const float start[3] = {0, 0.25f, 0.5f}, target[3] = {0.25f, 0.5f, 0.75f};
    for (int i = 0; i < 3; i++) {
        const tc_exp_stage *st = &e->stages[i];
        assert_int_equal(st->inherit.kind, TC_EXP_INHERIT_AUTO);
        assert_int_equal(st->inherit.autoc.prune_step, prune[i]);
        assert_float_equal(st->inherit.autoc.start_sparsity, start[i], 1e-7);
        assert_float_equal(st->inherit.autoc.target_sparsity, target[i], 1e-7);
        assert_int_equal(st->sched.warmup, prune[i]); /* warm-up = mask phase */
        assert_float_equal(st->opt.lr, 1e-4, 1e-10);
        assert_int_equal(st->parent, i - 1);
    }
    assert_non_null(e->stages[0].parent_ext.checkpoint);
    tc_experiment_free(e);

    e = load_shipped("vit-b32-manual.yaml", NULL, 0);
    assert_int_equal(e->n_stages, 2);
    assert_non_null(strstr(e->stages[0].model, "TinyCLIP-ViT-61M-32-Text-29M"));
    assert_non_null(strstr(e->stages[1].model, "TinyCLIP-ViT-40M-32-Text-19M"));
    assert_int_equal(e->stages[1].parent, 0);
    assert_int_equal(e->stages[0].sched.warmup, 2000);
    tc_experiment_free(e);
}

static void test_defaults(void **state) {
    tc_experiment *e = parse_ok(MINIMAL, NULL, 0);
    assert_string_equal(e->name, "t"); /* the file stem */
    assert_string_equal(e->out_dir, "runs/t");
    assert_int_equal(e->seed, 0);
    assert_int_equal(e->backend, TC_EXP_BACKEND_CPU);
    assert_int_equal(e->precision, TC_EXP_PREC_FP32);
    assert_float_equal(e->teacher.logit_scale, 50, 0);
    assert_int_equal(e->train.batch, 1024);
    const tc_exp_stage *t = &e->stages[0], *s = &e->stages[1], *u = &e->stages[2];
    /* scratch: open_clip's lr 5e-4, learned logit scale */
    assert_float_equal(t->opt.lr, 5e-4, 1e-10);
    assert_int_equal(t->loss.learned_logit_scale, 1);
    assert_int_equal(t->sched.warmup, 2000);
    /* distill: TinyCLIP's recipe */
    assert_float_equal(s->opt.lr, 1e-4, 1e-10);
    assert_float_equal(s->opt.wd, 0.2, 1e-7);
    assert_float_equal(s->opt.beta1, 0.9, 1e-7);
    assert_float_equal(s->opt.beta2, 0.98, 1e-7);
    assert_float_equal(s->opt.eps, 1e-6, 1e-12);
    assert_float_equal(s->opt.grad_clip, 5, 0);
    assert_int_equal(s->loss.learned_logit_scale, 0);
    assert_float_equal(s->loss.logit_scale, 50, 0);
    assert_float_equal(s->loss.teacher_logit_scale, 50, 0);
    assert_float_equal(s->loss.distill_weight, 1, 0);
    assert_float_equal(s->loss.alpha, 1, 0);
    const tc_exp_auto *a = &s->inherit.autoc;
    assert_float_equal(a->start_sparsity, 0, 0);
    assert_int_equal(a->sparsity_warmup, 1000);
    assert_float_equal(a->lambda_init, 10, 0);
    assert_float_equal(a->mask_lr, 0.02, 1e-8);
    assert_float_equal(a->lambda_lr, -0.02, 1e-8);
    assert_int_equal(a->round_to, 0);
    assert_true(a->vision && a->text);
    assert_int_equal(s->sched.warmup, 3000);
    assert_int_equal(s->batch, 1024);
    assert_int_equal(s->eval_every, 1000);
    assert_int_equal(s->checkpoint_every, 1000);
    assert_int_equal(s->max_nonfinite_skips, 100);
    assert_float_equal(u->inherit.autoc.start_sparsity, 0.5, 1e-7);

    /* schedule: linear warm-up lr*(step+1)/warmup, cosine to 0; auto restarts at prune_step */
    assert_float_equal(tc_exp_stage_lr(t, 0), 5e-4 / 2000, 1e-12);
    assert_float_equal(tc_exp_stage_lr(t, 1999), 5e-4, 1e-12);
    assert_float_equal(tc_exp_stage_lr(t, 2000 + 1500), 2.5e-4, 1e-10);
    assert_float_equal(tc_exp_stage_lr(s, 2999), 1e-4, 1e-12);
    assert_float_equal(tc_exp_stage_lr(s, 3000), 1e-4, 1e-12);
    assert_float_equal(tc_exp_stage_lr(s, 4000), 0.5e-4, 1e-10);
    tc_experiment_free(e);
}

static void test_epochs_and_params(void **state) {
    const char *y =
        "params: {CKPT: /x/teacher.safetensors, EMPTY: null}\n"
        "data: {train: {source: csv, path: d.tsv, num_samples: 1000, batch: 100}}\n"
        "teacher: {checkpoint: '${CKPT}', model: a/m.json}\n"
        "stages:\n"
        "  - {name: s, kind: distill, model: b/s.json, epochs: 2.5, schedule: {warmup: 5}}\n";
    tc_experiment *e = parse_ok(y, NULL, 0);
    assert_int_equal(e->stages[0].steps, 25);
    assert_string_equal(e->teacher.ext.checkpoint, "/x/teacher.safetensors");
    assert_string_equal(e->teacher.ext.model, "a/m.json");
    assert_string_equal(e->train.path, "d.tsv");
    tc_experiment_free(e);
    const char *ov[] = {"params.CKPT=/y/other.safetensors"};
    e = parse_ok(y, ov, 1);
    assert_string_equal(e->teacher.ext.checkpoint, "/y/other.safetensors");
    tc_experiment_free(e);
}

typedef struct {
    const char *yaml;
    int line, col;
    const char *path, *text;
} bad_case;

static void test_bad_files(void **state) {
    static const bad_case cases[] = {
        /* unknown key */
        {"data: {train: {source: fmnist}}\nstagez: []\nstages:\n  - {name: a, kind: "
         "train_scratch_clip, model: m.json, steps: 1}\n",
         2, 1, "stagez", "unknown key 'stagez'"},
        /* wrong type */
        {"data: {train: {source: fmnist}}\nstages:\n  - name: a\n    kind: train_scratch_clip\n    "
         "model: m.json\n    steps: many\n",
         6, 12, "stages.0.steps", "expected an integer, got 'many'"},
        /* out of range */
        {"data: {train: {source: fmnist}}\nstages:\n  - name: a\n    kind: train_scratch_clip\n    "
         "model: m.json\n    steps: 10\n    optimizer:\n      lr: -0.1\n",
         8, 11, "stages.0.optimizer.lr", "must be in (0, 10]"},
        /* bad enum */
        {"backend: tpu\ndata: {train: {source: fmnist}}\nstages:\n  - {name: a, kind: "
         "train_scratch_clip, model: m.json, steps: 1}\n",
         1, 10, "backend", "'tpu' is not one of: cpu, cuda"},
        /* parent defined later */
        {"data: {train: {source: fmnist}}\nteacher: {stage: a}\nstages:\n  - {name: a, kind: "
         "train_scratch_clip, model: m.json, steps: 1}\n"
         "  - name: b\n    kind: distill\n    parent: c\n    inheritance: {kind: auto, "
         "target_sparsity: 0.5, prune_step: 1}\n    steps: 2\n"
         "  - {name: c, kind: distill, parent: a, steps: 2}\n",
         7, 13, "stages.1.parent", "a parent must come earlier"},
        /* a cycle: a <- b <- a */
        {"data: {train: {source: fmnist}}\nteacher: {checkpoint: t.pt, model: m.json}\nstages:\n"
         "  - {name: a, kind: distill, parent: b, steps: 2}\n  - {name: b, kind: distill, parent: "
         "a, steps: 2}\n",
         4, 38, "stages.0.parent", "'b' is stages.1, after this one"},
        /* unknown parent */
        {"data: {train: {source: fmnist}}\nteacher: {checkpoint: t.pt, model: m.json}\nstages:\n"
         "  - {name: a, kind: distill, parent: ghost, steps: 2}\n",
         4, 38, "stages.0.parent", "no stage is named 'ghost'"},
        /* own parent */
        {"data: {train: {source: fmnist}}\nteacher: {checkpoint: t.pt, model: m.json}\nstages:\n"
         "  - {name: a, kind: distill, parent: a, steps: 2}\n",
         4, 38, "stages.0.parent", "cannot be its own parent"},
        /* unknown teacher stage */
        {"data: {train: {source: fmnist}}\nteacher:\n  stage: nobody\nstages:\n  - {name: a, kind: "
         "distill, model: m.json, steps: 2}\n",
         3, 10, "teacher.stage", "no stage is named 'nobody'"},
        /* teacher stage after the distill stage that uses it */
        {"data: {train: {source: fmnist}}\nteacher: {stage: t}\nstages:\n  - {name: a, kind: "
         "distill, model: m.json, steps: 2}\n"
         "  - {name: t, kind: train_scratch_clip, model: m.json, steps: 2}\n",
         2, 18, "teacher.stage", "the teacher stage must come first"},
        /* YAML syntax */
        {"data: {train: {source: fmnist}\nstages: []\n", 2, 1, "",
         "YAML syntax: wrongly indented flow mapping"},
        /* duplicate key (libfyaml) */
        {"data: {train: {source: fmnist}}\ndata: {train: {source: fmnist}}\nstages: []\n", 2, 1, "",
         "duplicate key"},
        /* duplicate stage name */
        {"data: {train: {source: fmnist}}\nstages:\n  - {name: a, kind: train_scratch_clip, model: "
         "m.json, steps: 1}\n"
         "  - {name: a, kind: train_scratch_clip, model: m.json, steps: 1}\n",
         4, 12, "stages.1.name", "already used by stages.0"},
        /* auto without prune_step */
        {"data: {train: {source: fmnist}}\nteacher: {checkpoint: t.pt, model: m.json}\nstages:\n"
         "  - name: a\n    kind: distill\n    parent: {checkpoint: p.pt, model: m.json}\n    "
         "inheritance:\n      kind: auto\n      target_sparsity: 0.5\n    steps: 10\n",
         8, 7, "stages.0.inheritance", "missing key 'prune_step'"},
        /* steps and epochs */
        {"data: {train: {source: fmnist}}\nstages:\n  - {name: a, kind: train_scratch_clip, model: "
         "m.json, steps: 1, epochs: 1}\n",
         3, 5, "stages.0", "either 'steps' or 'epochs'"},
        /* undefined placeholder */
        {"data: {train: {source: wds, path: '${NO_SUCH_PARAM_X}', num_samples: 10}}\nstages:\n  - "
         "{name: a, kind: train_scratch_clip, model: m.json, steps: 1}\n",
         1, 36, "data.train.path", "${NO_SUCH_PARAM_X} is not defined"},
        /* round_to */
        {"data: {train: {source: fmnist}}\nteacher: {checkpoint: t.pt, model: m.json}\nstages:\n"
         "  - name: a\n    kind: distill\n    parent: {checkpoint: p.pt, model: m.json}\n    "
         "inheritance: {kind: auto, target_sparsity: 0.5, prune_step: 5, round_to: 16}\n    steps: "
         "10\n",
         7, 78, "stages.0.inheritance.round_to", "expected 0 (no rounding), 8 or 64"},
        /* shape */
        {"data: {train: {source: fmnist}}\nteacher: {checkpoint: t.pt, model: m.json}\nstages:\n"
         "  - name: a\n    kind: distill\n    parent: {checkpoint: p.pt, model: m.json}\n    "
         "inheritance: {kind: auto, target_sparsity: 0.5, prune_step: 5, shape: square}\n    "
         "steps: 10\n",
         7, 75, "stages.0.inheritance.shape", "expected irregular"},
        /* distill without a teacher */
        {"data: {train: {source: fmnist}}\nstages:\n  - {name: a, kind: distill, model: m.json, "
         "steps: 1}\n",
         3, 5, "stages.0", "needs the top-level 'teacher'"},
        /* prune after the end */
        {"data: {train: {source: fmnist}}\nteacher: {checkpoint: t.pt, model: m.json}\nstages:\n"
         "  - name: a\n    kind: distill\n    parent: {checkpoint: p.pt, model: m.json}\n    "
         "inheritance: {kind: auto, target_sparsity: 0.5, prune_step: 50}\n    steps: 10\n    "
         "schedule: {warmup: 5}\n",
         4, 5, "stages.0.inheritance.prune_step", "after the last step"},
        /* invalid UTF-8 (libfyaml can hang on it inside a directive) */
        {"data: {train: {source: fmnist}}\nname: ab\xa7"
         "c\n",
         2, 9, "", "not valid UTF-8"},
        /* top level is a list */
        {"- 1\n- 2\n", 1, 1, "", "the top level must be a mapping"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tc_exp_errors errs;
        print_message("case %zu\n", i);
        parse_bad(cases[i].yaml, NULL, 0, &errs);
        expect_error(&errs, cases[i].line, cases[i].col, cases[i].path, cases[i].text);
        /* the formatted text starts with file:line:column */
        if (cases[i].line > 0) {
            char prefix[64];
            snprintf(prefix, sizeof prefix, "t.yaml:%d:%d: ", cases[i].line, cases[i].col);
            int found = 0;
            for (int k = 0; k < errs.count; k++)
                found |= !strncmp(errs.items[k].text, prefix, strlen(prefix));
            assert_true(found);
        }
    }
}

/* counts beyond int64 (strtoll's ERANGE) or beyond their field's bound are
 * refused at their position, never saturated to INT64_MAX; a second YAML
 * document is refused; bf16 on the cpu backend is reported at its key */
static void test_limits_and_documents(void **state) {
#define STAGE1(extra)                                                                              \
    "data: {train: {source: fmnist}}\nstages:\n  - name: a\n    kind: train_scratch_clip\n    "    \
    "model: m.json\n" extra
    static const bad_case cases[] = {
        {STAGE1("    steps: 18446744073709551616\n"), 6, 12, "stages.0.steps",
         "must be in [1, 1000000000], got 18446744073709551616"},
        {STAGE1("    steps: 9223372036854775807\n"), 6, 12, "stages.0.steps",
         "must be in [1, 1000000000], got 9223372036854775807"},
        {STAGE1("    steps: -99999999999999999999\n"), 6, 12, "stages.0.steps",
         "must be in [1, 1000000000]"},
        {STAGE1("    steps: 1e30\n"), 6, 12, "stages.0.steps",
         "must be in [1, 1000000000], got 1e30"},
        {STAGE1("    steps: 10\n    log_every: 18446744073709551617\n"), 7, 16,
         "stages.0.log_every", "must be in [1, 1000000000]"},
        {STAGE1("    steps: 10\n    schedule: {warmup: 5000000000}\n"), 7, 24,
         "stages.0.schedule.warmup", "must be in [0, 1000000000]"},
        {STAGE1("    steps: 10\n    optimizer: {lr: 1e999}\n"), 7, 21, "stages.0.optimizer.lr",
         "must be in (0, 10]"},
        {"data: {train: {source: fmnist, num_samples: 99999999999999}}\nstages:\n  - {name: a, "
         "kind: train_scratch_clip, model: m.json, steps: 1}\n",
         1, 45, "data.train.num_samples", "must be in [1, 1000000000000]"},
        {"data: {train: {source: fmnist, num_samples: 1000000000000, batch: 1}}\nstages:\n  - "
         "{name: a, kind: train_scratch_clip, model: m.json, epochs: 5}\n",
         3, 5, "stages.0", "at most 1000000000"},
        /* a second document would be silently ignored */
        {STAGE1("    steps: 10\n---\nstages: []\n"), 7, 1, "", "a second YAML document"},
        {STAGE1("    steps: 10\n...\n---\n"), 8, 1, "", "a second YAML document"},
        /* a stage named like an entry of the run folder */
        {"data: {train: {source: fmnist}}\nstages:\n  - {name: plots, kind: train_scratch_clip, "
         "model: m.json, steps: 1}\n",
         3, 12, "stages.0.name", "a name the run folder uses for itself"},
        /* bf16 on the cpu backend, at its key's value */
        {"precision: bf16\n" STAGE1("    steps: 10\n    schedule: {warmup: 1}\n"), 1, 12,
         "precision", "bf16 needs backend: cuda"},
    };
#undef STAGE1
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tc_exp_errors errs;
        print_message("case %zu\n", i);
        parse_bad(cases[i].yaml, NULL, 0, &errs);
        expect_error(&errs, cases[i].line, cases[i].col, cases[i].path, cases[i].text);
    }
    /* the same bound through --set, named by the override */
    tc_exp_errors errs;
    const char *ov[] = {"stages.0.steps=18446744073709551616"};
    parse_bad("data: {train: {source: fmnist}}\nstages:\n  - {name: a, kind: train_scratch_clip, "
              "model: m.json, steps: 1}\n",
              ov, 1, &errs);
    assert_non_null(
        strstr(errs.items[0].text,
               "--set 'stages.0.steps=18446744073709551616': stages.0.steps: must be in"));
}

static void test_many_errors_one_pass(void **state) {
    const char *y = "seed: -1\nthreads: lots\ndata: {train: {source: fmnist, workers: -2}}\n"
                    "stages:\n  - {name: a, kind: cook, model: m.json, steps: 0}\n";
    tc_exp_errors errs;
    parse_bad(y, NULL, 0, &errs);
    expect_error(&errs, 1, 7, "seed", "must be in [0, 4294967295]");
    expect_error(&errs, 2, 10, "threads", "expected an integer");
    expect_error(&errs, 3, 41, "data.train.workers", "must be in [0, 1024]");
    expect_error(&errs, 5, 21, "stages.0.kind", "'cook' is not one of");
    expect_error(&errs, 5, 49, "stages.0.steps", "must be in [1, 1000000000]");
    /* tc_last_error holds them one per line */
    assert_non_null(strstr(tc_last_error(), "t.yaml:1:7: seed"));
    assert_non_null(strstr(tc_last_error(), "\nt.yaml:2:10: threads"));
}

static void test_overrides(void **state) {
    const char *ov[] = {"stages.1.batch=64", "stages.u.optimizer.lr=3e-4",
                        "stages.t.loss={logit_scale: 40}", "seed=7", "data.train.workers=1"};
    tc_experiment *e = parse_ok(MINIMAL, ov, 5);
    assert_int_equal(e->stages[1].batch, 64);
    assert_int_equal(e->stages[0].batch, 1024);
    assert_float_equal(e->stages[2].opt.lr, 3e-4, 1e-10);
    assert_int_equal(e->stages[0].loss.learned_logit_scale, 0);
    assert_float_equal(e->stages[0].loss.logit_scale, 40, 0);
    assert_int_equal(e->seed, 7);
    assert_int_equal(e->train.workers, 1);
    assert_non_null(strstr(e->resolved_yaml, "3e-4"));
    tc_experiment_free(e);

    /* paths that do not exist, and values that fail validation, name the override */
    static const struct {
        const char *ov, *path, *text;
    } bad[] = {
        {"stages.7.batch=64", "stages.7.batch", "'stages' has 3 items (indices 0..2), no item 7"},
        {"stages.nobody.batch=64", "stages.nobody.batch", "no item named 'nobody'"},
        {"stages.0.steps.x=1", "stages.0.steps.x", "'stages.0.steps' is a value"},
        {"stages.0.optimzer.lr=1", "stages.0.optimzer", "unknown key 'optimzer'"},
        {"stages.s.batch=-4", "stages.1.batch", "must be in [1, 1048576], got -4"},
        {"nonsense", "", "expected KEY.PATH=VALUE"},
        {"stages.0.batch=[1, 2", "stages.0.batch", "not valid YAML"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tc_exp_errors errs;
        const char *one[] = {bad[i].ov};
        print_message("override %s\n", bad[i].ov);
        parse_bad(MINIMAL, one, 1, &errs);
        char prefix[128];
        snprintf(prefix, sizeof prefix, "--set '%s': ", bad[i].ov);
        int found = 0;
        for (int k = 0; k < errs.count; k++)
            if (!strncmp(errs.items[k].text, prefix, strlen(prefix)) &&
                !strcmp(errs.items[k].key_path, bad[i].path) &&
                strstr(errs.items[k].text, bad[i].text) && errs.items[k].line == 0)
                found = 1;
        if (!found)
            for (int k = 0; k < errs.count; k++)
                print_message("  got: %s [%s]\n", errs.items[k].text, errs.items[k].key_path);
        assert_true(found);
    }
}

/* some error names key_path and contains `text`, wherever it is */
static void expect_error_at_key(const tc_exp_errors *errs, const char *key_path, const char *text) {
    for (int i = 0; i < errs->count; i++)
        if (!strcmp(errs->items[i].key_path, key_path) && strstr(errs->items[i].text, text)) return;
    for (int i = 0; i < errs->count; i++)
        print_message("  got: %s\n", errs->items[i].text);
    fail_msg("no error for '%s' containing '%s'", key_path, text);
}

/* data.train's options for shards from commands and URLs, resampled
 * reading, upsampling, the pixel limit; a webdataset path resolved part by
 * part */
static void test_data_options(void **state) {
    const char *stages =
        "stages:\n  - {name: s, kind: train_scratch_clip, model: m.json, steps: 5000}\n";
    char y[2048];
    snprintf(
        y, sizeof y,
        "data:\n"
        "  train:\n"
        "    source: wds\n"
        "    path: \"a/{0..3}.tar::pipe:aws s3 cp s3://b/{00..09}.tar -::https://h/{0..1}.tar?x=1"
        "::/abs/{0..1}.tar\"\n"
        "    num_samples: 1000\n"
        "    resampled: true\n"
        "    shuffle_buffer: 500\n"
        "    upsampling_factors: \"1::2::0.5::4\"\n"
        "    max_image_pixels: 1000000\n"
        "    pipe_retries: 5\n"
        "    pipe_backoff: 0.5\n"
        "    pipe_timeout: 60\n%s",
        stages);
    tc_experiment *e = NULL;
    tc_exp_errors errs;
    if (tc_experiment_parse(y, strlen(y), "t.yaml", "/data/exp", NULL, 0, &e, &errs) != TC_OK)
        fail_msg("%s", tc_last_error());
    assert_string_equal(e->train.path, "/data/exp/a/{0..3}.tar::pipe:aws s3 cp s3://b/{00..09}.tar "
                                       "-::https://h/{0..1}.tar?x=1::/abs/{0..1}.tar");
    assert_int_equal(e->train.resampled, 1);
    assert_int_equal(e->train.shuffle_buffer, 500);
    assert_int_equal(e->train.n_upsampling, 4);
    assert_float_equal(e->train.upsampling[2], 0.5, 0);
    assert_int_equal(e->train.max_image_pixels, 1000000);
    assert_int_equal(e->train.pipe_retries, 5);
    assert_float_equal(e->train.pipe_backoff, 0.5, 0);
    assert_float_equal(e->train.pipe_timeout, 60, 0);
    tc_experiment_free(e);
    /* the retrieval set's path is a spec too: a pipe: command is left as it
     * is, a relative part resolved against the file's folder */
    snprintf(y, sizeof y,
             "data:\n"
             "  train: {source: fmnist}\n"
             "  eval:\n"
             "    retrieval:\n"
             "      source: wds\n"
             "      path: \"pipe:curl -s https://h/coco-{0..4}.tar::val/{0..1}.tar\"\n"
             "      num_samples: 5000\n%s",
             stages);
    if (tc_experiment_parse(y, strlen(y), "t.yaml", "/data/exp", NULL, 0, &e, &errs) != TC_OK)
        fail_msg("%s", tc_last_error());
    assert_string_equal(e->retrieval.path,
                        "pipe:curl -s https://h/coco-{0..4}.tar::/data/exp/val/{0..1}.tar");
    tc_experiment_free(e);
    /* defaults */
    e = parse_ok(MINIMAL, NULL, 0);
    assert_int_equal(e->train.resampled, 0);
    assert_int_equal(e->train.shuffle_buffer, 1000);
    assert_int_equal(e->train.n_upsampling, 0);
    assert_int_equal(e->train.max_image_pixels, 0);
    assert_int_equal(e->train.pipe_retries, 3);
    assert_float_equal(e->train.pipe_backoff, 1, 0);
    assert_float_equal(e->train.pipe_timeout, 300, 0);
    tc_experiment_free(e);
    /* the list form; refusals */
    struct {
        const char *train, *key, *text;
    } cases[] = {
        {"{source: wds, path: 'a.tar::b.tar', num_samples: 9, resampled: true, upsampling_factors: "
         "[1, 3]}",
         NULL, NULL},
        {"{source: wds, path: 'a.tar::b.tar', num_samples: 9, upsampling_factors: [1, 3]}",
         "data.train.upsampling_factors", "need resampled: true"},
        {"{source: wds, path: 'a.tar::b.tar', num_samples: 9, resampled: true, upsampling_factors: "
         "[1]}",
         "data.train.upsampling_factors", "1 factors for 2 sources"},
        {"{source: wds, path: a.tar, num_samples: 9, resampled: true, upsampling_factors: [-1]}",
         "data.train.upsampling_factors", "factors in (0, 1e6]"},
        {"{source: csv, path: a.tsv, resampled: true}", "data.train.resampled",
         "needs webdataset shards"},
        {"{source: wds, path: a.tar, num_samples: 9, max_image_pixels: 0}",
         "data.train.max_image_pixels", "must be in"},
        {"{source: wds, path: a.tar, num_samples: 9, pipe_timeout: 0}", "data.train.pipe_timeout",
         "must be in"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(y, sizeof y, "data:\n  train: %s\n%s", cases[i].train, stages);
        if (!cases[i].key) {
            e = parse_ok(y, NULL, 0);
            assert_int_equal(e->train.n_upsampling, 2);
            assert_float_equal(e->train.upsampling[1], 3, 0);
            tc_experiment_free(e);
            continue;
        }
        parse_bad(y, NULL, 0, &errs);
        expect_error_at_key(&errs, cases[i].key, cases[i].text);
    }
}

static void test_stage_plan(void **state) {
    tc_experiment *e = load_shipped("vit-b32-auto.yaml", NULL, 0);
    tc_stage_plan *p = NULL;
    if (tc_stage_plan_build(e, &p) != TC_OK) fail_msg("plan: %s", tc_last_error());
    assert_int_equal(p->n, 3);
    for (int i = 0; i < 3; i++) {
        const tc_stage_plan_entry *s = &p->entries[i];
        /* ViT-B/32: 151,277,313 parameters in open_clip */
        assert_int_equal(s->params.total, 151277313);
        /* the sparsity denominator of docs/method.md §3.4: 85,017,600 + 37,804,032 */
        assert_int_equal(s->prunable, 85017600 + 37804032);
        assert_true(s->has_teacher);
        assert_int_equal(s->teacher_params.total, 151277313);
        double expect_after = 151277313.0 - (0.25 * (i + 1)) * (85017600.0 + 37804032.0);
        assert_float_equal(s->params_after, expect_after, 1.0);
    }
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    tc_stage_plan_print(f, p);
    fclose(f);
    assert_non_null(strstr(text, "[0] auto75  distill"));
    assert_non_null(strstr(text, "prune at step 3000"));
    assert_non_null(strstr(text, "151.28M"));
    assert_non_null(strstr(text, "memory"));
    free(text);
    tc_stage_plan_free(p);
    tc_experiment_free(e);

    e = load_shipped("vit-b32-manual.yaml", NULL, 0);
    if (tc_stage_plan_build(e, &p) != TC_OK) fail_msg("plan: %s", tc_last_error());
    /* TinyCLIP's names count the text tower without its token embedding */
    const tc_param_counts *c61 = &p->entries[0].params, *c40 = &p->entries[1].params;
    assert_true(c61->vision > 61.40e6 && c61->vision < 61.42e6);
    assert_true(c40->vision > 39.68e6 && c40->vision < 39.70e6);
    double t61 = (double)(c61->text + c61->shared - c61->token_embedding);
    double t40 = (double)(c40->text + c40->shared - c40->token_embedding);
    assert_true(t61 > 28.6e6 && t61 < 28.8e6);
    assert_true(t40 > 19.1e6 && t40 < 19.3e6);
    tc_stage_plan_free(p);
    tc_experiment_free(e);

    e = load_shipped("fmnist.yaml", NULL, 0);
    if (tc_stage_plan_build(e, &p) != TC_OK) fail_msg("plan: %s", tc_last_error());
    int m25 = tc_experiment_find_stage(e, "manual25");
    assert_true(p->entries[m25].params.total < p->entries[0].params.total);
    assert_int_equal(p->entries[m25].deps[0], 0);
    tc_stage_plan_free(p);
    tc_experiment_free(e);

    /* a missing model config names the stage and where the YAML says so */
    const char *ov[] = {"stages.0.model=no-such-model-config.json"};
    e = load_shipped("fmnist.yaml", ov, 1);
    assert_int_equal(tc_stage_plan_build(e, &p), TC_ERR_IO);
    assert_non_null(strstr(tc_last_error(), "--set #1: stages.0 (teacher).model"));
    tc_experiment_free(e);
}

static void test_memory_formula(void **state) {
    tc_model_config m;
    memset(&m, 0, sizeof m);
    m.embed_dim = 16;
    m.vision.layers = 1;
    m.vision.width = 64;
    m.vision.head_width = m.text.head_width = 64;
    m.vision.heads[0] = 1;
    m.vision.mlp_width[0] = 256;
    m.vision.image_size = 8;
    m.vision.patch_size = 4; /* 2x2 grid + class token = 5 tokens */
    m.text.layers = 1;
    m.text.width = 64;
    m.text.heads[0] = 1;
    m.text.mlp_width[0] = 256;
    m.text.context_length = 4;
    m.text.vocab_size = 10;
    m.text.pool = TC_POOL_ARGMAX;
    tc_param_layout layout;
    if (tc_param_layout_build(&layout, &m) != TC_OK) fail_msg("%s", tc_last_error());
    double P = (double)tc_param_count(&layout).total;
    tc_param_layout_free(&layout);
    tc_stage_memory s = tc_stage_memory_estimate(&m, NULL, 2, 0);
    /* vision: 4*2*5*(4*64 + 4*64 + 2*256) + 4*2*25*1; text: 4*2*4*1024 + 4*2*16*1 */
    assert_float_equal(s.activations, 41160.0 + 32896.0, 0);
    assert_float_equal(s.student, 16 * P, 0);
    assert_float_equal(s.logits, 64, 0);
    assert_float_equal(s.teacher, 0, 0);
    tc_stage_memory t = tc_stage_memory_estimate(&m, &m, 2, 1);
    /* bf16: half the activation bytes, +2 bytes per parameter for the compute copy */
    assert_float_equal(t.activations, (41160.0 + 32896.0) / 2, 0);
    assert_float_equal(t.student, 18 * P, 0);
    assert_float_equal(
        t.teacher,
        6 * P + (2.0 * 2 * 5 * 1024 + 2.0 * 2 * 25) + (2.0 * 2 * 4 * 1024 + 2.0 * 2 * 16), 0);
    assert_float_equal(t.total, t.student + t.teacher + t.activations + t.logits, 0);
}

/* goals: the shipped demo's, every kind parsed, and the errors */
static void test_goals(void **state) {
    tc_experiment *e = load_shipped("fmnist.yaml", NULL, 0);
    assert_int_equal(e->zero_shot.subset, 2000);
    assert_int_equal(e->zero_shot.max_images, 0);
    assert_int_equal(e->n_goals, 5);
    int t = tc_experiment_find_stage(e, "teacher"), a50 = tc_experiment_find_stage(e, "auto50");
    int a25 = tc_experiment_find_stage(e, "auto25"), s25 = tc_experiment_find_stage(e, "scratch25");
    const tc_goal *g = &e->goals[0].goal;
    assert_int_equal(g->kind, TC_GOAL_TOP1_AT_LEAST);
    assert_int_equal(g->stage, t);
    assert_float_equal(g->value, 0.80, 1e-12);
    g = &e->goals[1].goal;
    assert_int_equal(g->kind, TC_GOAL_TOP1_WITHIN);
    assert_int_equal(g->stage, a50);
    assert_int_equal(g->other, t);
    assert_float_equal(g->value, 3.0, 1e-12);
    g = &e->goals[2].goal;
    assert_int_equal(g->kind, TC_GOAL_REACH_FASTER);
    assert_int_equal(g->stage, a25);
    assert_int_equal(g->other, s25);
    assert_float_equal(g->at, 0.75, 1e-12);
    assert_float_equal(g->value, 0.5, 1e-12);
    g = &e->goals[3].goal;
    assert_int_equal(g->kind, TC_GOAL_AHEAD_AT_EQUAL_STEPS);
    assert_float_equal(g->value, 2.0, 1e-12);
    g = &e->goals[4].goal;
    assert_int_equal(g->kind, TC_GOAL_WALL_TIME);
    assert_int_equal(g->stage, -1);
    assert_float_equal(g->value, 15.0, 1e-12);
    tc_experiment_free(e);

    /* none: no goals */
    e = parse_ok(MINIMAL, NULL, 0);
    assert_int_equal(e->n_goals, 0);
    assert_int_equal(e->zero_shot.subset, 0);
    tc_experiment_free(e);

    static const struct {
        const char *goals;
        int line, col;
        const char *path, *text;
    } bad[] = {
        {"goals: {kind: wall_time}\n", 19, 8, "goals", "expected a list of goals"},
        {"goals:\n  - {stage: t, top1: 0.8}\n", 20, 5, "goals.0", "missing key 'kind'"},
        {"goals:\n  - {kind: fastest, stage: t}\n", 20, 12, "goals.0.kind",
         "'fastest' is not one of"},
        {"goals:\n  - {kind: top1_at_least, stage: t}\n", 20, 5, "goals.0.top1",
         "a goal of kind top1_at_least needs 'top1'"},
        {"goals:\n  - {kind: top1_at_least, stage: t, top1: 0.8, minutes: 3}\n", 20, 5,
         "goals.0.minutes", "a goal of kind top1_at_least takes no 'minutes'"},
        {"goals:\n  - {kind: top1_at_least, stage: t, top1: 1.5}\n", 20, 43, "goals.0.top1",
         "must be in [0, 1]"},
        {"goals:\n  - {kind: top1_within, stage: s, of: ghost, points: 3}\n", 20, 5, "goals.0",
         "no stage is named 'ghost'"},
        {"goals:\n  - {kind: reach_faster, stage: u, baseline: t, at: 0, max_ratio: 0.5}\n", 20, 53,
         "goals.0.at", "must be in (0, 1]"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char yaml[2048];
        snprintf(yaml, sizeof yaml, "%s%s", MINIMAL, bad[i].goals);
        tc_exp_errors errs;
        print_message("goal case %zu\n", i);
        parse_bad(yaml, NULL, 0, &errs);
        expect_error(&errs, bad[i].line, bad[i].col, bad[i].path, bad[i].text);
    }
    /* every kind, with the subset */
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "%s  eval: {zero_shot: {dataset: fmnist, subset: 500}}\n"
             "goals:\n"
             "  - {kind: top1_within, stage: u, of: s, points: 1.5}\n"
             "  - {kind: ahead_at_equal_steps, stage: u, baseline: t, points: -1}\n",
             "data:\n  train: {source: fmnist}\n");
    char full[4096];
    snprintf(full, sizeof full, "%s%s", yaml, strstr(MINIMAL, "teacher:"));
    e = parse_ok(full, NULL, 0);
    assert_int_equal(e->zero_shot.subset, 500);
    assert_int_equal(e->n_goals, 2);
    assert_int_equal(e->goals[0].goal.stage, 2);
    assert_int_equal(e->goals[0].goal.other, 1);
    assert_int_equal(e->goals[1].goal.other, 0);
    assert_float_equal(e->goals[1].goal.value, -1.0, 1e-12);
    tc_experiment_free(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_parse),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_epochs_and_params),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_many_errors_one_pass),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_limits_and_documents),
        cmocka_unit_test(test_stage_plan),
        cmocka_unit_test(test_memory_formula),
        cmocka_unit_test(test_data_options),
        cmocka_unit_test(test_goals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
