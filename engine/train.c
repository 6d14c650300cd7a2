#include "train.h"

#include "loss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* device scalars of a step */
enum { S_LOSS, S_SUMSQ, S_CLIP, S_FINITE, S_COUNT };

struct tc_trainer {
    tc_model *student, *teacher;
    tc_optim_config optim;
    tc_loss_config loss;
    tc_backend *be;
    int step;      /* schedule position: the lr of the next step is tc_lr_at(step) */
    int adam_step; /* optimizer steps since the moments were reset (bias correction) */
    int max_batch;
    float *m, *v;                      /* AdamW moments (P) */
    tc_param_segment *segs;
    int nseg;
    float *sim, *dsim;                 /* (2, B, B): i2t then t2i */
    float *teacher_sim;                /* (2, B, B) */
    float *dimg, *dtxt;                /* (B, E) */
    float *scalars;                    /* S_COUNT */
    float last_sum_sq;                 /* of the last compute, on the host */
    /* data parallel (comm with world > 1); W = world size, b = max_batch */
    tc_comm *comm;
    float *img_all, *txt_all;          /* (W*b, E) gathered student features */
    float *timg_all, *ttxt_all;        /* (W*b, TE) gathered teacher features */
    float *dimg_all, *dtxt_all;        /* (W*b, E) column gradients of this rank's loss */
    float *cols;                       /* (b, E) the columns' gradients reduced to their owner */
    float *one;                        /* device 1.0f: the add of cols through gemm */
    size_t v_lo, v_hi;                 /* the image tower's gradients: one contiguous bucket */
};

tc_optim_config tc_optim_default(void) {
    tc_optim_config o = {5e-4f, 0.2f, 0.9f, 0.98f, 1e-6f, 10000, 100000, TC_SCHEDULE_COSINE, 0.0f};
    return o;
}

float tc_lr_at(const tc_optim_config *o, int step) {
    int warm = o->warmup_steps, total = o->total_steps;
    if (o->schedule == TC_SCHEDULE_COSINE_NO_WARMUP) {
        if (step < warm) return o->lr;
        int es = total - warm;
        if (es <= 0) return o->lr;
        double e = step - warm;
        return (float)(0.5 * (1.0 + cos(M_PI * e / es)) * o->lr);
    }
    if (step < warm) return o->lr * (float)(step + 1) / (float)warm;
    if (o->schedule == TC_SCHEDULE_CONST) return o->lr;
    int es = total - warm;
    if (es <= 0) return o->lr;
    double e = step - warm;
    return (float)(0.5 * (1.0 + cos(M_PI * e / es)) * o->lr);
}

/* contiguous runs of tensors that share a weight decay */
static tc_status build_segments(tc_trainer *t) {
    const tc_param_layout *L = tc_model_layout(t->student);
    t->segs = calloc((size_t)L->count, sizeof *t->segs);
    if (!t->segs) return tc_fail(TC_ERR_OOM, "trainer: out of host memory");
    t->nseg = 0;
    for (int i = 0; i < L->count; i++) {
        const tc_param_info *p = &L->params[i];
        float wd = p->decay ? t->optim.weight_decay : 0.0f;
        tc_param_segment *last = t->nseg ? &t->segs[t->nseg - 1] : NULL;
        if (last && last->weight_decay == wd && last->offset + last->count == p->offset) {
            last->count += p->count;
        } else {
            t->segs[t->nseg++] = (tc_param_segment){p->offset, p->count, wd};
        }
    }
    return TC_OK;
}

static tc_status trainer_alloc(tc_trainer *t, void **ptr, size_t bytes) {
    return t->be->alloc(t->be, bytes, ptr);
}

