/* `tinyclip train`: the run of an experiment. the world (comm, backend,
 * batch allocator; host/dist/world.h), the run folder and its resolved
 * experiment, the tokenizer and zero-shot templates, then every stage in
 * file order (run_stage.c), then the report. per stage:
 *   1. the student: from scratch (open_clip init), from the parent's final
 *      weights, by manual inheritance (engine/inherit) or, for automatic
 *      inheritance, the parent re-expanded to the full shape with L0 masks
 *      (engine/prune tc_expand, engine/l0);
 *   2. the teacher (frozen) when the loss needs one;
 *   3. the steps: data from host/data's loader, one trainer step, during the
 *      mask phase the mask sample / mask gradient / Lagrangian / mask AdamW
 *      on the host, the prune into an irregular dense model at prune_step;
 *   4. logging, zero-shot evaluation and checkpoints at their intervals;
 *   5. final weights, evaluation, inference speed, summary.json.
 * scheduler_internal.h lists which file does what. */
#include "scheduler.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fileio.h"
#include "run_report.h"
#include "scheduler_internal.h"
#include "stage_plan.h"
#include "world.h"

double wall_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void logf_run(run_ctx *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(c->log, fmt, ap);
    va_end(ap);
    fputc('\n', c->log);
    fflush(c->log);
}

void stage_path(const run_ctx *c, int i, const char *sub, char *buf) {
    if (sub)
        snprintf(buf, PATH_CAP, "%s/%s/%s", c->exp->out_dir, c->exp->stages[i].name, sub);
    else
        snprintf(buf, PATH_CAP, "%s/%s", c->exp->out_dir, c->exp->stages[i].name);
}

tc_status tc_run_validate(const tc_experiment *exp, const char *restart_from) {
    if (restart_from && tc_experiment_find_stage(exp, restart_from) < 0)
        return tc_fail(TC_ERR_ARG, "--restart-from %s: %s has no stage of that name", restart_from,
                       exp->source);
    tc_stage_plan *plan;
    TC_TRY(tc_stage_plan_build(exp, &plan));
    tc_status s = tc_stage_plan_check_checkpoints(plan);
    tc_stage_plan_free(plan);
    return s;
}

/* rank 0 decides; the other ranks learn whether to go on */
static tc_status agree(run_ctx *c, tc_status s) {
    if (c->world == 1) return s;
    int v = (int)s;
    tc_status b = c->comm->host_broadcast(c->comm, &v, sizeof v, 0);
    if (b != TC_OK) return b;
    if (c->rank != 0 && v != TC_OK)
        return tc_fail((tc_status)v, "rank 0 could not prepare the run folder %s", c->exp->out_dir);
    return s;
}

/* the run folder, the tokenizer, the templates, every stage, the report */
static tc_status run_stages(run_ctx *c) {
    const tc_experiment *exp = c->exp;
    tc_status s = TC_OK;
    /* the first write: the lock (which creates the folder); then the
     * comparison with what an earlier run left, before anything else */
    if (c->rank == 0) s = tc_run_lock_acquire(&c->lock, exp->out_dir);
    if (s == TC_OK && c->rank == 0) s = run_inputs_build(c);
    if (s == TC_OK && c->rank == 0) s = run_folder_prepare(c);
    s = agree(c, s);
    if (s == TC_OK) s = tc_tokenizer_create(&c->tok, NULL);
    if (s == TC_OK) s = load_templates(c);
    for (int i = 0; s == TC_OK && i < exp->n_stages; i++)
        s = run_stage(c, i);
    if (s == TC_OK && c->rank == 0) s = tc_run_report_write(exp);
    if (s == TC_OK) logf_run(c, "run %s: done; report in %s/report.md", exp->name, exp->out_dir);
    return s;
}

tc_status tc_run_experiment(const tc_experiment *exp, const tc_run_options *opt) {
    run_ctx c;
    memset(&c, 0, sizeof c);
    c.exp = exp;
    c.log = opt && opt->log ? opt->log : stdout;
    c.force_tty = opt ? opt->force_tty : -1;
    c.restart_from = opt ? opt->restart_from : NULL;
    c.lock.fd = -1;
    tc_faults_from_env(&c.faults);
    /* nothing is written before the whole experiment is known to be good */
    TC_TRY(tc_run_validate(exp, c.restart_from));
    c.res = calloc((size_t)exp->n_stages, sizeof *c.res);
    if (!c.res) return tc_fail(TC_ERR_OOM, "run: out of memory");
    tc_world w;
    tc_world_options wo = {.backend = exp->backend == TC_EXP_BACKEND_CUDA ? "cuda" : "cpu",
                           .fp32 = exp->precision == TC_EXP_PREC_FP32,
                           .threads = exp->threads,
                           .comm_timeout_s = tc_comm_timeout_from_env()};
    tc_status s = tc_world_create(&w, &wo);
    if (!w.comm) {
        free(c.res);
        return s;
    }
    c.comm = w.comm;
    c.be = w.backend;
    c.batch_allocator = w.batch_allocator;
    c.rank = w.rank;
    c.world = w.world_size;
    c.threads = w.threads;
    c.device = w.device;
    c.build = w.build;
    FILE *quiet = NULL;
    if (c.rank != 0) {
        /* one voice: the other ranks' progress would repeat rank 0's */
        quiet = fopen("/dev/null", "w");
        if (quiet) c.log = quiet;
    }
    if (s == TC_OK) s = run_stages(&c);
    free_templates(&c);
    if (c.tok) tc_tokenizer_destroy(c.tok);
    run_inputs_free(&c);
    if (s != TC_OK && c.world > 1) {
        /* the other ranks wait in a collective: end the job now, with the reason */
        fprintf(stderr, "tinyclip: rank %d of %d: %s\n", c.rank, c.world, tc_last_error());
        fflush(stderr);
        w.comm->abort(w.comm, 1);
    }
    tc_world_destroy(&w);
    tc_run_lock_release(&c.lock); /* after the last write */
    if (quiet) fclose(quiet);
    free(c.res);
    return s;
}
