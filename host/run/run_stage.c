/* one stage: skipped when it finished before, else built (or resumed from
 * its last checkpoint), its steps, then its end (prune a stage that ends in
 * its mask phase, evaluate, final weights, retrieval, speed, summary.json).
 *
 * the step loop keeps the device busy: a step's result is read back (a host
 * synchronisation) only when something uses it, and a batch goes back to
 * the loader only once the next step is queued. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "fileio.h"
#include "manifest.h"
#include "progress.h"
#include "scheduler_internal.h"

/* the step loop's clocks and counters */
typedef struct {
    tc_progress prog;
    double t_start, data_wait; /* the stage's wall clock; time spent waiting for batches */
    double eval_s, ckpt_s;     /* time in evaluations and checkpoints during the steps */
    long long steps_timed;
    tc_batch *prev; /* the last step's batch, released after the next is queued */
    double last_ips, last_loss, t_read;
    long long since_read, skipped_seen;
} step_loop;

static void stage_free(stage_run *r) {
    run_ctx *c = r->c;
    if (r->tb) tc_tb_close(r->tb);
    if (r->metrics) tc_metrics_close(r->metrics);
    tc_loader_destroy(r->loader);
    tc_trainer_destroy(r->trainer);
    tc_model_destroy(r->student);
    tc_model_destroy(r->teacher);
    tc_teacher_cache_close(r->cache);
    for (int k = 0; k < 2; k++)
        l0_free(c->be, &r->l0[k]);
    host_model_free(&r->init);
}

/* a stage that finished before: its final architecture is what later stages need */
static tc_status stage_done_earlier(run_ctx *c, int i) {
    const tc_exp_stage *st = &c->exp->stages[i];
    stage_result *res = &c->res[i];
    host_model h;
    TC_TRY(load_stage_final(c, i, &h));
    res->cfg = h.cfg;
    host_model_free(&h);
    if (st->inherit.kind == TC_EXP_INHERIT_AUTO) {
        /* the full shape of its chain, for a later auto stage */
        const tc_exp_stage *p = st;
        while (p->parent >= 0 && c->exp->stages[p->parent].inherit.kind == TC_EXP_INHERIT_AUTO)
            p = &c->exp->stages[p->parent];
        host_model root;
        if (p->parent >= 0)
            TC_TRY(load_stage_final(c, p->parent, &root));
        else
            TC_TRY(host_model_load(p->parent_ext.checkpoint, p->parent_ext.model, &root));
        res->has_root = 1;
        res->root = root.cfg;
        host_model_free(&root);
    }
    res->done = 1;
    logf_run(c, "stage %s: done earlier, skipped", st->name);
    return TC_OK;
}

static void log_memory(stage_run *r) {
    run_ctx *c = r->c;
    double mib = 1.0 / (1024.0 * 1024.0);
    size_t opt = tc_trainer_optimizer_bytes(r->trainer);
    logf_run(c,
             "stage %s: device memory per process: student %.1f MiB, teacher %.1f MiB%s, "
             "optimizer state %.1f MiB%s, step buffers %.1f MiB",
             r->st->name, tc_model_device_bytes(r->student) * mib,
             r->teacher ? tc_model_device_bytes(r->teacher) * mib : 0.0,
             r->cache ? " (features from the cache)" : "", opt * mib,
             c->world > 1 && c->exp->zero1 ? " (ZeRO-1: this rank's slice)" : "",
             (tc_trainer_device_bytes(r->trainer) - opt) * mib);
}

/* the student, the teacher, resumed or fresh; the loader, metrics and events */
static tc_status stage_open(stage_run *r, const char *dir) {
    run_ctx *c = r->c;
    const tc_exp_stage *st = r->st;
    char ckpt[CKPT_CAP] = "";
    tc_status s = c->rank == 0 ? latest_checkpoint(c, r->i, ckpt) : TC_OK;
    /* every rank resumes from the checkpoint rank 0 found, with its global
     * batch (known before the models are made for their batch) */
    if (s == TC_OK && c->world > 1) s = c->comm->host_broadcast(c->comm, ckpt, sizeof ckpt, 0);
    if (s == TC_OK && ckpt[0]) s = keep_global_batch(r, ckpt);
    if (s == TC_OK) s = build_student(r);
    if (s == TC_OK) s = make_teacher(r);
    if (s == TC_OK && ckpt[0]) {
        s = resume_from(r, ckpt);
        if (s == TC_OK) logf_run(c, "stage %s: resumed from %s", st->name, ckpt);
    } else if (s == TC_OK) {
        s = make_student(r, &r->init.cfg, r->init.params, r->masked);
        r->meta.masked = r->masked;
    }
    host_model_free(&r->init);
    if (s == TC_OK) log_memory(r);
    if (s == TC_OK) s = open_loader(r, ckpt[0] ? &r->meta.cursor : NULL);
    char path[PATH_CAP];
    stage_path(c, r->i, "metrics.jsonl", path);
    if (s == TC_OK && c->rank == 0) s = tc_metrics_truncate_after(path, r->meta.step);
    if (s == TC_OK && c->rank == 0) s = tc_metrics_open(&r->metrics, path);
    if (s == TC_OK && c->rank == 0 && tc_tb_open(&r->tb, dir) != TC_OK) {
        logf_run(c, "warning: stage %s: no TensorBoard events: %s", st->name, tc_last_error());
        r->tb = NULL;
    }
    return s;
}

