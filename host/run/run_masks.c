/* the mask phase of automatic inheritance: the student re-expanded to the
 * full shape with L0 masks (hard-concrete gates on hidden dims, heads and
 * MLP units, engine/l0.h), the masked step (mask sample, the trainer's
 * step, mask gradients averaged over ranks, Lagrangian, mask AdamW on the
 * host) and the prune into an irregular dense model at prune_step. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prune.h"
#include "scheduler_internal.h"

void l0_free(tc_backend *be, tower_l0 *t) {
    if (!t->on) return;
    if (t->z_dev) be->free(be, t->z_dev);
    if (t->dz_dev) be->free(be, t->dz_dev);
    free(t->zg);
    free(t->dloss_dg);
    free(t->z);
    free(t->stage);
    free(t->dz_dloga);
    free(t->dloss_dz);
    free(t->grad);
    tc_l0_adamw_free(&t->opt);
    tc_l0_masks_free(&t->masks);
    memset(t, 0, sizeof *t);
}

/* buffers and the tc_tower_masks view for masks already in t->masks */
/* each rank samples its own masks (the original seeds every rank apart):
 * rank r's stream is rank 0's seed moved by r; rank 0's is the one-process one */
uint64_t l0_rank_seed(uint64_t seed, int rank) {
    return seed + (uint64_t)rank * 0x9E3779B97F4A7C15ull;
}

static tc_status l0_setup(tc_backend *be, tower_l0 *t, uint64_t seed, int rank) {
    size_t n = t->masks.n_z, ng = t->masks.n_loga;
    t->on = 1;
    TC_TRY(tc_l0_adamw_create(&t->opt, &t->masks));
    tc_l0_rng_init(&t->rng, seed);
    t->rng.seed = l0_rank_seed(t->rng.seed, rank);
    t->zg = calloc(ng, sizeof(float));
    t->dz_dloga = calloc(ng, sizeof(float));
    t->dloss_dg = calloc(ng, sizeof(float));
    t->z = calloc(n, sizeof(float));
    t->dloss_dz = calloc(n, sizeof(float));
    t->grad = calloc(t->masks.count, sizeof(float));
    t->dl = tc_l0_device_layout_of(&t->masks);
    t->stage = calloc(t->dl.total, sizeof(float));
    if (!t->zg || !t->dz_dloga || !t->dloss_dg || !t->z || !t->dloss_dz || !t->grad || !t->stage)
        return tc_fail(TC_ERR_OOM, "masks: out of memory");
    TC_TRY(be->alloc(be, t->dl.total * sizeof(float), (void **)&t->z_dev));
    TC_TRY(be->alloc(be, t->dl.total * sizeof(float), (void **)&t->dz_dev));
    t->tm = (tc_tower_masks){.hidden = t->z_dev,
                             .heads = t->z_dev + t->dl.heads,
                             .inter = t->z_dev + t->dl.inter,
                             .dhidden = t->dz_dev,
                             .dheads = t->dz_dev + t->dl.heads,
                             .dinter = t->dz_dev + t->dl.inter,
                             .heads_stride = t->dl.heads_stride,
                             .inter_stride = t->dl.inter_stride};
    return TC_OK;
}

/* t->z (packed, n_z) into the device vector */
tc_status l0_upload_z(tc_backend *be, tower_l0 *t) {
    if (!t->on) return TC_OK;
    tc_l0_to_device(&t->masks, &t->dl, t->stage, t->z);
    return be->upload(be, t->z_dev, t->stage, t->dl.total * sizeof(float));
}

/* the deterministic masks (eval, pruning) of every masked tower into its z;
 * regular towers are sized to the stage's current target together */
tc_status l0_deterministic(stage_run *r) {
    const tc_exp_auto *a = &r->st->inherit.autoc;
    tc_l0_masks *towers[2];
    float *zs[2];
    double sizes[2] = {-1.0, -1.0};
    int n = 0;
    for (int k = 0; k < 2; k++) {
        if (!r->l0[k].on) continue;
        towers[n] = &r->l0[k].masks;
        zs[n++] = r->l0[k].z;
    }
    if (a->regular && n > 0)
        tc_l0_target_sizes(towers, n,
                           tc_l0_target_sparsity(a->start_sparsity, a->target_sparsity,
                                                 r->meta.step, a->sparsity_warmup),
                           sizes);
    for (int j = 0; j < n; j++)
        TC_TRY(tc_l0_deterministic_sized(towers[j], a->round_to, sizes[j], zs[j]));
    return TC_OK;
}

