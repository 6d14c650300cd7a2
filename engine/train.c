#include "train.h"

#include "loss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* device scalars of a step; S_FINITE.. is step_gate's state, in its order */
enum { S_LOSS, S_SUMSQ, S_CLIP, S_FINITE, S_UPDATES, S_SKIPPED, S_IN_A_ROW, S_COUNT };

/* a run of the gradient buffer all-reduced as one collective, started when
 * the backward reaches event `ready` (train.c's event numbering below) */
typedef struct {
    size_t lo, hi;
    int ready;
} grad_bucket;

struct tc_trainer {
    tc_model *student, *teacher;
    tc_optim_config optim;
    tc_loss_config loss;
    tc_parallel_config par;
    tc_backend *be;
    int step;      /* schedule position: the lr of the next step is tc_lr_at(step) */
    int max_batch; /* b: samples per micro-batch */
    int rows;      /* R = accum_steps * b: this rank's samples per step, at most */
    int world;     /* W */
    int shape[3];  /* rows, world, sharded of the step buffers as allocated */
    tc_param_segment *segs;
    int nseg;
    float *m, *v;                      /* AdamW moments: (P), or this rank's slice with zero1 */
    float *sim, *dsim, *teacher_sim;   /* (2, R, W*R): i2t then t2i */
    float *dimg, *dtxt;                /* (R, E) feature gradients of this rank's rows */
    float *scalars;                    /* S_COUNT */
    float *in_images;                  /* (R, 3, S, S) the step's inputs on the device */
    int32_t *in_ids;                   /* (R, context) */
    int async_inputs;                  /* inputs uploaded without waiting (fences) */
    long long fences;                  /* input fences recorded so far */
    float last_sum_sq;                 /* of the last result read, on the host */
    float last_lr;
    /* accum_steps > 1: the features of every micro-batch of the step */
    float *img_rows, *txt_rows;        /* (R, E) */
    float *timg_rows, *ttxt_rows;      /* (R, TE) */
    /* data parallel (comm with world > 1) */
    tc_comm *comm;
    float *img_all, *txt_all;          /* (W*R, E) gathered student features */
    float *timg_all, *ttxt_all;        /* (W*R, TE) gathered teacher features */
    float *dimg_all, *dtxt_all;        /* (W*R, E) column gradients of this rank's loss */
    float *cols;                       /* (R, E) the columns' gradients reduced to their owner */
    float *one;                        /* device 1.0f: the add of cols through gemm */
    /* bucketed all-reduce */
    grad_bucket *buckets;
    tc_comm_request *requests;
    int nbuckets, hooks_on, base_text;
    int started_early; /* buckets the last backward started through its events */
    tc_status hook_status;
    /* zero1: rank r owns elements [shard_lo[r], shard_lo[r] + shard_n[r]) */
    size_t *shard_n, *shard_lo;
    float *gshard;                     /* (shard_n[rank]) averaged gradient slice */
    tc_param_segment *zsegs;           /* segs cut to this rank's slice, relative to it */
    int nzseg;
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
        if (p->buffer) continue; /* BatchNorm running statistics: not optimised */
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

static int distributed(const tc_trainer *t) { return t->comm && t->comm->world_size > 1; }
static int sharded(const tc_trainer *t) { return distributed(t) && t->par.zero1; }

static size_t param_count(const tc_trainer *t) { return tc_model_layout(t->student)->total; }
static int student_dim(const tc_trainer *t) { return tc_model_cfg(t->student)->embed_dim; }
static int teacher_dim(const tc_trainer *t) {
    return t->teacher ? tc_model_cfg(t->teacher)->embed_dim : 0;
}
static size_t moment_count(const tc_trainer *t) {
    return sharded(t) ? t->shard_n[t->comm->rank] : param_count(t);
}

/* ---------------------------------------------------------------- buffers ---- */

/* every step buffer whose size depends on the rows, the world or the sharding */
static void free_step_buffers(tc_trainer *t) {
    tc_backend *be = t->be;
    float **bufs[] = {&t->m,        &t->v,        &t->sim,      &t->dsim,     &t->teacher_sim,
                      &t->dimg,     &t->dtxt,     &t->img_rows, &t->txt_rows, &t->timg_rows,
                      &t->ttxt_rows, &t->img_all, &t->txt_all,  &t->timg_all, &t->ttxt_all,
                      &t->dimg_all, &t->dtxt_all, &t->cols,     &t->one,      &t->gshard,
                      &t->in_images};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        if (*bufs[i]) be->free(be, *bufs[i]);
        *bufs[i] = NULL;
    }
    if (t->in_ids) be->free(be, t->in_ids);
    t->in_ids = NULL;
}

/* the slices of zero1: contiguous, in rank order, multiples of 64 elements
 * but the last (aligned vector access on every slice) */