tc_status tc_trainer_create(tc_trainer **out, tc_model *student, tc_model *teacher,
                            const tc_optim_config *optim, const tc_loss_config *loss) {
    *out = NULL;
    if (!tc_model_grads(student))
        return tc_fail(TC_ERR_ARG, "trainer: the student was created without training buffers");
    if (loss->w_distill != 0.0f && !teacher)
        return tc_fail(TC_ERR_ARG, "trainer: a distillation loss needs a teacher");
    const tc_model_config *sc = tc_model_cfg(student);
    if (teacher) {
        const tc_model_config *tc = tc_model_cfg(teacher);
        if (tc->vision.image_size != sc->vision.image_size)
            return tc_fail(TC_ERR_CONFIG, "teacher %s takes %dpx images, student %s takes %dpx: they must match",
                           tc->name, tc->vision.image_size, sc->name, sc->vision.image_size);
        if (tc->text.context_length != sc->text.context_length)
            return tc_fail(TC_ERR_CONFIG, "teacher %s has context %d, student %s has %d: they must match",
                           tc->name, tc->text.context_length, sc->name, sc->text.context_length);
        if (tc_model_backend(teacher) != tc_model_backend(student))
            return tc_fail(TC_ERR_ARG, "trainer: teacher and student must share a backend");
    }
    tc_trainer *t = calloc(1, sizeof *t);
    if (!t) return tc_fail(TC_ERR_OOM, "trainer: out of host memory");
    t->student = student;
    t->teacher = teacher;
    t->optim = *optim;
    t->loss = *loss;
    t->be = tc_model_backend(student);
    size_t P = tc_model_layout(student)->total;
    int E = sc->embed_dim;
    tc_status s;
    t->max_batch = tc_model_max_batch(student);
    size_t BB = (size_t)t->max_batch * t->max_batch;
    if ((s = build_segments(t)) != TC_OK ||
        (s = trainer_alloc(t, (void **)&t->m, P * sizeof(float))) != TC_OK ||
        (s = trainer_alloc(t, (void **)&t->v, P * sizeof(float))) != TC_OK ||
        (s = trainer_alloc(t, (void **)&t->sim, 2 * BB * sizeof(float))) != TC_OK ||
        (s = trainer_alloc(t, (void **)&t->dsim, 2 * BB * sizeof(float))) != TC_OK ||
        (s = trainer_alloc(t, (void **)&t->dimg, (size_t)t->max_batch * E * sizeof(float))) != TC_OK ||
        (s = trainer_alloc(t, (void **)&t->dtxt, (size_t)t->max_batch * E * sizeof(float))) != TC_OK ||
        (s = trainer_alloc(t, (void **)&t->scalars, S_COUNT * sizeof(float))) != TC_OK ||
        (teacher && (s = trainer_alloc(t, (void **)&t->teacher_sim, 2 * BB * sizeof(float))) != TC_OK)) {
        tc_trainer_destroy(t);
        return s;
    }
    *out = t;
    return TC_OK;
}

void tc_trainer_destroy(tc_trainer *t) {
    if (!t) return;
    tc_backend *be = t->be;
    void *bufs[] = {t->teacher_sim, t->scalars, t->dtxt, t->dimg, t->dsim, t->sim, t->v, t->m,
                    t->img_all, t->txt_all, t->timg_all, t->ttxt_all, t->dimg_all,
                    t->dtxt_all, t->cols, t->one};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) be->free(be, bufs[i]);
    free(t->segs);
    free(t);
}

int tc_trainer_step_index(const tc_trainer *t) { return t->step; }
void tc_trainer_set_step_index(tc_trainer *t, int step) { t->step = step; }
int tc_trainer_adam_step(const tc_trainer *t) { return t->adam_step; }
void tc_trainer_set_adam_step(tc_trainer *t, int step) { t->adam_step = step; }
float *tc_trainer_moment1(tc_trainer *t) { return t->m; }
float *tc_trainer_moment2(tc_trainer *t) { return t->v; }
void tc_trainer_set_optim(tc_trainer *t, const tc_optim_config *optim) {
    t->optim = *optim;
    for (int i = 0; i < t->nseg; i++)
        if (t->segs[i].weight_decay != 0.0f) t->segs[i].weight_decay = optim->weight_decay;
}