/* the parent at the full shape, with masks: the uniform shape its own auto
 * chain started from (re-expanded when the parent was pruned), else the
 * parent itself; the masks start from the parent's kept units */
tc_status build_auto_student(stage_run *r, uint64_t seed) {
    run_ctx *c = r->c;
    const tc_exp_stage *st = r->st;
    stage_result *res = &c->res[r->i];
    host_model parent;
    TC_TRY(load_parent(c, r->i, &parent));
    /* the full shape: where the parent's own auto chain started, else the parent */
    const tc_model_config *root =
        (st->parent >= 0 && c->res[st->parent].has_root) ? &c->res[st->parent].root : &parent.cfg;
    res->has_root = 1;
    res->root = *root;
    r->masked = 1;
    const tc_exp_auto *a = &st->inherit.autoc;
    tc_l0_masks *vm = a->vision ? &r->l0[0].masks : NULL, *tm = a->text ? &r->l0[1].masks : NULL;
    tc_l0_shape shape = a->regular ? TC_L0_REGULAR : TC_L0_IRREGULAR;
    tc_status s;
    if (parent.cfg.irregular || memcmp(&parent.cfg.vision, &root->vision, sizeof root->vision) ||
        memcmp(&parent.cfg.text, &root->text, sizeof root->text)) {
        r->init.cfg = *root;
        s = tc_param_layout_build(&r->init.layout, root);
        if (s == TC_OK && !(r->init.params = calloc(r->init.layout.total, sizeof(float))))
            s = tc_fail(TC_ERR_OOM, "expand: out of memory");
        if (s == TC_OK)
            s = tc_expand(&parent.cfg, &parent.layout, parent.params, root, &r->init.layout,
                          r->init.params, NULL, NULL);
        if (s == TC_OK && vm)
            s = tc_expand_masks(vm, &parent.cfg.vision, &root->vision, shape, "vision");
        if (s == TC_OK && tm) s = tc_expand_masks(tm, &parent.cfg.text, &root->text, shape, "text");
        host_model_free(&parent);
    } else {
        r->init = parent;
        s = TC_OK;
        if (vm) s = tc_l0_masks_for_tower_shaped(vm, &root->vision, shape, "vision");
        if (s == TC_OK && tm) s = tc_l0_masks_for_tower_shaped(tm, &root->text, shape, "text");
    }
    for (int k = 0; k < 2 && s == TC_OK; k++) {
        if (k == 0 ? !vm : !tm) continue;
        for (size_t j = 0; j < 2; j++)
            r->l0[k].masks.lambda[j] = a->lambda_init;
        s = l0_setup(c->be, &r->l0[k], seed * 31u + 17u + (uint64_t)k, c->rank);
    }
    return s;
}

/* the mask phase ends: deterministic masks, prune, a fresh dense student */
tc_status prune_student(stage_run *r) {
    run_ctx *c = r->c;
    const tc_param_layout *L = tc_model_layout(r->student);
    float *params = malloc(L->total * sizeof(float));
    if (!params) return tc_fail(TC_ERR_OOM, "prune: out of memory");
    tc_status s = tc_model_get_params(r->student, params);
    float *zv = NULL, *zt = NULL;
    if (s == TC_OK) s = l0_deterministic(r);
    double kept = 0, prunable = 0;
    for (int k = 0; k < 2 && s == TC_OK; k++) {
        if (!r->l0[k].on) continue;
        const tc_l0_masks *m = &r->l0[k].masks;
        kept += tc_l0_pruned_params(m, r->l0[k].z);
        prunable += tc_l0_prunable_size(m->layers, m->hidden, m->heads, m->inter);
        if (k == 0)
            zv = r->l0[k].z;
        else
            zt = r->l0[k].z;
    }
    tc_model_config pcfg;
    tc_param_layout playout;
    float *pparams = NULL;
    if (s == TC_OK)
        s = tc_prune_z(tc_model_cfg(r->student), L, params, zv, zt, TC_PRUNE_EXACT, &pcfg, &playout,
                       &pparams);
    free(params);
    if (s != TC_OK) return s;
    snprintf(pcfg.name, sizeof pcfg.name, "%s", r->st->name);
    tc_trainer_destroy(r->trainer);
    tc_model_destroy(r->student);
    r->trainer = NULL;
    r->student = NULL;
    for (int k = 0; k < 2; k++)
        l0_free(c->be, &r->l0[k]);
    r->masked = 0;
    /* the original rebuilds its optimizers: fresh moments, same schedule */
    s = make_student(r, &pcfg, pparams, 0);
    if (s == TC_OK) tc_trainer_set_step_index(r->trainer, (int)r->meta.step);
    tc_param_counts pc = tc_param_count(&playout);
    logf_run(c,
             "stage %s: pruned at step %lld to %zu parameters (%zu without the token embedding), "
             "sparsity %.4f of the masked attention and MLP parameters (L0 size formula)",
             r->st->name, r->meta.step, pc.total, pc.total - pc.token_embedding,
             prunable > 0 ? 1.0 - kept / prunable : 0.0);
    free(pparams);
    tc_param_layout_free(&playout);
    return s;
}