static tc_status plan_shards(tc_trainer *t) {
    size_t P = param_count(t), W = (size_t)t->world;
    free(t->shard_n);
    t->shard_n = calloc(2 * W, sizeof *t->shard_n);
    if (!t->shard_n) return tc_fail(TC_ERR_OOM, "trainer: out of host memory");
    t->shard_lo = t->shard_n + W;
    size_t per = (P + W - 1) / W;
    per = (per + 63) / 64 * 64;
    size_t at = 0;
    for (size_t r = 0; r < W; r++) {
        size_t n = at >= P ? 0 : (P - at < per ? P - at : per);
        t->shard_lo[r] = at;
        t->shard_n[r] = n;
        at += n;
    }
    /* the weight-decay segments cut to this rank's slice */
    size_t lo = t->shard_lo[t->comm->rank], hi = lo + t->shard_n[t->comm->rank];
    free(t->zsegs);
    t->zsegs = calloc((size_t)t->nseg, sizeof *t->zsegs);
    if (!t->zsegs) return tc_fail(TC_ERR_OOM, "trainer: out of host memory");
    t->nzseg = 0;
    for (int i = 0; i < t->nseg; i++) {
        size_t a = t->segs[i].offset, b = a + t->segs[i].count;
        if (a < lo) a = lo;
        if (b > hi) b = hi;
        if (a < b) t->zsegs[t->nzseg++] = (tc_param_segment){a - lo, b - a, t->segs[i].weight_decay};
    }
    return TC_OK;
}

/* the step buffers for the current rows, world and sharding (kept when
 * those are what they were allocated for); new moments start at zero */
static tc_status alloc_step_buffers(tc_trainer *t) {
    int shape[3] = {t->rows, t->world, sharded(t)};
    if (t->m && memcmp(shape, t->shape, sizeof shape) == 0) return TC_OK;
    free_step_buffers(t);
    t->shape[0] = -1; /* nothing valid until every buffer is made */
    size_t R = (size_t)t->rows, W = (size_t)t->world, E = (size_t)student_dim(t);
    size_t TE = (size_t)teacher_dim(t), F = sizeof(float);
    if (R * W > (1u << 24)) return tc_fail(TC_ERR_ARG, "trainer: global batch %zu x %zu too large", W, R);
    if (sharded(t)) TC_TRY(plan_shards(t));
    size_t rows = 2 * R * W * R * F, M = moment_count(t);
    const tc_model_config *sc = tc_model_cfg(t->student);
    size_t img_n = (size_t)3 * sc->vision.image_size * sc->vision.image_size;
    size_t ids_n = (size_t)sc->text.context_length;
    int acc = t->par.accum_steps > 1, dp = distributed(t), distill = t->teacher != NULL;
    tc_status s;
    if ((s = trainer_alloc(t, (void **)&t->m, M * F)) != TC_OK ||
        (s = trainer_alloc(t, (void **)&t->v, M * F)) != TC_OK ||
        (s = trainer_alloc(t, (void **)&t->sim, rows)) != TC_OK ||
        (s = trainer_alloc(t, (void **)&t->dsim, rows)) != TC_OK ||
        (distill && (s = trainer_alloc(t, (void **)&t->teacher_sim, rows)) != TC_OK) ||
        (s = trainer_alloc(t, (void **)&t->dimg, R * E * F)) != TC_OK ||
        (s = trainer_alloc(t, (void **)&t->dtxt, R * E * F)) != TC_OK ||
        (acc && (s = trainer_alloc(t, (void **)&t->img_rows, R * E * F)) != TC_OK) ||
        (acc && (s = trainer_alloc(t, (void **)&t->txt_rows, R * E * F)) != TC_OK) ||
        (acc && distill && (s = trainer_alloc(t, (void **)&t->timg_rows, R * TE * F)) != TC_OK) ||
        (acc && distill && (s = trainer_alloc(t, (void **)&t->ttxt_rows, R * TE * F)) != TC_OK) ||
        (dp && (s = trainer_alloc(t, (void **)&t->img_all, W * R * E * F)) != TC_OK) ||
        (dp && (s = trainer_alloc(t, (void **)&t->txt_all, W * R * E * F)) != TC_OK) ||
        (dp && distill && (s = trainer_alloc(t, (void **)&t->timg_all, W * R * TE * F)) != TC_OK) ||
        (dp && distill && (s = trainer_alloc(t, (void **)&t->ttxt_all, W * R * TE * F)) != TC_OK) ||
        (dp && (s = trainer_alloc(t, (void **)&t->dimg_all, W * R * E * F)) != TC_OK) ||
        (dp && (s = trainer_alloc(t, (void **)&t->dtxt_all, W * R * E * F)) != TC_OK) ||
        (dp && (s = trainer_alloc(t, (void **)&t->cols, R * E * F)) != TC_OK) ||
        (dp && (s = trainer_alloc(t, (void **)&t->one, F)) != TC_OK) ||
        (sharded(t) && (s = trainer_alloc(t, (void **)&t->gshard, (M ? M : 1) * F)) != TC_OK) ||
        (s = trainer_alloc(t, (void **)&t->in_images, R * img_n * F)) != TC_OK ||
        (s = trainer_alloc(t, (void **)&t->in_ids, R * ids_n * sizeof(int32_t))) != TC_OK)
        return s;
    memcpy(t->shape, shape, sizeof shape);
    if (t->one) t->be->fill_f32(t->be, t->one, 1.0f, 1);
    t->be->zero(t->be, t->m, M * F);
    t->be->zero(t->be, t->v, M * F);
    t->be->fill_f32(t->be, &t->scalars[S_UPDATES], 0.0f, 1);
    return TC_OK;
}

