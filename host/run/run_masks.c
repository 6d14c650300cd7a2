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
    free(t->z);
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
    size_t n = t->masks.n_loga;
    t->on = 1;
    TC_TRY(tc_l0_adamw_create(&t->opt, &t->masks));
    tc_l0_rng_init(&t->rng, seed);
    t->rng.seed = l0_rank_seed(t->rng.seed, rank);
    t->z = calloc(n, sizeof(float));
    t->dz_dloga = calloc(n, sizeof(float));
    t->dloss_dz = calloc(n, sizeof(float));
    t->grad = calloc(t->masks.count, sizeof(float));
    if (!t->z || !t->dz_dloga || !t->dloss_dz || !t->grad)
        return tc_fail(TC_ERR_OOM, "masks: out of memory");
    TC_TRY(be->alloc(be, n * sizeof(float), (void **)&t->z_dev));
    TC_TRY(be->alloc(be, n * sizeof(float), (void **)&t->dz_dev));
    int C = t->masks.hidden, L = t->masks.layers, NH = t->masks.heads, M = t->masks.inter;
    t->tm = (tc_tower_masks){.hidden = t->z_dev,
                             .heads = t->z_dev + C,
                             .inter = t->z_dev + C + (size_t)L * NH,
                             .dhidden = t->dz_dev,
                             .dheads = t->dz_dev + C,
                             .dinter = t->dz_dev + C + (size_t)L * NH,
                             .heads_stride = NH,
                             .inter_stride = M};
    return TC_OK;
}

/* the deterministic masks (eval, pruning) into the device buffers */
tc_status l0_install_deterministic(tc_backend *be, tower_l0 *t, int round_to) {
    if (!t->on) return TC_OK;
    TC_TRY(tc_l0_deterministic(&t->masks, round_to, t->z));
    return be->upload(be, t->z_dev, t->z, t->masks.n_loga * sizeof(float));
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
    tc_status s;
    if (parent.cfg.irregular || memcmp(&parent.cfg.vision, &root->vision, sizeof root->vision) ||
        memcmp(&parent.cfg.text, &root->text, sizeof root->text)) {
        r->init.cfg = *root;
        s = tc_param_layout_build(&r->init.layout, root);
        if (s == TC_OK && !(r->init.params = calloc(r->init.layout.total, sizeof(float))))
            s = tc_fail(TC_ERR_OOM, "expand: out of memory");
        tc_l0_masks full_v = {0}, full_t = {0};
        if (s == TC_OK)
            s = tc_expand(&parent.cfg, &parent.layout, parent.params, root, &r->init.layout,
                          r->init.params, &full_v, &full_t);
        if (s == TC_OK) {
            if (vm)
                *vm = full_v;
            else
                tc_l0_masks_free(&full_v);
            if (tm)
                *tm = full_t;
            else
                tc_l0_masks_free(&full_t);
        }
        host_model_free(&parent);
    } else {
        r->init = parent;
        s = TC_OK;
        if (vm) s = tc_l0_masks_for_tower(vm, &root->vision, "vision");
        if (s == TC_OK && tm) s = tc_l0_masks_for_tower(tm, &root->text, "text");
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
    int round_to = r->st->inherit.autoc.round_to;
    for (int k = 0; k < 2 && s == TC_OK; k++) {
        if (!r->l0[k].on) continue;
        s = tc_l0_deterministic(&r->l0[k].masks, round_to, r->l0[k].z);
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
    logf_run(c, "stage %s: pruned at step %lld to %zu parameters (%zu without the token embedding)",
             r->st->name, r->meta.step, pc.total, pc.total - pc.token_embedding);
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
        tc_l0_sample(&t->masks, &t->rng, t->z, t->dz_dloga);
        TC_TRY(be->upload(be, t->z_dev, t->z, t->masks.n_loga * sizeof(float)));
        be->zero(be, t->dz_dev, t->masks.n_loga * sizeof(float));
    }
    TC_TRY(tc_trainer_compute(r->trainer, b->images, b->tokens, b->n, res));
    tc_l0_masks *towers[2];
    float *grads[2];
    int n = 0;
    for (int k = 0; k < 2; k++) {
        tower_l0 *t = &r->l0[k];
        if (!t->on) continue;
        TC_TRY(be->download(be, t->dloss_dz, t->dz_dev, t->masks.n_loga * sizeof(float)));
        memset(t->grad, 0, t->masks.count * sizeof(float));
        tc_l0_backward_z(t->grad, t->dloss_dz, t->dz_dloga, t->masks.n_loga);
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