size_t tc_trainer_device_bytes(const tc_trainer *t) {
    size_t P = tc_model_layout(t->student)->total, b = (size_t)t->max_batch;
    size_t E = (size_t)tc_model_cfg(t->student)->embed_dim;
    size_t TE = t->teacher ? (size_t)tc_model_cfg(t->teacher)->embed_dim : 0;
    size_t W = t->comm ? (size_t)t->comm->world_size : 1;
    size_t rows = 2 * b * W * b * (t->teacher ? 3 : 2); /* sim, dsim, teacher sim */
    size_t floats = 2 * P + rows + 2 * b * E + S_COUNT;
    if (W > 1) floats += 4 * W * b * E + 2 * W * b * TE + b * E + 1;
    return floats * sizeof(float);
}

static int distributed(const tc_trainer *t) { return t->comm && t->comm->world_size > 1; }

tc_status tc_trainer_set_comm(tc_trainer *t, tc_comm *comm) {
    if (!comm || comm->world_size <= 1) {
        t->comm = NULL;
        return TC_OK;
    }
    if (t->comm) return tc_fail(TC_ERR_ARG, "trainer: the comm is already set");
    tc_backend *be = t->be;
    size_t W = (size_t)comm->world_size, b = (size_t)t->max_batch;
    size_t E = (size_t)tc_model_cfg(t->student)->embed_dim;
    size_t TE = t->teacher ? (size_t)tc_model_cfg(t->teacher)->embed_dim : 0;
    if (W > (1u << 20) || b * W > (1u << 24))
        return tc_fail(TC_ERR_ARG, "trainer: global batch %zu x %zu too large", W, b);
    /* the similarity rows grow from (2, b, b) to (2, b, W*b) */
    be->free(be, t->sim);
    be->free(be, t->dsim);
    t->sim = t->dsim = NULL;
    if (t->teacher_sim) be->free(be, t->teacher_sim);
    t->teacher_sim = NULL;
    size_t rows = 2 * b * W * b * sizeof(float);
    tc_status s;
    if ((s = trainer_alloc(t, (void **)&t->sim, rows)) != TC_OK ||
        (s = trainer_alloc(t, (void **)&t->dsim, rows)) != TC_OK ||
        (t->teacher && (s = trainer_alloc(t, (void **)&t->teacher_sim, rows)) != TC_OK) ||
        (s = trainer_alloc(t, (void **)&t->img_all, W * b * E * sizeof(float))) != TC_OK ||
        (s = trainer_alloc(t, (void **)&t->txt_all, W * b * E * sizeof(float))) != TC_OK ||
        (t->teacher &&
         (s = trainer_alloc(t, (void **)&t->timg_all, W * b * TE * sizeof(float))) != TC_OK) ||
        (t->teacher &&
         (s = trainer_alloc(t, (void **)&t->ttxt_all, W * b * TE * sizeof(float))) != TC_OK) ||
        (s = trainer_alloc(t, (void **)&t->dimg_all, W * b * E * sizeof(float))) != TC_OK ||
        (s = trainer_alloc(t, (void **)&t->dtxt_all, W * b * E * sizeof(float))) != TC_OK ||
        (s = trainer_alloc(t, (void **)&t->cols, b * E * sizeof(float))) != TC_OK ||
        (s = trainer_alloc(t, (void **)&t->one, sizeof(float))) != TC_OK)
        return s;
    be->fill_f32(be, t->one, 1.0f, 1);
    /* the image tower's parameters (a contiguous run in open_clip order) are
     * a bucket of their own, all-reduced while the text tower's backward runs */
    const tc_param_layout *L = tc_model_layout(t->student);
    size_t lo = L->total, hi = 0, n = 0;
    for (int i = 0; i < L->count; i++) {
        const tc_param_info *p = &L->params[i];
        if (p->tower != TC_TOWER_VISION) continue;
        if (p->offset < lo) lo = p->offset;
        if (p->offset + p->count > hi) hi = p->offset + p->count;
        n += p->count;
    }
    t->v_lo = t->v_hi = 0;
    if (n > 0 && hi - lo == n) {
        t->v_lo = lo;
        t->v_hi = hi;
    }
    t->comm = comm;
    return TC_OK;
}