/* skipped steps and the consecutive-skip limit, from a step's result */
static tc_status count_skips(stage_run *r, step_loop *L, const tc_step_result *sr, int read) {
    const tc_exp_stage *st = r->st;
    long long skipped_now = 0; /* skipped steps this result tells of */
    if (r->masked) {
        /* the mask phase reads every step and decides skips on the host */
        skipped_now = sr->skipped;
        r->meta.nonfinite = sr->skipped ? r->meta.nonfinite + 1 : 0;
    } else if (read) {
        skipped_now = sr->skipped_total - L->skipped_seen;
        L->skipped_seen = sr->skipped_total;
        /* consecutive skips; those before a resume count when every
         * step since has been skipped too */
        r->meta.nonfinite = sr->skipped_in_a_row;
        if (sr->skipped_in_a_row == r->trainer_steps) r->meta.nonfinite += r->nonfinite_base;
    }
    if (skipped_now > 0) {
        const char *k[] = {"loss", "skipped"};
        double v[] = {sr->loss, (double)skipped_now};
        metrics_write(r->metrics, r->meta.step, "skip", 2, k, v);
    }
    if (r->meta.nonfinite > st->max_nonfinite_skips)
        return tc_fail(TC_ERR_NONFINITE,
                       "%lld consecutive steps with a non-finite loss or gradient "
                       "(last at step %lld); stopping",
                       r->meta.nonfinite, r->meta.step);
    return TC_OK;
}

/* the rate, the loss and, at log steps, the metrics line and events */
static tc_status log_step(stage_run *r, step_loop *L, const tc_step_result *sr, double lag,
                          int read) {
    run_ctx *c = r->c;
    const tc_exp_stage *st = r->st;
    tc_status s = TC_OK;
    if (read) {
        /* the global batch per second over the steps since the last read */
        double now = wall_seconds();
        L->last_ips = (double)L->since_read * r->batch * c->world / (now - L->t_read);
        L->last_loss = sr->loss;
        L->since_read = 0;
    }
    if (read && (r->meta.step % st->log_every == 0 || r->meta.step == st->steps)) {
        /* the share of the stage's wall time spent waiting for batches */
        double waited = L->data_wait / (wall_seconds() - L->t_start);
        const char *keys[22] = {"loss",         "lr",        "grad_norm",
                                "images_per_s", "data_wait", "lagrangian"};
        double vals[22] = {sr->loss, sr->lr, sr->grad_norm, L->last_ips, waited, lag};
        int nk = r->masked ? 6 : 5;
        nk += source_counts(r, keys + nk, vals + nk);
        s = metrics_write(r->metrics, r->meta.step, NULL, nk, keys, vals);
        if (s == TC_OK && r->tb) {
            tc_tb_scalar(r->tb, "train/loss", r->meta.step, sr->loss);
            tc_tb_scalar(r->tb, "train/lr", r->meta.step, sr->lr);
            tc_tb_scalar(r->tb, "train/images_per_s", r->meta.step, (float)L->last_ips);
            tc_tb_flush(r->tb, 0);
        }
    }
    tc_progress_update(&L->prog, r->meta.step, L->last_loss, L->last_ips);
    return s;
}

/* the mask phase's scalars, every step: the pooled expected sparsity and
 * its target, the multipliers (mean over the towers, as the Lagrangian
 * uses them) and the Lagrangian */