/* ---------------------------------------------------------------- buckets ---- */

/* backward events, in the order they happen: 0 the loss (logit scale),
 * 1 the image head, 1 + (Lv - l) image block l, Lv + 2 the image tower's
 * embeddings, then the same for the text tower from base_text */
static int tower_event(const tc_trainer *t, tc_tower_id tower, int layer) {
    const tc_model_config *c = tc_model_cfg(t->student);
    if (tower == TC_TOWER_VISION) return 1 + c->vision.layers - layer;
    return t->base_text + c->text.layers - layer;
}

/* the event after which a parameter's gradient is final */
static int param_event(const tc_trainer *t, const tc_param_layout *L, const tc_param_info *p) {
    const tc_model_config *c = tc_model_cfg(t->student);
    if (p->tower == TC_TOWER_SHARED) return 0;
    int vision = p->tower == TC_TOWER_VISION;
    const tc_tower_config *tc = vision ? &c->vision : &c->text;
    tc_tower_id id = vision ? TC_TOWER_VISION : TC_TOWER_TEXT;
    const char *rb = strstr(p->name, "resblocks.");
    if (rb) {
        int l = atoi(rb + strlen("resblocks."));
        if (l >= 0 && l < tc->layers) return tower_event(t, id, l);
    }
    size_t o = p->offset;
    int head = vision ? (o == L->v_ln_post_w || o == L->v_ln_post_b || o == L->v_proj)
                      : (o == L->ln_final_w || o == L->ln_final_b || o == L->text_proj);
    if (head) return tower_event(t, id, tc->layers);
    return tower_event(t, id, -1); /* embeddings: final when the tower's backward returns */
}

static int cmp_offset_desc(const void *a, const void *b) {
    const tc_param_info *x = *(const tc_param_info *const *)a, *y = *(const tc_param_info *const *)b;
    return x->offset < y->offset ? 1 : x->offset > y->offset ? -1 : 0;
}

/* buckets of about bucket_bytes over the layout from its end (the backward
 * meets the parameters roughly in reverse layout order, as DDP assumes) */
static tc_status plan_buckets(tc_trainer *t) {
    const tc_param_layout *L = tc_model_layout(t->student);
    const tc_model_config *c = tc_model_cfg(t->student);
    t->base_text = c->vision.layers + 3;
    size_t cap = t->par.bucket_bytes ? t->par.bucket_bytes : (size_t)25 << 20;
    cap /= sizeof(float);
    if (cap == 0) cap = 1;
    const tc_param_info **order = malloc((size_t)L->count * sizeof *order);
    free(t->buckets);
    free(t->requests);
    t->buckets = calloc((size_t)L->count, sizeof *t->buckets);
    t->requests = calloc((size_t)L->count, sizeof *t->requests);
    if (!order || !t->buckets || !t->requests) {
        free(order);
        return tc_fail(TC_ERR_OOM, "trainer: out of host memory");
    }
    for (int i = 0; i < L->count; i++) order[i] = &L->params[i];
    qsort(order, (size_t)L->count, sizeof *order, cmp_offset_desc);
    t->nbuckets = 0;
    grad_bucket *cur = NULL;
    for (int i = 0; i < L->count; i++) {
        const tc_param_info *p = order[i];
        int ev = param_event(t, L, p);
        if (!cur || cur->hi - cur->lo >= cap) {
            cur = &t->buckets[t->nbuckets++];
            cur->hi = p->offset + p->count;
            cur->lo = p->offset;
            cur->ready = ev;
        }
        /* a gap between tensors (none in practice) travels with the bucket */
        cur->lo = p->offset;
        if (ev > cur->ready) cur->ready = ev;
    }
    free(order);
    return TC_OK;
}