/* gather-with-grad: the columns' gradients of every rank's loss, summed onto
 * their owner, added to this rank's row gradient drows (B, E) */
static tc_status return_column_grads(tc_trainer *t, float *drows, const float *dcols_all, int B,
                                     int E) {
    tc_backend *be = t->be;
    size_t nE = (size_t)B * E;
    TC_TRY(t->comm->reduce_scatter_f32(t->comm, dcols_all, t->cols, nE, TC_REDUCE_SUM));
    /* drows (1, nE) += one (1,1) @ cols (1, nE) */
    be->gemm_f32(be, 0, 0, 1, (int)nE, 1, 1.0f, t->one, t->cols, 1.0f, drows);
    return TC_OK;
}

/* the data-parallel forward and backward of forward_backward */
/* the frozen teacher's features of this process's batch; its logit scale is
 * fixed (method §1.2: fill_(log 50) before its forward) */
static tc_status teacher_forward(tc_trainer *t, const float *images, const int32_t *ids, int B,
                                 tc_loss_features *tf, int *TE, float **tscale) {
    tc_model *te = t->teacher;
    *TE = tc_model_cfg(te)->embed_dim;
    *tscale = tc_model_params(te) + tc_model_layout(te)->logit_scale;
    t->be->fill_f32(t->be, *tscale, logf(t->loss.teacher_logit_scale), 1);
    TC_TRY(tc_model_encode_image(te, images, B));
    TC_TRY(tc_model_encode_text(te, ids, B));
    tf->img = tc_model_image_features(te);
    tf->txt = tc_model_text_features(te);
    return TC_OK;
}

static tc_status forward_backward_dp(tc_trainer *t, const float *images, const int32_t *ids,
                                     int B, int backward) {
    tc_backend *be = t->be;
    tc_comm *comm = t->comm;
    tc_model *st = t->student;
    const tc_param_layout *L = tc_model_layout(st);
    int E = tc_model_cfg(st)->embed_dim, TE = 0;
    int W = comm->world_size, N = W * B;
    tc_loss_features tf, *teacher = NULL;
    const float *teacher_scale = NULL;
    if (t->teacher && t->loss.w_distill != 0.0f) {
        float *tscale;
        TC_TRY(teacher_forward(t, images, ids, B, &tf, &TE, &tscale));
        TC_TRY(comm->all_gather_f32(comm, tf.img, t->timg_all, (size_t)B * TE));
        TC_TRY(comm->all_gather_f32(comm, tf.txt, t->ttxt_all, (size_t)B * TE));
        tf.img_all = t->timg_all;
        tf.txt_all = t->ttxt_all;
        teacher = &tf;
        teacher_scale = tscale;
    }
    TC_TRY(tc_model_encode_image(st, images, B));
    TC_TRY(tc_model_encode_text(st, ids, B));
    tc_loss_features sf;
    sf.img = tc_model_image_features(st);
    sf.txt = tc_model_text_features(st);
    TC_TRY(comm->all_gather_f32(comm, sf.img, t->img_all, (size_t)B * E));
    TC_TRY(comm->all_gather_f32(comm, sf.txt, t->txt_all, (size_t)B * E));
    sf.img_all = t->img_all;
    sf.txt_all = t->txt_all;
    if (backward) tc_model_zero_grads(st);
    tc_loss_weights w = {t->loss.w_clip, t->loss.w_distill};
    tc_loss_workspace ws = {t->sim, t->dsim, t->teacher_sim};
    tc_loss_forward_backward(be, w, B, N, comm->rank * B, E, TE, &sf, teacher,
                             tc_model_params(st) + L->logit_scale, teacher_scale, ws,
                             &t->scalars[S_LOSS], backward ? t->dimg : NULL,
                             backward ? t->dtxt : NULL, t->dimg_all, t->dtxt_all,
                             backward ? tc_model_grads(st) + L->logit_scale : NULL);
    /* the loss of the global batch: the mean of the ranks' row means */
    TC_TRY(comm->all_reduce_f32(comm, &t->scalars[S_LOSS], 1, TC_REDUCE_AVG));
    if (!backward) return TC_OK;
    TC_TRY(return_column_grads(t, t->dimg, t->dimg_all, B, E));
    TC_TRY(return_column_grads(t, t->dtxt, t->dtxt_all, B, E));
    /* DDP: the gradient of the mean over ranks of the per-rank losses, in
     * buckets: the image tower's while the text tower's backward runs, then
     * the rest (text tower, logit scale) */
    float *g = tc_model_grads(st);
    size_t P = L->total;
    tc_comm_request req[3];
    memset(req, 0, sizeof req);
    TC_TRY(tc_model_backward_image(st, t->dimg));
    if (t->v_hi > t->v_lo)
        TC_TRY(comm->all_reduce_start(comm, g + t->v_lo, t->v_hi - t->v_lo, TC_REDUCE_AVG,
                                      &req[0]));
    TC_TRY(tc_model_backward_text(st, t->dtxt));
    if (t->v_hi > t->v_lo) {
        if (t->v_lo > 0) TC_TRY(comm->all_reduce_start(comm, g, t->v_lo, TC_REDUCE_AVG, &req[1]));
        if (P > t->v_hi)
            TC_TRY(comm->all_reduce_start(comm, g + t->v_hi, P - t->v_hi, TC_REDUCE_AVG, &req[2]));
    } else {
        TC_TRY(comm->all_reduce_start(comm, g, P, TC_REDUCE_AVG, &req[1]));
    }
    for (int k = 0; k < 3; k++) TC_TRY(comm->wait(comm, &req[k]));
    return TC_OK;
}