static tc_status log_mask(stage_run *r, const tc_l0_lagrangian_result *lag, const double lam[2]) {
    const char *keys[] = {"expected_sparsity", "target_sparsity", "lambda1", "lambda2",
                          "lagrangian"};
    double vals[] = {lag->expected_sparsity, lag->target, lam[0], lam[1], lag->lagrangian};
    TC_TRY(metrics_write(r->metrics, r->meta.step, "mask", 5, keys, vals));
    for (int k = 0; k < 5 && r->tb; k++) {
        char tag[64];
        snprintf(tag, sizeof tag, "mask/%s", keys[k]);
        TC_TRY(tc_tb_scalar(r->tb, tag, r->meta.step, (float)vals[k]));
    }
    return TC_OK;
}

/* the multipliers the next masked step uses: the mean over the towers */
static void mean_lambdas(const stage_run *r, double lam[2]) {
    int towers = 0;
    lam[0] = lam[1] = 0.0;
    for (int k = 0; k < 2; k++) {
        if (!r->l0[k].on) continue;
        lam[0] += r->l0[k].masks.lambda[0];
        lam[1] += r->l0[k].masks.lambda[1];
        towers++;
    }
    if (towers) {
        lam[0] /= towers;
        lam[1] /= towers;
    }
}

/* what falls on this step: the prune at prune_step, an evaluation, a checkpoint */
static tc_status step_events(stage_run *r, step_loop *L) {
    run_ctx *c = r->c;
    const tc_exp_stage *st = r->st;
    tc_status s = TC_OK;
    /* the mask phase ends after prune_step iterations */
    if (r->masked && r->meta.step == st->inherit.autoc.prune_step) {
        s = prune_student(r);
        r->meta.masked = 0;
        r->meta.adam_step = 0;
        const char *k[] = {"params"};
        double v[] = {s == TC_OK ? (double)tc_param_count(tc_model_layout(r->student)).total : 0.0};
        if (s == TC_OK) s = metrics_write(r->metrics, r->meta.step, "prune", 1, k, v);
    }
    if (s == TC_OK && st->eval_every > 0 && r->meta.step % st->eval_every == 0 &&
        r->meta.step < st->steps && c->exp->zero_shot.dataset != TC_EXP_ZS_NONE) {
        tc_zeroshot_result zr;
        double t0 = wall_seconds();
        s = eval_now(r, eval_images_during(c), &zr);
        if (s == TC_OK) s = log_eval(r, "eval", &zr);
        L->eval_s += wall_seconds() - t0;
        if (s == TC_OK) {
            char msg[160];
            snprintf(msg, sizeof msg, "stage %s step %lld: zero-shot top-1 %.2f%%", st->name,
                     r->meta.step, 100.0 * zr.top1);
            tc_progress_message(&L->prog, msg);
        }
    }
    if (s == TC_OK && st->checkpoint_every > 0 && r->meta.step % st->checkpoint_every == 0 &&
        r->meta.step < st->steps) {
        double t0 = wall_seconds();
        s = checkpoint_stage(r);
        L->ckpt_s += wall_seconds() - t0;
    }
    return s;
}

/* one iteration: a batch, the step, its bookkeeping and events */
static tc_status step_once(stage_run *r, step_loop *L) {
    run_ctx *c = r->c;
    const tc_exp_stage *st = r->st;
    tc_batch *b;
    double tw = wall_seconds();
    tc_status s = tc_loader_next(r->loader, &b);
    L->data_wait += wall_seconds() - tw;
    if (s != TC_OK) return s;
    if (!b) return tc_fail(TC_ERR_DATA, "the training data ran out");
    const tc_model_config *mc = tc_model_cfg(r->student);
    tc_fault_batch(&c->faults, st->name, r->meta.step, b->images,
                   (size_t)b->n * 3 * mc->vision.image_size * mc->vision.image_size);
    tc_step_result sr;
    tc_l0_lagrangian_result lag = {0};
    double lam[2] = {0.0, 0.0};
    tc_trainer_set_step_index(r->trainer, (int)r->meta.step);
    long long next = r->meta.step + 1;
    /* the step's result is read back (a host synchronisation) only when
     * something uses it: logging, evaluation, checkpoints, the end */
    int read = r->masked || next % st->log_every == 0 || next == st->steps ||
               (st->eval_every > 0 && next % st->eval_every == 0) ||
               (st->checkpoint_every > 0 && next % st->checkpoint_every == 0);
    /* the cache's teacher features of the batch's rows, uploaded with it */
    if (r->cache) tc_trainer_set_teacher_features(r->trainer, b->teacher_img, b->teacher_txt);
    int was_masked = r->masked;
    if (r->masked) {
        mean_lambdas(r, lam);
        s = masked_step(r, b, &sr, &lag);
    } else
        s = tc_trainer_step(r->trainer, b->images, b->tokens, b->n, read ? &sr : NULL);
    r->meta.cursor = b->cursor;
    /* the previous batch goes back to the loader once the device has
     * read it; this one stays until the next step is queued, so the
     * device always has a step queued behind the one it runs */
    if (L->prev) {
        tc_status w = tc_trainer_inputs_wait(r->trainer, 1);
        if (s == TC_OK) s = w;
        tc_loader_release(r->loader, L->prev);
    }
    L->prev = b;
    if (s != TC_OK) return s;
    L->steps_timed++;
    r->trainer_steps++;
    r->meta.step++;
    L->since_read++;
    TC_TRY(count_skips(r, L, &sr, read));
    s = log_step(r, L, &sr, lag.lagrangian, read);
    if (s == TC_OK && was_masked) s = log_mask(r, &lag, lam);
    if (s == TC_OK) tc_fault_after_step(&c->faults, st->name, r->meta.step);
    if (s == TC_OK) s = step_events(r, L);
    /* the next rate counts from here: evaluations and checkpoints out */
    if (read) L->t_read = wall_seconds();
    return s;
}