/* starts the all-reduce of every bucket complete at this event */
static void fire_event(tc_trainer *t, int event) {
    if (!t->hooks_on) return;
    float *g = tc_model_grads(t->student);
    for (int k = 0; k < t->nbuckets && t->hook_status == TC_OK; k++) {
        const grad_bucket *b = &t->buckets[k];
        if (b->ready != event) continue;
        t->hook_status = t->comm->all_reduce_start(t->comm, g + b->lo, b->hi - b->lo,
                                                   TC_REDUCE_AVG, &t->requests[k]);
        t->started_early++;
    }
}

static void backward_hook(void *ctx, tc_tower_id tower, int layer) {
    tc_trainer *t = ctx;
    fire_event(t, tower_event(t, tower, layer));
}

/* --------------------------------------------------------------- lifetime ---- */

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
        if (tc_model_max_batch(teacher) < tc_model_max_batch(student))
            return tc_fail(TC_ERR_ARG, "trainer: teacher %s takes %d samples, student %s %d",
                           tc->name, tc_model_max_batch(teacher), sc->name,
                           tc_model_max_batch(student));
    }
    tc_trainer *t = calloc(1, sizeof *t);
    if (!t) return tc_fail(TC_ERR_OOM, "trainer: out of host memory");
    t->student = student;
    t->teacher = teacher;
    t->optim = *optim;
    t->loss = *loss;
    t->par.accum_steps = 1;
    t->be = tc_model_backend(student);
    t->max_batch = t->rows = tc_model_max_batch(student);
    t->world = 1;
    tc_status s;
    if ((s = build_segments(t)) != TC_OK ||
        (s = trainer_alloc(t, (void **)&t->scalars, S_COUNT * sizeof(float))) != TC_OK ||
        (s = alloc_step_buffers(t)) != TC_OK) {
        tc_trainer_destroy(t);
        return s;
    }
    t->be->zero(t->be, t->scalars, S_COUNT * sizeof(float));
    *out = t;
    return TC_OK;
}

void tc_trainer_destroy(tc_trainer *t) {
    if (!t) return;
    free_step_buffers(t);
    if (t->scalars) t->be->free(t->be, t->scalars);
    if (t->comm) tc_model_set_backward_hook(t->student, NULL, NULL);
    free(t->segs);
    free(t->zsegs);
    free(t->shard_n);
    free(t->buckets);
    free(t->requests);
    free(t);
}

int tc_trainer_step_index(const tc_trainer *t) { return t->step; }
void tc_trainer_set_step_index(tc_trainer *t, int step) { t->step = step; }

int tc_trainer_adam_step(tc_trainer *t) {
    float n = 0.0f;
    if (t->be->download(t->be, &n, &t->scalars[S_UPDATES], sizeof n) != TC_OK) return -1;
    return (int)n;
}

void tc_trainer_set_adam_step(tc_trainer *t, int step) {
    t->be->fill_f32(t->be, &t->scalars[S_UPDATES], (float)step, 1);
}

void tc_trainer_set_optim(tc_trainer *t, const tc_optim_config *optim) {
    t->optim = *optim;
    for (int i = 0; i < t->nseg; i++)
        if (t->segs[i].weight_decay != 0.0f) t->segs[i].weight_decay = optim->weight_decay;
    for (int i = 0; i < t->nzseg; i++)
        if (t->zsegs[i].weight_decay != 0.0f) t->zsegs[i].weight_decay = optim->weight_decay;
}

size_t tc_trainer_optimizer_bytes(const tc_trainer *t) {
    return 2 * moment_count(t) * sizeof(float);
}

size_t tc_trainer_device_bytes(const tc_trainer *t) {
    size_t R = (size_t)t->rows, W = (size_t)t->world;
    size_t E = (size_t)student_dim(t), TE = (size_t)teacher_dim(t);
    const tc_model_config *sc = tc_model_cfg(t->student);
    size_t in = R * (3 * (size_t)sc->vision.image_size * sc->vision.image_size +
                     (size_t)sc->text.context_length); /* inputs: floats and int32 */
    size_t floats = S_COUNT + 2 * R * W * R * (t->teacher ? 3 : 2) + 2 * R * E + in;
    if (t->par.accum_steps > 1) floats += 2 * R * (E + TE);
    if (distributed(t)) floats += 4 * W * R * E + 2 * W * R * TE + R * E + 1;
    if (sharded(t)) floats += moment_count(t);
    return floats * sizeof(float) + tc_trainer_optimizer_bytes(t);
}

tc_parallel_config tc_trainer_parallel(const tc_trainer *t) { return t->par; }

int tc_trainer_buckets(const tc_trainer *t, int *started_by_backward) {
    if (started_by_backward) *started_by_backward = t->started_early;
    return distributed(t) && !sharded(t) ? t->nbuckets : 0;
}

