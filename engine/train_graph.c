/* a training step as plain launches or as a recorded graph
 * (engine/step_graph.h says when): the inputs and the step's learning rate
 * go to the device first, then the step's ops are launched, recorded and
 * launched, or the recording replayed. the ops are the same in every mode,
 * so every mode gives the same bits. */
#include <stdio.h>

#include "train_internal.h"

static tc_step_key step_key(const tc_trainer *t, int B) {
    tc_step_key k;
    k.batch = B;
    k.accum_steps = t->par.accum_steps;
    k.distill = t->teacher && t->loss.w_distill != 0.0f;
    k.clip = t->optim.grad_clip > 0.0f;
    k.fixed_scale = t->loss.logit_scale > 0.0f;
    k.config_epoch = t->config_epoch;
    return k;
}

static tc_step_env step_env(const tc_trainer *t) {
    const tc_backend *be = t->be;
    tc_step_env e;
    e.backend_graphs = be->graph_begin && be->graph_end && be->graph_launch && be->graph_free;
    e.distributed = t->comm && t->comm->world_size > 1;
    e.masked = tc_model_has_masks(t->student);
    return e;
}

/* the step's device work after its inputs and lr are on the device */
static tc_status step_ops(tc_trainer *t, int B) {
    TC_TRY(tc_trainer_compute_device(t, B));
    return tc_trainer_apply_device(t, 0.0, &t->scalars[S_LR]);
}

/* records the step and launches the recording; a recording the backend
 * refuses leaves the step to plain launches (*recorded = 0) */
static tc_status record_step(tc_trainer *t, int B, int *recorded) {
    tc_backend *be = t->be;
    *recorded = 0;
    if (t->graph) {
        be->graph_free(be, t->graph);
        t->graph = NULL;
    }
    if (be->graph_begin(be) == TC_OK) {
        tc_status s = step_ops(t, B);
        tc_graph *g = NULL;
        tc_status e = be->graph_end(be, &g);
        if (s != TC_OK) { /* a host-side refusal: the same as launches would give */
            if (g) be->graph_free(be, g);
            return s;
        }
        if (e == TC_OK) {
            t->graph = g;
            *recorded = 1;
            return be->graph_launch(be, g);
        }
    }
    fprintf(stderr, "trainer: the step cannot be recorded as a graph (%s); plain launches\n",
            tc_last_error());
    return step_ops(t, B);
}

tc_status tc_trainer_step(tc_trainer *t, const float *images, const int32_t *ids, int B,
                          tc_step_result *r) {
    const tc_step_key key = step_key(t, B);
    const tc_step_env env = step_env(t);
    const tc_step_mode mode = tc_step_graph_decide(&t->gs, &env, &key, NULL);
    if (mode == TC_STEP_LAUNCH) {
        TC_TRY(tc_trainer_compute(t, images, ids, B, NULL));
        TC_TRY(tc_trainer_apply(t, 0.0));
        tc_step_graph_note(&t->gs, mode, &key, 1);
        return r ? tc_trainer_read_result(t, r) : TC_OK;
    }
    tc_backend *be = t->be;
    t->last_lr = tc_lr_at(&t->optim, t->step);
    TC_TRY(tc_trainer_upload_step(t, images, ids, B));
    be->fill_f32(be, &t->scalars[S_LR], t->last_lr, 1);
    int ok = 1;
    if (mode == TC_STEP_CAPTURE)
        TC_TRY(record_step(t, B, &ok));
    else
        TC_TRY(be->graph_launch(be, t->graph));
    tc_step_graph_note(&t->gs, mode, &key, ok);
    t->step++;
    return r ? tc_trainer_read_result(t, r) : TC_OK;
}

const tc_step_graph_state *tc_trainer_graph_state(const tc_trainer *t) {
    return &t->gs;
}