/* the steps from where the stage stands to its last */
static tc_status stage_steps(stage_run *r, step_loop *L) {
    const tc_exp_stage *st = r->st;
    tc_status s = TC_OK;
    while (s == TC_OK && r->meta.step < st->steps)
        s = step_once(r, L);
    if (L->prev) {
        /* the last batch: its upload may still be queued */
        tc_status w = r->trainer ? tc_trainer_inputs_wait(r->trainer, 0) : TC_OK;
        if (s == TC_OK) s = w;
        tc_loader_release(r->loader, L->prev);
    }
    if (s == TC_OK) tc_progress_end(&L->prog);
    return s;
}

/* the final weights (rank 0 writes them) and architecture */
static tc_status save_final(stage_run *r) {
    run_ctx *c = r->c;
    stage_result *res = &c->res[r->i];
    tc_status s = TC_OK;
    float *params = malloc(tc_model_layout(r->student)->total * sizeof(float));
    if (!params) s = tc_fail(TC_ERR_OOM, "final weights: out of memory");
    if (s == TC_OK) s = tc_model_get_params(r->student, params);
    tc_model_config fcfg = *tc_model_cfg(r->student);
    snprintf(fcfg.name, sizeof fcfg.name, "%s", r->st->name);
    if (s == TC_OK && c->rank == 0)
        s = tc_checkpoint_save(res->final_dir, TC_FORMAT_OPENCLIP, &fcfg,
                               tc_model_layout(r->student), params);
    /* checksums of the final weights: later stages verify them before use */
    if (s == TC_OK && c->rank == 0) s = tc_manifest_write(res->final_dir);
    free(params);
    res->cfg = fcfg;
    return s;
}

/* the evaluations at the end: on the subset of the evaluations during the
 * stage (the last point of its curve), then on the whole set when that is
 * another (the report's numbers) */
static tc_status final_eval(stage_run *r, tc_zeroshot_result *zr) {
    run_ctx *c = r->c;
    int64_t during = eval_images_during(c), full = c->exp->zero_shot.max_images;
    TC_TRY(eval_now(r, during, zr));
    TC_TRY(log_eval(r, "eval", zr));
    if (during != full) {
        TC_TRY(eval_now(r, full, zr));
        TC_TRY(log_eval(r, "eval_full", zr));
    }
    logf_run(c, "stage %s: zero-shot top-1 %.2f%%, top-5 %.2f%% (%lld images)", r->st->name,
             100.0 * zr->top1, 100.0 * zr->top5, (long long)zr->n);
    return TC_OK;
}