tc_status tc_trainer_set_parallel(tc_trainer *t, const tc_parallel_config *p) {
    if (p->accum_steps < 1 || p->accum_steps > 4096)
        return tc_fail(TC_ERR_ARG, "trainer: accum_steps %d is not in 1..4096", p->accum_steps);
    t->par = *p;
    t->rows = t->max_batch * p->accum_steps;
    if (distributed(t)) TC_TRY(plan_buckets(t));
    return alloc_step_buffers(t);
}

tc_status tc_trainer_set_comm(tc_trainer *t, tc_comm *comm) {
    if (!comm || comm->world_size <= 1) {
        if (t->comm) tc_model_set_backward_hook(t->student, NULL, NULL);
        t->comm = NULL;
        t->world = 1;
        return alloc_step_buffers(t);
    }
    if (t->comm) return tc_fail(TC_ERR_ARG, "trainer: the comm is already set");
    if (comm->world_size > (1 << 20))
        return tc_fail(TC_ERR_ARG, "trainer: %d ranks", comm->world_size);
    t->comm = comm;
    t->world = comm->world_size;
    TC_TRY(plan_buckets(t));
    tc_model_set_backward_hook(t->student, backward_hook, t);
    return alloc_step_buffers(t);
}

void tc_trainer_reset_optimizer(tc_trainer *t) {
    size_t M = moment_count(t);
    t->be->zero(t->be, t->m, M * sizeof(float));
    t->be->zero(t->be, t->v, M * sizeof(float));
    t->be->fill_f32(t->be, &t->scalars[S_UPDATES], 0.0f, 1);
}

/* -------------------------------------------------------------- moments ---- */

static tc_status moments_io(tc_trainer *t, float *m, float *v, int get) {
    tc_backend *be = t->be;
    size_t P = param_count(t);
    if (!sharded(t)) {
        if (get) {
            TC_TRY(be->download(be, m, t->m, P * sizeof(float)));
            return be->download(be, v, t->v, P * sizeof(float));
        }
        TC_TRY(be->upload(be, t->m, m, P * sizeof(float)));
        return be->upload(be, t->v, v, P * sizeof(float));
    }
    int me = t->comm->rank;
    size_t lo = t->shard_lo[me], n = t->shard_n[me];
    if (!get) {
        TC_TRY(be->upload(be, t->m, m + lo, n * sizeof(float)));
        return be->upload(be, t->v, v + lo, n * sizeof(float));
    }
    /* every slice through the host, one broadcast per owner: nothing of
     * the full size is allocated on the device */
    TC_TRY(be->download(be, m + lo, t->m, n * sizeof(float)));
    TC_TRY(be->download(be, v + lo, t->v, n * sizeof(float)));
    const size_t piece = (size_t)64 << 20; /* floats per call: MPI counts are ints */
    for (int r = 0; r < t->world; r++) {
        for (size_t at = 0; at < t->shard_n[r]; at += piece) {
            size_t n = t->shard_n[r] - at < piece ? t->shard_n[r] - at : piece;
            size_t off = t->shard_lo[r] + at;
            TC_TRY(t->comm->host_broadcast(t->comm, m + off, n * sizeof(float), r));
            TC_TRY(t->comm->host_broadcast(t->comm, v + off, n * sizeof(float), r));
        }
    }
    return TC_OK;
}

tc_status tc_trainer_get_moments(tc_trainer *t, float *m, float *v) {
    return moments_io(t, m, v, 1);
}

tc_status tc_trainer_set_moments(tc_trainer *t, const float *m, const float *v) {
    return moments_io(t, (float *)m, (float *)v, 0);
}

/* ------------------------------------------------------------------- step ---- */

/* gather-with-grad: the columns' gradients of every rank's loss, summed onto
 * their owner, added to this rank's row gradient drows (R, E) */
static tc_status return_column_grads(tc_trainer *t, float *drows, const float *dcols_all, int R,
                                     int E) {
    tc_backend *be = t->be;
    size_t nE = (size_t)R * E;
    TC_TRY(t->comm->reduce_scatter_f32(t->comm, dcols_all, t->cols, nE, TC_REDUCE_SUM));
    /* drows (1, nE) += one (1,1) @ cols (1, nE) */
    be->gemm_f32(be, 0, 0, 1, (int)nE, 1, 1.0f, t->one, t->cols, 1.0f, drows);
    return TC_OK;
}

/* the frozen teacher's features of b samples; its logit scale is fixed
 * (docs/method.md §1.3: ln 50 before its forward) */
static tc_status teacher_forward(tc_trainer *t, const float *images, const int32_t *ids, int b) {
    tc_model *te = t->teacher;
    float *tscale = tc_model_params(te) + tc_model_layout(te)->logit_scale;
    t->be->fill_f32(t->be, tscale, logf(t->loss.teacher_logit_scale), 1);
    TC_TRY(tc_model_encode_image_device(te, images, b));
    return tc_model_encode_text_device(te, ids, b);
}