void tc_trainer_reset_optimizer(tc_trainer *t) {
    size_t P = tc_model_layout(t->student)->total;
    t->be->zero(t->be, t->m, P * sizeof(float));
    t->be->zero(t->be, t->v, P * sizeof(float));
    t->adam_step = 0;
}

/* forward, loss, and (when backward) every gradient; loss lands in scalars[S_LOSS] */
static tc_status forward_backward(tc_trainer *t, const float *images, const int32_t *ids, int B,
                                  int backward) {
    tc_backend *be = t->be;
    tc_model *st = t->student;
    const tc_param_layout *L = tc_model_layout(st);
    int E = tc_model_cfg(st)->embed_dim, TE = 0;
    if (B > t->max_batch)
        return tc_fail(TC_ERR_ARG, "trainer: batch %d larger than %d", B, t->max_batch);
    if (distributed(t)) return forward_backward_dp(t, images, ids, B, backward);

    tc_loss_features tf, *teacher = NULL;
    const float *teacher_scale = NULL;
    if (t->teacher && t->loss.w_distill != 0.0f) {
        float *tscale;
        TC_TRY(teacher_forward(t, images, ids, B, &tf, &TE, &tscale));
        tf.img_all = tf.img;
        tf.txt_all = tf.txt;
        teacher = &tf;
        teacher_scale = tscale;
    }
    TC_TRY(tc_model_encode_image(st, images, B));
    TC_TRY(tc_model_encode_text(st, ids, B));
    tc_loss_features sf;
    sf.img = sf.img_all = tc_model_image_features(st);
    sf.txt = sf.txt_all = tc_model_text_features(st);
    if (backward) tc_model_zero_grads(st);
    tc_loss_weights w = {t->loss.w_clip, t->loss.w_distill};
    tc_loss_workspace ws = {t->sim, t->dsim, t->teacher_sim};
    /* one process: rows and columns are the same samples, their gradients add */
    tc_loss_forward_backward(be, w, B, B, 0, E, TE, &sf, teacher,
                             tc_model_params(st) + L->logit_scale, teacher_scale, ws,
                             &t->scalars[S_LOSS], backward ? t->dimg : NULL,
                             backward ? t->dtxt : NULL, t->dimg, t->dtxt,
                             backward ? tc_model_grads(st) + L->logit_scale : NULL);
    if (!backward) return TC_OK;
    TC_TRY(tc_model_backward_image(st, t->dimg));
    TC_TRY(tc_model_backward_text(st, t->dtxt));
    return TC_OK;
}