/* the end of a stage: prune, evaluate, final weights, retrieval, speed, summary */
static tc_status stage_finish(stage_run *r, const step_loop *L, tc_status s, double t_begin) {
    run_ctx *c = r->c;
    const tc_exp_stage *st = r->st;
    double steps_time = wall_seconds() - L->t_start;
    stage_timing t = {0};
    t.train_seconds = steps_time - L->eval_s - L->ckpt_s;
    t.train_ips =
        L->steps_timed ? (double)L->steps_timed * st->batch * c->world / t.train_seconds : 0.0;
    t.wait_fraction = L->steps_timed ? L->data_wait / t.train_seconds : 0.0;
    t.resumed_at = r->resumed_at;

    /* a stage that ends inside its mask phase is pruned at the end */
    if (s == TC_OK && r->masked) {
        s = prune_student(r);
        r->meta.masked = 0;
    }
    tc_zeroshot_result zr = {0};
    int has_eval = c->exp->zero_shot.dataset != TC_EXP_ZS_NONE;
    double t_eval = wall_seconds();
    if (s == TC_OK && has_eval) s = final_eval(r, &zr);
    t.eval_seconds = L->eval_s + (wall_seconds() - t_eval);
    if (s == TC_OK) s = save_final(r);
    tc_retrieval_result rr = {0};
    int has_retrieval = c->exp->retrieval.enabled;
    if (s == TC_OK && has_retrieval) {
        s = tc_retrieval_eval(r->student, c->tok, c->exp->retrieval.path,
                              c->exp->retrieval.num_samples, &rr);
        const char *k[] = {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"};
        double v[] = {rr.i2t_recall[0], rr.i2t_recall[1], rr.i2t_recall[2],
                      rr.t2i_recall[0], rr.t2i_recall[1], rr.t2i_recall[2]};
        if (s == TC_OK) s = metrics_write(r->metrics, r->meta.step, "retrieval", 6, k, v);
        if (s == TC_OK)
            logf_run(c, "stage %s: retrieval image->text R@1 %.2f%%, text->image R@1 %.2f%%",
                     st->name, 100.0 * rr.i2t_recall[0], 100.0 * rr.t2i_recall[0]);
    }
    double ips = 0.0;
    if (s == TC_OK) ips = inference_speed(c, r->student, st->batch);
    if (s == TC_OK) s = metrics_sync(r->metrics);
    t.stage_seconds = wall_seconds() - t_begin;
    if (s == TC_OK && c->rank == 0)
        s = write_summary(r, &zr, has_eval, has_retrieval ? &rr : NULL, ips, &t);
    /* later stages read this stage's final weights that rank 0 wrote */
    if (s == TC_OK && c->world > 1) s = c->comm->barrier(c->comm);
    if (s == TC_OK) c->res[r->i].done = 1;
    return s;
}

tc_status run_stage(run_ctx *c, int i) {
    const tc_exp_stage *st = &c->exp->stages[i];
    if (st->kind == TC_EXP_STAGE_TEACHER_CACHE) return run_cache_stage(c, i);
    stage_result *res = &c->res[i];
    char dir[PATH_CAP], path[PATH_CAP];
    stage_path(c, i, NULL, dir);
    stage_path(c, i, "final", res->final_dir);
    stage_path(c, i, "summary.json", path);

    stage_run r;
    memset(&r, 0, sizeof r);
    r.c = c;
    r.i = i;
    r.st = st;
    if ((long long)st->batch * c->world > (1 << 24))
        return tc_fail(TC_ERR_CONFIG, "stage %s: global batch %d x %d processes is too large",
                       st->name, st->batch, c->world);
    r.batch = st->batch; /* per process (docs/experiments.md); the global batch is world x batch */
    r.micro = st->batch / st->accum_steps;
    /* rank 0's view of the run folder decides for every rank */
    double done_before = c->rank == 0 ? tc_path_is_file(path) : 0;
    if (c->world > 1) TC_TRY(c->comm->host_all_reduce_f64(c->comm, &done_before, 1, TC_REDUCE_SUM));
    if (done_before != 0.0) return stage_done_earlier(c, i);
    if (c->rank == 0) TC_TRY(tc_mkdir_p(dir));
    /* what the stage is made from, before it makes anything */
    if (c->rank == 0) TC_TRY(write_stage_inputs(c, i));
    logf_run(c, "stage %s: %s, %s inheritance, %lld steps of batch %d", st->name,
             tc_exp_stage_kind_name(st->kind), tc_exp_inherit_kind_name(st->inherit.kind),
             (long long)st->steps, st->batch);
    if (c->world > 1)
        logf_run(c, "stage %s: %d processes, global batch %d (%d per process)", st->name, c->world,
                 c->world * r.batch, r.batch);
    if (st->accum_steps > 1)
        logf_run(c, "stage %s: %d micro-batches of %d per step", st->name, st->accum_steps,
                 r.micro);

    double t_begin = wall_seconds();
    tc_status s = stage_open(&r, dir);
    r.resumed_at = r.meta.step;
    step_loop L;
    memset(&L, 0, sizeof L);
    if (s == TC_OK)
        tc_progress_begin(&L.prog, c->log, st->name, r.meta.step, st->steps, st->log_every,
                          c->force_tty);
    L.t_start = wall_seconds();
    L.t_read = L.t_start;
    if (s == TC_OK) s = stage_steps(&r, &L);
    s = stage_finish(&r, &L, s, t_begin);
    stage_free(&r);
    if (s != TC_OK) return tc_fail_context(s, "stage %s", st->name);
    return TC_OK;
}