/* images and ids: device, micro-batch j of the step's inputs. a ResNet's
 * BatchNorms use the batch's statistics (model.train()); the running
 * statistics take one step per micro-batch, not again when a micro-batch is
 * encoded a second time for its backward (replay) */
static tc_status student_forward(tc_trainer *t, const float *images, const int32_t *ids, int b,
                                 int replay) {
    tc_model_set_bn_mode(t->student, replay ? TC_BN_REPLAY : TC_BN_TRAIN);
    tc_status s = tc_model_encode_image_device(t->student, images, b);
    tc_model_set_bn_mode(t->student, TC_BN_EVAL);
    TC_TRY(s);
    return tc_model_encode_text_device(t->student, ids, b);
}

/* the step's B samples to the device, checked first (the embedding gather
 * trusts its ids); asynchronously with a fence when the caller asked */
static tc_status upload_inputs(tc_trainer *t, const float *images, const int32_t *ids, int B,
                               size_t img_n, size_t ids_n) {
    tc_backend *be = t->be;
    TC_TRY(tc_model_check_ids(t->student, ids, B));
    if (t->teacher) TC_TRY(tc_model_check_ids(t->teacher, ids, B));
    size_t ib = (size_t)B * img_n * sizeof(float), tb = (size_t)B * ids_n * sizeof(int32_t);
    if (!t->async_inputs) {
        TC_TRY(be->upload(be, t->in_images, images, ib));
        return be->upload(be, t->in_ids, ids, tb);
    }
    TC_TRY(be->upload_async(be, t->in_images, images, ib));
    TC_TRY(be->upload_async(be, t->in_ids, ids, tb));
    TC_TRY(be->fence_record(be, (int)(t->fences % TC_FENCES)));
    t->fences++;
    return TC_OK;
}

void tc_trainer_set_async_inputs(tc_trainer *t, int on) { t->async_inputs = on != 0; }

tc_status tc_trainer_inputs_wait(tc_trainer *t, int lag) {
    if (lag < 0 || lag > TC_FENCES - 2)
        return tc_fail(TC_ERR_ARG, "trainer: inputs_wait lag %d is not in 0..%d", lag,
                       TC_FENCES - 2);
    long long f = t->fences - 1 - lag;
    if (!t->async_inputs || f < 0) return TC_OK;
    return t->be->fence_wait(t->be, (int)(f % TC_FENCES));
}

/* dst (rows at j*b) = the model's features of its last encode (b, E) */
static void keep_rows(tc_trainer *t, float *dst, const float *features, int j, int b, int E) {
    size_t n = (size_t)b * E;
    t->be->copy(t->be, dst + (size_t)j * n, features, n * sizeof(float));
}

/* this rank's rows (n, E) and the global batch (W*n, E) of one feature kind */
static tc_status gather_rows(tc_trainer *t, const float *rows, float *all, int n, int E,
                             const float **out_all) {
    if (!distributed(t)) {
        *out_all = rows;
        return TC_OK;
    }
    TC_TRY(t->comm->all_gather_f32(t->comm, rows, all, (size_t)n * E));
    *out_all = all;
    return TC_OK;
}

/* the rank's gradients after the last backward: all-reduced in buckets (the
 * hooks started them; start what is left, then wait) or reduce-scattered
 * into the slice this rank updates */
static tc_status reduce_gradients(tc_trainer *t) {
    float *g = tc_model_grads(t->student);
    if (sharded(t))
        return t->comm->reduce_scatter_v_f32(t->comm, g, t->gshard, t->shard_n, TC_REDUCE_AVG);
    TC_TRY(t->hook_status);
    for (int k = 0; k < t->nbuckets; k++) {
        if (t->requests[k].active) continue;
        /* a guard: every parameter's event is raised by construction
         * (test_distributed checks that the backward started them all) */
        TC_TRY(t->comm->all_reduce_start(t->comm, g + t->buckets[k].lo,
                                         t->buckets[k].hi - t->buckets[k].lo, TC_REDUCE_AVG,
                                         &t->requests[k]));
    }
    for (int k = 0; k < t->nbuckets; k++) TC_TRY(t->comm->wait(t->comm, &t->requests[k]));
    return TC_OK;
}

/* forward, loss and (when backward) every gradient of a step of B samples on
 * this rank, in accum_steps micro-batches; the loss lands in scalars[S_LOSS].
 *   1. each micro-batch j: the teacher's and the student's features (kept
 *      in the rows buffers when there is more than one micro-batch)
 *   2. data parallel: all-gather the rows of every rank
 *   3. the loss of this rank's B rows against all W*B columns, and its
 *      feature gradients; the column gradients go back to their owners
 *   4. each micro-batch from the last: encode again (not the last, whose
 *      activations are live), backward with its rows of the gradient; the
 *      last backward raises the events that start the bucket all-reduces */
