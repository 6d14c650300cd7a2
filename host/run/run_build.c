/* building a stage: the student's starting weights (from scratch, a copy
 * of the parent, or manual inheritance; automatic inheritance is in
 * run_masks.c), the student and its trainer, the frozen teacher, the data
 * loader of the stage. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "inherit.h"
#include "manifest.h"
#include "scheduler_internal.h"

/* ---- weights on the host ---- */

void host_model_free(host_model *h) {
    free(h->params);
    tc_param_layout_free(&h->layout);
    memset(h, 0, sizeof *h);
}

tc_status host_model_load(const char *path, const char *config, host_model *h) {
    tc_model_config hint;
    memset(h, 0, sizeof *h);
    if (config) TC_TRY(tc_model_config_load(&hint, config));
    return tc_checkpoint_load(path, config ? &hint : NULL, &h->cfg, &h->layout, &h->params);
}

tc_status host_model_random(tc_backend *be, const tc_model_config *cfg, uint64_t seed,
                            host_model *h) {
    memset(h, 0, sizeof *h);
    h->cfg = *cfg;
    TC_TRY(tc_param_layout_build(&h->layout, cfg));
    h->params = malloc(h->layout.total * sizeof(float));
    if (!h->params) return tc_fail(TC_ERR_OOM, "model %s: out of memory", cfg->name);
    /* open_clip's init lives in the model; run it on a small inference model */
    tc_model *m;
    tc_model_options o = {.max_batch = 1};
    TC_TRY(tc_model_create(&m, be, cfg, o));
    tc_status s = tc_model_init_random(m, seed);
    if (s == TC_OK) s = tc_model_get_params(m, h->params);
    tc_model_destroy(m);
    return s;
}

tc_status load_stage_final(run_ctx *c, int k, host_model *h) {
    const char *dir = c->res[k].final_dir;
    char why[512];
    memset(h, 0, sizeof *h);
    /* a final/ without a manifest is an older run's: used as it is */
    if (tc_manifest_verify(dir, why, sizeof why) == 0)
        return tc_fail(TC_ERR_FORMAT,
                       "%s is damaged (%s); train stage %s again with --restart-from %s", dir, why,
                       c->exp->stages[k].name, c->exp->stages[k].name);
    return host_model_load(dir, NULL, h);
}

/* the parent's final weights: an earlier stage or an external checkpoint */
tc_status load_parent(run_ctx *c, int i, host_model *h) {
    const tc_exp_stage *st = &c->exp->stages[i];
    if (st->parent >= 0) return load_stage_final(c, st->parent, h);
    return host_model_load(st->parent_ext.checkpoint, st->parent_ext.model, h);
}

static int has_parent(const tc_exp_stage *st) {
    return st->parent >= 0 || st->parent_ext.checkpoint != NULL;
}

static tc_loss_config loss_of(const tc_exp_stage *st) {
    tc_loss_config l;
    if (st->kind == TC_EXP_STAGE_SCRATCH) {
        l.w_clip = 1.0f;
        l.w_distill = 0.0f;
    } else {
        l.w_distill = st->loss.alpha * st->loss.distill_weight;
        l.w_clip = (1.0f - st->loss.alpha) * st->loss.distill_weight;
    }
    l.logit_scale = st->loss.learned_logit_scale ? 0.0f : st->loss.logit_scale;
    l.teacher_logit_scale = st->loss.teacher_logit_scale;
    return l;
}

static tc_optim_config optim_of(const tc_exp_stage *st) {
    tc_optim_config o;
    o.lr = st->opt.lr;
    o.weight_decay = st->opt.wd;
    o.beta1 = st->opt.beta1;
    o.beta2 = st->opt.beta2;
    o.eps = st->opt.eps;
    o.grad_clip = st->opt.grad_clip;
    o.total_steps = (int)st->steps;
    o.warmup_steps = (int)st->sched.warmup;
    /* for an auto stage the warm-up is the mask phase; cosine from the base
     * lr after it is the same curve as the original's restart at prune_step */
    o.schedule = st->sched.kind == TC_EXP_SCHED_CONST ? TC_SCHEDULE_CONST : TC_SCHEDULE_COSINE;
    return o;
}

/* ---- the student, the teacher, the loader ---- */

tc_status build_student(stage_run *r) {
    run_ctx *c = r->c;
    const tc_exp_stage *st = r->st;
    uint64_t seed = (uint64_t)c->exp->seed * 1000003ull + (uint64_t)r->i;
    switch (st->inherit.kind) {
    case TC_EXP_INHERIT_NONE: {
        if (has_parent(st)) return load_parent(c, r->i, &r->init);
        tc_model_config cfg;
        if (st->model_stage >= 0)
            cfg = c->res[st->model_stage].cfg;
        else
            TC_TRY(tc_model_config_load(&cfg, st->model));
        return host_model_random(c->be, &cfg, seed, &r->init);
    }
    case TC_EXP_INHERIT_MANUAL: {
        host_model parent;
        tc_model_config cfg;
        TC_TRY(tc_model_config_load(&cfg, st->model));
        TC_TRY(load_parent(c, r->i, &parent));
        tc_status s = host_model_random(c->be, &cfg, seed, &r->init);
        if (s == TC_OK) {
            tc_inherit_options o = tc_inherit_defaults();
            o.vision = st->inherit.vision.inherit;
            o.text = st->inherit.text.inherit;
            if (st->inherit.vision.layers == TC_EXP_LAYERS_LIST) {
                o.vision_layers = st->inherit.vision.layer_list;
                o.n_vision_layers = st->inherit.vision.n_layers;
            }
            if (st->inherit.text.layers == TC_EXP_LAYERS_LIST) {
                o.text_layers = st->inherit.text.layer_list;
                o.n_text_layers = st->inherit.text.n_layers;
            }
            s = tc_inherit_manual(&parent.cfg, &parent.layout, parent.params, &r->init.cfg,
                                  &r->init.layout, r->init.params, &o);
        }
        host_model_free(&parent);
        return s;
    }
    case TC_EXP_INHERIT_AUTO: return build_auto_student(r, seed);
    }
    return tc_fail(TC_ERR_CONFIG, "unknown inheritance");
}