/* x (n, host) = its mean over the ranks */
static tc_status average_host(run_ctx *c, float *x, size_t n) {
    double *d = malloc(n * sizeof *d);
    if (!d) return tc_fail(TC_ERR_OOM, "mask gradients: out of memory");
    for (size_t i = 0; i < n; i++)
        d[i] = x[i];
    tc_status s = c->comm->host_all_reduce_f64(c->comm, d, n, TC_REDUCE_AVG);
    for (size_t i = 0; i < n && s == TC_OK; i++)
        x[i] = (float)d[i];
    free(d);
    return s;
}

/* one iteration of the mask phase: sample, step, mask gradients, Lagrangian, mask AdamW */
tc_status masked_step(stage_run *r, const tc_batch *b, tc_step_result *res,
                      tc_l0_lagrangian_result *lag) {
    tc_backend *be = r->c->be;
    const tc_exp_auto *a = &r->st->inherit.autoc;
    for (int k = 0; k < 2; k++) {
        tower_l0 *t = &r->l0[k];
        if (!t->on) continue;
        tc_l0_sample(&t->masks, &t->rng, t->zg, t->dz_dloga);
        tc_l0_expand_z(&t->masks, t->zg, t->z);
        TC_TRY(l0_upload_z(be, t));
        be->zero(be, t->dz_dev, t->dl.total * sizeof(float));
    }
    TC_TRY(tc_trainer_compute(r->trainer, b->images, b->tokens, b->n, res));
    tc_l0_masks *towers[2];
    float *grads[2];
    int n = 0;
    for (int k = 0; k < 2; k++) {
        tower_l0 *t = &r->l0[k];
        if (!t->on) continue;
        TC_TRY(be->download(be, t->stage, t->dz_dev, t->dl.total * sizeof(float)));
        tc_l0_from_device(&t->masks, &t->dl, t->dloss_dz, t->stage);
        memset(t->grad, 0, t->masks.count * sizeof(float));
        tc_l0_reduce_dz(&t->masks, t->dloss_dz, t->dloss_dg);
        tc_l0_backward_z(t->grad, t->dloss_dg, t->dz_dloga, t->masks.n_loga);
        towers[n] = &t->masks;
        grads[n++] = t->grad;
    }
    /* data parallel: the mask gradients of every rank's samples, averaged as
     * DDP averages the log-alpha gradients (the Lagrangian below is the same
     * on every rank, computed from the same masks and lambdas) */
    for (int k = 0; k < n && r->c->world > 1; k++)
        TC_TRY(average_host(r->c, grads[k], towers[k]->count));
    double target = tc_l0_target_sparsity(a->start_sparsity, a->target_sparsity, r->meta.step,
                                          a->sparsity_warmup);
    tc_l0_lagrangian_result lr;
    TC_TRY(tc_l0_lagrangian(towers, grads, n, target, &lr));
    *lag = lr;
    res->loss += (float)lr.lagrangian;
    if (res->skipped || !isfinite(lr.lagrangian)) {
        res->skipped = 1;
        return TC_OK;
    }
    double extra = 0.0;
    for (int k = 0; k < n; k++)
        for (size_t j = 0; j < towers[k]->count; j++)
            extra += (double)grads[k][j] * grads[k][j];
    float coef = tc_trainer_clip_coefficient(r->trainer, extra);
    TC_TRY(tc_trainer_apply(r->trainer, extra));
    tc_l0_adamw_hparams hp = tc_l0_adamw_defaults();
    hp.lr_loga = a->mask_lr;
    hp.lr_lambda = a->lambda_lr;
    for (int k = 0; k < 2; k++) {
        tower_l0 *t = &r->l0[k];
        if (!t->on) continue;
        TC_TRY(tc_l0_adamw_step(&t->opt, &t->masks, t->grad, &hp, coef));
        tc_l0_constrain(&t->masks);
    }
    return TC_OK;
}