static tc_status forward_backward(tc_trainer *t, const float *images, const int32_t *ids, int B,
                                  int backward) {
    tc_backend *be = t->be;
    tc_model *st = t->student;
    const tc_param_layout *L = tc_model_layout(st);
    const tc_model_config *sc = tc_model_cfg(st);
    int k = t->par.accum_steps, E = student_dim(t), TE = teacher_dim(t);
    if (B < 1 || B % k != 0)
        return tc_fail(TC_ERR_ARG, "trainer: batch %d is not a positive multiple of accum_steps %d",
                       B, k);
    int b = B / k;
    if (b > t->max_batch)
        return tc_fail(TC_ERR_ARG, "trainer: micro-batch %d larger than %d", b, t->max_batch);
    int W = t->world, rank = distributed(t) ? t->comm->rank : 0, N = W * B;
    size_t img_n = (size_t)3 * sc->vision.image_size * sc->vision.image_size;
    size_t ids_n = (size_t)sc->text.context_length;
    int distill = t->teacher && t->loss.w_distill != 0.0f;
    TC_TRY(upload_inputs(t, images, ids, B, img_n, ids_n));
    images = t->in_images;
    ids = t->in_ids;

    for (int j = 0; j < k; j++) {
        const float *im = images + (size_t)j * b * img_n;
        const int32_t *tk = ids + (size_t)j * b * ids_n;
        if (distill) {
            TC_TRY(teacher_forward(t, im, tk, b));
            if (k > 1) {
                keep_rows(t, t->timg_rows, tc_model_image_features(t->teacher), j, b, TE);
                keep_rows(t, t->ttxt_rows, tc_model_text_features(t->teacher), j, b, TE);
            }
        }
        TC_TRY(student_forward(t, im, tk, b, 0));
        if (k > 1) {
            keep_rows(t, t->img_rows, tc_model_image_features(st), j, b, E);
            keep_rows(t, t->txt_rows, tc_model_text_features(st), j, b, E);
        }
    }
    tc_loss_features sf, tf, *teacher = NULL;
    sf.img = k > 1 ? t->img_rows : tc_model_image_features(st);
    sf.txt = k > 1 ? t->txt_rows : tc_model_text_features(st);
    TC_TRY(gather_rows(t, sf.img, t->img_all, B, E, &sf.img_all));
    TC_TRY(gather_rows(t, sf.txt, t->txt_all, B, E, &sf.txt_all));
    const float *teacher_scale = NULL;
    if (distill) {
        tf.img = k > 1 ? t->timg_rows : tc_model_image_features(t->teacher);
        tf.txt = k > 1 ? t->ttxt_rows : tc_model_text_features(t->teacher);
        TC_TRY(gather_rows(t, tf.img, t->timg_all, B, TE, &tf.img_all));
        TC_TRY(gather_rows(t, tf.txt, t->ttxt_all, B, TE, &tf.txt_all));
        teacher = &tf;
        teacher_scale = tc_model_params(t->teacher) + tc_model_layout(t->teacher)->logit_scale;
    }
    if (backward) tc_model_zero_grads(st);
    tc_loss_weights w = {t->loss.w_clip, t->loss.w_distill};
    tc_loss_workspace ws = {t->sim, t->dsim, t->teacher_sim};
    /* one process: rows and columns are the same samples, their gradients add */
    float *dimg_cols = distributed(t) ? t->dimg_all : t->dimg;
    float *dtxt_cols = distributed(t) ? t->dtxt_all : t->dtxt;
    tc_loss_forward_backward(be, w, B, N, rank * B, E, TE, &sf, teacher,
                             tc_model_params(st) + L->logit_scale, teacher_scale, ws,
                             &t->scalars[S_LOSS], backward ? t->dimg : NULL,
                             backward ? t->dtxt : NULL, dimg_cols, dtxt_cols,
                             backward ? tc_model_grads(st) + L->logit_scale : NULL);
    /* the loss of the global batch: the mean of the ranks' row means */
    if (distributed(t))
        TC_TRY(t->comm->all_reduce_f32(t->comm, &t->scalars[S_LOSS], 1, TC_REDUCE_AVG));
    if (!backward) return TC_OK;
    if (distributed(t)) {
        TC_TRY(return_column_grads(t, t->dimg, t->dimg_all, B, E));
        TC_TRY(return_column_grads(t, t->dtxt, t->dtxt_all, B, E));
    }
    t->hook_status = TC_OK;
    t->started_early = 0;
    for (int j = k - 1; j >= 0; j--) {
        if (j < k - 1)
            TC_TRY(student_forward(t, images + (size_t)j * b * img_n, ids + (size_t)j * b * ids_n,
                                   b, 1));
        t->hooks_on = j == 0 && distributed(t) && !sharded(t);
        fire_event(t, 0);
        tc_status s = tc_model_backward_image(st, t->dimg + (size_t)j * b * E);
        fire_event(t, tower_event(t, TC_TOWER_VISION, -1));
        if (s == TC_OK) s = tc_model_backward_text(st, t->dtxt + (size_t)j * b * E);
        fire_event(t, tower_event(t, TC_TOWER_TEXT, -1));
        t->hooks_on = 0;
        TC_TRY(s);
    }
    if (distributed(t)) TC_TRY(reduce_gradients(t));
    return TC_OK;
}