tc_status make_student(stage_run *r, const tc_model_config *cfg, const float *params, int masked) {
    tc_model_options o = {.max_batch = r->micro, .train = 1, .masked = masked};
    TC_TRY(tc_model_create(&r->student, r->c->be, cfg, o));
    TC_TRY(tc_model_set_params(r->student, params));
    if (masked)
        TC_TRY(tc_model_set_masks(r->student, r->l0[0].on ? &r->l0[0].tm : NULL,
                                  r->l0[1].on ? &r->l0[1].tm : NULL));
    tc_optim_config o2 = optim_of(r->st);
    tc_loss_config l = loss_of(r->st);
    TC_TRY(tc_trainer_create(&r->trainer, r->student, r->teacher, &o2, &l));
    tc_trainer_set_async_inputs(r->trainer, 1);
    r->trainer_steps = 0;
    r->nonfinite_base = r->meta.nonfinite;
    TC_TRY(tc_trainer_set_comm(r->trainer, r->c->comm));
    tc_parallel_config par = {r->st->accum_steps, r->c->exp->zero1,
                              (size_t)(r->c->exp->bucket_mb * 1048576.0)};
    return tc_trainer_set_parallel(r->trainer, &par);
}

tc_status make_teacher(stage_run *r) {
    run_ctx *c = r->c;
    if (r->st->kind != TC_EXP_STAGE_DISTILL || loss_of(r->st).w_distill == 0.0f) return TC_OK;
    const tc_exp_teacher *t = &c->exp->teacher;
    host_model h;
    if (t->stage >= 0)
        TC_TRY(load_stage_final(c, t->stage, &h));
    else
        TC_TRY(host_model_load(t->ext.checkpoint, t->ext.model, &h));
    tc_model_options o = {.max_batch = r->micro, .train = 0};
    tc_status s = tc_model_create(&r->teacher, c->be, &h.cfg, o);
    if (s == TC_OK) s = tc_model_set_params(r->teacher, h.params);
    host_model_free(&h);
    return s;
}

tc_status open_loader(stage_run *r, const tc_loader_cursor *resume) {
    const tc_experiment *e = r->c->exp;
    const tc_model_config *cfg = tc_model_cfg(r->student);
    tc_loader_cfg lc;
    tc_loader_cfg_init(&lc);
    const char *spec = e->train.source == TC_EXP_DATA_FMNIST ? "fmnist:train" : e->train.path;
    lc.data = spec;
    lc.source.kind = e->train.source == TC_EXP_DATA_FMNIST ? "fmnist"
                     : e->train.source == TC_EXP_DATA_CSV  ? "csv"
                                                           : "wds";
    if (e->train.source == TC_EXP_DATA_FMNIST && e->train.path)
        lc.source.fmnist_dir = e->train.path;
    lc.allocator = r->c->batch_allocator; /* pinned memory where the backend wants it */
    if (e->train.source == TC_EXP_DATA_CSV) {
        lc.source.csv_sep = e->train.csv_separator;
        lc.source.csv_img_key = e->train.csv_img_key;
        lc.source.csv_caption_key = e->train.csv_caption_key;
    }
    if (e->train.num_samples > 0) lc.source.num_samples = e->train.num_samples;
    lc.resampled = e->train.resampled;
    lc.shuffle_buffer = e->train.shuffle_buffer;
    lc.source.upsampling = e->train.upsampling;
    lc.source.num_upsampling = e->train.n_upsampling;
    lc.max_image_pixels = e->train.max_image_pixels;
    lc.source.stream.retries = e->train.pipe_retries;
    lc.source.stream.backoff_ms = (int)(e->train.pipe_backoff * 1000.0);
    lc.source.stream.timeout_s = (int)ceil(e->train.pipe_timeout);
    lc.batch_size = r->batch;
    lc.rank = r->c->rank;
    lc.world_size = r->c->world;
    lc.image_size = cfg->vision.image_size;
    lc.context_length = cfg->text.context_length;
    lc.train = 1;
    lc.workers = e->train.workers;
    lc.seed = (uint64_t)e->seed * 7919u + (uint64_t)r->i;
    lc.tokenizer = r->c->tok;
    lc.quiet = 0;
    lc.log = r->c->log;
    return tc_loader_create(&lc, resume, &r->loader);
}

int source_counts(stage_run *r, const char **keys, double *vals) {
    static const char *const names[16] = {
        "samples_source0",  "samples_source1",  "samples_source2",  "samples_source3",
        "samples_source4",  "samples_source5",  "samples_source6",  "samples_source7",
        "samples_source8",  "samples_source9",  "samples_source10", "samples_source11",
        "samples_source12", "samples_source13", "samples_source14", "samples_source15"};
    int64_t now[16] = {0};
    int n = tc_loader_part_counts(r->loader, now, 16);
    if (n < 2) return 0;
    if (n > 16) n = 16;
    for (int k = 0; k < n; k++) {
        keys[k] = names[k];
        vals[k] = (double)(now[k] - r->source_logged[k]);
        r->source_logged[k] = now[k];
    }
    if (r->c->world > 1 &&
        r->c->comm->host_all_reduce_f64(r->c->comm, vals, (size_t)n, TC_REDUCE_SUM) != TC_OK)
        return 0; /* the next collective reports the lost rank */
    return n;
}