tc_status tc_trainer_loss(tc_trainer *t, const float *images, const int32_t *ids, int B,
                          int backward, float *loss) {
    TC_TRY(forward_backward(t, images, ids, B, backward));
    return t->be->download(t->be, loss, &t->scalars[S_LOSS], sizeof(float));
}

tc_status tc_trainer_compute(tc_trainer *t, const float *images, const int32_t *ids, int B,
                             tc_step_result *r) {
    tc_backend *be = t->be;
    tc_model *st = t->student;
    size_t P = tc_model_layout(st)->total;
    memset(r, 0, sizeof *r);
    r->lr = tc_lr_at(&t->optim, t->step);
    TC_TRY(forward_backward(t, images, ids, B, 1));
    be->sum_squares(be, &t->scalars[S_SUMSQ], tc_model_grads(st), P);
    be->all_finite(be, &t->scalars[S_FINITE], &t->scalars[S_LOSS], 2); /* loss and sum of squares */
    float host[S_COUNT];
    TC_TRY(be->download(be, host, t->scalars, sizeof host));
    r->loss = host[S_LOSS];
    r->grad_norm = sqrtf(host[S_SUMSQ]);
    r->skipped = host[S_FINITE] == 0.0f;
    t->last_sum_sq = host[S_SUMSQ];
    return TC_OK;
}

float tc_trainer_clip_coefficient(const tc_trainer *t, double extra_sum_sq) {
    if (t->optim.grad_clip <= 0.0f) return 1.0f;
    /* torch.nn.utils.clip_grad_norm_: max_norm / (total_norm + 1e-6), at most 1 */
    double norm = sqrt((double)t->last_sum_sq + extra_sum_sq);
    double c = t->optim.grad_clip / (norm + 1e-6);
    return c < 1.0 ? (float)c : 1.0f;
}

tc_status tc_trainer_apply(tc_trainer *t, double extra_sum_sq) {
    tc_backend *be = t->be;
    tc_model *st = t->student;
    const tc_param_layout *L = tc_model_layout(st);
    const float *clip = NULL;
    if (t->optim.grad_clip > 0.0f) {
        if (extra_sum_sq == 0.0)
            be->clip_coefficient(be, &t->scalars[S_CLIP], &t->scalars[S_SUMSQ], t->optim.grad_clip);
        else
            be->fill_f32(be, &t->scalars[S_CLIP], tc_trainer_clip_coefficient(t, extra_sum_sq), 1);
        clip = &t->scalars[S_CLIP];
    }
    tc_adamw_hparams hp = {tc_lr_at(&t->optim, t->step), t->optim.beta1, t->optim.beta2,
                           t->optim.eps, t->adam_step + 1};
    tc_act *compute = be->separate_compute_weights ? tc_model_compute_weights(st) : NULL;
    be->adamw_update(be, tc_model_params(st), tc_model_grads(st), t->m, t->v, compute, t->segs,
                     t->nseg, hp, clip);
    /* the logit-scale rule after every step: the method fixes it, open_clip clamps it */
    float *log_scale = tc_model_params(st) + L->logit_scale;
    if (t->loss.logit_scale > 0.0f)
        be->fill_f32(be, log_scale, logf(t->loss.logit_scale), 1);
    else
        be->clamp_f32(be, log_scale, 0.0f, logf(100.0f), 1);
    t->step++;
    t->adam_step++;
    return TC_OK;
}

tc_status tc_trainer_step(tc_trainer *t, const float *images, const int32_t *ids, int B,
                          tc_step_result *r) {
    TC_TRY(tc_trainer_compute(t, images, ids, B, r));
    if (r->skipped) return TC_OK;
    return tc_trainer_apply(t, 0.0);
}