tc_status tc_trainer_loss(tc_trainer *t, const float *images, const int32_t *ids, int B,
                          int backward, float *loss) {
    TC_TRY(forward_backward(t, images, ids, B, backward));
    if (backward && sharded(t)) {
        /* the full averaged gradient for the caller: the slices, gathered */
        tc_backend *be = t->be;
        int me = t->comm->rank;
        float *g = tc_model_grads(t->student);
        be->copy(be, g + t->shard_lo[me], t->gshard, t->shard_n[me] * sizeof(float));
        TC_TRY(t->comm->all_gather_v_f32(t->comm, g, t->shard_n));
    }
    return t->be->download(t->be, loss, &t->scalars[S_LOSS], sizeof(float));
}

tc_status tc_trainer_read_result(tc_trainer *t, tc_step_result *r) {
    float host[S_COUNT];
    TC_TRY(t->be->download(t->be, host, t->scalars, sizeof host));
    memset(r, 0, sizeof *r);
    r->lr = t->last_lr;
    r->loss = host[S_LOSS];
    r->grad_norm = sqrtf(host[S_SUMSQ]);
    r->skipped = host[S_FINITE] == 0.0f;
    r->skipped_in_a_row = (int)host[S_IN_A_ROW];
    r->skipped_total = (long long)host[S_SKIPPED];
    t->last_sum_sq = host[S_SUMSQ];
    return TC_OK;
}

tc_status tc_trainer_compute(tc_trainer *t, const float *images, const int32_t *ids, int B,
                             tc_step_result *r) {
    tc_backend *be = t->be;
    t->last_lr = tc_lr_at(&t->optim, t->step);
    TC_TRY(forward_backward(t, images, ids, B, 1));
    if (sharded(t)) {
        /* the norm of the averaged gradient from the slices */
        be->sum_squares(be, &t->scalars[S_SUMSQ], t->gshard, moment_count(t));
        TC_TRY(t->comm->all_reduce_f32(t->comm, &t->scalars[S_SUMSQ], 1, TC_REDUCE_SUM));
    } else {
        be->sum_squares(be, &t->scalars[S_SUMSQ], tc_model_grads(t->student), param_count(t));
    }
    be->all_finite(be, &t->scalars[S_FINITE], &t->scalars[S_LOSS], 2); /* loss and sum of squares */
    return r ? tc_trainer_read_result(t, r) : TC_OK;
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
    /* skip or count the update on the device */
    be->step_gate(be, &t->scalars[S_FINITE]);
    tc_adamw_hparams hp = {tc_lr_at(&t->optim, t->step), t->optim.beta1, t->optim.beta2,
                           t->optim.eps, 1, &t->scalars[S_FINITE]};
    tc_act *compute = be->caps.separate_compute_weights ? tc_model_compute_weights(st) : NULL;
    if (sharded(t)) {
        /* this rank's slice, then every slice to every rank */
        int me = t->comm->rank;
        size_t lo = t->shard_lo[me];
        tc_act *cslice = compute ? (tc_act *)((char *)compute + lo * be->act_bytes) : NULL;
        be->adamw_update(be, tc_model_params(st) + lo, t->gshard, t->m, t->v, cslice, t->zsegs,
                         t->nzseg, hp, clip);
        TC_TRY(t->comm->all_gather_v_f32(t->comm, tc_model_params(st), t->shard_n));
        tc_model_refresh_compute(st);
    } else {
        be->adamw_update(be, tc_model_params(st), tc_model_grads(st), t->m, t->v, compute, t->segs,
                         t->nseg, hp, clip);
    }
    /* the logit-scale rule after every step: the method fixes it, open_clip clamps it */
    float *log_scale = tc_model_params(st) + L->logit_scale;
    if (t->loss.logit_scale > 0.0f)
        be->fill_f32(be, log_scale, logf(t->loss.logit_scale), 1);
    else
        be->clamp_f32(be, log_scale, 0.0f, logf(100.0f), 1);
    t->step++;
    return TC_OK;
}

tc_status tc_trainer_step(tc_trainer *t, const float *images, const int32_t *ids, int B,
                          tc_step_result *r) {
    TC_TRY(tc_trainer_compute(t, images, ids, B, NULL));
    TC_TRY(tc_trainer_apply(t, 0.0));
    return r ? tc_trainer_read_result(t, r) : TC_OK;
}
